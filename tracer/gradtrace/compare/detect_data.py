"""What the batch fingerprints say beyond "same batch or not".

The tracer fingerprints every batch's inputs and labels as ``[sum, sum of squares,
sum(w * x), count]`` with fixed position weights ``w`` (see
``gradtrace._probes.fingerprint``). Two facts follow from that form:

- Inputs transformed by one affine map ``x' = k * x + c`` (a ``/255`` forgotten or
  applied twice, another normalisation) have fingerprints related by
  ``sum' = k sum + c n``, ``proj' = k proj + c W`` (``W`` the weights' sum over the
  batch's positions) and ``sumsq' = k^2 sumsq + 2 k c sum + c^2 n``: three equations
  per step, two unknowns for the whole run. :func:`input_map` solves them and checks
  every step within the fingerprints' own float noise.
- The optimizer stepping more than once on one batch shows as consecutive steps of
  the same optimizer with the same fingerprints (a train step called again), or as a
  step without a batch of its own that carries the previous step's loss (the same
  gradients applied twice): :func:`repeated_steps`.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

from gradtrace.compare.data import RunData
from gradtrace.compare.findings import Finding

FP_POSITIONS = 1 << 16  # the tracer's projection weighs at most this many positions
# A fingerprint reduction of n float32 values in another order differs by about
# eps * sqrt(n) * sqrt(sum x^2); the margin is the one `align.fingerprints_equal` uses.
_MARGIN = 64.0
_EPS = float(np.finfo(np.float32).eps)


def _fp_weights(idx: np.ndarray) -> np.ndarray:
    """The tracer's projection weights at flat positions ``idx`` (0 from FP_POSITIONS on), as float64."""
    w = ((idx * 7919 + 13) % 10007).astype(np.float32) / np.float32(10007.0) - np.float32(0.5)
    return np.where(idx < FP_POSITIONS, w.astype(np.float64), 0.0)


@lru_cache(maxsize=64)
def _weight_sum(n: int) -> float:
    """The sum of the tracer's projection weights over the first ``n`` positions."""
    return float(_fp_weights(np.arange(min(int(n), FP_POSITIONS), dtype=np.int64)).sum())


def _recorded(fp: np.ndarray) -> np.ndarray:
    return np.isfinite(fp[:, :4]).all(axis=1) if fp.shape[1] >= 4 else np.zeros(len(fp), dtype=bool)


def input_map(fa: np.ndarray, fb: np.ndarray, ya: np.ndarray, yb: np.ndarray) -> dict[str, Any] | None:
    """One affine map ``x_b = k * x_a + c`` that relates the two runs' inputs at every step.

    ``fa``/``fb`` are the input fingerprints of the common steps (rows in step order),
    ``ya``/``yb`` the label fingerprints. Returns ``{"k", "c", "steps", "labels_equal"}``
    when every step both runs fingerprinted has the same number of input values, the
    labels agree wherever both runs recorded them, and one (k, c) reproduces run b's
    fingerprint from run a's at every step within float noise; None otherwise (equal
    inputs included).
    """
    from gradtrace.compare.align import fingerprints_equal

    if fa.shape[1] < 4 or fb.shape[1] < 4:
        return None
    ok = _recorded(fa) & _recorded(fb)
    if not ok.any() or not np.all(fa[ok, 3] == fb[ok, 3]):
        return None
    if fingerprints_equal(fa[ok], fb[ok]).all():
        return None
    ylab = _recorded(ya) & _recorded(yb)
    if ylab.any() and not fingerprints_equal(ya[ylab], yb[ylab]).all():
        return None  # other labels: other examples, not the same ones scaled
    sa, qa, pa, n = (fa[ok, i].astype(np.float64) for i in range(4))
    sb, qb, pb = (fb[ok, i].astype(np.float64) for i in range(3))
    w = np.array([_weight_sum(int(x)) for x in n])

    def fits(k: float, c: float) -> bool:
        root_n = np.sqrt(n)
        tol_s = _MARGIN * _EPS * root_n * (np.sqrt(qb) + abs(k) * np.sqrt(qa) + abs(c) * root_n)
        tol_q = _MARGIN * _EPS * root_n * (qb + k * k * qa + abs(2 * k * c * sa) + c * c * n)
        return bool(np.all(np.abs(sb - (k * sa + c * n)) <= tol_s)
                    and np.all(np.abs(pb - (k * pa + c * w)) <= tol_s)
                    and np.all(np.abs(qb - (k * k * qa + 2 * k * c * sa + c * c * n)) <= tol_q))

    # A pure factor first (three equations per step, one unknown) ...
    den = float(np.sum(sa * sa + pa * pa))
    if den > 0:
        k = float(np.sum(sb * sa + pb * pa) / den)
        if k != 0 and math.isfinite(k) and fits(k, 0.0):
            return {"k": k, "c": 0.0, "steps": int(ok.sum()), "labels_equal": bool(ylab.any())}
    # ... then a factor and an offset, determined by two steps' sums and projections at least.
    if ok.sum() < 2:
        return None
    A = np.concatenate([np.stack([sa, n], axis=1), np.stack([pa, w], axis=1)])
    y = np.concatenate([sb, pb])
    sol, _res, rank, _sv = np.linalg.lstsq(A, y, rcond=None)
    if rank < 2:
        return None
    k, c = (float(v) for v in sol)
    if k == 0 or not (math.isfinite(k) and math.isfinite(c)) or not fits(k, c):
        return None
    return {"k": k, "c": c, "steps": int(ok.sum()), "labels_equal": bool(ylab.any())}


