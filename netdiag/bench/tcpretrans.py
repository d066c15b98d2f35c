"""bcc's tcpretrans-bpfcc -c as a reference counter for `bench probes accuracy`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

from netdiag.kernel import headers


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class TcpRetrans:
    """bcc's tcpretrans-bpfcc -c (counts per flow); None when it cannot run here."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.error: str | None = None
        exe = shutil.which("tcpretrans-bpfcc") or shutil.which("tcpretrans")
        if exe is None:
            self.error = "tcpretrans-bpfcc not installed"
            return
        env = dict(os.environ, BCC_KERNEL_SOURCE=str(headers.find().path))
        self.proc = subprocess.Popen(
            [exe, "-c"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            # it is stopped with SIGINT: a child of a process that ignores SIGINT (a background
            # job of a non-interactive shell, CI) would inherit SIG_IGN and never print its counts
            preexec_fn=_default_sigint,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()  # "Tracing retransmits ... Hit Ctrl-C to end"
        if "Tracing" not in first:
            self.proc.kill()
            tail = self.proc.stderr.read()[-300:] if self.proc.stderr else ""
            self.error = f"tcpretrans did not start: {first.strip()} {tail}"
            self.proc = None

    def stop(self, port: int) -> int | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            self.error = "tcpretrans did not exit within 30 s of SIGINT"
            return None
        total = 0
        for line in out.splitlines():  # "[198.18.0.1]#59478   <-> [198.18.0.6]#43709   204"
            parts = line.split()
            if (
                len(parts) == 4
                and parts[1] == "<->"
                and parts[3].isdigit()
                and (parts[0].endswith(f"#{port}") or parts[2].endswith(f"#{port}"))
            ):
                total += int(parts[3])
        return total
