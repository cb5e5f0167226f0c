"""Weights updated by hand (the tracer's stand-in optimizer ``ManualUpdate``, see
``gradtrace/_manual.py``): the rule such an update applied, measured on the run itself, and how
it stands against the other run's optimizer.

A hand-written update records no learning rate, but every full step records each variable's
gradient norm and update norm: their ratio is the rate that acted. One ratio for every variable
and every step is plain gradient descent at that rate; one per step, changing over the steps, a
schedule; ratios that differ between variables (or move in ways a schedule does not) are
another rule: momentum, an adaptive rule such as Adam, a per-variable rate or clipping written
by hand. Measured on the first :data:`STEPS` recorded full steps (the warm-up records every
step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from gradtrace.compare.data import RunData

MANUAL = "ManualUpdate"
STEPS = 8
# Relative spread of update/gradient ratios still taken as one rate: both norms are float32
# reductions, the update measured as the difference of two weights (cancellation where the update
# is small against the weight).
SAME = 1e-2
# SGD settings that make it more than `w -= lr * g` when on (keras SGD / BaseOptimizer arguments).
_SGD_EXTRAS = ("momentum", "nesterov", "clipnorm", "clipvalue", "global_clipnorm", "weight_decay")


@dataclass
class HandRate:
    """What one ``ManualUpdate``'s updates were, measured from its steps' norms."""

    steps: np.ndarray  # (k,) the steps measured (full steps with a gradient and an update)
    rates: np.ndarray  # (k,) median update/gradient ratio over the variables at each
    lo: float  # smallest and largest ratio over the variables and steps
    hi: float
    per_step_spread: float  # largest spread over the variables within one step (relative)
    writes: list[str]

    @property
    def rate(self) -> float:
        return float(self.rates[0])

    @property
    def plain(self) -> bool:
        """One rate for every variable and step: ``v.assign_sub(rate * g)``."""
        return self.per_step_spread <= SAME and _spread(self.rates) <= SAME

    @property
    def scheduled(self) -> bool:
        """One rate for every variable at each step, changing over the steps (a schedule)."""
        return self.per_step_spread <= SAME and not self.plain

    def words(self, side: str) -> str:
        if self.plain:
            return f"run {side} writes its update by hand, {self.rate:.6g} x each gradient (plain gradient descent)"
        if self.scheduled:
            return (f"run {side} writes its update by hand, one rate for every variable that changes over the steps "
                    f"({', '.join(f'{r:.4g}' for r in self.rates[:4])}{', ...' if self.rates.size > 4 else ''}: a "
                    "schedule, or momentum)")
        return (f"run {side} writes its update by hand and it is not one rate times the gradient (update/gradient "
                f"norms {self.lo:.4g} to {self.hi:.4g} across variables and steps: momentum, an adaptive rule such "
                "as Adam, a per-variable rate or clipping written by hand)")

    def evidence(self) -> dict[str, Any]:
        return {"rate_first_step": self.rate, "steps": [int(x) for x in self.steps],
                "rates": [float(r) for r in self.rates], "min": self.lo,
                "max": self.hi, "plain": self.plain, "scheduled": self.scheduled, "writes": self.writes}


def _spread(x: np.ndarray) -> float:
    mid = float(np.median(x))
    return float((np.max(x) - np.min(x)) / mid) if mid > 0 else float("inf")


def hand_rate(run: RunData, opt: dict[str, Any]) -> HandRate | None:
    """The measured rule of the run's hand-written optimizer ``opt`` (its description in
    ``RunInfo.optimizers``), over the variables it stepped; None where no full step recorded a
    gradient and an update of them."""
    if opt.get("class") != MANUAL:
        return None
    want = set(opt.get("variables") or [])
    cols = np.array([j for j, i in enumerate(run.var_index) if not want or int(i) in want], dtype=int)
    if not cols.size or not run.var_rows.size:
        return None
    g = run.norm[:, cols]
    u = run.update_norm[:, cols]
    ok = np.isfinite(g) & np.isfinite(u) & (g > 0) & (u > 0)
    rows = [r for r in range(run.var_rows.size) if ok[r].any()][:STEPS]
    if not rows:
        return None
    rates, spread, every = [], 0.0, []
    for r in rows:
        x = u[r][ok[r]] / g[r][ok[r]]
        rates.append(float(np.median(x)))
        spread = max(spread, _spread(x))
        every.append(x)
    allx = np.concatenate(every)
    return HandRate(run.var_rows[rows].astype(int), np.array(rates), float(allx.min()), float(allx.max()), spread,
                    list((opt.get("config") or {}).get("writes") or []))


def _extras(o: dict[str, Any]) -> dict[str, Any]:
    """The settings of an SGD that are on (momentum, clipping, weight decay, EMA)."""
    cfg = {**(o.get("config") or {}), **{k: v for k, v in o.items() if k in _SGD_EXTRAS}}
    return {k: cfg[k] for k in _SGD_EXTRAS if cfg.get(k) not in (None, False, 0, 0.0)}


def _lr(o: dict[str, Any], run: RunData) -> float | None:
    """The optimizer's learning rate at its first step: its description's (a schedule's value at
    step 0), else the run's recorded rate (the steps of a run with several optimizers alternate)."""
    x = o.get("learning_rate")
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return float(x)
    lr = run.lr[np.isfinite(run.lr)]
    return float(lr[0]) if lr.size else None


