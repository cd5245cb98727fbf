#!/usr/bin/python3
"""LMTP benchmark of mailroute (issue 6): the same smtp-source load, on
loopback, sent straight into smtp-sink ("direct"), through Dovecot 2.3's LMTP
proxy and through mailrouted, interleaved within each repetition; prints a
Markdown table of medians, min–max and ratios, and the targets with PASS/FAIL.
Also: both routers with an SQL passdb on a private MariaDB (without and with
the auth cache), and TLS handshakes per second on their implicit-TLS LMTP
listeners.

    bench/lmtp_bench.py [--reps N] [--quick] [--only SCENARIOS] [--mailrouted PATH]
                        [--keep] [--out FILE] [--json FILE] [--pin auto|yes|no]

Needs root (smtp-sink and Dovecot drop privileges), Postfix's smtp-source and
smtp-sink, and Dovecot 2.3 (dovecot-core, dovecot-lmtpd); for the SQL rows
MariaDB (mariadb-server, mariadb-client; Dovecot's own SQL rows also need
dovecot-mysql), for the TLS rows certtool (gnutls-bin). Everything runs on
127.0.0.1 from a temp dir /tmp/mrbench-*; every process is stopped by its PID
at the end. How to read the figures: docs/performance.md. Not the place for
correctness tests: t/integration checks what arrives where.
"""

import json
import os
import sys
import time
from dataclasses import dataclass

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from benchlib import driver, lmtp, machine, procs, report, servers, sql, tls  # noqa: E402
from benchlib.driver import log  # noqa: E402
from benchlib.report import ratio_target  # noqa: E402

SENDER = "sender@bench.test"
# smtp-source -r N sends to BASE, 2BASE, ... NBASE (it prefixes a number).
ONE = "one@bench.test"      # every recipient on sink A
SPLIT = "split@bench.test"  # split, 3split, 5split on sink A; 2split, 4split on sink B
RCPT_PREFIXES = ("", "2", "3", "4", "5")
# The SQL table's users; a run sends to at most this many (smtp-source -N
# counts from 1 and never wraps). Their auth cache entries (about 600 bytes
# each by mailroute's estimate) must fit in sql.CACHE_SIZE: a run goes
# through the users in order, so an LRU cache smaller than that never hits.
SQL_USERS = 10000
MIB = 1024 * 1024
GIB = 1024 * MIB


@dataclass
class Scenario:
    key: str
    title: str
    sessions: int
    messages: int
    quick_messages: int
    size: int
    rcpts: int = 1
    reuse: bool = False
    base: str = ONE
    targets: tuple = ("direct", "dovecot", "mailroute")
    large: bool = False     # MiB/s, CPU per GiB, and mailroute's peak RSS
    timeout: int = 240      # seconds, per smtp-source run
    spread: bool = False    # smtp-source -N: a different recipient for every message
    kind: str = "smtp"      # "smtp": smtp-source load; "tls": the TLS handshake client
    resume: bool = False    # TLS: resume the previous connection's session

    @property
    def unit(self):
        return {"smtp": "MiB/s" if self.large else "msg/s", "tls": "handshakes/s"}[self.kind]

    @property
    def cpu_unit(self):
        """Router CPU is given per this much work."""
        return {"smtp": " s/GiB" if self.large else " s/10k", "tls": " s/1k"}[self.kind]

    def work(self, count):
        """count messages (handshakes) in the unit of cpu_unit."""
        if self.kind == "tls":
            return count / 1000
        return count * self.size / GIB if self.large else count / 10000


