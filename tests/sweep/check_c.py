"""Train one script of :mod:`scripts_c` untraced and traced on the same seed and list every way
the record departs from what the script computed itself.

``python -m tests.sweep.check_c`` (see :func:`main`) does each run in a fresh process (the
tf-keras runs: ``TF_USE_LEGACY_KERAS=1`` must be set before TensorFlow is imported).
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import tempfile
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

PROJECT = "sweep_c"


@contextmanager
def _stderr_lines(out: list[str]):
    """The process's stderr (file descriptor 2, TensorFlow's C++ logs included) while inside."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as f:
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            f.seek(0)
            out.extend(f.read().decode(errors="replace").splitlines())


def _fresh_session() -> None:
    import tensorflow as tf
    from tensorflow.python.eager.polymorphic_function import polymorphic_function

    tf.keras.backend.clear_session()  # layer names start over: paths are the same in both runs
    # TensorFlow's "N out of the last M calls to f triggered retracing" counts per function
    # code for the whole process (every fit() shares Keras's step function): start over too,
    # so the traced and the untraced run of a script see the same history
    polymorphic_function._frequent_tracing_detector_manager._detectors.clear()


@dataclass
class Result:
    """One run of a script: what it returned, what it printed, what its trace said."""

    out: Any  # scripts.Out
    warnings: list[str]  # Python warnings raised during the run
    stderr: list[str]
    run_warnings: list[str] | None = None  # the trace's (None: untraced)
    partial: bool = False


def run(script: Callable[[], Any], traced_as: str | None, url: str, stats_every: int = 1) -> Result:
    import gradtrace

    _fresh_session()
    lines: list[str] = []
    with warnings.catch_warnings(record=True) as caught, _stderr_lines(lines):
        warnings.simplefilter("always")
        if traced_as is None:
            out = script()
        else:
            with gradtrace.trace(run=traced_as, project=PROJECT, store=url, stats_every=stats_every) as r:
                out = script()
    if traced_as is None:
        return Result(out, [str(w.message) for w in caught], lines)
    return Result(out, [str(w.message) for w in caught], lines, list(r.info.warnings), bool(r.info.partial))


def _get(meta: dict[str, Any], dotted: str) -> Any:
    cur: Any = meta
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return "<missing>"
        cur = cur[part]
    return cur


def _close(a: float | None, b: float, rtol: float) -> bool:
    return a is not None and bool(np.isclose(a, b, rtol=rtol, atol=1e-7))


def check(script: Callable[[], Any], url: str, stats_every: int = 1) -> list[str]:
    """Problems found (empty: the record holds), both runs in this process. With
    ``stats_every`` > 1 the per-variable statistics are checked on the full steps only."""
    name = script.__name__ if stats_every == 1 else f"{script.__name__}_every_{stats_every}"
    return compare(name, run(script, None, url), run(script, name, url, stats_every), url, stats_every)


