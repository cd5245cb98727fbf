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

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from benchlib import procs, report, servers, sql, tls  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
# A sample is "disturbed" when processes outside the benchmark kept this
# much of a CPU busy on average while it ran (the machines are shared).
DISTURBED_CPU_SHARE = 0.25
# Before a sample, wait up to QUIET_WAIT s (looking QUIET_PROBE s at a time)
# for such load to go away, as long as the run's QUIET_BUDGET s last; a
# disturbed sample is run once more, as long as RETRY_SHARE of the samples
# allow. All bounded: a busy machine gives a slower run with flagged samples,
# never an endless one.
QUIET_PROBE = 0.25
QUIET_WAIT = 5.0
QUIET_BUDGET = 60.0
RETRY_SHARE = 0.15


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


def log(text):
    print(text, file=sys.stderr, flush=True)


# --- the servers --------------------------------------------------------------

class Lab:
    """The sinks, routers and database of one benchmark run, and the CPUs they
    run on. Only what the chosen scenarios use is started."""

    def __init__(self, root, binary, pin, scenarios, dovecot_sql=True):
        self.root = root
        self.router_cpus, self.load_cpus = cpu_plan(pin)
        wanted = {target for scenario in scenarios for target in scenario.targets}
        if not dovecot_sql:
            wanted -= {"dovecot-sql", "dovecot-sqlcache"}
        self.sink_a = servers.Sink(os.path.join(root, "sink-a"), "sink-a", self.load_cpus)
        self.sink_b = servers.Sink(os.path.join(root, "sink-b"), "sink-b", self.load_cpus)
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
            self._add_router("dovecot", servers.DovecotProxy(
                os.path.join(self.root, "dovecot"), self.passwd, self.router_cpus))
        for target, workers in (("mailroute", 2), ("mailroute-1w", 1)):
            if target in wanted:
                self._add_router(target, servers.Mailroute(
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
            if target not in wanted:
                continue
            workdir = os.path.join(self.root, target)
            cache = target.endswith("cache")
            if target.startswith("dovecot"):
                self._add_router(target, sql.SqlDovecot(workdir, args, cache, self.router_cpus))
            else:
                self._add_router(target, sql.SqlMailroute(workdir, binary, args, cache,
                                                          self.router_cpus))

    def _add_tls_routers(self, wanted, binary):
        if not wanted & set(TLS_TARGETS):
            return
        self.certificate = tls.Certificate(os.path.join(self.root, "tls"))
        if "dovecot-tls" in wanted:
            self._add_router("dovecot-tls", tls.TlsDovecot(
                os.path.join(self.root, "dovecot-tls"), self.passwd, self.certificate,
                self.router_cpus))
        if "mailroute-tls" in wanted:
            self._add_router("mailroute-tls", tls.TlsMailroute(
                os.path.join(self.root, "mailroute-tls"), binary, self.passwd,
                self.certificate, self.router_cpus))

    def start(self):
        servers.write_passwd_file(self.passwd, self.routes())
        if self.certificate:
            self.certificate.generate()
        for server in self.servers:
            server.start()
            if server is self.database:
                log(f"loading {SQL_USERS:,} users into MariaDB")
                server.load_users(SQL_USERS, self.sink_a.port)
                server.write_args_file(os.path.join(self.root, "dovecot-sql.conf.ext"))

    def started(self):
        """The servers with a process (also one that failed to come up)."""
        return [server for server in self.servers if server.proc is not None]

    def routes(self):
        routes = {prefix + ONE: self.sink_a.port for prefix in RCPT_PREFIXES}
        for i, prefix in enumerate(RCPT_PREFIXES):
            routes[prefix + SPLIT] = self.sink_a.port if i % 2 == 0 else self.sink_b.port
        return routes

    def stop(self):
        for server in reversed(self.started()):
            # MariaDB's clean shutdown may take longer than a router's.
            status = server.proc.stop(timeout=30 if server is self.database else 10)
            log(f"stopped {server.proc.name} (pid {server.proc.pid}, exit {status})")

    def has(self, target):
        return target == "direct" or target in self.routers

    def targets(self, scenario):
        """The scenario's targets this lab has (Dovecot's SQL ones need its mysql driver)."""
        return [target for target in scenario.targets if self.has(target)]

    def port(self, target):
        return self.sink_a.port if target == "direct" else self.routers[target].port

    def router_pid(self, target):
        return None if target == "direct" else self.routers[target].proc.pid

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

    def pgids(self):
        """The process groups of the lab's servers (each started with setsid)."""
        return [server.proc.pid for server in self.started()]

    def check_alive(self):
        for server in self.started():
            if not server.proc.alive():
                raise RuntimeError(f"{server.proc.name} died (exit {server.proc.popen.poll()}); "
                                   f"its files are in {server.dir}\n{server.proc.output_tail()}")


def cpu_plan(pin):
    """(CPUs for the routers, CPUs for smtp-source and the sinks), or Nones when
    they share the machine's CPUs. Apart means routers on the first two CPUs,
    like the 2-core machine of issue 6, and the load on the others."""
    cpus = sorted(os.sched_getaffinity(0))
    if pin == "no" or shutil.which("taskset") is None:
        return None, None
    if len(cpus) < 4:
        if pin == "yes":
            raise SystemExit(f"--pin yes needs at least 4 CPUs, this machine has {len(cpus)}")
        return None, None
    routers = ",".join(str(c) for c in cpus[:2])
    load = ",".join(str(c) for c in cpus[2:])
    return routers, load


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


def children_cpu_seconds():
    """CPU of this process's reaped children (the load generators) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def snapshot(lab, target, before):
    """The counters a sample is the difference of. MariaDB's query counter is
    read with the mariadb client: first before the run and last after it, so
    that neither its CPU nor MariaDB's for it is in the sample."""
    queries = {"queries": lab.database_queries(target)} if before else {}
    readings = {"router": lab.router_cpu(target), "database": lab.database_cpu(target),
                "load": children_cpu_seconds(), "other": procs.foreign_cpu_seconds(lab.pgids())}
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
    result["disturbed"] = result["other_cpu"] > DISTURBED_CPU_SHARE * elapsed
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


def rotated(items, shift):
    shift %= len(items)
    return list(items[shift:]) + list(items[:shift])


class Patience:
    """What is left of the run's budgets for waiting out other load."""

    def __init__(self, samples):
        self.wait_left = QUIET_BUDGET
        self.retries_left = max(2, int(samples * RETRY_SHARE))


def wait_for_quiet(lab, patience):
    """Wait (bounded) until processes outside the benchmark leave the CPUs alone."""
    deadline = time.monotonic() + min(QUIET_WAIT, patience.wait_left)
    started = time.monotonic()
    while time.monotonic() < deadline:
        before = procs.foreign_cpu_seconds(lab.pgids())
        time.sleep(QUIET_PROBE)
        others = procs.foreign_cpu_seconds(lab.pgids()) - before
        if others < DISTURBED_CPU_SHARE * QUIET_PROBE:
            break
    patience.wait_left -= time.monotonic() - started


def run_all(lab, scenarios, reps, quick, results):
    samples = reps * sum(len(lab.targets(scenario)) for scenario in scenarios)
    patience = Patience(samples)
    for rep in range(reps):
        for scenario in scenarios:
            messages = scenario.quick_messages if quick else scenario.messages
            # A different target goes first in each repetition.
            for target in rotated(lab.targets(scenario), rep):
                one = measure_undisturbed(lab, scenario, target, messages, patience)
                results.add(scenario.key, target, one)
                log(progress_line(rep, reps, scenario, target, one))


def measure_undisturbed(lab, scenario, target, messages, patience):
    """measure() when the machine is quiet; once more if others loaded it meanwhile."""
    wait_for_quiet(lab, patience)
    one = measure(lab, scenario, target, messages)
    if one is None or not one["disturbed"] or patience.retries_left <= 0:
        return one
    patience.retries_left -= 1
    log(f"  {scenario.key} {target}: other load {one['other_cpu']:.1f} CPU-s "
        f"in {one['seconds']:.1f} s, once more")
    wait_for_quiet(lab, patience)
    return measure(lab, scenario, target, messages)


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
                rate_cell(results, key, direct) if direct else "—",
                rate_cell(results, key, dovecot), rate_cell(results, key, mailroute),
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
                         rate_cell(results, key, target) + " " + scenario.unit,
                         report.cell(results.values(key, target, "cpu_per"), suffix=unit),
                         report.cell(results.values(key, target, "database_cpu_per"),
                                     suffix=unit),
                         report.cell(results.values(key, target, "queries_per")),
                         report.cell(results.values(key, target, "load_cpu_per"), suffix=unit),
                         tls_text or "—"])
    return report.table(header, rows) if rows else None


