"""The single error handler: one line on stderr, documented exit codes, tracebacks on --debug."""

from __future__ import annotations

import io
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from netdiag.cli import main as cli_main
from netdiag.errors import ExitStatus, InputError, KernelFeatureError, PrivilegeError
from netdiag.output import emit_json
from tests.cli import NETDIAG


@pytest.fixture
def failing() -> Iterator[None]:
    @click.command("fail")
    @click.argument("kind")
    def fail(kind: str) -> None:
        if kind == "input":
            raise InputError(
                "topology.toml:3: link a-b has delay 'fast'", "use e.g. delay = '50ms'"
            )
        if kind == "priv":
            raise PrivilegeError("loading eBPF programs needs CAP_BPF", "run as root")
        if kind == "kernel":
            raise KernelFeatureError("kernel lacks tcp_foo", "modprobe tcp_foo")
        if kind == "interrupt":
            raise KeyboardInterrupt
        if kind == "bug":
            raise RuntimeError("a bug")
        if kind == "perm":
            open("/nonexistent-dir/x", "w")  # noqa: SIM115 - raises, replaced below
        if kind == "path":
            raise FileExistsError(17, "File exists", "/etc/hostname")

    cli_main.cli.add_command(fail)
    yield
    cli_main.cli.commands.pop("fail")


@pytest.mark.parametrize(
    ("kind", "code", "line"),
    [
        (
            "input",
            2,
            "netdiag: error: topology.toml:3: link a-b has delay 'fast' — use e.g. delay = '50ms'",
        ),
        ("priv", 3, "netdiag: error: loading eBPF programs needs CAP_BPF — run as root"),
        ("kernel", 4, "netdiag: error: kernel lacks tcp_foo — modprobe tcp_foo"),
        ("interrupt", 130, "netdiag: interrupted"),
        ("path", 1, "netdiag: error: /etc/hostname: File exists — check the path"),
    ],
)
def test_errors_are_one_line_with_exit_code(
    failing: None, capsys: pytest.CaptureFixture[str], kind: str, code: int, line: str
) -> None:
    assert cli_main.main(["fail", kind]) == code
    err = capsys.readouterr().err
    assert err.strip() == line
    assert "Traceback" not in err


def test_unexpected_exception_is_one_line(
    failing: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main.main(["fail", "bug"]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err
        == "netdiag: error: internal error: RuntimeError: a bug — rerun with --debug and report it"
    )


def test_debug_shows_traceback(failing: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["--debug", "fail", "kernel"]) == 4
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().endswith("modprobe tcp_foo")


def test_usage_error_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_help_lists_registered_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli_main.COMMANDS:
        assert name in out


@pytest.mark.parametrize(
    ("argv", "what", "how"),
    [
        (
            ["tune", "--no-such-option"],
            "No such option '--no-such-option'",
            "`netdiag tune --help`",
        ),
        (["tune", "--buffer", "auto"], "No such option '--buffer'", "did you mean '--buffers'?"),
        (
            ["tune", "--profile", "nosuch"],
            "Invalid value for '--profile': 'nosuch' is not one of",
            "`netdiag tune --help`",
        ),
        (["lab", "up"], "Missing argument 'FILE'", "usage: netdiag lab up [OPTIONS] FILE"),
        (["tune", "--cc"], "Option '--cc' requires an argument", "`netdiag tune --help`"),
        (["lab", "stauts"], "No such command 'stauts'", "did you mean 'status'?"),
    ],
)
def test_click_usage_errors_are_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], what: str, how: str
) -> None:
    assert cli_main.main(argv) == ExitStatus.USAGE == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith(f"netdiag: error: {what}") and " — " in line, line
    assert how in line.split(" — ", 1)[1], line
    assert "Usage:" not in captured.err and "Try " not in captured.err


def test_exit_status_values_are_the_documented_ones() -> None:
    assert {s.name: int(s) for s in ExitStatus} == {
        "OK": 0,
        "FAILED": 1,
        "USAGE": 2,
        "PRIVILEGE": 3,
        "KERNEL_FEATURE": 4,
        "CHECK_FAILED": 5,
        "INTERRUPTED": 130,
    }
    assert InputError("x").exit_code is ExitStatus.USAGE
    assert PrivilegeError("x").exit_code is ExitStatus.PRIVILEGE
    assert KernelFeatureError("x").exit_code is ExitStatus.KERNEL_FEATURE


def test_closed_stdout_is_quiet_exit_0() -> None:
    """`netdiag tune --list-profiles | head -1`: the reader has gone; no traceback,
    no "Exception ignored", exit 0 (click alone would exit 1, rich alone SystemExit(1))."""
    for args in (["tune", "--list-profiles"], ["tune", "--list-profiles", "--json"]):
        r, w = os.pipe()
        os.close(r)  # the reader is gone before the first write: that write meets EPIPE
        proc = subprocess.Popen([*NETDIAG, *args], stdout=w, stderr=subprocess.PIPE)
        os.close(w)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert err == b""


def test_emit_json_is_one_line_per_object() -> None:
    buf = io.StringIO()
    emit_json({"a": [1, 2], "path": Path("/x"), "name": "é"}, buf)
    emit_json([{"b": None}], buf)
    lines = buf.getvalue().splitlines()
    assert [json.loads(x) for x in lines] == [
        {"a": [1, 2], "path": "/x", "name": "é"},
        [{"b": None}],
    ]


def test_untranslated_permission_error_is_exit_3(
    failing: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    def refuse(path: str, *a: object, **k: object) -> None:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(builtins, "open", refuse)
    assert cli_main.main(["fail", "perm"]) == ExitStatus.PRIVILEGE
    assert capsys.readouterr().err.splitlines() == [
        "netdiag: error: /nonexistent-dir/x: Permission denied — run as root, or choose a "
        "path this user can write"
    ]
