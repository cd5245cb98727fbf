"""Helper processes, ports and waiting, for the integration tests.

Every process the harness starts runs in its own session (setsid), with its
output in a file of its own temp dir; its PID is recorded so that teardown
can stop its whole process group, also when a test failed. Nothing here
knows about mail: see dovecot.py, postfix.py, sink.py, mailroute.py.
"""

import os
import random
import signal
import socket
import subprocess
import time

# Ports below 32768 are outside the kernel's ephemeral range on these
# machines, so a port found free here is not taken by an outgoing connection.
PORT_RANGE = (20000, 32000)
_ports_given = set()

# Every Proc still running; stop_all() is the last resort at session end.
_live_procs = []


def free_port(host="127.0.0.1"):
    """A TCP port on host that nothing listens on and no test got before."""
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
    raise RuntimeError("no free port found")


def wait_until(predicate, timeout=10.0, interval=0.02, what="condition"):
    """Poll predicate() until it returns a true value (which is returned).
    Raises AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def unix_socket_open(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(path)
            return True
        except OSError:
            return False


class Proc:
    """One helper process in its own session; output goes to `log_path`."""

    def __init__(self, argv, log_path, cwd=None, env=None):
        self.argv = [str(a) for a in argv]
        self.log_path = str(log_path)
        self.cwd = cwd
        self.env = env
        self.popen = None

    @property
    def pid(self):
        return self.popen.pid

    def start(self):
        log = open(self.log_path, "ab")
        try:
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                cwd=self.cwd, env=self.env, start_new_session=True)
        finally:
            log.close()
        _live_procs.append(self)
        return self

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def returncode(self):
        return self.popen.poll()

    def signal(self, signum):
        if self.alive():
            os.kill(self.pid, signum)

    def wait_exit(self, timeout):
        """The exit status, or None if still running after timeout."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=5.0):
        """SIGTERM the process group, SIGKILL what is left after timeout.
        Returns the exit status of the main process."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self._kill_group(signal.SIGTERM)
            if self.wait_exit(timeout) is None:
                self._kill_group(signal.SIGKILL)
                self.popen.wait(timeout=5)
        # Children that outlived their parent (Dovecot's, Postfix's) are still
        # in the process group. While the group has members its id cannot be
        # reused, so this never reaches a stranger.
        if self._group_has_members():
            self._kill_group(signal.SIGKILL)
        if self in _live_procs:
            _live_procs.remove(self)
        return self.popen.returncode

    def _group_has_members(self):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.pid:  # pgrp, the 5th field of stat
                return True
        return False

    def _kill_group(self, signum):
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            pass

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


def stop_all():
    for proc in list(_live_procs):
        proc.stop(timeout=2)


def run(argv, timeout=30, **kwargs):
    """Run a short command, capture its output (text)."""
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def _listening_ports(table):
    ports = set()
    try:
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A":  # TCP_LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    except FileNotFoundError:
        pass
    return ports


def port_listening(port):
    """True when some socket listens on TCP port (any address), seen in
    /proc/net/tcp{,6}, without connecting to it."""
    return port in _listening_ports("/proc/net/tcp") | _listening_ports("/proc/net/tcp6")
