"""The comparator: run every detector, fold symptoms into their causes, rank, decide.

Pure functions of two :class:`RunData`; no database, no TensorFlow.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from gradtrace.compare import detect_calls as dc
from gradtrace.compare import detect_data as dd
from gradtrace.compare import detect_model as dm
from gradtrace.compare import detect_outside as do
from gradtrace.compare import detect_pair as dp
from gradtrace.compare import detect_run as dr
from gradtrace.compare import detect_steps as ds
from gradtrace.compare import detect_wiring as dw
from gradtrace.compare import manual
from gradtrace.compare.accumulate import accumulation_view
from gradtrace.compare.align import Alignment, _random_layer_classes, align
from gradtrace.compare.catalogue import CATALOGUE
from gradtrace.compare.data import RunData
from gradtrace.compare.findings import Finding, Report
from gradtrace.compare.noise import rel
from gradtrace.schema import NO_STEPS_WARNING

logger = logging.getLogger("gradtrace.compare")

# Kinds whose step-level symptoms (a different loss/gradient at step 0, a departure)
# they explain by themselves: the numeric finding becomes their evidence.
_CAUSES = ("training_mode_mismatch", "layer_config_mismatch", "call_argument_mismatch", "loss_mismatch",
           "shape_broadcast", "sample_weighting", "loss_scaling",
           "missing_gradient", "not_applied", "trainable_mismatch", "frozen_state", "numerics", "optimizer_mismatch",
           "regularization_mismatch", "misapplied_gradient", "repeated_step", "skipped_batches", "model_recreated",
           "loss_not_differentiated", "discarded_gradient", "weights_assigned",
           "zero_gradient", "structure_mismatch", "random_draws")
_SYMPTOMS = ("gradient_mismatch", "divergence")


def compare_runs(a: RunData, b: RunData) -> Report:
    """Compare two runs: verdict, first divergent step, ranked findings, skipped checks, noise."""
    a, b, accumulated = accumulation_view(a, b)
    al = align(a, b)
    if accumulated:
        n, side = accumulated["gradient_accumulation_steps"], accumulated["run"]
        al.noise.observed["steps"] = (
            f"run {side} accumulates gradients (gradient_accumulation_steps={n}): its updating steps "
            f"(every {dp.nth(n)} of its {accumulated['micro_steps']} micro-batch steps) are compared with the "
            f"other run's steps, renumbered 0, 1, 2, ... (run {side}'s step k is its micro-step {n}k + {n - 1})"
            + (f"; the other run's batches are the union of {n} micro-batches (losses: their mean; batches "
               "matched on sums, sums of squares and counts)" if accumulated.get("merged") else ""))
    findings: list[Finding] = []
    skipped: list[dict[str, str]] = []
    trainable_a = [v for v in a.variables if v.get("trainable", True)]
    trainable_b = [v for v in b.variables if v.get("trainable", True)]
    lone_a = [v for v in al.unpaired_a if a.var_info(v).get("trainable", True)]
    lone_b = [v for v in al.unpaired_b if b.var_info(v).get("trainable", True)]
    # One run's trainable variables all have a counterpart: compare on those and report
    # the rest; variables without counterpart on both sides are different models.
    # A run without steps has no per-step variable columns to pair: that is not a structure
    # difference (the reason is the empty run, said where the checks are skipped).
    structure_ok = (len(al.ja) > 0 or not (a.n_steps and b.n_steps)) and not (lone_a and lone_b)
    if structure_ok and (lone_a or lone_b):
        side, run, lone = ("a", a, lone_a) if lone_a else ("b", b, lone_b)
        other = "b" if side == "a" else "a"
        names = [run.var_name(v) for v in lone]
        paired = [p[0] if side == "a" else p[1] for p in al.var_pairs
                  if run.var_info(p[0] if side == "a" else p[1]).get("trainable", True)]
        k = dr.recreated_at(run, lone, paired)
    else:
        k = None
    if k is not None:
        findings.append(dr.model_recreated_finding(run, k, names, side=side))
    elif structure_ok and (lone_a or lone_b) and a.n_steps and b.n_steps:
        # (a run without steps handed nothing to its optimizer: its emptiness is the story, said
        # where the checks are skipped, not a gradient it missed)
        findings.append(Finding(
            "missing_gradient",
            f"{len(names)} trainable variable(s) of run {side} never reached run {other}'s optimizer "
            f"(no gradient was handed to it for them): {', '.join(names[:6])}.",
            variables=names, evidence={"run_with_them": side, "variables": names}, explains=0.9))

    tm = dp.training_mode_mismatch(a, b, al)
    frozen = dp.frozen_state(a, b, al)
    if tm:
        findings.append(tm)
        layers = set(tm.layers) | {d["layer_b"] for d in tm.evidence["layers"]}
        caused = [r for r in frozen if r["layer_a"] in layers or r["layer_b"] in layers]
        frozen = [r for r in frozen if r not in caused]
        if caused:
            tm.evidence["frozen_state"] = caused
            tm.summary += (f" As a consequence {len(caused)} state variable(s) of those layers stay "
                           "fixed in that run.")
            tm.explains = 1.0
    set_findings = dw.absorb_zero_gradient(a, b, al, dp.gradient_sets(a, b, al))
    if frozen:
        fz = dp.frozen_state_finding(a, b, frozen)
        set_findings = _fold_frozen_layer(a, b, al, fz, set_findings)
        findings.append(fz)
    findings += set_findings
    hand = manual.describe(a, b, dp.optimizer_pairs(a, b, al))
    findings += dp.optimizer_mismatch(a, b, al, hand)
    for f in (dp.layer_config_mismatch(a, b, al), dc.call_argument_mismatch(a, b, al),
              dp.loss_mismatch(a, b), dp.metric_mismatch(a, b),
              dp.sample_weighting(a, b), dp.loss_scaling(a, b), dp.execution_mode(a, b), dp.numerics(a, b),
              dp.validation_split_mismatch(a, b, al), dp.weights_replaced(a, b), dp.weights_assigned(a, b, al)):
        if f:
            findings.append(f)
    outside = do.outside_steps_pair(a, b, al)
    if outside:
        findings.append(outside)
    if not any(f.kind == "sample_weighting" for f in findings):
        weights = dm.weights_differ(a, b, al)
        if weights:
            findings.append(weights)
    findings += dp.shape_facts(a, b)
    repeated = dd.repeated_steps_pair(a, b) or dd.one_batch_pair(a, b)
    if repeated:
        findings.append(repeated)
    unshuffled = _sorted_data_pair(a, b)
    if unshuffled:
        findings.append(unshuffled)
    skipped_b = (None if repeated or accumulated or any(f.kind == "validation_split_mismatch" for f in findings)
                 else dd.skipped_batches_finding(a, b))
    if skipped_b:
        findings.append(skipped_b)
    findings += dw.wiring_findings(a, "a") + dw.wiring_findings(b, "b")
    findings += dp.init_data(a, b, al)
    _init_written(findings, a, b, al)

    first: int | None = None
    lone_layers = dm.lone_layers(a, b, al) if structure_ok else None
    extra_vars = _lone_variables_in_lone_layers(findings, lone_layers, a, b, lone_a, lone_b)
    if lone_layers is not None and (al.aligned_steps == 0 or al.stochastic):
        # Not comparable step by step: said, without deciding whether the layers change anything.
        note = ""
        rnd = set(_random_layer_classes(a)) | set(_random_layer_classes(b))
        lone_random = [d for d in lone_layers["only_in_a"] + lone_layers["only_in_b"] if d.split(" ", 1)[0] in rnd]
        if al.init_same is False and lone_random:
            # Keras 3 seeds a random layer's generator from the global random state when it is
            # built: one more such layer moves every later layer's initial weights.
            note = (f"Building {lone_random[0].split(' (', 1)[0]} draws a seed from the global random state "
                    "(`keras.utils.set_random_seed`), so the layers built after it start from other weights: "
                    "the different start (init_mismatch) can follow from this layer alone.")
        if extra_vars:
            note = (extra_vars + " " + note).strip()
        findings.append(dm.layer_structure_finding(lone_layers, "error" if extra_vars else "warning", note))
    if not structure_ok:
        reason = (f"the models differ in structure ({len(trainable_a)} vs {len(trainable_b)} trainable "
                  "variables, or unmatched shapes)")
        for k in _needs_alignment():
            skipped.append({"check": k, "why": reason})
        findings.append(_structure_finding(a, b, lone_a, lone_b, len(trainable_a), len(trainable_b)))
        _both_write(findings, [], None, None)
        for f in findings:
            if f.kind == "init_mismatch":  # different models start from different weights
                f.severity = "info"
    elif al.aligned_steps == 0 or al.stochastic:
        _both_write(findings, [], None, None)
        why = al.stochastic or _why_unaligned(al, a, b)
        for k in _needs_alignment():
            skipped.append({"check": k, "why": why})
        findings += ds.distribution_scale(a, b, al)
        if al.stochastic:
            # Same weights and batches, yet no step-level number can be compared: a verdict
            # resting on the configuration checks alone must say so where it is read.
            unchecked = ("Losses, gradients and updates are unchecked; the verdict rests on the configuration, "
                         "mode, state and gradient-set checks.")
            if al.stochastic_cause == "seed":  # not how the steps ran: where the random layers started
                findings.append(Finding(
                    "init_mismatch", severity="info",
                    summary=f"the runs start from the same trainable weights ({al.init_detail['weights_compared']} "
                    f"paired variables), but {al.stochastic}. {unchecked}",
                    evidence={"stochastic": al.stochastic, **al.init_detail}, explains=0.0,
                    fix="Seed both models' random layers alike to compare step by step: call "
                    "`keras.utils.set_random_seed(s)` before building each model (`set_weights` copies the "
                    "weights, not a random layer's seed state)."))
            else:  # XLA in one run only, or two Keras implementations: how the steps ran
                note = (f"Step-by-step numbers were not compared: {al.stochastic}. {unchecked} To compare step "
                        "by step, run both with the same "
                        + ("jit_compile." if al.stochastic_cause == "xla" else "Keras implementation."))
                mode = next((f for f in findings if f.kind == "execution_mode"), None)
                if mode is None:
                    findings.append(Finding("execution_mode", note, evidence={"stochastic": al.stochastic},
                                            explains=0.0))
                else:
                    mode.summary += " " + note
                    mode.evidence["stochastic"] = al.stochastic
    else:
        step_f, _s0 = ds.analyse_step0(a, b, al, hand)
        dep = ds.first_departure(a, b, al)
        draws = ds.rng_draws_differ(a, b, al)
        # Random layers called in training mode outside the steps, or in another mode, or with
        # other arguments, already say why the generators advance differently.
        named = any(f.severity in ("error", "warning") and f.kind in (
            "training_outside_steps", "training_mode_mismatch", "layer_config_mismatch", "call_argument_mismatch",
            "structure_mismatch") for f in findings)
        if draws is not None and not named and (dep is None or draws["step"] <= int(dep["step"])):
            findings.append(_draws_finding(draws))
        if dep is not None:
            first = int(dep["step"])
        if not step_f and dep is not None:
            step_f = [ds.mask_ignored_at(a, b, dep, al) or ds.fixed_divisor_at(a, b, dep, al)
                      or _divergence(a, b, dep, al)]
        _both_write(findings, step_f, dep, al.aligned_steps)
        if lone_layers is not None:
            # Layers of one model only: a cause when the aligned steps part (their symptoms fold
            # into it unless another cause was found first), context when every step agrees.
            parts = bool(step_f) or dep is not None
            findings.append(dm.layer_structure_finding(
                lone_layers, "error" if parts else "info",
                "" if parts else _no_difference("They", al.aligned_steps, ": the other model computes the same "
                                                "without them (an activation applied as a function in its "
                                                "`call`, or layers that are the identity at their settings).")))
        if not step_f:
            # Two loss classes that agree step by step (a user's subclass of the other) compute
            # the same thing: context, not a cause. (A layer_config_mismatch needs the layers'
            # state to agree too: it is made context below, after state_departs.)
            for f in findings:
                if f.kind == "loss_mismatch":
                    _as_context(f, "The losses agree step by step: the two compute the same values."
                                + _logits_read_by_keras(f, a, b))
                elif (f.kind == "optimizer_mismatch" and f.severity == "error"
                      and isinstance(f.evidence.get("differences (a, b)"), dict)
                      and "learning_rate_in_effect" not in f.evidence["differences (a, b)"]):
                    # Settings that differ while every aligned step agrees: only the optimizer's class
                    # (AdamW with weight_decay=0 against Adam) is the same algorithm; another value of
                    # a setting has not acted yet (a clipnorm not reached, amsgrad before a second
                    # moment shrinks, the weights' average fit() swaps in when it ends).
                    _settings_not_yet_acting(f, al.aligned_steps, a, b, al)
                elif f.kind == "weights_assigned" and dep is None and f.severity == "error":
                    _as_context(f, _no_difference("The writes", al.aligned_steps, " (they left the weights as the "
                                                  "updates did, e.g. a clip that never clipped)."),
                                same_steps=al.aligned_steps)
                elif (f.kind == "training_mode_mismatch" and dep is None and "frozen_state" not in f.evidence
                      and f.steps and min(f.steps) < int(a.step[al.ia[al.aligned_steps - 1]]) + 1):
                    # Another mode with the same loss, gradients and updates at every aligned step and
                    # no state frozen: at its settings the layer does the same in both modes (a
                    # recurrent layer without dropout), measured on the runs themselves.
                    _as_context(f, _no_difference("It", al.aligned_steps, " and no state stays frozen (at its "
                                                  "settings the layer computes the same in both modes, e.g. a "
                                                  "recurrent layer without dropout); a dropout or noise rate "
                                                  "above 0 would change that."),
                                same_steps=al.aligned_steps)
                elif f.kind == "call_argument_mismatch" and dep is None and f.severity == "error":
                    _as_context(f, _no_difference("It", al.aligned_steps, " (at these inputs the argument changes "
                                                  "nothing the loss sees)."), same_steps=al.aligned_steps)
                elif f.kind == "sample_weighting" and "dropped_in" in f.evidence:
                    # Weighted by hand in the train step (per-sample losses times the weights):
                    # the same numbers, so the weights were not dropped after all.
                    _as_context(f, "The losses agree step by step: the train step weights its samples another way.")
                elif f.kind == "sample_weighting" and dep is None and f.severity == "error":
                    # Weights in one run only that change no loss, gradient or update at any aligned
                    # step: all equal to 1, or 0 exactly where the loss masks the entries anyway (a
                    # padding mask passed as sample_weight to a loss that already honours it).
                    _as_context(f, _no_difference("The weights", al.aligned_steps, " (they are 1 wherever they "
                                                  "count: all ones, or a padding mask the loss already "
                                                  "applies)."), same_steps=al.aligned_steps)
        if not step_f and dep is None:
            st = ds.state_departs(a, b, al)
            explained = next((f for f in findings if f.severity == "error" and f.kind in (
                "layer_config_mismatch", "call_argument_mismatch", "frozen_state",
                "training_mode_mismatch")), None) or (do.explains_state(findings, st) if st else None)
            if st is not None and explained is not None:
                explained.evidence["state_departs"] = st
                if explained.kind == "training_outside_steps":
                    explained.summary += (f" The layers' non-trainable state parts from the other run's at step "
                                          f"{st['step']} ({', '.join(v['variable'] for v in st['variables'][:2])}).")
            elif st is not None:
                findings.append(ds.state_finding(a, b, al, st))
            if st is None:
                for f in findings:
                    if f.kind == "layer_config_mismatch" and f.severity == "error":
                        # Arguments that differ while every aligned step and the layers' state agree:
                        # at these settings the layers compute the same, measured on the runs.
                        _as_context(f, _no_difference(
                            "They", al.aligned_steps, ", and so does the layers' state (at these settings "
                            "the layers compute the same: a constraint that never binds, an activation "
                            "applied by a layer of its own, a penalty the other run adds to its loss by hand)."),
                            same_steps=al.aligned_steps)
        step_f = do.fold_divergence(findings, step_f)
        findings += _fold(findings, _fold_optimizer(findings, _constraint_explains(findings, step_f, a)))
        _constraint_by_hand(findings, dep, al.aligned_steps)
        _writes_make_up_updates(findings, dep, al.aligned_steps)
        masked = next((f for f in findings if f.severity == "error" and f.evidence.get("step_evidence")
                       and f.kind in ("training_mode_mismatch", "layer_config_mismatch")), None)
        if masked is not None and not any(f.kind in ("loss_scale", "gradient_scale") for f in findings):
            # Step 0's numbers went to that cause: a reduction that differs as well shows only as
            # a factor every ratio shares beneath it.
            beneath = ds.scale_beneath(a, b, al, {"training_mode_mismatch": "training mode"}.get(
                masked.kind, "layer settings"))
            if beneath is not None:
                findings.append(beneath)
        same = ds.same_updates(a, b, al)
        if same is not None:
            _same_training(findings, same)
            if accumulated:
                _same_accumulation(findings, accumulated)
        elif accumulated:
            findings = _accumulation_cause(findings, accumulated)
        if al.aligned_steps < al.n_common:
            last = int(a.step[al.ia[al.aligned_steps - 1]])
            skipped.append({"check": f"step-by-step comparison after step {last}",
                            "why": "the runs saw different batches from then on"})
        for side, run, other in (("a", a, b), ("b", b, a)):
            status = run.meta.get("status")
            if status not in (None, "finished", "running") and run.n_steps < other.n_steps:
                # The comparison covers the steps a run that stopped early recorded: say so where
                # the verdict is read, with the reason it stopped.
                error = run.meta.get("error")
                skipped.append({
                    "check": f"steps {int(run.step[-1]) + 1 if run.n_steps else 0} and later of run "
                             f"{'b' if side == 'a' else 'a'}",
                    "why": f"run {side} ('{run.name}') {status} after {run.n_steps} step(s)"
                           + (f" ({dp._first_line(error)})" if error else "")
                           + "; the verdict covers the steps both recorded"})

    held_out = any(f.kind == "validation_split_mismatch" for f in findings)
    if repeated or skipped_b or held_out:
        for f in findings:
            if f.kind == "data_mismatch":  # one run's step k is the other's batch k / per_batch (or k * stride)
                f.severity = "info"
                f.summary += (" The repeated steps explain it." if repeated else " The skipped batches explain it."
                              if skipped_b else " The validation split explains it.")
    if held_out and first is None:  # where the batches part: the first step the runs train differently
        first = min((s for f in findings if f.kind == "validation_split_mismatch" for s in f.steps), default=None)
    findings += _regularization_counted_differently(findings, a, b)
    # The first step where anything differs: a departure of the numbers, or an earlier step a
    # cause names (a learning rate that differs from step k shows in the losses at k + 1).
    steps = [s for f in findings if f.severity == "error" for s in f.steps]
    if steps:
        first = min(steps) if first is None else min(first, min(steps))
    if any(f.kind == "loss_scale" and str(f.evidence.get("matches") or "").startswith("batch/sum(sample weights)")
           for f in findings):
        # The factor is the batch's sum of sample weights: the other run weights its samples
        # too (by hand, which records no weights), it only divides by another count.
        findings = [f for f in findings if f.kind != "sample_weighting"]
    _decay_instead_of_penalty(findings, a, b, al)
    findings = _regularizer_kinds_differ(findings)
    _hand_written_loss(findings, a, b)
    _loss_class_measured(findings)
    _fingerprint_versions(findings, a, b)
    findings = _loss_left_unscaled(findings, a, b)
    findings = _scaled_gradients_applied(findings)
    findings = _dedupe(findings)
    _numerics_after_departure(findings)
    _micro_batches_same_updates(findings, a, b, al)
    _loss_never_scaled(findings, a, b)
    findings.sort(key=lambda f: f.sort_key())
    verdict = _verdict(findings, structure_ok, al)
    if not a.n_steps or not b.n_steps:
        # A run without a recorded step trained nothing the comparator saw: what its configuration
        # says (findings kept) is no verdict on the training.
        verdict = "not_comparable"
    if verdict == "equivalent":
        first = None
    found = {f.kind for f in findings}  # a check that found something after all is not skipped
    skipped = [s for s in skipped if s["check"] not in found]
    return Report(
        verdict=verdict, a=a.describe(), b=b.describe(), first_divergent_step=first,
        aligned_steps=al.aligned_steps if structure_ok else 0, findings=findings, skipped=skipped,
        noise=al.noise.to_dict(),
    )


def check_run(run: RunData) -> Report:
    """Single-run findings (``gradtrace check``): the same engine, without a second run."""
    findings = dr.single_run_findings(run) + dw.wiring_findings(run)
    zero = dw.zero_gradient_run(run)
    if zero:
        findings.append(zero)
    outside = do.outside_steps_run(run)
    if outside:
        findings.append(outside)
    findings += [f for f in (dp.weights_dropped_run(run), dr.unfreeze_ignored(run), dr.weights_reset(run),
                             do.untrained_predictor(run), None if zero else dw.one_signed_run(run)) if f is not None]
    findings.sort(key=lambda f: f.sort_key())
    bad = any(f.severity in ("error", "warning") for f in findings)
    steps = [s for f in findings if f.severity != "info" for s in f.steps]
    verdict = "diverged" if bad else "equivalent"
    found = {f.kind for f in findings}  # a kind a single run can show too (regularization counted twice)
    skipped = [{"check": k, "why": "needs a second run"} for k in _needs_alignment() if k not in found]
    if not run.n_steps:  # nothing to judge: not a clean bill of health
        verdict = "not_comparable"
        skipped.insert(0, {"check": "every single-run check",
                           "why": f"the run recorded no optimizer step ({_no_steps_why(run)})"})
    elif run.meta.get("status") == "failed" and not bad:  # clean as far as it went, which is not the end
        verdict = "not_comparable"
        error = str(run.meta.get("error") or "an exception").splitlines()[0][:200]
        skipped.insert(0, {"check": "the steps after the failure",
                           "why": f"the run failed after {run.n_steps} step(s) ({error}): the checks saw only "
                                  "the steps before it. Fix the error and trace the run again."})
    return Report(
        verdict=verdict, a=run.describe(), b=None,
        first_divergent_step=min(steps) if steps else None, aligned_steps=0, findings=findings,
        skipped=skipped,
        noise={},
    )


def _structure_finding(a: RunData, b: RunData, lone_a: list[int], lone_b: list[int],
                       na: int, nb: int) -> Finding:
    def desc(run: RunData, vs: list[int]) -> list[str]:
        return [f"{run.var_name(v)} {run.var_info(v).get('shape')}" for v in vs[:4]]

    da, db = desc(a, lone_a), desc(b, lone_b)
    where = "; ".join(x for x in (f"only in run a: {', '.join(da)}" if da else "",
                                 f"only in run b: {', '.join(db)}" if db else "") if x)
    return Finding(
        "structure_mismatch",
        f"the models differ in structure ({na} vs {nb} trainable variables)"
        + (f": {where}." if where else ": no variable of one model has a counterpart in the other."),
        variables=[a.var_name(v) for v in lone_a] + [b.var_name(v) for v in lone_b],
        evidence={"only_in_a": da, "only_in_b": db, "trainable_a": na, "trainable_b": nb}, explains=0.5)


def _needs_alignment() -> list[str]:
    return [k.kind for k in CATALOGUE.values() if k.needs_alignment]


def _no_steps_why(r: RunData) -> str:
    """Why a run that ended normally has no step: the tracer's own warning where it gave one
    (it names what it does not see: another kind of optimizer, a hand-written update, a
    function traced before ``trace``), else a pointer to the run's warnings. A fit() call over a
    model none of whose variables is trainable (``model.trainable = False`` before compile(),
    meant for a base) steps nothing: said first."""
    frozen = bool(r.variables) and all(v.get("trainable") is False for v in r.variables)
    if r.fit_calls() and frozen:
        return (f"the run called fit() {len(r.fit_calls())} time(s), but none of the model's {len(r.variables)} "
                "variables is trainable, so there was nothing to step: `model.trainable = False` (or every layer "
                "frozen) before compile(). Set `trainable = False` on the base only, then compile() again")
    for w in r.meta.get("warnings") or []:
        if isinstance(w, str) and w.startswith(NO_STEPS_WARNING):
            return "the tracer said: " + w.removeprefix(NO_STEPS_WARNING)
    return "see its warnings"


def _why_unaligned(al: Alignment, a: RunData, b: RunData) -> str:
    if al.n_common == 0:
        empty = [(k, r) for k, r in (("a", a), ("b", b)) if not r.n_steps]
        if not empty:
            return "the runs have no step number in common"
        parts = []
        for k, r in empty:
            status, error = r.meta.get("status"), r.meta.get("error")
            how = (f"it {status} before its first step ({error})" if error and status not in (None, "finished")
                   else f"its status is '{status}'" if status not in (None, "finished") else _no_steps_why(r))
            parts.append(f"run {k} ('{r.name}') recorded no optimizer step: {how}")
        return "; ".join(parts)
    if al.init_same is False:
        return "the runs started from different weights (init fingerprints differ)"
    if al.input_map is not None:
        return "the runs' inputs differ by a constant map from step 0 (see input_scale)"
    if al.input_permuted is not None:
        return "the runs' inputs hold the same values in another order (see input_order)"
    if al.label_map is not None:
        return "the runs' labels differ by a constant map from step 0, the inputs equal (see label_scale)"
    if al.input_transformed is not None and not al.input_transformed.get("undone_by_model"):
        return "the runs' inputs are preprocessed differently from step 0, the labels equal (see input_scale)"
    if not al.data_known:
        no_loss = [r.name for r in (a, b) if not np.isfinite(r.loss).any()]
        if no_loss:
            return (f"no batch fingerprints were recorded in one run and run '{no_loss[0]}' recorded no loss "
                    "(no tape.gradient call was linked to its optimizer steps, e.g. the tape and "
                    "apply_gradients run in different tf.functions), so the batches cannot be matched")
        return ("no batch fingerprints were recorded in one run and the step-0 losses differ, so the "
                "batches cannot be matched")
    return "the runs saw different batches from step 0"


def _divergence(a: RunData, b: RunData, dep: dict, al: Alignment) -> Finding:
    var = dep.get("variable")
    if (dep.get("what") == "update" and dep["loss_rel_diff"] <= dep["tolerance"]
            and dep["grad_norm_rel_diff"] <= dep["tolerance"]):
        return Finding(
            "optimizer_mismatch",
            f"at step {dep['step']} both runs have the same loss and gradients but apply different updates "
            f"(first to {var}): the optimizers act differently (momentum, learning-rate schedule, "
            "clipping, weight decay, or optimizer state).",
            steps=[dep["step"]], variables=[var] if var else [], evidence=dep, explains=0.9)
    agree = f"agree up to step {dep['step'] - 1} and " if dep["step"] > int(a.step[al.ia[0]]) else ""
    what = {"gradient": "the gradient of", "update": "the update of"}.get(dep.get("what", ""), "")
    if var:
        where = f", first in {what} {var}"
    elif dep.get("what") == "gradient_norm":
        where = " in the global gradient norm (the losses agree)"
    else:
        where = " (in the loss)"
    rng = _random_stream_departs(a, b, dep, al)
    if rng is not None:
        return rng
    if (dep["step"] > int(a.step[al.ia[0]]) and dep.get("what") in ("gradient", "gradient_norm")
            and dep.get("loss_rel_diff", 1.0) <= dep["tolerance"]):
        more = _step_updates_more(a, b, int(dep["step"]), al)
        if more is not None:
            return more
        # Every earlier update agreed: the same weights and batch give the same loss, so the same
        # loss's gradient differs only if one run applies something else than that gradient.
        return Finding(
            "divergence",
            f"the runs agree up to step {dep['step'] - 1}; at step {dep['step']} they compute the same loss "
            f"({dep.get('loss_a', float('nan')):.6g}) on the same batch from the same weights, yet the gradients "
            f"applied differ{where.replace(', first in', ' (first in') + ')' if var else ''}: one run applies something "
            "other than the gradient of that step's loss (a gradient accumulator not reset after an apply, "
            "the gradients of an earlier step, a clip or a factor between tape.gradient and the apply).",
            steps=[dep["step"]], variables=[var] if var else [], evidence={**dep, "same_loss_other_gradient": True},
            explains=0.95,
            fix="Apply the gradients of the step's own loss: reset accumulators after each apply "
                "(`acc.assign(tf.zeros_like(acc))`), and compare what each run does to the gradients between "
                "tape.gradient and apply_gradients.")
    return Finding(
        "divergence",
        f"the runs {agree}depart at step {dep['step']}{where}: "
        f"relative differences beyond the measured float noise (tolerance {dep['tolerance']:.2g}).",
        steps=[dep["step"]], variables=[var] if var else [], evidence=dep, explains=0.5)


def _step_updates_more(a: RunData, b: RunData, step: int, al: Alignment) -> Finding | None:
    """At ``step`` (the same loss, batch and weights in both runs) one run's optimizer updates
    paired variables the other run's step leaves alone, and updates every variable the other's
    does: that step hands its optimizer more variables (a GAN's generator step differentiating and
    applying the discriminator's variables too, which the discriminator's own steps then also move)."""
    ra, rb = a.rows(np.array([step])), b.rows(np.array([step]))
    if ra[0] < 0 or rb[0] < 0:
        return None
    ua, ub = a.applied[ra[0], al.ja] == 1, b.applied[rb[0], al.jb] == 1
    if bool((ua == ub).all()) or not (ua.any() and ub.any()):
        return None
    if bool((ua & ~ub).any()) and bool((ub & ~ua).any()):
        return None  # each updates some the other does not: not one run's step taking more
    side, big, run, jx = ("a", ua, a, al.ja) if bool((ua & ~ub).any()) else ("b", ub, b, al.jb)
    small = ub if side == "a" else ua
    names = [run.var_name(int(jx[j])) for j in np.flatnonzero(big & ~small)]
    other = "b" if side == "a" else "a"
    return Finding(
        "divergence",
        f"the runs agree up to step {step - 1}; at step {step} they compute the same loss on the same batch from "
        f"the same weights, yet run {side}'s step updates {int(big.sum())} variables where run {other}'s updates "
        f"{int(small.sum())}: it also moves {', '.join(names[:6])}{', ...' if len(names) > 6 else ''}, which run "
        f"{other}'s step leaves alone (an optimizer handed another model's variables too, such as a generator's "
        "step that also applies its loss's gradients to the discriminator).",
        steps=[step], variables=names[:16],
        evidence={"step": step, "run": side, "updated": int(big.sum()), "updated_other": int(small.sum()),
                  "extra_variables": names},
        fix=f"In run {side}, differentiate and apply that step's loss with respect to the variables it should train "
            "only (a generator step: `generator.trainable_variables`), as run " + other + " does.",
        explains=0.95)


def _random_stream_departs(a: RunData, b: RunData, dep: dict, al: Alignment) -> Finding | None:
    """A later step's loss differs while every earlier step agreed, in models with random layers.

    Every update before step k agreed, so at step k both runs hold the same weights and see
    the same batch: a different loss means the forward pass computed something else, and in
    models whose random layers (Dropout, noise) advance a generator every step the likeliest
    cause is that one run draws its random numbers differently (an extra forward pass in
    training mode, e.g. to compute a metric). Statistically the same training, no longer
    comparable step by step.
    """
    first = int(a.step[al.ia[0]])
    if dep["step"] <= first or dep.get("loss_rel_diff", 0.0) <= dep.get("tolerance", 0.0):
        return None
    # layers that drew random numbers during the steps (Keras 3's generators, tf-keras's by class)
    ra, rb = _random_layer_classes(a, drew=True), _random_layer_classes(b, drew=True)
    if not ra or not rb or al.stochastic:
        return None
    layers = ", ".join(sorted(set(ra) | set(rb)))
    evidence = {**dep, "random_layers": {"a": ra, "b": rb}}
    retrace = _new_batch_size_at(a, b, int(dep["step"]))
    if retrace is not None:
        evidence["batch_size_changes"] = retrace
    state = ""
    st = ds.state_departs(a, b, al)
    if st is not None and st["step"] <= dep["step"]:
        # Non-random state (BatchNormalization's moving statistics) that moves by other amounts
        # by the time the losses part: an extra forward pass in training mode updates it too.
        evidence["state_departs"] = st
        names = ", ".join(v["variable"] for v in st["variables"][:3])
        state = (f" Non-random state changes by other amounts from step {st['step']} too ({names}): an extra "
                 "forward pass in training mode also moves BatchNormalization's moving statistics, which "
                 "evaluate(), predict() and validation use.")
    return Finding(
        "divergence", severity="warning",
        summary=(f"the runs agree (within float noise) up to step {dep['step'] - 1} and their losses part at step {dep['step']} "
                 f"({dep['loss_a']:.6g} vs {dep['loss_b']:.6g}), on the same weights (every earlier update "
                 "agreed) and the same batch: the forward pass computed something else. Both models have random "
                 f"layers ({layers}) whose generator advances every step; one run draws its random numbers "
                 "differently, most often an extra forward pass in training mode per step (`model(x, "
                 "training=True)` called again to compute a metric) or another random op on the same generator. "
                 "From then on the masks differ: statistically the same training, not comparable step by step."
                 + (f" It is the first step with a batch of {retrace['to']} examples after batches of {retrace['from']}: a "
                    "`tf.function` is traced again for the new shape, and the new graph's random ops draw other numbers "
                    "(tf-keras seeds them per graph), while a step traced once for any batch size (fit()'s) keeps "
                    "drawing from the same ones." if retrace is not None else "")
                 + state),
        steps=[dep["step"]], variables=[dep["variable"]] if dep.get("variable") else [],
        evidence=evidence,
        fix=("Call the model once per step in training mode and compute metrics from that output (or call it "
             "with `training=False` for metrics); fit() draws each random layer's numbers once per step."),
        explains=0.6)


def _new_batch_size_at(a: RunData, b: RunData, step: int) -> dict[str, int] | None:
    """``{"from": n, "to": m}`` when ``step`` is the first step of both runs with a batch of another
    size than the step before (the last, partial batch of an epoch), else None."""
    got = set()
    for run in (a, b):
        i = int(np.searchsorted(run.step, step))
        if i <= 0 or i >= run.n_steps or int(run.step[i]) != step:
            return None
        prev, now = run.batch_size[i - 1], run.batch_size[i]
        if not (np.isfinite(prev) and np.isfinite(now)) or prev == now or np.any(run.batch_size[:i] == now):
            return None
        got.add((int(prev), int(now)))
    return {"from": got.pop()[0], "to": int(b.batch_size[int(np.searchsorted(b.step, step))])} if len(got) == 1 else None


def _fold_frozen_layer(a: RunData, b: RunData, al: Alignment, fz: Finding,
                       set_findings: list[Finding]) -> list[Finding]:
    """A layer frozen with ``trainable = False`` explains both its fixed statistics and its
    weights that are no longer trained: one finding, the weights as evidence."""
    fixed = "b" if fz.evidence["state"][0]["changes_in"] == "a" else "a"
    run, other = (a, b) if fixed == "a" else (b, a)
    layers = set(fz.layers)
    flipped = []
    for va, vb in al.var_pairs:
        vf, vo = (va, vb) if fixed == "a" else (vb, va)
        info = run.var_info(vf)
        if (info.get("layer") in layers and info.get("trainable") is False
                and other.var_info(vo).get("trainable", True)):
            flipped.append(run.var_name(vf))
    if not flipped:
        return set_findings
    fz.summary = (f"layer(s) {', '.join(sorted(layers))} are frozen (`trainable = False`) in run {fixed} "
                  f"('{run.name}') only: their weights ({', '.join(flipped[:4])}) are not trained and, in "
                  "Keras 3, a frozen BatchNormalization runs in inference mode, so its moving statistics "
                  "stay fixed.")
    fz.fix = ("Freeze the same layers in both runs (`layer.trainable = False` before compile/training), or "
              "unfreeze it in this run.")
    fz.evidence["not_trainable_in_" + fixed] = flipped
    fz.explains = 1.0
    fz.variables = flipped + fz.variables
    out = []
    for f in set_findings:
        if f.kind in ("not_applied", "missing_gradient", "trainable_mismatch") and set(f.variables) <= set(flipped):
            fz.evidence.setdefault("also", []).append(f.summary)
            continue
        out.append(f)
    return out


def _as_context(f: Finding, note: str, **evidence: object) -> None:
    """A cause the aligned steps show had no effect (every loss, gradient and update agrees):
    kept as context (severity info), the measurement said in its summary and evidence."""
    f.severity = "info"
    f.summary += " " + note
    f.evidence.update(evidence)


def _logits_read_by_keras(f: Finding, a: RunData, b: RunData) -> str:
    """Why a loss with ``from_logits=True`` in one run only agrees with the other step by step.

    Keras 3's cross-entropies take the logits from under a softmax/sigmoid output whatever
    ``from_logits`` says (warning that the output "does not represent logits"): the run with
    ``from_logits=True`` on such a model computes the same loss. The setting is still wrong,
    and the fix says which run to change; tf-keras would apply the activation twice.
    """
    fl = (f.evidence.get("differences (a, b)") or {}).get("from_logits")
    if not fl or True not in fl:
        return ""
    side, run = ("a", a) if fl[0] is True else ("b", b)
    other = "b" if side == "a" else "a"
    info = dr.first_loss_info(run) or {}
    call = next((c for c in info.get("calls") or [info] if isinstance(c, dict)), {})
    if call.get("pred_activation") == "linear" or call.get("pred_probabilities") is False:
        # run `side` hands its loss logits: both forms are right (logits with from_logits=True
        # against the activation's output with from_logits=False)
        f.evidence["logits_against_probabilities"] = side
        f.fix = ("Nothing to fix: either form is right. Keep the logits form (`from_logits=True` on a last layer "
                 "without activation) for numerical stability, and apply the activation only for predictions.")
        return (f" Both are right: run {side}'s model outputs logits (its last layer has no activation) and its "
                f"loss applies the activation; run {other}'s model applies it and its loss takes the probabilities, "
                "from under which Keras takes the logits back.")
    if run.meta.get("keras_flavour") != "keras3":
        return ""
    f.evidence["from_logits_on_activation"] = side
    f.fix = (f"Set `from_logits=False` in run {side}: its model ends in a softmax/sigmoid, so its output is "
             "probabilities. Keras 3 computes the loss from the logits under that activation anyway (and warns "
             "that the output does not represent logits); tf-keras, or a model whose activation is applied "
             "outside a Keras layer, would apply the activation twice.")
    return (f" Run {side} passes from_logits=True on the output of a softmax/sigmoid layer: Keras 3 takes the "
            "logits from under that activation whatever from_logits says, so the setting has no effect here.")


# Optimizer settings that act only when another one is on: their values differ to no effect when
# it is off in both runs.
_ACTS_ONLY_WITH = {"ema_momentum": "use_ema", "ema_overwrite_frequency": "use_ema"}

# When a setting that changed none of the compared steps acts (Keras optimizers).
_ACTS_WHEN = {
    "use_ema": "with use_ema=True the optimizer keeps a moving average of the weights, and fit() writes it into "
               "the model when it ends (`optimizer.finalize_variable_values`; every ema_overwrite_frequency "
               "steps if set): every step agrees, the trained models do not (a loop keeps the raw weights "
               "unless it calls `optimizer.finalize_variable_values(model.trainable_variables)`)",
    "amsgrad": "amsgrad divides by the running maximum of the second-moment estimate: the updates part from "
               "the first step at which an estimate shrinks",
    "clipnorm": "clipping acts once a gradient's norm exceeds it",
    "global_clipnorm": "clipping acts once the gradients' global norm exceeds it",
    "clipvalue": "clipping acts once a gradient entry exceeds it",
}
# Optimizers whose update has the same norm whatever its direction (the sign of each entry, times
# the learning rate): another setting flips signs, which the recorded update norms do not show.
_SIGN_UPDATES = ("Lion",)


def _settings_not_yet_acting(f: Finding, steps: int, a: RunData, b: RunData, al: Alignment) -> None:
    """An optimizer_mismatch whose aligned steps all agree: context when only the class differs
    (or settings that act only with a switch off in both runs); otherwise a warning naming what
    has not acted yet."""
    diffs = f.evidence["differences (a, b)"]

    def off(x: object) -> bool:
        return x is None or x is False or x == 0

    pairs = dp.optimizer_pairs(a, b, al)
    settings = [dp._opt_settings(o) for o in pairs[0]] if len(pairs) == 1 else None
    live = {}
    for k, v in diffs.items():
        name = k.rsplit(": ", 1)[-1]  # several optimizers: "optimizer 2 (SGD, 4 variables): class"
        switch = _ACTS_ONLY_WITH.get(name)
        if name == "class" or (switch is not None and settings is not None
                            and off(settings[0].get(switch)) and off(settings[1].get(switch))):
            continue
        live[k] = v
    if not live:
        _as_context(f, _no_difference("They", steps, "."))
        if any(k.startswith("hand_written") for k in f.evidence):
            f.fix = "Nothing to change: the hand-written update made the other optimizer's updates at every aligned step."
        return
    by_hand = _clipped_by_hand(live, a, b)
    if by_hand:
        _as_context(f, f"{by_hand} Neither clip acted on these steps: the losses, gradients and updates agree at "
                    f"every one of the {steps} aligned steps.")
        f.evidence["clipped_by_hand"] = by_hand
        f.fix = ("Nothing to change if both bounds are the same (the hand-written bound is not recorded); otherwise "
                 "clip at the same value in both runs.")
        return
    f.severity = "warning"
    f.explains = 0.6
    names = [k.rsplit(": ", 1)[-1] for k in live]
    when = [_ACTS_WHEN[n] for n in dict.fromkeys(names) if n in _ACTS_WHEN]
    classes = {str(o.get("class")) for p in pairs for o in p}
    if classes & set(_SIGN_UPDATES):
        when.append(f"{'/'.join(sorted(classes & set(_SIGN_UPDATES)))} applies the sign of each update entry "
                    "times the learning rate, so every update has the same norm whatever its direction: a "
                    "setting that flips signs shows only in later losses")
    f.summary += (f" The losses, gradients and updates agree at every one of the {steps} aligned steps, yet "
                  f"{', '.join(live)} differ{'s' if len(live) == 1 else ''}: a setting that has not acted on these "
                  "steps"
                  + (f" ({'; '.join(when)})." if when else ", and may act later (the runs are not the same "
                     "training)."))
    f.evidence["not_acted_yet"] = list(live)
    hand = {"global_clipnorm": "tf.clip_by_global_norm(grads, c)", "clipnorm": "tf.clip_by_norm(g, c)",
            "clipvalue": "tf.clip_by_value(g, -c, c)"}
    if set(names) <= set(hand):
        said = " or ".join(f"`{hand[n]}`" for n in dict.fromkeys(names))
        f.fix = ((f.fix or "").rstrip(".") + f". If the run without it clips by hand before the apply ({said} with the "
                 "same c), the runs are the same training: nothing to change (a clip that has not acted leaves "
                 "the steps alike, and one that acts is recognised as clipping by hand).")


def _draws_finding(d: dict[str, Any]) -> Finding:
    """The random generators advanced by other amounts at an aligned step (``ds.rng_draws_differ``)."""
    v = d["variables"][0]
    more = "b" if v["advance_b"] > v["advance_a"] else "a"
    span = "" if d["span"] == 1 else f" (over the {d['span']} steps up to it)"
    layers = sorted({str(x["layer"]) for x in d["variables"] if x.get("layer")})
    return Finding(
        "random_draws",
        f"at step {d['step']} the random generator{'s' if len(d['variables']) > 1 else ''} of the runs' random "
        f"layers advanced by other amounts{span}: {v['variable']} by {v['advance_a']:g} in run a, "
        f"{v['advance_b']:g} in run b. Run {more} draws more random numbers per step: it calls the model (or a "
        "Dropout, noise or augmentation layer) more often in training mode, e.g. a second forward pass for a "
        "metric, so from this step on its random layers apply other masks than the other run's, and the losses "
        "and gradients differ though the code computing them agrees.",
        steps=[d["step"]], layers=layers[:8], variables=[x["variable"] for x in d["variables"]],
        evidence={"rng_advance": d["variables"], "step": d["step"], "more_draws_in": more}, explains=1.0,
        fix=(f"Call the model once per step in training mode in run {more}: compute metrics from the output of "
             "the forward pass that makes the loss, or call the model with `training=False` for them (no draws)."))


_CLIP_BY_HAND = {"global_clipnorm": "clip_by_global_norm", "clipnorm": "clip_by_norm", "clipvalue": "clip_by_value"}


def _clipped_by_hand(live: dict[str, Any], a: RunData, b: RunData) -> str | None:
    """Optimizer clip settings set in one run only where the other run's step graph clips its
    gradients by hand with TensorFlow's matching function (``RunInfo.extra["hand_clipping"]``):
    the sentence that says so, or None."""
    said = []
    for k, (va, vb) in live.items():
        name = k.rsplit(": ", 1)[-1]
        fn = _CLIP_BY_HAND.get(name)
        off = [side for side, v in (("a", va), ("b", vb)) if v is None or v is False or v == 0]
        if fn is None or len(off) != 1:
            return None
        run = a if off[0] == "a" else b
        if fn not in ((run.meta.get("extra") or {}).get("hand_clipping") or []):
            return None
        said.append(f"run {off[0]} clips its gradients by hand (`tf.{fn}` before the apply) where the other run's "
                    f"optimizer has {name}={vb if off[0] == 'a' else va}")
    return ("; ".join(said) + ".") if said else None


def _no_difference(subject: str, steps: int, tail: str) -> str:
    return (f"{subject} made no difference here: the losses, gradients and updates agree at every one of the "
            f"{steps} aligned steps{tail}")


def _fold(existing: list[Finding], step_f: list[Finding]) -> list[Finding]:
    """Attach step-level symptoms to a cause already found; keep the rest."""
    causes = [f for f in existing if f.kind in _CAUSES and f.severity == "error"]
    out: list[Finding] = []
    for f in step_f:
        # A cause seen first at step k (NaN from step 8) does not explain a symptom before it.
        cause = next((c for c in causes if not c.steps or not f.steps or min(f.steps) >= min(c.steps)), None)
        if f.kind in _SYMPTOMS and cause is not None:
            cause.evidence.setdefault("step_evidence", []).append({"kind": f.kind, "summary": f.summary,
                                                                   **f.evidence})
            cause.steps = sorted(set(cause.steps) | set(f.steps))
            cause.variables = cause.variables or f.variables
            cause.explains = max(cause.explains, 1.0)
            continue
        if f.kind in ("loss_scale", "gradient_scale"):
            for g in existing:
                if g.kind == "non_scalar_loss":
                    f.evidence["non_scalar_loss"] = g.summary
                    g.severity = "info"
        out.append(f)
    return out


def _same_training(findings: list[Finding], same: dict) -> None:
    """Equal losses and updates at every compared step with unequal gradients: the gradient
    and optimizer-setting differences compensate each other. Context, not causes."""
    note = (f" The losses and the updates agree at every compared step ({same['steps_compared']} "
            f"with per-variable numbers; updates within {same['max_update_rel_diff']:.2g}): the runs "
            "train identically, their gradients are recorded at different points (e.g. clipped or "
            "scaled by hand before apply_gradients in one run, by the optimizer in the other).")
    if same.get("losses_differ"):
        note = (f" Yet every gradient and every update agrees at every compared step ({same['steps_compared']} "
                f"with per-variable numbers; gradients within {same['max_grad_norm_rel_diff']:.2g}, updates within "
                f"{same['max_update_rel_diff']:.2g}): the runs train identically and the recorded losses are "
                "different quantities (e.g. gradients of several losses taken one by one and summed, which records "
                "the last loss differentiated, or a loss logged with a term that has no gradient).")
    elif "loss_factor" in same:
        note = (f" Run b's loss is x{same['loss_factor']:.6g} run a's at every aligned step, yet the updates "
                f"agree at every compared step ({same['steps_compared']} with per-variable numbers; within "
                f"{same['max_update_rel_diff']:.2g}): another setting compensates the factor (e.g. the learning "
                "rate divided by it), so the runs train identically and only the reported loss values differ.")
    for f in findings:
        if f.kind == "loss_mismatch" and same.get("losses_differ") and f.severity != "info":
            # Two loss classes whose values differ while every gradient and update agrees at
            # every compared step: they differ by a term the weights do not change (KL
            # divergence is cross-entropy minus the targets' entropy), so they train alike.
            _as_context(f, f"Yet every gradient and every update agrees at every compared step "
                           f"({same['steps_compared']} with per-variable numbers; gradients within "
                           f"{same['max_grad_norm_rel_diff']:.2g}, updates within {same['max_update_rel_diff']:.2g}): "
                           "the two losses differ by a term that does not depend on the weights (e.g. KL divergence "
                           "is cross-entropy minus the targets' entropy), so the runs train identically and only "
                           "the reported loss values differ.")
            f.evidence["same_updates"] = same
            continue
        if f.kind == "gradient_scale" and str(f.evidence.get("matches") or "").startswith(ds.NOT_UNSCALED):
            # A loss scale left in the gradients: an optimizer that normalises the gradient's
            # scale (Adam) hides it until the dynamic scale changes.
            f.severity = "warning"
            f.summary += (f" The updates agree so far ({same['steps_compared']} steps compared): the optimizer "
                          "normalises the gradients' scale. The dynamic loss scale halves on every overflow "
                          "and doubles after a run of finite steps; from then on the optimizer's moment "
                          "estimates mix gradients of different scales, and an optimizer that does not "
                          "normalise (SGD) takes steps that many times too large.")
            f.fix = ("Unscale the gradients before applying them: tf-keras `grads = "
                     "opt.get_unscaled_gradients(tape.gradient(opt.get_scaled_loss(loss), vars))`; Keras 3 "
                     "`opt.apply(grads)` of a LossScaleOptimizer on the gradients of `opt.scale_loss(loss)` "
                     "unscales them itself.")
            f.evidence["same_updates"] = same
            continue
        kinds = ("gradient_scale", "gradient_mismatch", "divergence", "optimizer_mismatch") + (
            ("loss_scale",) if "loss_factor" in same or same.get("losses_differ") else ())
        if f.kind in kinds and f.severity != "info":
            f.severity = "info"
            f.summary += note
            f.evidence["same_updates"] = same


def _constraint_explains(existing: list[Finding], step_f: list[Finding], a: RunData) -> list[Finding]:
    """Updates that differ on some variables only, under equal optimizer configurations, where
    those variables' layers have a weight constraint in one run only (or another one): Keras
    applies a constraint right after the optimizer's update, so the recorded update holds the
    projection. The layer's arguments are the cause; the step is their evidence."""
    layer = next((f for f in existing if f.kind == "layer_config_mismatch" and f.severity == "error"), None)
    if layer is None:
        return step_f
    constrained = {str(d.get("layer_a")) for d in layer.evidence.get("differences") or []
                   if "constraint" in str(d.get("argument", ""))}
    if not constrained:
        return step_f
    owner = {a.var_name(int(v["index"])): str(v.get("layer")) for v in a.variables}
    out = []
    for f in step_f:
        if (f.kind == "optimizer_mismatch" and "unrecorded_setting" in f.evidence and f.variables
                and all(owner.get(v) in constrained for v in f.variables)):
            layer.evidence.setdefault("step_evidence", []).append({"summary": f.summary, **f.evidence})
            layer.steps = sorted(set(layer.steps) | set(f.steps))
            layer.variables = sorted(set(layer.variables) | set(f.variables))
            layer.summary += (" A constraint projects the weights right after each optimizer update: at step "
                              f"{min(f.steps) if f.steps else 0} the same gradients give other updates of "
                              f"{', '.join(f.variables[:4])}.")
            continue
        out.append(f)
    return out


