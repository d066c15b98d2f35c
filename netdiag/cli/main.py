"""The `netdiag` entry point: lazy command registry and the single error handler."""

from __future__ import annotations

import errno
import importlib
import logging
import os
import re
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import click
import rich.console

from netdiag import __version__
from netdiag.errors import ExitStatus, NetdiagError

# name -> "module:attribute". Imported only when the command runs, so `netdiag doctor`
# does not pay for bcc, matplotlib or the node's crypto at start-up.
COMMANDS: dict[str, str] = {
    "bench": "netdiag.cli.bench:bench",
    "doctor": "netdiag.cli.doctor:doctor",
    "node": "netdiag.cli.node:node",
    "lab": "netdiag.cli.lab:lab",
    "tune": "netdiag.cli.tune:tune",
    "trace-peers": "netdiag.cli.trace:trace_peers",
    "probes": "netdiag.cli.trace:probes",
    "bdp": "netdiag.cli.bdp:bdp",
    "diagnose": "netdiag.cli.diagnose:diagnose",
    "report": "netdiag.cli.report:report",
    "exporter": "netdiag.cli.exporter:exporter",
}


class StdoutClosed(Exception):
    """The reader of stdout went away. Not an OSError, so click (which answers EPIPE with
    exit 1) passes it through to main's handler, which exits 0 quietly."""


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use from a name -> "module:attr" map."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = COMMANDS if lazy is None else lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*self.lazy, *super().list_commands(ctx)])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.lazy.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, attr = target.split(":")
        cmd = getattr(importlib.import_module(module), attr)
        assert isinstance(cmd, click.Command)
        return cmd

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError as e:
            raise StdoutClosed() from e


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(__version__, prog_name="netdiag")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Tune and diagnose the Linux TCP transport under peer-to-peer nodes."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _print_error(err: str) -> None:
    click.echo(f"netdiag: error: {err}", err=True)


class _LowerLevelFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.levelname = record.levelname.lower()
        return super().format(record)


def _setup_logging(debug: bool) -> None:
    """netdiag's own warnings (e.g. header version mismatch) reach stderr as one line each."""
    log = logging.getLogger("netdiag")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(_LowerLevelFormatter("netdiag: %(levelname)s: %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.DEBUG if debug else logging.WARNING)


def command_path(args: Sequence[str]) -> str:
    """`netdiag lab up` for ["lab", "up", "--x"]: the deepest command the words name."""
    words = ["netdiag"]
    group: click.Command = cli
    ctx = click.Context(cli, info_name="netdiag")
    for arg in args:
        if arg.startswith("-") or not isinstance(group, click.Group):
            continue
        sub = group.get_command(ctx, arg)
        if sub is None:
            break
        words.append(arg)
        group = sub
    return " ".join(words)


def usage_line(e: click.UsageError, args: Sequence[str]) -> str:
    """A click usage error (unknown option, bad choice, missing argument) as WHAT — HOW TO FIX.

    Like httpie's parser errors: the complaint, then where to look, on one line; click's own
    three-line "Usage: … Try … Error: …" block is never printed.
    """
    what = " ".join(e.format_message().split())
    # click appends "Did you mean '--x'?" or "(Did you mean one of: '--x', '--y'?)"
    m = re.search(r"\s*\(?Did you mean (?:one of: )?(.*?)\?\)?$", what)
    suggestion = m.group(1) if m else ""
    what = (what[: m.start()] if m else what).rstrip(".")
    path = e.ctx.command_path if e.ctx is not None else command_path(args)
    if suggestion:
        how = f"did you mean {'one of ' if ',' in suggestion else ''}{suggestion}? "
    else:
        how = ""
    if isinstance(e, click.MissingParameter) and e.ctx is not None:
        usage = " ".join(e.ctx.get_usage().split())
        how += f"usage: {usage.partition(' ')[2]}; "
    return f"{what} — {how}see `{path} --help`"


def _quiet_stdout() -> None:
    # the reader went away (`netdiag report X | head -1`): point stdout at /dev/null so the
    # interpreter's final flush does not raise again and print "Exception ignored …"
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _rich_broken_pipe(console: Any) -> None:
    console.quiet = True
    raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    _setup_logging(debug)
    # rich answers a closed pipe with SystemExit(1) (Console.on_broken_pipe, meant to be
    # overridden); every command's consoles hand it to the one handler below instead
    setattr(rich.console.Console, "on_broken_pipe", _rich_broken_pipe)  # noqa: B010
    try:
        rv: Any = cli.main(args=args, prog_name="netdiag", standalone_mode=False)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at exit
    except NetdiagError as e:
        if debug:
            traceback.print_exc()
        _print_error(str(e))
        return e.exit_code
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.Abort:
        # click turns KeyboardInterrupt/EOF into Abort; cleanup ran in the commands' finally blocks
        click.echo("netdiag: interrupted", err=True)
        return ExitStatus.INTERRUPTED
    except click.UsageError as e:
        if debug:
            traceback.print_exc()
        if type(e).__name__ == "NoArgsIsHelpError":  # a bare group (`netdiag lab`): its help
            click.echo(e.ctx.get_help() if e.ctx else str(e), err=True)
        else:
            _print_error(usage_line(e, args))
        return ExitStatus.USAGE
    except click.ClickException as e:  # e.g. FileError: still one line
        if debug:
            traceback.print_exc()
        _print_error(" ".join(e.format_message().split()))
        return ExitStatus.FAILED
    except KeyboardInterrupt:
        click.echo("netdiag: interrupted", err=True)
        return ExitStatus.INTERRUPTED
    except (BrokenPipeError, StdoutClosed):
        _quiet_stdout()
        return ExitStatus.OK
    except PermissionError as e:  # an OS refusal no command translated: still a privilege
        if debug:
            traceback.print_exc()
        what = f"{e.filename}: {e.strerror}" if e.filename else f"permission denied: {e}"
        _print_error(f"{what} — run as root, or choose a path this user can write")
        return ExitStatus.PRIVILEGE
    except OSError as e:
        if e.filename is None:  # not about a path the operator gave: treat as a bug below
            return _internal_error(e, debug)
        if debug:
            traceback.print_exc()
        _print_error(f"{e.filename}: {e.strerror} — check the path")
        return ExitStatus.FAILED
    except Exception as e:
        return _internal_error(e, debug)
    return int(rv) if isinstance(rv, int) else ExitStatus.OK


def _internal_error(e: Exception, debug: bool) -> int:
    """A bug: still one line, unless the operator asked for the traceback."""
    if debug:
        traceback.print_exc()
    _print_error(f"internal error: {type(e).__name__}: {e} — rerun with --debug and report it")
    return ExitStatus.FAILED


def entry() -> None:
    sys.exit(int(main()))


if __name__ == "__main__":
    entry()
