"""Hostile clients and limits at the IMAP login proxy, against a real
Dovecot IMAP backend (harness/dovecot_imap.py, one for this module, which
trusts mailroute through login_trusted_networks):

- the PROXY protocol (v1 and v2) in front of the IMAP listener: the header's
  client address is the one mailroute judges by and forwards (Dovecot logs
  it as rip=), and only peers in haproxy_trusted_networks may send one;
- a client that pipelines requests for hundreds of MiB and never reads,
  and one that floods commands as fast as the socket takes them: mailroute's
  RSS grows by less than 16 MiB (not asserted on ASan builds, whose RSS
  means little), the data are held back (not lost), the flooder is blocked,
  other clients are served meanwhile; when such a client resets, or on
  SIGTERM, nothing is left waiting on it;
- STARTTLS command injection: commands sent in plaintext behind STARTTLS
  are never run.

Pre-login limits (idle timeout, long lines, literal bombs) are in
test_imap.py; the PROXY protocol on LMTP is in test_haproxy.py."""

import contextlib
import os
import re
import signal
import socket
import ssl
import struct
import time

import pytest

from harness.dovecot_imap import DovecotImapBackend
from harness.procs import free_port, port_listening, wait_until
from test_haproxy import v2_header
from test_imap import GREETING, RawImap, assert_logged_in, tagged

PASSWORD = "limits-pw"
HAPROXY_PEER = "127.0.0.5"  # the "load balancer": a source address of the test's


# --- backend and mailroute -----------------------------------------------------

@pytest.fixture(scope="module")
def imap_backend(tmp_root):
    backend = DovecotImapBackend(os.path.join(tmp_root, "dovecot-limits-imap"),
                                 name="limits-imap").start()
    yield backend
    backend.stop()


def imap_config(imap_port, haproxy_port=None, trusted="127.0.0.0/8", extra="",
                haproxy_address=None):
    """mailroute's IMAP service (added to the harness's LMTP config; a later
    `protocols` wins), with a second, haproxy = yes, listener if asked."""
    haproxy = ""
    if haproxy_port:
        address = f"    address = {haproxy_address}\n" if haproxy_address else ""
        haproxy = (f"  inet_listener imap_haproxy {{\n    port = {haproxy_port}\n"
                   f"{address}    haproxy = yes\n  }}\n")
    return (f"protocols = lmtp imap\nauth_failure_delay = 0\n"
            f"haproxy_trusted_networks = {trusted}\nhaproxy_timeout = 2s\n"
            f"service imap {{\n  inet_listener imap {{\n    port = {imap_port}\n  }}\n"
            f"{haproxy}}}\n{extra}")


@pytest.fixture
def start_imap(start_mailroute, workdir):
    """start([user, ...], haproxy=False, trusted=..., extra="", **kwargs) ->
    mailrouted with .imap_port (and .haproxy_port), every user proxied to
    the module's Dovecot with PASSWORD (checked by both)."""
    counter = [0]

    def start(users, backend, haproxy=False, trusted="127.0.0.0/8", extra="",
              haproxy_address=None, **kwargs):
        counter[0] += 1
        passwd = os.path.join(workdir, f"limits-users-{counter[0]}")
        with open(passwd, "w") as f:
            for user in users:
                f.write(f"{user}:{{PLAIN}}{PASSWORD}::::::"
                        f"proxy host=127.0.0.1 port={backend.port}\n")
        imap_port = free_port()
        haproxy_port = free_port() if haproxy else None
        mailroute = start_mailroute(passwd_path=passwd, extra_config=imap_config(
            imap_port, haproxy_port, trusted, extra, haproxy_address), **kwargs)
        ports = [p for p in (imap_port, haproxy_port) if p]
        wait_until(lambda: all(port_listening(p) for p in ports) or not mailroute.alive(),
                   timeout=10, what=f"mailrouted to listen for IMAP on {ports}")
        assert mailroute.alive(), mailroute.stderr()
        mailroute.imap_port, mailroute.haproxy_port = imap_port, haproxy_port
        return mailroute
    return start


def new_user(backend, addr, name):
    user = addr(name)
    backend.add_user(user, PASSWORD)
    return user


# --- 1. PROXY protocol in front of the IMAP listener ------------------------------

def v2_local_header():
    """A v2 header with the LOCAL command (a balancer's own health check):
    no addresses, the connection's own ones stay."""
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20, 0x00]) + struct.pack("!H", 0)


