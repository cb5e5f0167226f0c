"""The sweep shares one TensorFlow process and one SQLite store; each script is trained at most
once traced (and once untraced, for the numerics check)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

os.environ.setdefault("GRADTRACE_FLUSH_INTERVAL", "0.2")

PROJECT = "sweep"


@dataclass
class Traced:
    name: str
    out: Any  # scripts.Out
    warnings: list[str]
    partial: bool
    status: str
    error: str | None


class Sweep:
    """Run sweep scripts traced (into one store) and untraced, each at most once."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._traced: dict[str, Traced] = {}
        self._plain: dict[str, Any] = {}

    def traced(self, script: Callable[[], Any]) -> Traced:
        import gradtrace

        name = script.__name__
        if name not in self._traced:
            with gradtrace.trace(run=name, project=PROJECT, store=self.url) as run:
                out = script()
            self._traced[name] = Traced(name, out, list(run.info.warnings), bool(run.info.partial),
                                        run.info.status, run.info.error)
        return self._traced[name]

    def plain(self, script: Callable[[], Any]) -> Any:
        name = script.__name__
        if name not in self._plain:
            self._plain[name] = script()
        return self._plain[name]

    def store(self):
        from gradtrace.store import open_store

        return open_store(self.url)


@pytest.fixture(scope="session")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    db = tmp_path_factory.mktemp("sweep") / "sweep.db"
    return Sweep(f"sqlite:///{db}")
