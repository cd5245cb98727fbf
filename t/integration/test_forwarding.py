"""What mailroute tells the backends: XCLIENT with the original client's
data (only what the backend advertises, never with proxy_not_trusted), the
TTL, a Received header, the client's MAIL parameters, destuser with ORCPT,
forward_* fields as XRCPTFORWARD (DESIGN.md §5)."""

import re

from harness.checks import assert_saved
from harness.lmtp_client import RawLmtp, dot_stuff, send_message
from harness.maildir import make_message, new_marker
from harness.procs import wait_until

SENDER = "sender@example.org"
CLIENT_IP = "127.0.0.5"  # the test client's source address; mailroute's is 127.0.0.1


def xclient_lines(fake):
    return [c for c in fake.commands() if c.upper().startswith("XCLIENT ")]


def xclient_attributes(line):
    return dict(part.split("=", 1) for part in line.split()[1:])


def test_dovecot_backend_sees_the_client_address(start_mailroute, backend_a, addr):
    alice = addr("alice")
    mailroute = start_mailroute({alice: f"proxy host=127.0.0.1 port={backend_a.port}"})
    marker = new_marker()
    result = send_message(mailroute.port, SENDER, [alice], make_message(marker),
                          source_ip=CLIENT_IP)
    assert_saved(result.data[alice], alice)
    # Dovecot's log prefix (see harness/dovecot.py) shows rip=, the client
    # address after XCLIENT; without XCLIENT it would be 127.0.0.1.
    def saved_lines():  # Dovecot's log process writes a moment after the 250
        return [line for line in backend_a.log().splitlines()
                if f"({alice})" in line and "saved mail to" in line]
    saved = wait_until(saved_lines, timeout=5, what="Dovecot's log line")
    assert len(saved) == 1, saved
    assert f"rip={CLIENT_IP}:" in saved[0], saved[0]


def test_xclient_carries_client_data_and_ttl(start_mailroute, fake_backend, addr):
    alice = addr("alice")
    fake = fake_backend()
    mailroute = start_mailroute({alice: f"proxy host=127.0.0.1 port={fake.port}"})
    result = send_message(mailroute.port, SENDER, [alice], make_message(new_marker()),
                          source_ip=CLIENT_IP)
    assert_saved(result.data[alice], alice)
    lines = xclient_lines(fake)
    assert len(lines) >= 1, fake.commands()
    attributes = {}
    for line in lines:
        attributes.update(xclient_attributes(line))
    assert attributes.get("ADDR") == CLIENT_IP, attributes
    assert attributes.get("HELO") == "client.test", attributes
    assert attributes.get("TTL") == "4", "TTL starts at 5, each hop sends TTL-1"
    assert re.fullmatch(r"\d+", attributes.get("PORT", "")), attributes
    assert attributes.get("PROTO", "").upper() == "LMTP", attributes
    assert "SESSION" in attributes
    session = fake.sessions[0]
    first_xclient = next(i for i, c in enumerate(session) if c.upper().startswith("XCLIENT"))
    assert session[0].upper().startswith("LHLO ")
    assert session[first_xclient + 1].upper().startswith("LHLO "), \
        "LHLO is sent again after XCLIENT"


def test_xclient_from_the_client_is_passed_on(start_mailroute, fake_backend, addr):
    alice = addr("alice")
    fake = fake_backend()
    mailroute = start_mailroute({alice: f"proxy host=127.0.0.1 port={fake.port}"})
    with RawLmtp(mailroute.port) as conn:
        assert conn.read_reply().code == 220
        assert conn.command("LHLO postfix.test").code == 250
        assert conn.command("XCLIENT ADDR=192.0.2.7 PORT=4711 HELO=mx.example.net "
                            "TTL=3").code == 220
        assert conn.command("LHLO postfix.test").code == 250
        assert conn.command(f"MAIL FROM:<{SENDER}>").code == 250
        assert conn.command(f"RCPT TO:<{alice}>").code == 250
        assert conn.command("DATA").code == 354
        conn.send(dot_stuff(make_message(new_marker())))
        reply = conn.read_reply()
        assert_saved((reply.code, reply.text), alice)
    attributes = {}
    for line in xclient_lines(fake):
        attributes.update(xclient_attributes(line))
    assert (attributes.get("ADDR"), attributes.get("PORT"), attributes.get("HELO"),
            attributes.get("TTL")) == ("192.0.2.7", "4711", "mx.example.net", "2"), attributes


