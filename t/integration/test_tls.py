"""TLS end to end (issue 4), with real parts: Postfix speaking STARTTLS to
mailroute, Python TLS clients on mailroute's STARTTLS and implicit-TLS
listeners, Dovecot LMTP backends with TLS (implicit and STARTTLS), and
backends that fail TLS in every way a certificate or a peer can.

What must hold: a recipient whose backend cannot be reached over TLS as
asked gets `451 4.4.0 <rcpt> Proxy failed (connect, session=...)` while the
other recipients of the transaction are delivered, mailroute logs why, and
not one byte of the transaction reaches that backend in plaintext.

The certificates come from harness/certs.py (made once per run); the TLS
Dovecots are started once for this module."""

import os
import re
import shutil
import smtplib
import socket
import ssl
import threading
import time

import pytest

from harness.checks import assert_rcpt_ok, assert_saved
from harness.certs import Cert
from harness.dovecot import DovecotBackend
from harness.fake_backend import DEFAULT_CAPS, FakeBackend, _Server, _Session
from harness.lmtp_client import LmtpClient, RawLmtp
from harness.maildir import (as_stored, count_messages, digest, make_message, messages_with,
                             new_marker, sent_part)
from harness.mailroute import proxy_to
from harness.postfix import Postfix
from harness.procs import free_port, wait_until

SENDER = "sender@example.org"
LARGE_MESSAGE_SIZE = 8 * 1024 * 1024
PROXY_FAILED_CONNECT = re.compile(r"4\.4\.0 <(?P<rcpt>[^>]+)> Proxy failed "
                                  r"\(connect, session=\S+\)")


# --- backends ---------------------------------------------------------------

def _tls_dovecot(tmp_root, name, cert):
    return DovecotBackend(os.path.join(tmp_root, f"dovecot-{name}"), name=name,
                          tls=cert).start()


@pytest.fixture(scope="module")
def tls_backend(tmp_root, tls_certs):
    """Dovecot with a valid backend.test certificate from the test CA:
    STARTTLS on .port, implicit TLS on .tls_port."""
    backend = _tls_dovecot(tmp_root, "tls-good", tls_certs.backend)
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def other_ca_backend(tmp_root, tls_certs):
    """Dovecot whose backend.test certificate comes from an unrelated CA."""
    backend = _tls_dovecot(tmp_root, "tls-other-ca", tls_certs.backend_other_ca)
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def expired_backend(tmp_root, tls_certs):
    """Dovecot whose backend.test certificate expired in 2021."""
    backend = _tls_dovecot(tmp_root, "tls-expired", tls_certs.backend_expired)
    yield backend
    backend.stop()


class SilentServer:
    """Accepts TCP connections and never says a word; records every byte it
    receives, per connection."""

    def __init__(self):
        self.port = free_port()
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._lock = threading.Lock()
        self._received = []
        self._conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self._received.append(bytearray())
                self._conns.append(conn)
                data = self._received[-1]
            threading.Thread(target=self._read, args=(conn, data), daemon=True).start()

    def _read(self, conn, data):
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                data += chunk

    def received(self):
        with self._lock:
            return [bytes(d) for d in self._received]

    def stop(self):
        self._sock.close()
        with self._lock:
            for conn in self._conns:
                conn.close()


class _TlsServer(_Server):
    """The fake backend's server with implicit TLS on every connection."""

    def get_request(self):
        sock, peer = super().get_request()
        sock.settimeout(10)
        try:
            return self.fake.context.wrap_socket(sock, server_side=True), peer
        except (ssl.SSLError, OSError) as e:
            self.fake.handshake_errors.append(str(e))
            sock.close()
            raise


class _TlsSession(_Session):
    """A fake backend session that records each TLS handshake and can do
    STARTTLS (replying with the fake's starttls_reply, followed in the same
    write by its `injected` bytes)."""

    def setup(self):
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.fake._add_handshake(self.connection)

    def dispatch(self, verb, line):
        if verb != "STARTTLS":
            return super().dispatch(verb, line)
        reply = self.fake.starttls_reply
        self.wfile.write(reply.encode() + b"\r\n" + self.fake.injected)
        if not reply.startswith("220"):
            return True
        try:
            tls = self.fake.context.wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError) as e:
            self.fake.handshake_errors.append(str(e))
            return False
        self.connection = tls
        self.rfile = tls.makefile("rb")
        self.wfile = tls.makefile("wb", buffering=0)
        self.commands.append("<TLS>")  # what follows came encrypted
        self.fake._add_handshake(tls)
        return True


