"""tcp_peers on tp_btf/tcp_probe (BTF raw tracepoint, offsets from the running kernel's BTF)
and on the classic tcp:tcp_probe give the same rows for the same traffic; the hook in use is
reported, a forced classic hook is honoured, and every attachment goes away on close."""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
import time
from collections.abc import Callable

import pytest

from netdiag.bench.traffic import Pair, cookie_of
from netdiag.errors import PrivilegeError
from netdiag.kernel import bpf_sys, btf
from netdiag.trace import btfhook, engine, manifest
from netdiag.trace.engine import Snapshot
from tests.kernel.trace.conftest import bpf_fds

SAME = (
    "family",
    "laddr",
    "lport",
    "raddr",
    "rport",
    "bytes_acked",
    "srtt_min_us",
    "srtt_max_us",
    "srtt_us",
    "snd_cwnd",
    "ssthresh",
    "snd_wnd",
    "rcv_wnd",
)


@pytest.fixture(autouse=True)
def _needs_btf() -> None:
    if not btf.VMLINUX.exists():
        pytest.skip(f"no kernel BTF ({btf.VMLINUX}): tp_btf needs CONFIG_DEBUG_INFO_BTF")


def _session(port: int, hook: str) -> engine.Session:
    p = manifest.load("tcp_peers")
    return engine.Session(p, engine.defines_for(p, (port,), False), hook=hook)


IDENTITY = ("family", "laddr", "lport", "raddr", "rport")


def _events(s: Snapshot, cookies: tuple[int, ...]) -> dict[int, int]:
    rows = {r["sock_cookie"]: r for r in s.rows}
    return {c: int(rows[c]["events"]) if c in rows else 0 for c in cookies}


def _compare(sa: Snapshot, sc: Snapshot, cookies: tuple[int, ...]) -> None:
    a = {r["sock_cookie"]: r for r in sa.rows}
    b = {r["sock_cookie"]: r for r in sc.rows}
    for cookie in cookies:
        assert cookie in a and cookie in b, f"no row for {cookie}: {list(a)} / {list(b)}"
        x, y = a[cookie], b[cookie]
        assert x["events"] > 0
        if x["events"] == y["events"]:
            # the same ACKs seen by both programs: the same figures, field by field
            for k in SAME:
                assert x[k] == y[k], (k, x[k], y[k])
            assert sum(x["srtt_hist"]) == sum(y["srtt_hist"])
            continue
        # an event the kernel skipped for one program (a recursion miss) must be counted
        short = sa if x["events"] < y["events"] else sc
        gap = abs(x["events"] - y["events"])
        assert short.stats["recursion_misses"] >= gap, (cookie, x["events"], y["events"])
        assert 0.98 * x["events"] <= y["events"] <= x["events"] / 0.98
        for k in IDENTITY:
            assert x[k] == y[k], (k, x[k], y[k])


def _quiet_rows(
    btf_s: engine.Session, cls_s: engine.Session, cookies: tuple[int, ...]
) -> tuple[Snapshot, Snapshot]:
    """Both sessions read once both saw the same events for every cookie. The two reads are
    not one instant: an ACK (a delayed one for the last pong, under load hundreds of ms late)
    can land between them, so a pair of reads that disagree is read again, not compared."""
    end = time.monotonic() + 10.0
    while True:
        a, b = btf_s.read(), cls_s.read()
        ea, eb = _events(a, cookies), _events(b, cookies)
        if (all(ea.values()) and ea == eb) or time.monotonic() > end:
            return a, b  # past the deadline a difference must be a counted miss (_compare)
        time.sleep(0.05)


def test_tp_btf_and_classic_rows_agree_on_the_same_traffic(
    loopback_pair: Callable[..., Pair],
) -> None:
    pair = loopback_pair(echo=True, cc="cubic")
    cookies = (pair.cookie, cookie_of(pair.server))
    with _session(pair.port, "tp_btf") as b, _session(pair.port, "tracepoint") as c:
        assert b.hook is not None and b.hook.hook == btfhook.TP_BTF, b.hook_line()
        assert c.hook is not None and c.hook.hook == btfhook.TRACEPOINT
        assert "raw_tracepoint__tcp_probe" in b.prog_fds()
        assert "tracepoint__tcp__tcp_probe" in c.prog_fds()
        pair.send(8 << 20)
        pair.ping_pong(5)
        sa, sc = _quiet_rows(b, c, cookies)
        assert sa.header()["hook"] == "tp_btf" and sc.header()["hook"] == "tracepoint"
        _compare(sa, sc, cookies)
        # the cookie the tp_btf program reads is the socket's SO_COOKIE
        assert pair.cookie in {r["sock_cookie"] for r in sa.rows}


