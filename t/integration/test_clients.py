"""Real mail clients from Debian through mailroute's login proxy: fetchmail
pulling mail over IMAP and over POP3, and mbsync (isync) syncing an IMAP
account with a local Maildir in both directions. The backends are real
Dovecots (harness/dovecot_imap.py, dovecot_pop3.py, one each for this
module); mailroute checks the password and proxies to them.

Each test asserts what the client stored (byte for byte, with LF line
ends, apart from what the client adds itself: fetchmail's Received: line,
mbsync's X-TUID header), what the backend holds afterwards, and that the
backend saw mailroute's proxied login: besides the test's own direct
logins, exactly one Dovecot login line for the user, carrying the session
id mailroute logged for it ("proxied to").

The programs come from the fetchmail and isync packages
(scripts/install-deps.sh test); a test skips, naming the package, only when
its program is not installed. Swaks on Submission is in test_submission.py."""

import imaplib
import os
import re
import shutil
import subprocess

import pytest

from harness.dovecot_imap import DovecotImapBackend
from harness.dovecot_pop3 import DovecotPop3Backend
from harness.maildir import new_marker
from harness.procs import free_port, port_listening, wait_until

PASSWORD = "client-pw"


# --- backends and mailroute -----------------------------------------------------

@pytest.fixture(scope="module")
def imap_backend(tmp_root):
    backend = DovecotImapBackend(os.path.join(tmp_root, "dovecot-clients-imap"),
                                 name="clients-imap").start()
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def pop3_backend(tmp_root):
    backend = DovecotPop3Backend(os.path.join(tmp_root, "dovecot-clients-pop3"),
                                 name="clients-pop3").start()
    yield backend
    backend.stop()


def login_config(imap_port, pop3_port):
    """Added to the harness's LMTP config: a later `protocols` line wins."""
    return ("protocols = lmtp imap pop3\nauth_failure_delay = 0\n"
            f"service imap {{\n  inet_listener imap {{\n    port = {imap_port}\n  }}\n}}\n"
            f"service pop3 {{\n  inet_listener pop3 {{\n    port = {pop3_port}\n  }}\n}}\n")


@pytest.fixture
def start_router(start_mailroute, workdir):
    """start({user: backend_port}) -> mailrouted with .imap_port and
    .pop3_port; each user has PASSWORD, checked by mailroute and again by
    the backend it is proxied to."""
    def start(users):
        passwd = os.path.join(workdir, "login-users")
        with open(passwd, "w") as f:
            for user, port in users.items():
                f.write(f"{user}:{{PLAIN}}{PASSWORD}::::::proxy host=127.0.0.1 port={port}\n")
        imap_port, pop3_port = free_port(), free_port()
        mailroute = start_mailroute(passwd_path=passwd,
                                    extra_config=login_config(imap_port, pop3_port))
        wait_until(lambda: (port_listening(imap_port) and port_listening(pop3_port))
                   or not mailroute.alive(), timeout=10, what="the IMAP and POP3 listeners")
        assert mailroute.alive(), mailroute.stderr()
        mailroute.imap_port, mailroute.pop3_port = imap_port, pop3_port
        return mailroute
    return start


# --- helpers ----------------------------------------------------------------------

def need_program(name, package):
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package {package}; "
                    "scripts/install-deps.sh test installs it)")
    return path


def make_message(user, marker, lines=200):
    """A CRLF message with numbered body lines, so a lost or repeated piece shows."""
    body = "".join(f"{i:05d} line of {marker} through the login proxy\r\n" for i in range(lines))
    return (f"From: sender@example.org\r\nTo: {user}\r\nSubject: {marker}\r\n"
            f"Message-ID: <{marker}@clients.test>\r\nX-Test-Id: {marker}\r\n\r\n"
            f"{body}").encode()


def as_stored(message):
    """Dovecot's, fetchmail's MDA and mbsync's Maildir files have LF line ends."""
    return message.replace(b"\r\n", b"\n")


def maildir_files(maildir):
    """{name: bytes} of the messages in a Maildir's new/ and cur/."""
    found = {}
    for sub in ("new", "cur"):
        path = os.path.join(maildir, sub)
        if os.path.isdir(path):
            for name in sorted(os.listdir(path)):
                with open(os.path.join(path, name), "rb") as f:
                    found[f"{sub}/{name}"] = f.read()
    return found


def proxied_session_id(mailroute, service, user):
    """The session id of the one login mailroute proxied for user."""
    lines = wait_until(lambda: mailroute.log_lines(
        f"user={user} rip=127.0.0.1 proxied to 127.0.0.1 as {user} "), timeout=5,
        what=f"mailroute's 'proxied to' line for {user}")
    assert len(lines) == 1, lines
    return re.search(rf"\b{service}\(([^)]+)\): ", lines[0]).group(1)


