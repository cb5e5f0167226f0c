"""Detectors over aligned steps: step 0 as the witness, then the first departure.

With the same weights and the same batch, two runs' loss, gradients and updates
either agree within float noise or differ in an exact algebraic way: a constant
factor that matches something the code did (number of outputs, batch size,
replicas, a loss scale, a learning rate), a gap equal to the regularization sum,
gradients that point elsewhere. When runs are not aligned, only the scale of
losses and gradients *in distribution* is compared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradtrace.compare import detect_run as dr
from gradtrace.compare import manual
from gradtrace.compare.align import Alignment
from gradtrace.compare.catalogue import get
from gradtrace.compare.data import RunData, first_batch
from gradtrace.compare.findings import Finding
from gradtrace.compare.noise import JUMP, _n_outputs, rel

# Adaptive optimizers divide by a running RMS of the gradient: a constant factor on
# the gradient cancels (up to epsilon) in their first update.
_NORMALISING = ("adam", "rmsprop", "adagrad", "adadelta", "adafactor", "nadam", "lion", "ftrl")


@dataclass
class Step0:
    """What step 0 shows, in numbers (the evidence of every step-0 finding)."""

    step: int  # the witness: the first step both runs recorded
    row_a: int
    row_b: int
    loss_a: float
    loss_b: float
    loss_rel: float
    ratios: np.ndarray  # per paired variable: norm_a / norm_b (nan where no gradient)
    norm_rel: np.ndarray
    cos: np.ndarray | None  # sketch cosines, None when no sketch was recorded
    update_ratio: np.ndarray
    update_rel: np.ndarray
    names: list[str]
    negligible: np.ndarray  # gradients at the float noise floor of the step (e.g. a bias before BN)

    def evidence(self) -> dict[str, Any]:
        ev: dict[str, Any] = {
            "witness_step": self.step,
            "step0_loss_a": self.loss_a,
            "step0_loss_b": self.loss_b,
            "step0_loss_rel_diff": self.loss_rel,
        }
        per = []
        for i, n in enumerate(self.names[:12]):
            row = {"variable": n, "grad_norm_ratio": self.ratios[i], "update_norm_ratio": self.update_ratio[i]}
            if self.cos is not None:
                row["grad_cosine"] = self.cos[i]
            per.append(row)
        ev["step0_variables"] = per
        return ev


def _cos(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        num = np.nansum(x.astype(np.float64) * y, axis=-1)
        den = np.sqrt(np.nansum(x.astype(np.float64) ** 2, axis=-1) * np.nansum(y.astype(np.float64) ** 2, axis=-1))
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def step0(a: RunData, b: RunData, al: Alignment) -> Step0 | None:
    ja, jb = al.ja, al.jb
    s0 = int(a.step[al.ia[0]])
    ia, ib = int(al.ia[0]), int(al.ib[0])
    ra, rb = int(a.rows(np.array([s0]))[0]), int(b.rows(np.array([s0]))[0])
    if ra < 0 or rb < 0:
        return None
    na, nb = a.norm[ra, ja], b.norm[rb, jb]
    ua, ub = a.update_norm[ra, ja], b.update_norm[rb, jb]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = na / nb
        uratio = ua / ub
    cos = None
    ka, kb = np.flatnonzero(a.sketch_steps == s0), np.flatnonzero(b.sketch_steps == s0)
    if (a.sketch.shape[-1] and a.sketch.shape[-1] == b.sketch.shape[-1] and ka.size and kb.size):
        cos = _cos(a.sketch[ka[0]][ja], b.sketch[kb[0]][jb])
    return Step0(
        step=s0, row_a=ia, row_b=ib, negligible=negligible_grads(na, nb, a.grad_norm[ia], b.grad_norm[ib], al),
        loss_a=float(a.loss[ia]), loss_b=float(b.loss[ib]), loss_rel=float(rel(a.loss[ia], b.loss[ib])),
        ratios=ratios, norm_rel=rel(na, nb), cos=cos, update_ratio=uratio, update_rel=rel(ua, ub),
        names=[a.var_name(int(a.var_index[j])) for j in ja],
    )


def negligible_grads(na: Any, nb: Any, ga: Any, gb: Any, al: Alignment) -> np.ndarray:
    """Gradients at the float noise floor of their step in both runs.

    A variable whose gradient is mathematically zero (a Dense bias feeding a
    BatchNormalization) carries only rounding noise, about ``tolerance x`` the
    step's global gradient norm; its direction and ratio mean nothing.
    """
    floor = al.noise.tol0 * np.maximum(np.nan_to_num(ga, nan=0.0), np.nan_to_num(gb, nan=0.0))
    floor = np.asarray(floor)[..., None] if np.ndim(floor) and np.ndim(na) > np.ndim(floor) else floor
    return (np.nan_to_num(np.asarray(na), nan=0.0) <= floor) & (np.nan_to_num(np.asarray(nb), nan=0.0) <= floor)


# Factors with these meanings follow each batch (its weights or mask), not a constant.
_PER_BATCH_FACTORS = ("the mask's valid fraction", "batch/sum(sample weights)")

# Factors with these meanings are a difference in how the loss is reduced: they show in the loss.
_LOSS_ONLY_FACTORS = ("the number of outputs", "batch size x outputs", "the number of the model's outputs",
                      "the mask's valid fraction", "batch/sum(sample weights)")

# A factor with this meaning is the runs' learning rates' ratio (a loss factor moved into the rate).
LR_RATIO = "the ratio of the runs' learning rates ("

# A factor with this meaning is a mixed-precision loss scale left in the gradients.
NOT_UNSCALED = "a scaled loss whose gradients were not unscaled (the loss scale "


def candidate_factors(a: RunData, b: RunData, steps: tuple[int, int] | None = None) -> dict[str, float]:
    """Constants a loss or gradient factor between two runs could equal, and what each means.

    ``steps`` (the witness step of run a and of run b) adds the per-batch denominators the
    runs' Keras losses recorded there: batch/sum(sample weights) and a mask's valid fraction.
    """
    out: dict[str, float] = {}
    if steps is not None:
        out.update(_denominator_factors(a, b, steps))
    rates = [run.lr[np.isfinite(run.lr)] for run in (a, b)]
    if all(r.size and r[0] > 0 for r in rates) and rel(float(rates[0][0]), float(rates[1][0])) > 1e-6:
        # first: where the rates differ by the loss factor, the factor was moved between them
        out[f"{LR_RATIO}{float(rates[0][0]):g} vs {float(rates[1][0]):g}): the loss multiplied by a constant "
            "and the learning rate divided by it in one run"] = float(rates[0][0] / rates[1][0])
    nout = max(_n_outputs(a), _n_outputs(b))
    batch = first_batch(a, b, 0)
    losses = max(_n_output_losses(a), _n_output_losses(b))
    if losses > 1:  # before the last axis: the same count there is more likely this
        out[f"the number of the model's outputs ({losses}, each with its own loss): the outputs' losses "
            "averaged in one run and summed in the other (fit() sums them, each weighted by its "
            "loss_weights)"] = float(losses)
    if nout > 1:
        out["the number of outputs: a mean over the last axis (as Keras `mse`/`mae` compute per sample) "
            "against a sum over it"] = float(nout)
    if batch > 1:
        out["the batch size: a sum over the batch against a mean (or a per-sample loss vector handed "
            "to tape.gradient, which sums it)"] = float(batch)
    if batch > 1 and nout > 1:
        out["batch size x outputs: a sum over every element against a mean over every element"] = float(batch * nout)
    reps = max(int(a.meta.get("replicas") or 1), int(b.meta.get("replicas") or 1))
    if reps > 1:
        out["the replica count: a loss averaged per replica and summed across replicas (or not)"] = float(reps)
    scales = []
    for name, run in (("a", a), ("b", b)):
        ls = run.loss_scale[np.isfinite(run.loss_scale) & (run.loss_scale != 1.0)]
        if ls.size and float(ls[0]) not in scales:
            scales.append(float(ls[0]))
            out[NOT_UNSCALED + f"{float(ls[0]):g}, the loss scale run {name} applies)"] = float(ls[0])
    if 2.0**15 not in scales:
        out[NOT_UNSCALED + "2^15, the default initial mixed-precision loss scale)"] = 2.0**15
    for run in (a, b):
        lr = run.lr[np.isfinite(run.lr)]
        if lr.size and lr[0] > 0 and lr[0] != 1:
            out["the learning rate: a learning rate folded into the loss"] = float(1.0 / lr[0])
            break
    return out


def _n_output_losses(run: RunData) -> int:
    """How many Keras loss calls the first step's loss handed to tape.gradient adds up (one per output
    of a multi-output model, fit()'s or a loop's), from its loss details; 1 when not recorded."""
    info = run.loss_info[min(run.loss_info)] if run.loss_info else {}
    calls = [c for c in (info.get("calls") or []) if isinstance(c, dict) and c.get("in_target") is not False]
    return max(len(calls), 1)


def _denominator_factors(a: RunData, b: RunData, steps: tuple[int, int]) -> dict[str, float]:
    """Factors from what a Keras loss divided by at the witness step (recorded per step)."""
    out: dict[str, float] = {}
    for side, run, step in (("a", a, steps[0]), ("b", b, steps[1])):
        info = run.loss_info.get(step) or {}
        n = info.get("per_sample_count") or info.get("weight_count")
        wsum = info.get("weight_sum")
        if n and wsum and math.isfinite(wsum) and wsum > 0 and rel(n, wsum) > 1e-6:
            out[f"batch/sum(sample weights) of this batch ({n}/{wsum:.6g}, recorded in run {side}): a Keras "
                "loss divides the weighted sum by the number of samples, a hand-written one often by "
                "sum(weights)"] = float(n) / float(wsum)
        valid, total = info.get("mask_valid"), info.get("mask_count")
        if valid and total and valid != total:
            out[f"the mask's valid fraction in this batch ({valid} of {total} entries, recorded in run "
                f"{side}): a Keras loss divides by the valid entries, `reduce_mean(loss * mask)` by all "
                "of them"] = float(total) / float(valid)
    return out


def _divisor_fix(div: dict[str, Any]) -> str:
    """The concrete change for a per-example loss summed and divided by a count not the batch's."""
    n = div["batch"]
    return (f"Divide by the examples the step trains on: in run {div['run']}, "
            f"`tf.nn.compute_average_loss(per_example_loss, global_batch_size={n})` (the batch across all "
            f"replicas: the per-replica batch x `strategy.num_replicas_in_sync`), or "
            f"`tf.reduce_sum(per_example_loss) / {n}`, or leave global_batch_size out to divide by the batch.")


def _normalising(run: RunData) -> bool:
    """The run's optimizer divides its updates by a running gradient scale (Adam, RMSprop, ...)."""
    cls = str((run.meta.get("optimizer") or {}).get("class") or "").lower()
    return any(k in cls for k in _NORMALISING)


def _loss_scale_fix(meaning: str | None, normalising: bool = False) -> str:
    """The concrete change for a matched loss factor (``normalising``: the optimizer is adaptive)."""
    head = "Reduce the loss the same way in both runs: "
    if meaning is None:
        return head + "divide by the same count."
    if meaning.startswith("batch/sum(sample weights)"):
        return head + ("divide the weighted sum by the number of samples as a Keras loss does "
                       "(`tf.reduce_sum(loss * w) / tf.cast(tf.size(loss), loss.dtype)`), or call the same "
                       "Keras loss object with `sample_weight=w` in both.")
    if meaning.startswith("the number of the model's outputs"):
        return head + ("add the outputs' losses up as fit() does (`loss = sum(w * l for w, l in zip(loss_weights, "
                       "output_losses))`) instead of averaging them, or average them in both runs (and so in "
                       "compile(loss_weights=...), each weight divided by the number of outputs).")
    if meaning.startswith("the mask's valid fraction"):
        return head + ("divide by the number of valid entries as a Keras loss does with a mask "
                       "(`tf.reduce_sum(loss * mask) / tf.reduce_sum(mask)`), or call the same Keras loss "
                       "object on the masked predictions in both.")
    if meaning.startswith(LR_RATIO) and normalising:
        return ("Use the same learning rate and the same loss in both runs: an adaptive optimizer (Adam, RMSprop, "
                "...) divides each update by the gradients' running scale, so a constant factor on the loss "
                "cancels out and does not stand in for a learning rate; the learning rates differ in effect.")
    if meaning.startswith(LR_RATIO):
        return ("Nothing to fix if the factor is meant to be the learning rate's: with SGD the runs train alike and "
                "only the reported losses differ. Keep the loss as the Keras loss computes it and put the factor "
                "in the learning rate alone, so the losses compare (and so that an adaptive optimizer, which "
                "normalises a loss factor away, does not leave the learning rate changed).")
    if meaning.startswith(NOT_UNSCALED):
        return ("Divide the gradients of the scaled loss by the loss scale before they are applied: apply them "
                "with the LossScaleOptimizer itself (Keras 3 `opt.apply_gradients(zip(grads, vars))` on the "
                "gradients of `opt.scale_loss(loss)` unscales them; not `opt.inner_optimizer`), tf-keras "
                "`grads = opt.get_unscaled_gradients(tape.gradient(opt.get_scaled_loss(loss), vars))`.")
    if meaning.startswith("the batch size"):
        return head + ("reduce the per-sample losses to their mean (`tf.reduce_mean(loss)`, or a Keras loss "
                       "object) before `tape.gradient`; a vector target is summed.")
    return head + ("use the same Keras loss (`keras.losses.MeanSquaredError()` averages over outputs and "
                   "batch) or divide the sum by the same count.")


