"""Stalled reader, goodbye: peers ask for less than the node's kernel send buffer takes, never
read, then say goodbye — the node closes gracefully, and what its kernel still holds for them
must not outlive the close (an orphan kept for ever before TCP_USER_TIMEOUT was set at the
close). See stalled_reader.py."""

from __future__ import annotations

from netdiag.bench.attack.stalled_reader import StalledReader

ATTACK = StalledReader("goodbye")