def _rates_at(run: RunData, steps: np.ndarray) -> np.ndarray | None:
    """The run's recorded learning rate at ``steps``, None where any is not recorded."""
    idx = np.searchsorted(run.step, steps)
    if not steps.size or np.any(idx >= run.step.size) or np.any(run.step[np.minimum(idx, run.step.size - 1)] != steps):
        return None
    lr = run.lr[idx]
    return lr if bool(np.all(np.isfinite(lr))) and bool(np.all(lr > 0)) else None


def compare_pair(side: str, hand: HandRate, other: dict[str, Any], other_run: RunData, single: bool = True
                 ) -> tuple[str, str, bool]:
    """``(what, fix, same)`` for run ``side``'s hand-written update against the other run's
    optimizer ``other``: ``same`` when that optimizer is an SGD without extras at the rate the
    update applied (the class difference is then no difference)."""
    oside = "b" if side == "a" else "a"
    cls = str(other.get("class"))
    if cls == MANUAL:
        theirs = hand_rate(other_run, other)
        if theirs is None:
            return hand.words(side) + ".", "Write the same update rule in both runs.", False
        same = hand.plain and theirs.plain and abs(hand.rate - theirs.rate) <= SAME * hand.rate
        fix = (f"Use the same rate in both hand-written updates: run {side}'s is `v.assign_sub({hand.rate:.6g} * g)`, run "
               f"{oside}'s `v.assign_sub({theirs.rate:.6g} * g)`." if hand.plain and theirs.plain else
               "Write the same update rule in both runs, or use one Keras optimizer in both (`apply_gradients`).")
        return f"{hand.words(side)}; {theirs.words(oside)}.", fix, same
    lr = _lr(other, other_run)
    theirs = _rates_at(other_run, hand.steps) if single else None
    moving = theirs is not None and _spread(theirs) > SAME
    at = (f" at learning rate {lr:.6g}" if lr is not None and not moving else
          f" at learning rates {', '.join(f'{r:.4g}' for r in theirs[:4])}{', ...' if theirs.size > 4 else ''} over "
          "the same steps (a schedule)" if moving else "")
    extras = _extras(other) if cls == "SGD" else {}
    on = ", ".join(f"{k}={v!r}" for k, v in extras.items())
    what = f"{hand.words(side)}; run {oside} steps {cls}{at}" + (f" with {on}" if on else "") + "."
    if cls != "SGD":
        return (what, f"Run {side}'s hand-written update must follow {cls}'s rule exactly (its learning rate, moments, bias "
                      f"correction, epsilon, weight decay); the simplest is `{cls}.apply_gradients(zip(grads, vars))` in "
                      "both runs.", False)
    if theirs is not None and (hand.plain or hand.scheduled):  # the rate step by step
        same_rate = bool(np.all(np.abs(hand.rates - theirs) <= SAME * theirs))
        if not same_rate and (moving or hand.scheduled):
            fix = (f"Make the two rates the same at every step: run {oside}'s SGD steps at "
                   f"{', '.join(f'{r:.4g}' for r in theirs[:4])}, run {side}'s hand-written update at "
                   f"{', '.join(f'{r:.4g}' for r in hand.rates[:4])} (steps {', '.join(str(int(x)) for x in hand.steps[:4])}):"
                   " compute the hand-written rate from the same schedule and step count (a Keras schedule object "
                   "is evaluated at the optimizer's iteration, from 0).")
            return what, fix, False
    else:
        same_rate = lr is not None and hand.plain and abs(hand.rate - lr) <= SAME * lr
    if same_rate and not extras:
        return what, "Nothing to change: `v.assign_sub(lr * g)` is SGD's update without momentum, clipping or decay.", True
    parts = []
    if hand.plain and lr is not None and not same_rate:
        parts.append(f"give the SGD `learning_rate={hand.rate:.6g}` or write `v.assign_sub({lr:.6g} * g)` in run {side}")
    if extras and (hand.plain or hand.scheduled):
        how = {"momentum": "keep a velocity per variable, `m.assign(momentum * m - lr * g); v.assign_add(m)`",
               "nesterov": "Nesterov's look-ahead (`v.assign_add(momentum * m - lr * g)` after the velocity update)",
               "clipnorm": "clip each gradient first, `g = tf.clip_by_norm(g, clipnorm)`",
               "clipvalue": "clip each gradient first, `g = tf.clip_by_value(g, -clipvalue, clipvalue)`",
               "global_clipnorm": "clip the gradients together first, `grads, _ = tf.clip_by_global_norm(grads, "
                                  "global_clipnorm)`",
               "weight_decay": "decay each weight too, `v.assign_sub(lr * weight_decay * v)`"}
        parts.append(f"run {oside}'s SGD has {on}, which the hand-written update does not do: "
                     + "; ".join(how[k] for k in extras))
    if not parts:
        parts.append(f"write exactly SGD's rule{' with ' + on if on else ''} in run {side}, or use the SGD in both runs")
    return what, "Make the two updates the same: " + "; ".join(parts) + ".", False


