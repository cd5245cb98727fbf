"""Helpers of bench/lmtp_bench.py: processes and /proc readings (procs),
the servers under test (servers), the Markdown report (report)."""