def rate_cell(results, scenario, target):
    text = report.cell(results.values(scenario, target, "rate"))
    failed = results.failures(scenario, target)
    return text + (f" ({failed} failed)" if failed else "")


def workers_table(results):
    header = ["1 rcpt, sessions reused", "direct", "mailroute workers=1",
              "mailroute workers=2", "2 workers / 1 worker", "workers=1 CPU",
              "workers=2 CPU"]
    row = ["msg/s", rate_cell(results, "workers", "direct"),
           rate_cell(results, "workers", "mailroute-1w"),
           rate_cell(results, "workers", "mailroute"),
           report.ratio_cell(results.ratios("workers", "mailroute", "mailroute-1w")),
           report.cell(results.values("workers", "mailroute-1w", "cpu_per"), suffix=" s/10k"),
           report.cell(results.values("workers", "mailroute", "cpu_per"), suffix=" s/10k")]
    return report.table(header, [row])


def ratio_target(title, scenario, target, baseline, minimum):
    def measure_it(results):
        ratios = results.ratios(scenario, target, baseline)
        if not ratios:
            return None, None
        value = report.median(ratios)
        return value, f"{value:.2f}x (min {min(ratios):.2f}x)"
    goal = report.Target(title, measure_it, lambda v: v >= minimum)
    goal.scenario = scenario  # judged only when the scenario ran
    return goal


