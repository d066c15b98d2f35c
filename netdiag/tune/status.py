"""What `netdiag tune --show` reports: the host's transport sysctls now, netdiag's live
tuning (journal entries not reverted, with what the kernel holds now), pinned sockops links
(orphans flagged) and the journal."""

from __future__ import annotations

from typing import Any

from netdiag.errors import NetdiagError
from netdiag.kernel import sysctl
from netdiag.tune import apply as tune_apply
from netdiag.tune import sockops
from netdiag.tune.env import TuneEnv
from netdiag.tune.journal import Entry

SHOWN_SYSCTLS = (
    "net.ipv4.tcp_congestion_control",
    "net.ipv4.tcp_available_congestion_control",
    "net.ipv4.tcp_allowed_congestion_control",
    "net.core.default_qdisc",
    "net.core.rmem_max",
    "net.core.wmem_max",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.ipv4.tcp_notsent_lowat",
    "net.ipv4.tcp_mtu_probing",
    "net.core.somaxconn",
    "net.core.netdev_max_backlog",
    "fs.nr_open",
)


def host_sysctls(env: TuneEnv) -> dict[str, str]:
    out = {}
    for k in SHOWN_SYSCTLS:
        try:
            out[k] = sysctl.read(k, None, env.host)
        except NetdiagError as e:
            out[k] = f"<{e.what}>"
    return out


def entry_row(e: Entry) -> dict[str, Any]:
    return {
        "id": e.id,
        "created": e.created,
        "status": e.status,
        "reverted": e.reverted,
        "argv": e.argv,
        "changes": [
            {"kind": c.kind, "scope": c.scope, "target": c.target, "old": c.old, "new": c.new}
            for c in e.changes
        ],
        "notes": e.notes,
    }


def live_state(env: TuneEnv) -> dict[str, Any]:
    """{"host": sysctls, "live": changes, "sockops_links": pins, "journal": entries}."""
    entries = tune_apply.journal_of(env).entries()
    live = [
        {
            "entry": e.id,
            "kind": c.kind,
            "scope": c.scope,
            "target": c.target,
            "journal_new": c.new,
            "live": c.live(env),
        }
        for e in entries
        if e.live
        for c in e.changes
    ]
    pins = sockops.live_pins(env)
    orphans = {str(p) for p in tune_apply.orphan_pins(env, [e for e in entries if e.live])}
    for p in pins:
        p["orphan"] = p["pin"] in orphans
    return {
        "host": host_sysctls(env),
        "live": live,
        "sockops_links": pins,
        "journal": [entry_row(e) for e in entries],
    }
