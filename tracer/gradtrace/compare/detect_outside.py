"""Layers that ran in training mode outside the optimizer steps (``RunInfo.training_outside_steps``).

A validation pass ``model(x_val, training=True)``, or a BatchNormalization hard-wired to
``training=True`` that ``evaluate()``/``predict()`` then runs (tf-keras keeps a mode set in a
functional model's layer call), folds batches into the moving statistics that no optimizer
step saw, and runs Dropout on predictions. Every step of two runs can agree while the models
they evaluate differ. Counted by the tracer (see ``gradtrace._outside``); compared here per
layer, on layers paired through the variables they own.
"""

from __future__ import annotations

from typing import Any

from gradtrace.compare.align import Alignment
from gradtrace.compare.data import RunData
from gradtrace.compare.findings import Finding

FIX = ("Call the model in training mode only in the forward pass the gradient is taken of: compute "
       "metrics from that pass's output, and call the model with `training=False` wherever no gradient is "
       "taken (validation, evaluation, prediction), as fit() does; in a functional model do not hard-wire "
       "`training=True` into a layer's call (tf-keras keeps it in evaluate() and predict()).")
# what the comparison adds: the same calls made on purpose are one choice, made in both or neither
PAIR_FIX = FIX + (" To recompute BatchNormalization statistics on purpose (after weight averaging), do it in "
                  "both runs.")


def _rows(run: RunData) -> dict[str, dict[str, Any]]:
    """Layer name -> {"calls", "first_step", "how"} of the run's record (eager and graph summed)."""
    out: dict[str, dict[str, Any]] = {}
    for r in run.meta.get("training_outside_steps") or []:
        if not isinstance(r, dict) or not r.get("layer") or not isinstance(r.get("calls"), int):
            continue
        row = out.setdefault(str(r["layer"]), {"calls": 0, "first_step": None, "how": [], "model": r.get("model")})
        row["calls"] += int(r["calls"])
        s = r.get("first_step")
        if isinstance(s, int) and (row["first_step"] is None or s < row["first_step"]):
            row["first_step"] = s
        row["how"].append(str(r.get("how")))
    return out


def inventory_layer(run: RunData, layer: str) -> dict[str, Any] | None:
    """The inventory's layer for a tracked name (``name#k``: see ``RunData.tracked_name``)."""
    found = run.layer_tracked_as(layer)
    if found is None:  # a layer the inventory has fewer of: its first namesake
        found = next((x for x in run.layers if x.get("name") == layer.partition("#")[0]), None)
    return found


def _stateful(run: RunData, layer: str) -> bool:
    """The layer owns non-trainable floating-point state (moving statistics, not an RNG seed)."""
    info = inventory_layer(run, layer)
    return any((v.get("layer_index") == info.get("index") if info is not None and v.get("layer_index") is not None
                else v.get("layer") == layer) and not v.get("trainable", True)
               and str(v.get("dtype") or "float32").startswith(("float", "bfloat"))
               for v in run.variables)


def _class(run: RunData, layer: str) -> str:
    info = inventory_layer(run, layer)
    return str(info.get("class_name")) if info is not None and info.get("class_name") else "layer"


def _own_state(run: RunData, layer: str) -> bool:
    """The layer keeps state of its own that a training-mode forward pass reads (a counter, a
    running value), not normalization statistics, which only inference reads."""
    return _stateful(run, layer) and not _class(run, layer).endswith("Normalization")


def _said(run: RunData, layer: str, row: dict[str, Any]) -> str:
    first = row.get("first_step")
    when = ("" if first is None else f", after its last step ({first - 1})" if first >= run.n_steps > 0
            else f", from step {first} on")
    how = ("eager calls such as `model(x_val, training=True)`" if row["how"] == ["eager"]
           else "in a tf.function, where no gradient tape recorded: a forward pass for a metric after the "
           "tape, a validation step, evaluate() or predict()" if row["how"] == ["graph"]
           else "eagerly and in a tf.function")
    what = (("its non-trainable state changed in those calls as in a training step" if _own_state(run, layer)
             else "its moving statistics took in those batches") if _stateful(run, layer)
            else "it dropped or perturbed what those calls computed")
    return f"{_class(run, layer)} '{layer}' {row['calls']} time(s) ({how}{when}): {what}"