SCENARIOS = [
    Scenario("new", "1 rcpt, new session per message", 20, 10000, 2000, 4096),
    Scenario("reused", "1 rcpt, sessions reused (-d)", 20, 20000, 4000, 4096, reuse=True),
    Scenario("rcpt5", "5 rcpts, 1 backend", 20, 4000, 800, 4096, rcpts=5),
    Scenario("split5", "5 rcpts over 2 backends", 20, 4000, 800, 4096, rcpts=5,
             base=SPLIT),
    Scenario("large", "10 MiB messages, 2 sessions", 2, 40, 10, 10 * MIB, large=True),
    Scenario("huge", "4 concurrent 100 MiB messages", 4, 4, 4, 100 * MIB, large=True),
    Scenario("workers", "1 rcpt, sessions reused, workers = 1 vs 2", 20, 20000, 4000, 4096,
             reuse=True, targets=("direct", "mailroute-1w", "mailroute")),
    # Each message to the next of the SQL table's users (smtp-source -N).
    Scenario("sql", "SQL passdb, 1 rcpt, sessions reused", 20, SQL_USERS, SQL_USERS // 5,
             4096, reuse=True, spread=True, base=sql.USER_BASE,
             targets=("direct", "dovecot-sql", "mailroute-sql", "dovecot-sqlcache",
                      "mailroute-sqlcache")),
    # "sessions" is the number of client processes, one connection at a time each.
    Scenario("tls-full", "TLS handshakes, full", tls.PROCESSES, 3000, 600, 0, kind="tls",
             targets=("dovecot-tls", "mailroute-tls")),
    Scenario("tls-resume", "TLS handshakes, resumed", tls.PROCESSES, 3000, 600, 0, kind="tls",
             resume=True, targets=("dovecot-tls", "mailroute-tls")),
]

TARGET_LABELS = {"direct": "direct", "dovecot": "Dovecot", "mailroute": "mailroute",
                 "mailroute-1w": "mailroute workers=1",
                 "dovecot-sql": "Dovecot, no cache", "mailroute-sql": "mailroute, no cache",
                 "dovecot-sqlcache": "Dovecot, cache", "mailroute-sqlcache": "mailroute, cache",
                 "dovecot-tls": "Dovecot", "mailroute-tls": "mailroute"}
SQL_TARGETS = ("dovecot-sql", "mailroute-sql", "dovecot-sqlcache", "mailroute-sqlcache")
TLS_TARGETS = ("dovecot-tls", "mailroute-tls")


# --- the servers --------------------------------------------------------------

class Lab(driver.Lab):
    """The sinks, routers and database of one benchmark run, and the CPUs they
    run on. Only what the chosen scenarios use is started."""

    def __init__(self, root, binary, pin, scenarios, dovecot_sql=True):
        super().__init__(root)
        self.router_cpus, self.load_cpus = machine.cpu_plan(pin)
        wanted = {target for scenario in scenarios for target in scenario.targets}
        if not dovecot_sql:
            wanted -= {"dovecot-sql", "dovecot-sqlcache"}
        self.sink_a = lmtp.Sink(os.path.join(root, "sink-a"), "sink-a", self.load_cpus)
        self.sink_b = lmtp.Sink(os.path.join(root, "sink-b"), "sink-b", self.load_cpus)
        self.passwd = os.path.join(root, "users")
        self.database = None
        self.certificate = None
        self.servers = [self.sink_a, self.sink_b]
        # target -> the router it goes through; "direct" has none.
        self.routers = {}
        self._add_passwd_routers(wanted, binary)
        self._add_sql_routers(wanted, binary)
        self._add_tls_routers(wanted, binary)

    def _add_router(self, target, server):
        self.routers[target] = server
        self.servers.append(server)

    def _add_passwd_routers(self, wanted, binary):
        if "dovecot" in wanted:
            self._add_router("dovecot", lmtp.DovecotProxy(
                os.path.join(self.root, "dovecot"), self.passwd, self.router_cpus))
        for target, workers in (("mailroute", 2), ("mailroute-1w", 1)):
            if target in wanted:
                self._add_router(target, lmtp.Mailroute(
                    os.path.join(self.root, f"mailroute-{workers}w"), binary, self.passwd,
                    workers, self.router_cpus))

    def _add_sql_routers(self, wanted, binary):
        if not wanted & set(SQL_TARGETS):
            return
        # The database comes before the routers that connect to it at start.
        self.database = sql.MariaDB(os.path.join(self.root, "mariadb"), self.router_cpus)
        self.servers.append(self.database)
        args = os.path.join(self.root, "dovecot-sql.conf.ext")
        for target in SQL_TARGETS:
            if target in wanted:
                self._add_router(target, sql.router(target, os.path.join(self.root, target),
                                                    binary, args, self.router_cpus))

    def _add_tls_routers(self, wanted, binary):
        if not wanted & set(TLS_TARGETS):
            return
        self.certificate = servers.Certificate(os.path.join(self.root, "tls"))
        for target in TLS_TARGETS:
            if target in wanted:
                self._add_router(target, tls.router(target, os.path.join(self.root, target),
                                                    binary, self.passwd, self.certificate,
                                                    self.router_cpus))

    def start(self):
        servers.write_passwd_file(self.passwd, self.routes().items())
        if self.certificate:
            self.certificate.generate()
        for server in self.servers:
            server.start()
            if server is self.database:
                log(f"loading {SQL_USERS:,} users into MariaDB")
                server.load_users(SQL_USERS, self.sink_a.port)
                server.write_args_file(os.path.join(self.root, "dovecot-sql.conf.ext"))

    def routes(self):
        routes = {prefix + ONE: self.sink_a.port for prefix in RCPT_PREFIXES}
        for i, prefix in enumerate(RCPT_PREFIXES):
            routes[prefix + SPLIT] = self.sink_a.port if i % 2 == 0 else self.sink_b.port
        return routes

    def has(self, target):
        return target == "direct" or target in self.routers

    def targets(self, scenario):
        """The scenario's targets this lab has (Dovecot's SQL ones need its mysql driver)."""
        return [target for target in scenario.targets if self.has(target)]

    def port(self, target):
        return self.sink_a.port if target == "direct" else self.routers[target].port

    def router_pid(self, target):
        return None if target == "direct" else self.routers[target].pid

    def router_cpu(self, target):
        """CPU seconds used so far by the router a target goes through."""
        pid = self.router_pid(target)
        if pid is None:
            return None
        if target.startswith("dovecot"):
            return procs.group_cpu_seconds(pid)
        return procs.cpu_seconds(pid)

    def database_cpu(self, target):
        """CPU seconds used so far by MariaDB, for the targets that ask it."""
        if target not in SQL_TARGETS:
            return None
        return procs.cpu_seconds(self.database.pid)

    def database_queries(self, target):
        """SELECTs MariaDB has run so far, for the targets that ask it."""
        return self.database.selects() if target in SQL_TARGETS else None

    def mailroutes(self):
        """(target, server) of the mailrouted instances that route mail."""
        return [(target, server) for target, server in self.routers.items()
                if target.startswith("mailroute") and target not in TLS_TARGETS]


