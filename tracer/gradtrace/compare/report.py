"""Render a :class:`~gradtrace.compare.findings.Report` for a terminal."""

from __future__ import annotations

import json
import textwrap
from typing import Any

from gradtrace.compare.findings import Report

_MARK = {"error": "ERROR", "warning": "WARN ", "info": "info "}
_EXIT = {"equivalent": 0, "diverged": 1, "not_comparable": 1}


def exit_code(report: Report | dict[str, Any]) -> int:
    """0 equivalent, 1 diverged (or not comparable): usable in CI."""
    verdict = report["verdict"] if isinstance(report, dict) else report.verdict
    return _EXIT[verdict]


def to_json(report: Report | dict[str, Any]) -> str:
    """The report document as indented JSON (NaN/Inf as strings)."""
    d = report if isinstance(report, dict) else report.to_dict()
    return json.dumps(d, indent=2, allow_nan=False)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        items = [_fmt(x) for x in list(v)[:6]]
        return "[" + ", ".join(items) + (", ..." if len(v) > 6 else "") + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in list(v.items())[:6]) + "}"
    return str(v)


def _as_far_as(d: dict[str, Any]) -> str:
    """Runs whose steps agree until their batches part: say how far they agree."""
    if d["verdict"] == "diverged" and d["first_divergent_step"] is None and d.get("aligned_steps"):
        # a setting that changes what the runs report (a metric's class), not how they train
        return (f" (the training agrees at every one of the {d['aligned_steps']} aligned steps: the findings below "
                "differ in what the runs report or how they are set up)")
    if d["verdict"] != "not_comparable":
        return ""
    if not (d["a"].get("steps") and (d["b"] or {}).get("steps")) and d.get("skipped"):
        return ": " + str(d["skipped"][0]["why"])  # a run without steps: why, where it is read first
    dm = next((f for f in d["findings"] if f["kind"] == "data_mismatch"), None)
    first = (dm or {}).get("evidence", {}).get("first_step")
    if not isinstance(first, int) or first <= 0 or not d.get("aligned_steps"):
        return ""
    return (f" after step {first - 1} (steps 0 to {first - 1} are equivalent; the runs saw other batches from step "
            f"{first} on, so their models differ: see data_mismatch)")


def render_text(report: Report | dict[str, Any], *, verbose: bool = False) -> str:
    """The human summary: verdict, first divergent step, ranked findings with evidence and fix.

    Accepts a :class:`Report` or its JSON document (as returned by the REST API).
    """
    d = report if isinstance(report, dict) else report.to_dict()
    lines = []
    a, b = d["a"], d["b"]
    def state(r: dict[str, Any]) -> str:  # a run that did not finish says so
        st = r.get("status")
        return f", {st}" if st not in (None, "finished") else ""

    if b:
        lines.append(f"compare  a = {a['name']} ({a['id']}, {a['steps']} steps{state(a)})")
        lines.append(f"         b = {b['name']} ({b['id']}, {b['steps']} steps{state(b)})")
    else:
        lines.append(f"check  {a['name']} ({a['id']}, {a['steps']} steps{state(a)})")
    lines.append("")
    if b:
        lines.append(f"verdict: {d['verdict'].upper()}" + _as_far_as(d))
    else:
        result = {"equivalent": "OK (no single-run findings)",
                  "not_comparable": "NOTHING TO CHECK: no optimizer step recorded (exit code 1)" if not a["steps"]
                  else "INCOMPLETE: the run failed; no findings in the steps it recorded (exit code 1)"}
        lines.append("result: " + result.get(d["verdict"], "FINDINGS (exit code 1)"))
        if d["verdict"] == "not_comparable" and d["skipped"]:
            lines += textwrap.wrap("why: " + d["skipped"][0]["why"], 96, subsequent_indent="     ")
    if d["first_divergent_step"] is not None:
        # One run diverges from nothing: its step is where the first finding is.
        what = "first divergent step" if b else "first finding at step"
        k = d["first_divergent_step"]
        steps = (d.get("a") or {}).get("steps")
        after = not b and isinstance(steps, int) and k >= steps > 0  # said of what follows the last step
        lines.append(f"{what}: {k}" + (f" (after the run's last step, {steps - 1})" if after else ""))
    if b:
        lines.append(f"aligned steps: {d['aligned_steps']}")
    noise = d.get("noise") or {}
    if noise.get("step0_rel_tolerance") is not None:
        obs = noise.get("step0_loss_rel_diff")
        lines.append(
            f"float noise: step-0 tolerance {noise['step0_rel_tolerance']:.2g} (relative, {noise['how']})"
            + (f"; observed step-0 loss difference {obs:.2g}" if isinstance(obs, float) else ""))
    lines.append("")
    if not d["findings"]:
        lines.append("no findings.")
    for i, f in enumerate(d["findings"], 1):
        if f["severity"] == "info" and not verbose and d["verdict"] != "equivalent":
            continue
        lines.append(f"{i}. [{_MARK[f['severity']]}] {f['kind']}")
        lines += textwrap.wrap(f["summary"], 96, initial_indent="   ", subsequent_indent="   ")
        for key in ("layers", "variables"):
            if f[key]:
                more = len(f[key]) - 8
                lines.append(f"   {key}: " + ", ".join(f[key][:8]) + (f", ... ({more} more)" if more > 0 else ""))
        shown = 0
        for k, v in f["evidence"].items():
            if k in ("step0_variables", "step_evidence") and not verbose:
                continue
            if v is None or (isinstance(v, list | dict | str) and not v):
                continue  # nothing measured under that name
            lines.append(f"   - {k}: {_fmt(v)}")
            shown += 1
            if shown >= (20 if verbose else 6):
                break
        lines += textwrap.wrap("fix: " + (f["fix"] or ""), 96, initial_indent="   ", subsequent_indent="        ")
        lines.append("")
    if d["skipped"] and b:
        why: dict[str, list[str]] = {}
        for s in d["skipped"]:
            why.setdefault(s["why"], []).append(s["check"])
        for reason, checks in why.items():
            lines.append(f"skipped ({reason}): {', '.join(checks)}")
    return "\n".join(lines).rstrip() + "\n"