def rss_target(title, scenario, limit_mib):
    def measure_it(results):
        rss = results.values(scenario, "mailroute", "rss_kib")
        if not rss:
            return None, None
        return max(rss) / 1024, f"{max(rss) / 1024:.1f} MiB (max of {len(rss)} runs)"
    goal = report.Target(title, measure_it, lambda v: v < limit_mib)
    goal.scenario = scenario
    return goal


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
    cpus = len(os.sched_getaffinity(0))
    routers = "routers and MariaDB" if lab.database else "routers"
    if lab.router_cpus:
        pinning = (f"{routers} pinned to CPUs {lab.router_cpus}, load generators "
                   f"and smtp-sink to {lab.load_cpus}")
    else:
        pinning = f"not pinned: load generators, sinks and {routers} share all CPUs"
    lines = [f"- {note}" for note in notes]
    if lab.database:
        lines.append(f"- {command_output(['/usr/sbin/mariadbd', '--version'])}")
    return "\n".join([
        f"- machine: {cpus} CPUs ({cpu_model()}), kernel {platform.release()}, "
        f"{memory_gib():.0f} GiB",
        f"- {pinning}",
        f"- mailrouted: {binary} ({build_type(binary)})",
        f"- Dovecot {command_output(['dovecot', '--version'])}, Postfix "
        f"{command_output(['postconf', '-dh', 'mail_version'])} (smtp-source, smtp-sink)",
        f"- {reps} repetition(s){' (quick mode)' if quick else ''}, {elapsed:.0f} s in all; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"] + lines)


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def memory_gib():
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) / (1024 * 1024)


