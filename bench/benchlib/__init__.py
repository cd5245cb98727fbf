"""Helpers of the benchmark drivers bench/lmtp_bench.py and bench/imap_bench.py:
what both drivers do alike (driver), processes and /proc readings (procs),
the machine and its other load (machine), the Markdown report (report), the
servers' common parts (servers), the LMTP servers (lmtp, with the SQL passdb
variants in sql and the TLS ones and the TLS client in tls), the IMAP servers
and load (imap)."""
