"""Fixtures of the tracer tests: a fresh SQLite store per test, read back through the real store."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture
def db_url(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    # a destination failure must spool into this test's folder, never the user's cache
    monkeypatch.setenv("GRADTRACE_SPOOL_DIR", str(tmp_path / "spool"))
    return f"sqlite:///{tmp_path / 'trace.db'}"


@pytest.fixture
def read_run(db_url: str) -> Callable[[str], tuple[Any, list[dict[str, Any]]]]:
    """Read a run (detail, steps ordered by step) back from the SQLite file the tracer wrote."""

    def read(name: str) -> tuple[Any, list[dict[str, Any]]]:
        from gradtrace.store import open_store

        store = open_store(db_url)
        try:
            summary = store.resolve(name)
            detail = store.run_detail(summary.id)
            steps = sorted(store.steps(summary.id), key=lambda r: r["step"])
        finally:
            store.close()
        return detail, steps

    return read


@pytest.fixture(autouse=True)
def _no_leftover_patches() -> Any:
    """Every test leaves TensorFlow/Keras exactly as it found them."""
    yield
    from gradtrace import _hooks

    assert not _hooks.installed()
