"""The backend side of the IMAP, POP3 and Submission login proxy (issue 5):
STARTTLS towards backends (starttls=yes|any-cert), proxy_mech, and
imap_id_retain (reference/dovecot-behaviour.md §3.3-3.5, §3.8).

Real Dovecot backends (harness/dovecot_*.py), once with ssl = yes (a
backend.test certificate from the test CA, STARTTLS offered) and once
plain, started once for this module. A Tap between mailroute and the
backend keeps every byte mailroute sent, so a test can show that nothing
but STARTTLS went in plaintext and that the rest is TLS records. Scripted
backends (ScriptedBackend) stand in where the test must choose the
backend's lines: STARTTLS refused, no SASL-IR, an OAUTHBEARER error
challenge, the ID line.

Every test runs for the three protocols where the behaviour is shared;
the replies are asserted as whole lines, in the words of Dovecot's proxy."""

import base64
import os
import re
import socket
import ssl
import threading

import pytest

from harness.dovecot_imap import DovecotImapBackend
from harness.dovecot_pop3 import DovecotPop3Backend
from harness.dovecot_submission import DovecotSubmission
from harness.procs import free_port, port_listening, wait_until

PROTOCOLS = ["imap", "pop3", "submission"]
TEMP_FAILED = {
    "imap": "a NO [UNAVAILABLE] Account is temporarily unavailable.",
    "pop3": "-ERR [SYS/TEMP] Account is temporarily unavailable.",
    "submission": "454 4.7.0 Account is temporarily unavailable.",
}
LOGGED_IN = {
    "imap": re.compile(r"a OK \[CAPABILITY IMAP4rev1 [^\]]*\bIDLE\b[^\]]*\] Logged in"),
    "pop3": re.compile(r"\+OK Logged in\."),
    "submission": re.compile(r"235 2\.7\.0 Logged in\."),
}
# What mailroute says in plaintext before the handshake, and nothing more.
BEFORE_TLS = {
    "imap": b"S STARTTLS\r\n",  # Dovecot's banner lists STARTTLS: no CAPABILITY first
    "pop3": b"STLS\r\n",
    "submission": b"EHLO router.test\r\nSTARTTLS\r\n",
}
CLIENT_IP = "127.0.0.7"  # the test clients' source; mailroute's own is 127.0.0.1
PASSWORD = "pw-secret"


def b64(data):
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


# --- backends -------------------------------------------------------------------

def tls_config(cert):
    return f"ssl = yes\nssl_cert = <{cert.cert}\nssl_key = <{cert.key}"


def start_dovecot(harness_class, directory, name, cert=None, **kwargs):
    """The harness's Dovecot, with ssl = yes when cert is given (STARTTLS on
    its listener, plaintext logins still allowed) and SASL LOGIN enabled."""
    class Configured(harness_class):
        def config_text(self):
            text = super().config_text()
            assert "\nssl = no\n" in text, text
            ssl = tls_config(cert) if cert else "ssl = no"
            return text.replace("\nssl = no\n", f"\n{ssl}\nauth_mechanisms = plain login\n", 1)
    return Configured(directory, name=name, **kwargs).start()


class Backends:
    """One Dovecot per protocol; add_user() makes a user on all three."""

    def __init__(self, imap, pop3, submission):
        self.by_proto = {"imap": imap, "pop3": pop3, "submission": submission}

    def __getitem__(self, proto):
        return self.by_proto[proto]

    def add_user(self, user, password=PASSWORD):
        self.by_proto["imap"].add_user(user, password)
        self.by_proto["pop3"].add_user(user, password)
        self.by_proto["submission"].set_users({user: password})

    def stop(self):
        for backend in self.by_proto.values():
            backend.stop()


def _backends(tmp_root, smtp_sink, prefix, cert):
    def path(name):
        return os.path.join(tmp_root, f"{prefix}-{name}")
    return Backends(
        start_dovecot(DovecotImapBackend, path("imap"), f"{prefix}-imap", cert),
        start_dovecot(DovecotPop3Backend, path("pop3"), f"{prefix}-pop3", cert),
        start_dovecot(DovecotSubmission, path("submission"), f"{prefix}-submission", cert,
                      relay_port=smtp_sink.port))


@pytest.fixture(scope="module")
def tls_backends(tmp_root, smtp_sink, tls_certs):
    """Dovecots with STARTTLS and a backend.test (and 127.0.0.1) certificate."""
    backends = _backends(tmp_root, smtp_sink, "starttls", tls_certs.backend)
    yield backends
    backends.stop()


@pytest.fixture(scope="module")
def plain_backends(tmp_root, smtp_sink):
    """Dovecots without TLS: no STARTTLS offered."""
    backends = _backends(tmp_root, smtp_sink, "plain", None)
    yield backends
    backends.stop()


