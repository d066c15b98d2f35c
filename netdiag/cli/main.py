"""The `netdiag` entry point: lazy command registry and the single error handler."""

from __future__ import annotations

import importlib
import logging
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import click

from netdiag import __version__
from netdiag.errors import EXIT_INTERRUPTED, NetdiagError

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
    "report": "netdiag.cli.report:report",
}


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


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    _setup_logging(debug)
    try:
        rv: Any = cli.main(args=args, prog_name="netdiag", standalone_mode=False)
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
        return EXIT_INTERRUPTED
    except click.ClickException as e:
        if debug:
            traceback.print_exc()
        e.show()
        return e.exit_code
    except KeyboardInterrupt:
        click.echo("netdiag: interrupted", err=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug: still one line, unless the operator asked for the traceback
        if debug:
            traceback.print_exc()
        _print_error(f"internal error: {type(e).__name__}: {e} — rerun with --debug and report it")
        return 1
    return int(rv) if isinstance(rv, int) else 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
