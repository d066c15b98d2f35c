"""The routing table on disk: a ``kad_nodes`` table in ``kad.sqlite`` next to the chain store
(a file of its own, so writing the table never holds the lock block commits take), so a
restarted node dials the peers it knew instead of needing its bootstrap again.

Only verified entries are written (the table holds nothing else); on load the table's limits
apply again. A save replaces the whole table in one transaction.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from netdiag.node.kademlia import Contact, RoutingTable, valid_host

SCHEMA = """
CREATE TABLE IF NOT EXISTS kad_nodes (
    node_id      BLOB PRIMARY KEY,
    host         TEXT NOT NULL,
    port         INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL
);
"""
MAX_ROWS = 256 * 20


class KadStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=2000")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def save(self, table: RoutingTable, now_s: float, wall_ms: int) -> int:
        """Replace the stored table with ``table`` in one transaction; returns rows written."""
        rows = [
            (
                e.contact.node_id,
                e.contact.host,
                e.contact.port,
                wall_ms - round((now_s - e.last_seen) * 1000),
            )
            for e in table.entries()
        ]
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            cur.execute("DELETE FROM kad_nodes")
            cur.executemany("INSERT INTO kad_nodes VALUES (?, ?, ?, ?)", rows)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return len(rows)

    def load(self, table: RoutingTable, now_s: float, wall_ms: int) -> int:
        """Fill ``table`` from disk (malformed rows are skipped); returns entries restored."""
        n = 0
        rows = self.db.execute(
            "SELECT node_id, host, port, last_seen_ms FROM kad_nodes "
            "ORDER BY last_seen_ms DESC LIMIT ?",
            (MAX_ROWS,),
        ).fetchall()
        for node_id, host, port, seen_ms in rows:
            if not (
                isinstance(node_id, bytes)
                and len(node_id) == 32
                and isinstance(host, str)
                and valid_host(host)
                and isinstance(port, int)
                and 0 < port < 65536
                and isinstance(seen_ms, int)
            ):
                continue
            age_s = max(0.0, (wall_ms - seen_ms) / 1000)
            if table.restore(Contact(node_id, host, port), now_s - age_s):
                n += 1
        return n