class TlsFakeBackend(FakeBackend):
    """FakeBackend with TLS: implicit, or STARTTLS (offered in its LHLO reply)
    with starttls=True. With client_ca it requires a client certificate from
    that CA. Records, per handshake, the client's certificate and whether
    the session was resumed."""

    def __init__(self, cert, client_ca=None, starttls=False,
                 starttls_reply="220 2.0.0 Ready to start TLS", injected=b"", **kwargs):
        if starttls:
            kwargs.setdefault("caps", DEFAULT_CAPS + ["STARTTLS"])
        super().__init__(**kwargs)
        self.starttls = starttls
        self.starttls_reply = starttls_reply
        self.injected = injected
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert.cert, cert.key)
        if client_ca:
            self.context.load_verify_locations(client_ca)
            self.context.verify_mode = ssl.CERT_REQUIRED
        self.handshakes = []  # (peer certificate dict, resumed)
        self.handshake_errors = []

    def _add_handshake(self, tls):
        with self._lock:
            self.handshakes.append((tls.getpeercert(), tls.session_reused))

    @property
    def peer_certs(self):
        with self._lock:
            return [cert for cert, _ in self.handshakes if cert]

    @property
    def resumed(self):
        """Per handshake so far: True when it resumed a session."""
        with self._lock:
            return [reused for _, reused in self.handshakes]

    def start(self):
        server_class = _Server if self.starttls else _TlsServer
        self._server = server_class(("127.0.0.1", self.port), _TlsSession)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self


# --- clients ----------------------------------------------------------------

def client_context(certs):
    """What a careful client does: the test CA, name and chain checked."""
    return ssl.create_default_context(cafile=certs.ca.cert)


class ImplicitTlsLmtp(LmtpClient):
    """LmtpClient over a TLS connection (mailroute's ssl = yes listener)."""

    def __init__(self, port, context, server_hostname="router.test", timeout=30):
        self.tls_context = context
        self.tls_hostname = server_hostname
        super().__init__("127.0.0.1", port, timeout=timeout)

    def _get_socket(self, host, port, timeout):
        sock = super()._get_socket(host, port, timeout)
        return self.tls_context.wrap_socket(sock, server_hostname=self.tls_hostname)

    def peer_cert_der(self):
        return self.sock.getpeercert(binary_form=True)


class TlsRaw(RawLmtp):
    """RawLmtp whose socket can be switched to TLS in the middle."""

    def start_tls(self, context, server_hostname="router.test"):
        self.file.close()
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)
        self.file = self.sock.makefile("rb")


def quit_quietly(client):
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()


def client_ca_config(certs):
    return f"ssl_client_ca_file = {certs.ca.cert}\n"


