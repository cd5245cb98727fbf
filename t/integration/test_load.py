"""Many concurrent sessions through mailroute: Postfix's smtp-source sends
LMTP load, recipients spread over two LMTP sinks; every recipient of every
message arrives exactly once, at the right sink."""

import os
from collections import Counter

from harness.procs import run, wait_until
from harness.sink import SmtpSink

SESSIONS, MESSAGES = 8, 120


def test_concurrent_sessions_each_recipient_once(start_mailroute, workdir, addr):
    sink1 = SmtpSink(os.path.join(workdir, "sink1"), lmtp=True).start()
    sink2 = SmtpSink(os.path.join(workdir, "sink2"), lmtp=True).start()
    try:
        base = addr("load")  # smtp-source -r 3 sends to base, 2base and 3base
        to_sink1 = f"proxy host=127.0.0.1 port={sink1.port}"
        to_sink2 = f"proxy host=127.0.0.1 port={sink2.port}"
        mailroute = start_mailroute({base: to_sink1, "2" + base: to_sink2,
                                     "3" + base: to_sink1})
        result = run(["smtp-source", "-L", "-s", SESSIONS, "-m", MESSAGES, "-r", 3,
                      "-l", 4000, "-f", "sender@example.org", "-t", base,
                      "-M", "client.test", f"127.0.0.1:{mailroute.port}"], timeout=120)
        assert result.returncode == 0, result.stderr
        wait_until(lambda: len(sink1.dumps()) == MESSAGES and len(sink2.dumps()) == MESSAGES,
                   timeout=10, what="every message at both sinks")
        rcpts1 = Counter(r for d in sink1.dumps() for r in d.rcpts)
        rcpts2 = Counter(r for d in sink2.dumps() for r in d.rcpts)
        assert rcpts1 == {base: MESSAGES, "3" + base: MESSAGES}, rcpts1
        assert rcpts2 == {"2" + base: MESSAGES}, rcpts2
        lines = mailroute.log_lines("decision=proxy")
        assert len(lines) == 3 * MESSAGES
    finally:
        sink1.stop()
        sink2.stop()
