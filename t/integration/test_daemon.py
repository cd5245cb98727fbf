"""The daemon as an admin sees it: `-t` config checks naming file:line,
`-n`, the `lookup` command and its exit codes, the passwd-file reloading by
itself, SIGHUP reloading the config, SIGTERM (DESIGN.md §3, §7)."""

import os
import signal
import time

import pytest

from harness.checks import assert_saved
from harness.lmtp_client import RawLmtp, dot_stuff, send_message
from harness.mailroute import EXIT_NOUSER, EXIT_OK, EXIT_TEMPFAIL, Mailroute
from harness.maildir import make_message, messages_with, new_marker
from harness.procs import free_port, wait_until

SENDER = "sender@example.org"


def error_config(mailroute, broken_line):
    """mailroute's config with broken_line appended; (path, its line number)."""
    text = mailroute.config_text().rstrip("\n") + "\n"
    path = os.path.join(mailroute.dir, "broken.conf")
    with open(path, "w") as f:
        f.write(text + broken_line + "\n")
    return path, text.count("\n") + 1


def new_mailroute(workdir, users=None, **kwargs):
    """A Mailroute that is configured but not started (for -t and lookup)."""
    return Mailroute(os.path.join(workdir, "mailroute"), users=users, **kwargs)


def test_valid_config_checks_ok(workdir):
    result = new_mailroute(workdir).check_config()
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("broken_line", [
    "no_such_setting = 1",
    "workers = lots",
    "no_such_section {\n}",
    "imap_local = mail.example.com",
    "auth_mechanisms = plain cram-md5",
    "mail_max_userip_connections = -1",
])
def test_config_error_names_file_and_line(workdir, broken_line):
    mailroute = new_mailroute(workdir)
    path, line = error_config(mailroute, broken_line)
    result = mailroute.check_config(path)
    assert result.returncode != 0
    assert f"{path}:{line}:" in result.stderr, result.stderr


def test_config_error_in_an_included_file_names_that_file(workdir):
    mailroute = new_mailroute(workdir)
    included = os.path.join(mailroute.dir, "extra.conf")
    with open(included, "w") as f:
        f.write("# comment\n\nworkers = 2\nbogus_key = yes\n")
    path, _ = error_config(mailroute, f"!include {included}")
    result = mailroute.check_config(path)
    assert result.returncode != 0
    assert f"{included}:4:" in result.stderr, result.stderr


def test_dash_n_prints_non_default_settings(workdir):
    result = new_mailroute(workdir, hostname="dump.test").dump_config()
    assert result.returncode == 0, result.stderr
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert "hostname = dump.test" in lines, result.stdout
    assert "lmtp_max_line_length = 4096" not in lines, "a default is not printed"


def test_lookup_prints_fields_and_decision(workdir, addr):
    alice, local, dave, loopy, frank = (addr(n) for n in
                                        ("alice", "local", "dave", "loopy", "frank"))
    port = free_port()
    mailroute = new_mailroute(workdir, port=port, users={
        alice: "proxy host=127.0.0.1 port=24101",
        local: "",
        dave: f"proxy_maybe host=127.0.0.1 port={port}",
        loopy: f"proxy host=127.0.0.1 port={port}",
        frank: "host=127.0.0.1 port=24105",
    })

    status, pairs, err = mailroute.lookup(alice)
    assert status == EXIT_OK, err
    assert ("host", "127.0.0.1") in pairs and ("port", "24101") in pairs, pairs
    assert pairs[-1] == ("decision", "proxy"), pairs
    for user, decision in ((local, "local"), (dave, "local"), (loopy, "loop")):
        status, pairs, err = mailroute.lookup(user, "--protocol", "lmtp",
                                              "--local-ip", "127.0.0.1")
        assert (status, pairs[-1]) == (EXIT_OK, ("decision", decision)), (user, pairs, err)
    status, pairs, err = mailroute.lookup(frank, "--protocol", "imap",
                                          "--remote-ip", "192.0.2.1")
    assert (status, pairs[-1]) == (EXIT_OK, ("decision", "referral")), (pairs, err)


def test_lookup_exit_codes_for_unknown_user_and_tempfail(workdir, addr):
    mailroute = new_mailroute(workdir, users={addr("alice"): ""})
    status, pairs, err = mailroute.lookup(addr("nobody"))
    assert (status, pairs[-1:]) == (EXIT_NOUSER, [("decision", "refuse")]), (pairs, err)

    broken = new_mailroute(os.path.join(workdir, "broken"),
                           passwd_path=os.path.join(workdir, "missing", "users"))
    status, pairs, err = broken.lookup(addr("alice"))
    assert (status, pairs[-1:]) == (EXIT_TEMPFAIL, [("decision", "tempfail")]), (pairs, err)


def test_passwd_file_change_applies_to_the_next_recipient(start_mailroute, backend_a,
                                                          backend_b, addr):
    alice = addr("alice")
    mailroute = start_mailroute({alice: f"proxy host=127.0.0.1 port={backend_a.port}"})
    before, after = new_marker(), new_marker()
    assert_saved(send_message(mailroute.port, SENDER, [alice],
                              make_message(before)).data[alice], alice)

    mailroute.write_users({alice: f"proxy host=127.0.0.1 port={backend_b.port}"})
    for _ in range(4):  # at once, on several connections, so every worker is asked
        assert_saved(send_message(mailroute.port, SENDER, [alice],
                                  make_message(after)).data[alice], alice)

    assert len(messages_with(backend_a.maildir(alice), before)) == 1
    assert len(messages_with(backend_b.maildir(alice), after)) == 4
    assert messages_with(backend_a.maildir(alice), after) == [], "went to the old backend"


