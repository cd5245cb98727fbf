"""The servers of the LMTP benchmark, each in a directory of its own:

- Sink: Postfix's smtp-sink -L, the LMTP backend that throws mail away;
- DovecotProxy: Dovecot 2.3 as an LMTP proxy (lmtp_proxy = yes), routing by
  the passdb's `proxy host= port=` fields, defaults otherwise;
- Mailroute: mailrouted routing by the same passwd-file, logging one line
  per recipient to a file.

Both routers read the same passwd-file (see write_passwd_file), so they make
the same decisions. Nothing here generates load or measures: see
lmtp_bench.py.
"""

import grp
import os
import pwd

from .procs import Proc, free_port, pinned, port_open, wait_until

START_TIMEOUT = 15


def write_passwd_file(path, routes):
    """routes: {address: port}. Dovecot's passwd-file format; Dovecot's
    passdb wants some password for a PASS lookup, mailroute ignores it."""
    with open(path, "w") as f:
        for address, port in routes.items():
            f.write(f"{address}:{{PLAIN}}x::::::proxy host=127.0.0.1 port={port}\n")
    os.chmod(path, 0o644)


def _wait_listening(proc, port, what):
    wait_until(lambda: port_open(port) or not proc.alive(), START_TIMEOUT,
               f"{what} to listen on 127.0.0.1:{port}")
    if not proc.alive():
        raise RuntimeError(f"{what} exited at start:\n{proc.output_tail()}")


class Sink:
    def __init__(self, workdir, name, cpus=None):
        self.dir = workdir
        self.name = name
        self.port = free_port()
        self.cpus = cpus
        self.proc = None

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        argv = pinned(["smtp-sink", "-L", "-u", "nobody", "-h", self.name,
                       f"127.0.0.1:{self.port}", "1024"], self.cpus)
        self.proc = Proc(self.name, argv, os.path.join(self.dir, "sink.out"),
                         cwd=self.dir).start()
        _wait_listening(self.proc, self.port, f"smtp-sink {self.name}")
        return self


DOVECOT_CONFIG = """\
# Dovecot 2.3 as the LMTP proxy mailroute is compared with: built-in
# defaults except for what a private instance on loopback needs.
instance_name = {name}
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
protocols = lmtp
listen = 127.0.0.1
ssl = no
lmtp_proxy = yes
passdb {{
  driver = passwd-file
  args = {passwd}
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={dir}/home/%u
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
}}
"""


class DovecotProxy:
    def __init__(self, workdir, passwd_path, cpus=None):
        self.dir = workdir
        self.passwd_path = passwd_path
        self.port = free_port()
        self.cpus = cpus
        self.proc = None

    @property
    def log_path(self):
        return os.path.join(self.dir, "dovecot.log")

    def start(self):
        os.makedirs(os.path.join(self.dir, "home"), exist_ok=True)
        os.chmod(self.dir, 0o755)  # Dovecot's unprivileged users traverse it
        os.chown(os.path.join(self.dir, "home"), pwd.getpwnam("nobody").pw_uid,
                 grp.getgrnam("nogroup").gr_gid)
        conf = os.path.join(self.dir, "dovecot.conf")
        name = f"mrbench{os.getpid()}"
        with open(conf, "w") as f:
            f.write(DOVECOT_CONFIG.format(name=name, dir=self.dir, port=self.port,
                                          passwd=self.passwd_path))
        self.proc = Proc("dovecot", pinned(["dovecot", "-F", "-c", conf], self.cpus),
                         os.path.join(self.dir, "dovecot.out"), cwd=self.dir).start()
        _wait_listening(self.proc, self.port, "Dovecot")
        return self


MAILROUTE_CONFIG = """\
# mailrouted under benchmark: one passwd-file, every recipient proxied.
protocols = lmtp
listen = 127.0.0.1
hostname = router.bench
base_dir = {dir}/run
workers = {workers}
log_path = {dir}/mailroute.log
login_trusted_networks = 127.0.0.0/8
mail_temp_dir = {dir}/tmp
passdb {{
  driver = passwd-file
  args = {passwd}
}}
service lmtp {{
  inet_listener lmtp {{
    port = {port}
  }}
}}
"""


class Mailroute:
    def __init__(self, workdir, binary, passwd_path, workers, cpus=None):
        self.dir = workdir
        self.binary = binary
        self.passwd_path = passwd_path
        self.workers = workers
        self.port = free_port()
        self.cpus = cpus
        self.proc = None

    @property
    def log_path(self):
        return os.path.join(self.dir, "mailroute.log")

    @property
    def pid(self):
        return self.proc.pid

    def start(self):
        for sub in ("run", "tmp"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        conf = os.path.join(self.dir, "mailroute.conf")
        with open(conf, "w") as f:
            f.write(MAILROUTE_CONFIG.format(dir=self.dir, workers=self.workers,
                                            port=self.port, passwd=self.passwd_path))
        argv = pinned([self.binary, "-c", conf], self.cpus)
        self.proc = Proc(f"mailroute-{self.workers}w", argv,
                         os.path.join(self.dir, "mailrouted.stderr"), cwd=self.dir).start()
        _wait_listening(self.proc, self.port, f"mailrouted (workers = {self.workers})")
        return self

    def recipient_replies(self):
        """(recipient log lines, of which with a 250 reply) in its log so far."""
        lines = ok = 0
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if " rcpt=" in line and " reply=" in line:
                    lines += 1
                    ok += ' reply="250' in line
        return lines, ok
