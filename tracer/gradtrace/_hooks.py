"""Reversible patches that see every optimizer step, and the step capture itself.

Installed when the outermost ``trace`` is entered and removed when it is left
(a nesting count; the removal restores exactly the attribute that was there):

- ``tf.GradientTape.gradient`` (class level) remembers, per thread and graph,
  the target handed to it (the loss), its static shape and the sources.
- The optimizer's step: Keras 3 ``BaseOptimizer.apply`` (``apply_gradients``
  calls it) and, for legacy tf-keras, ``apply_gradients``, patched on every
  class of the hierarchy that defines it. Only the outermost call of a thread
  records (a LossScaleOptimizer's ``apply`` calls its inner optimizer's).
- ``tensorflow/python/util/variable_utils.py convert_variables_to_tensors`` as
  ``func_graph_from_py_func`` calls it on a traced function's outputs: the end of a
  ``tf.function`` trace whose gradients leave the graph unapplied (see :class:`_Stash`).
- ``make_train_function`` of both Keras flavours: fit() caches its compiled
  step, so the first fit() inside a trace rebuilds it (and the run puts the
  old one back when it ends).

The user's call always runs outside any guard; only our bookkeeping is
guarded (:func:`guard`). While our own code runs TensorFlow ops a
thread-local flag keeps the hooks from tracing them (:func:`suppressed`).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gradtrace import _manual, _meta, _scope, _stats, _tensors

if TYPE_CHECKING:
    from gradtrace._trace import Run

logger = logging.getLogger("gradtrace.hooks")

_local = threading.local()
_MISSING = object()
_WRAPPED = "__gradtrace_wrapped__"


# --- suppression and guarding --------------------------------------------------------


def is_suppressed() -> bool:
    return getattr(_local, "suppress", 0) > 0


@contextlib.contextmanager
def suppressed() -> Iterator[None]:
    """Our own TensorFlow work inside this block is invisible to the hooks and to op callbacks."""
    _local.suppress = getattr(_local, "suppress", 0) + 1
    try:
        with op_callbacks_hidden():
            yield
    finally:
        _local.suppress -= 1


@contextlib.contextmanager
def op_callbacks_hidden() -> Iterator[None]:
    """The user's op callbacks do not see the ops created or run in this block.

    ``tf.debugging.enable_check_numerics()`` and tfdbg's dumping are op callbacks
    (tensorflow/python/framework/op_callbacks.py ``invoke_op_callbacks``, run for graph
    ops as they are built and, through tensorflow/python/eager/execute.py
    ``execute_with_callbacks``, for eager ops as they run). Our bookkeeping writes NaN
    for "absent" on purpose; a check-numerics callback would raise on it inside the
    user's training. Both paths read the thread's list
    (tensorflow/python/eager/context.py ``Context.op_callbacks``): the other callbacks
    are taken out of it here and put back after. Ours stay (they ignore our own work),
    so the probes can add or remove theirs meanwhile.
    """
    from tensorflow.python.eager import context

    callbacks = context.context().op_callbacks
    foreign = [cb for cb in callbacks if not getattr(cb, "__gradtrace_callback__", False)]
    if not foreign:
        yield
        return
    callbacks[:] = [cb for cb in callbacks if getattr(cb, "__gradtrace_callback__", False)]
    try:
        yield
    finally:
        callbacks[:] = foreign + [cb for cb in callbacks if cb not in foreign]


def guard(run: Run, where: str, fn: Callable[[], Any]) -> Any:
    """Run tracer bookkeeping: an error becomes one warning and a partial run (strict: raises)."""
    try:
        with suppressed():
            return fn()
    except Exception as exc:
        run.internal_error(exc, where)
        return None


def _active_run() -> Run | None:
    if is_suppressed():
        return None
    from gradtrace import _trace

    return _trace.current_run()


# --- variables -----------------------------------------------------------------------


def tf_variable(v: Any) -> Any:
    """The tf.Variable under a Keras 3 Variable or a tf-keras AutoCastVariable."""
    import tensorflow as tf

    for _ in range(4):
        if isinstance(v, tf.Variable) and type(v).__name__ != "AutoCastVariable":
            return v
        # keras/src/backend/tensorflow/core.py Variable keeps it in `_value`;
        # tf_keras/src/mixed_precision/autocast_variable.py in `_variable`.
        inner = getattr(v, "_value", None)
        if inner is None or not isinstance(inner, tf.Variable):
            inner = getattr(v, "_variable", None)
        if inner is None:
            return v
        v = inner
    return v


def var_key(v: Any) -> int:
    return id(tf_variable(v))


# --- patch registry ------------------------------------------------------------------


@dataclass
class _Patch:
    owner: type
    name: str
    original: Any  # the class __dict__ entry, or _MISSING
    wrapper: Any


class _Registry:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.depth = 0
        self.patches: list[_Patch] = []
        self.tf_keras_done = False

    def patch(self, owner: type, name: str, make: Callable[[Any], Any]) -> None:
        current = owner.__dict__.get(name, _MISSING)
        if current is not _MISSING and getattr(current, _WRAPPED, False):
            return
        target = getattr(owner, name)
        wrapper = make(target)
        setattr(wrapper, _WRAPPED, True)
        setattr(owner, name, wrapper)
        self.patches.append(_Patch(owner, name, current, wrapper))

    def unpatch_all(self) -> None:
        while self.patches:
            p = self.patches.pop()
            if p.owner.__dict__.get(p.name, _MISSING) is not p.wrapper:
                # Someone wrapped on top of us: removing ours would remove theirs.
                # Our wrapper passes everything through when no run is active.
                logger.debug("gradtrace: %s.%s re-patched by another library; left in place",
                             p.owner.__name__, p.name)
                continue
            if p.original is _MISSING:
                delattr(p.owner, p.name)
            else:
                setattr(p.owner, p.name, p.original)


_registry = _Registry()


def install() -> None:
    """Install every patch (outermost call) or count one more nesting level."""
    with _registry.lock:
        _registry.depth += 1
        if _registry.depth > 1:
            return
        try:
            _install_all()
        except BaseException:
            _registry.unpatch_all()
            _registry.depth -= 1
            raise


def uninstall() -> None:
    """Undo :func:`install`; the outermost call restores every patched attribute."""
    with _registry.lock:
        if _registry.depth <= 0:
            return
        _registry.depth -= 1
        if _registry.depth == 0:
            _registry.unpatch_all()
            _registry.tf_keras_done = False


def installed() -> bool:
    return _registry.depth > 0


def _subclasses(base: type) -> list[type]:
    out, todo, seen = [], [base], set()
    while todo:
        c = todo.pop()
        if c in seen:
            continue
        seen.add(c)
        out.append(c)
        todo.extend(c.__subclasses__())
    return out


def _install_all() -> None:
    import tensorflow as tf

    # tensorflow/python/eager/backprop.py GradientTape.gradient
    _registry.patch(tf.GradientTape, "gradient", _wrap_gradient)
    # GradientTape.jacobian / batch_jacobian differentiate each element of the target by
    # calling self.gradient inside a (vectorised) loop: one tape call of the whole target.
    _registry.patch(tf.GradientTape, "jacobian", _wrap_jacobian)
    _registry.patch(tf.GradientTape, "batch_jacobian", _wrap_jacobian)
    # tensorflow/python/ops/parallel_for/control_flow_ops.py: tf.vectorized_map calls pfor,
    # jacobian pfor_ops.pfor / pfor_ops.for_loop (module attributes looked up at each call):
    # a gradient taken inside their loop function is one element's, not a step's.
    from tensorflow.python.ops.parallel_for import control_flow_ops as pfor_ops

    for name in ("pfor", "for_loop"):
        if callable(getattr(pfor_ops, name, None)):
            _registry.patch(pfor_ops, name, _wrap_element_loop)
    # tensorflow/python/saved_model/save.py: save() calls save_and_return_nodes()
    from tensorflow.python.saved_model import save as saved_model_save

    _registry.patch(saved_model_save, "save_and_return_nodes", _wrap_saved_model_save)
    # tensorflow/python/framework/func_graph.py func_graph_from_py_func calls
    # variable_utils.convert_variables_to_tensors(func_outputs) right after the traced Python
    # function returned, still inside the graph and before its inputs (captures) are listed.
    from tensorflow.python.util import variable_utils

    _registry.patch(variable_utils, "convert_variables_to_tensors", _wrap_trace_end)
    # A thread started inside a run works for it (_trace.current_run)
    _registry.patch(threading.Thread, "start", _wrap_thread_start)
    # tensorflow/python/data/ops/dataset_ops.py DatasetV2.__iter__: a loop over a tf.data
    # pipeline (whether it shuffles, see _describe_dataset)
    from tensorflow.python.data.ops import dataset_ops

    _registry.patch(dataset_ops.DatasetV2, "__iter__", _wrap_dataset_iter)
    # tensorflow/python/eager/polymorphic_function/concrete_function.py
    # ConcreteFunction._call_flat runs a traced function (tracing_compilation.call_function
    # calls it for every tf.function call): a call that raises, see Run.aborted_call
    from tensorflow.python.eager.polymorphic_function import concrete_function

    _registry.patch(concrete_function.ConcreteFunction, "_call_flat", _wrap_call_flat)
    try:
        from keras.src.optimizers.base_optimizer import BaseOptimizer
    except ImportError:  # a TensorFlow without Keras 3
        BaseOptimizer = None
    if BaseOptimizer is not None:
        # keras/src/optimizers/base_optimizer.py BaseOptimizer.apply (apply_gradients calls it);
        # keras/src/optimizers/loss_scale_optimizer.py overrides it and calls the inner one.
        for cls in _subclasses(BaseOptimizer):
            if "apply" in cls.__dict__:
                _registry.patch(cls, "apply", _wrap_k3_apply)
        try:
            from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

            # keras/src/backend/tensorflow/trainer.py TensorFlowTrainer.make_train_function
            _registry.patch(TensorFlowTrainer, "make_train_function", _wrap_make_train_function)
        except ImportError:
            pass
    ensure_tf_keras()


def ensure_tf_keras() -> None:
    """Patch legacy tf-keras once it is imported (it may be imported inside the trace)."""
    if _registry.tf_keras_done or "tf_keras" not in sys.modules:
        return
    with _registry.lock:
        if _registry.tf_keras_done or _registry.depth == 0:
            return
        _registry.tf_keras_done = True
        try:
            from tf_keras.src.engine.training import Model as TFKModel
            from tf_keras.src.optimizers.legacy.optimizer_v2 import OptimizerV2
            from tf_keras.src.optimizers.optimizer import _BaseOptimizer
        except ImportError:
            logger.debug("gradtrace: tf_keras present but its optimizers are not importable")
            return
        # tf_keras/src/optimizers/optimizer.py _BaseOptimizer/Optimizer.apply_gradients,
        # tf_keras/src/optimizers/legacy/optimizer_v2.py OptimizerV2.apply_gradients,
        # tf_keras/src/mixed_precision/loss_scale_optimizer.py (both versions override it).
        for base in (_BaseOptimizer, OptimizerV2):
            for cls in _subclasses(base):
                if "apply_gradients" in cls.__dict__:
                    _registry.patch(cls, "apply_gradients", _wrap_tfk_apply_gradients)
        # tf_keras/src/engine/training.py Model.make_train_function
        _registry.patch(TFKModel, "make_train_function", _wrap_make_train_function)


# --- GradientTape.gradient -------------------------------------------------------------


@dataclass
class TapeCall:
    """One ``tape.gradient`` call: what was differentiated with respect to what."""

    targets: list[Any]
    shape: list[int | None] | None
    sources: frozenset[int]
    variables: list[Any] = field(default_factory=list)  # the sources that are variables
    # var_key -> the gradient it returned (not None). Eagerly they are dropped at the first
    # gradient call after an optimizer step took them (``consumed``): one step's worth at most.
    grads: dict[int, Any] = field(default_factory=dict)
    answered: bool = False  # ``grads`` holds the call's answer (empty: None for every source)
    consumed: bool = False
    by_hand: bool = False  # consumed by a hand-written update (see _manual)
    seq: int = 0  # order of the calls in the thread (see tape_seq)
    tape: int = 0  # which GradientTape made the call (see _tape_number): a persistent tape makes several

    def gradient(self, key: int) -> Any:
        return self.grads.get(key)

    def returned(self, ids: set[int]) -> bool:
        """Whether this call returned one of the tensors whose id() is in ``ids``."""
        return any(id(g) in ids for g in self.grads.values())


def _graph_key() -> object:
    import tensorflow as tf

    return "eager" if tf.executing_eagerly() else tf.compat.v1.get_default_graph()


def _tape_calls() -> dict[object, collections.deque[TapeCall]]:
    calls = getattr(_local, "tape_calls", None)
    if calls is None:
        calls = _local.tape_calls = {}
    return calls


def reset_thread() -> None:
    """Forget the calling thread's remembered tape calls (on leaving a run)."""
    _local.tape_calls = {}


