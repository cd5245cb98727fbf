"""The Submission login proxy: clients (smtplib, swaks, raw sockets) log in
through mailrouted to a real Dovecot submission backend that relays to
smtp-sink, so a test sees the mail that went through in the sink's dumps
and the forwarded client address in Dovecot's log.

A small scripted SMTP backend (below) covers what Dovecot cannot be made to
do on demand: reading the exact XCLIENT lines (512-octet split, only the
advertised attributes, IPV6:, FORWARD), a missing AUTH, 4xx/5xx replies,
long AUTH lines."""

import base64
import os
import re
import smtplib
import socket
import socketserver
import subprocess
import threading

import pytest

from harness.dovecot_submission import DovecotSubmission
from harness.maildir import make_message, new_marker
from harness.mailroute import Mailroute
from harness.procs import free_port, port_listening, wait_until

GREETING = "220 router.test ESMTP mailroute ready."
TEMPFAIL = "454 4.7.0 Account is temporarily unavailable."


# --- mailrouted with a submission listener ----------------------------------

class SubmissionRouter(Mailroute):
    """users: {name: (password or None, extra fields)}; a None password
    leaves the field empty (use with nopassword)."""

    def __init__(self, workdir, users=None, trusted="127.0.0.0/8", **kwargs):
        self.submission_port = free_port()
        self.trusted = trusted
        super().__init__(workdir, users=users, **kwargs)

    def write_users(self, users):
        tmp = self.users_path + ".new"
        with open(tmp, "w") as f:
            for user, (password, fields) in users.items():
                stored = "{PLAIN}" + password if password is not None else ""
                f.write(f"{user}:{stored}::::::{fields or ''}\n")
        os.replace(tmp, self.users_path)

    def config_text(self):
        return f"""\
protocols = lmtp submission
listen = 127.0.0.1
hostname = {self.hostname}
base_dir = {self.dir}/run
workers = {self.workers}
login_trusted_networks = {self.trusted}
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
}}
service submission {{
  inet_listener submission {{
    port = {self.submission_port}
  }}
}}
{self.extra_config}
"""

    def wait_listening(self, timeout=15):
        super().wait_listening(timeout)
        wait_until(lambda: port_listening(self.submission_port) or not self.proc.alive(),
                   timeout=timeout, what=f"mailrouted to listen on {self.submission_port}")
        assert self.proc.alive(), f"mailrouted exited:\n{self.stderr()}"


@pytest.fixture
def start_router(workdir, request):
    """start(users, **kwargs) -> a running SubmissionRouter; at teardown the
    same checks as conftest's start_mailroute (no crash, exit 0 on SIGTERM,
    no sanitizer report)."""
    instances = []

    def start(users, **kwargs):
        router = SubmissionRouter(os.path.join(workdir, f"mr{len(instances)}"), users=users,
                                  **kwargs)
        instances.append(router)
        return router.start()
    yield start

    problems = []
    for router in instances:
        if router.proc is None:
            continue
        died = not router.alive()
        status = router.stop()
        if died or status != 0:
            problems.append(f"mailrouted {router.dir}: died={died} status={status}")
        report = router.sanitizer_report()
        if report:
            problems.append(f"sanitizer report in {router.stderr_path}:\n{report}")
        failed = getattr(request.node, "report_call", None)
        if problems or (failed is not None and failed.failed):
            tail = "\n".join(router.stderr().splitlines()[-60:])
            print(f"\n--- mailrouted stderr ({router.stderr_path}) ---\n{tail}")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def dovecot(tmp_root, smtp_sink):
    backend = DovecotSubmission(os.path.join(tmp_root, "dovecot-submission"),
                                relay_port=smtp_sink.port).start()
    yield backend
    backend.stop()


def proxy(port, extra=""):
    return f"proxy host=127.0.0.1 port={port} {extra}".strip()


# --- a raw SMTP client --------------------------------------------------------