class Hand(NamedTuple):
    """The hand-written updates of a comparison, set against the other run's optimizers."""

    what: str  # the rule each applied against the other optimizer, in words
    fix: str
    same: bool  # every pair involving one is the same rule at the same rate, nothing else differing
    evidence: dict[str, Any]  # per run (and optimizer): the rates measured


def describe(a: RunData, b: RunData, pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> Hand | None:
    """The hand-written updates among paired optimizers (:func:`gradtrace.compare.detect_pair.
    optimizer_pairs`), or None when neither run updates by hand. Computed once per comparison by
    the engine and handed to the configuration and the step-0 detectors."""
    whats, fixes, same, ev = [], [], True, {}
    for n, (oa, ob) in enumerate(pairs):
        for side, run, mine, other, orun in (("a", a, oa, ob, b), ("b", b, ob, oa, a)):
            if mine.get("class") != MANUAL or (side == "b" and oa.get("class") == MANUAL):
                continue
            hand = hand_rate(run, mine)
            if hand is None:
                same = False
                continue
            what, fix, ok = compare_pair(side, hand, other, orun, single=len(pairs) == 1)
            label = f"optimizer {n + 1}: " if len(pairs) > 1 else ""
            whats.append(label + what)
            fixes.append(label + fix if len(pairs) > 1 else fix)
            same = same and ok
            ev[f"hand_written_{side}" + (f"_{n + 1}" if len(pairs) > 1 else "")] = hand.evidence()
    if not whats:
        return None
    return Hand(" ".join(whats), " ".join(fixes), same, ev)