# --- load and measurement ------------------------------------------------------

def load_argv(lab, scenario, target, messages):
    argv = ["smtp-source", "-L", "-s", scenario.sessions, "-m", messages,
            "-l", scenario.size, "-r", scenario.rcpts, "-f", SENDER, "-t", scenario.base,
            "-M", "client.bench"]
    if scenario.reuse:
        argv.append("-d")
    if scenario.spread:
        argv.append("-N")
    argv.append(f"127.0.0.1:{lab.port(target)}")
    return procs.pinned(argv, lab.load_cpus)


def measure(lab, scenario, target, messages):
    """Run one load (smtp-source, or the TLS client) against target; a sample dict."""
    if scenario.kind == "tls":
        return measure_tls(lab, scenario, target, messages)
    load_log = os.path.join(lab.root, "load.log")
    with open(load_log, "a") as f:
        f.write(f"--- {scenario.key} {target} {messages} messages\n")
    # Peak RSS only for mailroute: Dovecot's work is spread over processes.
    pid = lab.router_pid(target) if target.startswith("mailroute") else None
    if scenario.large and pid is not None:
        procs.reset_peak_rss(pid)
    before = snapshot(lab, target, before=True)
    argv = load_argv(lab, scenario, target, messages)
    status, elapsed = procs.run_bounded(argv, scenario.timeout, load_log)
    after = snapshot(lab, target, before=False)
    lab.check_alive()
    if status != 0:
        why = "timed out" if status is None else f"exit {status}"
        log(f"  {scenario.key} {target}: smtp-source {why}; see {load_log}")
        return None
    return sample(scenario, messages, elapsed, before, after,
                  procs.peak_rss_kib(pid) if scenario.large and pid else None)


