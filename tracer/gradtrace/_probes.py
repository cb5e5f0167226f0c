"""Probes: what an optimizer step carries besides its gradients.

While a trace is active these hooks watch the user's training and put what they
see into the step scope (:mod:`gradtrace._scope`); the optimizer hook takes it
with the step, and :func:`decode` turns the read-back numbers into
:class:`~gradtrace.schema.StepRecord` fields.

What is captured, and where:

- ``Layer.__call__`` (class level, Keras 3 and tf-keras): the outermost call of a
  model registers it with the run (``run.register_model``), fingerprints its
  input (``x_fp``, ``batch_size``), records the output shape (``y_pred_shape``)
  and ``sum(model.losses)`` (``reg_loss``), and opens the *loss window*.
- The loss window: an op callback (``tensorflow/python/framework/op_callbacks.py``)
  that lives from the root model's return to ``tape.gradient`` of the first eager
  step, or while a ``tf.function`` is being traced. It records every elementwise
  binary op whose output is larger than both inputs (``broadcasts``: a ``(N,)``
  label against a ``(N, 1)`` output gives ``(N, N)``). It is never on in the
  steady state.
- The ``training`` value each training-dependent leaf layer received
  (``modes``), hooked where Keras resolves it (Keras 3
  ``Layer._resolve_and_populate_arg``, tf-keras
  ``Layer._get_propagated_call_context_arguments``), and the layers that ran with
  ``trainable=False`` (``frozen``: BatchNormalization then runs in inference mode).
- ``Loss.__call__`` (class level, both flavours): class, reduction, from_logits,
  the shapes of ``y_true``/``y_pred``, sample weights, per-sample statistics
  (``loss_info``) and, in tape loops, the label fingerprint ``y_fp``.
- ``Model.fit`` (class level): fit's arguments (``RunInfo.fit``), and an
  instance wrapper of ``train_step`` that fingerprints fit's ``data``; after the
  first train step the compiled loss and the *resolved* metric classes.
- Loss scale optimizers: the scale the loss carried and whether the step was
  skipped for non-finite gradients.

Per-step numbers are graph ops (put as tensors); Python facts fixed for a trace
are statics. Everything is undone by the callable :func:`install` returns.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import inspect
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from gradtrace import _callargs, _meta, _outside, _scope

logger = logging.getLogger("gradtrace.probes")

# Elementwise binary ops (TensorFlow op types) whose inputs broadcast NumPy-style.
_ELEMENTWISE = frozenset(
    {
        "Add", "AddV2", "Sub", "Mul", "RealDiv", "Div", "DivNoNan", "FloorDiv",
        "FloorMod", "TruncateDiv", "TruncateMod", "SquaredDifference", "Maximum",
        "Minimum", "Pow", "Xdivy", "Xlogy", "Xlog1py", "MulNoNan", "Atan2",
        "Equal", "NotEqual", "Less", "LessEqual", "Greater", "GreaterEqual",
        "LogicalAnd", "LogicalOr", "BitwiseAnd", "BitwiseOr", "BitwiseXor",
    }
)  # fmt: skip

MAX_BROADCASTS = 16  # per step; the first ones are the informative ones
MAX_CALL_ORDER = 4096  # layers kept in extra.layer_call_order
FP_LEN = 4  # fingerprint: sum, sum of squares, fixed-weight projection, count

# Scope keys (shared only between this module's hooks and decode()).
K_MODE = "probe.mode:"
K_FROZEN = "probe.frozen:"
K_LOSS_INFO = "probe.loss_info"
MAX_LOSS_CALLS = 32  # Keras loss calls of one step kept in loss_info.calls
MAX_FIT_CALLS = 32  # fit() calls of a run kept in RunInfo.fit_calls
K_LOSS_PS = "probe.loss_ps"
K_LOSS_W = "probe.loss_weights"
K_LOSS_OUT_MASK = "probe.loss_output_mask"  # the mask of y_pred a loss function did not apply
K_BROADCASTS = "probe.broadcasts"
K_Y_PRED_SHAPE = "probe.y_pred_shape"
K_BATCH = "probe.batch_size"
K_X_FP = "probe.x_fp"
K_Y_FP = "probe.y_fp"
K_REG = "probe.reg_loss"
K_SCALE = "probe.loss_scale"
K_SKIPPED = "probe.skipped"
K_UNSCALED = "probe.unscaled_loss"
K_LOSS_ABSENT = "probe.loss_absent"  # 1: the step's loss is unknown (not a NaN loss), see _hooks._from_stash
K_LOSS_REACH = "probe.loss_reach"  # a default that marks each loss call's in_target at take()
REACH_OPS = 50_000  # ops followed back from tape.gradient's target before giving up


# --------------------------------------------------------------------------- helpers


def _snake_to_camel(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in name.split("_") if p)


def _shape_of(t: Any) -> list[int | None] | None:
    shape = getattr(t, "shape", None)
    if shape is None:
        return None
    try:
        dims = shape.as_list() if hasattr(shape, "as_list") else list(shape)
    except ValueError:  # unknown rank
        return None
    return [None if d is None else int(d) for d in dims]


def _first_tensor(x: Any) -> Any:
    import tensorflow as tf

    for t in tf.nest.flatten(x):
        if hasattr(t, "shape") and hasattr(t, "dtype"):
            return t
    return None


# Ops that hand a tensor on unchanged in value, and what the op that computed a loss's y_pred says
# it is: probabilities from a softmax/sigmoid, or logits from a layer without an activation (its
# matmul/convolution plus bias).
# Keras cross-entropies (the class names describe_loss reports), which read y_pred as
# probabilities unless from_logits=True.
CROSS_ENTROPIES = frozenset({"CategoricalCrossentropy", "SparseCategoricalCrossentropy", "BinaryCrossentropy",
                              "BinaryFocalCrossentropy", "CategoricalFocalCrossentropy"})
_SAME_VALUE_OPS = frozenset({"Identity", "Cast", "Reshape", "Squeeze", "ExpandDims", "EnsureShape"})
_PROB_OPS = {"Softmax": "softmax", "Sigmoid": "sigmoid"}
# Activations whose outputs are bounded on one side or both (a regression loss's targets outside
# that range cannot be reached): tf.nn.relu, relu6, softplus, exp, tanh as the graph names them.
_BOUNDED_OPS = {"Relu": "relu", "Relu6": "relu6", "Softplus": "softplus", "Exp": "exponential", "Tanh": "tanh"}
_LINEAR_OPS = frozenset({"BiasAdd", "MatMul", "BatchMatMulV2", "BatchMatMulV3", "AddV2", "Add", "Einsum",
                         "Conv2D", "Conv3D", "DepthwiseConv2dNative"})


def pred_activation(y_pred: Any) -> str | None:
    """"softmax", "sigmoid", "linear", or a bounded activation of :data:`_BOUNDED_OPS` ("relu",
    "tanh", ...) for a graph tensor ``y_pred`` computed by that kind of op (through ops that only
    cast or reshape it); None eagerly (a value has no producer) or when another op computed it."""
    import tensorflow as tf

    if tf.executing_eagerly():
        return None
    t = _first_tensor(y_pred)
    if t is None or isinstance(t, tf.Variable):
        return None
    try:
        op = t.op
        for _ in range(8):
            if op is None:
                return None
            if op.type in _PROB_OPS:
                return _PROB_OPS[op.type]
            if op.type in _BOUNDED_OPS:
                return _BOUNDED_OPS[op.type]
            if op.type in _LINEAR_OPS:
                return "linear"
            if op.type not in _SAME_VALUE_OPS or not op.inputs:
                return None
            op = op.inputs[0].op
    except (AttributeError, ValueError):  # an eager tensor has no op
        return None
    return None


def _is_symbolic(x: Any) -> bool:
    import tensorflow as tf

    try:
        flat = tf.nest.flatten(x)
    except Exception:  # noqa: BLE001 - odd user structures are simply not symbolic
        return False
    return any(type(t).__name__ == "KerasTensor" for t in flat)


_STRING_BUCKETS = 1 << 24  # a string's hash stays an exact float32


def _numeric_flat(x: Any) -> list[Any]:
    """Every numeric leaf of ``x`` as a flat float32 tensor; a string leaf (text fed to a
    TextVectorization or StringLookup inside the model) as its strings' hashes."""
    import tensorflow as tf

    out = []
    for leaf in tf.nest.flatten(x):
        if leaf is None:
            continue
        if isinstance(leaf, (tf.RaggedTensor, tf.SparseTensor)):
            leaf = leaf.values
        try:
            t = tf.convert_to_tensor(leaf)
        except (TypeError, ValueError):
            continue
        if t.dtype == tf.string:
            # FarmHash fingerprints (the same in every process), kept exact in float32.
            t = tf.strings.to_hash_bucket_fast(t, _STRING_BUCKETS)
        elif not (t.dtype.is_floating or t.dtype.is_integer or t.dtype == tf.bool):
            continue
        out.append(tf.reshape(tf.cast(t, tf.float32), [-1]))
    return out


FP_POSITIONS = 1 << 16  # positions the projection weighs: its cost is bounded for big batches
_FP_LOCK = threading.Lock()
_FP_NP: dict[int, Any] = {}  # n -> the first n weights (numpy)
_FP_EAGER: dict[int, Any] = {}  # n -> the same as an eager tensor
_FP_CACHED = 32  # distinct sizes kept (each at most FP_POSITIONS floats)


def micro_batch_done() -> None:
    """A ``tape.gradient`` call of variables ended a micro-batch of the current step.

    Gradients accumulated over micro-batches and applied once: the step records the loss of
    the last gradient call (the one :func:`gradtrace._hooks._find_tape_call` falls back to),
    so the next model call under a tape and the next Keras loss put the step's inputs,
    labels and loss details afresh instead of keeping the first micro-batch's (``x_fp``) or
    listing every micro-batch's loss call as another output's (``loss_info.calls``).
    A gradient of inputs (a gradient penalty) is no such end: the hooks call this only for
    a call with variable sources.
    """
    marks = _scope.current().marks
    marks.discard(K_X_FP)
    marks.discard(K_LOSS_INFO)


def _fp_weights(n: int) -> Any:
    """The projection's weights for ``n`` positions as a tensor: a constant of the graph
    being built (no captured input), or one cached eager tensor."""
    import numpy as np
    import tensorflow as tf

    eager = tf.executing_eagerly()
    with _FP_LOCK:
        if eager and n in _FP_EAGER:
            return _FP_EAGER[n]
        w = _FP_NP.get(n)
        if w is None:
            if len(_FP_NP) >= _FP_CACHED:
                _FP_NP.clear()
                _FP_EAGER.clear()
            idx = np.arange(n, dtype=np.int64)
            w = _FP_NP[n] = ((idx * 7919 + 13) % 10007).astype(np.float32) / np.float32(10007.0) - np.float32(0.5)
        if not eager:
            return tf.constant(w)
        t = _FP_EAGER[n] = tf.constant(w)
        return t


def fingerprint(x: Any, leafwise: bool = False) -> Any:
    """A float32 vector of :data:`FP_LEN` numbers describing a batch, as graph ops.

    ``[sum, sum of squares, sum(w * x), count]`` over every numeric leaf of ``x``
    cast to float32 and flattened (``leafwise``: of each leaf, summed over the leaves, so
    the order of the leaves does not matter: labels of several outputs, which a loop hands
    to its losses in any order), with data-independent weights
    ``w_i = ((7919 i + 13) mod 10007) / 10007 - 0.5`` for the first
    :data:`FP_POSITIONS` positions (the same on every device and under XLA). Equal
    batches give equal fingerprints up to summation order; a different batch changes
    the projection with high probability even when the sums agree (a permutation).
    The weights are a constant, so a step pays three reductions and no index
    arithmetic. Returns None when ``x`` has no numeric leaf.
    """
    import tensorflow as tf

    flat = _numeric_flat(x)
    if not flat:
        return None
    if leafwise and len(flat) > 1:
        return tf.add_n([_leaf_fingerprint(v) for v in flat])
    return _leaf_fingerprint(flat[0] if len(flat) == 1 else tf.concat(flat, axis=0))


def _leaf_fingerprint(v: Any) -> Any:
    """:func:`fingerprint` of one flat float32 tensor."""
    import tensorflow as tf

    n_static = v.shape[0]
    if n_static is not None:
        m = min(int(n_static), FP_POSITIONS)
        head = v if m == n_static else v[:m]
        proj = tf.reduce_sum(head * _fp_weights(m)) if m else tf.constant(0.0)
        count = tf.constant(float(n_static))
    else:
        n = tf.size(v)
        m_t = tf.minimum(n, FP_POSITIONS)
        proj = tf.reduce_sum(v[:m_t] * _fp_weights(FP_POSITIONS)[:m_t])
        count = tf.cast(n, tf.float32)
    return tf.stack([tf.reduce_sum(v), tf.reduce_sum(v * v), proj, count])


def _by_input_name(model: Any, x: Any) -> Any:
    """A list or tuple of a functional model's inputs as a dict keyed by the model's input
    names (Keras matches a dict's keys to the Inputs' names and a list by position): fit() on a
    dict and a loop passing a list in the model's order then fingerprint alike, while inputs
    swapped between two Inputs still differ. Anything else as it is."""
    if model is None or not isinstance(x, (list, tuple)) or len(x) < 2:
        return x
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):  # a subclassed model: no Inputs
        return x
    if not isinstance(inputs, (list, tuple)) or len(inputs) != len(x):
        return x
    # keras/src/models/functional.py Functional._inputs_struct (tf-keras: Functional._nested_inputs):
    # a model built on a dict of Inputs takes its list positionally in another order
    for attr in ("_inputs_struct", "_nested_inputs"):
        if isinstance(getattr(model, attr, None), dict):
            return x
    names = [getattr(t, "name", None) for t in inputs]
    if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        return x
    return dict(zip(names, x, strict=True))


