"""The CLI contract of docs/cli.md, driven through the real CLI: every example row of its table
runs as a subprocess (missing-privilege rows as `nobody` without capabilities) and must exit
with the documented code, say the documented one-line error and change nothing — host and
namespace sysctls, the namespace list, netdiag's state directory (tune journal, lab records)
and its bpffs pins. The table is the single source: a row added there is tested here, and a
command without rows fails `test_every_command_has_a_row_per_condition`."""

from __future__ import annotations

import os
import re
import secrets
import shlex
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from netdiag.cli.main import cli
from netdiag.kernel import netns
from netdiag.tune.status import SHOWN_SYSCTLS
from tests.cli import missing_setpriv, run_netdiag
from tests.conftest import missing_root

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
TABLE_HEADING = "## Every command × bad input, missing privilege, missing kernel feature"
CONDITIONS = ("bad input", "missing privilege", "missing kernel feature")
HOST_KEYS = (*SHOWN_SYSCTLS, "kernel.hostname", "vm.swappiness")
NETNS_KEYS = (
    "net.ipv4.tcp_congestion_control",
    "net.core.somaxconn",
    "net.ipv4.tcp_mtu_probing",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_ecn",
)
PINS = Path("/sys/fs/bpf/netdiag")


@dataclass(frozen=True)
class Row:
    command: str
    when: str
    example: str  # "" for a documentation-only row ("—")
    exit: int | None
    says: str

    @property
    def id(self) -> str:
        return f"{self.command}|{self.when}|{self.example}"


def table_rows() -> list[Row]:
    text = DOC.read_text()
    assert TABLE_HEADING in text, f"{DOC} lost its contract table heading"
    rows = []
    for line in text.split(TABLE_HEADING, 1)[1].splitlines():
        if not line.startswith("| ") or line.startswith("| command ") or "---" in line:
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 5, f"docs/cli.md row needs 5 cells: {line}"
        command, when, example, code, says = cells
        rows.append(
            Row(
                command=command,
                when=when,
                example="" if example == "—" else example.strip("`"),
                exit=int(code) if code else None,
                says=says.strip("`"),
            )
        )
    return rows


ROWS = table_rows()
RUNNABLE = [r for r in ROWS if r.example]


# -- the conditions a missing-kernel-feature row names ------------------------------------
def _lacks_netem() -> bool:
    from netdiag.lab.engines import netem_available

    return not netem_available()


def _lacks_cc(name: str) -> Callable[[], bool]:
    def check() -> bool:
        avail = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split()
        return name not in avail

    return check


FEATURES: dict[str, Callable[[], bool]] = {
    "no sch_netem": _lacks_netem,
    "no tcp_vegas": _lacks_cc("vegas"),
}


def feature_missing(row: Row) -> bool:
    m = re.search(r"\((.+)\)", row.when)
    assert m, f"a runnable missing-kernel-feature row names the feature: {row.when!r}"
    assert m.group(1) in FEATURES, f"add a check for {m.group(1)!r} to FEATURES"
    return FEATURES[m.group(1)]()