def dovecot_logins(backend, user, count=1):
    """Dovecot's "Login: user=<user>, ..." lines once there are count of them."""
    def lines():
        found = [line for line in backend.log().splitlines()
                 if "-login: " in line and f"Login: user=<{user}>," in line]
        return found if len(found) >= count else None
    return wait_until(lines, timeout=10, what=f"{count} Dovecot login line(s) of {user}")


def no_dovecot_login(backend, user):
    return not [line for line in backend.log().splitlines()
                if f"Login: user=<{user}>," in line]


# --- what mailroute sent: a recording relay --------------------------------------

class Tap:
    """A TCP relay in front of a backend that keeps, per connection, every
    byte mailroute sent through it (`sent(i)`), and knows when each
    connection ended."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.upstream = []      # bytearray per connection
        self.ended = []         # threading.Event per connection: mailroute closed
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            backend = socket.create_connection(("127.0.0.1", self.target_port))
            data, ended = bytearray(), threading.Event()
            with self.lock:
                self.upstream.append(data)
                self.ended.append(ended)
                self.socks += [conn, backend]
            threading.Thread(target=self._pump, args=(conn, backend, data, ended),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(backend, conn, None, None),
                             daemon=True).start()

    def _pump(self, src, dst, record, ended):
        try:
            while chunk := src.recv(65536):
                if record is not None:
                    with self.lock:
                        record += chunk
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            if ended is not None:
                ended.set()
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def connections(self):
        with self.lock:
            return len(self.upstream)

    def sent(self, index=0):
        with self.lock:
            return bytes(self.upstream[index])

    def wait_ended(self, index=0, timeout=10):
        wait_until(lambda: self.connections() > index, timeout=timeout,
                   what="a connection through the tap")
        assert self.ended[index].wait(timeout), "mailroute kept the backend connection open"
        return self.sent(index)

    def stop(self):
        self.listener.close()
        with self.lock:
            for sock in self.socks:
                sock.close()


@pytest.fixture
def tap():
    taps = []

    def start(target_port):
        taps.append(Tap(target_port))
        return taps[-1]
    yield start
    for t in taps:
        t.stop()


TLS_CONTENT_TYPES = {20: "change_cipher_spec", 21: "alert", 22: "handshake",
                     23: "application_data"}


def tls_records(data):
    """The content types of the TLS records data consists of; fails when any
    byte of it is not part of a well-formed TLS record (plaintext)."""
    types, pos = [], 0
    while pos < len(data):
        header = data[pos:pos + 5]
        assert len(header) == 5 and header[0] in TLS_CONTENT_TYPES and header[1] == 3, \
            f"not a TLS record at offset {pos}: {data[pos:pos + 40]!r}"
        length = int.from_bytes(header[3:5], "big")
        assert pos + 5 + length <= len(data), f"truncated TLS record at offset {pos}"
        types.append(TLS_CONTENT_TYPES[header[0]])
        pos += 5 + length
    return types


def assert_plaintext_then_tls(data, plaintext):
    """data is exactly `plaintext` followed by TLS records, a handshake first."""
    assert data.startswith(plaintext), data[:200]
    types = tls_records(data[len(plaintext):])
    assert types and types[0] == "handshake", types


# --- a scripted backend -----------------------------------------------------------

class StartTls(list):
    """An answer after which the backend starts TLS (server side)."""


class ScriptedBackend:
    """A backend in a thread: sends `greeting` (lines), then answers every line
    it receives with answer(line) -> list of lines to send (None: close; a
    StartTls list: then the TLS handshake with `cert`). Keeps the lines of
    each connection (`lines(i)`), "<TLS>" where TLS started."""

    def __init__(self, greeting, answer, cert=None):
        self.greeting = greeting
        self.answer = answer
        self.context = None
        if cert is not None:
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(cert.cert, cert.key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.sessions = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            lines = []
            with self.lock:
                self.sessions.append(lines)
            threading.Thread(target=self._serve, args=(conn, lines), daemon=True).start()

    def _serve(self, conn, lines):
        conn.settimeout(30)
        reader = conn.makefile("rb")
        try:
            conn.sendall("".join(f"{line}\r\n" for line in self.greeting).encode())
            while raw := reader.readline():
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                with self.lock:
                    lines.append(line)
                reply = self.answer(line)
                if reply is None:
                    return
                conn.sendall("".join(f"{r}\r\n" for r in reply).encode())
                if isinstance(reply, StartTls):
                    conn = self.context.wrap_socket(conn, server_side=True)
                    reader = conn.makefile("rb")
                    with self.lock:
                        lines.append("<TLS>")
        except OSError:
            pass
        finally:
            conn.close()

    def lines(self, index=0):
        with self.lock:
            return list(self.sessions[index]) if index < len(self.sessions) else []

    def stop(self):
        self.listener.close()


@pytest.fixture
def scripted():
    started = []

    def start(greeting, answer, cert=None):
        started.append(ScriptedBackend(greeting, answer, cert))
        return started[-1]
    yield start
    for backend in started:
        backend.stop()


# --- mailroute with the three login listeners ---------------------------------------

@pytest.fixture
def start_login(start_mailroute, workdir, tls_certs):
    """start({user: fields}, extra="", ca=tls_certs.ca) -> a running mailroute
    with .ports["imap"|"pop3"|"submission"]. Every user's password is
    PASSWORD (none with nopassword); ssl_client_ca_file is ca."""
    counter = [0]

    def start(users, extra="", ca=None):
        counter[0] += 1
        passwd = os.path.join(workdir, f"login-users-{counter[0]}")
        with open(passwd, "w") as f:
            for user, fields in users.items():
                stored = "" if "nopassword" in fields.split() else f"{{PLAIN}}{PASSWORD}"
                f.write(f"{user}:{stored}::::::{fields}\n")
        ports = {proto: free_port() for proto in PROTOCOLS}
        services = "".join(f"service {proto} {{\n  inet_listener {proto} {{\n"
                           f"    port = {port}\n  }}\n}}\n" for proto, port in ports.items())
        config = (f"protocols = lmtp {' '.join(PROTOCOLS)}\nauth_failure_delay = 0\n"
                  f"ssl_client_ca_file = {(ca or tls_certs.ca).cert}\n{services}{extra}")
        mailroute = start_mailroute(passwd_path=passwd, extra_config=config)
        for port in ports.values():
            wait_until(lambda: port_listening(port) or not mailroute.alive(), timeout=10,
                       what=f"mailrouted to listen on {port}")
        assert mailroute.alive(), mailroute.stderr()
        mailroute.ports = ports
        return mailroute
    return start


def proxy(port, extra=""):
    return f"proxy host=127.0.0.1 port={port} {extra}".strip()


def wait_log(mailroute, *needles):
    return wait_until(lambda: mailroute.log_lines(*needles), timeout=10,
                      what=f"mailrouted to log {needles}")


# --- clients -----------------------------------------------------------------------

class Client:
    """A line client of one protocol: login() as its clients usually do,
    after_login() runs one command through the relay."""

    def __init__(self, proto, port, source_ip=CLIENT_IP):
        self.proto = proto
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20,
                                             source_address=(source_ip, 0))
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply() if proto == "submission" else self.line()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.file.close()
        self.sock.close()

    def send(self, text):
        self.sock.sendall(text.encode() + b"\r\n")

    def line(self):
        raw = self.file.readline()
        assert raw, "connection closed by mailroute"
        return raw.decode("utf-8", "replace").rstrip("\r\n")

    def reply(self):
        """The complete reply: IMAP untagged lines up to the tagged one, SMTP
        every line of a multi-line reply, POP3 one line."""
        lines = [self.line()]
        if self.proto == "imap":
            while lines[-1].startswith("* "):
                lines.append(self.line())
        elif self.proto == "submission":
            while len(lines[-1]) > 3 and lines[-1][3] == "-":
                lines.append(self.line())
        return lines

    def cmd(self, text):
        """The last line of the reply to text."""
        self.send(text)
        return self.reply()[-1]

    def login(self, user, password=PASSWORD):
        if self.proto == "imap":
            return self.cmd(f"a LOGIN {user} {password}")
        if self.proto == "pop3":
            assert self.cmd(f"USER {user}") == "+OK"
            return self.cmd(f"PASS {password}")
        self.cmd("EHLO client.test")
        return self.cmd("AUTH PLAIN " + b64(f"{user}\0{user}\0{password}"))

    def after_login(self):
        """One command through the relay and the backend's answer."""
        command = {"imap": "b NOOP", "pop3": "STAT", "submission": "NOOP"}[self.proto]
        return self.cmd(command)