def _leading_dim(x: Any) -> tuple[int | None, Any]:
    """``(static batch size, None)`` or ``(None, dynamic batch size tensor)``."""
    import tensorflow as tf

    t = _first_tensor(x)
    if t is None:
        try:
            t = tf.convert_to_tensor(tf.nest.flatten(x)[0])
        except (TypeError, ValueError, IndexError):
            return None, None
    shape = _shape_of(t)
    if not shape:
        return None, None
    if shape[0] is not None:
        return shape[0], None
    return None, tf.cast(tf.shape(t)[0], tf.float32)


def _outer_broadcast(a: list[int | None], b: list[int | None], out: list[int | None]) -> bool:
    """True when *both* inputs were expanded along some axis to make ``out``.

    Shapes are right-aligned (NumPy rules); an input is expanded along an axis
    where it has size 1 (or lacks the axis) and the output does not. Unknown
    sizes count as "not 1". A scalar combined with a tensor is not an outer
    broadcast; ``(N,)`` with ``(N, 1)`` into ``(N, N)`` is.
    """
    rank = len(out)
    if len(a) > rank or len(b) > rank:
        return False

    def expanded(s: list[int | None]) -> bool:
        padded = [1] * (rank - len(s)) + list(s)
        return any(d == 1 and o != 1 for d, o in zip(padded, out, strict=True))

    return expanded(a) and expanded(b)


_WALK_LIMIT = 4096  # ops followed back from a loss (the loss and a small model's forward pass)


def loss_graph_broadcasts(targets: list[Any]) -> list[dict[str, Any]]:
    """Outer broadcasts on the way to the graph tensors ``targets`` (the losses ``tape.gradient``
    is handed in a ``tf.function``), for a step where no Keras model's return opened a
    :class:`_Window`: a ``tf.Module`` or raw variables (TensorFlow's "basic training loops").

    Without a model output to start from, an elementwise op counts when exactly one of its two
    operands is computed from variables (the prediction) and the other from none (the labels):
    a ``(N,)`` target against a ``(N, 1)`` prediction. Terms pairing two predictions (a contrastive
    loss's pairwise distances) are computed from variables on both sides and are not flagged.
    Runs at trace time only; walks at most ``_WALK_LIMIT`` ops back."""
    ops: list[Any] = []
    seen: set[int] = set()
    todo = [t.op for t in targets if getattr(t, "op", None) is not None]
    while todo and len(ops) < _WALK_LIMIT:
        op = todo.pop()
        if id(op) in seen:
            continue
        seen.add(id(op))
        ops.append(op)
        todo.extend(t.op for t in op.inputs)
    reads: dict[int, bool] = {}

    def from_variables(op: Any) -> bool:
        # iteratively: whether any op back from ``op`` reads a variable (a resource input)
        stack = [op]
        while stack:
            cur = stack[-1]
            if id(cur) in reads:
                stack.pop()
                continue
            if any(t.dtype.name == "resource" for t in cur.inputs):
                reads[id(cur)] = True
                stack.pop()
                continue
            pending = [t.op for t in cur.inputs if id(t.op) not in reads and id(t.op) in seen]
            if pending:
                stack.extend(pending)
                continue
            reads[id(cur)] = any(reads.get(id(t.op), False) for t in cur.inputs)
            stack.pop()
        return reads[id(op)]

    found: list[dict[str, Any]] = []
    for op in ops:
        if op.type not in _ELEMENTWISE or len(op.inputs) != 2 or len(op.outputs) != 1:
            continue
        a, b, out = (_shape_of(op.inputs[0]), _shape_of(op.inputs[1]), _shape_of(op.outputs[0]))
        if a is None or b is None or out is None or not _outer_broadcast(a, b, out):
            continue
        if from_variables(op.inputs[0].op) != from_variables(op.inputs[1].op):
            found.append({"op": op.type, "a_shape": a, "b_shape": b, "out_shape": out})
            if len(found) >= MAX_BROADCASTS:
                break
    return found


def module_broadcasts(targets: list[Any]) -> None:
    """At ``tape.gradient`` inside a ``tf.function``: a step whose loss no Keras model's window
    watched gets the broadcasts :func:`loss_graph_broadcasts` finds on the way to its targets."""
    import tensorflow as tf

    if tf.executing_eagerly() or _element_loop():
        return
    scope = _scope.current()
    if K_BROADCASTS not in scope.statics:
        scope.put_static(K_BROADCASTS, loss_graph_broadcasts(targets))


def _describe_fn_object(obj: Any) -> tuple[str, str | None]:
    """Class name of a loss/metric, seeing through function wrappers.

    ``LossFunctionWrapper(mean_squared_error)`` and ``MeanMetricWrapper(
    sparse_categorical_accuracy)`` (what ``"mse"`` / ``"accuracy"`` strings
    resolve to) are reported as ``MeanSquaredError`` /
    ``SparseCategoricalAccuracy`` so both flavours and both spellings compare.
    """
    cls = type(obj).__name__
    fn = getattr(obj, "fn", None) or getattr(obj, "_fn", None)
    fn_name = getattr(fn, "__name__", None) if callable(fn) else None
    if cls in ("LossFunctionWrapper", "MeanMetricWrapper") and fn_name:
        return _snake_to_camel(fn_name), fn_name
    return cls, fn_name


def _reduction_name(loss: Any) -> str | None:
    """A loss object's reduction as Keras names it; Keras 3's ``reduction=None`` reduces nothing
    (keras/src/losses/loss.py ``reduce_values``), which tf-keras spells ``"none"``."""
    if loss is None or not hasattr(loss, "reduction"):
        return None
    r = loss.reduction
    return "none" if r is None else str(getattr(r, "value", r))


def describe_loss(loss: Any) -> dict[str, Any]:
    """``{"class", "name", "reduction", "from_logits"}`` of a Keras loss object."""
    cls, fn_name = _describe_fn_object(loss)
    fn_kwargs = getattr(loss, "_fn_kwargs", None) or {}
    from_logits = fn_kwargs.get("from_logits", getattr(loss, "from_logits", None))
    if from_logits is None:
        # A string loss ("sparse_categorical_crossentropy") wraps the function with
        # no kwargs: the function's own default is what runs.
        fn = getattr(loss, "fn", None) or getattr(loss, "_fn", None)
        try:
            param = inspect.signature(fn).parameters.get("from_logits") if callable(fn) else None
        except (TypeError, ValueError):
            param = None
        if param is not None and param.default is not inspect.Parameter.empty:
            from_logits = param.default
    out: dict[str, Any] = {
        "class": cls,
        "name": getattr(loss, "name", None),
        "reduction": _reduction_name(loss),
        "from_logits": None if from_logits is None else bool(from_logits),
    }
    if fn_name:
        out["fn"] = fn_name
    args = _loss_args(loss)
    if args:
        out["args"] = args
    return out


_NOT_ARGS = {"from_logits", "reduction", "name", "dtype", "y_true", "y_pred", "sample_weight", "mask"}


@functools.lru_cache(maxsize=256)
def _defaults(fn: Any) -> tuple[tuple[str, Any], ...]:
    """A function's keyword defaults (once per function: an eager loop describes its loss
    every step)."""
    try:
        return tuple((name, p.default) for name, p in inspect.signature(fn).parameters.items()
                     if p.default is not inspect.Parameter.empty)
    except (TypeError, ValueError):
        return ()


def _loss_args(loss: Any) -> dict[str, Any] | None:
    """The scalar arguments the loss function runs with (label_smoothing, delta, axis, ...):
    its signature's defaults overridden by what the loss object passes
    (keras/src/losses/losses.py and tf_keras/src/losses.py ``LossFunctionWrapper._fn_kwargs``)."""
    fn = getattr(loss, "fn", None) or getattr(loss, "_fn", None)
    if not callable(fn):
        return None
    try:
        out = dict(_defaults(fn))
    except TypeError:  # an unhashable callable: no cache
        out = dict(_defaults.__wrapped__(fn))
    out.update(getattr(loss, "_fn_kwargs", None) or {})
    return {k: v for k, v in sorted(out.items())[:16]
            if k not in _NOT_ARGS and (v is None or isinstance(v, (bool, int, float, str)))} or None


def _compiled_losses(model: Any) -> list[Any]:
    """The loss objects fit() resolved (Keras 3 CompileLoss / tf-keras LossesContainer)."""
    cl = getattr(model, "_compile_loss", None)  # Keras 3 trainers/compile_utils.py CompileLoss
    if cl is not None:
        flat = getattr(cl, "_flat_losses", None) or []
        return [getattr(x, "loss", x) for x in flat if x is not None]
    cl = getattr(model, "compiled_loss", None)  # tf-keras engine/compile_utils.py LossesContainer
    if cl is not None:
        return [x for x in (getattr(cl, "_losses", None) or []) if x is not None]
    return []


def _compiled_loss_weights(model: Any) -> list[float | None]:
    """The per-output ``loss_weights`` given to ``compile`` (one per resolved loss), or []."""
    # Keras 3: keras/src/trainers/compile_utils.py CompileLoss.build keeps one
    # Loss(path, loss, loss_weights, name) namedtuple per output in _flat_losses.
    cl = getattr(model, "_compile_loss", None)
    if cl is not None:
        raw = [getattr(x, "loss_weights", getattr(x, "weight", None))
               for x in (getattr(cl, "_flat_losses", None) or []) if x is not None]
    else:
        cl = getattr(model, "compiled_loss", None)  # tf-keras: flattened after build
        raw = list(getattr(cl, "_loss_weights", None) or []) if cl is not None else []
    out: list[float | None] = []
    for w in raw:
        try:
            out.append(None if w is None else float(w))
        except (TypeError, ValueError):
            out.append(None)
    return out if any(w is not None and w != 1.0 for w in out) else []


def _compiled_metrics(model: Any) -> list[dict[str, Any]]:
    """``[{"name", "class"}]`` of the metrics fit() resolved (``"accuracy"`` → a class)."""
    found: list[Any] = []
    cm = getattr(model, "_compile_metrics", None)  # Keras 3 CompileMetrics, built on first update
    if cm is not None and getattr(cm, "built", False):
        for group in (getattr(cm, "_flat_metrics", None) or []) + (
            getattr(cm, "_flat_weighted_metrics", None) or []
        ):
            if group is None:
                continue
            found.extend(getattr(group, "metrics", [group]))
    cm = getattr(model, "compiled_metrics", None)  # tf-keras MetricsContainer
    if cm is not None and getattr(cm, "_built", False):
        import tensorflow as tf

        for group in (getattr(cm, "_metrics", None) or []) + (
            getattr(cm, "_weighted_metrics", None) or []
        ):
            found.extend(m for m in tf.nest.flatten(group) if m is not None)
    # What compile() was given (keras/src/trainers/compile_utils.py CompileMetrics.__init__ and
    # tf_keras/src/engine/compile_utils.py MetricsContainer.__init__ keep it as `_user_metrics`):
    # a metric named by a string ("accuracy") is one Keras resolved to a class itself.
    strings = {s for c in (getattr(model, "_compile_metrics", None), getattr(model, "compiled_metrics", None))
               if c is not None for s in _strings(getattr(c, "_user_metrics", None))}
    out = []
    for m in found:
        cls, fn_name = _describe_fn_object(m)
        d: dict[str, Any] = {"name": getattr(m, "name", None), "class": cls,
                             "given": "string" if getattr(m, "name", None) in strings else "object"}
        if fn_name:
            d["fn"] = fn_name
        out.append(d)
    return out


def _strings(spec: Any) -> list[str]:
    """The strings in a compile() metrics argument (a list, a dict per output, nested)."""
    if isinstance(spec, str):
        return [spec]
    if isinstance(spec, dict):
        spec = list(spec.values())
    if isinstance(spec, list | tuple):
        return [s for item in spec for s in _strings(item)]
    return []


def _strategy_meta(model: Any = None) -> dict[str, Any]:
    import tensorflow as tf

    # The model remembers the strategy it was built under (Keras 3
    # keras/src/backend/tensorflow/trainer.py TensorFlowTrainer.distribute_strategy;
    # tf-keras Model.distribute_strategy); the current one may be the default outside scope.
    s = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
    return {"strategy": type(s).__name__, "replicas": int(s.num_replicas_in_sync)}


def _dtype_policy(model: Any) -> str | None:
    policy = getattr(model, "dtype_policy", None)
    name = getattr(policy, "name", None)
    return str(name) if name is not None else None


def _mark_autograph_artifact(fn: Callable[..., Any]) -> Callable[..., Any]:
    # tensorflow/python/autograph/impl/api.py is_autograph_artifact(): AutoGraph calls
    # such a function as is (it must not convert our bookkeeping), without changing
    # the conversion status seen by the Keras code we call (do_not_convert would).
    fn.autograph_info__ = None  # type: ignore[attr-defined]
    return fn


# --------------------------------------------------------------------------- the probe


class _ThreadState(threading.local):
    def __init__(self) -> None:
        self.depth = 0  # Layer.__call__ nesting
        self.calling: Any = None  # the layer whose __call__ runs innermost
        self.busy = 0  # inside our own bookkeeping: see nothing
        self.in_train_step = 0  # fit's data is the authoritative x/y
        self.window: _Window | None = None
        self.cb_installed = False
        self.scaled: tuple[Any, Any, Any] | None = None  # (scope, scaled loss, loss)
        self.in_loss = 0  # inside a Keras loss object's or loss function's call
        self.modes_seen: dict[str, int] = {}  # tracked layer name -> record_mode calls so far
        self.stand_in_modes: dict[int, Any] = {}  # id(layer) -> the `training` its call received
        self.writing_weights = 0  # inside set_weights/load_weights/finalize_variable_values
        self.assigning = 0  # inside a variable's assign (see _make_assign)
        self.tape_active = False  # a gradient tape recorded when the outermost guard() was entered
        # the latest root model calls' outputs under a tape, newest last (see _Probe.swapped)
        self.outputs: collections.deque[list[Any]] = collections.deque(maxlen=8)
        self.output_models: collections.deque[Any] = collections.deque(maxlen=8)  # the models that made them