def input_permutation(fa: np.ndarray, fb: np.ndarray, ya: np.ndarray, yb: np.ndarray) -> dict[str, Any] | None:
    """The same input values in another order at every step, with the same labels.

    The fingerprint's sum, sum of squares and count do not depend on the order of the
    values, its weighted sum does. When every step both runs fingerprinted agrees on the
    first three (within float noise), the weighted sums differ at some step, and the labels
    are recorded and equal at every step, each batch holds the same numbers placed
    differently while the labels stay where they were: a multi-input model's inputs given
    in another order (two inputs swapped), features or examples reordered without their
    labels. Returns ``{"steps", "steps_differing"}``; None otherwise.
    """
    from gradtrace.compare.align import fingerprints_equal

    if fa.shape[1] < 4 or fb.shape[1] < 4:
        return None
    ok = _recorded(fa) & _recorded(fb)
    ylab = _recorded(ya) & _recorded(yb)
    if not ok.any() or not ylab.any() or not fingerprints_equal(ya[ylab], yb[ylab]).all():
        return None
    xa, xb = fa[ok], fb[ok]
    if not np.all(xa[:, 3] == xb[:, 3]):
        return None
    # The order-free columns compared alone: the weighted sum set to equal.
    order_free_a, order_free_b = xa[:, :4].copy(), xb[:, :4].copy()
    order_free_b[:, 2] = order_free_a[:, 2]
    if not fingerprints_equal(order_free_a, order_free_b).all():
        return None
    same = fingerprints_equal(xa, xb)
    if same.all():
        return None
    return {"steps": int(ok.sum()), "steps_differing": int((~same).sum())}


def input_transform(fa: np.ndarray, fb: np.ndarray, ya: np.ndarray, yb: np.ndarray) -> dict[str, Any] | None:
    """The same examples at every step, their inputs transformed by no single map.

    When the labels are recorded and equal at every step both runs fingerprinted, and
    they tell the batches apart (not one constant label batch), the runs trained on the
    same examples in the same order. Inputs with the same number of values that differ at
    every step and are related by neither one affine map (:func:`input_map`) nor a
    reordering (:func:`input_permutation`) were then preprocessed differently value by
    value: a per-feature standardisation (scikit-learn's ``StandardScaler``) or min-max
    scaling in one run only, another statistic per column, augmentation in one run. The
    inputs' mean or mean square must differ in the same direction at each of >= 3 steps
    (a transform does that; random draws in both runs do not).
    Returns ``{"steps", "mean_a", "mean_b", "rms_a", "rms_b"}`` (the inputs' mean and
    root mean square at the first step, from the fingerprints); None otherwise.
    """
    from gradtrace.compare.align import fingerprints_equal

    if fa.shape[1] < 4 or fb.shape[1] < 4 or ya.shape[1] < 4 or yb.shape[1] < 4:
        return None
    ok = _recorded(fa) & _recorded(fb)
    ylab = _recorded(ya) & _recorded(yb)
    if ok.sum() < 2 or not ylab[ok].all() or not np.all(fa[ok, 3] == fb[ok, 3]):
        return None
    if not fingerprints_equal(ya[ylab], yb[ylab]).all():
        return None  # other labels: other examples
    yl = ya[ylab]
    if fingerprints_equal(yl[1:], yl[:-1]).all():
        return None  # the labels do not tell the batches apart (one label everywhere)
    if fingerprints_equal(fa[ok], fb[ok]).any():
        return None  # equal somewhere: not one preprocessing applied throughout
    # A transform moves the inputs' moments the same way at every step; random augmentation
    # in both runs (unseeded, other draws) moves them either way (a sign test: all of >= 3
    # steps on one side by chance has probability 2 / 2^steps for each moment).
    cnt = fa[ok, 3].astype(np.float64)
    dm = (fb[ok, 0] - fa[ok, 0]) / cnt
    dq = (fb[ok, 1] - fa[ok, 1]) / cnt
    if ok.sum() < 3 or not any(bool(np.all(d > 0) or np.all(d < 0)) for d in (dm, dq)):
        return None
    first = int(np.flatnonzero(ok)[0])
    n = float(fa[first, 3])
    ma, mb = float(fa[first, 0]) / n, float(fb[first, 0]) / n
    ra, rb = math.sqrt(max(float(fa[first, 1]), 0.0) / n), math.sqrt(max(float(fb[first, 1]), 0.0) / n)
    return {"steps": int(ok.sum()), "mean_a": ma, "mean_b": mb, "rms_a": ra, "rms_b": rb}