def _init_written(findings: list[Finding], a: RunData, b: RunData, al: Alignment) -> None:
    """The initial-weight fingerprints are taken at a run's first step: a script that writes
    trained weights at the top of every step (``weights_assigned`` first before step 0) has
    changed them by then. An ``init_mismatch`` whose differing weights are all among those
    written is the writes' doing: context of them, not a second cause."""
    init = next((f for f in findings if f.kind == "init_mismatch" and f.severity != "info"), None)
    hand = next((f for f in findings if f.kind == "weights_assigned" and f.severity == "error"), None)
    d = al.init_detail
    if init is None or hand is None or not d or d.get("state_differs") or not d.get("weights_differ"):
        return
    to_a = {j: i for i, j in al.var_pairs}
    written: set[str] = set()
    sides = []
    for side, run in (("a", a), ("b", b)):
        w = dp.assign_entry(run)
        if w is None or w.get("step") != 0:
            continue
        sides.append(side)
        for i in w.get("variables") or []:
            ia = int(i) if side == "a" else to_a.get(int(i))
            if ia is not None:
                written.add(a.var_name(ia))
    if not written or d["weights_differ"] > len(written) or not set(d["weights_differ_first"]) <= written:
        return
    who = f"run {sides[0]}'s script writes" if len(sides) == 1 else "both runs' scripts write"
    _as_context(init, f"They differ only where {who} them before step 0 (weights_assigned); the fingerprints "
                "are taken at the first step, after those writes.")
    hand.evidence["start_differs_where_written"] = d["weights_differ"]


