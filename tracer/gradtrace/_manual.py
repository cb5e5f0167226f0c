"""Hand-written updates: a script that writes the variables of a ``tape.gradient`` call
itself (``v.assign_sub(lr * g)``, TensorFlow's "basic training loops") instead of calling an
optimizer makes steps of a stand-in optimizer, :class:`ManualUpdate`.

A step opens at the script's first write (``assign``, ``assign_sub``, ``assign_add``) of a
variable the thread's latest unconsumed ``tape.gradient`` call returned a gradient for, before
that write: the optimizer hook's ``_before`` runs there, so full steps snapshot the weights the
update starts from. It closes, through ``_after``, once every such variable was written;
otherwise at the next ``tape.gradient`` call, at the end of the ``tf.function`` trace, or at the
end of the run. Inside a ``tf.function`` this happens while it is traced: the statistics read
the variables after the assigns (automatic control dependencies order ops on one resource).

Which writes are updates: inside a ``tf.function``, those whose value is computed from the
call's gradients, directly or through variables the function wrote from them (momentum or Adam's
moments kept by hand; :func:`_derived`); eagerly, where values carry no history, a write of such
a variable that no optimizer of the run steps whose change is aligned with the gradient at least
as closely as with the weights (:func:`_along_gradient`). A write a step did not claim (weights clipped
after the update, or decayed between ``tape.gradient`` and ``apply_gradients``) stays a weight
write (``Run.note_assigned``). Each set of variables updated by hand gets its own ``ManualUpdate``
(a GAN's two halves are two optimizers, as with Keras optimizers), whose ``iterations`` counts
its steps. Its description (``RunInfo.optimizers``) has no learning rate: the update's norm
against the gradient's shows what rate acted.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gradtrace._hooks import TapeCall, _StepCtx
    from gradtrace._trace import Run

_local = threading.local()


class ManualUpdate:
    """The optimizer of hand-written updates (one per set of variables updated together)."""

    def __init__(self) -> None:
        import tensorflow as tf

        with tf.init_scope():
            self._iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="gradtrace_manual_iterations")
        self.writes: set[str] = set()  # the variable methods the script wrote with

    @property
    def iterations(self) -> Any:
        return self._iterations

    def get_config(self) -> dict[str, Any]:
        return {"name": "manual_update", "writes": sorted(self.writes)}


@dataclass
class _Open:
    """A hand-written step being written: opened by its first write, closed by its last."""

    call: TapeCall
    ctx: _StepCtx
    want: frozenset[int]  # var_key of each variable the call returned a gradient for
    written: set[int] = field(default_factory=set)


def _open_steps() -> dict[object, _Open]:
    steps = getattr(_local, "open", None)
    if steps is None:
        steps = _local.open = {}
    return steps


def any_open() -> bool:
    """Whether the calling thread has a hand-written step open (cheap: every gradient call asks)."""
    return bool(getattr(_local, "open", None))


def _optimizer(run: Run, want: frozenset[int]) -> ManualUpdate:
    opts: dict[frozenset[int], ManualUpdate] = run.__dict__.setdefault("_manual_updates", {})
    opt = opts.get(want)
    if opt is None:
        opt = opts[want] = ManualUpdate()
    return opt


def _candidate(key: int) -> TapeCall | None:
    """The latest ``tape.gradient`` call of the current graph no step took yet that returned a
    gradient for ``key``, looking past the calls hand-written steps took (a GAN's halves
    updated one after the other) but not past one an optimizer took (weights clipped after an
    optimizer's step are not an update of an older call's gradients)."""
    from gradtrace import _hooks

    dq = _hooks._tape_calls().get(_hooks._graph_key())
    for call in reversed(dq or ()):
        if call.by_hand:
            continue
        if call.consumed:
            return None
        if key in call.grads:
            return call
    return None


def may_claim(v: Any) -> bool:
    """Cheap and never raising (every script write outside an optimizer asks, a metric's on
    every eager step): whether a write of ``v`` could belong to a hand-written step, i.e. the
    thread has a step open or a gradient call that returned gradients no step took yet."""
    try:
        from gradtrace import _hooks

        if getattr(_local, "open", None):
            return True
        for call in reversed(_hooks._tape_calls().get(_hooks._graph_key()) or ()):
            if not call.by_hand:
                if call.consumed:
                    return False
                if call.grads:
                    return True
        return False
    except Exception:  # noqa: BLE001 - never into the user's assign
        return False


# Ops walked back from a value written inside a graph, at most (see _derived).
_WALK = 512


def _grad_names(call: TapeCall) -> set[str]:
    import tensorflow as tf

    names = set()
    for g in call.grads.values():
        for t in (g.values, g.indices) if isinstance(g, tf.IndexedSlices) else (g,):
            name = getattr(t, "name", None)
            if isinstance(name, str):
                names.add(name)
    return names


def _tainted() -> set[int]:
    """``id`` of the handles of variables the current graph wrote from gradients (a velocity)."""
    from gradtrace import _hooks

    per_graph: dict[object, set[int]] = getattr(_local, "tainted", None) or {}
    if len(per_graph) > 64:  # every trace is a new graph
        per_graph = {}
    _local.tainted = per_graph
    return per_graph.setdefault(_hooks._graph_key(), set())


def _derived(value: Any, calls: list[TapeCall]) -> bool:
    """Inside a graph (the trace of a ``tf.function``): whether ``value`` is computed from the
    gradients of ``calls`` or from a variable the graph wrote from them (momentum kept in a
    variable of its own). A weight decayed, clipped or reset (computed from the variable itself,
    a constant, a learning-rate variable) is not. Walks at most :data:`_WALK` ops back."""
    import tensorflow as tf

    from gradtrace import _hooks

    tainted = _tainted()
    if isinstance(value, tf.Variable) or hasattr(value, "_value"):  # the value *is* a variable
        return id(getattr(_hooks.tf_variable(value), "handle", None)) in tainted
    if not isinstance(value, tf.Tensor) or not hasattr(value, "op"):
        return False
    grads = set().union(*(_grad_names(c) for c in calls))
    graph = value.graph
    captured = {internal.name: id(external) for external, internal in getattr(graph, "captures", ())}
    todo, seen = [value], set()
    while todo and len(seen) < _WALK:
        t = todo.pop()
        if t.name in grads:
            return True
        op = t.op
        if op.name in seen:
            continue
        seen.add(op.name)
        if op.type == "ReadVariableOp":
            if captured.get(op.inputs[0].name) in tainted:
                return True
            continue
        todo.extend(op.inputs)
    return False


def _along_gradient(v: Any, method: str, value: Any, grad: Any) -> bool:
    """Eagerly, where a value carries no history: whether the change a write makes to ``v`` is
    aligned with the variable's gradient at least as closely as with the variable itself.

    An update computed from the gradient (``lr * g``, momentum, Adam's ``m / sqrt(v)``) moves the
    weights along the gradient; a decay, a clip, a constraint or a reset written by hand moves
    them along the weights (``|cos(change, w)| = 1`` for a decay). Measured by ``|cos|`` against
    each. A write that changes nothing, or of a variable whose gradient is zero, is none; one of a
    zero weight (nothing to decay) is. True where it cannot be measured (a scalar, a sparse
    gradient, non-finite values), as every write of a differentiated variable was taken before."""
    import numpy as np
    import tensorflow as tf

    try:
        if isinstance(grad, tf.IndexedSlices) or method not in ("assign", "assign_add", "assign_sub"):
            return True
        w = tf.reshape(tf.cast(tf.convert_to_tensor(v), tf.float32), [-1])
        new = tf.reshape(tf.cast(tf.convert_to_tensor(value), tf.float32), [-1])
        change = new - w if method == "assign" else -new if method == "assign_sub" else new
        g = tf.reshape(tf.cast(grad, tf.float32), [-1])
        norms = tf.stack([tf.norm(change), tf.norm(g), tf.norm(w)]).numpy()
        if not np.isfinite(norms).all():
            return True
        if norms[0] == 0 or norms[1] == 0:
            return False  # no change, or no gradient to move along: nothing this gradient did
        if norms[2] == 0 or int(w.shape[0]) < 2:
            return True  # nothing to decay or clip (a zero-initialised bias); a scalar: |cos| = 1 both
        along_g = abs(float(tf.tensordot(change, g, 1))) / (norms[0] * norms[1])
        along_w = abs(float(tf.tensordot(change, w, 1))) / (norms[0] * norms[2])
        return along_g >= along_w
    except Exception:  # noqa: BLE001 - shapes that do not line up: decided as before
        return True


def _unconsumed() -> list[TapeCall]:
    """The current graph's latest gradient calls no step took (as :func:`_candidate` looks)."""
    from gradtrace import _hooks

    out = []
    for call in reversed(_hooks._tape_calls().get(_hooks._graph_key()) or ()):
        if call.by_hand:
            continue
        if call.consumed:
            break
        out.append(call)
    return out


def before_write(run: Run, v: Any, method: str, value: Any) -> bool:
    """The script is about to write ``value`` into ``v`` (inside the assign hook, before the
    write): whether the write belongs to a hand-written step (then :func:`after_write` follows).

    Eagerly a write of a differentiated variable no optimizer of the run steps is one when it
    moves the weights along the gradient (:func:`_along_gradient`). Inside a
    ``tf.function`` the written value must also be computed from the gradients (:func:`_derived`):
    a weight decayed or clipped by hand between ``tape.gradient`` and ``apply_gradients`` is not
    an update. A variable written there from the gradients that is no source of the call (a
    velocity) is remembered, so that an update read from it counts."""
    import tensorflow as tf

    from gradtrace import _hooks

    key = _hooks.var_key(v)
    graph = _hooks._graph_key()
    steps = _open_steps()
    step = steps.get(graph)
    eager = tf.executing_eagerly()
    if step is not None and key in step.want:
        return eager or _derived(value, [step.call])
    call = _candidate(key)
    if call is None:
        if not eager and _derived(value, _unconsumed() + ([step.call] if step is not None else [])):
            _tainted().add(id(getattr(_hooks.tf_variable(v), "handle", None)))
        return False  # not an update (a velocity written by hand, a metric): the open step goes on
    if eager and run.stepped_by_optimizer(key):
        return False  # an optimizer of the run steps it: a write beside its steps
    if eager and not _along_gradient(v, method, value, call.grads[key]):
        return False  # a weight decayed, clipped or reset by hand before an optimizer's first step
    if not eager and not _derived(value, [call]):
        return False
    if step is not None:
        close(run, graph)  # another call's variables: that step is over
    by_key = {_hooks.var_key(x): x for x in call.variables}
    keys = [k for k in call.grads if k in by_key]
    want = frozenset(keys)
    opt = _optimizer(run, want)
    opt.writes.add(method)
    ctx = _hooks._before(run, opt, [call.grads[k] for k in keys], [by_key[k] for k in keys], "manual")
    steps[graph] = _Open(call, ctx, want)
    call.by_hand = True
    return True


def after_write(run: Run, v: Any) -> None:
    """``v`` was written by a hand-written step: the step closes once all its variables were."""
    from gradtrace import _hooks

    graph = _hooks._graph_key()
    step = _open_steps().get(graph)
    if step is None:
        return
    step.written.add(_hooks.var_key(v))
    if step.written >= step.want:
        close(run, graph)


def close(run: Run, graph: object | None = None) -> None:
    """Record the open hand-written step of ``graph`` (default: the current one), if any."""
    from gradtrace import _hooks

    step = _open_steps().pop(_hooks._graph_key() if graph is None else graph, None)
    if step is None:
        return
    with _hooks._in_apply():  # the counter's own assign is not the script's write
        step.ctx.opt.iterations.assign_add(1)
    _hooks._after(run, step.ctx)


def reset_thread() -> None:
    """Forget the calling thread's open steps and written variables (on leaving a run, after
    :func:`close`)."""
    _local.open = {}
    _local.tainted = {}
