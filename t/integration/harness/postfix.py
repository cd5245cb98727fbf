"""A private Postfix 3.7 instance: its own config dir, queue and log in a
temp dir, smtpd on a loopback port, every mail for the virtual domains
handed to one LMTP destination (mailroute, or a Dovecot directly).

Retries are short (a deferred message is tried again within seconds) and
`flush()` asks for an immediate queue run.

With `lmtp_tls_ca=` (a PEM path) the LMTP client insists on TLS
(`lmtp_tls_security_level`, default encrypt) and trusts that CA; its TLS log
lines ("... TLS connection established to ...") go to the maillog.
`extra_main_cf` is appended to main.cf as it is."""

import os
import re

from .procs import Proc, free_port, port_open, run, wait_until

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.test
mydomain = test
myorigin = postfix.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
virtual_mailbox_domains = {domains}
virtual_transport = {transport}
alias_maps =
alias_database =
local_recipient_maps =
relayhost =
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
biff = no
smtputf8_enable = no
minimal_backoff_time = 2s
maximal_backoff_time = 4s
queue_run_delay = 2s
lmtp_connection_cache_on_demand = no
bounce_queue_lifetime = 0
maximal_queue_lifetime = 1h
"""

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

# Caches TLS sessions and seeds the PRNG for the TLS clients.
TLSMGR = "tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n"

LMTP_TLS_CF = """\
lmtp_tls_security_level = {level}
lmtp_tls_CAfile = {ca}
lmtp_tls_loglevel = 1
"""


class Postfix:
    def __init__(self, workdir, transport, domains="example.com", port=None,
                 lmtp_tls_ca=None, lmtp_tls_level="encrypt", extra_main_cf=""):
        """transport: e.g. "lmtp:inet:127.0.0.1:24024" or "lmtp:unix:/path"."""
        self.dir = str(workdir)
        self.lmtp_tls_ca = lmtp_tls_ca
        self.lmtp_tls_level = lmtp_tls_level
        self.extra_main_cf = extra_main_cf
        self.conf_dir = os.path.join(self.dir, "etc")
        self.transport = transport
        self.domains = domains
        self.port = port or free_port()
        self.proc = None

    @property
    def log_path(self):
        return os.path.join(self.dir, "maillog")

    def start(self):
        os.makedirs(self.conf_dir, exist_ok=True)
        os.makedirs(os.path.join(self.dir, "queue"), exist_ok=True)
        os.chmod(self.dir, 0o755)
        with open(os.path.join(self.conf_dir, "main.cf"), "w") as f:
            f.write(self.main_cf_text())
        with open(os.path.join(self.conf_dir, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(port=self.port) + (TLSMGR if self.lmtp_tls_ca else ""))
        check = run(["postfix", "-c", self.conf_dir, "check"])
        assert check.returncode == 0, f"postfix check failed:\n{check.stderr}{self.log()}"
        self.proc = Proc(["/usr/lib/postfix/sbin/master", "-d", "-c", self.conf_dir],
                         os.path.join(self.dir, "master.out"), cwd=self.dir).start()
        wait_until(lambda: port_open(self.port) or not self.proc.alive(), timeout=15,
                   what=f"Postfix smtpd on {self.port}")
        assert self.proc.alive(), f"Postfix master exited:\n{self.proc.output()}"
        return self

    def main_cf_text(self):
        text = MAIN_CF.format(dir=self.dir, domains=self.domains, transport=self.transport)
        if self.lmtp_tls_ca:
            text += LMTP_TLS_CF.format(level=self.lmtp_tls_level, ca=self.lmtp_tls_ca)
        return text + self.extra_main_cf

    def stop(self):
        if self.proc:
            self.proc.stop()

    def flush(self):
        result = run(["postqueue", "-c", self.conf_dir, "-f"])
        assert result.returncode == 0, f"postqueue -f failed: {result.stderr}"

    def queue_ids(self):
        """Queue ids of the messages still in the queue."""
        result = run(["postqueue", "-c", self.conf_dir, "-j"])
        assert result.returncode == 0, f"postqueue -j failed: {result.stderr}"
        return re.findall(r'"queue_id": "([0-9A-F]+)"', result.stdout)

    def queue_empty(self):
        return not self.queue_ids()

    def log(self):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_queue_empty(self, timeout=30):
        wait_until(self.queue_empty, timeout=timeout, interval=0.2,
                   what="Postfix queue to be empty")

    def flush_until_empty(self, timeout=30):
        """Flush the queue again and again until it is empty (a retry may
        still fail for a moment while a backend comes back)."""
        def flushed():
            self.flush()
            try:
                wait_until(self.queue_empty, timeout=2, interval=0.2)
                return True
            except AssertionError:
                return False
        wait_until(flushed, timeout=timeout, interval=0, what="Postfix queue to drain")

    def delivery_status(self, rcpt):
        """The status= words Postfix logged for rcpt, in order."""
        return re.findall(r"to=<" + re.escape(rcpt) + r">,.* status=(\w+)", self.log())

    def wait_status(self, rcpt, status, timeout=20):
        """Wait for Postfix to log status for rcpt; a bounce fails at once."""
        def logged():
            statuses = self.delivery_status(rcpt)
            return status in statuses or "bounced" in statuses
        wait_until(logged, timeout=timeout, interval=0.1,
                   what=f"Postfix to log {rcpt} {status}")
        lines = [line for line in self.log().splitlines() if f"to=<{rcpt}>" in line]
        assert status in self.delivery_status(rcpt), "\n".join(lines)
