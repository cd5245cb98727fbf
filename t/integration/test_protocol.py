"""The LMTP server side on the wire: greeting, LHLO extensions, pipelining,
BDAT, limits (line length, SIZE), sequence errors, the UNIX listener
(DESIGN.md §5)."""

import time

import pytest

from harness.checks import assert_reply, assert_rcpt_ok, assert_saved
from harness.lmtp_client import LmtpClient, RawLmtp, dot_stuff, send_message
from harness.maildir import (as_stored, count_messages, make_message, messages_with,
                             new_marker, sent_part)

SENDER = "sender@example.org"
EXTENSIONS = {"PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8", "SIZE",
              "CHUNKING"}


@pytest.fixture
def routed(start_mailroute, backend_a, backend_b, addr):
    """A mailroute with alice and carol on backend A, bob on backend B."""
    users = {"alice": addr("alice"), "bob": addr("bob"), "carol": addr("carol")}
    mailroute = start_mailroute({
        users["alice"]: f"proxy host=127.0.0.1 port={backend_a.port}",
        users["bob"]: f"proxy host=127.0.0.1 port={backend_b.port}",
        users["carol"]: f"proxy host=127.0.0.1 port={backend_a.port}",
    })
    mailroute.users = users
    return mailroute


def open_session(mailroute):
    conn = RawLmtp(mailroute.port)
    greeting = conn.read_reply()
    assert greeting.code == 220, greeting
    lhlo = conn.command("LHLO client.test")
    assert lhlo.code == 250, lhlo
    return conn, greeting, lhlo


def test_greeting_and_lhlo_extensions(routed):
    conn, greeting, lhlo = open_session(routed)
    with conn:
        assert greeting.text.split()[0] == "router.test", greeting
        assert lhlo.lines[0].split()[0] == "router.test", lhlo
        keywords = {line.split()[0].upper() for line in lhlo.lines[1:]}
        assert EXTENSIONS <= keywords, f"missing {EXTENSIONS - keywords}"
        assert conn.command("QUIT").code == 221
        assert conn.at_eof()


def test_pipelined_commands_are_answered_in_order(routed, backend_a, backend_b):
    alice, bob, carol = (routed.users[n] for n in ("alice", "bob", "carol"))
    marker = new_marker()
    message = make_message(marker)
    with RawLmtp(routed.port) as conn:
        assert conn.read_reply().code == 220
        conn.send(f"LHLO client.test\r\nMAIL FROM:<{SENDER}>\r\nRCPT TO:<{alice}>\r\n"
                  f"RCPT TO:<{bob}>\r\nRCPT TO:<{carol}>\r\nDATA\r\n")
        assert conn.read_reply().code == 250  # LHLO
        assert conn.read_reply().code == 250  # MAIL
        for rcpt in (alice, bob, carol):
            reply = conn.read_reply()
            assert_rcpt_ok((reply.code, reply.text), rcpt)
        assert conn.read_reply().code == 354
        conn.send(dot_stuff(message))
        for rcpt in (alice, bob, carol):
            reply = conn.read_reply()
            assert_saved((reply.code, reply.text), rcpt)
    for backend, user in ((backend_a, alice), (backend_b, bob), (backend_a, carol)):
        stored = messages_with(backend.maildir(user), marker)
        assert len(stored) == 1
        assert sent_part(stored[0], marker) == as_stored(message)


def test_pipelined_replies_keep_order_around_a_refusal(routed, addr):
    alice, bob = routed.users["alice"], routed.users["bob"]
    stranger = addr("stranger")
    with RawLmtp(routed.port) as conn:
        assert conn.read_reply().code == 220
        conn.send(f"LHLO client.test\r\nMAIL FROM:<{SENDER}>\r\nRCPT TO:<{alice}>\r\n"
                  f"RCPT TO:<{stranger}>\r\nRCPT TO:<{bob}>\r\nDATA\r\n")
        codes = [conn.read_reply() for _ in range(6)]
        assert [r.code for r in codes] == [250, 250, 250, 550, 250, 354], codes
        assert codes[3].text == f"5.1.1 <{stranger}> User doesn't exist"
        conn.send(dot_stuff(make_message(new_marker())))
        for rcpt in (alice, bob):
            reply = conn.read_reply()
            assert_saved((reply.code, reply.text), rcpt)


def awkward_message(marker):
    """A message whose body has a lone "." line and lines starting with dots:
    BDAT must carry them verbatim (no dot-stuffing)."""
    return make_message(marker, b"first line\r\n.\r\n..two dots\r\n.one dot\r\nlast\r\n")