def test_xclient_only_with_advertised_attributes(start_mailroute, fake_backend, addr):
    alice, bob = addr("alice"), addr("bob")
    addr_only = fake_backend(caps=["PIPELINING", "ENHANCEDSTATUSCODES", "XCLIENT ADDR"])
    no_xclient = fake_backend(caps=["PIPELINING", "ENHANCEDSTATUSCODES"])
    mailroute = start_mailroute({
        alice: f"proxy host=127.0.0.1 port={addr_only.port}",
        bob: f"proxy host=127.0.0.1 port={no_xclient.port}",
    })
    result = send_message(mailroute.port, SENDER, [alice, bob], make_message(new_marker()),
                          source_ip=CLIENT_IP)
    assert_saved(result.data[alice], alice)
    assert_saved(result.data[bob], bob)
    assert [xclient_attributes(x) for x in xclient_lines(addr_only)] == [{"ADDR": CLIENT_IP}]
    assert xclient_lines(no_xclient) == []


def test_no_xclient_with_proxy_not_trusted(start_mailroute, fake_backend, addr):
    alice = addr("alice")
    fake = fake_backend()
    mailroute = start_mailroute({
        alice: f"proxy host=127.0.0.1 port={fake.port} proxy_not_trusted"})
    result = send_message(mailroute.port, SENDER, [alice], make_message(new_marker()))
    assert_saved(result.data[alice], alice)
    assert xclient_lines(fake) == []


def test_received_header_and_mail_parameters(start_mailroute, fake_backend, addr):
    alice = addr("alice")
    fake = fake_backend()
    mailroute = start_mailroute({alice: f"proxy host=127.0.0.1 port={fake.port}"})
    marker = new_marker()
    result = send_message(mailroute.port, SENDER, [alice], make_message(marker),
                          mail_options=["BODY=8BITMIME"], source_ip=CLIENT_IP)
    assert_saved(result.data[alice], alice)
    [message] = fake.messages
    assert message.sender == SENDER
    assert "BODY=8BITMIME" in message.mail_line.upper().split(), message.mail_line
    head = message.data.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("Received: "), head[:200]
    received = head.split("\r\nX-Test-Id:", 1)[0]
    assert "client.test" in received and CLIENT_IP in received, received
    assert "by router.test" in received and "LMTP" in received, received
    assert message.data.endswith(make_message(marker)), "the message follows unchanged"


def test_destuser_rewrites_the_recipient_with_orcpt(start_mailroute, fake_backend, addr):
    alias, real = addr("alias"), addr("real")
    fake = fake_backend()
    mailroute = start_mailroute({
        alias: f"proxy host=127.0.0.1 port={fake.port} destuser={real}"})
    result = send_message(mailroute.port, SENDER, [alias], make_message(new_marker()))
    assert_saved(result.data[alias], alias)
    [message] = fake.messages
    assert message.rcpts == [real]
    assert f"ORCPT=rfc822;{alias}" in message.rcpt_lines[0].split(), message.rcpt_lines


def test_forward_fields_become_xrcptforward(start_mailroute, fake_backend, addr):
    alice = addr("alice")
    fake = fake_backend()
    mailroute = start_mailroute({
        alice: f"proxy host=127.0.0.1 port={fake.port} forward_foo=bar"})
    result = send_message(mailroute.port, SENDER, [alice], make_message(new_marker()))
    assert_saved(result.data[alice], alice)
    [message] = fake.messages
    params = message.rcpt_lines[0].split()[2:]
    assert "XRCPTFORWARD=foo+3Dbar" in params, message.rcpt_lines


def test_backend_connection_is_reused(start_mailroute, fake_backend, addr):
    alice = addr("alice")
    fake = fake_backend()
    mailroute = start_mailroute({alice: f"proxy host=127.0.0.1 port={fake.port}"},
                                workers=1)
    for _ in range(3):
        result = send_message(mailroute.port, SENDER, [alice], make_message(new_marker()))
        assert_saved(result.data[alice], alice)
    wait_until(lambda: len(fake.messages) == 3, timeout=5, what="three messages")
    assert len(fake.sessions) == 1, f"{len(fake.sessions)} backend connections for 3 mails"
