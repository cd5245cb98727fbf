"""The servers and the load of the IMAP benchmark (bench/imap_bench.py):

- Mini: bench/imap-mini, the IMAP backend that does nothing but log anyone in;
- DovecotImapBackend: a real Dovecot 2.3 IMAP server (passwd-file users,
  Maildir as nobody), the optional "real backend" scenario;
- DovecotImapProxy: Dovecot 2.3 as the IMAP login proxy mailroute is compared
  with (imap-login in high-performance mode, service_count = 0);
- MailrouteImap: mailrouted with an IMAP and an IMAPS listener;
- load_argv / IdleLoad: bench/imap-load runs, one JSON line each;
- pss_kib: the proportional set size of a process group.

The proxies read the same passwd-file (servers.write_passwd_file of
numbered() users): the same users, the same {PLAIN} password check, the same
`proxy host= port=` fields; they serve the same servers.Certificate. Every
process runs in its own session and is stopped by its PID (servers.Server).
"""

import json
import os
import select
import signal
import subprocess
import time

from .procs import free_port, group_members, pinned
from .servers import DovecotServer, MailrouteServer, Server, write_passwd_file


def numbered(pattern, count, port=None):
    """passwd-file users PATTERN0 .. PATTERN<count-1> (pattern with %d),
    proxied to 127.0.0.1:port if a port is given."""
    return [(pattern.replace("%d", str(i)), port) for i in range(count)]


class Mini(Server):
    name = "imap-mini"

    def __init__(self, workdir, binary, cpus=None):
        super().__init__(workdir, cpus)
        self.binary = binary

    def argv(self):
        return [self.binary, "-p", self.port]


# What both Dovecot IMAP instances have besides their own settings: logins
# with a plaintext password from loopback, plain IMAP on {port}, imap-login
# in high-performance mode (one process serves many clients). Dovecot merges
# this imap-login section with the instance's own.
DOVECOT_IMAP = """\
protocols = imap
disable_plaintext_auth = no
auth_mechanisms = plain
login_trusted_networks = 127.0.0.0/8
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  service_count = 0
}}
"""

DOVECOT_BACKEND_CONFIG = """\
# A real Dovecot IMAP backend: passwd-file users, Maildir as nobody.
ssl = no
mail_location = maildir:~/Maildir
mail_max_userip_connections = 1000
service imap-login {{
  inet_listener imaps {{
    port = 0
  }}
  process_min_avail = 2
}}
""" + DOVECOT_IMAP


class DovecotImapBackend(DovecotServer):
    name = "dovecot-backend"
    template = DOVECOT_BACKEND_CONFIG

    def __init__(self, workdir, pattern, count, cpus=None):
        super().__init__(workdir, os.path.join(workdir, "users"), cpus)
        self.pattern, self.count = pattern, count

    def prepare(self):
        os.makedirs(self.dir, exist_ok=True)
        write_passwd_file(self.passwd_path, numbered(self.pattern, self.count))
        super().prepare()


DOVECOT_PROXY_CONFIG = """\
# Dovecot 2.3 as the IMAP login proxy mailroute is compared with. imap-login
# in high-performance mode (service_count = 0: one process serves many
# clients, about one per CPU), room for {clients} clients per process so
# that 10,000 idle sessions fit; built-in defaults otherwise.
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
service imap-login {{
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
  process_min_avail = {processes}
  process_limit = {process_limit}
  client_limit = {clients}
  vsz_limit = 1G
}}
""" + DOVECOT_IMAP


class Proxy:
    """What both proxies have besides a servers.ConfiguredServer's (a mixin):
    the certificate (servers.Certificate) and an implicit-TLS port."""

    def __init__(self, *args, certificate, **kwargs):
        super().__init__(*args, **kwargs)
        self.certificate = certificate
        self.tls_port = free_port()

    def ports(self):
        return [self.port, self.tls_port]

    def config_values(self):
        return {**super().config_values(), "tls_port": self.tls_port,
                "cert": self.certificate.cert, "key": self.certificate.key}