def same_examples_reordered(fa: np.ndarray, fb: np.ndarray, ya: np.ndarray, yb: np.ndarray) -> bool:
    """The runs' batches differ, yet over all the steps both fingerprinted they hold the same values.

    Sums, sums of squares and counts add up over batches: when the totals over the steps of
    both the inputs and the labels agree within float noise while the batches differ, the runs
    went through the same examples grouped or ordered differently (one run shuffles). Whole
    epochs are needed for the totals to meet; a part of one says nothing.
    """
    from gradtrace.compare.align import fingerprints_equal

    ok = _recorded(fa) & _recorded(fb) & _recorded(ya) & _recorded(yb)
    if ok.sum() < 2 or fingerprints_equal(fa[ok], fb[ok]).all():
        return False

    def total(fp: np.ndarray) -> np.ndarray:
        t = np.full((1, 4), np.nan)
        t[0, [0, 1, 3]] = fp[ok][:, [0, 1, 3]].astype(np.float64).sum(axis=0)
        return t

    return bool(fingerprints_equal(total(fa), total(fb))[0] and fingerprints_equal(total(ya), total(yb))[0])


def _number(x: float) -> str:
    """A factor as a user wrote it: 16, 0.0039 (1/255)."""
    if abs(x) >= 1 or x == 0:
        return f"{x:.6g}"
    inv = 1.0 / x
    return f"{x:.4g} (= 1/{inv:.6g})" if abs(inv - round(inv)) <= 1e-3 * abs(inv) else f"{x:.4g}"


def describe_map(m: dict[str, Any]) -> dict[str, str]:
    """Words for an input map: which run's inputs are larger, the relation, the fix."""
    k, c = float(m["k"]), float(m["c"])
    # Say it from the run whose inputs are larger: "run b's inputs are 16 x run a's".
    if c == 0.0:
        big, small, f = ("b", "a", k) if abs(k) >= 1 else ("a", "b", 1.0 / k)
        rel = f"run {big}'s inputs are {_number(f)} x run {small}'s"
        what = f"the inputs differ by a constant factor ~{_number(f)}"
        fix = (f"Scale the inputs the same way in both runs: run {big}'s are {_number(f)} times run "
               f"{small}'s (a division such as /255 missing in run {big}, or applied twice in run {small}). "
               "Preprocess in one shared function, or put the scaling in the model "
               f"(`keras.layers.Rescaling(1/{_number(f)})`) so both runs feed the same raw data.")
    else:
        rel = f"run b's inputs are {k:.6g} * x {'-' if c < 0 else '+'} {abs(c):.6g} with x run a's"
        what = "the inputs differ by one affine map (a factor and an offset)"
        fix = ("Normalise the inputs the same way in both runs (the same offset and scale, computed from "
               "the same data: e.g. (x - mean) / std in one run, x / max or min-max scaling in the other "
               "differ by such a map); preprocess in one shared function or in the model "
               "(`keras.layers.Normalization`, `keras.layers.Rescaling`).")
    return {"relation": rel, "what": what, "fix": fix}


def _batch_as_before(run: RunData) -> tuple[np.ndarray, np.ndarray]:
    """``(has, eq)``: the steps that recorded a batch (its input fingerprint, else its labels'),
    and those whose batch equals the step before's (inputs and, where both recorded, labels)."""
    from gradtrace.compare.align import fingerprints_equal

    fp = run.x_fp if _recorded(run.x_fp).any() else run.y_fp
    has = _recorded(fp)
    eq = np.zeros(run.n_steps, dtype=bool)
    eq[1:] = fingerprints_equal(fp[1:], fp[:-1]) & has[1:] & has[:-1]
    yhas = _recorded(run.y_fp)
    if fp is run.x_fp and yhas.any():
        eq[1:] &= fingerprints_equal(run.y_fp[1:], run.y_fp[:-1]) | ~(yhas[1:] & yhas[:-1])
    return has, eq


def repeated_steps(run: RunData) -> dict[str, Any] | None:
    """The optimizer steps ``k > 1`` times on every batch (from some batch on).

    Consecutive steps belong to one batch when the later one has the same input (and
    label) fingerprints, or records no batch of its own and carries exactly the
    earlier step's loss (the same tape's gradients handed to ``apply_gradients``
    again). They count only when the same optimizer stepped again (its iteration
    counter advanced by one; several optimizers taking turns on one batch, a GAN's,
    interleave their counters). Returns the pattern when at least two batches were
    each stepped the same ``k > 1`` times and no batch after the first of them was
    stepped once (batches before it may have been: the repeats start part way), else
    None: full-batch training (one batch, every step) is not a repetition.
    """

    S = run.n_steps
    if S < 4:
        return None
    has, eq = _batch_as_before(run)
    if not has.any():
        return None
    it = run.iterations
    same = np.zeros(S, dtype=bool)  # step i belongs to step i-1's batch
    reused = np.zeros(S, dtype=bool)  # ... without a batch of its own, with its loss
    for i in range(1, S):
        if np.isfinite(it[i]) and np.isfinite(it[i - 1]) and it[i] != it[i - 1] + 1:
            continue  # not the same optimizer's next step
        if eq[i]:
            same[i] = True
        elif not has[i] and math.isfinite(run.loss[i]) and run.loss[i] == run.loss[i - 1] and (
                has[i - 1] or reused[i - 1]):
            same[i] = reused[i] = True
    # Group the steps into batches and count the steps of each (the last may be cut short).
    starts = np.flatnonzero(~same)
    sizes = np.diff(np.append(starts, S))
    full = sizes[:-1] if sizes.size > 1 else sizes
    # From the first batch stepped more than once on: a loop may start stepping again part way
    # (from its second epoch, when a logging call is switched on), after batches stepped once.
    multi = np.flatnonzero(full > 1)
    full = full[int(multi[0]):] if multi.size else full
    if full.size < 2 or full.min() < 2:
        return None
    k = int(np.median(full))
    if not np.all(full == k):
        return None
    first = int(run.step[np.flatnonzero(same)[0]])
    return {"per_batch": k, "batches": int(starts.size), "first_step": first,
            "same_gradients": bool(reused.any()), "steps": S}


