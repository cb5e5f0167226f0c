"""Fixtures of the UI tests: real training runs in a SQLite file, a real uvicorn
serving the app on a free loopback port, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OUT = REPO / "test-output" / "ui"
CHROMIUM = os.environ.get("GRADTRACE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

sys.path.insert(0, str(HERE))

from live_server import ServerThread  # noqa: E402


@pytest.fixture(scope="session")
def out_dir() -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    return OUT


@pytest.fixture(scope="session")
def recorded_batches() -> dict[str, list[Any]]:
    """Two real trainings whose numbers the test computed itself, as batches (project "recorded")."""
    import _ui_runs

    return {
        "fit": _ui_runs.record("ui-fit-0001", "fit-style", True, project="recorded"),
        "tape": _ui_runs.record("ui-tape-0002", "tape-loop", None, project="recorded"),
    }


@pytest.fixture(scope="session")
def ui_db(tmp_path_factory: pytest.TempPathFactory, recorded_batches: dict[str, list[Any]]) -> dict[str, Any]:
    """A SQLite file with model.fit() vs a tape loop traced by gradtrace.trace (project
    "digits"), a fine-tuning run of two fit() calls (project "finetune"), the recorded pair (project "recorded") and a long run (project "long")."""
    import _ui_runs
    from gradtrace.store import open_store

    url = "sqlite:///" + str(tmp_path_factory.mktemp("ui") / "runs.db")
    ids = _ui_runs.traced(url, project="digits")
    fine_tune, second_fit = _ui_runs.fine_tuned(url)
    with open_store(url) as store:
        for batches in recorded_batches.values():
            for b in batches:
                store.ingest(b)
        for b in _ui_runs.synthetic_long("long-run", steps=3000, n_vars=6, project="long"):
            store.ingest(b)
        for b in _ui_runs.synthetic_long("sampled-run", steps=400, n_vars=4, project="sampled", stats_every=50):
            store.ingest(b)
    return {"url": url, "fit": ids["fit"], "tape": ids["tape-loop"], "fine_tune": fine_tune, "second_fit": second_fit}


@pytest.fixture(scope="session")
def server(ui_db: dict[str, Any]) -> Iterator[ServerThread]:
    from gradtrace_server.app import create_app
    from gradtrace_server.config import Settings

    srv = ServerThread(create_app(Settings(db=ui_db["url"], host="127.0.0.1"))).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium, one per module: Playwright's sync API keeps an asyncio loop running in this
    thread until it stops, and the next tests of this worker (``asyncio.run`` in a server
    test) need none running."""
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(f"Debian's chromium is not at {CHROMIUM}: run `make chromium`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1360, "height": 900}, device_scale_factor=1)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.js_errors = errors
    yield pg
    ctx.close()