def measure_tls(lab, scenario, target, count):
    """Run the TLS client against target: count connections, each a handshake,
    LHLO and QUIT. The rate is from the client's own wall time."""
    load_log = os.path.join(lab.root, "load.log")
    with open(load_log, "a") as f:
        f.write(f"--- {scenario.key} {target} {count} connections\n")
    result_path = os.path.join(lab.root, "tls-client.json")
    if os.path.exists(result_path):
        os.unlink(result_path)
    before = snapshot(lab, target, before=True)
    argv = tls.client_argv(lab.port(target), count, scenario.resume, result_path,
                           lab.load_cpus)
    status, _ = procs.run_bounded(argv, scenario.timeout, load_log)
    after = snapshot(lab, target, before=False)
    lab.check_alive()
    summary = None
    if os.path.exists(result_path):
        with open(result_path) as f:
            summary = json.load(f)
    if status != 0 or summary is None:
        why = "timed out" if status is None else f"exit {status}"
        error = summary["error"] if summary else "no result"
        log(f"  {scenario.key} {target}: TLS client {why} ({error}); see {load_log}")
        return None
    one = sample(scenario, summary["ok"], summary["seconds"], before, after, None)
    one["tls"] = summary["tls"]
    one["resumed"] = summary["resumed"] / summary["ok"]
    return one


def snapshot(lab, target, before):
    """The counters a sample is the difference of. MariaDB's query counter is
    read with the mariadb client: first before the run and last after it, so
    that neither its CPU nor MariaDB's for it is in the sample."""
    queries = {"queries": lab.database_queries(target)} if before else {}
    readings = {"router": lab.router_cpu(target), "database": lab.database_cpu(target),
                "load": procs.children_cpu_seconds(),
                "other": procs.foreign_cpu_seconds(lab.pgids())}
    if not before:
        queries = {"queries": lab.database_queries(target)}
    return {**queries, **readings}


def sample(scenario, messages, elapsed, before, after, rss_kib):
    delta = {key: (after[key] - before[key]) if after[key] is not None else None
             for key in after}
    volume = messages * scenario.size / MIB
    work = scenario.work(messages)
    result = {"seconds": elapsed, "messages": messages,
              "rate": volume / elapsed if scenario.large else messages / elapsed,
              "rss_kib": rss_kib, "router_cpu": delta["router"], "cpu_per": None,
              "other_cpu": delta["other"], "load_cpu_per": delta["load"] / work,
              "database_cpu_per": None,
              "queries_per": delta["queries"] / messages if delta["queries"] is not None
              else None}
    if delta["router"] is not None:
        result["cpu_per"] = delta["router"] / work
    if delta["database"] is not None:
        result["database_cpu_per"] = delta["database"] / work
    result["disturbed"] = machine.disturbed(result["other_cpu"], elapsed)
    return result


# Warm-up loads. The cached SQL routers get the whole run's users first, so
# that the measured runs are cache hits, as on a router that runs for a while.
WARM_UP_PASSWD = [Scenario("warmup", "warm-up", 20, 400, 400, 4096, rcpts=5, base=base)
                  for base in (ONE, SPLIT)]
WARM_UP_TLS = 200


def warm_up(lab, scenarios, quick):
    """A little load through every target first: Dovecot forks its services,
    mailroute fills its backend pools, the page cache holds the binaries,
    MariaDB's buffer pool the table."""
    targets = []
    for scenario in scenarios:
        targets += [t for t in lab.targets(scenario) if t not in targets]
    sql_scenario = next((s for s in scenarios if s.key == "sql"), None)
    for target in targets:
        if target in TLS_TARGETS:
            loads = [(Scenario("warmup", "warm-up", tls.PROCESSES, WARM_UP_TLS, WARM_UP_TLS, 0,
                               kind="tls"), WARM_UP_TLS)]
        elif target in SQL_TARGETS:
            messages = sql_scenario.quick_messages if quick else sql_scenario.messages
            if not target.endswith("cache"):
                messages = 400
            loads = [(sql_scenario, messages)]
        else:
            loads = [(load, load.messages) for load in WARM_UP_PASSWD]
        log(f"warm-up: {target}")
        for load, count in loads:
            if measure(lab, load, target, count) is None:
                raise RuntimeError(f"warm-up through {target} failed; see {lab.root}/load.log")


