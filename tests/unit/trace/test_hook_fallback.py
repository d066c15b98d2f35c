"""--hook auto falls back to the classic tracepoint on any refusal of the tp_btf load, a
PrivilegeError included (prepare() has required the capabilities before: the classic load
raises it again if it is real); --hook tp_btf raises it. From review (verifier EACCES)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from netdiag.errors import PrivilegeError
from netdiag.kernel import bpf_sys
from netdiag.trace import btfhook, engine, manifest


def _fake(monkeypatch: pytest.MonkeyPatch, refusal: Exception) -> list[Any]:
    monkeypatch.setattr(engine.loaders, "chosen", lambda _l=None: "light")
    monkeypatch.setattr(
        engine.btfhook, "cached_facts", lambda spec, cache: btfhook.Facts({"OFF_X": 1}, 42)
    )
    calls: list[Any] = []

    def load(src: Path, defines: Any, env: Any, loader: Any = None, btf_ids: Any = None) -> str:
        calls.append(btf_ids)
        if btf_ids:
            raise refusal
        return "classic"

    monkeypatch.setattr(engine.loaders, "load", load)
    return calls


def test_auto_falls_back_when_the_verifier_refuses_tp_btf_with_eacces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # what prog_load raised for a verifier EACCES ("R1 invalid mem access") before the fix
    _fake(
        monkeypatch,
        PrivilegeError(
            "loading BPF program raw_tracepoint__tcp_probe: Permission denied", "run as root"
        ),
    )
    s = engine.Session(manifest.load("tcp_peers"), hook="auto")
    assert s._load(Path("x.bpf.c")) == "classic"  # type: ignore[comparison-overlap]
    assert s.hook is not None and s.hook.hook == btfhook.TRACEPOINT


def test_auto_fallback_reason_is_the_verifiers_line(monkeypatch: pytest.MonkeyPatch) -> None:
    refusal = bpf_sys.VerifierError(
        "raw_tracepoint__tcp_probe",
        13,
        ["0: (79) r2 = *(u64 *)(r1 +0)", "access beyond struct tcp_sock at off 99999 size 4"],
    )
    calls = _fake(monkeypatch, refusal)
    s = engine.Session(manifest.load("tcp_peers"), hook="auto")
    assert s._load(Path("x.bpf.c")) == "classic"  # type: ignore[comparison-overlap]
    assert calls == [{"tcp_probe": 42}, None]
    line = s.hook_line()
    assert line.startswith("tracepoint tcp:tcp_probe (classic): the kernel refused tp_btf: ")
    assert line.endswith("verifier: access beyond struct tcp_sock at off 99999 size 4")
    assert "\n" not in line and "run as root" not in line


def test_forced_tp_btf_raises_the_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    refusal = bpf_sys.VerifierError("p", 13, ["R1 invalid mem access 'scalar'"])
    _fake(monkeypatch, refusal)
    s = engine.Session(manifest.load("tcp_peers"), hook="tp_btf")
    with pytest.raises(bpf_sys.VerifierError, match="R1 invalid mem access"):
        s._load(Path("x.bpf.c"))
