"""Compare two traced runs and explain why they diverge.

Example::

    from gradtrace.store import open_store
    from gradtrace.compare import compare, render_text

    report = compare(open_store("sqlite:///gradtrace.db"), "fit", "tape-loop", project="digits")
    print(render_text(report))          # verdict, first divergent step, ranked findings
    report.to_dict()                    # the JSON document of `gradtrace compare --json` and REST

The engine is pure functions over arrays (:func:`compare_runs`, :func:`check_run`
on :class:`RunData`); :mod:`gradtrace.compare.reader` reads those arrays from a
store with SQL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gradtrace.compare.catalogue import CATALOGUE, as_markdown
from gradtrace.compare.data import RunData, from_records
from gradtrace.compare.engine import check_run, compare_runs
from gradtrace.compare.findings import Finding, Report
from gradtrace.compare.report import exit_code, render_text, to_json

if TYPE_CHECKING:
    from gradtrace.store import Store


def compare(store: Store, a: str, b: str, project: str | None = None) -> Report:
    """Resolve two run references in ``store`` and compare them."""
    from gradtrace.compare.reader import read_run

    return compare_runs(read_run(store, a, project), read_run(store, b, project))


def check(store: Store, ref: str, project: str | None = None) -> Report:
    """Single-run findings for the run ``ref``."""
    from gradtrace.compare.reader import read_run

    return check_run(read_run(store, ref, project))


def catalogue() -> list[dict[str, Any]]:
    """The finding catalogue as plain dicts (kind, severity, needs_alignment, trigger, fix)."""
    return [
        {"kind": k.kind, "severity": k.severity, "needs_alignment": k.needs_alignment,
         "trigger": k.trigger, "fix": k.fix}
        for k in CATALOGUE.values()
    ]


__all__ = [
    "CATALOGUE",
    "Finding",
    "Report",
    "RunData",
    "as_markdown",
    "catalogue",
    "check",
    "check_run",
    "compare",
    "compare_runs",
    "exit_code",
    "from_records",
    "render_text",
    "to_json",
]
