"""The node's errors in the CLI's one-line error format (shared by the node command modules)."""

from __future__ import annotations

from netdiag.errors import InputError, NetdiagError


def node_error(e: Exception) -> NetdiagError:
    from netdiag.node.errors import ConfigError, StoreError

    if isinstance(e, ConfigError):
        return InputError(str(e), "fix the file, variable or option named above")
    if isinstance(e, StoreError):
        return NetdiagError(str(e), "point --data-dir at an empty directory or the right genesis")
    return NetdiagError(str(e), "see the node log above")
