"""What a benchmark report says about the machine, and how both benchmarks
cope with a shared one: CPU pinning, the build type of the binary, waiting
(bounded) for other load to pass and flagging samples it disturbed.
"""

import os
import platform
import resource
import shutil
import subprocess
import time

from . import procs

# A sample is "disturbed" when processes outside the benchmark kept this
# much of a CPU busy on average while it ran (the machines are shared).
DISTURBED_CPU_SHARE = 0.25
# Before a sample, wait up to QUIET_WAIT s (looking QUIET_PROBE s at a time)
# for such load to go away, as long as the run's QUIET_BUDGET s last; a
# disturbed sample is run once more, as long as RETRY_SHARE of the samples
# allow. All bounded: a busy machine gives a slower run with flagged
# samples, never an endless one.
QUIET_PROBE = 0.25
QUIET_WAIT = 5.0
QUIET_BUDGET = 60.0
RETRY_SHARE = 0.15


def cpu_plan(pin):
    """(CPUs for the servers under test, CPUs for the load and the backends),
    or Nones when they share the machine's CPUs: apart means the servers on
    the first two CPUs (issue 6's 2-core machine), the rest on the others."""
    cpus = sorted(os.sched_getaffinity(0))
    if pin == "no" or shutil.which("taskset") is None:
        return None, None
    if len(cpus) < 4:
        if pin == "yes":
            raise SystemExit(f"--pin yes needs at least 4 CPUs, this machine has {len(cpus)}")
        return None, None
    return ",".join(str(c) for c in cpus[:2]), ",".join(str(c) for c in cpus[2:])


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


def is_sanitized(binary):
    with open(binary, "rb") as f:
        return b"__asan_init" in f.read()


def machine_line():
    cpus = len(os.sched_getaffinity(0))
    return (f"- machine: {cpus} CPUs ({cpu_model()}), kernel {platform.release()}, "
            f"{memory_gib():.0f} GiB")


def mailrouted_line(binary):
    return f"- mailrouted: {binary} ({build_type(binary)})"


def run_line(reps, quick, elapsed):
    return (f"- {reps} repetition(s){' (quick mode)' if quick else ''}, {elapsed:.0f} s in all; "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def nofile_limit():
    """The hard limit of open files per process (every process started here)."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


class Patience:
    """What is left of the run's budgets for waiting out other load."""

    def __init__(self, samples):
        self.wait_left = QUIET_BUDGET
        self.retries_left = max(2, int(samples * RETRY_SHARE))


def wait_for_quiet(pgids, patience):
    """Wait (bounded) until processes outside the groups pgids leave the CPUs alone."""
    deadline = time.monotonic() + min(QUIET_WAIT, patience.wait_left)
    started = time.monotonic()
    while time.monotonic() < deadline:
        before = procs.foreign_cpu_seconds(pgids)
        time.sleep(QUIET_PROBE)
        others = procs.foreign_cpu_seconds(pgids) - before
        if others < DISTURBED_CPU_SHARE * QUIET_PROBE:
            break
    patience.wait_left -= time.monotonic() - started


def disturbed(other_cpu, seconds):
    return other_cpu > DISTURBED_CPU_SHARE * seconds


def noise_line(results, which="samples"):
    """How much others loaded the machine while the samples (those with an
    other_cpu reading) ran, and how many of them they disturbed."""
    samples = [s for per_target in results.samples.values() for runs in per_target.values()
               for s in runs if s is not None and "other_cpu" in s]
    disturbed_ones = [s for s in samples if s["disturbed"]]
    other = sum(s["other_cpu"] for s in samples)
    busy = sum(s["seconds"] for s in samples)
    return (f"- other load on the machine while the {which} ran: {other:.1f} CPU-s in "
            f"{busy:.0f} s; {len(disturbed_ones)} of {len(samples)} samples had more than "
            f"{DISTURBED_CPU_SHARE:.2f} CPU busy outside the benchmark")
