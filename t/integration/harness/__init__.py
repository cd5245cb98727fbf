"""The integration-test harness: real servers (Dovecot, Postfix, smtp-sink),
scriptable fake backends, mailrouted itself, and LMTP clients, each started
in a temp dir on loopback and stopped by PID at teardown."""