RELAYED = {
    "imap": re.compile(r"b OK NOOP completed.*"),
    "pop3": re.compile(r"\+OK 0 0"),
    "submission": re.compile(r"250 2\.0\.0 OK.*"),
}


def login_works(proto, mailroute, user):
    with Client(proto, mailroute.ports[proto]) as client:
        reply = client.login(user)
        assert LOGGED_IN[proto].fullmatch(reply), reply
        relayed = client.after_login()
        assert RELAYED[proto].fullmatch(relayed), relayed


def login_fails_temporarily(proto, mailroute, user):
    with Client(proto, mailroute.ports[proto]) as client:
        assert client.login(user) == TEMP_FAILED[proto]


# --- STARTTLS -----------------------------------------------------------------------

@pytest.mark.parametrize("proto", PROTOCOLS)
def test_starttls_logs_in_over_tls(proto, start_login, tls_backends, tap, addr):
    """starttls=yes with a valid certificate (checked against the host name):
    the login works, Dovecot logs a TLS connection with the client's address
    (ID or XCLIENT went after the handshake), and mailroute said nothing in
    plaintext but STARTTLS (and, for SMTP, EHLO)."""
    user = addr(f"tls-{proto}")
    tls_backends.add_user(user)
    backend = tls_backends[proto]
    relay = tap(backend.port)
    mailroute = start_login(
        {user: f"proxy host=backend.test hostip=127.0.0.1 port={relay.port} starttls=yes"})
    login_works(proto, mailroute, user)
    [login] = dovecot_logins(backend, user)
    assert ", TLS," in login and f"rip={CLIENT_IP}," in login, login
    assert_plaintext_then_tls(relay.wait_ended(), BEFORE_TLS[proto])
    assert relay.connections() == 1


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_starttls_any_cert_accepts_a_name_mismatch(proto, start_login, tls_backends, addr):
    """hostname=wrong.test does not match the certificate: starttls=yes
    refuses the backend, starttls=any-cert logs in."""
    checked, unchecked = addr(f"checked-{proto}"), addr(f"anycert-{proto}")
    tls_backends.add_user(checked)
    tls_backends.add_user(unchecked)
    backend = tls_backends[proto]
    mailroute = start_login({
        checked: proxy(backend.port, "hostname=wrong.test starttls=yes"),
        unchecked: proxy(backend.port, "hostname=wrong.test starttls=any-cert"),
    })
    login_works(proto, mailroute, unchecked)
    assert ", TLS," in dovecot_logins(backend, unchecked)[0]
    login_fails_temporarily(proto, mailroute, checked)
    wait_log(mailroute, "TLS with wrong.test failed", "host name mismatch")
    assert no_dovecot_login(backend, checked)


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_starttls_with_an_unknown_ca_sends_nothing_in_plaintext(
        proto, start_login, tls_backends, tls_certs, tap, addr):
    """The backend's certificate is not from the CA mailroute trusts: a
    temporary failure, one connection (not retried), and after STARTTLS
    only TLS records (the ClientHello and an alert): no login in plaintext."""
    user = addr(f"wrongca-{proto}")
    tls_backends.add_user(user)
    backend = tls_backends[proto]
    relay = tap(backend.port)
    mailroute = start_login({user: proxy(relay.port, "starttls=yes")},
                            ca=tls_certs.other_ca)
    login_fails_temporarily(proto, mailroute, user)
    sent = relay.wait_ended()
    assert_plaintext_then_tls(sent, BEFORE_TLS[proto])
    assert PASSWORD.encode() not in sent and b"LOGIN" not in sent
    assert relay.connections() == 1
    wait_log(mailroute, "TLS with 127.0.0.1 failed", "certificate verification failed")
    assert no_dovecot_login(backend, user)


