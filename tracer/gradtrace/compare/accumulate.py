"""Gradient accumulation in one run's optimizer, by hand in the other: compare the updates.

Keras 3's ``optimizer(gradient_accumulation_steps=n)`` is called on every micro-batch
(one recorded step each) and changes the weights on every ``n``-th, with the mean of the
``n`` accumulated gradients. A loop that accumulates by hand records one step per update.
The two trainings are the same when the loop averages what it sums, but their step
numbers do not line up one to one: run ``a``'s step ``k * n + n - 1`` is run ``b``'s
step ``k``.

:func:`accumulation_view` returns the accumulating run restricted to its updating steps,
renumbered ``0, 1, 2, ...``, when the batch fingerprints say those steps saw the other
run's batches (the micro-batch on which the update happened); the comparison then runs
on the updates. Gradients are recorded where each run hands them over: the last
micro-batch's in the optimizer, the averaged sum in the loop, so equal updates with
unequal gradients are the same training (the engine's same-updates rule).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from gradtrace.compare.data import VAR_ROW_COLS, RunData

_PER_STEP = ("step", "loss", "reg_loss", "lr", "loss_scale", "batch_size", "iterations", "skipped", "x_fp",
             "y_fp", "grad_norm", "nonfinite_step", "n_applied", "n_grad", "stats")
_PER_ROW = VAR_ROW_COLS


def accumulation_steps(run: RunData) -> int | None:
    """``gradient_accumulation_steps`` of a run's single optimizer (None when not > 1)."""
    from gradtrace.compare.detect_pair import _opt_settings, _optimizers

    opts = _optimizers(run)
    if len(opts) != 1:
        return None
    n = _opt_settings(opts[0]).get("gradient_accumulation_steps")
    return int(n) if isinstance(n, (int, float)) and not isinstance(n, bool) and n > 1 else None


def _update_view(run: RunData, n: int) -> RunData:
    keep = (run.step + 1) % n == 0
    fields: dict[str, Any] = {}
    for name in _PER_STEP:
        arr = getattr(run, name)
        fields[name] = arr[keep] if arr is not None and len(arr) == len(keep) else arr
    fields["step"] = run.step[keep] // n
    rows = (run.var_rows + 1) % n == 0
    fields["var_rows"] = run.var_rows[rows] // n
    for name in _PER_ROW:
        fields[name] = getattr(run, name)[rows]
    sk = (run.sketch_steps + 1) % n == 0
    fields["sketch_steps"] = run.sketch_steps[sk] // n
    fields["sketch"] = run.sketch[sk]
    fields["loss_info"] = {int(s) // n: v for s, v in run.loss_info.items() if (int(s) + 1) % n == 0}
    loader = run.loader
    if loader is not None:
        def view_loader(lo: int, hi: int) -> dict[str, np.ndarray]:
            got = loader(lo * n, hi * n)
            sel = (got["steps"] + 1) % n == 0
            out = {k: v[sel] for k, v in got.items()}
            out["steps"] = got["steps"][sel] // n
            return out

        fields["loader"] = view_loader
    meta = dict(run.meta)
    meta["accumulation_view"] = {"gradient_accumulation_steps": n, "micro_steps": run.n_steps}
    fields["meta"] = meta
    return replace(run, **fields)


def _merged_view(run: RunData, n: int) -> RunData | None:
    """Each group of ``n`` micro-batch steps as one step: the batch is their union.

    Sums, sums of squares and counts of the micro-batches' fingerprints add up to the
    union's (the position-weighted sum does not: it is left unknown); the loss is the
    micro-batch losses' mean weighted by their sizes; everything else is the updating
    (last) micro-step's. None when a group is incomplete or sizes are unknown.
    """
    groups = len(run.step) // n
    if not groups or not np.array_equal(run.step[: groups * n], np.arange(groups * n)):
        return None
    view = _update_view(run, n)
    m = min(view.n_steps, groups)
    if view.n_steps != m:
        return None
    sizes = run.batch_size[: groups * n].reshape(groups, n)
    if not np.isfinite(sizes).all():
        return None
    losses = run.loss[: groups * n].reshape(groups, n)
    view.loss = (losses * sizes).sum(axis=1) / sizes.sum(axis=1)
    view.batch_size = sizes.sum(axis=1)
    for name in ("x_fp", "y_fp"):
        fp = getattr(run, name)[: groups * n].reshape(groups, n, -1)
        out = np.full((groups, fp.shape[2]), np.nan)
        out[:, [0, 1, 3]] = fp[:, :, [0, 1, 3]].sum(axis=1)
        setattr(view, name, out)
    view.meta = {**view.meta, "accumulation_view": {**view.meta["accumulation_view"], "merged": True}}
    return view


def _order_free(run: RunData) -> RunData:
    """The run with its fingerprints' position-weighted sums unknown (compared to a union)."""
    x, y = run.x_fp.copy(), run.y_fp.copy()
    x[:, 2] = np.nan
    y[:, 2] = np.nan
    return replace(run, x_fp=x, y_fp=y)


def _first_batch_equal(view: RunData, other: RunData) -> bool:
    from gradtrace.compare.align import fingerprints_equal

    fps = [(view.x_fp[:1], other.x_fp[:1]), (view.y_fp[:1], other.y_fp[:1])]
    known = [(x, y) for x, y in fps if not np.isnan(x[:, 0]).all() and not np.isnan(y[:, 0]).all()]
    return bool(known) and all(bool(fingerprints_equal(x, y)[0]) for x, y in known)


def accumulation_view(a: RunData, b: RunData) -> tuple[RunData, RunData, dict[str, Any] | None]:
    """``(a, b, None)``, or the runs with the accumulating one seen at its updates and what was done.

    Only when exactly one run's optimizer accumulates (``n > 1``), its micro-step count is
    ``n`` times the other's step count (the last update possibly cut short), and its first
    updating step saw the other run's first batch (input or label fingerprints equal), or
    its first ``n`` micro-batches together are the other run's first batch (a batch ``n``
    times larger: compared on the merged micro-batches, see :func:`_merged_view`).
    """
    na, nb = accumulation_steps(a), accumulation_steps(b)
    if (na is None) == (nb is None):
        return a, b, None
    side, run, other, n = ("a", a, b, na) if na else ("b", b, a, nb)
    assert n is not None
    if not run.n_steps or not other.n_steps or abs(run.n_steps // n - other.n_steps) > 1:
        return a, b, None
    view = _update_view(run, n)
    if not view.n_steps or int(view.step[0]) != 0 or int(other.step[0]) != 0:
        return a, b, None
    merged = False
    if not _first_batch_equal(view, other):
        # The other run's batch may be the union of the micro-batches (batch_size n x larger).
        view = _merged_view(run, n)  # type: ignore[assignment]
        other = _order_free(other)
        if view is None or not _first_batch_equal(view, other):
            return a, b, None
        merged = True
    info = {"run": side, "gradient_accumulation_steps": n, "micro_steps": run.n_steps,
            "updates": view.n_steps, "merged": merged}
    return (view, other, info) if side == "a" else (other, view, info)
