"""Align two runs: variables and layers by structure, steps by number and data.

Never by TensorFlow names: ``dense_3/kernel`` in one run is ``dense_7/kernel``
in the other. Variables pair by ``struct_key`` when both runs recorded it, the
rest by their order among variables of the same (trainable, layer class, shape).
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradtrace.compare.data import RunData
from gradtrace.compare.detect_data import input_map, input_permutation, input_transform
from gradtrace.compare.noise import Noise, measure_noise, rel


def _shape(v: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(v.get("shape") or [])


def _strip_position(key: str) -> str:
    # "2:Dense/kernel[128,10]" -> "Dense/kernel[128,10]": two runs may number layers
    # differently when one wraps the model (e.g. an extra InputLayer).
    return key.split(":", 1)[1] if ":" in key else key


def pair_items(
    a: list[dict[str, Any]], b: list[dict[str, Any]], group: Any
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Pair items of two structural lists (depth-first order): the longest order-preserving
    match of their ``struct_key``s without the layer position, then by order within groups.

    Positions alone mislead: a model trained inside a wrapper (a subclassed Model with a
    custom ``train_step``) numbers every layer one further, so ``3:Dense/kernel[16,2]`` is
    the first of two equal heads in one run and the second in the other. Matching the
    sequences keeps the order, so equal heads pair first with first.
    """
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    used_a: set[int] = set()
    used_b: set[int] = set()
    ka = [_strip_position(x.get("struct_key") or "") for x in a]
    kb = [_strip_position(y.get("struct_key") or "") for y in b]
    matcher = difflib.SequenceMatcher(None, ka, kb, autojunk=False)
    for block in matcher.get_matching_blocks():
        for t in range(block.size):
            i, j = block.a + t, block.b + t
            if ka[i]:
                used_a.add(i)
                used_b.add(j)
                pairs.append((a[i], b[j]))
    groups = group if isinstance(group, (list, tuple)) else [group]
    for g in groups:
        rest_b: dict[Any, list[int]] = defaultdict(list)
        for j, y in enumerate(b):
            if j not in used_b:
                rest_b[g(y)].append(j)
        for i, x in enumerate(a):
            if i in used_a:
                continue
            cand = rest_b.get(g(x))
            if cand:
                j = cand.pop(0)
                used_a.add(i)
                used_b.add(j)
                pairs.append((x, b[j]))
    pairs.sort(key=lambda p: int(p[0].get("index", 0)))
    return pairs


def _var_group(v: dict[str, Any]) -> tuple[Any, ...]:
    return (bool(v.get("trainable", True)), v.get("layer_class"), _shape(v))


def _var_shape_group(v: dict[str, Any]) -> tuple[Any, ...]:
    # Last resort: one run may not know the owning layer's class (e.g. tf-keras vs Keras 3).
    return (bool(v.get("trainable", True)), _shape(v))


def _layer_group(x: dict[str, Any]) -> Any:
    return x.get("class_name")


def _owner(v: dict[str, Any]) -> int | None:
    """The index of the layer that owns a variable (its ``layer_index``, else its struct_key's)."""
    li = v.get("layer_index")
    if li is None:
        head = str(v.get("struct_key") or "").split(":", 1)[0]
        li = int(head) if head.isdigit() else None
    return None if li is None else int(li)