class DovecotImapProxy(Proxy, DovecotServer):
    name = "dovecot"
    template = DOVECOT_PROXY_CONFIG

    def __init__(self, workdir, passwd_path, certificate, cpus=None, processes=2, clients=6000):
        super().__init__(workdir, passwd_path, cpus, certificate=certificate)
        self.processes, self.clients = processes, clients

    def config_values(self):
        return {**super().config_values(), "processes": self.processes,
                "process_limit": max(4, 2 * self.processes), "clients": self.clients}


MAILROUTE_CONFIG = """\
# mailrouted under benchmark: the IMAP login proxy only.
protocols = imap
disable_plaintext_auth = no
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
service imap {{
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = {tls_port}
    ssl = yes
  }}
}}
"""


class MailrouteImap(Proxy, MailrouteServer):
    name = "mailroute"
    template = MAILROUTE_CONFIG

    def __init__(self, workdir, binary, passwd_path, certificate, workers=2, cpus=None):
        super().__init__(workdir, binary, passwd_path, workers, cpus, certificate=certificate)

    def login_lines(self):
        """(logins proxied, logins refused or failed) in its log so far."""
        proxied = failed = 0
        for line in self.log_lines():
            if " proxied to " in line:
                proxied += 1
            elif "login of " in line:
                failed += 1
        return proxied, failed


# --- /proc: memory by process group ---------------------------------------------

def pss_kib(pgid):
    """Sum of Pss over the live members of a process group (smaps_rollup):
    shared pages count once in all, split between the processes mapping them."""
    total = 0
    for pid in group_members(pgid):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue  # exited in between
    return total


# --- imap-load ----------------------------------------------------------------------

def load_argv(binary, mode, port, cpus=None, **options):
    """imap-load's command line; options: concurrency, duration, logins, sessions,
    hold, user, users, password, tls (bool)."""
    flags = {"concurrency": "-c", "duration": "-d", "logins": "-n", "sessions": "-s",
             "user": "-u", "users": "-U", "password": "-P", "hold": "--hold"}
    argv = [binary, mode, "-p", port]
    for key, value in options.items():
        if key == "tls":
            if value:
                argv.append("--tls")
        elif value is not None:
            argv += [flags[key], value]
    return pinned(argv, cpus)


def last_json(path, mode):
    """The last JSON line of `mode` in an imap-load output file, or None."""
    found = None
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("{"):
                    try:
                        data = json.loads(line)
                    except ValueError:
                        continue
                    if data.get("mode") == mode:
                        found = data
    except OSError:
        pass
    return found


class IdleLoad:
    """`imap-load idle` holding sessions: start() returns once they are all
    logged in (its first JSON line), stop() closes its stdin, which makes it
    close them and exit; it is killed by its PID when it does not."""

    def __init__(self, argv, log_path):
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self.popen = None
        self._pending = b""  # read from its stdout, not yet returned

    def start(self, timeout):
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=log,
                                          start_new_session=True)
        line = self._read_line(timeout)
        if line is None:
            raise RuntimeError(f"imap-load idle gave no report in {timeout} s; see "
                               f"{self.log_path}")
        return json.loads(line)

    def _read_line(self, timeout):
        deadline = time.monotonic() + timeout
        data = self._pending
        fd = self.popen.stdout.fileno()
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    return None
                data += chunk
        line, self._pending = data.split(b"\n", 1)
        with open(self.log_path, "ab") as log:
            log.write(line + b"\n")
        return line.decode()

    def stop(self, timeout=30):
        """Close the sessions; the final JSON line (held, dropped) or None."""
        if self.popen is None:
            return None
        final = None
        try:
            self.popen.stdin.close()
            final = self._read_line(timeout)
            self.popen.wait(timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            if self.popen.poll() is None:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)
            self.popen.stdout.close()
        return json.loads(final) if final else None