NO_STARTTLS_SENT = {
    "imap": b"",                      # the banner's capabilities lack STARTTLS
    "pop3": b"STLS\r\n",              # answered -ERR
    "submission": b"EHLO router.test\r\n",
}
NO_STARTTLS_LOG = {
    "imap": "STARTTLS not supported",
    "pop3": "STARTTLS failed: -ERR",
    "submission": "STARTTLS not supported",
}


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_backend_without_starttls_is_a_temporary_failure(proto, start_login, plain_backends,
                                                         tap, addr):
    user = addr(f"nostarttls-{proto}")
    plain_backends.add_user(user)
    backend = plain_backends[proto]
    relay = tap(backend.port)
    mailroute = start_login({user: proxy(relay.port, "starttls=yes")})
    login_fails_temporarily(proto, mailroute, user)
    assert relay.wait_ended() == NO_STARTTLS_SENT[proto]
    wait_log(mailroute, f"login of {user} failed temporarily: {NO_STARTTLS_LOG[proto]}")
    assert no_dovecot_login(backend, user)


def imap_answer(banner_caps=True, starttls_reply="S OK Begin TLS negotiation now.",
                caps="IMAP4rev1 SASL-IR ID STARTTLS AUTH=PLAIN"):
    def answer(line):
        tag, _, rest = line.partition(" ")
        if tag == "C":
            return [f"* CAPABILITY {caps}", "C OK Capability completed."]
        if tag == "S":
            return [starttls_reply]
        return [f"{tag} BAD unexpected"]
    return answer


