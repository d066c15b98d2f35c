"""Which qdiscs this kernel really has — found by trying, in a scratch namespace.

Reading /proc/config.gz or modules.builtin is not enough (modules may be missing, blocked or
autoloaded), so we add each qdisc as root of a veth in a throwaway namespace and see.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any

from netdiag.kernel import netns

# minimal valid parameters for each kind pyroute2 needs to build the request
_PARAMS: dict[str, dict[str, Any]] = {
    "netem": {"delay": 1000},
    "fq": {},
    "htb": {"default": 0x10},
    "tbf": {"rate": "10mbit", "burst": 10000, "latency": "50ms"},
    "fq_codel": {},
    "sfq": {},
}


@dataclass(frozen=True)
class QdiscProbe:
    kind: str
    available: bool
    detail: str


def probe(kinds: list[str]) -> dict[str, QdiscProbe]:
    """Try each qdisc kind on its own veth in one scratch namespace (needs CAP_NET_ADMIN)."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    out: dict[str, QdiscProbe] = {}
    with netns.scratch("qdisc") as ns, IPRoute(netns=ns) as ipr:
        for i, kind in enumerate(kinds):
            dev = f"ndq{i}"
            ipr.link("add", ifname=dev, kind="veth", peer=f"ndq{i}p")
            idx = ipr.link_lookup(ifname=dev)[0]
            try:
                ipr.tc("add", kind, idx, 0x10000, **_PARAMS.get(kind, {}))
                out[kind] = QdiscProbe(kind, True, "added as root qdisc in a scratch namespace")
            except NetlinkError as e:
                if e.code == errno.ENOENT:
                    why = f"kernel has no sch_{kind} (adding it failed: unknown qdisc)"
                else:
                    why = f"adding sch_{kind} failed: {e}"
                out[kind] = QdiscProbe(kind, False, why)
    return out
