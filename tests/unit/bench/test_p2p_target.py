"""bench p2p --target's file: the documented format, and one line naming the line or key for
every mistake (exit 2 through the CLI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from netdiag.bench.p2p_target import TargetNode, load_target
from netdiag.errors import ExitStatus, InputError
from tests.cli import run_netdiag

GOOD = """
[[node]]
api = "http://10.0.0.5:7601"
[[node]]
name = "b"
api = "10.0.0.6"
netns = "blue"
"""


def _write(tmp_path: Path, text: str, name: str = "t.toml") -> Path:
    f = tmp_path / name
    f.write_text(text)
    return f


def test_the_documented_format(tmp_path: Path) -> None:
    assert load_target(_write(tmp_path, GOOD)) == [
        TargetNode("node-0", "http://10.0.0.5:7601"),
        TargetNode("b", "http://10.0.0.6:7601", "blue"),  # the node's default API port
    ]
    doc = '{"node": [{"api": "h1:7601"}, {"api": "http://h2:8000/"}]}'
    assert [n.api for n in load_target(_write(tmp_path, doc, "t.json"))] == [
        "http://h1:7601",
        "http://h2:8000",
    ]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[[node]]\napi = \n", "line 2"),  # TOML syntax: the line
        ('[[node]]\napi = "h:1"\n', "'node' must list at least 2 nodes (found 1)"),
        ('[[nodes]]\napi = "h:1"\n', "unknown key 'nodes'"),
        (GOOD.replace("netns", "nets"), "node[1]: unknown key 'nets'"),
        (GOOD.replace('api = "10.0.0.6"', 'url = "x"'), "node[1]: unknown key 'url'"),
        (GOOD.replace('api = "10.0.0.6"', ""), "node[1]: missing key 'api'"),
        (GOOD.replace('"10.0.0.6"', '"h:abc"'), "node[1].api: 'h:abc' is not HOST:PORT"),
        (GOOD.replace('"10.0.0.6"', '"https://h:1"'), "node[1].api:"),
        (GOOD.replace('"10.0.0.6"', "7601"), "node[1].api: expected a string"),
        (GOOD.replace('name = "b"', 'name = "node-0"'), "node[1].name: 'node-0' is used twice"),
    ],
)
def test_mistakes_name_the_line_or_key(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(InputError) as e:
        load_target(_write(tmp_path, text))
    assert says in str(e.value) and "\n" not in str(e.value)


def test_json_syntax_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="line 3"):
        load_target(_write(tmp_path, '{"node": [\n{"api": "h:1"},\n{"api" "h:2"}]}', "t.json"))


def test_cli_refuses_lab_options_and_bad_files(tmp_path: Path) -> None:
    f = _write(tmp_path, GOOD.replace('netns = "blue"\n', ""))
    for extra, says in (
        (["--kill", "1"], "--kill needs control of the nodes"),
        (["--cc", "cubic"], "--cc needs control"),
        (["--nodes", "4"], "--nodes needs control"),
    ):
        r = run_netdiag("bench", "p2p", "--target", str(f), *extra)
        assert r.returncode == ExitStatus.USAGE, r.stderr
        assert r.stderr.count("\n") == 1 and says in r.stderr
    r = run_netdiag("bench", "p2p", "--target", str(tmp_path / "nosuch.toml"))
    assert r.returncode == ExitStatus.USAGE and "No such file" in r.stderr
