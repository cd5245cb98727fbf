"""The POP3 login proxy (DESIGN.md section 6, reference/dovecot-behaviour.md
3.2-3.5): pre-login commands answered by mailroute, logins proxied to a real
Dovecot POP3 backend (harness/dovecot_pop3.py) and mail fetched through the
relay, the replies for every failure, XCLIENT in both directions.

What the backend was told is read from Dovecot's log (rip=, session=), or,
for exact command lines, from a small fake POP3 backend in this file."""

import base64
import os
import poplib
import re
import socket
import socketserver
import threading

import pytest

from harness.dovecot_pop3 import DovecotPop3Backend
from harness.procs import free_port, port_listening, wait_until

CLIENT_IP = "127.0.0.6"  # a test client's source address; mailroute's is 127.0.0.1
PASSWORD = "pw-secret"
AUTH_FAILED = "-ERR [AUTH] Authentication failed."
TEMP_FAILED = "-ERR [SYS/TEMP] Account is temporarily unavailable."
CAPA = ["CAPA", "TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE", "USER",
        "SASL PLAIN LOGIN"]


# --- helpers -----------------------------------------------------------------

# Every client a test opens, closed at teardown before mailrouted is stopped,
# so that no session is still open when it gets SIGTERM.
_clients = []


def _track(client):
    _clients.append(client)
    return client


def _close_clients():
    for client in _clients:
        try:
            client.close()
        except OSError:
            pass
    _clients.clear()


