"""A private Dovecot 2.3 POP3 backend for the POP3 login proxy tests:
`dovecot -F -c FILE` on loopback with everything (base_dir, state, log, mail)
in its own temp dir, plaintext logins allowed (ssl = no), and 127.0.0.0/8 in
login_trusted_networks, so its greeting offers [XCLIENT] to mailroute and
the client address mailroute forwards is believed.

Users have {PLAIN} passwords (add_user); master users are in a passdb with
`master = yes` (add_master). Each user has a passwd-file of its own
(users.d/<user>): Dovecot reads a changed passwd-file again at most once a
second, so one shared file would hide a user added right after a login. Mail is stored
as nobody in DIR/home/<user>/Maildir; put_message() drops a message there
for a test to fetch. pop3-login's "Login:" lines carry rip= (the client
address, the forwarded one after XCLIENT) and session=, so tests can see what
mailroute told the backend.

Not an LMTP or IMAP backend: see dovecot.py and dovecot_imap.py."""

import grp
import os
import pwd
import time

from .dovecot import DovecotInstance, login_backend_head, write_passwd_file

CONFIG = login_backend_head("pop3") + """\
pop3_uidl_format = %08Xu%08Xv
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {dir}/masters.d/%u
  master = yes
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {dir}/users.d/%u
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={dir}/home/%u
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"""


class DovecotPop3Backend(DovecotInstance):
    def __init__(self, workdir, name="pop3-backend", port=None):
        super().__init__(workdir, name, port)
        self._messages = 0
        for sub in ("users.d", "masters.d"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)

    # --- users and mail ----------------------------------------------------

    def add_user(self, user, password):
        """A user who logs in with password (a new user: see above)."""
        self._write(os.path.join(self.dir, "users.d", user), user, password)

    def add_master(self, user, password):
        """A master user: SASL PLAIN authzid=<user>, authcid=<master>."""
        self._write(os.path.join(self.dir, "masters.d", user), user, password)

    @staticmethod
    def _write(path, user, password):
        write_passwd_file(path, f"{user}:{{PLAIN}}{password}::::::\n")

    def put_message(self, user, text):
        """Deliver text (str, LF or CRLF line ends) into user's Maildir/new,
        owned by nobody as Dovecot's own deliveries are. Returns the path."""
        uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
        top = self.maildir(user)
        for sub in ("", "cur", "new", "tmp"):
            path = os.path.join(top, sub)
            os.makedirs(path, exist_ok=True)
            os.chown(path, uid, gid)
        os.chown(os.path.dirname(top), uid, gid)  # the user's home
        self._messages += 1
        name = f"{int(time.time())}.M{self._messages}P{os.getpid()}.{self.name}"
        path = os.path.join(top, "new", name)
        with open(path, "w", newline="\n") as f:
            f.write(text.replace("\r\n", "\n"))
        os.chown(path, uid, gid)
        return path

    # --- the process -------------------------------------------------------

    def config_text(self):
        return CONFIG.format(name=self.name, dir=self.dir, port=self.port)

    def login_lines(self, user):
        """pop3-login's "Login: user=<user> ..." lines."""
        return [line for line in self.log().splitlines()
                if "pop3-login:" in line and "Login: " in line and f"user=<{user}>" in line]

    def master_login_lines(self, user):
        """auth's "Master user logging in as <user>" lines."""
        return [line for line in self.log().splitlines()
                if line.endswith(f"Master user logging in as {user}")]
