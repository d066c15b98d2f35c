"""The one way tests run the netdiag CLI as an operator does: a subprocess of this venv's
console script, optionally dropped to an unprivileged user with setpriv."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# argv prefix of the installed console script (for Popen users that manage the process)
NETDIAG = [str(Path(sys.executable).with_name("netdiag"))]

# setpriv arguments that turn root into `nobody` without any capability
_DROP = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--inh-caps=-all",
]


def missing_setpriv() -> str | None:
    """Why an unprivileged run is impossible here, or None."""
    if os.geteuid() != 0:
        return "needs root to drop to an unprivileged user with setpriv"
    if shutil.which("setpriv") is None:
        return "needs setpriv (util-linux) to drop root to an unprivileged user"
    return None


def run_netdiag(
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    input: str | None = None,
    unprivileged: bool = False,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run `netdiag ARGS`; text output captured. `check` fails the test with both streams
    when the exit code is not 0. `unprivileged` runs it as nobody with a private, writable
    HOME / state / cache directory (pytest's tmp dirs are root-only)."""
    full_env = dict(os.environ if env is None else env)
    argv = [*NETDIAG, *args]
    home: Path | None = None
    if unprivileged:
        if reason := missing_setpriv():
            raise RuntimeError(reason)
        home = Path(tempfile.mkdtemp(prefix="nd-unpriv-"))
        os.chmod(home, 0o777)
        full_env.update(
            HOME=str(home),
            NETDIAG_STATE=str(home / "state"),
            NETDIAG_CACHE=str(home / "cache"),
        )
        argv = [*_DROP, *argv]
    try:
        p = subprocess.run(
            argv, env=full_env, capture_output=True, text=True, timeout=timeout, input=input
        )
    finally:
        if home is not None:
            shutil.rmtree(home, ignore_errors=True)
    if check and p.returncode != 0:
        raise AssertionError(
            f"netdiag {' '.join(args)} -> {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        )
    return p


def bench_json(out: Path, *args: str, timeout: float = 120) -> dict[str, Any]:
    """`netdiag bench ARGS --out OUT --json`, which must succeed: the result it saved, loaded
    through the result format's schema check, and checked to be the one it printed."""
    from netdiag.report import results

    res = run_netdiag("bench", *args, "--out", str(out), "--json", timeout=timeout, check=True)
    saved = results.load(out)
    assert json.loads(res.stdout) == saved
    return saved


def run_main(capsys: Any, *args: str) -> tuple[int, str]:
    """`netdiag ARGS` in this process (cli.main): the exit code and what it printed, stdout
    then stderr (``capsys`` is pytest's fixture)."""
    from netdiag.cli.main import main

    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out + out.err
