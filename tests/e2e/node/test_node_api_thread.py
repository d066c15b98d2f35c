"""The REST API answers while the node's event loop is blocked by any long step, and the loop
itself keeps working while another connection holds the database locked: commits wait on the
store's writer thread (writer.py), not on the loop."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import urllib.request
from pathlib import Path

from netdiag.node.api import tx_json
from netdiag.node.crypto import Identity
from netdiag.node.model import make_tx
from tests.unit.node.nodekit import node_cfg, running, wait_for, write_lab_genesis


def get(port: int, path: str, out: dict[str, object]) -> None:
    """GET from another thread (the test's own loop is the node's loop)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        raw = r.read()
        json_body = r.headers.get_content_type() == "application/json"
        out["body"] = json.loads(raw) if json_body else raw.decode()
    out["at"] = time.monotonic()


async def test_status_and_blocks_answer_while_the_loop_is_blocked(tmp_path: Path) -> None:
    gen, _, _ = write_lab_genesis(tmp_path)
    cfg = node_cfg(tmp_path, "a", gen, str(tmp_path / "validator-0.key"), tls=False)
    async with running(cfg) as (a, _):
        await wait_for(lambda: a.height >= 2, what="blocks")
        released: dict[str, float] = {}
        blocked = threading.Event()

        def block_loop() -> None:  # a step that holds the loop (as a locked commit would)
            blocked.set()
            time.sleep(3.0)
            released["at"] = time.monotonic()

        def ask(path: str, out: dict[str, object]) -> None:
            blocked.wait(30)
            get(a.api_port, path, out)

        answers: list[dict[str, object]] = [{} for _ in range(3)]
        threads = [
            threading.Thread(target=ask, args=(path, out))
            for path, out in zip(["/status", "/block/1", "/metrics"], answers, strict=True)
        ]
        for t in threads:
            t.start()  # they wait until the loop is held, then ask
        asyncio.get_running_loop().call_soon(block_loop)
        while any(t.is_alive() for t in threads):
            await asyncio.sleep(0.05)
        for out in answers:
            assert "body" in out
            assert float(out["at"]) < released["at"], "answered while the loop was blocked"
        # the last status the loop gave (at most SNAPSHOT_S old when the loop stopped)
        assert answers[0]["body"]["node_id"] == a.node_id.hex()  # type: ignore[index]
        assert answers[1]["body"]["height"] == 1  # type: ignore[index]
        assert "netdiag_node_height" in str(answers[2]["body"])


async def test_the_api_answers_while_another_process_holds_the_database(tmp_path: Path) -> None:
    gen, _, _ = write_lab_genesis(tmp_path)
    cfg = node_cfg(tmp_path, "a", gen, str(tmp_path / "validator-0.key"), tls=False)
    async with running(cfg) as (a, _):
        await wait_for(lambda: a.height >= 2, what="blocks")
        db = sqlite3.connect(Path(cfg.data_dir) / "chain.sqlite", isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")  # the node's next commit waits on the lock
        try:
            out: dict[str, object] = {}
            t = threading.Thread(target=get, args=(a.api_port, "/block/1", out))
            t.start()
            while t.is_alive():
                await asyncio.sleep(0.05)
            held_until = time.monotonic()
            assert "body" in out and out["body"]["height"] == 1  # type: ignore[index]
            assert float(out["at"]) <= held_until
        finally:
            db.execute("ROLLBACK")
            db.close()
        h = a.height
        await wait_for(lambda: a.height > h, what="production resumes after the lock")


def post_tx(port: int, body: bytes, out: dict[str, object]) -> None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/tx", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        out["body"] = json.loads(r.read())


async def test_the_node_loop_keeps_working_while_the_database_is_locked(tmp_path: Path) -> None:
    """Another connection holds the write lock: the node goes on producing (in memory, the
    writer thread waiting), a POST /tx is answered by the node loop, /status says what is on
    disk; once the lock goes, everything reaches the disk in order."""
    gen, _, _ = write_lab_genesis(tmp_path)
    cfg = node_cfg(tmp_path, "a", gen, str(tmp_path / "validator-0.key"), tls=False)
    async with running(cfg) as (a, _):
        await wait_for(lambda: a.height >= 2, what="blocks")
        db = sqlite3.connect(Path(cfg.data_dir) / "chain.sqlite", isolation_level=None)
        db.execute("BEGIN IMMEDIATE")  # the write lock, held until ROLLBACK
        try:
            on_disk = int(db.execute("SELECT max(height) FROM blocks").fetchone()[0])
            await wait_for(  # the writer's last pre-lock commit may still be on its way to us
                lambda: a.status()["height"] == on_disk and a.height >= on_disk + 3,
                what="production while locked",
            )
            st = a.status()
            assert st["height"] == on_disk, "/status height is what is on disk"
            assert st["chain_height"] == a.height and st["store_pending_blocks"] >= 3
            tx = make_tx(Identity.generate(), 1, b"while locked", int(time.time() * 1000))
            out: dict[str, object] = {}
            t = threading.Thread(
                target=post_tx, args=(a.api_port, json.dumps(tx_json(tx)).encode(), out)
            )
            t.start()
            while t.is_alive():
                await asyncio.sleep(0.05)
            assert out["body"] == {"txid": tx.txid().hex(), "accepted": True, "duplicate": False}
            assert int(a.status()["height"]) == on_disk, "still locked: nothing more on disk"  # type: ignore[call-overload]
        finally:
            db.execute("ROLLBACK")
            db.close()
        h = a.height
        await wait_for(
            lambda: int(a.status()["height"]) >= h,  # type: ignore[call-overload]
            what="the writer catches up once the lock is gone",
        )
        check = sqlite3.connect(Path(cfg.data_dir) / "chain.sqlite")
        count, top = check.execute("SELECT count(*), max(height) FROM blocks").fetchone()
        check.close()
        assert count == top + 1 and top >= h, "in order, no gap"