def assert_backend_saw_the_proxied_login(mailroute, backend, service, user, direct=1):
    """The backend saw `direct` logins of the test's own (straight to it)
    and one more, the one mailroute made: that one carries mailroute's
    session id, which only a trusted proxy can hand over in its ID/XCLIENT."""
    session = proxied_session_id(mailroute, service, user)
    lines = wait_until(lambda: len(backend.login_lines(user)) >= direct + 1 and
                       backend.login_lines(user), timeout=5,
                       what=f"{backend.name}'s login lines for {user}")
    assert len(lines) == direct + 1, lines
    proxied = [line for line in lines if f"session=<{session}>" in line]
    assert len(proxied) == 1 and "rip=127.0.0.1," in proxied[0], (session, lines)
    return session


def relayed_bytes(mailroute, service, session):
    """(in, out) of the session's "disconnected" line, once it is logged."""
    line = wait_until(lambda: mailroute.log_lines(f"{service}({session}): ", "disconnected by"),
                      timeout=10, what=f"the end of session {session}")[0]
    match = re.search(r" in=(\d+) out=(\d+)$", line)
    assert match, line
    return int(match.group(1)), int(match.group(2))


# --- fetchmail ----------------------------------------------------------------------

class Fetchmail:
    """fetchmail with a private rcfile, home and id file, delivering each
    message to its own file through an MDA (no local MTA involved). With
    keep, it remembers the UIDLs it has seen (POP3) in its id file."""

    def __init__(self, workdir, protocol, port, user, keep):
        self.dir = os.path.join(workdir, f"fetchmail-{protocol.lower()}")
        self.out = os.path.join(self.dir, "out")
        os.makedirs(self.out)
        self.rcfile = os.path.join(self.dir, "fetchmailrc")
        # sslproto "": no opportunistic STARTTLS, this is plaintext on loopback.
        with open(self.rcfile, "w") as f:
            f.write(f"""\
set no syslog
set no bouncemail
poll 127.0.0.1 port {port} proto {protocol} {"uidl" if keep else ""} auth password timeout 30
  user "{user}" there with password "{PASSWORD}" is root here
  sslproto ""
  {"keep" if keep else "nokeep"}
  mda "cat > {self.out}/message-$$"
""")
        os.chmod(self.rcfile, 0o600)  # fetchmail refuses an rcfile others can read

    def run(self):
        env = dict(os.environ, HOME=self.dir, FETCHMAILHOME=self.dir, LC_ALL="C")
        return subprocess.run(["fetchmail", "-f", self.rcfile, "-v", "--nosyslog"],
                              capture_output=True, text=True, timeout=60, env=env)

    def messages(self):
        found = []
        for name in sorted(os.listdir(self.out)):
            with open(os.path.join(self.out, name), "rb") as f:
                found.append(f.read())
        return found


def assert_fetched(message, delivered, protocol):
    """fetchmail prepends its own Received: line and hands the rest over as
    it was stored, with LF line ends."""
    assert delivered.endswith(as_stored(message)), delivered[-400:]
    head = delivered[:-len(as_stored(message))]
    assert re.fullmatch(rb"Received: from 127\.0\.0\.1 \[127\.0\.0\.1\]\n.*",
                        head, re.S), head
    assert f"with {protocol} (fetchmail-".encode() in head, head


def test_fetchmail_imap_through_mailroute(start_router, imap_backend, workdir, addr):
    """fetchmail logs in over IMAP through mailroute, fetches the message
    and, with nokeep, deletes and expunges it at the backend."""
    need_program("fetchmail", "fetchmail")
    fay = addr("fay")
    imap_backend.add_user(fay, PASSWORD)
    marker = new_marker()
    message = make_message(fay, marker)
    imap_backend.append(fay, PASSWORD, message)
    assert len(maildir_files(imap_backend.maildir(fay))) == 1
    mailroute = start_router({fay: imap_backend.port})

    fetch = Fetchmail(workdir, "IMAP", mailroute.imap_port, fay, keep=False)
    result = fetch.run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 message for" in result.stdout, result.stdout
    [delivered] = fetch.messages()
    assert_fetched(message, delivered, "IMAP")

    session = assert_backend_saw_the_proxied_login(mailroute, imap_backend, "imap", fay)
    assert imap_backend.master_login_lines(fay) == []
    sent, received = relayed_bytes(mailroute, "imap", session)
    assert received > len(message), (sent, received)  # the message came through the relay
    # nokeep: deleted and expunged at the backend, through the relay.
    wait_until(lambda: maildir_files(imap_backend.maildir(fay)) == {}, timeout=5,
               what="the fetched message to be expunged at the backend")


