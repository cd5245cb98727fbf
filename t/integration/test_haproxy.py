"""PROXY protocol on listeners (haproxy = yes): the header's client address
is the one mailroute trusts, logs and forwards (XCLIENT ADDR); only peers in
haproxy_trusted_networks may send one; a bad or missing header closes."""

import socket
import struct

from harness.lmtp_client import RawLmtp, dot_stuff
from harness.procs import free_port


def haproxy_listener(port, trusted="127.0.0.0/8"):
    return f"""
haproxy_trusted_networks = {trusted}
haproxy_timeout = 2s
service lmtp {{
  inet_listener behind_haproxy {{
    port = {port}
    haproxy = yes
  }}
}}
"""


def v2_header(src, dst, sport, dport):
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def deliver_through(port, header, alice):
    with RawLmtp(port) as conn:
        conn.send(header)
        assert conn.read_reply().code == 220
        assert conn.command("LHLO haproxy.test").code == 250
        assert conn.command("MAIL FROM:<sender@example.org>").code == 250
        assert conn.command(f"RCPT TO:<{alice}>").code == 250
        assert conn.command("DATA").code == 354
        conn.send(dot_stuff(b"Subject: haproxy\r\n\r\nhello\r\n") + b".\r\n")
        return conn.read_reply()


def assert_delivered(reply, rcpt):
    assert reply.code == 250, reply
    assert reply.lines[0].startswith(f"2.0.0 <{rcpt}> ") and reply.lines[0].endswith(" Saved"), \
        reply


def closed_without_greeting(conn):
    """The server closed: EOF, or a reset when our bytes were left unread."""
    try:
        return conn.at_eof()
    except ConnectionResetError:
        return True


def xclient_addr(fake):
    for command in fake.commands():
        if command.upper().startswith("XCLIENT "):
            attrs = dict(part.split("=", 1) for part in command.split()[1:])
            if "ADDR" in attrs:
                return attrs["ADDR"]
    return None


def test_v1_header_sets_the_client_address(start_mailroute, fake_backend, addr):
    alice = addr("alice")
    fake = fake_backend()
    port = free_port()
    start_mailroute({alice: f"proxy host=127.0.0.1 port={fake.port}"},
                    extra_config=haproxy_listener(port))
    reply = deliver_through(port, b"PROXY TCP4 192.0.2.7 127.0.0.1 4711 24\r\n", alice)
    assert_delivered(reply, alice)
    assert xclient_addr(fake) == "192.0.2.7"


def test_v2_header_sets_the_client_address(start_mailroute, fake_backend, addr):
    alice = addr("alice")
    fake = fake_backend()
    port = free_port()
    start_mailroute({alice: f"proxy host=127.0.0.1 port={fake.port}"},
                    extra_config=haproxy_listener(port))
    reply = deliver_through(port, v2_header("198.51.100.9", "127.0.0.1", 4242, 24), alice)
    assert_delivered(reply, alice)
    assert xclient_addr(fake) == "198.51.100.9"


def test_header_from_an_untrusted_peer_is_refused(start_mailroute, addr):
    port = free_port()
    mailroute = start_mailroute({addr("alice"): ""},
                                extra_config=haproxy_listener(port, trusted="10.0.0.0/8"))
    with RawLmtp(port) as conn:
        conn.send(b"PROXY TCP4 192.0.2.7 127.0.0.1 4711 24\r\n")
        assert closed_without_greeting(conn), "no greeting for an untrusted PROXY sender"
    assert mailroute.log_lines("haproxy: client not trusted (rip=127.0.0.1)")


def test_missing_or_bad_header_closes(start_mailroute, addr):
    port = free_port()
    mailroute = start_mailroute({addr("alice"): ""}, extra_config=haproxy_listener(port))
    with RawLmtp(port) as conn:
        conn.send(b"LHLO no-header.test\r\n")
        assert closed_without_greeting(conn)
    with RawLmtp(port) as conn:  # says nothing: haproxy_timeout ends it
        assert closed_without_greeting(conn)
    assert mailroute.log_lines("haproxy: ")


def test_plain_listener_still_works_without_a_header(start_mailroute, addr):
    alice = addr("alice")
    port = free_port()
    mailroute = start_mailroute({alice: ""}, extra_config=haproxy_listener(port))
    with RawLmtp(mailroute.port) as conn:
        assert conn.read_reply().code == 220
