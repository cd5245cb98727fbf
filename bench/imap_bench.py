#!/usr/bin/python3
"""IMAP benchmark of mailroute (issue 6): logins per second straight into a
minimal IMAP backend ("direct"), through Dovecot 2.3's IMAP login proxy and
through mailrouted; the CPU each proxy spends per 1,000 logins; the memory
each needs per idle logged-in session; optionally logins to a real Dovecot
IMAP backend and implicit-TLS handshakes per second. Targets are interleaved
within each repetition; prints a Markdown table of medians, min–max and
ratios, and the targets with PASS/FAIL.

    bench/imap_bench.py [--reps N] [--quick] [--mailrouted PATH] [--tools DIR]
                        [--skip backend,tls] [--idle 5000,10000] [--key ecdsa|rsa]
                        [--keep] [--out FILE] [--json FILE] [--pin auto|yes|no]

Needs root (Dovecot drops privileges, /proc/PID/smaps_rollup of its
processes), Dovecot 2.3 (dovecot-core, dovecot-imapd), certtool (gnutls-bin)
and the build's bench/imap-load and bench/imap-mini. Everything runs on
127.0.0.1 from a temp dir /tmp/mrbench-imap-*; every process is stopped by
its PID at the end. What the figures mean: bench/README.md.
"""

import os
import sys
import time
from dataclasses import dataclass

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from benchlib import driver, imap, machine, procs, report, servers  # noqa: E402
from benchlib.driver import log  # noqa: E402
from benchlib.servers import PASSWORD  # noqa: E402

MINI_USERS = ("m%d", 1000)      # proxied to imap-mini
BACKEND_USERS = ("d%d", 100)    # proxied to the real Dovecot backend
KIB = 1024
# Idle sessions per proxy: each holds two descriptors there (client and
# backend), so a single-process proxy fits (hard limit - reserve) / 2.
FD_RESERVE = 200
IDLE_RAMP_CONCURRENCY = 100
IDLE_RAMP_TIMEOUT = 180         # seconds for opening one set of idle sessions
IDLE_SETTLE = 1.0               # seconds between the last login and the reading


@dataclass
class Scenario:
    key: str
    title: str
    mode: str                   # imap-load mode: login or greet
    targets: tuple
    users: tuple = MINI_USERS
    tls: bool = False
    concurrency: int = 50
    duration: float = 10.0
    quick_duration: float = 3.0
    unit: str = "logins/s"


SCENARIOS = [
    Scenario("logins", "IMAP LOGIN+NOOP+LOGOUT, minimal backend", "login",
             ("direct", "dovecot", "mailroute")),
    Scenario("backend", "IMAP LOGIN+NOOP+LOGOUT, real Dovecot backend", "login",
             ("direct", "dovecot", "mailroute"), users=BACKEND_USERS, concurrency=20),
    Scenario("tls", "implicit TLS: handshake, greeting, LOGOUT", "greet",
             ("dovecot", "mailroute"), tls=True, unit="handshakes/s"),
]
OPTIONAL = ("backend", "tls")
TARGET_LABELS = {"direct": "direct", "dovecot": "Dovecot", "mailroute": "mailroute"}


# --- the servers --------------------------------------------------------------------

