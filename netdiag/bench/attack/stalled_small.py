"""Stalled reader, small asks (issue 17): peers ask for less than the node's kernel send buffer
takes at once, then never read — the variant of stalled_reader.py where nothing ever waits in
the node's own buffers, only in its kernel's send queue."""

from __future__ import annotations

from netdiag.bench.attack.stalled_reader import StalledReader

ATTACK = StalledReader("small")