def test_bdat_single_chunk_is_delivered(routed, backend_a, backend_b):
    alice, bob = routed.users["alice"], routed.users["bob"]
    marker = new_marker()
    message = awkward_message(marker)
    conn, _, _ = open_session(routed)
    with conn:
        assert conn.command(f"MAIL FROM:<{SENDER}>").code == 250
        assert conn.command(f"RCPT TO:<{alice}>").code == 250
        assert conn.command(f"RCPT TO:<{bob}>").code == 250
        conn.send(b"BDAT %d LAST\r\n" % len(message) + message)
        for rcpt in (alice, bob):
            reply = conn.read_reply()
            assert_saved((reply.code, reply.text), rcpt)
    for backend, user in ((backend_a, alice), (backend_b, bob)):
        stored = messages_with(backend.maildir(user), marker)
        assert len(stored) == 1
        assert sent_part(stored[0], marker) == as_stored(message)


def test_bdat_pipelined_chunks_are_joined(routed, backend_a):
    alice = routed.users["alice"]
    marker = new_marker()
    message = awkward_message(marker)
    first, rest = message[:37], message[37:]  # the cut is inside a header line
    conn, _, _ = open_session(routed)
    with conn:
        conn.send(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{alice}>\r\n".encode()
                  + b"BDAT %d\r\n" % len(first) + first
                  + b"BDAT %d LAST\r\n" % len(rest) + rest)
        assert conn.read_reply().code == 250  # MAIL
        assert conn.read_reply().code == 250  # RCPT
        chunk = conn.read_reply()
        assert chunk.code == 250, chunk
        reply = conn.read_reply()
        assert_saved((reply.code, reply.text), alice)
    stored = messages_with(backend_a.maildir(alice), marker)
    assert len(stored) == 1
    assert sent_part(stored[0], marker) == as_stored(message)


@pytest.mark.parametrize("length", [5000, 200_000])
def test_overlong_line_is_refused_and_the_session_continues(routed, backend_a, length):
    alice = routed.users["alice"]
    conn, _, _ = open_session(routed)
    with conn:
        reply = conn.command("NOOP " + "x" * length)
        assert_reply((reply.code, reply.text), 500, "5.5.6 ")
        assert conn.command("NOOP").code == 250
        assert conn.command(f"MAIL FROM:<{SENDER}>").code == 250
        reply = conn.command(f"RCPT TO:<{alice}" + "y" * length + ">")
        assert_reply((reply.code, reply.text), 500, "5.5.6 ")
        assert conn.command(f"RCPT TO:<{alice}>").code == 250
        assert conn.command("DATA").code == 354
        marker = new_marker()
        conn.send(dot_stuff(make_message(marker)))
        reply = conn.read_reply()
        assert_saved((reply.code, reply.text), alice)
    assert len(messages_with(backend_a.maildir(alice), marker)) == 1


@pytest.fixture
def size_limited(start_mailroute, backend_a, backend_b, addr):
    users = {"alice": addr("alice"), "bob": addr("bob")}
    mailroute = start_mailroute({
        users["alice"]: f"proxy host=127.0.0.1 port={backend_a.port}",
        users["bob"]: f"proxy host=127.0.0.1 port={backend_b.port}",
    }, extra_config="lmtp_max_message_size = 1M\n")
    mailroute.users = users
    return mailroute


def test_size_limit_is_advertised(size_limited):
    conn, _, lhlo = open_session(size_limited)
    with conn:
        sizes = [line.split() for line in lhlo.lines[1:] if line.upper().startswith("SIZE")]
        assert sizes == [["SIZE", str(1024 * 1024)]], lhlo


def test_mail_size_parameter_over_the_limit_is_refused_552(size_limited):
    conn, _, _ = open_session(size_limited)
    with conn:
        reply = conn.command(f"MAIL FROM:<{SENDER}> SIZE=2000000")
        assert_reply((reply.code, reply.text), 552, "5.3.4 ")
        reply = conn.command(f"MAIL FROM:<{SENDER}> SIZE=1000")
        assert reply.code == 250, reply


def test_body_over_the_limit_is_refused_552_per_recipient(size_limited, backend_a,
                                                          backend_b):
    alice, bob = size_limited.users["alice"], size_limited.users["bob"]
    big_marker, small_marker = new_marker(), new_marker()
    big = make_message(big_marker, b"".join([b"y" * 998 + b"\r\n"] * 1500))
    client = LmtpClient("127.0.0.1", size_limited.port)
    try:
        result = client.transaction(SENDER, [alice, bob], big)
        assert list(result.data) == [alice, bob]
        assert_reply(result.data[alice], 552, "5.3.4 ")
        assert_reply(result.data[bob], 552, "5.3.4 ")
        # The session goes on with the next transaction.
        result = client.transaction(SENDER, [alice], make_message(small_marker))
        assert_saved(result.data[alice], alice)
        client.quit()
    finally:
        client.close()
    assert messages_with(backend_a.maildir(alice), big_marker) == []
    assert messages_with(backend_b.maildir(bob), big_marker) == []
    assert len(messages_with(backend_a.maildir(alice), small_marker)) == 1


