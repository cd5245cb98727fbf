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

from .dovecot import DovecotInstance, write_passwd_file

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


class DovecotSubmission(DovecotInstance):
    def __init__(self, workdir, relay_port, name="submission-backend", port=None, users=None):
        super().__init__(workdir, name, port)
        self.relay_port = relay_port
        self.users = dict(users or {})

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
            write_passwd_file(os.path.join(self.users_dir, user), user_line(user, value))
        self.users.update(users)

    def prepare(self):
        self.set_users(self.users)

    def config_text(self):
        return CONFIG.format(name=self.name, dir=self.dir, port=self.port,
                             relay_port=self.relay_port)