HEADERS = {
    "v1-tcp4": (b"PROXY TCP4 192.0.2.7 127.0.0.1 40007 143\r\n", "192.0.2.7", "127.0.0.1"),
    "v1-tcp6": (b"PROXY TCP6 2001:db8::7 2001:db8::143 40008 143\r\n", "2001:db8::7",
                "2001:db8::143"),
    "v2-tcp4": (v2_header("198.51.100.9", "127.0.0.1", 40009, 143), "198.51.100.9",
                "127.0.0.1"),
    "v2-local": (v2_local_header(), HAPROXY_PEER, "127.0.0.1"),
}


@pytest.mark.parametrize("kind", HEADERS)
def test_proxy_header_client_address_reaches_dovecot(start_imap, imap_backend, addr, kind):
    """From a trusted balancer, the header's client address is the one
    mailroute logs and forwards in its ID: Dovecot logs it as rip=. A LOCAL
    header (v2) keeps the connection's own address."""
    header, client_ip, local_ip = HEADERS[kind]
    hal = new_user(imap_backend, addr, "hal")
    # The forwarded addresses are not loopback: plaintext LOGIN needs this here.
    mailroute = start_imap([hal], imap_backend, haproxy=True,
                           extra="disable_plaintext_auth = no\n")
    with RawImap(mailroute.haproxy_port, source_ip=HAPROXY_PEER) as c:
        c.send(header)
        assert c.greeting() == GREETING
        assert_logged_in(tagged(c.command("a", f"LOGIN {hal} {PASSWORD}")))
        assert c.command("b", "LOGOUT")[-1].startswith("b OK Logout completed")
    [line] = imap_backend.wait_login_lines(hal)
    assert f"rip={client_ip}," in line, line
    assert f"lip={local_ip}," in line, line
    assert mailroute.log_lines(f"user={hal} rip={client_ip} proxied to 127.0.0.1 as {hal} ")


def test_proxy_header_on_a_wildcard_listener_keeps_its_destination(start_imap, imap_backend,
                                                                   addr):
    """On a listener bound to every address mailroute learns its local
    address lazily; the header's destination must still win over the
    socket's own."""
    ivo = new_user(imap_backend, addr, "ivo")
    mailroute = start_imap([ivo], imap_backend, haproxy=True, haproxy_address="0.0.0.0",
                           extra="disable_plaintext_auth = no\n")
    with RawImap(mailroute.haproxy_port, source_ip=HAPROXY_PEER) as c:
        c.send(v2_header("198.51.100.10", "10.9.8.7", 40010, 143))
        assert c.greeting() == GREETING
        assert_logged_in(tagged(c.command("a", f"LOGIN {ivo} {PASSWORD}")))
    [line] = imap_backend.wait_login_lines(ivo)
    assert "rip=198.51.100.10," in line and "lip=10.9.8.7," in line, line


def test_plaintext_login_is_judged_by_the_forwarded_address(start_imap, imap_backend, addr):
    """disable_plaintext_auth (default yes) looks at the header's client, as
    Dovecot does: a forwarded 192.0.2.7 gets LOGINDISABLED although the
    balancer itself is on loopback; a forwarded 127.0.0.9 may log in."""
    ida = new_user(imap_backend, addr, "ida")
    mailroute = start_imap([ida], imap_backend, haproxy=True)
    with RawImap(mailroute.haproxy_port, source_ip=HAPROXY_PEER) as c:
        c.send(b"PROXY TCP4 192.0.2.7 127.0.0.1 40010 143\r\n")
        assert c.greeting() == ("* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE "
                                "IDLE LITERAL+ LOGINDISABLED] mailroute ready.")
        assert c.command("a", f"LOGIN {ida} {PASSWORD}") == [
            "a NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure "
            "(SSL/TLS) connections."]
    with RawImap(mailroute.haproxy_port, source_ip=HAPROXY_PEER) as c:
        c.send(b"PROXY TCP4 127.0.0.9 127.0.0.1 40011 143\r\n")
        assert c.greeting() == GREETING
        assert_logged_in(tagged(c.command("a", f"LOGIN {ida} {PASSWORD}")))
    [line] = imap_backend.wait_login_lines(ida)
    assert "rip=127.0.0.9," in line, line