def _repeat_words(rep: dict[str, Any]) -> tuple[str, str]:
    """(how the repetition shows, the fix) for a :func:`repeated_steps` pattern."""
    k = rep["per_batch"]
    times = "twice" if k == 2 else f"{k} times"
    if rep["same_gradients"]:
        how = (f"the same gradients were applied {times} per batch (the repeated step had no batch of its "
               "own and carried the previous step's loss: `apply_gradients` called again on them)")
        fix = (f"Call `optimizer.apply_gradients` once per batch (one apply per tape.gradient); applying the "
               f"same gradients {times} takes {times} the step, and an adaptive optimizer's moments and step "
               "count advance as if it had seen more batches.")
    else:
        how = (f"the optimizer stepped {times} on each batch (consecutive steps with the same inputs and "
               "labels: a train step called again on the batch, e.g. to log its loss)")
        fix = ("Call the train step once per batch and keep what it returns (the loss, metrics); calling it "
               "again to read the loss trains on the batch again.")
    return how, fix


def _occasional_words(occ: dict[str, Any]) -> str:
    shown = ", ".join(str(s) for s in occ["steps"]) + (", ..." if occ["repeats"] > len(occ["steps"]) else "")
    return (f"{occ['repeats']} of its {occ['steps_total']} optimizer steps trained again on the batch of the step "
            f"before (consecutive steps with the same inputs and labels, at steps {shown}): a train step called a "
            "second time on some batches, e.g. to log the loss every few batches, which trains on them again")


_OCCASIONAL_FIX = ("Call the train step once per batch and keep the loss it returns for logging; calling it again "
                   "to read the loss trains on that batch a second time.")


def repeated_step_finding(run: RunData) -> Finding | None:
    """``gradtrace check``: a run whose optimizer steps more than once on every batch, or on some."""
    rep = repeated_steps(run)
    if rep is None:
        occ = occasional_repeats(run)
        if occ is None:
            return None
        return Finding(
            "repeated_step", severity="warning", summary=f"{_occasional_words(occ)}.",
            steps=[occ["first_step"]], evidence={"occasional": True, **occ}, fix=_OCCASIONAL_FIX, explains=0.8)
    how, fix = _repeat_words(rep)
    return Finding(
        "repeated_step", severity="warning",
        summary=f"{how}: {rep['steps']} optimizer steps over {rep['batches']} batches, the first repeat at "
        f"step {rep['first_step']}.",
        steps=[rep["first_step"]], evidence=rep, fix=fix, explains=0.8)


def repeated_steps_pair(a: RunData, b: RunData) -> Finding | None:
    """Compare: one run steps ``k`` times per batch, the other a different number of times."""
    ra, rb = repeated_steps(a), repeated_steps(b)
    ka, kb = (r["per_batch"] if r else 1 for r in (ra, rb))
    if ka == kb:
        if ra or rb:
            return None
        oa, ob = occasional_repeats(a), occasional_repeats(b)
        if (oa is None) == (ob is None):
            return None
        side, run, occ = ("a", a, oa) if oa else ("b", b, ob)
        other = "b" if side == "a" else "a"
        return Finding(
            "repeated_step",
            f"in run {side} ('{run.name}') {_occasional_words(occ)}; run {other} steps once per batch. From step "
            f"{occ['first_step']} on run {side}'s steps are not run {other}'s ({a.n_steps} vs {b.n_steps} steps).",
            steps=[occ["first_step"]], evidence={"run": side, "occasional": True, **occ}, fix=_OCCASIONAL_FIX,
            explains=1.0)
    side, run, rep, other_k = ("a", a, ra, kb) if ka > kb else ("b", b, rb, ka)
    if rep is None:
        return None
    how, fix = _repeat_words(rep)
    other = "b" if side == "a" else "a"
    once = "once" if other_k == 1 else f"{other_k} times"
    return Finding(
        "repeated_step",
        f"in run {side} ('{run.name}') {how}; run {other} steps {once} per batch. Run {side} takes "
        f"{rep['steps']} steps over {rep['batches']} batches ({a.n_steps} vs {b.n_steps} steps), so from step "
        f"{rep['first_step']} on its steps are not the other run's.",
        steps=[rep["first_step"]], evidence={"run": side, **rep, "per_batch_other": other_k}, fix=fix,
        explains=1.0)