_TAPE_NUMBERS = iter(range(1, 1 << 62))


def _tape_number(tape: Any) -> int:
    """A number for a ``GradientTape`` object, unique in the process (an ``id()`` is reused once a
    tape is freed: a loop makes a tape per micro-batch). Kept on the tape as an attribute."""
    if tape is None:
        return 0
    n = getattr(tape, "_gradtrace_tape", None)
    if n is None:
        n = next(_TAPE_NUMBERS)
        try:
            tape._gradtrace_tape = n
        except AttributeError:  # a tape class that takes no attributes: each call on its own
            return 0
    return int(n)


def _remember_gradient(target: Any, sources: Any, tape: Any = None) -> TapeCall:
    import tensorflow as tf

    ensure_tf_keras()
    targets = [t for t in tf.nest.flatten(target) if isinstance(t, (tf.Tensor, tf.Variable))]
    shape = None
    if targets:
        s = targets[0].shape
        shape = s.as_list() if s.rank is not None else None
    keys = frozenset(var_key(v) for v in tf.nest.flatten(sources) if v is not None)
    calls = _tape_calls()
    gk = _graph_key()
    dq = calls.get(gk)
    if dq is None:
        if len(calls) > 64:  # every trace is a new FuncGraph; keep the dict small
            calls.clear()
        dq = calls[gk] = collections.deque(maxlen=8)
    variables = [v for v in tf.nest.flatten(sources) if v is not None and hasattr(v, "assign")]
    _local.tape_seq = tape_seq() + 1
    call = TapeCall(targets, shape, keys, variables, seq=_local.tape_seq, tape=_tape_number(tape))
    dq.append(call)
    return call


def tape_seq() -> int:
    """How many ``tape.gradient`` calls the calling thread made so far (in a trace)."""
    return getattr(_local, "tape_seq", 0)


def tape_targets_since(seq: int) -> list[Any]:
    """The targets of the calling thread's ``tape.gradient`` calls in the current graph made
    after :func:`tape_seq` returned ``seq`` (a step may differentiate several things: a
    GAN's two losses with one persistent tape, a penalty)."""
    dq = _tape_calls().get(_graph_key())
    return [t for call in dq or () if call.seq > seq for t in call.targets]


def _remember_result(call: TapeCall, sources: Any, result: Any, run: Run | None = None, tape: Any = None) -> None:
    """Which sources the call returned a gradient for: a variable differentiated but left out
    of ``apply_gradients`` is then told apart from one that got no gradient. Of those with
    None, the ones ``tape`` never saw read are noted (:meth:`Run.note_unwatched`)."""
    import tensorflow as tf

    flat_s = tf.nest.flatten(sources)
    flat_g = tf.nest.flatten(result, expand_composites=False)
    if len(flat_s) == len(flat_g):
        if tf.executing_eagerly():
            for older in _tape_calls().get("eager") or ():
                if older.consumed:
                    older.grads, older.answered = {}, False
        call.grads = {var_key(v): g for v, g in zip(flat_s, flat_g, strict=True)
                      if v is not None and g is not None}
        call.answered = True
        if run is not None and len(call.grads) < len(flat_s):
            none = [v for v, g in zip(flat_s, flat_g, strict=True) if g is None]
            _note_untrainable(run, [v for v in none if isinstance(v, tf.Variable) and not v.trainable])
            trainable = [v for v in none if hasattr(v, "assign") and getattr(v, "trainable", False)]
            watched = getattr(tape, "watched_variables", None)  # tensorflow/python/eager/backprop.py
            if watched is not None and trainable:  # GradientTape.watched_variables
                run.note_unwatched(trainable, watched)


UNTRAINABLE_ATTR = "_gradtrace_untrainable_refs"


def _note_untrainable(run: Run, variables: list[Any]) -> None:
    """Variables created with ``trainable=False`` that ``tape.gradient`` was asked for and returned
    None for: a tape watches trainable variables only (unless ``tape.watch``-ed), so they never
    train, and a script that drops None gradients hides it. Kept in ``extra.untrainable_sources``."""
    # A model's own non-trainable state (moving statistics, counters) handed over with
    # `model.variables` is not meant to train: only variables no traced model owns count.
    variables = [v for v in variables if not run.in_inventory(v)]
    if not variables:
        return
    # kept for the run's end, which names them by their attribute path in their tf.Module
    # (``Run._name_loose_variables``): two modules' ``b`` both read "b:0"
    refs = run.__dict__.setdefault(UNTRAINABLE_ATTR, [])
    new = [v for v in variables if not any(v is r for r in refs)]
    if new and len(refs) < 64:
        refs.extend(new[:64 - len(refs)])
        run.set_extra(untrainable_sources=[str(getattr(v, "path", None) or v.name) for v in refs])


