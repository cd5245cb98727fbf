"""A 50 MB message through mailroute: it arrives intact and mailroute's
memory stays bounded (the body is streamed and spooled, DESIGN.md §5)."""

import time

from harness.checks import assert_saved
from harness.lmtp_client import LmtpClient
from harness.maildir import (as_stored, digest, make_message, messages_with, new_marker,
                             sent_part)

SENDER = "sender@example.org"
MESSAGE_SIZE = 50 * 1024 * 1024
PEAK_RSS_LIMIT_KB = 64 * 1024


def big_body(size):
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" * 15 + b"\r\n"
    count = size // len(line) + 1
    # Numbered lines, so a lost or repeated piece changes the hash.
    return b"".join(b"%09d " % i + line for i in range(count))


def test_50mb_message_arrives_intact_with_bounded_memory(start_mailroute, backend_a,
                                                         smtp_sink, addr, sanitized):
    alice, carol = addr("alice"), addr("carol")
    mailroute = start_mailroute({
        alice: f"proxy host=127.0.0.1 port={backend_a.port}",
        carol: f"proxy host=127.0.0.1 port={smtp_sink.port} protocol=smtp",
    })
    marker = new_marker()
    message = make_message(marker, big_body(MESSAGE_SIZE))
    assert len(message) > MESSAGE_SIZE

    started = time.monotonic()
    client = LmtpClient("127.0.0.1", mailroute.port, timeout=120)
    try:
        result = client.transaction(SENDER, [alice, carol], message)
        client.quit()
    finally:
        client.close()
    elapsed = time.monotonic() - started
    peak_kb = mailroute.peak_rss_kb()

    assert_saved(result.data[alice], alice)
    assert_saved(result.data[carol], carol)
    stored = messages_with(backend_a.maildir(alice), marker)
    assert len(stored) == 1
    assert digest(sent_part(stored[0], marker)) == digest(as_stored(message)), "altered"
    dumps = smtp_sink.dumps_with(marker)
    assert len(dumps) == 1
    assert digest(dumps[0].sent_part(marker)) == digest(as_stored(message))

    print(f"50 MB to two backends in {elapsed:.1f}s, mailrouted peak RSS {peak_kb} KiB")
    if not sanitized:  # ASan's shadow memory makes RSS meaningless
        assert peak_kb < PEAK_RSS_LIMIT_KB, f"mailrouted peak RSS {peak_kb} KiB"


def test_slow_backend_does_not_make_memory_grow(start_mailroute, backend_a, fake_backend,
                                                addr, sanitized):
    alice, slow = addr("alice"), addr("slow")
    fake = fake_backend(read_delay=3)  # mailroute's writes to it pile up for 3 s
    mailroute = start_mailroute({
        alice: f"proxy host=127.0.0.1 port={backend_a.port}",
        slow: f"proxy host=127.0.0.1 port={fake.port}",
    })
    marker = new_marker()
    message = make_message(marker, big_body(20 * 1024 * 1024))
    client = LmtpClient("127.0.0.1", mailroute.port, timeout=120)
    try:
        result = client.transaction(SENDER, [alice, slow], message)
        client.quit()
    finally:
        client.close()
    peak_kb = mailroute.peak_rss_kb()

    assert_saved(result.data[alice], alice)
    assert_saved(result.data[slow], slow)
    [stored] = messages_with(backend_a.maildir(alice), marker)
    assert digest(sent_part(stored, marker)) == digest(as_stored(message))
    [received] = fake.messages
    received_part = received.data[received.data.find(b"X-Test-Id: "):]
    assert digest(received_part) == digest(message)
    print(f"20 MB with a slow backend: mailrouted peak RSS {peak_kb} KiB")
    if not sanitized:
        assert peak_kb < PEAK_RSS_LIMIT_KB, f"mailrouted peak RSS {peak_kb} KiB"
