"""Detectors over one run: facts that are defects on their own (``gradtrace check``).

Each function takes a :class:`RunData` and returns findings; the pair detectors
reuse the summaries computed here (training modes per layer, gradient/applied
sets, first non-finite value).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradtrace._probes import CROSS_ENTROPIES
from gradtrace.compare.data import HEAD, RunData
from gradtrace.compare.detect_data import (
    CLASS_LOSSES,
    one_batch_finding,
    repeated_step_finding,
    sorted_data_finding,
)
from gradtrace.compare.detect_lost import lost_records
from gradtrace.compare.detect_outside import inventory_layer, untrained_variables
from gradtrace.compare.findings import Finding


def training_modes(run: RunData) -> dict[str, dict[bool, int]]:
    """Layer name -> {effective training flag: first step it ran with it}.

    ``None`` counts as inference: a Keras layer called with ``training=None``
    outside fit() runs BatchNormalization/Dropout in inference mode.
    """
    out: dict[str, dict[bool, int]] = {}
    for modes, first, _count in run.modes:
        for layer, flag in (modes or {}).items():
            seen = out.setdefault(layer, {})
            eff = bool(flag)
            seen[eff] = min(seen.get(eff, first), first)
    return out


# Keras 3's train_step passes training=True only to a model whose call() takes a `training`
# argument (keras/src/backend/tensorflow/trainer.py TensorFlowTrainer.train_step,
# ``self._call_has_training_arg``); the layers inside a model called without it get None.
FIT_WITHOUT_TRAINING = ("fit(), which called the model without `training` (no layer got `training=True`): "
                        "Keras 3 passes it only to a model whose `call` accepts a `training` argument.")
FIT_WITHOUT_TRAINING_FIX = ("Give the subclassed model's `call` a `training=None` argument and pass it on to its "
                            "layers (`def call(self, x, training=None): ... self.dropout(h, training=training)`), "
                            "so that fit() runs them in training mode.")
# A train_step of the user's own calls the model itself: `self(x)` without `training=True` runs
# its layers in inference mode under Keras 3 and tf-keras alike (the flag resolves to the layer's
# default, or tf-keras's learning phase, 0 unless set).
TRAIN_STEP_WITHOUT_TRAINING = ("fit() with a custom `train_step` that called the model without "
                               "`training=True` (no layer got `training=True` in it).")
TRAIN_STEP_WITHOUT_TRAINING_FIX = ("Call the model as `self(x, training=True)` inside the custom `train_step` "
                                   "(and `training=False` in `test_step`), as Keras's own train_step does.")


def fit_without_training(run: RunData, layers: set[str]) -> tuple[str, str] | None:
    """fit() called the model without `training`, so these layers ran in inference mode at every
    fit() step (their flag unset, or their own default) and no layer ever got True there: what
    did it, and its fix. Either a custom ``train_step`` calling ``self(x)``, or Keras 3's own
    train_step with a model whose ``call`` takes no ``training``."""
    calls = run.fit_calls()
    if not calls or not layers:
        return None
    custom = any(c.get("custom_train_step") for c in calls)
    if not custom and run.meta.get("keras_flavour") != "keras3":
        return None
    start = min(int(c.get("first_step") or 0) for c in calls)
    flags = [(layer, flag) for modes, first, _count in run.modes if first >= start
             for layer, flag in (modes or {}).items()]
    if not any(layer in layers for layer, _ in flags) or any(flag for _, flag in flags):
        return None
    if custom:
        return TRAIN_STEP_WITHOUT_TRAINING, TRAIN_STEP_WITHOUT_TRAINING_FIX
    return FIT_WITHOUT_TRAINING, FIT_WITHOUT_TRAINING_FIX


def _holds_layers(run: RunData, layer: str) -> bool:
    """The layer is a model holding other layers: variables of other layers sit under its name
    (``model/dense/kernel``), or its config lists layers (Sequential, Functional)."""
    if any(str(v.get("name") or "").startswith(layer + "/") and v.get("layer") != layer for v in run.variables):
        return True
    configs = run.meta.get("layer_configs") or {}
    idx = next((x.get("index") for x in run.layers if x.get("name") == layer), None)
    cfg = configs.get(str(idx)) if idx is not None else None
    return isinstance(cfg, dict) and "layers" in cfg


def decided_inside(run: RunData, layer: str) -> bool:
    """The layer, a model holding other layers, was called without a training argument (``None``
    at every step) while another layer of the run ran with ``training=True`` at those steps: a model called as
    ``model(x)`` whose layers decide their own mode (Keras 3's augmentation layers default to
    training mode). Its own flag says nothing about what its layers computed; theirs are compared."""
    flags = [(modes or {}).get(layer, "absent") for modes, _f, _n in run.modes]
    if not flags or any(f is not None and f != "absent" for f in flags) or not _holds_layers(run, layer):
        return False
    return all(any(v is True for k, v in (modes or {}).items() if k != layer)
               for modes, _f, _n in run.modes if (modes or {}).get(layer, "absent") is None)


def frozen_layers(run: RunData) -> set[str]:
    """Training-dependent layers that ran with ``trainable=False`` (at some step)."""
    frozen: set[str] = set()
    for names, _first, _count in run.frozen:
        frozen.update(names or [])
    return frozen


# Arguments that set how much a layer draws at random in training mode (Dropout's rate, a
# recurrent layer's dropout and recurrent_dropout, a noise layer's stddev).
_RANDOM_RATES = ("rate", "dropout", "recurrent_dropout", "stddev")


def mode_free_layers(run: RunData) -> set[str]:
    """Training-dependent layers that compute the same in both modes at their settings.

    The recorded arguments name a random rate and every such rate is 0 (a recurrent layer
    without dropout, ``Dropout(0)``), and the layer keeps no state of its own besides a
    random generator (no moving statistics to update).
    """
    configs = run.meta.get("layer_configs") or {}
    stateful = {str(v.get("layer")) for v in run.variables if not v.get("trainable", True)
                and "seed" not in str(v.get("name") or "").rsplit("/", 1)[-1]}
    out: set[str] = set()
    for x in run.layers:
        cfg = configs.get(str(x.get("index")))
        if not isinstance(cfg, dict) or not x.get("training_dependent") or x.get("name") in stateful:
            continue
        rates = [cfg[k] for k in _RANDOM_RATES if k in cfg]
        if rates and all(isinstance(r, (int, float)) and not isinstance(r, bool) and r == 0 for r in rates):
            out.add(str(x.get("name")))
    return out


def recreated_at(run: RunData, lone: list[int], paired: list[int]) -> int | None:
    """The step at which a run trains a new copy of its model: the ``paired`` variables,
    differentiated until step k - 1, get no gradient at any step from k on (the steps that list
    them say so), and the variables without a counterpart (``lone``), absent at the first step,
    are one or more copies of them by shape (a model built again inside the training loop, once
    or at every epoch). Read from the per-variable rows the run has read; None otherwise."""
    if not lone or not paired or run.grad.size == 0:
        return None
    col = {int(v): j for j, v in enumerate(run.var_index)}
    if any(v not in col for v in paired):
        return None
    old = sorted(str(run.var_info(v).get("shape")) for v in paired)
    copies, rest = divmod(len(lone), len(paired))
    if rest or not copies or sorted(str(run.var_info(v).get("shape")) for v in lone) != sorted(old * copies):
        return None
    g_old = run.grad[:, [col[v] for v in paired]]
    had = np.flatnonzero((g_old == 1).any(axis=1))
    if not had.size:
        return None
    k = int(had[-1]) + 1  # the first row after the old copy's last gradient
    after = g_old[k:]
    # from k on the old copy is listed without a gradient at some step (and never with one)
    if not after.size or not (after == 0).all(axis=1).any():
        return None
    # the new copies exist by then: some lone variable is listed at or after row k, none before
    g_new = run.grad[:, [col[v] for v in lone if v in col]]
    if not g_new.size or not np.isnan(g_new[:k]).all() or np.isnan(g_new[k:]).all():
        return None
    return int(run.var_rows[k])


def model_recreated_finding(run: RunData, k: int, names: list[str], side: str | None = None,
                            copies: int = 1) -> Finding:
    """The ``model_recreated`` finding of a run that trains a new copy of its model from step
    ``k`` (found by :func:`recreated_at`); ``names`` are the new copy's variables. ``side``
    ("a"/"b") words it for a comparison (an error, the other run keeping one model); without
    it, for ``gradtrace check`` (a warning)."""
    if side is None:
        return Finding(
            "model_recreated", severity="warning",
            summary=f"a new copy of the model is trained from step {k}: {len(names)} variable(s) of the first "
            f"model's shapes appear{f' ({copies} copies of it, one after another)' if copies > 1 else ''} and "
            f"take the gradients, the first model's get none after step {k - 1} (a model built inside the training "
            "loop): training restarts from fresh weights"
            + (" each time a copy is built." if copies > 1 else "."),
            steps=[k], variables=names, evidence={"step": k, "copies": copies}, explains=0.9)
    other = "b" if side == "a" else "a"
    rows = np.flatnonzero(run.step == k)
    reset = bool(rows.size and rows[0] > 0 and np.isfinite(run.iterations[rows[0]])
                 and run.iterations[rows[0]] <= run.iterations[rows[0] - 1])
    return Finding(
        "model_recreated",
        f"run {side} ('{run.name}') trains a new copy of its model from step {k}: {len(names)} variable(s) of "
        f"the same shapes as its first model's ({', '.join(names[:4])}{' …' if len(names) > 4 else ''}) appear "
        f"and get the gradients from step {k} on, while the variables trained until step {k - 1} get none "
        f"after it" + (", and its optimizer's iteration counter starts over" if reset else "")
        + f": the model (and optimizer) is built again inside the training loop (e.g. once per epoch), so "
        f"training restarts from freshly initialised weights and what steps 0-{k - 1} learned is dropped. Run "
        f"{other} keeps training one model.",
        steps=[k], variables=names, evidence={"run": side, "step": k, "new_variables": names,
                                              "optimizer_restarts": reset}, explains=1.0)


def layer_of(run: RunData, name: str) -> dict[str, Any] | None:
    for x in run.layers:
        if x.get("name") == name:
            return x
    return None


def _state_layer(run: RunData, v: int) -> str | None:
    return run.var_info(v).get("layer")


@dataclass
class VarSets:
    """Which trainable variables got gradients and updates over a run."""

    no_grad: list[int]  # never got a gradient
    some_no_grad: dict[int, int]  # var -> first step without a gradient (but had some)
    not_applied: dict[int, int]  # never updated: var -> first step it had a gradient but no update
    not_applied_nonzero: dict[int, int]  # the same, a gradient that was not exactly zero
    applied_any: set[int]
    update_steps: np.ndarray  # bool (S,): some variable changed in the step


def update_steps(run: RunData) -> np.ndarray:
    """(S,) bool: the optimizer changed some variable in the step and did not skip it."""
    skipped = np.nan_to_num(run.skipped, nan=0.0) > 0
    return (np.nan_to_num(run.n_applied, nan=0.0) > 0) & ~skipped


def var_sets(run: RunData) -> VarSets:
    """Gradient and update sets over the whole run, from the per-variable summary."""
    vs = run.vsum
    no_grad: list[int] = []
    some: dict[int, int] = {}
    not_app: dict[int, int] = {}
    not_app_nz: dict[int, int] = {}
    applied_any: set[int] = set()
    for j, v in enumerate(run.var_index.tolist()):
        if run.var_info(v).get("trainable") is False:
            continue
        if vs["n_rows"][j] > 0 and vs["n_grad"][j] == 0:
            no_grad.append(v)
        elif vs["n_nograd"][j] > 0:
            some[v] = int(vs["first_nograd"][j])
        if vs["n_applied"][j] > 0:
            # Updated at some step: a step that leaves it unchanged is another optimizer's
            # step (one tape, two optimizers) or an update below float resolution, not a
            # variable left out of the update.
            applied_any.add(v)
            continue
        if np.isfinite(vs["first_notapplied"][j]):
            not_app[v] = int(vs["first_notapplied"][j])
        if np.isfinite(vs["first_notapplied_nonzero"][j]):
            not_app_nz[v] = int(vs["first_notapplied_nonzero"][j])
    return VarSets(no_grad, some, not_app, not_app_nz, applied_any, update_steps(run))


def part_gradients(run: RunData, sets: VarSets) -> list[dict[str, Any]]:
    """Trainable variables with a gradient at some steps and None at others while their
    optimizer stepped: at such a step another variable the same optimizer steps
    (``RunInfo.optimizers``) got a gradient. A step of another optimizer (two optimizers
    taking turns, a GAN's players, a head fine-tuned by a new optimizer after fit()) is not one
    of them: one whose gradients all belong to an optimizer that does not step the variable. Judged on the per-variable rows read
    (the first steps, and the steps from the first None on); one row per variable, in order
    of the first such step."""
    if not sets.some_no_grad or not run.grad.size:
        return []
    firsts = [int(s) for s in sets.some_no_grad.values()]
    run.ensure_rows(min(firsts), min(firsts) + HEAD)
    col = {int(v): j for j, v in enumerate(run.var_index.tolist())}
    groups = [set(int(x) for x in o.get("variables") or []) for o in run.meta.get("optimizers") or []]
    # A step between two full ones lists only the variables without a gradient (StepRecord.n_grad):
    # there a variable not listed had one.
    pos = np.clip(np.searchsorted(run.step, run.var_rows), 0, max(run.n_steps - 1, 0))
    full = np.asarray(run.stats, dtype=bool)[pos] if run.n_steps else np.zeros(len(run.var_rows), bool)
    # A light step does not list a variable frozen by then (no gradient is asked for it): not one
    # that had a gradient there.
    have = _had_gradient(run, pos, full) & ~_frozen_at(run, run.var_rows, col)
    rows: list[dict[str, Any]] = []
    for v in sets.some_no_grad:
        mates = set().union(*[g for g in groups if v in g]) - {v} or set(col) - {v}
        cols = [col[m] for m in mates if m in col]
        if not cols:
            continue
        g = run.grad[:, col[v]]
        seen = np.isfinite(g) | ~full  # a full step records it; another lists it only without one
        hit = (g == 0) & have[:, cols].any(axis=1)
        for other in (grp for grp in groups if v not in grp):
            # A step whose gradients all belong to an optimizer that does not step this variable
            # is that optimizer's step (a head fine-tuned by a new optimizer after fit()).
            outside = [j for m, j in col.items() if m not in other]
            hit &= have[:, outside].any(axis=1)
        if not hit.any():
            continue
        first = int(run.var_rows[int(np.argmax(hit))])
        rows.append({"variable": run.var_name(v), "index": int(v), "first_step": first, "steps_without": int(hit.sum()),
                     "steps": int(seen.sum()), "steps_in_run": int(run.vsum["n_rows"][col[v]])})
    return sorted(rows, key=lambda r: (r["first_step"], r["variable"]))


def _frozen_at(run: RunData, steps: np.ndarray, col: dict[int, int]) -> np.ndarray:
    """(R, V) bool: the variable (column ``col[index]``) was frozen at the row's step by a
    ``trainable_changes`` entry (``trainable = False`` before a later fit() call or a new
    optimizer's first step), and not made trainable again since."""
    out = np.zeros((len(steps), len(col)), dtype=bool)
    changes = [c for c in run.meta.get("trainable_changes") or [] if isinstance(c.get("step"), int)]
    for change in sorted(changes, key=lambda c: int(c["step"])):
        later = steps >= int(change["step"])
        for key, value in (("frozen", True), ("trainable", False)):
            for v in change.get(key) or []:
                if int(v) in col:
                    out[later, col[int(v)]] = value
    return out


def _had_gradient(run: RunData, pos: np.ndarray, full: np.ndarray) -> np.ndarray:
    """(R, V) bool: the variable had a gradient at the row's step. A full step says it of each
    variable; a light one lists only the variables without one, so there the variables with one
    are read from the nearest full step with the same list and the same count of variables with a
    gradient (``n_grad``: the same step function's graph), else every variable not listed (which
    counts variables the step did not take part in)."""
    have = (run.grad == 1) | (np.isnan(run.grad) & ~full[:, None])
    full_rows = np.flatnonzero(full)
    if not full_rows.size or full.all():
        return have
    zero = run.grad == 0
    n_grad = run.n_grad[pos] if run.n_grad is not None and len(run.n_grad) == run.n_steps else None
    by_key: dict[tuple[bytes, float], list[int]] = {}
    for f in full_rows.tolist():
        by_key.setdefault((zero[f].tobytes(), float(n_grad[f]) if n_grad is not None else -1.0), []).append(f)
    for r in np.flatnonzero(~full).tolist():
        same = by_key.get((zero[r].tobytes(), float(n_grad[r]) if n_grad is not None else -1.0))
        if same:
            have[r] = run.grad[min(same, key=lambda f: abs(f - r))] == 1
    return have


def steps_said(r: dict[str, Any]) -> str:
    """``"none at 6 of 9 steps, first at step 1"`` for a :func:`part_gradients` row."""
    of = (f"{r['steps']} steps" if r["steps"] >= r["steps_in_run"]
          else f"the {r['steps']} steps read (of {r['steps_in_run']})")
    return f"none at {r['steps_without']} of {of}, first at step {r['first_step']}"


def taking_turns(run: RunData, rows: list[dict[str, Any]]) -> list[list[str]] | None:
    """The :func:`part_gradients` variables in groups by the steps they had no gradient at, when
    there are at least two groups and no step left two of them without one (two heads or tasks
    trained at alternate steps); None otherwise."""
    col = {int(v): j for j, v in enumerate(run.var_index.tolist())}
    patterns: dict[bytes, list[str]] = {}
    masks: dict[bytes, np.ndarray] = {}
    for r in rows:
        z = run.grad[:, col[int(r["index"])]] == 0
        patterns.setdefault(z.tobytes(), []).append(str(r["variable"]))
        masks[z.tobytes()] = z
    if len(patterns) < 2:
        return None
    count = np.sum([m.astype(int) for m in masks.values()], axis=0)
    return list(patterns.values()) if int(count.max()) <= 1 else None


def part_gradient_finding(run: RunData, sets: VarSets) -> Finding | None:
    """:func:`part_gradients` as a finding of one run (``gradtrace check``): the loss of those
    steps did not reach the variables (a branch that leaves them out, an output left out of
    that step's loss), so the optimizer left them unchanged there. ``None`` when none."""
    rows = part_gradients(run, sets)
    if not rows:
        return None
    r0 = rows[0]
    more = f", and {len(rows) - 1} more" if len(rows) > 1 else ""
    turns = taking_turns(run, rows)
    if turns:
        groups = "; ".join(", ".join(g[:3]) + (", ..." if len(g) > 3 else "") for g in turns)
        return Finding(
            "missing_gradient", severity="info",
            summary=f"{len(rows)} trainable variable(s) got a gradient at some steps and none at others, in "
            f"{len(turns)} groups that take turns: at no step do two groups both go without one ({groups}). "
            "Steps that train one task or head at a time (alternating losses) do this by design.",
            steps=[r0["first_step"]], variables=[r["variable"] for r in rows],
            evidence={"variables": rows, "groups": turns}, explains=0.0,
            fix="Nothing to fix if the schedule alternates on purpose; to train every head at every step, compute "
                "every output's loss at each step.")
    return Finding(
        "missing_gradient", severity="warning",
        summary=f"{len(rows)} trainable variable(s) got a gradient at some steps and none (None) at others while "
        f"their optimizer stepped: {r0['variable']} has {steps_said(r0)}{more}. The loss of those steps does not "
        "reach them (a branch that leaves them out, an output or a term missing from that step's loss, a "
        "`tf.stop_gradient` on some batches), so the optimizer leaves them unchanged there.",
        steps=[r0["first_step"]], variables=[r["variable"] for r in rows], evidence={"variables": rows},
        fix=("If every step should train them, make every step's loss depend on them (compute every output's "
             "loss at each step); if the schedule is deliberate (alternating heads or tasks), this is expected."),
        explains=0.5)


def first_nonfinite(run: RunData) -> dict[str, Any] | None:
    """The first step with a non-finite loss or gradient, and the first variable affected.

    Non-finite gradients of a step the optimizer skipped (``skipped``: dynamic loss
    scaling under mixed precision found an overflow, applied nothing and lowered the
    scale) are the loss scale at work, not a numerics problem: they are left out. A
    non-finite loss counts on any step.
    """
    if run.loss_known is not None and run.loss_known.shape == run.loss.shape:
        bad_loss = ~np.isfinite(run.loss) & run.loss_known  # a step without a loss is not a NaN loss
    else:
        recorded = bool(np.isfinite(run.loss).any())
        bad_loss = ~np.isfinite(run.loss) & (~np.isnan(run.loss) | recorded)
    skipped = np.nan_to_num(run.skipped, nan=0.0) > 0
    bad = bad_loss | ((np.nan_to_num(run.nonfinite_step, nan=0.0) > 0) & ~skipped)
    rows = np.flatnonzero(bad)
    if not rows.size:
        return None
    i = int(rows[0])
    step = int(run.step[i])
    out: dict[str, Any] = {"step": step, "loss": float(run.loss[i])}
    cols = _nonfinite_columns(run, step, run.step[skipped])
    if cols.size:
        out["variable"] = run.var_name(int(run.var_index[cols[0]]))
        out["variables_affected"] = int(cols.size)
    # A recorded batch fingerprint ([sum, sum of squares, projection, count]; a missing one
    # is all NaN) whose sums are not finite: the data itself carries NaN/Inf.
    for key, fp in (("inputs", run.x_fp), ("labels", run.y_fp)):
        if fp.ndim == 2 and fp.shape[0] > i and fp.shape[1] >= 4 and np.isfinite(fp[i, 3]) \
                and not np.isfinite(fp[i, :2]).all():
            out.setdefault("in_data", []).append(key)
    return out


def _nonfinite_columns(run: RunData, step: int, skipped_steps: np.ndarray) -> np.ndarray:
    """Columns of the variables with non-finite gradient entries at ``step``.

    From the step's own row when it is recorded; otherwise from the per-variable
    first non-finite step, unless that is a skipped (overflow) step.
    """
    run.ensure_rows(step, step + 1)
    r = int(run.rows(np.array([step]))[0]) if run.nonfinite.size else -1
    if r >= 0:
        cols = np.flatnonzero(np.nan_to_num(run.nonfinite[r], nan=0.0) > 0)
        if cols.size:
            return cols
    fn = run.vsum.get("first_nonfinite")
    if fn is None or not np.isfinite(fn).any():
        return np.array([], dtype=np.int64)
    first = np.nanmin(fn)
    if first > step or first in skipped_steps:
        return np.array([], dtype=np.int64)
    return np.flatnonzero(fn == first)


def non_scalar_targets(run: RunData) -> list[tuple[list[Any], int, int]]:
    """Distinct non-scalar shapes handed to ``tape.gradient``: (shape, first step, count)."""
    out = []
    for shape, first, count in run.target_shapes:
        if shape and math.prod(d if d else 2 for d in shape) > 1:
            out.append((shape, first, count))
    return out


def broadcasts(run: RunData) -> list[tuple[dict[str, Any], int, int]]:
    """Elementwise broadcasts in the loss that grew a (N,)/(N,1) pair into (N,N). A size the graph
    left unknown (a step traced for any batch size: fit()'s, a custom train_step's) is the step's
    recorded batch size, which is what both unknown sizes of such a pair are."""
    out = []
    for items, first, count in run.broadcasts:
        row = int(np.searchsorted(run.step, first)) if run.n_steps else -1
        batch = run.batch_at(row)
        for bc in items or []:
            a, b, o = bc.get("a_shape") or [], bc.get("b_shape") or [], bc.get("out_shape") or []
            o = [int(batch) if d is None and math.isfinite(batch) else d for d in o]
            if len(o) >= 2 and len(o) > min(len(a), len(b)) and o[-1] not in (1, None) and o[-2] not in (1, None):
                if len(a) != len(b):
                    out.append((bc, first, count))
    return out


def _stepping_groups(run: RunData) -> int:
    """How many optimizers take turns in the run, as the first steps show it.

    Optimizers that take turns (a GAN's generator and discriminator, a body and a
    head with their own learning rates) step other sets of variables, each with its
    own iteration counter; an optimizer re-created every step steps the same set
    again. Returns the number of distinct variable sets of the run's optimizers
    (``optimizers[].variables``; sets may overlap: a generator's optimizer handed the
    discriminator's variables too), or, for a run recorded without them, the size of
    the largest family of pairwise disjoint gradient sets of the loaded steps (a step
    whose gradients are None for some variables is no other optimizer; 1 when nothing
    says otherwise).
    """
    sets: list[frozenset[int]] = []
    for opt in run.meta.get("optimizers") or []:
        vs = frozenset(int(v) for v in opt.get("variables") or [] if v is not None and int(v) >= 0)
        if vs and vs not in sets:
            sets.append(vs)
    if sets:
        return len(sets)
    if run.grad.size:
        for row in run.grad == 1:
            cols = frozenset(np.flatnonzero(row).tolist())
            if cols and cols not in sets:
                sets.append(cols)
    family: list[frozenset[int]] = []
    for st in sorted(sets, key=len):
        if all(not (st & f) for f in family):
            family.append(st)
    return max(1, len(family))


def iteration_resets(run: RunData, update_steps: np.ndarray) -> list[int]:
    """Steps at which an optimizer's iteration counter went back or stood still while updating.

    With ``k`` optimizers taking turns (see :func:`_stepping_groups`) the recorded
    counters interleave (1, 1, 2, 2, ...): each step must continue one of at most
    ``k`` counters; a step that continues none (a counter back at its start) is a reset.
    """
    it = run.iterations
    if it.size < 2 or np.isnan(it).all():
        return []
    k = _stepping_groups(run)
    counters: list[float] = []
    out: list[int] = []
    for i, v in enumerate(it.tolist()):
        if not np.isfinite(v):
            continue
        upd = bool(update_steps[i])
        fits = [j for j, c in enumerate(counters) if (v > c if upd else v >= c)]
        if fits:
            j = max(fits, key=lambda j: counters[j])  # the counter it continues most closely
            counters[j] = v
        elif len(counters) < k:
            counters.append(v)
        else:
            out.append(int(run.step[i]))
            # the re-created counter: the one closest above the value it restarted at
            j = min(range(len(counters)), key=lambda j: (counters[j] < v, counters[j] - v))
            counters[j] = v
    return [] if out and _switched_optimizers(run, len(out), k) else out


def _switched_optimizers(run: RunData, n_resets: int, k: int) -> bool:
    """Whether the resets are the run changing to another optimizer on purpose: Keras's
    fine-tuning recipe recompiles with a new optimizer (a lower learning rate, the base's
    layers unfrozen) and fits again, so its counter starts over once.

    Said when one optimizer steps at a time (``k == 1``), the run described one more
    optimizer than it has resets (``RunInfo.optimizers``, in order of first step, each
    object once), and each differs from the one before it in class, settings (its name
    aside) or the variables it steps. An optimizer re-created with the same settings
    (every step, every epoch) is described again identically: still a reset.
    """
    opts = run.meta.get("optimizers") or []
    if k != 1 or len(opts) != n_resets + 1 or len(opts) >= 64:
        return False

    def described(o: dict[str, Any]) -> tuple[Any, str, tuple[int, ...]]:
        cfg = {key: v for key, v in (o.get("config") or {}).items() if key != "name"}
        return (o.get("class"), json.dumps(cfg, sort_keys=True, default=str),
                tuple(sorted(int(v) for v in o.get("variables") or [] if v is not None)))

    seen = [described(o) for o in opts]
    return all(seen[i] != seen[i - 1] for i in range(1, len(seen)))


def data_loss(run: RunData, step: int) -> float:
    """The step's data loss as its Keras loss object computed it (the mean of the per-sample
    losses), NaN when that is not the whole data loss (weights, a mask, several losses)."""
    info = run.loss_info.get(step) or {}
    m = info.get("per_sample_mean")
    if (m is None or len(info.get("calls") or []) > 1 or info.get("sample_weight")
            or info.get("reduction") not in (None, "sum_over_batch_size", "auto")
            or (info.get("mask_valid") is not None and info.get("mask_valid") != info.get("mask_count"))):
        return float("nan")
    return float(m)


def loss_scaled(o: dict[str, Any]) -> bool:
    """A loss-scale optimizer wrapping another (Keras 3 ``LossScaleOptimizer``, tf-keras'
    ``LossScaleOptimizer``/``LossScaleOptimizerV3``): described with ``inner`` and ``loss_scale``."""
    return "inner" in o or "loss_scale" in o or str(o.get("class") or "").startswith("LossScaleOptimizer")


def loss_scale_kept(run: RunData) -> dict[str, Any] | None:
    """Gradients of ``scale_loss(loss)`` applied by an optimizer that does not unscale them.

    The run recorded a loss scale (``scale_loss`` of a LossScaleOptimizer was called in its
    steps) but no optimizer that applied its gradients is one (the wrapper's
    ``inner_optimizer`` applied them). The evidence is measured at the first steps: the loss
    handed to tape.gradient is the Keras loss's data loss times that scale (a power of two,
    exact in float), and the gradients' norm is nearer the scaled loss than the data loss
    (gradients divided by the scale by hand before the inner apply are left alone).
    """
    opts = [o for o in (run.meta.get("optimizers") or [run.meta.get("optimizer")]) if o]
    if not opts or any(loss_scaled(o) for o in opts):
        return None
    rows = []
    for i in range(min(run.n_steps, 8)):
        scale, loss, d = float(run.loss_scale[i]), float(run.loss[i]), data_loss(run, int(run.step[i]))
        if math.isfinite(scale) and scale > 1.0 and math.isfinite(loss) and math.isfinite(d) and d > 0:
            rows.append((int(run.step[i]), scale, loss / d, float(run.grad_norm[i]) / d))
    if not rows or any(abs(r - s) > 1e-2 * s for _st, s, r, _g in rows):
        return None
    # The gradient norm against the data loss: about the scale times an ordinary ratio when the
    # gradients keep the scale, an ordinary ratio when they were unscaled by hand.
    g = [gr / math.sqrt(s) for _st, s, _r, gr in rows if math.isfinite(gr)]
    if g and float(np.median(g)) < 1.0:
        return None
    return {"step": rows[0][0], "loss_scale": rows[0][1], "loss_factor": rows[0][2], "steps_measured": len(rows),
            "optimizer": opts[0].get("class")}


def loss_scale_missing(run: RunData) -> dict[str, Any] | None:
    """Keras 3's LossScaleOptimizer applying gradients of a loss that was never scaled.

    Its ``apply`` divides the gradients by the loss scale (keras/src/optimizers/
    loss_scale_optimizer.py ``_stateful_handle_finite_grads``) on the understanding that the
    loss handed to tape.gradient was ``scale_loss(loss)``. No step of the run called
    ``scale_loss`` (the tracer records the scale there), or the steps called it and
    differentiated the loss they had scaled instead of its result (``called_unused``), and the
    gradients applied are about the loss scale smaller than gradients are (their norm over the
    loss handed to tape.gradient times the square root of the scale stays below 1: a loss
    multiplied by the scale by hand passes, and so does ``scale_loss``'s result differentiated);
    the updates are the scale (32768 at the start) times too small."""
    opts = [o for o in (run.meta.get("optimizers") or [run.meta.get("optimizer")]) if o]
    lso = [o for o in opts if "inner" in o and o.get("flavour") == "keras3"]
    if not lso or len(opts) != len(lso) or not run.n_steps:
        return None
    scale = ((lso[0].get("loss_scale") or {}).get("initial_scale"))
    if not isinstance(scale, (int, float)) or scale <= 1:
        return None
    n = min(run.n_steps, 8)
    loss, g = np.abs(run.loss[:n]), run.grad_norm[:n]
    ok = np.isfinite(loss) & np.isfinite(g) & (loss > 0)
    if not ok.any():
        return None
    ratio = float(np.median(g[ok] / loss[ok]))
    if ratio * math.sqrt(scale) >= 1.0:
        return None
    return {"optimizer": lso[0].get("class"), "inner": (lso[0].get("inner") or {}).get("class"),
            "initial_scale": float(scale), "gradient_norm_over_loss": ratio, "steps_measured": int(ok.sum()),
            "called_unused": bool(np.isfinite(run.loss_scale).any())}


def padding_counted(run: RunData) -> dict[str, Any] | None:
    """A loss that averaged over the padding of the mask the model's output carries.

    A Keras loss *function* (``keras.losses.sparse_categorical_crossentropy(y, out)``) returns
    every entry's loss and applies no mask; the tracer records the valid and total entries of
    the mask its ``y_pred`` carried (``Embedding(mask_zero=True)``, ``Masking``). When the loss
    handed to tape.gradient (less the regularization losses) is the mean of those per-entry
    losses, the reduction counted the padding. Measured at the first steps; a mean over the
    valid entries (``reduce_sum(loss * mask) / reduce_sum(mask)``) differs from it.
    """
    rows = []
    for i in range(min(run.n_steps, 8)):
        step = int(run.step[i])
        info = run.loss_info.get(step) or {}
        valid, total = info.get("output_mask_valid"), info.get("output_mask_count")
        mean, n = info.get("per_sample_mean"), info.get("per_sample_count")
        if (not info.get("function") or len(info.get("calls") or []) > 1 or valid is None or not total
                or mean is None or n != total):
            continue
        loss, reg = float(run.loss[i]), float(run.reg_loss[i]) if run.reg_loss.size else float("nan")
        if math.isfinite(reg):
            loss -= reg
        if not math.isfinite(loss):
            continue
        rows.append({"step": step, "loss": loss, "mean_over_all": float(mean), "valid": int(valid),
                     "total": int(total)})
    padded = [r for r in rows if r["valid"] < r["total"]]
    if not padded or any(abs(r["loss"] - r["mean_over_all"]) > 1e-5 * max(abs(r["mean_over_all"]), 1e-6)
                         for r in rows):
        return None
    first = run.loss_info[padded[0]["step"]]
    return {**padded[0], "loss_function": first.get("function"), "loss_class": first.get("cls"),
            "from_logits": first.get("from_logits"), "steps_measured": len(rows)}


def fixed_divisor_code(d: int) -> str:
    """The two ways a loop divides its per-example losses' sum by a fixed ``d``."""
    return (f"`tf.nn.compute_average_loss(per_example_loss, global_batch_size={d})` or "
            f"`tf.reduce_sum(per_example_loss) / {d}`")


def fixed_divisor_fix(side: str | None = None) -> str:
    """The fix for a loss divided by the full batch's size on a partial batch (``side``: the run
    that does it, in a comparison)."""
    return ("Divide by the examples each step has" + (f" in run {side}" if side else "") + ": "
            "`tf.reduce_mean(per_example_loss)` or `tf.nn.compute_average_loss(per_example_loss)` without "
            "global_batch_size (under a strategy its global batch is the step's batch across replicas, smaller "
            "on a partial batch); or drop the partial batch (`drop_remainder=True`"
            + (" in both runs, and as many examples given to fit())." if side else ")."))


def fixed_divisor(run: RunData) -> dict[str, Any] | None:
    """A loss that divides its per-example losses' sum by the full batch's size on a smaller,
    partial batch (``tf.nn.compute_average_loss(l, global_batch_size=BATCH)``, ``reduce_sum(l) /
    BATCH``): read from the steps whose Keras loss returned per-example losses
    (``reduction="none"``, one call, no weights). On every full batch the loss handed to
    tape.gradient (less the regularization losses) is their mean; on each batch of fewer examples
    it is their sum over the full batch's count, so those examples weigh less than a full batch's.
    """
    rows = []
    for i in range(run.n_steps):
        step = int(run.step[i])
        info = run.loss_info.get(step) or {}
        pm, n = info.get("per_sample_mean"), info.get("per_sample_count")
        if (info.get("reduction") != "none" or info.get("calls") or info.get("sample_weight")
                or not isinstance(pm, (int, float)) or not isinstance(n, (int, float)) or n < 1 or pm <= 0):
            continue
        loss, reg = float(run.loss[i]), float(run.reg_loss[i]) if run.reg_loss.size else float("nan")
        if math.isfinite(reg):
            loss -= reg
        if math.isfinite(loss) and loss > 0:
            rows.append((step, int(n), float(pm) * n / loss))
    if len(rows) < 2:
        return None
    sizes = [n for _, n, _ in rows]
    full = max(set(sizes), key=sizes.count)  # the batch most steps have
    if any(n == full and abs(d - n) > 1e-4 * n for _, n, d in rows):
        return None  # a full batch not averaged over its examples: another reduction
    partial = [(st, n, d) for st, n, d in rows if n < full]
    if not partial or any(abs(d - full) > 1e-4 * full for _, _, d in partial):
        return None
    st, n, _ = partial[0]
    return {"step": st, "batch": n, "divisor": full, "partial_steps": len(partial), "steps_measured": len(rows)}


def regularization_count(run: RunData, once_too: bool = False) -> dict[str, Any] | None:
    """How many times the loss handed to tape.gradient includes ``sum(model.losses)``.

    On steps where the model has regularization losses ``r`` and a Keras loss object
    recorded the data loss ``d``, ``(loss - d) / r`` is the count: 1 is right, 0 means
    they were left out, 2 that they were added twice. Reported only when every such step
    of the first ones gives the same whole count other than 1 (``once_too``: 1 as well),
    within the step's float noise (a hand-written penalty on top gives no whole count and
    is left alone).
    """
    from gradtrace.compare.noise import MARGIN, measure_noise

    tol = MARGIN * measure_noise(run, run, 1).tol0  # a difference of two noisy losses
    counts, steps = [], []
    for i in range(min(run.n_steps, 16)):
        step, loss = int(run.step[i]), float(run.loss[i])
        r = float(run.reg_loss[i]) if run.reg_loss.size else float("nan")
        d = data_loss(run, step)
        if not (math.isfinite(loss) and math.isfinite(d) and math.isfinite(r)) or r <= tol * abs(loss):
            continue
        counts.append((loss - d) / r)
        steps.append((step, r, loss))
    if len(counts) < 2:
        return None
    n = round(counts[0])
    if (n == 1 and not once_too) or n < 0 or any(abs(c - n) * r > tol * max(abs(loss), 1.0)
                              for c, (_s, r, loss) in zip(counts, steps, strict=True)):
        return None
    steps = [st for st, _r, _l in steps]
    return {"count": int(n), "steps": steps, "ratios": counts[:8], "reg_loss": float(run.reg_loss[0])}


def loss_sign(run: RunData, i: int, tol: float) -> int | None:
    """How the loss handed to tape.gradient at the run's ``i``-th step relates to the step's Keras
    data loss, alone or plus ``sum(model.losses)`` where the model has any: 1 when it is that loss,
    -1 when it is its negation, 0 when it is neither (a loss of the script's own), None when the step
    recorded no finite pair or the data loss is too near 0 to tell a sign (``tol`` relative to
    ``max(|loss|, 1)``)."""
    loss, d = float(run.loss[i]), data_loss(run, int(run.step[i]))
    if not (math.isfinite(loss) and math.isfinite(d)):
        return None
    scale = tol * max(abs(loss), 1.0)
    if abs(d) <= scale:
        return None
    r = float(run.reg_loss[i]) if run.reg_loss.size else float("nan")
    wholes = (d, d + r) if math.isfinite(r) else (d,)
    if any(abs(loss - w) <= scale for w in wholes):
        return 1
    if any(abs(loss + w) <= scale for w in wholes):
        return -1
    return 0


def negated_loss(run: RunData) -> dict[str, Any] | None:
    """The loss handed to tape.gradient is the negation of the step's Keras data loss (plus
    ``sum(model.losses)`` where the model has any) at every one of the first steps that recorded
    one, at least two: the optimizer climbs the loss (gradient ascent). Not for a run of several
    optimizers: an adversarial game's player may maximize the other's loss on purpose (the minimax
    GAN generator's ``-bce(fake_labels, D(G(z)))``)."""
    from gradtrace.compare.noise import MARGIN, measure_noise

    if len([o for o in (run.meta.get("optimizers") or []) if o]) > 1:
        return None
    tol = MARGIN * measure_noise(run, run, 1).tol0
    steps = []
    for i in range(min(run.n_steps, 16)):
        sign = loss_sign(run, i, tol)
        if sign is None:
            continue
        if sign != -1:
            return None
        steps.append(int(run.step[i]))
    if not steps or len(steps) < min(2, run.n_steps):
        return None
    return {"steps": steps, "loss": float(run.loss[0]), "data_loss": data_loss(run, int(run.step[0]))}


def unfreeze_ignored(run: RunData) -> Finding | None:
    """Variables unfrozen part way (``trainable_changes`` with ``trainable``: ``trainable = True``
    before a later fit() call or a new optimizer's first step) that get no gradient and no update at
    any step of the run while steps follow the change: the unfreeze did not take effect (fit()
    kept the train function it built while they were frozen: no compile() after the change)."""
    last = int(run.step[-1]) if run.n_steps else -1
    cols = {int(v): j for j, v in enumerate(run.var_index.tolist())}
    for change in run.meta.get("trainable_changes") or []:
        k = change.get("step")
        if change.get("at") not in ("fit", "step") or not isinstance(k, int) or k > last:
            continue
        # A variable with no column was in no step's record (a light step lists only the variables
        # without a gradient): evidence only when the steps after the change count no more
        # variables with a gradient than the steps before it.
        ng = run.n_grad if run.n_grad is not None else np.full(run.n_steps, np.nan)
        before, after = ng[(run.step < k) & np.isfinite(ng)], ng[(run.step >= k) & np.isfinite(ng)]
        same = (not change.get("frozen") and before.size > 0 and after.size > 0
                and float(after.max()) <= float(before.max()))
        dead = [v for v in change.get("trainable") or []
                if (v not in cols and same)
                or (v in cols and run.vsum["n_grad"][cols[v]] == 0 and run.vsum["n_applied"][cols[v]] == 0)]
        if not dead or len(dead) < len(change.get("trainable") or []):
            continue
        names = [run.var_name(v) for v in dead]
        layers = list(dict.fromkeys(str(run.var_info(v).get("layer") or "") for v in dead if run.var_info(v).get("layer")))
        at = "a later fit() call" if change.get("at") == "fit" else "a new optimizer's first step"
        return Finding(
            "trainable_mismatch",
            f"{len(dead)} variable(s) were made trainable before step {k} ({at}: "
            f"{', '.join(names[:4])}{', ...' if len(names) > 4 else ''}), yet none of them got a gradient or an "
            f"update at any of the {last - k + 1} steps after it: the unfreeze did not take effect. fit() trains "
            "the variables its train function was built with and keeps that function until the next compile(); "
            "a `trainable = True` set after compile() is not read.",
            steps=[k], layers=layers[:8], variables=names, evidence={"change": change, "steps_after": last - k + 1},
            fix="Call `model.compile(...)` again after changing `trainable` (fine-tuning: unfreeze, compile with a "
                "low learning rate, then fit()).",
            explains=1.0)
    return None


def weights_reset(run: RunData) -> Finding | None:
    """Writes outside the optimizer's steps (``weight_writes``) that set every trainable variable
    back to the values it started the run with (``initial``, see ``Run.note_weights_written``):
    each such write throws away what the steps before it trained."""
    trainable = {int(v["index"]) for v in run.variables if v.get("trainable") is not False}
    resets = [w for w in run.meta.get("weight_writes") or []
              if trainable and trainable <= set(w.get("initial") or []) and (w.get("step") or 0) > 0]
    if not resets:
        return None
    steps = [int(w["step"]) for w in resets]
    how = resets[0].get("how") or "a write"
    said = ", ".join(map(str, steps[:8])) + (", ..." if len(steps) > 8 else "")
    tail = int(run.step[-1]) - steps[-1] + 1 if run.n_steps else 0
    ends = (f"the run ends with what its last {tail} step{'s' if tail > 1 else ''} trained from the initialization"
            if tail > 0 else "the run ends with its initial weights, the last write coming after its last step")
    return Finding(
        "weights_replaced", severity="warning",
        summary=f"every trainable variable was set back to its initial values ({how}) before step"
        f"{'s' if len(steps) > 1 else ''} {said}: each write throws away what the steps before it trained, and "
        f"{ends} (weights saved with `get_weights()` before training and restored, as a 'best' copy that was never "
        "updated).",
        steps=steps, variables=[run.var_name(v) for v in sorted(trainable)][:16],
        evidence={"resets": resets}, explains=1.0,
        fix="Save the weights you mean to restore after the epochs that produce them (e.g. keep the best "
            "epoch's `model.get_weights()` when the validation loss improves), not before training; to train "
            "several models or folds on purpose, trace each one as its own run.")


# Keras losses that compare labels and predictions entry by entry (no class axis of their own).
_ELEMENTWISE_LOSSES = frozenset({
    "MeanSquaredError", "MeanAbsoluteError", "MeanAbsolutePercentageError", "MeanSquaredLogarithmicError",
    "Huber", "LogCosh", "BinaryCrossentropy", "BinaryFocalCrossentropy", "Hinge", "SquaredHinge", "Poisson"})


def _keras_aligned(t: list[Any], p: list[Any]) -> tuple[list[Any], list[Any]]:
    """The shapes a Keras loss compares after ``squeeze_or_expand_to_same_rank`` (keras/src/losses/
    loss.py; tf-keras's ``squeeze_or_expand_dimensions`` does the same): a rank-1 side expanded, or
    a trailing axis of size 1 squeezed, when the ranks differ by one."""
    t, p = list(t), list(p)
    if len(t) == len(p) + 1 and t and t[-1] == 1:
        if len(p) == 1:
            p = [*p, 1]
        else:
            t = t[:-1]
    elif len(p) == len(t) + 1 and p and p[-1] == 1:
        if len(t) == 1:
            t = [*t, 1]
        else:
            p = p[:-1]
    return t, p


def label_broadcast(run: RunData) -> dict[str, Any] | None:
    """A Keras loss of the entry-by-entry kind whose labels and predictions, as the loss aligns
    them, still differ in shape so that one side is broadcast over an axis of the other: ``(N, 1)``
    labels against ``(N, T, 1)`` predictions (a recurrent layer left with ``return_sequences=True``)
    fit every time step to the sequence's one label. Read from the first step's loss calls."""
    if not run.loss_info:
        return None
    info = run.loss_info[min(run.loss_info)]
    for call in (info.get("calls") or [info]):
        cls, t, p = call.get("cls"), call.get("y_true_shape"), call.get("y_pred_shape")
        if cls not in _ELEMENTWISE_LOSSES or not isinstance(t, list) or not isinstance(p, list) or t == p:
            continue
        at, ap = _keras_aligned(t, p)
        n = max(len(at), len(ap))
        rt, rp = [1] * (n - len(at)) + at, [1] * (n - len(ap)) + ap
        over = [(i, side, size) for i, (x, y) in enumerate(zip(rt, rp, strict=True))
                for side, small, size in (("labels", x, y), ("predictions", y, x))
                if small == 1 and isinstance(size, int) and size > 1]
        if over:
            i, side, size = over[0]
            return {"loss": cls, "y_true_shape": t, "y_pred_shape": p, "broadcast": side, "axis": i,
                    "size": size, "step": int(min(run.loss_info))}
    return None


# Losses whose labels are independent yes/no answers per output (multi-label when wider than 1);
# a hinge loss takes -1/1 labels as well as 0/1.
_BINARY_LOSSES = ("BinaryCrossentropy", "BinaryFocalCrossentropy", "Hinge", "SquaredHinge")
_HINGE_LOSSES = ("Hinge", "SquaredHinge")


def binary_labels_out_of_range(run: RunData) -> dict[str, Any] | None:
    """A binary cross-entropy whose labels are not all in [0, 1], read from the label fingerprints
    of the first steps (``[sum, sum of squares, projection, count]``): labels in [0, 1] have
    ``y**2 <= y``, so their sum of squares never exceeds their sum, nor is their sum negative.
    A hinge loss takes -1/1 as well as 0/1 (Keras maps 0/1 to -1/1): its labels are out of range
    only beyond [-1, 1] (``y**2 <= 1``). Of the first 64 steps with a single such loss call and
    labels recorded, at least two (or the only one) must show it: a batch whose labels happen to
    be 0 and 1 only (labels 0/1/2, the last partial batch) shows nothing, and is not a counter-example."""
    steps, checked, loss = [], 0, None
    for i in range(min(run.n_steps, 64)):
        step = int(run.step[i])
        info = run.loss_info.get(step) or {}
        cls = info.get("cls")
        if cls not in _BINARY_LOSSES or len(info.get("calls") or []) > 1:
            continue
        fp = run.y_fp[i]
        if not np.all(np.isfinite(fp[:4])) or fp[3] < 1:
            continue
        total, squares, n = float(fp[0]), float(fp[1]), int(fp[3])
        checked += 1
        tol = 1e-4 * max(1.0, abs(total), squares)
        if squares > n + tol if cls in _HINGE_LOSSES else (total < -tol or squares > total + tol):
            steps.append({"step": step, "mean": total / n, "mean_square": squares / n})
            loss = loss or cls
    if not steps or (len(steps) < 2 and checked > 1) or (run.meta.get("extra") or {}).get("labels_inferred"):
        return None
    return {"loss": loss, "steps": steps[:8], "checked": checked, "out_of_range": len(steps),
            "range": "[-1, 1]" if loss in _HINGE_LOSSES else "[0, 1]"}


# Regression losses (by class and function name), whose targets the output must be able to reach,
# and the range of each bounded output activation (``LossCall.pred_activation``).
_REGRESSION_LOSSES = frozenset({"MeanSquaredError", "MeanAbsoluteError", "Huber", "LogCosh", "mean_squared_error",
                                "mean_absolute_error", "huber", "log_cosh", "mse", "mae"})
_OUTPUT_RANGE = {"relu": (0.0, math.inf), "softplus": (0.0, math.inf), "exponential": (0.0, math.inf),
                 "relu6": (0.0, 6.0), "sigmoid": (0.0, 1.0), "softmax": (0.0, 1.0), "tanh": (-1.0, 1.0)}


def unreachable_targets(run: RunData) -> dict[str, Any] | None:
    """A regression loss on the output of a bounded activation (a relu, sigmoid, tanh, ... read from
    the step's graph) whose targets leave that activation's range, read from the label
    fingerprints of the first 64 steps with one such loss call. Targets all in ``[lo, hi]`` satisfy
    ``(y - lo)(hi - y) >= 0``, so their sums obey ``sum(y^2) <= (lo + hi) sum(y) - lo hi n`` (and
    ``sum(y) >= lo n`` when ``hi`` is infinite): a batch that breaks it holds a target no prediction
    can equal, whatever the weights. ``mean_outside``: a batch's mean target itself out of range."""
    steps, checked, act, loss = [], 0, None, None
    for i in range(min(run.n_steps, 64)):
        step = int(run.step[i])
        info = run.loss_info.get(step) or {}
        if len(info.get("calls") or []) > 1 or not {str(info.get(k)) for k in ("cls", "name", "function")} \
                & _REGRESSION_LOSSES or info.get("pred_activation") not in _OUTPUT_RANGE:
            continue
        fp = run.y_fp[i]
        if not np.all(np.isfinite(fp[:4])) or fp[3] < 1:
            continue
        lo, hi = _OUTPUT_RANGE[str(info["pred_activation"])]
        total, squares, n = float(fp[0]), float(fp[1]), float(fp[3])
        checked += 1
        tol = 1e-4 * max(1.0, abs(total), squares, n)
        out = total < lo * n - tol if math.isinf(hi) else squares > (lo + hi) * total - lo * hi * n + tol
        if out:
            steps.append({"step": step, "mean": total / n, "mean_square": squares / n,
                          "mean_outside": not lo <= total / n <= hi})
            act = act or str(info["pred_activation"])
            loss = loss or info.get("cls") or info.get("name")
    if not steps or (len(steps) < 2 and checked > 1):
        return None
    lo, hi = _OUTPUT_RANGE[str(act)]
    return {"activation": act, "loss": loss, "range": [lo, hi if math.isfinite(hi) else None], "steps": steps[:8],
            "checked": checked,
            "out_of_range": len(steps), "mean_outside": sum(1 for s in steps if s["mean_outside"])}


def regularization_said(n: int) -> str:
    """What a loss holding ``n`` x sum(model.losses) does with them."""
    return ("leaves them out" if n == 0 else "includes them once" if n == 1 else "adds them twice" if n == 2
            else f"adds them {n} times")


def regularization_fix(n: int) -> str:
    """The fix for a loss holding ``n`` (not 1) x sum(model.losses)."""
    return ("Add `sum(model.losses)` to the loss inside the tape (fit() does it for you; in a custom train_step "
            "call `self.compute_loss(x=x, y=y, y_pred=y_pred)`, which adds them, not the loss object itself)."
            if n == 0 else
            "Add the regularization losses once: fit() and `model.compute_loss()` already include "
            "`model.losses`; remove the extra `sum(self.losses)`.")


def first_loss_info(run: RunData) -> dict[str, Any] | None:
    """The loss details of the run's first step that recorded them."""
    return run.loss_info[min(run.loss_info)] if run.loss_info else None


def label_encoding(run: RunData) -> str | None:
    """'sparse' (class indices), 'one-hot', 'binary' (one yes/no answer per output) or None,
    from the shapes the run's (single) Keras loss saw at its last step that recorded one (the
    latest compile(), whose metrics ``meta["metrics"]`` holds) and its class. Labels as wide as
    the output whose entries are all 0 or 1 but whose rows do not each hold one 1 (by the step's
    label fingerprint) are multi-label yes/no answers, 'binary', whatever the loss."""
    if not run.loss_info:
        return None
    step = max(run.loss_info)
    info = run.loss_info[step]
    if len(info.get("calls") or []) > 1:
        return None  # several outputs: which labels a metric sees is not recorded
    yt, yp = info.get("y_true_shape"), info.get("y_pred_shape")
    if not yt or not yp:
        return None
    if yp[-1] == 1 or (str(info.get("cls")) in _BINARY_LOSSES and list(yt) == list(yp)):
        return "binary"
    if len(yt) < len(yp) or yt[-1] == 1:
        return "sparse"
    if yt[-1] != yp[-1]:
        return None
    i = np.flatnonzero(run.step == step)
    fp = run.y_fp[int(i[0])] if i.size and run.y_fp.ndim == 2 else np.array([])
    width = yt[-1]
    if isinstance(width, int) and width > 0 and fp.size >= 4 and np.all(np.isfinite(fp[:4])) \
            and int(fp[3]) % width == 0:
        # rows from the count of label entries: the shapes of a step traced for any batch size hold None
        rows, total, squares = int(fp[3]) // width, float(fp[0]), float(fp[1])
        if abs(squares - total) <= 1e-4 * max(1.0, total) and abs(total - rows) > 0.5:
            return "binary"  # 0/1 entries, some rows with several 1s (or none): multi-hot
    return "one-hot"


def sorted_data(run: RunData, side: str | None = None) -> Finding | None:
    """The run's batches each hold one class, in long runs (data sorted by label, never shuffled):
    read for a run whose (single) Keras loss is a classification loss (see
    :func:`gradtrace.compare.detect_data.sorted_by_class`)."""
    info = run.loss_info[max(run.loss_info)] if run.loss_info else None
    if not info or len(info.get("calls") or []) > 1:
        return None
    if not {str(info.get(k)) for k in ("cls", "name", "function")} & CLASS_LOSSES:
        return None
    return sorted_data_finding(run, label_encoding(run), info.get("y_true_shape"), side)


# The label encoding each accuracy metric computes its score for ("equal": the label itself,
# compared with the output for exact equality), by class and by function name.
_ACCURACY_FOR = {"SparseCategoricalAccuracy": "sparse", "CategoricalAccuracy": "one-hot",
                 "BinaryAccuracy": "binary", "SparseTopKCategoricalAccuracy": "sparse",
                 "TopKCategoricalAccuracy": "one-hot", "Accuracy": "equal"}
_ACCURACY_FN = {"sparse_categorical_accuracy": "sparse", "categorical_accuracy": "one-hot",
                "binary_accuracy": "binary", "sparse_top_k_categorical_accuracy": "sparse",
                "top_k_categorical_accuracy": "one-hot"}
_ENCODING_WORDS = {"sparse": "integer class labels", "one-hot": "one-hot labels",
                   "binary": "binary (yes/no per output) labels"}
_METRIC_FOR = {"sparse": "keras.metrics.SparseCategoricalAccuracy()", "one-hot":
               "keras.metrics.CategoricalAccuracy()", "binary": "keras.metrics.BinaryAccuracy()"}


def metric_wants(cls: Any, fn: Any = None) -> str | None:
    """The label encoding an accuracy metric is written for (None: not an accuracy metric)."""
    return _ACCURACY_FOR.get(str(cls)) or _ACCURACY_FN.get(str(fn))


def accuracy_fits(cls: Any, encoding: str | None, fn: Any = None) -> bool | None:
    """Whether an accuracy metric computes accuracy for labels of ``encoding`` (None: unknown).

    Plain ``Accuracy`` compares each label with the model's output for exact equality: on
    the probabilities or logits a loss is computed from it fits no encoding.
    """
    want = metric_wants(cls, fn)
    if want is None or encoding is None:
        return None
    return want == encoding


def metric_misfits(run: RunData) -> list[dict[str, Any]]:
    """The run's compiled accuracy metrics that cannot fit its labels' encoding."""
    enc = label_encoding(run)
    out = []
    for m in run.meta.get("metrics") or []:
        if accuracy_fits(m.get("class"), enc, m.get("fn")) is False:
            out.append({"name": m.get("name"), "class": m.get("class"), "labels": enc,
                        "wants": metric_wants(m.get("class"), m.get("fn")),
                        **({"given": m["given"]} if m.get("given") else {})})
    return out


def metric_misfit_finding(run: RunData, side: str | None = None) -> Finding | None:
    """A compiled accuracy metric that silently reports nonsense for this run's labels."""
    bad = metric_misfits(run)
    if not bad:
        return None
    m = bad[0]
    enc = str(m["labels"])
    if m["wants"] == "equal":
        what = ("counts the outputs that exactly equal their label: on the probabilities or logits the "
                "model outputs it stays near 0 whatever the model learns")
    elif m["wants"] == "binary":
        what = ("scores every output as a separate yes/no answer (output > 0.5 against each label "
                "entry): with one class per example it counts the many correct 'no's and reads high "
                "whatever the model learns")
    else:
        what = (f"is the accuracy for {_ENCODING_WORDS[str(m['wants'])]}; on {_ENCODING_WORDS.get(enc, enc)} "
                "it compares the wrong things and reports a number unrelated to the model's accuracy")
    whose = f"run {side}'s ('{run.name}') " if side else ""
    # Keras chose the class: the metric was given as a string (recorded since ``given``; earlier
    # records only by its name)
    resolved = m["name"] in ("accuracy", "acc") and m["class"] != "Accuracy" and m.get("given", "string") == "string"
    if enc not in _METRIC_FOR:
        fix = None
    elif resolved:
        fix = (f"Name the metric class explicitly: `{_METRIC_FOR[enc]}`. Keras resolved 'accuracy' to "
               f"{m['class']} from the shapes of the labels and outputs, which does not fit "
               f"{_ENCODING_WORDS[enc]}.")
    else:
        fix = (f"Use the accuracy for {_ENCODING_WORDS[enc]}: `{_METRIC_FOR[enc]}` (or "
               "`metrics=['accuracy']`, which Keras resolves from the labels and the loss).")
    return Finding(
        "metric_mismatch",
        f"{whose}metric '{m['name']}' is {m['class']}, which {what} (the loss sees "
        f"{_ENCODING_WORDS.get(enc, enc)}).",
        evidence={"metrics": bad, "labels": enc, **({"run": side} if side else {})},
        fix=fix, explains=0.3)


def frozen_as_created(run: RunData) -> list[dict[str, Any]]:
    """Layers that ran frozen (``trainable=False``, so inference mode) in the steps with state of
    their own and every variable exactly as a new layer holds it (each all zeros or all ones by
    the initial fingerprints: BatchNormalization's gamma 1, beta 0, moving mean 0, moving
    variance 1), none changed at any step and none written by the script: freezing keeps
    statistics a pretrained layer learned, and this layer never learned any."""
    # frozen at every step (a layer unfrozen later trains its statistics then, which the
    # statistics cadence may not record)
    counts: dict[str, int] = {}
    for names, _first, count in run.frozen:
        for n in names or []:
            counts[n] = counts.get(n, 0) + int(count)
    frozen = {n for n, c in counts.items() if c >= run.n_steps > 0}
    fps = run.meta.get("init_fingerprints") or []
    if not frozen or not fps:
        return []
    from gradtrace._meta import array_fingerprint

    written = {int(i) for w in run.meta.get("weight_writes") or [] for i in w.get("variables") or []}
    changed = dict(zip(run.state_index.tolist(), run.state_changed.tolist(), strict=False))
    out = []
    for name in sorted(frozen):
        info = inventory_layer(run, name)
        if info is None or info.get("index") is None:
            continue
        own = [v for v in run.variables if v.get("layer_index") == info.get("index")]
        if not any(not v.get("trainable", True) and str(v.get("dtype") or "").startswith(("float", "bfloat"))
                   for v in own):
            continue
        ok = True
        for v in own:
            i, shape, dtype = int(v["index"]), v.get("shape"), str(v.get("dtype") or "")
            if (i >= len(fps) or not fps[i] or i in written or changed.get(i, 0) or shape is None
                    or None in shape or not dtype.startswith("float")):
                ok = False
                break
            consts = {array_fingerprint(np.full(shape, c, dtype=dtype)) for c in (0.0, 1.0)}
            if fps[i] not in consts:
                ok = False
                break
        if ok:
            out.append({"layer": name, "class": info.get("class_name"), "variables": [v.get("name") for v in own]})
    return out


def _batch_norm(run: RunData, name: str) -> bool:
    """The tracked layer ``name`` is a BatchNormalization (of any flavour)."""
    return str((inventory_layer(run, name) or {}).get("class_name") or "").endswith("BatchNormalization")


def numerics_fix(run: RunData, nf: dict[str, Any]) -> str | None:
    """The fix of a first NaN/Inf (finite data), by what came before it: none at all on finite
    weights (the loss or its gradient is undefined where it is computed: ``log(0)``, ``0/0``) or
    losses that grew a hundredfold on the way (the training diverged); None otherwise (the
    catalogue's generic advice)."""
    i = int(np.searchsorted(run.step, nf["step"]))
    # the losses up to it, its own included when finite (a loss of -5e28 whose gradient overflows)
    before = run.loss[:i + 1][np.isfinite(run.loss[:i + 1])]
    grew = before.size >= 2 and float(np.max(np.abs(before[1:]))) > 100 * max(abs(float(before[0])), 1e-12)
    # Falling below zero on the way to -inf: the loss has no floor, and minimising it runs forever.
    sank = before.size >= 2 and float(before[-1]) < min(0.0, float(before[0])) and (
        nf["loss"] == -math.inf or (grew and float(before[-1]) < -100 * max(abs(float(before[0])), 1e-12)))
    if sank:
        return (f"The loss fell without a floor before it (from {float(before[0]):.4g} to {float(before[-1]):.4g}"
                + (", then -inf" if nf["loss"] == -math.inf else "") + "): the optimizer minimises a quantity that "
                "can fall forever, usually a log-likelihood minimised without its minus. Minimise the negative "
                "log-likelihood (`loss = -tf.reduce_mean(log_prob)`), or check the sign of each term of the loss; a "
                "lower learning rate only delays the NaN.")
    if grew:
        return ("The losses grew a hundredfold before it: the training diverged. Lower the learning rate, clip "
                "the gradients (`clipnorm=1.0` on the optimizer), or normalise the inputs.")
    where = "The loss itself" if not math.isfinite(nf["loss"]) else "The loss is finite but its gradient"
    fp = run.x_fp[i] if run.x_fp.ndim == 2 and run.x_fp.shape[0] > i else np.array([])
    finite = " on finite inputs" if fp.size >= 4 and np.isfinite(fp[:4]).all() else ""
    return (f"{where} is NaN/Inf {'at the first step' if i == 0 else 'without the losses growing before it'}"
            f"{finite}: an operation in the loss or the model is undefined where it is evaluated (`log(0)`, "
            "`0/0` as a mean over an empty or fully masked batch, `sqrt` at 0, `pow` of a negative). Use "
            "`tf.math.xlogy`, `tf.math.divide_no_nan`, an epsilon (`tf.math.log(p + 1e-7)`, `tf.sqrt(x + 1e-12)`) "
            "or a Keras loss on logits (`from_logits=True`) in place of a hand-written log of probabilities; "
            "a lower learning rate does not help here.")


_BLOWUP_STEPS = 10  # the steps after the first whose losses are weighed
_BLOWUP_FACTOR = 4.0  # how many times the first loss their median must reach (the gradient norm's too)


def loss_blowup(run: RunData) -> dict[str, Any] | None:
    """The first updates made the loss several times larger: the median loss of the
    :data:`_BLOWUP_STEPS` steps after step 0 is :data:`_BLOWUP_FACTOR` times step 0's or more,
    and so is the median global gradient norm where the steps recorded it (ten times the loss
    where none did). Read from runs of one optimizer whose losses are finite and nonnegative at
    every step (NaN/Inf is the numerics finding's; a loss that can go negative has no scale to
    grow against) and not scaled for mixed precision. Batches differ from step to step, but a
    median over ten of them several times the first loss is no batch's noise: the steps
    overshoot (a learning rate far too large, unnormalised inputs)."""
    n = min(run.n_steps, _BLOWUP_STEPS + 1)
    if n < 6 or len(run.meta.get("optimizers") or []) > 1:
        return None
    if not np.isfinite(run.loss).all() or float(np.min(run.loss)) < 0 or np.nansum(run.nonfinite_step) > 0:
        return None
    if np.isfinite(run.loss_scale[:n]).any() and np.any(run.loss_scale[:n][np.isfinite(run.loss_scale[:n])] != 1):
        return None
    l0, later = float(run.loss[0]), run.loss[1:n]
    if l0 <= 0:
        return None
    factor = float(np.median(later)) / l0
    g0, g = float(run.grad_norm[0]), run.grad_norm[1:n]
    g = g[np.isfinite(g)]
    gfactor = float(np.median(g)) / g0 if g.size >= 3 and math.isfinite(g0) and g0 > 0 else None
    if factor < (_BLOWUP_FACTOR if gfactor is not None else 10.0):
        return None
    if gfactor is not None and gfactor < _BLOWUP_FACTOR:
        return None
    lr = float(run.lr[0]) if run.lr.size and math.isfinite(run.lr[0]) else None
    return {"loss_first": l0, "loss_median_after": float(np.median(later)), "loss_factor": factor,
            "grad_norm_first": g0 if gfactor is not None else None,
            "grad_norm_median_after": float(np.median(g)) if gfactor is not None else None,
            "grad_norm_factor": gfactor, "steps": int(n), "learning_rate": lr}


def loss_blowup_finding(run: RunData) -> Finding | None:
    """``check``: :func:`loss_blowup`."""
    b = loss_blowup(run)
    if b is None:
        return None
    grads = (f", and the gradient norm from {b['grad_norm_first']:.4g} to a median {b['grad_norm_median_after']:.4g} "
             f"(x{b['grad_norm_factor']:.3g})" if b["grad_norm_factor"] is not None else "")
    lr = f" (learning rate {b['learning_rate']:.4g})" if b["learning_rate"] is not None else ""
    return Finding(
        "exploding_loss", severity="warning",
        summary=f"the first updates made the loss {b['loss_factor']:.3g} times larger: from {b['loss_first']:.4g} at "
        f"step 0 to a median {b['loss_median_after']:.4g} over steps 1-{b['steps'] - 1}{grads}. The optimizer's steps "
        f"overshoot{lr}: each update lands the weights where the loss is higher than where it started.",
        steps=[1], evidence=b, explains=0.8,
        fix="Lower the learning rate (by 10x at a time; Adam's usual is 1e-3), or warm it up from a small value; "
            "clip the gradients (`clipnorm=1.0` on the optimizer); and normalise the inputs (features of very "
            "different scales make the largest stable learning rate tiny).")


def data_fix(data: str) -> str:
    """The fix of a NaN/Inf that the batch's ``data`` ("inputs", "labels") brought in."""
    return (f"Clean the data: the batch's {data} hold NaN/Inf (check `np.isfinite(x).all()` "
            "before training, or filter them out of the dataset).")



def logits_as_probabilities(run: RunData) -> Finding | None:
    """A cross-entropy called with ``from_logits=False`` on a layer's output that no softmax or
    sigmoid follows (``LossCall.pred_activation == "linear"``, read from the step's graph) or on
    values outside [0, 1] (``pred_probabilities`` False, measured eagerly): the loss takes those
    logits for probabilities (normalises or clips them), so loss and gradients are wrong. Or the
    other way round, ``from_logits=True`` on probabilities no Keras activation made (a
    ``tf.nn.softmax`` in an eager ``call``, ``pred_probabilities`` True): the loss applies a second
    softmax or sigmoid to them."""
    info = first_loss_info(run) or {}
    for call in info.get("calls") or [info]:
        cls = call.get("cls")
        if cls not in CROSS_ENTROPIES:
            continue
        squash = "sigmoid" if "Binary" in str(cls) else "softmax"
        if call.get("from_logits") is False and (call.get("pred_activation") == "linear"
                                                 or call.get("pred_probabilities") is False):
            seen = ("the output of a layer without an activation (a Dense or convolution's output: logits)"
                    if call.get("pred_activation") == "linear" else
                    "predictions with values outside [0, 1] (logits, not probabilities)")
            return Finding(
                "loss_mismatch", severity="error",
                summary=f"{cls} is called with from_logits=False on {seen}: the loss reads them as probabilities, "
                "clipping them into (0, 1)" + (" and normalising each row" if "Categorical" in str(cls) else "")
                + ", so the loss and its gradients are not the cross-entropy of the model's predictions.",
                evidence={"loss": cls, "from_logits": False, "pred_activation": call.get("pred_activation"),
                          "pred_probabilities": call.get("pred_probabilities"),
                          "y_pred_shape": call.get("y_pred_shape")}, explains=0.9,
                fix=f"Pass `from_logits=True` to {cls}, or end the model in a {squash} activation (not both).")
        width = (call.get("y_pred_shape") or [None])[-1]
        if (call.get("from_logits") is False and call.get("pred_activation") == "sigmoid" and squash == "softmax"
                and isinstance(width, int) and width > 1):
            return Finding(
                "loss_mismatch", severity="warning",
                summary=f"{cls} is called on the output of a sigmoid ({width} outputs, each in (0, 1) on its own): a "
                "categorical cross-entropy takes each row for one distribution over exclusive classes and "
                "normalises it to sum to 1, so the loss and its gradients are not those of the sigmoid outputs the "
                "model predicts (the classes compete only through that normalisation).",
                evidence={"loss": cls, "from_logits": False, "pred_activation": "sigmoid",
                          "y_pred_shape": call.get("y_pred_shape")}, explains=0.8,
                fix="For one class per example end the model in `softmax` (or output logits with "
                    "`from_logits=True`); for several labels per example use `BinaryCrossentropy` on the sigmoid.")
        if call.get("from_logits") is True and call.get("pred_probabilities") is True:
            rows = " whose rows each sum to 1" if squash == "softmax" else " all inside (0, 1)"
            return Finding(
                "loss_mismatch", severity="error",
                summary=f"{cls} is called with from_logits=True on predictions{rows}: probabilities made by a "
                f"{squash} that is not a Keras activation (e.g. `tf.nn.{squash}` in the model's `call`), which "
                f"Keras cannot see through eagerly, so the loss applies a second {squash}: the loss and its "
                "gradients are squashed, and training is slow or stalls.",
                evidence={"loss": cls, "from_logits": True, "pred_probabilities": True,
                          "y_pred_shape": call.get("y_pred_shape")}, explains=0.9,
                fix=f"Return the logits from the model and keep `from_logits=True` (apply `tf.nn.{squash}` only "
                    f"for predictions), or end the model in a Keras `{squash}` activation layer and pass "
                    "`from_logits=False`.")
    return None


def frozen_as_created_finding(run: RunData) -> Finding | None:
    """Layers frozen at every step with the state a new layer starts with (``frozen_as_created``): a
    warning for a layer frozen alone inside a model that trains, context inside a whole frozen block."""
    fresh = frozen_as_created(run)
    if not fresh:
        return None
    names = [f["layer"] for f in fresh]
    bn = [f["layer"] for f in fresh if str(f.get("class") or "").endswith("BatchNormalization")]
    # Frozen weights of other layers beside it: a whole frozen block (a base or a teacher) that was
    # never trained or loaded here: context (a script's scaffolding, or weights loaded elsewhere
    # belong in both); frozen alone inside a model that trains, it is the slip.
    named = {n for f in fresh for n in f["variables"]}
    block = [str(v.get("name")) for v in run.variables if v.get("trainable") is False
             and str(v.get("dtype") or "").startswith("float") and v.get("name") not in named
             and not str(v.get("layer_class") or "").endswith("Normalization")]
    return Finding(
        "training_mode_mismatch", severity="info" if block else "warning",
        summary=f"{len(names)} frozen layer(s) ran in inference mode in every step with the state a new layer "
        f"starts with, which never changed: {', '.join(names[:6])}"
        + (f". BatchNormalization ({', '.join(bn[:3])}) frozen (`trainable=False`) normalizes with its moving "
           "statistics, here still mean 0 and variance 1, so it normalizes nothing: freezing keeps statistics "
           "a pretrained layer learned, and this one never learned any." if bn else
           ": freezing keeps state a trained layer learned, and this one never learned any.")
        + (f" It sits in a frozen block whose other weights are frozen too ({', '.join(block[:3])}"
           f"{', ...' if len(block) > 3 else ''}): a base or teacher as built, never trained or loaded in "
           "this run." if block else ""),
        layers=names, evidence={"layers": fresh, **({"frozen_block": block[:16]} if block else {})},
        explains=0.0 if block else 0.6,
        fix="Load the pretrained weights before freezing (or train the block first); leave a layer trainable "
            "while the model trains from scratch." if block else
            "Leave the layer trainable while the model trains from scratch (freeze it after its statistics are "
            "learned, or load pretrained weights before freezing).")


def single_run_findings(run: RunData) -> list[Finding]:
    """Findings about one run alone (``gradtrace check``)."""
    out: list[Finding] = []
    recreated: set[int] = set()  # a model built again: the first copy's variables and the later copies'
    if run.grad.size and run.grad.shape[0] > 1:
        # a second model trained from some step on: variables absent at the first step
        cols = list(run.var_index)
        first = [int(cols[j]) for j in range(len(cols)) if run.grad[0, j] == 1]
        later = [int(cols[j]) for j in range(len(cols)) if np.isnan(run.grad[0, j])
                 and run.var_info(int(cols[j])).get("trainable", True)]
        k = recreated_at(run, later, first)
        if k is not None:
            recreated = set(first) | set(later)
            out.append(model_recreated_finding(run, k, [run.var_name(v) for v in later],
                                               copies=len(later) // max(len(first), 1)))
    nf = first_nonfinite(run)
    kept = loss_scale_kept(run)
    if nf:
        where = f" in the gradient of {nf['variable']}" if "variable" in nf else " in the loss"
        data = " and ".join(nf.get("in_data", []))
        # Gradients left times the loss scale overflow: that finding is the cause.
        after_kept = kept is not None and not data and nf["step"] >= kept["step"]
        out.append(Finding(
            "numerics",
            f"NaN/Inf first appears at step {nf['step']}{where}"
            + (f"; the step's {data} already contain NaN/Inf." if data else
               " (the gradients applied keep the loss scale, see loss_scaling)." if after_kept else "."),
            steps=[nf["step"]], variables=[nf["variable"]] if "variable" in nf else [],
            evidence=nf, explains=0.5 if after_kept else 1.0,
            fix=data_fix(data) if data else None if after_kept else numerics_fix(run, nf)))
    targets = non_scalar_targets(run)
    if targets:  # one finding: the last, smaller batch has a shape of its own
        shape, first, count = targets[0]
        also = [t[0] for t in targets[1:]]
        out.append(Finding(
            "non_scalar_loss",
            f"tape.gradient was asked for the gradient of a tensor of shape {shape} "
            f"({count} steps from step {first}"
            + (f"; also of shape {', '.join(str(a) for a in also[:3])} at {sum(t[2] for t in targets[1:])} step(s)"
               if also else "")
            + "); TensorFlow sums it, so the gradient is the sum over the batch, not the mean.",
            steps=[min(t[1] for t in targets)], evidence={"target_shape": shape, "steps": sum(t[2] for t in targets),
                                                         **({"other_shapes": also} if also else {})},
            explains=0.8))
    swapped = swapped_loss_finding(run)
    if swapped:
        out.append(swapped)
    said: dict[tuple[str, str, str], Finding] = {}
    for bc, first, count in broadcasts(run):
        key = (str(bc.get("a_shape")), str(bc.get("b_shape")), str(bc.get("out_shape")))
        if key in said:  # the same pair of shapes in another op of the loss (both terms of a BCE)
            said[key].evidence.setdefault("also_in", []).append(bc.get("op"))
            continue
        said[key] = Finding(
            "shape_broadcast",
            f"the loss combined shapes {bc.get('a_shape')} and {bc.get('b_shape')} with "
            f"'{bc.get('op')}' into {bc.get('out_shape')} ({count} steps from step {first}).",
            steps=[first], evidence={"broadcast": bc}, explains=1.0)
        out.append(said[key])
    sets = var_sets(run)
    # The variables of a model no optimizer of the run was given (a teacher, a target network
    # written by assign) are not the trained model's: no gradient is their recipe.
    # A model's variables tape.gradient was asked for and returned None for, whether the forward pass
    # read them (``disconnected_sources``) or not (``unwatched_sources``: called before the tape
    # opened), are meant to train, whatever the optimizer got: the script dropped their None gradients.
    extra = run.meta.get("extra") or {}
    disconnected = set(extra.get("disconnected_sources") or [])
    unwatched = set(extra.get("unwatched_sources") or [])
    of_untrained = untrained_variables(run)
    untrained = of_untrained - disconnected - unwatched
    # The copies of a model built again (model_recreated) may train between two steps that record
    # every variable: none of their steps shows their gradients, which is no missing one.
    no_grad = [v for v in sets.no_grad if v not in untrained and v not in recreated]
    # Never read while the tape recorded (their layers not called in the step's forward pass),
    # while other variables got gradients: an auxiliary head used elsewhere, or a layer left out
    # of the forward pass. Variables read but disconnected (tf.stop_gradient, a numpy round trip)
    # are the error below.
    unused = [v for v in no_grad if v in unwatched] if len(no_grad) < len(
        [v for v in run.var_index.tolist() if run.var_info(v).get("trainable") is not False]) else []
    no_grad = [v for v in no_grad if v not in unused]
    if unused:
        names = [run.var_name(v) for v in unused]
        out.append(Finding(
            "missing_gradient", severity="warning",
            summary=f"{len(names)} trainable variable(s) never got a gradient: {', '.join(names[:6])}"
            f"{', ...' if len(names) > 6 else ''}. tape.gradient was asked for them, but the tape never saw them "
            "read while it recorded: their layers were not called in the forward pass the loss was computed "
            "from (an auxiliary head used elsewhere, a branch the step does not take), or were called before "
            "the tape opened. The other variables trained."
            + (" No optimizer ever updated them: the script left their None gradients out of apply_gradients, "
               "so they keep their initial values." if any(v in of_untrained for v in unused) else ""),
            variables=names, evidence={"variables": names, "unwatched": True}, explains=0.6,
            fix="If they are unused on purpose, leave them out of the variables handed to tape.gradient and the "
                "optimizer; otherwise call their layers inside the `with tf.GradientTape()` block, in the forward "
                "pass the loss is computed from."))
    if no_grad:
        names = [run.var_name(v) for v in no_grad]
        cut = all(v in disconnected for v in no_grad)
        out.append(Finding(
            "missing_gradient",
            f"{len(names)} trainable variable(s) never got a gradient: {', '.join(names[:6])}"
            f"{', ...' if len(names) > 6 else ''}"
            + (". tape.gradient was asked for them and returned None although the forward pass read them "
               "while the tape recorded: the loss does not depend on what they compute. Something between "
               "them and the loss cuts the gradient: a `tf.stop_gradient`, a `.numpy()` (or NumPy) round "
               "trip, an integer cast or `argmax`, or a value taken from a variable by `assign`."
               + (" The script then left their None gradients out of apply_gradients, so no optimizer ever "
                  "got them." if any(v in of_untrained for v in no_grad) else "")
               if cut else "."),
            variables=names, evidence={"variables": names, **({"disconnected": True} if cut else {})},
            fix="Keep the computation from these variables to the loss in TensorFlow ops on the tape: remove the "
                "`tf.stop_gradient` (or move it to the branch meant to be fixed, such as a target), avoid "
                "`.numpy()` and integer casts inside the tape." if cut else None,
            explains=0.9))
    part = part_gradient_finding(run, sets)
    # the copies of a model built again take turns by construction: the model_recreated finding says it
    if part and not (recreated and {int(r["index"]) for r in part.evidence["variables"]} <= recreated):
        out.append(part)
    pending = {v: s for v, s in sets.not_applied_nonzero.items() if v not in sets.no_grad}
    if pending:
        names = [run.var_name(v) for v in pending]
        out.append(Finding(
            "not_applied",
            f"{len(names)} variable(s) had a gradient but the optimizer did not update them "
            f"(first at step {min(pending.values())}): {', '.join(names[:6])}.",
            steps=[min(pending.values())], variables=names, evidence={"first_step": pending}, explains=0.9))
    modes = training_modes(run)
    # A frozen layer (trainable=False: a distillation teacher, a fine-tuned base) in inference
    # mode is the recipe, not a slip.
    frozen = frozen_layers(run)
    infer = {name: seen[False] for name, seen in modes.items()
             if False in seen and True not in seen and name not in frozen and not decided_inside(run, name)}
    same = {name: k for name, k in infer.items() if name in mode_free_layers(run)}
    infer = {name: k for name, k in infer.items() if name not in same}
    if same:
        out.append(Finding(
            "training_mode_mismatch", severity="info",
            summary=f"{len(same)} layer(s) that take `training` ran in inference mode during every optimizer "
            f"step: {', '.join(list(same)[:6])}. At their settings (every dropout/noise rate 0, no moving "
            "statistics) they compute the same in both modes, so this changes nothing; with a rate above 0 it "
            "would.",
            layers=list(same), steps=[min(same.values())], evidence={"layers_inference_same_in_both_modes": list(same)},
            explains=0.0))
    if infer:
        by_fit = fit_without_training(run, set(infer))
        # BatchNormalization in inference mode normalises every step with its initial moving
        # statistics (mean 0, variance 1) and never updates them: the model trained is not the
        # one evaluated. Dropout alone in inference mode only regularises less: a warning.
        bn = [n for n in infer if _batch_norm(run, n)]
        out.append(Finding(
            "training_mode_mismatch", severity="error" if bn else "warning",
            summary=f"{len(infer)} training-dependent layer(s) ran in inference mode during every "
            f"optimizer step: {', '.join(list(infer)[:6])}."
            + (f" BatchNormalization ({', '.join(bn[:3])}) then normalises each batch with its moving statistics, "
               "which it never updates (they stay where they started: mean 0 and variance 1 for a new layer), instead of the "
               "batch's own." if bn else "")
            + (f" The run is {by_fit[0]}" if by_fit else ""),
            layers=list(infer), steps=[min(infer.values())],
            evidence={"layers_inference": list(infer), **({"fit_without_training": True} if by_fit else {})},
            fix=by_fit[1] if by_fit else None, explains=0.6))
    fresh = frozen_as_created_finding(run)
    if fresh:
        out.append(fresh)
    resets = iteration_resets(run, sets.update_steps)
    if resets:
        out.append(Finding(
            "optimizer_mismatch",
            f"the optimizer's iteration counter did not advance at {len(resets)} updating step(s) "
            f"(first at step {resets[0]}): the optimizer is re-created during training, losing its state.",
            steps=resets[:10], evidence={"reset_steps": len(resets), "iterations_head": run.iterations[:8]},
            explains=0.7))
    unscaled = loss_scale_missing(run)
    if unscaled:
        out.append(Finding(
            "loss_scaling",
            f"the optimizer is a {unscaled['optimizer']} (over {unscaled['inner']}), which divides the gradients it "
            f"applies by the loss scale ({unscaled['initial_scale']:g} at the start), but "
            + ("the steps call `optimizer.scale_loss(loss)` and then differentiate `loss`, not the scaled loss it "
               "returns" if unscaled["called_unused"] else "no step called `optimizer.scale_loss(loss)`")
            + ": the loss handed to tape.gradient was not scaled, so every update is that "
            f"many times too small (gradient norm {unscaled['gradient_norm_over_loss']:.3g} x the loss, median of the "
            f"first {unscaled['steps_measured']} steps).",
            steps=[int(run.step[0])], evidence=unscaled, explains=1.0,
            fix="Differentiate the scaled loss: `scaled = optimizer.scale_loss(loss)` inside the tape, then "
                "`tape.gradient(scaled, vars)` and `optimizer.apply(grads, vars)` (it unscales them); fit() does "
                "this itself."))
    sk = np.nan_to_num(run.skipped, nan=0.0) > 0
    if sk.any() and np.isfinite(run.loss_scale).any():
        steps = run.step[sk].tolist()
        out.append(Finding(
            "loss_scaling", severity="warning",
            summary=f"{len(steps)} step(s) were skipped for overflow under loss scaling (first at step {steps[0]}).",
            steps=steps[:10], evidence={"skipped_steps": len(steps)}, explains=0.3))
    if kept:
        scale = kept["loss_scale"]
        out.append(Finding(
            "loss_scaling",
            f"the loss handed to tape.gradient is {kept['loss_factor']:g} x the Keras loss's value from step "
            f"{kept['step']} on, the loss scale `optimizer.scale_loss(loss)` multiplied it by ({scale:g}), but the "
            f"gradients are applied by {kept['optimizer']}, no LossScaleOptimizer, which does not divide them back: "
            f"every update is computed from gradients {scale:g} times too large (Adam-like optimizers absorb most of "
            "a constant factor, except against epsilon; SGD takes steps that many times too large), and overflowed "
            "steps are applied instead of skipped.",
            steps=[kept["step"]], evidence=kept, explains=1.0,
            fix=("Apply the gradients of the scaled loss with the LossScaleOptimizer itself "
                 "(`optimizer.apply_gradients(zip(grads, model.trainable_variables))` on the wrapper, not "
                 "`optimizer.inner_optimizer`), which divides them by the scale and skips overflowed steps; "
                 "tf-keras: `grads = optimizer.get_unscaled_gradients(grads)` before applying, or apply "
                 "with the wrapper.")))
    pad = padding_counted(run)
    if pad:
        out.append(Finding(
            "sample_weighting", severity="warning",
            summary=f"the model's output carries a mask ({pad['valid']} valid of {pad['total']} entries at step "
            f"{pad['step']}: the padding of Embedding(mask_zero=True) or Masking), but the loss handed to "
            f"tape.gradient ({pad['loss']:.6g}) is the mean of {pad['loss_function']}'s per-entry losses over all "
            f"{pad['total']} entries, padding included: a loss function applies no mask, so the padded positions "
            f"are trained on and weigh {pad['total'] - pad['valid']} of every {pad['total']} entries in the loss.",
            steps=[pad["step"]], evidence=pad, explains=0.8,
            fix=("Average over the valid entries only: call a Keras loss object on the model's output "
                 f"(`keras.losses.{pad['loss_class']}({'from_logits=True' if pad['from_logits'] else ''})"
                 "(y, model(x, training=True))` reads the mask Keras attaches to it, as fit() does), or weight "
                 "the per-entry losses by the mask and divide by its sum (`mask = tf.cast(x != 0, loss.dtype)`; "
                 "`tf.reduce_sum(loss * mask) / tf.reduce_sum(mask)`).")))
    fixed = fixed_divisor(run)
    if fixed:
        m, d = fixed["batch"], fixed["divisor"]
        out.append(Finding(
            "loss_scale", severity="warning",
            summary=f"at step {fixed['step']} the batch has {m} examples, and the loss handed to tape.gradient is "
            f"the sum of their per-example losses divided by {d}, the size of the full batches (whose loss is "
            f"their mean): {fixed_divisor_code(d)}. The {fixed['partial_steps']} smaller batch(es) weigh "
            f"{m}/{d} of what fit() or a mean gives them.",
            steps=[fixed["step"]], evidence=fixed, explains=0.8, fix=fixed_divisor_fix()))
    logits = logits_as_probabilities(run)
    if logits:
        out.append(logits)
    reg = regularization_count(run)
    if reg:
        n = reg["count"]
        said = regularization_said(n)
        out.append(Finding(
            "regularization_mismatch", severity="error",
            summary=f"the model has regularization losses (sum(model.losses) = {reg['reg_loss']:.6g}) and the "
            f"loss handed to tape.gradient {said}: it equals the Keras loss's data loss plus {n} x "
            f"sum(model.losses) at each of the {len(reg['steps'])} steps checked (the first ones with "
            "regularization losses).",
            steps=reg["steps"][:1], evidence=reg,
            fix=regularization_fix(n), explains=0.9))
    lb = label_broadcast(run)
    if lb and not said:
        other = "predictions" if lb["broadcast"] == "labels" else "labels"
        out.append(Finding(
            "shape_broadcast", severity="warning",
            summary=f"the Keras {lb['loss']} loss gets labels of shape {lb['y_true_shape']} and predictions of shape "
            f"{lb['y_pred_shape']}: after the loss lines them up, the {lb['broadcast']} are repeated along axis "
            f"{lb['axis']} (size {lb['size']}) of the {other}, so each of those {lb['size']} entries is fitted to "
            "the same value. Most often a recurrent layer left with `return_sequences=True` (a prediction per "
            "time step against one label per sequence), or labels missing an axis the model outputs.",
            steps=[lb["step"]], evidence=lb, explains=0.9,
            fix="Make the model's output the labels' shape: `return_sequences=False` on the last recurrent layer "
                "(or pool/slice the time axis before the head), or give the labels the axis the predictions have."))
    unreachable = unreachable_targets(run)
    if unreachable:
        u, first = unreachable, unreachable["steps"][0]
        lo, hi = u["range"]
        span = f"[{lo:g}, {hi:g}]" if hi is not None else f"[{lo:g}, inf)"
        shown = (f"mean {first['mean']:.4g}" if first["mean_outside"] or hi is None else
                 f"mean {first['mean']:.4g}, mean square {first['mean_square']:.4g}")
        out.append(Finding(
            "loss_mismatch", severity="error" if u["mean_outside"] else "warning",
            summary=f"the model's output comes out of a {u['activation']}, whose values lie in {span}, and the "
            f"{u['loss']} loss fits it to targets outside that range at {u['out_of_range']} of the {u['checked']} "
            f"steps checked (step {first['step']}: {shown}, which targets in {span} cannot give): those targets "
            "can never be reached, so the loss keeps a floor and the gradient pushes the output against the "
            f"activation's bound" + (" (a relu there stops passing any gradient)." if u["activation"] == "relu"
                                     else "."),
            steps=[first["step"]], evidence=u, explains=0.9,
            fix=f"Give the output layer no activation (`activation=None`, linear) for targets that can be "
                f"negative or unbounded, or scale the targets into {span} (and back at prediction time)."))
    blr = binary_labels_out_of_range(run)
    if blr:
        first = blr["steps"][0]
        out.append(Finding(
            "loss_mismatch",
            summary=(f"the Keras {blr['loss']} got labels outside [0, 1] at {blr['out_of_range']} of the "
                     f"{blr['checked']} steps checked (step {first['step']}: mean {first['mean']:.4g}, mean square "
                     f"{first['mean_square']:.4g}; labels in [0, 1] have a mean square no larger than their mean): "
                     "a binary cross-entropy reads each label as the probability of the positive class, so labels "
                     "coded 1/2, -1/1, 0/255 or class indices 0/1/2 make a loss whose minimum is not at the right "
                     "predictions." if blr["range"] == "[0, 1]" else
                     f"the Keras {blr['loss']} got labels outside [-1, 1] at {blr['out_of_range']} of the "
                     f"{blr['checked']} steps checked (step {first['step']}: mean square {first['mean_square']:.4g}, "
                     "above 1): a hinge loss reads each label as -1 or 1 (0/1 mapped to them), so labels coded "
                     "1/2, 0/255 or class indices make a loss whose minimum is not at the right predictions."),
            steps=[first["step"]], evidence=blr, explains=1.0,
            fix="Map the labels to 0 and 1 before the loss (`y - 1` for labels coded 1/2, `(y > 0)` for -1/1, "
                "`y / 255` for 0/255), or use a loss made for their coding (sparse categorical cross-entropy for "
                "class indices)."))
    neg = negated_loss(run)
    if neg:
        out.append(Finding(
            "gradient_sign",
            summary=f"the loss handed to tape.gradient is the negation of the Keras loss the steps called at each of "
            f"the {len(neg['steps'])} steps checked (step {neg['steps'][0]}: {neg['loss']:.6g} against the Keras "
            f"loss's {neg['data_loss']:.6g}): the optimizer subtracts the gradient of the negated loss, so it "
            "climbs the loss (gradient ascent).",
            steps=neg["steps"][:1], evidence=neg, explains=1.0,
            fix="Differentiate the loss itself, not its negation: drop the minus in front of it (`loss = -...`)."))
    out += [f for f in (repeated_step_finding(run) or one_batch_finding(run), metric_misfit_finding(run), zero_learning_rate(run),
                        wired_inference_overridden(run), sorted_data(run), loss_blowup_finding(run))
            if f is not None]
    untrainable = (run.meta.get("extra") or {}).get("untrainable_sources") or []
    if untrainable:
        out.append(Finding(
            "missing_gradient", severity="warning",
            summary=f"tape.gradient was asked for {len(untrainable)} variable(s) created with `trainable=False` "
            f"({', '.join(untrainable[:6])}{', ...' if len(untrainable) > 6 else ''}) and returned None "
            "for them: a GradientTape watches trainable variables only, so they never train (a script that drops "
            "None gradients before apply_gradients hides it).",
            variables=list(untrainable), evidence={"untrainable_sources": list(untrainable)}, explains=0.8,
            fix=("Create the variables that should train with `trainable=True` (tf.Variable's default), or leave "
                 "them out of the list handed to tape.gradient if they are meant to stay fixed.")))
    out += lost_records(run)
    return out


def wired_inference_overridden(run: RunData) -> Finding | None:
    """Layers a Keras 3 functional model calls with ``training=False`` written at the call site
    (``RunInfo.extra["wired_inference"]``) whose tracked layers ran in training mode at some
    optimizer step: the outer call's ``training=True`` replaced the argument (see
    ``_probes.note_wired_inference``), so a base meant to stay in inference mode updated its
    BatchNormalization statistics and drew its dropout masks."""
    wired = (run.meta.get("extra") or {}).get("wired_inference") or {}
    hit: dict[str, list[str]] = {}
    first: int | None = None
    for modes, step, count in run.modes:
        for layer, site in wired.items():
            under, since = (site.get("layers") or [], site.get("from_step")) if isinstance(site, dict) else (site, None)
            since = since if isinstance(since, int) else 0
            for n in under:
                if (modes or {}).get(n) is not True or step + count <= since:
                    continue
                # A frozen layer's `training=True` is not acted on (Keras 3 runs a BatchNormalization
                # with trainable=False in inference mode): the steps it was not frozen at count.
                frozen = [(f, f + c) for names, f, c in run.frozen if _batch_norm(run, n) and n in (names or [])]
                k = next((s for s in range(max(step, since), step + count)
                          if not any(a <= s < b for a, b in frozen)), None)
                if k is None:
                    continue
                hit.setdefault(layer, [])
                if n not in hit[layer]:
                    hit[layer].append(n)
                first = k if first is None else min(first, k)
    if not hit:
        return None
    said = "; ".join(f"'{layer}' ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})"
                     for layer, names in hit.items())
    return Finding(
        "training_mode_mismatch", severity="warning",
        summary="the functional model calls these layers with `training=False` written at the call site, yet "
        f"their training-dependent layers ran in training mode during optimizer steps: {said}. Keras 3 passes "
        "the outer call's `training=True` (fit(), `model(x, training=True)`) to every layer of a functional "
        "model in place of the argument written in the graph, so a base meant to stay in inference mode (the "
        "transfer-learning guide's `base_model(inputs, training=False)`) updates its BatchNormalization "
        "statistics and applies its dropout; tf-keras keeps the argument.",
        steps=[first] if first is not None else [], layers=[n for names in hit.values() for n in names][:16],
        evidence={"wired_inference_overridden": hit}, explains=0.6,
        fix=("To keep those layers in inference mode in Keras 3, set `trainable = False` on each "
             "BatchNormalization layer of the base (`for l in base.layers: if isinstance(l, "
             "keras.layers.BatchNormalization): l.trainable = False`), which Keras 3 runs in inference mode, "
             "then `compile()` again; or call the base yourself with `training=False` in a custom `train_step` "
             "or loop."))


def zero_learning_rate(run: RunData) -> Finding | None:
    """``zero_learning_rate``: the recorded learning rate is 0 from some step to the run's last,
    while gradients are not zero there (a hand-written update records no rate: never reported).
    From the first step, or for half the run or more, an error; for fewer steps at its end a
    warning when at least two are left (a schedule that ends at 0 on its last step trains every
    step before it)."""
    rows = np.flatnonzero(np.isfinite(run.lr))
    if not rows.size or run.lr[rows[-1]] != 0:
        return None
    nonzero = rows[run.lr[rows] != 0]
    idle = rows[rows > nonzero[-1]] if nonzero.size else rows
    g = run.grad_norm[idle]
    if not (np.isfinite(g) & (g > 0)).any():
        return None  # nothing to apply either: another finding's matter
    k, first = int(run.step[idle[0]]), not nonzero.size
    if not first and idle.size < 2:
        return None
    before = float(run.lr[nonzero[-1]]) if nonzero.size else None
    said = (f"is 0 at every one of the run's {idle.size} steps" if first else
            f"falls from {before:.3g} (step {int(run.step[nonzero[-1]])}) to 0 at step {k} and stays 0 for the "
            f"run's last {idle.size} steps")
    return Finding(
        "zero_learning_rate", severity="error" if first or 2 * idle.size >= rows.size else "warning",
        summary=f"the learning rate the optimizer applied {said}, while the gradients are not zero (|g| "
        f"{float(np.nanmax(g)):.3g} at most): those steps change no weight"
        + (", so nothing trains." if first else
           ": a schedule reaches 0 before the training ends (its decay_steps shorter than the run, a decay "
           "rate of 0)."),
        steps=[k], evidence={"first_zero_step": k, "zero_steps": int(idle.size), "rate_before": before},
        explains=1.0,
        fix=("Give the optimizer a learning rate above 0 (`learning_rate=1e-3`)." if first else
             f"Let the schedule span the training: decay over the run's {int(run.step[rows[-1]]) + 1} optimizer "
             "steps (`decay_steps`) with a decay rate above 0, or give it a floor above 0 (`alpha`, "
             "`end_learning_rate`)."))


# Keras losses whose value does not change when y_true and y_pred trade places (squared,
# absolute or log-cosh differences; the cosine): called as loss(pred, y) they compute the same.
_SYMMETRIC_LOSSES = frozenset({
    "MeanSquaredError", "MeanAbsoluteError", "Huber", "LogCosh", "CosineSimilarity",
    "MeanSquaredLogarithmicError",
})


def swapped_loss_calls(run: RunData) -> list[dict[str, Any]]:
    """The Keras loss calls of the run's first steps that got the model's output as ``y_true``
    and the labels as ``y_pred`` (``LossCall.swapped``), for losses that are not symmetric in
    the two: each distinct loss once, with the first step it was seen at."""
    found: dict[tuple[Any, Any], dict[str, Any]] = {}
    for step in sorted(run.loss_info):
        info = run.loss_info[step]
        for call in info.get("calls") or [info]:
            if call.get("swapped") and call.get("cls") not in _SYMMETRIC_LOSSES:
                found.setdefault((call.get("cls"), call.get("function")), {
                    "step": int(step), "loss": call.get("function") or call.get("cls")})
    return list(found.values())


def swapped_loss_finding(run: RunData) -> Finding | None:
    """``gradtrace check``: a Keras loss that got the model's output as labels (``loss(pred, y)``)
    and is not symmetric in its arguments; a ``loss_mismatch`` of the run with itself (the
    comparison of two runs reports it through :func:`detect_pair.loss_mismatch`)."""
    calls = swapped_loss_calls(run)
    if not calls:
        return None
    names = ", ".join(c["loss"] for c in calls)
    return Finding(
        "loss_mismatch",
        f"{names} got the model's output as y_true and the labels as y_pred (from step {calls[0]['step']}): "
        "Keras losses take (y_true, y_pred), PyTorch's take (input, target). The loss and its gradients are "
        "those of another function.",
        steps=[calls[0]["step"]], evidence={"arguments swapped": calls}, explains=1.0,
        fix="Call the loss as `loss(y_true, y_pred)`: labels first, the model's output second.")
