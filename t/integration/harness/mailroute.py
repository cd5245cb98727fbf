"""mailrouted under test: writes its config and passwd-file into a temp dir,
runs it in the foreground (stderr to a file), and offers what the tests
look at: its log, its exit status, its peak memory, the `lookup` and `-t`
commands, and a check for sanitizer reports in its output.

The binary is $MAILROUTED, else build/src/daemon/mailrouted of the repo
this file is in.

TLS (optional): `tls_cert=` (an object with .cert and .key paths, see
certs.py) writes `ssl = <ssl>` with that certificate, so the LMTP listener
offers STARTTLS; `implicit_tls=True` adds a listener with `ssl = yes` on
`tls_port`."""

import os
import re
import signal

from .procs import Proc, free_port, port_listening, run, unix_socket_open, wait_until

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:")

# Exit codes of `mailrouted lookup` (sysexits.h).
EXIT_OK, EXIT_NOUSER, EXIT_TEMPFAIL = 0, 67, 75


def binary_path():
    return os.environ.get("MAILROUTED") or os.path.join(
        REPO_ROOT, "build", "src", "daemon", "mailrouted")


def is_sanitized(binary):
    """True for an ASan build (its memory figures mean nothing)."""
    with open(binary, "rb") as f:
        return b"__asan_init" in f.read()


def proxy_to(port, extra=""):
    """passwd-file extra fields that proxy to 127.0.0.1:port."""
    return f"proxy host=127.0.0.1 port={port} {extra}".strip()


def passwd_file_text(users):
    """users: {address: extra fields}; extra fields None/"" = none."""
    return "".join(f"{user}:::::::{fields or ''}\n" for user, fields in users.items())


class Mailroute:
    def __init__(self, workdir, users=None, extra_config="", binary=None,
                 hostname="router.test", workers=2, passwd_path=None, port=None,
                 lmtp_local=None, tls_cert=None, ssl="yes", implicit_tls=False):
        """lmtp_local: the setting's value; default the built-in Maildir
        delivery into DIR/local/%d/%n."""
        self.dir = str(workdir)
        self.binary = binary or binary_path()
        self.port = port or free_port()
        self.socket_path = os.path.join(self.dir, "lmtp.sock")
        self.users_path = os.path.join(self.dir, "users")
        self.passwd_path = passwd_path or self.users_path
        self.config_path = os.path.join(self.dir, "mailroute.conf")
        self.stderr_path = os.path.join(self.dir, "mailrouted.stderr")
        self.local_dir = os.path.join(self.dir, "local")
        self.lmtp_local = lmtp_local or f"maildir:{self.local_dir}/%d/%n"
        self.hostname = hostname
        self.workers = workers
        self.extra_config = extra_config
        self.tls_cert = tls_cert
        self.ssl = ssl
        self.tls_port = free_port() if implicit_tls else None
        self.proc = None
        self.exit_expected = False  # set by tests that stop it on purpose
        os.makedirs(os.path.join(self.dir, "run"), exist_ok=True)
        os.makedirs(os.path.join(self.dir, "tmp"), exist_ok=True)
        os.makedirs(self.local_dir, exist_ok=True)
        self.write_users(users or {})
        self.write_config()

    # --- files -----------------------------------------------------------

    def config_text(self):
        return f"""\
protocols = lmtp
listen = 127.0.0.1
hostname = {self.hostname}
base_dir = {self.dir}/run
workers = {self.workers}
login_trusted_networks = 127.0.0.0/8
mail_temp_dir = {self.dir}/tmp
lmtp_local = {self.lmtp_local}
passdb {{
  driver = passwd-file
  args = {self.passwd_path}
}}
service lmtp {{
  inet_listener lmtp {{
    port = {self.port}
  }}
  unix_listener lmtp {{
    path = {self.socket_path}
  }}
{self._tls_listener_text()}}}
{self._tls_text()}{self.extra_config}
"""

    def _tls_listener_text(self):
        if not self.tls_port:
            return ""
        return f"  inet_listener lmtps {{\n    port = {self.tls_port}\n    ssl = yes\n  }}\n"

    def _tls_text(self):
        if not self.tls_cert:
            return ""
        return (f"ssl = {self.ssl}\nssl_cert = <{self.tls_cert.cert}\n"
                f"ssl_key = <{self.tls_cert.key}\n")

    def write_config(self, text=None):
        with open(self.config_path, "w") as f:
            f.write(text if text is not None else self.config_text())

    def write_users(self, users):
        """Replace the passwd-file atomically (a new inode, as editors do)."""
        tmp = self.users_path + ".new"
        with open(tmp, "w") as f:
            f.write(passwd_file_text(users))
        os.replace(tmp, self.users_path)

    def local_maildir(self, address):
        """Where lmtp_local = maildir:LOCAL/%d/%n puts address's mail."""
        user, domain = address.split("@", 1)
        return os.path.join(self.local_dir, domain, user)

    # --- the process -----------------------------------------------------

    def start(self, wait=True):
        assert os.path.exists(self.binary), f"mailrouted not built: {self.binary}"
        self.proc = Proc([self.binary, "-c", self.config_path], self.stderr_path,
                         cwd=self.dir).start()
        if wait:
            self.wait_listening()
        return self

    def wait_listening(self, timeout=15):
        def ready():
            if not self.proc.alive():
                return True
            return (port_listening(self.port) and unix_socket_open(self.socket_path)
                    and (not self.tls_port or port_listening(self.tls_port)))
        wait_until(ready, timeout=timeout, what=f"mailrouted to listen on {self.port}")
        assert self.proc.alive(), (
            f"mailrouted exited with {self.proc.returncode()}:\n{self.stderr()}")

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def signal(self, signum):
        self.proc.signal(signum)

    def stop(self, timeout=10):
        if self.proc is None:
            return None
        return self.proc.stop(timeout=timeout)

    def reload(self):
        self.signal(signal.SIGHUP)

    # --- what it wrote ---------------------------------------------------

    def stderr(self):
        try:
            with open(self.stderr_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_lines(self, *needles):
        """Log lines that contain every one of needles."""
        return [line for line in self.stderr().splitlines()
                if all(n in line for n in needles)]

    def recipient_log_lines(self, rcpt):
        """The per-recipient log lines of rcpt (rcpt=ADDR or rcpt=<ADDR>)."""
        pattern = re.compile(r"\brcpt=<?" + re.escape(rcpt) + r"(?:>|\s|,|$)")
        return [line for line in self.stderr().splitlines() if pattern.search(line)]

    def sanitizer_report(self):
        """Sanitizer output in the log (all of it), or "" if there is none."""
        text = self.stderr()
        if any(marker in text for marker in SANITIZER_MARKERS):
            return text
        return ""

    def peak_rss_kb(self):
        """VmHWM of the running daemon, in KiB."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise AssertionError("no VmHWM in /proc status")

    # --- the command line tools -------------------------------------------

    def check_config(self, path=None):
        """`mailrouted -t`: CompletedProcess."""
        return run([self.binary, "-t", "-c", path or self.config_path])

    def dump_config(self):
        return run([self.binary, "-n", "-c", self.config_path])

    def lookup(self, user, *options):
        """`mailrouted lookup`: (exit status, [(key, value)], stderr)."""
        result = run([self.binary, "-c", self.config_path, "lookup", user, *options])
        pairs = []
        for line in result.stdout.splitlines():
            key, sep, value = line.partition("=")
            assert sep, f"lookup printed a line that is not key=value: {line!r}"
            pairs.append((key, value))
        return result.returncode, pairs, result.stderr