def _find_tape_call(var_keys: set[int], grads: list[Any] | None = None) -> TapeCall | None:
    """The ``tape.gradient`` call this optimizer step applies: the latest one that returned
    one of ``grads`` itself, else the latest whose sources overlap the stepped variables.

    Identity first: a step may differentiate more after its loss (an auxiliary term, a
    Jacobian, an input gradient for a penalty) before it applies the first call's gradients.
    """
    dq = _tape_calls().get(_graph_key())
    if not dq:
        return None
    if grads:
        ids = {id(g) for g in grads if g is not None}
        for call in reversed(dq):
            if call.sources & var_keys and call.returned(ids):
                return call
    for call in reversed(dq):
        if call.sources & var_keys:
            return call
    return None


_SUM_OPS = frozenset({"AddV2", "Add", "AddN"})


def _with_summands(tape: TapeCall, grads: list[Any], keys: list[int]) -> TapeCall:
    """``tape``, or ``tape`` with the targets of the same tape's other gradient calls whose
    gradients the applied ones add to its own: a loss's and a penalty's gradients taken one by one
    (a persistent tape) and summed before one apply train their sum, so the step's loss is that
    sum. Gradients of other tapes summed (micro-batches accumulated by hand) are other batches':
    the step's loss stays its own call's.

    Looked for at the first variable whose applied gradient is not the call's own: inside a
    ``tf.function`` it must be an addition whose every input is a gradient a call of the graph
    returned for that variable; eagerly, where values carry no history, the sum of this
    call's gradient and other unconsumed calls' must equal it (within float rounding). The
    other calls are marked consumed with it."""
    import tensorflow as tf

    dq = _tape_calls().get(_graph_key()) or ()
    # The same tape only: gradients of other tapes added up are other batches' (accumulation).
    others = [c for c in dq if c is not tape and c.tape == tape.tape and tape.tape
              and not c.consumed and not c.by_hand and c.targets]
    if not others:
        return tape
    for g, k in zip(grads, keys, strict=False):
        own = tape.grads.get(k)
        if g is None or own is None or g is own or isinstance(g, tf.IndexedSlices):
            continue
        mates = [c for c in others if c.grads.get(k) is not None and not isinstance(c.grads[k], tf.IndexedSlices)]
        if not mates:
            return tape
        if tf.executing_eagerly():
            total = own + tf.add_n([c.grads[k] for c in mates]) if len(mates) > 1 else own + mates[0].grads[k]
            close = bool(tf.reduce_all(tf.abs(total - g) <= 1e-6 * (tf.abs(g) + 1e-30)))
            used = mates if close else []
        else:
            op = getattr(g, "op", None)
            if op is None or op.type not in _SUM_OPS:
                return tape
            names = {t.name for t in op.inputs}
            used = [c for c in mates if c.grads[k].name in names]
            if own.name not in names or len(used) + 1 != len(names):
                used = []
        if not used:
            return tape
        for c in (tape, *used):
            c.consumed = True
        return TapeCall([*tape.targets, *(t for c in used for t in c.targets)], tape.shape, tape.sources,
                        tape.variables, tape.grads, answered=tape.answered, consumed=True, by_hand=tape.by_hand,
                        seq=tape.seq, tape=tape.tape)
    return tape


def last_tape_targets() -> list[Any]:
    """The targets of the calling thread's latest ``tape.gradient`` in the current graph."""
    dq = _tape_calls().get(_graph_key())
    return list(dq[-1].targets) if dq else []


