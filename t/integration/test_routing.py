"""Where each recipient goes: one transaction fanned out over several
backends, local delivery, refusal, loops and referrals (DESIGN.md §4, §5)."""

import os
import time

from harness.checks import assert_reply, assert_rcpt_ok, assert_saved
from harness.lmtp_client import RawLmtp, send_message
from harness.maildir import (as_stored, count_messages, make_message, message_files,
                             messages_with, new_marker, sent_part)
from harness.mailroute import proxy_to
from harness.procs import free_port

SENDER = "sender@example.org"


def test_one_transaction_spans_three_backends(start_mailroute, backend_a, backend_b,
                                              smtp_sink, addr):
    alice, alice2, bob, carol = addr("alice"), addr("alice2"), addr("bob"), addr("carol")
    mailroute = start_mailroute({
        alice: proxy_to(backend_a.port),
        alice2: proxy_to(backend_a.port),
        bob: proxy_to(backend_b.port),
        carol: proxy_to(smtp_sink.port, "protocol=smtp"),
    })
    marker = new_marker()
    message = make_message(marker)
    rcpts = [alice, bob, carol, alice2]

    result = send_message(mailroute.port, SENDER, rcpts, message)

    for rcpt in rcpts:
        assert_rcpt_ok(result.rcpt[rcpt], rcpt)
    assert list(result.data) == rcpts, "one reply per recipient, in RCPT order"
    for rcpt in rcpts:
        assert_saved(result.data[rcpt], rcpt)
    for backend, user in ((backend_a, alice), (backend_a, alice2), (backend_b, bob)):
        stored = messages_with(backend.maildir(user), marker)
        assert len(stored) == 1, f"{user} got {len(stored)} copies"
        assert sent_part(stored[0], marker) == as_stored(message)
    for backend, user in ((backend_b, alice), (backend_b, alice2), (backend_a, bob)):
        assert messages_with(backend.maildir(user), marker) == [], f"{user} on wrong backend"
    dumps = smtp_sink.dumps_with(marker)
    assert [d.rcpts for d in dumps] == [[carol]], "the SMTP backend got carol, only"
    assert dumps[0].sent_part(marker) == as_stored(message)


def test_recipients_of_one_backend_share_one_transaction(start_mailroute, fake_backend,
                                                         addr):
    fake = fake_backend()
    users = [addr("u1"), addr("u2"), addr("u3")]
    mailroute = start_mailroute({u: f"proxy host=127.0.0.1 port={fake.port}" for u in users})
    result = send_message(mailroute.port, SENDER, users, make_message(new_marker()))
    for rcpt in users:
        assert_saved(result.data[rcpt], rcpt)
    assert len(fake.messages) == 1, "the three recipients are one transaction upstream"
    assert fake.messages[0].rcpts == users


def test_unknown_user_is_refused_with_550(start_mailroute, backend_a, addr):
    alice, nobody = addr("alice"), addr("nobody")
    mailroute = start_mailroute({alice: proxy_to(backend_a.port)})
    marker = new_marker()
    result = send_message(mailroute.port, SENDER, [nobody, alice], make_message(marker))
    assert result.rcpt[nobody] == (550, f"5.1.1 <{nobody}> User doesn't exist")
    assert list(result.data) == [alice]
    assert_saved(result.data[alice], alice)
    assert len(messages_with(backend_a.maildir(alice), marker)) == 1


def test_recipient_detail_is_stripped_for_the_lookup(start_mailroute, backend_a, addr):
    alice = addr("alice")
    user, domain = alice.split("@")
    tagged = f"{user}+news@{domain}"
    mailroute = start_mailroute({alice: proxy_to(backend_a.port)})
    marker = new_marker()
    result = send_message(mailroute.port, SENDER, [tagged], make_message(marker))
    assert_rcpt_ok(result.rcpt[tagged], tagged)
    assert_saved(result.data[tagged], tagged)
    # Dovecot strips the detail too and stores into alice's INBOX.
    assert len(messages_with(backend_a.maildir(alice), marker)) == 1