class _Window:
    """From a root model's return to ``tape.gradient``: where the loss is computed.

    Besides broadcasts it looks for the labels of a hand-written loss (no Keras loss
    object saw them): tensors *derived* from the model's output are followed op by
    op, and the first other operand of such an op that comes from batch-shaped data
    (not a constant, not a variable) gives the labels. An operand computed in the
    window from the labels (``log(1 + y)``, ``one_hot(y)``, a cast) leads back to the
    labels themselves, so both ways of writing a loss fingerprint the same tensor.
    """

    __slots__ = ("graph", "found", "model_id", "derived", "origin", "keep", "batch", "label", "module")

    def __init__(self, graph: Any, found: list[dict[str, Any]], model_id: int, module: bool = False) -> None:
        self.graph = graph  # None for an eager window
        self.found = found
        self.model_id = model_id
        # Opened by a tape, not a model's return (see _Probe.tape_entered): the whole tape is
        # watched, and only broadcasts of a watched operand with an unwatched one count.
        self.module = module
        self.derived: set[int] = set()  # ids of tensors computed from the model's output
        self.origin: dict[int, Any] = {}  # id of a tensor computed from the labels -> the labels
        self.keep: list[Any] = []  # tensors whose ids are held above, kept alive with them
        self.batch: int | None = None  # the output's leading dimension, if static
        self.label: Any = None

    def follow(self, outputs: Any) -> None:
        """The model's outputs: where the derived tensors start."""
        for t in _tensors_of(outputs):
            self.derived.add(id(t))
            self.keep.append(t)
        first = _first_tensor(outputs)
        shape = _shape_of(first) if first is not None else None
        self.batch = shape[0] if shape else None

    def _root(self, t: Any) -> Any:
        return self.origin.get(id(t), t)

    def see(self, inputs: Any, outputs: Any) -> None:
        """One op in the window: propagate "derived" and the labels' origin; pick the
        labels once."""
        if self.label is not None or not self.derived:
            return
        ins = list(inputs)
        self.keep.extend(outputs)
        if any(id(t) in self.derived for t in ins):
            self.derived.update(id(t) for t in outputs)
            for t in ins:
                if id(t) not in self.derived:
                    root = self._root(t)
                    if _label_like(root, self.batch):
                        self.label = root
                        return
            return
        for t in ins:
            root = self._root(t)
            if _label_like(root, self.batch):
                for out in outputs:
                    self.origin[id(out)] = root
                return


def _one_watched(inputs: Any) -> bool:
    """Exactly one of an eager op's two inputs is watched by a recording tape (computed from
    variables: the prediction; the other from data: the labels)."""
    from tensorflow.python import pywrap_tfe

    return (bool(pywrap_tfe.TFE_Py_TapeSetShouldRecordBackprop([inputs[0]]))
            != bool(pywrap_tfe.TFE_Py_TapeSetShouldRecordBackprop([inputs[1]])))


def _tensors_of(x: Any) -> list[Any]:
    import tensorflow as tf

    return [t for t in tf.nest.flatten(x) if hasattr(t, "shape") and hasattr(t, "dtype")]


def _label_like(t: Any, batch: int | None) -> bool:
    """Batch-shaped numeric data that is neither a constant nor a variable's value."""
    dtype = getattr(t, "dtype", None)
    if dtype is None or not (dtype.is_floating or dtype.is_integer or dtype.is_bool):
        return False
    op = getattr(t, "op", None)  # graph tensors only
    if op is not None and getattr(op, "type", None) in ("Const", "ReadVariableOp", "VarHandleOp", "Fill",
                                                          "OnesLike", "ZerosLike"):
        return False
    shape = _shape_of(t)
    if not shape:
        return False  # a scalar: a constant or a reduction, not labels
    return batch is None or shape[0] is None or shape[0] == batch