def _both_write(findings: list[Finding], step_f: list[Finding], dep: dict | None, steps: int | None) -> None:
    """Both runs write the same trained variables by hand (``weights_assigned`` with
    ``evidence["both_runs"]`` and no variable written in one run only): the writes are a cause
    only where the runs part after them and nothing else was found. Every aligned step agreeing,
    a departure before the first write, or another cause makes them context; so do steps not
    compared at all (``steps`` None)."""
    f = next((g for g in findings if g.kind == "weights_assigned" and g.severity == "error"
              and g.evidence.get("both_runs") and not g.evidence.get("only_in_a") and not g.evidence.get("only_in_b")),
             None)
    if f is None:
        return
    if steps is None:
        _as_context(f, "The steps were not compared one by one, so whether the writes differ is not known.")
        return
    if dep is None:
        _as_context(f, f"The writes leave the same weights in both runs: the losses, gradients and updates agree at "
                    f"every one of the {steps} aligned steps.", same_steps=steps)
        return
    first = min(f.steps) if f.steps else None
    if first is not None and int(dep["step"]) < first:
        _as_context(f, f"The runs part at step {dep['step']}, before the writes.")
        return
    other = [g.kind for g in (*findings, *step_f) if g is not f and g.severity == "error"
             and g.kind in (*_CAUSES, "loss_scale", "gradient_scale", "data_mismatch", "init_mismatch")]
    if other:
        _as_context(f, f"Other causes were found ({', '.join(sorted(set(other)))}).")


