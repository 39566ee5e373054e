"""The operator station: a small web server inside the daemon (live verdicts, review queue, status strip)."""
