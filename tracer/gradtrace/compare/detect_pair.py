"""Detectors over two runs that need no step alignment: configuration and behaviour sets.

Training modes, frozen state, gradient/applied sets, optimizer/metric/loss
configuration, mixed precision, execution modes, numerics: all comparable even
when the runs started from other weights or saw other batches.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gradtrace.compare import detect_data as dd
from gradtrace.compare import detect_outside as do
from gradtrace.compare import detect_run as dr
from gradtrace.compare import detect_wiring as dw
from gradtrace.compare import manual
from gradtrace.compare.align import Alignment
from gradtrace.compare.data import RunData
from gradtrace.compare.findings import Finding

AB = ("a", "b")


def _lname(x: dict[str, Any]) -> str:
    return str(x.get("name"))


def training_mode_mismatch(a: RunData, b: RunData, al: Alignment) -> Finding | None:
    ma, mb = dr.training_modes(a), dr.training_modes(b)
    if not ma and not mb:
        return None
    diffs: list[dict[str, Any]] = []
    pairs = [(a.tracked_name(la), b.tracked_name(lb), la.get("class_name")) for la, lb in al.layer_pairs
             if a.tracked_name(la) in ma and b.tracked_name(lb) in mb]
    if not pairs:
        # No layer inventory to pair on: layers report their mode in call order.
        oa, ob = _mode_order(a), _mode_order(b)
        if len(oa) == len(ob):
            pairs = [(x, y, None) for x, y in zip(oa, ob, strict=False)]
    for na, nb, cls in pairs:
        sa, sb = ma[na], mb[nb]
        if set(sa) != set(sb):
            # From the first step of a mode one run only ran the layer in (an inference-mode call
            # from some epoch on), not the first step of a mode both ran it in.
            first = min([s for m, s in sa.items() if m not in sb] + [s for m, s in sb.items() if m not in sa])
            diffs.append({"layer_a": na, "layer_b": nb, "class": cls or na,
                          "training_a": sorted(sa), "training_b": sorted(sb), "first_step": first})
    if not diffs:
        return None
    infer_side = ["a" if False in d["training_a"] and True not in d["training_a"] else "b" for d in diffs]
    # A model called without `training` whose layers decide their own mode: theirs are compared.
    kept = [(d, sd) for d, sd in zip(diffs, infer_side, strict=True)
            if not dr.decided_inside(a if sd == "a" else b, d["layer_" + sd])]
    if not kept:
        return None
    diffs, infer_side = [d for d, _ in kept], [sd for _, sd in kept]
    # A layer whose only training-dependent behaviour is a dropout rate, built with rate 0 in
    # both runs (MultiHeadAttention, a GRU without dropout), computes the same in both modes.
    free_a, free_b = dr.mode_free_layers(a), dr.mode_free_layers(b)
    active = [(d, sd) for d, sd in zip(diffs, infer_side, strict=True)
              if not (d["layer_a"] in free_a and d["layer_b"] in free_b)]
    inert = [d for d in diffs if all(d is not x for x, _ in active)]
    if not active:
        side = max(set(infer_side), key=infer_side.count)
        classes = sorted({str(d["class"]) for d in inert})
        return Finding(
            "training_mode_mismatch",
            f"{len(inert)} layer(s) ({', '.join(classes)}) ran in inference mode during optimizer steps in "
            f"run {side} but in training mode in the other; built without dropout in both runs (every random "
            "rate 0, no state of their own), they compute the same in both modes: context, not a cause.",
            severity="info", steps=[min(d["first_step"] for d in inert)], layers=[d["layer_a"] for d in inert],
            evidence={"layers": inert, "inference_run": side, "rates_zero": True}, explains=0.0,
            fix="Nothing to fix at these settings; pass `training=True` to the model inside the tape all the "
                "same, so a dropout added later acts in both runs.")
    diffs, infer_side = [d for d, _ in active], [sd for _, sd in active]
    # Layers of a model no optimizer trains (a mean teacher, a target network) called during the
    # steps: their mode changes what that model hands the loss, not how the trained model ran.
    ua, ub = do.untrained_layers(a), do.untrained_layers(b)
    ours = [(d, sd) for d, sd in zip(diffs, infer_side, strict=True)
            if not (d["layer_a"] in ua and d["layer_b"] in ub)]
    if not ours:
        return _untrained_mode_mismatch(a, b, diffs, infer_side)
    diffs, infer_side = [d for d, _ in ours], [sd for _, sd in ours]
    side = max(set(infer_side), key=infer_side.count)
    run = a if side == "a" else b
    classes = sorted({str(d["class"]) for d in diffs})
    said, fix = "", None
    by_fit = dr.fit_without_training(run, {d["layer_" + side] for d in diffs})
    if by_fit:
        said, fix = f" Run {side} is {by_fit[0]}", by_fit[1]
    return Finding(
        "training_mode_mismatch",
        f"{len(diffs)} training-dependent layer(s) ({', '.join(classes)}) ran in inference mode "
        f"during optimizer steps in run {side} ('{run.name}') but in training mode in the other.{said}",
        steps=[min(d["first_step"] for d in diffs)],
        layers=[d["layer_a"] for d in diffs],
        evidence={"layers": diffs, "inference_run": side, **({"fit_without_training": True} if said else {})},
        fix=fix,
        explains=0.9,
    )


def _untrained_mode_mismatch(a: RunData, b: RunData, diffs: list[dict[str, Any]],
                             infer_side: list[str]) -> Finding:
    """The layers whose mode differs all belong to a model no optimizer of the runs trains."""
    side = max(set(infer_side), key=infer_side.count)
    run = a if side == "a" else b
    models = do.untrained(run)
    owners = {run.meta.get("layer_models", {}).get(d["layer_" + side]) for d in diffs}
    names = ", ".join(sorted(f"'{models[m]}'" for m in owners if m in models))
    classes = sorted({str(d["class"]) for d in diffs})
    return Finding(
        "training_mode_mismatch",
        f"{len(diffs)} training-dependent layer(s) ({', '.join(classes)}) of a model no optimizer of the runs "
        f"trains ({names}: a mean teacher or a target network, its weights written by assign) ran in inference "
        f"mode in run {side} ('{run.name}') and in training mode in the other, called during the steps: what "
        "that model hands the loss (its targets) differs, Dropout's random masks and BatchNormalization's batch "
        "statistics in one run only, so the losses and gradients differ while the trained model's layers run "
        "alike.",
        steps=[min(d["first_step"] for d in diffs)], layers=[d["layer_a"] for d in diffs],
        evidence={"layers": diffs, "inference_run": side, "untrained_models": names},
        fix="Call that model with the same `training` argument in both runs: `teacher(x, training=False)` for "
            "deterministic targets, or `training=True` in both for a mean teacher's noise.",
        explains=0.9)


def layer_config_mismatch(a: RunData, b: RunData, al: Alignment) -> Finding | None:
    """Structurally paired layers built with different arguments (a Dropout rate, a
    BatchNormalization momentum, an activation, a regularizer's factor).

    Compared between runs of the same Keras only: Keras 3 and tf-keras spell some
    arguments differently (BatchNormalization's ``axis``). Arguments one run's Keras does
    not have are not compared.
    """
    ca, cb = a.meta.get("layer_configs") or {}, b.meta.get("layer_configs") or {}
    fa, fb = a.meta.get("keras_flavour"), b.meta.get("keras_flavour")
    if not ca or not cb or (fa and fb and fa != fb):
        return None
    diffs: list[dict[str, Any]] = []
    for la, lb in al.layer_pairs:
        xa, xb = ca.get(str(la.get("index"))), cb.get(str(lb.get("index")))
        if not isinstance(xa, dict) or not isinstance(xb, dict):
            continue
        va, vb = _flat(xa, ignored=_LAYER_IGNORED), _flat(xb, ignored=_LAYER_IGNORED)
        for k in sorted(set(va) & set(vb)):
            if not _same_value(va[k], vb[k]):
                diffs.append({"layer_a": _lname(la), "layer_b": _lname(lb), "class": la.get("class_name"),
                              "argument": k.removesuffix(".python_function"),
                              "a": _code_of(xa, k, va[k]), "b": _code_of(xb, k, vb[k])})
        # An argument set to an object in one run and left empty in the other (a kernel
        # constraint or a bias regularizer in one model only): the flattened keys differ.
        for k in sorted(set(va) - set(vb)):
            if any(x.startswith(k + ".") for x in vb):
                diffs.append({"layer_a": _lname(la), "layer_b": _lname(lb), "class": la.get("class_name"),
                              "argument": k, "a": va[k], "b": _spell(_at(xb, k))})
        for k in sorted(set(vb) - set(va)):
            if any(x.startswith(k + ".") for x in va):
                diffs.append({"layer_a": _lname(la), "layer_b": _lname(lb), "class": la.get("class_name"),
                              "argument": k, "a": _spell(_at(xa, k)), "b": vb[k]})
    if not diffs:
        return None
    said = "; ".join(f"{d['class']} {d['layer_a']}: {d['argument']} {d['a']!r} vs {d['b']!r}" for d in diffs[:4])
    return Finding(
        "layer_config_mismatch",
        f"the models' layers are built differently ({len(diffs)} argument(s)): {said}"
        + (" …" if len(diffs) > 4 else "") + ".",
        layers=sorted({d["layer_a"] for d in diffs}),
        evidence={"differences": diffs[:32]},
        fix="Build both models with the same layer arguments: "
            + "; ".join(f"{d['layer_a']}.{d['argument']} = {d['a']!r} in run a, {d['b']!r} in run b"
                        for d in diffs[:3]) + ".",
        explains=0.95)


def _code_of(config: dict[str, Any], dotted: str, value: Any) -> Any:
    """A function argument (a Lambda's ``function``) is compared by the digest of its code
    (``gradtrace._meta._function_config``) and shown as the code it was written as."""
    if dotted.endswith(".python_function"):
        source = _at(config, dotted.rsplit(".", 1)[0] + ".python_source")
        if isinstance(source, str):
            return source
    return value


def _at(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def _spell(x: Any) -> Any:
    """A serialised Keras object as its call: ``MaxNorm(max_value=0.5, axis=0)``."""
    if isinstance(x, dict) and x.get("class_name"):
        cfg = x.get("config") if isinstance(x.get("config"), dict) else {}
        return f"{x['class_name']}({', '.join(f'{k}={v!r}' for k, v in cfg.items() if k not in _LAYER_IGNORED)})"
    return x


def _mode_order(run: RunData) -> list[str]:
    seen: list[str] = []
    for modes, _first, _n in sorted(run.modes, key=lambda m: m[1]):
        for name in modes or {}:
            if name not in seen:
                seen.append(name)
    return seen


def frozen_state(a: RunData, b: RunData, al: Alignment) -> list[dict[str, Any]]:
    """State variables (not RNG) that change in one run and never in the other."""
    out = []
    ia = {int(v): j for j, v in enumerate(a.state_index)}
    ib = {int(v): j for j, v in enumerate(b.state_index)}
    for va, vb in al.var_pairs:
        if va not in ia or vb not in ib:
            continue
        j, k = ia[va], ib[vb]
        if a.rng[j] or b.rng[k]:
            continue
        ca, cb = int(a.state_changed[j]), int(b.state_changed[k])
        if (ca > 0) != (cb > 0):
            out.append({"variable_a": a.var_name(va), "variable_b": b.var_name(vb),
                        "layer_a": a.var_info(va).get("layer"), "layer_b": b.var_info(vb).get("layer"),
                        "changed_steps_a": ca, "changed_steps_b": cb,
                        "changes_in": "a" if ca else "b"})
    return out


def frozen_state_finding(a: RunData, b: RunData, rows: list[dict[str, Any]]) -> Finding:
    fixed = "b" if rows[0]["changes_in"] == "a" else "a"
    run = a if fixed == "a" else b
    return Finding(
        "frozen_state",
        f"{len(rows)} non-trainable state variable(s) (e.g. {rows[0]['variable_' + fixed]}) stay fixed "
        f"in run {fixed} ('{run.name}') but change in the other.",
        layers=sorted({str(r["layer_" + fixed]) for r in rows}),
        variables=[r["variable_" + fixed] for r in rows],
        evidence={"state": rows},
        explains=0.8,
    )


def _stops_at(run: RunData, v: int) -> int | None:
    """The step from which a variable that had gradients gets none at every recorded step to the
    end of the run (None if it never stops, or never had one)."""
    col = {int(x): j for j, x in enumerate(run.var_index)}
    if v not in col or run.grad.size == 0:
        return None
    g = run.grad[:, col[v]]
    rec = np.flatnonzero(np.isfinite(g))
    frozen = _changed_at(run, v, "frozen")
    if frozen is not None and rec.size:
        # frozen at a fit() call: from then on a state variable, no longer in the step's records
        had = rec[g[rec] == 1]
        if had.size and run.var_rows[had[-1]] < frozen <= int(run.step[-1]):
            return frozen
    if rec.size < 2:
        return None
    have = rec[g[rec] == 1]
    if not have.size or have[-1] == rec[-1]:
        return None
    if (g[rec[rec < have[-1]]] == 0).any():
        return None  # none at some steps before its last gradient: dropped now and then, not stopped
    after = rec[rec > have[-1]]
    return int(run.var_rows[after[0]])


def _vsum_col(run: RunData, v: int) -> int | None:
    hit = np.flatnonzero(np.asarray(run.var_index) == v)
    n = run.vsum.get("n_nograd")
    return int(hit[0]) if hit.size and n is not None and hit[0] < len(n) else None


def _has_gradient_from(run: RunData, v: int, step: int) -> bool:
    """Every recorded step from ``step`` on gave the variable a gradient (at least one recorded)."""
    col = {int(x): j for j, x in enumerate(run.var_index)}
    if v in col and run.grad.size:
        rows = np.flatnonzero(np.asarray(run.var_rows) >= step)
        g = run.grad[rows, col[v]]
        g = g[np.isfinite(g)]
        if g.size:
            return bool((g == 1).all())
    # No per-variable row read from ``step`` on (they are read for the first steps only, and a
    # step without statistics lists only the variables that got no gradient): the summary over
    # the whole run says whether any step left the variable without one.
    j = _vsum_col(run, v)
    if j is None or not run.n_steps or int(run.step[-1]) < step:
        return False
    return bool(run.vsum["n_nograd"][j] == 0)


def _starts_at_or_after(run: RunData, step: int) -> bool:
    """Some variable of the run gets its first gradient at ``step`` or later (a model built again,
    another part of the model taking over): the run does not just stop training a layer."""
    if run.grad.size == 0:
        return False
    have = run.grad == 1
    first = np.where(have.any(axis=0), have.argmax(axis=0), -1)
    steps = np.asarray(run.var_rows)
    return bool(any(j >= 0 and steps[j] >= step for j in first))


def _frozen_part_way(a: RunData, b: RunData, al: Alignment, ng_a: set[int], ng_b: set[int]) -> Finding | None:
    """Variables one run trains up to step k - 1 and gives no gradient from step k on, while the
    other run keeps training them: a layer frozen part way through in one run only (set
    ``trainable = False`` between two fit() calls), or frozen in both scripts with one fit()
    keeping the train function it built before the freeze (no compile() after it)."""
    rows: list[dict[str, Any]] = []
    for va, vb in al.var_pairs:
        if va in ng_a or vb in ng_b:
            continue
        for side, run, v, other, w in (("a", a, va, b, vb), ("b", b, vb, a, va)):
            k = _stops_at(run, v)
            if (k is not None and k > 0 and _has_gradient_from(other, w, k)
                    and not _starts_at_or_after(run, k)):
                rows.append({"variable": run.var_name(v), "layer": run.var_info(v).get("layer"),
                             "run": side, "step": k})
    if not rows:
        return None
    side = rows[0]["run"]
    rows = [r for r in rows if r["run"] == side]
    k = min(r["step"] for r in rows)
    run, other = (a, b) if side == "a" else (b, a)
    oside = "b" if side == "a" else "a"
    layers = sorted({str(r["layer"]) for r in rows if r["layer"]})
    said = f"layer(s) {', '.join(layers[:6])}" if layers else ", ".join(r["variable"] for r in rows[:4])
    refit = (f" Run {oside} is fit(): if its script freezes the layer too, fit() kept the train function it built "
             "before the freeze (Keras reads `trainable` when compile() is called again)."
             if other.meta.get("fit") else "")
    return Finding(
        "trainable_mismatch",
        f"run {side} ('{run.name}') stops training {said} from step {k}: {len(rows)} variable(s) that got "
        f"gradients up to step {k - 1} get none from step {k} on, while run {oside} keeps training them (a layer "
        f"frozen part way through, e.g. `trainable = False` between two fit() calls, in one run only).{refit}",
        steps=[k], layers=layers, variables=[r["variable"] for r in rows],
        evidence={"stopped_in": side, "step": k, "variables": rows},
        fix=("Freeze the layer at the same step in both runs, and call `model.compile(...)` again after changing "
             "`trainable` (fit() builds its train function once and keeps it until the next compile(); a tape "
             "loop reads `model.trainable_variables` at each call)."),
        explains=0.9)


def _first_line(error: Any, limit: int = 160) -> str:
    """An exception's text cut to its first line (a repr of a tensor can run to pages)."""
    text = str(error or "an error").strip().splitlines()[0] if str(error or "").strip() else "an error"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _var_of(run: RunData, name: str) -> int | None:
    """The inventory index of the variable shown as ``name`` (None if no such variable)."""
    return next((int(v["index"]) for v in run.variables if run.var_name(int(v["index"])) == name), None)


def _trainable_change(run: RunData, v: int, how: str, at: tuple[str, ...]) -> dict[str, Any] | None:
    """The first of the run's ``trainable_changes`` (see ``Run.note_trainable``) that lists variable
    ``v`` under ``how`` ("trainable": unfrozen, "frozen") and was seen ``at`` one of the given points
    ("fit": a fit() call, "step": a new optimizer's first step, "end": the run's end); None if none."""
    for change in run.meta.get("trainable_changes") or []:
        if v in (change.get(how) or []) and change.get("at") in at:
            return change
    return None


def _changed_at(run: RunData, v: int, how: str) -> int | None:
    """The first step from which variable ``v`` is ``how``, by a change seen at a fit() call or at a
    new optimizer's first step (a loop's next phase); None if no such change."""
    change = _trainable_change(run, v, how, ("fit", "step"))
    step = change.get("step") if change else None
    return int(step) if isinstance(step, int) else None


def _frozen_at_end(run: RunData, v: int) -> bool:
    """Whether variable ``v`` is flagged non-trainable at the run's end while the inventory took it
    as trainable."""
    return _trainable_change(run, v, "frozen", ("end",)) is not None


def gradient_sets(a: RunData, b: RunData, al: Alignment) -> list[Finding]:
    out: list[Finding] = []
    if not a.n_steps or not b.n_steps:
        return out  # a run without recorded steps says nothing about its variables
    sa, sb = dr.var_sets(a), dr.var_sets(b)
    ng_a, ng_b = set(sa.no_grad), set(sb.no_grad)
    # a gradient at some of its optimizer's steps only, by inventory index
    zero_a, zero_b = dw.zero_and_nonzero(a)[0], dw.zero_and_nonzero(b)[0]  # exactly zero at every step
    part_a = {r["index"]: r for r in dr.part_gradients(a, sa)}
    part_b = {r["index"]: r for r in dr.part_gradients(b, sb)}
    missing: list[dict[str, Any]] = []
    partial: list[dict[str, Any]] = []  # a gradient at some steps only, in one run
    notapp: list[dict[str, Any]] = []
    frozen: list[dict[str, Any]] = []
    unfrozen: list[dict[str, Any]] = []  # frozen in both at first, unfrozen in one run (first)
    for va, vb in al.var_pairs:
        ta, tb = a.var_info(va).get("trainable") is not False, b.var_info(vb).get("trainable") is not False
        if ta != tb:  # frozen in one run only: its own finding, not a missing gradient
            run, v = (b, vb) if ta else (a, va)
            trained, tv = (a, va) if ta else (b, vb)
            frozen.append({"variable": run.var_name(v), "layer": run.var_info(v).get("layer"),
                           "frozen_in": "b" if ta else "a", "unfrozen_at": _changed_at(run, v, "trainable"),
                           "frozen_by_end_in_other": _frozen_at_end(trained, tv),
                           "updated_in_other": tv in (sa if ta else sb).applied_any})
            continue
        if not ta:
            # Frozen in both at first: one run may unfreeze them at a later fit() call (fine-tuning)
            # where the other does not, or at another step.
            ka, kb = _changed_at(a, va, "trainable"), _changed_at(b, vb, "trainable")
            if ka != kb:
                side = "a" if kb is None or (ka is not None and ka < kb) else "b"
                run, v = (a, va) if side == "a" else (b, vb)
                unfrozen.append({"variable": run.var_name(v), "layer": run.var_info(v).get("layer"),
                                 "unfrozen_in": side, "step": ka if side == "a" else kb,
                                 "other_step": kb if side == "a" else ka})
            continue
        ina, inb = va in ng_a, vb in ng_b
        if ina != inb:
            side = "a" if ina else "b"
            trained, tv, sets = (b, vb, sb) if ina else (a, va, sa)
            missing.append({"variable": (a if ina else b).var_name(va if ina else vb), "run": side,
                            "frozen_by_end_in_other": tv in sets.applied_any and _frozen_at_end(trained, tv),
                            "layer": trained.var_info(tv).get("layer")})
        if ina or inb:
            continue
        pa, pb = va in part_a, vb in part_b
        if pa != pb and _stops_at(a if pa else b, va if pa else vb) is None:
            partial.append({**(part_a[va] if pa else part_b[vb]), "run": "a" if pa else "b"})
        app_a, app_b = va in sa.applied_any, vb in sb.applied_any
        na, nb = va in sa.not_applied, vb in sb.not_applied
        if app_a != app_b or na != nb:
            side = "a" if (not app_a or na) else "b"
            run, v = (a, va) if side == "a" else (b, vb)
            notapp.append({"variable": run.var_name(v), "run": side,
                           "zero_gradient": v in (zero_a if side == "a" else zero_b),
                           "updated_in_a": app_a, "updated_in_b": app_b})
    if (frozen and len({f["frozen_in"] for f in frozen}) == 1
            and not any(f["updated_in_other"] or f["unfrozen_at"] is not None for f in frozen)):
        # Flagged trainable in one run only, but that run never updates them either (its steps
        # differentiate other variables): the same weights train in both runs.
        side = frozen[0]["frozen_in"]
        oside = "b" if side == "a" else "a"
        layers = sorted({str(f["layer"]) for f in frozen if f["layer"]})
        out.append(Finding(
            "trainable_mismatch",
            f"{len(frozen)} variable(s) are frozen (not trainable) in run {side} and left trainable in run "
            f"{oside}, which never updates them either (its steps differentiate other variables)"
            + (f": layer(s) {', '.join(layers[:6])}" if layers else "") + ". Neither run trains them.",
            severity="info", layers=layers, variables=[f["variable"] for f in frozen],
            evidence={"variables": frozen}, explains=0.0,
            fix="Nothing to fix for their weights. A frozen layer's other behaviour may still differ (in Keras 3 "
                "a frozen BatchNormalization runs in inference mode): see the other findings."))
        frozen = []
    if frozen:
        sides = sorted({f["frozen_in"] for f in frozen})
        names = [", ".join(f"'{(a if side == 'a' else b).name}'" for side in sides)]
        layers = sorted({str(f["layer"]) for f in frozen if f["layer"]})
        later = [f["unfrozen_at"] for f in frozen if f["unfrozen_at"] is not None]
        unfrozen = ""
        if later:
            n = "them" if len(later) == len(frozen) else f"{len(later)} of them"
            side = next(f["frozen_in"] for f in frozen if f["unfrozen_at"] is not None)
            unfrozen = (f" Run {side} unfreezes {n} from step {min(later)} (`trainable = True` before a later "
                        "fit() call): it trains them from there, the other run from the start.")
        late = len(sides) == 1 and all(f["frozen_by_end_in_other"] for f in frozen)
        oside = "b" if sides[0] == "a" else "a"
        out.append(Finding(
            "trainable_mismatch",
            f"{len(frozen)} variable(s) are frozen (not trainable) in run {'/'.join(sides)} ({names[0]}) "
            f"and trained in the other"
            + (f": layer(s) {', '.join(layers[:6])}." if layers else f": {frozen[0]['variable']}.")
            + unfrozen
            + (f" Run {oside}'s model flags them frozen too by its end, yet trains them: there the freeze did not "
               "take effect (fit() trains the variables its train function was built with; a `trainable` "
               "changed after compile() is read only when compile() is called again)." if late else ""),
            layers=layers, variables=[f["variable"] for f in frozen],
            evidence={"variables": frozen, **({"frozen_late_in": oside} if late else {})},
            fix=(f"In run {oside}, set `trainable = False` before compile(), or call `model.compile(...)` again "
                 "after changing it." if late else None),
            explains=0.9))
    if unfrozen and not frozen:
        side = unfrozen[0]["unfrozen_in"]
        rows = [u for u in unfrozen if u["unfrozen_in"] == side]
        k = min(int(u["step"]) for u in rows)
        run = a if side == "a" else b
        oside = "b" if side == "a" else "a"
        later = sorted({int(u["other_step"]) for u in rows if u["other_step"] is not None})
        layers = sorted({str(u["layer"]) for u in rows if u["layer"]})
        said = f"layer(s) {', '.join(layers[:6])}" if layers else ", ".join(u["variable"] for u in rows[:4])
        orun = b if side == "a" else a
        ended = int(orun.step[-1]) + 1 if orun.n_steps else 0
        failed = orun.meta.get("status") == "failed" and ended <= k
        other = (f"while run {oside} trains them only from step {later[0]}" if later
                 else f"while run {oside} failed after its step {ended - 1} ({_first_line(orun.meta.get('error'))}) "
                 "and trained no further" if failed
                 else f"while run {oside} keeps them frozen to its end")
        v0 = next((v for v in (_var_of(run, u["variable"]) for u in rows) if v is not None), None)
        change = _trainable_change(run, v0, "trainable", ("fit", "step")) if v0 is not None else None
        how = ("before a new optimizer's first step" if change and change.get("at") == "step"
               else "before a later fit() call")
        out.append(Finding(
            "trainable_mismatch",
            f"run {side} ('{run.name}') unfreezes {said} from step {k} (`trainable = True` {how}): "
            f"{len(rows)} variable(s) frozen in both runs at first are trained in run {side} from step {k}, "
            f"{other}.",
            steps=[k], layers=layers, variables=[u["variable"] for u in rows],
            evidence={"unfrozen_in": side, "step": k, "variables": rows},
            fix=(f"Run {oside} stopped on Keras 3's error for an optimizer handed variables it was not built for: "
                 "after unfreezing, give the next phase a new optimizer (or call `optimizer.build(...)` with every "
                 "variable it will update before the first phase)."
                 if failed and "Unknown variable" in str(orun.meta.get("error") or "") else
                 "Unfreeze the same layers at the same step in both runs, and call `model.compile(...)` again after "
                 "changing `trainable` (fit() reads it when it builds its train function)."),
            explains=0.9))
    stopped = _frozen_part_way(a, b, al, ng_a, ng_b)
    if stopped is not None:
        out.append(stopped)
    if missing and all(m["frozen_by_end_in_other"] for m in missing) and len({m["run"] for m in missing}) == 1:
        # The run that trains them flags them frozen by its end: a freeze set after compile() that
        # fit() did not take in (its train function kept the variables it was built with).
        side = missing[0]["run"]
        oside = "b" if side == "a" else "a"
        trained = b if side == "a" else a
        layers = sorted({str(m["layer"]) for m in missing if m["layer"]})
        out.append(Finding(
            "trainable_mismatch",
            f"run {oside} ('{trained.name}') trains {len(missing)} variable(s) its model flags as frozen "
            f"(`trainable = False`) by the run's end"
            + (f", layer(s) {', '.join(layers[:6])}" if layers else "")
            + f", while run {side} gives them no gradient: in run {oside} the freeze did not take effect. "
            "fit() trains the variables its train function was built with; a `trainable` changed after "
            "compile() is read only when compile() is called again.",
            layers=layers, variables=[m["variable"] for m in missing],
            evidence={"frozen_late_in": oside, "variables": missing},
            fix=(f"In run {oside}, set `trainable = False` before compile(), or call `model.compile(...)` again "
                 "after changing it, so that fit() freezes what the other run freezes."),
            explains=0.9))
        missing = []
    if missing:
        sides = sorted({m["run"] for m in missing})
        out.append(Finding(
            "missing_gradient",
            f"{len(missing)} trainable variable(s) got no gradient in run {'/'.join(sides)} but did in "
            f"the other: {', '.join(m['variable'] for m in missing[:6])}.",
            variables=[m["variable"] for m in missing], evidence={"variables": missing}, explains=0.9))
    if partial:
        p0 = partial[0]
        sides = sorted({p["run"] for p in partial})
        out.append(Finding(
            "missing_gradient",
            f"{len(partial)} trainable variable(s) got no gradient (None) at some steps in run {'/'.join(sides)} "
            f"and a gradient at every step in the other: {p0['variable']} has {dr.steps_said(p0)}"
            + (f", and {len(partial) - 1} more" if len(partial) > 1 else "")
            + ". The loss of those steps does not reach them (a term or an output's loss added at some steps "
            "only, a branch that leaves them out), so that run leaves them unchanged there.",
            steps=[min(p["first_step"] for p in partial)], variables=[p["variable"] for p in partial],
            evidence={"variables": partial},
            fix="Compute the same loss terms at every step in both runs (every output's loss, every branch).",
            explains=0.9))
    if notapp:
        sides = sorted({m["run"] for m in notapp})
        zero = all(m["zero_gradient"] for m in notapp)
        out.append(Finding(
            "not_applied",
            f"the optimizer updated different sets of variables: {len(notapp)} variable(s) "
            + ("whose gradient is exactly zero at every recorded step " if zero else "with a gradient ")
            + f"were not updated in run {'/'.join(sides)}: {', '.join(m['variable'] for m in notapp[:6])}."
            + (" A zero gradient moves nothing: the gradient is computed as zero (a loss that saturates or clips, "
               "such as a cross-entropy reading logits as probabilities) or zeroed by the script (a layer "
               "frozen by zeroing its gradients)." if zero else ""),
            variables=[m["variable"] for m in notapp], evidence={"variables": notapp}, explains=0.9,
            fix=("See the other findings for what makes the gradient zero; to freeze the layer on purpose, set "
                 "its `trainable = False` in both runs instead of zeroing its gradients." if zero else None)))
    return out


# Names and serialisation details, not settings: a tf-keras LossScaleOptimizer's
# `inner_optimizer.module` is "keras.optimizers" or "keras.optimizers.legacy".
_IGNORED_CONFIG = {"name", "is_legacy_optimizer", "class", "flavour", "config", "variables", "module",
                   "registered_name",
                   "writes"}  # the methods a hand-written update wrote with (ManualUpdate): not a setting


def _opt_settings(o: dict[str, Any]) -> dict[str, Any]:
    """The optimizer's ``config`` merged with the settings recorded beside it (those win)."""
    out = _flat(o.get("config") or {})
    out.update({k: v for k, v in _flat({k: v for k, v in o.items()}).items() if v is not None})
    return out


# A layer config keeps nested configs (a regularizer's `config.l2`); names are not arguments.
# Names, and recurrent layers' choice of how to run the same computation (unrolled or in a
# loop; tf-keras's implementation 1 or 2), which changes no argument of the math.
_LAYER_IGNORED = frozenset({"module", "registered_name", "name", "unroll", "implementation",
                            "python_source",  # a function's text: its digest is compared
                            "_initializers"})  # the start: init_mismatch names them


def _flat(d: Any, prefix: str = "", ignored: Any = None) -> dict[str, Any]:
    """A nested config flattened to dotted keys, without the ``ignored`` keys (default: an
    optimizer's names and serialisation details)."""
    ignored = _IGNORED_CONFIG if ignored is None else ignored
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        if k in ignored:
            continue
        out.update(_flat(v, f"{prefix}{k}.", ignored))
    return out


def _same_value(x: Any, y: Any) -> bool:
    if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
        return bool(np.isclose(float(x), float(y), rtol=1e-6, atol=0.0)) or x == y
    return bool(x == y)


def _off(x: Any) -> bool:
    return x is None or x is False or (isinstance(x, (int, float)) and not isinstance(x, bool) and x == 0)


def _optimizers(run: RunData) -> list[dict[str, Any]]:
    listed = run.meta.get("optimizers") or []
    if listed:
        return [o for o in listed if isinstance(o, dict)]
    first = run.meta.get("optimizer")
    return [first] if first else []


def optimizer_pairs(a: RunData, b: RunData, al: Alignment) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Each optimizer of run a with its counterpart in run b.

    By the variables they step, mapped through the structural variable alignment, so
    several (a GAN's generator and discriminator optimizers) pair up whatever the order
    of first use or the variables' names; optimizers whose variables do not overlap (or
    were recorded without them) pair up by order of first step.
    """
    la, lb = _optimizers(a), _optimizers(b)
    to_b = dict(al.var_pairs)
    free = list(range(len(lb)))
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    unmatched: list[dict[str, Any]] = []
    for oa in la:
        mapped = {to_b[v] for v in oa.get("variables") or [] if v in to_b}
        best, overlap = None, 0
        for j in free:
            n = len(mapped & set(lb[j].get("variables") or []))
            if n > overlap:
                best, overlap = j, n
        if best is None:
            unmatched.append(oa)
        else:
            free.remove(best)
            pairs.append((oa, lb[best]))
    pairs.extend(zip(unmatched, [lb[j] for j in free], strict=False))
    return pairs


def _config_diffs(oa: dict[str, Any], ob: dict[str, Any]) -> dict[str, Any]:
    diffs: dict[str, Any] = {}
    if (oa.get("class") and ob.get("class") and oa.get("class") != ob.get("class")
            and not (_loss_scaled(oa) or _loss_scaled(ob))):
        diffs["class"] = [oa.get("class"), ob.get("class")]
    fa, fb = _opt_settings(oa), _opt_settings(ob)
    # A key one run did not record is unknown, not different; a recorded None is the
    # setting switched off (`clipnorm: None`), the same as 0 or False.
    inert = set()
    if _off(fa.get("use_ema")) and _off(fb.get("use_ema")):
        # the weights' moving average is off in both: its momentum and overwrite frequency do nothing
        inert = {"ema_momentum", "ema_overwrite_frequency"}
    for k in sorted((set(fa) & set(fb)) - inert):
        x, y = fa[k], fb[k]
        if x is None or y is None:
            if not (_off(x) and _off(y)):
                diffs[k] = [x, y]
        elif not _same_value(x, y):
            diffs[k] = [x, y]
    return diffs


def _schedule_name(o: dict[str, Any]) -> str:
    sch = o.get("learning_rate_schedule")
    if isinstance(sch, dict) and sch.get("class"):
        return str(sch["class"])
    lr = o.get("learning_rate")
    return f"constant {lr:.6g}" if isinstance(lr, (int, float)) else "constant"


def _lr_course(run: RunData) -> tuple[str, int | None]:
    """How a run's recorded learning rate moved over its steps, in words, and the number of steps
    between its changes when they are regular (1: every step); ``("", None)`` when not recorded."""
    ok = np.isfinite(run.lr)
    if ok.sum() < 2:
        return "", None
    lr, steps = run.lr[ok], run.step[ok]
    starts = [0] + [i for i in range(1, lr.size) if not np.isclose(lr[i], lr[i - 1], rtol=1e-6)]
    if len(starts) == 1:
        return f"constant {float(lr[0]):.6g} over its {lr.size} steps", None
    vals = ", ".join(f"{float(lr[i]):.4g} from step {int(steps[i])}" for i in starts[:4])
    gaps = np.diff(starts)
    every = int(gaps[0]) if len(starts) > 2 and np.all(gaps == gaps[0]) else None
    how = ("changes every step" if every == 1 else f"changes every {every} steps" if every
           else "changes once" if len(starts) == 2 else "changes at irregular steps")
    return f"{how}: {vals}" + (", ..." if len(starts) > 4 else ""), every


def _lr_shift(a: RunData, b: RunData) -> int | None:
    """``d`` when run b's recorded rate at step k is run a's at step k + d at every step both
    recorded (at least one change of rate inside the overlap), 0 < |d| <= 3; else None: one
    run evaluates the same schedule d steps ahead (a counter that starts at 1)."""
    la, lb = a.lr, b.lr
    if la.size < 3 or lb.size < 3:
        return None
    for d in (1, -1, 2, -2, 3, -3):
        xa = la[d:] if d > 0 else la[:d]
        xb = lb[: xa.size] if d > 0 else lb[-d:][: xa.size]
        n = min(xa.size, xb.size)
        xa, xb = xa[:n], xb[:n]
        ok = np.isfinite(xa) & np.isfinite(xb)
        if ok.sum() < 3 or np.unique(np.round(xa[ok], 12)).size < 2:
            continue
        if np.allclose(xa[ok], xb[ok], rtol=1e-6, atol=0):
            return d
    return None


def _schedule_args(oa: dict[str, Any], ob: dict[str, Any]) -> dict[str, list[Any]]:
    """The arguments two learning-rate schedules of the same class were built with that differ."""
    ca, cb = ((o.get("learning_rate_schedule") or {}).get("config") for o in (oa, ob))
    if not isinstance(ca, dict) or not isinstance(cb, dict):
        return {}
    return {k: [ca.get(k), cb.get(k)] for k in sorted(set(ca) | set(cb))
            if k != "name" and not _same_value(ca.get(k), cb.get(k))}


def _counter_advance(run: RunData) -> int | None:
    """How far the optimizer's iteration counter advances per recorded step, when it is one
    optimizer's and the same at every step (1 normally); None otherwise."""
    it = run.iterations[np.isfinite(run.iterations)] if run.iterations.size else run.iterations
    if it.size < 3 or dr._stepping_groups(run) != 1:
        return None
    d = np.unique(np.diff(it))
    return int(d[0]) if d.size == 1 and d[0] >= 1 and float(d[0]).is_integer() else None


def optimizer_mismatch(a: RunData, b: RunData, al: Alignment, hand: manual.Hand | None) -> list[Finding]:
    """Optimizer configurations that differ, and counters that start over; ``hand``: the runs'
    hand-written updates (:func:`manual.describe`)."""
    out: list[Finding] = []
    pairs = optimizer_pairs(a, b, al)
    diffs: dict[str, Any] = {}
    for n, (oa, ob) in enumerate(pairs):
        d = _config_diffs(oa, ob)
        if len(pairs) > 1 and d:
            # Several optimizers: say whose settings differ (class, variables stepped).
            label = f"optimizer {n + 1} ({oa.get('class')}, {len(oa.get('variables') or [])} variables)"
            d = {f"{label}: {k}": v for k, v in d.items()}
        diffs.update(d)
    lr_a, lr_b = a.lr[al.ia], b.lr[al.ib]
    both = np.isfinite(lr_a) & np.isfinite(lr_b)
    lr_diff = both & ~np.isclose(lr_a, lr_b, rtol=1e-6)
    lr_fix = None
    if lr_diff.any():
        k = int(np.flatnonzero(lr_diff)[0])
        diffs["learning_rate_in_effect"] = {"step": int(a.step[al.ia[k]]), "a": float(lr_a[k]),
                                            "b": float(lr_b[k])}
        # What makes the rates differ: a schedule in one run only (a callback setting the same
        # rates per epoch would not differ here).
        sched = [_schedule_name(o) for o in (pairs[0] if pairs else ({}, {}))]
        per_step = [_counter_advance(r) for r in (a, b)]
        constant = all(n.startswith("constant") for n in sched) and all(
            not c or c.startswith("constant") for c, _ in (_lr_course(r) for r in (a, b)))
        if per_step[0] != per_step[1] and None not in per_step:
            diffs["iterations_per_step"] = per_step
            side = "a" if per_step[0] != 1 else "b"
            by = per_step[0 if side == "a" else 1]
            lr_fix = (f"Let only the optimizer's own update advance its step counter: run {side}'s "
                      f"`optimizer.iterations` advances by {by} per optimizer step (something else increments it: "
                      "an `optimizer.iterations.assign_add(1)` in the step, or a second `apply_gradients` of the "
                      f"same optimizer), so its learning-rate schedule runs {by} times as fast.")
        elif sched[0] != sched[1] and constant and "learning_rate" in diffs:
            # Two constant rates: the learning rate argument differs, nothing is scheduled.
            lr_fix = (f"Give both optimizers the same learning rate (run a {float(lr_a[k]):.6g}, run b "
                      f"{float(lr_b[k]):.6g}, constant over their steps). An optimizer named by a string in "
                      "compile() (`optimizer='adam'`) takes its class's default rate; construct it with the "
                      "rate meant (`keras.optimizers.Adam(learning_rate=...)`) in both runs.")
        elif sched[0] != sched[1]:
            diffs["learning_rate_schedule"] = sched
            courses = [_lr_course(r) for r in (a, b)]
            said = []
            for i, (name, (course, _every)) in enumerate(zip(sched, courses, strict=True)):
                if course and name.startswith("constant") and not course.startswith("constant"):
                    # built with a constant rate, moved during training
                    cbs_i = _lr_callbacks((a, b)[i])
                    name = sched[i] = (f"set during training by fit()'s {', '.join(cbs_i)} callback" if cbs_i
                                       else "set during training by the script or a callback")
                said.append(f"{name} ({course})" if course and not course.startswith("constant") else
                            (course or name))
            diffs["learning_rate_recorded"] = [c for c, _ in courses]
            lr_fix = (f"Give both runs the same learning-rate schedule: run a's rate is {said[0]}; run b's "
                      f"{said[1]} (a LearningRateScheduler callback or a schedule object, producing the same "
                      "rate at every step).")
            shift = _lr_shift(a, b)
            if shift is not None:
                diffs["learning_rate_shift"] = shift
                ahead, by = ("b", shift) if shift > 0 else ("a", -shift)
                lr_fix += (f" Run {ahead}'s rates are the other's {by} step{'s' if by > 1 else ''} early at every "
                           f"step: it evaluates the same schedule at step + {by} (a step counter that starts at "
                           f"{by} instead of 0, or `optimizer.iterations` read after the update); a Keras schedule "
                           "object given to the optimizer is evaluated at the step being taken.")
            ev = [e for _, e in courses]
            if 1 in ev and any(e and e > 1 for e in ev):
                per = next(e for e in ev if e and e > 1)
                lr_fix += (f" One rate moves every optimizer step, the other every {per} steps (once per epoch "
                           "of that many batches?): a schedule object counts optimizer steps, not epochs; "
                           f"`decay_steps={per}, staircase=True` changes it once per {per} steps.")
        elif _lr_callbacks(a) != _lr_callbacks(b):
            cbs = {side: _lr_callbacks(r) for side, r in zip(AB, (a, b), strict=True)}
            diffs["learning_rate_callbacks"] = [cbs["a"] or None, cbs["b"] or None]
            side = "a" if cbs["a"] else "b"
            k_step = diffs["learning_rate_in_effect"]["step"]
            lr_fix = (f"Change the learning rate the same way in both runs: run {side}'s fit() sets it from a "
                      f"callback ({', '.join(cbs[side])}; from step {k_step} the rates are "
                      f"{float(lr_a[k]):.6g} vs {float(lr_b[k]):.6g}). In a loop set `optimizer.learning_rate` "
                      "the same way at each epoch's start, or give both runs the same schedule object.")
        else:
            args = _schedule_args(*(pairs[0] if pairs else ({}, {})))
            if args:
                diffs["learning_rate_schedule"] = {"class": sched[0], **args}
                said = ", ".join(f"{k}: {v[0]!r} vs {v[1]!r}" for k, v in args.items())
                lr_fix = (f"Build both runs' {sched[0]} with the same arguments ({said}); a schedule counts "
                          "optimizer steps, not epochs.")
    if diffs:
        keys = ", ".join(list(diffs)[:5])
        step = diffs.get("learning_rate_in_effect", {}).get("step") if isinstance(
            diffs.get("learning_rate_in_effect"), dict) else None
        settings = "; ".join(f"{k}: {v[0]!r} vs {v[1]!r}" for k, v in list(diffs.items())[:5]
                             if isinstance(v, list))
        f = Finding(
            "optimizer_mismatch",
            f"the optimizers differ: {keys}" + (f"; {hand.what}" if hand else "."),
            steps=[step] if step is not None else [],
            evidence={"differences (a, b)": diffs, **(hand.evidence if hand else {})}, explains=0.7,
            fix=lr_fix or _accumulation_fix(diffs) or (hand.fix if hand else None) or (
                f"Configure both optimizers the same ({settings})." if settings else
                "Give both runs the same learning rate at every step (value, schedule, callbacks)."))
        if hand is not None and hand.same and all(k.rsplit(": ", 1)[-1] == "class" for k in diffs):
            # A hand-written `v.assign_sub(lr * g)` against an SGD of that rate without extras: the
            # same rule, measured on the runs' own steps.
            f.severity, f.explains = "info", 0.0
        out.append(f)
    for side, run, other in ((AB[0], a, b), (AB[1], b, a)):
        # A counter that starts over at the same step in the other run too (both scripts build a
        # new optimizer for a second fit() call, one of them to train layers it unfroze) is not
        # a difference between the runs.
        both = _fresh_counter_steps(other)
        resets = [s for s in dr.iteration_resets(run, dr.var_sets(run).update_steps) if s not in both]
        if resets:
            out.append(Finding(
                "optimizer_mismatch",
                f"in run {side} ('{run.name}') the optimizer's iteration counter did not advance at "
                f"{len(resets)} updating step(s) (first at step {resets[0]}): the optimizer is re-created "
                "during training, so its moments and step count reset.",
                steps=resets[:10],
                evidence={"run": side, "reset_steps": len(resets), "iterations_head": run.iterations[:8]},
                explains=0.8))
    warm = _warm_optimizer(a, b)
    if warm is not None:
        out.append(warm)
    return out


def _fresh_counter_steps(run: RunData) -> set[int]:
    """Steps after the first at which the run's optimizer counter reads 1 again after more: a
    new optimizer took its first step there."""
    it = run.iterations
    if it.size < 2:
        return set()
    prev = np.concatenate([[np.nan], it[:-1]])
    fresh = np.isfinite(it) & np.isfinite(prev) & (it <= 1) & (prev > 1)
    return {int(s) for s in run.step[fresh]}


def _warm_optimizer(a: RunData, b: RunData) -> Finding | None:
    """One run's optimizer had already stepped before its first recorded step (a Keras
    optimizer reused from an earlier fit or loop): its moments and step count carry over."""
    def first_count(run: RunData) -> float | None:
        if not run.step.size or int(run.step[0]) != 0 or not np.isfinite(run.iterations[0]):
            return None
        return float(run.iterations[0])

    ia, ib = first_count(a), first_count(b)
    # A fresh optimizer reads at most 1 after its first step (0 when that step only
    # accumulated a gradient, or was skipped for overflow): a warm one reads 2 or more.
    if ia is None or ib is None or ia == ib or min(ia, ib) > 1 or max(ia, ib) < 2:
        return None
    side, run, count = ("a", a, ia) if ia > ib else ("b", b, ib)
    return Finding(
        "optimizer_mismatch",
        f"run {side}'s optimizer had already taken {int(count) - 1} step(s) before its first recorded one "
        f"(its iteration counter reads {int(count)} after step 0, the other's {int(min(ia, ib))}): it was "
        "used before (an earlier fit() or loop), so its moments, step count and schedule position carry over.",
        steps=[0], evidence={"run": side, "iterations_after_step0": {"a": ia, "b": ib}},
        fix=f"Create a fresh optimizer for run {side}'s training (or reset it) instead of reusing one that "
            "has already stepped.",
        explains=0.95)


def nth(n: int) -> str:
    """2nd, 3rd, 4th, 11th, 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# Keras callbacks that set the optimizer's learning rate during fit().
_LR_CALLBACKS = ("LearningRateScheduler", "ReduceLROnPlateau")


def _lr_callbacks(run: RunData) -> list[str]:
    found = [str(c) for call in run.fit_calls() for c in call.get("callbacks") or [] if str(c) in _LR_CALLBACKS]
    return list(dict.fromkeys(found))


def _accumulation_fix(diffs: dict[str, Any]) -> str | None:
    """Gradient accumulation in one optimizer only: the other run may accumulate by hand."""
    acc = next((v for k, v in diffs.items() if k.endswith("gradient_accumulation_steps")
                and isinstance(v, list)), None)
    if acc is None:
        return None
    n = next((x for x in acc if isinstance(x, int) and x > 1), None)
    return (f"Accumulate gradients the same way in both runs. With `gradient_accumulation_steps={n}` the "
            f"optimizer is called on every micro-batch and updates on every {nth(n or 2)} of them with the mean of "
            f"the {n} accumulated gradients: a loop that accumulates by hand must apply that mean (divide the "
            f"sum by {n}, and step the optimizer once per {n} micro-batches), a loop without accumulation must "
            f"take batches {n} times larger. The comparison pairs the accumulating run's updating steps with "
            "the other run's steps when their batches match.")


_LOSS_KEYS = {"cls": "class", "from_logits": "from_logits"}


def _first_loss_info(run: RunData) -> dict[str, Any] | None:
    return run.loss_info[min(run.loss_info)] if run.loss_info else None


def loss_mismatch(a: RunData, b: RunData) -> Finding | None:
    """The Keras loss objects the two runs' steps called differ in class or ``from_logits``.

    Read from what the steps ran (``loss_info`` of the first recorded step), not from
    compile(): a tape loop's loss object counts too. A hand-written loss records
    nothing and is not compared. The reduction is left to the step-0 factor
    (``loss_scale``), which also says by how much.
    """
    ia, ib = _first_loss_info(a), _first_loss_info(b)
    if not ia or not ib:
        return None
    # A step that called several Keras losses (one per output) lists them in order: pair
    # them call by call when both runs called as many; otherwise compare the last ones.
    ca, cb = ia.get("calls") or [ia], ib.get("calls") or [ib]
    pairs = list(zip(ca, cb, strict=True)) if len(ca) == len(cb) else [(ia, ib)]
    where = ""
    for i, (pa, pb) in enumerate(pairs):
        diffs = _loss_differences(pa, pb)
        if diffs:
            ia, ib = pa, pb
            if len(pairs) > 1:
                where = f" (loss {i + 1} of {len(pairs)}, on predictions of shape {pa.get('y_pred_shape')})"
            break
    else:
        return _later_loss_mismatch(a, b)

    def desc(info: dict[str, Any]) -> str:
        shown = {k: v for k, v in (info.get("args") or {}).items() if k in diffs}
        fl = info.get("from_logits")
        if isinstance(fl, bool):
            shown = {"from_logits": fl, **shown}
        return f"{info.get('cls') or 'a loss'}" + (
            "(" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")" if shown else "")

    swapped = diffs.get("arguments swapped")
    if swapped:
        run_sw = "a" if swapped[0] else "b"
        fix = (f"Call the loss as `loss(y_true, y_pred)` in run {run_sw}: labels first, the model's output second "
               "(Keras's order; PyTorch's `loss(input, target)` is the other way round). Swapped, the loss "
               "treats the predictions as the targets, and for an asymmetric loss (KL divergence, "
               "cross-entropy, Poisson) that is another loss with other gradients.")
    elif "from_logits" in diffs:
        fix = ("Give both runs the same `from_logits`: `True` when the model's last layer has no "
               "softmax/sigmoid (it outputs logits), `False` when it has one; with `False` on logits "
               "the loss clips them as probabilities and the gradients are wrong.")
    elif "class" in diffs:
        args = [f"{k}: {x!r} vs {y!r}" for k, (x, y) in diffs.items() if k != "class"]
        fix = ("Use the same loss class and arguments in both runs (" + "; ".join(args) + ")." if args else
               "Use the same loss class (and arguments) in both runs.")
    else:
        fix = ("Give the loss the same arguments in both runs ("
               + "; ".join(f"{k}: {x!r} vs {y!r}" for k, (x, y) in diffs.items()) + ").")
    said = (f" Run {run_sw} passes the model's output as `y_true` and the labels as `y_pred` (its arguments "
            "swapped), so its loss compares the labels against the predictions the other way round."
            if swapped else "")
    encodings = _encoding_counterparts(ia, ib) if set(diffs) == {"class"} else None
    if encodings is not None:
        # Context: what the comparison of the losses step by step (where it can be made) confirms.
        return Finding(
            "loss_mismatch",
            f"the runs' steps call the cross-entropy for another label encoding{where}: run a {desc(ia)}, run b "
            f"{desc(ib)}, {encodings}. For labels naming the same classes the two compute the same loss.",
            severity="info",
            evidence={"differences (a, b)": diffs, "loss_a": ia.get("cls"), "loss_b": ib.get("cls"),
                      "label_encodings": encodings},
            fix="Nothing to fix: the loss suits each run's labels.", explains=0.0)
    head = (f"the runs' steps call {desc(ia)} with their arguments in another order{where}:" if set(diffs) ==
            {"arguments swapped"} and desc(ia) == desc(ib) else
            f"the runs' steps compute different losses{where}: run a calls {desc(ia)}, run b {desc(ib)}.")
    return Finding(
        "loss_mismatch", head + (said[:1] + said[1:2].lower() + said[2:] if head.endswith(":") else said),
        evidence={"differences (a, b)": diffs, "loss_a": ia.get("cls"), "loss_b": ib.get("cls")},
        fix=fix, explains=1.0)


def _losses_in_effect(run: RunData) -> list[tuple[int, dict[str, Any]]]:
    """(first step, loss) of each stretch of steps with its own Keras loss: a fit() call's compiled
    loss from the step the call started at (compile() again between two fit() calls), else the loss
    the run's first recorded step called. The loss details are read per step for the first steps
    only; a fit() call's loss counts when the call that starts the run compiled the loss its first
    step called (a train_step computing another loss does not)."""
    first = _first_loss_info(run)
    if not first:
        return []
    calls = []
    for call in run.fit_calls():
        loss, step = call.get("loss"), call.get("first_step")
        if isinstance(loss, dict) and isinstance(step, int):
            calls.append((step, {"cls": loss.get("class"), "from_logits": loss.get("from_logits"),
                                 "args": loss.get("args") or {}}))
    start = min(run.loss_info)
    if (len(calls) < 2 or calls[0][0] > start or any(s <= start for s, _ in calls[1:])
            or _loss_differences(calls[0][1], first)):
        return [(start, first)] + _later_loss(run, first)
    return calls


def _later_loss(run: RunData, first: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """The step from which a run's steps call another loss than its first step (a loop that
    switches to label smoothing at some epoch), past the steps whose details were read: the
    last step's loss details are read, and when they differ the step they start at is found by
    bisection (one row per probe). [] when the last step calls the first step's loss."""
    if run.loss_info_at is None or not run.n_steps:
        return []
    lo, hi = max(run.loss_info), int(run.step[-1])
    if hi <= lo:
        return []
    last = run.loss_info_at(hi)
    if not last or not _loss_differences(first, last):
        return []
    while hi - lo > 1:
        mid = (lo + hi) // 2
        info = run.loss_info_at(mid)
        if info and _loss_differences(first, info):
            hi, last = mid, info
        else:
            lo = mid
    return [(hi, last)]


def _loss_desc(info: dict[str, Any], diffs: dict[str, Any]) -> str:
    shown = {k: v for k, v in (info.get("args") or {}).items() if k in diffs}
    if "from_logits" in diffs:
        shown = {"from_logits": info.get("from_logits"), **shown}
    return f"{info.get('cls') or 'a loss'}" + (
        "(" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")" if shown else "")


def _later_loss_mismatch(a: RunData, b: RunData) -> Finding | None:
    """The runs' first steps call the same loss, and from a later step (a fit() call compiled with
    another loss, label smoothing for fine-tuning, or a loop switching its loss) they do not."""
    ea, eb = _losses_in_effect(a), _losses_in_effect(b)
    if len(ea) < 2 and len(eb) < 2:
        return None
    last = min(int(a.step[-1]), int(b.step[-1])) if a.n_steps and b.n_steps else -1

    def at(effect: list[tuple[int, dict[str, Any]]], step: int) -> dict[str, Any]:
        return next(loss for s, loss in reversed(effect) if s <= step) if effect[0][0] <= step else effect[0][1]

    for step in sorted({s for s, _ in ea[1:] + eb[1:] if s <= last}):
        la, lb = at(ea, step), at(eb, step)
        diffs = _loss_differences(la, lb)
        if not diffs:
            continue
        changed = [(side, run) for side, e, run in zip(AB, (ea, eb), (a, b), strict=True)
                   if any(s == step for s, _ in e[1:])]
        how = "; ".join(
            f"run {side} " + ("compiled it for the fit() call that starts there"
                              if any(c.get("first_step") == step for c in run.fit_calls())
                              else "calls it from there (the loop's own loss)") for side, run in changed)
        return Finding(
            "loss_mismatch",
            f"the runs' steps compute the same loss up to step {step - 1} and different losses from step {step} "
            f"on: run a {_loss_desc(la, diffs)}, run b {_loss_desc(lb, diffs)} ({how}).",
            steps=[step],
            evidence={"differences (a, b)": diffs, "from_step": step, "loss_a": la.get("cls"), "loss_b": lb.get("cls")},
            fix=("Use the same loss for the same steps in both runs: " + "; ".join(
                f"{k}: {x!r} vs {y!r}" for k, (x, y) in diffs.items()) + f" from step {step}."),
            explains=1.0)
    return None


def _encoding_counterparts(ia: dict[str, Any], ib: dict[str, Any]) -> str | None:
    """The sparse cross-entropy on integer labels against the categorical one on one-hot rows
    (no label smoothing, no ignored class), on predictions of the same shape: one loss for two
    label encodings. Returns how each run encodes its labels, or None."""
    def key(info: dict[str, Any]) -> str:
        return str(info.get("cls") or "").replace("_", "").lower()

    def shape(info: dict[str, Any], k: str) -> list[Any] | None:
        v = info.get(k)
        return list(v) if isinstance(v, list | tuple) else None

    sides = {key(ia): ia, key(ib): ib}
    sparse, dense = sides.get("sparsecategoricalcrossentropy"), sides.get("categoricalcrossentropy")
    if sparse is None or dense is None or sparse.get("from_logits") != dense.get("from_logits"):
        return None
    ts, ps, td, pd = (shape(sparse, "y_true_shape"), shape(sparse, "y_pred_shape"),
                      shape(dense, "y_true_shape"), shape(dense, "y_pred_shape"))
    if not (ts and ps and td and pd) or ps[-1] != pd[-1] or not isinstance(pd[-1], int) or pd[-1] < 2:
        return None
    integer = len(ts) == len(ps) - 1 or (len(ts) == len(ps) and ts[-1] == 1)
    onehot = len(td) == len(pd) and td[-1] == pd[-1]
    if not (integer and onehot) or (dense.get("args") or {}).get("label_smoothing") not in (None, 0, 0.0) \
            or (sparse.get("args") or {}).get("ignore_class") is not None:
        return None
    side = {id(ia): "a", id(ib): "b"}
    return (f"run {side[id(sparse)]} on integer class labels (shape {ts}), run {side[id(dense)]} on one-hot "
            f"rows (shape {td})")


def _loss_differences(ia: dict[str, Any], ib: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Class, from_logits and (for the same class) arguments that differ between two loss calls."""
    diffs = {label: (ia.get(k), ib.get(k)) for k, label in _LOSS_KEYS.items()
             if ia.get(k) is not None and ib.get(k) is not None and ia.get(k) != ib.get(k)}
    if bool(ia.get("swapped")) != bool(ib.get("swapped")):
        # One run calls loss(y_pred, y_true): recorded by the tracer when the trained model's
        # output reached the loss as y_true and other data as y_pred.
        diffs["arguments swapped"] = (bool(ia.get("swapped")), bool(ib.get("swapped")))
    aa, ab = ia.get("args") or {}, ib.get("args") or {}
    # The same function: its arguments (label_smoothing, delta, ...) that differ. Other classes:
    # also an argument only one of them takes, where it is set to a value that acts
    # (CategoricalCrossentropy(label_smoothing=0.1) against SparseCategoricalCrossentropy).
    diffs.update({k: (aa[k], ab[k]) for k in sorted(set(aa) & set(ab)) if aa[k] != ab[k]})
    if "class" in diffs:
        diffs.update({k: (aa.get(k), ab.get(k)) for k in sorted(set(aa) ^ set(ab))
                      if aa.get(k, ab.get(k)) not in (None, False, 0, "none")})
    return diffs


def metric_mismatch(a: RunData, b: RunData) -> Finding | None:
    ma = {m.get("name"): m.get("class") for m in a.meta.get("metrics") or []}
    mb = {m.get("name"): m.get("class") for m in b.meta.get("metrics") or []}
    diffs = {k: [ma[k], mb[k]] for k in ma if k in mb and ma[k] != mb[k]}
    if not diffs:
        # The same metric classes: one may still not fit one run's labels (another encoding).
        for side, run in zip(AB, (a, b), strict=True):
            misfit = dr.metric_misfit_finding(run, side)
            if misfit:
                return misfit
        return None
    k = next(iter(diffs))
    enc = (dr.label_encoding(a), dr.label_encoding(b))
    fits = [dr.accuracy_fits(c, e) for c, e in zip(diffs[k], enc, strict=True)]
    if all(f is True for f in fits):
        # Keras resolves "accuracy" from the labels: each class is right for its run's labels.
        return Finding(
            "metric_mismatch", severity="info",
            summary=f"metric '{k}' is {diffs[k][0]} in run a and {diffs[k][1]} in run b, each the accuracy "
            f"for its run's labels ({enc[0]} vs {enc[1]}): the same quantity.",
            evidence={"metrics (a, b)": diffs, "labels (a, b)": list(enc)}, explains=0.0)
    wrong = [side for side, f in zip("ab", fits, strict=True) if f is False]
    misfit = dr.metric_misfit_finding(a if wrong[0] == "a" else b, wrong[0]) if wrong else None
    return Finding(
        "metric_mismatch",
        f"metric '{k}' is computed by {diffs[k][0]} in run a and by {diffs[k][1]} in run b: "
        "the two runs report different quantities under the same name"
        + (f"; run {' and '.join(wrong)}'s does not fit its {enc['ab'.index(wrong[0])]} labels" if wrong else "")
        + "." + (f" In detail: {misfit.summary}" if misfit else ""),
        evidence={"metrics (a, b)": diffs, "labels (a, b)": list(enc)}, explains=0.2,
        fix=misfit.fix if misfit else None)


def _weighted(run: RunData) -> dict[str, Any]:
    # the first fit() call that weights its samples, when several calls were made
    fit = next((c for c in run.fit_calls() if c.get("class_weight") or c.get("sample_weight")), {})
    out: dict[str, Any] = {}
    if fit.get("class_weight"):
        out["class_weight"] = fit.get("class_weight")
    if fit.get("sample_weight"):
        out["sample_weight"] = "from its (x, y, w) batches" if fit.get("sample_weight_from") == "data" else True
    if any(info.get("sample_weight") for info in run.loss_info.values()):
        out["loss_sample_weight"] = True
    elif run.loss_info and run.loss_info_at is not None and run.n_steps and int(run.step[-1]) > max(run.loss_info):
        # The loss details are read for the first steps only: a loop that weights its samples
        # from some epoch on shows it in its last step's.
        last = run.loss_info_at(int(run.step[-1]))
        if last and last.get("sample_weight"):
            out["loss_sample_weight"] = "in its later steps"
    return out


def loss_got_weights(run: RunData) -> bool | None:
    """Did the Keras loss calls of the run's steps receive sample weights?

    The recorded weight statistics (``weight_count``) say so; the loss record's
    ``sample_weight`` flag also stands for weights fit() was given, which a custom
    ``train_step`` may never hand to ``compute_loss``. None when the records carry no
    weight statistics at all (older records) or the run called no Keras loss.
    """
    infos = [c for info in run.loss_info.values() for c in (info.get("calls") or [info])]
    if not infos or not any("weight_count" in c for c in infos):
        return None
    return any(c.get("weight_count") is not None or c.get("weight_sum") is not None for c in infos)


# The fix for a custom train_step that calls the Keras loss without the weights fit() hands it.
_WEIGHTS_DROPPED_FIX = ("Pass the weights on in the custom train_step: `x, y, sample_weight = "
                        "keras.utils.unpack_x_y_sample_weight(data)` and `self.compute_loss(x=x, y=y, y_pred=y_pred, "
                        "sample_weight=sample_weight)` (tf-keras: `self.compiled_loss(y, y_pred, "
                        "sample_weight=sample_weight, regularization_losses=self.losses)`).")


def _weights_dropped(a: RunData, b: RunData) -> Finding | None:
    """Both runs give fit() sample or class weights; one run's steps call the loss without them."""
    given = [any(c.get("sample_weight") or c.get("class_weight") for c in r.fit_calls()) for r in (a, b)]
    got = [loss_got_weights(a), loss_got_weights(b)]
    if not all(given) or None in got or got[0] == got[1]:
        return None
    side, run = ("b", b) if got[0] else ("a", a)
    other = "a" if side == "b" else "b"
    return Finding(
        "sample_weighting",
        f"both runs pass weights to fit(), but the Keras loss run {side} ('{run.name}') calls in its steps "
        f"receives none (no sample_weight reached it), while run {other}'s does: run {side}'s train step "
        "drops the weights fit() hands it, so its samples count equally.",
        evidence={"a": {"fit_weights": given[0], "loss_weighted": got[0]},
                  "b": {"fit_weights": given[1], "loss_weighted": got[1]}, "dropped_in": side},
        fix=_WEIGHTS_DROPPED_FIX,
        explains=0.9)


def weights_dropped_run(run: RunData) -> Finding | None:
    """One run (``gradtrace check``): fit() was given sample or class weights and its custom
    train_step calls the Keras loss without them (no weight statistics in any loss call)."""
    calls = run.fit_calls()
    if not any(c.get("sample_weight") or c.get("class_weight") for c in calls):
        return None
    if not any(c.get("custom_train_step") for c in calls) or loss_got_weights(run) is not False:
        return None
    how = "class_weight" if any(c.get("class_weight") for c in calls) else "sample_weight"
    return Finding(
        "sample_weighting",
        f"fit() was given `{how}=`, but the Keras loss the custom train_step calls receives no sample weights at "
        "any step: the train step drops the weights fit() hands it in `data`, so every sample counts equally.",
        evidence={"fit_weights": how, "loss_weighted": False, "custom_train_step": True},
        fix=_WEIGHTS_DROPPED_FIX,
        explains=0.9)


def sample_weighting(a: RunData, b: RunData) -> Finding | None:
    wa, wb = _weighted(a), _weighted(b)
    if wa and wb:
        return _weights_dropped(a, b)
    if bool(wa) == bool(wb):
        return None
    side = "a" if wa else "b"
    run, other = (a, b) if wa else (b, a)
    return Finding(
        "sample_weighting",
        f"only run {side} ('{run.name}') weights its samples ({', '.join(wa or wb)}).",
        evidence={"a": wa, "b": wb}, fix=_weighting_fix(run, wa or wb, other), explains=0.8)


def _weighting_fix(run: RunData, how: dict[str, Any], other: RunData) -> str:
    """The concrete change, by where the weighted run's weights came from."""
    head = "Apply the same weights in both runs: "
    to_loss = "pass them as `sample_weight=` to the Keras loss"
    if other.meta.get("fit") is not None and run.meta.get("fit") is None:
        return head + ("the loop passes `sample_weight=` to its loss; give fit() the same weights "
                       "(`class_weight=`, `sample_weight=`, or (x, y, w) batches), or call the loss without them.")
    if how.get("class_weight"):
        return head + ("`fit(class_weight=...)` multiplies each sample's loss by its class's weight; in the "
                       f"other run look each label's weight up (`tf.gather(weights, y)`) and {to_loss}.")
    fit = run.meta.get("fit")
    if fit is not None and (fit.get("sample_weight_from") == "data" or not how.get("sample_weight")):
        # fit() weighted the loss with neither argument: its data held the weights (recorded
        # as such since the tracer saw (x, y, w) batches; inferred for older records).
        return head + ("fit() weighted its loss with neither `class_weight=` nor `sample_weight=`: the weights "
                       "came from its data (fit() takes the third element of (x, y, w) batches as per-sample "
                       "weights) or its train_step; in the other run unpack them (`for x, y, w in ds`) and "
                       f"{to_loss}.")
    ofit = other.meta.get("fit")
    if ofit is not None and "shuffle" in ofit and ofit["shuffle"] is None:
        # the unweighted run is fit() over a dataset or generator (its `shuffle` recorded as None:
        # _probes._fit_shuffle): the data carries its own weights
        return head + ("`fit(sample_weight=...)` multiplies each sample's loss; the other run's fit() reads a "
                       "tf.data dataset, which takes no `sample_weight=`: put the weights in the dataset as the "
                       "third element of each batch (`tf.data.Dataset.from_tensor_slices((x, y, w))`).")
    return head + f"`fit(sample_weight=...)` multiplies each sample's loss; in a tape loop {to_loss}."


_loss_scaled = dr.loss_scaled


def _loss_scale_kept(scaled: RunData, plain: RunData) -> tuple[float, float] | None:
    """The run without a LossScaleOptimizer differentiated the loss times the other run's loss
    scale (``scale_loss`` of a wrapper whose ``inner_optimizer`` applies, or a hand-written
    ``loss * scale``): its first recorded loss is the other's first loss times the scale the
    other's first step used (a power of two: the product is exact in float). Returns the scale
    and the measured loss ratio, or None."""
    def first(x: np.ndarray) -> float | None:
        ok = np.isfinite(x)
        return float(x[ok][0]) if ok.any() else None

    if not scaled.n_steps or not plain.n_steps or scaled.step[0] != plain.step[0]:
        return None
    ls, la, lb = first(scaled.loss_scale[:1]), first(scaled.loss[:1]), first(plain.loss[:1])
    if ls is None or la is None or lb is None or ls <= 1.0 or la == 0.0:
        return None
    factor = lb / la
    return (ls, factor) if abs(factor - ls) <= 1e-2 * ls else None


def loss_scaling(a: RunData, b: RunData) -> Finding | None:
    def scaled(run: RunData) -> float | None:
        s = run.loss_scale[np.isfinite(run.loss_scale)]
        return float(s[0]) if s.size and not np.all(s == 1.0) else None

    sa, sb = scaled(a), scaled(b)
    oa, ob = a.meta.get("optimizer") or {}, b.meta.get("optimizer") or {}
    ca, cb = oa.get("class"), ob.get("class")
    if ca and cb and _loss_scaled(oa) != _loss_scaled(ob):
        side = "a" if _loss_scaled(oa) else "b"
        other = "b" if side == "a" else "a"
        pol = {"a": a.meta.get("dtype_policy"), "b": b.meta.get("dtype_policy")}
        ev = {"optimizer_a": ca, "optimizer_b": cb, "policy_a": pol["a"], "policy_b": pol["b"]}
        if pol[other] and "float16" not in str(pol[other]) and pol[other] != pol[side]:
            # The other run computes in full precision: the difference is the policy, not an
            # unscaled float16 gradient.
            return Finding(
                "loss_scaling",
                f"only run {side} trains in mixed precision: its dtype policy is {pol[side]} (layers compute in "
                f"a 16-bit type, and its optimizer is a LossScaleOptimizer), run {other}'s is "
                f"{pol[other]}. The runs compute at different precisions, so their numbers differ by 16-bit "
                "rounding from the first step (the tolerances are measured from it) and the loss scale "
                "changes which steps are skipped.",
                evidence=ev, fix=(f"Train both runs under the same dtype policy: call "
                                  f"`keras.mixed_precision.set_global_policy('{pol[side]}')` before building the "
                                  "model in both scripts (a tape loop then scales its loss with "
                                  "`optimizer.scale_loss(loss)` of a LossScaleOptimizer), or in neither."),
                explains=0.9)
        kept = _loss_scale_kept(a if side == "a" else b, b if side == "a" else a)
        if kept is not None:
            scale, factor = kept
            ev.update({"scaled_gradients_run": other, "loss_scale": scale, "loss_factor": factor})
            return Finding(
                "loss_scaling",
                f"run {other} differentiates its loss multiplied by the loss scale: its step-0 loss is "
                f"{factor:g} x run {side}'s, the loss scale run {side}'s {ca if side == 'a' else cb} used "
                f"({scale:g}, what `optimizer.scale_loss(loss)` returns), but run {other} applies the gradients "
                f"with its {cb if side == 'a' else ca}, no LossScaleOptimizer, which does not divide them back: every update is computed "
                f"from gradients {scale:g} times too large (Adam-like optimizers absorb most of a constant "
                "factor, except against epsilon; SGD takes steps that many times too large), and overflowed "
                "steps are applied instead of skipped.",
                evidence=ev, explains=1.0,
                fix=("Apply the gradients of the scaled loss with the LossScaleOptimizer itself "
                     "(`optimizer.apply_gradients(zip(grads, model.trainable_variables))` on the wrapper, not "
                     "`optimizer.inner_optimizer`), which divides them by the scale and skips overflowed steps; "
                     "tf-keras: `grads = optimizer.get_unscaled_gradients(grads)` before applying, or apply "
                     "with the wrapper."))
        return Finding(
            "loss_scaling",
            f"only run {side} wraps its optimizer in LossScaleOptimizer (mixed precision loss scaling); "
            "the other applies unscaled float16 gradients, which underflow to zero for small values.",
            evidence=ev, explains=0.9)
    ka = int((np.nan_to_num(a.skipped, nan=0.0) > 0).sum())
    kb = int((np.nan_to_num(b.skipped, nan=0.0) > 0).sum())
    if (sa is None) != (sb is None):
        side = "a" if sa is not None else "b"
        return Finding(
            "loss_scaling",
            f"only run {side} applies a mixed-precision loss scale ({sa or sb:g}).",
            evidence={"loss_scale_a": sa, "loss_scale_b": sb, "policy_a": a.meta.get("dtype_policy"),
                      "policy_b": b.meta.get("dtype_policy")}, explains=0.8)
    if (sa is not None or sb is not None) and ka != kb:
        return Finding(
            "loss_scaling", severity="warning",
            summary=f"steps skipped for overflow: {ka} in run a, {kb} in run b.",
            evidence={"skipped_a": ka, "skipped_b": kb}, explains=0.4)
    return None


def execution_mode(a: RunData, b: RunData) -> Finding | None:
    def modes(run: RunData) -> list[str]:
        ms = sorted({str(m) for m, _, _ in run.exec_modes if m})
        return ms or ([str(run.meta["execution_mode"])] if run.meta.get("execution_mode") else [])

    ma, mb = modes(a), modes(b)
    if ma == mb or not ma or not mb:
        return None
    return Finding(
        "execution_mode",
        f"run a executed its steps as {'/'.join(ma)}, run b as {'/'.join(mb)}.",
        evidence={"a": ma, "b": mb}, explains=0.0)


def numerics(a: RunData, b: RunData) -> Finding | None:
    fa, fb = dr.first_nonfinite(a), dr.first_nonfinite(b)
    if not fa and not fb:
        return None
    if fa and fb and fa["step"] == fb["step"]:
        return Finding(
            "numerics", severity="warning",
            summary=f"both runs produce NaN/Inf from step {fa['step']}.", steps=[fa["step"]],
            evidence={"a": fa, "b": fb}, explains=0.1)
    first = min((x for x in (fa, fb) if x), key=lambda x: x["step"])
    side = "a" if first is fa else "b"
    var = first.get("variable")
    data = " and ".join(first.get("in_data", []))
    return Finding(
        "numerics",
        f"NaN/Inf appears in run {side} at step {first['step']}"
        + (f" (first in the gradient of {var})" if var else " (in the loss)")
        + ("" if (fa and fb) else ", never in the other run")
        + (f"; that step's {data} already contain NaN/Inf." if data else "."),
        steps=[first["step"]], variables=[var] if var else [], evidence={"a": fa, "b": fb}, explains=0.9,
        fix=dr.data_fix(data) if data else None)


def shape_facts(a: RunData, b: RunData) -> list[Finding]:
    """Broadcasts and non-scalar targets present in one run only."""
    out: list[Finding] = []
    ba, bb = dr.broadcasts(a), dr.broadcasts(b)
    if bool(ba) != bool(bb):
        side, bc = ("a", ba) if ba else ("b", bb)
        item, first, _ = bc[0]
        out.append(Finding(
            "shape_broadcast",
            f"in run {side} the loss combined shapes {item.get('a_shape')} and {item.get('b_shape')} "
            f"('{item.get('op')}') into {item.get('out_shape')}: every label is compared with every "
            "prediction, the loss differs while the predictions are the same.",
            steps=[first], evidence={"run": side, "broadcast": item,
                                     "y_pred_shape": (a if side == "a" else b).y_pred_shapes[:1]},
            explains=1.0))
    na, nb = dr.non_scalar_targets(a), dr.non_scalar_targets(b)
    if bool(na) != bool(nb):
        side, ns = ("a", na) if na else ("b", nb)
        shape, first, count = ns[0]
        out.append(Finding(
            "non_scalar_loss",
            f"run {side} hands a tensor of shape {shape} to tape.gradient ({count} steps): TensorFlow "
            "sums it, so its gradients are the sum over the batch instead of the mean.",
            steps=[first], evidence={"run": side, "target_shape": shape}, explains=0.6))
    return out


def validation_split_mismatch(a: RunData, b: RunData, al: Alignment | None = None) -> Finding | None:
    """fit(validation_split=...) in one run only (or two different splits): the runs train on
    different examples. A run that is not fit() trains on all it is given (split 0).

    Not reported when the batch fingerprints show both runs trained on the same batches at
    every step (the other run held the same examples out by hand: a loop over the first
    (1 - split) of the data)."""
    def split(run: RunData) -> float | None:
        fit = run.meta.get("fit")
        if not fit:
            return 0.0 if run.n_steps else None
        value = fit.get("validation_split")  # not recorded by older tracers: unknown
        return None if value is None else float(value)

    sa, sb = split(a), split(b)
    if sa is None or sb is None or sa == sb:
        return None
    if (al is not None and al.data_known and al.init_same is not False and a.n_steps == b.n_steps
            and al.n_common == a.n_steps and bool(al.data_same.all())):
        return None
    said = [f"run {side} holds out {v:.0%} for validation (fit(validation_split={v:g}))" if v
            else f"run {side} trains on all its data" for side, v in (("a", sa), ("b", sb))]
    parts = ""
    evidence: dict[str, Any] = {"validation_split_a": sa, "validation_split_b": sb, "steps": [a.n_steps, b.n_steps]}
    if al is not None and al.data_known and 0 < al.aligned_steps < al.n_common:
        k = int(a.step[al.ia[al.aligned_steps]])
        ra, rb = int(al.ia[al.aligned_steps]), int(al.ib[al.aligned_steps])
        na, nb = _batch_size(a, ra), _batch_size(b, rb)
        smaller = ("a" if na < nb else "b") if na and nb and na != nb else None
        holder = "a" if sa > sb else "b"
        why = ("where the run that holds data out has used up its share and starts its next epoch"
               if smaller is None else f"where run a's batch holds {na} examples and run b's {nb}"
               + (f" (run {holder} has used up its share: the last, partial batch of its epoch)"
                  if smaller == holder else ""))
        parts = f"; their batches are the same up to step {k - 1} and part at step {k}, {why}"
        evidence["batches_part_at"] = k
    elif al is not None and al.data_known and al.aligned_steps == al.n_common > 0 and a.n_steps != b.n_steps:
        # Every common step trained on the same batch: the longer run's further steps are where
        # they part, on examples the other run never trains on (those it holds out).
        long_side, long, short = ("a", a, b) if a.n_steps > b.n_steps else ("b", b, a)
        extra = np.arange(al.n_common, long.n_steps)
        if _batches_unseen(long, extra, short):
            k = int(long.step[extra[0]])
            last = int(long.step[extra[-1]])
            held = max(sa, sb)
            parts = (f"; their {al.n_common} common steps train on the same batches, and run {long_side}'s "
                     f"step{'s' if last > k else ''} {k}{f'-{last}' if last > k else ''} train"
                     f"{'' if last > k else 's'} on examples the other run never sees "
                     f"(the last {held:.0%}, held out for validation)")
            evidence["batches_part_at"] = k
    fix = None
    if min(sa, sb) == 0:
        side, v = ("a", sa) if sa else ("b", sb)
        loop = "b" if side == "a" else "a"
        other_fit = bool((b if side == "a" else a).meta.get("fit"))
        keep = f"int(len(x) * {1 - v:g})"
        fix = (f"Train on the examples fit() trains on: in run {loop}, "
               + ("pass the same `validation_split` to fit()" if other_fit else
                  f"loop over `x[:{keep}], y[:{keep}]` (fit() trains on the first {1 - v:.0%} and validates on "
                  "the rest)")
               + f"; or drop `validation_split={v:g}` from run {side}'s fit() (pass `validation_data=(x_val, "
               "y_val)` to validate on other data).")
    return Finding(
        "validation_split_mismatch",
        f"{said[0]} and {said[1]}: they train on different examples ({a.n_steps} vs {b.n_steps} steps){parts}.",
        steps=[evidence["batches_part_at"]] if "batches_part_at" in evidence else [],
        evidence=evidence, explains=0.8, fix=fix)


def _batch_size(run: RunData, row: int) -> int | None:
    n = run.batch_at(row)
    return int(n) if np.isfinite(n) and n > 0 else None


def _batches_unseen(long: RunData, rows: np.ndarray, short: RunData) -> bool:
    """Whether none of ``long``'s batches at ``rows`` is any batch ``short`` trains on (their
    fingerprints, labels and inputs, known at every one of those rows)."""
    from gradtrace.compare.align import fingerprints_equal

    known = [(fl, fs) for fl, fs in ((long.y_fp, short.y_fp), (long.x_fp, short.x_fp))
             if len(rows) and not np.isnan(fl[rows]).all(axis=1).any() and not np.isnan(fs).all(axis=1).any()]
    if not known:
        return False
    for r in rows:
        same = np.ones(short.n_steps, dtype=bool)
        for fl, fs in known:
            same &= fingerprints_equal(np.repeat(fl[r:r + 1], short.n_steps, axis=0), fs)
        if same.any():
            return False
    return True


def _weight_writes(run: RunData) -> list[dict[str, Any]]:
    """The run's writes of its weights outside optimizer steps after its first step (a write
    before any step sets the start, which init_mismatch compares)."""
    return [w for w in run.meta.get("weight_writes") or [] if (w.get("step") or 0) > 0 and w.get("how") != "assign"]


_WHERE = {"step_function": "in its step function, on every step", "function": "in a tf.function",
          "eager": "in its loop"}


def _assign_said(run: RunData, w: dict[str, Any]) -> str:
    """Where and from when one run's script writes its trained variables."""
    where = _WHERE.get(str(w.get("where")), "")
    step = w.get("step")
    return where + (f"{', ' if where else ''}first before step {step}" if isinstance(step, int) else "")


def _shown(names: list[str]) -> str:
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def assign_entry(run: RunData) -> dict[str, Any] | None:
    """The run's ``weight_writes`` entry of the script's own assigns (``how="assign"``), if any, with
    its trainable variables only: a non-trainable one handed to the optimizer (gradients taken over
    ``model.weights``: BatchNormalization's moving statistics get None) is written by its layer."""
    w = next((w for w in run.meta.get("weight_writes") or [] if w.get("how") == "assign"), None)
    if w is None:
        return None
    keep = [i for i in w.get("variables") or [] if run.var_info(int(i)).get("trainable") is not False]
    return {**w, "variables": keep} if keep else None


def weights_assigned(a: RunData, b: RunData, al: Alignment) -> Finding | None:
    """A run's script writes variables its optimizer trains outside the optimizer's steps
    (``RunInfo.weight_writes`` entries of ``how="assign"``, see ``Run.note_assigned``).

    In one run only: its steps are the first step the writes precede, so a departure from there
    on folds into it; the engine makes it context when every aligned step agrees. In both runs,
    the written variables are paired by structure (``al.var_pairs``): variables written in one
    run only are the finding, as above; the same variables written in both make a finding the
    engine keeps only where the runs part after the writes with nothing else found
    (``evidence["both_runs"]``; see ``engine._both_write``): the recorded updates leave the
    writes out, so what the writes leave (another clip value, another projection) is not recorded."""
    entries = {"a": assign_entry(a), "b": assign_entry(b)}
    if entries["a"] and entries["b"]:
        return _both_assigned(a, b, al, entries["a"], entries["b"])
    only = [side for side in ("a", "b") if entries[side]]
    if len(only) != 1:
        return None
    side = only[0]
    run, w = (a if side == "a" else b), entries[side]
    names = [run.var_name(int(i)) for i in w.get("variables") or []]
    step = w.get("step")
    said = _assign_said(run, w)
    sep = " " if w.get("where") in _WHERE else ", "
    return Finding(
        "weights_assigned",
        f"run {side}'s script writes {len(names)} of the variables its optimizer trains outside the optimizer's "
        f"steps (`variable.assign(...)`{sep + said if said else ''}: {_shown(names)}); "
        f"run {'b' if side == 'a' else 'a'}'s does not. Each later step starts from the weights these writes leave, not from the update's.",
        steps=[step] if isinstance(step, int) else [], variables=names[:8],
        evidence={"assigned_run": side, "first_step": step, "where": w.get("where"),
                  "variables_assigned": len(names)},
        explains=0.9)


def _both_assigned(a: RunData, b: RunData, al: Alignment, wa: dict[str, Any], wb: dict[str, Any]) -> Finding:
    """Both runs' scripts write trained variables by hand: the same ones (paired by structure) or not."""
    va = {int(i) for i in wa.get("variables") or []}
    vb = {int(i) for i in wb.get("variables") or []}
    to_b = dict(al.var_pairs)
    to_a = {j: i for i, j in al.var_pairs}
    only_a = sorted(i for i in va if to_b.get(i) not in vb)
    only_b = sorted(j for j in vb if to_a.get(j) not in va)
    steps = [s for s in (wa.get("step"), wb.get("step")) if isinstance(s, int)]
    evidence: dict[str, Any] = {"both_runs": True, "first_step_a": wa.get("step"), "first_step_b": wb.get("step"),
                                "where_a": wa.get("where"), "where_b": wb.get("where"),
                                "variables_assigned_a": len(va), "variables_assigned_b": len(vb)}
    both = f"run a {_assign_said(a, wa)}; run b {_assign_said(b, wb)}"
    if only_a or only_b:
        names_a = [a.var_name(i) for i in only_a]
        names_b = [b.var_name(j) for j in only_b]
        parts = [f"run {side} also writes {_shown(names)}, which run {other} does not"
                 for side, other, names in (("a", "b", names_a), ("b", "a", names_b)) if names]
        evidence.update(only_in_a=names_a[:8], only_in_b=names_b[:8])
        sides = [(w.get("step"), side) for side, w, names in (("a", wa, names_a), ("b", wb, names_b)) if names]
        first = [s for s, _ in sides if isinstance(s, int)]
        evidence["assigned_run"] = sides[0][1] if len(sides) == 1 else None
        return Finding(
            "weights_assigned",
            "both runs' scripts write variables their optimizers train outside the optimizer's steps "
            f"(`variable.assign(...)`: {both}), but not the same ones: {'; '.join(parts)}. Each later step "
            "starts from the weights the writes leave, in one run for these variables and from the update's in "
            "the other.",
            steps=[min(first)] if first else [], variables=(names_a + names_b)[:8], evidence=evidence,
            explains=0.9)
    names = [a.var_name(i) for i in sorted(va)]
    return Finding(
        "weights_assigned",
        f"both runs' scripts write the same {len(names)} trained variables outside the optimizer's steps "
        f"(`variable.assign(...)`: {both}: {_shown(names)}). The recorded updates leave these writes out, so the "
        "weights they leave are not recorded: where the runs part after the writes with every earlier step "
        "equal, the writes differ (another clip value, another projection or another order of writes).",
        steps=[min(steps)] if steps else [], variables=names[:8], evidence=evidence, explains=0.6)


def _write_said(w: dict[str, Any], run: RunData) -> str:
    """One write as a clause: who wrote what, and when."""
    how, by = w.get("how"), w.get("by")
    if how == "ema":
        what = (f"{'fit() at its end' if by == 'fit' else by or 'the script'} wrote the optimizer's moving "
                "average of the weights into the model (use_ema=True, `optimizer.finalize_variable_values`)")
    elif how == "set_weights" and by == "EarlyStopping":
        what = "EarlyStopping(restore_best_weights=True) set its best epoch's weights back"
    else:
        what = f"{'fit()' if by == 'fit' else by or 'the script'} called {how}"
    step = w.get("step")
    when = (f" after its last step ({step - 1})" if step is not None and step >= run.n_steps
            else f" before its step {step}")
    return what + when


def weights_replaced(a: RunData, b: RunData) -> Finding | None:
    """One run's model weights were overwritten outside its optimizer steps after training
    started (EarlyStopping restoring its best epoch, an EMA written in by fit(), the script's
    set_weights/load_weights) in a way the other run's were not: the models they end with
    differ even where every step agrees. Writes are matched by kind (``how``), not by who made
    them: EarlyStopping's restore in fit() and a loop's own ``set_weights`` of its best weights
    both restore weights."""
    def key(w: dict[str, Any]) -> str:
        return str(w.get("how"))

    wa, wb = _weight_writes(a), _weight_writes(b)
    only: dict[str, list[dict[str, Any]]] = {}
    for side, mine, other in (("a", wa, wb), ("b", wb, wa)):
        theirs = [key(w) for w in other]
        for w in mine:
            if key(w) in theirs:
                theirs.remove(key(w))
            else:
                only.setdefault(side, []).append(w)
    if not only:
        return None
    parts = [f"in run {side}, " + " and ".join(_write_said(w, a if side == "a" else b) for w in writes)
             for side, writes in only.items()]
    text = "; ".join(parts) + "."
    if len(only) == 1:
        text += f" Run {'b' if 'a' in only else 'a'}'s weights were not overwritten."
    text += (" The models the runs end with differ even where every step agrees: the one evaluated is not the "
             "one the last step produced.")
    writes = [w for ws in only.values() for w in ws]
    fixes = []
    if any(w.get("by") == "EarlyStopping" for w in writes):
        fixes.append("restore the best weights in the other run too (keep `model.get_weights()` at the best "
                     "validation score and `model.set_weights(...)` them at the end), or drop "
                     "`restore_best_weights=True`")
    if any(w.get("how") == "ema" for w in writes):
        fixes.append("after a loop whose optimizer has `use_ema=True`, call "
                     "`optimizer.finalize_variable_values(model.trainable_variables)` as fit() does, or "
                     "compare with `use_ema=False`")
    if not fixes:
        fixes.append("evaluate both runs' models at the same point: write the weights in both or in neither")
    fix = "; ".join(fixes) + "."
    return Finding(
        "weights_replaced", text[0].upper() + text[1:],
        steps=sorted({int(w["step"]) for w in writes if w.get("step") is not None}),
        evidence={"only_in": {side: [{k: w.get(k) for k in ("how", "by", "step")} for w in ws]
                              for side, ws in only.items()},
                  "weight_writes_a": len(wa), "weight_writes_b": len(wb)},
        fix=fix[0].upper() + fix[1:], explains=0.6)


def _state_set_before_training(a: RunData, b: RunData, al: Alignment) -> list[str]:
    """Paired non-trainable state (not random generators) that no step of either run changed:
    set before training (a Normalization layer's adapt() mean and variance), part of the start."""
    if not al.sa.size or a.state_changed is None or b.state_changed is None:
        return []
    out = []
    for ja, jb in zip(al.sa.tolist(), al.sb.tolist(), strict=True):
        if a.rng[ja] or b.rng[jb] or a.state_changed[ja] or b.state_changed[jb]:
            continue
        out.append(a.var_name(int(a.state_index[ja])))
    return out


def _initializers_differ(a: RunData, b: RunData, al: Alignment) -> list[dict[str, Any]]:
    """Paired layers whose recorded initializers (``layer_configs[i]["_initializers"]``) differ."""
    ca, cb = a.meta.get("layer_configs") or {}, b.meta.get("layer_configs") or {}
    out = []
    for la, lb in al.layer_pairs:
        xa = (ca.get(str(la.get("index"))) or {}).get("_initializers") or {}
        xb = (cb.get(str(lb.get("index"))) or {}).get("_initializers") or {}
        for k in sorted(set(xa) & set(xb)):
            if xa[k] != xb[k]:
                out.append({"layer": _lname(la), "argument": k, "a": xa[k], "b": xb[k]})
    return out


def init_data(a: RunData, b: RunData, al: Alignment) -> list[Finding]:
    out: list[Finding] = []
    still = ("training modes, frozen state, gradient/applied sets, optimizer/loss/metric "
             "configuration, and the scale of losses and gradients in distribution")
    if al.init_same is False:
        fixed = _state_set_before_training(a, b, al)
        d = al.init_detail
        which = ""
        if d and d["weights_differ"]:
            which = (f" ({d['weights_differ']} of {d['weights_compared']} paired trainable variables, first "
                     f"{', '.join(d['weights_differ_first'][:3])})")
        elif d and d["state_differs"]:
            which = (f" (the {d['weights_compared']} paired trainable variables are equal; non-trainable state "
                     f"differs: {', '.join(d['state_differs'][:3])})")
        summary = (f"the runs did not start from the same weights{which}: step-by-step numbers are not comparable; "
                   f"still compared: {still}.")
        fix = None
        if fixed:
            # the clause above already names the differing state when only state differs: say once
            # what it is rather than naming it a second time
            named = bool(d and d["state_differs"] and not d["weights_differ"]
                         and set(d["state_differs"]) <= set(fixed))
            what = ("No step of either run changes that state" if named else
                    f"Both models also hold state that training never changes ({', '.join(fixed[:4])})")
            summary += (f" {what}: state set before training, such as a Normalization layer's adapt() "
                        "statistics. The start covers it too, so models built from the same seed differ when "
                        "that state was computed from other data (adapt() on another sample).")
            fix = ("Build both models from the same seed (`keras.utils.set_random_seed`) and compute the state set "
                   "before training the same way (adapt() on the same data in both runs), or copy the weights "
                   "and state (`model_b.set_weights(model_a.get_weights())`).")
        inits = _initializers_differ(a, b, al) if d and d["weights_differ"] else []
        if inits:
            said = "; ".join(f"{x['layer']}: {x['argument']} {x['a']} in run a, {x['b']} in run b" for x in inits[:3])
            summary += f" The layers were built with other initializers ({said})."
            fix = ("Build the layers with the same initializers in both runs (the arguments named), from the same "
                   "seed (`keras.utils.set_random_seed`), or copy the weights (`model_b.set_weights(model_a.get_weights())`).")
        out.append(Finding(
            "init_mismatch", summary,
            evidence={"init_a": a.meta.get("init_fingerprint"), "init_b": b.meta.get("init_fingerprint"),
                      **({"state_set_before_training": fixed} if fixed else {}),
                      **({"initializers_differ": inits} if inits else {}),
                      **({"variables_compared": d["weights_compared"], "variables_differ": d["weights_differ"],
                          "first_differing": d["weights_differ_first"], "state_differs": d["state_differs"]}
                         if d else {})},
            variables=list(d.get("weights_differ_first", [])) + list(d.get("state_differs", [])),
            fix=fix, explains=0.1))
    imap = al.input_map
    if imap is not None and not imap.get("undone_by_model"):
        said = dd.describe_map(imap)
        labels = ("the labels are identical at every step" if imap.get("labels_equal")
                  else "the labels were not fingerprinted in both runs")
        out.append(Finding(
            "input_scale",
            f"{said['what']} at every step ({said['relation']}, over {imap['steps']} steps; {labels}): one run "
            "scales or normalises its inputs differently (e.g. a /255 missing or applied twice), so the runs "
            "train on different numbers from the first step.",
            steps=[int(a.step[al.ia[0]])],
            evidence={"factor": imap["k"], "offset": imap["c"], "steps": imap["steps"],
                      "labels_equal": imap.get("labels_equal"), "relation": said["relation"]},
            fix=said["fix"], explains=1.0))
        return out
    perm = al.input_permuted
    if perm is not None and al.init_same is not False:
        k = int(a.step[al.ia[int(np.flatnonzero(~al.data_same)[0])]])
        out.append(Finding(
            "input_order",
            f"the runs' batches hold the same input values in another order ({perm['steps_differing']} of "
            f"{perm['steps']} steps, from step {k}) while the labels are identical: one run feeds its inputs "
            "arranged differently, e.g. a multi-input model's inputs swapped (a list in another order than "
            "the model's Inputs), features reordered, or examples reordered without their labels, so the "
            "same examples meet other labels or other input layers.",
            steps=[k], evidence={**perm, "first_step": k},
            explains=1.0))
        return out
    lm = al.label_map
    if lm is not None and lm.get("per_column"):
        out.append(Finding(
            "label_scale",
            f"the inputs are identical at every step ({lm['steps']} steps: the same examples in the same order) "
            "but the labels differ at every step, by no single factor and offset: one run transforms its "
            "targets column by column (each target standardised or scaled on its own, in one run only). At "
            f"step {int(a.step[al.ia[0]])} run a's labels have mean {lm['mean_a']:.4g} and root mean square "
            f"{lm['rms_a']:.4g}, run b's {lm['mean_b']:.4g} and {lm['rms_b']:.4g}.",
            steps=[int(a.step[al.ia[0]])],
            evidence={"factor": None, "offset": None, "per_column": True, "steps": lm["steps"],
                      "label_mean": {"a": lm["mean_a"], "b": lm["mean_b"]},
                      "label_rms": {"a": lm["rms_a"], "b": lm["rms_b"]}},
            fix="Train both runs on the same targets: fit the target scaler once and apply it in both runs (or "
                "in neither); to report in the original units, invert it on the predictions instead.",
            explains=1.0))
        return out
    if lm is not None:
        k, c = float(lm["k"]), float(lm["c"])
        if c == 0.0:
            rel_ = f"run b's labels are {k:.6g} x run a's"
        else:
            rel_ = f"run b's labels are {k:.6g} * y {'-' if c < 0 else '+'} {abs(c):.6g} with y run a's"
            if k > 0:  # as a standardisation: (y - mean) / std
                rel_ += f" = (y {'-' if c < 0 else '+'} {abs(c / k):.6g}) / {1 / k:.6g}"
        shifted = abs(k - 1.0) <= 1e-4 and abs(c - round(c)) <= 1e-4 and c != 0.0
        what = (f"the class indices are shifted by {round(c):+d} in run b (labels counted from another "
                "start, e.g. 1..N against 0..N-1)" if shifted else
                "one run scales or standardises its targets (e.g. (y - mean) / std in one run only)")
        out.append(Finding(
            "label_scale",
            f"the inputs are identical at every step but the labels differ by one map ({rel_}, over "
            f"{lm['steps']} steps): {what}, so the runs fit different targets from the first step.",
            steps=[int(a.step[al.ia[0]])],
            evidence={"factor": k, "offset": c, "steps": lm["steps"], "relation": rel_},
            fix=(f"Use the same class indices in both runs (subtract {round(c)} from run b's labels, or add it to "
                 "run a's)." if shifted else
                 "Train both runs on the same targets: standardise (or scale) the targets in both runs with "
                 "the same statistics, or in neither; to report in the original units, invert the "
                 "transform on the predictions instead."),
            explains=1.0))
        return out
    tr = al.input_transformed
    if tr is not None and not tr.get("undone_by_model"):
        out.append(Finding(
            "input_scale",
            f"the labels are identical at every step ({tr['steps']} steps: the same examples in the same "
            "order) but the inputs differ at every step, and by no single factor and offset: one run "
            "preprocesses its inputs differently feature by feature (a per-column standardisation such as "
            "scikit-learn's StandardScaler, or min-max scaling, in one run only or fitted on other data), or "
            "augments them in one run only (added noise, random flips or crops). "
            f"At step {int(a.step[al.ia[0]])} run a's inputs have mean {tr['mean_a']:.4g} and root mean "
            f"square {tr['rms_a']:.4g}, run b's {tr['mean_b']:.4g} and {tr['rms_b']:.4g}.",
            steps=[int(a.step[al.ia[0]])],
            evidence={"factor": None, "offset": None, "per_feature": True, "steps": tr["steps"],
                      "labels_equal": True, "input_mean": {"a": tr["mean_a"], "b": tr["mean_b"]},
                      "input_rms": {"a": tr["rms_a"], "b": tr["rms_b"]}},
            fix="Preprocess the inputs the same way in both runs: fit the scaler once on the training data "
                "and apply that same transform in both (one shared function), or put it in the model "
                "(`keras.layers.Normalization()` adapted on the training data) so both runs feed the same "
                "raw data; augment in both runs or in neither (augmentation layers inside the model see the "
                "same raw batches).",
            explains=1.0))
        return out
    if al.data_known and al.n_common and al.init_same is not False:
        bad = np.flatnonzero(~al.data_same)
        if bad.size:
            k = int(a.step[al.ia[bad[0]]])
            shuffled = [side for side, run in (("a", a), ("b", b))
                        if any(c.get("shuffle") is True for c in run.fit_calls())]
            why = (f" Run {' and '.join(shuffled)} is fit() with shuffle=True (fit()'s default), which "
                   "reorders the examples every epoch." if shuffled else "")
            fix = ("Pass shuffle=False to fit() (or shuffle the loop's data with the same seed) to compare "
                   "the runs step by step." if shuffled else None)
            reordered = bool(dd.same_examples_reordered(a.x_fp[al.ia], b.x_fp[al.ib], a.y_fp[al.ia], b.y_fp[al.ib]))
            pipelines = {side: _dataset_shuffles(run) for side, run in (("a", a), ("b", b))}
            if reordered and not shuffled:
                why = (" Over the common steps both runs went through the same examples (the totals of their "
                       "inputs and labels agree), grouped into batches differently: one run shuffles or orders "
                       "its data otherwise (a tf.data `.shuffle()`, fit()'s default shuffle=True, a sampler).")
                fix = ("Shuffle in neither run, or in both the same way (`ds.shuffle(n, seed=s)` built "
                       "identically; fit(x, y) shuffles unless shuffle=False), to compare them step by step.")
            if not shuffled:
                # what the tape loops' tf.data pipelines recorded (RunInfo.extra.datasets)
                said = [f"run {side}'s tf.data pipeline shuffles ({desc})" for side, desc in pipelines.items()
                        if desc]
                plain = [side for side, run in (("a", a), ("b", b))
                         if pipelines[side] is None and (run.meta.get("extra") or {}).get("datasets")]
                if said:
                    text = "; ".join(said) + (f", run {plain[0]}'s does not" if plain else "") + "."
                    why += " " + text[0].upper() + text[1:]
                    fix = ("Shuffle in neither run, or in both with the same seed (`ds.shuffle(n, seed=s)` built "
                           "identically in both), to compare them step by step.")
                    sa, sb = _dataset_shuffle(a), _dataset_shuffle(b)
                    args = sorted(k for k in set(sa or {}) | set(sb or {})
                                  if sa and sb and sa.get(k) != sb.get(k))
                    if args:
                        # Both pipelines shuffle; what differs is named, not the seed they share.
                        why += (" The two shuffles differ in " + ", ".join(
                            f"{k} ({sa.get(k)!r} vs {sb.get(k)!r})" for k in args) + ".")
                        if args == ["reshuffle_each_iteration"]:
                            why += (" With the same seed, a pipeline that reshuffles draws every epoch's order "
                                    "(the first one included) from its own seed stream, so the batches differ "
                                    "from the first epoch on.")
                        fix = ("Build both pipelines' shuffle with the same arguments ("
                               + ", ".join(f"{k}={sa.get(k)!r} in run a, {sb.get(k)!r} in run b" for k in args)
                               + "), to compare them step by step.")
                    elif sa and sa == sb and sa.get("reshuffle_each_iteration") is True and k > 0:
                        # Built alike, equal up to step k: the runs drew other orders of the same
                        # seed stream, one per iterator created over the dataset.
                        why += (f" The two pipelines are built alike and their first {k} steps match: with "
                                "reshuffle_each_iteration=True every iterator created over the dataset takes the "
                                "next order of the seed's stream, so the runs created a different number of "
                                "iterators before step " + str(k) + " (fit() given a dataset may iterate it once "
                                "more than its epochs, e.g. to count the steps of a dataset of unknown length; a "
                                "loop may take a peek with `next(iter(ds))` or run a validation pass over the "
                                "same dataset object).")
                        fix = ("Use `reshuffle_each_iteration=False` in both pipelines (one order for every epoch), "
                               "or shuffle each epoch with a seed of its own in both runs (`ds.shuffle(n, "
                               "seed=s + epoch)`), to compare them step by step beyond the first epoch.")
            ba, bb = a.batch_at(int(al.ia[bad[0]])), b.batch_at(int(al.ib[bad[0]]))
            sizes = None
            micro = None
            if np.isfinite(ba) and np.isfinite(bb) and ba != bb:
                sizes = [int(ba), int(bb)]
                why = (f" The batch sizes differ: {sizes[0]} in run a, {sizes[1]} in run b "
                       f"({a.n_steps} vs {b.n_steps} steps).") + why
                fix = "Use the same batch_size in both runs (fit(batch_size=...), the loop's batching)."
                small = 0 if sizes[0] < sizes[1] else 1
                factor = max(sizes) // min(sizes)
                # Two optimizers taking turns, and only every other step's batch differs: one of
                # them sees another batch (a GAN's discriminator on real and generated examples
                # concatenated in a loop, against the real batch fit() hands train_step).
                turns = 2 in (dr._stepping_groups(a), dr._stepping_groups(b)) and (
                    bad.size >= 2 and len({int(i) % 2 for i in bad}) == 1 and 2 * bad.size >= al.n_common - 1)
                if turns:
                    why += (f" Two optimizers take turns and only every other step differs ({bad.size} of "
                            f"{al.n_common}): the steps of one of them record another batch in the two runs, e.g. a "
                            "discriminator's batch of real and generated examples concatenated in a loop against "
                            "the real batch fit() hands train_step, whose data is what fit() steps record. The "
                            "other optimizer's steps saw the same batches.")
                    fix = ("Nothing to fix if both runs feed the same real batches: the recorded batches differ by "
                           "what each step calls the model on. Random inputs drawn in the step (a GAN's latent "
                           "vectors) differ between runs anyway, so such runs compare by configuration and by "
                           "the scale of their losses and gradients, not step by step.")
                elif factor >= 2 and max(sizes) == factor * min(sizes) and a.n_steps == b.n_steps:
                    # As many steps on batches `factor` times smaller: micro-batches applied once, by hand.
                    why += (f" Run {'ab'[small]} takes as many optimizer steps on batches {factor} times smaller: "
                            f"if it accumulates {factor} micro-batches of {min(sizes)} by hand before each apply, "
                            "each of its steps records its last micro-batch only, so the batches cannot be matched.")
                    micro = {"factor": factor, "run": "ab"[small]}
                    fix += (f" Accumulating on purpose, the mean of the {factor} micro-batches' gradients (their sum "
                            f"divided by {factor}) is the same training as a batch of {max(sizes)}, but a step that "
                            "records only its last micro-batch cannot be matched to it; let the optimizer accumulate "
                            f"instead (`gradient_accumulation_steps={factor}` on a Keras 3 optimizer, fed the "
                            f"micro-batches), which is compared update by update with the run of batch {max(sizes)}.")
            across = _batched_across_epochs(a, b, int(al.ia[bad[0]]), int(al.ib[bad[0]]))
            if across is not None:
                p, o = across["partial_run"], "b" if across["partial_run"] == "a" else "a"
                m, full = across["partial_batch"], across["full_batch"]
                why = (f" Both runs went through the same {across['examples']} examples ({a.n_steps} vs {b.n_steps} "
                       f"steps), batched differently: at step {k} run {p}'s epoch ends with a partial batch of {m} "
                       f"while run {o}'s batch of {full} takes those {m} and the first {full - m} of the next epoch "
                       f"(a tf.data pipeline repeated before it is batched: `ds.repeat(n).batch({full})`), so every "
                       "later batch differs.")
                fix = (f"Batch each epoch on its own, as fit() does: `ds.batch({full}).repeat(n)` or a loop over "
                       f"epochs of `ds.batch({full})`; or drop the partial batch in both runs "
                       "(`drop_remainder=True`, and as many examples given to fit()).")
            labels_only = _labels_of_other_losses(a, b, al, bad)
            if labels_only is not None:
                why, fix = " " + labels_only[0], labels_only[1]
            out.append(Finding(
                "data_mismatch",
                (f"the runs saw the same inputs but their losses took other labels from step {k} on "
                 if labels_only is not None else f"the runs saw different batches from step {k} on ")
                + f"({bad.size} of {al.n_common} common steps differ): "
                + (f"steps before {k} are compared exactly; after it only {still}." if k > int(a.step[al.ia[0]])
                   else f"no step is compared exactly; only {still}.") + why,
                steps=[k], evidence={"first_step": k, "steps_differing": int(bad.size),
                                     "fit_shuffle": shuffled or None, "batch_sizes": sizes,
                                     "dataset_shuffle": {k: v for k, v in pipelines.items() if v} or None,
                                     "same_examples_reordered": reordered,
                                     **({"batched_across_epochs": across} if across and labels_only is None else {}),
                                     **({"micro_batches": micro} if micro and labels_only is None else {}),
                                     **({"labels_differ": True} if labels_only is not None and not labels_only[2]
                                        else {})},
                fix=fix, severity="info" if labels_only is not None and labels_only[2] else None,
                explains=0.9 if across and labels_only is None else 0.1))
    return out


def _batched_across_epochs(a: RunData, b: RunData, ra: int, rb: int) -> dict[str, Any] | None:
    """One run ends each epoch with a partial batch where the other batches straight across the
    epoch boundary (``ds.repeat(n).batch(B)``): both go through the same number of examples, the
    batches part at the first partial one (rows ``ra``/``rb``), the other run's batches are all full
    but its last. Read from the recorded batch sizes."""
    sizes = {side: np.array([run.batch_at(i) for i in range(run.n_steps)]) for side, run in (("a", a), ("b", b))}
    if any(not np.isfinite(v).all() or v.size < 2 for v in sizes.values()):
        return None
    if sizes["a"].sum() != sizes["b"].sum():
        return None
    at = {"a": ra, "b": rb}
    for p, o in (("a", "b"), ("b", "a")):
        sp, so = sizes[p], sizes[o]
        full = so[0]
        if not (sp[at[p]] < full and so[at[o]] == full and at[p] < sp.size - 1):
            continue
        if np.any(so[:-1] != full) or np.any(sp > full) or sp[0] != full:
            continue
        return {"partial_run": p, "partial_batch": int(sp[at[p]]), "full_batch": int(full),
                "examples": int(sp.sum()), "partial_batches": int(np.sum(sp < full))}
    return None


def _labels_of_other_losses(a: RunData, b: RunData, al: Alignment, bad: np.ndarray
                            ) -> tuple[str, str, bool] | None:
    """Why the label fingerprints differ at steps whose inputs are equal, and the fix: the runs
    made another number of Keras loss calls there (the labels fingerprinted are those the step's
    losses took, so a loss one run leaves out, an output's loss added every few steps, leaves its
    labels out: context), or else one run pairs its inputs with other labels. None when the
    inputs differ too."""
    if not bad.size or not np.isfinite(a.x_fp[al.ia[bad]]).any():
        return None
    from gradtrace.compare.align import fingerprints_equal

    if not fingerprints_equal(a.x_fp[al.ia[bad]], b.x_fp[al.ib[bad]]).all():
        return None
    for i in bad.tolist():
        sa, sb = int(a.step[al.ia[i]]), int(b.step[al.ib[i]])
        ca, cb = (len(((r.loss_info.get(s) or {}).get("calls")) or [1]) if r.loss_info.get(s) else None
                  for r, s in ((a, sa), (b, sb)))
        if ca is not None and cb is not None and ca != cb:
            return (f"At step {sa} run a computes {ca} Keras loss(es) and run b {cb}: the labels of a loss one run "
                    "leaves out are not part of its step, so the label fingerprints differ while the batches "
                    "are the same.",
                    "Compute the same losses at every step in both runs; the inputs are already the same.", True)
    rounded = _labels_rounded(a.y_fp[al.ia[bad]], b.y_fp[al.ib[bad]])
    if rounded is not None:
        return (f"The inputs are the same at each of these {bad.size} steps and only the labels differ, by about "
                f"{rounded:.2g} of their spread: the same labels, each rounded in one run (stored at a lower "
                "precision, such as a float16 column or array converted back to float32, or a coarser unit), not "
                "other rows.",
                "Keep the labels at the same precision in both runs (float32 throughout, no float16 round trip).",
                False)
    return (f"The inputs are the same at each of these {bad.size} steps and only the labels differ (by no single "
            "scale or offset): one run pairs its inputs with other labels, e.g. labels sliced with an offset "
            "(`y[i + 1:j + 1]` against `x[i:j]`), shuffled apart from the inputs, or another label column.",
            "Take each batch's labels from the same rows as its inputs: slice x and y with the same indices, and "
            "shuffle them together (one permutation for both, or a `tf.data.Dataset` of (x, y) pairs).", False)


_ROUNDED = 0.02  # label differences below this share of their spread: rounding, not other rows


def _labels_rounded(fa: np.ndarray, fb: np.ndarray) -> float | None:
    """The labels' fingerprints (``[sum, sum of squares, projection, count]`` per step) differ by a
    small share of the labels' spread: the projection, which other rows or another order change
    by about a third of ``spread * sqrt(n)``, moved by under ``_ROUNDED`` of it at every step (the
    median share is returned). None when the counts differ or the labels do not vary."""
    if fa.shape[-1] < 4 or fb.shape[-1] < 4:
        return None
    n = fa[:, 3]
    if not (np.all(np.isfinite(n)) and np.all(n == fb[:, 3]) and np.all(n > 1)):
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = fa[:, 0] / n
        spread = np.sqrt(np.maximum(fa[:, 1] / n - mean ** 2, 0.0)) * np.sqrt(n)
        share = np.abs(fa[:, 2] - fb[:, 2]) / spread
    if not np.all(np.isfinite(share) & (spread > 0)) or not np.all(share < _ROUNDED):
        return None
    return float(np.median(share))


def _dataset_shuffle(run: RunData) -> dict[str, Any] | None:
    """The shuffle arguments of the first shuffling tf.data pipeline a run iterated."""
    for d in (run.meta.get("extra") or {}).get("datasets") or []:
        if isinstance(d, dict) and d.get("shuffle"):
            return {k: d.get(k) for k in ("buffer_size", "seed", "reshuffle_each_iteration")}
    return None


def _dataset_shuffles(run: RunData) -> str | None:
    """How the tf.data pipelines a run's tape loop iterated shuffle (``RunInfo.extra.datasets``,
    recorded once per dataset), or None when none recorded shuffles."""
    for d in (run.meta.get("extra") or {}).get("datasets") or []:
        if isinstance(d, dict) and d.get("shuffle"):
            seed = d.get("seed")
            return (f"buffer {d.get('buffer_size')}, "
                    + ("no seed" if seed is None else f"seed {seed}")
                    + ("" if d.get("reshuffle_each_iteration") is None else
                       f", reshuffle_each_iteration={d['reshuffle_each_iteration']}"))
    return None