def match_factor(c: float, cands: dict[str, float], tol: float) -> tuple[str, float, bool] | None:
    """The candidate ``c`` matches (either way round): (meaning, value, inverted)."""
    if not math.isfinite(c) or c <= 0:
        return None
    best = None
    for meaning, v in cands.items():
        for inv, target in ((False, v), (True, 1.0 / v)):
            r = float(rel(c, target))
            if r <= tol and (best is None or r < best[0]):
                best = (r, meaning, v, inv)
    return None if best is None else (best[1], best[2], best[3])


def _opt_effect(run: RunData, c: float, u: float, per_batch: bool = False) -> str:
    """What the run's optimizer makes of a loss factor ``c`` whose first updates differ ``u``
    (``per_batch``: the factor follows each batch's weights or mask, not a constant)."""
    cls = str((run.meta.get("optimizer") or {}).get("class") or "The optimizer")
    if not math.isfinite(u):
        return ""
    if per_batch and abs(math.log(u)) < abs(math.log(c)) / 10:
        return (f" {cls} normalises a constant factor away (the first updates differ only x{u:.3g}), but this one "
                "changes from batch to batch with the batch's weights or mask, so the steps are weighted "
                "against each other differently and training differs.")
    if rel(u, c) < 0.05:
        return f" {cls} passes the factor on: the first updates are x{u:.3g} too (an effective learning rate x{c:.3g})."
    if abs(math.log(u)) < abs(math.log(c)) / 10:
        norm = any(k in cls.lower() for k in _NORMALISING)
        if norm:
            return (f" {cls} normalises it away: the first updates differ only x{u:.3g}, so training looks alike "
                    "while the reported losses differ (and epsilon, weight decay and clipping act differently).")
        # An optimizer that does not normalise passes a factor on unless another setting (the
        # learning rate) takes it back.
        return (f" Yet the first updates differ only x{u:.3g}: another setting ({cls}'s learning rate in one "
                "run) compensates the factor, so training looks alike while the "
                "reported losses differ (and clipping and weight decay act differently).")
    return f" The first updates differ x{u:.3g}."


def _reduction_fix(a: RunData, b: RunData) -> str | None:
    """The fix when both runs' Keras loss objects recorded their reductions and they differ.

    A Keras loss *function* (``keras.losses.mse(y, p)``) records reduction 'none' because it
    returns the per-sample losses, which the script then reduces itself: its reduction is
    the script's (a sum, a mean), not a loss argument to change, so such calls are skipped.
    So is a loss object built with ``reduction='none'``: the script reduces its per-sample
    losses by hand (a weighted mean, a sum), and the matched factor's fix says how.
    """
    red = []
    for run in (a, b):
        info = run.loss_info[min(run.loss_info)] if run.loss_info else {}
        calls = [c for c in (info.get("calls") or [info]) if isinstance(c, dict) and not c.get("function")
                 and c.get("reduction") != "none"]
        red.append(calls[-1].get("reduction") if calls else None)
    same = {"auto": "sum_over_batch_size"}
    if None in red or same.get(red[0], red[0]) == same.get(red[1], red[1]):
        return None
    # tf-keras's default 'auto' is 'sum_over_batch_size' outside a distribution strategy.
    said = [f"'{r}'" + (" (tf-keras's default, i.e. 'sum_over_batch_size')" if r == "auto" else "") for r in red]
    return (f"Reduce the loss the same way in both runs: run a's Keras loss has reduction={said[0]}, "
            f"run b's reduction={said[1]} (Keras's default, 'sum_over_batch_size', divides the sum by "
            "the number of samples).")


def _data_loss_scale(a: RunData, b: RunData, s: Step0, cands: dict[str, float], ftol: float,
                     ev: dict[str, Any], premise: str) -> Finding | None:
    """A loss factor hidden under equal regularization losses.

    Both runs add the same ``sum(model.losses)`` r (same weights at step 0) to a data loss
    reduced differently: the totals are ``c*d + r`` and ``d + r``, so neither the losses
    nor the regularized variables' gradients show the factor ``c``; the data losses
    ``loss - r`` do. Reported only when that factor is one the runs explain (a batch or
    output count, a denominator the Keras losses recorded).
    """
    regs = [float(run.reg_loss[row]) if run.reg_loss.size else float("nan")
            for run, row in ((a, s.row_a), (b, s.row_b))]
    if not all(math.isfinite(r) and r > 0 for r in regs) or rel(regs[0], regs[1]) > ftol:
        return None
    da, db = s.loss_a - regs[0], s.loss_b - regs[1]
    if not (da > 0 and db > 0):
        return None
    c = da / db
    m = match_factor(c, cands, ftol)
    if m is None or abs(math.log(c)) <= math.log1p(ftol):
        return None
    big, small, cf = ("a", "b", c) if c >= 1 else ("b", "a", 1 / c)
    return Finding(
        "loss_scale",
        f"{premise} run {big}'s loss without its regularization losses is x{cf:.6g} "
        f"run {small}'s at step {s.step} (both add the same sum(model.losses) = {regs[0]:.6g}); it matches "
        f"{m[0]}. The regularized variables' gradients mix the factor with the regularizers' own.",
        steps=[s.step], variables=[],
        evidence={"factor": c, "larger_loss": big, "matches": m[0], "hints": [],
                  "matched_value": 1 / m[1] if m[2] else m[1], "reg_loss": regs[0],
                  "data_loss_a": da, "data_loss_b": db,
                  "optimizer": (a.meta.get("optimizer") or {}).get("class"), **ev},
        fix=_loss_scale_fix(m[0]),
        explains=1.0)


def _close(x: float, target: float, tol: float) -> bool:
    return abs(x - target) <= tol * max(abs(target), 1.0)


def _uniform_gradient_factor(s: Step0, ftol: float) -> bool:
    """Every variable's step-0 gradient is the other run's times the ratio of the losses, in the
    same direction: the losses differ by a constant factor (``2.0 * mse``, a learning rate folded
    into the loss), which scales every gradient alike. A penalty added to the loss changes the
    gradients of the variables it penalises only (a bias keeps its gradient) and turns them."""
    if s.cos is None or not s.ratios.size or not (s.loss_a and s.loss_b) or not math.isfinite(s.loss_a / s.loss_b):
        return False
    c = s.loss_a / s.loss_b  # the ratios are a's over b's
    tol = max(16 * ftol, 1e-4)
    with np.errstate(invalid="ignore"):
        return bool(np.all(np.isfinite(s.ratios) & (rel(s.ratios, c) <= tol) & (s.cos >= 1 - tol)))


def _extra_terms(a: RunData, b: RunData, s: Step0, ftol: float, ev: dict[str, Any]) -> Finding | None:
    """The same data loss, a different term added to it: regularization of another size.

    Where both runs' Keras loss objects recorded the step's data loss (the mean of the
    per-sample losses) and those agree, each run's loss minus its data loss is what it
    added on top (``sum(model.losses)``, a hand-written penalty). Two different additions
    on the same weights are a regularization difference; its ratio is the factor, and
    the recorded ``sum(model.losses)`` says what each addition is in its units (once,
    twice, not at all). The tolerance is the step's: the offsets are differences of
    losses known to ``ftol`` relative.
    """
    step_b = int(b.step[s.row_b])
    da, db = dr.data_loss(a, s.step), dr.data_loss(b, step_b)
    if not (math.isfinite(da) and math.isfinite(db)) or float(rel(da, db)) > ftol:
        return None
    scale = max(abs(s.loss_a), abs(s.loss_b))
    oa, ob = s.loss_a - da, s.loss_b - db
    if abs(oa - ob) <= ftol * scale:
        return None
    if _uniform_gradient_factor(s, ftol):
        return None  # the whole loss scaled (a constant factor), not a term added: loss_scale's matter
    regs = {side: float(run.reg_loss[row]) for side, run, row in (("a", a, s.row_a), ("b", b, s.row_b))
            if run.reg_loss.size and math.isfinite(run.reg_loss[row]) and run.reg_loss[row] > 0}
    reg = regs.get("a", regs.get("b"))
    zero = [abs(o) <= ftol * scale for o in (oa, ob)]
    units = {side: o / reg for side, o in (("a", oa), ("b", ob))} if reg else {}
    evidence = {"data_loss_a": da, "data_loss_b": db, "added_a": oa, "added_b": ob,
                "reg_loss_a": regs.get("a"), "reg_loss_b": regs.get("b"), **ev}
    said = f"at step {s.step} both runs compute the same data loss ({da:.6g}) but add different terms to it"
    if any(zero):
        side, other = ("b", "a") if zero[0] else ("a", "b")
        added = ob if side == "b" else oa
        u = units.get(side)
        if u is not None and _close(u, 1.0, ftol):
            summary = (f"{said}: run {side} adds sum(model.losses) ({added:.6g}), run {other} adds nothing; "
                       f"the losses differ by exactly the model's regularization losses.")
            fix = None  # the catalogue's: add sum(model.losses)
        else:
            summary = (f"{said}: run {side} adds {added:.6g}"
                       + (f" ({u:.4g} x sum(model.losses))" if u is not None else "")
                       + f", run {other} nothing: only run {side} regularizes.")
            fix = f"Regularize both runs the same way: run {other} adds no penalty to its loss."
        evidence.update({"factor": 0.0, "regularized_run": side})
        return Finding("regularization_mismatch", summary, steps=[s.step], evidence=evidence, fix=fix,
                       explains=1.0)
    factor = ob / oa
    big, small, f = ("b", "a", factor) if abs(factor) >= 1 else ("a", "b", 1.0 / factor)
    evidence["factor"] = factor
    steady = evidence["steady"] = _offset_ratios(a, b, s, ftol)
    if steady is not None and steady["spread"] > 0.5 * float(np.median(np.abs(steady["ratios"]))):
        # A penalty with another factor keeps the ratio while the weights stay close; this one
        # swings: the added terms depend on something else the runs compute differently.
        lo, hi = min(steady["ratios"]), max(steady["ratios"])
        return Finding(
            "regularization_mismatch", severity="warning", steps=[s.step], evidence=evidence, explains=0.3,
            summary=f"{said} ({oa:.6g} vs {ob:.6g}), and their ratio swings from {lo:.3g} to {hi:.3g} over the "
            f"first {len(steady['ratios'])} steps: not one penalty with another factor, but a term that depends "
            "on something the runs compute differently (another model's outputs, an auxiliary loss, the batch).",
            fix="Compare what each run adds to its Keras loss (a consistency term against a teacher's outputs, an "
                "auxiliary loss, a penalty) and compute it the same way in both runs.")
    ua, ub = units.get("a"), units.get("b")
    whole = [u is not None and abs(u - round(u)) <= ftol * max(abs(u), 1.0) and round(u) >= 1 for u in (ua, ub)]
    if reg and all(whole):
        times = {side: int(round(u)) for side, u in (("a", ua), ("b", ub)) if u is not None}
        summary = (f"{said}: run a adds sum(model.losses) {_times(times['a'])}, run b {_times(times['b'])} "
                   f"(sum(model.losses) = {reg:.6g}; the added terms are {oa:.6g} and {ob:.6g}).")
        fix = ("Add the regularization losses once: fit() and `model.compute_loss()` already include "
               "`model.losses`, so a train step that adds `sum(self.losses)` to compute_loss's result counts "
               "them twice; remove the extra term.")
    else:
        in_reg = (f" (sum(model.losses) = {reg:.6g}: run a adds {ua:.4g} x it, run b {ub:.4g} x)"
                  if reg and ua is not None and ub is not None else "")
        summary = (f"{said}: run {big}'s added term is x{f:.4g} run {small}'s ({oa:.6g} vs {ob:.6g}){in_reg}: "
                   "the regularization is written with another factor.")
        half = " `tf.nn.l2_loss(w)` is sum(w**2) / 2, `keras.regularizers.L2(l)` adds l * sum(w**2);" \
            if _close(f, 2.0, 1e-3) else ""
        fix = (f"Use the same regularization factor in both runs (run {big}'s penalty is {f:.4g} times run "
               f"{small}'s):{half} write the penalty once, as a layer regularizer (`kernel_regularizer=`) that "
               "fit() and compute_loss() add, or by hand in both.")
    return Finding("regularization_mismatch", summary, steps=[s.step], evidence=evidence, fix=fix, explains=1.0)


