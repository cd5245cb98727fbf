"""The IMAP login proxy (DESIGN.md §4, §6; reference/dovecot-behaviour.md
§2.3, §3.1-3.5), end to end: real clients (imaplib, or a raw socket where
exact bytes or the source address matter) talk to mailrouted, which logs
them in to a real Dovecot IMAP backend (harness/dovecot_imap.py, one per
module) or to a scripted fake backend in this file (FakeImapBackend) when
the test needs to see or choose the backend's exact lines.

Replies are asserted as whole lines, in the words of Dovecot's proxy.
mailroute runs with auth_failure_delay = 0 except where the delay is tested.
Every test uses user names unique to it (the `addr` fixture)."""

import base64
import contextlib
import imaplib
import os
import re
import signal
import socket
import threading
import time

import pytest

from harness.dovecot_imap import DovecotImapBackend
from harness.mailroute import Mailroute
from harness.maildir import new_marker
from harness.procs import free_port, port_listening, wait_until

GREETING = ("* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ "
            "AUTH=PLAIN AUTH=LOGIN] mailroute ready.")
PRELOGIN_CAPS = ("* CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ "
                 "AUTH=PLAIN AUTH=LOGIN")
AUTH_FAILED = "NO [AUTHENTICATIONFAILED] Authentication failed."
UNAVAILABLE = "NO [UNAVAILABLE] Account is temporarily unavailable."
CLIENT_IP = "127.0.0.5"  # a test client's source address; mailroute's is 127.0.0.1


# --- mailroute with an IMAP listener ------------------------------------------

def passwd_line(user, password, fields):
    """passwd-file: user:password:uid:gid:gecos:home:shell:extra."""
    stored = "" if password is None else f"{{PLAIN}}{password}"
    return f"{user}:{stored}::::::{fields or ''}\n"


def write_passwd(path, users):
    with open(path, "w") as f:
        for user, (password, fields) in users.items():
            f.write(passwd_line(user, password, fields))


def imap_config(imap_port, auth_failure_delay="0", extra_config=""):
    """Added to mailroute's LMTP config (harness/mailroute.py): a later
    `protocols` line replaces the earlier one."""
    return (f"protocols = lmtp imap\n"
            f"auth_failure_delay = {auth_failure_delay}\n"
            f"service imap {{\n  inet_listener imap {{\n    port = {imap_port}\n  }}\n}}\n"
            f"{extra_config}")


def wait_imap_listening(mailroute, imap_port):
    wait_until(lambda: port_listening(imap_port) or not mailroute.alive(), timeout=10,
               what=f"mailrouted to listen for IMAP on {imap_port}")
    assert mailroute.alive(), mailroute.stderr()
    mailroute.imap_port = imap_port
    return mailroute


@contextlib.contextmanager
def own_imap_mailroute(workdir, users, extra_config="", auth_failure_delay="0"):
    """A Mailroute outside the start_mailroute fixture, for tests that check
    its exit status and sanitizer output themselves (a crash or a leak there
    is the test's failure, not a teardown error). Yields (mailroute, result):
    after the block, result["status"] and result["sanitizer"] are set."""
    passwd = os.path.join(workdir, "own-imap-users")
    write_passwd(passwd, users)
    imap_port = free_port()
    mailroute = Mailroute(os.path.join(workdir, "own-mr"), passwd_path=passwd,
                          extra_config=imap_config(imap_port, auth_failure_delay,
                                                   extra_config))
    result = {}
    try:
        wait_imap_listening(mailroute.start(), imap_port)
        yield mailroute, result
    finally:
        result["status"] = mailroute.stop()
        result["sanitizer"] = mailroute.sanitizer_report()


@pytest.fixture
def start_imap(start_mailroute, workdir):
    """start({user: (password or None, fields)}, extra_config="", imap_port=None,
    auth_failure_delay="0") -> a running Mailroute whose `imap_port` serves IMAP."""
    counter = [0]

    def start(users, extra_config="", imap_port=None, auth_failure_delay="0", **kwargs):
        counter[0] += 1
        passwd = os.path.join(workdir, f"imap-users-{counter[0]}")
        write_passwd(passwd, users)
        imap_port = imap_port or free_port()
        mailroute = start_mailroute(passwd_path=passwd, extra_config=imap_config(
            imap_port, auth_failure_delay, extra_config), **kwargs)
        return wait_imap_listening(mailroute, imap_port)
    return start


@pytest.fixture(scope="module")
def imap_backend(tmp_root):
    backend = DovecotImapBackend(os.path.join(tmp_root, "dovecot-imap"),
                                 name="imap-backend").start()
    yield backend
    backend.stop()


def proxy_fields(port, extra=""):
    return f"proxy host=127.0.0.1 port={port} {extra}".strip()


# --- clients ------------------------------------------------------------------

