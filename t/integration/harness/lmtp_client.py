"""LMTP clients for the tests.

LmtpClient is smtplib.LMTP plus what smtplib lacks for LMTP: after DATA an
LMTP server answers once per accepted recipient, in RCPT order. RawLmtp is a
plain socket for exchanges smtplib cannot express (pipelining, BDAT, broken
input), with a reply reader."""

import re
import smtplib
import socket

CRLF = b"\r\n"


def dot_stuff(message):
    """The DATA form of a message: CRLF line ends, leading dots doubled, and
    the terminating "." line."""
    data = re.sub(rb"\r\n|\r|\n", CRLF, message)
    data = re.sub(rb"(?m)^\.", b"..", data)
    if not data.endswith(CRLF):
        data += CRLF
    return data + b"." + CRLF


class Result:
    """The replies of one transaction: per recipient its RCPT reply and,
    for accepted recipients, its reply after DATA. Replies are (code, text)."""

    def __init__(self):
        self.mail = None
        self.rcpt = {}
        self.data = {}

    def __repr__(self):
        return f"Result(mail={self.mail}, rcpt={self.rcpt}, data={self.data})"


class LmtpClient(smtplib.LMTP):
    def __init__(self, host, port=0, source_address=None, timeout=60):
        super().__init__(host, port, local_hostname="client.test",
                         source_address=source_address, timeout=timeout)
        self.accepted = []

    def mail(self, sender, options=()):
        self.accepted = []
        return super().mail(sender, options)

    def rcpt(self, recip, options=()):
        code, text = super().rcpt(recip, options)
        if 200 <= code < 300:
            self.accepted.append(recip)
        return code, text

    def lmtp_data(self, message):
        """Send message with DATA; returns [(rcpt, code, text)] in RCPT order."""
        self.putcmd("data")
        code, text = self.getreply()
        if code != 354:
            raise smtplib.SMTPDataError(code, text)
        self.send(dot_stuff(message))
        return [(rcpt, *self._reply()) for rcpt in self.accepted]

    def _reply(self):
        code, text = self.getreply()
        return code, text.decode("utf-8", "replace")

    def transaction(self, sender, rcpts, message, mail_options=()):
        """MAIL, every RCPT, then DATA when one was accepted: a Result."""
        self.ehlo_or_helo_if_needed()
        result = Result()
        code, text = self.mail(sender, mail_options)
        result.mail = (code, text.decode("utf-8", "replace"))
        if code != 250:
            self.rset()
            return result
        for rcpt in rcpts:
            code, text = self.rcpt(rcpt)
            result.rcpt[rcpt] = (code, text.decode("utf-8", "replace"))
        if self.accepted:
            for rcpt, code, text in self.lmtp_data(message):
                result.data[rcpt] = (code, text)
        else:
            self.rset()
        return result


def lmtp_connect(target, source_ip=None, timeout=60):
    """An LmtpClient for target: a port on 127.0.0.1, or a UNIX socket path."""
    if isinstance(target, str):
        return LmtpClient(target, timeout=timeout)
    source = (source_ip, 0) if source_ip else None
    return LmtpClient("127.0.0.1", target, source_address=source, timeout=timeout)


def send_message(target, sender, rcpts, message, **kwargs):
    """One transaction on a new connection; returns its Result."""
    client = lmtp_connect(target, **{k: v for k, v in kwargs.items()
                                     if k in ("source_ip", "timeout")})
    try:
        return client.transaction(sender, rcpts, message,
                                  mail_options=kwargs.get("mail_options", ()))
    finally:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()


class Reply:
    def __init__(self, code, lines):
        self.code = code
        self.lines = lines

    @property
    def text(self):
        """The last line's text (after "NNN ")."""
        return self.lines[-1]

    def __repr__(self):
        return f"Reply({self.code}, {self.lines!r})"


class RawLmtp:
    """A raw connection: send bytes, read replies one at a time."""

    def __init__(self, target, source_ip=None, timeout=30):
        if isinstance(target, str):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(target)
        else:
            source = (source_ip, 0) if source_ip else None
            self.sock = socket.create_connection(("127.0.0.1", target), timeout=timeout,
                                                 source_address=source)
        self.file = self.sock.makefile("rb")

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def read_reply(self):
        lines = []
        while True:
            line = self.file.readline(65536)
            if not line:
                raise ConnectionError(f"connection closed; reply so far {lines!r}")
            line = line.rstrip(b"\r\n").decode("utf-8", "replace")
            assert re.match(r"^\d{3}[ -]", line) or re.match(r"^\d{3}$", line), \
                f"malformed reply line {line!r}"
            lines.append(line[4:])
            if len(line) == 3 or line[3] == " ":
                return Reply(int(line[:3]), lines)

    def command(self, line):
        self.send(line + "\r\n")
        return self.read_reply()

    def at_eof(self):
        """True when the server has closed the connection (reads nothing)."""
        return self.file.read(1) == b""

    def close(self):
        self.file.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