class RawSmtp:
    def __init__(self, port, source="127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(20)
        self.sock.bind((source, 0))
        self.sock.connect(("127.0.0.1", port))
        self.file = self.sock.makefile("rb")

    def send(self, text):
        self.sock.sendall(text.encode() + b"\r\n")

    def reply(self):
        """The reply's lines, without CRLF."""
        lines = []
        while True:
            line = self.file.readline()
            assert line, f"connection closed after {lines}"
            line = line.decode().rstrip("\r\n")
            lines.append(line)
            if len(line) < 4 or line[3] == " ":
                return lines

    def line(self):
        lines = self.reply()
        assert len(lines) == 1, lines
        return lines[0]

    def cmd(self, text):
        self.send(text)
        return self.line()

    def closed(self):
        return self.file.readline() == b""

    def close(self):
        self.sock.close()


def plain(user, password, authzid=""):
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


def login_raw(client, user, password, ehlo="client.test"):
    assert client.line() == GREETING
    client.send(f"EHLO {ehlo}")
    client.reply()
    return client.cmd(f"AUTH PLAIN {plain(user, password)}")


def dovecot_logins(dovecot, user):
    """Dovecot's "Login:" lines for user (its log is written asynchronously)."""
    return wait_until(lambda: dovecot.log_lines("Login: user=<" + user + ">"), timeout=10,
                      what=f"Dovecot's login line for {user}")


def sent_through(sink, marker):
    return wait_until(lambda: sink.dumps_with(marker), timeout=10,
                      what=f"message {marker} in smtp-sink's dumps")


# --- pre-login --------------------------------------------------------------

def test_prelogin_commands_and_mail_before_auth(start_router):
    router = start_router({})
    c = RawSmtp(router.submission_port)
    assert c.line() == GREETING
    assert c.cmd("AUTH PLAIN " + plain("x", "y")) == "503 5.5.1 Send EHLO first"
    assert c.cmd("MAIL FROM:<a@example.com>") == "530 5.7.0 Authentication required"
    c.send("EHLO client.test")
    assert c.reply() == ["250-router.test", "250-8BITMIME", "250-AUTH PLAIN LOGIN",
                         "250-ENHANCEDSTATUSCODES", "250-PIPELINING",
                         "250 XCLIENT ADDR PORT PROTO HELO SESSION TTL"]
    assert c.cmd("MAIL FROM:<a@example.com>") == "530 5.7.0 Authentication required"
    assert c.cmd("RCPT TO:<b@example.com>") == "530 5.7.0 Authentication required"
    assert c.cmd("DATA") == "530 5.7.0 Authentication required"
    assert c.cmd("STARTTLS") == "454 4.7.0 TLS not available"
    assert c.cmd("NOOP") == "250 2.0.0 OK"
    assert c.cmd("RSET") == "250 2.0.0 OK"
    assert c.cmd("HELO old.client.test") == "250 router.test"
    assert c.cmd("FOO bar") == "500 5.5.2 Unknown command"
    assert c.cmd("AUTH CRAM-MD5") == "504 5.5.4 Unsupported authentication mechanism"
    assert c.cmd("AUTH PLAIN") == "334 "
    assert c.cmd("*") == "501 5.5.2 Authentication aborted by client"
    assert c.cmd("QUIT") == "221 2.0.0 Bye"
    assert c.closed()


def test_too_many_bad_commands_disconnect(start_router):
    router = start_router({})
    c = RawSmtp(router.submission_port)
    c.line()
    for _ in range(9):
        assert c.cmd("BOGUS") == "500 5.5.2 Unknown command"
    c.send("BOGUS")
    assert c.reply() == ["500 5.5.2 Unknown command"]
    assert c.line() == "421 4.7.0 router.test Too many invalid commands"
    assert c.closed()


# --- through Dovecot ----------------------------------------------------------

def test_auth_plain_then_mail_reaches_the_sink(start_router, dovecot, smtp_sink, addr):
    user = addr("alice")
    dovecot.set_users({user: "secret1"})
    router = start_router({user: (None, proxy(dovecot.port, "nopassword"))})
    marker = new_marker()
    with smtplib.SMTP("127.0.0.1", router.submission_port, timeout=20) as smtp:
        smtp.ehlo("client.test")
        assert smtp.has_extn("auth")
        assert smtp.login(user, "secret1") == (235, b"2.7.0 Logged in.")
        rcpt = addr("bob", "example.net")
        smtp.sendmail(user, [rcpt], make_message(marker))
    dump = sent_through(smtp_sink, marker)[0]
    assert dump.rcpts == [rcpt]
    assert "method=PLAIN" in dovecot_logins(dovecot, user)[0]


def test_password_checked_locally(start_router, dovecot, smtp_sink, addr):
    user = addr("carol")
    dovecot.set_users({user: "pw-carol"})
    router = start_router({user: ("pw-carol", proxy(dovecot.port))})
    with smtplib.SMTP("127.0.0.1", router.submission_port, timeout=20) as smtp:
        smtp.ehlo("client.test")
        smtp.esmtp_features["auth"] = "PLAIN"  # smtplib would try LOGIN after PLAIN
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            smtp.login(user, "wrong")
        assert (e.value.smtp_code, e.value.smtp_error) == (535, b"5.7.8 Authentication failed.")
        # Refused by mailroute: Dovecot never heard of it.
        assert not dovecot.log_lines(user)
        assert smtp.login(user, "pw-carol")[0] == 235
        marker = new_marker()
        smtp.sendmail(user, [addr("dan")], make_message(marker))
    sent_through(smtp_sink, marker)
    assert router.log_lines("submission(", "refused")


def test_backend_refusal_is_forwarded(start_router, dovecot, addr):
    user = addr("erin")
    dovecot.set_users({user: "right"})
    router = start_router({user: (None, proxy(dovecot.port, "nopassword"))})
    c = RawSmtp(router.submission_port)
    reply = login_raw(c, user, "wrong")
    # Dovecot's own 535 line, passed on as it is.
    assert reply.startswith("535 5.7.8 "), reply
    assert router.log_lines("backend refused the login")
    assert c.cmd("NOOP") == "250 2.0.0 OK"
    assert c.cmd("QUIT") == "221 2.0.0 Bye"


def test_destuser_and_pass_fields(start_router, dovecot, smtp_sink, addr):
    user, real = addr("frank"), addr("frank-real")
    dovecot.set_users({real: "backend-pw"})
    router = start_router({user: ("front-pw", proxy(dovecot.port,
                                                    f"destuser={real} pass=backend-pw"))})
    c = RawSmtp(router.submission_port)
    assert login_raw(c, user, "front-pw") == "235 2.7.0 Logged in."
    assert dovecot_logins(dovecot, real)
    c.close()


def test_nologin(start_router, addr):
    user, other = addr("gina"), addr("hank")
    router = start_router({user: ("pw", "nologin"), other: ("pw", "nologin reason=Suspended.")})
    c = RawSmtp(router.submission_port)
    assert login_raw(c, user, "pw") == "525 5.7.13 Login disabled for this user"
    assert c.cmd(f"AUTH PLAIN {plain(other, 'pw')}") == "525 5.7.13 Suspended."
    c.close()


@pytest.mark.parametrize("fields, target", [
    ("host=mail2.example.com port=1587", "mail2.example.com:1587"),
    ("host=mail2.example.com port=587", "mail2.example.com"),
    ("host=mail2.example.com", "mail2.example.com"),
    ("host=2001:db8::5 port=2587", "[2001:db8::5]:2587"),
])
def test_referral(start_router, addr, fields, target):
    user = addr("ivan")
    router = start_router({user: ("pw", "nologin " + fields)})
    c = RawSmtp(router.submission_port)
    assert login_raw(c, user, "pw") == f"550 5.2.900 {user}@{target} Try this server instead."
    c.close()


def test_referral_with_reason_and_destuser(start_router, addr):
    user = addr("judy")
    router = start_router({user: ("pw", "nologin host=mx.example.com destuser=j@x.test "
                                        "reason=Moved.")})
    c = RawSmtp(router.submission_port)
    assert login_raw(c, user, "pw") == "550 5.2.900 j@x.test@mx.example.com Moved."
    c.close()


def test_backend_down(start_router, addr):
    user = addr("karl")
    router = start_router({user: ("pw", proxy(free_port()))},
                          extra_config="login_proxy_max_reconnects = 1")
    c = RawSmtp(router.submission_port)
    assert login_raw(c, user, "pw") == TEMPFAIL
    assert c.cmd("NOOP") == "250 2.0.0 OK"
    assert c.cmd("QUIT") == "221 2.0.0 Bye"


def test_xclient_carries_the_real_client(start_router, dovecot, addr):
    user = addr("lena")
    dovecot.set_users({user: "pw"})
    router = start_router({user: (None, proxy(dovecot.port, "nopassword"))})
    c = RawSmtp(router.submission_port, source="127.0.0.7")
    assert login_raw(c, user, "pw") == "235 2.7.0 Logged in."
    logins = dovecot_logins(dovecot, user)
    assert "rip=127.0.0.7" in logins[0], logins
    # One session id along the chain.
    session = re.search(r"submission\(([^)]+)\): user=", "\n".join(router.log_lines(user)))
    assert session and f"session=<{session.group(1)}>" in logins[0], (logins, session)
    c.close()


@pytest.mark.parametrize("xaddr, rip", [("10.1.2.3", "10.1.2.3"),
                                        ("IPV6:2001:db8::7", "2001:db8::7")])
def test_xclient_from_a_trusted_client(start_router, dovecot, addr, xaddr, rip):
    user = addr("mia")
    dovecot.set_users({user: "pw"})
    router = start_router({user: (None, proxy(dovecot.port, "nopassword"))})
    c = RawSmtp(router.submission_port)
    assert c.line() == GREETING
    assert c.cmd(f"XCLIENT ADDR={xaddr} PORT=4242 HELO=far.client.test") == GREETING
    c.send("EHLO proxy.client.test")
    c.reply()
    assert c.cmd(f"AUTH PLAIN {plain(user, 'pw')}") == "235 2.7.0 Logged in."
    logins = dovecot_logins(dovecot, user)
    assert f"rip={rip}," in logins[0], logins
    c.close()


def test_xclient_refused_from_untrusted_client(start_router):
    router = start_router({}, trusted="127.0.0.5/32")
    c = RawSmtp(router.submission_port)
    c.line()
    c.send("EHLO client.test")
    assert not any("XCLIENT" in line for line in c.reply())
    assert c.cmd("XCLIENT ADDR=10.9.9.9") == "550 5.7.14 You are not from trusted IP"
    assert c.cmd("XCLIENT ADDR=10.9.9.9") == "550 5.7.14 You are not from trusted IP"
    c.close()


def test_xclient_invalid_and_ttl_exhausted(start_router, dovecot, addr):
    user = addr("nina")
    router = start_router({user: ("pw", proxy(dovecot.port))})
    c = RawSmtp(router.submission_port)
    c.line()
    assert c.cmd("XCLIENT ADDR=not-an-ip") == "501 5.5.4 Invalid ADDR parameter"
    # Dovecot gives up at TTL=1 already (it would send 0); the shared route
    # code stops at 0.
    assert c.cmd("XCLIENT TTL=0") == GREETING
    assert login_raw_after_greeting(c, user, "pw") == TEMPFAIL
    assert router.log_lines("TTL")
    c.close()


def login_raw_after_greeting(client, user, password):
    client.send("EHLO client.test")
    client.reply()
    return client.cmd(f"AUTH PLAIN {plain(user, password)}")


def test_auth_login_and_pipelined_mail(start_router, dovecot, smtp_sink, addr):
    user = addr("olga")
    dovecot.set_users({user: "pw-olga"})
    router = start_router({user: ("pw-olga", proxy(dovecot.port))})
    c = RawSmtp(router.submission_port)
    c.line()
    c.send("EHLO client.test")
    c.reply()
    assert c.cmd("AUTH LOGIN") == "334 VXNlcm5hbWU6"
    assert c.cmd(base64.b64encode(user.encode()).decode()) == "334 UGFzc3dvcmQ6"
    rcpt = addr("paul")
    marker = new_marker()
    # The password, and the transaction pipelined behind it: what follows
    # the AUTH waits for the login, then goes to the backend.
    c.sock.sendall(base64.b64encode(b"pw-olga") + b"\r\n" +
                   f"MAIL FROM:<{user}>\r\nRCPT TO:<{rcpt}>\r\n".encode())
    assert c.line() == "235 2.7.0 Logged in."
    assert c.line().startswith("250 2.1.0")
    assert c.line().startswith("250 2.1.5")
    assert c.cmd("DATA").startswith("354")
    c.sock.sendall(make_message(marker) + b".\r\n")
    assert c.line().startswith("250 2.0.0")
    assert c.cmd("QUIT").startswith("221")
    assert sent_through(smtp_sink, marker)[0].rcpts == [rcpt]


def test_swaks_auth_plain(start_router, dovecot, smtp_sink, addr):
    user = addr("quinn")
    dovecot.set_users({user: "pw-quinn"})
    router = start_router({user: (None, proxy(dovecot.port, "nopassword"))})
    marker = new_marker()
    rcpt = addr("rita")
    result = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{router.submission_port}", "--auth", "PLAIN",
         "--auth-user", user, "--auth-password", "pw-quinn", "--from", user, "--to", rcpt,
         "--header", f"X-Test-Id: {marker}", "--helo", "swaks.test", "--timeout", "20"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "235 2.7.0 Logged in." in result.stdout
    assert sent_through(smtp_sink, marker)[0].rcpts == [rcpt]


# --- a scripted backend -------------------------------------------------------

class _ScriptedSession(socketserver.StreamRequestHandler):
    def reply(self, text):
        self.wfile.write(text.encode() + b"\r\n")

    def handle(self):
        fake = self.server.fake
        commands = []
        fake.sessions.append(commands)
        self.reply("220 scripted.test ESMTP")
        while True:
            line = self.rfile.readline(65536)
            if not line:
                return
            line = line.rstrip(b"\r\n").decode()
            commands.append(line)
            verb = line.split(" ", 1)[0].upper()
            if verb == "EHLO":
                caps = ["scripted.test"] + fake.caps
                for cap in caps[:-1]:
                    self.reply("250-" + cap)
                self.reply("250 " + caps[-1])
            elif verb == "XCLIENT":
                self.reply("220 scripted.test ESMTP")
            elif verb == "AUTH" and line.upper() == "AUTH PLAIN":
                self.reply("334 ")
            elif verb == "AUTH" or (commands[-2:-1] and commands[-2].upper() == "AUTH PLAIN"):
                self.reply(fake.auth_reply)
            elif verb == "QUIT":
                self.reply("221 2.0.0 Bye")
                return
            else:
                self.reply("250 2.0.0 OK")


class ScriptedBackend:
    ALL_XCLIENT = "XCLIENT HELO PROTO LOGIN TTL PORT ADDR SESSION DESTADDR DESTPORT FORWARD"

    def __init__(self, caps=None, auth_reply="235 2.7.0 Welcome aboard"):
        self.caps = caps if caps is not None else ["AUTH PLAIN", self.ALL_XCLIENT]
        self.auth_reply = auth_reply
        self.sessions = []
        self.port = free_port()
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), _ScriptedSession)
        self.server.daemon_threads = True
        self.server.fake = self
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def wait_commands(self, prefix):
        """The first session's commands once one starts with prefix."""
        def ready():
            return self.sessions and any(c.startswith(prefix) for c in self.sessions[0])
        wait_until(ready, timeout=10, what=f"{prefix} at the scripted backend")
        return list(self.sessions[0])


