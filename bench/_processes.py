"""Run a benchmark again in fresh processes and collect each one's result.

A benchmark's ratio moves by a few percent from one process to the next while it stays
steady inside one, so ``--repeats N`` runs the same command line N times, each child with
``--repeats 1 --json`` (argparse keeps an option's last value), and reads back the one
``RESULT {json}`` line it prints (:func:`emit`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

_TAG = "RESULT "


def emit(result: dict[str, Any]) -> None:
    """Print a child's result for :func:`in_fresh_processes`."""
    print(_TAG + json.dumps(result), flush=True)


def in_fresh_processes(script: str, repeats: int,
                       show: Callable[[int, dict[str, Any]], None]) -> list[dict[str, Any]]:
    """Run ``script`` with this process's arguments ``repeats`` times, one process each;
    ``show(i, result)`` as each ends. A child that prints no result stops the run."""
    cmd = [sys.executable, script, *sys.argv[1:], "--repeats", "1", "--json"]
    results = []
    for i in range(repeats):
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith(_TAG)), None)
        if line is None:
            raise SystemExit(f"process {i + 1} failed:\n{out.stderr[-2000:]}")
        results.append(json.loads(line[len(_TAG):]))
        show(i, results[-1])
    return results