class Lab(driver.Lab):
    """The backends, the proxies and the load tools of one run."""

    def __init__(self, root, binary, tools, pin, key_type, want_backend):
        super().__init__(root)
        os.makedirs(os.path.join(root, "load"))
        self.tools = tools
        self.binary = binary
        self.proxy_cpus, self.load_cpus = machine.cpu_plan(pin)
        self.passwd = os.path.join(root, "users")
        self.cert = servers.Certificate(os.path.join(root, "tls"), key_type)
        self.mini = imap.Mini(os.path.join(root, "mini"), os.path.join(tools, "imap-mini"),
                              self.load_cpus)
        self.backend = (imap.DovecotImapBackend(os.path.join(root, "dovecot-backend"),
                                                *BACKEND_USERS, self.load_cpus)
                        if want_backend else None)
        self.dovecot = imap.DovecotImapProxy(os.path.join(root, "dovecot"), self.passwd,
                                             self.cert, self.proxy_cpus)
        self.mailroute = imap.MailrouteImap(os.path.join(root, "mailroute"), binary,
                                            self.passwd, self.cert, 2, self.proxy_cpus)
        self.servers = [s for s in (self.mini, self.backend, self.dovecot, self.mailroute)
                        if s is not None]

    def start(self):
        self.cert.generate()
        users = imap.numbered(*MINI_USERS, self.mini.port)
        if self.backend:
            users += imap.numbered(*BACKEND_USERS, self.backend.port)
        servers.write_passwd_file(self.passwd, users)
        super().start()

    def proxy(self, target):
        return {"dovecot": self.dovecot, "mailroute": self.mailroute}.get(target)

    def port(self, scenario, target):
        if target == "direct":
            return self.backend.port if scenario.key == "backend" else self.mini.port
        proxy = self.proxy(target)
        return proxy.tls_port if scenario.tls else proxy.port

    def load(self, mode, port, **options):
        return imap.load_argv(os.path.join(self.tools, "imap-load"), mode, port,
                              self.load_cpus, **options)


# --- CPU readings -------------------------------------------------------------------

def cpu_reading(lab, scenario):
    """CPU seconds used so far by each party: the proxies ("mailroute", and
    "dovecot" with all its processes, "dovecot-login" its imap-login ones
    alone), imap-mini ("mini", only in the rows it serves), and the load
    generators this process has reaped ("client")."""
    names = procs.group_cpu_by_name(lab.dovecot.pid)
    return {"mailroute": procs.cpu_seconds(lab.mailroute.pid),
            "dovecot": procs.group_cpu_seconds(lab.dovecot.pid),
            "dovecot-login": names.get("imap-login", 0.0),
            "mini": procs.cpu_seconds(lab.mini.pid) if scenario.key == "logins" else None,
            "client": procs.children_cpu_seconds()}


def cpu_per_thousand(before, after, target, logins):
    """{key: CPU seconds per 1,000 logins} of the parties that worked for target."""
    thousands = logins / 1000

    def per(key):
        if before[key] is None:
            return None
        return (after[key] - before[key]) / thousands
    proxy = {"dovecot": ("dovecot", "dovecot-login"), "mailroute": ("mailroute", "mailroute")}
    all_key, login_key = proxy.get(target, (None, None))
    return {"cpu_per": per(all_key) if all_key else None,
            "login_cpu_per": per(login_key) if login_key else None,
            "mini_cpu_per": per("mini"), "client_cpu_per": per("client")}


# --- rate scenarios -------------------------------------------------------------------

def measure_rate(lab, scenario, target, duration, tag):
    """One imap-load run against target: a sample dict, or None when it failed."""
    out = os.path.join(lab.root, "load", f"{scenario.key}-{target}-{tag}.out")
    argv = lab.load(scenario.mode, lab.port(scenario, target), concurrency=scenario.concurrency,
                    duration=duration, user=scenario.users[0], users=scenario.users[1],
                    password=PASSWORD, tls=scenario.tls)
    with open(out, "w") as f:
        f.write(" ".join(str(a) for a in argv) + "\n")
    before_cpu = cpu_reading(lab, scenario)
    before_other = procs.foreign_cpu_seconds(lab.pgids())
    status, elapsed = procs.run_bounded(argv, duration + 60, out)
    other = procs.foreign_cpu_seconds(lab.pgids()) - before_other
    after_cpu = cpu_reading(lab, scenario)
    lab.check_alive()
    result = imap.last_json(out, scenario.mode)
    if status is None or result is None or result["ok"] == 0:
        log(f"  {scenario.key} {target}: imap-load "
            f"{'timed out' if status is None else f'exit {status}'}; see {out}")
        return None
    sample = {"rate": result["rate"], "seconds": result["seconds"], "ok": result["ok"],
              "errors": result["errors"], "error_kinds": result["error_kinds"],
              "login_ms": result.get("login_ms"), "cycle_ms": result.get("cycle_ms"),
              "other_cpu": other, "disturbed": machine.disturbed(other, elapsed)}
    sample.update(cpu_per_thousand(before_cpu, after_cpu, target, result["ok"]))
    return sample