def test_fetchmail_pop3_through_mailroute(start_router, pop3_backend, workdir, addr):
    """fetchmail over POP3 (USER/PASS) through mailroute with keep: the
    message is fetched once, stays at the backend, and a second run knows
    it by its UIDL and fetches nothing (exit status 1: no mail)."""
    need_program("fetchmail", "fetchmail")
    pia = addr("pia")
    pop3_backend.add_user(pia, PASSWORD)
    marker = new_marker()
    message = make_message(pia, marker)
    pop3_backend.put_message(pia, message.decode())
    mailroute = start_router({pia: pop3_backend.port})

    fetch = Fetchmail(workdir, "POP3", mailroute.pop3_port, pia, keep=True)
    result = fetch.run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 message for" in result.stdout, result.stdout
    [delivered] = fetch.messages()
    assert_fetched(message, delivered, "POP3")
    session = assert_backend_saw_the_proxied_login(mailroute, pop3_backend, "pop3", pia,
                                                   direct=0)
    sent, received = relayed_bytes(mailroute, "pop3", session)
    assert received > len(message), (sent, received)
    assert list(maildir_files(pop3_backend.maildir(pia)).values()) == [as_stored(message)]

    again = fetch.run()
    assert again.returncode == 1, again.stdout + again.stderr  # 1: no new mail
    assert len(fetch.messages()) == 1
    assert len(wait_until(lambda: len(pop3_backend.login_lines(pia)) == 2 and
                          pop3_backend.login_lines(pia), timeout=5,
                          what="the second POP3 login")) == 2


# --- mbsync ---------------------------------------------------------------------------

MBSYNC_CONFIG = """\
IMAPAccount proxied
Host 127.0.0.1
Port {port}
User {user}
Pass {password}
SSLType None
AuthMechs LOGIN
Timeout 30

IMAPStore remote
Account proxied

MaildirStore local
Path {dir}/mail/
Inbox {dir}/mail/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns INBOX
Create Near
Expunge None
Sync All
SyncState *
"""


def write_local_message(maildir, message):
    """A message in the local Maildir's new/, as a mail reader would leave it."""
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(maildir, sub), exist_ok=True)
    with open(os.path.join(maildir, "new", "1700000000.local1.client.test"), "wb") as f:
        f.write(as_stored(message))


def backend_messages(backend, user):
    """The messages in user's INBOX at the backend, fetched straight from it."""
    imap = imaplib.IMAP4("127.0.0.1", backend.port, timeout=10)
    try:
        assert imap.login(user, PASSWORD)[0] == "OK"
        status, data = imap.select("INBOX", readonly=True)
        assert status == "OK", data
        found = []
        for number in range(1, int(data[0]) + 1):
            status, data = imap.fetch(str(number), "(BODY.PEEK[])")
            assert status == "OK", data
            found.append(data[0][1])
        return found
    finally:
        imap.logout()


def without_tuid(copied, eol):
    """mbsync marks every message it copies with an X-TUID header (its
    temporary id, the last header line): the message without it."""
    head, sep, body = copied.partition(eol + eol)
    lines = head.split(eol)
    assert re.fullmatch(rb"X-TUID: [A-Za-z0-9+/]{12}", lines[-1]), head
    return eol.join(lines[:-1]) + sep + body


def test_mbsync_syncs_an_imap_account_through_mailroute(start_router, imap_backend, workdir,
                                                        addr):
    """mbsync with Sync All: the backend's message is pulled into the local
    Maildir byte for byte, and a message of the local Maildir is APPENDed
    through mailroute to the backend."""
    need_program("mbsync", "isync")
    max_ = addr("max")
    imap_backend.add_user(max_, PASSWORD)
    far, near = make_message(max_, new_marker()), make_message(max_, new_marker(), lines=120)
    imap_backend.append(max_, PASSWORD, far)
    mailroute = start_router({max_: imap_backend.port})

    home = os.path.join(workdir, "mbsync")
    inbox = os.path.join(home, "mail", "INBOX")
    write_local_message(inbox, near)
    config = os.path.join(home, "mbsyncrc")
    with open(config, "w") as f:
        f.write(MBSYNC_CONFIG.format(port=mailroute.imap_port, user=max_, password=PASSWORD,
                                     dir=home))
    result = subprocess.run(["mbsync", "-c", config, "-V", "sync"], capture_output=True,
                            text=True, timeout=60, env=dict(os.environ, HOME=home, LC_ALL="C"))
    assert result.returncode == 0, result.stdout + result.stderr

    local = maildir_files(inbox)
    assert len(local) == 2, list(local)
    [own] = [name for name in local if ".local1.client.test" in name]
    [pulled] = [data for name, data in local.items() if name != own]
    assert local[own] == as_stored(near)
    assert without_tuid(pulled, b"\n") == as_stored(far), pulled
    session = assert_backend_saw_the_proxied_login(mailroute, imap_backend, "imap", max_)
    # The local message reached the backend whole (CRLF again on the wire).
    at_backend = backend_messages(imap_backend, max_)
    assert len(at_backend) == 2 and at_backend[0] == far, at_backend
    assert without_tuid(at_backend[1], b"\r\n") == near, at_backend[1]
    sent, received = relayed_bytes(mailroute, "imap", session)
    assert sent > len(near) and received > len(far), (sent, received)