@pytest.fixture
def scripted():
    started = []

    def start(**kwargs):
        backend = ScriptedBackend(**kwargs)
        started.append(backend)
        return backend
    yield start
    for backend in started:
        backend.stop()


def xclient_attrs(commands):
    attrs = {}
    for line in commands:
        if line.startswith("XCLIENT "):
            for word in line.split()[1:]:
                key, _, value = word.partition("=")
                attrs[key] = value
    return attrs


def xtext_decode(s):
    return re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), s)


def test_xclient_attributes_split_and_auth(start_router, scripted, addr):
    backend = scripted()
    user = addr("sam")
    router = start_router({user: ("pw", proxy(backend.port, "forward_foo=bar"))})
    c = RawSmtp(router.submission_port)
    helo = "h" * 100 + "=" * 100  # 400 octets of xtext: the line must be cut
    assert login_raw(c, user, "pw", ehlo=helo) == "235 2.7.0 Welcome aboard"
    cmds = backend.wait_commands("AUTH")
    xclients = [line for line in cmds if line.startswith("XCLIENT ")]
    assert len(xclients) >= 2 and all(len(line) + 2 <= 512 for line in xclients), xclients
    assert cmds[0] == "EHLO router.test"
    assert cmds[len(xclients) + 1] == "EHLO router.test"
    attrs = xclient_attrs(cmds)
    local_port = c.sock.getsockname()[1]
    assert xtext_decode(attrs.pop("HELO")) == helo
    session = attrs.pop("SESSION")
    assert router.log_lines(f"submission({session})")
    assert attrs == {"PROTO": "ESMTP", "TTL": "4", "PORT": str(local_port),
                     "ADDR": "127.0.0.1", "DESTADDR": "127.0.0.1",
                     "DESTPORT": str(router.submission_port), "FORWARD": "Zm9vPWJhcg+3D+3D"}
    # Dovecot's order.
    order = [w.split("=")[0] for line in xclients for w in line.split()[1:]]
    assert order == ["HELO", "PROTO", "TTL", "PORT", "ADDR", "SESSION", "DESTADDR",
                     "DESTPORT", "FORWARD"]
    assert cmds[-1] == f"AUTH PLAIN {plain(user, 'pw', authzid=user)}"
    c.close()