# --- idle sessions ----------------------------------------------------------------------

def measure_idle(lab, target, sessions, tag):
    """Restart the proxy, warm it up, read the PSS of all its processes, log
    `sessions` sessions in through it and keep them idle, read again: the
    difference per session. A sample dict, or None."""
    proxy = lab.proxy(target)
    proxy.restart()
    out = os.path.join(lab.root, "load", f"idle-{target}-{sessions}-{tag}")
    # Warm-up: every code path of a login once, pools and caches filled.
    warm = lab.load("login", proxy.port, concurrency=10, duration=1, user=MINI_USERS[0],
                    users=MINI_USERS[1], password=PASSWORD)
    procs.run_bounded(warm, 60, out + "-warmup.out")
    time.sleep(IDLE_SETTLE)
    before = imap.pss_kib(proxy.pid)
    argv = lab.load("idle", proxy.port, concurrency=IDLE_RAMP_CONCURRENCY,
                    duration=IDLE_RAMP_TIMEOUT, sessions=sessions, hold=600,
                    user=MINI_USERS[0], users=MINI_USERS[1], password=PASSWORD)
    idle = imap.IdleLoad(argv, out + ".out")
    ramp = None
    try:
        ramp = idle.start(IDLE_RAMP_TIMEOUT + 30)
        time.sleep(IDLE_SETTLE)
        after = imap.pss_kib(proxy.pid)
        processes = len(procs.group_members(proxy.pid))
    except RuntimeError as error:
        log(f"  idle {target} {sessions}: {error}")
    finally:
        final = idle.stop()
    lab.check_alive()
    if ramp is None or ramp["logged_in"] == 0:
        log(f"  idle {target} {sessions}: no session logged in; see {out}.out")
        return None
    held = ramp["logged_in"]
    return {"sessions": sessions, "held": held, "failed": ramp["failed"],
            "dropped": final["dropped"] if final else None, "ramp_s": ramp["seconds"],
            "pss_before_kib": before, "pss_after_kib": after, "processes": processes,
            "bytes_per": (after - before) * KIB / held, "rate": None}


# --- the run ----------------------------------------------------------------------------

def idle_sizes(args):
    """The idle session counts, each cut to what a single-process proxy's
    descriptors allow; (sizes, note about a cut or None)."""
    limit = (machine.nofile_limit() - FD_RESERVE) // 2
    sizes, note = [], None
    for n in args.idle:
        if n > limit:
            cut = limit // 100 * 100
            note = (f"{n:,} idle sessions cut to {cut:,}: {machine.nofile_limit():,} open "
                    f"files per process (hard limit), 2 per proxied session")
            n = cut
        sizes.append(n)
    return sizes, note


def warm_up(lab, scenarios):
    for scenario in scenarios:
        for target in scenario.targets:
            if measure_rate(lab, scenario, target, 1.0, "warmup") is None:
                raise RuntimeError(f"warm-up of {scenario.key} through {target} failed; "
                                   f"see {lab.root}/load")


def run_all(lab, args, scenarios, sizes, results):
    samples = args.reps * (sum(len(s.targets) for s in scenarios) + 2 * len(sizes))
    patience = machine.Patience(samples)
    for rep in range(args.reps):
        for scenario in scenarios:
            duration = scenario.quick_duration if args.quick else scenario.duration
            for target in driver.rotated(scenario.targets, rep):
                # A rate sample when the machine is quiet; once more if others
                # loaded it meanwhile.
                one = driver.when_quiet(
                    lab, patience, f"{scenario.key} {target}",
                    lambda again: measure_rate(lab, scenario, target, duration,
                                               f"r{rep}-again" if again else f"r{rep}"))
                results.add(scenario.key, target, one)
                log(rate_progress(rep, args.reps, scenario, target, one))
        for sessions in sizes:
            for target in driver.rotated(("dovecot", "mailroute"), rep):
                one = measure_idle(lab, target, sessions, f"r{rep}")
                results.add(f"idle{sessions}", target, one)
                log(idle_progress(rep, args.reps, sessions, target, one))