def test_commands_out_of_sequence_are_refused(routed):
    alice = routed.users["alice"]
    conn, _, _ = open_session(routed)
    with conn:
        assert conn.command(f"RCPT TO:<{alice}>").code == 503
        assert conn.command("DATA").code == 503
        assert conn.command(f"MAIL FROM:<{SENDER}>").code == 250
        assert conn.command(f"MAIL FROM:<{SENDER}>").code == 503
        assert conn.command("DATA").code in (503, 554)
        assert conn.command("NOOP").code == 250


def test_rset_forgets_the_transaction(routed, backend_a, backend_b):
    alice, bob = routed.users["alice"], routed.users["bob"]
    marker = new_marker()
    conn, _, _ = open_session(routed)
    with conn:
        assert conn.command(f"MAIL FROM:<{SENDER}>").code == 250
        assert conn.command(f"RCPT TO:<{alice}>").code == 250
        assert conn.command("RSET").code == 250
        assert conn.command(f"MAIL FROM:<{SENDER}>").code == 250
        assert conn.command(f"RCPT TO:<{bob}>").code == 250
        assert conn.command("DATA").code == 354
        conn.send(dot_stuff(make_message(marker)))
        reply = conn.read_reply()
        assert_saved((reply.code, reply.text), bob)
    assert len(messages_with(backend_b.maildir(bob), marker)) == 1
    assert count_messages(backend_a.maildir(alice)) == 0


def test_vrfy_is_refused(routed):
    conn, _, _ = open_session(routed)
    with conn:
        reply = conn.command(f"VRFY {routed.users['alice']}")
        assert 500 <= reply.code < 600, reply


def test_unix_socket_listener(routed, backend_a):
    alice = routed.users["alice"]
    marker = new_marker()
    result = send_message(routed.socket_path, SENDER, [alice], make_message(marker))
    assert_saved(result.data[alice], alice)
    assert len(messages_with(backend_a.maildir(alice), marker)) == 1


def test_too_many_recipients_are_refused_with_4xx(start_mailroute, backend_a, addr):
    users = [addr(f"r{i}") for i in range(3)]
    mailroute = start_mailroute(
        {u: f"proxy host=127.0.0.1 port={backend_a.port}" for u in users},
        extra_config="lmtp_max_recipients = 2\n")
    marker = new_marker()
    result = send_message(mailroute.port, SENDER, users, make_message(marker))
    assert_rcpt_ok(result.rcpt[users[0]], users[0])
    assert_rcpt_ok(result.rcpt[users[1]], users[1])
    assert_reply(result.rcpt[users[2]], 452, "4.5.3 ")
    assert list(result.data) == users[:2]
    assert count_messages(backend_a.maildir(users[2])) == 0


def test_idle_client_is_disconnected_after_the_timeout(start_mailroute):
    mailroute = start_mailroute({}, extra_config="lmtp_client_timeout = 1s\n")
    conn, _, _ = open_session(mailroute)
    with conn:
        conn.sock.settimeout(10)
        started = time.monotonic()
        lines = conn.file.read()  # everything until the server closes
        elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 5, f"closed after {elapsed:.1f}s with lmtp_client_timeout = 1s"
    assert lines == b"" or lines.startswith(b"421 "), lines


def test_xclient_is_refused_from_an_untrusted_client(start_mailroute, fake_backend, addr):
    alice = addr("alice")
    fake = fake_backend()
    mailroute = start_mailroute({alice: f"proxy host=127.0.0.1 port={fake.port}"},
                                extra_config="login_trusted_networks = 10.0.0.0/8\n")
    conn, _, lhlo = open_session(mailroute)
    with conn:
        assert not any(line.upper().startswith("XCLIENT") for line in lhlo.lines), lhlo
        reply = conn.command("XCLIENT ADDR=192.0.2.66")
        assert 500 <= reply.code < 600, reply
        assert conn.command(f"MAIL FROM:<{SENDER}>").code == 250
        assert conn.command(f"RCPT TO:<{alice}>").code == 250
        assert conn.command("DATA").code == 354
        conn.send(dot_stuff(make_message(new_marker())))
        reply = conn.read_reply()
        assert_saved((reply.code, reply.text), alice)
    assert not any("192.0.2.66" in c for c in fake.commands()), fake.commands()


def test_unknown_command_is_refused_and_the_session_continues(routed):
    conn, _, _ = open_session(routed)
    with conn:
        reply = conn.command("FROBNICATE now")
        assert reply.code in (500, 502), reply
        assert conn.command("NOOP").code == 250