def closed_without_a_word(c, timeout=5):
    """The server closed the connection without sending anything."""
    c.sock.settimeout(timeout)
    try:
        data = c.sock.recv(65536)
    except ConnectionResetError:
        return True
    assert data == b"", f"the server said {data!r}"
    return True


def test_proxy_header_from_an_untrusted_peer_is_refused(start_imap, imap_backend, addr):
    """Only HAPROXY_PEER may send a header: the same bytes from 127.0.0.1
    close the connection before the greeting, and the LOGIN behind them
    never reaches the backend. The trusted peer, in the same instance, is
    served (so the refusal is about the peer, not the header)."""
    ivo = new_user(imap_backend, addr, "ivo")
    mailroute = start_imap([ivo], imap_backend, haproxy=True, trusted=f"{HAPROXY_PEER}/32",
                           extra="disable_plaintext_auth = no\n")
    header = v2_header("203.0.113.5", "127.0.0.1", 40012, 143)
    with RawImap(mailroute.haproxy_port, source_ip="127.0.0.1") as c:
        c.send(header + f"a LOGIN {ivo} {PASSWORD}\r\n".encode())
        assert closed_without_a_word(c)
    wait_until(lambda: mailroute.log_lines("haproxy: client not trusted (rip=127.0.0.1)"),
               timeout=5, what="the refusal in mailroute's log")
    assert imap_backend.login_lines(ivo) == []
    assert not mailroute.log_lines(f"user={ivo} ")

    with RawImap(mailroute.haproxy_port, source_ip=HAPROXY_PEER) as c:
        c.send(header)
        assert c.greeting() == GREETING
        assert_logged_in(tagged(c.command("a", f"LOGIN {ivo} {PASSWORD}")))
    [line] = imap_backend.wait_login_lines(ivo)
    assert "rip=203.0.113.5," in line, line
    assert len(mailroute.log_lines("haproxy: client not trusted")) == 1


def test_a_plain_connection_to_the_haproxy_listener_is_closed(start_imap, imap_backend, addr):
    """A trusted peer that skips the header and speaks IMAP is closed
    unanswered: its first bytes are not a header."""
    jo = new_user(imap_backend, addr, "jo")
    mailroute = start_imap([jo], imap_backend, haproxy=True)
    with RawImap(mailroute.haproxy_port, source_ip=HAPROXY_PEER) as c:
        c.send(f"a LOGIN {jo} {PASSWORD}\r\n")
        assert closed_without_a_word(c)
    assert mailroute.log_lines("haproxy: ")
    assert imap_backend.login_lines(jo) == []


# --- 2. a client that sends and never reads --------------------------------------

MIB = 1024 * 1024
BIG_MESSAGE_SIZE = 4 * MIB
FETCHES = 64                   # 64 x 4 MiB = 256 MiB of responses asked for
RSS_GROWTH_LIMIT_KB = 16 * 1024
STALL_SECONDS = 8


