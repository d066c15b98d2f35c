"""Kernel engine: a veth pair, each end shaped by netem (delay, jitter, loss) + TBF (rate, queue).

Used where the kernel has sch_netem. netem is the root qdisc and holds packets for their
delay (its limit covers the in-flight window); a TBF child serializes at the rate with a
byte-limited tail-drop queue, the bottleneck buffer.
"""

from __future__ import annotations

import math
import subprocess
from typing import Any

from netdiag.errors import NetdiagError
from netdiag.lab.engines.base import LinkEnds
from netdiag.lab.topology import LinkShape


def netem_available() -> bool:
    """Can this kernel add a netem qdisc? doctor's qdisc probe (tried in a scratch namespace)."""
    from pyroute2.netlink.exceptions import NetlinkError

    from netdiag.kernel import qdisc

    try:
        return qdisc.probe(["netem"])["netem"].available
    except (OSError, NetdiagError, NetlinkError):
        return False  # cannot even try (no netns, no veth): the userspace engine still works


def needs_netem(shape: LinkShape) -> bool:
    """Delay, jitter and loss need netem; rate and queue alone TBF can do."""
    return bool(shape.delay_s or shape.jitter_s or shape.loss)


def tbf_args(shape: LinkShape, mtu: int) -> list[str]:
    """TBF at the link's rate; its byte limit is the bottleneck queue (queue x MTU)."""
    burst = max(2 * mtu, shape.rate_bps // 8 // 1000)  # ~1 ms of tokens
    limit = shape.queue_packets(mtu) * mtu
    return ["tbf", "rate", f"{shape.rate_bps}bit", "burst", str(burst), "limit", str(limit)]


def qdisc_commands(
    ns: str, dev: str, shape: LinkShape, mtu: int, verb: str = "add"
) -> list[list[str]]:
    """The tc commands that shape one direction (egress of `dev` in `ns`)."""
    one_way_us = shape.delay_s / 2 * 1e6
    qpkts = shape.queue_packets(mtu)
    # in-flight packets at the rate for the delay, plus the queue, with headroom
    inflight = (
        math.ceil(shape.rate_bps / 8 * (shape.delay_s / 2 + shape.jitter_s) / mtu)
        if shape.rate_bps
        else 10_000
    )
    netem = ["netem", "limit", str(2 * inflight + qpkts + 1000), "delay", f"{one_way_us:.3f}us"]
    if shape.jitter_s:
        netem += [f"{shape.jitter_s * 1e6:.3f}us"]
    if shape.loss:
        netem += ["loss", f"{shape.loss * 100:.6f}%"]
    cmds = [["tc", "-n", ns, "qdisc", verb, "dev", dev, "root", "handle", "1:", *netem]]
    if shape.rate_bps:
        tbf = tbf_args(shape, mtu)
        cmds.append(
            ["tc", "-n", ns, "qdisc", verb, "dev", dev, "parent", "1:1", "handle", "10:", *tbf]
        )
    return cmds


def _run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise NetdiagError(
            f"`{' '.join(cmd)}` failed: {r.stderr.strip()}", "check the kernel's qdisc support"
        )


def add_veth(ends: LinkEnds) -> None:
    """The veth pair of a link, one end in each namespace, both up."""
    _run(
        [
            "ip",
            "-n",
            ends.ns_a,
            "link",
            "add",
            ends.dev_a,
            "mtu",
            str(ends.mtu),
            "type",
            "veth",
            "peer",
            "name",
            ends.dev_b,
            "netns",
            ends.ns_b,
        ]
    )
    for ns, dev in ((ends.ns_a, ends.dev_a), (ends.ns_b, ends.dev_b)):
        _run(["ip", "-n", ns, "link", "set", dev, "up"])


def ends_of(record: dict[str, Any]) -> tuple[tuple[str, str], tuple[str, str]]:
    return (record["ns_a"], record["dev_a"]), (record["ns_b"], record["dev_b"])


def replace_root(ns: str, dev: str, cmds: list[list[str]]) -> None:
    """Replace the whole qdisc tree of `dev` (a rate of 0 removes the TBF, non-zero adds it)."""
    subprocess.run(["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"], capture_output=True)
    for cmd in cmds:
        _run(cmd)


class KernelEngine:
    name = "kernel"

    def create(
        self, ends: LinkEnds, shape: LinkShape
    ) -> tuple[subprocess.Popen[bytes] | None, dict[str, Any]]:
        add_veth(ends)
        for ns, dev in ((ends.ns_a, ends.dev_a), (ends.ns_b, ends.dev_b)):
            for cmd in qdisc_commands(ns, dev, shape, ends.mtu):
                _run(cmd)
        return None, {}

    def set(self, record: dict[str, Any], shape: LinkShape, mtu: int) -> None:
        for ns, dev in ends_of(record):
            replace_root(ns, dev, qdisc_commands(ns, dev, shape, mtu))

    def stats(self, record: dict[str, Any]) -> dict[str, Any]:
        return {}