def _first(rows: dict[str, dict[str, Any]]) -> list[int]:
    steps = [r["first_step"] for r in rows.values() if isinstance(r.get("first_step"), int)]
    return [min(steps)] if steps else []


def untrained(run: RunData) -> dict[int, str]:
    """Registration position -> name of the root models none of whose variables an optimizer
    of the run was given (``RunInfo.untrained_models``: a mean teacher, a target network)."""
    return {int(m["model"]): str(m.get("name") or "model") for m in run.meta.get("untrained_models") or []
            if isinstance(m, dict) and isinstance(m.get("model"), int)}


def untrained_layers(run: RunData) -> set[str]:
    """Tracked names of the layers of those models (``RunInfo.layer_models``)."""
    models = untrained(run)
    return {str(n) for n, m in (run.meta.get("layer_models") or {}).items() if m in models}


def _in_steps(run: RunData) -> set[str]:
    """Tracked names of the layers whose mode the steps recorded."""
    return {str(n) for m, _, _ in run.modes for n in (m or {})}


def untrained_variables(run: RunData) -> set[int]:
    """Inventory indices of the variables of those models: no gradient is their recipe."""
    return {int(v) for m in run.meta.get("untrained_models") or [] if isinstance(m, dict)
            for v in m.get("variables") or []}


def untrained_predictor(run: RunData) -> Finding | None:
    """``gradtrace check``: a model no optimizer of the run updates (``untrained_models``) whose
    output the step's Keras loss takes as its predictions (``pred_model`` of the first step's loss
    calls) and that holds trainable variables no script writes (a target network or a teacher feeds
    the labels' side, or is written by assign). The loss's gradient flows through it to the trained
    model, but its own weights never move: a decoder left out of ``tape.gradient``'s list."""
    models = [m for m in run.meta.get("untrained_models") or [] if isinstance(m, dict) and m.get("variables")]
    if not models or not run.loss_info:
        return None
    info = run.loss_info[min(run.loss_info)]
    makers = {c.get("pred_model") for c in (info.get("calls") or [info]) if isinstance(c, dict)}
    written = {int(i) for w in run.meta.get("weight_writes") or [] for i in w.get("variables") or []}
    for m in models:
        trainable = [int(v) for v in m["variables"] if run.var_info(int(v)).get("trainable") is not False]
        if m.get("model") not in makers or not trainable or set(trainable) & written:
            continue
        names = [run.var_name(v) for v in trainable]
        return Finding(
            "missing_gradient", severity="warning",
            summary=f"the loss takes the output of model '{m['name']}' as its predictions, yet none of its "
            f"{len(trainable)} trainable variable(s) ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''}) "
            "is given to an optimizer or written by the script: the gradient passes through it to the model "
            "that trains, and its own weights stay as initialized (a decoder or head left out of the variables "
            "handed to tape.gradient and apply_gradients).",
            steps=[int(min(run.loss_info))], variables=names[:16],
            evidence={"model": m.get("name"), "variables": names}, explains=0.9,
            fix=(f"Differentiate and apply the variables of '{m['name']}' too (e.g. `encoder.trainable_variables + "
                 "decoder.trainable_variables`, or the outer model's `trainable_variables`); if it is fixed on "
                 f"purpose (a pretrained loss network), set `{m['name']}.trainable = False`."))
    return None