def occasional_repeats(run: RunData) -> dict[str, Any] | None:
    """Some steps, not all, train again on the batch of the step before: the same optimizer's next
    step (its iteration counter one further) on equal input and label fingerprints. Two such
    repeats at least, in a run where most steps have a batch of their own (a train step called a
    second time on some batches, to log its loss every N batches). The regular pattern (every
    batch stepped k times) is :func:`repeated_steps`'; one batch at every step is full-batch
    training."""

    S = run.n_steps
    if S < 4:
        return None
    has, eq = _batch_as_before(run)
    if int(has.sum()) < 4:
        return None
    it = run.iterations
    nxt = np.ones(S, dtype=bool)
    nxt[1:] = ~(np.isfinite(it[1:]) & np.isfinite(it[:-1])) | (it[1:] == it[:-1] + 1)
    reps = np.flatnonzero(eq & nxt)
    if reps.size < 2 or reps.size > (S - 1) // 2:
        return None
    steps = [int(run.step[i]) for i in reps]
    return {"repeats": int(reps.size), "steps": steps[:12], "first_step": steps[0], "steps_total": S}


def one_batch_every_step(run: RunData) -> dict[str, Any] | None:
    """Every step trained on one batch while the script opened a new iterator over a tf.data
    pipeline of more than one element (known to TensorFlow) at least once per step, the same
    pipeline object each time (``extra.dataset_iterators``):
    ``next(iter(dataset))``, or a ``for`` loop left after its first batch, inside the training
    loop starts the pipeline over and reads its first batch each time. Needs the inputs (and the
    labels, where recorded) equal at every one of eight steps at least. Full-batch training on a
    pipeline of one element, or on arrays, is not this."""
    from gradtrace.compare.align import fingerprints_equal

    S = run.n_steps
    its = (run.meta.get("extra") or {}).get("dataset_iterators") or {}
    most = its.get("batches")
    if S < 8 or int(its.get("opened") or 0) < S or most is None or most in (0, 1):
        return None  # a pipeline of one element, or of a number TensorFlow cannot tell: maybe full-batch
    fp = run.x_fp
    has = _recorded(fp)
    if int(has.sum()) < 8 or int(has.sum()) < S // 2:
        return None
    for f in (fp, run.y_fp):
        rec = _recorded(f)
        if rec.sum() > 1 and not fingerprints_equal(f[rec][1:], np.repeat(f[rec][:1], int(rec.sum()) - 1, axis=0)).all():
            return None
    return {"steps": S, "iterators_opened": int(its["opened"]),
            "pipeline_elements": "infinite" if most == -1 else int(most)}


def one_batch_finding(run: RunData, side: str | None = None) -> Finding | None:
    """``check`` (``side`` None) or one side of ``compare``: :func:`one_batch_every_step`."""
    one = one_batch_every_step(run)
    if one is None:
        return None
    n = one["pipeline_elements"]
    elements = f"a pipeline of {n} elements" if isinstance(n, int) else "a pipeline that repeats forever"
    who = f"run {side} ('{run.name}')" if side else "the run"
    return Finding(
        "repeated_step", severity="error",
        summary=f"{who} trained on one batch at every one of its {one['steps']} steps (the same inputs and "
        f"labels each time), while the script opened {one['iterators_opened']} iterators over {elements}: "
        "`next(iter(dataset))` (or a `for` loop over the dataset left after its first batch) inside the "
        "training loop starts the pipeline over at every step and reads its first batch each time"
        + (", so it never sees the rest of the data the other run trains on." if side else "."),
        steps=[int(run.step[1 if side else 0])], evidence={"one_batch": True, **({"run": side} if side else {}), **one},
        fix="Open the iterator once, before the loop (`it = iter(dataset)`, then `x, y = next(it)` at each step), "
            "or loop over the dataset itself (`for x, y in dataset:`) once per epoch.",
        explains=1.0)


def one_batch_pair(a: RunData, b: RunData) -> Finding | None:
    """Compare: one run trained on one batch at every step, the other did not."""
    fa, fb = one_batch_finding(a, "a"), one_batch_finding(b, "b")
    return fa if fb is None else fb if fa is None else None


# Keras classification losses, by class and by function name: their labels are classes.
CLASS_LOSSES = frozenset({"SparseCategoricalCrossentropy", "CategoricalCrossentropy", "BinaryCrossentropy",
                           "BinaryFocalCrossentropy", "CategoricalFocalCrossentropy", "CategoricalHinge",
                           "Hinge", "SquaredHinge", "sparse_categorical_crossentropy", "categorical_crossentropy",
                           "binary_crossentropy", "binary_focal_crossentropy", "categorical_focal_crossentropy",
                           "categorical_hinge", "hinge", "squared_hinge"})
_MIN_ROWS = 4  # a batch of fewer rows holds one class too often by chance


@lru_cache(maxsize=64)
def _one_hot_projections(rows: int, width: int) -> np.ndarray:
    """The projection of a one-hot batch of ``rows`` rows that all hold class ``c``, for each ``c``:
    the weights' sum over the flat positions ``i * width + c``."""
    idx = np.arange(rows, dtype=np.int64)[:, None] * width + np.arange(width, dtype=np.int64)[None, :]
    return _fp_weights(idx).sum(axis=0)


