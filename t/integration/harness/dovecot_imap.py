"""A private Dovecot 2.3 IMAP backend for the login proxy tests: `dovecot -F
-c FILE` on loopback, everything (base_dir, state, log, mail) in its own temp
dir, plaintext logins allowed (ssl = no), and mailroute's loopback address in
login_trusted_networks so that the ID mailroute sends (x-originating-ip, ...)
is believed.

Users live in passwd-files with {PLAIN} passwords, one file per user
(add_user; Dovecot looks at a changed passwd-file at most once a second, a
file it has never seen it reads at once), master users likewise in a
passdb with `master = yes` (add_master): a master
logs in as any user with SASL PLAIN authzid=user, authcid=master. Mail is
stored as nobody in DIR/home/<user>/Maildir. The login log lines carry rip=
(the client address, the forwarded one after ID), and auth logs "Master user
logging in as <user>", so tests can see what mailroute told the backend.

It is not an LMTP backend: see dovecot.py for that."""

import imaplib
import os

from .dovecot import DovecotInstance, login_backend_head, write_passwd_file
from .procs import wait_until

CONFIG = login_backend_head("imap") + """\
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {dir}/masters/%u
  master = yes
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {dir}/users/%u
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={dir}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


class DovecotImapBackend(DovecotInstance):
    def __init__(self, workdir, name="imap-backend", port=None):
        super().__init__(workdir, name, port)
        for sub in ("users", "masters"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)

    # --- users -------------------------------------------------------------

    def add_user(self, user, password):
        """A user who logs in with password; one file per user, written once."""
        self._write(os.path.join(self.dir, "users", user), user, password)

    def append(self, user, password, message, timeout=30):
        """APPEND message to user's INBOX straight at this backend (not
        through mailroute)."""
        imap = imaplib.IMAP4("127.0.0.1", self.port, timeout=timeout)
        try:
            assert imap.login(user, password)[0] == "OK"
            status, data = imap.append("INBOX", None, None, message)
            assert status == "OK", data
        finally:
            imap.logout()

    def add_master(self, user, password):
        """A master user: logs in as anyone with authzid=user, authcid=master."""
        self._write(os.path.join(self.dir, "masters", user), user, password)

    @staticmethod
    def _write(path, user, password):
        assert "/" not in user and not os.path.exists(path), f"user {user} added twice"
        write_passwd_file(path, f"{user}:{{PLAIN}}{password}::::::\n")

    def config_text(self):
        return CONFIG.format(name=self.name, dir=self.dir, port=self.port)

    def wait_login_lines(self, user, count=1, timeout=5):
        """The login lines of user once there are at least count of them
        (Dovecot's log process writes a moment after the client's reply)."""
        return wait_until(lambda: len(self.login_lines(user)) >= count and
                          self.login_lines(user), timeout=timeout,
                          what=f"{count} Dovecot login line(s) of {user}")

    def mentions(self, user):
        """Every log line that names user (auth look-ups included)."""
        return [line for line in self.log().splitlines() if user in line]

    def master_login_lines(self, user):
        """auth's "Master user logging in as <user>" lines."""
        return [line for line in self.log().splitlines()
                if line.endswith(f"Master user logging in as {user}")]

    def login_lines(self, user):
        """imap-login's "Login: user=<user> ..." lines."""
        return [line for line in self.log().splitlines()
                if "imap-login:" in line and "Login: " in line and f"user=<{user}>" in line]