def compare(name: str, plain: Result, traced: Result, url: str, stats_every: int = 1) -> list[str]:
    """Problems of the traced run ``name`` in the store at ``url``, against the untraced one."""
    from gradtrace.store import open_store

    out = traced.out
    problems: list[str] = []
    if len(plain.out.weights) != len(out.weights) or not all(
            np.array_equal(a, b, equal_nan=a.dtype.kind == "f")  # tf-keras lists a vocabulary too
            for a, b in zip(plain.out.weights, out.weights, strict=False)):
        problems.append("tracing changed the training's numbers")
    new_warn = sorted(set(traced.warnings) - set(plain.warnings))
    if new_warn:
        problems.append(f"warnings only when traced: {new_warn}")
    # tf-keras times the script's own batch callbacks against the batch (tf_keras/src/callbacks.py
    # ``CallbackList._call_batch_end_hook``): whether it warns depends on this machine's load.
    new_err = [ln for ln in traced.stderr if ln not in plain.stderr and "is slow compared to the batch time" not in ln]
    if new_err:
        problems.append(f"stderr only when traced: {new_err[:5]}")
    expected_warnings = out.extra.get("run_warnings", [])  # substrings of warnings the run must give
    other = [w for w in traced.run_warnings or [] if not any(e in w for e in expected_warnings)]
    if other:
        problems.append(f"run warnings: {other}")
    missing = [e for e in expected_warnings if not any(e in w for w in traced.run_warnings or [])]
    if missing:
        problems.append(f"run warnings {traced.run_warnings} lack {missing}")
    if traced.partial:
        problems.append("run marked partial")
    store = open_store(url)
    try:
        summary = store.resolve(name, project=PROJECT)
        detail = store.run_detail(summary.id)
        steps = sorted(store.steps(summary.id), key=lambda r: r["step"])
    finally:
        store.close()
    meta = detail.meta
    if summary.status != "finished":
        problems.append(f"status {summary.status}")
    if [s["step"] for s in steps] != list(range(out.steps)):
        problems.append(f"{len(steps)} steps recorded, {out.steps} optimizer steps taken")
        return problems
    paths = {v["index"]: (v.get("path") or v["name"]).split(":")[0] for v in detail.variables}
    x = out.extra
    all_steps = steps
    full = [s for s in steps if s["step"] % stats_every == 0]  # the steps with statistics

    def var(suffix: str) -> int | None:
        exact = [i for i, p in sorted(paths.items()) if p == suffix]
        hits = exact or [i for i, p in sorted(paths.items()) if p.endswith("/" + suffix)]
        return hits[0] if hits else None

    rtol = x.get("loss_rtol", 1e-5)
    if "losses" in x:
        rec = [s["loss"] for s in steps]
        bad = [(i, r, e) for i, (r, e) in enumerate(zip(rec, x["losses"], strict=True)) if not _close(r, e, rtol)]
        if bad:
            problems.append(f"losses differ (step, recorded, script): {bad[:4]}")
    if "losses_or_none" in x:  # None: a step whose loss the record must leave out
        rec = [s["loss"] for s in steps]
        if not all((e is None and r is None) or (e is not None and _close(r, e, rtol))
                   for r, e in zip(rec, x["losses_or_none"], strict=True)):
            problems.append(f"losses {rec}, expected {x['losses_or_none']}")
    if "losses_finite_prefix" in x:  # a diverging run: its finite losses, then a non-finite one
        pre = x["losses_finite_prefix"]
        rec = [s["loss"] for s in steps]
        if not (all(_close(r, e, 1e-4) for r, e in zip(rec, pre, strict=False))
                and rec[len(pre)] is not None and not np.isfinite(rec[len(pre)])):
            problems.append(f"losses {rec}, the script's finite ones {pre}")
    if "step0_loss" in x and not _close(steps[0]["loss"], x["step0_loss"], 1e-5):
        problems.append(f"step 0 loss {steps[0]['loss']} != {x['step0_loss']}")
    for step, suffix, norm in [g for g in x.get("grads", []) if g[0] % stats_every == 0]:
        v = var(suffix)
        rows = {r["v"]: r for r in steps[step]["vars"]}
        if v is None or v not in rows:
            problems.append(f"no gradient record for {suffix} at step {step} (paths {sorted(paths.values())})")
        elif not _close(rows[v]["norm"], norm, 1e-5):
            problems.append(f"step {step} {paths[v]} gradient norm {rows[v]['norm']} != tf.norm {norm}")
    for layer, mode in x.get("modes", {}).items():
        got = [(s["modes"] or {}).get(layer, "<absent>") for s in steps]
        want = mode if isinstance(mode, list) else [mode] * len(steps)
        if got != want:
            problems.append(f"mode of {layer}: {got}, expected {want} (step 0: {steps[0]['modes']})")
    steps = full  # per-variable records: full steps only
    for suffix, changed in x.get("state", {}).items():
        v = var(suffix)
        got = [{r["v"]: r for r in s["state"]}.get(v, {}).get("changed", "<absent>") for s in steps]
        # a full step's change is measured from the previous full step: any of the steps since
        want = ([any(c is True for c in changed[max(0, s["step"] - stats_every + 1):s["step"] + 1])
                 if changed[s["step"]] != "<absent>" else "<absent>" for s in steps]
                if isinstance(changed, list) else [changed] * len(steps))
        if v is None or got != want:
            problems.append(f"state {suffix}: changed {got}, expected {want}")
    for layer, want in x.get("frozen", {}).items():
        got = [layer in s["frozen"] for s in all_steps]
        if got != want:
            problems.append(f"{layer} frozen {got}, expected {want}")
    for suffix, want in x.get("applied", {}).items():  # the script knows each step's applied flags
        v = var(suffix)
        got = [{r["v"]: r for r in s["vars"]}.get(v, {}).get("applied") for s in steps]
        if v is None or got != [want[s["step"]] for s in steps]:
            problems.append(f"{suffix} applied {got}, expected {[want[s['step']] for s in steps]}")
    if not x.get("not_applied_until") and "applied" not in x:
        # every gradient the optimizer received moved its weight (none of these scripts skips one)
        bad = [(s["step"], paths[r["v"]]) for s in steps if not s.get("skipped") for r in s["vars"]
               if r["grad"] and r["norm"] and np.isfinite(r["norm"]) and r["applied"] is not True]
        if bad:
            problems.append(f"(step, variable) with a non-zero gradient, not applied: {bad[:4]}")
    for name in x.get("unchanged", []):  # weights no step may move
        v = var(name)
        got = [{r["v"]: r for r in s["vars"]}.get(v, {}).get("applied") for s in steps]
        if v is None or any(a is True for a in got):
            problems.append(f"{name} applied {got}, the script never moved it")
    for suffix, first in x.get("not_applied_until", {}).items():
        v = var(suffix)
        got = [{r["v"]: r for r in s["vars"]}.get(v, {}).get("applied") for s in steps]
        before = [a for s, a in zip(steps, got, strict=True) if s["step"] < first]
        after = [a for s, a in zip(steps, got, strict=True) if s["step"] >= first]
        if v is None or any(a is True for a in before) or any(a is not True for a in after):
            problems.append(f"{suffix} applied {got}, expected from step {first} on")
    for key, want in x.get("meta", {}).items():
        got = _get(meta, key)
        if got != want and not (isinstance(want, float) and isinstance(got, float) and np.isclose(got, want)):
            problems.append(f"meta {key}: {got!r}, expected {want!r}")
    steps = all_steps
    if "reg_losses" in x:
        bad = [(i, s["reg_loss"], r) for i, (s, r) in enumerate(zip(steps, x["reg_losses"], strict=True))
               if not _close(s["reg_loss"], r, 1e-5)]
        if bad:
            problems.append(f"reg_loss differs (step, recorded, script): {bad[:4]}")
    if "lrs" in x:
        got = [s["lr"] for s in steps]
        if not np.allclose(got, x["lrs"], rtol=1e-6):
            problems.append(f"lr {got}, expected {x['lrs']}")
    if "iterations" in x and [s["iterations"] for s in steps] != x["iterations"]:
        problems.append(f"iterations {[s['iterations'] for s in steps]}, expected {x['iterations']}")
    if "batch_sizes" in x and [s["batch_size"] for s in steps] != x["batch_sizes"]:
        problems.append(f"batch sizes {[s['batch_size'] for s in steps]}, expected {x['batch_sizes']}")
    for key in ("x_fp", "y_fp"):
        if key in x:
            got = [(s[key][0], int(s[key][3])) if s[key] else None for s in steps]
            if not all(g is not None and _close(g[0], e[0], 1e-5) and g[1] == e[1]
                       for g, e in zip(got, x[key], strict=True)):
                problems.append(f"{key} (sum, count) {got[:4]}, the script's batches {x[key][:4]}")
    if "target_shape" in x and any(s["target_shape"] != x["target_shape"] for s in steps):
        problems.append(f"target shapes {[s['target_shape'] for s in steps]}, expected {x['target_shape']}")
    if x.get("reg_equals_loss"):  # the whole loss is the model's own (add_loss)
        bad = [(s["step"], s["reg_loss"], s["loss"]) for s in steps if not _close(s["reg_loss"], s["loss"], 1e-5)]
        if bad:
            problems.append(f"(step, reg_loss, loss) {bad[:4]}")
    if "weight_sum0" in x:
        got = (steps[0]["loss_info"] or {}).get("weight_sum")
        if not _close(got, x["weight_sum0"], 1e-5):
            problems.append(f"step 0 sample weight sum {got}, expected {x['weight_sum0']}")
    if "optimizers" in x:
        got = [o.get("class") for o in meta.get("optimizers", [])]
        if got != x["optimizers"]:
            problems.append(f"optimizers {got}, expected {x['optimizers']}")
    if "skipped" in x and [bool(s["skipped"]) for s in steps] != x["skipped"]:
        problems.append(f"skipped {[s['skipped'] for s in steps]}, expected {x['skipped']}")
    if x.get("loss_scaled"):
        scales = [s["loss_scale"] for s in steps]
        if any(sc is None or sc <= 1 for sc in scales):
            problems.append(f"loss scale {scales}")
    return problems


def main(argv: list[str]) -> int:
    """``run SCRIPT DB FILE [--traced]``: one run, pickled into FILE (a fresh process each, so
    that neither run inherits the other's random state); ``compare SCRIPT DB PLAIN TRACED``:
    the problems, as one JSON line."""
    import importlib

    def script(name: str) -> Callable[[], Any]:  # "NAME" (scripts_c) or "MODULE:NAME" (a sibling module)
        module, _, fn = name.rpartition(":")
        return getattr(importlib.import_module(f"{__package__}.{module or 'scripts_c'}"), fn)

    if argv[0] == "run":
        name, url, path = argv[1:4]
        res = run(script(name), name.rpartition(":")[2] if "--traced" in argv else None, url)
        with open(path, "wb") as f:
            pickle.dump(res, f)
        return 0
    name, url, plain, traced = argv[1:5]
    with open(plain, "rb") as f1, open(traced, "rb") as f2:
        problems = compare(name.rpartition(":")[2], pickle.load(f1), pickle.load(f2), url)
    print("PROBLEMS " + json.dumps(problems))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
