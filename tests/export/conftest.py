"""Fixtures of the exporter tests (helpers in export_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from export_helpers import Peer
from gradtrace import _config


@pytest.fixture
def peer() -> Iterator[Peer]:
    p = Peer().start()
    yield p
    p.stop()


@pytest.fixture
def cfg_factory(tmp_path: Path):
    """Config for a test: its own spool, fast timers, env ignored."""

    def make(**kw: object) -> _config.Config:
        base: dict[str, object] = {
            "spool_dir": tmp_path / "spool",
            "flush_interval": 0.05,
            "retry_seconds": 2.0,
            "http_timeout": 5.0,
            "shutdown_timeout": 10.0,
            "strict": True,
        }
        base.update(kw)
        return _config.load(env={}, **base)

    return make


