"""Through a real Postfix: mailroute's per-recipient replies are Postfix's
retry contract. A recipient that got a 4xx is retried later and delivered
once; the others are not delivered again (nothing lost, nothing doubled)."""

import os
import smtplib

import pytest

from harness.dovecot import DovecotBackend
from harness.fake_backend import ACCEPT, DROP_AFTER_DOT
from harness.maildir import make_message, messages_with, new_marker
from harness.postfix import Postfix
from harness.procs import free_port

pytestmark = pytest.mark.postfix

SENDER = "sender@example.org"


@pytest.fixture
def postfix_for(workdir):
    """postfix_for(mailroute) -> a running Postfix whose virtual transport is
    mailroute's LMTP port; stopped at teardown."""
    started = []

    def start(mailroute):
        postfix = Postfix(os.path.join(workdir, "postfix"),
                          f"lmtp:inet:127.0.0.1:{mailroute.port}").start()
        started.append(postfix)
        return postfix
    yield start
    for postfix in started:
        postfix.stop()


def submit(postfix, rcpts, message):
    client = smtplib.SMTP("127.0.0.1", postfix.port)
    try:
        assert client.sendmail(SENDER, rcpts, message) == {}
    finally:
        client.quit()


def copies(backend, user, marker):
    return len(messages_with(backend.maildir(user), marker))


def test_recipient_of_a_down_backend_is_retried_and_delivered_once(
        start_mailroute, postfix_for, backend_a, backend_b, workdir, addr):
    alice, ghost, bob = addr("alice"), addr("ghost"), addr("bob")
    late_port = free_port()
    mailroute = start_mailroute({
        alice: f"proxy host=127.0.0.1 port={backend_a.port}",
        ghost: f"proxy host=127.0.0.1 port={late_port}",
        bob: f"proxy host=127.0.0.1 port={backend_b.port}",
    })
    postfix = postfix_for(mailroute)
    marker = new_marker()
    submit(postfix, [alice, ghost, bob], make_message(marker))

    postfix.wait_status(ghost, "deferred")
    postfix.wait_status(alice, "sent")
    postfix.wait_status(bob, "sent")
    assert copies(backend_a, alice, marker) == 1
    assert copies(backend_b, bob, marker) == 1

    late = DovecotBackend(os.path.join(workdir, "dovecot-late"), name="late",
                          port=late_port).start()
    try:
        postfix.flush_until_empty()
        assert copies(late, ghost, marker) == 1, postfix.log()
    finally:
        late.stop()
    assert copies(backend_a, alice, marker) == 1, "alice was delivered again"
    assert copies(backend_b, bob, marker) == 1, "bob was delivered again"
    assert postfix.delivery_status(alice) == ["sent"]
    assert postfix.delivery_status(bob) == ["sent"]


def test_backend_lost_after_dot_causes_no_duplicates(
        start_mailroute, postfix_for, backend_a, backend_b, fake_backend, addr):
    alice, mallory, bob = addr("alice"), addr("mallory"), addr("bob")
    fake = fake_backend(mode=DROP_AFTER_DOT)
    mailroute = start_mailroute({
        alice: f"proxy host=127.0.0.1 port={backend_a.port}",
        mallory: f"proxy host=127.0.0.1 port={fake.port}",
        bob: f"proxy host=127.0.0.1 port={backend_b.port}",
    })
    postfix = postfix_for(mailroute)
    marker = new_marker()
    submit(postfix, [alice, mallory, bob], make_message(marker))

    postfix.wait_status(mallory, "deferred")
    postfix.wait_status(alice, "sent")
    postfix.wait_status(bob, "sent")
    fake.mode = ACCEPT
    postfix.flush_until_empty()

    assert [m.rcpts for m in fake.messages] == [[mallory]]
    assert copies(backend_a, alice, marker) == 1
    assert copies(backend_b, bob, marker) == 1
    statuses = postfix.delivery_status(mallory)
    assert statuses[-1] == "sent" and set(statuses[:-1]) == {"deferred"}, statuses