def run_all(lab, scenarios, reps, quick, results):
    samples = reps * sum(len(lab.targets(scenario)) for scenario in scenarios)
    patience = machine.Patience(samples)
    for rep in range(reps):
        for scenario in scenarios:
            messages = scenario.quick_messages if quick else scenario.messages
            # A different target goes first in each repetition.
            for target in driver.rotated(lab.targets(scenario), rep):
                # measure() when the machine is quiet; once more if others
                # loaded it meanwhile.
                one = driver.when_quiet(lab, patience, f"{scenario.key} {target}",
                                        lambda again: measure(lab, scenario, target, messages))
                results.add(scenario.key, target, one)
                log(progress_line(rep, reps, scenario, target, one))


def progress_line(rep, reps, scenario, target, one):
    head = f"rep {rep + 1}/{reps}  {scenario.title:<42} {TARGET_LABELS[target]:<20}"
    if one is None:
        return head + " FAILED"
    text = f"{head} {one['rate']:>9,.1f} {scenario.unit} ({one['seconds']:.2f} s)"
    if one["rss_kib"]:
        text += f" peak RSS {one['rss_kib'] / 1024:.1f} MiB"
    if one["disturbed"]:
        text += f" [other load {one['other_cpu']:.1f} CPU-s]"
    return text


# --- the report -----------------------------------------------------------------

def table_rows(scenario, sql_users):
    """(title, key, direct, Dovecot, mailroute target) of the main table's rows
    for a scenario; direct None where there is no direct equivalent."""
    if scenario.key == "sql":
        title = f"{scenario.title}, each to another of {sql_users:,} users"
        return [(f"{title}, no cache", "sql", "direct", "dovecot-sql", "mailroute-sql"),
                (f"{title}, auth_cache_size = {sql.CACHE_SIZE}", "sql", "direct",
                 "dovecot-sqlcache", "mailroute-sqlcache")]
    if scenario.kind == "tls":
        return [(f"{scenario.title} (implicit TLS, connect+LHLO+QUIT)", scenario.key, None,
                 "dovecot-tls", "mailroute-tls")]
    return [(scenario.title, scenario.key, "direct", "dovecot", "mailroute")]


def main_table(results, scenarios, sql_users):
    header = ["scenario", "unit", "direct", "Dovecot", "mailroute", "mailroute/direct",
              "mailroute/Dovecot", "mailroute CPU", "Dovecot CPU", "mailroute peak RSS"]
    rows = []
    for scenario in scenarios:
        if scenario.key == "workers":
            continue
        for title, key, direct, dovecot, mailroute in table_rows(scenario, sql_users):
            rss = results.values(key, mailroute, "rss_kib")
            rows.append([
                title, scenario.unit,
                report.rate_cell(results, key, direct) if direct else "—",
                report.rate_cell(results, key, dovecot),
                report.rate_cell(results, key, mailroute),
                report.ratio_cell(results.ratios(key, mailroute, direct)) if direct else "—",
                report.ratio_cell(results.ratios(key, mailroute, dovecot)),
                report.cell(results.values(key, mailroute, "cpu_per"),
                            suffix=scenario.cpu_unit),
                report.cell(results.values(key, dovecot, "cpu_per"), suffix=scenario.cpu_unit),
                f"{max(rss) / 1024:.1f} MiB" if rss else "—"])
    return report.table(header, rows)


def detail_table(results, scenarios, lab):
    """Per target of the SQL and TLS scenarios: where the CPU went."""
    header = ["scenario", "target", "rate", "router CPU", "MariaDB CPU",
              "SQL queries per message", "load generator CPU", "TLS"]
    rows = []
    for scenario in scenarios:
        if scenario.key != "sql" and scenario.kind != "tls":
            continue
        unit = scenario.cpu_unit
        for target in lab.targets(scenario):
            key = scenario.key
            resumed = results.values(key, target, "resumed")
            tls_text = next(iter(results.values(key, target, "tls")), "")
            if scenario.resume and resumed:
                tls_text += f", {report.median(resumed):.0%} resumed"
            rows.append([scenario.title, TARGET_LABELS[target],
                         report.rate_cell(results, key, target) + " " + scenario.unit,
                         report.cell(results.values(key, target, "cpu_per"), suffix=unit),
                         report.cell(results.values(key, target, "database_cpu_per"),
                                     suffix=unit),
                         report.cell(results.values(key, target, "queries_per")),
                         report.cell(results.values(key, target, "load_cpu_per"), suffix=unit),
                         tls_text or "—"])
    return report.table(header, rows) if rows else None


