"""A relay's own share of a hop (issue 17 item 3): from the read that completed a gossip frame
to its forward (``forward_hold_seconds``), and the bytes a forwarded block found queued ahead
of it on each peer (``forward_backlog_bytes``) — what `bench p2p` reports per hop."""

from __future__ import annotations

from pathlib import Path

from netdiag.node.crypto import Identity
from netdiag.node.messages import TOPIC_BLOCKS, TOPIC_TXS, Publish
from netdiag.node.model import make_tx
from tests.unit.node.test_early_forward import publishes, relay_world, scheduled_block


def samples(relay: object, name: str, **labels: str) -> tuple[float, float]:
    """(count, sum) of one histogram of the relay's registry."""
    reg = relay.metrics.registry  # type: ignore[attr-defined]
    count = reg.get_sample_value(f"netdiag_node_{name}_count", labels) or 0.0
    total = reg.get_sample_value(f"netdiag_node_{name}_sum", labels) or 0.0
    return count, total


def test_a_forwarded_block_records_its_hold_from_the_read_and_the_backlog_per_peer(
    tmp_path: Path,
) -> None:
    world, keys, relay, _nxt, src, to_next = relay_world(tmp_path)
    block = scheduled_block(world, relay, keys, [])
    raw = block.encode()
    to_next.send_backlog = 5000  # bytes already queued towards `next`
    src.last_recv = world.clock.monotonic() - 0.02  # its frame was read 20 ms ago
    relay.ingest.on_publish(src, TOPIC_BLOCKS, raw)  # handled now (the clock does not move)
    assert publishes(to_next, raw) == 1
    count, held = samples(relay, "forward_hold_seconds", topic=TOPIC_BLOCKS)
    assert count == 1 and abs(held - 0.02) < 1e-9
    count, queued = samples(relay, "forward_backlog_bytes")
    assert count == len(relay.gossip.mesh[TOPIC_BLOCKS] - {src.peer_id})
    assert queued >= 5000


def test_a_message_not_forwarded_records_no_hold(tmp_path: Path) -> None:
    world, _keys, relay, _nxt, src, _to_next = relay_world(tmp_path)
    user = Identity.generate()
    tx = make_tx(user, 0, b"pay", world.clock.wall_ms())
    data = tx.encode()
    src.receive(Publish(TOPIC_TXS, data), len(data))
    src.receive(Publish(TOPIC_TXS, data), len(data))  # a duplicate: not forwarded again
    world.run(0.1)
    count, _ = samples(relay, "forward_hold_seconds", topic=TOPIC_TXS)
    assert count == 1
    assert samples(relay, "forward_hold_seconds", topic=TOPIC_BLOCKS)[0] == 0