# Aligned steps whose losses and gradients must all agree before writes by hand are taken to make
# up another run's update (see _writes_make_up_updates): one step would not show a weight gone astray.
_MAKE_UP_STEPS = 4


def _writes_make_up_updates(findings: list[Finding], dep: dict | None, steps: int) -> None:
    """One run writes the trained weights by hand in its steps (``weights_assigned``: a weight
    decay written out beside ``Adam``) where the other's optimizer does that inside its update
    (``AdamW``'s ``weight_decay``): the recorded updates leave the writes out, so they differ
    (an ``optimizer_mismatch``), while the losses and gradients agree at every aligned step, which
    they would not for long if the weights each step starts from did not. Both become context."""
    if dep is None or dep.get("loss_departs", True) or steps < _MAKE_UP_STEPS:
        return
    hand = next((f for f in findings if f.kind == "weights_assigned" and f.severity == "error"
                 and f.evidence.get("assigned_run") and not f.evidence.get("both_runs")), None)
    opt = next((f for f in findings if f.kind == "optimizer_mismatch" and f.severity == "error"), None)
    if hand is None or opt is None:
        return
    side = hand.evidence["assigned_run"]
    other = "b" if side == "a" else "a"
    diffs = opt.evidence.get("differences (a, b)") or {}
    named = ", ".join(f"{k}: {v[0]!r} vs {v[1]!r}" for k, v in list(diffs.items())[:4] if isinstance(v, list))
    note = (f"The losses and gradients agree at every one of the {steps} aligned steps, and only the recorded "
            f"updates differ: run {side}'s writes in its steps do what run {other}'s optimizer does inside its update"
            + (f" ({named})" if named else "") + ". The recorded update leaves a write by hand out, so the updates "
            "differ while the weights every step starts from agree.")
    _as_context(hand, note, same_steps=steps)
    _as_context(opt, note, same_steps=steps)
    opt.fix = hand.fix = "Nothing to change while the losses and gradients agree; the runs train the same weights."


