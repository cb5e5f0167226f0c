"""Settings every test shares. Area fixtures live in each tests/<area>/conftest.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Quiet, CPU-only, deterministic TensorFlow; set before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# Production swallows tracer-internal errors (one warning, run marked partial);
# tests turn that around so a tracer bug fails the test that hit it.
os.environ["GRADTRACE_STRICT"] = "1"
# Never let a test write into the developer's ./gradtrace.db by accident.
os.environ.pop("GRADTRACE_URL", None)

_TESTS = Path(__file__).resolve().parent


def _worker_group(item: pytest.Item) -> str | None:
    """Which tests share one pytest-xdist worker (``make test`` runs two, ``--dist loadgroup``).

    A module's tests stay together: their module fixtures (a live server, runs traced once)
    are built once and the sweep's scripts are checked in their groups of one process. The UI's
    modules share the session's browser and traced runs. The case pairs and checks go one by
    one: each worker traces the scripts its cases need into its own store."""
    path = item.path.relative_to(_TESTS).as_posix()
    if path == "cases/test_cases.py":
        return None
    if path.startswith("ui/"):
        return "ui"
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        group = _worker_group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
