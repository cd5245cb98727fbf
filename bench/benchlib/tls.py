"""The TLS scenario of the LMTP benchmark: handshakes per second on an
implicit-TLS LMTP listener (`inet_listener { ssl = yes }`), mailrouted's and
Dovecot 2.3's, and the client that makes them.

Both servers use the same self-signed ECDSA P-256 certificate
(servers.Certificate, made with certtool in the benchmark's temp dir), and
their default TLS settings (TLS 1.3 with a Python/OpenSSL client). They are
the routers of lmtp.py plus the TLS lines; Dovecot's LMTP does implicit TLS
on a listener with `ssl = yes` (no STARTTLS needed).

The client (client_main, run as its own process by lmtp_bench.py) forks
PROCESSES workers; each opens connections one after the other: connect,
full handshake (or, with --resume, one resuming the session of its previous
connection), read the greeting, LHLO, QUIT, close. It writes a JSON summary
with its own wall time, which excludes the interpreter's start-up."""

import argparse
import json
import os
import shutil
import socket
import ssl
import sys
import time

from . import lmtp
from .procs import pinned

PROCESSES = 4       # client processes, each one connection at a time
IO_TIMEOUT = 10     # seconds per connect, handshake or reply
BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tools_missing():
    return [] if shutil.which("certtool") else ["certtool (package gnutls-bin)"]


# The edit that turns lmtp.py's LMTP listener (either router's) into an
# implicit-TLS one.
LISTENER_TLS = ("    port = {port}\n", "    port = {port}\n    ssl = yes\n")


def router(target, workdir, binary, passwd_path, certificate, cpus=None):
    """The router of a target (dovecot-tls, mailroute-tls): lmtp.py's, its
    LMTP listener with implicit TLS and the certificate (servers.Certificate)."""
    ssl_lines = (f"ssl = yes\nssl_cert = <{certificate.cert}\n"
                 f"ssl_key = <{certificate.key}\n")
    if target.startswith("dovecot"):
        return lmtp.DovecotProxy(workdir, passwd_path, cpus, name=target,
                                 edits=[("ssl = no\n", ssl_lines), LISTENER_TLS])
    return lmtp.Mailroute(workdir, binary, passwd_path, 2, cpus, name=target,
                          edits=[LISTENER_TLS], extra=ssl_lines)


def client_argv(port, count, resume, result_path, cpus=None):
    """The command line of one client run (count connections in all)."""
    code = (f"import sys; sys.path.insert(0, {BENCH_DIR!r}); "
            "from benchlib import tls; sys.exit(tls.client_main(sys.argv[1:]))")
    argv = [sys.executable, "-B", "-c", code, "--port", port, "--count", count,
            "--processes", PROCESSES, "--result", result_path]
    if resume:
        argv.append("--resume")
    return pinned(argv, cpus)


# --- the client ------------------------------------------------------------------

class LmtpOverTls:
    """Replies read from one TLS connection."""

    def __init__(self, sock):
        self.sock = sock
        self.pending = b""

    def reply(self):
        """The code of the next (possibly multi-line) reply."""
        while True:
            while b"\r\n" in self.pending:
                line, self.pending = self.pending.split(b"\r\n", 1)
                if len(line) < 4 or line[3:4] != b"-":
                    return int(line[:3])
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError("connection closed before a reply")
            self.pending += data

    def command(self, text, expected):
        self.sock.sendall(text.encode() + b"\r\n")
        self.expect(expected, text)

    def expect(self, expected, what):
        code = self.reply()
        if code != expected:
            raise ConnectionError(f"{what}: {code}, expected {expected}")


def one_connection(context, port, session, resume):
    """Connect, handshake (resuming session if it is not None), greeting,
    LHLO, QUIT. Returns (the session to resume next or None, whether this one
    was resumed, TLS version, cipher)."""
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with context.wrap_socket(raw, session=session) as tls:
            lmtp = LmtpOverTls(tls)
            lmtp.expect(220, "greeting")
            lmtp.command("LHLO client.bench", 250)
            lmtp.command("QUIT", 221)
            # Only when asked for: fetching the session costs the client
            # about a quarter of a millisecond.
            new = tls.session if resume else None
            return new, tls.session_reused, tls.version(), tls.cipher()[0]


def worker(port, count, resume):
    """count connections one after the other; a summary dict."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the server's work is the same either way
    summary = {"ok": 0, "failed": 0, "resumed": 0, "tls": None, "error": None}
    session = None
    for _ in range(count):
        try:
            session, reused, version, cipher = one_connection(context, port, session, resume)
        except (OSError, ValueError) as e:
            summary["failed"] += 1
            summary["error"] = summary["error"] or f"{type(e).__name__}: {e}"
            session = None
            continue
        summary["ok"] += 1
        summary["resumed"] += reused
        summary["tls"] = summary["tls"] or f"{version} {cipher}"
    return summary


def client_main(argv):
    parser = argparse.ArgumentParser(prog="tls client")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--processes", type=int, default=PROCESSES)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)
    shares = [args.count // args.processes + (i < args.count % args.processes)
              for i in range(args.processes)]
    started = time.monotonic()
    children = []
    for share in shares:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            code = 0
            try:
                os.write(write_end, json.dumps(worker(args.port, share, args.resume)).encode())
            except BaseException:  # noqa: B036 - a child must never return into the parent's code
                code = 1
            os._exit(code)
        os.close(write_end)
        children.append((pid, read_end))
    summaries = []
    for pid, read_end in children:
        with os.fdopen(read_end, "rb") as f:
            data = f.read()
        os.waitpid(pid, 0)
        summaries.append(json.loads(data) if data else {"ok": 0, "failed": 1, "resumed": 0,
                                                        "tls": None, "error": "worker died"})
    total = {"seconds": time.monotonic() - started,
             "ok": sum(s["ok"] for s in summaries),
             "failed": sum(s["failed"] for s in summaries),
             "resumed": sum(s["resumed"] for s in summaries),
             "tls": next((s["tls"] for s in summaries if s["tls"]), None),
             "error": next((s["error"] for s in summaries if s["error"]), None)}
    with open(args.result, "w") as f:
        json.dump(total, f)
    print(json.dumps(total), flush=True)
    return 0 if total["failed"] == 0 else 1
