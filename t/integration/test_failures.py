"""Failures stay with their own recipients: a backend that is down, drops
the connection during or after DATA, refuses the message or stalls changes
only the replies of its recipients (DESIGN.md §5; Dovecot's defect W2 must
not exist). A passdb that cannot be read is a temporary failure."""

import os
import time

import pytest

from harness.checks import assert_reply, assert_rcpt_ok, assert_saved
from harness.fake_backend import DROP_AFTER_DOT, DROP_MID_DATA, REPLY, STALL
from harness.lmtp_client import RawLmtp, dot_stuff, send_message
from harness.maildir import count_messages, make_message, messages_with, new_marker
from harness.mailroute import proxy_to
from harness.procs import free_port

SENDER = "sender@example.org"


def assert_delivered_once(backend, user, marker):
    copies = messages_with(backend.maildir(user), marker)
    assert len(copies) == 1, f"{user}: {len(copies)} copies on {backend.name}"


def test_backend_down_fails_only_its_recipients(start_mailroute, backend_a, backend_b,
                                                addr):
    alice, ghost, bob = addr("alice"), addr("ghost"), addr("bob")
    down_port = free_port()  # nothing listens there
    mailroute = start_mailroute({
        alice: proxy_to(backend_a.port),
        ghost: proxy_to(down_port),
        bob: proxy_to(backend_b.port),
    })
    marker = new_marker()
    result = send_message(mailroute.port, SENDER, [alice, ghost, bob], make_message(marker))

    assert_rcpt_ok(result.rcpt[alice], alice)
    assert_reply(result.rcpt[ghost], 451, "4.4.")
    assert_rcpt_ok(result.rcpt[bob], bob)
    assert list(result.data) == [alice, bob]
    assert_saved(result.data[alice], alice)
    assert_saved(result.data[bob], bob)
    assert_delivered_once(backend_a, alice, marker)
    assert_delivered_once(backend_b, bob, marker)


@pytest.mark.parametrize("mode", [DROP_MID_DATA, DROP_AFTER_DOT])
def test_backend_lost_during_data_fails_only_its_recipients(
        mode, start_mailroute, backend_a, backend_b, fake_backend, addr):
    alice, mallory, bob, mallory2 = addr("alice"), addr("mallory"), addr("bob"), addr("m2")
    fake = fake_backend(mode=mode, drop_after_bytes=64 * 1024)
    mailroute = start_mailroute({
        alice: proxy_to(backend_a.port),
        mallory: proxy_to(fake.port),
        bob: proxy_to(backend_b.port),
        mallory2: proxy_to(fake.port),
    })
    marker = new_marker()
    # 2 MB, so that "mid-DATA" is really in the middle of the body.
    body = b"".join(b"line %07d of a long body\r\n" % i for i in range(80000))
    rcpts = [alice, mallory, bob, mallory2]
    result = send_message(mailroute.port, SENDER, rcpts, make_message(marker, body))

    for rcpt in rcpts:
        assert_rcpt_ok(result.rcpt[rcpt], rcpt)
    assert list(result.data) == rcpts
    assert_saved(result.data[alice], alice)
    assert_reply(result.data[mallory], 451, "4.4.")
    assert_saved(result.data[bob], bob)
    assert_reply(result.data[mallory2], 451, "4.4.")
    assert_delivered_once(backend_a, alice, marker)
    assert_delivered_once(backend_b, bob, marker)
    assert fake.messages == []


def test_backend_refusing_the_data_keeps_its_reply(start_mailroute, backend_a,
                                                   fake_backend, addr):
    alice, full = addr("alice"), addr("full")
    fake = fake_backend(mode=REPLY, data_reply="452 4.2.2 Mailbox full")
    mailroute = start_mailroute({alice: proxy_to(backend_a.port), full: proxy_to(fake.port)})
    marker = new_marker()
    result = send_message(mailroute.port, SENDER, [full, alice], make_message(marker))
    assert_reply(result.data[full], 452, "4.2.2 ")
    assert "Mailbox full" in result.data[full][1]
    assert_saved(result.data[alice], alice)
    assert_delivered_once(backend_a, alice, marker)