def _batch_class(fp: np.ndarray, encoding: str, width: int) -> int | None:
    """The one class every row of a batch holds, from its label fingerprint, or None (several
    classes, fewer than :data:`_MIN_ROWS` rows, or labels that are not classes). Integer labels
    (one per row): their variance is zero and the projection is the class times the weights'
    sum. One-hot rows: each sums to one and the projection is the class's column of weights."""
    total, squares, proj, count = (float(v) for v in fp[:4])
    if encoding == "one-hot":
        if width < 2 or count % width:
            return None
        n = int(count) // width
        if n < _MIN_ROWS or abs(total - n) > 1e-3 or abs(squares - n) > 1e-3:
            return None
        cand = _one_hot_projections(n, width)
        c = int(np.argmin(np.abs(cand - proj)))
        tol = _MARGIN * _EPS * max(1.0, math.sqrt(n) * 0.3)
        return c if abs(cand[c] - proj) <= tol else None
    n = int(count)
    if n < _MIN_ROWS:
        return None
    mean = total / n
    c = round(mean)
    tol = _MARGIN * _EPS * max(1.0, abs(total))
    if abs(mean - c) > 1e-4 or abs(squares - c * c * n) > tol * max(1.0, abs(c)):
        return None
    return c if abs(proj - c * _weight_sum(n)) <= tol * max(1.0, math.sqrt(n)) else None


def sorted_by_class(run: RunData, encoding: str | None, label_shape: list[Any] | None) -> dict[str, Any] | None:
    """The run's batches each hold one class, the classes in long runs of consecutive batches:
    the data is sorted (or grouped) by label and never shuffled, so the model sees one class for
    many steps, then the next (it learns the last class it saw and forgets the others).

    Read from the label fingerprints of a classification loss with one label (or one-hot row) per
    example: at least 8 batches of :data:`_MIN_ROWS` rows or more, of which 60 % or more hold a
    single class, and at least two classes each fill 3 or more consecutive batches, which
    together hold 80 % of those single-class batches. Shuffled data with a rare class gives single-class
    batches of the common class only (one class), and the rare class's come alone; a batch of one
    or two rows is one class by chance and does not count."""
    if encoding not in ("sparse", "one-hot", "binary") or not label_shape:
        return None
    if encoding == "one-hot":
        width = label_shape[-1] if len(label_shape) == 2 else None
        if not isinstance(width, int):
            return None
    elif len(label_shape) > 2 or (len(label_shape) == 2 and label_shape[-1] != 1):
        return None  # a label per position (sequences) or several yes/no answers per example
    else:
        width = 1
    rec = _recorded(run.y_fp)
    if int(rec.sum()) < 8:
        return None
    classes = [_batch_class(run.y_fp[i], encoding, width) for i in np.flatnonzero(rec)]
    known = [c for c in classes if c is not None]
    counted = sum(1 for i in np.flatnonzero(rec) if _rows(run.y_fp[i], encoding, width) >= _MIN_ROWS)
    if counted < 8 or len(known) < 0.6 * counted:
        return None
    blocks: list[list[int]] = []  # [class, consecutive batches]
    for c in classes:
        if c is not None and blocks and blocks[-1][0] == c:
            blocks[-1][1] += 1
        else:
            blocks.append([-1 if c is None else c, 1])
    long_ = [(c, k) for c, k in blocks if c != -1 and k >= 3]
    long_classes = sorted({c for c, _ in long_})
    in_long = sum(k for _, k in long_)
    if len(long_classes) < 2 or in_long < 0.8 * len(known):
        return None
    order = []
    for c, _ in long_:
        if not order or order[-1] != c:
            order.append(c)
    return {"batches": counted, "single_class_batches": len(known), "classes": long_classes,
            "class_order": order[:12], "longest_run": max(k for _, k in long_),
            "mean_run": round(in_long / len(long_), 1), "labels": encoding}


def _rows(fp: np.ndarray, encoding: str, width: int) -> int:
    count = float(fp[3])
    return int(count) // width if encoding == "one-hot" and width else int(count)


def sorted_data_finding(run: RunData, encoding: str | None, label_shape: list[Any] | None,
                        side: str | None = None) -> Finding | None:
    """``check`` (``side`` None) or one side of ``compare``: :func:`sorted_by_class`."""
    got = sorted_by_class(run, encoding, label_shape)
    if got is None:
        return None
    who = f"run {side} ('{run.name}')" if side else "the run"
    shown = ", ".join(str(c) for c in got["class_order"]) + (", ..." if len(got["class_order"]) >= 12 else "")
    summary = (f"{who} trained on batches that each hold one class: {got['single_class_batches']} of its "
               f"{got['batches']} batches, in runs of up to {got['longest_run']} consecutive batches of the same "
               f"class (classes in the order {shown}). The data is sorted by label and not shuffled, so the model "
               "fits one class for many steps, then the next, and ends biased towards the last classes it saw.")
    return Finding(
        "unshuffled_data", severity="error" if side else "warning", summary=summary,
        steps=[int(run.step[0])], evidence={**got, **({"run": side} if side else {})},
        fix="Shuffle the examples before batching: `dataset.shuffle(buffer_size=len(x)).batch(...)` with a buffer "
            "as large as the data (a small buffer over sorted data still yields one class at a time), "
            "`np.random.permutation` of the arrays each epoch, or `model.fit(..., shuffle=True)` (its default for "
            "arrays).",
        explains=1.0 if side else 0.8)


