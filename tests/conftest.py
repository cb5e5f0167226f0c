"""Settings every test shares. Area fixtures live in each tests/<area>/conftest.py."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

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


@pytest.fixture(autouse=True)
def _keras_name_scopes_closed() -> Iterator[None]:
    """Each test starts with Keras 3's name-scope stack empty, as in a fresh process.

    Keras 3.15's first eager call of a subclassed model holding a layer that holds another
    leaves the model's scope on the stack (keras/src/backend/common/name_scope.py, the
    ``name_scope_stack`` global): every variable made later in the process gets its name as
    a prefix (``__net/parity/kernel``). The suite's tests share two processes in an order
    that varies, so a scope one test leaked would rename another's variables."""
    yield
    state = sys.modules.get("keras.src.backend.common.global_state")
    if state is not None and state.get_global_attribute("name_scope_stack"):
        state.set_global_attribute("name_scope_stack", [])


def _worker_group(nodeid: str) -> str | None:
    """Which tests share one pytest-xdist worker (``make test`` runs two).

    A module's tests stay together: their module fixtures (a live server, runs traced once)
    are built once and the sweep's scripts are checked in their groups of one process. The UI's
    modules share the session's browser and traced runs. The case pairs and checks go one by
    one: each worker traces the scripts its cases need into its own store."""
    path = nodeid.split("::", 1)[0].removeprefix("tests/")
    if path == "cases/test_cases.py":
        return None
    if path.startswith("ui/"):
        return "ui"
    return path


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Work units of :func:`_worker_group`, the ones with most tests handed out first.

    A scheduler of its own rather than ``--dist loadgroup``: pytest 9.2 no longer takes the
    node id xdist 3.8 rewrites for its ``xdist_group`` marks (xdist/remote.py
    WorkerInteractor.pytest_collection_modifyitems sets ``item._nodeid``)."""
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _worker_group(nodeid) or nodeid

    return ByModule(config, log)
