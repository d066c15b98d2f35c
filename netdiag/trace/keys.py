"""Single keypresses for the live table (top-like): the terminal in cbreak mode while it runs,
restored on exit, Ctrl-C and errors. Without a terminal it just waits."""

from __future__ import annotations

import os
import select
import time
from types import TracebackType
from typing import Any


class Keys:
    def __init__(self, stream: Any) -> None:
        self.fd: int | None = None
        self._saved: Any = None
        try:
            if stream.isatty():
                self.fd = stream.fileno()
        except (OSError, ValueError):
            self.fd = None

    def __enter__(self) -> Keys:
        if self.fd is not None:
            import termios
            import tty

            self._saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.fd is not None and self._saved is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)

    def wait(self, timeout_s: float) -> str | None:
        """A key pressed within timeout_s, or None when the time ran out."""
        if self.fd is None:
            time.sleep(max(0.0, timeout_s))
            return None
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout_s))
        if not ready:
            return None
        return os.read(self.fd, 1).decode(errors="replace")