def greeting_host(mailroute):
    with RawLmtp(mailroute.port) as conn:
        return conn.read_reply().text.split()[0]


def test_sighup_reloads_config_and_keeps_sessions(start_mailroute, backend_a, addr):
    alice = addr("alice")
    mailroute = start_mailroute({alice: f"proxy host=127.0.0.1 port={backend_a.port}"})
    session = RawLmtp(mailroute.port)
    with session:
        assert session.read_reply().text.split()[0] == "router.test"
        assert session.command("LHLO client.test").code == 250

        mailroute.hostname = "reloaded.test"
        mailroute.write_config()
        mailroute.reload()
        wait_until(lambda: greeting_host(mailroute) == "reloaded.test", timeout=10,
                   what="the new hostname after SIGHUP")

        # The session from before the reload still delivers.
        marker = new_marker()
        assert session.command(f"MAIL FROM:<{SENDER}>").code == 250
        assert session.command(f"RCPT TO:<{alice}>").code == 250
        assert session.command("DATA").code == 354
        session.send(dot_stuff(make_message(marker)))
        reply = session.read_reply()
        assert_saved((reply.code, reply.text), alice)
    assert len(messages_with(backend_a.maildir(alice), marker)) == 1


def test_sighup_with_a_broken_config_keeps_the_old_one(start_mailroute):
    mailroute = start_mailroute({})
    with open(mailroute.config_path, "a") as f:
        f.write("hostname = broken.test\nno_such_setting = 1\n")
    broken_line = mailroute.config_text().count("\n") + 2
    mailroute.reload()
    wait_until(lambda: mailroute.log_lines(f"{mailroute.config_path}:{broken_line}:"),
               timeout=10, what="the config error in the log")
    assert mailroute.alive()
    assert greeting_host(mailroute) == "router.test"


@pytest.mark.parametrize("client", ["no client", "idle client"])
def test_sigterm_exits_promptly_when_idle(start_mailroute, client):
    mailroute = start_mailroute({})
    conn = None
    if client == "idle client":
        conn = RawLmtp(mailroute.port)
        assert conn.read_reply().code == 220
        assert conn.command("LHLO client.test").code == 250
    try:
        mailroute.exit_expected = True
        mailroute.signal(signal.SIGTERM)
        status = mailroute.proc.wait_exit(timeout=5)
        assert status == 0, f"mailrouted exit status {status} (None = still running)"
    finally:
        if conn:
            conn.close()


def test_sigterm_lets_an_open_transaction_finish(start_mailroute, backend_a, addr):
    alice = addr("alice")
    mailroute = start_mailroute({alice: f"proxy host=127.0.0.1 port={backend_a.port}"})
    marker = new_marker()
    data = dot_stuff(make_message(marker))
    with RawLmtp(mailroute.port) as conn:
        assert conn.read_reply().code == 220
        assert conn.command("LHLO client.test").code == 250
        assert conn.command(f"MAIL FROM:<{SENDER}>").code == 250
        assert conn.command(f"RCPT TO:<{alice}>").code == 250
        assert conn.command("DATA").code == 354
        conn.send(data[:40])
        mailroute.exit_expected = True
        mailroute.signal(signal.SIGTERM)
        time.sleep(0.3)  # let the signal arrive before the rest of the body
        conn.send(data[40:])
        reply = conn.read_reply()
        assert_saved((reply.code, reply.text), alice)
    assert mailroute.proc.wait_exit(timeout=10) == 0
    assert len(messages_with(backend_a.maildir(alice), marker)) == 1


def privileged_free_port():
    """A free port below 1024: only root can bind it."""
    import socket
    for port in range(700, 1000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    pytest.skip("no free port below 1024")


def process_uids(pid):
    """The real, effective, saved and fs uid of every thread of pid."""
    uids = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            line = next(line for line in f if line.startswith("Uid:"))
        uids.update(int(u) for u in line.split()[1:])
    return uids


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_run_as_user_binds_first_then_drops_root(start_mailroute, backend_a, addr):
    """A port below 1024 is bound as root; then every thread runs as nobody
    and delivery (passwd-file lookups, the backend) goes on."""
    import pwd
    nobody = pwd.getpwnam("nobody").pw_uid
    alice = addr("alice")
    mailroute = start_mailroute({alice: f"proxy host=127.0.0.1 port={backend_a.port}"},
                                port=privileged_free_port(),
                                extra_config="run_as_user = nobody\n")
    assert process_uids(mailroute.pid) == {nobody}
    assert mailroute.log_lines(f"running as nobody (uid {nobody},")
    marker = new_marker()
    assert_saved(send_message(mailroute.port, SENDER, [alice], make_message(marker)).data[alice],
                 alice)
    assert len(messages_with(backend_a.maildir(alice), marker)) == 1


def test_run_as_an_unknown_user_refuses_to_start(workdir):
    mailroute = new_mailroute(workdir, extra_config="run_as_user = no-such-user-here\n")
    mailroute.start(wait=False)
    assert mailroute.proc.wait_exit(10) == 1
    assert "run_as_user: no user 'no-such-user-here'" in mailroute.stderr()
