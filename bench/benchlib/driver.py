"""What both benchmark drivers (lmtp_bench.py, imap_bench.py) do the same way:
their common options, the lab of servers of one run (Lab), the repetitions
(rotated, when_quiet) and the run itself (run): a temp dir, the servers
started and stopped by their PIDs also after an error or SIGTERM, the samples
to --json, the report to stdout and --out.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from . import machine, report

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def log(text):
    print(text, file=sys.stderr, flush=True)


def argument_parser(doc, quick_help, pin_help):
    """A parser with the options both drivers take; the description is the
    first paragraph of doc."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--mailrouted", default=os.path.join(REPO_ROOT, "build", "src",
                                                              "daemon", "mailrouted"))
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--pin", choices=("auto", "yes", "no"), default="auto", help=pin_help)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and its logs")
    parser.add_argument("--out", help="also write the Markdown report to this file")
    parser.add_argument("--json", help="write every sample to this file")
    return parser


def parse_args(parser):
    args = parser.parse_args()
    if not 1 <= args.reps <= 50:
        parser.error("--reps must be between 1 and 50")
    return args


def check_prerequisites(name, why_root, tools, packages, binaries, make_target, problems=()):
    """Exit naming every problem: not root (why_root says why it must be), the
    tools not on PATH (in packages), the binaries of the build not built or
    built with sanitizers, and the problems the caller found."""
    problems = list(problems)
    if os.geteuid() != 0:
        problems.append(f"run as root: {why_root}")
    for tool in tools:
        if shutil.which(tool) is None:
            problems.append(f"{tool} not found (packages {packages})")
    for binary in binaries:
        if not os.access(binary, os.X_OK):
            problems.append(f"{binary} not built (make {make_target} builds it)")
        elif machine.is_sanitized(binary):
            problems.append(f"{binary} is a sanitizer build: its figures mean nothing")
    if problems:
        raise SystemExit(f"{name}: " + "\n  ".join(problems))


class Lab:
    """The servers (servers.Server) of one run in root: started in the order
    of self.servers, stopped in the reverse order."""

    def __init__(self, root):
        self.root = root
        self.servers = []

    def start(self):
        for server in self.servers:
            server.start()

    def started(self):
        """The servers with a process (also one that failed to come up)."""
        return [server for server in self.servers if server.proc is not None]

    def stop(self):
        for server in reversed(self.started()):
            status = server.stop()
            log(f"stopped {server.name} (pid {server.pid}, exit {status})")

    def pgids(self):
        """The process groups of the servers (each started with setsid)."""
        return [server.pid for server in self.started()]

    def check_alive(self):
        for server in self.started():
            if not server.proc.alive():
                raise RuntimeError(f"{server.name} died (exit {server.proc.popen.poll()}); "
                                   f"its files are in {server.dir}\n{server.proc.output_tail()}")


def rotated(items, shift):
    """items, the shift-th first: a different target first in each repetition."""
    shift %= len(items)
    return list(items[shift:]) + list(items[:shift])


def when_quiet(lab, patience, what, measure_once):
    """measure_once(again=False) once the machine is quiet (machine.wait_for_quiet);
    when others loaded it meanwhile, measure_once(again=True) if the patience
    allows. A sample dict, or None when the run failed."""
    machine.wait_for_quiet(lab.pgids(), patience)
    one = measure_once(again=False)
    if one is None or not one["disturbed"] or patience.retries_left <= 0:
        return one
    patience.retries_left -= 1
    log(f"  {what}: other load {one['other_cpu']:.1f} CPU-s in {one['seconds']:.1f} s, "
        f"once more")
    machine.wait_for_quiet(lab.pgids(), patience)
    return measure_once(again=True)


def run(name, args, root_prefix, make_lab, measure):
    """The run: make_lab(root) in a new temp dir /tmp/ROOT_PREFIX*, its
    servers started; measure(lab, results, started) the report's text
    (started: time.monotonic() before the servers). The servers are stopped
    by their PIDs also after an error or SIGTERM; the temp dir is kept with
    --keep or after an error, which exits 1."""
    # SIGTERM (e.g. from make being stopped) unwinds through the finally below.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    root = tempfile.mkdtemp(prefix=root_prefix, dir="/tmp")
    os.chmod(root, 0o755)
    lab = make_lab(root)
    results = report.Results()
    started = time.monotonic()
    text = None
    try:
        lab.start()
        text = measure(lab, results, started)
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        log(f"{name}: {error}")
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