def test_proxy_maybe_to_ourselves_delivers_locally(start_mailroute, backend_a, addr):
    dave, alice = addr("dave"), addr("alice")
    port = free_port()
    mailroute = start_mailroute({
        alice: proxy_to(backend_a.port),
        dave: f"proxy_maybe host=127.0.0.1 port={port}",
    }, port=port)
    marker = new_marker()
    message = make_message(marker)
    result = send_message(mailroute.port, SENDER, [dave, alice], message)
    assert_rcpt_ok(result.rcpt[dave], dave)
    assert_saved(result.data[dave], dave)
    assert_saved(result.data[alice], alice)
    local = mailroute.local_maildir(dave)
    stored = messages_with(local, marker)
    assert len(stored) == 1, f"nothing (or too much) in {local}"
    assert sent_part(stored[0], marker) == as_stored(message)
    assert [os.path.basename(os.path.dirname(p)) for p in message_files(local)] == ["new"]
    assert count_messages(backend_a.maildir(dave)) == 0


def test_proxy_maybe_to_another_host_proxies(start_mailroute, backend_a, addr):
    erin = addr("erin")
    mailroute = start_mailroute({erin: f"proxy_maybe host=127.0.0.1 port={backend_a.port}"})
    marker = new_marker()
    result = send_message(mailroute.port, SENDER, [erin], make_message(marker))
    assert_saved(result.data[erin], erin)
    assert len(messages_with(backend_a.maildir(erin), marker)) == 1
    assert count_messages(mailroute.local_maildir(erin)) == 0


def test_user_without_host_delivers_locally(start_mailroute, addr):
    local = addr("local")
    mailroute = start_mailroute({local: ""})
    marker = new_marker()
    result = send_message(mailroute.port, SENDER, [local], make_message(marker))
    assert_saved(result.data[local], local)
    assert len(messages_with(mailroute.local_maildir(local), marker)) == 1


def test_proxy_to_ourselves_is_a_loop_554(start_mailroute, backend_a, addr):
    loopy, alice = addr("loopy"), addr("alice")
    port = free_port()
    mailroute = start_mailroute({
        loopy: f"proxy host=127.0.0.1 port={port}",
        alice: proxy_to(backend_a.port),
    }, port=port)
    marker = new_marker()
    result = send_message(mailroute.port, SENDER, [loopy, alice], make_message(marker))
    assert result.rcpt[loopy] == (554, f"5.4.6 <{loopy}> Proxying loops to itself")
    assert list(result.data) == [alice]
    assert_saved(result.data[alice], alice)
    assert count_messages(mailroute.local_maildir(loopy)) == 0


def test_received_ttl_zero_is_a_loop_554(start_mailroute, backend_a, addr):
    alice = addr("alice")
    mailroute = start_mailroute({alice: proxy_to(backend_a.port)})
    with RawLmtp(mailroute.port) as conn:
        assert conn.read_reply().code == 220
        assert conn.command("LHLO client.test").code == 250
        xclient = conn.command("XCLIENT ADDR=192.0.2.7 TTL=0")
        assert xclient.code == 220, xclient
        assert conn.command("LHLO client.test").code == 250
        assert conn.command(f"MAIL FROM:<{SENDER}>").code == 250
        reply = conn.command(f"RCPT TO:<{alice}>")
        assert (reply.code, reply.text) == (
            554, f"5.4.6 <{alice}> Proxying appears to be looping (TTL=0)")


def test_referral_is_followed_by_default(start_mailroute, backend_b, addr):
    frank = addr("frank")
    mailroute = start_mailroute({frank: f"host=127.0.0.1 port={backend_b.port}"})
    marker = new_marker()
    result = send_message(mailroute.port, SENDER, [frank], make_message(marker))
    assert_saved(result.data[frank], frank)
    assert len(messages_with(backend_b.maildir(frank), marker)) == 1