def outside_steps_run(run: RunData) -> Finding | None:
    """``gradtrace check``: layers of one run that ran in training mode outside its steps.

    Layers of a root model whose variables no optimizer of the run was given (a mean teacher
    called with ``training=True`` for noisy targets, its weights an average written with
    assign) are not the trained model's: said as context when they are the only ones."""
    rows = _rows(run)
    if not rows:
        return None
    others = untrained(run)
    theirs = {n: r for n, r in rows.items() if r.get("model") in others}
    rows = {n: r for n, r in rows.items() if n not in theirs}
    if not rows:
        order = sorted(theirs, key=lambda n: (not _stateful(run, n), n))
        names = sorted({f"'{others[theirs[n]['model']]}'" for n in order})
        parts = [_said(run, n, theirs[n]) for n in order[:4]]
        return Finding(
            "training_outside_steps", severity="info",
            summary=f"layers of a model the optimizer does not train ({', '.join(names)}: no optimizer of the run "
            "was given its variables) ran in training mode outside the steps: " + "; ".join(parts)
            + (f"; and {len(order) - 4} more layer(s)" if len(order) > 4 else "")
            + ". The model the steps train is not affected (a teacher or target model computing targets with "
            "its noise on is a recipe).",
            steps=_first(theirs), layers=order,
            evidence={"untrained_model_layers": {n: {k: theirs[n][k] for k in ("calls", "first_step")}
                                                 for n in order}},
            fix="Nothing to fix if that model's noise is meant (a mean teacher's targets); call it with "
                "`training=False` for deterministic targets, which also leaves its BatchNormalization statistics "
                "as its weight average writes them.",
            explains=0.0)
    order = sorted(rows, key=lambda n: (not _stateful(run, n), n))
    parts = [_said(run, n, rows[n]) for n in order[:4]]
    more = f"; and {len(order) - 4} more layer(s)" if len(order) > 4 else ""
    besides = (f" (and {len(theirs)} layer(s) of a model the optimizer does not train, "
               f"{', '.join(sorted({repr(others[r['model']]) for r in theirs.values()}))}: context)" if theirs else "")
    evidence = {"layers": {n: {k: rows[n][k] for k in ("calls", "first_step")} for n in order}}
    if not any(_stateful(run, n) for n in order):
        # Dropout or noise only: no state moved, the model is the one the steps trained; only
        # what those calls computed was randomized. After the last step that is Monte Carlo
        # dropout or noisy predictions; between steps, validation metrics with the noise on.
        after = all(isinstance(rows[n]["first_step"], int) and rows[n]["first_step"] >= run.n_steps > 0
                    for n in order)
        return Finding(
            "training_outside_steps", severity="info" if after else "warning",
            summary="layers without state ran in training mode outside the forward passes the optimizer steps "
            "differentiate (no gradient tape recorded): " + "; ".join(parts) + more + ". No state changed: the "
            "model is the one the steps trained, but those calls' outputs were randomized"
            + (" (Monte Carlo dropout does this on purpose)" if after else
               ": metrics computed from them (a validation pass) are noisier than fit()'s and than the model's")
            + f"{besides}.",
            steps=_first(rows), layers=order, evidence={**evidence, "stateless": True},
            fix=("Nothing to fix if the sampling is meant (Monte Carlo dropout); otherwise call the model with "
                 "`training=False` for predictions." if after else FIX),
            explains=0.0 if after else 0.3)
    return Finding(
        "training_outside_steps",
        "layers ran in training mode outside the forward passes the optimizer steps differentiate (no "
        "gradient tape recorded): " + "; ".join(parts) + more
        + f". The model the run evaluates is not the one its steps trained{besides}.",
        steps=_first(rows), layers=order, evidence=evidence, fix=FIX, explains=0.5)


