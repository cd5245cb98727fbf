"""Postfix's smtp-sink as an SMTP (or, with lmtp=True, LMTP) backend that
accepts everything and dumps each transaction to a file in DIR/dump.

A dump starts with smtp-sink's own headers (X-Client-Addr, X-Helo-Args,
X-Mail-Args, one X-Rcpt-Args per recipient) followed by the message."""

import os
import pwd
import re

from .procs import Proc, free_port, port_open, wait_until
from .maildir import marker_header


class Dump:
    def __init__(self, path, data):
        self.path = path
        self.data = data
        self.rcpts = [m.decode() for m in re.findall(rb"^X-Rcpt-Args: <([^>]*)>", data, re.M)]

    def sent_part(self, marker):
        """The message from the marker header on, LF line ends, without the
        empty line smtp-sink appends to each dump."""
        text = self.data.replace(b"\r\n", b"\n")
        start = text.find(marker_header(marker))
        assert start >= 0, f"marker {marker} not in {self.path}"
        part = text[start:]
        return part[:-1] if part.endswith(b"\n\n") else part


class SmtpSink:
    def __init__(self, workdir, lmtp=False, port=None):
        self.dir = str(workdir)
        self.lmtp = lmtp
        self.port = port or free_port()
        self.proc = None

    @property
    def dump_dir(self):
        return os.path.join(self.dir, "dump")

    def start(self):
        os.makedirs(self.dump_dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        os.chown(self.dump_dir, pwd.getpwnam("nobody").pw_uid, -1)
        argv = ["smtp-sink", "-u", "nobody", "-h", "sink.test",
                "-d", os.path.join(self.dump_dir, "%Y%m%d%H%M%S.")]
        if self.lmtp:
            argv.append("-L")
        argv += [f"127.0.0.1:{self.port}", "100"]
        self.proc = Proc(argv, os.path.join(self.dir, "sink.out"), cwd=self.dir).start()
        wait_until(lambda: port_open(self.port) or not self.proc.alive(), timeout=10,
                   what=f"smtp-sink to listen on {self.port}")
        assert self.proc.alive(), f"smtp-sink exited:\n{self.proc.output()}"
        return self

    def stop(self):
        if self.proc:
            self.proc.stop()

    def dumps(self):
        result = []
        for name in sorted(os.listdir(self.dump_dir)):
            path = os.path.join(self.dump_dir, name)
            with open(path, "rb") as f:
                result.append(Dump(path, f.read()))
        return result

    def dumps_with(self, marker):
        needle = marker_header(marker)
        return [d for d in self.dumps() if needle in d.data]