def test_referral_rejected_when_configured(start_mailroute, backend_b, addr):
    frank = addr("frank")
    mailroute = start_mailroute({frank: f"host=127.0.0.1 port={backend_b.port}"},
                                extra_config="lmtp_referrals = reject\n")
    marker = new_marker()
    result = send_message(mailroute.port, SENDER, [frank], make_message(marker))
    assert_reply(result.rcpt[frank], 550, "5.2.900 ")
    assert f"@127.0.0.1:{backend_b.port}" in result.rcpt[frank][1]
    assert count_messages(backend_b.maildir(frank)) == 0


def test_every_recipient_is_logged_with_its_decision(start_mailroute, backend_a, addr):
    alice, nobody, local = addr("alice"), addr("nobody"), addr("local")
    mailroute = start_mailroute({alice: proxy_to(backend_a.port), local: ""})
    send_message(mailroute.port, SENDER, [alice, nobody, local], make_message(new_marker()))
    expected = {alice: "proxy", nobody: "refuse", local: "local"}
    for rcpt, decision in expected.items():
        lines = mailroute.recipient_log_lines(rcpt)
        assert len(lines) == 1, f"expected one log line for {rcpt}, got {lines}"
        assert f"decision={decision}" in lines[0], lines[0]


def test_nologin_without_host_is_refused(start_mailroute, addr):
    barred = addr("barred")
    mailroute = start_mailroute({barred: "nologin"})
    result = send_message(mailroute.port, SENDER, [barred], make_message(new_marker()))
    assert result.rcpt[barred] == (550, f"5.1.1 <{barred}> User doesn't exist")
    assert count_messages(mailroute.local_maildir(barred)) == 0


def test_proxy_takes_precedence_over_nologin(start_mailroute, backend_a, addr):
    moved = addr("moved")
    mailroute = start_mailroute({moved: proxy_to(backend_a.port, "nologin reason=moved")})
    marker = new_marker()
    result = send_message(mailroute.port, SENDER, [moved], make_message(marker))
    assert_saved(result.data[moved], moved)
    assert len(messages_with(backend_a.maildir(moved), marker)) == 1


def test_delay_until_holds_the_recipient(start_mailroute, backend_a, addr):
    held = addr("held")
    mailroute = start_mailroute({held: proxy_to(backend_a.port,
                                                f"delay_until={int(time.time()) + 3}")})
    marker = new_marker()
    started = time.monotonic()
    result = send_message(mailroute.port, SENDER, [held], make_message(marker))
    elapsed = time.monotonic() - started
    assert_saved(result.data[held], held)
    assert len(messages_with(backend_a.maildir(held), marker)) == 1
    assert elapsed >= 1.5, f"held only {elapsed:.1f}s for a delay_until 3 s ahead"


def test_delay_until_beyond_the_limit_is_a_temporary_failure(start_mailroute, backend_a,
                                                             addr):
    held = addr("held")
    mailroute = start_mailroute({held: proxy_to(
        backend_a, f"delay_until={int(time.time()) + 3600}")})
    started = time.monotonic()
    result = send_message(mailroute.port, SENDER, [held], make_message(new_marker()))
    assert_reply(result.rcpt[held], 451, "4.")
    assert time.monotonic() - started < 5, "refused at once, not held"
    assert count_messages(backend_a.maildir(held)) == 0


def test_local_delivery_to_an_lmtp_address(start_mailroute, backend_b, addr):
    local, dave = addr("local"), addr("dave")
    port = free_port()
    mailroute = start_mailroute({
        local: "",
        dave: f"proxy_maybe host=127.0.0.1 port={port}",
    }, port=port, lmtp_local=f"inet:127.0.0.1:{backend_b.port}")
    marker = new_marker()
    result = send_message(mailroute.port, SENDER, [local, dave], make_message(marker))
    assert_saved(result.data[local], local)
    assert_saved(result.data[dave], dave)
    for user in (local, dave):
        assert len(messages_with(backend_b.maildir(user), marker)) == 1
        assert count_messages(mailroute.local_maildir(user)) == 0
