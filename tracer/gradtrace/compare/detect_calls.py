"""Layers called with other arguments: ``MultiHeadAttention(...)(q, v, use_causal_mask=True)``
in one run and without the flag in the other, an ``initial_state`` or a ``mask`` handed to a
layer in one run only. Read from the runs' ``extra.call_args`` (recorded by the tracer's
``Layer.__call__`` wrapper, see ``gradtrace._callargs``), on layers paired through the variables
they own; an argument left out is its signature's default, so ``use_causal_mask=False`` and no
flag at all are the same call."""

from __future__ import annotations

from typing import Any

from gradtrace._callargs import TENSOR, same
from gradtrace.compare.align import Alignment
from gradtrace.compare.data import RunData
from gradtrace.compare.findings import Finding

_ABSENT = "<not given>"  # an argument of a layer's **kwargs without a default


def _recorded(run: RunData) -> dict[str, Any] | None:
    got = (run.meta.get("extra") or {}).get("call_args")
    return got if isinstance(got, dict) else None


def _entry(record: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any] | None:
    e = record.get(str(layer.get("name")))
    return e if isinstance(e, dict) and e.get("class") == layer.get("class_name") else None


def _normal(call: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The arguments of one call that differ from the signature's defaults."""
    return {k: v for k, v in call.items() if not same(v, defaults.get(k, _ABSENT))}


def _spell(arg: str, value: Any, given: bool, default: Any) -> str:
    if not given:
        if default == _ABSENT:
            return f"without {arg}"
        # Given its default or left out: the tracer records neither.
        return f"at its default ({arg}={default!r})" if default is not None else f"without {arg}"
    if value == TENSOR:
        return f"with a tensor as {arg}"
    return f"with {arg}={value!r}"


def call_argument_mismatch(a: RunData, b: RunData, al: Alignment) -> Finding | None:
    """Structurally paired layers whose ``call`` received other optional arguments."""
    ra, rb = _recorded(a), _recorded(b)
    fa, fb = a.meta.get("keras_flavour"), b.meta.get("keras_flavour")
    if ra is None or rb is None or (fa and fb and fa != fb):
        return None  # a run traced before call arguments were recorded, or two Keras implementations
    diffs: list[dict[str, Any]] = []
    for la, lb in al.layer_pairs:
        if la.get("class_name") != lb.get("class_name"):
            continue
        ea, eb = _entry(ra, la), _entry(rb, lb)
        if ea is None and eb is None:
            continue
        defaults = {**((eb or {}).get("defaults") or {}), **((ea or {}).get("defaults") or {})}
        calls_a = [_normal(c, defaults) for c in (ea or {}).get("calls") or [{}] if isinstance(c, dict)]
        calls_b = [_normal(c, defaults) for c in (eb or {}).get("calls") or [{}] if isinstance(c, dict)]
        if (all(any(x == y for y in calls_b) for x in calls_a)
                and all(any(x == y for x in calls_a) for y in calls_b)):
            continue
        base = {"layer_a": str(la.get("name")), "layer_b": str(lb.get("name")), "class": la.get("class_name")}
        if len(calls_a) == 1 and len(calls_b) == 1:
            ca, cb = calls_a[0], calls_b[0]
            for k in [k for k in defaults if k in ca or k in cb] + sorted((set(ca) | set(cb)) - set(defaults)):
                va, vb = ca.get(k, defaults.get(k, _ABSENT)), cb.get(k, defaults.get(k, _ABSENT))
                if same(va, vb):
                    continue
                diffs.append({**base, "argument": k, "a": va, "b": vb, "given_a": k in ca, "given_b": k in cb,
                              "default": defaults.get(k, _ABSENT)})
        else:  # a layer called several ways in one run (a shared layer): the sets of calls differ
            diffs.append({**base, "argument": "calls", "a": calls_a, "b": calls_b, "given_a": True,
                          "given_b": True, "default": None})
    if not diffs:
        return None
    said = []
    for d in diffs[:4]:
        if d["argument"] == "calls":
            said.append(f"layer '{d['layer_a']}' ({d['class']}) was called with {d['a']} in run a and "
                        f"{d['b']} in run b")
        else:
            arg, default = d["argument"], d["default"]
            said.append(f"layer '{d['layer_a']}' ({d['class']}) was called "
                        f"{_spell(arg, d['a'], d['given_a'], default)} in run a and "
                        f"{_spell(arg, d['b'], d['given_b'], default)} in run b")
    fixes = []
    for d in diffs[:3]:
        if d["argument"] == "calls":
            fixes.append(f"call '{d['layer_a']}' the same ways in both runs")
            continue
        side, value = ("a", d["a"]) if d["given_a"] else ("b", d["b"])
        spelled = "a tensor" if value == TENSOR else repr(value)
        fixes.append(f"pass {d['argument']}={spelled} to '{d['layer_a']}' in both runs (as run {side} does) "
                     "or in neither")
    return Finding(
        "call_argument_mismatch",
        "the paired layers were called with different arguments: " + "; ".join(said)
        + (" …" if len(diffs) > 4 else "") + ".",
        layers=sorted({d["layer_a"] for d in diffs}),
        evidence={"differences": diffs[:32]},
        fix="Call the layers with the same arguments in both runs: " + "; ".join(fixes) + ".",
        explains=0.95)
