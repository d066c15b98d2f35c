"""The single error handler: one line on stderr, documented exit codes, tracebacks on --debug."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest

from netdiag.cli import main as cli_main
from netdiag.errors import InputError, KernelFeatureError, PrivilegeError


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