class _Probe:
    """One active installation: the patches, the run and the per-run bookkeeping."""

    def __init__(self, run: Any) -> None:
        self.run = run
        self.thread = threading.get_ident()
        self.tls = _ThreadState()
        # id(recurrent layer) -> {id(cell): cell}: see scan_layers
        self.stand_ins: dict[int, dict[int, Any]] = {}
        self.undo: list[Callable[[], None]] = []
        self.models: dict[int, Any] = {}  # id -> model (kept alive while tracing)
        self.scanned: set[int] = set()
        self.tracked: dict[int, str] = {}  # id(layer) -> unique name in the run
        self.layer_refs: dict[int, Any] = {}
        self.used_names: set[str] = set()
        self.has_losses: dict[int, bool] = {}
        self.eager_probed: dict[int, list[dict[str, Any]]] = {}
        self.loss_wrapped: dict[int, Any] = {}
        self.probabilities: dict[Any, bool | None] = {}  # loss -> LossCall.pred_probabilities
        self.called: set[int] = set()  # id(layer) of every layer note_first_call has seen
        self.hand_clips: set[str] = set()  # TensorFlow clipping functions the script called (_install_clips)
        self.call_order: list[str] = []  # layer names, in the order of their first call
        self.meta_done: dict[int, tuple[Any, ...]] = {}  # id(model) -> its compile() containers
        self.model_classes: tuple[type, ...] = ()
        self.compile_loss_classes: tuple[type, ...] = ()
        # id(scope) -> what the step's Keras loss calls returned, in call order (graphs only)
        self.loss_outs: dict[int, list[Any]] = {}
        self.loss_labels: dict[int, list[Any]] = {}  # id(scope) -> the labels of the step's loss calls
        self.call_args = _callargs.Recorder(self._publish_call_args)
        self.outside = _outside.OutsideCalls(self._publish_outside, self._next_step)
        self.active = True

    # ----------------------------------------------------------------- guards

    def here(self) -> bool:
        """The calling thread's work is this run's: the installing thread, or a thread it
        started while the run was active (``_trace.current_run``)."""
        if not self.active or self.tls.busy:
            return False
        if threading.get_ident() == self.thread:
            return True
        from gradtrace import _trace

        return getattr(threading.current_thread(), _trace.INHERITED, None) is self.run

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Our bookkeeping: invisible to tapes and to our own hooks, never raising."""
        from tensorflow.python.eager import record  # internal: pauses every tape

        from gradtrace._hooks import op_callbacks_hidden

        if not self.tls.busy:
            # Asked before stop_recording(), under which the tape set reads as empty
            # (tensorflow/python/eager/record.py could_possibly_record: "any tape is active").
            self.tls.tape_active = record.could_possibly_record()
        self.tls.busy += 1
        try:
            with record.stop_recording(), op_callbacks_hidden():
                yield
        except Exception as exc:  # noqa: BLE001 - the tracer never breaks training
            if getattr(self.run, "strict", False):
                raise
            self.run.internal_error(exc)
        finally:
            self.tls.busy -= 1

    def _publish_outside(self, rows: list[dict[str, Any]]) -> None:
        update = getattr(self.run, "update_meta", None)  # optional for a minimal run
        if update is None:
            return
        models = self.layer_models()
        for row in rows:  # the root model the layer belongs to (RunInfo.untrained_models numbers them alike)
            if row["layer"] in models:
                row["model"] = models[row["layer"]]
        update(training_outside_steps=rows)

    def layer_models(self) -> dict[str, int]:
        """Tracked layer name -> the registration position of the root model holding it."""
        model_of = getattr(self.run, "model_of", None)  # optional for a minimal run
        if model_of is None:
            return {}
        out: dict[str, int] = {}
        for key, name in self.tracked.items():
            layer = self.layer_refs.get(key)
            model = model_of(layer) if layer is not None else None
            if model is not None:
                out[name] = model
        return out

    def publish_layer_models(self) -> None:
        """``RunInfo.layer_models`` and ``extra.layer_call_order``, at the run's end."""
        update = getattr(self.run, "update_meta", None)  # optional for a minimal run
        if update is not None:
            update(layer_models=self.layer_models())
        set_extra = getattr(self.run, "set_extra", None)
        if set_extra is not None and self.call_order:
            set_extra(layer_call_order=list(self.call_order))

    def note_first_call(self, layer: Any) -> None:
        """A layer's first call in the run: its name joins ``extra.layer_call_order``, the order the
        forward passes first reach the layers, which the comparator pairs equal-shaped layers by
        (a subclassed model may create its layers in another order than it calls them)."""
        self.called.add(id(layer))
        if len(self.call_order) < MAX_CALL_ORDER:
            self.call_order.append(str(getattr(layer, "name", "") or type(layer).__name__))

    def _next_step(self) -> int | None:
        steps = getattr(self.run, "steps_so_far", None)  # optional for a minimal run
        return steps() if steps is not None else None

    def _publish_call_args(self, snapshot: dict[str, Any]) -> None:
        set_extra = getattr(self.run, "set_extra", None)  # optional for a minimal run
        if set_extra is not None:
            set_extra(call_args=snapshot)

    def see_call(self, layer: Any, caller: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """The optional arguments of a layer's call (plain Python, no op: see _callargs). Not
        under :meth:`guard`, which would cost every layer call a tape pause; it touches no tensor."""
        try:
            self.call_args.see(layer, caller, args, kwargs)
        except Exception as exc:  # noqa: BLE001 - the tracer never breaks training
            if getattr(self.run, "strict", False):
                raise
            self.run.internal_error(exc)

    # ----------------------------------------------------------------- patching

    def patch(self, owner: Any, attr: str, make: Callable[[Any], Callable[..., Any]]) -> None:
        """Replace ``owner.attr`` by ``make(original)``; undone exactly on exit."""
        had_own = attr in vars(owner)
        original = getattr(owner, attr)
        wrapper = _mark_autograph_artifact(make(original))
        functools.update_wrapper(wrapper, original)
        setattr(owner, attr, wrapper)

        def restore() -> None:
            if getattr(owner, attr, None) is not wrapper:
                logger.warning("%s.%s was replaced while tracing; leaving it", owner, attr)
                return
            if had_own:
                setattr(owner, attr, original)
            else:
                delattr(owner, attr)

        self.undo.append(restore)

    def patch_instance(self, obj: Any, attr: str, wrapper: Callable[..., Any]) -> None:
        had_own = attr in getattr(obj, "__dict__", {})
        old = obj.__dict__.get(attr) if had_own else None
        _mark_autograph_artifact(wrapper)
        object.__setattr__(obj, attr, wrapper)

        def restore() -> None:
            if obj.__dict__.get(attr) is not wrapper:
                return
            if had_own:
                object.__setattr__(obj, attr, old)
            else:
                object.__delattr__(obj, attr)

        self.undo.append(restore)

    # ----------------------------------------------------------------- models

    def layer_name(self, layer: Any) -> str:
        name = self.tracked.get(id(layer))
        if name is not None:
            return name
        base = str(getattr(layer, "name", type(layer).__name__))
        name, k = base, 1
        while name in self.used_names:
            k += 1
            name = f"{base}#{k}"
        self.used_names.add(name)
        return name

    def prepare_model(self, model: Any) -> None:
        """Register a root model once per run and track its training-dependent layers."""
        key = id(model)
        if key not in self.models:
            self.models[key] = model
            self.run.register_model(model)
            meta: dict[str, Any] = _strategy_meta(model)
            policy = _dtype_policy(model)
            if policy:
                meta["dtype_policy"] = policy
            self.run.update_meta(**meta)
            self.wrap_train_step(model)
        self.scan_layers(model)

    def scan_layers(self, model: Any) -> None:
        flatten = getattr(model, "_flatten_layers", None)
        if flatten is None:
            return
        for layer in flatten(include_self=True, recursive=True):
            if id(layer) in self.tracked:
                continue
            if list(layer._flatten_layers(include_self=False, recursive=False)):
                # A container hands `training` on: its leaves tell what ran, unless its own
                # call branches on it (a user's model or block: `if training: h = aug(h)`),
                # or runs a sublayer's `call` itself, bypassing the `__call__` where the
                # sublayer's mode would be recorded (Keras 3 TimeDistributed).
                if not _bypasses_a_tracked_leaf(layer) and (
                        _library_call(layer) or not _meta.branches_on_training(layer)):
                    continue
            if _meta.training_dependent(layer):
                self.tracked[id(layer)] = self.layer_name(layer)
                self.layer_refs[id(layer)] = layer
        for layer in flatten(include_self=True, recursive=True):
            # A Keras layer (not a model) that reads `training` itself may run its
            # training-dependent sublayer's computation without calling it: tf-keras's
            # recurrent layers do (tf_keras/src/layers/rnn/gru.py GRU.call and lstm.py
            # LSTM.call: when `_could_use_gpu_kernel`, on CPU too, `_defun_gru_call` /
            # the standard LSTM draw the cell's dropout masks with
            # `self.get_dropout_mask_for_cell(inputs, training)` and never call the cell).
            # When such a call ends without the sublayer's mode recorded, the mode the
            # layer received stands for it (see _make_layer_call).
            if (id(layer) in self.tracked or id(layer) in self.stand_ins or not _library_call(layer)
                    or hasattr(layer, "fit")  # a model calls its layers (Sequential, Functional)
                    or not _meta.branches_on_training(layer)):
                continue
            leaves = {id(c): c for c in layer._flatten_layers(include_self=False, recursive=False)
                      if id(c) in self.tracked}
            if leaves:
                self.stand_ins[id(layer)] = leaves
        self.note_wired_inference(model)

    def note_wired_inference(self, model: Any) -> None:
        """Layers a Keras 3 functional model calls with ``training=False`` written at the call
        site (``base(inputs, training=False)``, the transfer-learning guide's way to keep a base's
        BatchNormalization in inference mode), with the tracked layers under each and the step the
        model was first called at, in ``RunInfo.extra["wired_inference"]`` (the base called on its
        own before, to pretrain it, is no such call). Keras 3 passes the outer call's ``training`` to
        every operation over that argument (keras/src/models/functional.py ``operation_fn``:
        a value that is not None replaces the node's), so under fit() or ``model(x,
        training=True)`` they run in training mode anyway; tf-keras keeps the argument."""
        wired: dict[str, dict[str, Any]] = {}
        step = self._next_step()
        for layer in model._flatten_layers(include_self=True, recursive=True):
            if not type(layer).__module__.startswith("keras.") or not hasattr(layer, "_operations"):
                continue
            for op in getattr(layer, "_operations", None) or []:
                if "training" not in (getattr(op, "_call_context_args", None) or ()) or _training_default(op) is False:
                    # a layer whose `call` defaults to training=False (Dropout) has that value filled in
                    # at every node: not told apart from one written at the call site
                    continue
                if not any(getattr(getattr(node, "arguments", None), "kwargs", {}).get("training") is False
                           for node in getattr(op, "_inbound_nodes", None) or []):
                    continue
                flat = getattr(op, "_flatten_layers", None)
                under = [self.tracked[id(c)] for c in (flat(include_self=True, recursive=True) if flat else [op])
                         if id(c) in self.tracked]
                if under:  # from the next step on: the model's first call is seen here
                    name = self.tracked.get(id(op)) or str(getattr(op, "name", type(op).__name__))
                    wired[name] = {"layers": under, "from_step": step}
        if wired:
            known = (getattr(getattr(self.run, "info", None), "extra", None) or {}).get("wired_inference") or {}
            wired = {k: v for k, v in wired.items() if k not in known}  # the first model call's step stays
            set_extra = getattr(self.run, "set_extra", None)  # optional for a minimal run
            if set_extra is not None:
                set_extra(wired_inference={**known, **wired})

    def wrap_train_step(self, model: Any) -> None:
        original = getattr(model, "train_step", None)
        if original is None or not callable(original):
            return
        probe = self

        def train_step(data: Any, *args: Any, **kwargs: Any) -> Any:
            if not probe.here():
                return original(data, *args, **kwargs)
            with probe.guard():
                probe.on_train_step(data, model)
            probe.tls.in_train_step += 1
            try:
                out = original(data, *args, **kwargs)
            finally:
                probe.tls.in_train_step -= 1
            with probe.guard():
                probe.after_train_step(model)
            return out

        self.patch_instance(model, "train_step", train_step)

    # ----------------------------------------------------------------- events

    def on_root_enter(self, model: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                      under_tape: bool = True) -> None:
        self.close_window()
        self.prepare_model(model)
        if self.tls.in_train_step or _element_loop():
            return
        x = args[0] if args else kwargs.get("inputs", kwargs.get("x"))
        if x is None:
            return
        # The step's data: the first model call under a tape since the last step. Later
        # calls take other models' outputs (a GAN's discriminator on the generated batch,
        # which changes as soon as the generator does); a call outside any tape (inference,
        # validation) counts only until a taped one comes.
        scope = _scope.current()
        if K_X_FP in scope.marks:
            return
        if under_tape:
            scope.marks.add(K_X_FP)
        self.put_batch(x, K_X_FP, model)

    def put_batch(self, x: Any, key: str, model: Any = None) -> None:
        scope = _scope.current()
        fp = fingerprint(x, leafwise=True) if key == K_Y_FP else fingerprint(_by_input_name(model, x))
        if fp is not None:
            scope.put(key, fp)
        if key == K_X_FP:
            static, dynamic = _leading_dim(x)
            if static is not None:
                scope.put_static(K_BATCH, static)
                scope.values.pop(K_BATCH, None)
            elif dynamic is not None:
                scope.put(K_BATCH, dynamic)
                scope.statics.pop(K_BATCH, None)

    def before_build(self, model: Any) -> Any:
        """The context for an eager call that builds ``model`` (see ``Run.before_build``)."""
        import tensorflow as tf

        hook = getattr(self.run, "before_build", None)  # optional for a minimal run
        if hook is None or not tf.executing_eagerly():
            return contextlib.nullcontext()
        return hook(model)

    def on_root_exit(self, model: Any, outputs: Any, under_tape: bool) -> None:
        import tensorflow as tf

        scope = _scope.current()
        if id(model) not in self.scanned:
            # Subclassed models may create sublayers in build(): look again once built.
            self.scanned.add(id(model))
            self.scan_layers(model)
            built = getattr(self.run, "model_built", None)  # optional for a minimal run
            if built is not None:
                built(model)
        if _element_loop():
            return  # one element of a tf.vectorized_map: not the step's batch, output or loss
        shape = _shape_of(_first_tensor(outputs))
        if shape is not None:
            scope.put_static(K_Y_PRED_SHAPE, shape)
        self.put_reg_loss(model, scope)

        eager = tf.executing_eagerly()
        if under_tape:
            self.tls.outputs.append(_tensors_of(outputs))  # held: their ids stay theirs
            self.tls.output_models.append(model)
        if eager:
            if not under_tape:
                return  # not under a tape: inference, not an optimizer step
            seen = self.eager_probed.get(id(model))
            if seen is not None:
                # Probed on this model's first eager step; the loss code is the same.
                scope.put_static(K_BROADCASTS, list(seen))
                return
            found: list[dict[str, Any]] = []
            self.eager_probed[id(model)] = found
            window = _Window(None, found, id(model))
        else:
            found = []
            window = _Window(tf.compat.v1.get_default_graph(), found, id(model))
        window.follow(outputs)
        self.open_window(window)
        scope.put_static(K_BROADCASTS, found)

    def tape_entered(self) -> None:
        """An eager ``GradientTape`` was entered: on the run's first one, watch the ops it
        records for broadcasts (a window of its own, see :class:`_Window`), for a loss that no
        Keras model's return will open a window on (a ``tf.Module``, raw variables); later
        tapes reuse what it found. A Keras model called under the tape opens its own window,
        which replaces this one. In a ``tf.function`` :func:`module_broadcasts` does this."""
        import tensorflow as tf

        if not tf.executing_eagerly() or self.tls.window is not None:
            return
        scope = _scope.current()
        seen = self.eager_probed.get(0)
        if seen is not None:
            scope.put_static(K_BROADCASTS, list(seen))
            return
        found: list[dict[str, Any]] = []
        self.eager_probed[0] = found
        scope.put_static(K_BROADCASTS, found)
        self.open_window(_Window(None, found, 0, module=True))

    def put_reg_loss(self, model: Any, scope: _scope.StepScope) -> None:
        import tensorflow as tf

        if self.has_losses.get(id(model)) is False and tf.executing_eagerly():
            return
        losses = list(getattr(model, "losses", None) or [])
        self.has_losses[id(model)] = bool(losses)
        if losses:
            scope.put(K_REG, tf.add_n([tf.cast(tf.reduce_sum(v), tf.float32) for v in losses]))
        else:
            scope.values.pop(K_REG, None)

    def record_mode(self, layer: Any, name: str, training: Any) -> None:
        import tensorflow as tf

        self.tls.modes_seen[name] = self.tls.modes_seen.get(name, 0) + 1
        self.outside.see(name, training, self.tls.tape_active)
        scope = _scope.current()
        key = K_MODE + name
        # A layer called more than once in a step (a training pass and a stop-gradient
        # inference pass: consistency regularisation, mean teacher) ran in training mode
        # if any of its calls did; otherwise the last call's mode stands.
        if scope.statics.get(key) is True:
            pass
        elif tf.is_tensor(training):
            t = tf.reshape(tf.cast(training, tf.float32), [])
            prev = scope.values.get(key)
            scope.put(key, t if prev is None else tf.maximum(prev, t))
            scope.statics.pop(key, None)
        else:  # None, a Python or numpy bool, 0/1
            value = None if training is None else bool(training)
            if value or key not in scope.values:  # a tensor mode stays unless this call trained
                scope.put_static(key, value)
                scope.values.pop(key, None)
        fkey = K_FROZEN + name
        if not getattr(layer, "trainable", True):
            scope.put_static(fkey, True)
        else:
            scope.statics.pop(fkey, None)

    def on_loss(self, loss: Any, y_true: Any, y_pred: Any, sample_weight: Any,
                under_tape: bool = True) -> None:
        scope = _scope.current()
        info = describe_loss(loss)
        call = {
            "cls": info["class"],
            "name": info["name"],
            "reduction": info["reduction"],
            "from_logits": info["from_logits"],
            "args": info.get("args"),
            "y_true_shape": _shape_of(_first_tensor(y_true)) if y_true is not None else None,
            "y_pred_shape": _shape_of(_first_tensor(y_pred)) if y_pred is not None else None,
            "sample_weight": sample_weight is not None,
            "pred_activation": pred_activation(y_pred) if y_pred is not None else None,
            "pred_probabilities": self.pred_probabilities(id(loss), info["class"], info["from_logits"], y_pred),
        }
        self.put_loss_call(scope, call, y_true, y_pred, under_tape)
        self.put_weights(sample_weight, y_pred)
        if id(loss) not in self.loss_wrapped:
            self.loss_wrapped[id(loss)] = loss
            self.wrap_loss_call(loss)

    def pred_probabilities(self, key: Any, cls: str | None, from_logits: bool | None, y_pred: Any) -> bool | None:
        """Eagerly: whether a cross-entropy's ``y_pred`` holds probabilities (see
        ``LossCall.pred_probabilities``), measured on the loss's first call and kept for its
        later ones. Keras reads a Keras activation's own logits (``_keras_logits``, keras/src/
        backend/tensorflow/nn.py ``_get_logits``) whatever ``from_logits`` says: not measured then."""
        import tensorflow as tf

        if cls not in CROSS_ENTROPIES or from_logits is None or y_pred is None or not tf.executing_eagerly():
            return None
        if key in self.probabilities:
            return self.probabilities[key]
        t = _first_tensor(y_pred)
        result = None
        if t is not None and not hasattr(t, "_keras_logits") and t.dtype.is_floating and t.shape.rank:
            t = tf.cast(t, tf.float32)
            low, high = float(tf.reduce_min(t)), float(tf.reduce_max(t))
            if low < 0.0 or high > 1.0:
                result = False
            elif "Binary" in cls:
                # outputs of a sigmoid; logits all inside (0, 1) on a first batch are unlikely
                result = True if int(tf.size(t)) >= 16 and low > 0.0 and high < 1.0 else None
            elif t.shape[-1] is not None and t.shape[-1] > 1:
                result = float(tf.reduce_max(tf.abs(tf.reduce_sum(t, axis=-1) - 1.0))) < 1e-3
        if len(self.probabilities) < 256:
            self.probabilities[key] = result
        return result

    def output_of(self, x: Any) -> Any:
        """The root model (called under the tape, among the latest) whose output ``x`` is itself,
        or None (a tensor computed from it, or no model's output)."""
        p = _first_tensor(x) if x is not None else None
        if p is None:
            return None
        for outs, model in zip(reversed(self.tls.outputs), reversed(self.tls.output_models), strict=False):
            if any(id(o) == id(p) for o in outs):
                return model
        return None

    def swapped(self, y_true: Any, y_pred: Any) -> bool:
        """The loss got the model's output as ``y_true`` and something else (the labels) as
        ``y_pred``: ``loss(pred, y)``, PyTorch's ``loss(input, target)`` order. Read from the
        step's loss window (:class:`_Window`): a tensor computed from the trained model's
        output is "derived" (eagerly after the first step: the output itself); a loss between
        two models' outputs (distillation) is not swapped, whichever model was called last."""
        if y_true is None or y_pred is None:
            return False
        outputs = self.tls.outputs
        if not outputs:
            return False
        w = self.tls.window
        # Eagerly the window is open on a model's first step only: later, the output itself.
        derived = w.derived if w is not None else {id(t) for t in outputs[-1]}
        t, p = _first_tensor(y_true), _first_tensor(y_pred)
        if t is None or p is None or id(t) not in derived or id(p) in derived:
            return False
        # y_pred another model's output (a teacher called after the student): not labels
        return not any(id(p) == id(o) for outs in outputs for o in outs)

    def put_loss_call(self, scope: _scope.StepScope, call: dict[str, Any], y_true: Any, y_pred: Any,
                      under_tape: bool) -> None:
        """One Keras loss call of the step: into loss_info (and its labels' fingerprint: the
        labels wherever they were passed, see :meth:`swapped`)."""
        labels, pred = y_true, y_pred
        if self.swapped(y_true, y_pred):
            call["swapped"] = True
            labels, pred = y_pred, y_true
        maker = self.output_of(pred)
        if maker is not None and self.output_of(labels) is None:
            where = getattr(self.run, "model_position", None)  # optional for a minimal run
            pos = where(maker) if where is not None else None
            if pos is not None:
                call["pred_model"] = pos
        # Every Keras loss the step calls under its tape (a multi-output model calls one per
        # output), in order; the record's own fields describe the last. A call outside any
        # tape (validation, a loss printed before the step) is replaced by the step's own.
        prev = scope.statics.get(K_LOSS_INFO)
        more = under_tape and K_LOSS_INFO in scope.marks and prev is not None
        if more:
            calls = [*(prev.get("calls") or [{k: v for k, v in prev.items() if k != "calls"}]), call]
            call = {**call, "calls": calls[-MAX_LOSS_CALLS:]}
        else:
            if under_tape:
                scope.marks.add(K_LOSS_INFO)
            self.loss_outs.pop(id(scope), None)
        scope.put_static(K_LOSS_INFO, call)
        scope.values.pop(K_LOSS_PS, None)
        if self.tls.in_train_step or labels is None:
            return
        # One loss per output of a multi-output model: the step's labels are every call's labels,
        # their fingerprints summed (as fit() fingerprints its structure of labels, leaf by leaf);
        # labels already counted (two losses on one output) or another model's output (a
        # distillation target) add nothing.
        # The labels objects themselves are kept until the step's next first loss call: an id alone
        # could be a freed array's (``y[sl]`` then ``y2[sl]`` eagerly).
        counted = self.loss_labels.setdefault(id(scope), [])
        if not more:
            counted.clear()
        elif K_Y_FP in scope.values and (any(c is labels for c in counted) or self.output_of(labels) is not None):
            return
        fp = fingerprint(labels, leafwise=True)
        if fp is None:
            return
        if more and K_Y_FP in scope.values:
            fp = scope.values[K_Y_FP] + fp
        counted.append(labels)
        scope.put(K_Y_FP, fp)

    def on_loss_function(self, fn: Any, bound: inspect.BoundArguments, out: Any) -> None:
        """A Keras loss function called under a tape (``keras.losses.mse(y, p)``): described
        like a loss object of the class that wraps it, with what it returned."""
        scope = _scope.current()
        name = str(getattr(fn, "__name__", "loss"))
        given = dict(bound.arguments)
        y_true, y_pred = given.pop("y_true", None), given.pop("y_pred", None)
        try:
            params = dict(_defaults(fn))
        except TypeError:  # an unhashable callable: no cache
            params = dict(_defaults.__wrapped__(fn))
        params.update(given)
        from_logits = params.get("from_logits")
        args = {k: v for k, v in sorted(params.items())[:16]
                if k not in _NOT_ARGS and (v is None or isinstance(v, (bool, int, float, str)))}
        cls = _FUNCTION_CLASS.get(name, _snake_to_camel(name))
        call = {
            "cls": cls,
            "name": name,
            # A loss function returns the per-sample losses, as a loss object with
            # reduction="none" would: the script reduces them itself (mean, sum, ...).
            "reduction": "none",
            "from_logits": from_logits if isinstance(from_logits, bool) else None,
            "args": args or None,
            "y_true_shape": _shape_of(_first_tensor(y_true)) if y_true is not None else None,
            "y_pred_shape": _shape_of(_first_tensor(y_pred)) if y_pred is not None else None,
            "sample_weight": False,
            "pred_activation": pred_activation(y_pred) if y_pred is not None else None,
            "pred_probabilities": self.pred_probabilities(
                name, cls, from_logits if isinstance(from_logits, bool) else None, y_pred),
            "function": name,
            "out_shape": _shape_of(out),
        }
        self.put_loss_call(scope, call, y_true, y_pred, True)
        scope.values.pop(K_LOSS_W, None)  # a loss function neither weights nor masks
        self.put_output_mask(y_pred)
        self.put_per_sample(out)
        self.note_loss_out(out, tuple(bound.arguments.values()))

    def note_loss_out(self, out: Any, args: tuple[Any, ...] = ()) -> None:
        """What a Keras loss call of the step returned (and was given: ``args``). Whether it
        reaches the tensor handed to ``tape.gradient`` is found when the step is taken (a
        loss computed in the tape but left out of the differentiated total trains nothing):
        inside a graph by following it; eagerly only when every differentiated tensor *is*
        one of the step's loss outputs (``tape.gradient(label_loss, ...)``), see :func:`_reaches`."""
        import tensorflow as tf

        if not tf.is_tensor(out):
            return
        scope = _scope.current()
        if K_LOSS_INFO not in scope.marks:
            return  # not the step's loss (outside any tape)
        key = id(scope)
        pending = self.loss_outs.get(key)
        if pending is None:
            from gradtrace import _hooks

            pending = self.loss_outs[key] = [_hooks.tape_seq()]
        pending.append((out, tuple(id(a) for a in args if a is not None)))
        del pending[1:-MAX_LOSS_CALLS]
        statics = scope.statics  # the dict take() hands out with this step's loss_info

        def mark() -> None:
            from gradtrace import _hooks

            got = self.loss_outs.pop(key, None)
            info = statics.get(K_LOSS_INFO)
            if not got or len(got) < 2 or not isinstance(info, dict):
                return None
            # Any tape.gradient made since the step's first loss counts: a loss some call
            # differentiates is trained.
            reached = _reaches(_hooks.tape_targets_since(got[0]), got[1:])
            if reached is None:
                return None
            calls = info.get("calls") or [info]
            if len(calls) != len(reached):
                return None  # a call that returned no tensor: which is which is not known
            for c, r in zip(calls, reached, strict=True):
                c["in_target"] = r
            if info.get("calls"):
                info["in_target"] = calls[-1].get("in_target")
            return None

        scope.put_default(K_LOSS_REACH, mark)

    def wrap_loss_call(self, loss: Any) -> None:
        """Per-sample statistics: see what ``loss.call`` returns before reduction."""
        original = loss.call
        probe = self
        legacy = type(loss).__module__.startswith("tf_keras")

        def call(*args: Any, **kwargs: Any) -> Any:
            if not probe.here():
                return original(*args, **kwargs)
            if legacy:
                import tensorflow as tf

                # tf_keras/src/losses.py Loss.__call__ autograph-converts self.call;
                # keep that for the user's loss function behind our wrapper.
                fn = tf.__internal__.autograph.tf_convert(
                    original, tf.__internal__.autograph.control_status_ctx()
                )
                per_sample = fn(*args, **kwargs)
            else:
                per_sample = original(*args, **kwargs)
            with probe.guard():
                probe.put_per_sample(per_sample)
            return per_sample

        self.patch_instance(loss, "call", call)

    def put_per_sample(self, per_sample: Any) -> None:
        import tensorflow as tf

        if not tf.is_tensor(per_sample) or not per_sample.dtype.is_floating:
            return
        v = tf.reshape(tf.cast(per_sample, tf.float32), [-1])
        size = v.shape[0]
        if size:  # static and non-empty (the usual case): no guards, fewer ops per step
            stats = [tf.reduce_mean(v), tf.reduce_min(v), tf.reduce_max(v), tf.constant(float(size))]
        else:
            n = tf.size(v)
            nonempty = n > 0
            stats = [
                tf.reduce_mean(v),
                tf.where(nonempty, tf.reduce_min(v), float("nan")),
                tf.where(nonempty, tf.reduce_max(v), float("nan")),
                tf.cast(n, tf.float32),
            ]
        _scope.current().put(K_LOSS_PS, tf.stack(stats))

    def put_weights(self, sample_weight: Any, y_pred: Any) -> None:
        """Sum, non-zero count and size of the sample weights, valid and total of the mask.

        The denominators a Keras loss uses: ``sum_over_batch_size`` divides the
        weighted sum by the number of elements, and a mask (Keras 3 and tf-keras keep
        it as ``y_pred._keras_mask``; keras/src/losses/loss.py ``Loss.__call__`` and
        ``apply_mask``) by its valid entries. A hand-written loss that divides by
        ``sum(weights)`` or by every masked entry differs by their ratio.
        """
        import tensorflow as tf

        scope = _scope.current()
        scope.values.pop(K_LOSS_W, None)
        scope.values.pop(K_LOSS_OUT_MASK, None)
        mask = _mask_counts(y_pred)
        if sample_weight is None and mask is None:
            return
        nan = tf.constant(float("nan"), tf.float32)
        parts = [nan, nan, nan, nan, nan]
        if sample_weight is not None:
            w = tf.reshape(tf.cast(tf.convert_to_tensor(sample_weight), tf.float32), [-1])
            parts[:3] = [tf.reduce_sum(w), tf.cast(tf.math.count_nonzero(w), tf.float32),
                         tf.cast(tf.size(w), tf.float32)]
        if mask is not None:
            parts[3:] = mask
        scope.put(K_LOSS_W, tf.stack(parts))

    def put_output_mask(self, y_pred: Any) -> None:
        """Valid and total entries of the mask the model's output carries (``y_pred._keras_mask``:
        ``Embedding(mask_zero=True)``, ``Masking``) when a loss *function* got it: a Keras loss
        object applies that mask, a loss function returns every entry's loss, padding included."""
        import tensorflow as tf

        scope = _scope.current()
        scope.values.pop(K_LOSS_OUT_MASK, None)
        mask = _mask_counts(y_pred)
        if mask is not None:
            scope.put(K_LOSS_OUT_MASK, tf.stack(mask))

    def on_train_step(self, data: Any, model: Any = None) -> None:
        x, y, sw = data, None, None
        if isinstance(data, (tuple, list)) and 1 <= len(data) <= 3:
            x = data[0]
            y = data[1] if len(data) > 1 else None
            sw = data[2] if len(data) > 2 else None
        self.put_batch(x, K_X_FP, model)
        if y is not None:
            self.put_batch(y, K_Y_FP)
        if sw is not None:
            fit = self.run.info.fit
            if fit is not None and not fit.get("sample_weight") and fit.get("class_weight") is None:
                # fit() on (x, y, w) batches (a dataset's third element): weighted without
                # a sample_weight= argument (with class_weight= fit() builds w from the labels)
                weighted = {"sample_weight": True, "sample_weight_from": "data"}
                calls = list(self.run.info.fit_calls)
                if calls:
                    calls[-1] = {**calls[-1], **weighted}
                self.run.update_meta(fit={**fit, **weighted}, fit_calls=calls)

    def after_train_step(self, model: Any) -> None:
        # once per compile(): a recompile replaces the loss and metrics containers (Keras 3
        # Trainer.compile sets _compile_loss/_compile_metrics, tf-keras compiled_loss/_metrics)
        token = tuple(getattr(model, name, None) for name in
                      ("_compile_loss", "_compile_metrics", "compiled_loss", "compiled_metrics"))
        done = self.meta_done.get(id(model))
        if done is not None and len(done) == len(token) and all(x is y for x, y in zip(done, token, strict=True)):
            return
        losses = _compiled_losses(model)
        metrics = _compiled_metrics(model)
        if not losses and not metrics:
            return  # a custom train_step without compile(): nothing resolved
        self.meta_done[id(model)] = token  # the containers kept alive: their ids are not reused
        meta: dict[str, Any] = {}
        if losses:
            desc = describe_loss(losses[0])
            if len(losses) > 1:
                desc["outputs"] = [describe_loss(x) for x in losses]
            weights = _compiled_loss_weights(model)
            if weights:
                desc["loss_weights"] = weights
            meta["loss"] = desc
        if metrics:
            meta["metrics"] = metrics
        calls = list(self.run.info.fit_calls)
        if calls:  # a new compile() traced in the latest fit() call: the one that call trains with
            calls[-1] = {**calls[-1], **{k: meta[k] for k in ("loss", "metrics") if k in meta}}
            meta["fit_calls"] = calls
        self.run.update_meta(**meta)

    def on_fit(self, model: Any, bound: inspect.BoundArguments) -> None:
        a = bound.arguments
        class_weight = a.get("class_weight")
        callbacks = a.get("callbacks") or []
        fit: dict[str, Any] = {
            "epochs": a.get("epochs", 1),
            "batch_size": a.get("batch_size"),
            "class_weight": (
                {str(k): float(v) for k, v in class_weight.items()}
                if isinstance(class_weight, dict)
                else None
            ),
            "sample_weight": a.get("sample_weight") is not None,
            "callbacks": [type(c).__name__ for c in callbacks],
            "validation": a.get("validation_data") is not None or bool(a.get("validation_split")),
            # the share of x/y fit() holds out (the last examples): it trains on the rest only
            "validation_split": float(a.get("validation_split") or 0.0),
            "shuffle": _fit_shuffle(a),
            "steps_per_epoch": a.get("steps_per_epoch"),
            "run_eagerly": bool(getattr(model, "run_eagerly", False)),
            # a train_step of the user's own (not Keras's Trainer.train_step): it decides itself
            # how the model is called, `training` included
            "custom_train_step": not _library_method(model, "train_step"),
        }
        spe = getattr(model, "steps_per_execution", None)
        if spe is None:
            spe = getattr(model, "_steps_per_execution", None)
        try:
            fit["steps_per_execution"] = None if spe is None else int(spe)
        except (TypeError, ValueError):
            import numpy as np

            fit["steps_per_execution"] = int(np.asarray(spe))
        jit = getattr(model, "jit_compile", None)  # Keras 3: a property resolving "auto"
        if jit is None:
            jit = getattr(model, "_jit_compile", None)
        fit["jit_compile"] = bool(jit) if jit is not None else None
        if fit["run_eagerly"]:
            fit["jit_compile"] = False
        self.prepare_model(model)
        calls = list(self.run.info.fit_calls)
        if len(calls) < MAX_FIT_CALLS:
            # the compile() known so far; after_train_step replaces it when this call traces a new one
            known = {k: v for k, v in (("loss", self.run.info.loss), ("metrics", self.run.info.metrics)) if v}
            calls.append({**fit, "first_step": self.run.steps_so_far(), **known})
        self.run.update_meta(fit=fit, fit_calls=calls)
        self.run.note_trainable("fit")  # a layer frozen or unfrozen since the last call

    def on_assign(self, v: Any) -> None:
        """A variable was assigned by the script (see :func:`_make_assign`)."""
        import tensorflow as tf

        self.run.note_assigned(v, not tf.executing_eagerly())

    def on_weights_written(self, how: str, variables: list[Any]) -> None:
        """``variables`` were overwritten outside an optimizer step (see :func:`_make_weights_write`)."""
        note = getattr(self.run, "note_weights_written", None)  # optional for a minimal run
        if note is not None:
            note(how, variables, _writer_of_weights())

    def on_scale_loss(self, opt: Any, loss: Any, scaled: Any) -> None:
        import tensorflow as tf

        if hasattr(opt, "dynamic_scale") or not hasattr(opt, "loss_scale"):
            scale = _meta.keras3_loss_scale(opt)  # a Python number is baked into a graph traced then
        else:
            scale = getattr(opt, "loss_scale", None)  # tf-keras
        if scale is None:
            return
        scope = _scope.current()
        scope.put(K_SCALE, tf.reshape(tf.cast(tf.convert_to_tensor(scale), tf.float32), []))
        if tf.is_tensor(loss) and tf.is_tensor(scaled):
            # Whether the scaled loss is what reached tape.gradient is known at apply time.
            self.tls.scaled = (_scope.current(), scaled, loss)

    def put_unscaled_loss(self) -> None:
        """When the step differentiated the scaled loss, record the loss before scaling."""
        import tensorflow as tf

        from gradtrace import _hooks

        pending = self.tls.scaled
        self.tls.scaled = None
        if pending is None:
            return
        scope, scaled, loss = pending
        if scope is not _scope.current():
            return  # scaled in another graph (or eagerly outside this step)
        targets = _hooks.last_tape_targets()
        if targets and any(t is scaled for t in targets):
            scope.put(K_UNSCALED, tf.reduce_sum(tf.cast(loss, tf.float32)))

    def on_lso_apply(self, grads: Any) -> None:
        import tensorflow as tf

        self.put_unscaled_loss()
        checks = []
        for g in grads:
            if g is None:
                continue
            if isinstance(g, tf.IndexedSlices):
                g = g.values
            checks.append(tf.reduce_all(tf.math.is_finite(g)))
        if not checks:
            return
        finite = tf.reduce_all(tf.stack(checks))
        _scope.current().put(K_SKIPPED, tf.cast(tf.logical_not(finite), tf.float32))

    # ----------------------------------------------------------------- loss window

    def open_window(self, window: _Window) -> None:
        from tensorflow.python.framework import op_callbacks

        if threading.get_ident() != self.thread:
            return  # op callbacks are per thread: only the installing thread's are removed at the end

        self.tls.window = window
        if not self.tls.cb_installed:
            op_callbacks.add_op_callback(self.op_callback)
            # First in the thread's list: TensorFlow hands each callback the previous one's
            # return value as the op's outputs (op_callbacks.invoke_op_callbacks), and a
            # user's callback may return None. Ours returns what it got, so callbacks after
            # it see what they would without it.
            from tensorflow.python.eager import context

            callbacks = context.context().op_callbacks
            callbacks.remove(self.op_callback)
            callbacks.insert(0, self.op_callback)
            self.tls.cb_installed = True

    def close_window(self) -> None:
        self._finish_window()
        self.remove_callback()

    def _finish_window(self) -> None:
        """The window is over: labels found in it are fingerprinted unless a Keras loss
        or fit()'s data already put ``y_fp`` for this step."""
        w, self.tls.window = self.tls.window, None
        if w is None or w.label is None:
            return
        label = w.label
        run = self.run

        def labels_fp() -> Any:
            # Marked in the run: the comparator weighs labels found this way differently
            # (a loss may transform them: log(1 + y) is not y).
            set_extra = getattr(run, "set_extra", None)  # optional for a minimal run
            if set_extra is not None:
                set_extra(labels_inferred=True)
            return fingerprint(label)

        _scope.current().put_default(K_Y_FP, labels_fp)

    def remove_callback(self) -> None:
        if self.tls.cb_installed:
            from tensorflow.python.framework import op_callbacks

            self.tls.cb_installed = False
            try:
                op_callbacks.remove_op_callback(self.op_callback)
            except KeyError:
                pass

    def op_callback(
        self,
        op_type: str,
        inputs: Any,
        attrs: Any,
        outputs: Any,
        op_name: str | None = None,
        graph: Any = None,
    ) -> Any:
        # The return value replaces the op's outputs for the callbacks after this one
        # (tensorflow/python/framework/op_callbacks.py invoke_op_callbacks passes each
        # callback's result on): hand back what we were given, never None.
        if outputs is None:  # a callback before ours returned None (see open_window)
            return None
        st = self.tls
        w = st.window
        if w is None or st.busy or threading.get_ident() != self.thread:
            return outputs
        try:
            if graph is None:
                from tensorflow.python import pywrap_tfe

                # An eager op with no tape recording: tape.gradient has started (it pops
                # the tape), or the work is outside the tape. Either way the window is over.
                if w.graph is not None or pywrap_tfe.TFE_Py_TapeSetIsEmpty():
                    self._end_window_from_callback()
                    return outputs
            else:
                if op_name and op_name.startswith("gradient_tape"):
                    # tensorflow/python/eager/backprop.py _gradient_function names the
                    # backward ops "gradient_tape/...": the loss is complete.
                    self._end_window_from_callback()
                    return outputs
                if not self._within(graph, w.graph):
                    self._end_window_from_callback()
                    return outputs
            if op_type in _ELEMENTWISE and len(inputs) == 2 and len(outputs) == 1:
                a, b, out = (_shape_of(inputs[0]), _shape_of(inputs[1]), _shape_of(outputs[0]))
                if a is not None and b is not None and out is not None:
                    if (_outer_broadcast(a, b, out) and len(w.found) < MAX_BROADCASTS
                            and (not w.module or _one_watched(inputs))):
                        w.found.append(
                            {"op": op_type, "a_shape": a, "b_shape": b, "out_shape": out}
                        )
            w.see(inputs, outputs)
        except Exception as exc:  # noqa: BLE001 - never break op execution
            st.window = None
            if getattr(self.run, "strict", False):
                raise
            self.run.internal_error(exc)
        return outputs

    op_callback.__gradtrace_callback__ = True  # type: ignore[attr-defined]  # see _hooks.op_callbacks_hidden

    @staticmethod
    def _within(graph: Any, window_graph: Any) -> bool:
        g = graph
        while g is not None:
            if g is window_graph:
                return True
            g = getattr(g, "outer_graph", None)
        return False

    def _end_window_from_callback(self) -> None:
        from tensorflow.python.eager import context

        self._finish_window()
        # Removing ourselves while TensorFlow iterates the callback list would make it
        # skip the next callback; only do it when we are the only one.
        if len(context.context().op_callbacks) == 1:
            self.remove_callback()


# --------------------------------------------------------------------------- installation


def _element_loop() -> bool:
    from gradtrace import _hooks

    return _hooks.in_element_loop()


def _bypasses_a_tracked_leaf(layer: Any) -> bool:
    """Whether ``layer.call`` runs the ``call`` of a training-dependent leaf layer itself
    (see :func:`_meta.direct_call_attrs`): the leaf's mode is never resolved, the caller's is."""
    for attr in _meta.direct_call_attrs(layer):
        inner = getattr(layer, attr, None)
        flatten = getattr(inner, "_flatten_layers", None)
        if flatten is not None and not list(flatten(include_self=False, recursive=False)) \
                and _meta.training_dependent(inner):
            return True
    return False


def _library_call(layer: Any) -> bool:
    """Whether ``layer.call`` is Keras's own (Sequential, Functional, ...), not a user's.

    A user's model or block may branch on ``training`` itself (``if training: h = aug(h)``)
    with no training-dependent leaf: its own mode is then the only trace of it.
    """
    return _library_method(layer, "call")


def _library_method(obj: Any, name: str) -> bool:
    """Whether ``type(obj).<name>`` is Keras's own (its class attribute: an instance wrapper of
    the tracer's does not count)."""
    module = getattr(getattr(type(obj), name, None), "__module__", "") or ""
    return module.split(".", 1)[0] in ("keras", "tf_keras")


def _fit_shuffle(args: dict[str, Any]) -> bool | str | None:
    """fit()'s ``shuffle`` as it acts: None when ``x`` is a dataset or generator, which fit()
    ignores it for (keras/src/trainers/data_adapters: only array inputs are shuffled)."""
    x = args.get("x")
    arrays = x is None or hasattr(x, "shape") or isinstance(x, list | tuple | dict)
    if not arrays:
        return None
    shuffle = args.get("shuffle", True)
    return shuffle if isinstance(shuffle, bool) else str(shuffle)


def _make_layer_call(probe: _Probe, model_classes: tuple[type, ...]) -> Callable[..., Any]:
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
            if not probe.here():
                return original(self, *args, **kwargs)
            st = probe.tls
            depth = st.depth
            root = False
            if depth == 0:
                if st.cb_installed and st.window is None:
                    probe.remove_callback()
                if isinstance(self, model_classes) and not _is_symbolic(args[:1] or kwargs):
                    root = True
                    with probe.guard():  # the outermost guard: it noted whether a tape records
                        probe.on_root_enter(self, args, kwargs, st.tape_active)
            # The caller's own arguments, before keras/src/layers/layer.py Layer.__call__ (or
            # tf_keras/src/engine/base_layer.py Layer.__call__) resolves `training` and fills masks.
            caller = st.calling
            probe.see_call(self, caller, args, kwargs)
            if id(self) not in probe.called:
                probe.note_first_call(self)
            st.depth = depth + 1
            stand_in = probe.stand_ins.get(id(self))
            seen = {k: st.modes_seen.get(probe.tracked[k], 0) for k in stand_in} if stand_in else None
            building = contextlib.nullcontext()
            if root and getattr(self, "built", True) is False:
                with probe.guard():
                    building = probe.before_build(self)
            st.calling = self
            try:
                with building:
                    outputs = original(self, *args, **kwargs)
            finally:
                st.depth = depth
                st.calling = caller
            if stand_in and id(self) in st.stand_in_modes:
                training = st.stand_in_modes.pop(id(self))
                with probe.guard():
                    for k, leaf in stand_in.items():
                        name = probe.tracked[k]
                        if st.modes_seen.get(name, 0) == seen[k]:  # its __call__ did not run
                            probe.record_mode(leaf, name, training)
            if root:
                with probe.guard():
                    probe.on_root_exit(self, outputs, st.tape_active)
            return outputs

        return __call__

    return make


def _training_default(layer: Any) -> Any:
    """The default of ``training`` in the layer's ``call`` signature (None when it has none)."""
    try:
        param = inspect.signature(type(layer).call).parameters.get("training")
    except (TypeError, ValueError, AttributeError):
        return None
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def _eager() -> bool:
    import tensorflow as tf

    return bool(tf.executing_eagerly())


def _install_tape(probe: _Probe) -> None:
    import tensorflow as tf

    # tensorflow/python/eager/backprop.py GradientTape.__enter__ pushes the tape; ops run after
    # it are recorded, so the window opens once it has.
    def make_enter(original: Callable[..., Any]) -> Callable[..., Any]:
        def __enter__(self: Any) -> Any:
            out = original(self)
            if probe.here():
                seen = probe.eager_probed.get(0)
                if seen is not None and probe.tls.window is None:
                    # later eager tapes: what the first one found, no op and no guard needed
                    try:
                        if _eager():
                            _scope.current().put_static(K_BROADCASTS, list(seen))
                    except Exception as exc:  # noqa: BLE001 - the tracer never breaks training
                        probe.run.internal_error(exc)
                    return out
                with probe.guard():
                    probe.tape_entered()
            return out
        return __enter__

    probe.patch(tf.GradientTape, "__enter__", make_enter)


def _install_clips(probe: _Probe) -> None:
    """``tf.clip_by_global_norm`` and ``tf.clip_by_norm`` (tensorflow/python/ops/clip_ops.py), called
    by the script: gradients clipped by hand, eagerly or while a function is traced, recorded in
    ``RunInfo.extra["hand_clipping"]`` (inside a graph the apply hook also reads the clips' name
    scopes, ``tf.clip_by_value`` included, see ``_hooks._note_hand_clipping``). A clip that never
    acts leaves the steps as they are; this says it is there. One set lookup per call."""
    import tensorflow as tf

    def make(kind: str) -> Callable[[Any], Callable[..., Any]]:
        def make_clip(original: Callable[..., Any]) -> Callable[..., Any]:
            def clip(*args: Any, **kwargs: Any) -> Any:
                # tf-keras's optimizers clip with these very functions (tf_keras/src/optimizers/
                # optimizer.py _clip_gradients): a caller inside Keras is no script's hand.
                if (kind not in probe.hand_clips and probe.here()
                        and not str(sys._getframe(1).f_globals.get("__name__", "")).startswith(("tf_keras", "keras"))):
                    with probe.guard():
                        probe.hand_clips.add(kind)
                        note = getattr(probe.run, "note_hand_clipping", None)  # optional for a minimal run
                        if note is not None:
                            note({kind})
                return original(*args, **kwargs)
            return clip
        return make_clip

    for kind in ("clip_by_global_norm", "clip_by_norm"):
        if callable(getattr(tf, kind, None)):
            probe.patch(tf, kind, make(kind))


def _install_keras3(probe: _Probe) -> None:
    from keras.src.layers import layer as k_layer
    from keras.src.losses import loss as k_loss
    from keras.src.models import model as k_model
    from keras.src.trainers import compile_utils as k_compile

    Layer, Model = k_layer.Layer, k_model.Model
    probe.patch(Layer, "__call__", _make_layer_call(probe, (Model,)))

    if hasattr(Layer, "_resolve_and_populate_arg"):
        # keras/src/layers/layer.py Layer.__call__ step 5 resolves `training`
        # (explicit > outer call > signature default) and injects it into kwargs here.
        def make_resolve(original: Callable[..., Any]) -> Callable[..., Any]:
            def _resolve_and_populate_arg(
                self: Any, arg_name: str, call_spec: Any, call_context: Any, kwargs: dict[str, Any]
            ) -> Any:
                out = original(self, arg_name, call_spec, call_context, kwargs)
                if arg_name == "training" and probe.here():
                    name = probe.tracked.get(id(self))
                    if name is not None:
                        with probe.guard():
                            probe.record_mode(self, name, kwargs.get("training"))
                    elif id(self) in probe.stand_ins:
                        probe.tls.stand_in_modes[id(self)] = kwargs.get("training")
                return out

            return _resolve_and_populate_arg

        probe.patch(Layer, "_resolve_and_populate_arg", make_resolve)
    else:
        logger.warning(
            "this Keras has no Layer._resolve_and_populate_arg: layer modes not recorded"
        )

    compile_loss_cls = getattr(k_compile, "CompileLoss", ())
    probe.patch(k_loss.Loss, "__call__", _make_loss_call(probe, compile_loss_cls))
    # keras/losses/__init__.py, keras/metrics/__init__.py and their tf.keras twins under
    # keras/_tf_keras/keras/ re-export keras/src/losses/losses.py's functions.
    _patch_loss_functions(probe, ("keras.losses", "keras.metrics", "keras._tf_keras.keras.losses",
                                  "keras._tf_keras.keras.metrics"))
    probe.patch(Model, "fit", _make_fit(probe))
    # Weights written outside optimizer steps: keras/src/layers/layer.py Layer.set_weights,
    # keras/src/models/model.py Model.load_weights, keras/src/optimizers/base_optimizer.py
    # BaseOptimizer.finalize_variable_values (keras/src/backend/tensorflow/trainer.py
    # TensorFlowTrainer.fit calls it at its end).
    from keras.src.optimizers.base_optimizer import BaseOptimizer

    probe.patch(Layer, "set_weights", _make_weights_write(probe, "set_weights"))
    probe.patch(Model, "load_weights", _make_weights_write(probe, "load_weights"))
    probe.patch(BaseOptimizer, "finalize_variable_values", _make_weights_write(probe, "ema"))
    # A trained variable written outside the optimizer's steps (weights clipped by hand):
    # keras/src/backend/common/variables.py ``Variable.assign`` (assign_add/assign_sub call it).
    from keras.src.backend.common.variables import Variable as KerasVariable

    probe.patch(KerasVariable, "assign", _make_assign(probe, "assign"))
    probe.patch(KerasVariable, "assign_add", _make_assign(probe, "assign_add"))
    probe.patch(KerasVariable, "assign_sub", _make_assign(probe, "assign_sub"))
    # A tf.Variable of the script's own (a tf.Module's weights, TensorFlow's basic training loop)
    _patch_tf_assign(probe)

    from keras.src.optimizers import loss_scale_optimizer as k_lso

    LSO = k_lso.LossScaleOptimizer

    def make_scale(original: Callable[..., Any]) -> Callable[..., Any]:
        def scale_loss(self: Any, loss: Any) -> Any:
            scaled = original(self, loss)
            if probe.here():
                with probe.guard():
                    probe.on_scale_loss(self, loss, scaled)
            return scaled

        return scale_loss

    def make_apply(original: Callable[..., Any]) -> Callable[..., Any]:
        def apply(self: Any, grads: Any, trainable_variables: Any = None) -> Any:
            if probe.here():
                with probe.guard():
                    probe.on_lso_apply(list(grads))
            return original(self, grads, trainable_variables)

        return apply

    probe.patch(LSO, "scale_loss", make_scale)
    probe.patch(LSO, "apply", make_apply)


def _install_tf_keras(probe: _Probe) -> None:
    from tf_keras.src import losses as t_losses
    from tf_keras.src.engine import base_layer as t_layer
    from tf_keras.src.engine import training as t_training

    Layer, Model = t_layer.Layer, t_training.Model
    probe.patch(Layer, "__call__", _make_layer_call(probe, (Model,)))

    # tf_keras/src/engine/base_layer.py Layer.__call__ resolves call-context arguments
    # (explicit > outer call > learning phase > signature default) in this method and
    # returns the values it propagates; for a layer whose call takes `training`, that
    # is the value its call receives (None stays None).
    def make_prop(original: Callable[..., Any]) -> Callable[..., Any]:
        def _get_propagated_call_context_arguments(
            self: Any, args: Any, kwargs: Any, call_context: Any, local: Any
        ) -> Any:
            out = original(self, args, kwargs, call_context, local)
            if probe.here():
                name = probe.tracked.get(id(self))
                if name is not None or id(self) in probe.stand_ins:
                    with probe.guard():
                        new_args, new_kwargs, _ = out
                        value = self._call_spec.get_arg_value("training", new_args, new_kwargs)
                        if name is not None:
                            probe.record_mode(self, name, value)
                        else:
                            probe.tls.stand_in_modes[id(self)] = value
            return out

        return _get_propagated_call_context_arguments

    probe.patch(Layer, "_get_propagated_call_context_arguments", make_prop)
    probe.patch(t_losses.Loss, "__call__", _make_loss_call(probe, ()))
    # tf_keras/losses/__init__.py and tf_keras/metrics/__init__.py re-export
    # tf_keras/src/losses.py's functions (wrapped by TensorFlow's dispatch decorator).
    _patch_loss_functions(probe, ("tf_keras.losses", "tf_keras.metrics"))
    probe.patch(Model, "fit", _make_fit(probe))
    # tf_keras/src/engine/base_layer.py Layer.set_weights, tf_keras/src/engine/training.py
    # Model.load_weights, tf_keras/src/optimizers/optimizer.py _BaseOptimizer.finalize_variable_values
    # (Model.fit calls it at its end).
    from tf_keras.src.optimizers import optimizer as t_optimizer

    probe.patch(Layer, "set_weights", _make_weights_write(probe, "set_weights"))
    probe.patch(Model, "load_weights", _make_weights_write(probe, "load_weights"))
    probe.patch(t_optimizer._BaseOptimizer, "finalize_variable_values", _make_weights_write(probe, "ema"))
    # tf-keras weights are tf.Variables: their own assign methods, defined on both classes
    # (tensorflow/python/ops/resource_variable_ops.py ``BaseResourceVariable.assign*`` and
    # ``ResourceVariable.assign*``; a write seen by both is noted once).
    _patch_tf_assign(probe)

    from tf_keras.src.mixed_precision import loss_scale_optimizer as t_lso

    def make_scaled(original: Callable[..., Any]) -> Callable[..., Any]:
        def get_scaled_loss(self: Any, loss: Any) -> Any:
            scaled = original(self, loss)
            if probe.here():
                with probe.guard():
                    probe.on_scale_loss(self, loss, scaled)
            return scaled

        return get_scaled_loss

    def make_apply(original: Callable[..., Any]) -> Callable[..., Any]:
        def apply_gradients(self: Any, grads_and_vars: Any, *args: Any, **kwargs: Any) -> Any:
            if probe.here():
                grads_and_vars = list(grads_and_vars)
                with probe.guard():
                    probe.on_lso_apply([g for g, _ in grads_and_vars])
            return original(self, grads_and_vars, *args, **kwargs)

        return apply_gradients

    for cls_name in ("LossScaleOptimizerV3", "LossScaleOptimizer"):
        cls = getattr(t_lso, cls_name, None)
        if cls is not None and "get_scaled_loss" in vars(cls):
            probe.patch(cls, "get_scaled_loss", make_scaled)
        if cls is not None and "apply_gradients" in vars(cls):
            probe.patch(cls, "apply_gradients", make_apply)


def _make_loss_call(probe: _Probe, skip: Any) -> Callable[[Any], Callable[..., Any]]:
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def __call__(
            self: Any, y_true: Any, y_pred: Any, sample_weight: Any = None, *a: Any, **k: Any
        ) -> Any:
            if probe.here() and not (skip and isinstance(self, skip)):
                from tensorflow.python import pywrap_tfe

                under_tape = not pywrap_tfe.TFE_Py_TapeSetIsEmpty()  # before guard(), as in __call__
                with probe.guard():
                    probe.on_loss(self, y_true, y_pred, sample_weight, under_tape)
            # A Keras loss function the object's call reaches (a user's function compiled as
            # the loss calling keras.losses.categorical_crossentropy) is part of this call.
            probe.tls.in_loss += 1
            try:
                out = original(self, y_true, y_pred, sample_weight, *a, **k)
            finally:
                probe.tls.in_loss -= 1
            if probe.here() and not (skip and isinstance(self, skip)):
                with probe.guard():
                    probe.note_loss_out(out, (y_true, y_pred, sample_weight))
            return out

        return __call__

    return make


def _reaches(targets: list[Any], noted: list[tuple[Any, tuple[int, ...]]]) -> list[bool | None] | None:
    """For each noted loss output (with the ids of what its call was given): whether the
    ``targets`` are computed from it. In a graph the targets are followed op by op through
    their inputs (None when that exceeds :data:`REACH_OPS` ops). Eagerly there is no graph:
    only when every target *is* one of the outputs is anything said (those are reached; the
    others are not, unless one was handed to a reached loss call); otherwise None."""
    if not targets:
        return None
    outs = [o for o, _ in noted]
    if any(getattr(t, "op", None) is None for t in targets):  # eager tensors
        ids = {id(o): i for i, o in enumerate(outs)}
        if not all(id(t) in ids for t in targets):
            return None
        hit_e: list[bool | None] = [False] * len(outs)
        for t in targets:
            hit_e[ids[id(t)]] = True
        fed = {a for i, (_, given) in enumerate(noted) if hit_e[i] for a in given}
        for i, o in enumerate(outs):
            if not hit_e[i] and id(o) in fed:
                hit_e[i] = None
        return hit_e
    want: dict[str, list[int]] = {}
    for i, o in enumerate(outs):
        name = getattr(o, "name", None)
        if name is None:
            return None
        want.setdefault(name, []).append(i)
    hit: list[bool | None] = [False] * len(outs)
    stack = []
    for t in targets:
        for i in want.get(t.name, ()):
            hit[i] = True
        stack.append(t.op)
    seen: set[str] = set()
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        if len(seen) > REACH_OPS:
            return None
        for x in op.inputs:
            for i in want.get(x.name, ()):
                hit[i] = True
            if x.op.name not in seen:
                stack.append(x.op)
    return hit


# Loss functions whose loss class is not their name in CamelCase.
_FUNCTION_CLASS = {"kl_divergence": "KLDivergence", "kullback_leibler_divergence": "KLDivergence",
                   "ctc": "CTC"}


def _loss_functions(module: Any) -> list[str]:
    """Names of the Keras loss functions a public module exports (``keras.losses``,
    ``keras.metrics``, ``tf.keras.losses``, ``tf_keras.losses``, ...): functions defined in
    keras/src/losses/ or tf_keras/src/losses.py whose first parameters are (y_true, y_pred)."""
    out = []
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or not callable(obj) or isinstance(obj, type):
            continue
        fn = inspect.unwrap(obj)
        if not inspect.isfunction(fn):
            continue
        home = getattr(fn, "__module__", "") or ""
        if not (home.startswith("keras.src.losses") or home.startswith("tf_keras.src.losses")):
            continue
        try:
            params = list(inspect.signature(obj).parameters)
        except (TypeError, ValueError):
            continue
        if params[:2] == ["y_true", "y_pred"]:
            out.append(name)
    return out


def _patch_loss_functions(probe: _Probe, module_names: tuple[str, ...]) -> None:
    """Wrap the loss functions of these public modules (the attributes a script reaches them
    by: ``keras.losses.categorical_crossentropy``); the internal modules, and so every loss
    object's own function, stay as they are. A function imported by name before the trace
    (``from keras.losses import mse``) is the user's own reference and is not seen."""
    import importlib

    for module_name in module_names:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for name in _loss_functions(module):
            probe.patch(module, name, _make_loss_function(probe))


def _make_loss_function(probe: _Probe) -> Callable[[Any], Callable[..., Any]]:
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(original)
        fn = inspect.unwrap(original)

        def loss_function(*args: Any, **kwargs: Any) -> Any:
            if not probe.here() or probe.tls.in_loss:
                return original(*args, **kwargs)
            from tensorflow.python import pywrap_tfe

            if pywrap_tfe.TFE_Py_TapeSetIsEmpty():
                return original(*args, **kwargs)  # outside any tape: a metric, a printout
            probe.tls.in_loss += 1
            try:
                out = original(*args, **kwargs)
            finally:
                probe.tls.in_loss -= 1
            with probe.guard():
                try:
                    bound = sig.bind(*args, **kwargs)
                except TypeError:
                    return out
                probe.on_loss_function(fn, bound, out)
            return out

        return loss_function

    return make


def _make_weights_write(probe: _Probe, how: str) -> Callable[[Any], Callable[..., Any]]:
    """A wrapper of a method that overwrites a model's weights outside the optimizer's steps.

    ``how`` names it: ``set_weights`` (``Layer``/``Model.set_weights``: EarlyStopping's
    ``restore_best_weights`` at the end of fit(), a script copying weights), ``load_weights``,
    ``ema`` (an optimizer's ``finalize_variable_values``, which writes the moving average of
    the weights into the model when ``use_ema`` is on: fit() calls it when it ends). Recorded
    after the call returned, once per outermost call (``load_weights`` may call
    ``set_weights``), with the variables it wrote: for ``ema`` its ``var_list``, otherwise
    the object's ``weights``.
    """

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def write(self: Any, *args: Any, **kwargs: Any) -> Any:
            if not probe.here():
                return original(self, *args, **kwargs)
            probe.tls.writing_weights += 1
            try:
                out = original(self, *args, **kwargs)
            finally:
                probe.tls.writing_weights -= 1
            if probe.tls.writing_weights == 0:
                with probe.guard():
                    if how == "ema":
                        if getattr(self, "use_ema", False):
                            given = args[0] if args else kwargs.get("var_list")
                            probe.on_weights_written(how, list(given or []))
                    else:
                        probe.on_weights_written(how, _meta.variables_of(self))
            return out

        return write

    return make


def _make_assign(probe: _Probe, method: str) -> Callable[[Any], Callable[..., Any]]:
    """A wrapper of a variable's ``method`` (``assign``, ``assign_add``, ``assign_sub``) for
    writes by the script, outside an optimizer's apply and outside
    set_weights/load_weights/finalize_variable_values (recorded as such). Only the outermost
    of nested writes counts (a Keras 3 Variable's ``assign_sub`` calls its ``assign``, which
    assigns its tf.Variable). A write of a variable a ``tape.gradient`` call returned a
    gradient for that no optimizer took is a hand-written update (``_manual``); any other write
    of a variable an optimizer of the run steps is noted once (:meth:`_Probe.on_assign`).
    Inside a ``tf.function`` this runs when it is traced."""

    from gradtrace import _manual
    from gradtrace._hooks import _apply_depth, guard, is_suppressed

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def assign(self: Any, *args: Any, **kwargs: Any) -> Any:
            # cheapest tests first: an eager loop's optimizer and metrics assign on every step
            tls = probe.tls
            if _apply_depth() or tls.writing_weights or tls.assigning or is_suppressed() or not probe.here():
                return original(self, *args, **kwargs)
            manual = False
            if _manual.may_claim(self):
                with probe.guard():
                    value = args[0] if args else kwargs.get("value", kwargs.get("delta"))
                    manual = bool(guard(probe.run, "hand-written update",
                                        lambda: _manual.before_write(probe.run, self, method, value)))
            tls.assigning += 1
            try:
                out = original(self, *args, **kwargs)
            finally:
                tls.assigning -= 1
            if manual:
                with probe.guard():
                    guard(probe.run, "hand-written update", lambda: _manual.after_write(probe.run, self))
                return out
            newly = getattr(probe.run, "newly_assigned", None)  # optional for a minimal run
            try:
                new = newly is not None and newly(self)
            except Exception:  # never into the user's assign
                new = False
            if new:
                with probe.guard():
                    probe.on_assign(self)
            return out

        return assign

    return make


def _patch_tf_assign(probe: _Probe) -> None:
    """The assign methods of tf.Variables, defined on both classes
    (tensorflow/python/ops/resource_variable_ops.py ``BaseResourceVariable.assign*`` and
    ``ResourceVariable.assign*``; a write seen by both counts once, see :func:`_make_assign`)."""
    from tensorflow.python.ops.resource_variable_ops import BaseResourceVariable, ResourceVariable

    for cls in (BaseResourceVariable, ResourceVariable):
        for name in ("assign", "assign_add", "assign_sub"):
            if name in cls.__dict__:
                probe.patch(cls, name, _make_assign(probe, name))


def _writer_of_weights() -> str | None:
    """Who overwrote the weights: the Keras callback (``EarlyStopping``) or ``fit`` whose code
    is on the calling stack, nearest first; None for the script itself."""
    frame = sys._getframe(2)
    for _ in range(40):
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        if owner is not None:
            names = [c.__name__ for c in type(owner).__mro__]
            if "Callback" in names:
                return type(owner).__name__
            if frame.f_code.co_name == "fit" and "Model" in names:
                return "fit"
        frame = frame.f_back
    return None


def _make_fit(probe: _Probe) -> Callable[[Any], Callable[..., Any]]:
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(original)

        def fit(self: Any, *args: Any, **kwargs: Any) -> Any:
            if probe.here():
                with probe.guard():
                    bound = sig.bind(self, *args, **kwargs)
                    bound.apply_defaults()
                    probe.on_fit(self, bound)
            return original(self, *args, **kwargs)

        return fit

    return make


def _want_tf_keras() -> bool:
    import os

    if "tf_keras" in sys.modules:
        return True
    return os.environ.get("TF_USE_LEGACY_KERAS", "").strip().lower() in ("1", "true", "yes")


class _LateTfKeras:
    """tf-keras imported inside ``trace`` (``import tf_keras`` in the decorated ``main()``, or by
    a module imported there): its probes (layer modes, loss details, fingerprints, fit's data)
    are installed when its import completes, before any of its models exists, for every
    installation made while it was not imported yet. A finder on ``sys.meta_path`` while
    such an installation is active: it finds ``tf_keras`` through the other finders and wraps
    that spec's loader (importlib's ``Loader.exec_module`` runs the package's code)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: list[_Probe] = []
        self.finding = threading.local()

    def add(self, probe: _Probe) -> None:
        with self.lock:
            self.pending.append(probe)
            if self not in sys.meta_path:
                sys.meta_path.insert(0, self)  # type: ignore[arg-type]

    def remove(self, probe: _Probe) -> None:
        with self.lock:
            if probe in self.pending:
                self.pending.remove(probe)
            if not self.pending and self in sys.meta_path:
                sys.meta_path.remove(self)  # type: ignore[arg-type]

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "tf_keras" or getattr(self.finding, "on", False):
            return None
        import importlib.util

        self.finding.on = True
        try:
            spec = importlib.util.find_spec(name)
        except Exception:  # noqa: BLE001 - the import goes on as if we were not here
            return None
        finally:
            self.finding.on = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _LoaderThen(spec.loader, self.imported)
        return spec

    def imported(self) -> None:
        with self.lock:
            probes, self.pending = list(self.pending), []
            if self in sys.meta_path:
                sys.meta_path.remove(self)  # type: ignore[arg-type]
        from gradtrace import _hooks

        _hooks.ensure_tf_keras()
        for probe in probes:
            if not probe.active:
                continue
            with probe.guard():
                _install_tf_keras(probe)


class _LoaderThen:
    """A loader that runs ``then()`` after the wrapped loader executed the module."""

    def __init__(self, loader: Any, then: Callable[[], None]) -> None:
        self.loader = loader
        self.then = then

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.loader.exec_module(module)
        try:
            self.then()
        except Exception:  # noqa: BLE001 - the import itself succeeded
            logger.debug("gradtrace: tf-keras probes not installed after its import", exc_info=True)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


_late_tf_keras = _LateTfKeras()


def install(run: Any) -> Callable[[], None]:
    """Install the probes for ``run`` in the calling thread; returns the undo.

    ``run`` provides ``register_model(model)``, ``update_meta(**fields)``,
    ``strict`` and ``internal_error(exc)``. Only work done by the installing
    thread is seen. The undo restores every patched attribute exactly, removes
    the op callback, and is safe to call twice.
    """
    probe = _Probe(run)
    probe._publish_call_args({})  # recorded: a layer not listed was called with its defaults
    _install_tape(probe)
    _install_clips(probe)
    try:
        _install_keras3(probe)
    except ImportError as exc:
        logger.info("Keras 3 not available (%s): its probes are off", exc)
    if _want_tf_keras():
        try:
            _install_tf_keras(probe)
        except ImportError as exc:
            logger.info("tf-keras not available (%s): its probes are off", exc)
    else:
        _late_tf_keras.add(probe)

    done = False

    def undo() -> None:
        nonlocal done
        if done:
            return
        done = True
        try:
            probe.outside.publish()
        except Exception as exc:  # noqa: BLE001 - undo the rest regardless
            logger.debug("gradtrace: counting training-mode calls outside the steps failed", exc_info=exc)
        failed: Exception | None = None
        try:
            probe.publish_layer_models()
        except Exception as exc:  # noqa: BLE001 - undo the rest regardless, then say so
            failed = exc
        _late_tf_keras.remove(probe)
        probe.active = False
        probe.tls.window = None
        if threading.get_ident() == probe.thread:
            probe.remove_callback()
        for restore in reversed(probe.undo):
            try:
                restore()
            except Exception:  # noqa: BLE001 - restore the rest regardless
                logger.exception("could not undo a probe")
        probe.undo.clear()
        probe.models.clear()
        probe.layer_refs.clear()
        probe.call_args.clear()
        probe.loss_wrapped.clear()
        if failed is not None:  # the run's closing records it (an internal error, raised when strict)
            raise failed

    return undo


# --------------------------------------------------------------------------- decoding


_MODE_RE = re.compile(re.escape(K_MODE) + r"(.*)$")
_WEIGHT_FIELDS = (("weight_sum", False), ("weight_nonzero", True), ("weight_count", True),
                  ("mask_valid", True), ("mask_count", True))


def _static_fields(statics: dict[str, Any]) -> dict[str, Any]:
    """The StepRecord fields that depend only on a trace's statics (the same every step)."""
    out: dict[str, Any] = {}
    modes: dict[str, bool | None] = {}
    frozen: list[str] = []
    for key, val in statics.items():
        m = _MODE_RE.match(key)
        if m:
            modes[m.group(1)] = None if val is None else bool(val)
        elif key.startswith(K_FROZEN) and val:
            frozen.append(key[len(K_FROZEN) :])
    out["modes"] = modes
    if frozen:
        out["frozen"] = sorted(frozen)
    info = statics.get(K_LOSS_INFO)
    if info is not None:
        out["loss_info"] = dict(info)
    if K_BROADCASTS in statics:
        out["broadcasts"] = [dict(b) for b in statics[K_BROADCASTS]]
    if K_Y_PRED_SHAPE in statics:
        out["y_pred_shape"] = list(statics[K_Y_PRED_SHAPE])
    if K_BATCH in statics:
        out["batch_size"] = int(statics[K_BATCH])
    return out


def _columns(block: Any) -> list[list[float]]:
    """Rows of a ``(n, size)`` block as Python floats (one conversion for the whole block)."""
    import numpy as np

    return np.asarray(block, dtype=np.float64).tolist()  # type: ignore[no-any-return]



def _mask_counts(y_pred: Any) -> list[Any] | None:
    """Valid and total entries (float32 scalars) of the Keras mask ``y_pred`` carries
    (``_keras_mask``: ``Embedding(mask_zero=True)``, ``Masking``), or None without one."""
    import tensorflow as tf

    mask = getattr(_first_tensor(y_pred), "_keras_mask", None) if y_pred is not None else None
    if mask is None or not tf.is_tensor(mask):
        return None
    m = tf.reshape(tf.cast(mask, tf.float32), [-1])
    return [tf.reduce_sum(m), tf.cast(tf.size(m), tf.float32)]


def decode_block(values: dict[str, Any], statics: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Turn ``n`` steps' read-back probe values and one trace's statics into StepRecord fields.

    ``values``: key -> array of shape ``(n, size)`` (what the probes put as tensors,
    one row per step); ``statics``: key -> Python value (fixed for the trace). Keys
    this module does not own are ignored. Returns, per step, only the fields that
    were observed. Objects that come from the statics alone (``modes`` without
    per-step flags, ``frozen``, ``broadcasts``, ``y_pred_shape``, a ``loss_info``
    without per-step numbers) are shared by the returned dicts: treat them as
    read-only.
    """
    base = _static_fields(statics)
    static_modes: dict[str, bool | None] = base.pop("modes")
    value_modes = [(m.group(1), key) for key in values if (m := _MODE_RE.match(key))]
    if not value_modes and static_modes:
        base["modes"] = static_modes
    cols = {key: _columns(v) for key, v in values.items()}
    info = base.get("loss_info")
    ps = cols.get(K_LOSS_PS) if info is not None else None
    lw = cols.get(K_LOSS_W) if info is not None else None
    om = cols.get(K_LOSS_OUT_MASK) if info is not None else None
    out: list[dict[str, Any]] = []
    for j in range(n):
        rec = dict(base)
        if value_modes:
            modes = dict(static_modes)
            for name, key in value_modes:
                f = cols[key][j]
                s = f[0] if f else None
                modes[name] = None if s is None or s != s else s > 0.5
            rec["modes"] = modes
        if ps is not None or lw is not None or om is not None:
            row_info = dict(info)  # type: ignore[arg-type]
            # All NaN: a step that applied already-taken stashed gradients (_hooks._from_stash).
            if ps is not None and len(ps[j]) == 4 and ps[j][3] == ps[j][3]:
                f = ps[j]
                row_info.update(per_sample_mean=f[0], per_sample_min=f[1], per_sample_max=f[2],
                                per_sample_count=int(f[3]))
            if lw is not None and len(lw[j]) == 5:
                for (name, whole), x in zip(_WEIGHT_FIELDS, lw[j], strict=True):
                    if x == x:
                        row_info[name] = int(x) if whole else x
            if om is not None and len(om[j]) == 2 and om[j][1] == om[j][1]:
                row_info.update(output_mask_valid=int(om[j][0]), output_mask_count=int(om[j][1]))
            rec["loss_info"] = row_info
        if "batch_size" not in base and K_BATCH in cols:
            f = cols[K_BATCH][j]
            if f and f[0] == f[0]:
                rec["batch_size"] = int(f[0])
        for key, name in ((K_X_FP, "x_fp"), (K_Y_FP, "y_fp")):
            if key in cols and not (cols[key][j] and all(v != v for v in cols[key][j])):
                rec[name] = cols[key][j]
        for key, name in ((K_REG, "reg_loss"), (K_SCALE, "loss_scale"),
                          # The target was the loss times loss_scale: record the loss itself,
                          # so runs with and without mixed precision compare.
                          (K_UNSCALED, "loss")):
            if key in cols:
                f = cols[key][j]
                rec[name] = f[0] if f else None
        if K_SKIPPED in cols:
            f = cols[K_SKIPPED][j]
            rec["skipped"] = None if not f else f[0] > 0.5
        if K_LOSS_ABSENT in cols:
            f = cols[K_LOSS_ABSENT][j]
            if f and f[0] > 0.5:
                rec["loss"] = None  # not recorded: a NaN here would read as a diverged loss
        out.append(rec)
    return out


def decode(values: dict[str, Any], statics: dict[str, Any]) -> dict[str, Any]:
    """One step's fields: :func:`decode_block` for a single row (``values``: key -> array)."""
    import numpy as np

    block = {k: np.asarray(v, dtype=np.float64).reshape(1, -1) for k, v in values.items()}
    return decode_block(block, statics, 1)[0]


__all__ = ["FP_LEN", "decode", "decode_block", "describe_loss", "fingerprint", "install"]