def rate_progress(rep, reps, scenario, target, one):
    head = f"rep {rep + 1}/{reps}  {scenario.title:<46} {TARGET_LABELS[target]:<10}"
    if one is None:
        return head + " FAILED"
    text = f"{head} {one['rate']:>8,.0f} {scenario.unit}"
    if one["cpu_per"] is not None:
        text += f", {one['cpu_per']:.3f} CPU-s/1000"
    if one["errors"]:
        text += f", {one['errors']} errors {one['error_kinds']}"
    if one["disturbed"]:
        text += f" [other load {one['other_cpu']:.1f} CPU-s]"
    return text


def idle_progress(rep, reps, sessions, target, one):
    head = f"rep {rep + 1}/{reps}  {sessions:,} idle sessions{'':<30} {TARGET_LABELS[target]:<10}"
    if one is None:
        return head + " FAILED"
    return (f"{head} {one['bytes_per'] / KIB:.2f} KiB/session (PSS {one['pss_before_kib']:,} -> "
            f"{one['pss_after_kib']:,} KiB, {one['processes']} processes, {one['held']:,} held, "
            f"{one['failed']} failed, dropped {one['dropped']})")


# --- the report -------------------------------------------------------------------------

def latency_cell(results, key, target):
    values = [s["login_ms"] or s["cycle_ms"] for s in
              results.samples.get(key, {}).get(target, []) if s is not None]
    values = [v for v in values if v]
    if not values:
        return "—"
    p50 = report.median([v["p50"] for v in values])
    p99 = report.median([v["p99"] for v in values])
    return f"{p50:.1f} / {p99:.1f} ms"


def rates_table(results, scenarios):
    header = ["scenario", "unit", "direct", "Dovecot", "mailroute", "mailroute/direct",
              "mailroute/Dovecot", "mailroute CPU", "Dovecot CPU (all)",
              "Dovecot CPU (imap-login)", "p50 / p99, mailroute", "p50 / p99, Dovecot"]
    rows = []
    for s in scenarios:
        direct = "direct" in s.targets
        rows.append([
            s.title, s.unit,
            report.rate_cell(results, s.key, "direct") if direct else "—",
            report.rate_cell(results, s.key, "dovecot"),
            report.rate_cell(results, s.key, "mailroute"),
            report.ratio_cell(results.ratios(s.key, "mailroute", "direct")) if direct else "—",
            report.ratio_cell(results.ratios(s.key, "mailroute", "dovecot")),
            report.cell(results.values(s.key, "mailroute", "cpu_per"), fmt=fmt_cpu,
                        suffix=" s/1k"),
            report.cell(results.values(s.key, "dovecot", "cpu_per"), fmt=fmt_cpu,
                        suffix=" s/1k"),
            report.cell(results.values(s.key, "dovecot", "login_cpu_per"), fmt=fmt_cpu,
                        suffix=" s/1k"),
            latency_cell(results, s.key, "mailroute"), latency_cell(results, s.key, "dovecot")])
    return report.table(header, rows)


def fmt_cpu(value):
    return f"{value:.3f}"


def fmt_kib(value):
    return f"{value / KIB:.2f} KiB"


def idle_table(results, sizes):
    header = ["idle logged-in sessions", "mailroute per session", "Dovecot per session",
              "mailroute/Dovecot", "mailroute PSS before → after", "Dovecot PSS before → after",
              "Dovecot processes", "failed / dropped"]
    rows = []
    for n in sizes:
        key = f"idle{n}"
        mine = results.values(key, "mailroute", "bytes_per")
        theirs = results.values(key, "dovecot", "bytes_per")
        ratios = [a / b for a, b in zip(mine, theirs) if b > 0]
        rows.append([f"{n:,}", report.cell(mine, fmt=fmt_kib), report.cell(theirs, fmt=fmt_kib),
                     report.ratio_cell(ratios), pss_cell(results, key, "mailroute"),
                     pss_cell(results, key, "dovecot"),
                     report.cell(results.values(key, "dovecot", "processes"), fmt=str),
                     failed_cell(results, key)])
    return report.table(header, rows)


