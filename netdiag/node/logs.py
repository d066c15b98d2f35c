"""Structured JSON logs, one object per line, with an ``event`` name and the fields that explain
why (``reason``, heights, hashes, peer ids). Per-node logger, no global logging configuration."""

from __future__ import annotations

import json
import logging
import time
from typing import IO, Any


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": getattr(record, "event", "log"),
            "msg": record.getMessage(),
        }
        doc.update(getattr(record, "fields", {}))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class NodeLog:
    """``log.info("block_rejected", "block 7 rejected: …", reason="prev_hash", height=7)``"""

    def __init__(self, name: str, stream: IO[str], level: str = "info") -> None:
        self.logger = logging.getLogger(f"netdiag.node.{name}")
        self.logger.propagate = False
        self.logger.handlers.clear()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonFormatter())
        self.logger.addHandler(handler)
        self.logger.setLevel(level.upper())

    def _log(self, level: int, event: str, msg: str, fields: dict[str, Any]) -> None:
        if self.logger.isEnabledFor(level):
            self.logger.log(level, msg, extra={"event": event, "fields": fields})

    def debug(self, event: str, msg: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, msg, fields)

    def info(self, event: str, msg: str, **fields: Any) -> None:
        self._log(logging.INFO, event, msg, fields)

    def warning(self, event: str, msg: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, msg, fields)

    def error(self, event: str, msg: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, msg, fields)
