"""Configuration: argument beats environment beats default; bad env values fall back, logged."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from gradtrace import _config


def test_defaults_without_environment() -> None:
    cfg = _config.load(env={})
    assert cfg.url == "sqlite:///./gradtrace.db"
    assert cfg.token is None and cfg.project == "default"
    assert not cfg.disabled and not cfg.strict
    assert cfg.full_tensors_every == 0
    assert cfg.spool_dir == _config.default_spool_dir()


def test_argument_beats_env_beats_default() -> None:
    env = {
        "GRADTRACE_URL": "http://team:8000",
        "GRADTRACE_BATCH_STEPS": "32",
        "GRADTRACE_PROJECT": "digits",
        "GRADTRACE_DISABLED": "yes",
        "GRADTRACE_SPOOL_MAX_MB": "2",
        "GRADTRACE_SPOOL_MAX_AGE_DAYS": "0.5",
    }
    cfg = _config.load(env=env, batch_steps=8)
    assert cfg.batch_steps == 8  # argument
    assert cfg.url == "http://team:8000" and cfg.project == "digits" and cfg.disabled  # env
    assert cfg.spool_max_bytes == 2 * 2**20 and cfg.spool_max_age == 43200.0  # env units scaled
    assert cfg.queue_steps == _config.Config().queue_steps  # default
    # None means "not given": the environment still applies
    assert _config.load(env=env, url=None).url == "http://team:8000"


@pytest.mark.parametrize(
    ("var", "raw", "field"),
    [
        ("GRADTRACE_BATCH_STEPS", "many", "batch_steps"),
        ("GRADTRACE_BATCH_STEPS", "0", "batch_steps"),
        ("GRADTRACE_FLUSH_INTERVAL", "nan", "flush_interval"),
        ("GRADTRACE_SKETCH_DIM", "100000", "sketch_dim"),
        ("GRADTRACE_STRICT", "maybe", "strict"),
        ("GRADTRACE_URL", "   ", "url"),
    ],
)
def test_malformed_env_is_logged_and_default_used(
    var: str, raw: str, field: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gradtrace.config"):
        cfg = _config.load(env={var: raw})
    assert getattr(cfg, field) == getattr(_config.Config(), field)
    assert any(var in r.getMessage() for r in caplog.records), caplog.text


def test_bad_argument_raises_naming_the_field() -> None:
    with pytest.raises(ValueError, match="'batch_steps'"):
        _config.load(env={}, batch_steps=-1)
    with pytest.raises(ValueError, match="'sketch_dim'"):
        _config.load(env={}, sketch_dim=1000)
    with pytest.raises(ValueError, match="'disabled'"):
        _config.load(env={}, disabled=3)
    with pytest.raises(TypeError, match="batch_size"):
        _config.load(env={}, batch_size=3)


def test_bare_path_is_sqlite_and_token_is_never_printed() -> None:
    cfg = _config.load(env={"GRADTRACE_TOKEN": "s3cret"}, url="runs/x.db")
    assert cfg.url == "sqlite:///runs/x.db"
    assert cfg.token == "s3cret" and "s3cret" not in repr(cfg)


def test_spool_dir_follows_xdg_cache_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _config.load(env={}).spool_dir == tmp_path / "gradtrace" / "spool"
    assert _config.load(env={"GRADTRACE_SPOOL_DIR": "~/sp"}).spool_dir == Path.home() / "sp"


def test_module_table_documents_every_variable() -> None:
    doc = _config.__doc__ or ""
    names = [v for k, v in vars(_config).items() if k.startswith("GRADTRACE_")]
    assert len(names) >= 13
    for name in names:
        assert f"``{name}``" in doc, name


def test_stats_every_and_ring_size() -> None:
    assert _config.load(env={}).stats_every is None  # auto
    assert _config.load(env={"GRADTRACE_STATS_EVERY": "auto"}).stats_every is None
    assert _config.load(env={"GRADTRACE_STATS_EVERY": "25"}).stats_every == 25
    assert _config.load(env={"GRADTRACE_STATS_EVERY": "25"}, stats_every=1).stats_every == 1
    assert _config.load(env={"GRADTRACE_STATS_EVERY": "0"}).stats_every is None  # logged, default kept
    with pytest.raises(ValueError, match="stats_every"):
        _config.load(env={}, stats_every=0)
    assert _config.load(env={}).ring_size is None  # sized from the step vector
    assert _config.load(env={"GRADTRACE_RING_SIZE": "64"}).ring_size == 64