def test_imap_starttls_refused_or_asked_for_first(start_login, scripted, addr):
    """A banner without capabilities: CAPABILITY first, then STARTTLS; a NO
    to STARTTLS is a temporary failure, and nothing follows it."""
    bare, refused = addr("bare"), addr("refused")
    no_caps = scripted(["* OK fake ready."], imap_answer(starttls_reply="S NO not now"))
    with_caps = scripted(["* OK [CAPABILITY IMAP4rev1 SASL-IR ID STARTTLS] fake ready."],
                         imap_answer(starttls_reply="S NO [UNAVAILABLE] not now"))
    mailroute = start_login({bare: proxy(no_caps.port, "starttls=yes"),
                             refused: proxy(with_caps.port, "starttls=yes")})
    login_fails_temporarily("imap", mailroute, bare)
    login_fails_temporarily("imap", mailroute, refused)
    assert no_caps.lines() == ["C CAPABILITY", "S STARTTLS"]
    assert with_caps.lines() == ["S STARTTLS"]
    wait_log(mailroute, f"login of {refused} failed temporarily: "
                        "STARTTLS failed: NO [UNAVAILABLE] not now")


def test_imap_capability_without_starttls_after_asking(start_login, scripted, addr):
    user = addr("nocap")
    backend = scripted(["* OK fake ready."], imap_answer(caps="IMAP4rev1 SASL-IR ID"))
    mailroute = start_login({user: proxy(backend.port, "starttls=yes")})
    login_fails_temporarily("imap", mailroute, user)
    assert backend.lines() == ["C CAPABILITY"]
    wait_log(mailroute, f"login of {user} failed temporarily: STARTTLS not supported")


def test_submission_starttls_refused(start_login, scripted, addr):
    user = addr("smtp-refused")

    def answer(line):
        if line.startswith("EHLO"):
            return ["250-fake.test", "250-STARTTLS", "250 AUTH PLAIN"]
        return ["454 4.7.0 TLS not available due to temporary reason"]
    backend = scripted(["220 fake.test ESMTP"], answer)
    mailroute = start_login({user: proxy(backend.port, "starttls=yes")})
    login_fails_temporarily("submission", mailroute, user)
    assert backend.lines() == ["EHLO router.test", "STARTTLS"]
    wait_log(mailroute, f"login of {user} failed temporarily: STARTTLS failed: "
                        "454 4.7.0 TLS not available due to temporary reason")


def test_imap_capabilities_are_read_again_over_tls(start_login, scripted, tls_certs, addr):
    """The plaintext banner promises ID and SASL-IR; over TLS the backend
    lists neither: no ID is sent, and AUTHENTICATE waits for the "+"."""
    user = addr("recaps")

    def answer(line):
        tag = line.split(" ", 1)[0]
        if line == "S STARTTLS":
            return StartTls(["S OK Begin TLS negotiation now."])
        if line == "C CAPABILITY":
            return ["* CAPABILITY IMAP4rev1 AUTH=PLAIN", "C OK done"]
        if line == "L AUTHENTICATE PLAIN":
            return ["+ "]
        if tag in ("I", "L"):
            return [f"{tag} BAD unexpected"]
        return ["L OK Logged in"]
    backend = scripted(["* OK [CAPABILITY IMAP4rev1 SASL-IR ID STARTTLS] fake ready."], answer,
                       cert=tls_certs.backend)
    mailroute = start_login({user: proxy(backend.port, "starttls=yes proxy_mech=PLAIN")})
    with Client("imap", mailroute.ports["imap"]) as client:
        assert client.login(user) == "a OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] Logged in"
    assert backend.lines() == ["S STARTTLS", "<TLS>", "C CAPABILITY", "L AUTHENTICATE PLAIN",
                               b64(f"\0{user}\0{PASSWORD}")]


def test_submission_uses_only_the_ehlo_over_tls(start_login, scripted, tls_certs, addr):
    """XCLIENT offered in plaintext but not over TLS is not used; the AUTH
    line follows the EHLO over TLS."""
    user = addr("reehlo")

    def answer(line):
        if line.startswith("EHLO") and answer.tls:
            return ["250-fake.test", "250 AUTH PLAIN"]
        if line.startswith("EHLO"):
            return ["250-fake.test", "250-XCLIENT ADDR PORT SESSION TTL", "250 STARTTLS"]
        if line == "STARTTLS":
            answer.tls = True
            return StartTls(["220 2.0.0 Ready to start TLS"])
        if line.startswith("AUTH PLAIN "):
            return ["235 2.7.0 Logged in."]
        return ["502 5.5.2 unexpected"]
    answer.tls = False
    backend = scripted(["220 fake.test ESMTP"], answer, cert=tls_certs.backend)
    mailroute = start_login({user: proxy(backend.port, "starttls=yes")})
    with Client("submission", mailroute.ports["submission"]) as client:
        assert client.login(user) == "235 2.7.0 Logged in."
    assert backend.lines() == ["EHLO router.test", "STARTTLS", "<TLS>", "EHLO router.test",
                               "AUTH PLAIN " + b64(f"{user}\0{user}\0{PASSWORD}")]


