"""Sweep scripts checked several to a fresh process, each by :func:`check_c.check` (untraced,
then traced, then compared): a process of its own is what tf-keras (``TF_USE_LEGACY_KERAS=1``
before TensorFlow is imported) and two logical CPU devices need, and what keeps the pytest
process small (XLA never unmaps the code it compiles: dozens of compiled models in one process
hold gigabytes and run towards the kernel's ``vm.max_map_count``).

The runner side is :func:`main` (``python -m tests.sweep.check_d`` / ``check_e``, or
``python -m tests.sweep.groups --scripts=MODULE`` for another script module): one
``PROBLEMS name [...]`` JSON line per script on stdout. The test side is :func:`run` (one
process, what it reported) and :class:`Groups` (one test per script, its group checked the
first time one of its scripts is asked for).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the runner processes need no pytest
    import pytest

ROOT = Path(__file__).resolve().parents[2]

NO_RESULT = "no PROBLEMS line"  # start of the problem given to a script its process died in


def main(module: ModuleType, argv: list[str]) -> int:
    """``DB [--stats-every=N] [--flags] SCRIPT...``: check each script of ``module`` against
    the store at DB, in the order given (other flags are the caller's to read)."""
    from . import check_c

    url, names = argv[0], [a for a in argv[1:] if not a.startswith("--")]
    every = [int(a.partition("=")[2]) for a in argv if a.startswith("--stats-every=")]
    for name in names:
        script = getattr(module, name)
        t0 = time.perf_counter()
        try:
            problems = check_c.check(script, url, stats_every=every[-1] if every else 1)
        except Exception as e:  # noqa: BLE001 - reported as the script's problem
            problems = [f"raised {type(e).__name__}: {e}"]
        print(f"PROBLEMS {name} " + json.dumps(problems), flush=True)
        print(f"TIME {name} {time.perf_counter() - t0:.1f}", file=sys.stderr, flush=True)
    print(f"MAXRSS_KB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", file=sys.stderr, flush=True)
    return 0


@dataclass
class Process:
    """What one runner process reported."""

    found: dict[str, list[str]]  # each script's problems, in the order checked
    returncode: int | None  # None: killed at the timeout
    stdout: str
    stderr: str

    def tail(self) -> str:
        how = "timed out" if self.returncode is None else f"exit {self.returncode}"
        return f"runner {how}\n--- stdout ---\n{self.stdout[-3000:]}\n--- stderr ---\n{self.stderr[-5000:]}"


def environment(legacy: bool, env: dict[str, str] | None = None) -> dict[str, str]:
    """A sweep process's environment: tf-keras if ``legacy``, else Keras 3; this process's
    environment (what tests/conftest.py and tests/sweep/conftest.py set: GRADTRACE_STRICT, the
    quiet CPU-only TensorFlow, the flush interval), ``env`` on top."""
    full = dict(os.environ, GRADTRACE_STRICT="1",
                PYTHONPATH=os.pathsep.join(str(ROOT / p) for p in ("tracer", "server", ".")))
    full.setdefault("GRADTRACE_FLUSH_INTERVAL", "0.2")
    full.update(env or {})
    if legacy:
        full["TF_USE_LEGACY_KERAS"] = "1"
    else:
        full.pop("TF_USE_LEGACY_KERAS", None)
    return full


def run(runner: str, names: list[str], db: Path, *, legacy: bool, args: tuple[str, ...] = (),
        env: dict[str, str] | None = None, timeout: float = 900) -> Process:
    """``python -m tests.sweep.<runner> DB *args *names`` in a fresh process (see
    :func:`environment`)."""
    proc = subprocess.Popen([sys.executable, "-m", f"tests.sweep.{runner}", f"sqlite:///{db}", *args, *names],
                            cwd=ROOT, env=environment(legacy, env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        code = None
    found = {}
    for line in out.splitlines():
        if line.startswith("PROBLEMS "):
            name, _, problems = line[len("PROBLEMS "):].partition(" ")
            found[name] = json.loads(problems)
    return Process(found, code, out, err)


def run_all(runner: str, names: list[str], db: Path, **kw) -> dict[str, list[str]]:
    """Each script's problems, all of them checked in one process that must end well."""
    p = run(runner, names, db, **kw)
    assert p.returncode == 0 and sorted(p.found) == sorted(names), p.tail()
    return p.found


def chunks(names: list[str], size: int) -> list[list[str]]:
    """The sorted names in consecutive groups of at most ``size``, as even as can be."""
    names = sorted(names)
    n = max(1, -(-len(names) // size))
    q, r = divmod(len(names), n)
    out, i = [], 0
    for k in range(n):
        j = i + q + (k < r)
        out.append(names[i:j])
        i = j
    return out


class Groups:
    """One test per script, its group (:func:`chunks`) checked in one fresh process the first
    time any of the group's scripts is asked for: those of the group's scripts this session
    selected (``pytest -k one_script`` checks that one), in sorted order. A process that dies
    (or hangs) on a script gives that script the failure and checks the rest of the group in
    a new process, so each failure names its script."""

    def __init__(self, runner: str, names: list[str], tmp: Path, selected: set[str], *, size: int,
                 args: tuple[str, ...] = (), legacy: bool = False, timeout_per_script: float = 300) -> None:
        self.runner, self.args, self.tmp, self.legacy = runner, args, tmp, legacy
        self.timeout_per_script = timeout_per_script
        self.groups = chunks(names, size)
        self.selected = selected
        self._problems: dict[str, list[str]] = {}

    def problems(self, name: str) -> list[str]:
        if name not in self._problems:
            group = next(g for g in self.groups if name in g)
            self._check([n for n in group if n in self.selected or n == name])
        return self._problems[name]

    def _check(self, names: list[str]) -> None:
        todo = list(names)
        while todo:
            db = self.tmp / f"{todo[0]}.db"
            p = run(self.runner, todo, db, args=self.args, legacy=self.legacy,
                    timeout=self.timeout_per_script * len(todo))
            self._problems.update({n: v for n, v in p.found.items() if n in todo})
            done = [n for n in todo if n in p.found]
            todo = [n for n in todo if n not in p.found]
            if todo:  # the process ended without reporting todo[0]: it died (or hung) there
                self._problems[todo.pop(0)] = [f"{NO_RESULT}: {p.tail()}"]
            elif p.returncode != 0:  # every script reported, then the process failed
                self._problems[done[-1]] = self._problems[done[-1]] + [f"after the last script: {p.tail()}"]


def selected(request: pytest.FixtureRequest, test: str, param: str) -> set[str]:
    """The ``__name__`` of parameter ``param`` of each selected item of ``test`` in the
    requesting module."""
    return {item.callspec.params[param].__name__ for item in request.session.items
            if getattr(item, "originalname", None) == test and getattr(item, "module", None) is request.module}


if __name__ == "__main__":  # python -m tests.sweep.groups --scripts=MODULE DB [--stats-every=N] SCRIPT...
    import importlib

    _mod = [a.partition("=")[2] for a in sys.argv[1:] if a.startswith("--scripts=")]
    _args = [a for a in sys.argv[1:] if not a.startswith("--scripts=")]
    sys.exit(main(importlib.import_module(f"{__package__}.{_mod[-1]}"), _args))
