"""--verify on a lab link: under 1 % random loss, moving the client namespace from bbr to
cubic is measured as worse and --revert-if-worse puts bbr back."""

from __future__ import annotations

import json
import sys
import time

import pytest

from netdiag.lab import Lab, two_node
from tests.kernel.tune.conftest import raw, run

DISCARD = (
    "import socket,sys,threading\n"
    "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
    "s.bind((sys.argv[1],int(sys.argv[2])));s.listen()\n"
    "def d(c):\n"
    "    while c.recv(1<<20): pass\n"
    "while True:\n"
    "    c,_=s.accept();threading.Thread(target=d,args=(c,),daemon=True).start()\n"
)


@pytest.mark.slow
def test_verify_on_a_lossy_lab_link_reverts_cubic(state: dict[str, str]) -> None:
    topo = two_node(0.04, 50_000_000, 0.01, name="tune", nodes=("va", "vb"))
    with Lab.up(topo) as lab:  # namespaces nd-tune-va, nd-tune-vb
        lab.popen("vb", [sys.executable, "-c", DISCARD, lab.addr("vb"), "5399"])
        deadline = time.monotonic() + 5
        while not lab.exec("vb", ["ss", "-Htln", "sport = :5399"]).stdout.strip():
            assert time.monotonic() < deadline, "discard sink did not start"
            time.sleep(0.05)
        ns = lab.ns("va")
        assert raw("net.ipv4.tcp_congestion_control", ns) == b"bbr\n"
        p = run(
            [
                "tune",
                "--netns",
                ns,
                "--allow-host",
                "--cc",
                "cubic",
                "--verify",
                "--peer",
                f"{lab.addr('vb')}:5399",
                "--verify-seconds",
                "4",
                "--revert-if-worse",
                "--json",
            ],
            state,
            check=False,
        )
        out = json.loads(p.stdout)
        v = out["verify"]
        assert (v["before"]["cc"], v["after"]["cc"]) == ("bbr", "cubic")
        assert v["before"]["retrans_segs"] > 0 and v["after"]["retrans_segs"] > 0  # lossy path
        assert v["verdict"] == "worse", v
        assert p.returncode == 5 and out["reverted"] is True
        assert raw("net.ipv4.tcp_congestion_control", ns) == b"bbr\n"