def pair_layers(a: RunData, b: RunData, var_pairs: list[tuple[dict[str, Any], dict[str, Any]]]
                ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Pair layers through the variables they own, the rest by class in order.

    Layers are listed in the order the model tracks them (a subclassed model's attributes
    in creation order), which need not be the order they are called in: a head created
    before the hidden layers is the first Dense of one model and the last of a Functional
    one. Its variables pair by structure (class and shape), so the layers owning paired
    variables are the same layers; only layers without variables (Dropout, Activation)
    pair by their order among layers of their class.
    """
    la = {int(x.get("index", -1)): x for x in a.layers}
    lb = {int(y.get("index", -1)): y for y in b.layers}
    votes: dict[tuple[int, int], int] = defaultdict(int)
    for x, y in var_pairs:
        oa, ob = _owner(x), _owner(y)
        if oa in la and ob in lb and la[oa].get("class_name") == lb[ob].get("class_name"):
            votes[(oa, ob)] += 1
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    used_a: set[int] = set()
    used_b: set[int] = set()
    for (oa, ob), _n in sorted(votes.items(), key=lambda kv: (-kv[1], kv[0])):
        if oa not in used_a and ob not in used_b:
            used_a.add(oa)
            used_b.add(ob)
            pairs.append((la[oa], lb[ob]))
    rest = pair_items([x for i, x in la.items() if i not in used_a], [y for j, y in lb.items() if j not in used_b],
                      _layer_group)
    pairs += rest
    pairs.sort(key=lambda p: int(p[0].get("index", 0)))
    return pairs


@dataclass
class Alignment:
    """How two runs line up."""

    var_pairs: list[tuple[int, int]]  # (index in a, index in b), trainable and state alike
    ja: np.ndarray  # columns of a's var matrices for the trainable pairs recorded in both
    jb: np.ndarray
    sa: np.ndarray  # columns of a's state matrices for state pairs
    sb: np.ndarray
    layer_pairs: list[tuple[dict[str, Any], dict[str, Any]]]
    unpaired_a: list[int]
    unpaired_b: list[int]
    n_common: int  # steps present in both runs
    ia: np.ndarray  # rows of a's step arrays for the common steps, in step order
    ib: np.ndarray
    init_same: bool | None
    data_same: np.ndarray  # (n_common,) bool; True where both fingerprints agree
    data_known: bool
    aligned_steps: int  # leading steps with the same start and the same batches
    stochastic: str | None  # why step-level numbers are not comparable despite alignment
    stochastic_cause: str | None  # "xla", "flavour" (tf-keras vs Keras 3) or "seed" (RNG seed state)
    noise: Noise = field(default_factory=Noise)
    inputs_known: bool = True  # the inputs' fingerprints were compared, not only the labels'
    # x_b = k * x_a + c at every step (labels equal): {"k", "c", "steps", "labels_equal", ...}
    input_map: dict[str, Any] | None = None
    # the same input values in another order at every step, the labels equal: {"steps", ...}
    input_permuted: dict[str, Any] | None = None
    # the same inputs at every step, y_b = k * y_a + c: {"k", "c", "steps", "labels_equal" (inputs equal)}
    label_map: dict[str, Any] | None = None
    # the same labels at every step, the inputs transformed by no single map (per feature):
    # {"steps", "mean_a", "mean_b", "rms_a", "rms_b", "undone_by_model"}
    input_transformed: dict[str, Any] | None = None
    # what the per-variable initial fingerprints said (see init_by_variable); {} when not used
    init_detail: dict[str, Any] = field(default_factory=dict)

    @property
    def premise(self) -> str:
        """What the step-level comparisons rest on, for a finding's words."""
        if self.inputs_known:
            return "on the same inputs and weights"
        if self.input_map is not None:
            return "on the same labels and weights (inputs scaled by a map the model undoes)"
        if self.input_transformed is not None:
            return "on the same labels and weights (inputs preprocessed differently, undone by the model)"
        if self.data_known:
            return "on the same labels and weights (the inputs could not be fingerprinted)"
        return "on what the equal step-0 loss says are the same inputs and weights"

    @property
    def aligned(self) -> bool:
        return self.aligned_steps > 0


def fingerprints_equal(fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
    """Row-wise: do two (S, F) fingerprint arrays describe the same batches?

    The tracer's fingerprint is ``[sum, sum of squares, sum(w*x), count]`` of the
    batch. Two reductions of the same ``n`` float32 values in another order (XLA,
    other kernels) differ by at most about ``eps * sqrt(n) * sqrt(sum x^2)``
    (random-walk rounding of ``n`` terms of size ``|x|``), so that is the scale of
    the tolerance, with a margin of 64; a different batch moves the weighted
    sum by the order of ``sqrt(sum x^2)`` itself. Rows where either run did not
    record a fingerprint count as equal (nothing contradicts them).
    """
    eps = float(np.finfo(np.float32).eps)
    missing = np.isnan(fa).all(axis=1) | np.isnan(fb).all(axis=1)
    if fa.shape[1] >= 4 and not np.isnan(fa[:, 3]).all():
        count = np.maximum(np.abs(fa[:, 3]), 1.0)
        sumsq = np.maximum(np.abs(fa[:, 1]), np.abs(fb[:, 1]))
        scale = np.sqrt(count * sumsq)
        tol = np.stack([64 * eps * scale, 64 * eps * np.sqrt(count) * sumsq, 64 * eps * scale,
                        np.full_like(scale, 0.5)], axis=1)
        diff = np.abs(fa[:, :4] - fb[:, :4])
        same = np.all((diff <= tol) | (np.isnan(fa[:, :4]) & np.isnan(fb[:, :4])), axis=1)
    else:
        both_nan = np.isnan(fa) & np.isnan(fb)
        same = np.all(both_nan | np.isclose(fa, fb, rtol=1e-4, atol=1e-6), axis=1)
    return same | missing


def _columns(run: RunData, indices: list[int], col_index: np.ndarray) -> np.ndarray:
    pos = {int(v): j for j, v in enumerate(col_index)}
    return np.array([pos.get(i, -1) for i in indices], dtype=np.int64)


def _rng_layers(run: RunData) -> bool:
    return bool(run.rng.size and run.rng.any())


def _random_layer_classes(run: RunData, drew: bool = False) -> list[str]:
    """Layers that draw random numbers in training mode: a generator state that advances (Keras 3),
    or a training-dependent layer of a dropout/noise/random-augmentation class (tf-keras keeps
    no generator variable); ``drew``: only such a layer that ran in training mode at some step."""
    idx = set(run.state_index[run.rng].tolist()) if run.rng.size else set()
    found = {str(v.get("layer_class") or "") for v in run.variables if int(v["index"]) in idx}
    trained = {name for m, _, _ in run.modes if isinstance(m, dict) for name, on in m.items() if on} if drew else None
    for layer in run.layers:
        cls = str(layer.get("class_name") or "")
        if (layer.get("training_dependent") and ("Dropout" in cls or "Noise" in cls or cls.startswith("Random"))
                and (trained is None or run.tracked_name(layer) in trained)):
            found.add(cls)
    return sorted(c for c in found if c)


def _flavours_draw_differently(a: RunData, b: RunData) -> bool:
    """Two Keras implementations (tf-keras, Keras 3) with random layers: other random streams."""
    fa, fb = a.meta.get("keras_flavour"), b.meta.get("keras_flavour")
    return bool(fa and fb and fa != fb and (_random_layer_classes(a) or _random_layer_classes(b)))


def _step0_loss_agrees(a: RunData, b: RunData, ia_rows: np.ndarray, ib_rows: np.ndarray, noise: Noise) -> bool:
    if not len(ia_rows):
        return False
    la, lb = a.loss[ia_rows[0]], b.loss[ib_rows[0]]
    return bool(np.isfinite(la) and float(rel(la, lb)) <= noise.tol0)


def _uses_xla(run: RunData) -> bool:
    modes = {str(m) for m, _, _ in run.exec_modes if m}
    modes.add(str(run.meta.get("execution_mode") or ""))
    return "xla" in modes


def _labels_inferred(a: RunData, b: RunData) -> bool:
    """Did either run take its label fingerprints from a hand-written loss?"""
    return any(bool((r.meta.get("extra") or {}).get("labels_inferred")) for r in (a, b))


def _init_words(d: dict[str, Any]) -> str:
    """What the per-variable initial fingerprints said, for the report's noise section."""
    k = d["weights_compared"]
    said = (f"{d['weights_differ']} of {k} paired trainable variables start from other values"
            if d["weights_differ"] else f"the {k} paired trainable variables start from equal values")
    if d["state_differs"]:
        said += f"; non-trainable state starts elsewhere in {', '.join(d['state_differs'])}"
    if d["rng_state_differs"]:
        said += (f"; RNG seed state differs ({', '.join(d['rng_state_differs'])}): random layers draw "
                 "other numbers")
    return said


def _fingerprint_count(fp: Any) -> int | None:
    """How many variables an init fingerprint (``"<count>:<hash>"``) covers; None if unknown."""
    head = str(fp).split(":", 1)[0] if fp and ":" in str(fp) else ""
    return int(head) if head.isdigit() else None


def init_by_variable(a: RunData, b: RunData, pairs: list[tuple[int, int]]) -> tuple[bool | None, dict[str, Any]]:
    """Same start, decided on the paired variables by their per-variable initial fingerprints
    (``RunInfo.init_fingerprints``); None when either run has none for its trainable ones.

    A random layer's seed state is left out of the decision and reported: a model whose
    weights were copied with ``set_weights`` keeps its own Dropout RNG seed (not a weight).
    Other non-trainable state decides with the weights (adapted Normalization statistics).
    """
    fa, fb = a.meta.get("init_fingerprints") or [], b.meta.get("init_fingerprints") or []
    if not fa or not fb:
        return None, {}
    trainable_a = {int(v["index"]): bool(v.get("trainable", True)) for v in a.variables}
    rng_a = {int(v): bool(r) for v, r in zip(a.state_index, a.rng, strict=True)}
    weights = differ = 0
    differ_names: list[str] = []
    state_differ: list[str] = []
    rng_differ: list[str] = []
    for ia, ib in pairs:
        x = fa[ia] if ia < len(fa) else None
        y = fb[ib] if ib < len(fb) else None
        if x is None or y is None:
            continue
        if trainable_a.get(ia, True):
            weights += 1
            if x != y:
                differ += 1
                differ_names.append(a.var_name(ia))
        elif x != y:
            (rng_differ if rng_a.get(ia) else state_differ).append(a.var_name(ia))
    if not weights:
        return None, {}
    # State other than RNG seeds is part of the start too (a Normalization layer adapted on
    # other data computes another forward pass); a seed state only changes the random draws.
    return differ == 0 and not state_differ, {"weights_compared": weights, "weights_differ": differ,
                         "weights_differ_first": differ_names[:6], "state_differs": state_differ[:6],
                         "rng_state_differs": rng_differ[:6]}


def _in_call_order(run: RunData, other: RunData) -> list[dict[str, Any]]:
    """The run's variables in the order the forward passes first called their layers
    (``extra.layer_call_order``), each layer's own in inventory order; the inventory's order
    (the model's attributes, depth first) when either run did not record it. A subclassed model
    creates its layers in any order, and equal-shaped layers created the other way round would
    pair first with second; the order they are called in is the model's structure."""
    order = (run.meta.get("extra") or {}).get("layer_call_order") or []
    if not order or not (other.meta.get("extra") or {}).get("layer_call_order"):
        return run.variables
    rank: dict[str, int] = {}
    for i, name in enumerate(order):
        rank.setdefault(str(name), i)
    return sorted(run.variables, key=lambda v: (rank.get(str(v.get("layer") or ""), len(order)), int(v["index"])))


def align(a: RunData, b: RunData) -> Alignment:
    """Pair variables, layers and steps of two runs."""
    var_pairs_d = pair_items(_in_call_order(a, b), _in_call_order(b, a), [_var_group, _var_shape_group])
    var_pairs = [(int(x["index"]), int(y["index"])) for x, y in var_pairs_d]
    paired_a = {p[0] for p in var_pairs}
    paired_b = {p[1] for p in var_pairs}
    ja = _columns(a, [p[0] for p in var_pairs], a.var_index)
    jb = _columns(b, [p[1] for p in var_pairs], b.var_index)
    keep = (ja >= 0) & (jb >= 0)
    sa = _columns(a, [p[0] for p in var_pairs], a.state_index)
    sb = _columns(b, [p[1] for p in var_pairs], b.state_index)
    skeep = (sa >= 0) & (sb >= 0)
    layer_pairs = pair_layers(a, b, var_pairs_d)

    common, ia_rows, ib_rows = np.intersect1d(a.step, b.step, assume_unique=True, return_indices=True)
    n = int(common.size)
    fp_ia, fp_ib = a.meta.get("init_fingerprint"), b.meta.get("init_fingerprint")
    init_same = None if not fp_ia or not fp_ib else fp_ia == fp_ib
    ca, cb = _fingerprint_count(fp_ia), _fingerprint_count(fp_ib)
    init_sets_differ = bool(init_same is False and ca != cb
                            and (len(a.variables) != len(b.variables)
                                 or (ca is not None and ca < len(a.variables))
                                 or (cb is not None and cb < len(b.variables))))
    by_variable, init_detail = init_by_variable(a, b, var_pairs)
    if by_variable is not None:  # the paired variables decide; the hash over all is moot
        init_same, init_sets_differ = by_variable, False
    if init_sets_differ:
        # The fingerprint hashes every variable of the models (non-trainable state too): over
        # different sets of variables (a Normalization layer's mean and variance in one model
        # only, or a model whose layers were built after its fingerprint was taken: fewer
        # variables hashed than the run's inventory holds) unequal hashes say nothing about the
        # paired trainable weights ...
        init_same = None
    fa, fb = a.x_fp[ia_rows], b.x_fp[ib_rows]
    ya, yb = a.y_fp[ia_rows], b.y_fp[ib_rows]
    has_x = bool(n and (~np.isnan(fa[:, 0])).any() and (~np.isnan(fb[:, 0])).any())
    has_y = bool(n and (~np.isnan(ya[:, 0])).any() and (~np.isnan(yb[:, 0])).any())
    if has_y and has_x and ya.shape[1] >= 4 and not np.any(ya[:, 3] == yb[:, 3]):
        # Labels of another size at every step: the same examples with another label
        # encoding (sparse vs one-hot); the inputs decide whether the batches match.
        has_y = False
    if has_y and has_x and _labels_inferred(a, b) and not fingerprints_equal(ya[:1], yb[:1])[0]:
        # Labels taken from a hand-written loss are what the loss combined with the
        # output (log(1 + y), y * 0.9 + 0.05): unequal from the first step on, that is
        # another encoding of the labels; the inputs decide. Equal at first and unequal
        # later, the labels themselves changed.
        has_y = False
    data_known = has_x or has_y
    data_same = np.ones(n, dtype=bool) if data_known else np.zeros(n, dtype=bool)
    if has_x:
        data_same &= fingerprints_equal(fa, fb)
    if has_y:
        data_same &= fingerprints_equal(ya, yb)
    noise = measure_noise(a, b, n)
    if init_sets_differ:
        # ... unless the step-0 losses agree within float noise (the same weights on the same
        # first batch); otherwise the unequal hashes stand.
        if not _step0_loss_agrees(a, b, ia_rows, ib_rows, noise) and not _flavours_draw_differently(a, b):
            init_same, init_sets_differ = False, False
    witness = None
    imap = None
    if has_x and n and not data_same[0]:
        imap = input_map(fa, fb, ya, yb)
        if imap is not None and init_same is not False:
            # The same labels with inputs scaled: a model that undoes the scaling itself (a
            # Rescaling layer in one run) computes the same loss from the same weights.
            la, lb = a.loss[ia_rows[0]], b.loss[ib_rows[0]]
            imap["undone_by_model"] = bool(np.isfinite(la) and float(rel(la, lb)) <= noise.tol0)
            if imap["undone_by_model"]:
                data_same = fingerprints_equal(ya, yb) if has_y else np.ones(n, dtype=bool)
                has_x = False
    perm = None
    if has_x and has_y and n and imap is None and not data_same.all():
        perm = input_permutation(fa, fb, ya, yb)
    transformed = None
    if has_x and has_y and n and imap is None and perm is None and not data_same.all():
        transformed = input_transform(fa, fb, ya, yb)
        if transformed is not None and init_same is not False:
            # The same examples and labels, each feature scaled differently: a model that
            # normalises its inputs itself (a Normalization layer adapted in one run) computes
            # the same loss from the same weights; the steps then align on the labels.
            transformed["undone_by_model"] = _step0_loss_agrees(a, b, ia_rows, ib_rows, noise)
            if transformed["undone_by_model"]:
                data_same = fingerprints_equal(ya, yb)
                has_x = False
    lmap = None
    label_undone = None
    if (has_x and has_y and n and imap is None and perm is None and transformed is None
            and not data_same.all() and fingerprints_equal(fa, fb).all()):
        # The same inputs, labels related by one map: the targets scaled or shifted in one run.
        lmap = input_map(ya, yb, fa, fb)
        if lmap is None:
            # ... or transformed column by column (targets standardised per column in one run):
            # the same test as for the inputs, with the inputs as the witness of the same examples.
            ltr = input_transform(ya, yb, fa, fb)
            if ltr is not None:
                lmap = {"k": None, "c": None, "steps": ltr["steps"], "per_column": True,
                        "mean_a": ltr["mean_a"], "mean_b": ltr["mean_b"], "rms_a": ltr["rms_a"],
                        "rms_b": ltr["rms_b"]}
        if lmap is not None and init_same is not False and _step0_loss_agrees(a, b, ia_rows, ib_rows, noise):
            # ... unless the losses agree: the loss of one run undoes the map (targets smoothed by
            # hand against a loss's label_smoothing): the steps align on the inputs.
            lmap = None
            data_same = fingerprints_equal(fa, fb)
            al_note = ("the labels differ by one map at every step while the inputs are equal, and the equal "
                       "step-0 loss says the loss undoes it (e.g. targets smoothed by hand against a loss's "
                       "label_smoothing): steps aligned on the inputs")
            label_undone = al_note
    if init_same is False:
        aligned_steps = 0
    elif not data_known:
        # No batch fingerprints on one side: a step-0 loss equal within float noise is
        # the witness that both runs started from the same weights on the same batch
        # (two different batches or weights agreeing to ~1e-5 is not a coincidence).
        la, lb = (a.loss[ia_rows[0]], b.loss[ib_rows[0]]) if n else (np.nan, np.nan)
        agree = bool(n and np.isfinite(la) and float(rel(la, lb)) <= noise.tol0)
        aligned_steps = n if agree else 0
        witness = ("no batch fingerprints in one run: alignment "
                   + ("assumed from the equal step-0 loss" if agree else "unknown (step-0 losses differ)"))
    else:
        bad = np.flatnonzero(~data_same)
        aligned_steps = int(bad[0]) if bad.size else n
    stochastic = stochastic_cause = None
    if aligned_steps and (_rng_layers(a) or _rng_layers(b)) and _uses_xla(a) != _uses_xla(b):
        stochastic_cause = "xla"
        stochastic = (
            "random layers (RNG state changes every step) draw different numbers under XLA "
            "than without it, so the runs are not bit-comparable step by step"
        )
    elif aligned_steps and _flavours_draw_differently(a, b) and not _step0_loss_agrees(a, b, ia_rows, ib_rows, noise):
        # Equal step-0 losses say the draws did not matter there (inference mode, rate 0):
        # the steps stay comparable.
        stochastic_cause = "flavour"
        stochastic = (
            f"random layers ({', '.join(sorted(set(_random_layer_classes(a) + _random_layer_classes(b))))}) draw "
            "their numbers "
            f"from different generators in {a.meta.get('keras_flavour')} and {b.meta.get('keras_flavour')}, so "
            "the runs are not bit-comparable step by step"
        )
    elif (aligned_steps and init_same and init_detail.get("rng_state_differs")
          and not _step0_loss_agrees(a, b, ia_rows, ib_rows, noise)):
        # The same weights, the random layers seeded elsewhere (weights copied with set_weights,
        # which leaves a SeedGenerator's state out): their draws differ from the first step.
        stochastic_cause = "seed"
        stochastic = (
            f"the random layers' seed state differs from the start ({', '.join(init_detail['rng_state_differs'])}), "
            "so they draw other numbers (other dropout masks) and the runs are not bit-comparable step by step"
        )
    al = Alignment(
        var_pairs=var_pairs,
        ja=ja[keep],
        jb=jb[keep],
        sa=sa[skeep],
        sb=sb[skeep],
        layer_pairs=layer_pairs,
        unpaired_a=[int(v["index"]) for v in a.variables if int(v["index"]) not in paired_a],
        unpaired_b=[int(v["index"]) for v in b.variables if int(v["index"]) not in paired_b],
        n_common=n,
        ia=ia_rows.astype(np.int64),
        ib=ib_rows.astype(np.int64),
        init_same=init_same,
        init_detail=init_detail,
        data_same=data_same,
        data_known=data_known,
        aligned_steps=aligned_steps,
        stochastic=stochastic,
        stochastic_cause=stochastic_cause,
        inputs_known=has_x,
        input_map=imap,
        input_permuted=perm,
        input_transformed=transformed,
        label_map=lmap,
    )
    al.noise = noise
    if imap is not None and imap.get("undone_by_model"):
        al.noise.observed["inputs"] = (f"x_b = {imap['k']:.6g} * x_a + {imap['c']:.6g} at every step with equal "
                                       "labels, and the equal step-0 loss says the model undoes it: steps "
                                       "aligned on the labels")
    if transformed is not None and transformed.get("undone_by_model"):
        al.noise.observed["inputs"] = ("the inputs differ at every step by no single map while the labels are "
                                       "equal, and the equal step-0 loss says the model undoes it: steps "
                                       "aligned on the labels")
    if label_undone:
        al.noise.observed["labels"] = label_undone
    if witness:
        al.noise.observed["data_alignment"] = witness
    if n and init_sets_differ:
        al.noise.observed["init_fingerprint"] = (
            f"over different sets of variables ({_fingerprint_count(fp_ia)} vs {_fingerprint_count(fp_ib)}): "
            "not compared; same start assumed from the same first batch"
            + ("" if stochastic is None else " (random layers of two Keras implementations: not checked)"))
    elif n and init_same is None:
        al.noise.observed["init_fingerprint"] = "not recorded: same start assumed from the same first batch"
    elif init_detail:
        al.noise.observed["init_fingerprint"] = _init_words(init_detail)
    return al