def command_output(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def build_type(binary):
    """CMAKE_BUILD_TYPE of the build tree the binary is in, if it is one."""
    path = os.path.dirname(os.path.abspath(binary))
    for _ in range(4):
        cache = os.path.join(path, "CMakeCache.txt")
        if os.path.exists(cache):
            with open(cache) as f:
                for line in f:
                    if line.startswith("CMAKE_BUILD_TYPE:"):
                        return line.split("=", 1)[1].strip() or "no build type"
        path = os.path.dirname(path)
    return "build type unknown"


def noise_text(results):
    samples = [s for per_target in results.samples.values() for runs in per_target.values()
               for s in runs if s is not None]
    disturbed = [s for s in samples if s["disturbed"]]
    other = sum(s["other_cpu"] for s in samples)
    busy = sum(s["seconds"] for s in samples)
    return (f"- other load on the machine while the samples ran: {other:.1f} CPU-s in "
            f"{busy:.0f} s; {len(disturbed)} of {len(samples)} samples had more than "
            f"{DISTURBED_CPU_SHARE:.2f} CPU busy outside the benchmark")


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
                 + noise_text(results) + "\n" + log_check_text(lab))
    return "\n\n".join(parts) + "\n"


# --- main -----------------------------------------------------------------------

def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mailrouted", default=os.path.join(REPO_ROOT, "build", "src",
                                                              "daemon", "mailrouted"))
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="one fifth of the messages (a smoke run, not a measurement)")
    parser.add_argument("--pin", choices=("auto", "yes", "no"), default="auto",
                        help="routers and load on separate CPUs (auto: with 4 CPUs or more)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and its logs")
    parser.add_argument("--out", help="also write the Markdown report to this file")
    parser.add_argument("--json", help="write every sample to this file")
    keys = ", ".join(scenario.key for scenario in SCENARIOS)
    parser.add_argument("--only", metavar="SCENARIOS",
                        help=f"run only these, comma-separated: {keys}; a name also "
                             "selects the scenarios it starts with NAME- (tls: tls-full "
                             "and tls-resume). Default: all")
    args = parser.parse_args()
    if not 1 <= args.reps <= 50:
        parser.error("--reps must be between 1 and 50")
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


def check_prerequisites(binary):
    problems = []
    if os.geteuid() != 0:
        problems.append("run as root: smtp-sink and Dovecot drop privileges")
    for tool in ("smtp-source", "smtp-sink", "dovecot"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} not found (packages postfix, dovecot-core, dovecot-lmtpd)")
    if not os.access(binary, os.X_OK):
        problems.append(f"{binary} not built (make bench builds it)")
    else:
        with open(binary, "rb") as f:
            if b"__asan_init" in f.read():
                problems.append(f"{binary} is a sanitizer build: its figures mean nothing")
    if problems:
        raise SystemExit("lmtp_bench: " + "\n  ".join(problems))


def main():
    args = parse_args()
    binary = os.path.abspath(args.mailrouted)
    check_prerequisites(binary)
    scenarios, notes, dovecot_sql = check_optional_tools(args.scenarios, args.only is not None)
    if not scenarios:
        raise SystemExit("lmtp_bench: no scenario left to run")
    # SIGTERM (e.g. from make being stopped) unwinds through the finally below.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    root = tempfile.mkdtemp(prefix="mrbench-", dir="/tmp")
    os.chmod(root, 0o755)
    lab = Lab(root, binary, args.pin, scenarios, dovecot_sql)
    results = report.Results()
    started = time.monotonic()
    text = None
    try:
        lab.start()
        warm_up(lab, scenarios, args.quick)
        run_all(lab, scenarios, args.reps, args.quick, results)
        text = full_report(lab, scenarios, results, binary, args.reps, args.quick,
                           time.monotonic() - started, notes)
    except RuntimeError as error:
        log(f"lmtp_bench: {error}")
    finally:
        lab.stop()
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results.to_json(), f, indent=1)
        if args.keep or text is None:  # after a failure, the logs tell why
            log(f"logs and configs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    if text is None:
        sys.exit(1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