def big_message(marker):
    line = f"{marker} " + "0123456789abcdefghijklmnopqrstuvwxyz" * 2 + "\r\n"
    body = "".join(f"{i:07d} {line}" for i in range(BIG_MESSAGE_SIZE // (len(line) + 8)))
    return f"Subject: {marker}\r\nX-Test-Id: {marker}\r\n\r\n{body}".encode()


def rss_kb(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def reset_peak_rss(pid):
    """Set the process's VmHWM (peak RSS) to its RSS now, so that VmHWM
    later is the peak since this moment, however short the spike."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
    return rss_kb(pid)


class SmallWindowImap(RawImap):
    """RawImap with a small receive buffer, set before connecting: what the
    client does not read piles up at mailroute, not in the kernel."""

    def __init__(self, port, timeout=30):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""


@contextlib.contextmanager
def hog_login(port, user):
    """A client logged in through mailroute, INBOX (one message) selected.
    It is reset at the end, so whatever it left unread is thrown away at
    once (a plain close would leave mailroute flushing into it)."""
    c = SmallWindowImap(port)
    try:
        assert c.greeting() == GREETING
        assert_logged_in(tagged(c.command("a", f"LOGIN {user} {PASSWORD}")))
        select = c.command("s", "SELECT INBOX")
        assert "* 1 EXISTS" in select and select[-1].startswith("s OK"), select
        yield c
    finally:
        reset(c)


def reset(c):
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def served_meanwhile(port, user):
    """Another client logs in through mailroute and works; seconds taken."""
    started = time.monotonic()
    with RawImap(port, timeout=10) as c:
        assert c.greeting() == GREETING
        assert_logged_in(tagged(c.command("a", f"LOGIN {user} {PASSWORD}")))
        select = c.command("b", "SELECT INBOX")
        assert select[-1].startswith("b OK [READ-WRITE] Select completed"), select
        assert re.fullmatch(r"c OK NOOP completed \(.*\)\.", c.command("c", "NOOP")[-1])
        assert c.command("d", "LOGOUT")[-1].startswith("d OK Logout completed")
    return time.monotonic() - started


TAGGED_RE = re.compile(rb"\r\n(f\d+|zlast) (OK|NO|BAD)")


def drain(c, last_tag, timeout=120):
    """Read until the tagged reply of last_tag: (bytes read, {tag: status}).
    Only a short tail is kept between reads: hundreds of MiB pass through."""
    c.sock.settimeout(timeout)
    total, tail, replies = len(c.buf), b"\r\n" + c.buf, {}
    while last_tag not in replies:
        chunk = c.sock.recv(1 << 20)
        if not chunk:
            raise EOFError(f"closed after {total} bytes; replies so far {len(replies)}")
        total += len(chunk)
        window = tail + chunk
        for match in TAGGED_RE.finditer(window):
            replies[match.group(1).decode()] = match.group(2).decode()
        tail = window[-64:]
    return total, replies


def test_client_that_never_reads_keeps_memory_bounded(start_imap, imap_backend, addr,
                                                      sanitized):
    """64 FETCHes of a 4 MiB message pipelined (256 MiB asked for) by a
    client that then reads nothing for 8 s: mailroute's RSS grows by less
    than 16 MiB (the relay stops reading the backend while the client's
    queue is full), another client is served meanwhile, and once the
    client reads, all 256 MiB arrive with every FETCH answered OK."""
    hog, other = new_user(imap_backend, addr, "hog"), new_user(imap_backend, addr, "other")
    marker = f"hog-{time.monotonic_ns()}"
    message = big_message(marker)
    imap_backend.append(hog, PASSWORD, message)
    imap_backend.append(other, PASSWORD, b"Subject: small\r\n\r\nsmall\r\n")
    mailroute = start_imap([hog, other], imap_backend)
    requested = FETCHES * len(message)
    assert requested > 200 * MIB and requested > 12 * RSS_GROWTH_LIMIT_KB * 1024

    with hog_login(mailroute.imap_port, hog) as c:
        baseline = reset_peak_rss(mailroute.pid)
        c.send("".join(f"f{i} FETCH 1 (BODY.PEEK[])\r\n" for i in range(FETCHES)) +
               "zlast NOOP\r\n")
        time.sleep(STALL_SECONDS / 2)
        other_seconds = served_meanwhile(mailroute.imap_port, other)
        time.sleep(STALL_SECONDS / 2)
        peak = rss_kb(mailroute.pid, "VmHWM")
        assert mailroute.alive()

        started = time.monotonic()
        total, replies = drain(c, "zlast")
        drain_seconds = time.monotonic() - started
    print(f"never-reading client: {requested // MIB} MiB requested; mailrouted VmRSS "
          f"{baseline} KiB before, peak {peak} KiB while stalled (+{peak - baseline} KiB); "
          f"another client served in {other_seconds:.2f}s; {total // MIB} MiB drained in "
          f"{drain_seconds:.1f}s")
    assert replies == {**{f"f{i}": "OK" for i in range(FETCHES)}, "zlast": "OK"}, replies
    assert total > requested, total
    assert other_seconds < 5, f"another client took {other_seconds:.1f}s"
    if not sanitized:  # ASan's shadow memory and quarantine make RSS meaningless
        assert peak - baseline < RSS_GROWTH_LIMIT_KB, \
            f"mailrouted grew by {peak - baseline} KiB for a client that does not read"


FLOOD_LIMIT = 256 * MIB  # command bytes the flooding client is willing to send


def flood_until_blocked(sock, command_for, quiet_seconds=3):
    """Send pipelined commands without reading until the socket has
    accepted nothing for quiet_seconds, or FLOOD_LIMIT bytes went out.
    Returns (bytes sent, whole commands sent)."""
    sock.setblocking(False)
    sent = made = 0
    pending = b""
    last_progress = time.monotonic()
    while sent < FLOOD_LIMIT and time.monotonic() - last_progress < quiet_seconds:
        if not pending:
            pending = b"".join(command_for(made + i) for i in range(4096))
            made += 4096
        try:
            n = sock.send(pending)
        except BlockingIOError:
            time.sleep(0.05)
            continue
        sent += n
        pending = pending[n:]
        last_progress = time.monotonic()
    sock.setblocking(True)
    return sent, made - pending.count(b"\n")


def test_client_flooding_commands_is_throttled(start_imap, imap_backend, addr, sanitized):
    """A client that pipelines FETCH commands as fast as the socket takes
    them and never reads: mailroute stops reading from it once the
    backend's queue is full, so the client is blocked long before it could
    send 256 MiB of commands, mailroute's RSS grows by less than 16 MiB,
    another client is served meanwhile, and when the flooder hangs up both
    of its connections are closed."""
    flo, other = new_user(imap_backend, addr, "flo"), new_user(imap_backend, addr, "other")
    imap_backend.append(flo, PASSWORD, big_message(f"flo-{time.monotonic_ns()}"))
    imap_backend.append(other, PASSWORD, b"Subject: small\r\n\r\nsmall\r\n")
    mailroute = start_imap([flo, other], imap_backend)

    with hog_login(mailroute.imap_port, flo) as c:
        baseline = reset_peak_rss(mailroute.pid)
        sent, commands = flood_until_blocked(
            c.sock, lambda i: b"f%d FETCH 1 (BODY.PEEK[])\r\n" % i)
        other_seconds = served_meanwhile(mailroute.imap_port, other)
        peak = rss_kb(mailroute.pid, "VmHWM")
    # The flooder was reset (hog_login): its unread replies are thrown away.
    print(f"flooding client: blocked after {sent / MIB:.1f} MiB of commands "
          f"(~{commands} FETCHes, {commands * BIG_MESSAGE_SIZE / MIB / 1024:.0f} GiB asked "
          f"for); mailrouted VmRSS {baseline} KiB before, peak {peak} KiB "
          f"(+{peak - baseline} KiB); another client served in {other_seconds:.2f}s")
    assert sent < FLOOD_LIMIT, "mailroute kept reading a client whose backend is stuck"
    assert other_seconds < 5, f"another client took {other_seconds:.1f}s"
    if not sanitized:
        assert peak - baseline < RSS_GROWTH_LIMIT_KB, \
            f"mailrouted grew by {peak - baseline} KiB for a flooding client"
    # Both connections end (see the next test for how soon).
    wait_until(lambda: mailroute.log_lines(f"user={flo} disconnected by client"), timeout=10,
               what="mailroute to end the flooder's session")
    backend_session_end(imap_backend, mailroute, flo, timeout=30)
    assert mailroute.alive()


def proxied_session(mailroute, user):
    [line] = mailroute.log_lines(f"user={user} rip=127.0.0.1 proxied to")
    return re.search(r"imap\(([^)]+)\): ", line).group(1)


def backend_session_end(backend, mailroute, user, timeout):
    """Dovecot's "Disconnected" line of the session mailroute proxied for
    user (Dovecot took mailroute's session id as its own)."""
    session = proxied_session(mailroute, user)
    return wait_until(lambda: backend.log_lines(f"imap({user})<", f"><{session}> ",
                                                "Disconnected: "),
                      timeout=timeout, what=f"the backend to end session {session}")[0]


def test_backend_is_released_when_a_flooding_client_resets(start_imap, imap_backend, addr):
    """When a client that flooded commands and read nothing resets, the
    backend connection is closed at once, as Dovecot's proxy does: the
    commands still queued for the backend are worthless without a client,
    and the backend cannot take them anyway, as it is blocked writing
    replies that mailroute no longer reads."""
    ray = new_user(imap_backend, addr, "ray")
    imap_backend.append(ray, PASSWORD, big_message(f"ray-{time.monotonic_ns()}"))
    mailroute = start_imap([ray], imap_backend)
    with hog_login(mailroute.imap_port, ray) as c:
        flood_until_blocked(c.sock, lambda i: b"f%d FETCH 1 (BODY.PEEK[])\r\n" % i,
                            quiet_seconds=1)
        reset_at = time.monotonic()
    wait_until(lambda: mailroute.log_lines(f"user={ray} disconnected by client"), timeout=5,
               what="mailroute to see the client's reset")
    try:
        backend_session_end(imap_backend, mailroute, ray, timeout=3)
    finally:
        # Waited for even after a failure: teardown's SIGTERM would otherwise
        # find mailroute still flushing into the backend.
        backend_session_end(imap_backend, mailroute, ray, timeout=30)
        released = time.monotonic() - reset_at
        print(f"backend session ended {released:.1f}s after the client's reset")


def ends_within(c, timeout):
    """True when the connection ends (EOF or reset) within timeout; what
    arrives meanwhile is read and dropped."""
    c.sock.settimeout(timeout)
    try:
        while c.sock.recv(1 << 20):
            pass
        return True
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


def test_sigterm_with_a_client_that_does_not_read(start_imap, imap_backend, addr):
    """SIGTERM closes relayed sessions at once (login_sessions_kill): a
    relayed client that reads nothing, with replies queued for it, does not
    hold up the exit. mailrouted exits 0 within 5 s and the client sees
    the connection end."""
    ted = new_user(imap_backend, addr, "ted")
    imap_backend.append(ted, PASSWORD, big_message(f"ted-{time.monotonic_ns()}"))
    mailroute = start_imap([ted], imap_backend)
    with hog_login(mailroute.imap_port, ted) as c:
        c.send("".join(f"f{i} FETCH 1 (BODY.PEEK[])\r\n" for i in range(8)))
        time.sleep(1)  # the replies fill every queue on the way
        mailroute.exit_expected = True
        stopped_at = time.monotonic()
        mailroute.signal(signal.SIGTERM)
        status = mailroute.proc.wait_exit(30)
        took = time.monotonic() - stopped_at
        print(f"mailrouted exited with {status} {took:.1f}s after SIGTERM")
        assert ends_within(c, 10), "the client's connection was left open"
    assert status == 0, mailroute.stderr()
    assert took < 5, f"mailrouted took {took:.1f}s to exit"


# --- 3. STARTTLS command injection -----------------------------------------------

def test_commands_injected_behind_starttls_are_not_run(start_imap, imap_backend, tls_certs,
                                                       addr):
    """`a STARTTLS` and `b LOGIN ...` in one packet: b is never answered
    (not in plaintext, which would break the handshake, nor inside TLS)
    and never reaches the backend; mailroute logs the discarded bytes.
    Over TLS, only what was sent over TLS counts: a proper login works."""
    kim = new_user(imap_backend, addr, "kim")
    mailroute = start_imap([kim], imap_backend, tls_cert=tls_certs.router)
    injected = f"b LOGIN {kim} {PASSWORD}\r\n".encode()
    with RawImap(mailroute.imap_port) as c:
        assert c.greeting() == GREETING.replace(" LITERAL+ ", " LITERAL+ STARTTLS ")
        c.send(b"a STARTTLS\r\n" + injected)
        assert c.read_line() == "a OK Begin TLS negotiation now."
        assert c.buf == b"", f"plaintext after the STARTTLS reply: {c.buf!r}"
        context = ssl.create_default_context(cafile=tls_certs.ca.cert)
        c.sock = context.wrap_socket(c.sock, server_hostname="router.test")
        caps = c.command("c", "CAPABILITY")
        assert caps == [
            "* CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ "
            "AUTH=PLAIN AUTH=LOGIN",
            "c OK Pre-login capabilities listed, post-login capabilities have more."], caps
        # Still not logged in: a post-login command is refused by mailroute.
        assert c.command("d", "SELECT INBOX") == [
            "d BAD Error in IMAP command received by server."]
        assert imap_backend.login_lines(kim) == []
        assert_logged_in(tagged(c.command("e", f"LOGIN {kim} {PASSWORD}")), tag="e")
        select = c.command("f", "SELECT INBOX")
        assert select[-1].startswith("f OK [READ-WRITE] Select completed"), select
        assert c.command("g", "LOGOUT")[-1].startswith("g OK Logout completed")
    [line] = imap_backend.wait_login_lines(kim)
    assert "rip=127.0.0.1," in line, line
    assert mailroute.log_lines(f"{len(injected)} bytes sent after STARTTLS were discarded"), \
        mailroute.stderr()
    assert len(mailroute.log_lines(f"user={kim} rip=127.0.0.1 proxied to")) == 1
