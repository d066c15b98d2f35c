from __future__ import annotations

import pytest

from netdiag.errors import KernelFeatureError
from netdiag.lab import engines
from netdiag.lab.engines import veth
from netdiag.lab.engines.base import direction_params
from netdiag.lab.engines.kernel import qdisc_commands
from netdiag.lab.engines.veth import veth_qdisc_commands
from netdiag.lab.topology import LinkShape


def test_direction_params_split_rtt() -> None:
    s = LinkShape(0.05, 0.001, 100_000_000, 0.01, 100, 0)
    assert direction_params(s, 1500) == (25_000_000, 1_000_000, 100_000_000, 10_000_000, 100)


def test_kernel_engine_commands() -> None:
    s = LinkShape(0.05, 0.0, 100_000_000, 0.01, 100, 0)
    cmds = qdisc_commands("nd-x-a", "ndl-b", s, 1500)
    netem, tbf = cmds
    assert netem[:9] == ["tc", "-n", "nd-x-a", "qdisc", "add", "dev", "ndl-b", "root", "handle"]
    assert "netem" in netem and "25000.000us" in netem and "1.000000%" in netem
    assert "tbf" in tbf and "100000000bit" in tbf and tbf[tbf.index("limit") + 1] == str(100 * 1500)
    # no rate: no TBF child
    assert len(qdisc_commands("n", "d", LinkShape(0.01), 1500)) == 1


def test_veth_link_without_netem_does_rate_and_queue_with_a_root_tbf() -> None:
    s = LinkShape(rate_bps=50_000_000, queue_pkts=14)
    (tbf,) = veth_qdisc_commands("nd-x-r", "ndl-b", s, 1500)
    assert tbf[:8] == ["tc", "-n", "nd-x-r", "qdisc", "add", "dev", "ndl-b", "root"]
    assert tbf[8] == "tbf" and "50000000bit" in tbf
    assert tbf[tbf.index("limit") + 1] == str(14 * 1500)
    # no rate: a bare veth pair, no qdisc at all
    assert veth_qdisc_commands("n", "d", LinkShape(), 1500) == []
    # delay (netem's job): the kernel engine's netem + TBF tree
    netem, _ = veth_qdisc_commands("n", "d", LinkShape(0.01, rate_bps=10_000_000), 1500)
    assert "netem" in netem


@pytest.mark.parametrize(
    ("shape", "named"),
    [
        (LinkShape(delay_s=0.01), "delay"),
        (LinkShape(jitter_s=0.001), "jitter"),
        (LinkShape(loss=0.01, rate_bps=10), "loss"),
    ],
)
def test_veth_link_asking_for_netem_without_it_is_refused(shape: LinkShape, named: str) -> None:
    with pytest.raises(KernelFeatureError) as e:
        veth.check("a", "b", shape, netem=False)
    assert "link a <-> b" in e.value.what and named in e.value.what
    assert "sch_netem" in e.value.what and "kind" in (e.value.fix or "")
    veth.check("a", "b", shape, netem=True)  # with netem: fine
    veth.check("a", "b", LinkShape(rate_bps=10), netem=False)  # rate alone: TBF does it


def test_for_link_picks_veth_by_kind() -> None:
    assert engines.for_link("userspace", "veth").name == "veth"
    assert engines.for_link("userspace", "emulated").name == "userspace"
    assert engines.for_link("kernel", None).name == "kernel"