def _reg_factor(a: RunData, b: RunData, s: Step0, gap: float, ftol: float,
                ev: dict[str, Any]) -> Finding | None:
    """Both runs add ``sum(model.losses)`` and it differs on the same weights: regularizers of
    another factor (the data losses were not recorded, but the gap is the regularizers')."""
    ra = float(a.reg_loss[s.row_a]) if a.reg_loss.size else float("nan")
    rb = float(b.reg_loss[s.row_b]) if b.reg_loss.size else float("nan")
    if not (math.isfinite(ra) and math.isfinite(rb) and ra > 0 and rb > 0) or float(rel(ra, rb)) <= ftol:
        return None
    if abs(abs(s.loss_a - s.loss_b) - abs(ra - rb)) > ftol * max(abs(s.loss_a), abs(s.loss_b)):
        return None
    factor = rb / ra
    big, small, f = ("b", "a", factor) if factor >= 1 else ("a", "b", 1.0 / factor)
    return Finding(
        "regularization_mismatch",
        f"at step {s.step} the losses differ by {gap:.6g}, which is the difference of the runs' regularization "
        f"losses on the same weights (sum(model.losses) = {ra:.6g} in run a, {rb:.6g} in run b): run {big}'s "
        f"regularizers are x{f:.4g} run {small}'s.",
        steps=[s.step], evidence={"factor": factor, "reg_loss_a": ra, "reg_loss_b": rb, "gap": gap, **ev},
        fix=(f"Give the layers the same regularizers in both runs (run {big}'s penalties are {f:.4g} times run "
             f"{small}'s: e.g. `kernel_regularizer=keras.regularizers.L2(...)` with the same factor)."),
        explains=1.0)


def _regularized(run: RunData, v: int) -> bool | None:
    """Whether variable ``v``'s layer regularizes it (``kernel_regularizer`` for a kernel, ...),
    from the recorded layer arguments; None when they were not recorded."""
    configs = run.meta.get("layer_configs") or {}
    info = run.var_info(v)
    layer = next((x for x in run.layers if x.get("name") == info.get("layer")), None)
    cfg = configs.get(str(layer.get("index"))) if layer else None
    if not isinstance(cfg, dict):
        return None
    leaf = str(info.get("name") or "").rsplit("/", 1)[-1]
    return bool(cfg.get(f"{leaf}_regularizer"))


def _hand_penalty(a: RunData, b: RunData, al: Alignment, s: Step0, has_g: np.ndarray, parallel: np.ndarray,
                  tol: float, ftol: float, ev: dict[str, Any]) -> Finding | None:
    """One run regularizes through its layers (``sum(model.losses)`` recorded), the other
    adds a penalty by hand, of another size.

    On the same weights the two runs' gradients agree exactly for every variable no
    penalty touches (biases): the data losses are the same. The loss gap is then the
    difference of the penalties, so the hand-written one is ``r - gap`` and its ratio to
    ``r`` is the factor. Claimed only when the variables whose gradients differ are
    all ones the regularizing run's layers regularize (when their arguments were recorded).
    """
    regs = [float(run.reg_loss[row]) if run.reg_loss.size else float("nan")
            for run, row in ((a, s.row_a), (b, s.row_b))]
    has = [math.isfinite(r) and r > 0 for r in regs]
    if has[0] == has[1]:
        return None
    side, other = ("a", "b") if has[0] else ("b", "a")
    run, r = (a, regs[0]) if has[0] else (b, regs[1])
    equal = has_g & (s.norm_rel <= tol) & parallel
    differ = has_g & ~equal
    if not equal.any() or not differ.any():
        return None
    cols = np.flatnonzero(differ)
    run_cols = al.ja if side == "a" else al.jb
    if any(_regularized(run, int(run.var_index[run_cols[j]])) is False for j in cols):
        return None
    loss_r, loss_o = (s.loss_a, s.loss_b) if side == "a" else (s.loss_b, s.loss_a)
    scale = max(abs(s.loss_a), abs(s.loss_b))
    p = r - (loss_r - loss_o)
    if p <= ftol * scale:
        return None  # nothing added by hand: the sum(model.losses) gap is reported as such
    factor = p / r
    half = (" `tf.nn.l2_loss(w)` is sum(w**2) / 2, `keras.regularizers.L2(l)` adds l * sum(w**2);"
            if _close(factor, 0.5, 1e-3) else "")
    names = [s.names[j] for j in cols]
    return Finding(
        "regularization_mismatch",
        f"at step {s.step} the gradients of {int(equal.sum())} unregularized variable(s) agree in both runs "
        f"(the same data loss) while those of {len(names)} regularized one(s) differ ({', '.join(names[:4])}): "
        f"run {side} adds its layers' regularization losses ({r:.6g}), run {other} a penalty by hand of "
        f"{p:.6g}, x{factor:.4g} run {side}'s: the regularization is written with another factor.",
        steps=[s.step], variables=names,
        evidence={"factor": factor, "reg_loss": r, "hand_penalty": p, "regularized_run": side,
                  "gap": loss_r - loss_o, **ev},
        fix=(f"Use the same regularization in both runs (run {other}'s hand-written penalty is {factor:.4g} "
             f"times run {side}'s layer regularizers):{half} write it once, as a layer regularizer "
             "(`kernel_regularizer=`) that fit() and compute_loss() add, or by hand in both."),
        explains=1.0)


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def _offset_ratios(a: RunData, b: RunData, s: Step0, ftol: float) -> dict[str, Any] | None:
    """The ratio of the added terms over the first recorded steps: a penalty with another
    factor keeps it while the weights stay close, a one-off difference does not."""
    out = []
    for i in range(min(a.n_steps, b.n_steps, 8)):
        sa, sb = int(a.step[i]), int(b.step[i])
        da, db = dr.data_loss(a, sa), dr.data_loss(b, sb)
        if not (math.isfinite(da) and math.isfinite(db)):
            continue
        oa, ob = a.loss[i] - da, b.loss[i] - db
        if oa and math.isfinite(ob / oa):
            out.append(float(ob / oa))
    if len(out) < 2:
        return None
    return {"ratios": out, "spread": float(np.max(out) - np.min(out))}


def _optimizer_config(run: RunData) -> dict[str, Any] | None:
    opt = run.meta.get("optimizer") or {}
    cfg = opt.get("config")
    if not isinstance(cfg, dict):
        return None
    return {"class": opt.get("class"), **{k: v for k, v in cfg.items() if k != "name"}}


def _per_variable_setting(a: RunData, b: RunData, n_differ: int, n_with_updates: int
                          ) -> tuple[str, str, dict[str, Any]] | None:
    """Equal gradients, and updates that differ for some variables only, under optimizers
    whose recorded configurations are equal: the difference is a per-variable setting that
    ``get_config()`` does not hold. With weight decay on, that is a variable excluded from
    it in one run (``exclude_from_weight_decay``, the "no decay on biases and normalisation
    parameters" recipe); a variable with its own learning rate or optimizer otherwise.
    Returns (the words for the summary, the fix, evidence), or None."""
    ca, cb = _optimizer_config(a), _optimizer_config(b)
    if ca is None or ca != cb or not 0 < n_differ < n_with_updates:
        return None
    decay = ca.get("weight_decay")
    ev = {"configs_equal": True, "variables_differ": n_differ, "variables_updated": n_with_updates}
    if decay:
        ev["weight_decay"] = decay
        return ((f"on {n_differ} of the {n_with_updates} variables only, although both optimizers record the "
                 f"same configuration (weight_decay={decay:g}): a per-variable setting the configuration does "
                 "not hold, most likely variables excluded from weight decay in one run only "
                 "(`optimizer.exclude_from_weight_decay(var_names=[...])`, e.g. biases and normalisation "
                 "scales; a variable at zero, such as a fresh bias, shows it only once it has moved)."),
                "Exclude the same variables from weight decay in both runs (call "
                "`exclude_from_weight_decay` on both optimizers with the same names).", ev)
    return ((f"on {n_differ} of the {n_with_updates} variables only, although both optimizers record the same "
             "configuration: a per-variable setting the configuration does not hold (those variables trained "
             "by another optimizer or with their own learning rate in one run)."),
            "Update every variable the same way in both runs: one optimizer over the same variables, no "
            "per-variable settings in one run only.", ev)


_CLIP_SETTINGS = ("clipnorm", "global_clipnorm", "clipvalue")


def _clip_setting(run: RunData) -> tuple[str, float] | None:
    """The optimizer's clipping setting (the first of ``_CLIP_SETTINGS`` set), or None."""
    opt = run.meta.get("optimizer") or {}
    for key in _CLIP_SETTINGS:
        v = opt.get(key, (opt.get("config") or {}).get(key))
        if isinstance(v, (int, float)) and v > 0:
            return key, float(v)
    return None


def _capped_at(values: np.ndarray, c: float, need: int) -> bool:
    """No finite value above ``c`` and at least ``need`` of them at ``c`` (float32 rounding apart)."""
    v = values[np.isfinite(values)]
    return bool(v.size) and bool(np.all(v <= c * (1 + 1e-4))) and int(np.sum(np.abs(v - c) <= 1e-4 * c)) >= need