def test_imap_starttls_without_pipelining(start_login, tls_backends, addr):
    """proxy_nopipelining with STARTTLS and proxy_mech against Dovecot: one
    command at a time, all of them over TLS."""
    user = addr("nopipe")
    tls_backends.add_user(user)
    backend = tls_backends["imap"]
    mailroute = start_login(
        {user: proxy(backend.port, "starttls=yes proxy_nopipelining proxy_mech=PLAIN")})
    login_works("imap", mailroute, user)
    [login] = dovecot_logins(backend, user)
    assert "method=PLAIN" in login and ", TLS," in login and f"rip={CLIENT_IP}," in login, login


# --- proxy_mech ---------------------------------------------------------------------

def login_lines(proto, sent):
    """The lines of mailroute's login in what it sent: from the AUTHENTICATE/AUTH
    command to the command after it (the relayed one)."""
    lines = sent.decode().split("\r\n")
    start = next(i for i, line in enumerate(lines)
                 if line.startswith(("L AUTHENTICATE ", "AUTH ")))
    return lines[start:]


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_proxy_mech_plain_and_login_against_dovecot(proto, start_login, plain_backends, tap,
                                                    addr):
    """proxy_mech=plain (any case) and LOGIN: Dovecot logs the mechanism,
    the PLAIN response is built for destuser, LOGIN answers both prompts."""
    alias, real, with_login = addr(f"alias-{proto}"), addr(f"real-{proto}"), \
        addr(f"mechlogin-{proto}")
    plain_backends.add_user(real)
    plain_backends.add_user(with_login)
    backend = plain_backends[proto]
    relay = tap(backend.port)
    mailroute = start_login({
        alias: proxy(relay.port, f"destuser={real} proxy_mech=plain"),
        with_login: proxy(relay.port, "proxy_mech=LOGIN"),
    })
    login_works(proto, mailroute, alias)
    [line] = dovecot_logins(backend, real)
    assert "method=PLAIN" in line, line
    login_works(proto, mailroute, with_login)
    [line] = dovecot_logins(backend, with_login)
    assert "method=LOGIN" in line, line

    authzid = real if proto == "submission" else ""  # as Dovecot's proxies send it
    plain_ir = b64(f"{authzid}\0{real}\0{PASSWORD}")
    after = {"imap": "b NOOP", "pop3": "STAT", "submission": "NOOP"}[proto]
    plain_cmd = "L AUTHENTICATE PLAIN" if proto == "imap" else "AUTH PLAIN"
    login_cmd = "L AUTHENTICATE LOGIN" if proto == "imap" else "AUTH LOGIN"
    assert login_lines(proto, relay.wait_ended(0))[:2] == [f"{plain_cmd} {plain_ir}", after]
    assert login_lines(proto, relay.wait_ended(1))[:4] == [
        login_cmd, b64(with_login), b64(PASSWORD), after]


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_unsupported_proxy_mech_is_a_temporary_failure(proto, start_login, plain_backends,
                                                       tap, addr):
    """A token mechanism the client did not use, an unknown mechanism, and
    LOGIN for a master user cannot be done: nothing of the login is sent."""
    cases = {
        addr(f"xoauth-{proto}"): ("proxy_mech=XOAUTH2", "XOAUTH2"),
        addr(f"oauthb-{proto}"): ("proxy_mech=oauthbearer", "oauthbearer"),
        addr(f"cram-{proto}"): ("proxy_mech=CRAM-MD5", "CRAM-MD5"),
        addr(f"master-{proto}"): ("proxy_mech=LOGIN master=admin", "LOGIN"),
    }
    backend = plain_backends[proto]
    relay = tap(backend.port)
    mailroute = start_login({user: proxy(relay.port, fields)
                             for user, (fields, _) in cases.items()})
    for index, (user, (_, mech)) in enumerate(cases.items()):
        login_fails_temporarily(proto, mailroute, user)
        wait_log(mailroute, f"login of {user} failed temporarily: "
                            f"Unsupported SASL mechanism {mech}")
        sent = relay.wait_ended(index)
        assert PASSWORD.encode() not in sent and b"AUTH" not in sent \
            and b"LOGIN" not in sent, sent


def imap_login_script(lines_after_auth):
    """An IMAP backend without SASL-IR that answers AUTHENTICATE with "+ " and
    then, for each response line, the next of lines_after_auth."""
    replies = list(lines_after_auth)

    def answer(line):
        if line.startswith("C "):
            return ["* CAPABILITY IMAP4rev1 ID AUTH=PLAIN", "C OK done"]
        if line.startswith("I "):
            return ["* ID NIL", "I OK done"]
        if line.startswith("L AUTHENTICATE"):
            return ["+ "]
        if line.startswith("L ") or line.startswith("b "):
            return [f"{line.split()[0]} OK done"]
        return replies.pop(0) if replies else ["* BYE"]
    return answer