def batch_stride(a: RunData, b: RunData) -> dict[str, Any] | None:
    """One run steps on every ``s``-th batch of the other (``s >= 2``).

    Run ``short``'s step ``k`` (k-th row) carries the batch of the other run's row
    ``s * k + o`` for one stride ``s`` and offset ``0 <= o < s``: input fingerprints equal
    (and label fingerprints, where both recorded them) at every row of the short run that
    maps inside the other run (at least three, or every row of a shorter run), and the
    short run's batches are not simply the other run's in step order. Returns ``{"run", "stride", "offset", "matched",
    "steps_other"}`` (the other run's step numbers the first matched rows train on), or None.
    """
    from gradtrace.compare.align import fingerprints_equal

    for side, s_run, l_run in (("b", b, a), ("a", a, b)):
        if s_run.n_steps < 2 or l_run.n_steps < 3:
            continue
        fx_s, fx_l = s_run.x_fp, l_run.x_fp
        if not (_recorded(fx_s).all() and _recorded(fx_l).all()):
            continue
        y_both = bool(_recorded(s_run.y_fp).all() and _recorded(l_run.y_fp).all()
                      and s_run.y_fp.shape[1] >= 4 and np.all(s_run.y_fp[:1, 3] == l_run.y_fp[:1, 3]))
        n_s, n_l = s_run.n_steps, l_run.n_steps
        if fingerprints_equal(fx_s[1:2], fx_l[1:2]).all():
            continue  # the same batches in step order: not a stride
        if fingerprints_equal(fx_l[1:], fx_l[:-1]).any():
            continue  # the other run steps twice on a batch somewhere (full-batch training): ambiguous
        for stride in range(2, 9):
            for off in range(stride):
                rows = np.arange(n_s) * stride + off
                inside = rows < n_l
                if inside.sum() < min(3, n_s):
                    continue
                js = np.flatnonzero(inside)
                same = fingerprints_equal(fx_s[js], fx_l[rows[js]])
                if y_both:
                    same &= fingerprints_equal(s_run.y_fp[js], l_run.y_fp[rows[js]])
                if same.all():
                    return {"run": side, "stride": stride, "offset": off, "matched": int(js.size),
                            "steps_other": [int(l_run.step[r]) for r in rows[js][:6]],
                            "steps_run": [int(s_run.step[j]) for j in js[:6]]}
    return None


def batch_subsequence(a: RunData, b: RunData) -> dict[str, Any] | None:
    """One run's batches are the other's in the same order with some left out.

    Every row of run ``short`` is matched, in order, to a later row of the other run with
    equal input fingerprints (and label fingerprints where both recorded them); the other
    run's rows passed over between the first and the last match are the batches ``short``
    never stepped on (a last, partial batch of every epoch dropped: ``drop_remainder=True``
    or ``range(len(x) // batch)``). At least three rows matched (every row of a shorter
    run), and at least one row skipped. Returns ``{"run", "skipped_steps" (the other run's
    step numbers), "skipped_batch_sizes", "batch_size", "matched"}``, or None.
    """
    from gradtrace.compare.align import fingerprints_equal

    for side, s_run, l_run in (("b", b, a), ("a", a, b)):
        n_s, n_l = s_run.n_steps, l_run.n_steps
        if n_s < 2 or n_l <= n_s:
            continue
        fx_s, fx_l = s_run.x_fp, l_run.x_fp
        if not (_recorded(fx_s).all() and _recorded(fx_l).all()):
            continue
        if fingerprints_equal(fx_l[1:], fx_l[:-1]).any():
            continue  # a batch stepped twice in a row (full-batch training): ambiguous
        y_both = bool(_recorded(s_run.y_fp).all() and _recorded(l_run.y_fp).all()
                      and s_run.y_fp.shape[1] >= 4)
        match, j = [], 0
        for i in range(n_s):
            while j < n_l:
                same = bool(fingerprints_equal(fx_s[i:i + 1], fx_l[j:j + 1])[0])
                if same and y_both:
                    same = bool(fingerprints_equal(s_run.y_fp[i:i + 1], l_run.y_fp[j:j + 1])[0])
                if same:
                    break
                j += 1
            if j >= n_l:
                break
            match.append(j)
            j += 1
        if len(match) < min(3, n_s) or len(match) < n_s and match[-1] < n_l - 1:
            continue  # a row of the short run found nowhere, before the other run ended
        skipped = sorted(set(range(match[0], match[-1] + 1)) - set(match))
        if not skipped:
            continue

        size = l_run.batch_at
        sizes = [size(r) for r in skipped]
        # The other run's rows after the short run's last step are skipped too when they look like
        # the ones skipped in between (a last epoch's partial batch): no more of them in a row than
        # were skipped in a row before, each of a size skipped before. More rows, or other sizes,
        # are a run that trained longer.
        tail = list(range(match[-1] + 1, n_l)) if len(match) == n_s else []
        longest = run_len = 1
        for prev, cur in zip(skipped, skipped[1:], strict=False):
            run_len = run_len + 1 if cur == prev + 1 else 1
            longest = max(longest, run_len)
        known = {x for x in sizes if math.isfinite(x)}
        if tail and len(tail) <= longest and known and all(size(r) in known for r in tail):
            skipped += tail
            sizes += [size(r) for r in tail]
        full = l_run.batch_at(match[0])
        return {"run": side, "skipped_steps": [int(l_run.step[r]) for r in skipped][:12],
                "skipped_count": len(skipped),
                "skipped_batch_sizes": sorted({int(x) for x in sizes if math.isfinite(x)}),
                "batch_size": int(full) if math.isfinite(full) else None, "matched": len(match),
                "first_short_step": int(s_run.step[next((i for i, r in enumerate(match) if r != i), 0)])}
    return None