def _hand_clipping(a: RunData, b: RunData, s: Step0, al: Alignment, ftol: float) -> Finding | None:
    """A run whose optimizer clips nothing but whose recorded gradients are capped: it clips by
    hand before apply_gradients (the other run's optimizer, clipping, records its gradients
    before it clips). Each gradient capped at one norm is tf.clip_by_norm on every gradient;
    the global norm capped is tf.clip_by_global_norm. Named against what the other run does."""
    for side, h, o, jh, jo in (("b", b, a, al.jb, al.ja), ("a", a, b, al.ja, al.jb)):
        if _clip_setting(h) is not None:
            continue
        setting = _clip_setting(o)
        rh, ro = int(h.rows(np.array([s.step]))[0]), int(o.rows(np.array([s.step]))[0])
        if rh < 0 or ro < 0:
            continue
        nh, no = h.norm[rh, jh].astype(np.float64), o.norm[ro, jo].astype(np.float64)
        known = np.isfinite(nh) & np.isfinite(no) & (nh > 0)
        if not known.any():
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = no / nh
        clipped = known & (ratio > 1 + ftol)
        if not clipped.any() or np.any(known & (ratio < 1 - ftol)):
            continue
        gh = float(h.grad_norm[s.row_b if side == "b" else s.row_a])
        per_var = not bool(np.all(rel(ratio[known], float(np.median(ratio[known]))) <= ftol))
        if per_var:
            c = float(f"{float(np.median(nh[clipped])):.6g}")  # float32 norms: the value the script wrote
            if setting is not None and abs(c - setting[1]) <= 1e-4 * setting[1]:
                c = setting[1]
            cols = h.norm[:, jh].astype(np.float64).ravel()
            if not (_capped_at(nh[known], c, int(clipped.sum())) and _capped_at(cols, c, 2)):
                continue
            j = int(np.flatnonzero(clipped)[np.argmax(no[clipped])])
            n_cut = int(clipped.sum())
            how = (f"clips each gradient to norm {c:.4g} by hand (tf.clip_by_norm): at step {s.step} its "
                   f"{s.names[j]} gradient has norm {nh[j]:.4g} where run {'a' if side == 'b' else 'b'}'s has "
                   f"{no[j]:.4g}, and {n_cut} of {int(known.sum())} gradients {'is' if n_cut == 1 else 'are'} "
                   f"cut to {c:.4g}")
            match_key = "clipnorm"
        else:
            if not math.isfinite(gh) or gh <= 0:
                continue
            measured = setting is None or abs(gh - setting[1]) > 1e-4 * setting[1]
            c = float(f"{gh:.6g}") if measured else setting[1]
            if not _capped_at(h.grad_norm.astype(np.float64), c, 2 if measured else 1):
                continue
            go = float(o.grad_norm[s.row_a if side == "b" else s.row_b])
            how = (f"clips the global norm to {c:.4g} by hand (tf.clip_by_global_norm): at step {s.step} its "
                   f"gradients' global norm is {gh:.4g} where run {'a' if side == 'b' else 'b'}'s is {go:.4g}")
            match_key = "global_clipnorm"

        def by_hand(key: str, v: float) -> str:
            return {"clipnorm": f"`grads = [tf.clip_by_norm(g, {v:.4g}) for g in grads]`",
                    "clipvalue": f"`grads = [tf.clip_by_value(g, -{v:.4g}, {v:.4g}) for g in grads]`"}.get(
                        key, f"`grads, _ = tf.clip_by_global_norm(grads, {v:.4g})`")

        other = "a" if side == "b" else "b"
        if setting is None:
            them = f"run {other}'s optimizer does not clip"
            fix = (f"Clip in both runs or in neither: remove the clipping from run {side}'s loop, or give run "
                   f"{other}'s optimizer `{match_key}={c:.4g}` (it clips the same way).")
        else:
            key, v = setting
            what = {"clipnorm": "clips each gradient on its own", "global_clipnorm": "clips the global norm",
                    "clipvalue": "clips each entry"}[key]
            them = f"run {other}'s optimizer {what} ({key}={v:g})"
            if key != match_key:
                fix = (f"Clip the same way in both runs: {by_hand(key, v)} in run {side}'s loop, or "
                       f"`{match_key}={c:.4g}` in run {other}'s optimizer in place of `{key}={v:g}`.")
            elif abs(c - v) > 1e-4 * v:
                them += ", the same way at another norm"
                fix = (f"Clip at the same norm: {by_hand(key, v)} in run {side}'s loop, or `{key}={c:.4g}` in "
                       f"run {other}'s optimizer.")
            else:
                them += (f", the same clipping: run {side} records its gradients after clipping them, run "
                         f"{other} before its optimizer clips")
                fix = "Nothing to change for the clipping: both runs clip the same way."
        return Finding(
            "gradient_scale",
            f"same loss at step {s.step}, gradients parallel, but run {side} {how}; {them}.",
            steps=[s.step],
            evidence={**s.evidence(), "hand_clipped_run": side, "hand_clip": "per_variable" if per_var else "global",
                      "clip_norm": c, "other_clip_setting": {setting[0]: setting[1]} if setting else None},
            fix=fix, explains=1.0)
    return None


def _ratio_said(ratio: float, what: str) -> str:
    """``run a's <what> is 1.25 x run b's``; near 1, where four digits would read "1 x", the
    relative difference instead (an update that differs in its 5th digit)."""
    if math.isfinite(ratio) and ratio > 0 and abs(ratio - 1) < 5e-4:
        return f"run a's {what} differs from run b's by {abs(ratio - 1):.2g} (relative)"
    return f"run a's {what} is {ratio:.4g} x run b's"


def _ratio_spread(r: np.ndarray, c: float) -> float:
    r = r[np.isfinite(r)]
    return float(np.max(rel(r, c))) if r.size else 0.0