def test_xclient_only_advertised_attributes_ipv6(start_router, scripted, addr):
    backend = scripted(caps=["AUTH PLAIN LOGIN", "XCLIENT ADDR PORT"])
    user = addr("tom")
    router = start_router({user: ("pw", proxy(backend.port))})
    c = RawSmtp(router.submission_port)
    c.line()
    assert c.cmd("XCLIENT ADDR=IPV6:2001:db8::9 PORT=2525") == GREETING
    assert login_raw_after_greeting(c, user, "pw") == "235 2.7.0 Welcome aboard"
    cmds = backend.wait_commands("AUTH")
    assert [line for line in cmds if line.startswith("XCLIENT")] == \
        ["XCLIENT PORT=2525 ADDR=IPV6:2001:db8::9"]
    c.close()


def test_xclient_from_previous_hop_is_passed_on(start_router, scripted, addr):
    backend = scripted()
    user = addr("tina")
    router = start_router({user: ("pw", proxy(backend.port))})
    c = RawSmtp(router.submission_port)
    c.line()
    # An invalid attribute: nothing of the command applies.
    assert c.cmd("XCLIENT HELO=ignored.test ADDR=999.1.1.1") == \
        "501 5.5.4 Invalid ADDR parameter"
    assert c.cmd("XCLIENT HELO=far.client.test PROTO=ESMTPA SESSION=prevhop123 TTL=3 "
                 "ADDR=10.0.0.9 LOGIN=[UNAVAILABLE]") == GREETING
    assert login_raw_after_greeting(c, user, "pw") == "235 2.7.0 Welcome aboard"
    attrs = xclient_attrs(backend.wait_commands("AUTH"))
    assert (attrs["HELO"], attrs["PROTO"], attrs["TTL"], attrs["SESSION"], attrs["ADDR"]) == \
        ("far.client.test", "ESMTPA", "2", "prevhop123", "10.0.0.9")
    assert "PORT" not in attrs  # unknown: the previous hop gave none
    assert router.log_lines("submission(prevhop123)", "rip=10.0.0.9")
    c.close()


