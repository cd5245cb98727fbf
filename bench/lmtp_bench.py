#!/usr/bin/python3
"""LMTP benchmark of mailroute (issue 6): the same smtp-source load, on
loopback, sent straight into smtp-sink ("direct"), through Dovecot 2.3's LMTP
proxy and through mailrouted, interleaved within each repetition; prints a
Markdown table of medians, min–max and ratios, and the targets with PASS/FAIL.

    bench/lmtp_bench.py [--reps N] [--quick] [--mailrouted PATH] [--keep]
                        [--out FILE] [--json FILE] [--pin auto|yes|no]

Needs root (smtp-sink and Dovecot drop privileges), Postfix's smtp-source and
smtp-sink, and Dovecot 2.3 (dovecot-core, dovecot-lmtpd). Everything runs on
127.0.0.1 from a temp dir /tmp/mrbench-*; every process is stopped by its PID
at the end. How to read the figures: docs/performance.md. Not the place for
correctness tests: t/integration checks what arrives where.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from benchlib import procs, report, servers  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENDER = "sender@bench.test"
# smtp-source -r N sends to BASE, 2BASE, ... NBASE (it prefixes a number).
ONE = "one@bench.test"      # every recipient on sink A
SPLIT = "split@bench.test"  # split, 3split, 5split on sink A; 2split, 4split on sink B
RCPT_PREFIXES = ("", "2", "3", "4", "5")
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
]

TARGET_LABELS = {"direct": "direct", "dovecot": "Dovecot", "mailroute": "mailroute",
                 "mailroute-1w": "mailroute workers=1"}


def log(text):
    print(text, file=sys.stderr, flush=True)


# --- the servers --------------------------------------------------------------

class Lab:
    """The sinks and routers of one benchmark run, and the CPUs they run on."""

    def __init__(self, root, binary, pin):
        self.root = root
        self.router_cpus, self.load_cpus = cpu_plan(pin)
        self.sink_a = servers.Sink(os.path.join(root, "sink-a"), "sink-a", self.load_cpus)
        self.sink_b = servers.Sink(os.path.join(root, "sink-b"), "sink-b", self.load_cpus)
        self.passwd = os.path.join(root, "users")
        self.dovecot = servers.DovecotProxy(os.path.join(root, "dovecot"), self.passwd,
                                            self.router_cpus)
        self.mailroute = {
            workers: servers.Mailroute(os.path.join(root, f"mailroute-{workers}w"), binary,
                                       self.passwd, workers, self.router_cpus)
            for workers in (2, 1)}
        self.servers = [self.sink_a, self.sink_b, self.dovecot, self.mailroute[2],
                        self.mailroute[1]]

    def start(self):
        servers.write_passwd_file(self.passwd, self.routes())
        for server in self.servers:
            server.start()

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
            status = server.proc.stop()
            log(f"stopped {server.proc.name} (pid {server.proc.pid}, exit {status})")

    def port(self, target):
        return {"direct": self.sink_a.port, "dovecot": self.dovecot.port,
                "mailroute": self.mailroute[2].port,
                "mailroute-1w": self.mailroute[1].port}[target]

    def router_pid(self, target):
        return {"direct": None, "dovecot": self.dovecot.proc.pid,
                "mailroute": self.mailroute[2].pid,
                "mailroute-1w": self.mailroute[1].pid}[target]

    def router_cpu(self, target):
        """CPU seconds used so far by the router a target goes through."""
        pid = self.router_pid(target)
        if pid is None:
            return None
        if target == "dovecot":
            return procs.group_cpu_seconds(pid)
        return procs.cpu_seconds(pid)

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
    argv.append(f"127.0.0.1:{lab.port(target)}")
    return procs.pinned(argv, lab.load_cpus)


def measure(lab, scenario, target, messages):
    """Run one smtp-source load against target; a sample dict."""
    load_log = os.path.join(lab.root, "load.log")
    with open(load_log, "a") as f:
        f.write(f"--- {scenario.key} {target} {messages} messages\n")
    # Peak RSS only for mailroute: Dovecot's work is spread over processes.
    pid = lab.router_pid(target) if target.startswith("mailroute") else None
    if scenario.large and pid is not None:
        procs.reset_peak_rss(pid)
    before = snapshot(lab, target)
    argv = load_argv(lab, scenario, target, messages)
    status, elapsed = procs.run_bounded(argv, scenario.timeout, load_log)
    after = snapshot(lab, target)
    lab.check_alive()
    if status != 0:
        why = "timed out" if status is None else f"exit {status}"
        log(f"  {scenario.key} {target}: smtp-source {why}; see {load_log}")
        return None
    return sample(scenario, messages, elapsed, before, after,
                  procs.peak_rss_kib(pid) if scenario.large and pid else None)


def snapshot(lab, target):
    return {"router": lab.router_cpu(target), "other": procs.foreign_cpu_seconds(lab.pgids())}


def sample(scenario, messages, elapsed, before, after, rss_kib):
    delta = {key: (after[key] - before[key]) if after[key] is not None else None
             for key in after}
    volume = messages * scenario.size / MIB
    result = {"seconds": elapsed, "messages": messages,
              "rate": volume / elapsed if scenario.large else messages / elapsed,
              "rss_kib": rss_kib, "router_cpu": delta["router"], "cpu_per": None,
              "other_cpu": delta["other"]}
    if delta["router"] is not None:
        per = (messages * scenario.size / GIB) if scenario.large else messages / 10000
        result["cpu_per"] = delta["router"] / per
    result["disturbed"] = result["other_cpu"] > DISTURBED_CPU_SHARE * elapsed
    return result


def warm_up(lab):
    """A little load through every target first: Dovecot forks its services,
    mailroute fills its backend pools, the page cache holds the binaries."""
    for target in ("direct", "dovecot", "mailroute", "mailroute-1w"):
        for base in (ONE, SPLIT):
            quick = Scenario("warmup", "warm-up", 20, 400, 400, 4096, rcpts=5, base=base)
            if measure(lab, quick, target, quick.messages) is None:
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


def run_all(lab, reps, quick, results):
    samples = reps * sum(len(scenario.targets) for scenario in SCENARIOS)
    patience = Patience(samples)
    for rep in range(reps):
        for scenario in SCENARIOS:
            messages = scenario.quick_messages if quick else scenario.messages
            # A different target goes first in each repetition.
            for target in rotated(scenario.targets, rep):
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
    unit = "MiB/s" if scenario.large else "msg/s"
    text = f"{head} {one['rate']:>9,.1f} {unit} ({one['seconds']:.2f} s)"
    if one["rss_kib"]:
        text += f" peak RSS {one['rss_kib'] / 1024:.1f} MiB"
    if one["disturbed"]:
        text += f" [other load {one['other_cpu']:.1f} CPU-s]"
    return text


# --- the report -----------------------------------------------------------------

def main_table(results):
    header = ["scenario", "unit", "direct", "Dovecot", "mailroute", "mailroute/direct",
              "mailroute/Dovecot", "mailroute CPU", "Dovecot CPU", "mailroute peak RSS"]
    rows = []
    for scenario in SCENARIOS:
        if scenario.key == "workers":
            continue
        key = scenario.key
        cpu_unit = " s/GiB" if scenario.large else " s/10k"
        rss = results.values(key, "mailroute", "rss_kib")
        rows.append([
            scenario.title, "MiB/s" if scenario.large else "msg/s",
            rate_cell(results, key, "direct"), rate_cell(results, key, "dovecot"),
            rate_cell(results, key, "mailroute"),
            report.ratio_cell(results.ratios(key, "mailroute", "direct")),
            report.ratio_cell(results.ratios(key, "mailroute", "dovecot")),
            report.cell(results.values(key, "mailroute", "cpu_per"), suffix=cpu_unit),
            report.cell(results.values(key, "dovecot", "cpu_per"), suffix=cpu_unit),
            f"{max(rss) / 1024:.1f} MiB" if rss else "—"])
    return report.table(header, rows)


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
    return report.Target(title, measure_it, lambda v: v >= minimum)


def rss_target(title, scenario, limit_mib):
    def measure_it(results):
        rss = results.values(scenario, "mailroute", "rss_kib")
        if not rss:
            return None, None
        return max(rss) / 1024, f"{max(rss) / 1024:.1f} MiB (max of {len(rss)} runs)"
    return report.Target(title, measure_it, lambda v: v < limit_mib)


TARGETS = [
    ratio_target("LMTP 1 rcpt, reused: ≥ 0.5x direct", "reused", "mailroute", "direct", 0.5),
    ratio_target("LMTP 1 rcpt, reused: ≥ 5x Dovecot", "reused", "mailroute", "dovecot", 5),
    ratio_target("5 rcpts over 2 backends: ≥ 5x Dovecot", "split5", "mailroute", "dovecot", 5),
    ratio_target("10 MiB messages: ≥ 0.9x direct MiB/s", "large", "mailroute", "direct", 0.9),
    rss_target("peak RSS, 4 concurrent 100 MiB messages: < 64 MiB", "huge", 64),
    ratio_target("2 workers ≥ 1.6x 1 worker (1 rcpt, reused)", "workers", "mailroute",
                 "mailroute-1w", 1.6),
]


def machine_text(lab, binary, reps, quick, elapsed):
    cpus = len(os.sched_getaffinity(0))
    if lab.router_cpus:
        pinning = (f"routers pinned to CPUs {lab.router_cpus}, smtp-source and smtp-sink "
                   f"to {lab.load_cpus}")
    else:
        pinning = "not pinned: load generator, sinks and routers share all CPUs"
    return "\n".join([
        f"- machine: {cpus} CPUs ({cpu_model()}), kernel {platform.release()}, "
        f"{memory_gib():.0f} GiB",
        f"- {pinning}",
        f"- mailrouted: {binary} ({build_type(binary)})",
        f"- Dovecot {command_output(['dovecot', '--version'])}, Postfix "
        f"{command_output(['postconf', '-dh', 'mail_version'])} (smtp-source, smtp-sink)",
        f"- {reps} repetition(s){' (quick mode)' if quick else ''}, {elapsed:.0f} s in all; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"])


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
    for workers, server in sorted(lab.mailroute.items()):
        total, ok = server.recipient_replies()
        lines.append(f"- mailroute (workers = {workers}) log: {total:,} recipient lines, "
                     f"{total - ok} without a 250")
    return "\n".join(lines)


def full_report(lab, results, binary, reps, quick, elapsed):
    targets = report.table(["target", "measured (median of per-repetition ratios)", ""],
                           [t.row(results) for t in TARGETS])
    return "\n\n".join([
        "### LMTP: direct vs Dovecot 2.3 proxy vs mailroute",
        "Medians over the repetitions, (min–max); ratios are the medians of the "
        "per-repetition ratios. CPU is the router's own (mailroute: utime+stime of the "
        "process; Dovecot: every process of the instance), per 10,000 messages or per GiB.",
        main_table(results), workers_table(results), targets,
        machine_text(lab, binary, reps, quick, elapsed) + "\n" + noise_text(results)
        + "\n" + log_check_text(lab)]) + "\n"


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
    args = parser.parse_args()
    if not 1 <= args.reps <= 50:
        parser.error("--reps must be between 1 and 50")
    return args


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
    # SIGTERM (e.g. from make being stopped) unwinds through the finally below.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    root = tempfile.mkdtemp(prefix="mrbench-", dir="/tmp")
    os.chmod(root, 0o755)
    lab = Lab(root, binary, args.pin)
    results = report.Results()
    started = time.monotonic()
    text = None
    try:
        lab.start()
        warm_up(lab)
        run_all(lab, args.reps, args.quick, results)
        text = full_report(lab, results, binary, args.reps, args.quick,
                           time.monotonic() - started)
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
