"""A `netdiag exporter` child process, driven as an operator (or systemd) would: started with
flags, read over HTTP, signalled, its memory read from /proc. Used by `bench exporter-soak`
and the exporter's tests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from netdiag.errors import NetdiagError

READY = re.compile(r"serving http://(\S+)/metrics")


def netdiag_argv() -> list[str]:
    exe = Path(sys.executable).with_name("netdiag")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "netdiag.cli.main"]


class ExporterProcess:
    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        prefix: Sequence[str] = (),
        ready_timeout_s: float = 60.0,
    ) -> None:
        self.argv = [*prefix, *netdiag_argv(), "exporter", *args]
        self.proc = subprocess.Popen(
            self.argv,
            env=dict(os.environ if env is None else env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr: list[str] = []
        self._ready = threading.Event()
        self.address = ""
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._ready.wait(ready_timeout_s) or not self.address:
            self.kill()
            raise NetdiagError(
                f"netdiag exporter did not start: {''.join(self.stderr)[-2000:].strip()}",
                "run the same command by hand to see why",
            )

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if len(self.stderr) < 1000:  # a flood of warnings must not grow this without end
                self.stderr.append(line)
            m = READY.search(line)
            if m and not self.address:
                self.address = m.group(1)
                self._ready.set()
        self._ready.set()  # exited before ready

    @property
    def pid(self) -> int:
        return self.proc.pid

    def get(self, path: str, timeout_s: float = 10.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://{self.address}{path}", timeout=timeout_s) as r:
                return int(r.status), r.read()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read()

    def json(self, path: str) -> Any:
        return json.loads(self.get(path)[1])

    def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """name -> [(labels, value)] of one scrape (counters under their `_total` name)."""
        from prometheus_client.parser import text_string_to_metric_families

        code, body = self.get("/metrics")
        if code != 200:
            raise NetdiagError(f"/metrics answered {code}", "see the exporter's stderr")
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for fam in text_string_to_metric_families(body.decode()):
            for s in fam.samples:
                out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
        return out

    def rss_bytes(self) -> int | None:
        """Resident memory from /proc (the kernel's figure, not the exporter's own report)."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def cpu_s(self) -> float | None:
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        tick = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / tick

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout_s: float = 30.0) -> int:
        return self.proc.wait(timeout_s)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then the exit status (SIGKILL if it does not stop in time)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise NetdiagError(
                f"netdiag exporter ignored SIGTERM for {timeout_s:g} s", "a bug: report it"
            ) from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def wait_until(self, pred: Any, timeout_s: float = 30.0, what: str = "condition") -> Any:
        """Poll /healthz until pred(doc) is truthy; returns the doc."""
        end = time.monotonic() + timeout_s
        doc: Any = None
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise NetdiagError(
                    f"netdiag exporter exited ({self.proc.returncode}) waiting for {what}: "
                    f"{''.join(self.stderr)[-1500:]}",
                    "see its stderr above",
                )
            doc = self.json("/healthz")
            if pred(doc):
                return doc
            time.sleep(0.1)
        raise NetdiagError(f"timed out waiting for {what}; last /healthz {doc}", "see stderr")
