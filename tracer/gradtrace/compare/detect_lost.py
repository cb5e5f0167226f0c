"""Records the tracer could not keep (a run's ``lost`` counts): a finding of ``gradtrace check``.

A run that lost steps was judged on the steps it kept; the finding says how many
were lost, why, and which setting avoids it, so a clean-looking report of a
partial recording is not mistaken for a clean run.
"""

from __future__ import annotations

from gradtrace._config import lost_hint, lost_steps
from gradtrace.compare.data import RunData
from gradtrace.compare.findings import Finding


def lost_records(run: RunData) -> list[Finding]:
    """One ``lost_records`` warning when the run counted lost records (steps or full tensors)."""
    lost = {k: int(v) for k, v in (run.meta.get("lost") or {}).items() if v}
    if not lost:
        return []
    steps = lost_steps(lost)
    n_steps = sum(steps.values())
    n_tensors = sum(lost.values()) - n_steps
    parts = ", ".join(f"{k} {v}" for k, v in sorted(lost.items(), key=lambda kv: -kv[1]))
    what = []
    if n_steps:
        what.append(f"{n_steps} of {n_steps + run.n_steps} optimizer steps")
    if n_tensors:
        what.append(f"{n_tensors} full tensors")
    return [Finding(
        "lost_records",
        f"{' and '.join(what)} were not recorded ({parts}); the other findings rest on the "
        f"{run.n_steps} recorded steps.",
        evidence={"lost": lost, "lost_steps": n_steps, "recorded_steps": run.n_steps},
        fix="; ".join(f"{k}: {lost_hint(k)}" for k in sorted(lost, key=lambda k: -lost[k])),
        explains=0.2,
    )]