def _rises(run: RunData) -> bool | None:
    """Whether the run's loss ends above where it started: the median of its last quarter of
    finite losses against its first (None with fewer than 8 finite losses)."""
    lo = run.loss[np.isfinite(run.loss)]
    if lo.size < 8:
        return None
    return bool(np.median(lo[-max(2, lo.size // 4):]) > lo[0])


def _keras_loss_as_is(run: RunData) -> bool | None:
    """Whether the loss the run handed to tape.gradient at its first step is its Keras loss's data
    loss as computed (plus the regularization losses); None when no Keras loss says."""
    sign = dr.loss_sign(run, 0, 1e-5) if run.n_steps else None
    return None if sign is None else sign == 1


def _gradient_sign(a: RunData, b: RunData, s: Step0, has_g: np.ndarray, al: Alignment, ftol: float,
                   ev: dict[str, Any]) -> Finding | None:
    """Every gradient of one run is the other's negated, at one norm ratio for all: one run climbs
    the loss. Equal losses: the gradients were negated after ``tape.gradient``; losses of opposite
    sign in the same ratio: the loss itself was negated before it. The run to fix is the one whose
    loss is negative where the other's is positive (a cross-entropy, a squared error), else the one
    whose loss rises over its steps."""
    if s.cos is None or not has_g.any() or not (math.isfinite(s.loss_a) and math.isfinite(s.loss_b)):
        return None
    cos = s.cos[has_g]
    if not np.all(np.isfinite(cos) & (1 + cos <= al.noise.cos_tol)):
        return None
    gr = s.ratios[has_g]
    c = float(np.median(gr))
    if _ratio_spread(gr, c) > ftol:
        return None
    tol = float(al.noise.tol0)
    if s.loss_rel <= tol:
        negated = "gradients"
    elif s.loss_b and s.loss_a / s.loss_b < 0 and float(rel(-s.loss_a / s.loss_b, c)) <= ftol:
        negated = "loss"
    else:
        return None
    side = None
    as_is = {"a": _keras_loss_as_is(a), "b": _keras_loss_as_is(b)}
    keras_side = None
    if as_is["a"] != as_is["b"] and True in as_is.values():
        # one run differentiates its Keras loss as it is (a Keras loss has the sign it should have,
        # CosineSimilarity's negative values included): the other run negated its own
        side = keras_side = "b" if as_is["a"] else "a"
    elif negated == "loss" and (s.loss_a < 0) != (s.loss_b < 0):
        side = "a" if s.loss_a < 0 else "b"
    else:
        up = {"a": _rises(a), "b": _rises(b)}
        if up["a"] is not None and up["b"] is not None and up["a"] != up["b"]:
            side = "a" if up["a"] else "b"
    who = f"run {side}" if side else "one run"
    factor = "" if abs(math.log(c)) <= math.log1p(ftol) else f" (times {c:.4g} in norm)"
    if negated == "gradients":
        summary = (f"same loss at step {s.step} ({s.loss_a:.6g}), but every gradient of run a is run b's negated"
                   f"{factor}: sketch cosines from -1 to {float(np.max(cos)):.4f} for all {int(has_g.sum())} variables. "
                   f"{who[0].upper() + who[1:]} negates its gradients between `tape.gradient` and the apply, so its "
                   "optimizer climbs the loss the other descends.")
        fix = (f"Apply the gradients as `tape.gradient` returns them in {who}: optimizers already subtract "
               "`learning_rate * gradient`, so `-g` (or `tf.negative`) turns descent into ascent.")
    else:
        summary = (f"at step {s.step} the losses have opposite signs ({s.loss_a:.6g} vs {s.loss_b:.6g}) and every "
                   f"gradient of run a is run b's negated{factor}: {who} differentiates the negated loss, so its "
                   "optimizer climbs the loss the other descends"
                   + (f" (run {'a' if side == 'b' else 'b'} differentiates its Keras loss as it is)" if keras_side
                      else " (its loss is negative where a cross-entropy or a squared error is not)" if side else "")
                   + ".")
        fix = (f"Differentiate the loss itself in {who}, not its negation: drop the leading minus (`loss = "
               "-...`), or, for a log-likelihood written by hand, put the minus in front of it (`-mean(log p)`).")
        if keras_side:
            other, run_o = ("a", a) if side == "b" else ("b", b)
            cls = (dr.first_loss_info(run_o) or {}).get("cls") or "loss"
            fix = (f"Give run {side}'s loss the sign of run {other}'s Keras {cls} ({s.loss_a if other == 'a' else s.loss_b:.6g} "
                   f"at step {s.step}, run {side}'s {s.loss_b if other == 'a' else s.loss_a:.6g}): drop a leading minus, "
                   "or put one in front where the Keras loss has it by definition (CosineSimilarity is -cos, a "
                   "log-likelihood loss is -mean(log p)).")
    return Finding("gradient_sign", summary, steps=[s.step], variables=[],
                   evidence={"negated": negated, "run": side, "grad_norm_ratio": c,
                             "grad_cosine_max": float(np.max(cos)), **ev},
                   fix=fix, explains=1.0)


def analyse_step0(a: RunData, b: RunData, al: Alignment, hand: manual.Hand | None
                  ) -> tuple[list[Finding], Step0 | None]:
    """Findings that step 0 proves, and the numbers behind them; ``hand``: the runs' hand-written
    updates (:func:`manual.describe`), which explain updates that differ from equal gradients."""
    if al.aligned_steps < 1 or al.stochastic:
        return [], None
    s = step0(a, b, al)
    if s is None:
        return [], None
    tol = float(al.noise.tol0)
    ftol = 16 * tol  # a factor is a ratio of two noisy numbers
    al.noise.observed["step0_loss_rel_diff"] = s.loss_rel
    fin = np.isfinite(s.norm_rel) & ~s.negligible
    al.noise.observed["step0_grad_norm_rel_diff_max"] = float(np.max(s.norm_rel[fin])) if fin.any() else None
    if s.negligible.any():
        al.noise.observed["step0_gradients_at_noise_floor"] = [n for n, q in zip(s.names, s.negligible, strict=True) if q]
    if s.cos is not None and np.isfinite(s.cos).any():
        al.noise.observed["step0_grad_cosine_min"] = float(np.nanmin(s.cos))
    ev = s.evidence()
    ev["tolerance"] = tol
    out: list[Finding] = []
    has_g = np.isfinite(s.ratios) & (s.ratios > 0) & ~s.negligible
    parallel = np.ones_like(s.ratios, dtype=bool) if s.cos is None else (1 - np.nan_to_num(s.cos, nan=1.0)) <= al.noise.cos_tol
    cands = candidate_factors(a, b, (s.step, int(b.step[s.row_b])))
    loss_equal = s.loss_rel <= tol
    grads_equal = bool(np.all(s.norm_rel[has_g] <= tol)) and bool(parallel[has_g].all())
    sign = _gradient_sign(a, b, s, has_g, al, ftol, ev)
    if sign is not None:
        return [sign], s

    if not loss_equal and math.isfinite(s.loss_a) and math.isfinite(s.loss_b):
        gap = abs(s.loss_a - s.loss_b)
        extra = _extra_terms(a, b, s, ftol, ev)
        if extra is not None:
            return [extra], s
        for side, run in (("a", a), ("b", b)):
            row = s.row_a if side == "a" else s.row_b
            reg = float(run.reg_loss[row]) if run.reg_loss.size else float("nan")
            if math.isfinite(reg) and reg > 0 and abs(gap - reg) <= ftol * max(abs(s.loss_a), abs(s.loss_b)):
                higher = "a" if s.loss_a > s.loss_b else "b"
                out.append(Finding(
                    "regularization_mismatch",
                    f"at step 0 the losses differ by {gap:.6g}, which equals the model's regularization "
                    f"losses ({reg:.6g}): run {higher} adds sum(model.losses), the other does not.",
                    steps=[s.step], evidence={"gap": gap, "reg_loss": reg, "reg_recorded_in": side, "factor": 0.0,
                              "regularized_run": higher, **ev},
                    explains=1.0))
                return out, s
        other_reg = _reg_factor(a, b, s, gap, ftol, ev)
        if other_reg is not None:
            return [other_reg], s
        penalty = _hand_penalty(a, b, al, s, has_g, parallel, tol, ftol, ev)
        if penalty is not None:
            return [penalty], s
        c = s.loss_a / s.loss_b if s.loss_b else float("inf")
        gr = s.ratios[has_g]
        if gr.size and _ratio_spread(gr, c) <= ftol and bool(parallel[has_g].all()):
            m = match_factor(c, cands, ftol)
            u = float(np.nanmedian(s.update_ratio)) if np.isfinite(s.update_ratio).any() else float("nan")
            hints = _unmatched_factor_hints(a, b) if not m else []
            div = None if m else _sum_divisor(a, b, s, c, ftol)
            if div is not None:
                d, n, side = div["divisor"], div["batch"], div["run"]
                m = (f"a divisor of {d} for a batch of {n} ({d / n:g} x the batch: global_batch_size={d})", c, False)
                hints = [f"run {side}'s loss divides the sum of its {n} per-example losses by {d}, {d / n:g} times "
                         f"the step's {n} examples: `tf.nn.compute_average_loss(per_example_loss, "
                         f"global_batch_size={d})` or a sum divided by a fixed count"]
            what = (f"; {hints[0]}" if div is not None else f"; it matches {m[0]}" if m else
                    ("; it matches no batch or output count: a mask's valid fraction or "
                     "batch/sum(sample weights) would give such a factor"
                     + (f" ({'; '.join(hints)})" if hints else "")))
            run = a  # the optimizer is the same class in both when the loss_scale is the only finding
            big, small, cf, uf = ("a", "b", c, u) if c >= 1 else ("b", "a", 1 / c, 1 / u if u else u)
            out.append(Finding(
                "loss_scale",
                f"{al.premise} run {big}'s loss is x{cf:.6g} run {small}'s at step "
                f"{s.step}, and every gradient carries the same factor{what}."
                + _opt_effect(run, cf, uf, bool(m) and m[0].startswith(_PER_BATCH_FACTORS)),
                steps=[s.step], variables=[],
                evidence={"factor": c, "larger_loss": big, "matches": m[0] if m else None,
                          "hints": hints,
                          "matched_value": (1 / m[1] if m and m[2] else m[1]) if m else None,
                          "first_update_ratio": u, "optimizer": (a.meta.get("optimizer") or {}).get("class"),
                          **({"sum_divided_by": div} if div is not None else {}), **ev},
                fix=(_divisor_fix(div) if div is not None else
                     _reduction_fix(a, b) or _loss_scale_fix(m[0] if m else None, _normalising(run))),
                explains=1.0))
            return out, s
        scaled = _data_loss_scale(a, b, s, cands, ftol, ev, al.premise)
        if scaled is not None:
            return [scaled], s
        unmasked = _mask_ignored(a, b, s.step, (s.row_a, s.row_b), ftol, ev, al.premise, tol)
        if unmasked is not None:
            return [unmasked], s
        weighting = _loss_weights_differ(a, b, s)
        out.append(Finding(
            "gradient_mismatch",
            f"{al.premise} the losses differ at step 0 ({s.loss_a:.6g} vs {s.loss_b:.6g}, "
            f"relative {s.loss_rel:.2g} > tolerance {tol:.2g}) and not by a constant factor: the loss "
            "computations differ" + (f"; {weighting[0]}" if weighting else "") + ".",
            steps=[s.step], variables=_worst(s, parallel, tol),
            evidence={**ev, **(weighting[1] if weighting else {})},
            fix=_loss_weights_fix(weighting),
            explains=0.8))
        return out, s

    if grads_equal or not has_g.any():
        if has_g.any():
            urel = np.where(has_g, s.update_rel, np.nan)
            ur = urel[np.isfinite(urel)]
            if ur.size and np.max(ur) > tol:
                j = int(np.nanargmax(np.where(np.isfinite(urel), urel, -1)))
                order = np.argsort(-np.where(np.isfinite(urel), urel, -1))
                differing = [s.names[int(i)] for i in order if np.isfinite(urel[i]) and urel[i] > tol]
                unrecorded = _per_variable_setting(a, b, len(differing), int(np.isfinite(urel).sum()))
                symptom = (f"step 0 has the same loss and gradients in both runs but different updates "
                           f"({s.names[j]}: {_ratio_said(float(s.update_ratio[j]), 'update norm')}): the "
                           "optimizers act differently")
                if unrecorded:
                    why, why_ev, fix = " " + unrecorded[0], {"unrecorded_setting": unrecorded[2]}, unrecorded[1]
                elif hand:
                    # `symptom`: what the configuration finding keeps when it already words the rule.
                    why, why_ev, fix = ": " + hand.what, {"hand_written_update": hand.evidence,
                                                          "symptom": symptom + "."}, hand.fix
                else:
                    why, why_ev, fix = " (class, learning rate, momentum, clipping or weight decay).", {}, None
                out.append(Finding(
                    "optimizer_mismatch", symptom + why, steps=[s.step], variables=differing,
                    evidence={**ev, **why_ev}, fix=fix, explains=0.9))
        return out, s

    gr = s.ratios[has_g]
    c = float(np.median(gr))
    # A factor away from 1 beyond the tolerance, tested in log space: a relative difference
    # never exceeds 1, which a float16 run's tolerance (~0.3, x16) would otherwise swallow.
    if (bool(parallel[has_g].all()) and _ratio_spread(gr, c) <= ftol and c > 0
            and abs(math.log(c)) > math.log1p(ftol)):
        # The losses agree: a factor that a loss reduction would give (a mean over outputs, a
        # mask's or the sample weights' count) would show in the loss too, so it means nothing here.
        m = match_factor(c, {k: v for k, v in cands.items() if not k.startswith(_LOSS_ONLY_FACTORS)}, ftol)
        clip = None if m else _hand_clipping(a, b, s, al, ftol)
        if clip is not None:
            return [clip], s
        what = (f", which matches {m[0]}" if m else
                ": a factor on the gradients alone, after the loss (gradients accumulated over micro-batches "
                "summed in one run and averaged in the other, or multiplied or divided by hand before they "
                "are applied)")
        out.append(Finding(
            "gradient_scale",
            f"same loss at step 0, gradients parallel, but run a's gradients are x{c:.6g} run b's{what}.",
            steps=[s.step], evidence={"factor": c, "matches": m[0] if m else None, **ev},
            explains=1.0))
        return out, s
    if bool(parallel[has_g].all()):
        clip = _hand_clipping(a, b, s, al, ftol)
        if clip is not None:
            return [clip], s
        out.append(Finding(
            "gradient_scale",
            f"same loss at step 0 and parallel gradients, but the norm ratios differ per variable "
            f"(from x{np.min(gr):.4g} to x{np.max(gr):.4g}): one run clips each gradient on its own "
            "(clipnorm / tf.clip_by_norm) and the other by the global norm (global_clipnorm / "
            "tf.clip_by_global_norm), or clips in one run only.",
            steps=[s.step], evidence=ev,
            fix="Clip the same way in both runs: `global_clipnorm=` vs `clipnorm=` (per variable) are different.",
            explains=1.0))
        return out, s
    bad = _worst(s, parallel, tol)
    fa, fb = a.meta.get("keras_flavour"), b.meta.get("keras_flavour")
    flavours = (f" The runs use different Keras implementations ({fa} vs {fb}), whose layers compute "
                "gradients with different kernels (BatchNormalization: one fused op in tf-keras, composed "
                "ops in Keras 3)."
                if fa and fb and fa != fb else "")
    same = [i for i in range(len(s.names)) if has_g[i] and parallel[i] and s.norm_rel[i] <= tol]
    if same and not flavours:
        # Some variables' gradients agree exactly: the loss and the backward pass down to them are
        # the same, and the difference enters below them (toward the inputs) or at a variable
        # shared between places (a tied embedding): a cut or rewritten gradient in one run.
        layer_of = {s.names[i]: str(a.var_info(int(a.var_index[al.ja[i]])).get("layer") or s.names[i])
                    for i in range(len(s.names))}
        ok = list(dict.fromkeys(layer_of[s.names[i]] for i in same))
        off = list(dict.fromkeys(layer_of[n] for n in bad))
        ndim = {s.names[i]: len(a.var_info(int(a.var_index[al.ja[i]])).get("shape") or []) for i in range(len(s.names))}
        if set(ok) & set(off) and all(ndim[n] >= 2 for n in bad) and all(ndim[s.names[i]] <= 1 for i in same):
            # Within the same layers the biases agree and the kernels do not: no cut between layers
            # (that would part a layer's bias too) but a term on the kernels alone, a weight penalty,
            # whose value both losses hold and whose gradient one run lacks.
            out.append(Finding(
                "gradient_mismatch",
                f"same loss at step 0 (relative difference {s.loss_rel:.2g}), and within the same layers "
                f"({', '.join(off[:4])}{', ...' if len(off) > 4 else ''}) the biases' gradients agree while the "
                f"kernels' differ ({len(bad)} variable(s)): a term of the loss that depends on the kernels alone, "
                "a weight penalty such as L2, is in both runs' loss values but differentiated in one run only. "
                "Computed before the `tf.GradientTape` opened (or from `.numpy()` values, or under "
                "`tape.stop_recording()`), it is a constant to the tape: it adds to the loss and nothing to the "
                "gradients.",
                steps=[s.step], variables=bad, layers=off[:8],
                evidence={**ev, "layers_agree": ok, "layers_differ": off, "kernels_only": True},
                fix=("Compute the penalty inside the `with tf.GradientTape()` block in both runs (or give the layers "
                     "`kernel_regularizer=` and add `sum(model.losses)` to the loss inside the tape), so its "
                     "gradient reaches the kernels."),
                explains=1.0))
            return out, s
        out.append(Finding(
            "gradient_mismatch",
            f"same loss at step 0 (relative difference {s.loss_rel:.2g}), and the gradients of {len(same)} "
            f"variable(s) agree (layers {', '.join(ok[:4])}{', ...' if len(ok) > 4 else ''}) while {len(bad)} "
            f"{'differ' if len(bad) > 1 else 'differs'} (layers {', '.join(off[:4])}{', ...' if len(off) > 4 else ''}): the forward passes compute "
            "the same loss, and the backward passes part between those layers, where one run's gradient is cut "
            "or rewritten: a `tf.stop_gradient`, a `tf.custom_gradient`, a gradient through a variable used in "
            "two places (a tied embedding) taken from one of them only, or a layer whose output does not "
            "depend on its input the same way in both runs.",
            steps=[s.step], variables=bad, layers=off[:8], evidence={**ev, "layers_agree": ok, "layers_differ": off},
            fix=(f"Compare the two scripts where the layers {', '.join(off[:3])} are called and what follows "
                 "them up to the loss: remove the `tf.stop_gradient` (or custom gradient) one run has there, or "
                 "put it in both."),
            explains=1.0))
        return out, s
    out.append(Finding(
        "gradient_mismatch",
        f"same loss at step 0 (relative difference {s.loss_rel:.2g}) but {len(bad)} variable(s)' gradients "
        "point elsewhere: the loss is differentiated differently (e.g. a Keras softmax output fused with "
        "categorical cross-entropy whose targets do not sum to 1 differs from the same loss behind a "
        "tf.function boundary; class weights; from_logits)." + flavours,
        steps=[s.step], variables=bad, evidence={**ev, **({"keras_flavours": [fa, fb]} if flavours else {})},
        fix=("Train both runs with the same Keras (Keras 3 or tf-keras) to compare them step by step."
             if flavours else
             "Compute the loss the same way in both runs; with soft or weighted targets use probabilities "
             "whose rows sum to 1, or compute cross-entropy from logits explicitly (`from_logits=True`)."),
        explains=1.0))
    return out, s


def _loss_weights(run: RunData) -> list[float] | None:
    """The run's per-output loss weights, ``[]`` for unweighted, ``None`` when not known.

    Only a compiled loss records them: compile() without loss_weights adds the outputs'
    losses unweighted (a weight of None is 1). A run without loss metadata (a
    hand-written loss in a tape loop or train_step) may weight them any way.
    """
    loss = run.meta.get("loss")
    if not isinstance(loss, dict):
        return None
    w = [1.0 if x is None else float(x) for x in loss.get("loss_weights") or []]
    return [] if all(x == 1.0 for x in w) else w


def _last_call_mean(a: RunData, b: RunData, s: Step0, n_calls: int) -> list[float] | None:
    """Both runs' per-sample mean of the last Keras loss call at step ``s``, when both made
    ``n_calls`` calls of the same loss classes and those means agree (the same outputs and
    labels); otherwise None."""
    infos = [run.loss_info.get(s.step) or {} for run in (a, b)]
    calls = [i.get("calls") or [] for i in infos]
    if len(calls[0]) != n_calls or len(calls[1]) != n_calls:
        return None
    if [c.get("cls") for c in calls[0]] != [c.get("cls") for c in calls[1]]:
        return None
    ms = [i.get("per_sample_mean") for i in infos]
    if not all(isinstance(m, (int, float)) and math.isfinite(m) and m > 0 for m in ms) or rel(ms[0], ms[1]) > 1e-4:
        return None
    return [float(m) for m in ms]


def _last_weight_measured(a: RunData, b: RunData, side: str, w: list[float], s: Step0) -> float | None:
    """The weight the run without recorded weights gives its last output's loss.

    Both runs called the same Keras losses, one per output (``loss_info.calls``), and
    recorded the last call's per-sample mean ``m`` (equal in both: same outputs and
    labels). With the other outputs weighted alike, ``total_other - total_known =
    (w_other - w_last) * m``. Returned when it is a weight a user writes (within float
    noise of a multiple of 0.05) and differs from ``w_last``.
    """
    ms = _last_call_mean(a, b, s, len(w))
    if ms is None:
        return None
    known, unknown = (s.loss_a, s.loss_b) if side == "a" else (s.loss_b, s.loss_a)
    m = float(ms[0])
    wo = w[-1] + (unknown - known) / m
    nice = round(wo * 20) / 20
    scale = max(abs(known), abs(unknown), 1.0) / m
    if abs(wo - nice) > 1e-4 * scale or abs(nice - w[-1]) < 0.05 - 1e-9 or nice < 0:
        return None
    return nice


def _output_weights_measured(a: RunData, b: RunData, side: str, w: list[float], s: Step0) -> list[float] | None:
    """The per-output loss weights of the run without recorded weights, two outputs.

    A variable that feeds one output only (its head) gets that output's loss gradient times
    the output's weight: its step-0 gradient is parallel in both runs (sketch cosine 1) with
    the norm ratio ``w_a / w_b`` of that output. The parallel variables' ratios give the
    candidates; the assignment of candidates to outputs that reproduces the unknown run's
    total from the known run's (``L = w_0 m_0 + w_1 m_1``; ``m_1`` is the last output's
    recorded Keras loss, ``m_0`` follows from the known total) within 1e-4 is the answer.
    Returns the weights when exactly one assignment fits and they differ from ``w``.
    """
    if len(w) != 2 or s.cos is None:
        return None
    ms = _last_call_mean(a, b, s, 2)
    if ms is None:
        return None
    par = np.isfinite(s.ratios) & (s.ratios > 0) & np.isfinite(s.cos) & (s.cos >= 1 - 1e-5)
    cands: list[float] = []
    for r in sorted(s.ratios[par].tolist()):
        if not cands or rel(r, cands[-1]) > 1e-3:
            cands.append(float(r))
    if not cands or len(cands) > 4:
        return None
    known, unknown = (s.loss_a, s.loss_b) if side == "a" else (s.loss_b, s.loss_a)
    m1 = float(ms[0])
    m0 = (known - w[1] * m1) / w[0] if w[0] else float("nan")
    if not (math.isfinite(m0) and m0 > 0):
        return None
    fits = []
    for r0 in cands:
        for r1 in cands:
            # ratios are norm_a / norm_b: w_b = w_a / r
            wo = [w[0] / r0, w[1] / r1] if side == "a" else [w[0] * r0, w[1] * r1]
            if rel(wo[0] * m0 + wo[1] * m1, unknown) <= 1e-4:
                fits.append(wo)
    if len(fits) != 1:
        return None
    wo = [float(f"{x:.4g}") for x in fits[0]]
    return None if all(rel(x, y) <= 1e-3 for x, y in zip(wo, w, strict=True)) else wo


def _loss_weights_differ(a: RunData, b: RunData, s: Step0 | None = None) -> tuple[str, dict[str, Any], bool] | None:
    """Per-output loss weights (compile(loss_weights=...)) that may explain a loss difference.

    Returns (clause, evidence, asserted): asserted when both runs recorded their
    weights and they differ; when only one run recorded weights (the other's loss is
    hand-written), the clause says the other's weighting is unknown and claims nothing.
    """
    wa, wb = _loss_weights(a), _loss_weights(b)
    if wa is not None and wb is not None:
        if wa == wb:
            return None

        def say(side: str, w: list[float]) -> str:
            return f"run {side} weights its outputs' losses by {w}" if w else f"run {side} adds them unweighted"

        text = (f"{say('a', wa)} (compile(loss_weights=...)), {say('b', wb)}"
                if wa else f"{say('b', wb)} (compile(loss_weights=...)), {say('a', wa)}")
        return text, {"loss_weights_a": wa or None, "loss_weights_b": wb or None}, True
    known = [(side, w) for side, w in (("a", wa), ("b", wb)) if w]
    if not known:  # neither weights its outputs, or nothing recorded
        return None
    side, w = known[0]
    other = "b" if side == "a" else "a"
    measured = _last_weight_measured(a, b, side, w, s) if s is not None else None
    if measured is not None:
        text = (f"run {side} weights its outputs' losses by {w} (compile(loss_weights=...)); run {other}'s "
                f"loss is run {side}'s with the last output's loss weighted by {measured:.4g} instead of {w[-1]:g} "
                f"(measured at step {s.step} from both totals and that output's Keras loss, the same in both)")
        return text, {f"loss_weights_{side}": w, f"last_output_weight_{other}": measured}, True
    both = _output_weights_measured(a, b, side, w, s) if s is not None else None
    if both is not None:
        text = (f"run {side} weights its outputs' losses by {w} (compile(loss_weights=...)); run {other}'s "
                f"hand-written loss weights them by {both} (measured at step {s.step}: each output's own layers "
                "get gradients parallel in both runs, scaled by that output's weight ratio, and these weights "
                f"reproduce run {other}'s total)")
        return text, {f"loss_weights_{side}": w, f"loss_weights_{other}_measured": both}, True
    text = (f"run {side} weights its outputs' losses by {w} (compile(loss_weights=...)); run {other}'s "
            "weighting is not recorded (hand-written loss), so whether it applies the same weights is unknown")
    return text, {f"loss_weights_{side}": w, f"loss_weights_{other}": "not recorded (hand-written loss)"}, False


def mask_ignored_at(a: RunData, b: RunData, dep: dict[str, Any], al: Alignment) -> Finding | None:
    """``_mask_ignored`` at the first step where the aligned runs part: a mask that pads nothing in
    the first batches (every sequence at full length) leaves the losses equal until the first
    batch with padding, where one run averages over the valid entries and the other over all."""
    k = int(dep["step"])
    p = _aligned_at(a, al, k)
    if p is None:
        return None
    ra, rb = int(al.ia[p]), int(al.ib[p])
    tol = float(al.noise.tol(k - int(a.step[al.ia[0]])))
    ev = {"step": k, "loss_a": float(a.loss[ra]), "loss_b": float(b.loss[rb]),
          "loss_rel_diff": float(rel(a.loss[ra], b.loss[rb]))}
    return _mask_ignored(a, b, k, (ra, rb), 16 * tol, ev, al.premise, tol)


def _aligned_at(a: RunData, al: Alignment, step: int) -> int | None:
    """The aligned position of run a's ``step`` (None when it is not aligned)."""
    at = np.flatnonzero(a.step[al.ia[:al.aligned_steps]] == step)
    return int(at[0]) if at.size else None


def fixed_divisor_at(a: RunData, b: RunData, dep: dict[str, Any], al: Alignment) -> Finding | None:
    """The runs part at the first step whose batch has another size than the steps before, by that
    size's ratio: one run divides its summed per-example losses by a fixed count (the full batch:
    ``tf.reduce_sum(l) / BATCH``, ``tf.nn.compute_average_loss(l, global_batch_size=BATCH)``), the
    other takes the batch's own mean. The two agree on every full batch and part at the last,
    partial batch of an epoch, where the fixed count weighs its examples less.

    Decided on the departing step alone: the same batch in both runs (equal size), the loss ratio
    (and the global gradient norm's, where both runs recorded it) equal to ``n / D`` for the
    step's ``n`` examples and ``D`` the size of the batches before it.
    """
    k = int(dep["step"])
    p = _aligned_at(a, al, k)
    if not p:  # not aligned, or the first aligned step: no batches before it
        return None
    ra, rb = int(al.ia[p]), int(al.ib[p])
    n, nb, full = a.batch_at(ra), b.batch_at(rb), a.batch_at(int(al.ia[p - 1]))
    if not (math.isfinite(n) and n == nb and math.isfinite(full) and full != n and n >= 1):
        return None
    la, lb = float(a.loss[ra]), float(b.loss[rb])
    if not (math.isfinite(la) and math.isfinite(lb) and la > 0 and lb > 0):
        return None
    ftol = 16 * float(al.noise.tol(k - int(a.step[al.ia[0]])))
    # the run with the fixed divisor: its loss is the other's times n / D
    side = next((s for s, f in (("b", lb / la), ("a", la / lb)) if rel(f, n / full) <= ftol), None)
    if side is None:
        return None
    ga, gb = float(a.grad_norm[ra]), float(b.grad_norm[rb])
    grads = math.isfinite(ga) and math.isfinite(gb) and ga > 0 and gb > 0
    if grads and rel(ga / gb, la / lb) > ftol:
        return None  # the gradients do not carry the factor: something else changed the loss
    d, m = int(full), int(n)
    other = "a" if side == "b" else "b"
    f = lb / la if side == "b" else la / lb
    return Finding(
        "loss_scale",
        f"{al.premise} the runs agree on every batch of {d} and part at step {k}, the first batch of {m} "
        f"examples, where run {side}'s loss is x{f:.6g} run {other}'s"
        + (" and every gradient carries the same factor" if grads else "") +
        f" ({m}/{d}): run {side} divides the sum of its per-example losses by a fixed {d} (the full batch: "
        f"{dr.fixed_divisor_code(d)}), run {other} averages over the examples the step has.",
        steps=[k], variables=[],
        evidence={"step": k, "loss_a": la, "loss_b": lb, "factor": la / lb, "batch": m,
                  "fixed_divisor_run": side, "divisor": d, "grad_norm_a": ga if grads else None,
                  "grad_norm_b": gb if grads else None, "matches": f"a fixed divisor of {d} for a batch of {m}",
                  "tolerance": ftol},
        fix=dr.fixed_divisor_fix(side), explains=1.0)


def _mask_ignored(a: RunData, b: RunData, step: int, rows: tuple[int, int], ftol: float, ev: dict[str, Any],
                  premise: str, tol: float) -> Finding | None:
    """One run's Keras loss honoured a mask the other run's loss never received.

    A model whose output carries a Keras mask (``Embedding(mask_zero=True)``, ``Masking``) has
    its Keras loss objects average over the valid entries only; a loss function called on the
    output (``keras.losses.sparse_categorical_crossentropy``) or a hand-written loss gets no mask
    and averages over the padding too. The loss difference then is no constant factor (the padded
    entries' own losses are added in). Decided on one step's loss details (the witness step, or the
    step where the runs part): a mask with padding recorded by one run's loss, none by the other's,
    on predictions of the same shape.
    """
    runs = {"a": a, "b": b}
    info = {side: runs[side].loss_info_of(step) for side in ("a", "b")}
    loss_a, loss_b = float(a.loss[rows[0]]), float(b.loss[rows[1]])
    masked = [side for side in ("a", "b") if info[side].get("mask_valid") is not None
              and info[side].get("mask_count") and info[side]["mask_valid"] < info[side]["mask_count"]]
    if len(masked) != 1:
        return None
    side = masked[0]
    other = "b" if side == "a" else "a"
    mi, oi = info[side], info[other]
    if not oi or oi.get("mask_valid") is not None:
        return None  # nothing recorded for the other run's loss, or it got a mask too
    if mi.get("y_pred_shape") and oi.get("y_pred_shape") and list(mi["y_pred_shape"]) != list(oi["y_pred_shape"]):
        return None
    valid, total = int(mi["mask_valid"]), int(mi["mask_count"])
    loss_other = loss_b if other == "b" else loss_a
    mean_all = [float(x) for x in (mi.get("per_sample_mean"), oi.get("per_sample_mean"))
                if x is not None and math.isfinite(float(x))]
    over_all = any(rel(loss_other, m) <= max(ftol, tol) for m in mean_all)
    name = oi.get("function") or oi.get("cls") or "a hand-written loss"
    how = (f"run {other}'s loss equals the mean of the per-entry losses over all {total} entries, padding "
           "included" if over_all else f"run {other}'s loss ({name}) received no mask")
    return Finding(
        "gradient_mismatch",
        f"{premise} the losses differ at step {step} ({loss_a:.6g} vs {loss_b:.6g}) and not by a constant "
        f"factor: run {side}'s Keras loss ({mi.get('cls') or mi.get('name')}) averaged over the {valid} valid "
        f"entries of the mask the model's output carries ({valid} of {total}; the padding of Embedding("
        f"mask_zero=True) or Masking), while {how}.",
        steps=[step], variables=[],
        evidence={**ev, "masked_run": side, "mask_valid": valid, "mask_count": total,
                  "unmasked_loss": name, "unmasked_mean_over_all_entries": over_all},
        fix=(f"Apply the mask in run {other}'s loss: call a Keras loss object on the model's output "
             "(`loss_fn(y, model(x, training=True))` reads the mask Keras attaches to it, as fit() does), or "
             "weight the per-entry losses by the mask and divide by its sum "
             "(`tf.reduce_sum(loss * mask) / tf.reduce_sum(mask)`, with `mask = tf.cast(x != 0, loss.dtype)` for "
             "`mask_zero=True`)."),
        explains=1.0)


def _loss_weights_fix(weighting: tuple[str, dict[str, Any], bool] | None) -> str | None:
    """The fix for a step-0 loss difference; None leaves the catalogue's."""
    if not weighting:
        return None
    measured = [k for k in weighting[1] if k.endswith("_measured")]
    if measured:
        other = measured[0].split("_")[2]
        side = "b" if other == "a" else "a"
        w = weighting[1][f"loss_weights_{side}"]
        return (f"Weight run {other}'s outputs' losses by {w}, as run {side}'s compile(loss_weights=...) does "
                f"({_WEIGHTED_SUM}, in the order of the model's outputs), or give both runs the same weights.")
    if weighting[2]:
        return f"Weight every output's loss as compile(loss_weights=...) does ({_WEIGHTED_SUM}), or give both " \
               "runs the same loss_weights."
    return (f"{get('gradient_mismatch').fix} If the hand-written loss sums the outputs' losses, weight "
            f"them as compile(loss_weights=...) does ({_WEIGHTED_SUM}).")


_WEIGHTED_SUM = "`loss = sum(w * l for w, l in zip(loss_weights, output_losses))`"


_MASKING = ("Masking", "Embedding")  # layers that can attach a mask Keras losses then honour


def _sum_divisor(a: RunData, b: RunData, s: Step0, c: float, ftol: float) -> dict[str, Any] | None:
    """A run whose Keras loss returns per-example losses (``reduction="none"``) and whose step
    loss is their sum over a whole count that is not the batch's: the divisor a hand-written
    mean used (``tf.nn.compute_average_loss(per_example_loss, global_batch_size=D)``, or
    ``reduce_sum(loss) / D``), measured from the recorded per-example mean and count. The other
    run's loss must be its own per-example mean, and the loss factor ``c`` (a over b) what
    the divisor gives."""
    for side, run, other in (("a", a, b), ("b", b, a)):
        info = run.loss_info.get(s.step) or {}
        if info.get("reduction") != "none" or info.get("calls"):
            continue
        pm, n = info.get("per_sample_mean"), info.get("per_sample_count")
        row = s.row_a if side == "a" else s.row_b
        loss = float(run.loss[row])
        reg = float(run.reg_loss[row]) if run.reg_loss.size else float("nan")
        if math.isfinite(reg) and reg > 0:
            continue
        if not (isinstance(pm, (int, float)) and isinstance(n, (int, float)) and n >= 1 and pm > 0
                and math.isfinite(loss) and loss > 0):
            continue
        d = pm * n / loss
        di = round(d)
        if di < 1 or abs(d - di) > ftol * d or di == int(n):
            continue
        oinfo = other.loss_info.get(s.step) or {}
        opm = oinfo.get("per_sample_mean")
        ol = float(other.loss[s.row_b if side == "a" else s.row_a])
        if not (isinstance(opm, (int, float)) and rel(opm, ol) <= ftol):
            continue  # the other run's loss is not the mean of its per-example losses
        factor = di / n if side == "b" else n / di  # a's loss over b's
        if rel(factor, c) > ftol:
            continue
        return {"run": side, "divisor": di, "batch": int(n), "times_batch": di / n}
    return None


def _unmatched_factor_hints(a: RunData, b: RunData) -> list[str]:
    """Facts of the two runs that make a per-batch factor (no fixed count) plausible."""
    out = []
    for side, run in (("a", a), ("b", b)):
        if any(c.get("sample_weight") or c.get("class_weight") for c in run.fit_calls()) or any(
                i.get("sample_weight") for i in run.loss_info.values()):
            out.append(f"run {side} weights its samples: a Keras loss divides the weighted sum by the batch "
                       "size, a hand-written one often by sum(weights)")
    masking = sorted({str(x.get("class_name")) for r in (a, b) for x in r.layers
                      if x.get("class_name") in _MASKING})
    if masking:
        out.append(f"the model has {'/'.join(masking)} layers: with a mask (mask_zero=True, Masking), a "
                   "Keras loss divides by the number of valid entries, `reduce_mean(loss * mask)` by all "
                   "of them")
    return out


def _worst(s: Step0, parallel: np.ndarray, tol: float) -> list[str]:
    bad = [(float(s.norm_rel[i]) + (0 if parallel[i] else 1), s.names[i]) for i in range(len(s.names))
           if not parallel[i] or s.norm_rel[i] > tol]
    return [n for _, n in sorted(bad, reverse=True)]


def update_diffs(a: RunData, b: RunData, ra: np.ndarray, rb: np.ndarray, al: Alignment) -> np.ndarray:
    """Relative differences of the aligned variables' update norms, run a's rows ``ra`` against run
    b's rows ``rb`` (steps by variables): 0 where neither run recorded one, inf where one only did."""
    return rel(a.update_norm[ra][:, al.ja], b.update_norm[rb][:, al.jb])


def same_updates(a: RunData, b: RunData, al: Alignment) -> dict[str, Any] | None:
    """The runs train identically although their recorded gradients differ.

    Every aligned step has the same loss, and every step whose per-variable numbers both
    runs recorded has the same update norms for every aligned variable (within the
    measured noise), while some gradient norm differs: the gradients are recorded at
    another point of the same computation (clipped or scaled by hand before
    ``apply_gradients`` in one run, inside the optimizer in the other). Returns the
    evidence, or None.
    """
    n = al.aligned_steps
    if n < 1 or al.stochastic or not al.ja.size:
        return None
    rows_a, rows_b = al.ia[:n], al.ib[:n]
    steps = a.step[rows_a]
    tol = al.noise.tol(steps - steps[0])
    la, lb = a.loss[rows_a], b.loss[rows_b]
    # The losses equal, or one constant factor apart at every step (a loss summed over the batch
    # with the learning rate divided by the batch size): the updates decide.
    factor = 1.0
    if np.isfinite(la[0]) and np.isfinite(lb[0]) and la[0] != 0 and not float(rel(la[0], lb[0])) <= tol[0]:
        factor = float(lb[0] / la[0])
    follows = np.where(np.isnan(la) & np.isnan(lb), 0.0, rel(factor * la, lb)) <= tol
    losses_follow = bool(np.all(follows))
    ra, rb = a.rows(steps), b.rows(steps)
    ok = (ra >= 0) & (rb >= 0) & a.stats[rows_a] & b.stats[rows_b]
    if not ok.any():
        return None
    # The losses part at a step whose weights the compared updates do not vouch for (an earlier
    # step without per-variable numbers: its update may differ, e.g. another learning rate from
    # then on): the losses may part because the weights did.
    parts = int(np.flatnonzero(~follows)[0]) if not losses_follow else n
    if not losses_follow and not ok[:parts].all():
        return None
    ra, rb, t = ra[ok], rb[ok], tol[ok][:, None]
    du = update_diffs(a, b, ra, rb, al)
    dg = rel(a.norm[ra][:, al.ja], b.norm[rb][:, al.jb])
    if not np.all(du <= t):
        return None
    out = {"steps_compared": int(ok.sum()), "max_update_rel_diff": float(np.max(du)),
           "max_grad_norm_rel_diff": float(np.max(dg))}
    if not losses_follow:
        # Every gradient and every update agrees at every compared step (several of them, so
        # the weights stayed equal), yet the recorded losses do not follow each other: the
        # runs train identically and the recorded losses are different quantities (gradients
        # of several losses taken one by one and summed record the last loss differentiated).
        if int(ok.sum()) < 2 or np.any(dg > t) or not np.isfinite(la).all() or not np.isfinite(lb).all():
            return None
        out["losses_differ"] = True
        return out
    if not np.any(dg > t):
        return None
    if factor != 1.0:
        out["loss_factor"] = factor
    return out


UPDATE_WINDOW = 32
"""Aligned steps whose per-variable update norms :func:`first_departure` checks when neither the
loss nor the gradient norm departs (the warm-up steps, which always carry per-variable numbers)."""


def first_departure(a: RunData, b: RunData, al: Alignment) -> dict[str, Any] | None:
    """The first aligned step whose loss, gradient norms or update norms differ beyond noise.

    Loss and global gradient norm are checked over every aligned step; the
    per-variable numbers over the window before the first step-level departure (a
    variable that departs moves the loss one step later) or, without one, the updates
    over the first :data:`UPDATE_WINDOW` steps.
    """
    n = al.aligned_steps
    if n < 1 or al.stochastic:
        return None
    rows_a, rows_b = al.ia[:n], al.ib[:n]
    steps_all = a.step[rows_a]

    def both_nan_zero(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(x) & np.isnan(y), 0.0, rel(x, y))

    dl = both_nan_zero(a.loss[rows_a], b.loss[rows_b])
    # Gradient norms count only where both runs recorded per-variable statistics (the
    # tracer's cadence may differ between the runs); the loss is recorded every step.
    both_stats = a.stats[rows_a] & b.stats[rows_b]
    dn = np.where(both_stats, both_nan_zero(a.grad_norm[rows_a], b.grad_norm[rows_b]), 0.0)
    d = np.maximum(dl, dn)
    # The tolerance grows with the steps over which rounding differences accumulate. Runs that
    # agree bit for bit from the start (the same losses on the same weights) have accumulated
    # none: the steps after the last identical one are counted from there, so runs that part
    # at step 60 after sixty identical steps are held to a step-1 tolerance, not to sixty
    # steps of drift they never had.
    parted = np.flatnonzero(d != 0)
    first = int(parted[0]) if parted.size else 0
    base = steps_all[first - 1] if first > 0 else steps_all[0]
    tol = al.noise.tol(np.maximum(steps_all - base, 0))
    prev = np.concatenate([[0.0], d[:-1]])
    # Over the tolerance, and either at the first step that differs at all or abruptly (not a
    # smooth drift). Drift is noise amplified by training; after identical steps there is no
    # noise to amplify, so the first difference beyond the tolerance is a departure however
    # smoothly it then grows (weights decayed by hand from some step on).
    abrupt = (d > JUMP * np.maximum(prev, tol)) | (np.arange(n) == first)
    drift = np.flatnonzero(d > tol)
    over = np.flatnonzero((d > tol) & abrupt)
    if drift.size and (not over.size or drift[0] < over[0]):
        al.noise.observed["noise_amplified_past_tolerance_from_step"] = int(steps_all[drift[0]])
    al.noise.observed["loss_rel_diff_by_step"] = [float(x) for x in dl[: min(n, 8)]]
    al.noise.observed["max_loss_rel_diff_over_aligned_steps"] = float(np.max(dl))
    # Which variable departed first: per-variable numbers in the steps leading to it. With no
    # departure of the loss or the gradient norm, the first steps' updates are checked on their
    # own: an optimizer that applies another update to the same gradients (a clipping threshold
    # crossed in one run, a decay or a rescaling of the update) moves the loss only a step later,
    # and by less than the tolerance when that step is the last or the rate is small.
    if over.size:
        k0: int | None = int(over[0])
        lo, hi = int(steps_all[max(0, k0 - 8)]), int(steps_all[k0]) + 1
    else:
        k0 = None
        lo, hi = int(steps_all[0]), int(steps_all[min(n, UPDATE_WINDOW) - 1]) + 1
    for run in (a, b):
        run.ensure_rows(lo, hi)
    pos = np.flatnonzero((steps_all >= lo) & (steps_all < hi))
    ra, rb = a.rows(steps_all[pos]), b.rows(steps_all[pos])
    ok = (ra >= 0) & (rb >= 0)
    pos, ra, rb = pos[ok], ra[ok], rb[ok]
    k1, j1, what = None, None, "loss"
    if pos.size and al.ja.size:
        ga, gb = a.norm[ra][:, al.ja], b.norm[rb][:, al.jb]
        ua, ub = a.update_norm[ra][:, al.ja], b.update_norm[rb][:, al.jb]
        dg, du = both_nan_zero(ga, gb), both_nan_zero(ua, ub)
        rec = (a.stats[rows_a[pos]] & b.stats[rows_b[pos]])[:, None]
        dg, du = np.where(rec, dg, 0.0), np.where(rec, du, 0.0)
        quiet = negligible_grads(ga, gb, a.grad_norm[rows_a[pos]], b.grad_norm[rows_b[pos]], al)
        dg, du = np.where(quiet, 0.0, dg), np.where(quiet, 0.0, du)
        t = tol[pos][:, None]
        if k0 is not None:
            bad = (dg > t) | (du > t)
        else:  # as for the loss: beyond the tolerance, and abruptly or after identical updates;
            # only the updates count here, so they also name the variable and what departed
            prev = np.vstack([np.zeros((1, du.shape[1])), du[:-1]])
            bad = (du > t) & ((du > JUMP * np.maximum(prev, t)) | (prev == 0))
            dg = np.zeros_like(dg)
        rows = np.flatnonzero(bad.any(axis=1))
        if rows.size:
            r = int(rows[0])
            k1 = int(pos[r])
            score = np.maximum(dg[r], du[r])
            j1 = int(np.argmax(np.where(np.isfinite(score), score, 1e300)))
            what = "gradient" if dg[r, j1] > t[r, 0] else "update"
    cands = [k for k in (k0, k1) if k is not None]
    if not cands:
        return None
    k = min(cands)
    out: dict[str, Any] = {"step": int(steps_all[k]), "loss_a": float(a.loss[rows_a[k]]),
                           "loss_b": float(b.loss[rows_b[k]]),
                           "loss_rel_diff": float(dl[k]), "grad_norm_rel_diff": float(dn[k]),
                           "tolerance": float(tol[k]),
                           "what": what if k1 == k else ("loss" if dl[k] > tol[k] else "gradient_norm"),
                           # the losses or global gradient norms part at some aligned step (not the updates alone)
                           "loss_departs": k0 is not None}
    if k1 == k and j1 is not None:
        out["variable"] = a.var_name(int(a.var_index[al.ja[j1]]))
    return out


def distribution_scale(a: RunData, b: RunData, al: Alignment) -> list[Finding]:
    """Unaligned runs: a constant factor between the runs' losses or gradient norms, in distribution."""
    out: list[Finding] = []
    m = min(a.n_steps, b.n_steps, 50)
    if m < 3:
        return out
    la, lb = a.loss[:m], b.loss[:m]
    ok = np.isfinite(la) & np.isfinite(lb) & (la > 0) & (lb > 0)
    if ok.sum() < 3:
        return out
    lr = np.log(la[ok]) - np.log(lb[ok])
    # The step-to-step spread of the log ratio is the measured noise of unaligned runs;
    # the median of n of them is known to ~1.25 sigma / sqrt(n) (in log). A match is
    # claimed within 3 of those, converted to the relative difference match_factor
    # compares, and never looser than 10 %: a factor known no better than that names nothing.
    sigma = float(np.std(lr)) + 1e-12
    se = 1.2533 * sigma / math.sqrt(int(ok.sum()))
    c = float(np.exp(np.median(lr)))
    cands = candidate_factors(a, b)
    al.noise.observed["distribution_loss_ratio"] = c
    al.noise.observed["distribution_log_ratio_spread"] = sigma
    tol = -math.expm1(-3 * se)
    mt = match_factor(c, cands, max(tol, 0.02)) if tol <= 0.1 else None
    if mt and abs(math.log(c)) > 3 * sigma:
        out.append(Finding(
            "loss_scale", severity="warning",
            summary=f"the runs are not aligned, but over their first {int(ok.sum())} steps run a's losses are "
            f"x{c:.4g} run b's (spread {sigma:.2g} in log), which matches {mt[0]}.",
            steps=[], evidence={"median_loss_ratio": c, "log_ratio_spread": sigma, "steps": int(ok.sum()),
                                "matches": mt[0]},
            explains=0.7))
    return out


# A factor beneath another cause is claimed only when the step-0 ratios (loss and each
# gradient norm) spread less than this in log around it: a reduction scales every gradient
# alike, a training mode or layer setting changes each one differently.
BENEATH_SPREAD = 0.15


def scale_beneath(a: RunData, b: RunData, al: Alignment, cause: str) -> Finding | None:
    """A loss factor seen through another cause that makes step 0 incomparable number by number.

    With another training mode (Dropout off in one run) or another layer setting, step 0's
    loss and gradients differ by no exact factor, so ``loss_scale`` stays silent. When the
    loss ratio and every gradient-norm ratio still cluster around one value (spread below
    :data:`BENEATH_SPREAD` in log), that value is far from 1, and it matches a count the
    runs explain (batch size, outputs, ...; within twice the spread), the reduction
    differs too: reported as a warning beside ``cause``, to confirm once it is fixed.
    """
    s = step0(a, b, al)
    if s is None or not (s.loss_a > 0 and s.loss_b > 0):
        return None
    r = np.asarray(s.ratios, dtype=np.float64)  # norm_a / norm_b
    keep = np.isfinite(r) & (r > 0) & ~np.asarray(s.negligible, dtype=bool)
    if int(keep.sum()) < 2:
        return None
    logs = np.concatenate([[math.log(s.loss_a / s.loss_b)], np.log(r[keep])])
    spread = float(np.std(logs))
    c = float(math.exp(np.median(logs)))
    if spread > BENEATH_SPREAD or abs(math.log(c)) <= max(3 * spread, math.log(1.5)):
        return None
    m = match_factor(c, candidate_factors(a, b, (s.step, s.step)), max(2 * spread, 0.02))
    if m is None:
        return None
    big, small, cf = ("a", "b", c) if c >= 1 else ("b", "a", 1 / c)
    lo, hi = float(np.min(r[keep])), float(np.max(r[keep]))
    lo, hi = (lo, hi) if c >= 1 else (1 / hi, 1 / lo)
    return Finding(
        "loss_scale", severity="warning",
        summary=f"Beneath the {cause}, the scale differs too: at step {s.step} run {big}'s loss is "
        f"x{(s.loss_a / s.loss_b) ** (1 if c >= 1 else -1):.4g} run {small}'s and its gradient norms x{lo:.4g} "
        f"to x{hi:.4g} (median x{cf:.4g}). Another mode or setting changes each gradient differently; a "
        f"factor shared by all of them is a loss reduced differently, and this one matches {m[0]}. Fix the "
        f"{cause} first and compare again: the factor is then measured exactly.",
        steps=[s.step],
        evidence={"factor": c, "larger_loss": big, "matches": m[0], "matched_value": 1 / m[1] if m[2] else m[1],
                  "log_ratio_spread": spread, "beneath": cause, **s.evidence()},
        fix=_loss_scale_fix(m[0]),
        explains=0.6)


# Non-trainable state moved by the same computation agrees to float rounding; a state update
# that differs is of the order of the update itself.
STATE_REL = 1e-3


def state_finding(a: RunData, b: RunData, al: Alignment, st: dict[str, Any]) -> Finding:
    """``state_mismatch``: equal training whose non-trainable state moves differently (:func:`state_departs`)."""
    v = st["variables"][0]
    said = "; ".join(f"{x['variable']} changes by {x['delta_a']:.4g} in run a, {x['delta_b']:.4g} in run b"
                     for x in st["variables"][:3])
    layers = sorted({a.var_info(int(i)).get("layer") or "" for i in a.state_index} - {""})
    da = [abs(x["delta_a"]) for x in st["variables"]]
    db = [abs(x["delta_b"]) for x in st["variables"]]
    larger = "b" if all(y > x for x, y in zip(da, db, strict=True)) else (
        "a" if all(x > y for x, y in zip(da, db, strict=True)) else None)
    return Finding(
        "state_mismatch", severity="warning",
        summary=f"the losses, gradients and updates agree at every one of the {al.aligned_steps} aligned steps, "
        f"but the non-trainable state moves differently from step {st['step']} on ({st['steps_differing']} of "
        f"{st['steps_compared']} steps compared): {said}. Training is the same; what inference uses is not: "
        + (f"run {larger}'s changes are the larger ones: it likely updates these statistics again within a step "
           if larger else "one run updates these statistics again within a step, or with another momentum ")
        + "(an extra forward pass in training mode, e.g. a "
        "metric computed with `model(x, training=True)` after the tape), so evaluate(), predict() and "
        "validation results differ.",
        steps=[st["step"]], variables=[x["variable"] for x in st["variables"]],
        layers=layers[:8], evidence={**st, "first_variable": v["variable"], "larger_changes": larger}, explains=0.8)


def _state_spans(run: RunData) -> np.ndarray:
    """Per row: how many steps the row's recorded state change covers (the steps since the
    run's previous row with a recorded change, or since the start; 0 where none is recorded)."""
    assert run.state_delta is not None
    spans = np.zeros(len(run.step), dtype=np.int64)
    prev = -1
    for r in np.flatnonzero(np.isfinite(run.state_delta).any(axis=1)):
        spans[r] = int(run.step[r]) - prev
        prev = int(run.step[r])
    return spans


def _paired_state_deltas(a: RunData, b: RunData, al: Alignment, rng: bool) -> tuple[Any, ...] | None:
    """The paired state variables' recorded changes at the aligned steps, random generators only
    (``rng``) or none of them: ``(sa, sb, rows_a, delta_a, delta_b, comparable)``, or None. A
    recorded change spans the steps since that run's previous recorded one (state is read on full
    steps only, and each run chooses its own cadence): comparable where both spans agree."""
    n = al.aligned_steps
    if n < 1 or al.stochastic or a.state_delta is None or b.state_delta is None or not al.sa.size:
        return None
    keep = (a.rng[al.sa] & b.rng[al.sb]) if rng else ~(a.rng[al.sa] | b.rng[al.sb])
    sa, sb = al.sa[keep], al.sb[keep]
    if not sa.size:
        return None
    rows_a, rows_b = al.ia[:n], al.ib[:n]
    da, db = a.state_delta[rows_a][:, sa], b.state_delta[rows_b][:, sb]
    same_span = _state_spans(a)[rows_a] == _state_spans(b)[rows_b]
    return sa, sb, rows_a, da, db, np.isfinite(da) & np.isfinite(db) & same_span[:, None]


def state_departs(a: RunData, b: RunData, al: Alignment) -> dict[str, Any] | None:
    """The first aligned step at which paired non-trainable state (BatchNormalization's moving
    statistics; random generators excluded) changed by different amounts in the two runs.

    Compared over the aligned steps whose state changes both runs recorded over the same
    span of steps (the first ``HEAD``), with a tolerance of ``max(16 x the measured float noise, STATE_REL)``.
    Returns ``{"step", "steps_compared", "variables": [{"variable", "delta_a", "delta_b"}]}``.
    """
    got = _paired_state_deltas(a, b, al, rng=False)
    if got is None:
        return None
    sa, sb, rows_a, da, db, ok = got
    if not ok.any():
        return None
    steps = a.step[rows_a]
    tol = np.maximum(16 * al.noise.tol(steps - steps[0]), STATE_REL)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        bad = ok & (rel(da, db) > tol)
    hit = np.flatnonzero(bad.any(axis=1))
    if not hit.size:
        return None
    k = int(hit[0])
    cols = np.flatnonzero(bad[k])
    return {"step": int(steps[k]), "steps_compared": int(ok.any(axis=1).sum()),
            "steps_differing": int(bad.any(axis=1).sum()),
            "layers_a": sorted({str(a.var_info(int(a.state_index[sa[j]])).get("layer") or "") for j in cols} - {""}),
            "layers_b": sorted({str(b.var_info(int(b.state_index[sb[j]])).get("layer") or "") for j in cols} - {""}),
            "variables": [{"variable": a.var_name(int(a.state_index[sa[j]])), "delta_a": float(da[k, j]),
                           "delta_b": float(db[k, j])} for j in cols[:8]]}


def rng_draws_differ(a: RunData, b: RunData, al: Alignment) -> dict[str, Any] | None:
    """The first aligned step at which a paired random generator's state (a Keras SeedGenerator:
    a counter that advances with every draw) moved by another amount in the two runs: one run
    draws more random numbers per step (the model or a Dropout called again in training mode, an
    extra random op), so from then on the random layers apply other masks even where both
    started from the same seed. Compared where both runs recorded the change over the same span.
    """
    got = _paired_state_deltas(a, b, al, rng=True)
    if got is None:
        return None
    sa, _sb, rows_a, da, db, ok = got
    bad = ok & (da != db)
    hit = np.flatnonzero(bad.any(axis=1))
    if not hit.size:
        return None
    k = int(hit[0])
    cols = np.flatnonzero(bad[k])
    spans = _state_spans(a)[rows_a]
    return {"step": int(a.step[rows_a][k]), "span": int(spans[k]),
            "variables": [{"variable": a.var_name(int(a.state_index[sa[j]])), "layer": a.var_info(
                int(a.state_index[sa[j]])).get("layer"), "advance_a": float(da[k, j]), "advance_b": float(db[k, j])}
                for j in cols[:8]]}