def pss_cell(results, key, target):
    runs = [s for s in results.samples.get(key, {}).get(target, []) if s is not None]
    if not runs:
        return "—"
    last = runs[-1]
    return f"{last['pss_before_kib'] / KIB:.1f} → {last['pss_after_kib'] / KIB:.1f} MiB"


def failed_cell(results, key):
    parts = []
    for target in ("mailroute", "dovecot"):
        failed = sum(results.values(key, target, "failed"))
        dropped = sum(results.values(key, target, "dropped"))
        parts.append(f"{TARGET_LABELS[target]} {failed} / {dropped}")
    return ", ".join(parts)


def cpu_target(title, key, maximum):
    return report.median_target(
        title, key, lambda results: results.values(key, "mailroute", "cpu_per"),
        lambda value, values: f"{value:.3f} s (max {max(values):.3f} s)",
        lambda v: v <= maximum)


def idle_target(title, sizes, maximum_kib):
    def kib_per_session(results):
        if not sizes:
            return []
        return [v / KIB for v in results.values(f"idle{max(sizes)}", "mailroute", "bytes_per")]
    return report.median_target(
        title, None, kib_per_session,
        lambda value, values: f"{value:.2f} KiB at {max(sizes):,} sessions "
                              f"(max {max(values):.2f})",
        lambda v: v <= maximum_kib)


def targets_table(results, sizes):
    targets = [
        report.ratio_target("IMAP logins/s (minimal backend): ≥ 1.7x Dovecot", "logins",
                            "mailroute", "dovecot", 1.7),
        cpu_target("mailroute CPU: ≤ 0.11 s per 1,000 logins", "logins", 0.11),
        idle_target("idle logged-in session: ≤ 4 KiB in mailroute", sizes, 4),
    ]
    return report.table(["target", "measured (median)", ""], [t.row(results) for t in targets])


def machine_text(lab, args, elapsed, note):
    if lab.proxy_cpus:
        pinning = (f"proxies pinned to CPUs {lab.proxy_cpus}, imap-load and the backends to "
                   f"{lab.load_cpus}")
    else:
        pinning = "not pinned: imap-load, the backends and the proxies share all CPUs"
    lines = [
        machine.machine_line(), f"- {pinning}",
        machine.mailrouted_line(lab.binary) + ", workers = 2",
        f"- Dovecot {machine.command_output(['dovecot', '--version'])}: imap-login with "
        f"service_count = 0, process_min_avail = {lab.dovecot.processes}, "
        f"client_limit = {lab.dovecot.clients}",
        f"- TLS: {args.key} certificate, imap-load (GnuTLS) makes a full handshake per "
        f"connection",
        machine.run_line(args.reps, args.quick, elapsed)]
    if note:
        lines.append(f"- {note}")
    return "\n".join(lines)


def budget_table(results):
    """Where the CPU of a login goes, all parties, and the rate the machine's
    CPUs would allow if nothing else ran (the minimal-backend row)."""
    header = ["CPU s per 1,000 logins (minimal backend)", "imap-load", "imap-mini", "proxy",
              "sum", "CPU-bound ceiling"]
    rows = []
    cpus = len(os.sched_getaffinity(0))
    for target in ("direct", "dovecot", "mailroute"):
        parts = [report.median(results.values("logins", target, key))
                 for key in ("client_cpu_per", "mini_cpu_per", "cpu_per")]
        known = [p for p in parts if p is not None]
        total = sum(known) if known else None
        rows.append([TARGET_LABELS[target]] + [fmt_cpu(p) if p is not None else "—"
                                               for p in parts]
                    + [fmt_cpu(total) if total else "—",
                       f"{cpus * 1000 / total:,.0f} logins/s on {cpus} CPUs" if total else "—"])
    return report.table(header, rows)


