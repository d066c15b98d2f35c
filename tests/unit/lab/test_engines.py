from __future__ import annotations

from netdiag.lab.engines.base import direction_params
from netdiag.lab.engines.kernel import qdisc_commands
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
