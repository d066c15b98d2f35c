"""Which tcp_probe hook a run gets (tp_btf or the classic tracepoint) and why; offsets and
the attach BTF id resolved from a kernel's BTF; the per-BTF cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from netdiag.kernel import btf
from netdiag.trace import btfhook, manifest
from tests.unit.kernel.test_btf import sample

SPEC = btfhook.BtfHookSpec(
    event="tcp_probe",
    replaces="tcp:tcp_probe",
    define="HOOK_BTF",
    offsets={"OFF_SRTT_US": "tcp_sock:srtt_us:4", "OFF_COOKIE": "sock:__sk_common.skc_cookie:8"},
    bitfields={"CA_STATE": "tcp_sock:ca_state"},
)
FACTS = btfhook.Facts({"OFF_SRTT_US": 40}, 7)


def _never() -> btfhook.Facts:
    raise AssertionError("BTF must not be read for this decision")


def test_auto_with_light_loader_and_btf_is_tp_btf() -> None:
    c = btfhook.choose(SPEC, "auto", "light", lambda: FACTS)
    assert c.hook == btfhook.TP_BTF and c.reason == ""
    assert c.defines == {"HOOK_BTF": 1, "OFF_SRTT_US": 40}
    assert c.btf_ids == {"tcp_probe": 7}
    assert c.describe(SPEC) == "tp_btf/tcp_probe (BTF raw tracepoint)"


@pytest.mark.parametrize(
    ("want", "loader", "reason"),
    [
        ("tracepoint", "light", "the default (--hook tp_btf or auto for the BTF raw tracepoint)"),
        ("auto", "bcc", "the bcc loader attaches classic tracepoints only"),
    ],
)
def test_fallbacks_that_need_no_btf(want: str, loader: str, reason: str) -> None:
    c = btfhook.choose(SPEC, want, loader, _never)
    assert (c.hook, c.reason, c.defines) == (btfhook.TRACEPOINT, reason, {})
    assert c.describe(SPEC) == f"tracepoint tcp:tcp_probe (classic): {reason}"


def test_missing_btf_and_missing_member_fall_back_with_the_reason() -> None:
    def absent() -> btfhook.Facts:
        raise FileNotFoundError(2, "No such file")

    def old_kernel() -> btfhook.Facts:
        raise btf.BtfError("struct tcp_sock has no member 'srtt_us'")

    c = btfhook.choose(SPEC, "auto", "light", absent)
    assert c.hook == btfhook.TRACEPOINT and "no kernel BTF" in c.reason
    c = btfhook.choose(SPEC, "auto", "light", old_kernel)
    assert c.hook == btfhook.TRACEPOINT
    assert c.reason == "kernel BTF: struct tcp_sock has no member 'srtt_us'"
    assert "\n" not in c.describe(SPEC)  # one line for doctor and trace-peers


def test_probe_without_a_btf_hook_is_classic_and_unknown_hook_refused() -> None:
    assert btfhook.choose(None, "auto", "light", _never) == btfhook.Choice("tracepoint", "")
    assert btfhook.choose(None, "tp_btf", "light", _never).reason
    with pytest.raises(ValueError):
        btfhook.choose(SPEC, "kprobe", "light", _never)


def test_resolve_offsets_bitfields_and_sizes() -> None:
    b = btf.Btf.parse(sample())
    f = btfhook.resolve(SPEC, b)
    assert f.defines == {
        "OFF_SRTT_US": 40,
        "OFF_COOKIE": 8,
        "OFF_CA_STATE": 32,
        "CA_STATE_SHIFT": 0,
        "CA_STATE_BITS": 5,
    }
    assert f.btf_id == b.find(btf.TYPEDEF, "btf_trace_tcp_probe")
    wrong = btfhook.BtfHookSpec("tcp_probe", "tcp:tcp_probe", "H", {"X": "tcp_sock:srtt_us:8"})
    with pytest.raises(btf.BtfError, match="4 bytes in this kernel, the program reads 8"):
        btfhook.resolve(wrong, b)
    bits = btfhook.BtfHookSpec("tcp_probe", "tcp:tcp_probe", "H", {"X": "tcp_sock:ca_state"})
    with pytest.raises(btf.BtfError, match="bit field"):
        btfhook.resolve(bits, b)
    other = btfhook.BtfHookSpec("udp_probe", "x:y", "H", {})
    with pytest.raises(btf.BtfError, match="btf_trace_udp_probe"):
        btfhook.resolve(other, b)


def test_cached_facts_are_keyed_by_the_kernels_btf(tmp_path: Path) -> None:
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(sample())
    cache = tmp_path / "cache"
    f = btfhook.cached_facts(SPEC, cache, vmlinux)
    assert f.defines["OFF_SRTT_US"] == 40
    (entry,) = cache.iterdir()
    assert btf.digest(vmlinux) in entry.name
    vmlinux.write_bytes(b"garbage")  # same path, another kernel: not the cached answer
    with pytest.raises(btf.BtfError):
        btfhook.cached_facts(SPEC, cache, vmlinux)
    vmlinux.write_bytes(sample())
    entry.write_text('{"defines": {"OFF_SRTT_US": 99}, "btf_id": 3}')  # read from the cache
    assert btfhook.cached_facts(SPEC, cache, vmlinux).defines == {"OFF_SRTT_US": 99}


def test_tcp_peers_manifest_declares_its_btf_hook() -> None:
    spec = manifest.load("tcp_peers").btf_hook
    assert spec is not None and spec.event == "tcp_probe" and spec.replaces == "tcp:tcp_probe"
    src = (Path(__file__).parents[3] / "bpf/tcp_peers.bpf.c").read_text()
    for name in [*spec.offsets, *(f"OFF_{b}" for b in spec.bitfields)]:
        assert name in src, f"{name} declared in the manifest but not used by the program"
    assert f"#ifdef {spec.define}" in src


def test_doctor_and_the_engine_take_the_facts_from_one_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """btfhook.facts_for: the cache next to the compiled objects, for doctor and Session."""
    from netdiag.cli import doctor
    from netdiag.kernel.bcc_loader import LoadEnv
    from netdiag.trace import engine

    seen: list[tuple[str, Path]] = []

    def cached(spec: btfhook.BtfHookSpec, cache: Path) -> btfhook.Facts:
        seen.append((spec.event, cache))
        return FACTS

    monkeypatch.setattr(btfhook, "cached_facts", cached)
    monkeypatch.setattr(engine.loaders, "chosen", lambda _l=None: "light")
    env = LoadEnv(cache=tmp_path)
    assert btfhook.facts_for(SPEC, env)() == FACTS
    assert seen == [("tcp_probe", tmp_path / "btf")]
    made: list[LoadEnv] = []
    real = btfhook.facts_for

    def facts_for(spec: btfhook.BtfHookSpec | None, env: LoadEnv) -> object:
        made.append(env)
        return real(spec, env)

    monkeypatch.setattr(btfhook, "facts_for", facts_for)
    assert doctor.hook_check().detail.endswith("tp_btf/tcp_probe available")
    monkeypatch.setattr(engine.loaders, "load", lambda *a, **k: "loaded")
    engine.Session(manifest.load("tcp_peers"), hook="auto", env=env)._load(Path("x.bpf.c"))
    assert made == [LoadEnv(), env]