def log_check_text(lab):
    proxied, failed = lab.mailroute.login_lines()
    return (f"- mailroute log: {proxied:,} logins proxied, {failed} refused or "
            f"failed")


def full_report(lab, args, scenarios, sizes, note, results, elapsed):
    return "\n\n".join([
        "### IMAP: direct vs Dovecot 2.3 login proxy vs mailroute",
        "Medians over the repetitions, (min–max); ratios are the medians of the "
        "per-repetition ratios. CPU is the proxy's own per 1,000 logins (or handshakes): "
        "mailroute's process, Dovecot's every process (and its imap-login processes alone). "
        "Latency: LOGIN sent to its OK (TLS rows: connect to LOGOUT's OK), medians of the "
        "per-run percentiles.",
        rates_table(results, scenarios),
        "Idle sessions: PSS of all the proxy's processes with the sessions logged in and "
        "idle, minus before (after a restart and a warm-up), per session.",
        idle_table(results, sizes),
        "Where each login's CPU goes, medians (imap-load's from the run's reaped-children "
        "time): what all the CPUs could do if the three processes had them to themselves.",
        budget_table(results), targets_table(results, sizes),
        machine_text(lab, args, elapsed, note) + "\n"
        + machine.noise_line(results, "rate samples") + "\n" + log_check_text(lab)]) + "\n"


# --- main -------------------------------------------------------------------------------

def parse_args():
    parser = driver.argument_parser(
        __doc__, quick_help="3 s runs, 500 and 1,000 idle sessions: a smoke run",
        pin_help="proxies and load on separate CPUs (auto: with 4 CPUs or more)")
    parser.add_argument("--tools", help="where imap-load and imap-mini are (default: bench/ "
                        "of the build tree mailrouted is in)")
    parser.add_argument("--idle", help="idle session counts (default 5000,10000)")
    parser.add_argument("--skip", default="", help=f"leave out scenarios: {','.join(OPTIONAL)}")
    parser.add_argument("--key", choices=("ecdsa", "rsa"), default="ecdsa",
                        help="the TLS certificate's key: ECDSA P-256 (default) or RSA 2048")
    args = driver.parse_args(parser)
    args.skip = {s for s in args.skip.split(",") if s}
    if args.skip - set(OPTIONAL):
        parser.error(f"--skip takes {', '.join(OPTIONAL)}")
    idle = args.idle or ("500,1000" if args.quick else "5000,10000")
    try:
        args.idle = [int(n) for n in idle.split(",") if n]
    except ValueError:
        parser.error("--idle takes counts separated by commas")
    if any(not 1 <= n <= 100000 for n in args.idle):
        parser.error("--idle counts go from 1 to 100000")
    args.mailrouted = os.path.abspath(args.mailrouted)
    if args.tools is None:
        args.tools = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
            args.mailrouted))), "bench")
    args.tools = os.path.abspath(args.tools)  # the servers run in their own directories
    return args


def check_prerequisites(args):
    problems = []
    if not os.path.exists("/usr/lib/dovecot/imap-login"):
        problems.append("Dovecot's imap-login not found (package dovecot-imapd)")
    driver.check_prerequisites(
        "imap_bench", "Dovecot drops privileges, its smaps need root", ("dovecot", "certtool"),
        "dovecot-core dovecot-imapd, gnutls-bin",
        [args.mailrouted] + [os.path.join(args.tools, tool) for tool in ("imap-load", "imap-mini")],
        "bench-imap", problems)


def main():
    args = parse_args()
    check_prerequisites(args)
    scenarios = [s for s in SCENARIOS if s.key not in args.skip]
    sizes, note = idle_sizes(args)

    def measure_all(lab, results, started):
        warm_up(lab, scenarios)
        run_all(lab, args, scenarios, sizes, results)
        return full_report(lab, args, scenarios, sizes, note, results,
                           time.monotonic() - started)
    driver.run("imap_bench", args, "mrbench-imap-",
               lambda root: Lab(root, args.mailrouted, args.tools, args.pin, args.key,
                                "backend" not in args.skip),
               measure_all)


if __name__ == "__main__":
    main()