# -- fixtures: inputs and a world to compare ----------------------------------------------
@dataclass
class World:
    netns: str
    state: Path
    files: dict[str, str]


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    if reason := missing_root():
        pytest.skip(reason)
    token = f"ndc{secrets.token_hex(3)}"
    # inputs `nobody` can read: pytest's tmp dirs are root-only
    d = Path(tempfile.mkdtemp(prefix="nd-contract-"))
    os.chmod(d, 0o755)
    topo = d / "two.toml"
    topo.write_text(
        f'name = "{token}"\n[[nodes]]\nname = "a"\n[[nodes]]\nname = "b"\n'
        '[[links]]\na = "a"\nb = "b"\ndelay = "10ms"\n'
    )
    bad_topo = d / "bad.toml"
    bad_topo.write_text('[[nodes]]\nname = "a"\n[[links]]\na = "a"\nb = "nope"\n')
    from tests.unit.report import sample

    result = sample.write(d / "result.json")
    bad_result = d / "bad-result.json"
    bad_result.write_text('{"x": 1}\n')
    scratch = d / "scratch"
    scratch.mkdir()
    for p in (topo, bad_topo, result, bad_result):
        os.chmod(p, 0o644)
    state = d / "state"
    with netns.scratch(token) as ns:
        yield World(
            netns=ns,
            state=state,
            files={
                "netns": ns,
                "topology": str(topo),
                "bad_topology": str(bad_topo),
                "result": str(result),
                "bad_result": str(bad_result),
                "dir": str(scratch),
            },
        )
    for p in sorted(d.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    d.rmdir()


def _read(key: str, ns: str | None = None) -> str:
    path = Path("/proc/sys") / key.replace(".", "/")
    return netns.run_in(ns, path.read_text)


def _tree(root: Path) -> list[str]:
    """Files under root with their sizes: records, journal entries, logs, pins. Directories
    and dot-files (the journal's flock file) hold no state of their own."""
    if not root.exists():
        return []
    return sorted(
        f"{p.relative_to(root)}:{p.stat().st_size}"
        for p in root.rglob("*")
        if not p.name.startswith(".") and not stat.S_ISDIR(p.lstat().st_mode)
    )


def snapshot(w: World) -> dict[str, object]:
    snap: dict[str, object] = {f"host:{k}": _read(k) for k in HOST_KEYS}
    snap.update({f"{w.netns}:{k}": _read(k, w.netns) for k in NETNS_KEYS})
    snap["namespaces"] = netns.list_names()
    snap["state"] = _tree(w.state)
    snap["pins"] = _tree(PINS)
    return snap


# -- the contract ------------------------------------------------------------------------
@pytest.mark.e2e
@pytest.mark.parametrize("row", RUNNABLE, ids=[r.id for r in RUNNABLE])
def test_documented_error(world: World, row: Row) -> None:
    if row.when.startswith("missing kernel feature") and not feature_missing(row):
        pytest.skip(f"this kernel has what the row lacks: {row.when}")
    unprivileged = row.when.startswith("missing privilege")
    if unprivileged and (reason := missing_setpriv()):
        pytest.skip(reason)
    argv = shlex.split(row.example.format(**world.files))
    assert argv[0] == "netdiag", row.example
    says = row.says.format(**world.files)
    before = snapshot(world)
    p = run_netdiag(
        *argv[1:],
        env=dict(os.environ, NETDIAG_STATE=str(world.state)),
        unprivileged=unprivileged,
        timeout=120,
    )
    stderr = p.stderr.strip().splitlines()
    assert p.returncode == row.exit, f"{row.example} -> {p.returncode}\n{p.stderr}"
    errors = [ln for ln in stderr if ln.startswith("netdiag: error: ")]
    assert len(errors) == 1 and stderr[-1] == errors[0], p.stderr
    what, sep, fix = errors[0].removeprefix("netdiag: error: ").partition(" — ")
    assert sep and what and fix, f"not WHAT — HOW TO FIX: {errors[0]}"
    assert errors[0].startswith(f"netdiag: error: {says}"), errors[0]
    if row.when == "bad input":
        assert stderr == errors, f"bad input must be one line on stderr:\n{p.stderr}"
        # nothing on stdout either — except a value only the kernel can judge, which is
        # found while applying, after tune has shown its plan
        assert p.stdout == "" or "kernel rejected" in errors[0], p.stdout
    assert snapshot(world) == before, f"{row.example} changed something"


def _leaf_commands(group: click.Group, prefix: str = "") -> list[str]:
    ctx = click.Context(group, info_name="netdiag")
    out = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        full = f"{prefix} {name}".strip()
        if isinstance(cmd, click.Group):
            out += _leaf_commands(cmd, full)
        else:
            out.append(full)
    return out


def _commands_of(cell: str) -> list[str]:
    """ "lab down, status, link set" -> lab down, lab status, lab link set ("-d" dropped)."""
    parts = [" ".join(w for w in p.split() if not w.startswith("-")) for p in cell.split(", ")]
    group = parts[0].split()[0]
    return [parts[0]] + [f"{group} {p}" for p in parts[1:]]


def test_every_command_has_a_row_per_condition() -> None:
    """Every command the CLI has appears in docs/cli.md, and every top-level command has a
    row (runnable or explained with "—") for each of the three conditions."""
    documented = {c for r in ROWS for c in _commands_of(r.command)}
    leaves = _leaf_commands(cli)
    # a row for a group (`bench probes`) covers its subcommands
    missing = [
        c for c in leaves if not any(" ".join(c.split()[:n]) in documented for n in (1, 2, 3))
    ]
    assert not missing, f"add rows for {missing} to docs/cli.md's table"
    for top in {c.split()[0] for c in leaves}:
        conds = {
            cond
            for r in ROWS
            if any(c.split()[0] == top for c in _commands_of(r.command))
            for cond in CONDITIONS
            if r.when.startswith(cond)
        }
        assert conds == set(CONDITIONS), f"{top}: docs/cli.md lacks {set(CONDITIONS) - conds}"
    for r in ROWS:
        assert r.when.startswith(CONDITIONS), f"unknown condition {r.when!r}"
        if r.example:
            assert r.exit in (1, 2, 3, 4, 5), r