def _constraint_by_hand(findings: list[Finding], dep: dict | None, steps: int) -> None:
    """One run projects its weights by hand after each update (``weights_assigned``) where the
    other's layers carry a weight constraint (a ``layer_config_mismatch`` of constraints only, in
    the other run): Keras applies the constraint inside the optimizer's update, the script's
    assign comes after the update is recorded, so the recorded updates differ even when the
    weights every step starts from agree. With the losses and gradients equal at every aligned
    step (``dep`` none, or the updates alone departing) the two are the same training: both
    become context."""
    if dep is not None and dep.get("loss_departs", True):
        return
    hand = next((f for f in findings if f.kind == "weights_assigned" and f.severity == "error"), None)
    layer = next((f for f in findings if f.kind == "layer_config_mismatch" and f.severity == "error"), None)
    if hand is None or layer is None:
        return
    side = hand.evidence.get("assigned_run")
    diffs = layer.evidence.get("differences") or []
    if not diffs or not all("constraint" in str(d.get("argument", "")) and d.get(side) is None
                            and d.get("b" if side == "a" else "a") is not None for d in diffs):
        return
    other = "b" if side == "a" else "a"
    named = ", ".join(f"{d.get('layer_' + other)}.{d.get('argument')}" for d in diffs[:4])
    note = (f"The losses and gradients agree at every one of the {steps} aligned steps: run {side}'s writes "
            f"project the weights as run {other}'s constraints ({named}) do. Keras applies a constraint inside "
            "the optimizer's update and the script's assign follows the recorded update, so the recorded "
            "updates differ while the weights every step starts from agree.")
    _as_context(hand, note, same_steps=steps)
    _as_context(layer, note, same_steps=steps)


