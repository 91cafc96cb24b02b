"""Small config/log hygiene checks: env-backed CLI options are validated, URLs are logged without
passwords, the manager's address file is replaced atomically."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubevine.cli import build_parser
from kubevine.manager.redis_store import _safe_url
from kubevine.manager.service import write_atomic


@pytest.mark.parametrize(
    ("var", "option"),
    [
        ("KUBEVINE_TRANSFERS_PER_SOURCE", "--transfers-per-source"),
        ("KUBEVINE_REDIS_OUTAGE_GRACE", "--redis-outage-grace"),
        ("KUBEVINE_RESTORE_AT_ONCE", "--restore-at-once"),
        ("KUBEVINE_STATS_INTERVAL", "--stats-interval"),
        ("KUBEVINE_METRICS_PORT", "--metrics-port"),
    ],
)
@pytest.mark.parametrize("bad", ["-1", "lots"])
def test_bad_env_default_is_a_clear_error(
    var: str, option: str, bad: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(var, bad)
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["manager"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert option in err and var in err


def test_env_defaults_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEVINE_TRANSFERS_PER_SOURCE", "7")
    monkeypatch.setenv("KUBEVINE_REDIS_OUTAGE_GRACE", "0")
    monkeypatch.setenv("KUBEVINE_METRICS_PORT", "0")
    a = build_parser().parse_args(["manager"])
    assert (a.transfers_per_source, a.redis_outage_grace, a.metrics_port, a.stats_interval) == (
        7,
        0.0,
        0,
        2.0,
    )
    monkeypatch.setenv("KUBEVINE_TRANSFERS_PER_SOURCE", "0")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["manager"])  # 0 is refused, not silently 4


def test_bad_manager_env_does_not_break_other_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEVINE_TRANSFERS_PER_SOURCE", "lots")
    assert build_parser().parse_args(["worker", "127.0.0.1:1"]).command == "worker"


@pytest.mark.parametrize(
    "url",
    [
        "redis://:p@ss@redis.example:6379/0",
        "redis://user:a@b/c@redis.example:6379/0",
        "rediss://u:s3cr@t@redis.example:6380",
    ],
)
def test_safe_url_hides_a_password_with_at_signs(url: str) -> None:
    safe = _safe_url(url)
    assert "redis.example" in safe and "ss@" not in safe and "s3cr" not in safe and "b/c" not in safe
    assert "p@" not in safe and "t@" not in safe


def test_address_file_is_replaced_not_rewritten(tmp_path: Path) -> None:
    p = tmp_path / "address"
    write_atomic(p, "127.0.0.1:1\n")
    before = p.stat().st_ino
    write_atomic(p, "127.0.0.1:2\n")
    # A new inode: readers see the old file or the new one, never a truncated one.
    assert p.stat().st_ino != before and p.read_text() == "127.0.0.1:2\n"
    assert [x.name for x in tmp_path.iterdir()] == ["address"]