def server_connections(port):
    """Connections mailrouted still holds on its local port (ESTABLISHED or
    CLOSE_WAIT, from /proc/net/tcp*)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] in ("01", "08"):
                    count += 1
    return count


@pytest.fixture(scope="module")
def pop3_backend(tmp_root):
    backend = DovecotPop3Backend(os.path.join(tmp_root, "dovecot-pop3")).start()
    yield backend
    backend.stop()


@pytest.fixture
def start_pop3(start_mailroute, workdir):
    """start({user: fields} or {user: (password, fields)}, extra="") -> a
    running mailrouted with a POP3 listener on .pop3_port. A password makes
    mailroute check it ({PLAIN}); without one the entry needs nopassword."""
    def start(users, extra=""):
        path = os.path.join(workdir, f"pop3-users-{free_port()}")
        with open(path, "w") as f:
            for user, entry in users.items():
                password, fields = entry if isinstance(entry, tuple) else (None, entry)
                stored = f"{{PLAIN}}{password}" if password else ""
                f.write(f"{user}:{stored}::::::{fields}\n")
        port = free_port()
        config = (f"protocols = lmtp pop3\nauth_failure_delay = 0\n"
                  f"service pop3 {{\n  inet_listener pop3 {{\n    port = {port}\n  }}\n}}\n"
                  f"{extra}")
        mailroute = start_mailroute(passwd_path=path, extra_config=config)
        wait_until(lambda: port_listening(port), timeout=10, what="the POP3 listener")
        mailroute.pop3_port = port
        started.append(mailroute)
        return mailroute
    started = []
    yield start
    _close_clients()
    for mailroute in started:
        if mailroute.alive():
            wait_until(lambda: server_connections(mailroute.pop3_port) == 0, timeout=10,
                       what="mailrouted to close its POP3 sessions")


def proxy_to(port, extra=""):
    return f"proxy host=127.0.0.1 port={port} {extra}".strip()


class RawPop3:
    """A line-level POP3 client that can bind its source address."""

    def __init__(self, port, source_ip=None, timeout=15):
        source = (source_ip, 0) if source_ip else None
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=source)
        self.file = self.sock.makefile("rb")
        self.greeting = self.line()
        _track(self)

    def send(self, data):
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def line(self):
        """The next reply line without CRLF; "" at end of stream."""
        return self.file.readline().decode("utf-8", "replace").rstrip("\r\n")

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.line()

    def multiline(self, line):
        """A command with a multi-line answer: [status, line, ...] (no ".")."""
        lines = [self.cmd(line)]
        if not lines[0].startswith("+OK"):
            return lines
        while (text := self.line()) != ".":
            assert text != "", f"connection closed in a multi-line reply: {lines}"
            lines.append(text)
        return lines

    def at_eof(self):
        try:
            return self.file.readline() == b""
        except (ConnectionResetError, socket.timeout):
            return False

    def close(self):
        self.file.close()
        self.sock.close()


def login(port, user, password=PASSWORD):
    """poplib USER/PASS; returns (client, the reply to PASS)."""
    client = pop3_client(port)
    client.user(user)
    return client, client.pass_(password).decode()


def pop3_client(port):
    return _track(poplib.POP3("127.0.0.1", port, timeout=15))


def pop3_error(call):
    with pytest.raises(poplib.error_proto) as info:
        call()
    return info.value.args[0].decode()


def session_id(mailroute, user):
    """mailroute's session id for user's proxied login, from its log."""
    lines = wait_until(lambda: mailroute.log_lines(f"user={user} ", "proxied to"),
                       timeout=5, what="mailroute's proxied line")
    return re.search(r"pop3\(([^)]+)\)", lines[-1]).group(1)


def backend_login_line(backend, user):
    lines = wait_until(lambda: backend.login_lines(user), timeout=5,
                       what=f"Dovecot's Login line for {user}")
    assert len(lines) == 1, lines
    return lines[0]


def b64(text):
    return base64.b64encode(text.encode()).decode()


class FakePop3(socketserver.ThreadingTCPServer):
    """A POP3 backend that records the lines it receives and answers each
    login command from `replies` ({"XCLIENT": "+OK", "USER": ..., "PASS": ...,
    "AUTH": ...}; "+OK" when absent). After a successful PASS/AUTH it answers
    STAT and QUIT, so the relay can be seen working."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, greeting="+OK [XCLIENT] fake ready.", replies=None):
        self.greeting = greeting
        self.replies = replies or {}
        self.lines = []
        self.port = free_port()
        super().__init__(("127.0.0.1", self.port), FakePop3Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def stop(self):
        self.shutdown()
        self.server_close()


class FakePop3Handler(socketserver.StreamRequestHandler):
    def handle(self):
        fake = self.server
        self.send(fake.greeting)
        while line := self.rfile.readline():
            line = line.decode().rstrip("\r\n")
            fake.lines.append(line)
            verb = line.split(" ", 1)[0].upper()
            if verb == "QUIT":
                self.send("+OK bye")
                return
            default = "+OK Logged in." if verb in ("PASS", "AUTH") else "+OK"
            if verb == "STAT":
                default = "+OK 0 0"
            self.send(fake.replies.get(verb, default))

    def send(self, line):
        self.wfile.write(line.encode() + b"\r\n")


@pytest.fixture
def fake_pop3():
    started = []

    def start(**kwargs):
        fake = FakePop3(**kwargs)
        started.append(fake)
        return fake
    yield start
    for fake in started:
        fake.stop()


# --- pre-login commands --------------------------------------------------------


def test_pre_login_commands(start_pop3, addr):
    mailroute = start_pop3({addr("alice"): "nopassword"})
    client = RawPop3(mailroute.pop3_port)
    # 127.0.0.1 is in login_trusted_networks: it may send XCLIENT, as with Dovecot.
    assert client.greeting == "+OK [XCLIENT] mailroute ready."
    assert client.multiline("CAPA") == ["+OK"] + CAPA
    assert client.multiline("AUTH") == ["+OK", "PLAIN", "LOGIN"]
    assert client.cmd("NOOP") == "+OK"
    assert client.cmd("STLS") == "-ERR TLS support isn't enabled."
    assert client.cmd("FROB x").startswith("-ERR Unknown command")
    assert client.cmd("AUTH CRAM-MD5") == "-ERR Unsupported authentication mechanism."
    assert client.cmd("PASS x") == "-ERR No username given."
    assert client.cmd("QUIT") == "+OK Logging out"
    assert client.at_eof()


def test_quit_before_login(start_pop3, addr):
    mailroute = start_pop3({addr("alice"): "nopassword"})
    client = RawPop3(mailroute.pop3_port, source_ip=CLIENT_IP)
    assert client.cmd("QUIT") == "+OK Logging out"
    assert client.at_eof()


def test_overlong_line_is_refused(start_pop3, addr):
    mailroute = start_pop3({addr("alice"): "nopassword"})
    client = RawPop3(mailroute.pop3_port)
    client.send("USER " + "a" * 10000 + "\r\n")
    assert client.line() == "-ERR Line too long"
    assert client.at_eof()


def test_too_many_bad_commands(start_pop3, addr):
    mailroute = start_pop3({addr("alice"): "nopassword"})
    client = RawPop3(mailroute.pop3_port)
    for _ in range(9):
        assert client.cmd("BOGUS").startswith("-ERR Unknown command")
    assert client.cmd("BOGUS").startswith("-ERR Unknown command")
    assert client.line() == "-ERR Too many invalid commands."
    assert client.at_eof()


# --- logins through a real Dovecot -----------------------------------------------


def test_password_forwarded_to_the_backend(start_pop3, pop3_backend, addr):
    alice = addr("alice")
    pop3_backend.add_user(alice, PASSWORD)
    mailroute = start_pop3({alice: proxy_to(pop3_backend.port, "nopassword")})
    client, reply = login(mailroute.pop3_port, alice)
    assert reply == "+OK Logged in."
    assert client.stat() == (0, 0)
    client.quit()
    backend_login_line(pop3_backend, alice)


def test_message_listed_and_retrieved(start_pop3, pop3_backend, addr):
    alice = addr("alice")
    pop3_backend.add_user(alice, PASSWORD)
    body = ("From: sender@example.org\r\nTo: " + alice + "\r\nSubject: via the proxy\r\n"
            "\r\nline one\r\n.starts with a dot\r\n")
    pop3_backend.put_message(alice, body)
    mailroute = start_pop3({alice: proxy_to(pop3_backend.port, "nopassword")})
    client, reply = login(mailroute.pop3_port, alice)
    assert reply == "+OK Logged in."
    count, size = client.stat()
    assert count == 1 and size == len(body)
    status, listing, _ = client.list()
    assert listing == [f"1 {len(body)}".encode()]
    status, lines, _ = client.retr(1)
    assert status.startswith(b"+OK")
    assert b"\r\n".join(lines) + b"\r\n" == body.encode()
    client.quit()


def test_local_password_check(start_pop3, pop3_backend, addr):
    alice = addr("alice")
    pop3_backend.add_user(alice, PASSWORD)
    mailroute = start_pop3({alice: (PASSWORD, proxy_to(pop3_backend.port))})
    client = pop3_client(mailroute.pop3_port)
    client.user(alice)
    assert pop3_error(lambda: client.pass_("wrong")) == AUTH_FAILED
    assert pop3_backend.login_lines(alice) == [], "a wrong password reached the backend"
    # The session goes on: USER again, then the right password.
    client.user(alice)
    assert client.pass_(PASSWORD).decode() == "+OK Logged in."
    client.quit()


def test_backend_refuses_the_password(start_pop3, pop3_backend, addr):
    alice = addr("alice")
    pop3_backend.add_user(alice, "another-password")
    mailroute = start_pop3({alice: proxy_to(pop3_backend.port, "nopassword")})
    client = pop3_client(mailroute.pop3_port)
    client.user(alice)
    assert pop3_error(lambda: client.pass_(PASSWORD)) == AUTH_FAILED
    assert client.noop().startswith(b"+OK"), "the client may try again"
    client.quit()


def test_unknown_user(start_pop3, addr):
    mailroute = start_pop3({addr("alice"): "nopassword"})
    client = pop3_client(mailroute.pop3_port)
    client.user(addr("nobody"))
    assert pop3_error(lambda: client.pass_(PASSWORD)) == AUTH_FAILED


def test_nologin(start_pop3, addr):
    alice, bob = addr("alice"), addr("bob")
    mailroute = start_pop3({alice: "nopassword nologin",
                            bob: "nopassword nologin reason=Moved_elsewhere"})
    client = RawPop3(mailroute.pop3_port)
    assert client.cmd(f"USER {alice}") == "+OK"
    assert client.cmd(f"PASS {PASSWORD}") == "-ERR [AUTH] Login disabled for this user"
    assert client.cmd(f"USER {bob}") == "+OK"
    assert client.cmd(f"PASS {PASSWORD}") == "-ERR [AUTH] Moved_elsewhere"


def test_referral(start_pop3, addr):
    alice, bob = addr("alice"), addr("bob")
    mailroute = start_pop3({
        alice: "nopassword nologin host=mail2.example.com hostip=192.0.2.10 port=1110",
        bob: "nopassword host=mail2.example.com hostip=192.0.2.10 destuser=robert "
             "reason=Moved",
    })
    client = RawPop3(mailroute.pop3_port)
    assert client.cmd(f"USER {alice}") == "+OK"
    assert client.cmd(f"PASS {PASSWORD}") == (
        f"-ERR [REFERRAL/{alice}@mail2.example.com:1110] Try this server instead.")
    # Port 110 is left out; destuser names the account there.
    assert client.cmd(f"USER {bob}") == "+OK"
    assert client.cmd(f"PASS {PASSWORD}") == "-ERR [REFERRAL/robert@mail2.example.com] Moved"


def test_backend_down(start_pop3, addr):
    alice = addr("alice")
    mailroute = start_pop3({alice: proxy_to(free_port(), "nopassword")},
                           extra="login_proxy_timeout = 2s\n")
    client = RawPop3(mailroute.pop3_port)
    assert client.cmd(f"USER {alice}") == "+OK"
    assert client.cmd(f"PASS {PASSWORD}") == TEMP_FAILED
    assert client.cmd("QUIT") == "+OK Logging out"


def test_client_address_forwarded_with_xclient(start_pop3, pop3_backend, addr):
    alice = addr("alice")
    pop3_backend.add_user(alice, PASSWORD)
    mailroute = start_pop3({alice: proxy_to(pop3_backend.port, "nopassword")})
    client = RawPop3(mailroute.pop3_port, source_ip=CLIENT_IP)
    assert client.cmd(f"USER {alice}") == "+OK"
    assert client.cmd(f"PASS {PASSWORD}") == "+OK Logged in."
    assert client.cmd("STAT") == "+OK 0 0"
    line = backend_login_line(pop3_backend, alice)
    # Without XCLIENT Dovecot would see mailroute's own 127.0.0.1.
    assert f"rip={CLIENT_IP}," in line, line
    assert f"session=<{session_id(mailroute, alice)}>" in line, line
    assert client.cmd("QUIT").startswith("+OK")


def test_auth_plain_and_login(start_pop3, pop3_backend, addr):
    alice = addr("alice")
    pop3_backend.add_user(alice, PASSWORD)
    mailroute = start_pop3({alice: proxy_to(pop3_backend.port, "nopassword")})
    # Initial response
    client = RawPop3(mailroute.pop3_port)
    plain = b64(f"\0{alice}\0{PASSWORD}")
    assert client.cmd(f"AUTH PLAIN {plain}") == "+OK Logged in."
    assert client.cmd("STAT") == "+OK 0 0"
    client.close()
    # No initial response: an empty challenge first
    client = RawPop3(mailroute.pop3_port)
    assert client.cmd("AUTH PLAIN") == "+ "
    assert client.cmd(plain) == "+OK Logged in."
    client.close()
    # LOGIN
    client = RawPop3(mailroute.pop3_port)
    assert client.cmd("AUTH LOGIN") == "+ " + b64("Username:")
    assert client.cmd(b64(alice)) == "+ " + b64("Password:")
    assert client.cmd(b64(PASSWORD)) == "+OK Logged in."
    client.close()
    # Cancelled, and a bad response
    client = RawPop3(mailroute.pop3_port)
    assert client.cmd("AUTH PLAIN") == "+ "
    assert client.cmd("*") == "-ERR Authentication aborted by client."
    assert client.cmd("AUTH PLAIN !!!") == AUTH_FAILED
    assert client.cmd("NOOP") == "+OK"


def test_master_user_login(start_pop3, pop3_backend, addr):
    alice = addr("alice")
    pop3_backend.add_user(alice, "alice-own-password")
    pop3_backend.add_master("pop3admin", "masterpw")
    mailroute = start_pop3({
        alice: proxy_to(pop3_backend.port, "nopassword master=pop3admin pass=masterpw"),
    })
    client, reply = login(mailroute.pop3_port, alice)
    assert reply == "+OK Logged in."
    client.quit()
    wait_until(lambda: pop3_backend.master_login_lines(alice), timeout=5,
               what="Dovecot's master user line")


# --- XCLIENT from a proxy in front of mailroute ----------------------------------------


def test_xclient_from_a_trusted_client(start_pop3, pop3_backend, addr):
    alice = addr("alice")
    pop3_backend.add_user(alice, PASSWORD)
    mailroute = start_pop3({alice: proxy_to(pop3_backend.port, "nopassword")})
    client = RawPop3(mailroute.pop3_port)
    assert client.cmd("XCLIENT ADDR=192.0.2.7 PORT=4242 SESSION=front-hop-1 TTL=3") == (
        "+OK Updated")
    assert client.cmd(f"USER {alice}") == "+OK"
    assert client.cmd(f"PASS {PASSWORD}") == "+OK Logged in."
    line = backend_login_line(pop3_backend, alice)
    assert "rip=192.0.2.7," in line, line
    assert "session=<front-hop-1>" in line, line
    client.cmd("QUIT")


def test_xclient_invalid_and_untrusted(start_pop3, addr):
    mailroute = start_pop3({addr("alice"): "nopassword"},
                           extra="login_trusted_networks = 127.0.0.1/32\n")
    client = RawPop3(mailroute.pop3_port)
    assert client.cmd("XCLIENT ADDR=not-an-ip") == "-ERR Invalid parameters"
    assert client.cmd("XCLIENT TTL=x") == "-ERR Invalid parameters"
    assert client.cmd("XCLIENT ADDR=192.0.2.7") == "+OK Updated"
    other = RawPop3(mailroute.pop3_port, source_ip=CLIENT_IP)
    assert other.greeting == "+OK mailroute ready."
    assert other.cmd("XCLIENT ADDR=192.0.2.7") == "-ERR You are not from trusted IP"


def test_xclient_ttl_zero_is_a_loop(start_pop3, fake_pop3, addr):
    alice = addr("alice")
    fake = fake_pop3()
    mailroute = start_pop3({alice: proxy_to(fake.port, "nopassword")})
    client = RawPop3(mailroute.pop3_port)
    assert client.cmd("XCLIENT TTL=0") == "+OK Updated"
    assert client.cmd(f"USER {alice}") == "+OK"
    # As Dovecot: no [SYS/TEMP] for an exhausted TTL (reference 3.5/3.6).
    assert client.cmd(f"PASS {PASSWORD}") == "-ERR Account is temporarily unavailable."
    assert fake.lines == []


# --- exact lines, with a fake backend -------------------------------------------------


def test_backend_dialogue(start_pop3, fake_pop3, addr):
    alice = addr("alice")
    fake = fake_pop3()
    mailroute = start_pop3({alice: proxy_to(
        fake.port, "nopassword destuser=real-alice forward_foo=bar")})
    client = RawPop3(mailroute.pop3_port, source_ip=CLIENT_IP)
    assert client.cmd(f"USER {alice}") == "+OK"
    assert client.cmd(f"PASS {PASSWORD}") == "+OK Logged in."
    assert client.cmd("STAT") == "+OK 0 0"
    session = session_id(mailroute, alice)
    xclient, user, password, stat = fake.lines
    assert re.fullmatch(rf"XCLIENT ADDR={re.escape(CLIENT_IP)} PORT=\d+ "
                        rf"SESSION={re.escape(session)} TTL=4 FORWARD=Zm9vPWJhcg==", xclient)
    assert (user, password, stat) == ("USER real-alice", f"PASS {PASSWORD}", "STAT")


def test_no_xclient_unless_offered_and_trusted(start_pop3, fake_pop3, addr):
    alice, bob = addr("alice"), addr("bob")
    untrusting = fake_pop3(greeting="+OK plain ready.")
    trusting = fake_pop3()
    mailroute = start_pop3({
        alice: proxy_to(untrusting.port, "nopassword"),
        bob: proxy_to(trusting.port, "nopassword proxy_not_trusted"),
    })
    for user, fake in ((alice, untrusting), (bob, trusting)):
        client = RawPop3(mailroute.pop3_port)
        assert client.cmd(f"USER {user}") == "+OK"
        assert client.cmd(f"PASS {PASSWORD}") == "+OK Logged in."
        client.close()
        assert fake.lines[:2] == [f"USER {user}", f"PASS {PASSWORD}"], fake.lines


def test_master_user_dialogue(start_pop3, fake_pop3, addr):
    alice = addr("alice")
    fake = fake_pop3(greeting="+OK ready.")
    mailroute = start_pop3({alice: proxy_to(
        fake.port, "nopassword master=admin pass=masterpw")})
    client = RawPop3(mailroute.pop3_port)
    assert client.cmd(f"USER {alice}") == "+OK"
    assert client.cmd(f"PASS {PASSWORD}") == "+OK Logged in."
    client.close()
    assert fake.lines[0] == "AUTH PLAIN " + b64(f"{alice}\0admin\0masterpw")


@pytest.mark.parametrize("backend_reply, client_reply", [
    ("-ERR [SYS/TEMP] Too busy", TEMP_FAILED),
    ("-ERR [IN-USE] Mailbox locked", "-ERR [IN-USE] Mailbox locked"),
    ("-ERR", AUTH_FAILED),
    ("* NO what", TEMP_FAILED),
])
def test_backend_refusals(start_pop3, fake_pop3, addr, backend_reply, client_reply):
    alice = addr("alice")
    fake = fake_pop3(replies={"PASS": backend_reply})
    mailroute = start_pop3({alice: proxy_to(fake.port, "nopassword")})
    client = RawPop3(mailroute.pop3_port)
    assert client.cmd(f"USER {alice}") == "+OK"
    assert client.cmd(f"PASS {PASSWORD}") == client_reply
    assert client.cmd("NOOP") == "+OK"


def test_invalid_greeting_and_refused_xclient(start_pop3, fake_pop3, addr):
    alice, bob = addr("alice"), addr("bob")
    bad_greeting = fake_pop3(greeting="* OK imap here")
    no_xclient = fake_pop3(replies={"XCLIENT": "-ERR no"})
    mailroute = start_pop3({alice: proxy_to(bad_greeting.port, "nopassword"),
                            bob: proxy_to(no_xclient.port, "nopassword")})
    client = RawPop3(mailroute.pop3_port)
    for user in (alice, bob):
        assert client.cmd(f"USER {user}") == "+OK"
        assert client.cmd(f"PASS {PASSWORD}") == TEMP_FAILED
    assert bad_greeting.lines == []
    assert [line.split()[0] for line in no_xclient.lines] == ["XCLIENT"]


def test_pipelined_commands_reach_the_backend(start_pop3, fake_pop3, addr):
    alice = addr("alice")
    fake = fake_pop3()
    mailroute = start_pop3({alice: proxy_to(fake.port, "nopassword")})
    client = RawPop3(mailroute.pop3_port)
    client.send(f"USER {alice}\r\nPASS {PASSWORD}\r\nSTAT\r\nQUIT\r\n")
    assert [client.line() for _ in range(4)] == ["+OK", "+OK Logged in.", "+OK 0 0",
                                                 "+OK bye"]
    assert client.at_eof()


def test_referral_log_in_anyway_with_pop3_local(start_pop3, pop3_backend, addr):
    """host without nologin and pop3_local set: logged in at the local
    backend, and told where the account should be used from now on."""
    cleo = addr("cleo")
    pop3_backend.add_user(cleo, PASSWORD)
    mailroute = start_pop3({cleo: "nopassword host=mail2.example.com hostip=192.0.2.10 "
                                  "port=1110"},
                           extra=f"pop3_local = 127.0.0.1:{pop3_backend.port}\n")
    client = RawPop3(mailroute.pop3_port)
    assert client.cmd(f"USER {cleo}") == "+OK"
    assert client.cmd(f"PASS {PASSWORD}") == (
        f"+OK [REFERRAL/{cleo}@mail2.example.com:1110] "
        "Logged in, but you should use this server instead.")
    assert client.cmd("STAT").startswith("+OK 0 0")
    assert client.cmd("QUIT").startswith("+OK")