def test_imap_proxy_mech_without_sasl_ir_waits_for_the_continuation(start_login, scripted,
                                                                     addr):
    user = addr("nosaslir")
    backend = scripted(["* OK [CAPABILITY IMAP4rev1 ID AUTH=PLAIN] fake ready."],
                       imap_login_script([["L OK Logged in"]]))
    mailroute = start_login({user: proxy(backend.port, "proxy_mech=PLAIN")})
    with Client("imap", mailroute.ports["imap"]) as client:
        assert client.login(user) == "a OK [CAPABILITY IMAP4rev1 ID AUTH=PLAIN] Logged in"
    lines = backend.lines()
    assert lines[0].startswith("I ID (") and lines[1:] == [
        "L AUTHENTICATE PLAIN", b64(f"\0{user}\0{PASSWORD}")]


# --- OAuth pass-through ----------------------------------------------------------------

TOKEN = "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
ERROR_CHALLENGE = b64('{"status":"invalid_token","scope":"mail"}')


def token_response(mech, user, token=TOKEN):
    if mech == "OAUTHBEARER":
        return b64(f"n,a={user},\x01auth=Bearer {token}\x01\x01")
    return b64(f"user={user}\x01auth=Bearer {token}\x01\x01")


SASL_WORDS = {  # greeting, continuation, success, failure, reply to a relayed command
    "imap": ("* OK [CAPABILITY IMAP4rev1 {saslir}AUTH=OAUTHBEARER AUTH=XOAUTH2] fake ready.",
             "+ {}", "L OK Logged in", "L NO [AUTHENTICATIONFAILED] Authentication failed.",
             "b OK done"),
    "pop3": ("+OK fake ready.", "+ {}", "+OK Logged in.", "-ERR [AUTH] Authentication failed.",
             "+OK 0 0"),
    "submission": ("220 fake.test ESMTP", "334 {}", "235 2.7.0 Logged in.",
                   "535 5.7.8 Authentication failed.", "250 2.0.0 OK"),
}


def sasl_backend(scripted, proto, error=False, sasl_ir=True):
    """A backend that takes a SASL login: the initial response on the AUTH
    line or after an empty challenge; with error=True it answers the
    credentials with an OAuth error challenge, then with a failure."""
    greeting, cont, ok, failed, relayed = SASL_WORDS[proto]
    state = {"step": "auth"}

    def answer(line):
        step = state["step"]
        if line.startswith("EHLO"):
            return ["250-fake.test", "250 AUTH PLAIN OAUTHBEARER XOAUTH2"]
        if step == "auth" and line.split(" ")[0 if proto != "imap" else 1] in (
                "AUTH", "AUTHENTICATE"):
            has_ir = len(line.split(" ")) == (4 if proto == "imap" else 3)
            if not has_ir:
                state["step"] = "response"
                return [cont.format("").rstrip() + (" " if proto == "imap" else "")]
            step = "response"
        if step == "response":
            state["step"] = "ack" if error else "done"
            return [cont.format(ERROR_CHALLENGE)] if error else [ok]
        if step == "ack":
            state["step"] = "done"
            return [failed]
        return [relayed]
    return scripted([greeting.format(saslir="SASL-IR " if sasl_ir else "")], answer)


def token_login(client, mech, response):
    if client.proto == "imap":
        return client.cmd(f"a AUTHENTICATE {mech} {response}")
    if client.proto == "submission":
        client.cmd("EHLO client.test")
    return client.cmd(f"AUTH {mech} {response}")


TOKEN_MECHS = "auth_mechanisms = plain login oauthbearer xoauth2\n"
AUTH_LINE = {"imap": "L AUTHENTICATE {} {}", "pop3": "AUTH {} {}", "submission": "AUTH {} {}"}


