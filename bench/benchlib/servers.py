"""What the servers of both benchmarks have in common:

- Server: a process started from a directory of its own, in its own session,
  on ports chosen once (a restart binds the same ones), stopped by its PID;
- ConfiguredServer, and of it DovecotServer and MailrouteServer: a private
  Dovecot 2.3 instance and a mailrouted, each from its subclass's config
  template plus what all of its kind have (DOVECOT_INSTANCE,
  MAILROUTE_INSTANCE); a variant of a server (another name, edits to its
  config as edited() takes them, lines added) needs no class of its own;
- write_passwd_file: the passwd-file both routers (proxies) read, so that
  they make the same decisions;
- Certificate: the self-signed certificate the TLS listeners serve.

The servers themselves are in lmtp.py (and sql.py, tls.py) and imap.py.
Nothing here generates load or measures.
"""

import grp
import os
import pwd
import subprocess

from .procs import Proc, free_port, group_members, pinned, port_open, wait_until

START_TIMEOUT = 15
# Every user's password: the IMAP proxies check it; for LMTP Dovecot's passdb
# wants one, mailroute ignores it.
PASSWORD = "x"


class Server:
    """A server process in workdir, its output in workdir/NAME.out, listening
    on 127.0.0.1:port at least. A subclass gives argv(), may add ports() and
    prepare() the directory first."""

    name = "server"
    start_timeout = START_TIMEOUT
    ready_interval = 0.05   # seconds between two ready() checks at start
    stop_timeout = 10

    def __init__(self, workdir, cpus=None, name=None):
        self.dir = workdir
        self.cpus = cpus
        self.name = name or self.name
        self.port = free_port()
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid

    def ports(self):
        return [self.port]

    def argv(self):
        raise NotImplementedError

    def prepare(self):
        os.makedirs(self.dir, exist_ok=True)

    def ready(self):
        return all(port_open(port) for port in self.ports())

    def start(self):
        self.prepare()
        self.proc = Proc(self.name, pinned(self.argv(), self.cpus),
                         os.path.join(self.dir, f"{self.name}.out"), cwd=self.dir).start()
        wait_until(lambda: not self.proc.alive() or self.ready(), self.start_timeout,
                   f"{self.name} to listen on 127.0.0.1:{self.ports()}",
                   interval=self.ready_interval)
        if not self.proc.alive():
            raise RuntimeError(f"{self.name} exited at start:\n{self.proc.output_tail()}")
        return self

    def stop(self):
        if self.proc is None:
            return None
        return self.proc.stop(timeout=self.stop_timeout)

    def restart(self):
        self.stop()
        # The old processes must be gone before the ports are bound again.
        wait_until(lambda: not group_members(self.proc.pid), 10, f"{self.name} to exit")
        return self.start()


def write_passwd_file(path, users):
    """users: [(name, backend port or None)]. Dovecot's passwd-file format,
    every user with the password PASSWORD, proxied to 127.0.0.1:port if a port
    is given."""
    with open(path, "w") as f:
        for name, port in users:
            proxy = f"proxy host=127.0.0.1 port={port}" if port is not None else ""
            f.write(f"{name}:{{PLAIN}}{PASSWORD}::::::{proxy}\n")
    os.chmod(path, 0o644)


def edited(template, edits):
    """template with each (old, new) replaced; old must occur exactly once, so
    that a change in the template fails loudly here instead of going unnoticed."""
    for old, new in edits:
        if template.count(old) != 1:
            raise RuntimeError(f"benchlib: {old!r} is not in the config template once")
        template = template.replace(old, new)
    return template


class ConfiguredServer(Server):
    """A server that reads a config file in its directory: its template, then
    what all of its kind have in common (instance), edited by edits (see
    edited()), then the extra lines, formatted with config_values(). Its
    passdb is the passwd-file passwd_path (or what edits make of it)."""

    config_file = None
    template = ""
    instance = ""

    def __init__(self, workdir, passwd_path, cpus=None, name=None, edits=(), extra=""):
        super().__init__(workdir, cpus, name)
        self.passwd_path = passwd_path
        self.edits, self.extra = edits, extra

    def config_values(self):
        return {"dir": self.dir, "passwd": self.passwd_path, "port": self.port}

    @property
    def config_path(self):
        return os.path.join(self.dir, self.config_file)

    def write_config(self):
        text = edited(self.template + self.instance, self.edits) + self.extra
        with open(self.config_path, "w") as f:
            f.write(text.format(**self.config_values()))