def _fold_optimizer(existing: list[Finding], step_f: list[Finding]) -> list[Finding]:
    """Different updates from equal gradients are the symptom of a configuration difference
    already found (clipnorm vs global_clipnorm, AdamW vs Adam): one finding, the step as evidence."""
    config = [f for f in existing if f.kind == "optimizer_mismatch" and "differences (a, b)" in f.evidence]
    # Variables one run does not update at all (not_applied, frozen, no gradient) have
    # different updates as a consequence, not because the optimizers differ.
    sets = [f for f in existing if f.kind in ("not_applied", "missing_gradient", "trainable_mismatch")
            and f.severity == "error"]
    out = []
    for f in step_f:
        symptom = f.evidence.pop("symptom", None)
        cover = next((c for c in sets if f.kind == "optimizer_mismatch" and f.variables
                      and set(f.variables) <= set(c.variables)), None)
        if cover is not None:
            cover.evidence.setdefault("step_evidence", []).append({"summary": f.summary, **f.evidence})
            cover.steps = sorted(set(cover.steps) | set(f.steps))
            continue
        if f.kind == "optimizer_mismatch" and config:
            cause = config[0]
            # The cause words a hand-written rule already (its evidence holds the rates measured).
            effect = symptom if symptom and any(k.startswith("hand_written_") for k in cause.evidence) else f.summary
            cause.evidence.setdefault("step_evidence", []).append({"summary": effect, **f.evidence})
            cause.summary += f" Its effect: {effect}"
            if cause.severity == "info":  # judged the same rule from the runs' own steps, yet they part
                cause.severity = f.severity
            if f.fix and "hand_written_update" in f.evidence:
                cause.fix = f.fix  # the rates measured, not the configurations' difference
            cause.steps = sorted(set(cause.steps) | set(f.steps))
            cause.variables = cause.variables or f.variables
            cause.explains = max(cause.explains, f.explains, 1.0)
            continue
        out.append(f)
    return out


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen: set[tuple[str, str]] = set()
    out = []
    for f in findings:
        key = (f.kind, f.summary)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def _lone_variables_in_lone_layers(findings: list[Finding], lone_layers: dict[str, Any] | None, a: RunData,
                                   b: RunData, lone_a: list[int], lone_b: list[int]) -> str:
    """Trainable variables of one run without counterpart (a ``missing_gradient`` "never reached the
    other run's optimizer") that belong to layers only that run's model has (a layer built twice
    where the other model shares one): the models differ, which the structure finding says; the
    missing_gradient, whose fix is about the tape, is removed. Returns the sentence to add, or ""."""
    mg = next((f for f in findings if f.kind == "missing_gradient" and "run_with_them" in f.evidence), None)
    if mg is None or lone_layers is None:
        return ""
    side = mg.evidence["run_with_them"]
    run, lone = (a, lone_a) if side == "a" else (b, lone_b)
    only = lone_layers[f"only_in_{side}"] + [r[0 if side == "a" else 1] for r in lone_layers["replaced"]]
    owners = {str(run.var_info(v).get("layer") or "") for v in lone}
    if not owners or "" in owners or not all(any(f"'{o}'" in d for d in only) for o in owners):
        return ""
    findings.remove(mg)
    names = mg.evidence["variables"]
    return (f"Run {side}'s model trains {len(names)} variable(s) the other has no counterpart for "
            f"({', '.join(names[:4])}{', ...' if len(names) > 4 else ''}): the runs train different parameters "
            "(a layer built twice where the other model shares one, or a layer of one model only).")


def _sorted_data_pair(a: RunData, b: RunData) -> Finding | None:
    """One run trained on batches of one class each, in long runs (data sorted by label, never
    shuffled), the other did not (see ``detect_run.sorted_data``)."""
    fa, fb = dr.sorted_data(a, "a"), dr.sorted_data(b, "b")
    return fa if fb is None else fb if fa is None else None


def _micro_batches_same_updates(findings: list[Finding], a: RunData, b: RunData, al: Alignment) -> None:
    """One run steps on batches k times smaller as often as the other (micro-batches accumulated by
    hand: each step records its last micro-batch, so no batch matches), from the same start: when
    every aligned variable's update norm agrees at every step both recorded (four at least, within
    the float noise of sums over k micro-batches), the run applies the mean of its micro-batches'
    gradients, the same training as the other's batches. The data finding becomes context and
    the verdict rests on the updates (see _verdict)."""
    f = next((f for f in findings if f.kind == "data_mismatch" and f.evidence.get("micro_batches")), None)
    if f is None or al.init_same is False or al.stochastic or not al.ja.size:
        return
    n = min(a.n_steps, b.n_steps)
    steps = a.step[:n]
    ra, rb = a.rows(steps), b.rows(b.step[:n])
    ok = (ra >= 0) & (rb >= 0) & np.asarray(a.stats[:n], dtype=bool) & np.asarray(b.stats[:n], dtype=bool)
    if int(ok.sum()) < 4:
        return
    t = 16 * al.noise.tol(steps[ok] - steps[0])[:, None]
    du = ds.update_diffs(a, b, ra[ok], rb[ok], al)
    if not np.isfinite(a.update_norm[ra[ok]][:, al.ja]).any():
        return
    k, side = f.evidence["micro_batches"]["factor"], f.evidence["micro_batches"]["run"]
    if not np.all(du <= t):
        summed = _micro_batches_summed(a, b, int(ra[ok][0]), int(rb[ok][0]), al, float(t[0, 0]), int(k), str(side))
        if summed is not None:
            f.severity = "info"
            f.summary += " The updates explain it: see gradient_scale."
            findings.append(summed)
        return
    f.severity = "info"
    f.evidence["same_updates"] = {"steps_compared": int(ok.sum()), "max_update_rel_diff": float(np.max(du))}
    f.summary += (f" Yet every update agrees at each of the {int(ok.sum())} steps both recorded (largest relative "
                  f"difference {float(np.max(du)):.2g}): run {side} applies the mean of its {k} micro-batches' "
                  "gradients, the same training as the other run's batches.")
    f.fix = ("Nothing to fix: the runs train alike. To compare them step by step, let the optimizer accumulate "
             f"(`gradient_accumulation_steps={k}` on a Keras 3 optimizer, fed the micro-batches).")


def _micro_batches_summed(a: RunData, b: RunData, ra: int, rb: int, al: Alignment, t: float,
                          k: int, side: str) -> Finding | None:
    """The micro-batch run's first update is k times the other's for every aligned variable (within
    the float noise of sums over k micro-batches; from the same start and the same examples, the one
    step whose weights are still the same): it applies the sum of its k micro-batches' gradients,
    not their mean (an optimizer whose update follows the gradient's scale, such as SGD, passes the
    factor on; later steps start from weights that already differ)."""
    ua, ub = a.update_norm[ra, al.ja], b.update_norm[rb, al.jb]  # the first aligned step's rows
    mine, other = (ua, ub) if side == "a" else (ub, ua)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = mine / other
    fin = np.isfinite(ratio) & (other > 0)
    if int(fin.sum()) < 2 or not np.all(np.where(fin, rel(ratio, float(k)), 0.0) <= t):
        return None
    return Finding(
        "gradient_scale",
        f"run {side} steps on micro-batches {k} times smaller and applies their gradients together: every update "
        f"of run {side} at step {int(a.step[ra])}, from the same weights, is {k} x the other run's (median ratio "
        f"{float(np.median(ratio[fin])):.4g}, for all {int(fin.sum())} variables). It applies the sum of its {k} "
        "micro-batches' gradients, not their mean, so its optimizer takes steps as large as a learning rate "
        f"{k} x higher would.",
        steps=[int(a.step[ra])], evidence={"run": side, "micro_batches": k, "update_ratio": float(np.median(ratio[fin]))},
        fix=f"Divide the accumulated gradients by the number of micro-batches in run {side} (`[g / {k} for g in "
            f"accumulated]`) before apply_gradients, or let a Keras 3 optimizer accumulate "
            f"(`gradient_accumulation_steps={k}`), which averages them.",
        explains=1.0)


