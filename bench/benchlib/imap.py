"""The servers and the load of the IMAP benchmark (bench/imap_bench.py):

- Mini: bench/imap-mini, the IMAP backend that does nothing but log anyone in;
- DovecotImapBackend: a real Dovecot 2.3 IMAP server (passwd-file users,
  Maildir as nobody), the optional "real backend" scenario;
- DovecotImapProxy: Dovecot 2.3 as the IMAP login proxy mailroute is compared
  with (imap-login in high-performance mode, service_count = 0);
- MailrouteImap: mailrouted with an IMAP and an IMAPS listener;
- make_cert: a self-signed certificate both proxies serve;
- run_load / IdleLoad: bench/imap-load runs, one JSON line each;
- pss_kib: the proportional set size of a process group.

The proxies read the same passwd-file (write_passwd_file): the same users,
the same {PLAIN} password check, the same `proxy host= port=` fields. Every
process runs in its own session and is stopped by its PID (procs.Proc).
"""

import grp
import json
import os
import pwd
import select
import signal
import subprocess
import time

from .procs import Proc, free_port, group_members, pinned, port_open, wait_until

START_TIMEOUT = 15
PASSWORD = "x"


def write_passwd_file(path, groups):
    """groups: [(pattern with %d, count, backend port)]: PATTERN0 .. PATTERN<count-1>
    with password PASSWORD, proxied to 127.0.0.1:port."""
    with open(path, "w") as f:
        for pattern, count, port in groups:
            for i in range(count):
                f.write(f"{pattern.replace('%d', str(i))}:{{PLAIN}}{PASSWORD}::::::"
                        f"proxy host=127.0.0.1 port={port}\n")
    os.chmod(path, 0o644)


def write_backend_users(path, pattern, count):
    """A Dovecot backend's own passwd-file: the same users and password."""
    with open(path, "w") as f:
        for i in range(count):
            f.write(f"{pattern.replace('%d', str(i))}:{{PLAIN}}{PASSWORD}::::::\n")
    os.chmod(path, 0o644)


def make_cert(directory, key_type="ecdsa"):
    """A self-signed server certificate for 127.0.0.1 (certtool, GnuTLS);
    key_type ecdsa (P-256) or rsa (2048 bits). Returns (cert path, key path)."""
    os.makedirs(directory, exist_ok=True)
    key = os.path.join(directory, f"server-{key_type}.key")
    cert = os.path.join(directory, f"server-{key_type}.pem")
    template = os.path.join(directory, "server.tmpl")
    with open(template, "w") as f:
        f.write('cn = "router.bench"\nip_address = "127.0.0.1"\ntls_www_server\n'
                'signing_key\nencryption_key\nexpiration_days = 30\n')
    keyargs = ["--key-type", "ecdsa", "--curve", "secp256r1"] if key_type == "ecdsa" else \
        ["--key-type", "rsa", "--bits", "2048"]
    subprocess.run(["certtool", "--generate-privkey", *keyargs, "--outfile", key],
                   check=True, capture_output=True, timeout=60)
    subprocess.run(["certtool", "--generate-self-signed", "--load-privkey", key,
                    "--template", template, "--outfile", cert],
                   check=True, capture_output=True, timeout=60)
    os.chmod(key, 0o644)  # Dovecot's config process reads it; a throw-away key
    return cert, key


def _wait_listening(proc, ports, what):
    wait_until(lambda: all(port_open(p) for p in ports) or not proc.alive(), START_TIMEOUT,
               f"{what} to listen on 127.0.0.1:{ports}")
    if not proc.alive():
        raise RuntimeError(f"{what} exited at start:\n{proc.output_tail()}")


def _prepare_dovecot_dir(workdir):
    os.makedirs(os.path.join(workdir, "home"), exist_ok=True)
    os.chmod(workdir, 0o755)  # Dovecot's unprivileged users traverse it
    os.chown(os.path.join(workdir, "home"), pwd.getpwnam("nobody").pw_uid,
             grp.getgrnam("nogroup").gr_gid)


class Server:
    """A server process in workdir, restartable on the same ports."""

    name = "server"

    def __init__(self, workdir, cpus=None):
        self.dir = workdir
        self.cpus = cpus
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid

    def ports(self):
        raise NotImplementedError

    def argv(self):
        raise NotImplementedError

    def prepare(self):
        os.makedirs(self.dir, exist_ok=True)

    def start(self):
        self.prepare()
        self.proc = Proc(self.name, pinned(self.argv(), self.cpus),
                         os.path.join(self.dir, f"{self.name}.out"), cwd=self.dir).start()
        _wait_listening(self.proc, self.ports(), self.name)
        return self

    def stop(self):
        if self.proc is None:
            return None
        return self.proc.stop()

    def restart(self):
        self.stop()
        # The old processes must be gone before the ports are bound again.
        wait_until(lambda: not group_members(self.proc.pid), 10, f"{self.name} to exit")
        return self.start()


