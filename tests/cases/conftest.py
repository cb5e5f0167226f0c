"""Runs each case script once per session through the real tracer into one SQLite file."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

# The exporter ships at exit anyway; a short interval keeps each traced run from idling.
os.environ.setdefault("GRADTRACE_FLUSH_INTERVAL", "0.2")


class Traced:
    """Trace scripts by name into a temp SQLite store; each script runs at most once."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.done: set[str] = set()

    def run(self, script: Callable[[], None]) -> str:
        import gradtrace

        name = script.__name__
        if name not in self.done:
            with gradtrace.trace(run=name, project="cases", store=self.url):
                script()
            self.done.add(name)
        return name

    def store(self):
        from gradtrace.store import open_store

        return open_store(self.url)


@pytest.fixture(scope="session")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Traced:
    db = tmp_path_factory.mktemp("cases") / "cases.db"
    return Traced(f"sqlite:///{db}")
