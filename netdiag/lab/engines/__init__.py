"""Link engines: how a lab link applies delay, jitter, rate, loss and a bounded queue.

- `userspace`: a C forwarder between two TUN devices (works on kernels without sch_netem).
- `kernel`: a veth pair shaped by netem (delay, jitter, loss) with a TBF child (rate, queue).

A link of kind `veth` is a plain veth pair (TBF for a rate) whatever the lab's engine
(`engines/veth.py`); `for_link` picks what carries a link from its recorded kind.

`choose()` probes for netem in a scratch namespace; `--engine` overrides.
"""

from __future__ import annotations

from netdiag.errors import InputError, KernelFeatureError
from netdiag.lab.engines.base import LinkEnds, LinkEngine
from netdiag.lab.engines.kernel import KernelEngine, netem_available
from netdiag.lab.engines.userspace import UserspaceEngine
from netdiag.lab.engines.veth import VethEngine

__all__ = [
    "KernelEngine",
    "LinkEnds",
    "LinkEngine",
    "UserspaceEngine",
    "VethEngine",
    "choose",
    "for_link",
    "get",
    "netem_available",
]


def get(name: str) -> LinkEngine:
    if name == "userspace":
        return UserspaceEngine()
    if name == "kernel":
        return KernelEngine()
    if name == "veth":
        return VethEngine()
    raise InputError(f"engine {name!r} is unknown", "use auto, userspace or kernel")


def choose(requested: str = "auto") -> LinkEngine:
    """`auto`: kernel where this kernel can add a netem qdisc, else userspace."""
    if requested == "auto":
        return KernelEngine() if netem_available() else UserspaceEngine()
    if requested == "kernel" and not netem_available():
        raise KernelFeatureError(
            "the kernel link engine needs sch_netem, which this kernel cannot load",
            "use --engine userspace (or auto), or a kernel built with CONFIG_NET_SCH_NETEM",
        )
    return get(requested)


def for_link(lab_engine: str, kind: str | None) -> LinkEngine:
    """What carries a link: a veth link is always a veth pair, any other the lab's engine."""
    return VethEngine() if kind == "veth" else get(lab_engine)