# What every Dovecot instance of the benchmarks has besides its template: a
# name, directories and a log of its own, loopback only, the passwd-file
# {passwd}, the users' homes in its directory.
DOVECOT_INSTANCE = """\
instance_name = {name}
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
listen = 127.0.0.1
passdb {{
  driver = passwd-file
  args = {passwd}
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={dir}/home/%u
}}
"""


class DovecotServer(ConfiguredServer):
    """`dovecot -F -c workdir/dovecot.conf`."""

    name = "dovecot"
    config_file = "dovecot.conf"
    instance = DOVECOT_INSTANCE

    def config_values(self):
        return {**super().config_values(), "name": f"mrbench{os.getpid()}-{self.name}"}

    def prepare(self):
        home = os.path.join(self.dir, "home")
        os.makedirs(home, exist_ok=True)
        os.chmod(self.dir, 0o755)  # Dovecot's unprivileged users traverse it
        os.chown(home, pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid)
        self.write_config()

    def argv(self):
        return ["dovecot", "-F", "-c", self.config_path]


# What every mailrouted of the benchmarks has besides its template: the
# passwd-file {passwd}.
MAILROUTE_INSTANCE = """\
listen = 127.0.0.1
hostname = router.bench
base_dir = {dir}/run
workers = {workers}
log_path = {dir}/mailroute.log
login_trusted_networks = 127.0.0.0/8
passdb {{
  driver = passwd-file
  args = {passwd}
}}
"""


class MailrouteServer(ConfiguredServer):
    """`mailrouted -c workdir/mailroute.conf`, logging to workdir/mailroute.log."""

    name = "mailroute"
    config_file = "mailroute.conf"
    instance = MAILROUTE_INSTANCE
    subdirs = ("run",)

    def __init__(self, workdir, binary, passwd_path, workers, cpus=None, **variant):
        super().__init__(workdir, passwd_path, cpus, **variant)
        self.binary = binary
        self.workers = workers

    @property
    def log_path(self):
        return os.path.join(self.dir, "mailroute.log")

    def config_values(self):
        return {**super().config_values(), "workers": self.workers}

    def prepare(self):
        for sub in self.subdirs:
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        self.write_config()

    def argv(self):
        return [self.binary, "-c", self.config_path]

    def log_lines(self):
        """The lines of its log so far."""
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            yield from f


CERT_TEMPLATE = """\
cn = "router.bench"
organization = "mailroute benchmark"
dns_name = "router.bench"
ip_address = "127.0.0.1"
tls_www_server
signing_key
expiration_days = 30
"""
KEY_ARGS = {"ecdsa": ["--key-type=ecdsa", "--curve=secp256r1"],
            "rsa": ["--key-type=rsa", "--bits=2048"]}


class Certificate:
    """A self-signed server certificate for 127.0.0.1 (certtool, GnuTLS), key
    ECDSA P-256 or RSA 2048: .cert and .key are PEM files."""

    def __init__(self, directory, key_type="ecdsa"):
        self.dir = directory
        self.key_type = key_type
        self.cert = os.path.join(directory, f"router-{key_type}.pem")
        self.key = os.path.join(directory, f"router-{key_type}.key")

    def generate(self):
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        template = os.path.join(self.dir, "router.tmpl")
        with open(template, "w") as f:
            f.write(CERT_TEMPLATE)
        self._certtool("--generate-privkey", *KEY_ARGS[self.key_type], "--outfile", self.key)
        os.chmod(self.key, 0o644)  # Dovecot reads it unprivileged; a throw-away key
        self._certtool("--generate-self-signed", "--load-privkey", self.key,
                       "--template", template, "--outfile", self.cert)
        return self

    @staticmethod
    def _certtool(*args):
        result = subprocess.run(["certtool", *args], capture_output=True, text=True,
                                timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"certtool {' '.join(args)} failed:\n{result.stderr}")