@pytest.mark.parametrize("mech", ["OAUTHBEARER", "XOAUTH2"])
@pytest.mark.parametrize("proto", PROTOCOLS)
def test_token_is_passed_on_unchanged(proto, mech, start_login, scripted, addr):
    user = addr(f"token-{proto}")
    backend = sasl_backend(scripted, proto)
    mailroute = start_login({user: proxy(backend.port, f"nopassword proxy_mech={mech.lower()}")},
                            extra=TOKEN_MECHS)
    response = token_response(mech, user)
    with Client(proto, mailroute.ports[proto]) as client:
        reply = token_login(client, mech, response)
        assert reply == {"imap": "a OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=OAUTHBEARER "
                                 "AUTH=XOAUTH2] Logged in",
                         "pop3": "+OK Logged in.",
                         "submission": "235 2.7.0 Logged in."}[proto], reply
    lines = backend.lines()
    if proto == "submission":
        assert lines[0] == "EHLO router.test", lines
        lines = lines[1:]
    assert lines == [AUTH_LINE[proto].format(mech, response)]


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_token_error_challenge_is_answered_with_an_empty_line(proto, start_login, scripted,
                                                             addr):
    """RFC 7628: the backend's error report (a challenge) gets an empty
    response; its failure then reaches the client as any refusal does."""
    user = addr(f"badtoken-{proto}")
    backend = sasl_backend(scripted, proto, error=True)
    mailroute = start_login({user: proxy(backend.port, "nopassword proxy_mech=OAUTHBEARER")},
                            extra=TOKEN_MECHS)
    response = token_response("OAUTHBEARER", user)
    with Client(proto, mailroute.ports[proto]) as client:
        assert token_login(client, "OAUTHBEARER", response) == {
            "imap": "a NO [AUTHENTICATIONFAILED] Authentication failed.",
            "pop3": "-ERR [AUTH] Authentication failed.",
            "submission": "535 5.7.8 Authentication failed."}[proto]
    lines = backend.lines()[1:] if proto == "submission" else backend.lines()
    assert lines == [AUTH_LINE[proto].format("OAUTHBEARER", response), ""]


def test_imap_token_without_sasl_ir_follows_the_continuation(start_login, scripted, addr):
    user = addr("token-noir")
    backend = sasl_backend(scripted, "imap", sasl_ir=False)
    mailroute = start_login({user: proxy(backend.port, "nopassword proxy_mech=OAUTHBEARER")},
                            extra=TOKEN_MECHS)
    response = token_response("OAUTHBEARER", user)
    with Client("imap", mailroute.ports["imap"]) as client:
        assert token_login(client, "OAUTHBEARER", response) == \
            "a OK [CAPABILITY IMAP4rev1 AUTH=OAUTHBEARER AUTH=XOAUTH2] Logged in"
    assert backend.lines() == ["L AUTHENTICATE OAUTHBEARER", response]


def test_submission_long_token_waits_for_334(start_login, scripted, addr):
    """An AUTH line over 512 octets is not sent: AUTH <mech>, 334, then the
    response on a line of its own."""
    user = addr("longtoken")
    backend = sasl_backend(scripted, "submission")
    mailroute = start_login({user: proxy(backend.port, "nopassword proxy_mech=XOAUTH2")},
                            extra=TOKEN_MECHS)
    response = token_response("XOAUTH2", user, token="A" * 600)
    with Client("submission", mailroute.ports["submission"]) as client:
        client.cmd("EHLO client.test")
        client.send("AUTH XOAUTH2")
        assert client.reply() == ["334 "]
        assert client.cmd(response) == "235 2.7.0 Logged in."
    assert backend.lines() == ["EHLO router.test", "AUTH XOAUTH2", response]


# --- imap_id_retain -----------------------------------------------------------------

def id_recorder():
    def answer(line):
        tag = line.split(" ", 1)[0]
        if tag == "I":
            return ["* ID NIL", "I OK ID completed."]
        if tag == "L":
            return ["L OK [CAPABILITY IMAP4rev1 ID] Logged in"]
        return [f"{tag} OK done"]
    return answer


@pytest.mark.parametrize("retain", [True, False])
def test_imap_id_retain_puts_the_clients_pairs_first(retain, start_login, scripted, addr):
    """With imap_id_retain the client's own ID pairs come first, before
    x-session-id; the x- pairs of a client that is not trusted are neither
    believed nor passed on (the backend would take them as our word)."""
    user = addr("idretain")
    backend = scripted(["* OK [CAPABILITY IMAP4rev1 SASL-IR ID] fake ready."], id_recorder())
    mailroute = start_login({user: proxy(backend.port)},
                            extra=f"imap_id_retain = {'yes' if retain else 'no'}\n"
                                  "login_trusted_networks = 127.0.0.1/32\n")
    with Client("imap", mailroute.ports["imap"]) as client:
        client.cmd('c ID ("name" "testclient" "version" "1.0" '
                   '"x-originating-ip" "192.0.2.66" "x-forward-evil" "1")')
        assert client.login(user) == "a OK [CAPABILITY IMAP4rev1 ID] Logged in"
    [id_line] = [line for line in backend.lines() if line.startswith("I ID")]
    own = (r'"x-session-id" "[^"]+" "x-originating-ip" "127\.0\.0\.7" "x-originating-port" '
           r'"\d+" "x-connected-ip" "127\.0\.0\.1" "x-connected-port" "\d+" "x-proxy-ttl" "4"')
    client_pairs = '"name" "testclient" "version" "1.0" ' if retain else ""
    assert re.fullmatch(r"I ID \(" + re.escape(client_pairs) + own + r"\)", id_line), id_line
