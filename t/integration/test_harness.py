"""Self-tests of the harness: the real servers and the fake backend work on
their own, without mailroute. When these fail, fix the harness (or the
machine), not mailroute."""

import os
import smtplib

import pytest

from harness.fake_backend import DROP_MID_DATA
from harness.lmtp_client import RawLmtp, send_message
from harness.maildir import make_message, messages_with, new_marker, sent_part, as_stored
from harness.mailroute import Mailroute
from harness.postfix import Postfix


def test_dovecot_backend_stores_each_recipient(backend_a, addr):
    alice, bob = addr("alice"), addr("bob")
    marker = new_marker()
    message = make_message(marker)
    result = send_message(backend_a.port, "sender@example.org", [alice, bob], message)
    assert [code for code, _ in result.data.values()] == [250, 250]
    for user in (alice, bob):
        stored = messages_with(backend_a.maildir(user), marker)
        assert len(stored) == 1
        assert sent_part(stored[0], marker) == as_stored(message)


def test_smtp_sink_dumps_each_transaction(smtp_sink, addr):
    carol = addr("carol")
    marker = new_marker()
    client = smtplib.SMTP("127.0.0.1", smtp_sink.port)
    message = make_message(marker)
    client.sendmail("sender@example.org", [carol], message)
    client.quit()
    dumps = smtp_sink.dumps_with(marker)
    assert [d.rcpts for d in dumps] == [[carol]]
    assert dumps[0].sent_part(marker) == as_stored(message)


def test_fake_backend_drops_in_the_middle_of_data(fake_backend):
    fake = fake_backend(mode=DROP_MID_DATA, drop_after_bytes=1000)
    with RawLmtp(fake.port) as conn:
        assert conn.read_reply().code == 220
        assert conn.command("LHLO test").code == 250
        assert conn.command("MAIL FROM:<s@example.org>").code == 250
        assert conn.command("RCPT TO:<x@example.com>").code == 250
        assert conn.command("DATA").code == 354
        with pytest.raises(OSError):
            for _ in range(100):
                conn.send(b"x" * 65536 + b"\r\n")
            conn.read_reply()
    assert fake.messages == []


def test_postfix_delivers_directly_to_dovecot(backend_a, workdir, addr):
    alice, bob = addr("alice"), addr("bob")
    marker = new_marker()
    postfix = Postfix(os.path.join(workdir, "postfix"),
                      f"lmtp:inet:127.0.0.1:{backend_a.port}").start()
    try:
        client = smtplib.SMTP("127.0.0.1", postfix.port)
        refused = client.sendmail("sender@example.org", [alice, bob], make_message(marker))
        client.quit()
        assert refused == {}
        postfix.wait_queue_empty()
    finally:
        postfix.stop()
    for user in (alice, bob):
        assert len(messages_with(backend_a.maildir(user), marker)) == 1, postfix.log()


def test_sanitizer_reports_are_detected(workdir):
    mailroute = Mailroute(os.path.join(workdir, "mr"))
    with open(mailroute.stderr_path, "w") as f:
        f.write("2026-01-01 info: mailrouted started\n")
    assert mailroute.sanitizer_report() == ""
    for marker in ("==42==ERROR: AddressSanitizer: heap-use-after-free on address",
                   "txn.c:12:5: runtime error: signed integer overflow",
                   "==42==ERROR: LeakSanitizer: detected memory leaks"):
        with open(mailroute.stderr_path, "a") as f:
            f.write(marker + "\n")
        assert marker in mailroute.sanitizer_report()