def _loss_never_scaled(findings: list[Finding], a: RunData, b: RunData) -> None:
    """One run's Keras 3 LossScaleOptimizer divides gradients of a loss that was never scaled
    (``detect_run.loss_scale_missing``; the other run's is not): that run's updates are the loss
    scale times too small. Named as that run's error; a ``gradient_scale`` by the same factor is
    what it causes, and becomes context."""
    got = [(side, m) for side, run in (("a", a), ("b", b)) if (m := dr.loss_scale_missing(run)) is not None]
    if len(got) != 1 or any(f.kind == "loss_scaling" and f.severity == "error" for f in findings):
        return
    side, m = got[0]
    scale = m["initial_scale"]
    how = ("calls `optimizer.scale_loss(loss)` and then differentiates `loss`, not the scaled loss it returns"
           if m["called_unused"] else "never calls `optimizer.scale_loss(loss)`")
    for f in findings:
        factor = f.evidence.get("factor")
        if f.kind == "gradient_scale" and isinstance(factor, (int, float)) and factor > 0 and \
                abs(math.log(max(factor, 1 / factor) / scale)) < 0.05:
            f.severity = "info"
            f.explains = min(f.explains, 0.3)
            f.summary += " The loss_scaling finding explains it."
    findings.insert(0, Finding(
        "loss_scaling",
        f"run {side}'s optimizer is a {m['optimizer']} (over {m['inner']}), which divides the gradients it applies by "
        f"the loss scale ({scale:g} at the start), but run {side}'s step {how}: the loss handed to tape.gradient was "
        f"not scaled, so every update of run {side} is that many times too small (its gradient norm is "
        f"{m['gradient_norm_over_loss']:.3g} x its loss, median of the first {m['steps_measured']} steps).",
        steps=[0], evidence={"run": side, **m}, explains=1.0,
        fix=f"In run {side}, differentiate the scaled loss: `scaled = optimizer.scale_loss(loss)` inside the tape, then "
            "`tape.gradient(scaled, vars)` and `optimizer.apply(grads, vars)` (it unscales them); fit() does this itself."))


def _numerics_after_departure(findings: list[Finding]) -> None:
    """NaN/Inf in one run first seen after the runs already departed (a divergence or gradient
    finding at an earlier step) is where that departure led, not its cause: ranked after it."""
    dep = [s for f in findings if f.kind in _SYMPTOMS and f.severity == "error" for s in f.steps]
    if not dep:
        return
    k = min(dep)
    for f in findings:
        one = [x for x in (f.evidence.get("a"), f.evidence.get("b")) if isinstance(x, dict)]
        if (f.kind == "numerics" and f.steps and min(f.steps) > k and len(one) == 1
                and not one[0].get("in_data")):  # NaN already in the data is a cause of its own
            f.explains = min(f.explains, 0.3)
            f.summary += f" The runs had departed before, at step {k}: this is where that led."


def _verdict(findings: list[Finding], structure_ok: bool, al: Alignment) -> str:
    # A structure_mismatch is a cause only as an error: layers of one model only whose aligned
    # steps part; otherwise it says why the runs are not comparable.
    # Other batches are no difference to judge, except batches the runs' own pipelines group
    # differently over the same examples (one batches across the epoch boundary), and the same
    # inputs paired with other labels.
    serious = [f for f in findings if f.severity in ("error", "warning")
               and (f.kind not in ("init_mismatch", "data_mismatch") or "batched_across_epochs" in f.evidence
                    or "labels_differ" in f.evidence)
               and not (f.kind == "structure_mismatch" and f.severity != "error")]
    if serious:
        return "diverged"
    if any(f.kind == "data_mismatch" and f.evidence.get("same_updates") for f in findings) and structure_ok:
        return "equivalent"  # micro-batches accumulated by hand: the updates agree at every step
    if not structure_ok or al.aligned_steps == 0:
        return "not_comparable"
    if any(f.kind == "data_mismatch" and f.severity != "info" for f in findings):
        # Equal as far as the same batches go; the rest cannot be judged step by step, and the
        # runs train on other batches from there: their models differ (the report says how far
        # the steps agree, see report._as_far_as).
        return "not_comparable"
    return "equivalent"


def _weight_decay(o: dict) -> float:
    v = dp._opt_settings(o).get("weight_decay")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0


def _decay_instead_of_penalty(findings: list[Finding], a: RunData, b: RunData, al: Alignment) -> None:
    """One run regularizes in its loss, the other decays its weights in the optimizer.

    A regularization_mismatch that finds a penalty in one run only, while the other run's
    optimizer carries a ``weight_decay`` the regularizing run's does not, is one choice made
    two ways (``AdamW(weight_decay=...)`` meant as ``L2``): the finding names both, and says
    they are not the same training.
    """
    reg = next((f for f in findings if f.kind == "regularization_mismatch"
                and f.evidence.get("factor") == 0.0 and f.evidence.get("regularized_run") in ("a", "b")), None)
    if reg is None:
        return
    side = reg.evidence["regularized_run"]
    other = "b" if side == "a" else "a"
    for oa, ob in dp.optimizer_pairs(a, b, al):
        o_other, o_side = (ob, oa) if other == "b" else (oa, ob)
        if _weight_decay(o_other) > 0 and _weight_decay(o_side) == 0:
            break
    else:
        return
    wd, cls = _weight_decay(o_other), str(o_other.get("class") or "its optimizer")
    reg.evidence["weight_decay_run"] = other
    reg.evidence["weight_decay"] = wd
    reg.summary += (f" Run {other} decays its weights in the optimizer instead ({cls}, weight_decay={wd:g}): "
                    "that is not the same training as a penalty in the loss. The decay shrinks every weight "
                    "by learning_rate x weight_decay outside the gradient, so an adaptive optimizer's moments "
                    "never see it, while an L2 term's gradient goes through them.")
    reg.fix = (f"Regularize both runs with one mechanism: either the same optimizer with "
               f"weight_decay={wd:g} in both (and no regularizer terms in run {side}'s loss), or the same "
               f"layer regularizers (`kernel_regularizer=`) in both and no weight_decay on run {other}'s "
               "optimizer. They agree only for plain SGD, where weight_decay = 2 x the L2 factor "
               "(`keras.regularizers.L2(l)` adds l * sum(w**2)).")


def _regularization_counted_differently(findings: list[Finding], a: RunData, b: RunData) -> list[Finding]:
    """Each run's own count of ``sum(model.losses)`` in its loss (data loss plus n times the
    regularization losses, measured within the run) where the two differ and nothing else
    said so: what shows when another cause or other batches leave no step to compare."""
    if any(f.kind == "regularization_mismatch" for f in findings):
        return []
    ca, cb = dr.regularization_count(a, once_too=True), dr.regularization_count(b, once_too=True)
    if ca is None or cb is None or ca["count"] == cb["count"]:
        return []

    said = dr.regularization_said
    off = "b" if ca["count"] == 1 else "a"
    n_off = (cb if off == "b" else ca)["count"]
    return [Finding(
        "regularization_mismatch",
        f"the models have regularization losses, and run a's loss handed to tape.gradient {said(ca['count'])} "
        f"while run b's {said(cb['count'])}: each run's loss equals its Keras loss's data loss plus that many "
        f"times sum(model.losses) (run a at {len(ca['steps'])} steps, run b at {len(cb['steps'])}), measured "
        "within each run.",
        steps=[min(ca["steps"][0], cb["steps"][0])],
        evidence={"count_a": ca["count"], "count_b": cb["count"], "reg_loss_a": ca["reg_loss"],
                  "reg_loss_b": cb["reg_loss"], "run": off},
        fix=dr.regularization_fix(n_off), explains=0.8)]


def _regularizer_kinds_differ(findings: list[Finding]) -> list[Finding]:
    """Regularizers of another class on paired layers (L1 where the other run has L2).

    The regularization_mismatch measured from the penalties reads their ratio as a factor,
    but no factor relates two kinds of penalty: the layers' arguments are the cause, and the
    measured gap is their evidence.
    """
    layer = next((f for f in findings if f.kind == "layer_config_mismatch" and f.severity == "error"), None)
    reg = next((f for f in findings if f.kind == "regularization_mismatch" and f.severity == "error"), None)
    if layer is None or reg is None:
        return findings
    kinds = [d for d in layer.evidence.get("differences") or []
             if str(d.get("argument", "")).endswith("regularizer.class_name") and d.get("a") and d.get("b")]
    if not kinds:
        return findings
    said = ", ".join(f"{d['a']} vs {d['b']} on {d['layer_a']}" for d in kinds[:3])
    layer.summary += (f" The regularizers are of another kind ({said}): the losses part by the penalties' "
                      "difference, which no single factor relates.")
    layer.evidence["regularization"] = {k: v for k, v in reg.evidence.items() if k != "factor"}
    layer.steps = sorted(set(layer.steps) | set(reg.steps))
    layer.explains = max(layer.explains, reg.explains)
    return [f for f in findings if f is not reg]


def _same_accumulation(findings: list[Finding], acc: dict) -> None:
    """Equal updates of an optimizer that accumulates and a loop that accumulates by hand (or
    one batch n times larger): say where the gradients part, not a clipping guess."""
    n, side = acc["gradient_accumulation_steps"], acc["run"]
    other = "b" if side == "a" else "a"
    how = (f"takes one batch {n} times larger (the union of the {n} micro-batches)" if acc.get("merged")
           else "accumulates by hand")
    for f in findings:
        if f.severity != "info" or "same_updates" not in f.evidence:
            continue
        if f.kind in ("gradient_scale", "gradient_mismatch", "divergence"):
            f.summary = (f"the recorded gradients differ while the losses and updates agree: run {side}'s "
                         f"optimizer (gradient_accumulation_steps={n}) records each micro-batch's gradient and "
                         f"applies the mean of {n}; run {other} {how} and records the gradient it applies.")
            f.fix = "Nothing to fix: both runs apply the mean gradient of the same examples."
        elif f.kind == "optimizer_mismatch" and any(
                str(k).endswith("gradient_accumulation_steps") for k in f.evidence.get("differences (a, b)", {})):
            f.summary = (f"the optimizers differ in gradient_accumulation_steps ({n} in run {side} only), and "
                         f"run {other} {how}: compared update by update (run {side}'s every {dp.nth(n)} "
                         "micro-batch step), the losses and the updates agree: the same training.")
            f.fix = f"Nothing to fix: run {other} applies the mean gradient the accumulating optimizer does."