def test_proxy_not_trusted_sends_no_xclient(start_router, scripted, addr):
    backend = scripted()
    user = addr("uma")
    router = start_router({user: ("pw", proxy(backend.port, "proxy_not_trusted"))})
    c = RawSmtp(router.submission_port)
    assert login_raw(c, user, "pw") == "235 2.7.0 Welcome aboard"
    cmds = backend.wait_commands("AUTH")
    assert cmds == ["EHLO router.test", f"AUTH PLAIN {plain(user, 'pw', authzid=user)}"]
    c.close()


def test_long_auth_waits_for_334_and_master_user(start_router, scripted, addr):
    backend = scripted(caps=["AUTH PLAIN"])
    user = addr("vera")
    long_pw = "p" * 400
    router = start_router({user: ("pw", proxy(backend.port, f"master=admin pass={long_pw}"))})
    c = RawSmtp(router.submission_port)
    assert login_raw(c, user, "pw") == "235 2.7.0 Welcome aboard"
    cmds = backend.sessions[0]  # complete: the backend answered the last one
    assert cmds[-2:] == ["AUTH PLAIN", plain("admin", long_pw, authzid=user)]
    c.close()


@pytest.mark.parametrize("caps, auth_reply, expected", [
    (["XCLIENT ADDR"], "235 2.7.0 OK", TEMPFAIL),                   # no AUTH advertised
    (["AUTH PLAIN"], "454 4.7.0 Backend busy", TEMPFAIL),           # 4xx: temporary
    (["AUTH PLAIN"], "535 5.7.8 Backend says no", "535 5.7.8 Backend says no"),
    (["AUTH PLAIN"], "554 Rejected", "554 Rejected"),
])
def test_backend_auth_replies(start_router, scripted, addr, caps, auth_reply, expected):
    backend = scripted(caps=caps, auth_reply=auth_reply)
    user = addr("walt")
    router = start_router({user: ("pw", proxy(backend.port))})
    c = RawSmtp(router.submission_port)
    assert login_raw(c, user, "pw") == expected
    assert c.cmd("NOOP") == "250 2.0.0 OK"
    c.close()


def test_referral_log_in_anyway_with_submission_local(start_router, dovecot, addr):
    """host without nologin and submission_local set: the login goes on at
    the local backend, and the 235 names where the account should go."""
    user = addr("otto")
    dovecot.set_users({user: "pw"})
    router = start_router({user: ("pw", "host=mx.example.com port=2587 destuser=o@x.test")},
                          extra_config=f"submission_local = 127.0.0.1:{dovecot.port}")
    c = RawSmtp(router.submission_port)
    # The local login is the user's own; the referral names the account there.
    assert login_raw(c, user, "pw") == (
        "235 2.7.0 o@x.test@mx.example.com:2587 Logged in, but you should use this server "
        "instead.")
    assert c.cmd("NOOP").startswith("250")
    c.close()
