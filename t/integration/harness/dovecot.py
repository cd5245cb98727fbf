"""A private Dovecot 2.3 LMTP backend: `dovecot -F -c FILE` on loopback with
everything (base_dir, state, log, mail) inside its own temp dir.

Any user exists (static passdb/userdb); mail is stored as nobody in
DIR/home/<user>/Maildir. The log prefix carries `rip=` (the client address,
the forwarded one after XCLIENT), so tests can see what mailroute forwarded.

With `tls=` (an object with .cert and .key paths, see certs.py) it has
`ssl = yes`: its plain LMTP listener offers STARTTLS and a second listener
(`tls_port`) speaks implicit TLS. `client_ca=` (a PEM path) makes it ask
clients for a certificate.
"""

import os
import pwd
import grp

from .procs import Proc, free_port, port_open, wait_until

# The head of a login backend's config (IMAP, POP3): its own instance and
# logs, plaintext allowed, logins logged with the fields tests look for, and
# mailroute trusted. "{protocols}" is filled in here, the rest by the caller.
LOGIN_BACKEND_HEAD = """\
instance_name = {name}
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
info_log_path = {dir}/dovecot.log
protocols = {protocols}
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
auth_verbose = yes
hostname = {name}.test
login_greeting = {name} ready.
login_trusted_networks = 127.0.0.0/8
login_log_format_elements = user=<%u> method=%m rip=%r lip=%l mpid=%e %c session=<%{{session}}>
mail_location = maildir:~/Maildir
mail_log_prefix = "%s(%u)<%{{pid}}><%{{session}}> rip=%{{rip}}: "
mail_max_userip_connections = 1000
"""


def login_backend_head(protocol):
    return LOGIN_BACKEND_HEAD.replace("{protocols}", protocol)


CONFIG = """\
instance_name = {name}
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
info_log_path = {dir}/dovecot.log
protocols = lmtp
listen = 127.0.0.1
{ssl}
hostname = {name}.test
login_trusted_networks = 127.0.0.0/8
mail_location = maildir:~/Maildir
mail_log_prefix = "%s(%u)<%{{pid}}><%{{session}}> rip=%{{rip}}: "
passdb {{
  driver = static
  args = nopassword=y
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
{tls_listener}}}
"""

TLS_LISTENER = """\
  inet_listener lmtps {{
    address = 127.0.0.1
    port = {port}
    ssl = yes
  }}
"""


def write_passwd_file(path, line):
    """Write one passwd-file atomically, readable by Dovecot's auth process."""
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(line)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


class DovecotInstance:
    """What every private Dovecot of the harness shares: a temp dir it can
    traverse, a home dir owned by nobody, `dovecot -F -c FILE` started with
    the subclass's config_text() and waited for on its ports, and its log."""

    def __init__(self, workdir, name, port=None):
        self.dir = str(workdir)
        self.name = name
        self.port = port or free_port()
        self.proc = None

    @property
    def log_path(self):
        return os.path.join(self.dir, "dovecot.log")

    def maildir(self, user):
        return os.path.join(self.dir, "home", user, "Maildir")

    def ports(self):
        """The ports start() waits for."""
        return [self.port]

    def prepare(self):
        """Files the configuration refers to (users), written before start."""

    def config_text(self):
        raise NotImplementedError

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)  # Dovecot's unprivileged users must traverse it
        home = os.path.join(self.dir, "home")
        os.makedirs(home, exist_ok=True)
        os.chown(home, pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid)
        self.prepare()
        conf = os.path.join(self.dir, "dovecot.conf")
        with open(conf, "w") as f:
            f.write(self.config_text())
        self.proc = Proc(["dovecot", "-F", "-c", conf],
                         os.path.join(self.dir, "dovecot.out"), cwd=self.dir).start()
        ports = self.ports()
        wait_until(lambda: all(port_open(p) for p in ports) or not self.proc.alive(),
                   timeout=15, what=f"Dovecot {self.name} to listen on {ports}")
        assert self.proc.alive(), f"Dovecot {self.name} exited:\n{self.proc.output()}"
        return self

    def stop(self):
        if self.proc:
            self.proc.stop()

    def log(self):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_lines(self, *needles):
        return [line for line in self.log().splitlines() if all(n in line for n in needles)]


class DovecotBackend(DovecotInstance):
    def __init__(self, workdir, name="backend", port=None, tls=None, tls_port=None,
                 client_ca=None):
        super().__init__(workdir, name, port)
        self.tls = tls
        self.tls_port = (tls_port or free_port()) if tls else None
        self.client_ca = client_ca

    def ports(self):
        return [p for p in (self.port, self.tls_port) if p]

    def config_text(self):
        ssl, listener = "ssl = no", ""
        if self.tls:
            ssl = f"ssl = yes\nssl_cert = <{self.tls.cert}\nssl_key = <{self.tls.key}"
            listener = TLS_LISTENER.format(port=self.tls_port)
        if self.client_ca:
            ssl += f"\nssl_ca = <{self.client_ca}\nssl_verify_client_cert = yes"
        return CONFIG.format(name=self.name, dir=self.dir, port=self.port, ssl=ssl,
                             tls_listener=listener)