class RawImap:
    """A line-level IMAP client on a plain socket (optionally bound to a
    source address), for exact replies and for bytes imaplib will not send."""

    def __init__(self, port, source_ip=None, timeout=10):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if source_ip:
            self.sock.bind((source_ip, 0))
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close()

    @property
    def local_port(self):
        return self.sock.getsockname()[1]

    def send(self, data):
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def read_line(self):
        """The next line without its CRLF; EOFError when the server closed."""
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; pending bytes {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def read_bytes(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed inside a literal")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_until_tagged(self, tag):
        """Every line up to and including the one tagged `tag`."""
        lines = []
        while True:
            line = self.read_line()
            lines.append(line)
            if line.startswith(tag + " "):
                return lines

    def command(self, tag, text):
        self.send(f"{tag} {text}\r\n")
        return self.read_until_tagged(tag)

    def greeting(self):
        return self.read_line()

    def closed_by_server(self, timeout=5):
        """True when the server closed the connection (EOF) within timeout,
        with nothing more to read."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True


def tagged(lines):
    return lines[-1]


def plain_ir(user, password, authzid=""):
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


def login_ok_re(tag):
    """The backend's (Dovecot's) OK after a proxied login, with the client's
    tag and post-login capabilities (no AUTH=, which is pre-login only)."""
    return re.compile(re.escape(tag) + r" OK \[CAPABILITY IMAP4rev1 [^\]]*\bIDLE\b[^\]]*\] "
                      r"Logged in")


def assert_logged_in(line, tag="a"):
    assert login_ok_re(tag).fullmatch(line), line
    assert "AUTH=" not in line, f"pre-login capabilities after login: {line}"


def as_stored(message):
    """Dovecot's Maildir keeps LF line ends."""
    return message.replace(b"\r\n", b"\n")


def maildir_messages(maildir):
    found = []
    for sub in ("new", "cur"):
        path = os.path.join(maildir, sub)
        if os.path.isdir(path):
            for name in sorted(os.listdir(path)):
                with open(os.path.join(path, name), "rb") as f:
                    found.append(f.read())
    return found


# --- a scripted IMAP backend ---------------------------------------------------

STALL = "stall"  # FakeImapBackend login_reply: never answer


class _LineReader:
    """Lines from a socket, and what has arrived beyond them (pending)."""

    def __init__(self, conn):
        self.conn = conn
        self.buf = b""

    def readline(self):
        while b"\n" not in self.buf:
            chunk = self.conn.recv(65536)
            if not chunk:
                line, self.buf = self.buf, b""
                return line
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line + b"\n"

    def pending(self):
        """The bytes received but not read yet, without waiting."""
        self.conn.setblocking(False)
        try:
            while True:
                chunk = self.conn.recv(65536)
                if not chunk:
                    break
                self.buf += chunk
        except BlockingIOError:
            pass
        finally:
            self.conn.setblocking(True)
            self.conn.settimeout(30)
        return self.buf


class FakeImapBackend:
    """A scripted IMAP server in a thread. It greets with `banner` (None:
    says nothing), answers `I ID`, `C CAPABILITY` and, for the `L` login
    (LOGIN, or AUTHENTICATE PLAIN with or without an initial response),
    sends the `before_login` lines, `L <login_reply>` and the `after_login`
    lines in one write. With hold_id=S it answers ID after S seconds and
    notes whether the proxy sent more meanwhile (`sent_during_id`). login_reply is a
    string, or a function of the connection number returning one; None drops
    the connection, STALL never answers. After an "OK" every tagged command
    gets "<tag> OK <NAME> done", and "<tag> BYE" makes it close. It records
    every line each connection sent (`sessions`) and which connections the
    peer closed (`peer_closed`)."""

    DEFAULT_BANNER = ("* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID LITERAL+ "
                      "AUTH=PLAIN] fake ready.")

    def __init__(self, banner=DEFAULT_BANNER, login_reply="OK Logged in",
                 capability="IMAP4rev1 SASL-IR ID LITERAL+ AUTH=PLAIN", before_login=(),
                 after_login=(), hold_id=0):
        self.banner = banner
        self.login_reply = login_reply
        self.capability = capability
        self.before_login = list(before_login)
        self.after_login = list(after_login)
        self.hold_id = hold_id
        self.sent_during_id = {}  # connection number -> bytes received while holding ID
        self.sessions = []
        self.peer_closed = set()
        self.lock = threading.Lock()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.listener.listen(64)
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def stop(self):
        self.listener.close()

    def _accept_loop(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                lines = []
                self.sessions.append(lines)
                number = len(self.sessions)
            threading.Thread(target=self._serve, args=(conn, lines, number),
                             daemon=True).start()

    def _serve(self, conn, lines, number):
        conn.settimeout(30)
        reader = _LineReader(conn)
        try:
            if self.banner is not None:
                conn.sendall(self.banner.encode() + b"\r\n")
            self._dialogue(conn, reader, lines, number)
        except OSError:
            pass
        finally:
            conn.close()

    def _read(self, reader, lines, number):
        raw = reader.readline()
        if not raw:
            with self.lock:
                self.peer_closed.add(number)
            return None
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        with self.lock:
            lines.append(line)
        return line

    def _dialogue(self, conn, reader, lines, number):
        logged_in = False
        while (line := self._read(reader, lines, number)) is not None:
            tag, _, rest = line.partition(" ")
            name = rest.split(" ", 1)[0].upper()
            if logged_in and name == "BYE":
                return
            if logged_in:
                conn.sendall(f"{tag} OK {name} done\r\n".encode())
            elif tag == "I":
                if self.hold_id:
                    time.sleep(self.hold_id)
                    self.sent_during_id[number] = reader.pending()
                conn.sendall(b"* ID NIL\r\nI OK ID completed.\r\n")
            elif tag == "C":
                conn.sendall(f"* CAPABILITY {self.capability}\r\n"
                             "C OK Capability completed.\r\n".encode())
            elif tag == "L":
                if rest.upper() == "AUTHENTICATE PLAIN":
                    conn.sendall(b"+ \r\n")
                    if self._read(reader, lines, number) is None:
                        return
                reply = self.login_reply(number) if callable(self.login_reply) \
                    else self.login_reply
                if reply is None:
                    return
                if reply == STALL:
                    continue
                out = "".join(f"{line}\r\n" for line in
                              self.before_login + [f"L {reply}"] + self.after_login)
                conn.sendall(out.encode())  # one write: the proxy gets it all at once
                logged_in = reply.startswith("OK")

    def session_lines(self, index=0):
        """The lines of connection index ([] when it has not been accepted)."""
        with self.lock:
            return list(self.sessions[index]) if index < len(self.sessions) else []


@pytest.fixture
def fake_imap():
    started = []

    def start(**kwargs):
        fake = FakeImapBackend(**kwargs)
        started.append(fake)
        return fake
    yield start
    for fake in started:
        fake.stop()


# --- pre-login commands ----------------------------------------------------------

def test_greeting_and_prelogin_commands(start_imap):
    mailroute = start_imap({})
    with RawImap(mailroute.imap_port) as c:
        assert c.greeting() == GREETING
        assert c.command("a", "CAPABILITY") == [
            PRELOGIN_CAPS,
            "a OK Pre-login capabilities listed, post-login capabilities have more."]
        assert c.command("b", "NOOP") == ["b OK NOOP completed."]
        assert c.command("c", 'ID ("name" "pytest" "version" "1")') == [
            '* ID ("name" "mailroute")', "c OK ID completed."]
        assert c.command("d", "ID NIL") == ['* ID ("name" "mailroute")', "d OK ID completed."]
        assert c.command("e", "STARTTLS") == ["e BAD TLS support isn't enabled."]
        assert c.command("f", "SELECT INBOX") == [
            "f BAD Error in IMAP command received by server."]
        assert c.command("g", "AUTHENTICATE CRAM-MD5") == [
            "g NO [CANNOT] Unsupported authentication mechanism."]
        assert c.command("h", "LOGIN onlyuser") == ["h BAD Invalid arguments."]
        assert c.command("i", "LOGOUT") == ["* BYE Logging out", "i OK Logout completed."]
        assert c.closed_by_server()


def non_loopback_ip():
    """A local address outside 127/8, or None."""
    for probe in ("192.0.2.200", "10.255.255.254", "8.8.8.8"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.connect((probe, 9))  # UDP: picks a route, sends nothing
            except OSError:
                continue
            ip = s.getsockname()[0]
            if not ip.startswith("127."):
                return ip
    return None


def test_plaintext_login_needs_tls_or_a_trusted_network(start_imap, addr):
    """disable_plaintext_auth (default yes): a client that is neither on
    loopback nor in login_trusted_networks sees LOGINDISABLED and is refused."""
    ip = non_loopback_ip()
    if ip is None:
        pytest.skip("no local address outside 127/8")
    ada = addr("ada")
    users = {ada: ("ada-pw", "nologin")}
    mailroute = start_imap(users)
    with RawImap(mailroute.imap_port, source_ip=ip) as c:
        assert c.greeting() == ("* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE "
                                "IDLE LITERAL+ LOGINDISABLED] mailroute ready.")
        privacy = ("NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure "
                   "(SSL/TLS) connections.")
        assert c.command("a", f"LOGIN {ada} ada-pw") == [f"a {privacy}"]
        assert c.command("b", f"AUTHENTICATE PLAIN {plain_ir(ada, 'ada-pw')}") == [
            f"b {privacy}"]
        assert c.command("c", "CAPABILITY")[0].endswith(" LITERAL+ LOGINDISABLED")
    trusted = start_imap(users, extra_config=f"login_trusted_networks = 127.0.0.0/8 {ip}/32\n")
    with RawImap(trusted.imap_port, source_ip=ip) as c:
        assert c.greeting() == GREETING
        assert c.command("a", f"LOGIN {ada} ada-pw") == [
            "a NO [CONTACTADMIN] Login disabled for this user"]
    allowed = start_imap(users, extra_config="disable_plaintext_auth = no\n")
    with RawImap(allowed.imap_port, source_ip=ip) as c:
        assert c.greeting() == GREETING
        assert c.command("a", f"LOGIN {ada} ada-pw") == [
            "a NO [CONTACTADMIN] Login disabled for this user"]


def test_logout_before_login(start_imap):
    mailroute = start_imap({})
    with RawImap(mailroute.imap_port) as c:
        assert c.greeting() == GREETING
        assert c.command("x1", "LOGOUT") == ["* BYE Logging out", "x1 OK Logout completed."]
        assert c.closed_by_server()
    assert mailroute.alive()


def test_too_many_bad_commands_end_the_session(start_imap):
    mailroute = start_imap({})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        for i in range(9):
            assert c.command(f"t{i}", "FOO") == [
                f"t{i} BAD Error in IMAP command received by server."]
        c.send("t9 FOO\r\n")
        assert c.read_line() == "t9 BAD Error in IMAP command received by server."
        assert c.read_line() == "* BYE Too many invalid IMAP commands."
        assert c.closed_by_server()


# --- password forwarding and the round trip ------------------------------------------

def test_password_forwarding_round_trip(start_imap, imap_backend, addr):
    """nopassword: mailroute does not check the password, the backend does.
    A message APPENDed through the proxy lands in the backend's Maildir and
    comes back with FETCH."""
    alice = addr("alice")
    imap_backend.add_user(alice, "alice-secret")
    mailroute = start_imap({alice: (None, proxy_fields(imap_backend.port, "nopassword"))})
    marker = new_marker()
    message = (f"From: sender@example.org\r\nTo: {alice}\r\nSubject: {marker}\r\n"
               f"X-Test-Id: {marker}\r\n\r\nbody of {marker}\r\n").encode()
    imap = imaplib.IMAP4("127.0.0.1", mailroute.imap_port, timeout=10)
    status, data = imap.login(alice, "alice-secret")
    assert status == "OK" and data[0].endswith(b"Logged in"), data
    status, data = imap.select("INBOX")
    assert (status, data) == ("OK", [b"0"])
    status, data = imap.append("INBOX", None, None, message)
    assert status == "OK" and b"Append completed" in data[0], data
    status, data = imap.fetch("1", "(BODY.PEEK[])")
    assert status == "OK", data
    assert data[0][1] == message
    status, data = imap.search(None, "SUBJECT", marker)
    assert (status, data) == ("OK", [b"1"])
    assert imap.logout()[0] == "BYE"
    stored = maildir_messages(imap_backend.maildir(alice))
    assert stored == [as_stored(message)], stored
    assert len(imap_backend.wait_login_lines(alice)) == 1


def test_password_forwarding_wrong_password(start_imap, imap_backend, addr):
    """The backend refuses; the client gets Dovecot's plain failure and the
    session stays usable. (Its own source address: Dovecot's auth penalty
    slows down the next logins from the address of a failure.)"""
    alice = addr("alice")
    imap_backend.add_user(alice, "alice-secret")
    mailroute = start_imap({alice: (None, proxy_fields(imap_backend.port, "nopassword"))})
    with RawImap(mailroute.imap_port, source_ip="127.0.0.6") as c:
        c.greeting()
        assert c.command("a", f'LOGIN "{alice}" "wrong"') == [f"a {AUTH_FAILED}"]
        assert c.command("b", "NOOP") == ["b OK NOOP completed."]
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert_logged_in(tagged(c.command("b", f'LOGIN "{alice}" "alice-secret"')), "b")
    assert mailroute.log_lines("backend refused the login of", alice)


# --- the local password check ---------------------------------------------------------

def test_local_password_ok_and_wrong(start_imap, imap_backend, addr):
    bob = addr("bob")
    imap_backend.add_user(bob, "bob-pw")
    mailroute = start_imap({bob: ("bob-pw", proxy_fields(imap_backend.port))})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert c.command("a", f"LOGIN {bob} wrong") == [f"a {AUTH_FAILED}"]
        assert imap_backend.mentions(bob) == [], "a wrong password reached the backend"
        lines = c.command("b", f"LOGIN {bob} bob-pw")
        assert_logged_in(tagged(lines), "b")
        select = c.command("c", "SELECT INBOX")
        assert re.fullmatch(r"c OK \[READ-WRITE\] Select completed \(.*\)\.", select[-1]), select
    assert mailroute.log_lines("login of", bob, "refused")
    for secret in ("bob-pw", "wrong"):
        assert secret not in mailroute.stderr(), f"a password was logged: {secret}"


def test_unknown_user(start_imap):
    mailroute = start_imap({})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert c.command("a", "LOGIN nobody.here@example.com pw") == [f"a {AUTH_FAILED}"]


def test_authenticate_plain_with_and_without_initial_response(start_imap, imap_backend, addr):
    carol = addr("carol")
    imap_backend.add_user(carol, "carol-pw")
    mailroute = start_imap({carol: ("carol-pw", proxy_fields(imap_backend.port))})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        ir = plain_ir(carol, "carol-pw")
        assert_logged_in(tagged(c.command("a", f"AUTHENTICATE PLAIN {ir}")))
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        c.send("a AUTHENTICATE PLAIN\r\n")
        assert c.read_line() == "+ "
        c.send(plain_ir(carol, "carol-pw") + "\r\n")
        assert_logged_in(c.read_line())
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        c.send("a AUTHENTICATE PLAIN\r\n")
        assert c.read_line() == "+ "
        c.send("*\r\n")
        assert c.read_line() == "a BAD Authentication aborted by client."
        assert c.command("b", f"AUTHENTICATE PLAIN {plain_ir(carol, 'nope')}") == [
            f"b {AUTH_FAILED}"]


def test_authenticate_login(start_imap, imap_backend, addr):
    dave = addr("dave")
    imap_backend.add_user(dave, "dave-pw")
    mailroute = start_imap({dave: ("dave-pw", proxy_fields(imap_backend.port))})
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        c.send("a AUTHENTICATE LOGIN\r\n")
        assert c.read_line() == "+ " + b64("Username:")
        c.send(b64(dave) + "\r\n")
        assert c.read_line() == "+ " + b64("Password:")
        c.send(b64("dave-pw") + "\r\n")
        assert_logged_in(c.read_line())


def test_authenticate_login_with_initial_response(start_imap, imap_backend, addr):
    eli = addr("eli")
    imap_backend.add_user(eli, "eli-pw")
    mailroute = start_imap({eli: ("eli-pw", proxy_fields(imap_backend.port))})
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        c.send(f"a AUTHENTICATE LOGIN {b64(eli)}\r\n")
        assert c.read_line() == "+ " + b64("Password:")
        c.send(b64("eli-pw") + "\r\n")
        assert_logged_in(c.read_line())


def test_authenticate_response_too_long(start_imap):
    mailroute = start_imap({})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        c.send("a AUTHENTICATE PLAIN\r\n")
        assert c.read_line() == "+ "
        c.send("A" * 100000 + "\r\n")
        assert c.read_line() == "a BAD Authentication line too long."
        assert c.closed_by_server()
    assert mailroute.alive()


def test_client_side_master_login_is_refused(start_imap, imap_backend, addr):
    """PLAIN with an authzid other than the authcid asks for a master login;
    without a master passdb there is no master user to check."""
    erin, frank = addr("erin"), addr("frank")
    mailroute = start_imap({erin: ("erin-pw", proxy_fields(imap_backend.port)),
                            frank: ("frank-pw", proxy_fields(imap_backend.port))})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert c.command("a", f"AUTHENTICATE PLAIN {plain_ir(erin, 'erin-pw', frank)}") == [
            f"a {AUTH_FAILED}"]


def master_passdb(workdir, masters, separator="*"):
    """A master passdb (passwd-file) and the separator, as extra config."""
    path = os.path.join(workdir, f"masters-{new_marker()}")
    write_passwd(path, {name: (pw, "") for name, pw in masters.items()})
    return (f"auth_master_user_separator = {separator}\n"
            f"passdb {{\n  driver = passwd-file\n  args = {path}\n  master = yes\n}}\n")


def test_client_master_login_with_separator_and_with_authzid(start_imap, imap_backend, addr,
                                                              workdir):
    """"user*master" (LOGIN) and PLAIN authzid=user authcid=master: the master
    password is checked against the master passdb, the user is routed by its
    own fields, and the backend gets the same master login."""
    olga = addr("olga")
    imap_backend.add_user(olga, "olga-backend-only")
    imap_backend.add_master("support", "support-pw")
    mailroute = start_imap({olga: ("olga-pw", proxy_fields(imap_backend.port))},
                           extra_config=master_passdb(workdir, {"support": "support-pw"}))
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert_logged_in(tagged(c.command("a", f'LOGIN "{olga}*support" support-pw')))
        assert c.command("b", "SELECT INBOX")[-1].startswith("b OK [READ-WRITE]")
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        ir = plain_ir("support", "support-pw", authzid=olga)
        assert_logged_in(tagged(c.command("a", f"AUTHENTICATE PLAIN {ir}")))
    assert len(imap_backend.master_login_lines(olga)) == 2
    assert "support-pw" not in mailroute.stderr()


def test_client_master_login_failures(start_imap, imap_backend, addr, workdir):
    """A wrong master password, an unknown master, an unknown user and an
    empty part are all plain authentication failures; an ordinary login of
    the master name itself is not a master login."""
    pia = addr("pia")
    mailroute = start_imap({pia: ("pia-pw", proxy_fields(imap_backend.port)),
                            "support": ("ordinary-pw", "nologin")},
                           extra_config=master_passdb(workdir, {"support": "support-pw"}))
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        for i, login in enumerate([f'"{pia}*support" wrong-pw', f'"{pia}*nobody" support-pw',
                                   f'"{addr("ghost")}*support" support-pw',
                                   '"*support" support-pw', f'"{pia}*" support-pw',
                                   "support support-pw"]):
            assert c.command(f"a{i}", f"LOGIN {login}") == [f"a{i} {AUTH_FAILED}"], login
    assert imap_backend.master_login_lines(pia) == []


# --- what the backend is told ------------------------------------------------------------

def test_destuser(start_imap, imap_backend, addr):
    alias, real = addr("alias"), addr("real")
    imap_backend.add_user(real, "real-pw")
    mailroute = start_imap({alias: ("real-pw",
                                    proxy_fields(imap_backend.port, f"destuser={real}"))})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert_logged_in(tagged(c.command("a", f"LOGIN {alias} real-pw")))
        marker = new_marker()
        message = f"Subject: {marker}\r\n\r\nfor the real user\r\n".encode()
        c.send(f"b APPEND INBOX {{{len(message)}+}}\r\n".encode() + message + b"\r\n")
        assert c.read_until_tagged("b")[-1].startswith("b OK [APPENDUID ")
    assert len(imap_backend.wait_login_lines(real)) == 1
    assert imap_backend.mentions(alias) == []
    assert maildir_messages(imap_backend.maildir(real)) == [as_stored(message)]


def test_master_user_login_at_the_backend(start_imap, imap_backend, addr):
    """passdb master= pass=: the backend gets AUTHENTICATE PLAIN with
    authzid = the user and authcid = the master; the user's own backend
    password is never needed."""
    gina = addr("gina")
    imap_backend.add_user(gina, "password-only-the-backend-knows")
    imap_backend.add_master("proxyadmin", "master-secret")
    fields = proxy_fields(imap_backend.port, "master=proxyadmin pass=master-secret")
    mailroute = start_imap({gina: ("gina-client-pw", fields)})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert_logged_in(tagged(c.command("a", f"LOGIN {gina} gina-client-pw")))
        select = c.command("b", "SELECT INBOX")
        assert select[-1].startswith("b OK [READ-WRITE]"), select
    assert len(imap_backend.wait_login_lines(gina)) == 1
    assert len(imap_backend.master_login_lines(gina)) == 1
    for secret in ("gina-client-pw", "master-secret"):
        assert secret not in mailroute.stderr(), f"{secret} was logged"


def test_master_user_wire_form(start_imap, fake_imap, addr):
    """reference §A: L AUTHENTICATE PLAIN base64(destuser NUL master NUL pass)."""
    hal = addr("hal")
    fake = fake_imap()
    fields = proxy_fields(fake.port, "master=proxyadmin pass=masterpw destuser=real@example.com")
    mailroute = start_imap({hal: ("hal-pw", fields)})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        c.command("a", f"LOGIN {hal} hal-pw")
    lines = fake.session_lines()
    assert lines[-1] == "L AUTHENTICATE PLAIN cmVhbEBleGFtcGxlLmNvbQBwcm94eWFkbWluAG1hc3RlcnB3"


def test_id_carries_the_client_address(start_imap, imap_backend, addr):
    """Dovecot trusts mailroute (login_trusted_networks) and logs the client
    address mailroute forwarded in its ID; a raw socket from 127.0.0.5."""
    ivy = addr("ivy")
    imap_backend.add_user(ivy, "ivy-pw")
    mailroute = start_imap({ivy: ("ivy-pw", proxy_fields(imap_backend.port))})
    with RawImap(mailroute.imap_port, source_ip=CLIENT_IP) as c:
        c.greeting()
        assert_logged_in(tagged(c.command("a", f"LOGIN {ivy} ivy-pw")))
        c.command("b", "LOGOUT")
    lines = imap_backend.wait_login_lines(ivy)
    assert len(lines) == 1 and f"rip={CLIENT_IP}," in lines[0], lines
    # Dovecot took mailroute's x-session-id as its own session id.
    proxied = mailroute.log_lines(f"user={ivy} rip={CLIENT_IP} proxied to")
    assert len(proxied) == 1, proxied
    session = re.search(r"imap\(([^)]+)\)", proxied[0]).group(1)
    assert f"session=<{session}>" in lines[0], (session, lines[0])


def test_proxy_not_trusted_sends_no_id(start_imap, imap_backend, addr):
    jon = addr("jon")
    imap_backend.add_user(jon, "jon-pw")
    mailroute = start_imap({jon: ("jon-pw",
                                  proxy_fields(imap_backend.port, "proxy_not_trusted"))})
    with RawImap(mailroute.imap_port, source_ip=CLIENT_IP) as c:
        c.greeting()
        assert_logged_in(tagged(c.command("a", f"LOGIN {jon} jon-pw")))
    lines = imap_backend.wait_login_lines(jon)
    assert len(lines) == 1 and "rip=127.0.0.1," in lines[0], lines


ID_PAIRS_RE = (r'"x-session-id" "(?P<sid>[^"]+)" "x-originating-ip" "127\.0\.0\.5" '
               r'"x-originating-port" "{client_port}" "x-connected-ip" "127\.0\.0\.1" '
               r'"x-connected-port" "{imap_port}" "x-proxy-ttl" "4" "x-forward-foo" "bar"')


def id_exchange(start_imap, fake_imap, addr):
    """A login from 127.0.0.5 through a fake backend: (lines the backend
    got, the client's port, mailroute)."""
    kim = addr("kim")
    fake = fake_imap()
    mailroute = start_imap({kim: ("kim-pw", proxy_fields(fake.port, "forward_foo=bar"))})
    with RawImap(mailroute.imap_port, source_ip=CLIENT_IP) as c:
        c.greeting()
        assert c.command("a", f"LOGIN {kim} kim-pw") == [
            "a OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID LITERAL+ AUTH=PLAIN] "
            "Logged in"]
        client_port = c.local_port
        assert c.command("b", "NOOP") == ["b OK NOOP done"]
    assert fake.session_lines()[1:] == [f'L LOGIN "{kim}" "kim-pw"', "b NOOP"]
    return fake.session_lines(), client_port, mailroute


def test_id_carries_client_data_ttl_and_forward_fields(start_imap, fake_imap, addr):
    """reference §3.4: the ID pairs in Dovecot's order, TTL 4 on the first
    hop, forward_* as x-forward-*; then LOGIN with quoted strings."""
    lines, client_port, mailroute = id_exchange(start_imap, fake_imap, addr)
    pairs = ID_PAIRS_RE.format(client_port=client_port, imap_port=mailroute.imap_port)
    match = re.fullmatch(r"I ID \( ?" + pairs + r"\)", lines[0])
    assert match, lines
    assert mailroute.log_lines(f"imap({match['sid']})", "proxied to 127.0.0.1")


def test_id_exact_form(start_imap, fake_imap, addr):
    lines, client_port, mailroute = id_exchange(start_imap, fake_imap, addr)
    pairs = ID_PAIRS_RE.format(client_port=client_port, imap_port=mailroute.imap_port)
    assert re.fullmatch(r"I ID \(" + pairs + r"\)", lines[0]), lines


def test_backend_login_is_pipelined(start_imap, fake_imap, addr):
    """By default ID and LOGIN go in one write (reference §3.3)."""
    amo = addr("amo")
    fake = fake_imap(hold_id=0.3)
    mailroute = start_imap({amo: ("amo-pw", proxy_fields(fake.port))})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert c.command("a", f"LOGIN {amo} amo-pw")[-1].startswith("a OK ")
    assert fake.sent_during_id[1] == f'L LOGIN "{amo}" "amo-pw"\r\n'.encode()


def test_proxy_nopipelining(start_imap, fake_imap, addr):
    bo = addr("bo")
    fake = fake_imap(hold_id=0.3)
    mailroute = start_imap({bo: ("bo-pw", proxy_fields(fake.port, "proxy_nopipelining"))})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert c.command("a", f"LOGIN {bo} bo-pw")[-1].startswith("a OK ")
    assert fake.sent_during_id[1] == b""
    assert fake.session_lines()[1:] == [f'L LOGIN "{bo}" "bo-pw"']


def test_banner_without_capabilities(start_imap, fake_imap, addr):
    """No capabilities in the banner: no ID (reference §3.3 step 2), a
    C CAPABILITY, and the client's OK gets the capabilities inserted."""
    lou = addr("lou")
    fake = fake_imap(banner="* OK plain banner", capability="IMAP4rev1 ID XFAKE")
    mailroute = start_imap({lou: ("lou-pw", proxy_fields(fake.port))})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert c.command("a", f"LOGIN {lou} lou-pw") == [
            "a OK [CAPABILITY IMAP4rev1 ID XFAKE] Logged in"]
    assert fake.session_lines() == ["C CAPABILITY", f'L LOGIN "{lou}" "lou-pw"']


def test_capability_asked_before_login_is_repeated_untagged(start_imap, fake_imap, addr):
    """reference §A: a client that sent CAPABILITY before logging in gets
    `* CAPABILITY <backend's>` before the tagged OK."""
    mo = addr("mo")
    fake = fake_imap(login_reply="OK [CAPABILITY IMAP4rev1 BACKENDONLY-CAP IDLE] Logged in")
    mailroute = start_imap({mo: ("mo-pw", proxy_fields(fake.port))})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        c.command("c", "CAPABILITY")
        assert c.command("a", f"LOGIN {mo} mo-pw") == [
            "* CAPABILITY IMAP4rev1 BACKENDONLY-CAP IDLE",
            "a OK [CAPABILITY IMAP4rev1 BACKENDONLY-CAP IDLE] Logged in"]


def test_password_quoting_towards_the_backend(start_imap, fake_imap, addr):
    """Quotes and backslashes are escaped in a quoted string; a password that
    cannot be quoted (8-bit) goes in AUTHENTICATE PLAIN (the backend has
    SASL-IR), so nothing in it can end the command line."""
    nat, oli = addr("nat"), addr("oli")
    fake = fake_imap()
    mailroute = start_imap({nat: (None, proxy_fields(fake.port, "nopassword")),
                            oli: (None, proxy_fields(fake.port, "nopassword"))})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert c.command("a", f'LOGIN {nat} "p\\"w\\\\x"')[-1].startswith("a OK ")
    assert fake.session_lines(0)[-1] == f'L LOGIN "{nat}" "p\\"w\\\\x"'
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        c.send(f"a LOGIN {oli} {{5+}}\r\n".encode() + "pä€".encode()[:5] + b"\r\n")
        assert c.read_line().startswith("a OK ")
    encoded = base64.b64encode(b"\0" + oli.encode() + b"\0" + "pä€".encode()[:5]).decode()
    assert fake.session_lines(1)[-1] == f"L AUTHENTICATE PLAIN {encoded}"


# --- referrals, nologin, delays --------------------------------------------------------------

def test_referral_exact_lines(start_imap, addr):
    """RFC 2221 referral: the user %-escaped (destuser wins), the port left
    out when 143, IPv6 in brackets, AUTH= the client's mechanism."""
    pat, quin, ros, sam = addr("pat"), addr("quin"), addr("ros"), addr("sam")
    odd = addr("o'dd;semi%pct+tag")
    mailroute = start_imap({
        odd: ("odd-pw", "nologin host=192.0.2.13"),
        pat: ("pat-pw", "nologin host=192.0.2.10 port=1143"),
        quin: ("quin-pw", "nologin host=192.0.2.11"),
        ros: ("ros-pw", "nologin host=192.0.2.12 port=143 destuser=bob@example.com"),
        sam: ("sam-pw", "nologin host=2001:db8::1 port=1143 reason=Moved_to_the_new_server"),
    })
    esc = lambda a: a.replace("@", "%40")  # noqa: E731
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert c.command("a", f"LOGIN {pat} pat-pw") == [
            f"a NO [REFERRAL imap://{esc(pat)};AUTH=PLAIN@192.0.2.10:1143/] "
            "Try this server instead."]
        assert c.command("b", f"LOGIN {quin} quin-pw") == [
            f"b NO [REFERRAL imap://{esc(quin)};AUTH=PLAIN@192.0.2.11/] "
            "Try this server instead."]
        assert c.command("c", f"LOGIN {ros} ros-pw") == [
            "c NO [REFERRAL imap://bob%40example.com;AUTH=PLAIN@192.0.2.12/] "
            "Try this server instead."]
        assert c.command("d", f"LOGIN {sam} sam-pw") == [
            f"d NO [REFERRAL imap://{esc(sam)};AUTH=PLAIN@[2001:db8::1]:1143/] "
            "Moved_to_the_new_server"]
        assert c.command("f", f"LOGIN \"{odd}\" odd-pw") == [
            "f NO [REFERRAL imap://" + odd.replace(";", "%3B").replace("%p", "%25p")
            .replace("@", "%40") + ";AUTH=PLAIN@192.0.2.13/] Try this server instead."]
        b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
        c.send("e AUTHENTICATE LOGIN\r\n")
        c.read_line()
        c.send(b64(pat) + "\r\n")
        c.read_line()
        c.send(b64("pat-pw") + "\r\n")
        assert c.read_line() == (f"e NO [REFERRAL imap://{esc(pat)};AUTH=LOGIN@192.0.2.10:1143/] "
                                 "Try this server instead.")


def test_referral_to_a_host_name(start_imap, addr):
    tom = addr("tom")
    mailroute = start_imap({tom: ("tom-pw", "nologin host=mail2.example.com "
                                            "hostip=192.0.2.20 port=1143")})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert c.command("a", f"LOGIN {tom} tom-pw") == [
            f"a NO [REFERRAL imap://{tom.replace('@', '%40')};AUTH=PLAIN@mail2.example.com:1143/]"
            " Try this server instead."]


def test_nologin_with_and_without_reason(start_imap, addr):
    uma, vic = addr("uma"), addr("vic")
    mailroute = start_imap({uma: ("uma-pw", "nologin"),
                            vic: ("vic-pw", "nologin reason=Account_suspended")})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert c.command("a", f"LOGIN {uma} uma-pw") == [
            "a NO [CONTACTADMIN] Login disabled for this user"]
        assert c.command("b", f"LOGIN {vic} vic-pw") == ["b NO [CONTACTADMIN] Account_suspended"]
        # nologin needs the right password, like a referral.
        assert c.command("c", f"LOGIN {uma} wrong") == [f"c {AUTH_FAILED}"]


def test_wrong_password_leaks_no_referral_and_is_delayed(start_imap, addr):
    """reference §2.3: a wrong password + nologin host=H gets the plain
    failure after auth_failure_delay (2 s), never the referral."""
    wes = addr("wes")
    mailroute = start_imap({wes: ("wes-pw", "nologin host=192.0.2.30 port=1143")},
                           auth_failure_delay="2s")
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        started = time.monotonic()
        assert c.command("a", f"LOGIN {wes} wrong") == [f"a {AUTH_FAILED}"]
        elapsed = time.monotonic() - started
        assert 1.9 <= elapsed < 4, elapsed
        # The right password gets the referral, without the delay.
        started = time.monotonic()
        assert c.command("b", f"LOGIN {wes} wes-pw") == [
            f"b NO [REFERRAL imap://{wes.replace('@', '%40')};AUTH=PLAIN@192.0.2.30:1143/] "
            "Try this server instead."]
        assert time.monotonic() - started < 1
        # An unknown user waits as long as a wrong password.
        started = time.monotonic()
        assert c.command("c", "LOGIN nobody.here@example.com pw") == [f"c {AUTH_FAILED}"]
        assert 1.9 <= time.monotonic() - started < 4
    # A client that leaves during the delay: nothing breaks (teardown checks).
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        c.send(f"a LOGIN {wes} wrong\r\n")
    time.sleep(2.3)
    with RawImap(mailroute.imap_port) as c:
        assert c.greeting() == GREETING


def test_nodelay_skips_the_failure_delay(start_imap, addr):
    xia = addr("xia")
    mailroute = start_imap({xia: ("xia-pw", "nodelay")}, auth_failure_delay="2s")
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        started = time.monotonic()
        assert c.command("a", f"LOGIN {xia} wrong") == [f"a {AUTH_FAILED}"]
        assert time.monotonic() - started < 1


def test_referral_log_in_anyway(start_imap, imap_backend, addr):
    """host without nologin, and a local backend (imap_local): the client
    is logged in there and told about the other server (RFC 2221)."""
    yan = addr("yan")
    imap_backend.add_user(yan, "yan-pw")
    mailroute = start_imap({yan: ("yan-pw", "host=192.0.2.40 port=1143")},
                           extra_config=f"imap_local = 127.0.0.1:{imap_backend.port}\n")
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert c.command("a", f"LOGIN {yan} yan-pw") == [
            f"a OK [REFERRAL imap://{yan.replace('@', '%40')};AUTH=PLAIN@192.0.2.40:1143/] "
            "Logged in, but you should use this server instead."]
        select = c.command("b", "SELECT INBOX")
        assert select[-1].startswith("b OK [READ-WRITE]"), select
    assert len(imap_backend.wait_login_lines(yan)) == 1


def test_referral_without_local_backend_refuses(start_imap, addr):
    """host without nologin and no imap_local: like nologin (DESIGN §4)."""
    zed = addr("zed")
    mailroute = start_imap({zed: ("zed-pw", "host=192.0.2.41")})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert c.command("a", f"LOGIN {zed} zed-pw") == [
            f"a NO [REFERRAL imap://{zed.replace('@', '%40')};AUTH=PLAIN@192.0.2.41/] "
            "Try this server instead."]


def test_plain_user_goes_to_imap_local(start_imap, imap_backend, addr):
    amy = addr("amy")
    imap_backend.add_user(amy, "amy-pw")
    mailroute = start_imap({amy: ("amy-pw", "")},
                           extra_config=f"imap_local = 127.0.0.1:{imap_backend.port}\n")
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert_logged_in(tagged(c.command("a", f"LOGIN {amy} amy-pw")))


def test_plain_user_without_imap_local_is_unavailable(start_imap, addr):
    ben = addr("ben")
    mailroute = start_imap({ben: ("ben-pw", "")})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert c.command("a", f"LOGIN {ben} ben-pw") == [f"a {UNAVAILABLE}"]
    assert mailroute.log_lines("no local backend for this protocol")


# --- self, loops, failures ------------------------------------------------------------------

def test_proxy_maybe_to_self_logs_in_locally(start_imap, imap_backend, addr):
    cal = addr("cal")
    imap_backend.add_user(cal, "cal-pw")
    port = free_port()
    mailroute = start_imap({cal: ("cal-pw", f"proxy_maybe host=127.0.0.1 port={port}")},
                           imap_port=port,
                           extra_config=f"imap_local = 127.0.0.1:{imap_backend.port}\n")
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert_logged_in(tagged(c.command("a", f"LOGIN {cal} cal-pw")))
    assert len(imap_backend.wait_login_lines(cal)) == 1


def test_proxy_maybe_elsewhere_proxies(start_imap, imap_backend, addr):
    dan = addr("dan")
    imap_backend.add_user(dan, "dan-pw")
    mailroute = start_imap({dan: ("dan-pw",
                                  f"proxy_maybe host=127.0.0.1 port={imap_backend.port}")})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert_logged_in(tagged(c.command("a", f"LOGIN {dan} dan-pw")))


def test_proxy_to_self_is_a_loop(start_imap, imap_backend, addr):
    eve = addr("eve")
    port = free_port()
    mailroute = start_imap({eve: ("eve-pw", f"proxy host=127.0.0.1 port={port}")},
                           imap_port=port,
                           extra_config=f"imap_local = 127.0.0.1:{imap_backend.port}\n")
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert c.command("a", f"LOGIN {eve} eve-pw") == [f"a {UNAVAILABLE}"]
        assert c.command("b", "NOOP") == ["b OK NOOP completed."]
    assert mailroute.log_lines(eve, "proxying loops to itself")


def test_ttl_from_a_trusted_id_is_honoured(start_imap, fake_imap, addr):
    fay = addr("fay")
    fake = fake_imap()
    mailroute = start_imap({fay: ("fay-pw", proxy_fields(fake.port))})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        c.command("i", 'ID ("x-originating-ip" "192.0.2.99" "x-proxy-ttl" "1")')
        # Dovecot answers an exhausted TTL with [SERVERBUG] (reference 3.5/3.6),
        # so the proxy before us passes it on instead of retrying.
        assert c.command("a", f"LOGIN {fay} fay-pw") == [
            "a NO [SERVERBUG] Account is temporarily unavailable."]
    assert fake.sessions == []


def id_forwarded_after(start_imap, fake_imap, user, client_ids, source_ip=None,
                       extra_config=""):
    """Log in through a fake backend after sending the ID commands
    client_ids: (the ID mailroute sent the backend, the client's port,
    mailroute)."""
    fake = fake_imap()
    mailroute = start_imap({user: ("pw", proxy_fields(fake.port))},
                           extra_config=extra_config)
    with RawImap(mailroute.imap_port, source_ip=source_ip) as c:
        c.greeting()
        for i, client_id in enumerate(client_ids):
            assert c.command(f"i{i}", f"ID {client_id}") == [
                '* ID ("name" "mailroute")', f"i{i} OK ID completed."]
        assert c.command("a", f"LOGIN {user} pw")[-1].startswith("a OK ")
        client_port = c.local_port
    return fake.session_lines()[0], client_port, mailroute


def test_client_data_from_a_trusted_id_is_passed_on(start_imap, fake_imap, addr):
    """reference §3.4: from a trusted peer (another proxy), mailroute takes
    the client's address and port, the session id and the TTL of its ID."""
    first, _, mailroute = id_forwarded_after(start_imap, fake_imap, addr("gus"), [
        '("x-session-id" "chain-session-1" "x-originating-ip" "192.0.2.99" '
        '"x-originating-port" "4711" "x-proxy-ttl" "3")'])
    assert first == (
        'I ID ("x-session-id" "chain-session-1" "x-originating-ip" "192.0.2.99" '
        '"x-originating-port" "4711" "x-connected-ip" "127.0.0.1" '
        f'"x-connected-port" "{mailroute.imap_port}" "x-proxy-ttl" "2")')
    assert mailroute.log_lines("imap(chain-session-1)", "rip=192.0.2.99 proxied to")


def test_only_the_first_trusted_id_counts(start_imap, fake_imap, addr):
    first, _, _ = id_forwarded_after(start_imap, fake_imap, addr("hal"), [
        '("x-originating-ip" "192.0.2.99")', '("x-originating-ip" "192.0.2.100")'])
    assert '"x-originating-ip" "192.0.2.99"' in first, first


def test_bad_values_in_a_trusted_id_are_ignored(start_imap, fake_imap, addr):
    first, client_port, _ = id_forwarded_after(start_imap, fake_imap, addr("ike"), [
        '("x-originating-ip" "not-an-address" "x-originating-port" "99999" '
        '"x-proxy-ttl" "many" "x-session-id" "has space")'])
    assert re.fullmatch(r'I ID \("x-session-id" "[A-Za-z0-9_-]+" "x-originating-ip" '
                        rf'"127\.0\.0\.1" "x-originating-port" "{client_port}" .*'
                        r'"x-proxy-ttl" "4"\)', first), first


def test_an_untrusted_client_id_is_ignored(start_imap, fake_imap, addr):
    """A client outside login_trusted_networks cannot claim another address,
    session or TTL."""
    ip = non_loopback_ip()
    if ip is None:
        pytest.skip("no local address outside 127/8")
    first, client_port, _ = id_forwarded_after(
        start_imap, fake_imap, addr("jo"),
        ['("x-session-id" "spoofed" "x-originating-ip" "192.0.2.99" '
         '"x-originating-port" "4711" "x-proxy-ttl" "1")'],
        source_ip=ip, extra_config="disable_plaintext_auth = no\n")
    assert re.fullmatch(r'I ID \("x-session-id" "(?!spoofed")[^"]+" "x-originating-ip" '
                        rf'"{re.escape(ip)}" "x-originating-port" "{client_port}" .*'
                        r'"x-proxy-ttl" "4"\)', first), first


def test_forward_fields_from_a_trusted_id_are_passed_on(start_imap, fake_imap, addr):
    first, _, _ = id_forwarded_after(start_imap, fake_imap, addr("kev"), [
        '("x-originating-ip" "192.0.2.99" "x-forward-tenant" "blue")'])
    assert first.endswith('"x-forward-tenant" "blue")'), first


def test_connected_address_from_a_trusted_id_is_passed_on(start_imap, fake_imap, addr):
    first, _, _ = id_forwarded_after(start_imap, fake_imap, addr("lin"), [
        '("x-originating-ip" "192.0.2.99" "x-connected-ip" "192.0.2.1" '
        '"x-connected-port" "143")'])
    assert '"x-connected-ip" "192.0.2.1" "x-connected-port" "143"' in first, first


def test_two_proxies_pointing_at_each_other(start_imap, addr):
    """A proxies to B and B to A: the TTL in the forwarded ID (5, minus one
    per hop; a hop that receives 1 or less refuses, reference §3.6) ends the
    loop after five sessions, at once, instead of a storm of connections."""
    ugo = addr("ugo")
    port_a, port_b = free_port(), free_port()
    a = start_imap({ugo: ("ugo-pw", proxy_fields(port_b))}, imap_port=port_a)
    b = start_imap({ugo: ("ugo-pw", proxy_fields(port_a))}, imap_port=port_b)
    with RawImap(port_a) as c:
        c.greeting()
        started = time.monotonic()
        # The hop that finds the TTL exhausted answers [SERVERBUG] (reference
        # 3.5/3.6); every hop before it passes that on instead of retrying.
        assert c.command("a", f"LOGIN {ugo} ugo-pw") == [
            "a NO [SERVERBUG] Account is temporarily unavailable."]
        assert time.monotonic() - started < 2
    def failures():
        return [line for line in a.log_lines(ugo) + b.log_lines(ugo)
                if "failed" in line or "refused" in line]
    wait_until(lambda: len(failures()) >= 5, timeout=5, what="every hop to log its failure")
    time.sleep(0.2)
    assert len(failures()) == 5, failures()
    assert len([line for line in failures() if "appear to be looping" in line]) == 1
    # One session id across the hops: each took it from the trusted ID.
    assert len({re.search(r"imap\(([^)]+)\)", line).group(1) for line in failures()}) == 1


def test_backend_down(start_imap, addr):
    """Connect failures are retried (login_proxy_max_reconnects, 1 s apart),
    then the client gets UNAVAILABLE; the log tells the attempts."""
    hue = addr("hue")
    dead_port = free_port()
    mailroute = start_imap({hue: ("hue-pw", proxy_fields(dead_port))},
                           extra_config="login_proxy_max_reconnects = 2\n")
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        started = time.monotonic()
        assert c.command("a", f"LOGIN {hue} hue-pw") == [f"a {UNAVAILABLE}"]
        elapsed = time.monotonic() - started
        assert 1.9 <= elapsed < 5, elapsed
        assert c.command("b", "NOOP") == ["b OK NOOP completed."]
    lines = mailroute.log_lines(hue, "connect failed")
    assert len(lines) == 1 and "(3 attempts)" in lines[0], lines


def test_backend_down_with_short_proxy_timeout(start_imap, addr):
    """proxy_timeout bounds the retries."""
    ida = addr("ida")
    mailroute = start_imap({ida: ("ida-pw", proxy_fields(free_port(), "proxy_timeout=1"))},
                           extra_config="login_proxy_max_reconnects = 5\n")
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        started = time.monotonic()
        assert c.command("a", f"LOGIN {ida} ida-pw") == [f"a {UNAVAILABLE}"]
        assert time.monotonic() - started < 1.5


def test_backend_refusal_texts(start_imap, fake_imap, addr):
    """reference §3.3: the backend's text is hidden (it may tell which users
    exist) unless its NO carries a response code other than
    AUTHENTICATIONFAILED, which is forwarded."""
    replies = {
        addr("r1"): ("NO Backend says: no such user", AUTH_FAILED),
        addr("r2"): ("NO [AUTHENTICATIONFAILED] Backend says: bad password for r2", AUTH_FAILED),
        addr("r3"): ("BAD Backend hiccup", AUTH_FAILED),
        addr("r4"): ("NO [EXPIRED] Your password has expired", "NO [EXPIRED] Your password "
                                                                "has expired"),
        addr("r5"): ("NO [ALERT] Mailbox is being migrated", "NO [ALERT] Mailbox is being "
                                                             "migrated"),
    }
    by_user = {}
    fake = fake_imap()
    fake.login_reply = lambda n: by_user[n]
    mailroute = start_imap({u: ("pw", proxy_fields(fake.port)) for u in replies})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        for number, (user, (backend_says, client_sees)) in enumerate(replies.items(), 1):
            by_user[number] = backend_says
            assert c.command(f"t{number}", f"LOGIN {user} pw") == [f"t{number} {client_sees}"]
    assert len(fake.sessions) == len(replies)


def test_backend_unavailable_is_retried_and_forwarded(start_imap, fake_imap, addr):
    jay = addr("jay")
    fake = fake_imap(login_reply="NO [UNAVAILABLE] Backend is in maintenance")
    mailroute = start_imap({jay: ("jay-pw", proxy_fields(fake.port))},
                           extra_config="login_proxy_max_reconnects = 2\n")
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert c.command("a", f"LOGIN {jay} jay-pw") == [
            "a NO [UNAVAILABLE] Backend is in maintenance"]
    assert len(fake.sessions) == 3


def test_backend_unavailable_is_a_temporary_failure(start_imap, fake_imap, addr):
    kai = addr("kai")
    fake = fake_imap(login_reply="NO [UNAVAILABLE] Backend is in maintenance")
    mailroute = start_imap({kai: ("kai-pw", proxy_fields(fake.port))})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert c.command("a", f"LOGIN {kai} kai-pw")[-1].startswith("a NO [UNAVAILABLE] ")


def test_backend_drops_the_connection_during_login(start_imap, fake_imap, addr):
    lee = addr("lee")
    fake = fake_imap(login_reply=None)
    mailroute = start_imap({lee: ("lee-pw", proxy_fields(fake.port))},
                           extra_config="login_proxy_max_reconnects = 0\n")
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert c.command("a", f"LOGIN {lee} lee-pw") == [f"a {UNAVAILABLE}"]
        assert c.command("b", "NOOP") == ["b OK NOOP completed."]


def test_backend_never_answers_the_login(start_imap, fake_imap, addr):
    """proxy_timeout bounds the whole backend login."""
    ray = addr("ray")
    fake = fake_imap(login_reply=STALL)
    mailroute = start_imap({ray: ("ray-pw", proxy_fields(fake.port, "proxy_timeout=1"))})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        started = time.monotonic()
        assert c.command("a", f"LOGIN {ray} ray-pw") == [f"a {UNAVAILABLE}"]
        assert 0.9 <= time.monotonic() - started < 3
        assert c.command("b", "NOOP") == ["b OK NOOP completed."]
    assert mailroute.log_lines(ray, "backend login timed out")
    wait_until(lambda: 1 in fake.peer_closed, timeout=5, what="the stalled backend connection "
               "to be closed")


def test_backend_sends_no_banner(start_imap, fake_imap, addr):
    sue = addr("sue")
    fake = fake_imap(banner=None)
    mailroute = start_imap({sue: ("sue-pw", proxy_fields(fake.port, "proxy_timeout=1"))})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert c.command("a", f"LOGIN {sue} sue-pw") == [f"a {UNAVAILABLE}"]
    assert fake.session_lines() == []


def test_master_login_without_sasl_ir(start_imap, fake_imap, addr):
    """A backend without SASL-IR gets `L AUTHENTICATE PLAIN`, then the
    response after its "+"."""
    tia = addr("tia")
    fake = fake_imap(banner="* OK [CAPABILITY IMAP4rev1 ID AUTH=PLAIN] no sasl-ir")
    mailroute = start_imap({tia: ("tia-pw", proxy_fields(
        fake.port, "master=proxyadmin pass=masterpw"))})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert c.command("a", f"LOGIN {tia} tia-pw") == [
            "a OK [CAPABILITY IMAP4rev1 ID AUTH=PLAIN] Logged in"]
    lines = fake.session_lines()
    assert lines[0].startswith("I ID ("), lines
    assert lines[1:] == ["L AUTHENTICATE PLAIN", plain_ir("proxyadmin", "masterpw", tia)]


def test_backend_untagged_lines_reach_the_client(start_imap, fake_imap, addr):
    uli = addr("uli")
    fake = fake_imap(before_login=["* OK [ALERT] Maintenance tonight at 22:00"])
    mailroute = start_imap({uli: ("uli-pw", proxy_fields(fake.port))})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert c.command("a", f"LOGIN {uli} uli-pw") == [
            "* OK [ALERT] Maintenance tonight at 22:00",
            "a OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID LITERAL+ AUTH=PLAIN] "
            "Logged in"]


def test_relay_ends_with_either_side(start_imap, fake_imap, addr):
    """After login, a backend that closes closes the client, and a client
    that closes closes the backend connection."""
    val = addr("val")
    fake = fake_imap()
    mailroute = start_imap({val: ("val-pw", proxy_fields(fake.port))})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert c.command("a", f"LOGIN {val} val-pw")[-1].startswith("a OK ")
        c.send("b BYE\r\n")
        assert c.closed_by_server()
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert c.command("a", f"LOGIN {val} val-pw")[-1].startswith("a OK ")
        assert c.command("b", "NOOP") == ["b OK NOOP done"]
    wait_until(lambda: 2 in fake.peer_closed, timeout=5,
               what="the backend to see the client's close")
    assert mailroute.log_lines(val, "disconnected by server")
    assert mailroute.log_lines(val, "disconnected by client")


FAKE_CAPS = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID LITERAL+ AUTH=PLAIN"


def test_backend_data_right_after_its_ok_is_relayed(start_imap, fake_imap, addr):
    """Bytes the backend sent in the same packet as its OK are the client's."""
    wim = addr("wim")
    fake = fake_imap(after_login=["* 3 EXISTS", "* OK [ALERT] Welcome back"])
    mailroute = start_imap({wim: ("wim-pw", proxy_fields(fake.port))})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert c.command("a", f"LOGIN {wim} wim-pw") == [
            f"a OK [CAPABILITY {FAKE_CAPS}] Logged in"]
        assert c.command("b", "NOOP") == ["* 3 EXISTS", "* OK [ALERT] Welcome back",
                                          "b OK NOOP done"]


def test_backend_ok_without_text(workdir, fake_imap, addr):
    xu = addr("xu")
    fake = fake_imap(login_reply="OK")
    with own_imap_mailroute(workdir, {xu: ("xu-pw", proxy_fields(fake.port))}) as (
            mailroute, result):
        with RawImap(mailroute.imap_port) as c:
            c.greeting()
            line = tagged(c.command("a", f"LOGIN {xu} xu-pw"))
            assert c.command("b", "NOOP") == ["b OK NOOP done"]
    assert (result["status"], result["sanitizer"]) == (0, "")
    assert line in (f"a OK [CAPABILITY {FAKE_CAPS}]", f"a OK [CAPABILITY {FAKE_CAPS}] "), line


def test_proxy_without_host_is_unavailable(start_imap, addr):
    yuri = addr("yuri")
    mailroute = start_imap({yuri: ("yuri-pw", "proxy port=1143")})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert c.command("a", f"LOGIN {yuri} yuri-pw") == [f"a {UNAVAILABLE}"]


def test_tls_to_the_backend_never_falls_back_to_plaintext(start_imap, fake_imap, addr):
    """ssl=yes towards a plaintext backend fails in the handshake, and
    starttls=yes towards a backend without STARTTLS fails before the login:
    both are a temporary failure, and the password never crosses in
    plaintext."""
    zak, zia = addr("zak"), addr("zia")
    fake = fake_imap()
    mailroute = start_imap({zak: ("zak-pw", proxy_fields(fake.port, "ssl=yes")),
                            zia: ("zia-pw", proxy_fields(fake.port, "starttls=yes"))},
                           extra_config="login_proxy_max_reconnects = 0\n")
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert c.command("a", f"LOGIN {zak} zak-pw") == [f"a {UNAVAILABLE}"]
        assert c.command("b", f"LOGIN {zia} zia-pw") == [f"b {UNAVAILABLE}"]
    received = " ".join(str(line) for line in fake.session_lines())
    assert "zak-pw" not in received and "zia-pw" not in received, received
    assert mailroute.log_lines("TLS with"), mailroute.stderr()


def test_invalid_banner(start_imap, fake_imap, addr):
    max_ = addr("max")
    fake = fake_imap(banner="* BYE go away")
    mailroute = start_imap({max_: ("max-pw", proxy_fields(fake.port))},
                           extra_config="login_proxy_max_reconnects = 0\n")
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert c.command("a", f"LOGIN {max_} max-pw") == [f"a {UNAVAILABLE}"]
    assert fake.session_lines() == []


def test_delay_until_holds_the_login(start_imap, imap_backend, addr):
    wyn = addr("wyn")
    imap_backend.add_user(wyn, "wyn-pw")
    until = int(time.time()) + 2
    mailroute = start_imap({wyn: ("wyn-pw", proxy_fields(imap_backend.port,
                                                         f"delay_until={until}"))})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert_logged_in(tagged(c.command("a", f"LOGIN {wyn} wyn-pw")))
        assert time.time() >= until - 0.05


def test_delay_until_too_far_is_a_temporary_failure(start_imap, addr):
    xan = addr("xan")
    until = int(time.time()) + 3600
    mailroute = start_imap({xan: ("xan-pw", proxy_fields(free_port(), f"delay_until={until}"))})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        started = time.monotonic()
        assert c.command("a", f"LOGIN {xan} xan-pw") == [f"a {UNAVAILABLE}"]
        assert time.monotonic() - started < 1


def test_backend_by_name_and_by_hostip(start_imap, imap_backend, addr):
    """host as a name is resolved; hostip wins over host."""
    yul, zoe = addr("yul"), addr("zoe")
    imap_backend.add_user(yul, "yul-pw")
    imap_backend.add_user(zoe, "zoe-pw")
    mailroute = start_imap({
        yul: ("yul-pw", f"proxy host=localhost port={imap_backend.port}"),
        zoe: ("zoe-pw", f"proxy host=imap.invalid hostip=127.0.0.1 port={imap_backend.port}"),
    })
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert_logged_in(tagged(c.command("a", f"LOGIN {yul} yul-pw")))
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert_logged_in(tagged(c.command("a", f"LOGIN {zoe} zoe-pw")))


def test_source_ip(start_imap, imap_backend, addr):
    """source_ip: the backend connection comes from that address (seen as
    rip= when no ID tells the client's)."""
    abe = addr("abe")
    imap_backend.add_user(abe, "abe-pw")
    mailroute = start_imap({abe: ("abe-pw", proxy_fields(
        imap_backend.port, "source_ip=127.0.0.9 proxy_not_trusted"))})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert_logged_in(tagged(c.command("a", f"LOGIN {abe} abe-pw")))
    lines = imap_backend.wait_login_lines(abe)
    assert len(lines) == 1 and "rip=127.0.0.9," in lines[0], lines


# --- the relay ---------------------------------------------------------------------------

def test_large_message_round_trip(start_imap, imap_backend, addr):
    """5 MB up and down through the relay, byte for byte."""
    bea = addr("bea")
    imap_backend.add_user(bea, "bea-pw")
    mailroute = start_imap({bea: (None, proxy_fields(imap_backend.port, "nopassword"))})
    marker = new_marker()
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-0123456789\r\n"
    body = line * (5 * 1024 * 1024 // len(line))
    message = f"Subject: {marker}\r\n\r\n".encode() + body
    imap = imaplib.IMAP4("127.0.0.1", mailroute.imap_port, timeout=30)
    assert imap.login(bea, "bea-pw")[0] == "OK"
    assert imap.select("INBOX")[0] == "OK"
    status, data = imap.append("INBOX", None, None, message)
    assert status == "OK", data
    status, data = imap.fetch("1", "(BODY.PEEK[])")
    assert status == "OK"
    assert data[0][1] == message
    imap.logout()
    assert maildir_messages(imap_backend.maildir(bea)) == [as_stored(message)]


def test_idle_through_the_proxy(start_imap, imap_backend, addr):
    cy = addr("cy")
    imap_backend.add_user(cy, "cy-pw")
    mailroute = start_imap({cy: ("cy-pw", proxy_fields(imap_backend.port))})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        assert_logged_in(tagged(c.command("a", f"LOGIN {cy} cy-pw")))
        c.command("b", "SELECT INBOX")
        c.send("c IDLE\r\n")
        assert c.read_line() == "+ idling"
        # Mail arriving at the backend meanwhile is pushed through the relay.
        direct = imaplib.IMAP4("127.0.0.1", imap_backend.port, timeout=10)
        direct.login(cy, "cy-pw")
        assert direct.append("INBOX", None, None, b"Subject: new\r\n\r\nnew\r\n")[0] == "OK"
        direct.logout()
        pushed = [c.read_line(), c.read_line()]
        assert sorted(pushed) == ["* 1 EXISTS", "* 1 RECENT"], pushed
        c.send("DONE\r\n")
        done = c.read_until_tagged("c")
        assert re.fullmatch(r"c OK Idle completed \(.*\)\.", done[-1]), done


def test_concurrent_sessions(start_imap, imap_backend, addr):
    """20 clients at once, each logging in, appending and logging out."""
    users = [addr(f"par{i}") for i in range(20)]
    for user in users:
        imap_backend.add_user(user, "par-pw")
    mailroute = start_imap({u: ("par-pw", proxy_fields(imap_backend.port)) for u in users})
    errors = []

    def session(user):
        try:
            with RawImap(mailroute.imap_port) as c:
                c.greeting()
                assert_logged_in(tagged(c.command("a", f"LOGIN {user} par-pw")))
                message = f"Subject: for {user}\r\n\r\nhello\r\n".encode()
                c.send(f"b APPEND INBOX {{{len(message)}+}}\r\n".encode() + message + b"\r\n")
                assert c.read_until_tagged("b")[-1].startswith("b OK [APPENDUID ")
                assert c.command("c", "LOGOUT")[-1].startswith("c OK")
        except Exception as e:  # reported below, with the user
            errors.append(f"{user}: {e!r}")
    threads = [threading.Thread(target=session, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    for user in users:
        assert len(maildir_messages(imap_backend.maildir(user))) == 1, user


# --- hostile and pipelining clients ---------------------------------------------------------

def test_literal_bomb(start_imap):
    mailroute = start_imap({})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        c.send("a LOGIN {4294967295}\r\n")
        assert c.read_line() == "a BAD [TOOBIG] Literal too large"
        assert c.command("b", "NOOP") == ["b OK NOOP completed."]
        c.send("c LOGIN {99999999999999999999999}\r\n")
        assert c.read_line() == "c BAD [TOOBIG] Literal too large"
        assert c.command("d", "NOOP") == ["d OK NOOP completed."]
        # A non-synchronizing one cannot be skipped: the session closes.
        c.send("e LOGIN {4294967295+}\r\n")
        assert c.read_line() == "e BAD [TOOBIG] Literal too large"
        assert c.closed_by_server()
    assert mailroute.alive()


def test_megabyte_line(start_imap):
    mailroute = start_imap({})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        c.send("a LOGIN " + "x" * (1024 * 1024) + " pw\r\n")
        assert c.read_line() == "a BAD Error in IMAP command: Line too long"
        assert c.command("b", "NOOP") == ["b OK NOOP completed."]
    assert mailroute.alive()


def test_literal_login(start_imap, imap_backend, addr):
    """LOGIN with synchronizing literals: "+ OK" for each."""
    ned = addr("ned")
    imap_backend.add_user(ned, "ned-pw")
    mailroute = start_imap({ned: ("ned-pw", proxy_fields(imap_backend.port))})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        c.send(f"a LOGIN {{{len(ned)}}}\r\n")
        assert c.read_line() == "+ OK"
        c.send(f"{ned} {{6}}\r\n")
        assert c.read_line() == "+ OK"
        c.send("ned-pw\r\n")
        assert_logged_in(c.read_line())


def test_pipelined_login_and_select(start_imap, imap_backend, addr):
    """Commands sent in the same write as LOGIN reach the backend."""
    oz = addr("oz")
    imap_backend.add_user(oz, "oz-pw")
    mailroute = start_imap({oz: (None, proxy_fields(imap_backend.port, "nopassword"))})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        c.send(f"a LOGIN {oz} oz-pw\r\nb SELECT INBOX\r\nc LOGOUT\r\n")
        assert_logged_in(c.read_line())
        select = c.read_until_tagged("b")
        assert "* 0 EXISTS" in select, select
        assert re.fullmatch(r"b OK \[READ-WRITE\] Select completed \(.*\)\.", select[-1]), select
        logout = c.read_until_tagged("c")
        assert logout[0].startswith("* BYE ") and logout[-1].startswith("c OK Logout"), logout
        assert c.closed_by_server()


def test_pipelined_login_and_large_append(start_imap, imap_backend, addr):
    """A megabyte of LITERAL+ data sent right behind LOGIN waits for the
    login and then goes to the backend whole."""
    ola = addr("ola")
    imap_backend.add_user(ola, "ola-pw")
    mailroute = start_imap({ola: ("ola-pw", proxy_fields(imap_backend.port))})
    message = b"Subject: pipelined\r\n\r\n" + b"x" * 78 + b"\r\n"
    message += b"y" * 78 + b"\r\n"
    message = message * (1024 * 1024 // len(message))
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        c.send(f"a LOGIN {ola} ola-pw\r\nb APPEND INBOX {{{len(message)}+}}\r\n".encode()
               + message + b"\r\nc LOGOUT\r\n")
        assert_logged_in(c.read_line())
        assert c.read_until_tagged("b")[-1].startswith("b OK [APPENDUID ")
        assert c.read_until_tagged("c")[-1].startswith("c OK Logout")
    assert maildir_messages(imap_backend.maildir(ola)) == [as_stored(message)]


def test_pipelined_after_a_failed_login(start_imap, addr):
    """The bytes after a refused LOGIN are the next commands of the same
    pre-login session."""
    pam = addr("pam")
    mailroute = start_imap({pam: ("pam-pw", "nologin")})
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        c.send(f"a LOGIN {pam} wrong\r\nb NOOP\r\nc LOGIN {pam} pam-pw\r\n")
        assert c.read_line() == f"a {AUTH_FAILED}"
        assert c.read_line() == "b OK NOOP completed."
        assert c.read_line() == "c NO [CONTACTADMIN] Login disabled for this user"


def test_client_closes_while_the_backend_is_retried(start_imap, addr):
    """The client goes away during the reconnect wait: the session ends when
    the attempt does (the teardown checks mailrouted's exit and sanitizer
    output)."""
    quy = addr("quy")
    mailroute = start_imap({quy: ("quy-pw", proxy_fields(free_port()))},
                           extra_config="login_proxy_max_reconnects = 1\n")
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        c.send(f"a LOGIN {quy} quy-pw\r\n")
        time.sleep(0.3)
    wait_until(lambda: mailroute.log_lines(quy, "failed temporarily"), timeout=5,
               what="the abandoned login attempt to end")
    with RawImap(mailroute.imap_port) as c:
        assert c.greeting() == GREETING
        assert c.command("a", "NOOP") == ["a OK NOOP completed."]


def test_sigterm_with_open_imap_sessions(workdir, imap_backend, fake_imap, addr):
    """SIGTERM with a client in each state: pre-login, in the failure delay,
    waiting for a backend's login reply, relayed. All are closed and
    mailrouted exits 0 without sanitizer reports."""
    rex, sol = addr("rex"), addr("sol")
    imap_backend.add_user(rex, "rex-pw")
    stalled = fake_imap(login_reply=STALL)
    users = {rex: ("rex-pw", proxy_fields(imap_backend.port)),
             sol: ("sol-pw", proxy_fields(stalled.port))}
    with own_imap_mailroute(workdir, users, auth_failure_delay="5s") as (mailroute, result):
        clients = prelogin, delayed, relayed, logging_in = [
            RawImap(mailroute.imap_port) for _ in range(4)]
        for c in clients:
            c.greeting()
        delayed.send(f"a LOGIN {rex} wrong\r\n")
        assert_logged_in(tagged(relayed.command("a", f"LOGIN {rex} rex-pw")))
        logging_in.send(f"a LOGIN {sol} sol-pw\r\n")
        wait_until(lambda: stalled.sessions and stalled.session_lines()[-1:] ==
                   [f'L LOGIN "{sol}" "sol-pw"'], timeout=5, what="the stalled login")
        mailroute.signal(signal.SIGTERM)
        result["exit"] = mailroute.proc.wait_exit(10)
        for c in clients:
            assert c.closed_by_server(), "a client was left open"
            c.close()
    assert (result["exit"], result["sanitizer"]) == (0, "")


@contextlib.contextmanager
def unanswered_port():
    """A port whose listener never accepts and whose backlog is full, so a
    new connect() to it stays in progress (SYNs are dropped)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.2)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_sigterm_during_a_backend_connect(workdir, addr):
    cid = addr("cid")
    with unanswered_port() as port, \
            own_imap_mailroute(workdir, {cid: ("cid-pw", proxy_fields(port))}) as (
                mailroute, result):
        with RawImap(mailroute.imap_port) as c:
            c.greeting()
            c.send(f"a LOGIN {cid} cid-pw\r\n")
            time.sleep(0.5)
            mailroute.signal(signal.SIGTERM)
            result["exit"] = mailroute.proc.wait_exit(10)
    assert "uv_close: Assertion" not in mailroute.stderr()
    assert (result["exit"], result["sanitizer"]) == (0, "")


# --- limits across sessions ----------------------------------------------------------------

def test_mail_max_userip_connections(start_imap, imap_backend, addr):
    """The third session of one user from one IP is refused with Dovecot's
    words and closed; another IP, or a freed slot, is fine."""
    uma = addr("uma")
    imap_backend.add_user(uma, "uma-pw")
    limit_text = ("NO [UNAVAILABLE] Maximum number of connections from user+IP exceeded "
                  "(mail_max_userip_connections=2)")
    mailroute = start_imap({uma: ("uma-pw", proxy_fields(imap_backend.port))},
                           extra_config="mail_max_userip_connections = 2\n")
    sessions = [RawImap(mailroute.imap_port) for _ in range(2)]
    try:
        for i, c in enumerate(sessions):
            c.greeting()
            assert_logged_in(tagged(c.command(f"a{i}", f"LOGIN {uma} uma-pw")), tag=f"a{i}")
        with RawImap(mailroute.imap_port) as third:
            third.greeting()
            assert third.command("a", f"LOGIN {uma} uma-pw") == [f"a {limit_text}"]
            assert third.closed_by_server()
        with RawImap(mailroute.imap_port, source_ip=CLIENT_IP) as elsewhere:
            elsewhere.greeting()
            assert_logged_in(tagged(elsewhere.command("a", f"LOGIN {uma} uma-pw")))
        sessions[0].command("z", "LOGOUT")
        sessions[0].close()
        wait_until(lambda: mailroute.log_lines(f"user={uma} disconnected"),
                   timeout=5, what="the first session to end")
        with RawImap(mailroute.imap_port) as again:
            again.greeting()
            assert_logged_in(tagged(again.command("a", f"LOGIN {uma} uma-pw")))
    finally:
        for c in sessions:
            c.close()


def test_failure_penalty_holds_untrusted_clients_only(start_imap, addr):
    """After a failed login from an untrusted address, that address's next
    login waits (2 s, doubling, auth_penalty_max); a success clears it.
    Trusted networks are never held."""
    val = addr("val")
    mailroute = start_imap({val: ("val-pw", "nologin")},
                           extra_config="login_trusted_networks = 127.0.0.1/32\n"
                                        "disable_plaintext_auth = no\nauth_penalty_max = 3s\n")
    with RawImap(mailroute.imap_port, source_ip=CLIENT_IP) as c:
        c.greeting()
        assert c.command("a", f"LOGIN {val} wrong") == [f"a {AUTH_FAILED}"]
        started = time.monotonic()
        assert c.command("b", f"LOGIN {val} wrong") == [f"b {AUTH_FAILED}"]
        assert time.monotonic() - started >= 1.9
        started = time.monotonic()
        assert c.command("c", f"LOGIN {val} wrong") == [f"c {AUTH_FAILED}"]
        assert time.monotonic() - started >= 2.9  # 4 s, capped at 3 s
    assert len(mailroute.log_lines(f"login from {CLIENT_IP} held")) == 2, mailroute.stderr()
    with RawImap(mailroute.imap_port) as c:
        c.greeting()
        for tag in ("d", "e", "f"):
            assert c.command(tag, f"LOGIN {val} wrong") == [f"{tag} {AUTH_FAILED}"]
    assert mailroute.log_lines("login from 127.0.0.1 held") == []


def test_login_source_ips_round_robin(start_imap, imap_backend, addr):
    """login_source_ips: backend connections come from the listed addresses
    in turn; "?" drops those this host cannot send from (192.0.2.1)."""
    ada = addr("ada")
    imap_backend.add_user(ada, "ada-pw")
    mailroute = start_imap({ada: ("ada-pw", proxy_fields(imap_backend.port, "proxy_not_trusted"))},
                           extra_config="login_source_ips = ?127.0.0.21 ?192.0.2.1 127.0.0.22\n"
                                        "workers = 1\n")
    for i in range(4):
        with RawImap(mailroute.imap_port) as c:
            c.greeting()
            assert_logged_in(tagged(c.command("a", f"LOGIN {ada} ada-pw")))
    lines = imap_backend.wait_login_lines(ada, count=4)
    seen = sorted(re.search(r"rip=([0-9.]+),", line).group(1) for line in lines)
    assert seen == ["127.0.0.21", "127.0.0.21", "127.0.0.22", "127.0.0.22"], lines


def test_host_down_fails_at_once_while_another_login_retries(start_imap, addr):
    """proxy_host_immediate_failure_after: once the backend has failed for
    longer than that and another login is still retrying it, new logins
    fail at once instead of queueing behind it."""
    wyn, xia = addr("wyn"), addr("xia")
    dead = free_port()
    fields = proxy_fields(dead, "proxy_host_immediate_failure_after=1")
    mailroute = start_imap({wyn: ("wyn-pw", fields), xia: ("xia-pw", fields)},
                           extra_config="login_proxy_max_reconnects = 6\nworkers = 1\n")
    with RawImap(mailroute.imap_port) as first, RawImap(mailroute.imap_port) as second:
        first.greeting()
        second.greeting()
        first.send(f"a LOGIN {wyn} wyn-pw\r\n")  # retries for about 6 s
        time.sleep(2.5)
        assert second.command("b", f"LOGIN {xia} xia-pw") == [f"b {UNAVAILABLE}"]
        assert first.read_line() == f"a {UNAVAILABLE}"
    # The second login failed without a connect attempt of its own.
    assert len(mailroute.log_lines(f"login of {xia} failed temporarily: host is down")) == 1
    assert mailroute.log_lines(f"login of {wyn} failed temporarily: connect failed")


def test_backend_refusal_counts_for_the_failure_penalty(start_imap, imap_backend, addr):
    """With nopassword the backend checks the password: its refusal holds the
    next login from that address like a refusal of our own."""
    wim = addr("wim")
    imap_backend.add_user(wim, "wim-pw")
    mailroute = start_imap({wim: (None, proxy_fields(imap_backend.port, "nopassword"))},
                           extra_config="login_trusted_networks = 127.0.0.1/32\n"
                                        "disable_plaintext_auth = no\n")
    with RawImap(mailroute.imap_port, source_ip=CLIENT_IP) as c:
        c.greeting()
        assert c.command("a", f"LOGIN {wim} wrong") == [f"a {AUTH_FAILED}"]
        assert_logged_in(tagged(c.command("b", f"LOGIN {wim} wim-pw")), tag="b")
    assert len(mailroute.log_lines(f"login from {CLIENT_IP} held")) == 1, mailroute.stderr()