class Mini(Server):
    name = "imap-mini"

    def __init__(self, workdir, binary, cpus=None):
        super().__init__(workdir, cpus)
        self.binary = binary
        self.port = free_port()

    def ports(self):
        return [self.port]

    def argv(self):
        return [self.binary, "-p", self.port]


DOVECOT_BACKEND_CONFIG = """\
# A real Dovecot IMAP backend: passwd-file users, Maildir as nobody.
instance_name = {name}
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
login_trusted_networks = 127.0.0.0/8
mail_location = maildir:~/Maildir
mail_max_userip_connections = 1000
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {users}
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
  service_count = 0
  process_min_avail = 2
}}
"""


class DovecotImapBackend(Server):
    name = "dovecot-backend"

    def __init__(self, workdir, pattern, count, cpus=None):
        super().__init__(workdir, cpus)
        self.pattern, self.count = pattern, count
        self.port = free_port()

    def ports(self):
        return [self.port]

    def prepare(self):
        _prepare_dovecot_dir(self.dir)
        users = os.path.join(self.dir, "users")
        write_backend_users(users, self.pattern, self.count)
        with open(os.path.join(self.dir, "dovecot.conf"), "w") as f:
            f.write(DOVECOT_BACKEND_CONFIG.format(name=f"mrbench-be{os.getpid()}", dir=self.dir,
                                                  port=self.port, users=users))

    def argv(self):
        return ["dovecot", "-F", "-c", os.path.join(self.dir, "dovecot.conf")]


DOVECOT_PROXY_CONFIG = """\
# Dovecot 2.3 as the IMAP login proxy mailroute is compared with. imap-login
# in high-performance mode (service_count = 0: one process serves many
# clients, about one per CPU), room for {clients} clients per process so
# that 10,000 idle sessions fit; built-in defaults otherwise.
instance_name = {name}
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain
login_trusted_networks = 127.0.0.0/8
passdb {{
  driver = passwd-file
  args = {passwd}
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
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
  service_count = 0
  process_min_avail = {processes}
  process_limit = {process_limit}
  client_limit = {clients}
  vsz_limit = 1G
}}
"""


class DovecotImapProxy(Server):
    name = "dovecot"

    def __init__(self, workdir, passwd_path, cert, cpus=None, processes=2, clients=6000):
        super().__init__(workdir, cpus)
        self.passwd_path = passwd_path
        self.cert = cert
        self.processes, self.clients = processes, clients
        self.port, self.tls_port = free_port(), free_port()

    def ports(self):
        return [self.port, self.tls_port]

    def prepare(self):
        _prepare_dovecot_dir(self.dir)
        with open(os.path.join(self.dir, "dovecot.conf"), "w") as f:
            f.write(DOVECOT_PROXY_CONFIG.format(
                name=f"mrbench-px{os.getpid()}", dir=self.dir, port=self.port,
                tls_port=self.tls_port, passwd=self.passwd_path, cert=self.cert[0],
                key=self.cert[1], processes=self.processes,
                process_limit=max(4, 2 * self.processes), clients=self.clients))

    def argv(self):
        return ["dovecot", "-F", "-c", os.path.join(self.dir, "dovecot.conf")]


MAILROUTE_CONFIG = """\
# mailrouted under benchmark: the IMAP login proxy only.
protocols = imap
listen = 127.0.0.1
hostname = router.bench
base_dir = {dir}/run
workers = {workers}
log_path = {dir}/mailroute.log
login_trusted_networks = 127.0.0.0/8
disable_plaintext_auth = no
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
passdb {{
  driver = passwd-file
  args = {passwd}
}}
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


class MailrouteImap(Server):
    name = "mailroute"

    def __init__(self, workdir, binary, passwd_path, cert, workers=2, cpus=None):
        super().__init__(workdir, cpus)
        self.binary = binary
        self.passwd_path = passwd_path
        self.cert = cert
        self.workers = workers
        self.port, self.tls_port = free_port(), free_port()

    @property
    def log_path(self):
        return os.path.join(self.dir, "mailroute.log")

    def ports(self):
        return [self.port, self.tls_port]

    def prepare(self):
        os.makedirs(os.path.join(self.dir, "run"), exist_ok=True)
        with open(os.path.join(self.dir, "mailroute.conf"), "w") as f:
            f.write(MAILROUTE_CONFIG.format(dir=self.dir, workers=self.workers, port=self.port,
                                            tls_port=self.tls_port, passwd=self.passwd_path,
                                            cert=self.cert[0], key=self.cert[1]))

    def argv(self):
        return [self.binary, "-c", os.path.join(self.dir, "mailroute.conf")]

    def login_lines(self):
        """(logins proxied, logins refused or failed) in its log so far."""
        proxied = failed = 0
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            for line in f:
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


def group_cpu_by_name(pgid):
    """{command name: utime+stime seconds} over a process group's live members
    (a Dovecot instance: imap-login, auth, log, ...)."""
    clk = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in group_members(pgid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                text = f.read()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0) + (int(fields[11]) + int(fields[12])) / clk
    return out


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
