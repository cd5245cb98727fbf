"""The servers of the LMTP benchmark (bench/lmtp_bench.py), each in a
directory of its own:

- Sink: Postfix's smtp-sink -L, the LMTP backend that throws mail away;
- DovecotProxy: Dovecot 2.3 as an LMTP proxy (lmtp_proxy = yes), routing by
  the passdb's `proxy host= port=` fields, defaults otherwise;
- Mailroute: mailrouted routing by the same passwd-file, logging one line
  per recipient to a file.

Both routers read the same passwd-file (servers.write_passwd_file), so they
make the same decisions. sql.py and tls.py make variants of them: another
name, edits to the config template (servers.edited) and lines added to it.
"""

from .servers import DovecotServer, MailrouteServer, Server


class Sink(Server):
    """smtp-sink answering every command and throwing the mail away; name is
    its LMTP hostname too."""

    def __init__(self, workdir, name, cpus=None):
        super().__init__(workdir, cpus, name)

    def argv(self):
        return ["smtp-sink", "-L", "-u", "nobody", "-h", self.name, f"127.0.0.1:{self.port}",
                "1024"]


DOVECOT_CONFIG = """\
# Dovecot 2.3 as the LMTP proxy mailroute is compared with: built-in
# defaults except for what a private instance on loopback needs.
protocols = lmtp
ssl = no
lmtp_proxy = yes
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
}}
"""


class DovecotProxy(DovecotServer):
    """Takes servers.ConfiguredServer's arguments: workdir, passwd_path, cpus
    and, for a variant, name, edits, extra."""

    template = DOVECOT_CONFIG


MAILROUTE_CONFIG = """\
# mailrouted under benchmark: one passwd-file, every recipient proxied.
protocols = lmtp
mail_temp_dir = {dir}/tmp
service lmtp {{
  inet_listener lmtp {{
    port = {port}
  }}
}}
"""


class Mailroute(MailrouteServer):
    """Takes servers.MailrouteServer's arguments: workdir, binary, passwd_path,
    workers, cpus and, for a variant, name (default mailroute-<workers>w),
    edits, extra."""

    template = MAILROUTE_CONFIG
    subdirs = ("run", "tmp")

    def __init__(self, workdir, binary, passwd_path, workers, cpus=None, name=None, **variant):
        super().__init__(workdir, binary, passwd_path, workers, cpus,
                         name=name or f"mailroute-{workers}w", **variant)

    def recipient_replies(self):
        """(recipient log lines, of which with a 250 reply) in its log so far."""
        lines = ok = 0
        for line in self.log_lines():
            if " rcpt=" in line and " reply=" in line:
                lines += 1
                ok += ' reply="250' in line
        return lines, ok