def big_body(size):
    """Numbered lines, so a lost or repeated TLS record changes the hash."""
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" * 15 + b"\r\n"
    return b"".join(b"%09d " % i + line for i in range(size // len(line) + 1))


def delivered(backend, rcpt, marker):
    return len(messages_with(backend.maildir(rcpt), marker))


def assert_proxy_failed_connect(reply, rcpt):
    code, text = reply
    match = PROXY_FAILED_CONNECT.fullmatch(text)
    assert code == 451 and match and match.group("rcpt") == rcpt, \
        f"{rcpt}: expected 451 4.4.0 <{rcpt}> Proxy failed (connect, session=...), " \
        f"got {code} {text}"


def wait_log(mailroute, *needles, timeout=5):
    return wait_until(lambda: mailroute.log_lines(*needles), timeout=timeout,
                      what=f"mailrouted to log a line with {needles}")


# --- 1. Postfix -> mailroute over STARTTLS -----------------------------------

@pytest.mark.postfix
def test_postfix_delivers_through_mailroute_over_starttls(
        start_mailroute, tls_certs, tls_backend, workdir, addr):
    alice = addr("alice")
    mailroute = start_mailroute({alice: proxy_to(tls_backend.port, "starttls=yes")},
                                tls_cert=tls_certs.router,
                                extra_config=client_ca_config(tls_certs))
    postfix = Postfix(os.path.join(workdir, "postfix"),
                      f"lmtp:inet:127.0.0.1:{mailroute.port}",
                      lmtp_tls_ca=tls_certs.ca.cert).start()
    try:
        marker = new_marker()
        client = smtplib.SMTP("127.0.0.1", postfix.port)
        try:
            assert client.sendmail(SENDER, [alice], make_message(marker)) == {}
        finally:
            client.quit()
        postfix.wait_status(alice, "sent")
        log = postfix.log()
    finally:
        postfix.stop()
    # encrypt does not check the name, but the chain verified against the CA.
    established = re.findall(r"(\w+) TLS connection established to "
                             + re.escape(f"127.0.0.1[127.0.0.1]:{mailroute.port}")
                             + r": (TLSv1\.[23]) with cipher", log)
    assert established and all(trust == "Trusted" for trust, _ in established), log
    assert re.search(r"to=<" + re.escape(alice) + r">, relay=127\.0\.0\.1\[127\.0\.0\.1\]:"
                     + str(mailroute.port) + r",.* status=sent \(250 2\.0\.0 <"
                     + re.escape(alice) + r"> \S+ Saved\)", log), log
    assert delivered(tls_backend, alice, marker) == 1


# --- 2. implicit TLS on mailroute's listener ---------------------------------

def test_implicit_tls_listener_delivers(start_mailroute, tls_certs, backend_a, addr):
    alice = addr("alice")
    mailroute = start_mailroute({alice: proxy_to(backend_a.port)},
                                tls_cert=tls_certs.router, implicit_tls=True)
    marker = new_marker()
    client = ImplicitTlsLmtp(mailroute.tls_port, client_context(tls_certs))
    try:
        assert client.peer_cert_der() == tls_certs.router.der()
        code, _ = client.ehlo("client.test")
        assert code == 250
        assert not client.has_extn("starttls"), "STARTTLS offered inside TLS"
        result = client.transaction(SENDER, [alice], make_message(marker))
    finally:
        quit_quietly(client)
    assert result.mail == (250, "2.1.0 OK")
    assert_rcpt_ok(result.rcpt[alice], alice)
    assert_saved(result.data[alice], alice)
    assert delivered(backend_a, alice, marker) == 1


def test_plain_listener_offers_starttls_and_delivers_after_it(
        start_mailroute, tls_certs, addr):
    alice = addr("alice")
    mailroute = start_mailroute({alice: ""}, tls_cert=tls_certs.router)
    marker = new_marker()
    client = LmtpClient("127.0.0.1", mailroute.port)
    try:
        client.ehlo("client.test")
        assert client.has_extn("starttls")
        code, text = client.starttls(context=client_context(tls_certs))
        assert (code, text) == (220, b"2.0.0 Ready to start TLS")
        assert client.sock.getpeercert(binary_form=True) == tls_certs.router.der()
        client.ehlo("client.test")
        assert not client.has_extn("starttls")
        result = client.transaction(SENDER, [alice], make_message(marker))
    finally:
        quit_quietly(client)
    assert_saved(result.data[alice], alice)
    assert len(messages_with(mailroute.local_maildir(alice), marker)) == 1


def test_plaintext_on_the_implicit_tls_listener_is_dropped(start_mailroute, tls_certs):
    mailroute = start_mailroute({}, tls_cert=tls_certs.router, implicit_tls=True)
    raw = socket.create_connection(("127.0.0.1", mailroute.tls_port), timeout=10)
    try:
        raw.sendall(b"LHLO client.test\r\nMAIL FROM:<x@example.org>\r\n")
        answer = b""
        while True:
            chunk = raw.recv(4096)
            if not chunk:
                break
            answer += chunk
    finally:
        raw.close()
    # Closed without a plaintext word (a TLS alert record at most).
    assert answer == b"" or answer[:1] == b"\x15", answer
    wait_log(mailroute, "TLS handshake failed")
    client = ImplicitTlsLmtp(mailroute.tls_port, client_context(tls_certs))
    try:
        assert client.noop() == (250, b"2.0.0 OK")
    finally:
        quit_quietly(client)


def test_stalled_handshakes_do_not_hold_up_other_clients(start_mailroute, tls_certs):
    """Clients that stop in the middle of their ClientHello (more of them
    than there are workers) leave the other clients' handshakes alone."""
    mailroute = start_mailroute({}, tls_cert=tls_certs.router, implicit_tls=True)
    stalled = []
    try:
        for _ in range(6):
            sock = socket.create_connection(("127.0.0.1", mailroute.tls_port), timeout=10)
            sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a record's start
            stalled.append(sock)
        started = time.monotonic()
        client = ImplicitTlsLmtp(mailroute.tls_port, client_context(tls_certs), timeout=5)
        try:
            assert client.noop() == (250, b"2.0.0 OK")
        finally:
            quit_quietly(client)
        assert time.monotonic() - started < 5  # a blocked worker would take 30 s
    finally:
        for sock in stalled:
            sock.close()


def test_sni_picks_the_local_name_certificate(start_mailroute, tls_certs):
    mailroute = start_mailroute({}, tls_cert=tls_certs.router, implicit_tls=True,
                                extra_config=f"""\
local_name *.sni.test {{
  ssl_cert = <{tls_certs.sni.cert}
  ssl_key = <{tls_certs.sni.key}
}}
""")
    context = client_context(tls_certs)
    context.check_hostname = False  # sni.test itself is not under *.sni.test

    def served(name):
        client = ImplicitTlsLmtp(mailroute.tls_port, context, server_hostname=name)
        try:
            return client.peer_cert_der()
        finally:
            quit_quietly(client)
    assert served("mail.sni.test") == tls_certs.sni.der()
    assert served("a.b.sni.test") == tls_certs.sni.der()
    assert served("sni.test") == tls_certs.router.der()
    assert served("router.test") == tls_certs.router.der()


def test_client_certificates_are_verified_when_asked_for(start_mailroute, tls_certs, addr):
    alice = addr("alice")
    mailroute = start_mailroute({alice: ""}, tls_cert=tls_certs.router, implicit_tls=True,
                                extra_config=f"ssl_verify_client_cert = yes\n"
                                             f"ssl_ca = <{tls_certs.ca.cert}\n")

    def context_with(cert):
        context = client_context(tls_certs)
        if cert is not None:
            context.load_cert_chain(cert.cert, cert.key)
        return context

    for cert in (tls_certs.client, None):  # a good certificate, or none at all
        marker = new_marker()
        client = ImplicitTlsLmtp(mailroute.tls_port, context_with(cert))
        try:
            result = client.transaction(SENDER, [alice], make_message(marker))
        finally:
            quit_quietly(client)
        assert_saved(result.data[alice], alice)

    # TLS 1.3: the refusal arrives as an alert on the client's first read.
    with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
        client = ImplicitTlsLmtp(mailroute.tls_port, context_with(tls_certs.client_other_ca))
        try:
            client.noop()
        finally:
            client.close()
    wait_log(mailroute, "TLS handshake failed: client certificate verification failed: "
                        "the certificate is not issued by a trusted CA")
    assert count_messages(mailroute.local_maildir(alice)) == 2


# --- 3. TLS towards Dovecot backends -----------------------------------------

def test_tls_to_dovecot_backends_delivers(start_mailroute, tls_certs, tls_backend,
                                          other_ca_backend, addr):
    good, other = tls_backend, other_ca_backend
    users = {
        # implicit TLS, name from hostname= because host is an IP
        addr("implicit-hostname"):
            f"proxy host=127.0.0.1 hostname=backend.test port={good.tls_port} ssl=yes",
        # implicit TLS, host is the name, hostip says where to connect
        addr("implicit-hostip"):
            f"proxy host=backend.test hostip=127.0.0.1 port={good.tls_port} ssl=yes",
        # STARTTLS, the IP itself checked against the certificate's IP entry
        addr("starttls-ip"): f"proxy host=127.0.0.1 port={good.port} starttls=yes",
        addr("starttls-name"):
            f"proxy host=backend.test hostip=127.0.0.1 port={good.port} starttls=yes",
        # no verification: a certificate from a CA we do not trust is fine
        addr("any-cert"): f"proxy host=127.0.0.1 port={other.tls_port} ssl=any-cert",
        addr("starttls-any-cert"): f"proxy host=127.0.0.1 port={other.port} starttls=any-cert",
    }
    backend_of = {rcpt: (other if "any-cert" in rcpt else good) for rcpt in users}
    mailroute = start_mailroute(users, extra_config=client_ca_config(tls_certs))
    marker = new_marker()
    client = LmtpClient("127.0.0.1", mailroute.port)
    try:
        result = client.transaction(SENDER, list(users), make_message(marker))
    finally:
        quit_quietly(client)
    for rcpt in users:
        assert_rcpt_ok(result.rcpt[rcpt], rcpt)
        assert_saved(result.data[rcpt], rcpt)
        [stored] = messages_with(backend_of[rcpt].maildir(rcpt), marker)
        assert received_protocol(stored) == "LMTPS", stored.decode(errors="replace")
    assert not mailroute.log_lines("TLS with"), mailroute.stderr()


def test_starttls_to_dovecot_is_really_encrypted(start_mailroute, tls_certs, tls_backend,
                                                 addr):
    """Dovecot says in its Received header how the message came in: with
    STARTTLS it is LMTPS (a plaintext hop would say LMTP)."""
    alice, bob = addr("alice"), addr("bob")
    mailroute = start_mailroute({
        alice: f"proxy host=127.0.0.1 port={tls_backend.port} starttls=yes",
        bob: f"proxy host=127.0.0.1 port={tls_backend.port}",
    }, extra_config=client_ca_config(tls_certs))
    marker = new_marker()
    client = LmtpClient("127.0.0.1", mailroute.port)
    try:
        result = client.transaction(SENDER, [alice, bob], make_message(marker))
    finally:
        quit_quietly(client)
    assert_saved(result.data[alice], alice)
    assert_saved(result.data[bob], bob)
    [with_tls] = messages_with(tls_backend.maildir(alice), marker)
    [without] = messages_with(tls_backend.maildir(bob), marker)
    assert received_protocol(with_tls) == "LMTPS", with_tls.decode(errors="replace")
    assert received_protocol(without) == "LMTP", without.decode(errors="replace")


def received_protocol(message):
    """The "with PROTO" word of the first Received header (the backend's)."""
    head = message.split(b"\n\n", 1)[0].decode(errors="replace")
    match = re.search(r"^Received:.*?\sby \S+ with (\w+)", head, re.M | re.S)
    assert match, head
    return match.group(1)


def test_large_message_over_tls_on_both_sides_arrives_intact(start_mailroute, tls_certs,
                                                             tls_backend, addr):
    alice = addr("alice")
    mailroute = start_mailroute(
        {alice: f"proxy host=backend.test hostip=127.0.0.1 port={tls_backend.tls_port} "
                "ssl=yes"},
        tls_cert=tls_certs.router, implicit_tls=True,
        extra_config=client_ca_config(tls_certs))
    marker = new_marker()
    message = make_message(marker, big_body(LARGE_MESSAGE_SIZE))
    client = ImplicitTlsLmtp(mailroute.tls_port, client_context(tls_certs), timeout=120)
    try:
        result = client.transaction(SENDER, [alice], message)
    finally:
        quit_quietly(client)
    assert_saved(result.data[alice], alice)
    [stored] = messages_with(tls_backend.maildir(alice), marker)
    assert digest(sent_part(stored, marker)) == digest(as_stored(message))


# --- 4. TLS failures towards backends ----------------------------------------

def test_tls_failures_fail_only_their_recipients(start_mailroute, tls_certs, tls_backend,
                                                 other_ca_backend, expired_backend,
                                                 backend_a, backend_b, fake_backend, addr):
    no_starttls = fake_backend()  # its capabilities lack STARTTLS
    users = {
        addr("ok-before"): proxy_to(backend_a.port),
        addr("wrong-ca"): f"proxy host=127.0.0.1 hostname=backend.test "
                          f"port={other_ca_backend.tls_port} ssl=yes",
        addr("expired"): f"proxy host=backend.test hostip=127.0.0.1 "
                         f"port={expired_backend.tls_port} ssl=yes",
        addr("mismatch"): f"proxy host=127.0.0.1 hostname=wrong.test "
                          f"port={tls_backend.tls_port} ssl=yes",
        addr("starttls-wrong-ca"): f"proxy host=127.0.0.1 port={other_ca_backend.port} "
                                   "starttls=yes",
        addr("no-starttls-fake"): proxy_to(no_starttls.port, "starttls=yes"),
        addr("no-starttls-dovecot"): proxy_to(backend_b.port, "starttls=yes"),
        addr("ok-after"): proxy_to(backend_b.port),
    }
    reasons = {
        "wrong-ca": "TLS with backend.test failed: certificate verification failed: "
                    "the certificate is not issued by a trusted CA",
        "expired": "TLS with backend.test failed: certificate verification failed: "
                   "the certificate is expired",
        "mismatch": "TLS with wrong.test failed: host name mismatch: wrong.test",
        "starttls-wrong-ca": "TLS with 127.0.0.1 failed: certificate verification failed: "
                             "the certificate is not issued by a trusted CA",
        "no-starttls-fake": "STARTTLS not supported by the backend",
        "no-starttls-dovecot": "STARTTLS not supported by the backend",
    }
    mailroute = start_mailroute(users, extra_config=client_ca_config(tls_certs))
    marker = new_marker()
    client = LmtpClient("127.0.0.1", mailroute.port)
    try:
        result = client.transaction(SENDER, list(users), make_message(marker))
    finally:
        quit_quietly(client)

    ok = [r for r in users if r.startswith("ok-")]
    failing = [r for r in users if not r.startswith("ok-")]
    for rcpt in ok:
        assert_rcpt_ok(result.rcpt[rcpt], rcpt)
        assert_saved(result.data[rcpt], rcpt)
    assert delivered(backend_a, ok[0], marker) == 1
    assert delivered(backend_b, ok[1], marker) == 1
    for rcpt in failing:
        assert_proxy_failed_connect(result.rcpt[rcpt], rcpt)
        assert rcpt not in result.data
        reason = reasons[rcpt.split(".", 1)[0]]
        lines = mailroute.log_lines(reason)
        assert lines, f"{rcpt}: no log line with {reason!r}:\n{mailroute.stderr()}"
    for backend in (tls_backend, other_ca_backend, expired_backend, backend_b):
        for rcpt in failing:
            assert not os.path.exists(backend.maildir(rcpt)), f"{rcpt} reached {backend.name}"
    # Byte for byte: the backend without STARTTLS heard LHLO, nothing of the
    # transaction (at most a QUIT).
    for commands in no_starttls.sessions:
        assert commands[:1] == ["LHLO router.test"], commands
        assert set(commands[1:]) <= {"QUIT"}, commands
    assert no_starttls.messages == []


def test_certificate_failures_are_not_retried(start_mailroute, tls_certs, other_ca_backend,
                                              addr):
    """One failed handshake per recipient, not Dovecot 2.3's three reconnects."""
    rcpt = addr("wrong-ca")
    mailroute = start_mailroute({rcpt: f"proxy host=127.0.0.1 hostname=backend.test "
                                       f"port={other_ca_backend.tls_port} ssl=yes"},
                                extra_config=client_ca_config(tls_certs))
    client = LmtpClient("127.0.0.1", mailroute.port)
    try:
        client.ehlo("client.test")
        assert client.mail(SENDER)[0] == 250
        code, text = client.rcpt(rcpt)
        assert_proxy_failed_connect((code, text.decode()), rcpt)
    finally:
        quit_quietly(client)
    assert len(mailroute.log_lines("TLS with backend.test failed")) == 1, mailroute.stderr()


def test_tls_handshake_that_never_completes_times_out(start_mailroute, tls_certs, backend_a,
                                                      addr):
    silent = SilentServer()
    try:
        stuck, ok = addr("stuck"), addr("ok")
        mailroute = start_mailroute({
            stuck: f"proxy host=127.0.0.1 hostname=backend.test port={silent.port} ssl=yes",
            ok: proxy_to(backend_a.port),
        }, extra_config=client_ca_config(tls_certs) + "lmtp_proxy_connect_timeout = 2s\n")
        marker = new_marker()
        client = LmtpClient("127.0.0.1", mailroute.port)
        try:
            client.ehlo("client.test")
            assert client.mail(SENDER)[0] == 250
            started = time.monotonic()
            code, text = client.rcpt(stuck)
            elapsed = time.monotonic() - started
            assert_proxy_failed_connect((code, text.decode()), stuck)
            assert 1.8 <= elapsed < 5, f"RCPT answered after {elapsed:.1f}s"
            code, text = client.rcpt(ok)
            assert_rcpt_ok((code, text.decode()), ok)
            [(rcpt, code, text)] = client.lmtp_data(make_message(marker))
            assert_saved((code, text), ok)
        finally:
            quit_quietly(client)
        assert mailroute.log_lines("TLS with backend.test failed: handshake timed out"), \
            mailroute.stderr()
        # What reached the silent peer is a TLS ClientHello, nothing in clear.
        received = silent.received()
        assert received, "mailroute never connected"
        for data in received:
            assert data[:1] == b"\x16" and data[1:2] == b"\x03", data[:64]
            assert b"MAIL FROM" not in data and SENDER.encode() not in data
    finally:
        silent.stop()
    assert delivered(backend_a, ok, marker) == 1


def test_plaintext_injected_after_a_backends_starttls_reply_is_ignored(
        start_mailroute, tls_certs, addr):
    """A man in the middle appends a fake LHLO reply to the backend's 220 in
    plaintext. It must not be taken for the reply to the LHLO sent after
    TLS: the real reply (with XCLIENT) is, so XCLIENT is sent."""
    fake = TlsFakeBackend(tls_certs.backend, starttls=True,
                          injected=b"250 injected.test\r\n").start()
    try:
        alice = addr("alice")
        mailroute = start_mailroute({alice: proxy_to(fake.port, "starttls=yes")},
                                    extra_config=client_ca_config(tls_certs))
        marker = new_marker()
        client = LmtpClient("127.0.0.1", mailroute.port)
        try:
            result = client.transaction(SENDER, [alice], make_message(marker))
        finally:
            quit_quietly(client)
        assert_saved(result.data[alice], alice)
        [session] = fake.sessions
        assert session[:3] == ["LHLO router.test", "STARTTLS", "<TLS>"], session
        verbs = [c.split(" ", 1)[0] for c in session[3:]]
        assert verbs[:4] == ["LHLO", "XCLIENT", "LHLO", "MAIL"], session
        assert [m.rcpts for m in fake.messages] == [[alice]]
    finally:
        fake.stop()


def test_backend_refusing_starttls_fails_its_recipient(start_mailroute, tls_certs, addr):
    fake = TlsFakeBackend(tls_certs.backend, starttls=True,
                          starttls_reply="454 4.7.0 TLS not available due to temporary reason"
                          ).start()
    try:
        alice = addr("alice")
        mailroute = start_mailroute({alice: proxy_to(fake.port, "starttls=yes")},
                                    extra_config=client_ca_config(tls_certs))
        client = LmtpClient("127.0.0.1", mailroute.port)
        try:
            client.ehlo("client.test")
            assert client.mail(SENDER)[0] == 250
            code, text = client.rcpt(alice)
            assert_proxy_failed_connect((code, text.decode()), alice)
        finally:
            quit_quietly(client)
        assert mailroute.log_lines("STARTTLS refused: 454 ", "TLS not available"), \
            mailroute.stderr()
        for session in fake.sessions:
            assert set(session) <= {"LHLO router.test", "STARTTLS", "QUIT"}, session
    finally:
        fake.stop()


def test_backend_sessions_are_resumed_but_never_for_another_check(
        start_mailroute, tls_certs, addr):
    """Session resumption towards a backend: a later connection resumes, but
    a session made without verification (any-cert) is not resumed for a
    verified connection, nor one verified for backend.test for a connection
    that must match another name."""
    fake = TlsFakeBackend(tls_certs.backend).start()
    try:
        unverified, verified, other_name = addr("any"), addr("verified"), addr("other")
        mailroute = start_mailroute({
            unverified: proxy_to(fake.port, "hostname=backend.test ssl=any-cert"),
            verified: proxy_to(fake.port, "hostname=backend.test ssl=yes"),
            other_name: proxy_to(fake.port, "hostname=wrong.test ssl=yes"),
        }, extra_config=client_ca_config(tls_certs) + "lmtp_backend_max_idle = 0\n")

        def deliver(rcpt):
            client = LmtpClient("127.0.0.1", mailroute.port)
            try:
                return client.transaction(SENDER, [rcpt], make_message(new_marker()))
            finally:
                quit_quietly(client)

        assert_saved(deliver(unverified).data[unverified], unverified)
        assert_saved(deliver(verified).data[verified], verified)
        assert_saved(deliver(verified).data[verified], verified)
        assert fake.resumed == [False, False, True], fake.resumed
        result = deliver(other_name)
        assert_proxy_failed_connect(result.rcpt[other_name], other_name)
        assert mailroute.log_lines("TLS with wrong.test failed: host name mismatch"), \
            mailroute.stderr()
        assert len(fake.messages) == 3
    finally:
        fake.stop()


# --- client certificate towards a backend -------------------------------------

def test_client_certificate_is_presented_to_backends(start_mailroute, tls_certs, addr):
    fake = TlsFakeBackend(tls_certs.backend, tls_certs.ca.cert).start()
    try:
        alice = addr("alice")
        mailroute = start_mailroute(
            {alice: proxy_to(fake.port, "hostname=backend.test ssl=yes")},
            extra_config=client_ca_config(tls_certs)
            + f"ssl_client_cert = <{tls_certs.client.cert}\n"
            + f"ssl_client_key = <{tls_certs.client.key}\n")
        marker = new_marker()
        client = LmtpClient("127.0.0.1", mailroute.port)
        try:
            result = client.transaction(SENDER, [alice], make_message(marker))
        finally:
            quit_quietly(client)
        assert_saved(result.data[alice], alice)
        assert fake.peer_certs, fake.handshake_errors
        subject = dict(item[0] for item in fake.peer_certs[0]["subject"])
        assert subject["commonName"] == "client.test"
        assert [m.rcpts for m in fake.messages] == [[alice]]
    finally:
        fake.stop()


def _without_client_certificate(start_mailroute, tls_certs, rcpt):
    """RCPT rcpt, routed to a backend that insists on a client certificate,
    from a mailroute that has none: returns (the RCPT reply, mailroute)."""
    fake = TlsFakeBackend(tls_certs.backend, tls_certs.ca.cert).start()
    try:
        mailroute = start_mailroute(
            {rcpt: proxy_to(fake.port, "hostname=backend.test ssl=yes")},
            extra_config=client_ca_config(tls_certs))
        client = LmtpClient("127.0.0.1", mailroute.port)
        try:
            client.ehlo("client.test")
            assert client.mail(SENDER)[0] == 250
            code, text = client.rcpt(rcpt)
        finally:
            quit_quietly(client)
        assert fake.messages == [] and fake.peer_certs == []
        assert not [c for s in fake.sessions for c in s if not c.startswith("LHLO")], \
            fake.sessions
    finally:
        fake.stop()
    return (code, text.decode()), mailroute


def test_backend_requiring_a_client_certificate_without_one_fails(
        start_mailroute, tls_certs, addr):
    alice = addr("alice")
    reply, _ = _without_client_certificate(start_mailroute, tls_certs, alice)
    assert_proxy_failed_connect(reply, alice)


def test_tls_alert_from_a_backend_is_logged_with_its_reason(start_mailroute, tls_certs, addr):
    # TLS 1.3: the backend's refusal comes as an alert after our side has
    # finished the handshake; the log must say what went wrong.
    _, mailroute = _without_client_certificate(start_mailroute, tls_certs, addr("alice"))
    assert mailroute.log_lines("TLS error: "), mailroute.stderr()


# --- 5. ssl = required --------------------------------------------------------

def test_ssl_required_refuses_mail_before_starttls(start_mailroute, tls_certs, addr):
    alice = addr("alice")
    mailroute = start_mailroute({alice: ""}, tls_cert=tls_certs.router, ssl="required")
    marker = new_marker()
    client = LmtpClient("127.0.0.1", mailroute.port)
    try:
        client.ehlo("client.test")
        assert client.has_extn("starttls")
        assert client.mail(SENDER) == (530, b"5.7.0 Must issue a STARTTLS command first")
        assert client.rcpt(alice) == (503, b"5.5.1 MAIL needed first")
        code, _ = client.starttls(context=client_context(tls_certs))
        assert code == 220
        client.ehlo("client.test")
        result = client.transaction(SENDER, [alice], make_message(marker))
    finally:
        quit_quietly(client)
    assert result.mail == (250, "2.1.0 OK")
    assert_saved(result.data[alice], alice)
    assert len(messages_with(mailroute.local_maildir(alice), marker)) == 1


def test_starttls_when_already_in_tls_or_without_tls(start_mailroute, tls_certs, addr):
    with_tls = start_mailroute({}, tls_cert=tls_certs.router, implicit_tls=True)
    client = ImplicitTlsLmtp(with_tls.tls_port, client_context(tls_certs))
    try:
        client.ehlo("client.test")
        assert client.docmd("STARTTLS") == (503, b"5.5.1 TLS already active")
        assert client.noop() == (250, b"2.0.0 OK")
    finally:
        quit_quietly(client)

    without = start_mailroute({}, tls_cert=tls_certs.router, ssl="no")
    client = LmtpClient("127.0.0.1", without.port)
    try:
        client.ehlo("client.test")
        assert not client.has_extn("starttls")
        assert client.docmd("STARTTLS") == (502, b"5.5.1 TLS not available")
        assert client.noop() == (250, b"2.0.0 OK")
    finally:
        quit_quietly(client)


# --- 6. STARTTLS command injection --------------------------------------------

def test_commands_pipelined_after_starttls_are_discarded(start_mailroute, tls_certs, addr):
    alice = addr("alice")
    mailroute = start_mailroute({alice: ""}, tls_cert=tls_certs.router)
    injected = b"MAIL FROM:<evil@x>\r\n"
    with TlsRaw(mailroute.port) as raw:
        assert raw.read_reply().code == 220
        assert raw.command("LHLO client.test").code == 250
        raw.send(b"STARTTLS\r\n" + injected)
        reply = raw.read_reply()
        assert (reply.code, reply.text) == (220, "2.0.0 Ready to start TLS")
        # A plaintext answer to the injected MAIL would break this handshake.
        raw.start_tls(client_context(tls_certs))
        lhlo = raw.command("LHLO client.test")
        assert lhlo.code == 250 and "STARTTLS" not in lhlo.lines
        noop = raw.command("NOOP")
        assert (noop.code, noop.text) == (250, "2.0.0 OK")
        rcpt = raw.command(f"RCPT TO:<{alice}>")
        assert (rcpt.code, rcpt.text) == (503, "5.5.1 MAIL needed first")
        raw.sock.settimeout(0.3)
        with pytest.raises(socket.timeout):
            raw.read_reply()  # nothing else was answered
    assert mailroute.log_lines(f"{len(injected)} bytes sent after STARTTLS were discarded"), \
        mailroute.stderr()
    assert not mailroute.log_lines("evil@x")


# --- 7. reload with a new certificate -----------------------------------------

def test_sighup_new_certificate_for_new_sessions_old_sessions_go_on(
        start_mailroute, tls_certs, workdir, addr):
    alice = addr("alice")
    cert_dir = os.path.join(workdir, "cert")
    os.makedirs(cert_dir)
    live = Cert(cert_dir, "live")
    shutil.copy(tls_certs.router.cert, live.cert)
    shutil.copy(tls_certs.router.key, live.key)
    mailroute = start_mailroute({alice: ""}, tls_cert=live, implicit_tls=True)
    context = client_context(tls_certs)

    before = ImplicitTlsLmtp(mailroute.tls_port, context)
    try:
        assert before.peer_cert_der() == tls_certs.router.der()
        before.ehlo("client.test")

        shutil.copy(tls_certs.router_new.cert, live.cert + ".new")
        shutil.copy(tls_certs.router_new.key, live.key + ".new")
        os.replace(live.key + ".new", live.key)
        os.replace(live.cert + ".new", live.cert)
        mailroute.reload()
        wait_log(mailroute, "reloading configuration")

        def new_cert_served():
            client = ImplicitTlsLmtp(mailroute.tls_port, context)
            try:
                return client.peer_cert_der() == tls_certs.router_new.der()
            finally:
                quit_quietly(client)
        wait_until(new_cert_served, timeout=5, what="the new certificate on new connections")

        starttls = LmtpClient("127.0.0.1", mailroute.port)
        try:
            starttls.starttls(context=context)
            assert starttls.sock.getpeercert(binary_form=True) == tls_certs.router_new.der()
        finally:
            quit_quietly(starttls)

        # The session from before the reload goes on, on its old certificate.
        assert before.noop() == (250, b"2.0.0 OK")
        assert before.peer_cert_der() == tls_certs.router.der()
        marker = new_marker()
        result = before.transaction(SENDER, [alice], make_message(marker))
        assert_saved(result.data[alice], alice)
    finally:
        quit_quietly(before)
    assert len(messages_with(mailroute.local_maildir(alice), marker)) == 1
    assert mailroute.alive()


def test_sighup_with_a_broken_certificate_keeps_the_old_one(start_mailroute, tls_certs,
                                                           workdir):
    cert_dir = os.path.join(workdir, "cert")
    os.makedirs(cert_dir)
    live = Cert(cert_dir, "live")
    shutil.copy(tls_certs.router.cert, live.cert)
    shutil.copy(tls_certs.router.key, live.key)
    mailroute = start_mailroute({}, tls_cert=live, implicit_tls=True)
    # A renewed certificate without its new key. (Not a corrupt PEM: GnuTLS
    # 3.7.9 itself leaks when loading one, which fails the ASan runs.)
    shutil.copy(tls_certs.router_new.cert, live.cert)
    mailroute.reload()
    wait_log(mailroute, "reload failed, keeping the old configuration: ssl_cert/ssl_key: "
                        "cannot load the certificate and key: "
                        "The certificate and the given key do not match.")
    client = ImplicitTlsLmtp(mailroute.tls_port, client_context(tls_certs))
    try:
        assert client.peer_cert_der() == tls_certs.router.der()
        assert client.noop() == (250, b"2.0.0 OK")
    finally:
        quit_quietly(client)