def workers_table(results):
    header = ["1 rcpt, sessions reused", "direct", "mailroute workers=1",
              "mailroute workers=2", "2 workers / 1 worker", "workers=1 CPU",
              "workers=2 CPU"]
    row = ["msg/s", report.rate_cell(results, "workers", "direct"),
           report.rate_cell(results, "workers", "mailroute-1w"),
           report.rate_cell(results, "workers", "mailroute"),
           report.ratio_cell(results.ratios("workers", "mailroute", "mailroute-1w")),
           report.cell(results.values("workers", "mailroute-1w", "cpu_per"), suffix=" s/10k"),
           report.cell(results.values("workers", "mailroute", "cpu_per"), suffix=" s/10k")]
    return report.table(header, [row])


def rss_target(title, scenario, limit_mib):
    def measure_it(results):
        rss = results.values(scenario, "mailroute", "rss_kib")
        if not rss:
            return None, None
        return max(rss) / 1024, f"{max(rss) / 1024:.1f} MiB (max of {len(rss)} runs)"
    return report.Target(title, measure_it, lambda v: v < limit_mib, scenario)


TARGETS = [
    ratio_target("LMTP 1 rcpt, reused: ≥ 0.5x direct", "reused", "mailroute", "direct", 0.5),
    ratio_target("LMTP 1 rcpt, reused: ≥ 5x Dovecot", "reused", "mailroute", "dovecot", 5),
    ratio_target("5 rcpts over 2 backends: ≥ 5x Dovecot", "split5", "mailroute", "dovecot", 5),
    ratio_target("10 MiB messages: ≥ 0.9x direct MiB/s", "large", "mailroute", "direct", 0.9),
    rss_target("peak RSS, 4 concurrent 100 MiB messages: < 64 MiB", "huge", 64),
    ratio_target("2 workers ≥ 1.6x 1 worker (1 rcpt, reused)", "workers", "mailroute",
                 "mailroute-1w", 1.6),
]


def machine_text(lab, binary, reps, quick, elapsed, notes):
    routers = "routers and MariaDB" if lab.database else "routers"
    if lab.router_cpus:
        pinning = (f"{routers} pinned to CPUs {lab.router_cpus}, load generators "
                   f"and smtp-sink to {lab.load_cpus}")
    else:
        pinning = f"not pinned: load generators, sinks and {routers} share all CPUs"
    lines = [f"- {note}" for note in notes]
    if lab.database:
        lines.append(f"- {machine.command_output(['/usr/sbin/mariadbd', '--version'])}")
    return "\n".join([
        machine.machine_line(), f"- {pinning}", machine.mailrouted_line(binary),
        f"- Dovecot {machine.command_output(['dovecot', '--version'])}, Postfix "
        f"{machine.command_output(['postconf', '-dh', 'mail_version'])} (smtp-source, smtp-sink)",
        machine.run_line(reps, quick, elapsed)] + lines)


def log_check_text(lab):
    lines = []
    for target, server in lab.mailroutes():
        total, ok = server.recipient_replies()
        passdb = "SQL passdb, " if target in SQL_TARGETS else ""
        cache = ("cache, " if target.endswith("cache") else "no cache, ") if passdb else ""
        lines.append(f"- mailroute ({passdb}{cache}workers = {server.workers}) log: "
                     f"{total:,} recipient lines, {total - ok} without a 250")
    return "\n".join(lines)


