"""`netdiag exporter`: the probes and the verdict engine as a long-running daemon.

config.py   settings: defaults < config file < flags, validated, re-read on SIGHUP
server.py   /metrics, /healthz, /verdicts over HTTP (one thread per request)
verdicts.py the verdict engine run every so often in a thread; findings and their counts
daemon.py   the loop: trace pipeline frames -> bounded Prometheus series; signals
"""
