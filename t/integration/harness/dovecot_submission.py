"""A private Dovecot 2.3 submission backend: `dovecot -F -c FILE` on loopback
with everything (base_dir, state, log) inside its own temp dir.

Users come from passwd-files with {PLAIN} passwords (set_users()), one file
per user: with one shared file, a user added right after another login was
sometimes still unknown to Dovecot (it did not notice the change within the
same second), while a new file is read at once. The userdb is static. Accepted mail is relayed
to `relay_port` (an smtp-sink, see sink.py), so a test sees what went
through in the sink's dumps. `ssl = no` and `disable_plaintext_auth = no`:
AUTH PLAIN works in the clear. 127.0.0.0/8 is trusted, so Dovecot
advertises XCLIENT to mailroute and its log shows the forwarded client
(`rip=`) and session on its "Login:" lines.
"""

import os
import pwd
import grp

from .procs import Proc, free_port, port_open, wait_until

CONFIG = """\
instance_name = {name}
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
info_log_path = {dir}/dovecot.log
protocols = submission
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_verbose = yes
hostname = {name}.test
login_trusted_networks = 127.0.0.0/8
submission_relay_host = 127.0.0.1
submission_relay_port = {relay_port}
submission_relay_trusted = yes
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {dir}/users/%u
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={dir}/home/%u
}}
service submission-login {{
  inet_listener submission {{
    address = 127.0.0.1
    port = {port}
  }}
}}
"""


def user_line(user, value):
    """value: password, or (password, extra fields)."""
    password, extra = value if isinstance(value, tuple) else (value, "")
    return f"{user}:{{PLAIN}}{password}::::::{extra}\n"


class DovecotSubmission:
    def __init__(self, workdir, relay_port, name="submission-backend", port=None, users=None):
        self.dir = str(workdir)
        self.name = name
        self.port = port or free_port()
        self.relay_port = relay_port
        self.users = dict(users or {})
        self.proc = None

    @property
    def log_path(self):
        return os.path.join(self.dir, "dovecot.log")

    @property
    def users_dir(self):
        return os.path.join(self.dir, "users")

    def set_users(self, users):
        """Add users ({name: password or (password, extra fields)}); do not
        change a user's password right after a login (see above)."""
        os.makedirs(self.users_dir, exist_ok=True)
        os.chmod(self.users_dir, 0o755)
        for user, value in users.items():
            assert "/" not in user
            path = os.path.join(self.users_dir, user)
            with open(path + ".new", "w") as f:
                f.write(user_line(user, value))
            os.chmod(path + ".new", 0o644)
            os.replace(path + ".new", path)
        self.users.update(users)

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)  # Dovecot's unprivileged users must traverse it
        home = os.path.join(self.dir, "home")
        os.makedirs(home, exist_ok=True)
        os.chown(home, pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid)
        self.set_users(self.users)
        conf = os.path.join(self.dir, "dovecot.conf")
        with open(conf, "w") as f:
            f.write(self.config_text())
        self.proc = Proc(["dovecot", "-F", "-c", conf],
                         os.path.join(self.dir, "dovecot.out"), cwd=self.dir).start()
        wait_until(lambda: port_open(self.port) or not self.proc.alive(), timeout=15,
                   what=f"Dovecot {self.name} to listen on {self.port}")
        assert self.proc.alive(), f"Dovecot {self.name} exited:\n{self.proc.output()}"
        return self

    def config_text(self):
        return CONFIG.format(name=self.name, dir=self.dir, port=self.port,
                             relay_port=self.relay_port)

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
