"""A private MariaDB server for the SQL passdb tests: `mariadbd` (Debian's
mariadb-server) with its own datadir, UNIX socket and general log in a temp
dir, on a loopback address and port of the test's choosing.

Several servers may share one port on different loopback addresses
(127.0.0.2, 127.0.0.3), which is how Dovecot's `connect = host=A host=B
port=N` addresses them. The first install is copied for the next ones
(`clone_from`), which is faster than installing again. Statements run
through the `mariadb` client as root over the socket; the general log shows
every query mailroute sent, so tests can count them."""

import os
import shutil
import signal
import subprocess

from .procs import Proc, wait_until

DB_USER = "mailroute"
DB_PASSWORD = "Secr'et-pw"
DB_NAME = "mail"


class MariaDB:
    def __init__(self, workdir, host="127.0.0.2", port=None, name="db"):
        self.dir = str(workdir)
        self.host = host
        self.port = port
        self.name = name
        self.datadir = os.path.join(self.dir, "data")
        self.socket = os.path.join(self.dir, "sock")
        self.general_log = os.path.join(self.dir, "general.log")
        self.proc = None

    # --- life cycle ------------------------------------------------------

    def install(self, clone_from=None):
        """Create the datadir: a fresh install, or a copy of a stopped
        server's datadir (same users and databases)."""
        os.makedirs(self.dir, exist_ok=True)
        if clone_from is not None:
            shutil.copytree(clone_from.datadir, self.datadir)
            return self
        result = subprocess.run(
            ["mariadb-install-db", "--no-defaults", "--user=root", f"--datadir={self.datadir}",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"mariadb-install-db failed:\n{result.stderr}"
        return self

    def start(self, *extra_args):
        """extra_args: more mariadbd options (e.g. --ssl-cert=...); kept for
        restarts."""
        self.extra_args = list(extra_args or getattr(self, "extra_args", []))
        argv = ["/usr/sbin/mariadbd", "--no-defaults", "--user=root",
                f"--datadir={self.datadir}", f"--socket={self.socket}",
                f"--port={self.port}", f"--bind-address={self.host}",
                f"--pid-file={self.dir}/mariadbd.pid", "--skip-name-resolve",
                "--skip-log-bin", "--innodb-buffer-pool-size=16M",
                "--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci",
                "--general-log=1", f"--general-log-file={self.general_log}",
                "--max-connections=500", *self.extra_args]
        self.proc = Proc(argv, os.path.join(self.dir, "mariadbd.log"), cwd=self.dir).start()
        wait_until(lambda: not self.proc.alive() or self._answers(), timeout=30,
                   what=f"MariaDB {self.name} on {self.host}:{self.port}")
        assert self.proc.alive(), f"mariadbd {self.name} exited:\n{self.proc.output()}"
        return self

    def _answers(self):
        return self.client("SELECT 1", check=False).returncode == 0

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def stop(self):
        """A clean shutdown (SIGTERM): clients see their connections closed."""
        if self.proc is not None:
            self.proc.stop(timeout=30)
            self.proc = None

    def kill(self):
        """A crash (SIGKILL): connections reset, queries in flight lost."""
        if self.proc is not None:
            self.proc.signal(signal.SIGKILL)
            self.proc.stop(timeout=10)
            self.proc = None

    # --- statements --------------------------------------------------------

    def client(self, sql, database=None, check=True):
        argv = ["mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot",
                "--batch", "--skip-column-names"]
        if database:
            argv.append(f"--database={database}")
        result = subprocess.run(argv, input=sql, capture_output=True, text=True, timeout=60)
        if check:
            assert result.returncode == 0, f"SQL failed on {self.name}: {result.stderr}\n{sql}"
        return result

    def sql(self, statements, database=DB_NAME):
        """Run statements; returns the rows printed, each a list of columns."""
        out = self.client(statements, database=database).stdout
        return [line.split("\t") for line in out.splitlines()]

    def create_database(self, name=DB_NAME):
        """The database and the read-only user mailroute connects as."""
        pw = DB_PASSWORD.replace("\\", "\\\\").replace("'", "\\'")
        self.client(f"CREATE DATABASE IF NOT EXISTS {name} CHARACTER SET utf8mb4;"
                    f"CREATE USER IF NOT EXISTS '{DB_USER}'@'%' IDENTIFIED BY '{pw}';"
                    f"GRANT SELECT, EXECUTE ON {name}.* TO '{DB_USER}'@'%';")

    def connect_string(self, *hosts, extra=""):
        """Dovecot's connect setting for this server (or for several hosts
        on this server's port)."""
        hosts = hosts or (self.host,)
        text = " ".join(f"host={h}" for h in hosts)
        return (f"{text} port={self.port} dbname={DB_NAME} user={DB_USER} "
                f"password={DB_PASSWORD} {extra}").strip()

    # --- what it saw ---------------------------------------------------------

    def queries(self, needle=""):
        """The SELECTs in the general log that contain needle (the tests'
        own statements are INSERTs and the like)."""
        try:
            with open(self.general_log, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except FileNotFoundError:
            return []
        sent = [line.split(" Query\t", 1)[1] for line in text.splitlines()
                if " Query\t" in line and needle in line]
        return [query for query in sent if query.upper().startswith("SELECT")]


    def connects(self):
        """How many times mailroute's user has connected so far."""
        try:
            with open(self.general_log, encoding="utf-8", errors="replace") as f:
                return sum(1 for line in f if f" Connect\t{DB_USER}@" in line)
        except FileNotFoundError:
            return 0


def sql_quote(value):
    """A MariaDB string literal for the test's own statements."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") \
        .replace("\r", "\\r") + "'"
