"""`netdiag node snapshot list|create|verify`: a node's state snapshots, offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from netdiag.cli.node_errors import node_error
from netdiag.errors import CheckFailed, InputError

DATA_DIR = click.option(
    "--data-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="The node's data directory (snapshots live in DATA_DIR/snapshots).",
)
GENESIS = click.option(
    "--genesis",
    "genesis_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The chain's genesis (its allocations start the state).",
)
NETWORK = click.option("--network", default="", help="A named network instead of --genesis.")
JSON = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


@click.group()
def snapshot() -> None:
    """State snapshots: content-addressed chunks and a manifest anchored by a block header."""


def _row(m: Any) -> dict[str, Any]:
    return {
        "height": m.height,
        "block_hash": m.block_hash.hex(),
        "state_root": m.state_root.hex(),
        "manifest_id": m.id().hex(),
        "chunks": len(m.chunks),
        "bytes": sum(r.size for r in m.chunks),
        "chunk_root": m.chunk_root.hex(),
        "format": m.version,
    }


@snapshot.command("list")
@DATA_DIR
@JSON
def list_(data_dir: Path, as_json: bool) -> None:
    """The snapshots kept in DATA_DIR, oldest first."""
    from netdiag.node.snapshot import SnapshotStore

    rows = [_row(m) for m in SnapshotStore(data_dir / "snapshots").manifests()]
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo(f"no snapshots in {data_dir / 'snapshots'}")
    for r in rows:
        click.echo(
            f"{r['height']:>10}  block {r['block_hash'][:16]}…  root {r['state_root'][:16]}…  "
            f"{r['chunks']} chunks  {r['bytes']} bytes"
        )


def _open(data_dir: Path, genesis_file: Path | None, network: str) -> tuple[Any, Any]:
    from netdiag.node.errors import NodeError
    from netdiag.node.networks import resolve_genesis
    from netdiag.node.store import Store

    try:
        spec = resolve_genesis(network, str(genesis_file or ""))
    except NodeError as e:
        raise node_error(e) from e
    path = data_dir / "chain.sqlite"
    if not path.exists():
        raise InputError(f"no block store at {path}", "pass the --data-dir the node ran with")
    return spec, Store.reader(path)


@snapshot.command()
@DATA_DIR
@GENESIS
@NETWORK
@click.option("--height", type=click.IntRange(1), default=None, help="Default: the tip.")
@click.option(
    "--chunk-bytes",
    type=click.IntRange(1024),
    default=256 << 10,
    show_default=True,
    help="Chunk size (the node's snapshot_chunk_bytes: the same size gives the same chunks).",
)
@JSON
def create(
    data_dir: Path,
    genesis_file: Path | None,
    network: str,
    height: int | None,
    chunk_bytes: int,
    as_json: bool,
) -> None:
    """Snapshot the state after block HEIGHT (replayed from the store, read-only)."""
    from netdiag.node.errors import StoreError
    from netdiag.node.snapshot import SnapshotStore, build
    from netdiag.node.snapshot_policy import replay_state

    spec, store = _open(data_dir, genesis_file, network)
    try:
        tip = store.tip()[0]
        at = tip if height is None else height
        if at > tip:
            raise InputError(f"--height {at} is above the stored tip {tip}", f"pass 1..{tip}")
        ledger, block = replay_state(store, spec, at)
    except StoreError as e:
        raise CheckFailed(str(e), "run `netdiag node verify` on this data directory") from e
    finally:
        store.close()
    manifest, chunks = build(ledger, block, spec.network_id, chunk_bytes)
    SnapshotStore(data_dir / "snapshots").save(manifest, chunks)
    row = _row(manifest) | {"accounts": len(ledger)}
    if as_json:
        click.echo(json.dumps(row))
    else:
        click.echo(
            f"snapshot at {at}: {row['accounts']} accounts, {row['chunks']} chunks, "
            f"{row['bytes']} bytes, manifest {row['manifest_id'][:16]}…"
        )


@snapshot.command()
@DATA_DIR
@GENESIS
@NETWORK
@click.option("--height", type=click.IntRange(1), default=None, help="Default: every snapshot.")
@JSON
def verify(
    data_dir: Path, genesis_file: Path | None, network: str, height: int | None, as_json: bool
) -> None:
    """Check snapshots against the stored headers: manifest anchored, every chunk intact.

    Exit 0 if all are valid, 5 at the first bad one.
    """
    from netdiag.node.errors import ValidationError
    from netdiag.node.snapshot import SnapshotStore, check_manifest
    from netdiag.node.validation import check_header

    spec, store = _open(data_dir, genesis_file, network)
    snaps = SnapshotStore(data_dir / "snapshots")
    heights = snaps.heights() if height is None else [height]
    rows: list[dict[str, Any]] = []
    try:
        for h in heights:
            row: dict[str, Any] = {"height": h, "ok": False, "reason": ""}
            rows.append(row)
            m = snaps.manifest(h)
            block = store.block_at(h)
            try:
                if m is None:
                    raise ValidationError(f"no readable manifest for height {h}")
                if block is None:
                    raise ValidationError(f"the store holds no block {h} to anchor it")
                check_header(block.header, block.hash, block.signature)
                check_manifest(m, block.header, spec.network_id)
                snaps.load(m)  # every chunk, against the manifest's bucket roots
                row |= _row(m) | {"ok": True}
            except ValidationError as e:
                row["reason"] = e.detail
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(rows))
    else:
        for r in rows:
            click.echo(f"{r['height']:>10}  " + ("ok" if r["ok"] else f"BAD: {r['reason']}"))
    bad = [r for r in rows if not r["ok"]]
    if not rows:
        raise InputError(f"no snapshots in {data_dir / 'snapshots'}", "create one first")
    if bad:
        raise CheckFailed(
            f"snapshot at {bad[0]['height']} is bad: {bad[0]['reason']}",
            "delete it (`rm` its manifest) or recreate it with `netdiag node snapshot create`",
        )