def test_tp_btf_rows_of_an_ipv6_connection() -> None:
    """Addresses come from sk_v6_* for AF_INET6: the same as tcp_probe's sockaddr_in6."""
    try:
        ls = socket.socket(socket.AF_INET6)
        ls.bind(("::1", 0))
    except OSError as e:
        pytest.skip(f"no IPv6 loopback here ({e})")
    ls.listen(1)
    port = ls.getsockname()[1]
    cl = socket.socket(socket.AF_INET6)
    with contextlib.ExitStack() as st:
        st.callback(ls.close)
        st.callback(cl.close)
        b = st.enter_context(_session(port, "tp_btf"))
        c = st.enter_context(_session(port, "tracepoint"))
        cl.connect(("::1", port))
        sv, _ = ls.accept()
        st.callback(sv.close)
        stop = threading.Event()

        def drain() -> None:
            while not stop.is_set() and sv.recv(1 << 16):
                pass

        t = threading.Thread(target=drain, daemon=True)
        t.start()
        st.callback(stop.set)
        for _ in range(64):
            cl.sendall(b"x" * (1 << 16))
        cookies = (cookie_of(cl),)
        sa, sc = _quiet_rows(b, c, cookies)
        _compare(sa, sc, cookies)
        a = {r["sock_cookie"]: r for r in sa.rows}
        assert a[cookies[0]]["family"] == socket.AF_INET6
        assert a[cookies[0]]["laddr"] == a[cookies[0]]["raddr"] == "::1"


def test_forced_classic_hook_and_clean_close(loopback_pair: Callable[..., Pair]) -> None:
    pair = loopback_pair()
    before = bpf_fds()
    s = _session(pair.port, "tracepoint").open()
    try:
        assert s.hook_line().startswith("tracepoint tcp:tcp_probe (classic): the default")
    finally:
        s.close()
    s = _session(pair.port, "auto").open()
    try:
        assert s.hook is not None and s.hook.hook == btfhook.TP_BTF, s.hook_line()
        assert bpf_fds() > before
    finally:
        s.close()
    assert bpf_fds() == before, "programs, perf events or links left open"


def test_auto_falls_back_to_classic_when_the_kernel_refuses_tp_btf(
    loopback_pair: Callable[..., Pair], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attach BTF id that is no btf_trace_* typedef: the load is refused; auto attaches the
    classic tracepoint and says why, tp_btf raises."""
    real = btfhook.cached_facts
    wrong = btf.load().find(btf.STRUCT, "tcp_sock")

    def facts(spec: btfhook.BtfHookSpec, cache: object, *a: object) -> btfhook.Facts:
        f = real(spec, cache, *a)  # type: ignore[arg-type]
        return btfhook.Facts(f.defines, wrong)

    monkeypatch.setattr(btfhook, "cached_facts", facts)
    pair = loopback_pair()
    before = bpf_fds()
    with _session(pair.port, "auto") as s:
        assert s.hook is not None and s.hook.hook == btfhook.TRACEPOINT
        assert s.hook_line().startswith("tracepoint tcp:tcp_probe (classic): the kernel refused")
        assert "tracepoint__tcp__tcp_probe" in s.prog_fds()
    with pytest.raises(Exception, match="refused"):
        _session(pair.port, "tp_btf").open()
    assert bpf_fds() == before, "a refused load left fds open"


def test_auto_falls_back_when_the_verifier_refuses_tp_btf_with_eacces(
    loopback_pair: Callable[..., Pair], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An offset beyond struct tcp_sock: the verifier refuses the direct load with EACCES.
    That is a load error with the verifier's reason, not "run as root": auto attaches the
    classic tracepoint and says why, tp_btf raises it."""
    real = btfhook.cached_facts

    def facts(spec: btfhook.BtfHookSpec, cache: object, *a: object) -> btfhook.Facts:
        f = real(spec, cache, *a)  # type: ignore[arg-type]
        return btfhook.Facts({**f.defines, "OFF_SRTT_US": 30000}, f.btf_id)

    monkeypatch.setattr(btfhook, "cached_facts", facts)
    pair = loopback_pair()
    before = bpf_fds()
    with _session(pair.port, "auto") as s:
        assert s.hook is not None and s.hook.hook == btfhook.TRACEPOINT
        line = s.hook_line()
        assert line.startswith("tracepoint tcp:tcp_probe (classic): the kernel refused"), line
        assert "Permission denied; verifier: " in line and "run as root" not in line, line
        assert "processed " not in line, line
        assert "tracepoint__tcp__tcp_probe" in s.prog_fds()
    with pytest.raises(bpf_sys.VerifierError) as ei:
        _session(pair.port, "tp_btf").open()
    assert not isinstance(ei.value, PrivilegeError)
    assert ei.value.errno == errno.EACCES, ei.value
    assert bpf_fds() == before, "a refused load left fds open"
