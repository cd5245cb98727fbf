"""Reading what landed in a Maildir (new/ and cur/), and building test
messages that can be recognised there by a unique X-Test-Id header."""

import hashlib
import itertools
import os

_counter = itertools.count(1)


def message_files(maildir):
    """Paths of the messages in maildir's new/ and cur/, sorted by name."""
    paths = []
    for sub in ("new", "cur"):
        folder = os.path.join(str(maildir), sub)
        if os.path.isdir(folder):
            paths += [os.path.join(folder, n) for n in os.listdir(folder)]
    return sorted(paths, key=os.path.basename)


def count_messages(maildir):
    return len(message_files(maildir))


def read_messages(maildir):
    """The messages' bytes, in file name (= delivery) order."""
    messages = []
    for path in message_files(maildir):
        with open(path, "rb") as f:
            messages.append(f.read())
    return messages


def messages_with(maildir, marker):
    """The messages of maildir that carry the test marker."""
    needle = marker_header(marker)
    return [m for m in read_messages(maildir) if needle in m]


def new_marker(label="m"):
    """A string unique within this test run, for X-Test-Id."""
    return f"{label}-{os.getpid()}-{next(_counter)}"


def marker_header(marker):
    return b"X-Test-Id: " + marker.encode()


def make_message(marker, body=b"Hello from the mailroute tests.\r\n", subject=None):
    """A small RFC 5322 message with CRLF line ends whose first header is the
    marker (so the part from the marker on can be compared with what was sent)."""
    subject = subject or marker
    head = (marker_header(marker) + b"\r\n"
            b"From: sender@example.org\r\n"
            b"Subject: " + subject.encode() + b"\r\n"
            b"Message-ID: <" + marker.encode() + b"@itest.example.org>\r\n"
            b"\r\n")
    return head + body


def sent_part(stored, marker):
    """The part of a stored message that the test sent: from the marker on,
    with line ends normalised to LF (Maildir stores LF)."""
    start = stored.find(marker_header(marker))
    assert start >= 0, f"marker {marker} not in message"
    return stored[start:].replace(b"\r\n", b"\n")


def as_stored(sent):
    return sent.replace(b"\r\n", b"\n")


def digest(data):
    return hashlib.sha256(data).hexdigest()
