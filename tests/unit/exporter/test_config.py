"""Exporter settings: defaults < file < flags; every bad key or value is one InputError."""

from __future__ import annotations

from pathlib import Path

import pytest

from netdiag.errors import ExitStatus, InputError
from netdiag.exporter import config


def test_defaults_then_file_then_flags(tmp_path: Path) -> None:
    f = tmp_path / "exporter.toml"
    f.write_text('listen = "0.0.0.0:9500"\ninterval_s = 2\nports = [7600, 7601]\nrate = "1gbit"\n')
    assert config.load(None, {}) == config.ExporterConfig()
    cfg = config.load(f, {"interval_s": None, "ports": ()})
    assert (cfg.listen, cfg.interval_s, cfg.ports, cfg.rate) == (
        "0.0.0.0:9500",
        2.0,
        (7600, 7601),
        "1gbit",
    )
    cfg = config.load(f, {"interval_s": 0.5, "ports": ("9000,9001",), "max_series": 3})
    assert (cfg.interval_s, cfg.ports, cfg.max_series, cfg.listen) == (
        0.5,
        (9000, 9001),
        3,
        "0.0.0.0:9500",
    )


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("bogus = 1", "unknown key 'bogus'"),
        ("ports = [0]", "key 'ports'"),
        ('ports = ["abc"]', "key 'ports'"),
        ("interval_s = 0", "key 'interval_s'"),
        ("max_series = 0", "key 'max_series'"),
        ('cong = "yes"', "key 'cong'"),
        ('listen = "9464"', "key 'listen'"),
        ('node = "127.0.0.1:7601"', "key 'node'"),
        ('rate = "fast"', "key 'rate'"),
        ("verdict_window_s = 40", "verdict_window_s 40 must be shorter"),
        ("listen = ", "is not TOML"),
    ],
)
def test_bad_file_is_one_input_error_naming_the_key(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "exporter.toml"
    f.write_text(text + "\n")
    with pytest.raises(InputError) as e:
        config.load(f, {})
    assert needle in str(e.value)
    assert str(f) in str(e.value)
    assert e.value.exit_code == ExitStatus.USAGE


def test_bad_flag_names_the_flag() -> None:
    with pytest.raises(InputError, match="--port: '70000'"):
        config.load(None, {"ports": ("70000",)})
    with pytest.raises(InputError, match="does not exist"):
        config.load(Path("/nonexistent/exporter.toml"), {})


def test_filters_key_moves_only_with_what_the_pipeline_is_built_from() -> None:
    a = config.ExporterConfig()
    assert config.replace(a, verdict_interval_s=60).filters_key() == a.filters_key()
    assert config.replace(a, ports=(7600,)).filters_key() != a.filters_key()
