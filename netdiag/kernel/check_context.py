"""What a doctor check is given and what it returns: a Check row per fact, a Context with the
host's paths (unit tests point them at a fake tree) and the live trials (tests replace them),
and the helpers every check uses to read a file or run a trial without failing doctor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol

from netdiag.errors import NetdiagError
from netdiag.kernel.host import REAL, HostPaths

Status = Literal["ok", "degraded", "missing"]


@dataclass(frozen=True)
class HookNeed:
    """A tracepoint some probe hooks: the arguments it reads and what it enables."""

    enables: str
    core: bool
    args: tuple[str, ...] = ()


# Used when no probe manifests are given (the CLI passes the ones from probes/*.toml).
DEFAULT_HOOKS: dict[str, HookNeed] = {
    "tcp:tcp_probe": HookNeed(
        "trace-peers: RTT, cwnd, windows per socket cookie",
        True,
        ("srtt", "snd_cwnd", "sock_cookie"),
    ),
    "sock:inet_sock_set_state": HookNeed("trace-peers: connection lifecycle", True),
    "tcp:tcp_retransmit_skb": HookNeed("trace-peers: retransmits", True),
    "skb:kfree_skb": HookNeed("tcp_drops: drops with reasons", False),
    "tcp:tcp_cong_state_set": HookNeed("tcp_cong: time in each congestion state", False),
}


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    enables: str
    fix: str = ""
    core: bool = False

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class Trials(Protocol):
    def bcc_tracepoint(self) -> tuple[bool, str]: ...
    def sockops_attach(self) -> tuple[bool, str]: ...
    def tun_device(self) -> tuple[bool, str]: ...
    def sock_diag(self) -> tuple[bool, str]: ...
    def qdiscs(self, kinds: list[str]) -> dict[str, tuple[bool, str]]: ...


class LiveTrials:
    """The real thing (root only)."""

    def bcc_tracepoint(self) -> tuple[bool, str]:
        from netdiag.kernel import selftest

        return selftest.bcc_tracepoint()

    def sockops_attach(self) -> tuple[bool, str]:
        from netdiag.kernel import selftest

        return selftest.sockops_attach()

    def tun_device(self) -> tuple[bool, str]:
        from netdiag.kernel import selftest

        return selftest.tun_device()

    def sock_diag(self) -> tuple[bool, str]:
        from netdiag.kernel import selftest

        return selftest.sock_diag()

    def qdiscs(self, kinds: list[str]) -> dict[str, tuple[bool, str]]:
        from netdiag.kernel import qdisc

        return {k: (p.available, p.detail) for k, p in qdisc.probe(kinds).items()}


@dataclass
class Context:
    host: HostPaths = REAL
    trials: Trials = field(default_factory=LiveTrials)
    # trials need privileges; without them a trial's row says what is missing instead of failing
    privileged: bool = True
    hooks: dict[str, HookNeed] = field(default_factory=lambda: dict(DEFAULT_HOOKS))


def read_proc(host: HostPaths, rel: str) -> str | None:
    try:
        return (host.proc / rel).read_text().strip()
    except OSError:
        return None


def trial(
    ctx: Context,
    name: str,
    enables: str,
    fn: Callable[[], tuple[bool, str]],
    *,
    fix: str,
    need: str | None,
    core: bool = False,
) -> Check:
    """A check decided by trying it (``fn``), never tried without the privilege ``need``."""
    if need is not None and not ctx.privileged:
        return Check(name, "missing", f"not tried: needs {need}", enables, "run as root", core)
    try:
        ok, detail = fn()
    except NetdiagError as e:
        ok, detail = False, str(e)
    except Exception as e:  # a trial must never take doctor down; report what broke
        ok, detail = False, f"{type(e).__name__}: {e}"
    return Check(name, "ok" if ok else "missing", detail, enables, "" if ok else fix, core)
