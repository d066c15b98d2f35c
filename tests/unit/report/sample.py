"""Small hand-made p2p result files for renderer tests (real runs are tested in tests/e2e)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from netdiag.report.results import ResultBuilder


def p2p_result(seed: int = 1, slow: float = 1.0, with_transport: bool = True) -> dict[str, Any]:
    rng = random.Random(seed)
    b = ResultBuilder(
        "p2p",
        {"nodes": 4, "duration_s": 10},
        seed=seed,
        link_engine="userspace",
        variants=["cubic", "bbr"],
    )
    nodes = ["n01", "n02", "n03", "n04"]
    for vi, variant in enumerate(b.variants):
        factor = slow * (1.3 if variant == "cubic" else 1.0)
        for msg in range(5):
            for node in nodes[1:]:
                lb = 20_000 * nodes.index(node)
                b.record(
                    "propagation",
                    {
                        "variant": variant,
                        "kind": "block",
                        "msg": str(msg),
                        "node": node,
                        "origin": "n01",
                        "delay_us": int(lb * factor + rng.uniform(0, 5000)),
                        "lower_bound_us": lb,
                        "duplicates": rng.randint(0, 3),
                    },
                )
        b.add_summary(
            "propagation",
            {
                "variant": variant,
                "kind": "block",
                "messages": 5,
                "p99_ms": 60 * factor,
                "delivery_ratio": 1.0,
            },
        )
        for t in range(0, 10):
            h = min(20, 3 * t)
            b.record(
                "sync",
                {
                    "variant": variant,
                    "case": "late_join",
                    "t_s": t * factor,
                    "height": h,
                    "target_height": 20,
                    "synchronized": h == 20,
                },
            )
        if with_transport:
            for t in range(10):
                for link in ("n01-n02", "n02-n03"):
                    name = f"srtt_us {link} {variant}"
                    b.sample(
                        name,
                        float(t),
                        40_000 + 1000 * t * factor,
                        metric="srtt_us",
                        link=link,
                        variant=variant,
                    )
                    b.sample(
                        f"cwnd_segs {link} {variant}",
                        float(t),
                        10 + t * (vi + 1),
                        metric="cwnd_segs",
                        link=link,
                        variant=variant,
                    )
            b.add_summary(
                "transport",
                {
                    "variant": variant,
                    "throughput_bps": 2e6 / factor,
                    "retrans_segs": int(10 * factor),
                },
            )
        b.add_summary(
            "sync",
            {
                "variant": variant,
                "case": "late_join",
                "sync_s": 7 * factor,
                "blocks_per_s": 20 / (7 * factor),
            },
        )
    return b.to_dict()


def write(path: Path, **kw: Any) -> Path:
    import json

    path.write_text(json.dumps(p2p_result(**kw)))
    return path
