"""Differences of the models and of the weighting that the variables and the configs alone do not
show: layers of one model without counterpart in the other (a layer without variables, or one that
owns variables of the same shapes as another class's), and sample weights that differ between two
runs that both weight their samples."""

from __future__ import annotations

from typing import Any

import numpy as np

from gradtrace.compare.align import Alignment
from gradtrace.compare.data import RunData
from gradtrace.compare.findings import Finding


def _desc(layer: dict[str, Any], config: dict[str, Any] | None) -> str:
    """``Masking 'masking' (mask_value=0.0)``: the class, the name and a few scalar arguments."""
    args = ", ".join([f"{k}={v!r}" for k, v in (config or {}).items()
                      if isinstance(v, (int, float, str, bool))][:3])
    return f"{layer.get('class_name')} '{layer.get('name')}'" + (f" ({args})" if args else "")


def lone_layers(a: RunData, b: RunData, al: Alignment) -> dict[str, Any] | None:
    """Leaf layers (those whose arguments the run recorded) of one model with no counterpart
    of their class in the other model's structure, compared between runs of the same Keras.

    Containers (the model itself, a user's model class) record no arguments and are not
    counted: a subclassed model against a Sequential of the same layers is the same network.
    Returns ``{"only_in_a", "only_in_b", "replaced"}`` (descriptions, and the pairs at the same
    place in both structures), or None.
    """
    ca, cb = a.meta.get("layer_configs") or {}, b.meta.get("layer_configs") or {}
    fa, fb = a.meta.get("keras_flavour"), b.meta.get("keras_flavour")
    if not ca or not cb or not a.layers or not b.layers or (fa and fb and fa != fb):
        return None
    paired_a = {int(x.get("index", -1)) for x, _ in al.layer_pairs}
    paired_b = {int(y.get("index", -1)) for _, y in al.layer_pairs}
    lone_a = [x for x in a.layers if str(x.get("index")) in ca and int(x.get("index", -1)) not in paired_a]
    lone_b = [y for y in b.layers if str(y.get("index")) in cb and int(y.get("index", -1)) not in paired_b]
    if not lone_a and not lone_b:
        return None
    # A layer of each model at the same place (between the same paired neighbours): one class
    # in place of the other (LayerNormalization where the other has BatchNormalization).
    replaced: list[list[str]] = []
    rest_b = list(lone_b)
    only_a: list[str] = []
    for x in lone_a:
        before = _paired_before(x, al.layer_pairs, side=0)
        y = next((y for y in rest_b if _paired_before(y, al.layer_pairs, side=1) == before), None)
        if y is not None:
            rest_b.remove(y)
            replaced.append([_desc(x, ca.get(str(x.get("index")))), _desc(y, cb.get(str(y.get("index"))))])
        else:
            only_a.append(_desc(x, ca.get(str(x.get("index")))))
    only_b = [_desc(y, cb.get(str(y.get("index")))) for y in rest_b]
    return {"only_in_a": only_a, "only_in_b": only_b, "replaced": replaced}


def _paired_before(layer: dict[str, Any], pairs: list[tuple[dict[str, Any], dict[str, Any]]], side: int) -> int:
    """The position (in run a's numbering) of the last paired layer before ``layer``: two lone
    layers after the same paired layer stand at the same place in their models."""
    idx = int(layer.get("index", -1))
    best = -1
    for p in pairs:
        if int(p[side].get("index", -1)) < idx:
            best = max(best, int(p[0].get("index", -1)))
    return best


def layer_structure_finding(info: dict[str, Any], severity: str, note: str) -> Finding:
    parts = [f"{x} in run a where run b has {y}" for x, y in info["replaced"]]
    parts += [f"{x} only in run a" for x in info["only_in_a"]]
    parts += [f"{y} only in run b" for y in info["only_in_b"]]
    said = "; ".join(parts[:4]) + (" …" if len(parts) > 4 else "")
    return Finding(
        "structure_mismatch",
        f"the models are built from different layers: {said}." + (f" {note}" if note else ""),
        severity=severity,  # type: ignore[arg-type]
        evidence=dict(info),
        fix=("Build both models from the same layers: " + "; ".join(parts[:3]) + "."
             + (" A layer without variables (Masking, Dropout, an Activation) changes what the model computes "
                "as much as one with them." if info["only_in_a"] or info["only_in_b"] else "")),
        explains=0.6 if severity == "error" else 0.3)  # raised to 1 by the symptoms it absorbs


def weights_differ(a: RunData, b: RunData, al: Alignment) -> Finding | None:
    """Both runs weight their samples, on the same batches, but the weights' sum per batch
    differs: the same examples are weighted differently (class weights looked up by the wrong
    index, another weighting scheme). Read from the weight statistics of the Keras loss calls
    at the aligned steps; the per-sample losses before weighting agree at the first of them."""
    n = al.aligned_steps
    if n < 1 or al.stochastic:
        return None
    sums: list[tuple[int, float, float]] = []
    for k in range(n):
        sa, sb = int(a.step[al.ia[k]]), int(b.step[al.ib[k]])
        ia, ib = a.loss_info.get(sa) or {}, b.loss_info.get(sb) or {}
        if ia.get("calls") or ib.get("calls"):
            return None  # several losses per step: the weights of which one is unclear
        wa, wb = ia.get("weight_sum"), ib.get("weight_sum")
        if not isinstance(wa, (int, float)) or not isinstance(wb, (int, float)):
            continue
        if ia.get("weight_count") != ib.get("weight_count"):
            return None
        sums.append((sa, float(wa), float(wb)))
    if not sums:
        return None
    diff = [(s, x, y) for s, x, y in sums if not np.isclose(x, y, rtol=1e-5, atol=1e-6)]
    if not diff:
        return None
    first = diff[0]
    i0, j0 = a.loss_info.get(int(a.step[al.ia[0]])) or {}, b.loss_info.get(int(b.step[al.ib[0]])) or {}
    pa, pb = i0.get("per_sample_mean"), j0.get("per_sample_mean")
    same_losses = (isinstance(pa, (int, float)) and isinstance(pb, (int, float))
                   and bool(np.isclose(pa, pb, rtol=1e-4, atol=1e-7)))
    how = {}
    for side, run in (("a", a), ("b", b)):
        fit = next((c for c in run.fit_calls() if c.get("class_weight") or c.get("sample_weight")), {})
        how[side] = ("fit(class_weight=...)" if fit.get("class_weight") else "fit(sample_weight=...)"
                     if fit.get("sample_weight") else "sample_weight= passed to its Keras loss")
    return Finding(
        "sample_weighting",
        f"both runs weight their samples (run a: {how['a']}; run b: {how['b']}), but not alike: on the same "
        f"batches the weights sum to {first[1]:.6g} vs {first[2]:.6g} at step {first[0]} "
        f"({len(diff)} of {len(sums)} aligned steps differ)"
        + (", while the per-sample losses before weighting agree at step 0: the weights, not the model, differ."
           if same_losses else "."),
        steps=[first[0]],
        evidence={"weight_sums (step, a, b)": [list(d) for d in diff[:8]], "weighting": how,
                  "per_sample_losses_agree": same_losses, "steps_compared": len(sums)},
        fix=("Give each sample the same weight in both runs: `fit(class_weight={c: w})` weights a sample by its "
             "label's class; by hand, look the weight up by the label (`tf.gather(weights, y)`), not by the "
             "sample's position in the batch, and pass it as `sample_weight=` to the Keras loss."),
        explains=0.85)
