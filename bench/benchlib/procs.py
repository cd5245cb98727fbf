"""Processes, ports and /proc readings for the benchmark driver.

Every process the benchmark starts runs in its own session (setsid), so its
PID is also its process group id; it is stopped by that PID (and, for what
its children left behind, by that group) at the end, also after an error.
Every wait here has a deadline. Nothing in this module knows about mail:
see servers.py for smtp-sink, Dovecot and mailrouted.
"""

import os
import random
import resource
import signal
import socket
import subprocess
import time

# Below 32768: outside the kernel's ephemeral range, so a port found free
# here is not taken a moment later by some outgoing connection.
PORT_RANGE = (20000, 32000)
CLK_TCK = os.sysconf("SC_CLK_TCK")

_ports_given = set()


def free_port(host="127.0.0.1"):
    """A TCP port on host that nothing is bound to and that we did not hand out yet."""
    for _ in range(1000):
        port = random.randrange(*PORT_RANGE)
        if port in _ports_given:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _ports_given.add(port)
        return port
    raise RuntimeError("no free TCP port found")


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(predicate, timeout, what, interval=0.05):
    """Poll predicate() until it is true; RuntimeError naming `what` after timeout s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def pinned(argv, cpus):
    """argv run on the CPU list `cpus` ("2-7") with taskset, or as is when cpus is None."""
    argv = [str(a) for a in argv]
    return argv if cpus is None else ["taskset", "-c", cpus] + argv


class Proc:
    """A long-running helper (server) in its own session; output to log_path."""

    def __init__(self, name, argv, log_path, cwd=None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self.cwd = cwd
        self.popen = None

    @property
    def pid(self):
        return self.popen.pid

    def start(self):
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=log, cwd=self.cwd, start_new_session=True)
        return self

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout=10.0):
        """SIGTERM the PID, SIGKILL it after timeout, then SIGKILL whatever its
        children left in its process group. Returns the exit status."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)
        # While the group has members its id cannot be reused, so this only
        # reaches processes this benchmark started (e.g. Dovecot's children).
        if group_members(self.pid):
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return self.popen.returncode

    def output_tail(self, lines=20):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


def run_bounded(argv, timeout, log_path):
    """Run a load generator to completion in its own session, at most `timeout`
    seconds (then its group is killed). Returns (exit status or None on
    timeout, elapsed seconds)."""
    with open(log_path, "ab") as log:
        started = time.monotonic()
        popen = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=log, start_new_session=True)
        try:
            status = popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            status = None
        finally:
            # Timed out, or we are being stopped (SIGTERM, ^C): it goes too.
            if popen.poll() is None:
                os.killpg(popen.pid, signal.SIGKILL)
                popen.wait(timeout=5)
        return status, time.monotonic() - started


# --- /proc --------------------------------------------------------------------

def _stat_fields(pid):
    """Fields of /proc/PID/stat after the command name: [0] is the state (field 3)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid):
    """utime + stime of a process, all its threads, in seconds."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def group_members(pgid):
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if int(_stat_fields(entry)[2]) == pgid:
                members.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return members


def group_cpu_by_name(pgid):
    """{command name: utime+stime seconds} over a process group's live members
    (a Dovecot instance: imap-login, auth, log, ...); reaped children not counted."""
    out = {}
    for pid in group_members(pgid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                text = f.read()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def group_cpu_seconds(pgid):
    """CPU of a process group: each live member's utime+stime plus the
    cutime+cstime of children it reaped (a Dovecot master reaps its services,
    so a service that exited in between is still counted, once)."""
    total = 0
    for pid in group_members(pgid):
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15])
    return total / CLK_TCK


def children_cpu_seconds():
    """utime + stime of this process's reaped children (the load generators) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/{pid}/status")


def peak_rss_kib(pid):
    """VmHWM: the highest resident set size since start or the last reset."""
    return _status_kib(pid, "VmHWM")


def reset_peak_rss(pid):
    """Reset VmHWM to the current RSS (clear_refs 5, Linux >= 4.0); False if refused."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def foreign_cpu_seconds(own_pgids):
    """CPU seconds used so far by the user-space processes outside the process
    groups own_pgids and this process, children they reaped included. The
    difference of two readings is the load others put on the machine in
    between (the machines are shared); a process that exited in between is
    still counted, through its parent's cutime, once."""
    own_pgids = set(own_pgids)
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            fields = _stat_fields(entry)
        except OSError:
            continue
        ppid, pgid = int(fields[1]), int(fields[2])
        if pgid in own_pgids or int(entry) == 2 or ppid == 2:  # ours, or kernel threads
            continue
        total += sum(int(v) for v in fields[11:15])
    return total / CLK_TCK
