"""A scriptable LMTP (or SMTP) backend in Python, for failures real servers do
not produce on demand: dropping the connection in the middle of DATA or
right after the final dot, or answering DATA with a chosen reply.

It can also refuse chosen recipients, or wait before reading the body (a
slow backend). It records every command line and every message it accepted, so tests can
also check what mailroute sent (XCLIENT, LHLO, MAIL parameters, headers).
`mode` may be changed while it runs; it applies to the next DATA."""

import re
import socket
import socketserver
import struct
import threading
import time

from .procs import free_port

ACCEPT = "accept"                   # store, 250 per recipient
DROP_MID_DATA = "drop_mid_data"     # read part of the body, then reset the connection
DROP_AFTER_DOT = "drop_after_dot"   # read the whole body, close without a reply
REPLY = "reply"                     # answer DATA with data_reply for every recipient
STALL = "stall"                     # read the whole body, never answer

DEFAULT_CAPS = ["PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME",
                "XCLIENT ADDR PORT PROTO HELO LOGIN SESSION TTL TIMEOUT", "XRCPTFORWARD"]


class Message:
    def __init__(self, mail_line, rcpt_lines, data):
        self.mail_line = mail_line    # the MAIL command as received
        self.rcpt_lines = rcpt_lines  # the RCPT commands as received
        self.sender = _path(mail_line)
        self.rcpts = [_path(line) for line in rcpt_lines]
        self.data = data  # dot-unstuffed, CRLF line ends, without the final "."


def _path(command):
    """The address between <> in a MAIL or RCPT command."""
    match = re.search(r"<([^>]*)>", command)
    return match.group(1) if match else None


class _Session(socketserver.StreamRequestHandler):
    def setup(self):
        super().setup()
        self.fake = self.server.fake
        self.commands = []
        self.fake._add_session(self.commands)
        self.sender = None
        self.rcpts = []

    def reply(self, text):
        self.wfile.write(text.encode() + b"\r\n")

    def handle(self):
        self.reply(f"220 {self.fake.hostname} fake backend ready")
        while True:
            line = self.rfile.readline(65536)
            if not line:
                return
            line = line.rstrip(b"\r\n").decode("utf-8", "replace")
            self.commands.append(line)
            verb = line.split(" ", 1)[0].upper()
            if not self.dispatch(verb, line):
                return

    def dispatch(self, verb, line):
        """Answer one command; False ends the session."""
        if verb in ("LHLO", "EHLO", "HELO"):
            caps = [self.fake.hostname] + self.fake.caps
            for cap in caps[:-1]:
                self.reply("250-" + cap)
            self.reply("250 " + caps[-1])
        elif verb == "XCLIENT":
            self.reply(f"220 {self.fake.hostname} fake backend ready")
        elif verb == "MAIL":
            self.sender, self.rcpts = line, []
            self.reply("250 2.1.0 OK")
        elif verb == "RCPT":
            refusal = self.fake.rcpt_replies.get(_path(line))
            if refusal:
                self.reply(refusal)
            else:
                self.rcpts.append(line)
                self.reply("250 2.1.5 OK")
        elif verb == "DATA":
            return self.data()
        elif verb == "RSET":
            self.sender, self.rcpts = None, []
            self.reply("250 2.0.0 OK")
        elif verb == "NOOP":
            self.reply("250 2.0.0 OK")
        elif verb == "QUIT":
            self.reply("221 2.0.0 Bye")
            return False
        else:
            self.reply("502 5.5.2 Unknown command")
        return True

    def data(self):
        mode = self.fake.mode
        self.reply("354 OK")
        if self.fake.read_delay:
            time.sleep(self.fake.read_delay)  # a slow backend: mailroute's writes pile up
        if mode == DROP_MID_DATA:
            self.rfile.read(self.fake.drop_after_bytes)
            self.reset_connection()
            return False
        body = self.read_body()
        if body is None:
            return False
        if mode == DROP_AFTER_DOT:
            self.reset_connection()
            return False
        if mode == STALL:
            self.rfile.read()  # until the peer gives up and closes
            return False
        replies = len(self.rcpts) if self.fake.lmtp else 1
        if mode == REPLY:
            for _ in range(replies):
                self.reply(self.fake.data_reply)
            return True
        self.fake._add_message(Message(self.sender, list(self.rcpts), body))
        for _ in range(replies):
            self.reply("250 2.0.0 OK queued")
        return True

    def read_body(self):
        lines = []
        while True:
            line = self.rfile.readline()
            if not line:
                return None
            if line == b".\r\n":
                return b"".join(lines)
            lines.append(line[1:] if line.startswith(b".") else line)

    def reset_connection(self):
        # Linger 0: close sends a RST at once, as a crashed backend would.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                   struct.pack("ii", 1, 0))
        self.connection.close()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeBackend:
    def __init__(self, mode=ACCEPT, lmtp=True, port=None, caps=None,
                 hostname="fake.test", drop_after_bytes=1, data_reply=None,
                 rcpt_replies=None, read_delay=0):
        """rcpt_replies: {address: reply line} for RCPTs to refuse;
        read_delay: seconds to wait after 354 before reading the body."""
        self.mode = mode
        self.lmtp = lmtp
        self.port = port or free_port()
        self.caps = list(DEFAULT_CAPS if caps is None else caps)
        self.hostname = hostname
        self.drop_after_bytes = drop_after_bytes
        self.data_reply = data_reply or "452 4.2.2 Mailbox full"
        self.rcpt_replies = dict(rcpt_replies or {})
        self.read_delay = read_delay
        self._lock = threading.Lock()
        self._sessions = []
        self._messages = []
        self._server = None
        self._thread = None

    def start(self):
        self._server = _Server(("127.0.0.1", self.port), _Session)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _add_session(self, commands):
        with self._lock:
            self._sessions.append(commands)

    def _add_message(self, message):
        with self._lock:
            self._messages.append(message)

    @property
    def sessions(self):
        """The command lines of each connection so far (copies)."""
        with self._lock:
            return [list(s) for s in self._sessions]

    @property
    def messages(self):
        with self._lock:
            return list(self._messages)

    def commands(self):
        """Every command line received, over all connections."""
        return [c for s in self.sessions for c in s]
