"""Attributing the namespace's ListenOverflows/ListenDrops to listeners (fake samples)."""

from __future__ import annotations

from netdiag.diagnose import Sample, listenq
from netdiag.diagnose.collect import Collected
from netdiag.diagnose.host import HostFacts
from netdiag.diagnose.run import judge_collected
from netdiag.measure.sockdiag import SkMem

from .synth import conn


def _listener(
    port: int, depths: list[int], backlog: int, drops: list[int] | None = None
) -> list[Sample]:
    """One LISTEN socket sampled every 0.1 s: accept-queue depth per sample, its own drop
    counter per sample (None: the kernel gave no skmem)."""
    out = []
    for k, depth in enumerate(depths):
        mem = None
        if drops is not None:
            mem = SkMem(0, 0, 0, 0, 0, 0, 0, 0, drops[k])
        out.append(
            Sample(
                k * 0.1,
                conn(
                    None,
                    state="LISTEN",
                    lport=port,
                    rport=0,
                    rqueue=depth,
                    wqueue=backlog,
                    skmem=mem,
                    cookie=port,
                ),
            )
        )
    return out


def test_the_only_listener_that_dropped_gets_every_overflow() -> None:
    att = listenq.attribute(
        {
            1: _listener(80, [0, 0, 0], 128, drops=[5, 5, 5]),
            2: _listener(5301, [2, 2, 2], 1, drops=[10, 14, 22]),
        },
        overflows=12,
        drops=12,
    )
    q = att.by_cookie()
    assert q[2].drops == 12 and q[2].overflows == 12 and q[2].attribution == listenq.EXACT
    assert q[1].drops == 0 and q[1].overflows == 0
    assert att.unattributed == 0


def test_a_listener_dropping_between_samples_is_still_found() -> None:
    # never seen at its backlog (filled and drained between samples): its counter tells
    att = listenq.attribute(
        {1: _listener(5301, [0, 0, 0], 16, drops=[0, 3, 3])}, overflows=3, drops=3
    )
    q = att.listeners[0]
    assert not q.full and q.overflows == 3 and q.attribution == listenq.EXACT


def test_two_droppers_split_exactly_when_every_drop_was_an_overflow() -> None:
    ls = {
        1: _listener(5301, [2, 2], 1, drops=[0, 4]),
        2: _listener(5302, [9, 9], 8, drops=[0, 6]),
    }
    q = listenq.attribute(ls, overflows=10, drops=10).by_cookie()
    assert (q[1].overflows, q[2].overflows) == (4, 6)
    assert {q[1].attribution, q[2].attribution} == {listenq.EXACT}


def test_two_droppers_with_other_drops_are_ambiguous() -> None:
    ls = {
        1: _listener(5301, [2, 2], 1, drops=[0, 4]),
        2: _listener(5302, [9, 9], 8, drops=[0, 6]),
    }
    att = listenq.attribute(ls, overflows=7, drops=10)
    q = att.by_cookie()
    assert q[1].attribution == q[2].attribution == listenq.SHARED
    assert q[1].overflows is None and q[1].drops == 4 and q[1].shared_with == (5302,)
    assert att.unattributed == 0  # someone's: only the split is unknown
    findings, _ = judge_collected(
        Collected(listeners=ls), HostFacts(listen_overflows=7, listen_drops=10)
    )
    assert [f.evidence["attribution"] for f in findings] == ["ambiguous", "ambiguous"]
    assert all("ambiguous" in f.summary for f in findings)


def test_overflows_no_watched_listener_dropped_go_to_the_host_finding() -> None:
    ls = {1: _listener(5301, [0, 0], 128, drops=[0, 0])}
    att = listenq.attribute(ls, overflows=5, drops=5)
    assert att.unattributed == 5
    findings, _ = judge_collected(Collected(listeners=ls), HostFacts(listen_overflows=5))
    assert [(f.scope, f.subject) for f in findings] == [("host", "TcpExt.ListenOverflows")]
    assert findings[0].evidence["unattributed_overflows"] == 5


def test_without_skmem_the_full_queue_decides() -> None:
    one = listenq.attribute(
        {1: _listener(5301, [2, 2], 1), 2: _listener(80, [0, 0], 128)}, overflows=9, drops=9
    ).by_cookie()
    assert one[1].attribution == listenq.BY_FILL and one[1].overflows == 9
    assert one[2].attribution == listenq.NONE and one[2].overflows is None
    two = listenq.attribute(
        {1: _listener(5301, [2, 2], 1), 2: _listener(5302, [8, 8], 8)}, overflows=9, drops=9
    ).by_cookie()
    assert two[1].attribution == two[2].attribution == listenq.SHARED
    assert two[1].shared_with == (5302,) and two[2].shared_with == (5301,)


def test_a_full_queue_without_drops_is_a_warning() -> None:
    ls = {1: _listener(5301, [8, 8], 8, drops=[0, 0])}
    findings, _ = judge_collected(Collected(listeners=ls), HostFacts())
    assert [(f.verdict, f.severity) for f in findings] == [("accept-queue-overflow", "warn")]
