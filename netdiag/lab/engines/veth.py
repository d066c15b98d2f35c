"""The `veth` link kind: a plain kernel veth pair, shaped by TBF when it has a rate.

For paths where the userspace forwarder would change what is measured: multi-Gbit probe
overhead runs, and retransmit tests that need real qdisc drops on a router. Rate and queue
come from a root TBF on each end's egress; delay, jitter and loss need netem (then the
kernel engine's netem + TBF tree is used), and a kernel without netem refuses them with a
one-line error before the lab makes anything.
"""

from __future__ import annotations

import subprocess
from functools import cache
from typing import Any

from netdiag.errors import KernelFeatureError
from netdiag.lab.engines.base import LinkEnds
from netdiag.lab.engines.kernel import (
    add_veth,
    ends_of,
    needs_netem,
    netem_available,
    qdisc_commands,
    replace_root,
    tbf_args,
)
from netdiag.lab.topology import LinkShape, Topology


@cache
def _netem() -> bool:
    return netem_available()  # probed once per process: a scratch namespace each time is slow


def check(a: str, b: str, shape: LinkShape, netem: bool | None = None) -> None:
    """KernelFeatureError if this veth link asks for what only netem does and netem is absent."""
    if not needs_netem(shape) or (_netem() if netem is None else netem):
        return
    asked = [
        k
        for k, v in (("delay", shape.delay_s), ("jitter", shape.jitter_s), ("loss", shape.loss))
        if v
    ]
    raise KernelFeatureError(
        f"link {a} <-> {b} is kind veth and asks for {', '.join(asked)}, which needs sch_netem "
        "(this kernel has none)",
        "drop those keys from the link (veth does rate and queue with TBF), or leave out "
        '`kind = "veth"` so the lab\'s emulator carries it',
    )


def check_topology(topo: Topology) -> None:
    for ln in topo.links:
        if ln.kind == "veth":
            check(ln.a, ln.b, ln.shape)


def veth_qdisc_commands(ns: str, dev: str, shape: LinkShape, mtu: int) -> list[list[str]]:
    """netem + TBF when the shape needs netem; a root TBF for a rate alone; else nothing."""
    if needs_netem(shape):
        return qdisc_commands(ns, dev, shape, mtu)
    if shape.rate_bps:
        return [["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", *tbf_args(shape, mtu)]]
    return []


class VethEngine:
    name = "veth"

    def create(
        self, ends: LinkEnds, shape: LinkShape
    ) -> tuple[subprocess.Popen[bytes] | None, dict[str, Any]]:
        add_veth(ends)
        for ns, dev in ((ends.ns_a, ends.dev_a), (ends.ns_b, ends.dev_b)):
            replace_root(ns, dev, veth_qdisc_commands(ns, dev, shape, ends.mtu))
        return None, {}

    def set(self, record: dict[str, Any], shape: LinkShape, mtu: int) -> None:
        check(record.get("a", "?"), record.get("b", "?"), shape)
        for ns, dev in ends_of(record):
            replace_root(ns, dev, veth_qdisc_commands(ns, dev, shape, mtu))

    def stats(self, record: dict[str, Any]) -> dict[str, Any]:
        return {}