def _accumulation_cause(findings: list[Finding], acc: dict) -> list[Finding]:
    """Updates that differ between an accumulating optimizer and a loop accumulating by hand.

    The recorded gradients differ by construction (one micro-batch's vs the averaged sum),
    so gradient findings are symptoms of the accumulation difference, not causes. The
    step-0 update ratio says what the loop does differently: ``n`` times the optimizer's
    update is the sum applied without dividing by ``n``.
    """
    cause = next((f for f in findings if f.kind == "optimizer_mismatch" and any(
        str(k).endswith("gradient_accumulation_steps") for k in f.evidence.get("differences (a, b)", {}))), None)
    if cause is None:
        return findings
    n, side = acc["gradient_accumulation_steps"], acc["run"]
    other = "b" if side == "a" else "a"
    symptoms = [f for f in findings if f.kind in ("gradient_scale", "gradient_mismatch", "divergence")
                and f.severity == "error"]
    ratios = [float(v["update_norm_ratio"]) for f in symptoms for v in f.evidence.get("step0_variables") or []
              if isinstance(v.get("update_norm_ratio"), (int, float)) and np.isfinite(v["update_norm_ratio"])
              and v["update_norm_ratio"] > 0]
    cause.evidence["step_evidence"] = [{"kind": f.kind, "summary": f.summary} for f in symptoms]
    cause.explains = 1.0
    if ratios:
        r = float(np.median(ratios))  # run a's update over run b's
        loop_over_opt = r if side == "b" else 1.0 / r
        cause.evidence["update_ratio_loop_over_optimizer"] = loop_over_opt
        if abs(loop_over_opt - n) <= 0.05 * n:
            cause.summary += (f" Compared update by update (run {side}'s every {dp.nth(n)} micro-batch step), run "
                              f"{other}'s updates are {n} x run {side}'s: the loop applies the sum of the {n} "
                              f"accumulated gradients, the optimizer their mean.")
            cause.fix = (f"Divide the accumulated gradients by {n} before `apply_gradients` in run {other} "
                         f"(`[g / {n} for g in accumulated]`), as `gradient_accumulation_steps={n}` averages them.")
        else:
            cause.summary += (f" Compared update by update (run {side}'s every {dp.nth(n)} micro-batch step), the "
                              f"updates differ (run {other}'s are x{loop_over_opt:.4g} run {side}'s at step 0).")
    return [f for f in findings if f not in symptoms]


# Loss arguments that change the values a loss computes, and what a hand-written formula must do.
_LOSS_EFFECTS = {
    "label_smoothing": lambda v, cls: (
        f"label_smoothing={v:g} replaces each target y by y * (1 - {v:g}) + {v:g} / 2" if "Binary" in cls
        else f"label_smoothing={v:g} replaces each one-hot target y by y * (1 - {v:g}) + {v:g} / num_classes"),
    "delta": lambda v, cls: f"Huber's delta={v:g} is where the loss turns from quadratic to linear",
    "alpha": lambda v, cls: f"alpha={v:g} weights the positive class",
    "gamma": lambda v, cls: f"gamma={v:g} down-weights easy examples",
}


def _fingerprint_versions(findings: list[Finding], a: RunData, b: RunData) -> None:
    """Batches that differ between runs whose tracers fingerprinted them differently
    (``extra.fingerprint_version``, 1 when absent): a model with several inputs or outputs may have
    seen the same data. Said in the data finding, with what to do."""
    va, vb = ((r.meta.get("extra") or {}).get("fingerprint_version") or 1 for r in (a, b))
    f = next((f for f in findings if f.kind == "data_mismatch"), None)
    if f is None or va == vb:
        return
    old = "a" if va < vb else "b"
    f.evidence["fingerprint_versions"] = [va, vb]
    f.summary += (f" Run {old} was recorded by an older tracer that fingerprints the batches of a model with several "
                  f"inputs or outputs differently (fingerprint version {min(va, vb)} against {max(va, vb)}): for such "
                  f"a model the same data can read as different. Record run {old} again to compare its batches.")


def _loss_class_measured(findings: list[Finding]) -> None:
    """Loss classes that differ in name only (a loss function of the script's own against a Keras
    loss: no argument differs) while a finding measures what the two compute differently (a
    constant factor, the regularization terms): that finding is the cause, the class names its
    context, ranked after it."""
    lm = next((f for f in findings if f.kind == "loss_mismatch" and f.severity == "error"
               and set((f.evidence.get("differences (a, b)") or {})) == {"class"}), None)
    measured = next((f for f in findings if f.kind in ("loss_scale", "regularization_mismatch")
                     and f.severity == "error"), None)
    if lm is None or measured is None:
        return
    lm.severity = "warning"
    lm.summary += f" What they compute differently is measured: see {measured.kind}."
    lm.fix = None


def _hand_written_loss(findings: list[Finding], a: RunData, b: RunData) -> None:
    """Different losses at step 0 where one run calls a Keras loss and the other computes its
    loss by hand (nothing recorded): name the Keras loss's settings a hand-written formula must
    reproduce (label smoothing, Huber's delta, ...), the likeliest thing it leaves out."""
    f = next((f for f in findings if f.kind == "gradient_mismatch" and f.severity == "error"), None)
    if f is None:
        return
    ia, ib = dp._first_loss_info(a), dp._first_loss_info(b)
    if bool(ia) == bool(ib):
        return
    side, info = ("a", ia) if ia else ("b", ib)
    other = "b" if side == "a" else "a"
    if info.get("calls"):
        return
    cls = str(info.get("cls") or "its Keras loss")
    args = info.get("args") or {}
    effects = [_LOSS_EFFECTS[k](float(v), cls) for k, v in args.items()
               if k in _LOSS_EFFECTS and isinstance(v, (int, float)) and not isinstance(v, bool) and v != 0]
    valid, total = info.get("mask_valid"), info.get("mask_count")
    if isinstance(valid, (int, float)) and isinstance(total, (int, float)) and 0 < valid < total:
        # the model's output carries a mask (Embedding(mask_zero=True), Masking) the Keras loss applies
        f.evidence["keras_loss_mask"] = {"valid": int(valid), "total": int(total)}
        effects.insert(0, f"it averages over the {int(valid)} valid entries of {int(total)} at its first step "
                          "only, the mask the model's output carries leaving the padding out (weight the per-entry losses by the mask and "
                          "divide by its sum: `tf.reduce_sum(loss * mask) / tf.reduce_sum(mask)`)")
    said = ", ".join([f"from_logits={info.get('from_logits')}"] + [f"{k}={v!r}" for k, v in args.items()
                                                                  if v is not None])
    f.evidence["keras_loss"] = {"run": side, "class": cls, "from_logits": info.get("from_logits"), "args": args}
    f.summary += (f" Run {side} calls {cls}({said}); run {other}'s loss is written by hand (no Keras loss "
                  "recorded), so its arguments cannot be compared: the formula must reproduce that loss"
                  + (f" ({'; '.join(effects)})." if effects else "."))
    if effects:
        f.fix = (f"Make run {other}'s hand-written loss compute what run {side}'s {cls} does: "
                 f"{'; '.join(effects)}. Or call the same Keras loss object in both runs.")


def _scaled_gradients_applied(findings: list[Finding]) -> list[Finding]:
    """The gradients of a scaled loss applied by an optimizer that does not unscale them.

    loss_scaling names the run (its loss is the other's times the other's loss scale, and its
    optimizer is no LossScaleOptimizer); the loss factor the step-0 comparison measures is the
    same fact, so it becomes that finding's step evidence instead of a second finding whose
    fix would be to reduce the loss differently.
    """
    ls = next((f for f in findings if f.kind == "loss_scaling" and f.evidence.get("scaled_gradients_run")), None)
    if ls is None:
        return findings
    same = [f for f in findings if f.kind in ("loss_scale", "gradient_scale")
            and str(f.evidence.get("matches") or "").startswith(ds.NOT_UNSCALED)]
    if not same:
        return findings
    ls.evidence["step_evidence"] = [{"kind": f.kind, "summary": f.summary} for f in same]
    ls.steps = same[0].steps or ls.steps
    return [f for f in findings if not any(f is g for g in same)]


def _loss_left_unscaled(findings: list[Finding], a: RunData, b: RunData) -> list[Finding]:
    """A LossScaleOptimizer applied to gradients of the unscaled loss.

    Keras 3's ``LossScaleOptimizer`` divides the gradients by its loss scale when it applies
    them, expecting the gradients of ``optimizer.scale_loss(loss)``. A run whose optimizer is
    one but whose steps recorded no loss scale, with gradients the other run's divided by the
    other's loss scale, differentiated the plain loss: its updates work on gradients that
    many times too small. One finding (loss_scaling) with the gradient factor as evidence.
    """
    ls = next((f for f in findings if f.kind == "loss_scaling" and f.severity == "error"
               and (f.evidence.get("loss_scale_a") is None) != (f.evidence.get("loss_scale_b") is None)), None)
    gs = next((f for f in findings if f.kind == "gradient_scale"
               and str(f.evidence.get("matches") or "").startswith(ds.NOT_UNSCALED)), None)
    if ls is None or gs is None:
        return findings
    scaled = "a" if ls.evidence.get("loss_scale_a") is not None else "b"
    plain = "b" if scaled == "a" else "a"
    run = a if plain == "a" else b
    opt = run.meta.get("optimizer") or {}
    scale = float(ls.evidence[f"loss_scale_{scaled}"])
    factor = float(gs.evidence.get("factor") or 0.0)  # run a's gradients over run b's
    larger = factor if scaled == "a" else (1.0 / factor if factor else 0.0)
    if not dp._loss_scaled(opt) or abs(larger - scale) > 1e-3 * scale:
        return findings
    ls.summary = (f"run {plain}'s optimizer is a {opt.get('class')}, which divides the gradients by its loss "
                  f"scale when it applies them, but run {plain} differentiates the unscaled loss (no loss scale "
                  f"was applied in its steps): its gradients arrive {scale:g} times smaller than run {scaled}'s "
                  "(measured at step 0), so the updates are computed from gradients that many times too small "
                  "(an adaptive optimizer's epsilon then dominates; SGD barely moves).")
    ls.fix = ("Scale the loss inside the tape and differentiate that: `scaled = optimizer.scale_loss(loss); "
              "grads = tape.gradient(scaled, model.trainable_variables); optimizer.apply_gradients(zip(grads, "
              "model.trainable_variables))` (the optimizer unscales them); fit() does this itself.")
    ls.evidence.update({"unscaled_loss_run": plain, "gradient_factor": larger,
                        "step_evidence": [{"kind": gs.kind, "summary": gs.summary}]})
    ls.explains = 1.0
    ls.steps = gs.steps or ls.steps
    return [f for f in findings if f is not gs]