def _wrap_gradient(original: Any) -> Any:
    @functools.wraps(original)
    def gradient(self: Any, target: Any, sources: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(_local, "in_element_loop", 0):
            return original(self, target, sources, *args, **kwargs)
        run = _active_run()
        call = None
        if run is not None:
            if _manual.any_open():
                guard(run, "hand-written update", lambda: _manual.close(run))
            call = guard(run, "tape.gradient", lambda: _remember_gradient(target, sources, self))
            if call is not None and call.targets:
                from gradtrace import _probes

                guard(run, "tape.gradient", lambda: _probes.module_broadcasts(call.targets))
        result = original(self, target, sources, *args, **kwargs)
        if call is not None:
            guard(run, "tape.gradient", lambda: _remember_result(call, sources, result, run, self))
            if call.variables and _stash_store(run, create=False) is not None:
                guard(run, "tape.gradient", lambda: _feed_eager_stash(run, call))
            if call.variables:
                from gradtrace import _probes

                guard(run, "tape.gradient", _probes.micro_batch_done)
        return result

    return gradient


def in_element_loop() -> bool:
    """Whether the calling thread is inside a pfor / for_loop body (see :func:`_element_loop`)."""
    return getattr(_local, "in_element_loop", 0) > 0


@contextlib.contextmanager
def _element_loop() -> Iterator[None]:
    """Inside: ``tape.gradient`` calls differentiate one element of a vectorised or looped
    computation (pfor / for_loop) and are not recorded as a step's tape call."""
    _local.in_element_loop = getattr(_local, "in_element_loop", 0) + 1
    try:
        yield
    finally:
        _local.in_element_loop -= 1


def _wrap_element_loop(original: Any) -> Any:
    """``tf.vectorized_map(fn, ...)`` with a tape inside ``fn`` (per-example gradients, then
    reduced by the script and applied): no tape call of the step's graph is left, so the
    step records no loss, rather than one element's loss and batch of one."""
    @functools.wraps(original)
    def loop(*args: Any, **kwargs: Any) -> Any:
        if _active_run() is None:
            return original(*args, **kwargs)
        with _element_loop():
            return original(*args, **kwargs)

    return loop


def _wrap_jacobian(original: Any) -> Any:
    """``tape.jacobian(target, sources)`` is one tape call of the whole ``target`` (its shape
    recorded, its sum the loss, as for a non-scalar target of ``tape.gradient``). Its rows
    come from ``self.gradient`` of one element each, called inside a loop that
    tensorflow/python/eager/backprop.py ``GradientTape.jacobian`` vectorises with
    ``pfor`` (in a graph of its own when eager): those calls are not the step's."""
    @functools.wraps(original)
    def jacobian(self: Any, target: Any, sources: Any, *args: Any, **kwargs: Any) -> Any:
        run = _active_run()
        call = None
        if run is not None:
            call = guard(run, "tape.jacobian", lambda: _remember_gradient(target, sources))
        with _element_loop():
            result = original(self, target, sources, *args, **kwargs)
        if call is not None:
            guard(run, "tape.jacobian", lambda: _remember_result(call, sources, result))
        return result

    return jacobian


# --- threads ---------------------------------------------------------------------------------


def _wrap_thread_start(original: Any) -> Any:
    @functools.wraps(original)
    def start(self: Any) -> Any:
        from gradtrace import _trace

        run = _trace.current_run()
        # The tracer's own threads (poller, exporter, cadence timing) belong to no run.
        if run is not None and not str(getattr(self, "name", "")).startswith("gradtrace"):
            try:
                setattr(self, _trace.INHERITED, run)
            except Exception:  # noqa: BLE001 - a thread class with __slots__: not inherited
                logger.debug("gradtrace: thread %r does not take the run", self, exc_info=True)
        return original(self)

    return start


# --- tf.data pipelines -----------------------------------------------------------------------

_DATASETS_KEPT = 16  # distinct descriptions kept per run
_DATASET_ATTR = "_gradtrace_datasets_seen"


def _describe_dataset(ds: Any) -> dict[str, Any]:
    """Whether a tf.data pipeline shuffles: its Python dataset objects walked once, input by
    input (tensorflow/python/data/ops/dataset_ops.py ``DatasetV2._inputs``), for a
    ``shuffle(...)`` (tensorflow/python/data/ops/shuffle_op.py ``_ShuffleDataset`` keeps
    ``_buffer_size``, ``_seed`` and ``_reshuffle_each_iteration``)."""
    import tensorflow as tf

    out: dict[str, Any] = {"shuffle": False}
    todo, seen = [ds], set()
    while todo and len(seen) < 256:
        d = todo.pop()
        if id(d) in seen:
            continue
        seen.add(id(d))
        if type(d).__name__ == "_ShuffleDataset":
            size, seed, seed2, again = (tf.get_static_value(getattr(d, a, None)) for a in
                                        ("_buffer_size", "_seed", "_seed2", "_reshuffle_each_iteration"))
            # (graph seed, op seed) as tensorflow/python/framework/random_seed.py get_seed
            # derived them: None when neither tf.random.set_seed nor seed= was given.
            out = {"shuffle": True, "buffer_size": None if size is None else int(size),
                   "seed": None if seed is None else [int(seed), int(seed2 or 0)],
                   "reshuffle_each_iteration": None if again is None else bool(again)}
            break
        inputs = getattr(d, "_inputs", None)
        if callable(inputs):
            todo.extend(x for x in inputs() if x is not None)
    return out


def _batches(ds: Any) -> int | None:
    """A pipeline's number of elements: -1 when it repeats forever, None when TensorFlow cannot
    tell (a generator, a filter) or in a graph (tensorflow/python/data/ops/dataset_ops.py
    ``DatasetV2.cardinality``)."""
    import tensorflow as tf

    n = tf.get_static_value(ds.cardinality())
    return None if n is None or int(n) == -2 else int(n)  # -2: tf.data.UNKNOWN_CARDINALITY


def _note_dataset(run: Run, ds: Any) -> None:
    """Describe each pipeline once (``extra.datasets``), and count the iterators opened over each:
    ``extra.dataset_iterators`` holds the pipeline opened most often, ``opened`` times, and its
    number of elements (``batches``: -1 when it repeats forever, None when TensorFlow cannot tell).
    A loop that calls ``next(iter(dataset))`` at every step opens one per step, and reads the
    first batch each time."""
    seen = run.__dict__.setdefault(_DATASET_ATTR, {})
    entry = seen.get(id(ds))
    if entry is None:
        if len(seen) > 4 * _DATASETS_KEPT:
            return
        entry = seen[id(ds)] = [ds, 0, _batches(ds)]  # ds kept alive: its id stays its own for the run
        desc = _describe_dataset(ds)
        described = list(run.info.extra.get("datasets") or [])
        if desc not in described and len(described) < _DATASETS_KEPT:
            run.set_extra(datasets=[*described, desc])
    entry[1] += 1
    most = run.info.extra.get("dataset_iterators") or {}
    if entry[1] > int(most.get("opened") or 0):
        run.set_extra(dataset_iterators={"opened": entry[1], "batches": entry[2]})


def _wrap_dataset_iter(original: Any) -> Any:
    @functools.wraps(original)
    def __iter__(self: Any) -> Any:
        run = _active_run()
        if run is not None:
            guard(run, "tf.data iteration", lambda: _note_dataset(run, self))
        return original(self)

    return __iter__


# --- gradients applied in another graph ------------------------------------------------------
#
# ``grads, loss = compute_grads(x, y)`` in one ``tf.function`` and ``apply_gradients`` eagerly or
# in another function: the optimizer hook finds no ``tape.gradient`` call in its own graph, and
# the loss and step values (fingerprints, loss details) of the gradient's graph cannot reach it
# as tensors. When a trace ends with a gradient call that no optimizer step of that graph took,
# graph ops written at the end of that trace copy the target (summed) and the step scope's values
# into side variables of the run, one set per set of differentiated variables; the optimizer
# step that finds no gradient call of its own reads the set whose variables it steps. A function
# whose gradients are applied in it gets no such ops.


_STASH_ATTR = "_gradtrace_split_stashes"


class _Stash:
    """The last unapplied ``tape.gradient`` call's target and step values, for one set of sources.

    Its variables stay the same across retraces of the gradient function (a last partial
    batch), so a function that applies the gradients keeps reading them; ``sig`` says which
    trace's static facts (batch size, shapes, loss details) the values go with.
    """

    def __init__(self, key: frozenset[int]) -> None:
        import tensorflow as tf

        from gradtrace._ring import side_variable

        self.key = key
        with tf.init_scope():  # created while a function is traced: initial values eager
            self.loss = side_variable(tf.constant(float("nan"), tf.float32), "gradtrace_split_loss")
            # The run-wide number of the trace-end write that filled it, and of the one the last
            # optimizer step took: an apply that finds no newer write records no loss.
            self.seq = side_variable(tf.constant(0, tf.int64), "gradtrace_split_seq")
            self.taken = side_variable(tf.constant(0, tf.int64), "gradtrace_split_taken")
            self.sig = side_variable(tf.constant(-1, tf.int64), "gradtrace_split_sig")
        self.values: dict[tuple[str, tuple[int, ...]], Any] = {}
        self.latest = -1  # the signature of the trace that wrote last (Python side)
        self.baked: set[int] = set()  # signatures applying functions were traced with

    def value(self, name: str, shape: tuple[int, ...]) -> Any:
        import tensorflow as tf

        from gradtrace._ring import side_variable

        v = self.values.get((name, shape))
        if v is None:
            with tf.init_scope():
                v = self.values[(name, shape)] = side_variable(tf.fill(list(shape), float("nan")),
                                                               "gradtrace_split_value")
        return v


class _StashStore:
    def __init__(self) -> None:
        import tensorflow as tf

        from gradtrace._ring import side_variable

        with tf.init_scope():
            self.counter = side_variable(tf.constant(0, tf.int64), "gradtrace_split_counter")
        self.stashes: dict[frozenset[int], _Stash] = {}
        # A gradient trace's static facts: (target shape, statics, value shapes).
        self.sigs: list[tuple[list[int | None] | None, dict[str, Any], dict[str, tuple[int, ...]]]] = []
        self.sig_ids: dict[str, int] = {}
        # Sources whose eager gradient calls write their stash (see _stash_eager).
        self.eager_fed: set[frozenset[int]] = set()

    def signature(self, shape: list[int | None] | None, statics: dict[str, Any],
                  specs: dict[str, tuple[int, ...]]) -> int:
        k = repr((shape, sorted(statics.items()), sorted(specs.items())))
        got = self.sig_ids.get(k)
        if got is None:
            got = self.sig_ids[k] = len(self.sigs)
            self.sigs.append((shape, dict(statics), dict(specs)))
        return got


def _stash_store(run: Run, create: bool) -> _StashStore | None:
    store = run.__dict__.get(_STASH_ATTR)
    if store is None and create:
        store = run.__dict__[_STASH_ATTR] = _StashStore()
    return store


def _at_trace_end(run: Run, outputs: Any) -> None:
    """The end of a trace with ``tape.gradient`` calls: its assigns of trained variables made
    before its optimizer step are noted (``Run.assigns_traced``); a graph whose optimizer step
    took a call's gradients (a training step) is searched for calls nothing uses; a graph without
    one hands its gradients on, and what they would have recorded is stashed."""
    import tensorflow as tf

    graph = tf.compat.v1.get_default_graph()
    _manual.close(run, graph)  # a hand-written step that left some of its variables unwritten
    run.assigns_traced(graph)
    dq = _tape_calls().get(graph)
    if not dq:
        return
    if any(c.consumed for c in dq):
        _note_discarded(run, dq, outputs)
    else:
        _stash_unapplied(run, dq)


def _stash_unapplied(run: Run, dq: collections.deque[TapeCall]) -> None:
    """Stash what the unapplied gradient calls of a graph no optimizer step took would have recorded."""
    calls = [c for c in dq if c.variables and c.targets]
    if not calls:
        return
    latest: dict[frozenset[int], TapeCall] = {}
    for c in calls:  # with the same sources (accumulation in one trace) the last one counts
        latest.pop(c.sources, None)
        latest[c.sources] = c
    _write_stashes(run, latest)
    run.traced_in(_tracing_options())


# Ops that use a tensor for good: a function call or control flow (what its body does is
# not followed) besides every stateful op (a variable assign, an optimizer's apply, a print).
_CALL_OPS = frozenset({"If", "StatelessIf", "While", "StatelessWhile", "Case", "StatelessCase",
                       "PartitionedCall", "StatefulPartitionedCall"})
_USE_WALK = 200_000  # ops visited at most per call (a trace's graph; more is taken as used)


def _note_discarded(run: Run, dq: collections.deque[TapeCall], outputs: Any) -> None:
    """``tape.gradient`` calls with respect to variables whose gradients nothing in a training
    step's graph uses. Followed forward, consumer by consumer: gradients that reach a stateful
    op (an optimizer's update, an accumulator's ``assign_add``), a function call or control
    flow, or the function's outputs are used; a second loss's gradients computed and dropped
    reach none of them."""
    import tensorflow as tf

    out = {id(t) for t in tf.nest.flatten(outputs, expand_composites=True) if isinstance(t, tf.Tensor)}
    for call in dq:
        if call.consumed or not call.variables or not call.grads or _used(call.grads.values(), out):
            continue
        keys = set(call.grads)
        variables = [v for v in call.variables if var_key(v) in keys and bool(getattr(v, "trainable", True))]
        if variables:
            run.note_discarded_gradient(variables, call.shape)


def _used(grads: Any, out: set[int]) -> bool:
    """Whether any of ``grads`` (graph tensors) reaches a use (see :func:`_note_discarded`)."""
    import tensorflow as tf

    todo = [t for t in tf.nest.flatten(list(grads), expand_composites=True) if isinstance(t, tf.Tensor)]
    seen: set[int] = set()
    while todo:
        t = todo.pop()
        if id(t) in out:
            return True
        for op in t.consumers():
            if id(op) in seen:
                continue
            seen.add(id(op))
            if len(seen) > _USE_WALK or op.type in _CALL_OPS or getattr(op, "_is_stateful", True):
                return True
            todo.extend(op.outputs)
    return False


def _write_stashes(run: Run, latest: dict[frozenset[int], TapeCall]) -> None:
    """Copy each call's target (summed) and the current step scope's values into the stash of
    its sources (graph ops while a function is traced; eagerly, done at once)."""
    import tensorflow as tf

    values, statics = _scope.current().take()
    from gradtrace import _probes

    if isinstance(statics.get(_probes.K_BATCH), int):
        # A per-step value here: a function applying them, traced once, must not record the
        # batch size of one gradient trace for the steps of another (a last partial batch).
        values[_probes.K_BATCH] = float(statics.pop(_probes.K_BATCH))
    vals: dict[str, Any] = {}
    for k in sorted(values):
        t = values[k]
        t = tf.cast(t if isinstance(t, (tf.Tensor, tf.Variable)) else tf.constant(t), tf.float32)
        if t.shape.is_fully_defined():
            vals[k] = t
    specs = {k: tuple(t.shape.as_list()) for k, t in vals.items()}
    store = _stash_store(run, create=True)
    assert store is not None
    n = store.counter.assign_add(1)
    for key, call in latest.items():
        stash = store.stashes.get(key)
        if stash is None:
            stash = store.stashes[key] = _Stash(key)
        sig = store.signature(call.shape, statics, specs)
        if stash.baked and sig not in stash.baked:
            run.warn_once(
                "split_step_retraced",
                "the gradients applied by a tf.function came from inputs of another shape (a gradient "
                "function traced again, or an eager gradient, e.g. of a last partial batch) than when "
                "it was traced: steps whose gradients come from those inputs are recorded without "
                "loss and batch fingerprints.")
        stash.latest = sig
        stash.loss.assign(tf.add_n([tf.reduce_sum(tf.cast(t, tf.float32)) for t in call.targets]))
        for k, t in vals.items():
            stash.value(k, specs[k]).assign(t)
        stash.sig.assign(tf.constant(sig, tf.int64))
        stash.seq.assign(n)
        call.consumed = True


# --- gradients computed eagerly, applied inside a tf.function ------------------------------
#
# ``grads = tape.gradient(loss, vars)`` eagerly, then ``train_apply(grads)`` a ``tf.function``
# calling ``apply_gradients``: the applying graph finds no gradient call of its own and no stash
# (no trace ended with the gradient). When it is traced, the eager call that produced the step's
# gradients is known: its loss and step values go into a stash (eagerly), the apply reads it, and
# from then on every eager gradient call of those variables writes the stash (a few eager
# assigns per step, only in a run where this happened).


def _stash_eager(run: Run, var_keys: set[int]) -> bool:
    """A graph apply that found no gradient call: feed it from the thread's latest eager call
    of its variables, now and on every later eager call of those sources."""
    import tensorflow as tf

    dq = _tape_calls().get("eager")
    call = next((c for c in reversed(dq or ()) if c.sources & var_keys and c.variables and c.targets), None)
    if call is None or call.consumed:
        return False
    store = _stash_store(run, create=True)
    assert store is not None
    with tf.init_scope():  # eagerly: _scope.current() is the eager step scope of that call
        _write_stashes(run, {call.sources: call})
    store.eager_fed.add(call.sources)
    return True


def _feed_eager_stash(run: Run, call: TapeCall) -> None:
    """An eager gradient call of sources whose stash feeds an applying tf.function."""
    import tensorflow as tf

    store = _stash_store(run, create=False)
    if store is None or call.sources not in store.eager_fed or not call.targets or not tf.executing_eagerly():
        return
    _write_stashes(run, {call.sources: call})


def _from_stash(run: Run, var_keys: set[int]) -> TapeCall | None:
    """For an optimizer step with no gradient call in its graph: the stashed call whose sources
    it steps, as a tape call carrying the loss (NaN unless written since the last step took it);
    its step values go into this graph's step scope. Several candidate sets: none (a warning).

    Eagerly the static facts are those of the trace that wrote the stash; an applying
    ``tf.function`` is traced once with those of the latest gradient trace, and its steps whose
    stash another trace wrote record no loss (see the warning in :func:`_stash_unapplied`).
    """
    import tensorflow as tf

    store = _stash_store(run, create=False)
    if store is None:
        return None
    cands = [s for s in store.stashes.values() if s.key & var_keys]
    if not cands:
        return None
    if len(cands) > 1:
        run.warn_once(
            "split_step_ambiguous",
            "apply_gradients ran in another function than tape.gradient, and several gradient calls "
            "(of different variable sets) could have produced its gradients: such steps are recorded "
            "without loss and batch fingerprints.")
        return None
    s = cands[0]
    eager = tf.executing_eagerly()
    sig = int(s.sig.numpy()) if eager else s.latest
    if sig < 0:
        return None
    if not eager:
        s.baked.add(sig)
    shape, statics, specs = store.sigs[sig]
    seq = s.seq.read_value()
    fresh = tf.logical_and(seq > s.taken.read_value(), tf.equal(s.sig.read_value(), sig))
    nan = tf.constant(float("nan"), tf.float32)
    loss = tf.where(fresh, s.loss.read_value(), nan)
    scope = _scope.current()
    from gradtrace import _probes

    # A stale stash is an unknown loss, recorded as absent: a NaN would read as a diverged one.
    scope.put(_probes.K_LOSS_ABSENT, tf.where(fresh, 0.0, 1.0))
    for k, shp in specs.items():
        if k not in scope.values:
            scope.put(k, tf.where(fresh, s.value(k, shp).read_value(), nan))
    for k, st in statics.items():
        if k not in scope.statics:
            scope.put_static(k, st)
    with tf.control_dependencies([loss]):
        s.taken.assign(seq)
    return TapeCall([loss], shape, s.key, [])


def _wrap_trace_end(original: Any) -> Any:
    @functools.wraps(original)
    def convert_variables_to_tensors(values: Any) -> Any:
        run = _active_run()
        if run is not None and _tape_calls():
            caller = sys._getframe(1).f_code
            if caller.co_name == "func_graph_from_py_func":
                guard(run, "tf.function trace end", lambda: _at_trace_end(run, values))
        return original(values)

    return convert_variables_to_tensors


# --- optimizer step -----------------------------------------------------------------------


def _apply_depth() -> int:
    return getattr(_local, "apply_depth", 0)


@contextlib.contextmanager
def _in_apply() -> Iterator[None]:
    _local.apply_depth = _apply_depth() + 1
    try:
        yield
    finally:
        _local.apply_depth -= 1


# (graph key, id(optimizer)) -> the other replicas' (gradients, tape targets) of the step being
# traced, for replica 0's record (see _other_replica, _sum_replicas).
_replica_shares: dict[tuple[object, int], list[tuple[list[Any], list[Any]]]] = {}


def _other_replica(run: Run, opt: Any, grads: list[Any], tvars: list[Any]) -> bool:
    """Whether this optimizer call is a replica's other than the first of a synchronous
    strategy with several replicas (MirroredStrategy); its gradients and loss are kept for
    replica 0's record.

    Every replica calls ``apply_gradients`` with its own share of the gradients and the
    optimizer sums them in a cross-replica ``merge_call``
    (keras/src/backend/tensorflow/optimizer.py ``_backend_update_step`` and
    ``_all_reduce_sum_gradients``; tf-keras likewise): that is one step, recorded from
    replica 0 (its device holds the tracer's variables; the other replicas' graphs cannot
    read them: an XLA-compiled statistics function refuses a resource of another device).
    The replicas are traced one after the other up to that ``merge_call``
    (tensorflow/python/distribute/mirrored_run.py ``_call_for_each_replica``), so when
    replica 0 resumes after it the others' gradients exist in the same graph. The replica
    id is static there (tensorflow/python/distribute/distribute_lib.py
    ``ReplicaContext.replica_id_in_sync_group`` is a constant in MirroredStrategy's
    replica threads).
    """
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync <= 1:
        return False
    rid = tf.get_static_value(ctx.replica_id_in_sync_group)
    if rid is None:
        return False
    if int(rid) == 0:
        run.warn_once(
            "replica_share",
            f"{ctx.num_replicas_in_sync} replicas in sync: each step is recorded once, from replica 0; its "
            "loss and gradients are the sums over the replicas (what the optimizer applies), its batch size "
            "and fingerprints replica 0's share of the batch.", quiet=True)
        return False
    keys = {var_key(v) for v in tvars}
    call = _find_tape_call(keys, grads)
    targets = list(call.targets) if call is not None else []
    if call is not None:
        call.consumed = True
    _replica_shares.setdefault((_graph_key(), id(opt)), []).append((list(grads), targets))
    return True


def _sum_replicas(ctx: _StepCtx, targets: list[Any]) -> tuple[list[Any], list[Any]]:
    """Replica 0's step: its gradients and loss plus the other replicas' (see _other_replica)."""
    import tensorflow as tf

    shares = _replica_shares.pop((_graph_key(), id(ctx.opt)), None)
    if not shares:
        return ctx.grads, targets
    grads = list(ctx.grads)
    for i, g in enumerate(grads):
        if g is None or i >= len(shares[0][0]):
            continue
        parts = [share[i] if i < len(share) else None for share, _ in shares]
        if any(p is None for p in parts):
            continue
        if isinstance(g, tf.IndexedSlices):
            if not all(isinstance(p, tf.IndexedSlices) for p in parts):
                continue
            grads[i] = tf.IndexedSlices(tf.concat([g.values] + [p.values for p in parts], 0),
                                        tf.concat([g.indices] + [p.indices for p in parts], 0), g.dense_shape)
        elif not any(isinstance(p, tf.IndexedSlices) for p in parts):
            grads[i] = tf.add_n([g, *parts])
    if targets and all(t for _, t in shares):
        total = [tf.reduce_sum(tf.cast(t, tf.float32)) for t in targets]
        total += [tf.reduce_sum(tf.cast(t, tf.float32)) for _, ts in shares for t in ts]
        targets = [tf.add_n(total)]
    return grads, targets


def _wrap_k3_apply(original: Any) -> Any:
    @functools.wraps(original)
    def apply(self: Any, grads: Any, trainable_variables: Any = None) -> Any:
        run = _active_run()
        if run is not None and _apply_depth() == 0:
            grads = list(grads)
            tv = trainable_variables if trainable_variables is not None else getattr(self, "_trainable_variables", [])
            if guard(run, "optimizer.apply", lambda: _other_replica(run, self, grads, list(tv or []))):
                run = None
        if run is None or _apply_depth() > 0:
            with _in_apply():
                return original(self, grads, trainable_variables)
        grads = list(grads)
        tvars = trainable_variables
        if tvars is None:
            tvars = getattr(self, "_trainable_variables", None)
        else:
            tvars = list(tvars)
        ctx = None
        if tvars is not None and len(grads) > 0:
            ctx = guard(run, "optimizer.apply", lambda: _before(run, self, grads, list(tvars), "keras3"))
        with _in_apply():
            result = original(self, grads, trainable_variables if trainable_variables is None else tvars)
        if ctx is not None:
            guard(run, "optimizer.apply", lambda: _after(run, ctx))
        return result

    return apply


def _wrap_tfk_apply_gradients(original: Any) -> Any:
    @functools.wraps(original)
    def apply_gradients(self: Any, grads_and_vars: Any, *args: Any, **kwargs: Any) -> Any:
        run = _active_run()
        if run is not None and _apply_depth() == 0:
            grads_and_vars = list(grads_and_vars)
            gv = grads_and_vars
            if guard(run, "optimizer.apply_gradients",
                     lambda: _other_replica(run, self, [g for g, _ in gv], [v for _, v in gv])):
                run = None
        if run is None or _apply_depth() > 0:
            with _in_apply():
                return original(self, grads_and_vars, *args, **kwargs)
        pairs = list(grads_and_vars)
        ctx = None
        if pairs:
            grads = [g for g, _ in pairs]
            tvars = [v for _, v in pairs]
            ctx = guard(run, "optimizer.apply_gradients", lambda: _before(run, self, grads, tvars, "tf_keras"))
        with _in_apply():
            result = original(self, pairs, *args, **kwargs)
        if ctx is not None:
            guard(run, "optimizer.apply_gradients", lambda: _after(run, ctx))
        return result

    return apply_gradients


def _wrap_call_flat(original: Any) -> Any:
    @functools.wraps(original)
    def _call_flat(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(self, *args, **kwargs)
        except BaseException:
            run = _active_run()
            if run is not None:
                import tensorflow as tf

                if tf.executing_eagerly():
                    graph = getattr(self, "_func_graph", None)
                    guard(run, "tf.function call", lambda: run.aborted_call(graph))
            raise

    return _call_flat


def _wrap_make_train_function(original: Any) -> Any:
    @functools.wraps(original)
    def make_train_function(self: Any, force: bool = False) -> Any:
        run = _active_run()
        if run is not None and not force:
            if guard(run, "make_train_function", lambda: run.claim_train_function(self)):
                force = True
        return original(self, force)

    return make_train_function


def execution_mode() -> str:
    """"eager", "tf.function" or "xla" for the code being run/traced now."""
    import tensorflow as tf

    if tf.executing_eagerly():
        return "eager"
    # tensorflow/python/eager/polymorphic_function/polymorphic_function.py enters an
    # XLAControlFlowContext while tracing a jit_compile=True function.
    from tensorflow.python.ops import control_flow_util

    if control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()):
        return "xla"
    return "tf.function"


@dataclass
class _StepCtx:
    opt: Any
    flavour: str
    grads: list[Any]
    vars: list[Any]  # applied variables first, then the models' other trainable ones
    has_grad: list[bool]
    lr: Any
    tape: TapeCall | None
    mode: str
    grad_scale: Any = None  # the loss scale the gradients carry (Keras 3 LossScaleOptimizer)
    full: Any = None  # boolean tensor: this step gets the per-variable statistics


def _lr_before_update(opt: Any, flavour: str) -> bool:
    """Whether the rate a step uses must be read before its update (else after it).

    Keras 3 (keras/src/optimizers/base_optimizer.py ``learning_rate``) and tf-keras'
    legacy OptimizerV2 (tf_keras/src/optimizers/legacy/optimizer_v2.py ``_decayed_lr``)
    evaluate a schedule or ``decay`` at ``iterations``, which the update increments;
    tf-keras' new optimizer caches the rate it used in ``_current_learning_rate``.
    """
    return flavour == "keras3" or hasattr(opt, "_decayed_lr")


def _learning_rate(opt: Any, flavour: str) -> Any:
    import tensorflow as tf

    if flavour == "keras3":
        # keras/src/optimizers/base_optimizer.py: the property evaluates a schedule at
        # the current iteration (before the update, i.e. the rate this step uses).
        lr = opt.learning_rate
    elif hasattr(opt, "_decayed_lr"):  # tf_keras legacy OptimizerV2
        lr = opt._decayed_lr(tf.float32)
    else:
        lr = opt.learning_rate
    if callable(lr) and not isinstance(lr, (tf.Tensor, tf.Variable)):
        lr = lr()
    return tf.cast(tf.convert_to_tensor(lr), tf.float32)


def iterations_variable(opt: Any) -> Any:
    """The optimizer's raw step counter (Keras 3 counts every apply, also when accumulating)."""
    inner = getattr(opt, "inner_optimizer", None)
    if inner is not None:
        opt = inner
    it = getattr(opt, "_iterations", None)
    if it is None:
        it = opt.iterations
    return it


def _tracing_options() -> list[Any]:
    """The tracing options of the ``tf.function``s being traced around the caller.

    tensorflow/python/eager/polymorphic_function/tracing_compilation.py
    ``_maybe_define_function(args, kwargs, tracing_options)`` traces a function that is
    missing from ``tracing_options.function_cache`` and adds the result to it: each such
    frame on the stack is a function whose graph gets this step's recording ops. The
    options can trace it again (plain, see :func:`_retrace_plain`).
    """
    out = []
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "_maybe_define_function" and code.co_filename.endswith("tracing_compilation.py"):
            options = frame.f_locals.get("tracing_options")
            cache = getattr(options, "function_cache", None)
            if cache is not None and callable(getattr(cache, "clear", None)):
                out.append(options)
        frame = frame.f_back
    return out


def _retrace_plain(options: list[Any]) -> None:
    """Replace the instrumented graphs of these functions by plain ones, same signatures.

    tensorflow/python/eager/polymorphic_function/tracing_compilation.py ``trace_function``
    with the function's own options and each cached graph's ``structured_input_signature``
    is what ``get_concrete_function`` does; called under :func:`suppressed`, no hook adds
    recording ops. A signature that does not trace again is left out (logged).
    """
    from tensorflow.python.eager.polymorphic_function import tracing_compilation

    with suppressed():
        for opts in options:
            cache = opts.function_cache
            signatures = [cf.structured_input_signature for cf in list(cache.values())]
            cache.clear()
            for args, kwargs in signatures:
                try:
                    tracing_compilation.trace_function(args, kwargs, opts)
                except Exception:  # noqa: BLE001 - saving must go on without this graph
                    logger.debug("gradtrace: %s not traced again for saving", opts.name, exc_info=True)


def _wrap_saved_model_save(original: Any) -> Any:
    """``tf.saved_model.save`` inside ``trace``: the training functions traced in the run
    carry recording ops that capture the tracer's variables, which the object being saved
    does not track (tensorflow/python/saved_model/save.py refuses "an 'untracked' resource").
    They are saved as plain graphs; afterwards the instrumented graphs go back in place, the
    same function objects: traced again, a graph's stateful random ops (``tf.random.normal``
    under a global seed, tf-keras' Dropout) would start their sequences over and the
    training would draw other numbers than untraced."""

    @functools.wraps(original)
    def save_and_return_nodes(*args: Any, **kwargs: Any) -> Any:
        from gradtrace import _trace

        options = _trace.instrumented_traces() if not is_suppressed() else []
        if not options:
            return original(*args, **kwargs)
        kept = [(opts, _cache_entries(opts.function_cache)) for opts in options]
        _retrace_plain(options)
        try:
            with suppressed():
                return original(*args, **kwargs)
        finally:
            for opts, entries in kept:
                opts.function_cache.clear()  # the plain graphs
                for context, fn in entries or []:  # None: not readable, traced again instead
                    opts.function_cache.add(fn, context)

    return save_and_return_nodes


def _cache_entries(cache: Any) -> list[tuple[Any, Any]] | None:
    """``(context, concrete function)`` of each graph in a ``tf.function``'s cache
    (tensorflow/core/function/polymorphism/function_cache.py ``FunctionCache._primary``,
    keyed by ``(context, function_type)``), or None where that is not available."""
    primary = getattr(cache, "_primary", None)
    if not isinstance(primary, dict) or not callable(getattr(cache, "add", None)):
        return None
    return [(key[0], fn) for key, fn in primary.items()]


def _before(run: Run, opt: Any, grads: list[Any], tvars: list[Any], flavour: str) -> _StepCtx:
    keys = [var_key(v) for v in tvars]
    key_set = set(keys)
    run.note_stepped(key_set, _graph_key(), tvars, by_hand=flavour == "manual")
    if flavour != "manual" and not run.optimizer_known(opt) and run.steps_so_far():
        # A new optimizer after the first steps: a loop's next phase, often with layers unfrozen
        # (fit() notes them when it is called again).
        guard(run, "trainable flags", lambda: run.note_trainable("step"))
    others = [v for v in run.trainable_variables() if var_key(v) not in key_set]
    tape = _find_tape_call(key_set, list(grads))
    if tape is not None:
        tape = guard(run, "tape.gradient", lambda: _with_summands(tape, list(grads), keys)) or tape
    if tape is None:
        tape = _from_stash(run, key_set)
        if tape is None and execution_mode() != "eager" and _stash_eager(run, key_set):
            tape = _from_stash(run, key_set)
    if tape is not None:
        # Variables the tape was asked about but the step left out (a None gradient dropped
        # before apply_gradients, layers called without their model): they belong to the step.
        known = key_set | {var_key(v) for v in others}
        others += [v for v in tape.variables if var_key(v) not in known and bool(getattr(v, "trainable", True))]
    all_vars = list(tvars) + others
    mode = execution_mode()
    if mode != "eager" and flavour != "manual":
        guard(run, "hand clipping", lambda: _note_hand_clipping(run, list(grads)))
    if tape is not None:
        if tape.by_hand and flavour != "manual":
            run.warn_once(
                "manual_then_optimizer",
                "variables were written by the script between tape.gradient and this optimizer's apply of the "
                "same gradients, and those writes were recorded as a hand-written update step (ManualUpdate) "
                "before the optimizer's step (eagerly, a write whose change follows the gradient more closely "
                "than the weights is taken for an update). If the script applies these gradients twice, remove "
                "one of the updates; inside a tf.function only a write computed from the gradients counts as an "
                "update.",
                stderr=True)
        tape.consumed = True
        if tape.answered:  # every source's gradient None: zeros applied in their place are named too
            _check_pairing(run, tape, grads, tvars, keys, mode)
    # The models' other trainable variables: a gradient the tape computed for one of them
    # was left out of this call (recorded, and not applied); otherwise it has none.
    other_grads = [tape.gradient(var_key(v)) if tape is not None else None for v in others]
    has_grad = [g is not None for g in grads] + [g is not None for g in other_grads]
    # Pre-update copies, on full steps only (see _stats.Cadence.snapshot): holding
    # `value()` here would make the optimizer's in-place assign copy every buffer.
    full = run.cadence.snapshot([tf_variable(v) for v in all_vars])
    lr = None
    if flavour != "manual" and _lr_before_update(opt, flavour):
        try:
            lr = _learning_rate(opt, flavour)
        except Exception:  # an exotic learning rate: recorded as missing
            logger.debug("gradtrace: learning rate of %r not readable", opt, exc_info=True)
    run.optimizer_seen(opt, flavour, tvars)
    if mode != "eager":
        run.traced_in(_tracing_options())
        run.applied_in_graph(opt, _graph_key())
    return _StepCtx(opt, flavour, list(grads) + other_grads, all_vars, has_grad,
                    lr, tape, mode, _grad_scale(opt, flavour), full)


# Ops that hand one gradient on rescaled, clipped, cast or copied: every input but one has
# a single element (tf.clip_by_global_norm: ``g * scale``; tf.clip_by_norm: ``g * c / norm``;
# a loss-scale unscale: ``g * (1 / scale)``; ``tf.cast``; ``tf.identity``).
_PASS_OPS = frozenset({"Identity", "Cast", "Mul", "RealDiv", "Div", "DivNoNan", "MulNoNan", "Neg",
                       "ClipByValue", "Maximum", "Minimum", "EnsureShape"})
_PASS_DEPTH = 12


def _check_pairing(run: Run, tape: TapeCall, grads: list[Any], tvars: list[Any], keys: list[int],
                   mode: str) -> None:
    """Gradients applied to another variable than the one the tape computed them for.

    ``grads = tape.gradient(loss, vars_a)`` then ``apply_gradients(zip(grads, vars_b))`` with
    ``vars_b`` the same variables in another order. Reported only when the applied gradient
    *is* the tape's output for another source that the same call also applies (eagerly the
    very object; inside a tf.function also through ops that only rescale, clip, cast or copy
    it, see :func:`_derived_source`), and the variable it was applied to was a source of
    that call too: a gradient of a working copy applied to the original (meta-learning,
    lookahead) is not a reordering. One tensor may be the answer for several sources
    (``b1 + b2``: TensorFlow hands both the same gradient): applying it to any of them is right.

    Cost: one dict lookup and pointer comparison per variable on a correct step (eagerly
    every step; in a tf.function once, when it is traced).
    """
    own = tape.grads
    suspects = [i for i, (g, k) in enumerate(zip(grads, keys, strict=True))
                if g is not None and own.get(k) is not g and k in tape.sources]
    if not suspects:
        return
    replaced = [i for i in suspects if keys[i] not in own]
    if replaced:
        _record_replaced(run, [tvars[i] for i in replaced])
    by_id: dict[int, list[int]] = {}
    for k, t in own.items():
        by_id.setdefault(id(t), []).append(k)
    applied = {k: i for i, k in enumerate(keys)}
    found: list[tuple[int, int, str]] = []  # (applied index, source index, via)
    for i in suspects:
        g, k = grads[i], keys[i]
        sources, via = by_id.get(id(g)), "identical"
        if sources is None and mode != "eager":
            sources, via = _derived_source(g, own, by_id), "derived"
        if not sources or k in sources:
            continue
        src = next((applied[s] for s in sources if s in applied), None)
        if src is not None:
            found.append((i, src, via))
    if found:
        _record_misapplied(run, found, tvars, mode)


def _record_replaced(run: Run, variables: list[Any]) -> None:
    """Variables the tape returned None for that still got a gradient tensor (zeros put in
    place of None), kept once each in ``RunInfo.replaced_none_gradients``."""
    known = set(run.info.replaced_none_gradients)
    new = [i for i in (run.var_index(v) for v in variables) if i not in known]
    if new:
        run.update_meta(replaced_none_gradients=sorted(known | set(new)))


# TensorFlow's clipping functions and the name scopes their ops carry (tensorflow/python/ops/
# clip_ops.py clip_by_global_norm, clip_by_norm, clip_by_value each open ops.name_scope(name or ...)).
_HAND_CLIPS = ("clip_by_global_norm", "clip_by_norm", "clip_by_value")


def _note_hand_clipping(run: Run, grads: list[Any]) -> None:
    """Inside a graph, once per trace: which of TensorFlow's clipping functions the gradients
    handed to the optimizer came out of (``RunInfo.extra["hand_clipping"]``), read from the name
    scopes of the ops that only rescale, clip, cast or copy them (:data:`_PASS_OPS`) back from
    the applied tensor. A clip that never acts leaves the steps unchanged; this says it is there."""
    found: set[str] = set()
    for g in grads:
        t = g.values if hasattr(g, "indices") and hasattr(g, "values") else g
        for _ in range(_PASS_DEPTH):
            op = getattr(t, "op", None)
            if op is None:
                break
            found.update(k for k in _HAND_CLIPS if k in str(getattr(op, "name", "")))
            if getattr(op, "type", None) not in _PASS_OPS or not op.inputs:
                break
            t = max(op.inputs, key=lambda x: x.shape.num_elements() if x.shape.is_fully_defined() else -1)
    if found:
        run.note_hand_clipping(found)


def _derived_source(g: Any, own: dict[int, Any], by_id: dict[int, list[int]]) -> list[int] | None:
    """Inside a graph: the sources whose tape output ``g`` was computed from by ops that only
    rescale, clip, cast or copy one tensor (:data:`_PASS_OPS`, every other input a single
    element). Anything else (a sum of two gradients, a ``tf.where``, a variable read) stops
    the walk: nothing is claimed."""
    by_name: dict[str, list[int]] = {}
    for t in own.values():
        name = getattr(t, "name", None)  # graph tensors; IndexedSlices have no single producer
        if isinstance(name, str) and id(t) in by_id:
            by_name[name] = by_id[id(t)]
    t = g
    for _ in range(_PASS_DEPTH):
        op = getattr(t, "op", None)
        if op is None or getattr(op, "type", None) not in _PASS_OPS:
            return None
        shape = t.shape
        main, rest = [], []
        for x in op.inputs:
            (main if x.shape == shape else rest).append(x)
        if len(main) != 1 or not all(x.shape.is_fully_defined() and x.shape.num_elements() == 1
                                     for x in rest):
            return None
        t = main[0]
        hit = by_name.get(t.name)
        if hit:
            return hit
    return None


def _record_misapplied(run: Run, found: list[tuple[int, int, str]], tvars: list[Any], mode: str) -> None:
    """Keep each (applied to, computed for) pair once in ``RunInfo.misapplied_gradients``, with
    the first step it was seen at, and warn once per run naming the variables."""
    import tensorflow as tf

    from gradtrace.schema import MisappliedGradient

    known = {(m.applied_to, m.computed_for) for m in run.info.misapplied_gradients}
    new = []
    for i, src, via in found:
        pair = (run.var_index(tvars[i]), run.var_index(tvars[src]))
        if pair not in known:
            known.add(pair)
            new.append((pair, via))
    if not new:
        return
    step = None
    if run.seq is not None:
        # The number the writer gives the step being recorded (eagerly now; in a graph at
        # trace time, which is the first step that runs it).
        with tf.init_scope():
            step = int(run.seq.numpy())
    entries = [MisappliedGradient(applied_to=a, computed_for=c, step=step, mode=mode, via=via).model_dump()
               for (a, c), via in new]
    run.update_meta(misapplied_gradients=[*(m.model_dump() for m in run.info.misapplied_gradients), *entries])
    names = {v.index: v.name for v in run.info.variables}
    shown = "; ".join(f"{names.get(a, a)} got the gradient of {names.get(c, c)}" for (a, c), _ in new[:4])
    more = f" (and {len(new) - 4} more)" if len(new) > 4 else ""
    run.warn_once(
        "misapplied_gradients",
        f"apply_gradients received gradients paired with other variables than tape.gradient computed "
        f"them for: {shown}{more}. The variable list zipped with the gradients is not the list (or "
        "not the order) that was differentiated; zip the gradients with the same list.",
        stderr=True)


def _grad_scale(opt: Any, flavour: str) -> Any:
    """The scale still in the gradients handed to ``opt``, read before the update.

    Keras 3's LossScaleOptimizer.apply takes the gradients of the *scaled* loss and
    divides them by ``dynamic_scale`` itself (keras/src/optimizers/loss_scale_optimizer.py
    ``_stateful_handle_finite_grads``), which it may change in the same call: the
    statistics divide by the value read here, so runs with and without loss scaling
    compare. tf-keras' ``apply_gradients`` receives already unscaled gradients.
    """
    if flavour != "keras3" or getattr(opt, "inner_optimizer", None) is None:
        return None
    scale = _meta.keras3_loss_scale(opt)
    if scale is None:
        return None
    import tensorflow as tf

    return tf.identity(tf.cast(tf.convert_to_tensor(scale), tf.float32))


def _after(run: Run, ctx: _StepCtx) -> None:
    import tensorflow as tf

    lr = ctx.lr
    if lr is None and ctx.flavour != "manual" and not _lr_before_update(ctx.opt, ctx.flavour):
        try:
            # tf_keras/src/optimizers/optimizer.py: a schedule's value is cached in
            # `_current_learning_rate` by apply_gradients, so read it afterwards.
            lr = _learning_rate(ctx.opt, ctx.flavour)
        except Exception:
            logger.debug("gradtrace: learning rate of %r not readable", ctx.opt, exc_info=True)
    has_lr = lr is not None
    if lr is None:
        lr = tf.constant(float("nan"), tf.float32)
    iters = tf.cast(tf.convert_to_tensor(ctx.opt.iterations), tf.float32)
    state = run.state_variables()
    values, statics = _scope.current().take()
    extra_keys: dict[str, tuple[int, ...]] = {}
    extra: list[Any] = []
    for key in sorted(values):
        t = values[key]
        if not isinstance(t, (tf.Tensor, tf.Variable)):
            t = tf.constant(t, tf.float32)
        shape = t.shape
        if not shape.is_fully_defined():
            run.warn_once(f"dynamic:{key}", f"step value {key!r} has no static shape {shape}; not recorded")
            continue
        extra_keys[key] = tuple(shape.as_list())
        extra.append(t)
    indices = [run.var_index(v) for v in ctx.vars]
    sizes = [_size(v) for v in ctx.vars]
    targets = ctx.tape.targets if ctx.tape is not None else []
    target_shape = ctx.tape.shape if ctx.tape is not None else None
    key = (
        ctx.mode, id(ctx.opt), tuple(indices), tuple(ctx.has_grad), tuple(sizes),
        tuple(s.index for s in state), tuple(sorted(extra_keys.items())),
        bool(targets), None if target_shape is None else tuple(target_shape), has_lr,
        repr(sorted(statics.items())),
    )
    layout, ring = run.layout_for(
        key,
        lambda: _new_layout(run, ctx, indices, sizes, state, extra_keys, statics,
                            bool(targets), target_shape, has_lr),
    )
    step_grads, targets = _sum_replicas(ctx, targets)
    # IndexedSlices stay sparse here: densified inside the statistics, on full steps only.
    grads = [g for g, h in zip(step_grads, ctx.has_grad, strict=True) if h]
    writer = ring.writer
    if writer is None:
        want_jit = run.stats_jit(ctx.mode)
        writer, probe, probe_args, jit = _stats.make_writer(
            ring, run.seq, run.cadence, [tf_variable(v) for v in ctx.vars],
            [tf_variable(s.var) for s in state], run.state_shadow(state), want_jit,
        )
        if want_jit and not jit:
            run.set_extra(stats_jit=False)
            run.warn_once("stats_jit", "this process has few memory mappings left (vm.max_map_count) "
                          "and XLA never unmaps compiled code: the statistics of this model's shapes "
                          "are not XLA-compiled (same values, slower full steps)", stderr=True)
        ring.writer = writer
        run.cadence.register(ring, probe, probe_args)
    inv_scale = tf.constant(1.0) if ctx.grad_scale is None else 1.0 / ctx.grad_scale
    writer(targets, lr, iters, grads, extra, inv_scale, ctx.full)
    _tensors.capture(run, ctx)  # full_tensors_every: after the writer claimed this step's number


def _size(v: Any) -> int:
    n = 1
    for d in v.shape:
        n *= int(d)
    return n


def _new_layout(run: Run, ctx: _StepCtx, indices: list[int], sizes: list[int], state: list[Any],
                extra_keys: dict[str, tuple[int, ...]], statics: dict[str, Any], has_loss: bool,
                target_shape: list[int | None] | None, has_lr: bool) -> _stats.Layout:
    layout = _stats.Layout(
        mode=ctx.mode,
        sketch_dim=run.sketch_dim,
        target_shape=target_shape,
        has_loss=has_loss,
        has_lr=has_lr,
        statics=dict(statics),
        optimizer=id(ctx.opt),
    )
    _stats.plan(layout, indices, ctx.has_grad, sizes, [s.index for s in state],
                [s.rng for s in state], extra_keys)
    return layout
