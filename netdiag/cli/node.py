"""`netdiag node …`: run the reference P2P node and prepare labs for it."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from netdiag.cli.node_errors import node_error
from netdiag.cli.node_snapshot import snapshot
from netdiag.errors import InputError, NetdiagError
from netdiag.output import emit_json

if TYPE_CHECKING:
    from netdiag.nodeapi import NodeApi

LAB_GENESIS_TS_MS = 1_700_000_000_000  # fixed, so the same N and seed give the same genesis


@click.group()
def node() -> None:
    """The reference P2P node daemon (the target netdiag's tools measure)."""


@node.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML config file (keys as the NETDIAG_NODE_* variables, lower case).",
)
@click.option("--data-dir", help="Directory for the SQLite store, TLS files and node key.")
@click.option("--genesis", help="Genesis JSON (from `netdiag node genesis`).")
@click.option(
    "--network", help="A named network shipped in the package, instead of --genesis (see docs)."
)
@click.option("--key", help="Ed25519 PEM key; a genesis validator's key makes this a producer.")
@click.option("--listen", help="P2P HOST:PORT (default 127.0.0.1:7600; port 0 picks one).")
@click.option("--api", help="REST API HOST:PORT (default 127.0.0.1:7601).")
@click.option("--peer", "peers", multiple=True, help="Bootstrap peer HOST:PORT (repeatable).")
@click.option(
    "--peer-dns",
    "peer_dns",
    multiple=True,
    help="NAME:PORT: peer with every address NAME resolves to, re-resolved (repeatable).",
)
@click.option("--tls/--no-tls", default=None, help="TLS on the P2P port (default on).")
@click.option("--produce/--no-produce", default=None, help="Produce blocks in our slots.")
@click.option(
    "--discovery/--no-discovery",
    default=None,
    help="Outbound peers from the Kademlia routing table, --peer only bootstraps (default); "
    "off: dial exactly the --peer list and peer exchange.",
)
@click.option(
    "--snapshot-sync/--no-snapshot-sync",
    default=None,
    help="A fresh node starts from the newest snapshot peers announce (headers, manifest, "
    "chunks), then syncs and backfills; none within snapshot_wait_s: replay (default off).",
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
def run(config_file: Path | None, **opts: Any) -> None:
    """Run a node until SIGTERM or SIGINT (JSON logs on stderr).

    Settings: defaults < --config file < NETDIAG_NODE_* environment < options.
    """
    from netdiag.node.config import load_config
    from netdiag.node.daemon import main_loop
    from netdiag.node.errors import NodeError
    from netdiag.node.logs import NodeLog

    overrides = {k: (list(v) if k in ("peers", "peer_dns") else v) for k, v in opts.items()}
    try:
        cfg = load_config(config_file, os.environ, overrides)
    except NodeError as e:
        raise node_error(e) from e
    log = NodeLog(Path(cfg.data_dir).name or "node", sys.stderr, cfg.log_level)
    try:
        main_loop(cfg, log)
    except NodeError as e:
        raise node_error(e) from e
    except OSError as e:
        raise NetdiagError(
            f"node cannot start: {e}", "choose free --listen/--api ports and a writable --data-dir"
        ) from e


@node.command()
@click.option("--validators", type=click.IntRange(1, 1000), required=True)
@click.option(
    "--lab-seed",
    help="LAB ONLY: derive the validator keys from this string (anyone who knows it holds "
    "them). Without it every key comes from the OS CSPRNG.",
)
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option(
    "--network-id", default=None, help="Default: netdiag-lab with --lab-seed, else required."
)
@click.option("--slot-ms", type=click.IntRange(10), default=1000, show_default=True)
@click.option("--epoch-length", type=click.IntRange(1), default=100, show_default=True)
@click.option(
    "--timestamp-ms",
    type=click.IntRange(0),
    default=None,
    help=f"Genesis time. Default: {LAB_GENESIS_TS_MS} with --lab-seed (reproducible), else now.",
)
@click.option(
    "--entropy-span",
    type=click.IntRange(0, 1 << 24),
    default=None,
    help="Heights each validator's entropy hash chain covers (default 2^20, labs 2^16; "
    "0: no entropy anchors, epochs seeded by block hashes as before).",
)
@click.option(
    "--alloc",
    "allocs",
    multiple=True,
    metavar="KEY=AMOUNT",
    help="Genesis balance for an account key (64 hex digits); repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def genesis(
    validators: int,
    lab_seed: str | None,
    out: Path,
    network_id: str | None,
    slot_ms: int,
    epoch_length: int,
    timestamp_ms: int | None,
    entropy_span: int | None,
    allocs: tuple[str, ...],
    as_json: bool,
) -> None:
    """Write DIR/genesis.json, DIR/validator-I.key and DIR/validator-I.entropy (0600).

    Keys and entropy secrets come from the OS CSPRNG and are never overwritten. --lab-seed
    makes them reproducible from a string instead: for labs and tests only.
    """
    from msgspec.structs import replace as msgspec_replace

    from netdiag.node.entropy import DEFAULT_SPAN, LAB_SPAN, lab_secret
    from netdiag.node.errors import NodeError
    from netdiag.node.genesis import ChainParams, fresh_genesis, lab_genesis, write_lab

    params = ChainParams(epoch_length=epoch_length, slot_ms=slot_ms)
    allocations = _parse_allocs(allocs)
    if lab_seed is not None:
        ts = LAB_GENESIS_TS_MS if timestamp_ms is None else timestamp_ms
        span = LAB_SPAN if entropy_span is None else entropy_span
        spec, keys = lab_genesis(
            validators, lab_seed, network_id or "netdiag-lab", ts, params, span, allocations
        )
        secrets = [lab_secret(lab_seed, i) for i in range(validators)] if span else []
    else:
        if not network_id:
            raise InputError(
                "a new network needs a name", "pass --network-id NAME (or --lab-seed for a lab)"
            )
        ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        span = DEFAULT_SPAN if entropy_span is None else entropy_span
        spec, keys, secrets = fresh_genesis(validators, network_id, ts, params, span)
        spec = msgspec_replace(spec, allocations=allocations)
    try:
        paths = write_lab(out, spec, keys, overwrite=lab_seed is not None, secrets=secrets)
    except NodeError as e:
        raise node_error(e) from e
    vals: list[dict[str, Any]] = [
        {"index": i, "node_id": k.node_id.hex(), "key": str(p)}
        for i, (k, p) in enumerate(zip(keys, paths[1:], strict=True))
    ]
    doc: dict[str, Any] = {
        "genesis": str(paths[0]),
        "genesis_hash": spec.block().hash.hex(),
        "network_id": spec.network_id,
        "lab_keys": lab_seed is not None,
        "entropy_span": spec.entropy_span,
        "validators": vals,
    }
    if as_json:
        emit_json(doc)
    else:
        kind = "LAB keys from --lab-seed" if lab_seed is not None else "CSPRNG keys"
        click.echo(
            f"genesis {doc['genesis_hash'][:16]}… for {validators} validators ({kind}) -> {out}"
        )
        for v in vals:
            click.echo(f"  validator {v['index']}: {v['node_id'][:16]}…  {v['key']}")


def _parse_allocs(allocs: tuple[str, ...]) -> list[tuple[bytes, int]]:
    out: dict[bytes, int] = {}
    for item in allocs:
        key_hex, _, amount = item.partition("=")
        try:
            key, value = bytes.fromhex(key_hex), int(amount)
        except ValueError:
            key, value = b"", -1
        if len(key) != 32 or not 0 <= value < 2**63 or key in out:
            raise InputError(
                f"--alloc {item!r} is not KEY=AMOUNT (or names a key twice)",
                "pass a 64-hex-digit account key and a balance in [0, 2^63), once per key",
            )
        out[key] = value
    return sorted(out.items())


@node.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--json", "as_json", is_flag=True)
def keygen(out: Path, as_json: bool) -> None:
    """Generate a fresh Ed25519 node key (PKCS#8 PEM, mode 0600)."""
    from netdiag.node.crypto import Identity, save_identity

    if out.exists():
        raise InputError(f"{out} exists", "choose another --out; keys are never overwritten")
    ident = Identity.generate()
    save_identity(ident, out)
    if as_json:
        emit_json({"key": str(out), "node_id": ident.node_id.hex()})
    else:
        click.echo(f"node id {ident.node_id.hex()} -> {out}")


@node.command()
@click.option("--api", default="127.0.0.1:7601", show_default=True, help="Node API HOST:PORT.")
@click.option(
    "--key",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Sender's Ed25519 key (any key; e.g. from `netdiag node keygen`).",
)
@click.option("--to", "to_hex", default="", help="Recipient account key (64 hex digits).")
@click.option(
    "--amount", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True, help="Amount."
)
@click.option("--payload", default="", help="Payload text.")
@click.option(
    "--nonce",
    type=click.IntRange(0, 2**63 - 2),
    default=None,
    help="Must exceed the sender's last nonce. Default: current time in ns.",
)
@click.option("--json", "as_json", is_flag=True)
def tx(
    api: str, key: Path, to_hex: str, amount: int, payload: str, nonce: int | None, as_json: bool
) -> None:
    """Sign a transfer (or, without --to, a data-only transaction) and POST it to /tx."""
    from netdiag.node.api import tx_json
    from netdiag.node.crypto import load_identity
    from netdiag.node.errors import NodeError
    from netdiag.node.model import make_tx

    try:
        to = bytes.fromhex(to_hex)
    except ValueError:
        to = b"x"
    if len(to) not in (0, 32) or (amount and not to):
        raise InputError(
            f"--to {to_hex!r} is not a 32-byte account key in hex (or --amount without --to)",
            "pass the recipient's public key as 64 hex digits, e.g. from `netdiag node keygen`",
        )
    try:
        ident = load_identity(key)
    except NodeError as e:
        raise node_error(e) from e
    t = make_tx(
        ident,
        time.time_ns() if nonce is None else nonce,
        payload.encode(),
        time.time_ns() // 1_000_000,
        to,
        amount,
    )
    from netdiag.nodeapi import NodeUnavailable

    try:
        with _client(api) as client:
            code, doc = client.submit_tx(tx_json(t))
    except NodeUnavailable as e:
        raise NetdiagError(
            f"cannot reach node API at {api}: {e}", "start the node or pass its --api address"
        ) from e
    if code not in (200, 202):
        raise NetdiagError(
            f"node refused the transaction: {json.dumps(doc)[:200]}",
            "check the node log for the rule it broke",
        )
    if as_json:
        emit_json(doc)
    else:
        click.echo(f"tx {doc['txid']} accepted={doc['accepted']}")


def _client(api: str) -> NodeApi:
    from netdiag.nodeapi import NodeApi

    try:
        return NodeApi.at(api, timeout_s=5.0)
    except ValueError as e:
        raise InputError(f"--api {e}", "e.g. --api 127.0.0.1:7601") from None


def _get_json(api: str, path: str) -> Any:
    from netdiag.nodeapi import NodeUnavailable

    try:
        with _client(api) as client:
            return client.get_json(path)
    except NodeUnavailable as e:
        raise NetdiagError(
            f"cannot reach node API at {api}: {e}", "start the node or pass its --api address"
        ) from e


@node.command()
@click.option("--api", default="127.0.0.1:7601", show_default=True, help="Node API HOST:PORT.")
@click.option("--json", "as_json", is_flag=True, help="Print {status, peers} as JSON.")
def status(api: str, as_json: bool) -> None:
    """Show a running node's tip, sync state and peers (with their socket cookies)."""
    from rich.console import Console
    from rich.table import Table

    st = _get_json(api, "/status")
    peers = _get_json(api, "/peers")
    if as_json:
        emit_json({"status": st, "peers": peers})
        return
    console = Console()
    role = "validator" if st["validator"] else "observer"
    console.print(
        f"node {st['node_id'][:16]}… ({role}) height {st['height']} tip {st['tip_hash'][:16]}… "
        f"synchronized={st['synchronized']} quorum={st.get('validator_quorum')} "
        f"(validators reachable {st.get('validators_reachable', '?')}) "
        f"peers {st['peers']} mempool {st['mempool_txs']} uptime {st['uptime_s']:.0f} s"
    )
    disc = st.get("discovery")
    if isinstance(disc, dict) and disc.get("enabled"):
        console.print(
            f"discovery: table {disc.get('table_entries')} entries (GET /peers/table), "
            f"lookups {disc.get('lookups_completed')} "
            f"(last {disc.get('last_lookup_hops')} hops, {disc.get('last_lookup_s')} s)"
        )
    t = Table()
    for col in ("peer", "address", "dir", "mesh", "score", "sock_cookie", "height"):
        t.add_column(col, justify="right" if col in ("score", "height") else "left")
    from netdiag.nodeapi import normalise_peers

    for p in normalise_peers(peers):
        t.add_row(
            p["peer_id"][:12],
            p["address"],
            p["direction"][:3],
            ",".join(p["mesh"]),
            f"{p['score']:.1f}",
            str(p.get("sock_cookie", "—")),
            str(p["height"]),
        )
    console.print(t)


@node.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="The node's data directory (its chain.sqlite is read, never written).",
)
@click.option(
    "--genesis",
    "genesis_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The genesis the chain must start from (validators and schedule come from it).",
)
@click.option("--network", default="", help="A named network instead of --genesis.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as one JSON object.")
def verify(data_dir: Path, genesis_file: Path | None, network: str, as_json: bool) -> None:
    """Check the whole stored chain offline: links, hashes, signatures, producer schedule.

    Exit 0 if every block is valid, 5 at the first bad block (its height is printed).
    """
    from rich.console import Console

    from netdiag.errors import CheckFailed
    from netdiag.node.chain import now_ms
    from netdiag.node.errors import NodeError
    from netdiag.node.networks import resolve_genesis
    from netdiag.node.verify import StoreUnreadable, open_read_only, verify_chain

    try:
        spec = resolve_genesis(network, str(genesis_file or ""))
    except NodeError as e:
        raise node_error(e) from e
    db_path = data_dir / "chain.sqlite"
    try:
        db = open_read_only(db_path)
    except FileNotFoundError:
        raise InputError(
            f"no block store at {db_path}", "pass the --data-dir the node ran with"
        ) from None
    except StoreUnreadable as e:
        raise CheckFailed(str(e), "restore the data directory from a backup or resync") from e
    err = Console(stderr=True)
    try:
        with err.status("verifying") as st:
            res = verify_chain(
                db, spec, now_ms(), lambda h, tip: st.update(f"verifying block {h} of {tip}")
            )
    except StoreUnreadable as e:
        raise CheckFailed(str(e), "restore the data directory from a backup or resync") from e
    finally:
        db.close()
    doc = {
        "ok": res.ok,
        "tip": res.tip,
        "checked": res.checked,
        "bad_height": res.bad_height,
        "reason": res.reason,
        "detail": res.detail,
        "base": res.base,  # > 0: started from a snapshot, history 1..base-1 backfilling
        "backfill_missing": max(0, res.base - 1),
    }
    if as_json:
        click.echo(json.dumps(doc))
    elif res.ok and res.base:
        click.echo(
            f"chain ok from the snapshot base: blocks {res.base}..{res.tip} (links, hashes, "
            "signatures, producer schedule, timestamps, transactions; the state from the "
            f"snapshot is not replayed) and genesis; history 1..{res.base - 1} still "
            "backfilling (not a failure)"
        )
    elif res.ok:
        click.echo(
            f"chain ok: {res.checked} blocks 0..{res.tip} (links, hashes, signatures, "
            "producer schedule, timestamps, transactions)"
        )
    if not res.ok:
        raise CheckFailed(
            f"block {res.bad_height} is bad ({res.reason}): {res.detail}",
            "the blocks below it are valid; restore from a backup or resync from peers",
        )


node.add_command(snapshot)
