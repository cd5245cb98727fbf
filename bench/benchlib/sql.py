"""The SQL passdb scenario of the LMTP benchmark: a private MariaDB holding
SQL_USERS users, each routed to the sink by its row, and the routers that
ask it: mailrouted and (when Dovecot has its mysql driver, package
dovecot-mysql) Dovecot 2.3's LMTP proxy, each without and with an auth cache,
all reading the same dovecot-sql.conf.ext.

The users are 1user@sql.bench ... Nuser@sql.bench: `smtp-source -N -t
user@sql.bench` puts a sequence number (1, 2, ...) in front of each
recipient, so a run of M messages asks for M different users, spread over
the table, each once. The routers are those of lmtp.py with only the passdb
(and the cache size) changed.

MariaDB runs from a datadir in the benchmark's temp dir, on 127.0.0.1 and a
free port, in its own session; it is stopped by its PID at the end. No
general log: the benchmark measures, t/integration/test_sql.py checks
queries."""

import glob
import os
import subprocess

from . import lmtp
from .servers import Server

USER_BASE = "user@sql.bench"  # smtp-source -N makes 1user@sql.bench, 2user@...
DB_NAME = "mail"
DB_USER = "bench"
DB_PASSWORD = "bench-pw"
# The Dovecot-style query of docs/sql.md: no password (LMTP has none), the
# route in the columns host, port and proxy.
PASSWORD_QUERY = ("SELECT NULL AS password, 'Y' AS nopassword, host, port, proxy "
                  "FROM users WHERE user = '%u'")
CACHE_SIZE = "10M"
INSERT_BATCH = 2000


def user_address(number):
    """The recipient smtp-source -N -t USER_BASE sends as its number-th."""
    return f"{number}{USER_BASE}"


def tools_missing():
    """What the SQL scenario needs and this machine lacks (Debian packages)."""
    needed = {"/usr/sbin/mariadbd": "mariadb-server", "/usr/bin/mariadb-install-db":
              "mariadb-server", "/usr/bin/mariadb": "mariadb-client"}
    return [f"{path} (package {package})" for path, package in needed.items()
            if not os.access(path, os.X_OK)]


def dovecot_has_mysql():
    """Whether Dovecot can load its mysql SQL driver (package dovecot-mysql)."""
    return bool(glob.glob("/usr/lib/dovecot/modules/**/libdriver_mysql.so", recursive=True))


# --- the database -----------------------------------------------------------

class MariaDB(Server):
    name = "mariadbd"
    start_timeout = 60
    ready_interval = 0.2
    stop_timeout = 30   # a clean shutdown may take longer than a router's

    def __init__(self, workdir, cpus=None):
        super().__init__(workdir, cpus)
        self.datadir = os.path.join(workdir, "data")
        self.socket = os.path.join(workdir, "sock")

    def prepare(self):
        super().prepare()
        result = subprocess.run(
            ["mariadb-install-db", "--no-defaults", "--user=root", f"--datadir={self.datadir}",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed:\n{result.stderr[-2000:]}")

    def argv(self):
        # utf8mb4 like the connections of both routers: a column in another
        # character set would be converted per row and the key not used.
        return ["/usr/sbin/mariadbd", "--no-defaults", "--user=root",
                f"--datadir={self.datadir}", f"--socket={self.socket}",
                f"--port={self.port}", "--bind-address=127.0.0.1",
                f"--pid-file={self.dir}/mariadbd.pid", "--skip-name-resolve",
                "--skip-log-bin", "--innodb-buffer-pool-size=64M",
                "--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci",
                "--max-connections=500"]

    def ready(self):
        return self.client("SELECT 1", check=False).returncode == 0

    def client(self, sql, database=None, check=True):
        argv = ["mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot",
                "--batch", "--skip-column-names"]
        if database:
            argv.append(f"--database={database}")
        result = subprocess.run(argv, input=sql, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(f"SQL failed: {result.stderr.strip()}\n{sql[:500]}")
        return result

    def load_users(self, count, sink_port):
        """The database, a read-only user for the routers, and `count` users
        routed to 127.0.0.1:sink_port."""
        self.client(f"CREATE DATABASE {DB_NAME} CHARACTER SET utf8mb4;"
                    f"CREATE USER '{DB_USER}'@'%' IDENTIFIED BY '{DB_PASSWORD}';"
                    f"GRANT SELECT ON {DB_NAME}.* TO '{DB_USER}'@'%';")
        self.client("CREATE TABLE users (user varchar(255) NOT NULL PRIMARY KEY, "
                    "host varchar(64) NOT NULL, port int NOT NULL, "
                    "proxy char(1) NOT NULL)", database=DB_NAME)
        for first in range(1, count + 1, INSERT_BATCH):
            last = min(first + INSERT_BATCH, count + 1)
            rows = ",".join(f"('{user_address(n)}','127.0.0.1',{sink_port},'y')"
                            for n in range(first, last))
            self.client(f"INSERT INTO users VALUES {rows}", database=DB_NAME)
        stored = self.client("SELECT COUNT(*) FROM users", database=DB_NAME).stdout.strip()
        if stored != str(count):
            raise RuntimeError(f"MariaDB holds {stored} users, not {count}")
        return self

    def selects(self):
        """SELECT statements the server has run so far (the routers' look-ups)."""
        out = self.client("SHOW GLOBAL STATUS LIKE 'Com_select'").stdout.split()
        return int(out[1])

    def write_args_file(self, path):
        """The dovecot-sql.conf.ext both routers read."""
        with open(path, "w") as f:
            f.write("# The SQL passdb of the benchmark (bench/benchlib/sql.py).\n"
                    "driver = mysql\n"
                    f"connect = host=127.0.0.1 port={self.port} dbname={DB_NAME} "
                    f"user={DB_USER} password={DB_PASSWORD}\n"
                    f"password_query = {PASSWORD_QUERY}\n")
        os.chmod(path, 0o644)  # Dovecot's auth workers run unprivileged
        return path


# --- the routers ------------------------------------------------------------

PASSDB_SQL = ("driver = passwd-file", "driver = sql")


def router(target, workdir, binary, args_path, cpus=None):
    """The router of a target (dovecot-sql, mailroute-sqlcache, ...): lmtp.py's
    with the SQL passdb of args_path, with an auth cache for the *cache ones."""
    extra = f"auth_cache_size = {CACHE_SIZE}\n" if target.endswith("cache") else ""
    if target.startswith("dovecot"):
        return lmtp.DovecotProxy(workdir, args_path, cpus, name=target, edits=[PASSDB_SQL],
                                 extra=extra)
    return lmtp.Mailroute(workdir, binary, args_path, 2, cpus, name=target,
                          edits=[("one passwd-file", "the SQL passdb"), PASSDB_SQL],
                          extra=extra)
