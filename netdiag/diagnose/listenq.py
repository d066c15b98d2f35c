"""Which listener dropped: the namespace's ListenOverflows/ListenDrops, attributed (sans-IO).

The kernel counts accept-queue overflows per namespace (TcpExt.ListenOverflows) and no drop
reason showed for them on 6.18. But every listen drop also goes through tcp_listendrop(), which
increments the listener's own sk_drops next to LINUX_MIB_LISTENDROPS; sock_diag reports
sk_drops in INET_DIAG_SKMEMINFO (`ss -ltnm` prints it as d…). So, per listener:

- its skmem drops delta is exactly its share of ListenDrops (overflows are a subset of them:
  an overflow is counted in both ListenOverflows and ListenDrops);
- the namespace's ListenOverflows go to the one listener that dropped (exact); when several
  dropped they are split only if every drop was an overflow (ListenOverflows == ListenDrops),
  otherwise the split is ambiguous and each listener keeps its exact drop count;
- without skmem (an old kernel) the listeners seen at their backlog (idiag_rqueue, the accept
  queue, against idiag_wqueue, the backlog) are the candidates: one is an attribution "by
  queue fill", several are ambiguous, none means the queue filled between samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from netdiag.diagnose.window import Sample

ACCEPT_FULL_SHARE = 0.9  # accept queue at this share of its backlog: at the brink

# how the namespace's overflows were tied to this listener
EXACT = "exact"  # the only listener whose own drop counter rose (or every drop an overflow)
SHARED = "ambiguous"  # several listeners dropped (or were full): the split is unknown
BY_FILL = "by queue fill"  # no per-listener counter: the only listener seen at its backlog
NONE = "none"


@dataclass(frozen=True)
class ListenerQueue:
    cookie: int
    laddr: str
    lport: int
    depth_max: int  # largest accept queue seen
    backlog: int
    full_samples: int  # samples with the queue at ≥ ACCEPT_FULL_SHARE of the backlog
    samples: int
    drops: int | None  # this listener's own listen drops in the window (None: no skmem)
    overflows: int | None  # namespace overflows attributed to it (None: unknown share)
    attribution: str
    shared_with: tuple[int, ...] = ()  # ports of the other candidates when ambiguous

    @property
    def full(self) -> bool:
        return self.full_samples > 0

    @property
    def subject(self) -> str:
        if self.laddr in ("0.0.0.0", "::"):
            return f"listener :{self.lport}"
        return f"listener {self.laddr}:{self.lport}"


@dataclass(frozen=True)
class Attribution:
    listeners: list[ListenerQueue]
    overflows: int  # namespace ListenOverflows delta
    drops: int  # namespace ListenDrops delta
    unattributed: int  # overflows no watched listener accounts for

    def by_cookie(self) -> dict[int, ListenerQueue]:
        return {q.cookie: q for q in self.listeners}


def _drops(samples: Sequence[Sample]) -> int | None:
    mems = [s.conn.skmem for s in samples if s.conn.skmem is not None]
    if not mems:
        return None
    return max(0, mems[-1].drops - mems[0].drops)


def _observe(cookie: int, ss: Sequence[Sample]) -> ListenerQueue:
    """What the samples say of one listener; overflows and attribution are filled in later."""
    backlog = max(s.conn.wqueue for s in ss)
    fill = max(1, int(ACCEPT_FULL_SHARE * backlog))
    last = ss[-1].conn
    return ListenerQueue(
        cookie=cookie,
        laddr=last.laddr,
        lport=last.lport,
        depth_max=max(s.conn.rqueue for s in ss),
        backlog=backlog,
        full_samples=sum(1 for s in ss if backlog > 0 and s.conn.rqueue >= fill),
        samples=len(ss),
        drops=_drops(ss),
        overflows=None,
        attribution=NONE,
    )


def attribute(listeners: Mapping[int, Sequence[Sample]], overflows: int, drops: int) -> Attribution:
    """Listener samples of one window (LISTEN: rqueue = accept queue, wqueue = backlog) and the
    namespace's ListenOverflows/ListenDrops deltas -> per-listener drops and overflows."""
    seen = [_observe(c, ss) for c, ss in listeners.items() if ss]
    # per-listener counters are exact only when every listener reported skmem
    counters = bool(seen) and all(q.drops is not None for q in seen)
    droppers = [q for q in seen if q.drops]
    full = [q for q in seen if q.full]
    out = []
    for q in seen:
        if counters:
            if not q.drops:
                q = replace(q, overflows=0)
            elif len(droppers) == 1:
                q = replace(q, overflows=min(overflows, q.drops), attribution=EXACT)
            elif overflows == drops:  # every drop was an overflow: each count is exact
                q = replace(q, overflows=q.drops, attribution=EXACT)
            else:
                others = tuple(d.lport for d in droppers if d.cookie != q.cookie)
                q = replace(q, attribution=SHARED, shared_with=others)
        elif q.full and len(full) == 1:
            q = replace(q, overflows=overflows, attribution=BY_FILL)
        elif q.full:
            others = tuple(d.lport for d in full if d.cookie != q.cookie)
            q = replace(q, attribution=SHARED, shared_with=others)
        out.append(q)
    if any(q.attribution == SHARED for q in out) or (not counters and full):
        unattributed = 0  # they are someone's, the split is what is unknown
    else:
        unattributed = max(0, overflows - sum(q.overflows or 0 for q in out))
    return Attribution(out, overflows, drops, unattributed)
