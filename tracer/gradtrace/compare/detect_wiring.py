"""Detectors of training-loop wiring mistakes the tracer saw inside a run.

``loss_not_differentiated``: a Keras loss computed in the tape (an output's loss of a
multi-output model) that does not reach the tensor handed to ``tape.gradient``, while
variables get no gradient.

``zero_gradient`` (a pair check): variables one run trains while the other hands the
optimizer an all-zero gradient for them (a ``tf.stop_gradient`` above them, zeros put in
place of ``None``).

``misapplied_gradient``: ``grads = tape.gradient(loss, vars_a)`` then
``apply_gradients(zip(grads, vars_b))`` with ``vars_b`` the same variables in another
order. The tracer matches each applied gradient to the source the tape computed it for
and keeps the pairs in ``RunInfo.misapplied_gradients``; a defect of the run by itself,
so ``check`` and ``compare`` report it the same way.

``discarded_gradient``: a ``tape.gradient`` call of a traced training step whose gradients
nothing uses (``g2 = tape.gradient(loss2, vars)`` beside the applied ``g1``), kept by the
tracer in ``RunInfo.discarded_gradients``; that loss does not train the model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gradtrace.compare import detect_run as dr
from gradtrace.compare.align import Alignment
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


def loss_not_differentiated(run: RunData, side: str | None = None) -> Finding | None:
    """A Keras loss computed inside the tape whose value does not reach the tensor handed to
    ``tape.gradient`` (recorded per loss call inside tf.function: ``in_target``), while
    trainable variables get no gradient: that output's loss was left out of the total.

    A loss left out while every variable still gets a gradient (one computed for logging)
    is not reported.
    """
    left: dict[str, Any] | None = None
    first = None
    for step in sorted(run.loss_info):
        info = run.loss_info[step] or {}
        for c in info.get("calls") or [info]:
            if c.get("in_target") is False:
                left, first = c, step
                break
        if left is not None:
            break
    if left is None:
        return None
    no_grad = dr.var_sets(run).no_grad
    if not no_grad:
        return None
    names = [run.var_name(v) for v in no_grad]
    what = str(left.get("function") or left.get("cls") or "a Keras loss")
    shape = left.get("y_pred_shape")
    who = f"run {side} ('{run.name}')" if side else f"run '{run.name}'"
    summary = (
        f"{who} computes {what}{f' on predictions of shape {shape}' if shape else ''} inside the tape, "
        "but the tensor handed to tape.gradient does not depend on it: that loss is not trained, and "
        f"{len(names)} trainable variable(s) get no gradient ({', '.join(names[:_SHOWN])}"
        f"{', ...' if len(names) > _SHOWN else ''}). The differentiated tensor is another loss (one output's "
        "alone, or an earlier partial sum), not the total.")
    return Finding(
        "loss_not_differentiated", summary,
        steps=[int(first)] if first is not None else [], variables=names,
        evidence={"loss_left_out": {k: left.get(k) for k in ("cls", "function", "from_logits", "y_true_shape",
                                                                 "y_pred_shape") if left.get(k) is not None},
                  "no_gradient": names, **({"run": side} if side else {})},
        explains=1.0)


def zero_and_nonzero(run: RunData) -> tuple[set[int], set[int]]:
    """Variables whose recorded gradient norm is exactly 0 at every recorded step (and that
    had one recorded), and variables with a non-zero norm at some recorded step."""
    zero: set[int] = set()
    nonzero: set[int] = set()
    if run.norm.size == 0:
        return zero, nonzero
    for j, v in enumerate(run.var_index.tolist()):
        col = run.norm[:, j]
        has = (run.grad[:, j] == 1) & np.isfinite(col)
        if not has.any():
            continue
        if (col[has] == 0).all():
            zero.add(int(v))
        else:
            nonzero.add(int(v))
    return zero, nonzero


def zero_gradient(a: RunData, b: RunData, al: Alignment) -> Finding | None:
    """Variables one run trains while the other hands the optimizer an all-zero gradient for
    them at every recorded step, put in place of the ``None`` its tape returned (recorded by
    the tracer in ``replaced_none_gradients``): nothing in that run's loss depends on them (a
    ``tf.stop_gradient`` above them).
    The optimizer then leaves them as they are, which the gradient sets alone read as
    "not applied"."""
    za, nza = zero_and_nonzero(a)
    zb, nzb = zero_and_nonzero(b)
    # Only where the tracer saw the tape return None for them: gradients zeroed by hand
    # (a layer "frozen" by zeroing its gradients) are the script's choice (not_applied says so).
    za &= {int(v) for v in a.meta.get("replaced_none_gradients") or []}
    zb &= {int(v) for v in b.meta.get("replaced_none_gradients") or []}
    for side, run, other, zero, trained in (("b", b, "a", zb, nza), ("a", a, "b", za, nzb)):
        pick = 1 if side == "b" else 0
        vs = [p[pick] for p in al.var_pairs if p[pick] in zero and p[1 - pick] in trained]
        if not vs:
            continue
        names = [run.var_name(v) for v in vs]
        return Finding(
            "zero_gradient",
            f"{len(names)} trainable variable(s) of run {side} ('{run.name}') get a gradient that is exactly "
            f"zero at every recorded step ({', '.join(names[:_SHOWN])}{', ...' if len(names) > _SHOWN else ''}), "
            f"while run {other} trains them: nothing in run {side}'s loss depends on them. A `tf.stop_gradient` "
            "(or a numpy round trip) between them and the loss cuts them off, and the optimizer got zeros for "
            "them (put in place of the None TensorFlow returns, so Keras raised no warning): it leaves them "
            "unchanged.",
            variables=names, evidence={"run": side, "zero_gradient": names}, explains=1.0)
    return None


def _all_applied_zero(run: RunData, zero: set[int], nonzero: set[int]) -> Finding | None:
    """Every trainable variable's gradient is exactly zero at every recorded step (two at least, or
    the run's only one) while the loss is not: the optimizer applies nothing at any step. Zeros
    the tape returned for None (``replaced_none_gradients``) are the forward-pass-outside-the-tape
    finding's; zeros of the script's own making (a clipping bound of 0, a factor of 0) are this."""
    trainable = {int(v["index"]) for v in run.variables if v.get("trainable") is not False}
    if nonzero or not zero or not trainable <= zero:
        return None
    if set(int(v) for v in run.meta.get("replaced_none_gradients") or []) & zero:
        return None
    recorded = int(np.isfinite(run.norm).any(axis=1).sum()) if run.norm.size else 0
    loss = run.loss[np.isfinite(run.loss)]
    if recorded < min(2, run.n_steps) or not loss.size or not np.any(loss != 0):
        return None
    names = [run.var_name(v) for v in sorted(zero)]
    said = f"{', '.join(names[:_SHOWN])}{', ...' if len(names) > _SHOWN else ''}"
    return Finding(
        "zero_gradient", severity="error",
        summary=f"the gradient the optimizer applied to every trainable variable ({len(names)}: {said}) is exactly "
        f"zero at each of the {recorded} recorded steps while the loss is not ({float(loss[0]):.6g} at the "
        "first): nothing trains. The gradients are zeroed between tape.gradient and the apply (clipped to a "
        "bound of 0: `tf.clip_by_value(g, -c, c)` or `tf.clip_by_norm(g, c)` with c = 0, an integer cast of "
        "the bound such as `int(0.5)`; multiplied by a factor of 0), or the loss's own gradient is 0 (every "
        "ReLU unit dead; a saturated sigmoid or softmax output, or predictions clipped with "
        "`tf.clip_by_value(p, eps, 1 - eps)` where they saturate: the clip passes no gradient there).",
        variables=names, evidence={"zero_gradient": names, "every_trainable_variable": True,
                                   "recorded_steps": recorded}, explains=1.0,
        fix=("Print the clipping bound or factor applied to the gradients and make it positive (a float: "
             "`float(args.clip)`); if `tape.gradient` itself returns zeros, check for dead ReLU units and "
             "saturated activations (scale the inputs; compute cross-entropy from logits with "
             "`from_logits=True` instead of clipping probabilities)."))


def one_signed_run(run: RunData) -> Finding | None:
    """One run (``gradtrace check``): every gradient the optimizer applied is of one sign. At each
    recorded full step, every trainable variable with more than one entry and a non-zero gradient
    has its smallest entry >= 0 (or its largest <= 0), at every such step from the first to the
    last read (four at least, two variables at least). A network's gradients have both signs; one
    sign everywhere is what ``tf.clip_by_value(g, 0.0, c)`` (a lower bound of 0 meant as -c),
    ``tf.maximum(g, 0)`` or ``tf.abs(g)`` leave: the weights can move in one direction only."""
    if not run.gmin.size or run.gmin.shape != run.grad.shape:
        return None
    size = {int(v["index"]): int(np.prod(v.get("shape") or [1])) for v in run.variables
            if v.get("trainable") is not False and all(isinstance(d, int) for d in v.get("shape") or [])}
    cols = [j for j, v in enumerate(run.var_index.tolist()) if size.get(int(v), 0) > 1]
    if len(cols) < 2:
        return None
    lo, hi = run.gmin[:, cols], run.gmax[:, cols]
    has = (run.grad[:, cols] == 1) & np.isfinite(lo) & np.isfinite(hi) & ((lo != 0) | (hi != 0))
    rows = has.any(axis=1)
    if int(rows.sum()) < 4 or int(has.any(axis=0).sum()) < 2:
        return None
    sign = None
    for want, ok in (("non-negative", lo >= 0), ("non-positive", hi <= 0)):
        if bool(np.all(ok | ~has)):
            sign = want
    if sign is None:
        return None
    clipped = "clip_by_value" in ((run.meta.get("extra") or {}).get("hand_clipping") or [])
    steps = run.var_rows[rows]
    names = [run.var_name(int(run.var_index[j])) for j in cols]
    return Finding(
        "gradient_sign", severity="error" if clipped else "warning",
        summary=f"every gradient the optimizer applied is {sign} in every entry of each of the {len(names)} "
        f"trainable variables at each of the {int(rows.sum())} recorded steps (steps {int(steps[0])} to "
        f"{int(steps[-1])}): a network's gradients have both signs, so something between tape.gradient and the "
        "apply cut one sign off"
        + (" (the script clips its gradients with `tf.clip_by_value`: a lower bound of 0, as in "
           "`tf.clip_by_value(g, 0.0, 1.0)` meant as -1..1, zeroes every negative entry)" if clipped else
           " (`tf.clip_by_value(g, 0.0, c)` meant as -c..c, `tf.maximum(g, 0)`, `tf.abs(g)`)")
        + ". The weights can only move one way.",
        steps=[int(steps[0])], variables=names[:16],
        evidence={"sign": sign, "recorded_steps": int(rows.sum()), "variables": names,
                  "hand_clipping": clipped}, explains=1.0,
        fix="Clip symmetrically: `tf.clip_by_value(g, -c, c)`, or clip the norm (`tf.clip_by_global_norm(grads, c)`, "
            "or the optimizer's `clipnorm`/`global_clipnorm`).")


def zero_gradient_run(run: RunData) -> Finding | None:
    """One run (``gradtrace check``): trainable variables the optimizer got an all-zero gradient for
    at every recorded step, put in place of the ``None`` the tape returned (``replaced_none_gradients``):
    nothing in the loss depends on them. Zeros the script computed itself are not taken for it."""
    zero, nonzero = zero_and_nonzero(run)
    applied_zero = _all_applied_zero(run, zero, nonzero)
    if applied_zero is not None:
        return applied_zero
    zero &= {int(v) for v in run.meta.get("replaced_none_gradients") or []}
    if not zero:
        return None
    names = [run.var_name(v) for v in sorted(zero)]
    trainable = {int(v["index"]) for v in run.variables if v.get("trainable") is not False}
    every = bool(trainable) and trainable <= zero
    said = f"{', '.join(names[:_SHOWN])}{', ...' if len(names) > _SHOWN else ''}"
    if every:
        # nothing the step computed under the tape reaches the loss: the forward pass ran before it
        return Finding(
            "zero_gradient", severity="error",
            summary=f"every trainable variable ({len(names)}: {said}) gets a gradient that is exactly zero at every "
            "recorded step, put in place of the None TensorFlow returned for each: the loss handed to "
            "tape.gradient does not depend on the weights at all, so nothing trains. Most often the forward pass "
            "(`model(x)`) ran before the `with tf.GradientTape()` block opened, or outside it; or the loss was "
            "computed from NumPy values (`.numpy()`) or integer casts.",
            variables=names, evidence={"zero_gradient": names, "every_trainable_variable": True}, explains=1.0,
            fix=("Call the model inside the tape and compute the loss from its output there: `with "
                 "tf.GradientTape() as tape: loss = loss_fn(y, model(x, training=True))`; and do not replace "
                 "None gradients by zeros, which hides this (Keras warns about None gradients)."))
    return Finding(
        "zero_gradient", severity="warning",
        summary=f"{len(names)} trainable variable(s) get a gradient that is exactly zero at every recorded step "
        f"({said}), put in place of the None TensorFlow returned for them: nothing in the loss depends on them, "
        "and the optimizer leaves them unchanged. A `tf.stop_gradient`, a NumPy round trip (`.numpy()`, `np.` "
        "functions) or an integer cast (`tf.cast(..., tf.int32)`, `tf.round`, `tf.argmax`) inside the tape, or "
        "a layer whose output the loss never uses, cuts them off from the loss.",
        variables=names, evidence={"zero_gradient": names}, explains=1.0,
        fix=("Keep the computation from these variables to the loss in differentiable TensorFlow ops inside the "
             "tape (no `.numpy()` or NumPy functions, no `tf.stop_gradient`, no integer casts); if they are meant "
             "to stay fixed, set `trainable = False` instead of replacing their gradients by zeros."))


def absorb_zero_gradient(a: RunData, b: RunData, al: Alignment, set_findings: list[Finding]) -> list[Finding]:
    """The gradient-set findings with :func:`zero_gradient` first: a ``not_applied`` of exactly
    those variables is its consequence (a zero gradient moves nothing) and becomes evidence."""
    zf = zero_gradient(a, b, al)
    if zf is None:
        return set_findings
    out = [zf]
    for f in set_findings:
        if f.kind == "not_applied" and f.variables and set(f.variables) <= set(zf.variables):
            zf.evidence.setdefault("also", []).append(f.summary)
            continue
        out.append(f)
    return out


def discarded_gradient(run: RunData, side: str | None = None) -> Finding | None:
    """``tape.gradient`` calls of the run's traced training step whose gradients nothing used."""
    recs = [r for r in run.meta.get("discarded_gradients") or [] if r.get("variables")]
    if not recs:
        return None
    names = [run.var_name(int(v)) for v in dict.fromkeys(v for r in recs for v in r["variables"])]
    shapes = [r.get("target_shape") for r in recs]
    what = "a scalar" if all(s == [] for s in shapes) else f"a tensor of shape {shapes[0]}"
    who = f"run {side} ('{run.name}')" if side else f"run '{run.name}'"
    summary = (
        f"{who} differentiates {what} with respect to {len(names)} trainable variable(s) "
        f"({', '.join(names[:_SHOWN])}{', ...' if len(names) > _SHOWN else ''}) in its training step and never "
        "uses the result: no optimizer applies those gradients, no gradient it applies is computed from them, "
        "and the step neither stores nor returns them. What was differentiated (a second loss, a penalty "
        "computed apart) does not train the model; only the gradients handed to the optimizer do.")
    steps = sorted(int(r["step"]) for r in recs if r.get("step") is not None)
    return Finding(
        "discarded_gradient", summary,
        steps=steps[:1], variables=names,
        evidence={"calls": [{"variables": [run.var_name(int(v)) for v in r["variables"]][:_SHOWN],
                             "n_variables": len(r["variables"]), "target_shape": r.get("target_shape"),
                             "traced_at_step": r.get("step")} for r in recs],
                  **({"run": side} if side else {})},
        explains=1.0)


def wiring_findings(run: RunData, side: str | None = None) -> list[Finding]:
    """Every wiring finding of one run (``check``; ``compare`` asks each run with its side)."""
    found = (misapplied_gradient(run, side), loss_not_differentiated(run, side), discarded_gradient(run, side))
    return [f for f in found if f is not None]
