"""Fixtures of the mailroute integration tests.

Session-wide: a temp root (mode 755, so Dovecot's users can traverse it),
two Dovecot LMTP backends (A and B) and an smtp-sink SMTP backend. Per test:
a work dir, unique addresses, and `start_mailroute`, which starts mailrouted
instances and at teardown stops them and fails the test when one crashed or
wrote a sanitizer report.

Set MR_ITEST_KEEP=1 to keep the temp root (logs, maildirs) after the run."""

import itertools
import os
import re
import shutil
import signal
import tempfile

import pytest

from harness import procs
from harness.certs import Certs
from harness.dovecot import DovecotBackend
from harness.fake_backend import FakeBackend
from harness.mailroute import Mailroute, binary_path, is_sanitized
from harness.sink import SmtpSink


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember each phase's report on the item, for teardown diagnostics."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, "report_" + report.when, report)


def _test_failed(request):
    report = getattr(request.node, "report_call", None)
    return report is not None and report.failed


def _clean_up(root):
    procs.stop_all()
    if os.environ.get("MR_ITEST_KEEP"):
        print(f"\nintegration test files kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def tmp_root():
    # Short paths: a UNIX socket path must fit in 108 bytes.
    root = tempfile.mkdtemp(prefix="mr-itest-", dir="/tmp")
    os.chmod(root, 0o755)

    def on_sigterm(signum, frame):
        # pytest would die without its teardown: stop the helpers first.
        _clean_up(root)
        os._exit(128 + signum)
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    yield root
    signal.signal(signal.SIGTERM, previous)
    _clean_up(root)


_workdir_numbers = itertools.count(1)


@pytest.fixture
def workdir(tmp_root, request):
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    name = name.removeprefix("test_")[:24]
    path = os.path.join(tmp_root, f"{next(_workdir_numbers):02d}-{name}")
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o755)
    return path


_test_numbers = itertools.count(1)


@pytest.fixture
def addr():
    """addr("alice") -> "alice.<n>@example.com", n unique to this test, so
    tests sharing a backend never see each other's mail."""
    number = next(_test_numbers)
    return lambda name, domain="example.com": f"{name}.{number}@{domain}"


@pytest.fixture(scope="session")
def sanitized():
    path = binary_path()
    return os.path.exists(path) and is_sanitized(path)


@pytest.fixture(scope="session")
def backend_a(tmp_root):
    backend = DovecotBackend(os.path.join(tmp_root, "dovecot-a"), name="backend-a").start()
    yield backend
    backend.stop()


@pytest.fixture(scope="session")
def backend_b(tmp_root):
    backend = DovecotBackend(os.path.join(tmp_root, "dovecot-b"), name="backend-b").start()
    yield backend
    backend.stop()


@pytest.fixture(scope="session")
def smtp_sink(tmp_root):
    sink = SmtpSink(os.path.join(tmp_root, "smtp-sink")).start()
    yield sink
    sink.stop()


@pytest.fixture(scope="session")
def tls_certs(tmp_root):
    """The test CAs and certificates (harness/certs.py), made once per run."""
    return Certs(os.path.join(tmp_root, "tls-certs")).generate()


@pytest.fixture
def fake_backend():
    """start(**kwargs) -> a running FakeBackend, stopped at teardown."""
    started = []

    def start(**kwargs):
        fake = FakeBackend(**kwargs).start()
        started.append(fake)
        return fake
    yield start
    for fake in started:
        fake.stop()


@pytest.fixture
def start_mailroute(workdir, request):
    """start(users={addr: fields}, extra_config=..., wait=True, ...) -> a running
    Mailroute. At teardown every instance is stopped with SIGTERM; the test
    fails if one died on its own (unless the test set exit_expected), did not
    exit with status 0, or wrote a sanitizer report."""
    instances = []

    def start(users=None, wait=True, **kwargs):
        mailroute = Mailroute(os.path.join(workdir, f"mr{len(instances)}"),
                              users=users, **kwargs)
        instances.append(mailroute)
        try:
            return mailroute.start(wait=wait)
        except AssertionError:
            mailroute.exit_expected = True  # already reported by the failed start
            raise
    yield start

    problems = []
    for mailroute in instances:
        if mailroute.proc is None:
            continue
        died = not mailroute.alive()
        status = mailroute.stop()
        if died and not mailroute.exit_expected:
            problems.append(f"mailrouted {mailroute.dir} died during the test "
                            f"(status {status})")
        elif not died and status != 0:
            problems.append(f"mailrouted {mailroute.dir} exited with status {status} on "
                            "SIGTERM (-9: it did not stop within 10 s)")
        report = mailroute.sanitizer_report()
        if report:
            problems.append(f"sanitizer report in {mailroute.stderr_path}:\n{report}")
        if _test_failed(request) or problems:
            tail = "\n".join(mailroute.stderr().splitlines()[-60:])
            print(f"\n--- mailrouted stderr ({mailroute.stderr_path}), last lines ---\n{tail}")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
