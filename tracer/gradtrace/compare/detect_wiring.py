"""Detectors of training-loop wiring mistakes the tracer saw inside a run.

``misapplied_gradient``: ``grads = tape.gradient(loss, vars_a)`` then
``apply_gradients(zip(grads, vars_b))`` with ``vars_b`` the same variables in another
order. The tracer matches each applied gradient to the source the tape computed it for
and keeps the pairs in ``RunInfo.misapplied_gradients``; a defect of the run by itself,
so ``check`` and ``compare`` report it the same way.
"""

from __future__ import annotations

from typing import Any

from gradtrace.compare.data import RunData
from gradtrace.compare.findings import Finding

_SHOWN = 4


def misapplied_gradient(run: RunData, side: str | None = None) -> Finding | None:
    """The run's optimizer got gradients paired with other variables than they were computed for."""
    recs: list[dict[str, Any]] = [r for r in run.meta.get("misapplied_gradients") or []
                                  if isinstance(r, dict) and "applied_to" in r and "computed_for" in r]
    if not recs:
        return None
    pairs = {(int(r["applied_to"]), int(r["computed_for"])) for r in recs}
    # Two variables that got each other's gradient are one swap; the rest are named one way.
    described: list[str] = []
    done: set[tuple[int, int]] = set()
    for a, c in sorted(pairs):
        if (a, c) in done:
            continue
        done.add((a, c))
        if (c, a) in pairs:
            done.add((c, a))
            described.append(f"{run.var_name(a)} and {run.var_name(c)} got each other's gradient")
        else:
            described.append(f"{run.var_name(a)} got the gradient of {run.var_name(c)}")
    steps = sorted({int(r["step"]) for r in recs if r.get("step") is not None})
    modes = sorted({str(r["mode"]) for r in recs if r.get("mode")})
    derived = any(r.get("via") == "derived" for r in recs)
    who = f"run {side} ('{run.name}')" if side else f"run '{run.name}'"
    more = f" (and {len(described) - _SHOWN} more)" if len(described) > _SHOWN else ""
    when = f" from step {steps[0]}" if steps else ""
    summary = (
        f"{who} applies gradients to the wrong variables{when}: {'; '.join(described[:_SHOWN])}{more}. "
        "The list zipped with the gradients in apply_gradients holds the differentiated variables in "
        "another order; their shapes agree, so TensorFlow trained on without an error"
        + (" (the gradients were clipped or rescaled on the way, which keeps their pairing)" if derived else "")
        + ".")
    names = sorted({run.var_name(v) for pair in pairs for v in pair})
    return Finding(
        "misapplied_gradient", summary,
        steps=steps[:1], variables=names,
        evidence={"pairs": [{"applied_to": run.var_name(a), "computed_for": run.var_name(c)}
                            for a, c in sorted(pairs)],
                  "modes": modes, **({"run": side} if side else {})},
        explains=1.0)


def wiring_findings(run: RunData, side: str | None = None) -> list[Finding]:
    """Every wiring finding of one run (``check``; ``compare`` asks each run with its side)."""
    f = misapplied_gradient(run, side)
    return [f] if f else []