def skipped_batches_finding(a: RunData, b: RunData) -> Finding | None:
    """Compare: one run's optimizer steps on every ``s``-th of the other run's batches, or on
    the other's batches with some left out (a partial last batch of each epoch)."""
    st = batch_stride(a, b)
    if st is None:
        sub = batch_subsequence(a, b)
        return None if sub is None else _subsequence_finding(a, b, sub)
    side, s, o = st["run"], st["stride"], st["offset"]
    other = "b" if side == "a" else "a"
    run = a if side == "a" else b
    nth = {2: "2nd", 3: "3rd"}.get(s, f"{s}th")
    mine = ", ".join(str(x) for x in st["steps_run"])
    theirs = ", ".join(str(x) for x in st["steps_other"])
    how = (f"the batches in between are drawn but never update its model: an `apply_gradients` under a condition "
           f"(`if i % {s} == {o}`) that drops the other batches' gradients instead of accumulating them, or a loop "
           f"that takes {s} batches per step")
    if o == s - 1:
        how += (f"; or it accumulates {s} micro-batches by hand and applies once (a step records its last "
                "micro-batch)")
    first = int(run.step[1]) if run.n_steps > 1 else int(run.step[0])
    return Finding(
        "skipped_batches",
        f"run {side} ('{run.name}') steps on every {nth} batch of run {other}: its steps {mine} train on the "
        f"batches run {other} steps on at its steps {theirs} (inputs and labels fingerprinted equal; "
        f"{a.n_steps} vs {b.n_steps} steps), so {how}.",
        steps=[first], evidence={**st, "steps_a": a.n_steps, "steps_b": b.n_steps},
        fix=(f"Apply the gradients of every batch (`apply_gradients` once per batch). To update once per {s} "
             f"batches on purpose, accumulate: sum the {s} batches' gradients, divide by {s}, then apply (or "
             f"`gradient_accumulation_steps={s}` on a Keras 3 optimizer), and compare it with a run whose batches "
             f"are {s} times larger."),
        explains=1.0)


def _subsequence_finding(a: RunData, b: RunData, sub: dict[str, Any]) -> Finding:
    side = sub["run"]
    other = "b" if side == "a" else "a"
    run = a if side == "a" else b
    steps = ", ".join(str(x) for x in sub["skipped_steps"][:8]) + (" ..." if sub["skipped_count"] > 8 else "")
    partial = bool(sub["skipped_batch_sizes"] and sub["batch_size"]
                   and max(sub["skipped_batch_sizes"]) < sub["batch_size"])
    if partial:
        how = (f"every batch it skips is smaller than the others ({', '.join(map(str, sub['skipped_batch_sizes']))} "
               f"examples against {sub['batch_size']}): run {side} drops the last, partial batch of each epoch "
               "(`ds.batch(n, drop_remainder=True)`, or a loop over `len(x) // batch` batches) while run "
               f"{other} trains on it" + (" (fit() keeps it)" if (b if side == "a" else a).meta.get("fit") else ""))
        fix = (f"Keep the partial last batch in run {side} (`drop_remainder=False`, or loop over "
               "`math.ceil(len(x) / batch)` batches), or drop it in both runs (a number of examples divisible by the "
               "batch size).")
    else:
        how = (f"run {side} never steps on those batches (an apply under a condition, or batches filtered out "
               "in one pipeline only)")
        fix = f"Step on the same batches in both runs: apply the gradients of every batch in run {side}."
    return Finding(
        "skipped_batches",
        f"run {side} ('{run.name}') steps on run {other}'s batches in the same order but leaves "
        f"{sub['skipped_count']} of them out (run {other}'s steps {steps}; {a.n_steps} vs {b.n_steps} steps, "
        f"inputs and labels fingerprinted equal otherwise): {how}. From run {side}'s step "
        f"{sub['first_short_step']} on the runs train on different batches.",
        steps=[sub["first_short_step"]], evidence=sub, fix=fix, explains=1.0)