def full_report(lab, scenarios, results, binary, reps, quick, elapsed, notes):
    keys = {scenario.key for scenario in scenarios}
    goals = [t.row(results) for t in TARGETS if t.scenario in keys]
    parts = [
        "### LMTP: direct vs Dovecot 2.3 proxy vs mailroute",
        "Medians over the repetitions, (min–max); ratios are the medians of the "
        "per-repetition ratios. CPU is the router's own (mailroute: utime+stime of the "
        "process; Dovecot: every process of the instance), per 10,000 messages, per GiB "
        "or per 1,000 TLS handshakes.",
        main_table(results, scenarios, SQL_USERS)]
    if "workers" in keys:
        parts.append(workers_table(results))
    details = detail_table(results, scenarios, lab)
    if details:
        parts += ["SQL passdb and TLS, per target: CPU per 10,000 messages or per 1,000 "
                  "handshakes of the router, of MariaDB and of the load generator "
                  "(smtp-source; the Python TLS client).", details]
    if goals:
        parts.append(report.table(["target", "measured (median of per-repetition ratios)", ""],
                                  goals))
    parts.append(machine_text(lab, binary, reps, quick, elapsed, notes) + "\n"
                 + machine.noise_line(results) + "\n" + log_check_text(lab))
    return "\n\n".join(parts) + "\n"


# --- main -----------------------------------------------------------------------

def parse_args():
    parser = driver.argument_parser(
        __doc__, quick_help="one fifth of the messages (a smoke run, not a measurement)",
        pin_help="routers and load on separate CPUs (auto: with 4 CPUs or more)")
    keys = ", ".join(scenario.key for scenario in SCENARIOS)
    parser.add_argument("--only", metavar="SCENARIOS",
                        help=f"run only these, comma-separated: {keys}; a name also "
                             "selects the scenarios it starts with NAME- (tls: tls-full "
                             "and tls-resume). Default: all")
    args = driver.parse_args(parser)
    try:
        args.scenarios = chosen_scenarios(args.only)
    except ValueError as error:
        parser.error(str(error))
    return args


def chosen_scenarios(only):
    """The scenarios --only names, in SCENARIOS' order; all without --only."""
    if only is None:
        return list(SCENARIOS)
    names = [name.strip() for name in only.split(",") if name.strip()]
    chosen = set()
    for name in names:
        found = {s.key for s in SCENARIOS if s.key == name or s.key.startswith(name + "-")}
        if not found:
            raise ValueError(f"--only: no scenario {name!r} "
                             f"(there are {', '.join(s.key for s in SCENARIOS)})")
        chosen |= found
    return [scenario for scenario in SCENARIOS if scenario.key in chosen]


def check_optional_tools(scenarios, explicit):
    """(scenarios this machine can run, notes for the report). Without --only
    a scenario whose tools are missing is left out with a note; asked for by
    --only, it is an error."""
    kept, notes = [], []
    for scenario in scenarios:
        if scenario.key == "sql":
            missing = sql.tools_missing()
        elif scenario.kind == "tls":
            missing = tls.tools_missing()
        else:
            missing = []
        if missing and explicit:
            raise SystemExit(f"lmtp_bench: {scenario.key} needs {', '.join(missing)}")
        if missing:
            notes.append(f"{scenario.title}: not run, missing {', '.join(missing)}")
        else:
            kept.append(scenario)
    dovecot_sql = sql.dovecot_has_mysql()
    if any(s.key == "sql" for s in kept) and not dovecot_sql:
        notes.append("Dovecot's SQL rows not run: Dovecot has no mysql driver "
                     "(libdriver_mysql.so, package dovecot-mysql)")
    return kept, notes, dovecot_sql


def main():
    args = parse_args()
    binary = os.path.abspath(args.mailrouted)
    driver.check_prerequisites(
        "lmtp_bench", "smtp-sink and Dovecot drop privileges",
        ("smtp-source", "smtp-sink", "dovecot"), "postfix, dovecot-core, dovecot-lmtpd",
        [binary], "bench")
    scenarios, notes, dovecot_sql = check_optional_tools(args.scenarios, args.only is not None)
    if not scenarios:
        raise SystemExit("lmtp_bench: no scenario left to run")

    def measure_all(lab, results, started):
        warm_up(lab, scenarios, args.quick)
        run_all(lab, scenarios, args.reps, args.quick, results)
        return full_report(lab, scenarios, results, binary, args.reps, args.quick,
                           time.monotonic() - started, notes)
    driver.run("lmtp_bench", args, "mrbench-",
               lambda root: Lab(root, binary, args.pin, scenarios, dovecot_sql), measure_all)


if __name__ == "__main__":
    main()
