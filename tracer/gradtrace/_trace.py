"""``gradtrace.trace``: the decorator / context manager, and the :class:`Run` it yields.

Example::

    import gradtrace

    @gradtrace.trace(run="tape-loop", project="digits")
    def train():
        ...

    with gradtrace.trace(run="fit", project="digits", store="sqlite:///runs.db") as run:
        model.fit(x, y, epochs=3)
    print(run.info.status, run.steps_recorded)

Entering installs the hooks (:mod:`gradtrace._hooks`, nesting-counted) and
makes the new run the calling thread's current run; leaving drains the step
rings, restores every patch, marks the run finished or failed (with the
exception type, KeyboardInterrupt included) and flushes the exporter. Nested
scopes are separate runs: the innermost one of a thread records its steps.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import os
import socket
import sys
import threading
import time
import uuid
import weakref
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Generic, ParamSpec, TypeVar, overload

import numpy as np

from gradtrace import _meta, _ring, schema

logger = logging.getLogger("gradtrace")

P = ParamSpec("P")
R = TypeVar("R")

_local = threading.local()


_active: list[Run] = []  # every thread's active runs, for replica threads (below)
_active_lock = threading.Lock()


def current_run() -> Run | None:
    """The calling thread's innermost active run, or None.

    A thread started by a thread inside a run belongs to that run while it is active (the
    script trains in a worker thread it started inside ``trace``).
    A distribution strategy's replica thread (MirroredStrategy runs each replica's step
    in a ``_MirroredReplicaThread``: tensorflow/python/distribute/mirrored_run.py) works
    for the thread that called ``strategy.run``/``fit``; it belongs to the run active in
    the process when exactly one is. Other threads never see another thread's run.
    """
    stack: list[Run] | None = getattr(_local, "runs", None)
    if stack:
        return stack[-1]
    thread = threading.current_thread()
    inherited = getattr(thread, INHERITED, None)
    if inherited is not None:
        with _active_lock:
            if any(r is inherited for r in _active):
                return inherited
    if type(thread).__name__ == "_MirroredReplicaThread":
        with _active_lock:
            if len(_active) == 1:
                return _active[0]
    return None


INHERITED = "_gradtrace_run"
"""Attribute of a ``threading.Thread`` started by a thread inside a run: the run its work
belongs to (a training loop run in a worker thread), see ``_hooks._wrap_thread_start``."""


def _push(run: Run) -> None:
    stack = getattr(_local, "runs", None)
    if stack is None:
        stack = _local.runs = []
    if stack:
        run.parent = stack[-1]
        stack[-1].nested.append(run)  # its steps are this run's too (see _check_uncaptured)
    stack.append(run)
    with _active_lock:
        _active.append(run)


def _pop(run: Run) -> None:
    stack = getattr(_local, "runs", None) or []
    if run in stack:
        stack.remove(run)
    with _active_lock:
        if run in _active:
            _active.remove(run)


@dataclass
class StateVar:
    """A non-trainable variable of a registered model and its value when it was registered
    (flat float32, host side: where the first change is measured from)."""

    var: Any
    initial: np.ndarray
    index: int
    rng: bool


def _is_rng_state(v: Any) -> bool:
    # keras/src/random/seed_generator.py names its state variable "seed_generator_state".
    name = str(getattr(v, "path", None) or getattr(v, "name", ""))
    return "seed_generator" in name or "rng" in name.lower().split("/")[-1]


def _fixed_shape(v: Any) -> bool:
    """Whether a variable's shape is static, so that it can be measured as state: the state
    shadow keeps a fixed slot of values per variable, and a step function reads each one's
    size from its static shape. tf-keras' adapted Discretization keeps its summary in a
    variable of shape ``(2, None)`` (tf_keras/src/layers/preprocessing/discretization.py
    ``Discretization.build``, ``add_weight(name="summary", shape=(2, None))``)."""
    try:
        return all(d is not None for d in tuple(v.shape))
    except (AttributeError, TypeError, ValueError):  # no shape, or an unknown rank
        return False


class Run:
    """One traced run: its metadata, its hooks' per-run state, its exporter.

    Hooks elsewhere in the tracer use: :meth:`register_model` (a root model
    was called), :meth:`update_meta` (RunInfo fields), :meth:`set_extra`, :attr:`strict` and
    :meth:`internal_error`. ``info`` is the current :class:`~gradtrace.schema.RunInfo`.
    """

    def __init__(self, name: str, project: str | None, config: Any, options: dict[str, Any]) -> None:
        self.config = config
        self.options = options
        self.strict: bool = bool(getattr(config, "strict", False))
        self.sketch_dim: int = int(getattr(config, "sketch_dim", 16))
        fixed = getattr(config, "ring_size", None)
        self.ring_size: int | None = None if fixed is None else max(4, int(fixed))
        self._jit: bool | None = options.get("stats_jit")
        self.stats_every: int | None = getattr(config, "stats_every", None)
        self.cadence: Any = None
        self.info = schema.RunInfo(
            run_id=uuid.uuid4().hex,
            name=name,
            project=project or getattr(config, "project", "default") or "default",
            host=socket.gethostname(),
            # how batches are fingerprinted: runs fingerprinted otherwise cannot match their
            # multi-input or multi-output batches
            extra={"fingerprint_version": schema.FINGERPRINT_VERSION},
        )
        self._lock = threading.RLock()
        self._warned: set[str] = set()
        self._lost: Counter[str] = Counter()
        self._models: list[Any] = []
        self._var_index: dict[int, int] = {}
        self._none_checked: set[int] = set()  # variables note_unwatched classified
        self._var_refs: list[Any] = []  # keeps indexed variables alive: ids stay unique
        self._trainable: list[Any] = []
        self._trainable_keys: set[int] = set()
        self._state: list[StateVar] = []
        # id(tf.Variable) -> its value before the eager call that built its model (see
        # before_build): the initial values, not what that first forward pass left.
        self._pre_build: dict[int, np.ndarray] = {}
        # id(tf.Variable) of every variable an optimizer step of this run was given, and of
        # those of them the script assigned outside the steps (see note_assigned)
        self._stepped: set[int] = set()
        self._optimizer_stepped: set[int] = set()  # the same, for optimizers' steps only (not by hand)
        self._stepped_ids: set[int] = set()  # and the ids of the objects given (Keras 3 Variables)
        self._assigned: set[int] = set()
        self._stepping_graphs: weakref.WeakSet[Any] = weakref.WeakSet()  # graphs an optimizer step was traced in
        # graph being traced -> variables it assigned before any optimizer step was given them
        self._pending_assigns: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()
        # eager writes before the run's first step: key -> the script lines that made them
        self._early_writes: dict[int, tuple[tuple[str, int], ...]] = {}
        # id(optimizer) -> (id()s of the variables it stepped, its place in info.optimizers)
        self._opt_vars: dict[int, tuple[set[int], int]] = {}
        self._state_shadows: dict[tuple[int, ...], Any] = {}
        self._state_slots: dict[tuple[int, ...], dict[int, tuple[int, int]]] = {}  # index -> (offset, size)
        self._state_keys: set[int] = set()
        self._layouts: dict[tuple[Any, ...], tuple[Any, Any]] = {}
        self._optimizers: dict[int, tuple[Any, int | None, str]] = {}
        self._described: set[int] = set()  # id() of the optimizers in info.optimizers
        self._steps_by_opt: Counter[int] = Counter()
        # graph -> Counter(id(optimizer) -> its steps traced in that graph or in a function
        # it calls), and the steps of calls of such graphs that raised (see aborted_call)
        self._apply_graphs: weakref.WeakKeyDictionary[Any, Counter[int]] = weakref.WeakKeyDictionary()
        self._aborted: Counter[int] = Counter()
        # Runs entered inside this one in its thread record the steps meanwhile: live ones here,
        # the counts of finished ones folded in (see _check_uncaptured, absorb).
        self.nested: list[Run] = []
        self.parent: Run | None = None
        self._nested_steps: Counter[int] = Counter()
        self._nested_any = False
        self._modes: set[str] = set()
        self._train_functions: list[tuple[weakref.ref[Any], Any]] = []
        # id(function cache) -> tracing options of a tf.function whose graph this run
        # instrumented (see forget_traces, _hooks._retrace_plain)
        self._traced_caches: dict[int, Any] = {}
        self._claimed: set[int] = set()
        self._init_seen: set[int] = set()
        self._index_pending = False  # a model's variables were not initialised when indexed
        self._init_fps: list[str] = []
        self._init_fp_of: dict[int, str] = {}  # id(tf.Variable) -> its initial-value fingerprint
        self.steps_recorded = 0
        self._seq = _ring.LazySideVariable(lambda: 0, "int64", "gradtrace_seq")  # the step counter, see :attr:`seq`
        self._poller: Any = None
        self._exporter: Any = None
        self._probes_undo: Callable[[], None] | None = None
        self._probes_decode: Callable[..., list[dict[str, Any]]] | None = None
        self.full_tensors: Any = None  # gradtrace._tensors.FullTensors when full_tensors_every > 0
        self._next_uncaptured_check = 0.0
        self._light_records: dict[int, schema.StepRecord] = {}  # id(layout) -> its light-step template
        self.active = False

    # -- API for hooks ------------------------------------------------------------------

    def internal_error(self, exc: BaseException, where: str = "tracer") -> None:
        """A tracer bug: warn once, mark the run partial, carry on (strict: re-raise)."""
        message = f"internal error in {where} ({type(exc).__name__}: {exc}); the run is marked partial"
        with self._lock:
            self.info.partial = True
            first = where not in self._warned
            self._warned.add(where)
            if first:
                self.info.warnings.append(message)
        if first:
            logger.warning("gradtrace: %s", message, exc_info=logger.isEnabledFor(logging.DEBUG))
        if self.strict:
            raise exc

    def warn_once(self, key: str, message: str, stderr: bool = False, quiet: bool = False) -> None:
        """Log a warning once per run and keep it in ``RunInfo.warnings``. ``quiet``: a note on
        how a normal run is recorded, nothing lost or wrong: kept, logged at INFO only (a
        WARNING reaches stderr through logging's last resort when the script configured no
        logging, and the tracer adds nothing there for a training that works)."""
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
            self.info.warnings.append(message)
        if quiet:
            logger.info("gradtrace: %s", message)
            return
        logger.warning("gradtrace: %s", message)
        if stderr and logger.hasHandlers() and not _logs_to_stderr(logger):
            # Without any handler, logging's last resort already prints it on stderr.
            sys.stderr.write(f"gradtrace: {message}\n")

    def update_meta(self, **fields: Any) -> None:
        """Set RunInfo fields (validated); unknown names raise ``TypeError``."""
        unknown = set(fields) - set(schema.RunInfo.model_fields)
        if unknown:
            raise TypeError(f"unknown RunInfo field(s): {', '.join(sorted(unknown))}")
        from gradtrace._meta import _jsonable

        plain = {k: _jsonable(v) for k, v in fields.items()}
        with self._lock:
            data = self.info.model_dump()
            data.update(plain)
            self.info = schema.RunInfo.model_validate(data)

    def set_extra(self, **items: Any) -> None:
        """Set keys of ``RunInfo.extra`` (made JSON values: a tensor or numpy scalar left in
        would make every later batch of the run unserialisable), under the lock the exporter
        reads it with."""
        plain = {k: _meta._jsonable(v) for k, v in items.items()}
        with self._lock:
            self.info.extra.update(plain)

    def note_hand_clipping(self, kinds: set[str]) -> None:
        """TensorFlow clipping functions the script applied to its gradients by hand, merged into
        ``RunInfo.extra["hand_clipping"]``."""
        with self._lock:
            known = set(self.info.extra.get("hand_clipping") or [])
            if kinds <= known:
                return
            self.info.extra["hand_clipping"] = sorted(known | kinds)

    def note_unwatched(self, variables: list[Any], watched: Callable[[], Any]) -> None:
        """Trainable variables ``tape.gradient`` was asked for and returned None for, by whether
        the tape saw them read while it recorded (``watched()``: the tape's ``watched_variables``).
        Never read (``RunInfo.extra["unwatched_sources"]``, inventory indices): their layers were
        not called in the forward pass the loss came from, or before the tape opened. Read
        (``extra["disconnected_sources"]``): the loss does not depend on what they computed (a
        ``tf.stop_gradient``, a ``.numpy()`` round trip, an integer cast on the way). Each
        variable is classified once, at its first None gradient, so a loop pays one set lookup per
        None gradient after."""
        from gradtrace._hooks import tf_variable

        new = [(i, v) for i, v in ((self.var_index(v), v) for v in variables) if i not in self._none_checked]
        if not new:
            return
        seen = {id(tf_variable(w)) for w in watched()}
        with self._lock:
            self._none_checked.update(i for i, _ in new)
            for key, part in (("unwatched_sources", {i for i, v in new if id(tf_variable(v)) not in seen}),
                              ("disconnected_sources", {i for i, v in new if id(tf_variable(v)) in seen})):
                if part:
                    known = set(self.info.extra.get(key) or [])
                    self.info.extra[key] = sorted(known | part)[:256]

    def register_model(self, model: Any) -> None:
        """A root model this run trains: its variables join the inventory (and state tracking)."""
        with self._lock:
            if any(m is model for m in self._models):
                return
            self._models.append(model)
            self._index_models()
            self.model_built(model, called=False)

    def _note_untrained_models(self) -> None:
        """``RunInfo.untrained_models``: registered root models none of whose variables any
        optimizer of the run was given (nothing when no optimizer was seen, or none of the
        models' variables was one it was given)."""
        from gradtrace._hooks import tf_variable

        with self._lock:
            given = {k for ids, _i in self._opt_vars.values() for k in ids}
            models = list(self._models)
        if not given:
            return
        out, trained = [], False
        for i, model in enumerate(models):
            variables = list(_meta.variables_of(model))
            if not variables:
                continue
            if any(id(v) in given or id(tf_variable(v)) in given for v in variables):
                trained = True
                continue
            indices = sorted({self._var_index[id(tf_variable(v))] for v in variables
                              if id(tf_variable(v)) in self._var_index})
            out.append({"model": i, "name": str(getattr(model, "name", type(model).__name__)), "variables": indices})
        if trained:  # else the optimizer's variables were matched to no model: say nothing
            self.info.untrained_models = out

    def model_position(self, model: Any) -> int | None:
        """The registration position of root model ``model`` itself (as ``RunInfo.untrained_models``
        numbers them), or None."""
        with self._lock:
            return next((i for i, m in enumerate(self._models) if m is model), None)

    def model_of(self, layer: Any) -> int | None:
        """The registration position of the first root model that holds ``layer`` (as
        ``RunInfo.untrained_models`` numbers them), or None."""
        with self._lock:
            models = list(self._models)
        for i, model in enumerate(models):
            flatten = getattr(model, "_flatten_layers", None)
            if flatten is not None and any(x is layer for x in flatten(include_self=True, recursive=True)):
                return i
        return None

    def model_built(self, model: Any, called: bool = True) -> None:
        """Index a registered model's variables and fingerprint its initial weights.

        Called at registration (fit() start, the first forward pass; ``called=False``)
        and after the first forward pass, both before its first optimizer step. A model
        built lazily (``Sequential`` without ``Input``, a subclassed model) creates its
        variables in that first pass: they join the inventory (with their layers) and
        the state tracking here, and the fingerprint waits for them: at registration
        only a built model is fingerprinted (an unbuilt one may hold just an RNG seed).
        ``RunInfo.init_fingerprint`` covers every registered model, in registration
        order, each as it was when first seen built.
        """
        with self._lock:
            if not any(m is model for m in self._models):
                return
            if called:
                self._index_models()
            if not called and getattr(model, "built", True) is False:
                return
            if called and id(model) not in self._init_seen and self._kept_before_build(model):
                # Built by an eager call in this run: weights the script sets after building
                # (set_weights, a checkpoint) and before training count. Fingerprinted at the
                # first step (_catch_up), with the state the build call moved as it was before.
                self._index_pending = True
                return
            self._fingerprint(model)

    def _kept_before_build(self, model: Any) -> bool:
        from gradtrace._hooks import tf_variable

        return any(id(tf_variable(v)) in self._pre_build for v in _meta.variables_of(model))

    def before_build(self, model: Any) -> Any:
        """An eager call is about to build the registered ``model`` (a ``Sequential`` without
        ``Input``, a subclassed model): returns a context for that call that keeps each
        variable's value from before it (RNG seed states made by the layers' constructors)
        or from its creation (weights, moving statistics), for the fingerprint and the
        state tracking. The call itself moves them (a training-mode BatchNormalization
        updates its statistics, Dropout draws); fit() builds before its first step, and
        the two must agree on the initial values.
        """
        import contextlib

        import tensorflow as tf

        from gradtrace._hooks import tf_variable

        with self._lock:
            if id(model) in self._init_seen or not any(m is model for m in self._models):
                return contextlib.nullcontext()
            for v in _meta.variables_of(model):
                tv = tf_variable(v)
                if id(tv) not in self._pre_build and not _uninitialized(v):
                    self._pre_build[id(tv)] = _value_copy(tv)
        pre = self._pre_build

        def creator(next_creator: Any, **kwargs: Any) -> Any:
            v = next_creator(**kwargs)
            try:
                if tf.executing_eagerly() and id(v) not in pre:
                    pre[id(v)] = _value_copy(v)
            except Exception:  # a variable without a value yet: read later, as before
                logger.debug("gradtrace: no value at creation for %r", v, exc_info=True)
            return v

        return tf.variable_creator_scope(creator)

    def _initial(self, v: Any) -> np.ndarray:
        from gradtrace._hooks import tf_variable

        kept = self._pre_build.get(id(tf_variable(v)))
        if kept is not None:
            return np.asarray(kept, dtype=np.float32).reshape(-1)
        return _initial(v)

    def _fingerprint(self, model: Any) -> None:
        """Add ``model``'s initial-weight fingerprint once all its variables hold values."""
        import tensorflow as tf

        from gradtrace._hooks import tf_variable

        with self._lock:
            if id(model) in self._init_seen:
                return
            variables = _meta.variables_of(model)
            if not variables:
                return
            if any(_uninitialized(v) for v in variables):
                self._index_pending = True  # fingerprinted by _catch_up, at the first step
                return
            # Trainable weights as they are now (a forward pass does not move them; set_weights
            # after the build does); state the build call moved (moving statistics, RNG seeds)
            # as it was before that call.
            kept = {k: v for k, v in self._pre_build.items() if k not in self._trainable_keys}
            with tf.init_scope():  # a forward pass inside tf.function: read the eager values
                fps = _meta.variable_fingerprints(variables, kept)
            self._init_seen.add(id(model))
            self._pre_build.clear()
            self._init_fps.extend(fps)
            self.info.init_fingerprint = _meta.combine_fingerprints(self._init_fps)
            for v, fp in zip(variables, fps, strict=True):
                self._init_fp_of.setdefault(id(tf_variable(v)), fp)
            self._sync_init_fingerprints()

    def _sync_init_fingerprints(self) -> None:
        """``info.init_fingerprints`` by inventory index, from the fingerprints taken so far."""
        if not self._init_fp_of:
            return
        fps: list[str | None] = [None] * len(self.info.variables)
        for key, idx in self._var_index.items():
            fp = self._init_fp_of.get(key)
            if fp is not None and 0 <= idx < len(fps):
                fps[idx] = fp
        if fps != self.info.init_fingerprints:
            self.info.init_fingerprints = fps

    def claim_train_function(self, model: Any) -> bool:
        """First fit() of ``model`` in this run: remember its cached step; True = rebuild it."""
        with self._lock:
            if id(model) in self._claimed:
                return False
            self._claimed.add(id(model))
            self._train_functions.append((weakref.ref(model), getattr(model, "train_function", None)))
            return True

    def optimizer_known(self, opt: Any) -> bool:
        """Whether ``opt`` has made a step of this run already (cheap: every eager step asks)."""
        return id(opt) in self._optimizers

    def optimizer_seen(self, opt: Any, flavour: str, tvars: list[Any] | None = None) -> None:
        """An optimizer makes a step (trace time; every step when eager): account for it,
        describe it once.

        ``tvars``: the variables it steps; their inventory indices are recorded with its
        description (once) so a comparison can pair two runs' optimizers by structure.
        """
        with self._lock:
            stepped = self._opt_vars.get(id(opt))
            if stepped is not None and tvars and any(id(v) not in stepped[0] for v in tvars):
                # Another subset of variables (one optimizer for the halves of a model in turn).
                stepped[0].update(id(v) for v in tvars)
                entry = self.info.optimizers[stepped[1]]
                entry["variables"] = sorted(set(entry["variables"]) | {self.var_index(v) for v in tvars})
            known = self._optimizers.get(id(opt))
            if known is not None and known[2] == flavour:
                return
            inner = getattr(opt, "inner_optimizer", None)
            if inner is not None:
                # A loss scale optimizer's steps are recorded under its own id while the
                # counter read is its inner optimizer's: account for them once, here.
                wrapped = self._optimizers.pop(id(inner), None)
                if known is None and wrapped is not None:
                    known = (opt, wrapped[1], "unknown")
            for sub in _inner_optimizers(opt):
                # a MultiOptimizer's own counter counts its steps; its sub-optimizers' steps
                # are its steps (found by the start-up scan: not optimizers of their own)
                self._optimizers.pop(id(sub), None)
            # found by the start-up scan: keep its starting iteration count
            self._optimizers[id(opt)] = (opt, None if known is None else known[1], flavour)
            if self.info.keras_flavour is None:
                # a hand-written update's flavour is its models' (none for a tf.Module)
                self.info.keras_flavour = flavour if flavour != "manual" else next(  # type: ignore[assignment]
                    (f for m in self._models if (f := _meta.keras_flavour(m)) is not None), None)  # type: ignore[assignment]
            if id(opt) not in self._described:
                self._describe_optimizer(opt, tvars or [])

    def _catch_up(self, fingerprint: bool = True) -> None:
        """Index and fingerprint what a model's first call left uninitialised.

        A model built by its first call inside a ``tf.function`` (fit()'s train step)
        creates variables the function initialises only when it first runs, and one
        built under a Keras ``StatelessScope`` holds no value until the scope ends (see
        :func:`_uninitialized`): they are skipped when first met and taken here, from
        the optimizer hook of the first step, before that step's update.
        """
        if not self._index_pending:
            return
        with self._lock:
            if not self._index_pending:
                return
            self._index_models()
            for model in list(self._models) if fingerprint else []:
                self._fingerprint(model)

    def trainable_variables(self) -> list[Any]:
        self._catch_up()
        return list(self._trainable)

    def state_shadow(self, state: list[StateVar]) -> Any:
        """One flat float32 variable holding ``state``'s values at the last full step (one
        captured input per step function, not one per variable; see ``_stats._SignVars``).

        A new set of state variables (a second model registered, a layer frozen) starts
        each variable an earlier set measured from that set's value, the latest known, and
        only a variable no step measured yet from its value at registration: otherwise a
        model trained before would show its whole training as one change at the next step."""
        key = tuple(s.index for s in state)
        with self._lock:
            got = self._state_shadows.get(key)
            if got is None:
                import tensorflow as tf

                read: dict[tuple[int, ...], np.ndarray] = {}  # each earlier shadow read once
                with tf.init_scope():
                    parts = [self._measured_value(s, read) for s in state]
                    start = np.concatenate(parts) if parts else np.zeros([0], np.float32)
                    got = _ring.side_variable(tf.constant(start, tf.float32), "gradtrace_state_before")
                self._state_shadows[key] = got
                offsets = np.cumsum([0] + [s.initial.size for s in state])[:-1]
                self._state_slots[key] = {s.index: (int(o), s.initial.size)
                                          for s, o in zip(state, offsets, strict=True)}
        return got

    def _measured_value(self, s: StateVar, read: dict[tuple[int, ...], np.ndarray]) -> np.ndarray:
        """``s``'s value in the newest state shadow that holds it, else its registered value
        (eager, under the lock); ``read`` keeps the shadows already read."""
        for key in reversed(list(self._state_shadows)):
            slot = self._state_slots.get(key, {}).get(s.index)
            if slot is not None and slot[1] == s.initial.size:
                if key not in read:
                    read[key] = self._state_shadows[key].numpy()
                return np.asarray(read[key][slot[0]:slot[0] + slot[1]], np.float32)
        return s.initial

    def state_variables(self) -> list[StateVar]:
        self._catch_up()
        return list(self._state)

    def in_inventory(self, v: Any) -> bool:
        """Whether a variable is already in the run's inventory (a traced model's, or stepped)."""
        from gradtrace._hooks import tf_variable

        self._catch_up(fingerprint=False)
        return id(tf_variable(v)) in self._var_index

    def var_index(self, v: Any) -> int:
        """The inventory index of a variable (new variables are appended)."""
        from gradtrace._hooks import tf_variable

        key = id(tf_variable(v))
        idx = self._var_index.get(key)
        if idx is not None:
            return idx
        self._catch_up()
        with self._lock:
            idx = self._var_index.get(key)
            if idx is None:
                idx = len(self.info.variables)
                self._add_variable(v, idx, None, None, None)
            return idx

    def layout_for(self, key: tuple[Any, ...], make: Callable[[], Any]) -> tuple[Any, Any]:
        """The (layout, ring) of a step signature; new ones start being polled."""
        got = self._layouts.get(key)
        if got is not None:
            return got
        with self._lock:
            got = self._layouts.get(key)
            if got is None:
                layout = make()
                ring = _ring.Ring(layout, self.ring_rows(layout.width))
                got = (layout, ring)
                self._layouts[key] = got
                self._modes.add(layout.mode)
                if self._poller is not None:
                    self._poller.add(ring)
        return got

    def ring_rows(self, width: int) -> int:
        """Rows of a ring of ``width``-float rows: ``ring_size`` if set, else what fits in
        :data:`RING_BYTES` (64 to 4096 rows: the host reads a ring about three times per
        turn, so a larger ring is read less often)."""
        if self.ring_size is not None:
            return self.ring_size
        return int(min(RING_MAX_ROWS, max(RING_MIN_ROWS, RING_BYTES // (4 * max(1, width)))))

    def stats_jit(self, mode: str) -> bool:
        """Compile the statistics with XLA? Only when asked (``stats_jit=True``).

        Measured on CPU (2 cores), a separately compiled statistics function costs more than
        the same ops run by TensorFlow's executor (as one call, see ``_stats._shared_pair``):
        a full step of the MLP 784-256-128-10 tape loop cost 1.9-2.0 ms more than a light one
        compiled against 1.4 ms unfused, a 5.8M-parameter MLP's 36 ms against 23 ms; light
        steps cost the same (bench/bench_paired.py), and the first step skips the XLA compile.
        Inside an XLA step the statistics are compiled with the step either way.
        """
        return bool(self._jit)

    # -- inventory ------------------------------------------------------------------------

    def _add_variable(self, v: Any, idx: int, info: schema.VariableInfo | None,
                      layer: str | None, layer_class: str | None) -> None:
        from gradtrace._hooks import tf_variable

        tv = tf_variable(v)
        self._var_index[id(tv)] = idx
        self._var_index[id(v)] = idx
        self._var_refs.append(v)
        if info is None:
            shape = [None if d is None else int(d) for d in v.shape]
            info = schema.VariableInfo(
                index=idx,
                name=str(getattr(v, "path", None) or getattr(v, "name", f"var{idx}")),
                shape=shape,
                dtype=str(getattr(v.dtype, "name", v.dtype)),
                trainable=bool(getattr(v, "trainable", True)),
                layer=layer,
                layer_class=layer_class,
                struct_key=f"?{idx}:{'/'.join(str(getattr(v, 'name', '')).split('/')[-1:])}{shape}",
            )
        self.info.variables.append(info)

    def _index_models(self) -> None:
        """(Re)build the inventory from the registered models; indices only ever grow."""
        configs: dict[str, dict[str, Any]] = {}
        inventory = _variable_inventory(self._models, configs)
        infos, layers, by_id = inventory if inventory is not None else ([], [], {})
        seen: set[int] = set()
        self._index_pending = False
        for model in self._models:
            for v in _meta.variables_of(model):
                from gradtrace._hooks import tf_variable

                key = id(tf_variable(v))
                if key not in self._var_index and _uninitialized(v):  # no value yet: see _catch_up
                    self._index_pending = True
                    continue
                if key in seen:
                    continue
                seen.add(key)
                pos = by_id.get(id(v), by_id.get(key))
                found = infos[pos] if pos is not None and pos < len(infos) else None
                if key not in self._var_index and id(v) not in self._var_index:
                    idx = len(self.info.variables)
                    self._add_variable(v, idx, None if found is None else found.model_copy(update={"index": idx}),
                                       None, None)
                idx = self._var_index.get(key, self._var_index.get(id(v), -1))
                if found is not None and 0 <= idx < len(self.info.variables) and \
                        (self.info.variables[idx].struct_key or "?").startswith("?"):
                    # first met by a step, before its model was indexed: now its place is known
                    self.info.variables[idx] = found.model_copy(update={"index": idx})
                trainable = found.trainable if found is not None else bool(getattr(v, "trainable", True))
                if trainable:
                    if key not in self._trainable_keys:
                        self._trainable_keys.add(key)
                        self._trainable.append(v)
                else:
                    self._track_state(v, key, idx, self._initial)
        if layers and (not self.info.layers or _extends(layers, self.info.layers)):
            self.info.layers = list(layers)  # a lazy build may add sublayers after the known ones
            self.info.layer_configs = configs
        self._sync_init_fingerprints()  # variables fingerprinted before they had an index

    def _name_loose_variables(self) -> None:
        """Name the variables steps met outside every registered model by their attribute path in
        the ``tf.Module`` that holds them (``MLP.layers[0].w``): TensorFlow names a
        ``tf.Variable`` created without a name ``Variable:0``, so a module's variables would all
        read alike in the comparator's findings. Run once at the run's end, and only when there
        are such variables: finding the modules walks the interpreter's objects (``gc``)."""
        from gradtrace._hooks import UNTRAINABLE_ATTR

        with self._lock:
            loose = {i: self._var_refs[i] for i, info in enumerate(self.info.variables)
                     if info.layer is None and (info.struct_key or "").startswith("?") and i < len(self._var_refs)}
        untrainable = list(self.__dict__.get(UNTRAINABLE_ATTR) or [])  # extra.untrainable_sources
        if loose or untrainable:
            names = _module_paths(list(loose.values()) + untrainable)
            with self._lock:
                for i, v in loose.items():
                    name = names.get(id(v))
                    if name:
                        self.info.variables[i] = self.info.variables[i].model_copy(update={"name": name})
                if untrainable:
                    self.info.extra["untrainable_sources"] = [
                        names.get(id(v)) or str(getattr(v, "path", None) or v.name) for v in untrainable]

    def note_trainable(self, at: str) -> None:
        """Record the registered models' variables whose trainability changed since the
        inventory (``VariableInfo.trainable``, at registration) or the last change noted: a
        layer frozen or unfrozen between fit() calls (``at="fit"``), before a new optimizer's first
        step (``at="step"``: a loop's fine-tuning phase) or by the run's end (``at="end"``), as one
        ``RunInfo.trainable_changes`` entry with the next step's number."""
        with self._lock:
            models = list(self._models)
            trained = _meta.trainable_ids(models)
            if trained is None or not models:
                return
            owned: set[int] = set()
            for model in models:
                for v in _meta.variables_of(model):
                    owned.update(_meta._inner_ids(v))
            flags = [v.trainable for v in self.info.variables]
            for change in self.info.trainable_changes:
                for i in change.get("trainable", []):
                    flags[i] = True
                for i in change.get("frozen", []):
                    flags[i] = False
            now_on: list[int] = []
            now_off: list[int] = []
            for i, v in enumerate(self._var_refs[:len(flags)]):
                if not any(k in owned for k in _meta._inner_ids(v)):
                    continue  # a variable a step met outside the models: no flag to read
                on = _meta.is_trainable(v, trained)
                if on != flags[i]:
                    (now_on if on else now_off).append(i)
        if not now_on and not now_off:
            return
        if at in ("fit", "step"):
            self._retrack(now_on, now_off)
        changes = list(self.info.trainable_changes)
        if len(changes) < MAX_EVENTS:
            changes.append({"at": at, "step": self.steps_so_far(), "trainable": now_on, "frozen": now_off})
            self.update_meta(trainable_changes=changes)

    def note_weights_written(self, how: str, variables: list[Any], by: str | None) -> None:
        """Record weights overwritten outside the optimizer's steps (``RunInfo.weight_writes``):
        EarlyStopping restoring its best weights, an optimizer's EMA written into the model at
        the end of fit(), the script's own ``set_weights``/``load_weights``. Only variables of
        the inventory count; a write to none of them (another model) is not recorded."""
        from gradtrace._hooks import tf_variable

        with self._lock:
            found = {i: v for v in variables if (i := self._var_index.get(id(tf_variable(v)))) is not None}
            written = sorted(found)
            if not written or len(self.info.weight_writes) >= MAX_EVENTS:
                return
            step = self.steps_so_far()
            entry: dict[str, Any] = {"how": how, "step": step, "by": by, "variables": written}
            initial = self._back_to_initial(found) if step else []
            if initial:
                entry["initial"] = initial
            writes = [*self.info.weight_writes, entry]
        self.update_meta(weight_writes=writes)

    def _back_to_initial(self, found: dict[int, Any]) -> list[int]:
        """The written variables (inventory index -> variable) of a trainable variable that now hold
        the values they started the run with (``init_fingerprints``): weights reset to their
        initialization (a `set_weights` of weights saved before training). Asked once the run has
        stepped (a write before the first step sets up the start); trainable variables only; eager values,
        read once per write (set_weights and load_weights are eager calls)."""
        import tensorflow as tf

        fps = self.info.init_fingerprints
        pick = [i for i in sorted(found) if i < len(fps) and fps[i] and self.info.variables[i].trainable]
        if not pick or not tf.executing_eagerly():
            return []
        now = _meta.variable_fingerprints([found[i] for i in pick])
        return [i for i, fp in zip(pick, now, strict=True) if fp == fps[i]]

    def note_stepped(self, keys: set[int], graph: Any, variables: list[Any], by_hand: bool = False) -> None:
        """Variables an optimizer step was given (``keys``: ``id`` of their tf.Variable; the
        objects themselves, whose ids the assign hook tests first), in ``graph`` (``"eager"``
        or the graph being traced); ``by_hand``: a hand-written update's step (``_manual``)."""
        if not by_hand and not keys <= self._optimizer_stepped:
            with self._lock:
                self._optimizer_stepped |= keys
        if not keys <= self._stepped:
            with self._lock:
                self._stepped |= keys
                self._stepped_ids |= keys | {id(v) for v in variables}
        if graph != "eager" and graph not in self._stepping_graphs:
            with self._lock:
                self._stepping_graphs.add(graph)

    def stepped_by_optimizer(self, key: int) -> bool:
        """Whether an optimizer's step (not a hand-written one) of this run was given the
        variable (``key``: ``id`` of its tf.Variable)."""
        return key in self._optimizer_stepped

    def newly_assigned(self, v: Any) -> bool:
        """Whether an assign of ``v`` outside an optimizer's apply is to be noted
        (:meth:`note_assigned`): a variable an optimizer step of this run was given and not yet
        noted, tested by the object's own id first (a set lookup: an eager loop's metrics assign
        on every step); while a function is traced, any variable (its step may come later in it)."""
        if id(v) not in self._stepped_ids:
            import tensorflow as tf

            # eagerly before the run's first step: noted with the script lines that wrote it (a
            # loop writing at the top of every step wrote before step 0 too)
            return not tf.executing_eagerly() or (not self._stepped and len(self._early_writes) < MAX_EARLY_WRITES)
        from gradtrace._hooks import tf_variable

        return id(tf_variable(v)) not in self._assigned

    def note_assigned(self, v: Any, in_graph: bool) -> None:
        """A variable an optimizer of this run steps was written by the script outside the
        optimizer's steps (``v.assign(...)``, ``assign_add``/``assign_sub``: weights clipped or
        projected by hand, a model's weights averaged into another one): merged into one
        ``RunInfo.weight_writes`` entry of ``how="assign"`` naming every such variable and the
        first step it precedes. Inside a ``tf.function`` it is recorded once, when the function
        is traced. Traced in the same function as an optimizer step traced before it (an assign
        after ``apply_gradients``), it follows that step, which the counter does not count yet
        while tracing: the first step it precedes is the next one. A variable not stepped yet
        when its assign is traced waits for the end of the trace (:meth:`assigns_traced`): the
        assign may precede the step's apply (weights clipped before the forward pass).

        An eager write before the run's first step is set-up (weights loaded, copied,
        initialised) unless the script writes the same variable again through the same calls
        (the same lines) once steps are made: a loop writing at the top of every step, whose
        first write preceded step 0 (and the initial-weight fingerprint, taken at the first
        step)."""
        from gradtrace._hooks import _graph_key, tf_variable

        key = id(tf_variable(v))
        if key in self._assigned:
            return
        if key not in self._stepped:
            if in_graph:  # its step may come later in the trace (the inventory may not hold it yet either)
                with self._lock:
                    self._pending_assigns.setdefault(_graph_key(), []).append(v)
            elif not self._stepped:
                with self._lock:
                    self._early_writes.setdefault(key, _script_lines())
            return
        where = "eager" if not in_graph else "step_function" if _graph_key() in self._stepping_graphs else "function"
        step = self.steps_so_far()
        if where == "eager" and step is not None and (early := self._early_writes.get(key)) and early == _script_lines():
            step = 0
        self._record_assign(key, step + 1 if step is not None and where == "step_function" else step, where)

    def assigns_traced(self, graph: Any) -> None:
        """The end of ``graph``'s trace: its assigns of variables an optimizer step of the same
        graph was given after them (the weights written before the step's update) precede the
        step being traced."""
        from gradtrace._hooks import tf_variable

        with self._lock:
            pending = self._pending_assigns.pop(graph, [])
        if not pending or graph not in self._stepping_graphs:
            return
        step = self.steps_so_far()
        for v in pending:
            key = id(tf_variable(v))
            if key in self._stepped and key not in self._assigned:
                self._record_assign(key, step, "step_function")

    def _record_assign(self, key: int, step: int | None, where: str) -> None:
        with self._lock:
            idx = self._var_index.get(key)
            if idx is None or key in self._assigned:
                return
            self._assigned.add(key)
            writes = [dict(w) for w in self.info.weight_writes]
            entry = next((w for w in writes if w.get("how") == "assign"), None)
            if entry is None:
                if len(writes) >= MAX_EVENTS:
                    return
                writes.append({"how": "assign", "step": step, "by": None, "variables": [idx], "where": where})
            else:
                entry["variables"] = sorted({*entry["variables"], idx})
        self.update_meta(weight_writes=writes)

    def note_discarded_gradient(self, variables: list[Any], target_shape: list[int | None] | None) -> None:
        """Record a traced ``tape.gradient`` call whose gradients the step never uses
        (``RunInfo.discarded_gradients``), once per set of variables; only variables of the
        inventory count."""
        from gradtrace._hooks import tf_variable
        from gradtrace.schema import DiscardedGradient

        with self._lock:
            idx = sorted({i for v in variables if (i := self._var_index.get(id(tf_variable(v)))) is not None})
            known = self.info.discarded_gradients
            if not idx or any(d.variables == idx for d in known) or len(known) >= MAX_EVENTS:
                return
            found = [*(d.model_dump() for d in known),
                     DiscardedGradient(variables=idx, target_shape=target_shape, step=self.steps_so_far()).model_dump()]
        self.update_meta(discarded_gradients=found)
        self.warn_once(
            f"discarded_gradient:{idx}",
            f"a tape.gradient call of the training step computes gradients for {len(idx)} trainable variable(s) "
            "that nothing uses (no optimizer applies them, nothing added to the applied gradients depends on "
            "them): its loss does not train the model. Differentiate the total loss, or add the gradients.")

    def _track_state(self, v: Any, key: int, idx: int, initial: Callable[[Any], np.ndarray]) -> None:
        """Measure ``v`` as non-trainable state from now on (once; not a variable without a
        static shape, see :func:`_fixed_shape`), its changes counted from ``initial(v)``."""
        if key not in self._state_keys and _fixed_shape(v):
            self._state_keys.add(key)
            self._state.append(StateVar(v, initial(v), idx, _is_rng_state(v)))

    def _retrack(self, now_on: list[int], now_off: list[int]) -> None:
        """Move variables between the trainable set and the tracked state after a change of
        trainability, before the train function built for the new flags traces its steps: an
        unfrozen weight is no longer measured as state, a frozen one is, from its value now."""
        from gradtrace._hooks import tf_variable

        with self._lock:
            for i in now_on:
                v = self._var_refs[i]
                key = id(tf_variable(v))
                if key in self._state_keys:
                    self._state_keys.discard(key)
                    self._state = [sv for sv in self._state if sv.index != i]
                if key not in self._trainable_keys:
                    self._trainable_keys.add(key)
                    self._trainable.append(v)
            for i in now_off:
                v = self._var_refs[i]
                key = id(tf_variable(v))
                if key in self._trainable_keys:
                    self._trainable_keys.discard(key)
                    self._trainable = [t for t in self._trainable if id(tf_variable(t)) != key]
                self._track_state(v, key, i, _initial)

    def steps_so_far(self) -> int | None:
        """The step counter now: the number of the next step (None if unreadable)."""
        try:
            import tensorflow as tf

            with tf.init_scope():
                return int(self.seq.numpy())
        except Exception:  # no counter readable here
            logger.debug("gradtrace: step counter unreadable", exc_info=True)
            return None

    def _describe_optimizer(self, opt: Any, tvars: list[Any]) -> None:
        """Describe ``opt`` into ``info.optimizers`` (and ``info.optimizer``, the first)."""
        self._described.add(id(opt))
        try:
            import tensorflow as tf


            # Seen first inside fit()'s traced step: get_config() and the learning rate
            # read variable values, which only works eagerly.
            with tf.init_scope():
                desc = _meta.optimizer_info(opt)
        except ImportError:
            desc = {"class": type(opt).__name__}
        except Exception as exc:
            self.internal_error(exc, "optimizer_info")
            return
        if len(self.info.optimizers) >= 64:
            return
        indices = sorted({self.var_index(v) for v in tvars})
        self._opt_vars[id(opt)] = ({id(v) for v in tvars}, len(self.info.optimizers))
        self.info.optimizers.append({**desc, "variables": indices})
        if self.info.optimizer is None:
            self.info.optimizer = desc

    # -- lifecycle ------------------------------------------------------------------------

    def _start(self) -> None:
        # Imported here, in the thread entering trace, before the poller thread starts (two
        # threads importing TensorFlow at once see a partially initialised module). Importing
        # it does not initialise its eager context (see :attr:`seq`).
        import tensorflow  # noqa: F401

        from gradtrace import _hooks

        self._start_cadence()
        self._fill_static_meta()
        self._exporter = _make_exporter(self)
        from gradtrace import _tensors

        self.full_tensors = _tensors.for_run(self.config)
        self._poller = _ring.Poller(self._on_rows, on_tick=self._on_tick)
        self._poller.start()
        _retrace_instrumented()
        _hooks.install()
        self._scan_optimizers()
        try:
            from gradtrace import _probes

            self._probes_undo = _probes.install(self)
            self._probes_decode = getattr(_probes, "decode_block", None)
        except ImportError:
            logger.debug("gradtrace: no probes module; layer modes and loss details not recorded")
        self.active = True

    @property
    def seq(self) -> Any:
        """The run's step counter, a variable the step writers claim their numbers from.

        Created by the first step that needs it, not on entering ``trace``: creating a
        variable initialises TensorFlow's eager context, after which the script can no longer
        configure its devices (tensorflow/python/eager/context.py
        ``set_logical_device_configuration``, ``set_memory_growth``, ``set_visible_devices``
        raise "cannot be modified after being initialized"), and the decorated ``main()``
        of a training script typically starts with exactly that.
        """
        return self._seq.get()

    def _start_cadence(self) -> None:
        from gradtrace._stats import Cadence

        budget = float(getattr(self.config, "overhead_budget", 0.02))
        self.cadence = Cadence(lambda: self.seq, self.stats_every, budget)
        self.info.extra.update(stats_every=self.cadence.every, stats_warmup=self.cadence.warmup,
                               stats_cadence="auto" if self.stats_every is None else "fixed",
                               overhead_budget=budget)

    def _fill_static_meta(self) -> None:
        try:

            self.info.versions = dict(_meta.versions())
        except ImportError:
            import tensorflow as tf

            import gradtrace

            self.info.versions = {
                "python": sys.version.split()[0],
                "tensorflow": tf.__version__,
                "gradtrace": gradtrace.__version__,
            }
        except Exception as exc:
            self.internal_error(exc, "versions")

    def _scan_optimizers(self) -> None:
        """Optimizers that exist already: steps they make without a record get reported."""
        import gc

        bases: list[type] = []
        try:
            from keras.src.optimizers.base_optimizer import BaseOptimizer

            bases.append(BaseOptimizer)
        except ImportError:
            pass
        if "tf_keras" in sys.modules:
            try:
                from tf_keras.src.optimizers.legacy.optimizer_v2 import OptimizerV2
                from tf_keras.src.optimizers.optimizer import _BaseOptimizer

                bases += [_BaseOptimizer, OptimizerV2]
            except ImportError:
                pass
        if not bases:
            return
        tb = tuple(bases)
        found = [obj for obj in gc.get_objects() if isinstance(obj, tb)]
        # A loss scale optimizer stands for its inner optimizer (iterations_variable reads
        # the inner counter, and the hooks record the outer one's steps); a MultiOptimizer
        # for its sub-optimizers (see _inner_optimizers).
        inner = {id(i) for o in found for i in _inner_optimizers(o)}
        for obj in found:
            if id(obj) not in inner:
                self._optimizers.setdefault(id(obj), (obj, _iterations_now(obj), "unknown"))

    def _steps_recorded(self, key: int) -> int:
        """Steps of optimizer ``key`` this run or a run nested inside it accounts for."""
        return (self._steps_by_opt.get(key, 0) + self._nested_steps.get(key, 0)
                + sum(r._steps_recorded(key) for r in list(self.nested)))

    def _nested_recorded(self) -> bool:
        """Whether a run nested inside this one recorded a step (the steps are in that run)."""
        return self._nested_any or any(r.steps_recorded or r._nested_recorded() for r in list(self.nested))

    def applied_in_graph(self, opt: Any, graph: Any) -> None:
        """A step of ``opt`` traced into ``graph``: it belongs to that graph and to the graphs
        of the functions being traced around it (a step function called from a loop
        function: tensorflow/python/framework/func_graph.py ``FuncGraph.outer_graph``)."""
        with self._lock:
            while graph is not None:
                counts = self._apply_graphs.get(graph)
                if counts is None:
                    counts = self._apply_graphs[graph] = Counter()
                counts[id(opt)] += 1
                graph = getattr(graph, "outer_graph", None)

    def aborted_call(self, graph: Any) -> None:
        """A call of the function of ``graph`` raised (the end of a dataset read inside it:
        ``OutOfRangeError``). The optimizer's counter update in it does not wait for the data
        (keras/src/optimizers/base_optimizer.py ``apply``: ``iterations.assign_add`` depends
        on no gradient), so each of its steps may have advanced the counter without a step."""
        counts = self._apply_graphs.get(graph) if graph is not None else None
        if counts:
            with self._lock:
                self._aborted.update(counts)

    def _aborted_steps(self, key: int) -> int:
        """Counter advances of optimizer ``key`` that aborted calls may account for."""
        return self._aborted.get(key, 0) + sum(r._aborted_steps(key) for r in list(self.nested))

    def absorb(self, run: Run) -> None:
        """A nested run ended: keep what it recorded as counts, not the run itself."""
        with self._lock:
            self._aborted.update(run._aborted)
            for key in set(run._steps_by_opt) | set(run._nested_steps):
                self._nested_steps[key] += run._steps_recorded(key)
            self._nested_any = self._nested_any or bool(run.steps_recorded) or run._nested_recorded()
            if run in self.nested:
                self.nested.remove(run)

    def _check_uncaptured(self, final: bool = False, interrupted: bool = False) -> None:
        """Steps an optimizer made that no record accounts for (functions traced earlier).

        ``interrupted``: the run ends with an exception raised by a step. Inside a
        ``tf.function`` the optimizer's counter update does not wait for the gradients
        (keras/src/optimizers/base_optimizer.py ``apply``: ``iterations.assign_add`` is
        independent of the updates in the graph), so the failing step may have advanced it
        while the step itself never completed nor wrote its record: one such step per
        optimizer is no missed step."""
        for key, (opt, start, _flavour) in list(self._optimizers.items()):
            if start is None:
                with self._lock:
                    self._optimizers[key] = (opt, _iterations_now(opt), _flavour)
                continue
            now = _iterations_now(opt)
            if now is None:
                continue
            missing = now - start - self._steps_recorded(key) - self._aborted_steps(key)
            slack = (1 if interrupted else 0) if final else 2 * (self.ring_size or RING_MAX_ROWS)
            if missing > slack:
                self.warn_once(
                    f"uncaptured:{key}",
                    f"{missing if final else 'some'} steps of optimizer {type(opt).__name__} ran "
                    "without being recorded: a tf.function traced before gradtrace.trace was "
                    "entered keeps running untraced. Enter trace before the first call of the "
                    "training function (or create the tf.function inside it).",
                    stderr=True,
                )

    def _on_tick(self) -> None:
        now = time.monotonic()
        if now >= self._next_uncaptured_check:  # reads every optimizer's counter: not every poll
            self._next_uncaptured_check = now + UNCAPTURED_CHECK_SECONDS
            self._check_uncaptured()
        self._drain_tensors()

    def _drain_tensors(self) -> None:
        """Ship the full tensors written since the last read (``full_tensors_every``)."""
        if self.full_tensors is None:
            return
        from gradtrace import _hooks

        with _hooks.suppressed():
            records, lost = self.full_tensors.drain()
        if lost:
            with self._lock:
                self._lost["full_tensors_overrun"] += lost
            self.info.lost = dict(self._lost)
            self.warn_once("full_tensors_overrun", "full-tensor steps were overwritten before "
                           "the host read them (counted in lost.full_tensors_overrun)")
        if records and self._exporter is not None:
            self._exporter.put_tensors(records)

    def _on_rows(self, rows: list[tuple[Any, np.ndarray]], lost: list[tuple[Any, int]]) -> None:
        from gradtrace._stats import FULL

        if lost:
            n = sum(k for _, k in lost)
            with self._lock:
                self._lost["ring_overrun"] += n
                for ring, k in lost:
                    self._steps_by_opt[ring.layout.optimizer] += k
            self.info.lost = dict(self._lost)
            self.warn_once("ring_overrun", f"{n} steps were overwritten before the host read "
                           "them (counted in lost.ring_overrun); raise GRADTRACE_RING_SIZE")
        steps: list[schema.StepRecord] = []
        now = time.time()
        for ring, block in _by_ring(rows):
            try:
                steps.extend(self._decode_block(ring.layout, block, now))
            except Exception as exc:
                self.internal_error(exc, "decode")
        steps.sort(key=lambda r: r.step)  # rings were decoded one after the other
        self.steps_recorded += len(steps)
        if self.cadence is not None and steps:
            try:
                n = self.cadence.observe(len(rows), sum(1 for _, r in rows if r[FULL] == 1), time.monotonic())
                if n is not None:
                    with self._lock:
                        self.cadence.changes.append((steps[-1].step + 1, n))
                        history = [self.cadence.started, *self.cadence.changes]
                        self.info.extra.update(stats_every=n, stats_every_changes=[list(h) for h in history],
                                               stats_cost_s=max(self.cadence.costs.values()),
                                               step_time_s=self.cadence.step_time)
            except Exception as exc:
                self.internal_error(exc, "cadence")
        if steps and self._exporter is not None:
            self._exporter.put_steps(steps)

    def _decode_block(self, layout: Any, block: np.ndarray, now: float) -> list[schema.StepRecord]:
        """The rows one ring produced since the last poll, as StepRecords.

        The columns are converted once for the block. A step between two full ones
        (most of them) is a copy of the layout's template record with its own numbers
        filled in: no validation per step, its values are ours and already typed.
        """
        from gradtrace._stats import (
            FULL,
            ITERS,
            LOSS,
            LR,
            SEQ,
            decode_full,
            decode_values,
            int_column,
        )

        n = len(block)
        seqs = (int_column(block, SEQ) - 1).tolist()  # stored + 1 (see _stats.HEADER)
        fulls = (block[:, FULL] != 0).tolist()
        head = block[:, [LOSS, LR, ITERS]].astype(np.float64).tolist()
        probed: list[dict[str, Any]] = [{} for _ in range(n)]
        if self._probes_decode is not None and (layout.values or layout.statics):
            probed = self._probes_decode(decode_values(block, layout), layout.statics, n)
        template = self._light_template(layout)
        shared: dict[int, Any] = {}  # id(static probe object) -> its schema object, for this block
        # Probe fields holding the very same object in every row (those from the trace's
        # statics) go into this block's template once; a light row then sets only its own.
        first = probed[0] if probed else {}
        common = {key: val for key, val in first.items() if all(p.get(key, self) is val for p in probed)}
        if common and not all(fulls):
            template = template.model_copy(update={k: _as_schema(k, v, shared) for k, v in common.items()})
        full_at = [j for j in range(n) if fulls[j]]
        full_fields: dict[int, dict[str, Any]] = {}
        if full_at:
            try:
                full_fields = dict(zip(full_at, decode_full(block[full_at], layout), strict=True))
            except Exception as exc:  # those rows are reported lost; the light ones still decode
                self.internal_error(exc, "decode")
        out: list[schema.StepRecord] = []
        for j in range(n):
            try:
                if fulls[j]:
                    fields = full_fields.get(j)
                    if fields is None:
                        continue
                    fields.update(step=seqs[j], wall_time=now,
                                  **{k: _as_schema(k, v, shared) for k, v in probed[j].items()})
                    out.append(schema.StepRecord.model_validate(fields))
                else:
                    loss, lr, it = head[j]
                    upd: dict[str, Any] = {"step": seqs[j], "wall_time": now,
                                           "iterations": int(it) if math.isfinite(it) else None}
                    if layout.has_loss and "loss" not in probed[j]:  # the probes' loss wins
                        upd["loss"] = loss
                    if layout.has_lr:
                        upd["lr"] = lr
                    for key, val in probed[j].items():
                        if key not in common:
                            upd[key] = _as_schema(key, val, shared)
                    out.append(template.model_copy(update=upd))
                self._steps_by_opt[layout.optimizer] += 1
            except Exception as exc:
                self.internal_error(exc, "decode")
        return out

    def _light_template(self, layout: Any) -> schema.StepRecord:
        """The record every light step of ``layout`` starts from (built once per layout).

        Between two full steps nothing per variable was measured: the record lists only
        the variables without a gradient and counts the others.
        """
        rec = self._light_records.get(id(layout))
        if rec is None:
            light = [schema.VarStep(v=slot.v, grad=False) for slot in layout.vars if not slot.grad]
            rec = schema.StepRecord(step=0, mode=layout.mode, vars=light, n_grad=len(layout.vars) - len(light),
                                    target_shape=layout.target_shape if layout.has_loss else None)
            self._light_records[id(layout)] = rec
        return rec

    def _finish(self, exc: BaseException | None) -> None:
        from gradtrace import _hooks, _manual, _scope

        errors: list[BaseException] = []

        def step(fn: Callable[[], Any], where: str) -> None:
            try:
                with _hooks.suppressed():
                    fn()
            except Exception as e:  # keep closing the run whatever fails
                errors.append(e)
                try:
                    self.internal_error(e, where)
                except Exception:
                    pass

        step(lambda: _manual.close(self, "eager"), "hand-written update")
        if self._probes_undo is not None:
            step(self._probes_undo, "probes.undo")
        step(_hooks.uninstall, "uninstall")
        step(self._restore_train_functions, "restore train_function")
        step(self.forget_traces, "forget instrumented traces")
        if self.cadence is not None:
            step(self.cadence.close, "cadence.close")
        if self._poller is not None:
            step(self._poller.stop, "poller.stop")
            step(self._poller.poll, "final read")
            step(self._drain_tensors, "full tensors")
            if self._poller.error is not None:
                step(lambda: self.internal_error(self._poller.error, "poller"), "poller")  # type: ignore[arg-type]
        step(lambda: self._check_uncaptured(final=True, interrupted=exc is not None), "uncaptured check")
        if (exc is None and self.steps_recorded == 0 and not self._nested_recorded()
                and not any(k.startswith("uncaptured") for k in self._warned)):
            self.warn_once(
                "no_steps",
                schema.NO_STEPS_WARNING + "gradtrace records the apply()/apply_gradients() "
                "calls of Keras 3 and tf-keras optimizers made inside trace, and variables written "
                "by the script after tape.gradient in the same function (v.assign_sub(lr * g)): an "
                "optimizer of another kind (tf.compat.v1.train), an update through raw ops, or one "
                "written by hand in another function than the gradient's is not seen, nor is a "
                "tf.function traced before trace was entered.",
                stderr=True)
        # Variables a step function created and initialised itself join the inventory now
        # (not the initial-weight fingerprint: they have been trained since).
        step(lambda: self._catch_up(fingerprint=False), "inventory")
        step(self._name_loose_variables, "variable names")
        step(lambda: self.note_trainable("end"), "trainable flags")
        step(self._note_untrained_models, "untrained models")
        _scope.reset()
        _hooks.reset_thread()
        _manual.reset_thread()
        modes = sorted(self._modes)
        self.info.execution_mode = modes[0] if len(modes) == 1 else ("mixed" if modes else None)
        self.info.ended_at = datetime.now(timezone.utc)
        if exc is None:
            self.info.status = "finished"
        else:
            self.info.status = "failed"
            msg = str(exc)
            self.info.error = type(exc).__name__ + (f": {msg[:500]}" if msg else "")
        self.info.lost = dict(self._lost)
        if self._exporter is not None:
            timeout = float(getattr(self.config, "shutdown_timeout", 30.0))
            step(lambda: self._exporter.update_run(self.snapshot()), "exporter.update_run")
            step(lambda: self._exporter.shutdown(timeout), "exporter.shutdown")
        self.active = False
        if errors and self.strict and exc is None:
            raise errors[0]

    def traced_in(self, options: list[Any]) -> None:
        """The tracing options of the ``tf.function``s whose graphs this run instruments."""
        with self._lock:
            for opts in options:
                self._traced_caches.setdefault(id(opts.function_cache), opts)

    def instrumented(self) -> list[Any]:
        """Tracing options of the functions with this run's recording ops in their graphs."""
        with self._lock:
            return list(self._traced_caches.values())

    def forget_traces(self) -> None:
        """Drop this run's instrumented graphs from the user's ``tf.function``s.

        A graph traced inside ``trace`` keeps its recording ops: called after the run (the
        next notebook cell, another ``trace``) it would go on writing into this run's ring,
        costing time and recording nothing. With its cache cleared the function is traced
        again on its next call: plain outside ``trace``, recorded inside the next one. The
        caches are remembered so that the next run clears them once more when it starts
        (:func:`_retrace_instrumented`): a function called outside in between is traced
        again under that run too.
        """
        with self._lock:
            caches = [opts.function_cache for opts in self._traced_caches.values()]
            self._traced_caches = {}
        for cache in caches:
            cache.clear()
        with _INSTRUMENTED_LOCK:
            for cache in caches:
                _INSTRUMENTED.pop(id(cache), None)
                _INSTRUMENTED[id(cache)] = cache
            while len(_INSTRUMENTED) > MAX_INSTRUMENTED:
                _INSTRUMENTED.popitem(last=False)

    def _restore_train_functions(self) -> None:
        for ref, fn in self._train_functions:
            model = ref()
            if model is not None:
                model.train_function = fn
        self._train_functions.clear()

    def snapshot(self) -> schema.RunInfo:
        """A copy of the current RunInfo (what the exporter ships).

        Copied through pydantic-core's JSON round trip, not ``copy.deepcopy``: that runs
        in Rust without giving the GIL away, so a field the training thread is setting
        cannot be seen half-built, and no ``__reduce__`` of a stray object runs on the
        exporter thread.
        """
        with self._lock:
            raw = self.info.model_dump_json()
        return schema.RunInfo.model_validate_json(raw)

    def flush(self, timeout: float = 10.0) -> bool:
        """Read the rings now and ship everything recorded so far."""
        if self._poller is not None:
            from gradtrace import _hooks

            with _hooks.suppressed():
                self._poller.poll()
            self._drain_tensors()
        if self._exporter is None:
            return True
        self._exporter.update_run(self.snapshot())
        return bool(self._exporter.flush(timeout))


UNCAPTURED_CHECK_SECONDS = 1.0
RING_BYTES = 8 * 2**20
MAX_EVENTS = 32  # trainable_changes and weight_writes kept per run
MAX_EARLY_WRITES = 4096  # eager writes before the first step whose script lines are kept
RING_MIN_ROWS, RING_MAX_ROWS = 64, 4096


def _library_dirs() -> tuple[str, ...]:
    """Directories of the code between a script and a variable's assign: TensorFlow, Keras,
    tf-keras, this package and the standard library (read each time: tf-keras may be imported
    after a first call)."""
    mods = [sys.modules.get(name) for name in ("tensorflow", "keras", "tf_keras", __package__ or "gradtrace")]
    files = [f for m in (*mods, os) if m is not None and (f := getattr(m, "__file__", None))]
    return tuple(os.path.dirname(f) + os.sep for f in files)


def _script_lines(depth: int = 6) -> tuple[tuple[str, int], ...]:
    """The script's calls running now, innermost first: the lines of up to ``depth`` frames
    outside :func:`_library_dirs` (one helper called before the loop and in it is two paths)."""
    skip = _library_dirs()
    out: list[tuple[str, int]] = []
    frame = sys._getframe(1)
    while frame is not None and len(out) < depth:
        name = frame.f_code.co_filename
        if not name.startswith(skip) and not name.startswith("<"):
            out.append((name, frame.f_lineno))
        frame = frame.f_back
    return tuple(out)


# Function caches (tensorflow/core/function/polymorphism/function_cache.py ``FunctionCache``)
# of tf.functions an earlier run instrumented, newest last; emptied when that run ended.
MAX_INSTRUMENTED = 256
_INSTRUMENTED: OrderedDict[int, Any] = OrderedDict()
_INSTRUMENTED_LOCK = threading.Lock()


def instrumented_traces() -> list[Any]:
    """Tracing options of the functions instrumented by the calling thread's active runs."""
    out: dict[int, Any] = {}
    for run in getattr(_local, "runs", None) or []:
        for opts in run.instrumented():
            out.setdefault(id(opts.function_cache), opts)
    return list(out.values())


def _retrace_instrumented() -> None:
    """Clear the caches of the tf.functions earlier runs instrumented: a function called
    outside ``trace`` since then holds a plain graph, and is traced again under this run."""
    with _INSTRUMENTED_LOCK:
        caches = list(_INSTRUMENTED.values())
    for cache in caches:
        cache.clear()


def _by_ring(rows: list[tuple[Any, np.ndarray]]) -> list[tuple[Any, np.ndarray]]:
    """``(ring, row)`` pairs grouped into one ``(ring, 2-D block)`` per ring, in order."""
    groups: dict[int, tuple[Any, list[np.ndarray]]] = {}
    for ring, row in rows:
        groups.setdefault(id(ring), (ring, []))[1].append(row)
    return [(ring, np.stack(rs)) for ring, rs in groups.values()]


def _loss_info(val: dict[str, Any]) -> schema.LossInfo | None:
    """A step's loss details as the schema holds them. Details the schema does not take (a key
    it does not know, a value of another type) are dropped, not the step: the step's loss,
    gradients and updates are recorded without them."""
    from pydantic import ValidationError

    try:
        return schema.LossInfo.model_validate(val)
    except ValidationError as exc:
        logger.debug("gradtrace: loss details dropped in part: %s", exc)
        bad = [e["loc"] for e in exc.errors()]
    keep = {k: v for k, v in val.items() if k in schema.LossInfo.model_fields}
    if isinstance(keep.get("calls"), list):
        keep["calls"] = [{k: v for k, v in c.items() if k in schema.LossCall.model_fields}
                         for c in keep["calls"] if isinstance(c, dict)]
    for loc in bad:  # a value the schema does not take: that field alone is left out
        if len(loc) == 1:
            keep.pop(str(loc[0]), None)
        elif len(loc) >= 3 and loc[0] == "calls" and isinstance(loc[1], int) and loc[1] < len(keep.get("calls") or []):
            keep["calls"][loc[1]].pop(str(loc[2]), None)
    try:
        return schema.LossInfo.model_validate(keep)
    except ValidationError:
        return None


def _as_schema(key: str, val: Any, shared: dict[int, Any]) -> Any:
    """A probe field as the schema type StepRecord holds (dicts -> models), each shared
    object converted once."""
    if key == "loss_info":
        got = shared.get(id(val))
        if got is None:
            got = shared[id(val)] = _loss_info(val)
        return got
    if key == "broadcasts":
        got = shared.get(id(val))
        if got is None:
            got = shared[id(val)] = [schema.Broadcast.model_validate(b) for b in val]
        return got
    return val


def _logs_to_stderr(log: logging.Logger) -> bool:
    current: logging.Logger | None = log
    while current is not None:
        for h in current.handlers:
            if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is sys.stderr:
                return True
        current = current.parent if current.propagate else None
    return False


def _uninitialized(v: Any) -> bool:
    """A variable whose value cannot be read yet: a Keras 3 variable created in a
    ``StatelessScope`` (an initializer but no value: keras/src/backend/common/variables.py
    ``Variable``), or one created while a ``tf.function`` is first traced, which that
    function initialises on its first run (tensorflow/python/eager/polymorphic_function/
    polymorphic_function.py ``UnliftedInitializerVariable``)."""
    if getattr(v, "_initializer", None) is not None and getattr(v, "_value", 0) is None:
        return True
    from gradtrace._hooks import tf_variable

    tv = tf_variable(v)
    if type(tv).__name__ != "UnliftedInitializerVariable":
        return False
    import tensorflow as tf

    try:
        with tf.init_scope():
            return not bool(tv.is_initialized())
    except Exception:
        return True


def _extends(new: list[schema.LayerInfo], old: list[schema.LayerInfo]) -> bool:
    """``new`` lists ``old``'s layers first (same names and classes) and more after them."""
    return len(new) > len(old) and all(
        (a.name, a.class_name) == (b.name, b.class_name) for a, b in zip(new, old, strict=False))


def _value_copy(tv: Any) -> np.ndarray:
    return np.array(tv.numpy(), copy=True)


def _initial(v: Any) -> np.ndarray:
    import tensorflow as tf

    from gradtrace._hooks import tf_variable

    with tf.init_scope():  # models are often registered while a step function is traced
        return np.asarray(tf_variable(v).numpy(), dtype=np.float32).reshape(-1)


def _inner_optimizers(opt: Any) -> list[Any]:
    """The optimizers whose steps ``opt``'s steps are (the hooks record only ``opt``'s): a
    loss scale optimizer's ``inner_optimizer``; a Keras 3 MultiOptimizer's sub-optimizers
    (keras/src/optimizers/multi_optimizer.py ``MultiOptimizer.apply`` calls each one's
    ``apply`` with its share of the variables; they are kept in ``_inner_optimizers``)."""
    out = []
    inner = getattr(opt, "inner_optimizer", None)
    if inner is not None:
        out.append(inner)
    subs = getattr(opt, "_inner_optimizers", None)
    if isinstance(subs, list | tuple):
        out += [o for o in subs if o is not None]
    return out


def _iterations_now(opt: Any) -> int | None:
    from gradtrace._hooks import iterations_variable

    try:
        it = iterations_variable(opt)
        if it is None:
            return None
        return int(np.asarray(it.numpy() if hasattr(it, "numpy") else it))
    except Exception:  # an optimizer not built yet has no counter
        return None


def _module_paths(variables: list[Any]) -> dict[int, str]:
    """``id(v)`` -> ``"Module.attr[0].w"`` for each of ``variables`` a live ``tf.Module`` holds
    (not a Keras layer, named by its model, nor an optimizer), by the longest attribute path found (the
    outermost module). ``tf.Module._flatten(with_path=True)`` (tensorflow/python/module/module.py)
    yields each variable with the attribute path that reaches it."""
    import gc

    import tensorflow as tf

    from gradtrace._hooks import tf_variable

    want = {id(tf_variable(v)): id(v) for v in variables}
    best: dict[int, tuple[int, str]] = {}
    for obj in gc.get_objects():
        if not isinstance(obj, tf.Module) or hasattr(obj, "_flatten_layers") or hasattr(obj, "apply_gradients"):
            continue
        try:
            found = obj._flatten(predicate=lambda x: isinstance(x, tf.Variable), with_path=True)
            for path, var in found:
                key = want.get(id(var))
                if key is None or (key in best and best[key][0] >= len(path)):
                    continue
                parts = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
                best[key] = (len(path), type(obj).__name__ + parts)
        except Exception:  # noqa: BLE001 - a module whose attributes cannot be walked: skip it
            continue
    return {k: name for k, (_n, name) in best.items()}


def _variable_inventory(models: list[Any], configs: dict[str, dict[str, Any]] | None = None,
                        ) -> tuple[list[Any], list[Any], dict[int, int]] | None:
    return _meta.variable_inventory(models, configs)  # type: ignore[no-any-return]


def _make_exporter(run: Run) -> Any:
    from gradtrace import _export, _sinks

    cfg = run.config
    sink = _sinks.make_sink(cfg.url, token=cfg.token)
    return _export.Exporter(sink, cfg, run.snapshot)


# --- trace() -------------------------------------------------------------------------------


_CONFIG_OPTIONS = {
    "url", "token", "project", "disabled", "strict", "spool_dir", "flush_interval",
    "batch_steps", "queue_steps", "full_tensors_every", "sketch_dim", "ring_size",
    "shutdown_timeout", "retry_seconds", "http_timeout", "overhead_budget", "stats_every",
}
_RUN_OPTIONS = {"stats_jit"}


class _Trace(Generic[P, R]):
    """What ``trace(...)`` returns: a decorator and a reusable context manager."""

    def __init__(self, run: str | None, project: str | None, store: str | None,
                 options: dict[str, Any]) -> None:
        unknown = set(options) - _CONFIG_OPTIONS - _RUN_OPTIONS
        if unknown:
            raise TypeError(f"gradtrace.trace: unknown option(s): {', '.join(sorted(unknown))}")
        if run is not None and (not isinstance(run, str) or not run.strip()):
            raise ValueError("gradtrace.trace: run must be a non-empty string")
        self.name = run
        self.project = project
        self.store = store
        self.options = options
        self._local = threading.local()

    def _config(self) -> Any:
        from gradtrace import _config

        overrides = {k: v for k, v in self.options.items() if k in _CONFIG_OPTIONS}
        if self.store is not None:
            overrides["url"] = self.store
        if self.project is not None:
            overrides["project"] = self.project
        return _config.load(**overrides)

    def _open(self, default_name: str) -> Run:
        config = self._config()
        run = Run(self.name or default_name, self.project, config,
                  {k: v for k, v in self.options.items() if k in _RUN_OPTIONS})
        if getattr(config, "disabled", False):
            return run
        try:
            run._start()
        except Exception as exc:
            # Could not start tracing: the training must still run.
            logger.warning("gradtrace: tracing disabled for run %r (%s: %s)",
                           run.info.name, type(exc).__name__, exc)
            run.info.partial = True
            try:
                run._finish(None)
            except Exception:
                logger.debug("gradtrace: cleanup after a failed start failed", exc_info=True)
            if run.strict:
                raise
            return run
        _push(run)
        return run

    def _close(self, run: Run, exc: BaseException | None) -> None:
        _pop(run)
        if run.active:
            run._finish(exc)
        if run.parent is not None:
            run.parent.absorb(run)
            run.parent = None

    def __enter__(self) -> Run:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        run = self._open("run")
        stack.append(run)
        return run

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        run = self._local.stack.pop()
        self._close(run, ev)

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(func) or inspect.isgeneratorfunction(func):
            raise TypeError("gradtrace.trace decorates plain functions (not async or generators)")

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            run = self._open(getattr(func, "__name__", "run"))
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                self._close(run, exc)
                raise
            self._close(run, None)
            return result

        return wrapper


@overload
def trace(func: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def trace(
    func: None = None, /, *, run: str | None = None, project: str | None = None,
    store: str | None = None, **options: Any,
) -> _Trace[Any, Any]: ...


def trace(
    func: Callable[P, R] | None = None, /, *, run: str | None = None, project: str | None = None,
    store: str | None = None, **options: Any,
) -> Callable[P, R] | _Trace[Any, Any]:
    """Record every optimizer step of the training inside, as a decorator or a ``with`` block.

    ``run`` names the run (default: the decorated function's name), ``project``
    groups runs, ``store`` is where records go (else ``$GRADTRACE_URL``, else
    ``sqlite:///./gradtrace.db``). Other keyword options are configuration
    fields (``full_tensors_every``, ``sketch_dim``, ``ring_size``, ``strict``,
    ``disabled``, ...; see ``gradtrace._config``) or ``stats_jit`` (compile the
    statistics as a separate XLA function; default: no, it measured slower on CPU) or ``stats_every`` (per-variable
    statistics on every N-th step after a warm-up of 8; 1: every step; default: N is chosen
    from measured costs to keep them within ``overhead_budget`` of the step time).

    ``@gradtrace.trace`` (bare) and ``@gradtrace.trace(run=...)`` both work;
    ``with gradtrace.trace(...) as run`` yields the :class:`Run`.
    """
    if func is not None:
        if not callable(func):
            raise TypeError("gradtrace.trace: use keyword arguments, e.g. trace(run='name')")
        return _Trace[Any, Any](None, None, None, {})(func)
    return _Trace[Any, Any](run, project, store, options)


__all__ = ["Run", "current_run", "trace"]