def outside_steps_pair(a: RunData, b: RunData, al: Alignment) -> Finding | None:
    """Paired layers that ran in training mode outside the steps a different number of times."""
    ra, rb = _rows(a), _rows(b)
    # A model no optimizer trains that ran during the steps too (a teacher making targets in the
    # step function): its mode there is the steps' record, compared by training_mode_mismatch.
    ra, rb = ({n: r for n, r in rows.items() if n not in drop}
              for rows, drop in ((ra, untrained_layers(a) & _in_steps(a)), (rb, untrained_layers(b) & _in_steps(b))))
    if not ra and not rb:
        return None
    names = {a.tracked_name(x): b.tracked_name(y) for x, y in al.layer_pairs}
    back = {v: k for k, v in names.items()}
    diffs: list[tuple[str, str | None, str | None]] = []  # (side with more calls, layer a, layer b)
    for la in sorted(set(ra) | {back.get(n, "") for n in rb} - {""}):
        lb = names.get(la)
        ca, cb = ra.get(la, {}).get("calls", 0), rb.get(lb, {}).get("calls", 0) if lb else 0
        if ca != cb:
            diffs.append(("a" if ca > cb else "b", la, lb))
    diffs += [("b", None, n) for n in rb if n not in back]  # a layer of run b with no counterpart
    if not diffs:
        return None
    parts, layers, steps = [], [], []
    for side in ("a", "b"):
        run, rows, other_rows = (a, ra, rb) if side == "a" else (b, rb, ra)
        mine = [(la if side == "a" else lb, lb if side == "a" else la) for s, la, lb in diffs if s == side]
        if not mine:
            continue
        said = []
        for n, counterpart in mine[:4]:
            row = rows[n]
            theirs = other_rows.get(counterpart, {}).get("calls", 0) if counterpart else 0
            said.append(_said(run, n, row) + (f" (run {'b' if side == 'a' else 'a'}: {theirs})" if theirs else ""))
            layers.append(n)
        steps += _first({n: rows[n] for n, _ in mine})
        parts.append(f"run {side} ran " + "; ".join(said))
    other = [s for s in ("a", "b") if not any(d[0] == s for d in diffs)]
    text = "; ".join(parts) + "." + (f" Run {other[0]}'s layers never did." if len(other) == 1 and not (
        ra if other[0] == "a" else rb) else "")
    random = [n for s, la, lb in diffs for n in [la if s == "a" else lb]
              if n and not _stateful(a if s == "a" else b, n)]
    # the extra calls moved state the steps' own forward passes read
    state = [n for s, la, lb in diffs for n in [la if s == "a" else lb] if n and _own_state(a if s == "a" else b, n)]
    return Finding(
        "training_outside_steps",
        "layers ran in training mode outside the forward passes the optimizer steps differentiate (no "
        "gradient tape recorded), differently in the two runs: " + text
        + " The models the runs evaluate differ even where every step agrees.",
        steps=sorted(set(steps))[:1], layers=layers,
        evidence={"a": {n: r["calls"] for n, r in ra.items()}, "b": {n: r["calls"] for n, r in rb.items()},
                  "random_layers": random, "state_layers": state},
        fix=PAIR_FIX, explains=0.5)


def explains_state(findings: list[Finding], st: dict[str, Any]) -> Finding | None:
    """The ``training_outside_steps`` finding whose extra training-mode calls ran the layers
    whose state departs (``detect_steps.state_departs``), no later than it departs: those calls
    moved the statistics, so the departure is their evidence, not a finding of its own."""
    f = next((g for g in findings if g.kind == "training_outside_steps"), None)
    if f is None or (f.steps and f.steps[0] > st["step"]):
        return None
    ran = {n for side in ("a", "b") for n in (f.evidence.get(side) or {})}
    return f if ran & set(st.get("layers_a", []) + st.get("layers_b", [])) else None


def fold_divergence(findings: list[Finding], step_f: list[Finding]) -> list[Finding]:
    """A departure of the steps from the first outside call on, where random layers (Dropout) ran
    outside the steps in one run more often: their draws advanced the run's generator, so its
    later masks differ; or layers with state of their own that a training-mode pass changes (a
    counter, a running scale; not normalization statistics, which such a pass does not read). The
    departure becomes the evidence of the outside calls, which are then the cause (an error);
    returns the step findings left."""
    f = next((g for g in findings if g.kind == "training_outside_steps"
              and (g.evidence.get("random_layers") or g.evidence.get("state_layers")) and g.steps), None)
    if f is None:
        return step_f
    rest = []
    for g in step_f:
        if g.kind == "divergence" and g.steps and min(g.steps) >= f.steps[0]:
            f.evidence.setdefault("step_evidence", []).append({"kind": g.kind, "summary": g.summary, **g.evidence})
            f.severity = "error"
            f.explains = 1.0
            rnd, st = f.evidence.get("random_layers") or [], f.evidence.get("state_layers") or []
            f.summary += (
                (f" The random layers among them ({', '.join(rnd[:3])}) drew from their generator in those calls, "
                 "so the later steps' random numbers differ" if rnd else
                 f" The layers among them with state of their own ({', '.join(st[:3])}) changed it in those calls, "
                 "so the later steps' forward passes start from other state")
                + f": that is why the losses part at step {min(g.steps)}.")
            f.steps = sorted(g.steps)  # where it shows: a graph's calls date from its first trace
        else:
            rest.append(g)
    return rest