def test_smtp_backend_reply_is_copied_to_each_of_its_recipients(
        start_mailroute, backend_a, fake_backend, addr):
    alice, s1, s2 = addr("alice"), addr("s1"), addr("s2")
    fake = fake_backend(mode=REPLY, lmtp=False, data_reply="554 5.6.0 Content rejected")
    mailroute = start_mailroute({
        s1: proxy_to(fake.port, "protocol=smtp"),
        alice: proxy_to(backend_a.port),
        s2: proxy_to(fake.port, "protocol=smtp"),
    })
    marker = new_marker()
    result = send_message(mailroute.port, SENDER, [s1, alice, s2], make_message(marker))
    assert_reply(result.data[s1], 554, "5.6.0 ")
    assert_reply(result.data[s2], 554, "5.6.0 ")
    assert_saved(result.data[alice], alice)
    assert any(c.upper().startswith("EHLO ") for c in fake.commands()), \
        "an SMTP backend is greeted with EHLO"
    assert not any(c.upper().startswith("LHLO ") for c in fake.commands())


def test_stalled_backend_times_out_alone(start_mailroute, backend_a, fake_backend, addr):
    alice, slow = addr("alice"), addr("slow")
    fake = fake_backend(mode=STALL)
    mailroute = start_mailroute({
        slow: proxy_to(fake.port, "proxy_timeout=2"),
        alice: proxy_to(backend_a.port),
    })
    marker = new_marker()
    started = time.monotonic()
    result = send_message(mailroute.port, SENDER, [slow, alice], make_message(marker),
                          timeout=20)
    elapsed = time.monotonic() - started
    assert_reply(result.data[slow], 451, "4.4.")
    assert_saved(result.data[alice], alice)
    assert_delivered_once(backend_a, alice, marker)
    assert 1.5 <= elapsed < 15, f"proxy_timeout=2 but the transaction took {elapsed:.1f}s"


@pytest.mark.parametrize("problem", ["missing", "directory"])
def test_unreadable_passwd_file_is_a_temporary_failure(problem, start_mailroute, workdir,
                                                       addr):
    if problem == "missing":
        path = os.path.join(workdir, "no-such-dir", "users")
    else:
        path = os.path.join(workdir, "users-is-a-directory")
        os.makedirs(path, exist_ok=True)
    alice = addr("alice")
    mailroute = start_mailroute(passwd_path=path)
    result = send_message(mailroute.port, SENDER, [alice], make_message(new_marker()))
    assert_reply(result.rcpt[alice], 451, "4.3.")
    assert result.data == {}
    assert count_messages(mailroute.local_maildir(alice)) == 0


def test_backend_refusing_a_recipient_keeps_its_reply(start_mailroute, backend_a,
                                                      fake_backend, addr):
    alice, gone = addr("alice"), addr("gone")
    fake = fake_backend(rcpt_replies={gone: f"550 5.1.1 <{gone}> User unknown on backend"})
    mailroute = start_mailroute({alice: proxy_to(backend_a.port), gone: proxy_to(fake.port)})
    marker = new_marker()
    result = send_message(mailroute.port, SENDER, [gone, alice], make_message(marker))
    assert_reply(result.rcpt[gone], 550, "5.1.1 ")
    assert "User unknown on backend" in result.rcpt[gone][1]
    assert list(result.data) == [alice]
    assert_saved(result.data[alice], alice)
    assert fake.messages == []


def test_client_lost_during_data_delivers_nothing(start_mailroute, backend_a, fake_backend,
                                                  addr):
    alice, mallory = addr("alice"), addr("mallory")
    fake = fake_backend()
    mailroute = start_mailroute({alice: proxy_to(backend_a.port), mallory: proxy_to(fake.port)})
    marker = new_marker()
    body = b"".join(b"line %07d of a long body\r\n" % i for i in range(40000))
    data = dot_stuff(make_message(marker, body))
    conn = RawLmtp(mailroute.port)
    assert conn.read_reply().code == 220
    assert conn.command("LHLO client.test").code == 250
    assert conn.command(f"MAIL FROM:<{SENDER}>").code == 250
    assert conn.command(f"RCPT TO:<{alice}>").code == 250
    assert conn.command(f"RCPT TO:<{mallory}>").code == 250
    assert conn.command("DATA").code == 354
    conn.send(data[:len(data) // 2])
    conn.close()
    time.sleep(1.5)  # an absence can only be shown by waiting a little

    assert messages_with(backend_a.maildir(alice), marker) == []
    assert fake.messages == []
    # The backend connections are still good for the next transaction.
    again = new_marker()
    result = send_message(mailroute.port, SENDER, [alice, mallory], make_message(again))
    assert_saved(result.data[alice], alice)
    assert_saved(result.data[mallory], mallory)
    assert_delivered_once(backend_a, alice, again)
