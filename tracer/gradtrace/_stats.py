"""The per-step statistics: one flat float32 vector per optimizer step, computed in the graph.

A Python hook runs once per trace inside ``tf.function``, so everything a step
records must be graph ops. :func:`step_vector` builds them: for every applied
variable the gradient's norm/mean/min/max/non-finite count and a fixed-size
sketch, whether the weight changed, the update's and the weight's norm; for
every non-trainable variable whether it changed and by how much; the loss, the
learning rate and the iteration counter; plus the step scope's values. The
per-variable work runs in one compiled function (XLA where possible) so the
step pays a single dispatch instead of dozens of small ops.

A :class:`Layout` (Python, one per trace) says what each position of the vector
means; :func:`decode_row` turns a full step's vector back into ``StepRecord`` fields.

The sketch is a signed fold (a count-sketch with buckets ``i mod k``): every
element is multiplied by a fixed pseudo-random sign and added into bucket
``i mod k``. Signs depend only on the variable's element count, the sketch
size and a fixed seed, so two runs' sketches of same-shaped gradients are
comparable: ``E[<S a, S b>] = <a, b>``, hence cosine and norm ratio.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import weakref
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger("gradtrace.stats")

SKETCH_SEED = 0x6772  # changing it makes sketches incomparable with older runs
VAR_GRAD_STATS = ("norm", "mean", "min", "max", "nonfinite")
VAR_APPLY_STATS = ("applied", "update_norm", "weight_norm")
# The columns every step row starts with. "row"/"seq": int64 values bitcast into two float32
# columns each (read with int_column): the row's write index + 1 (gradtrace._ring.Ring.claim)
# and the run-wide step number + 1 (the counters' new values, stored without a subtraction).
HEADER = ("row", "row_hi", "seq", "seq_hi", "loss", "lr", "iterations", "full")
SEQ, LOSS, LR, ITERS, FULL = (HEADER.index(c) for c in ("seq", "loss", "lr", "iterations", "full"))


def int_column(block: np.ndarray, col: int) -> np.ndarray:
    """The int64 values bitcast into columns ``col, col + 1`` of a float32 ``(n, width)`` block."""
    pair = np.ascontiguousarray(block[:, col : col + 2], dtype=np.float32)
    return pair.view(np.int64)[:, 0]


@dataclass
class VarSlot:
    """Where one trainable variable's numbers sit in the step vector."""

    v: int
    grad: bool
    offset: int  # first apply stat (applied, update_norm, weight_norm)
    size: int  # element count
    grad_offset: int = -1  # first grad stat when the variable has a gradient


@dataclass
class StateSlot:
    """Where one non-trainable variable's numbers sit in the step vector."""

    v: int
    rng: bool
    offset: int


@dataclass
class Layout:
    """What each position of one trace's step vector means."""

    width: int = 0
    mode: str = "eager"
    sketch_dim: int = 16
    target_shape: list[int | None] | None = None
    has_loss: bool = False
    has_lr: bool = False
    vars: list[VarSlot] = field(default_factory=list)
    state: list[StateSlot] = field(default_factory=list)
    values: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> (offset, size)
    statics: dict[str, Any] = field(default_factory=dict)
    optimizer: int = 0  # id() of the optimizer that made the step


# --- sketch signs -----------------------------------------------------------------

_signs_lock = threading.Lock()
_signs_np: dict[tuple[int, int], np.ndarray] = {}


def sketch_signs(n: int, k: int) -> np.ndarray:
    """The fixed +-1 signs for an ``n``-element tensor sketched into ``k`` numbers.

    Padded with zeros to a multiple of ``k``. Deterministic across processes.
    """
    key = (n, k)
    with _signs_lock:
        s = _signs_np.get(key)
        if s is None:
            seed = zlib.crc32(f"{SKETCH_SEED}:{n}:{k}".encode())
            rng = np.random.default_rng(seed)
            m = -(-n // k) * k
            s = np.zeros(m, dtype=np.float32)
            s[:n] = rng.integers(0, 2, size=n).astype(np.float32) * 2.0 - 1.0
            _signs_np[key] = s
    return s


def sketch_reference(x: np.ndarray, k: int) -> np.ndarray:
    """The sketch of ``x`` computed on the host (the reference the graph version matches)."""
    flat = np.asarray(x, dtype=np.float64).reshape(-1)
    s = sketch_signs(flat.size, k).astype(np.float64)
    padded = np.zeros(s.size)
    padded[: flat.size] = flat
    return (padded * s).reshape(-1, k).sum(axis=0)


class _SignVars:
    """The signs of every sketched gradient of a step, packed into one non-trainable variable.

    One variable per list of sizes (shared by the layouts that have it), not one per
    gradient: every variable a ``tf.function`` captures is an input on every call, and
    TensorFlow spends a few microseconds of Python per captured input per call (measured:
    100 captures add ~0.23 ms to each step on this machine's MLP).
    """

    def __init__(self) -> None:
        self._vars: dict[tuple[tuple[int, ...], int], tuple[Any, list[int]]] = {}
        self._lock = threading.Lock()

    def packed(self, sizes: list[int], k: int) -> tuple[Any, list[int]]:
        """``(variable, offsets)``: gradient ``j``'s signs start at ``offsets[j]``."""
        import tensorflow as tf

        from gradtrace._ring import side_variable

        key = (tuple(sizes), k)
        with self._lock:
            got = self._vars.get(key)
            if got is None:
                parts = [sketch_signs(n, k) for n in sizes]
                offsets = np.cumsum([0] + [p.size for p in parts[:-1]]).astype(int).tolist() if parts else []
                flat = np.concatenate(parts) if parts else np.zeros([0], np.float32)
                with tf.init_scope():
                    got = (side_variable(flat, "gradtrace_signs"), offsets)
                self._vars[key] = got
        return got


SIGNS = _SignVars()


def cond(pred: Any, true_fn: Callable[[], Any], false_fn: Callable[[], Any]) -> Any:
    """``tf.cond``, kept as one functional ``If`` op when built into a graph.

    Inside ``tf.function`` TensorFlow lowers ``If`` to Switch/Merge
    (tensorflow/python/ops/control_flow_util_v2.py ``maybe_set_lowering_attr``): every
    node of the branch not taken is still visited on each call, to pass on dead
    tensors. A light step skips the full-step branches, so it pays one ``If`` that runs
    the small false branch instead. Set the way cond_v2's own ``prevent_lowering`` does
    (tensorflow/python/ops/cond_v2.py ``_build_cond``). Measured on the 784-256-128-10
    MLP tape loop: 1.5-2 % of the step time less than lowered conditions. Under XLA
    (a ``jit_compile`` step) nothing is lowered anyway.
    """
    import tensorflow as tf

    if tf.executing_eagerly():
        return tf.cond(pred, true_fn, false_fn)
    from tensorflow.core.framework import attr_value_pb2

    graph = tf.compat.v1.get_default_graph()
    first = len(graph.get_operations())
    out = tf.cond(pred, true_fn, false_fn)
    for op in graph.get_operations()[first:]:
        if op.type in ("If", "StatelessIf"):
            op._set_attr("_lower_using_switch_merge", attr_value_pb2.AttrValue(b=False))
    return out


# --- cadence: which steps get the per-variable statistics ---------------------------

WARMUP_STEPS = 8  # the first steps always get full statistics (step 0 is the strongest witness)
PROVISIONAL_EVERY = 16  # the auto cadence before the first measurement
MAX_EVERY = 1000
_WINDOWS = 32  # poll windows the step time estimate is the median of
_RETUNE = 1.5  # once chosen, N changes only when the new choice is off by more than this factor


_PROBE_ATTEMPTS = 4  # timing the statistics: tries, 0.5 s, 1 s, 1.5 s apart
_PROBE_RETRY_SECONDS = 0.5


class Cadence:
    """When a step gets the per-variable statistics, and the weight snapshots those need.

    Every step records the loss, learning rate, iterations and the step scope's
    values. The per-variable statistics (the costly part: several passes over
    every parameter) run on the first :data:`WARMUP_STEPS` steps and then on every
    N-th step. ``every=1`` is every step; ``every=N`` fixes N (steps 0, N, 2N, ...,
    no warm-up); ``every=None`` lets
    the measured costs choose N so that the statistics stay within ``budget`` (a
    fraction of the step time): :meth:`observe` (the host poller) estimates the
    step time from the rows it reads, times each layout's statistics function
    once, and writes N into a variable the graphs read (no retrace).

    ``||w_after - w_before||`` needs the weights from before the update. Holding
    ``var.value()`` across the optimizer's in-place assign makes the assign copy
    the whole buffer on every step, so instead :meth:`snapshot` copies the weights
    into shadow variables, on full steps only, before the update.
    """

    def __init__(self, seq: Callable[[], Any], every: int | None, budget: float) -> None:
        self._seq = seq  # the run's step counter, created by the first step (see Run.seq)
        self.fixed = every
        self.budget = float(budget)
        # An explicit N is taken literally (steps 0, N, 2N, ...); the automatic cadence warms up.
        self.warmup = WARMUP_STEPS if every is None else 0
        self.every = int(every) if every is not None else PROVISIONAL_EVERY
        from gradtrace._ring import LazySideVariable

        self._var = LazySideVariable(lambda: self.every, "int64", "gradtrace_stats_every")
        self._shadows: dict[tuple[int, ...], tuple[Any, list[Any]]] = {}
        self._lock = threading.Lock()
        self._probes: dict[int, tuple[Any, Any]] = {}  # id(ring) -> (probe fn, its arguments)
        self.costs: dict[int, float] = {}  # id(ring) -> seconds of one statistics pass
        self._windows: list[tuple[float, int, int]] = []  # (seconds, rows, full rows)
        self._last: float | None = None
        self.changes: list[tuple[int, int]] = []  # (first step seen with it, N), measured choices
        # the provisional N, in effect from the warm-up's end until the first measured choice
        self.started: tuple[int, int] = (self.warmup, self.every)
        self.step_time: float | None = None
        self._stop = threading.Event()  # the run ended: timing probes give up

    @property
    def seq(self) -> Any:
        return self._seq()

    @property
    def var(self) -> Any:
        """N as a variable the graphs read; created by the first step (see ``Run.seq``)."""
        return self._var.get()

    @property
    def always(self) -> bool:
        """Every step is full: no condition in the graph."""
        return self.fixed == 1

    def full(self, s: Any) -> Any:
        """Boolean tensor: does step ``s`` (the run's step number) get the statistics?"""
        import tensorflow as tf

        every = self.var.read_value()
        return tf.logical_or(tf.less(s, self.warmup), tf.equal(tf.math.floormod(s, every), 0))

    def shadow(self, tvars: list[Any]) -> Any:
        """One flat float32 variable holding ``tvars``' values before the update (created
        on first use, shared by the layouts stepping the same variables): one captured
        input per step function instead of one per variable."""
        import tensorflow as tf

        from gradtrace._ring import side_variable

        key = tuple(id(v) for v in tvars)
        with self._lock:
            got = self._shadows.get(key)
            if got is None:
                n = sum(_numel(v) for v in tvars)
                with tf.init_scope():
                    got = (side_variable(tf.zeros([n], tf.float32), "gradtrace_before"), list(tvars))
                self._shadows[key] = got  # the variables are kept so their ids stay theirs
        return got[0]

    def snapshot(self, tvars: list[Any]) -> Any:
        """Copy ``tvars`` into their shadow if this step is full (graph ops; before the update).

        Inside ``tf.function`` the copy is ordered before the optimizer's assign by
        automatic control dependencies (both touch the variables' resources). Returns
        whether this step is full (a boolean tensor), for the step's writer: the step
        number is read here, before the writer claims it, so both agree.
        """
        import tensorflow as tf

        shadow = self.shadow(tvars)

        def copy() -> Any:
            shadow.assign(flat_values(tvars))
            return tf.constant(True)

        if self.always:
            copy()
            return tf.constant(True)
        full = self.full(self.seq.read_value())
        cond(full, copy, lambda: tf.constant(False))
        return full

    # -- the measured choice of N (host side, poller thread) --------------------------

    def register(self, ring: Any, probe: Any, args: Any) -> None:
        """A layout's statistics function: timed once, in a thread of its own.

        Not in the poller: compiling and timing it must not delay reading the rings.
        """
        if self.fixed is not None:
            return
        with self._lock:
            self._probes[id(ring)] = (probe, args)
        # Not a daemon: a thread killed at interpreter exit while TensorFlow compiles or runs
        # the probe aborts the process ("terminate called ... FATAL: exception not rethrown").
        # Exit waits for the probe in progress instead; close() makes it stop at the next check.
        threading.Thread(target=self._time_probe, args=(id(ring), probe, args),
                         name="gradtrace-cadence", daemon=False).start()

    def close(self) -> None:
        """The run ended: timing probes still running stop at their next check."""
        self._stop.set()

    def _time_probe(self, key: int, probe: Any, args: Any) -> None:
        from gradtrace._hooks import suppressed

        last: BaseException | None = None

        for attempt in range(_PROBE_ATTEMPTS):
            if self._stop.is_set():
                return
            try:
                with suppressed():
                    probe(*args)  # trace and compile
                    reps = []
                    for _ in range(7):
                        if self._stop.is_set():
                            return
                        t0 = time.perf_counter()
                        for out in probe(*args):
                            np.asarray(out)  # .numpy() waits for the result
                        reps.append(time.perf_counter() - t0)
                self.costs[key] = float(np.median(reps))
                return
            except Exception as exc:
                # The first step may still be creating and initialising the variables the
                # statistics read (fit() of a model built lazily): try again a little later.
                last = exc
                if attempt + 1 < _PROBE_ATTEMPTS and self._stop.wait(_PROBE_RETRY_SECONDS * (attempt + 1)):
                    return
        logger.warning("gradtrace: timing the statistics failed (%s: %s); keeping stats_every=%d",
                       type(last).__name__, str(last).splitlines()[0][:200] if str(last) else "", self.every)
        logger.debug("gradtrace: timing the statistics failed", exc_info=last)

    def observe(self, n_rows: int, n_full: int, now: float) -> int | None:
        """Rows read by one poll at ``now``; returns a new N when the cadence changes."""
        if self.fixed is not None:
            return None
        last, self._last = self._last, now
        if last is None or n_rows <= 0:
            return None
        self._windows.append((now - last, n_rows, n_full))
        del self._windows[:-_WINDOWS]
        if len(self._windows) < 3:
            return None
        if not self.costs:
            return None
        cost = max(self.costs.values())
        # The time a step takes without statistics: each window's time minus its full steps' share.
        light = [max(dt - f * cost, 0.1 * dt) / n for dt, n, f in self._windows]
        self.step_time = float(np.median(light))
        want = int(np.clip(np.ceil(cost / (self.budget * self.step_time)), 1, MAX_EVERY))
        if self.changes and self.every / _RETUNE <= want <= self.every * _RETUNE:
            return None
        self.every = want
        self.var.assign(want)
        return want


# --- the compiled statistics function -------------------------------------------

def make_writer(ring: Any, seq: Any, cadence: Cadence, tvars: list[Any], state_vars: list[Any],
                state_shadow: Any, jit: bool) -> Any:
    """The function that computes one step's vector and writes it into ``ring``.

    One per ring (i.e. per layout): the ring and the run's step counter are closed
    over, never passed as arguments, so a writer can only ever write where its
    layout belongs. The per-element statistics (everything but the loss, learning
    rate, iterations and the step scope's values) run on full steps only
    (:class:`Cadence`) in a compiled function shared by every run of the process
    (:func:`stats_function`), which gets the variables, their pre-update shadow
    (:meth:`Cadence.snapshot`), the non-trainable variables' previous copy
    ``state_shadow`` (flat float32) and the packed sketch signs (:class:`_SignVars`)
    as arguments. The other rows carry NaN there and ``full == 0``, and
    non-trainable deltas span the steps since the last full one.

    Returns ``(writer, probe, probe_args, jit)``: ``probe(*probe_args)`` does a full
    step's extra work for timing: the same compiled statistics on zero gradients
    (writing only a scratch copy of ``state_shadow``) and the concatenation of the
    weights that :meth:`Cadence.snapshot` copies; ``jit`` says whether the statistics are XLA-compiled
    (False where asked, or where :func:`stats_function` declined to compile more).
    """
    import tensorflow as tf

    from gradtrace._ring import side_variable

    layout: Layout = ring.layout
    k = layout.sketch_dim
    grad_slots = [slot for slot in layout.vars if slot.grad]
    signs, sign_at = SIGNS.packed([slot.size for slot in grad_slots], k) if k else (None, [])
    before = cadence.shadow(tvars)
    mid = layout.width - len(HEADER) - sum(size for _, size in layout.values.values())
    grad_shapes = tuple(tuple(v.shape.as_list()) for v, slot in zip(tvars, layout.vars, strict=True) if slot.grad)
    full_stats, _, jit = stats_function(grad_shapes, k, tuple(sign_at), jit)
    # Inside an XLA step the statistics are compiled with it: time them compiled too.
    _, probe, _ = stats_function(grad_shapes, k, tuple(sign_at), jit or layout.mode == "xla")

    def compute(targets, lr, iters, grads, extra, inv_scale, full):  # type: ignore[no-untyped-def]
        # full: this step gets the statistics (Cadence.snapshot decided it before the update).
        # Every op here runs on every step, most of them on scalars, where each graph node's
        # scheduling costs more than its arithmetic: no op that can be spared (HEADER).
        row_id, slot = ring.claim()
        s1 = seq.assign_add(1)  # the run-wide step number + 1
        loss = tf.constant(float("nan"), tf.float32)
        if len(targets) == 1 and targets[0].shape.rank == 0:
            loss = tf.cast(targets[0], tf.float32)
        elif targets:
            loss = tf.add_n([tf.reduce_sum(tf.cast(t, tf.float32)) for t in targets])

        def stats() -> Any:
            args = (grads, inv_scale, _by_value(tvars), before, _by_value(state_vars), shadow, signs)
            return live_stats(full_stats, args)(*args)

        if cadence.always:
            vals = stats()
        else:
            vals = cond(full, stats, lambda: tf.fill([mid], float("nan")))
        tail = tf.stack([loss, tf.cast(lr, tf.float32), tf.cast(iters, tf.float32), tf.cast(full, tf.float32)])
        extras = [tf.cast(e, tf.float32) for e in extra]
        extras = [e if e.shape.rank == 1 else tf.reshape(e, [-1]) for e in extras]
        vec = tf.concat([row_id, tf.bitcast(s1, tf.float32), tail, vals, *extras], axis=0)
        ring.put(slot, vec)
        return vec

    shadow = state_shadow if state_vars else None
    writer = _quiet(tf.function(compute, jit_compile=False, autograph=False, reduce_retracing=False))
    with tf.init_scope():
        scratch = side_variable(tf.zeros_like(state_shadow), "gradtrace_probe_state") if state_vars else None
        probe_args = ([tf.zeros(shp, tf.float32) for shp in grad_shapes], tf.constant(1.0), tvars, before,
                      state_vars, scratch, signs)

    # A full step also copies the weights before the update (Cadence.snapshot): timed as
    # the same concatenation, reduced instead of assigned (the shadow is in use). Called
    # eagerly, one after the other: the shared probe must not be called from a graph (its
    # trace holds weak references to the first run's variables, which a graph call
    # dereferences: tensorflow/python/eager/polymorphic_function/concrete_function.py
    # ``ConcreteFunction._call_flat`` -> ``FuncGraph.variables``).
    copy = _quiet(tf.function(lambda: tf.reduce_max(flat_values(tvars)), autograph=False))

    def full_step_work(*args: Any) -> tuple[Any, Any]:
        return probe(*args), copy()

    return writer, full_step_work, probe_args, jit


# XLA's compiled code stays mapped until the process ends (see stats_function): once less
# than this share of the process's memory-mapping limit is free, statistics functions of
# new shapes are not XLA-compiled (same values, unfused, slower full steps).
MAPPINGS_RESERVE = 0.25


def mappings_free() -> float | None:
    """The share of ``vm.max_map_count`` this process has not mapped yet (None off Linux)."""
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            limit = int(f.read())
        with open("/proc/self/maps", "rb") as f:
            used = sum(1 for _ in f)
    except (OSError, ValueError):
        return None
    return 1.0 - used / max(limit, 1)


_SHARED_LOCK = threading.Lock()
_SHARED: dict[tuple[Any, ...], tuple[Any, Any]] = {}
_KEY_OF: weakref.WeakKeyDictionary[Any, tuple[Any, ...]] = weakref.WeakKeyDictionary()  # fn -> its key


def stats_function(grad_shapes: tuple[tuple[int | None, ...], ...], k: int, sign_at: tuple[int, ...],
                   jit: bool) -> tuple[Any, Any, bool]:
    """The compiled per-variable statistics for one shape signature, shared process-wide.

    ``f(grads, inv_scale, tvars, before, state_vars, state_shadow, signs)`` returns the
    full-step block of the step vector (:func:`plan`'s order) and copies the
    non-trainable values into ``state_shadow``. Everything it reads or writes is an
    argument, so every run whose step has these shapes calls the same function: it is
    traced and XLA-compiled once per process. XLA never frees a compiled function
    (tensorflow/compiler/jit/device_compilation_cache.h ``DeviceCompilationCache``:
    "no cache eviction policy", keyed by function name and argument shapes) and its
    machine code stays mapped: a function per run cost ~300 memory mappings for a
    6-variable MLP, and Linux aborts a process at 65,530 (``vm.max_map_count``), i.e.
    after a few hundred traced runs (a sweep, a notebook, a test suite).

    XLA fuses each pass's reductions over the same input into one loop, so a full
    step pays a single dispatch instead of dozens of small ops. The writer around it
    stays a plain function inlined into the step's graph: launching an XLA computation
    from a non-XLA graph costs more than a light step's whole bookkeeping (measured on
    the 784-256-128-10 MLP: ~0.5 ms per launch against a ~1 ms step), so light steps
    must not pay it.

    A process that has used up all but :data:`MAPPINGS_RESERVE` of its mapping limit
    (its own XLA functions count too) gets the unfused function for new shapes.

    Returns ``(f, probe, jit)``: ``probe`` calls ``f`` from a graph, as a step's writer
    does, for timing (called eagerly, an XLA function is compiled apart from the same
    function called in a graph: a second compile, ~170 more mappings); ``jit`` whether
    ``f`` is XLA-compiled.
    """

    key = (grad_shapes, k, sign_at, bool(jit))
    with _SHARED_LOCK:
        got = _SHARED.get(key)
        if got is None and jit and (free := mappings_free()) is not None and free < MAPPINGS_RESERVE:
            key = (grad_shapes, k, sign_at, False)
            got = _SHARED.get(key)
        if got is None:
            got = _SHARED[key] = _shared_pair(key)
        return got


def _shared_pair(key: tuple[Any, ...]) -> tuple[Any, Any, bool]:
    import tensorflow as tf

    grad_shapes, k, sign_at, jit = key
    # Unfused, it stays one call all the same (``_noinline``): inlined into the step's graph,
    # Grappler's arithmetic optimizer rewrote the step's own gradient arithmetic differently
    # once these ops also read the gradients (tf-keras BiGRU fit: weights 1e-9 apart).
    attrs = None if jit else {"_noinline": True}
    fn = _quiet(tf.function(functools.partial(_stats, grad_shapes=grad_shapes, k=k, sign_at=sign_at),
                            jit_compile=jit, autograph=False, reduce_retracing=False, experimental_attributes=attrs))
    probe = _quiet(tf.function(lambda *args: fn(*args), jit_compile=False, autograph=False, reduce_retracing=False))
    _KEY_OF[fn] = key
    return fn, probe, jit


def _quiet(fn: Any) -> Any:
    """``fn`` (a ``tf.function`` of the tracer's) without TensorFlow's frequent-retracing warning:
    a new writer per optimizer (a script that re-creates its optimizer every step) would have
    TensorFlow warn the user that *their* code retraces. The flag is the one TensorFlow checks:
    tensorflow/python/eager/polymorphic_function/polymorphic_function.py
    ``Function._omit_frequent_tracing_warning`` (read in ``Function.__call__``)."""
    if hasattr(fn, "_omit_frequent_tracing_warning"):
        fn._omit_frequent_tracing_warning = True
    return fn


def _distributed(v: Any) -> bool:
    import tensorflow as tf

    return isinstance(v, tf.distribute.DistributedValues) or \
        isinstance(getattr(v, "value", None), tf.distribute.DistributedValues)


def _by_value(variables: list[Any]) -> list[Any]:
    """Distributed variables (a model built under a ``tf.distribute`` strategy: MirroredVariable,
    also inside a Keras 3 variable) handed to the shared statistics function as their values
    (read here, after the update). A ``tf.function`` called with a distributed variable captures
    the one it was traced with, and the function is shared by every run with the same shapes: a
    later run in the process read the first run's model's weights (its update and weight norms
    were another model's). Other variables go in as they are."""
    return [v.read_value() if _distributed(v) else v for v in variables]


def _read(v: Any) -> Any:
    return v.read_value() if hasattr(v, "read_value") else v


def live_stats(fn: Any, args: tuple[Any, ...]) -> Any:
    """``fn`` (a function of :func:`stats_function`), or a new one in its place when its
    trace for ``args`` holds variables that no longer exist.

    A concrete function keeps weak references to the variables its trace recorded, and
    calling it from a graph dereferences them (tensorflow/python/eager/polymorphic_function/
    concrete_function.py ``ConcreteFunction._call_flat`` -> ``FuncGraph.variables``:
    "Called a function referencing variables which have been deleted"). Variables handed
    in as arguments are not recorded, except those a model created during the very trace
    that calls the statistics (fit() building a model without ``Input``): the next run
    with the same shapes would find the trace shared and its variables gone. Such a
    function is replaced for every later caller (one more compile, in that case only).
    """
    cf = fn.get_concrete_function(*args)
    if all(ref() is not None for ref in getattr(cf.graph, "_weak_variables", ())):
        return fn
    key = _KEY_OF[fn]
    with _SHARED_LOCK:
        got = _SHARED.get(key)
        if got is None or got[0] is fn:
            got = _SHARED[key] = _shared_pair(key)
    return live_stats(got[0], args)  # a replacement made earlier may need replacing too


# Variables of at most SMALL_VAR elements are reduced together, by segment, in one pass:
# per-variable reductions build ~30 graph ops per variable, and a model of hundreds of small
# variables (biases, BatchNormalization's four vectors) spent seconds of its first step tracing
# them (MobileNetV2, 158 gradients and 104 state vectors: ~10,000 ops, 3.3 s to build, ~6 s
# until the statistics function was ready). Large variables keep their own fused reductions,
# which run faster than segment reductions over the same elements. GROUP_MAX bounds the
# elements one grouped pass takes.
SMALL_VAR = 4096
GROUP_MAX = 1 << 20
MIN_GROUP = 8  # fewer small variables build fewer ops one by one than the grouped pass's own


def _grouped(sizes: list[int | None]) -> list[int]:
    """Which of the variables (by static element count) go into the grouped pass: the small
    ones, in order, while their total stays within GROUP_MAX; none below MIN_GROUP of them."""
    picked, total = [], 0
    for j, n in enumerate(sizes):
        if n is not None and 0 < n <= SMALL_VAR and total + n <= GROUP_MAX:
            picked.append(j)
            total += n
    return picked if len(picked) >= MIN_GROUP else []


def _segments(sizes: list[int]) -> tuple[Any, Any]:
    """``(segment ids, position within its variable)`` of every element of the variables of
    ``sizes`` concatenated, built in the graph from the static sizes (a few ops, no constant
    of the elements' size; ``tf.repeat`` would build dozens)."""
    import tensorflow as tf

    total = sum(sizes)
    starts = np.cumsum([0] + sizes[:-1]).astype(np.int32)
    marks = tf.scatter_nd(starts[1:, None], tf.ones([len(sizes) - 1], tf.int32), [total])
    ids = tf.cumsum(marks)
    pos = tf.range(total, dtype=tf.int32) - tf.gather(tf.constant(starts), ids)
    return ids, pos


def _min_max(flat: Any, ids: Any, sizes: list[int]) -> tuple[Any, Any]:
    """Per-segment min and max as ``tf.reduce_min``/``reduce_max`` give them on CPU: a NaN in
    the segment gives NaN (the segment reductions skip NaN), a segment all +Inf has min +Inf
    and one all -Inf max -Inf (the segment reductions start from the largest finite float)."""
    import tensorflow as tf

    n_seg = len(sizes)

    def count(mask: Any) -> Any:
        return tf.math.unsorted_segment_sum(tf.cast(mask, tf.float32), ids, n_seg)

    size = tf.constant(sizes, tf.float32)
    inf = tf.fill([n_seg], float("inf"))
    lo = tf.where(count(tf.equal(flat, float("inf"))) >= size, inf, tf.math.unsorted_segment_min(flat, ids, n_seg))
    hi = tf.where(count(tf.equal(flat, float("-inf"))) >= size, -inf, tf.math.unsorted_segment_max(flat, ids, n_seg))
    has_nan = count(tf.math.is_nan(flat)) > 0
    nan = tf.fill([n_seg], float("nan"))
    return tf.where(has_nan, nan, lo), tf.where(has_nan, nan, hi)


def _in_order(rows: dict[int, list[Any]], group: list[int], grouped: Any, count: int) -> Any:
    """Every variable's row (the pieces ``rows[j]`` on its own, or row ``i`` of ``grouped``
    for the ``i``-th variable of ``group``), in variable order, flattened."""
    import tensorflow as tf

    if not group:  # the ops of the one-by-one statistics as they always were
        return tf.concat([piece for j in range(count) for piece in rows[j]], axis=0)
    inside = set(group)
    own = [j for j in range(count) if j not in inside]
    at = {j: len(own) + i for i, j in enumerate(group)}
    at.update({j: i for i, j in enumerate(own)})
    table = grouped
    if own:
        mine = tf.stack([tf.concat(rows[j], axis=0) if len(rows[j]) > 1 else rows[j][0] for j in own])
        table = tf.concat([mine, grouped], axis=0)
    return tf.reshape(tf.gather(table, [at[j] for j in range(count)]), [-1])


def _stats(grads, inv_scale, tvars, before, state_vars, state_shadow, signs, *,  # type: ignore[no-untyped-def]
           grad_shapes, k, sign_at):
    """The full-step statistics (see :func:`stats_function`); ``inv_scale`` is 1 / the loss
    scale the gradients still carry (1 without one).

    Per gradient ``[norm, mean, min, max, non-finite count]`` then its ``k`` sketch sums;
    per trainable variable ``[elements changed, update norm, weight norm]``; per state
    variable ``[elements changed, change norm]``. Small variables are reduced together
    (:data:`SMALL_VAR`), the others one by one; the layout is the same either way."""
    import tensorflow as tf

    parts = []
    all_signs = signs.read_value() if k and grads else None
    flats, sizes = [], []
    for j, g in enumerate(grads):
        # The variable's static size: a gradient of a step traced with unknown input
        # dimensions (input_signature=[None, None], reduce_retracing) has no static shape.
        shp = list(grad_shapes[j])
        n = int(np.prod(shp)) if all(d is not None for d in shp) else None
        flats.append(tf.reshape(tf.cast(dense_grad(g, shp), tf.float32), [-1 if n is None else n]) * inv_scale)
        sizes.append(n)
    group = _grouped(sizes)
    inside = set(group)
    rows: dict[int, list[Any]] = {}
    for j, g in enumerate(flats):
        if j in inside:
            continue
        n = sizes[j] if sizes[j] is not None else g.shape[0]
        # One pass each: XLA fuses these reductions over the same input into one loop.
        row = [tf.stack([
            tf.sqrt(tf.reduce_sum(tf.square(g))),
            tf.reduce_sum(g) / float(max(n, 1)),
            tf.reduce_min(g),
            tf.reduce_max(g),
            tf.reduce_sum(tf.cast(tf.logical_not(tf.math.is_finite(g)), tf.float32)),
        ])]
        if k:
            m = -(-n // k) * k  # padded to a multiple of k
            sg = all_signs[sign_at[j] : sign_at[j] + m]
            gp = tf.pad(g, [[0, m - n]]) if m > n else g
            row.append(tf.reduce_sum(tf.reshape(gp * sg, [-1, k]), axis=0))
        rows[j] = row
    grouped = None
    if group:
        gs = [int(sizes[j]) for j in group]  # type: ignore[arg-type]
        flat = tf.concat([flats[j] for j in group], axis=0)
        ids, pos = _segments(gs)
        lo, hi = _min_max(flat, ids, gs)
        cols = [
            tf.sqrt(tf.math.unsorted_segment_sum(tf.square(flat), ids, len(gs))),
            tf.math.unsorted_segment_sum(flat, ids, len(gs)) / tf.constant(gs, tf.float32),
            lo,
            hi,
            tf.math.unsorted_segment_sum(tf.cast(tf.logical_not(tf.math.is_finite(flat)), tf.float32), ids, len(gs)),
        ]
        grouped = tf.stack(cols, axis=1)
        if k:
            # The per-variable sketch's padding adds zeros: the unpadded elements alone give it.
            at = tf.gather(tf.constant([sign_at[j] for j in group], tf.int32), ids) + pos
            sk = tf.math.unsorted_segment_sum(flat * tf.gather(all_signs, at), ids * k + tf.math.floormod(pos, k),
                                              len(gs) * k)
            grouped = tf.concat([grouped, tf.reshape(sk, [len(gs), k])], axis=1)
    if grads:
        parts.append(_in_order(rows, group, grouped, len(grads)))
    if tvars:
        after = [tf.reshape(tf.cast(_read(v), tf.float32), [-1]) for v in tvars]
        parts.append(_changes(after, before.read_value(), [_numel(v) for v in tvars], norm=True))
    if state_vars:
        st_after = [tf.reshape(tf.cast(_read(sv), tf.float32), [-1]) for sv in state_vars]
        st_all = tf.concat(st_after, axis=0)
        parts.append(_changes(st_after, state_shadow.read_value(), [int(af.shape[0]) for af in st_after],
                              norm=False))
    out = tf.concat(parts, axis=0) if parts else tf.zeros([0], tf.float32)
    if state_vars:
        with tf.control_dependencies([out]):
            state_shadow.assign(st_all)
    return tf.identity(out)


def _changes(after: list[Any], before: Any, sizes: list[int], norm: bool) -> Any:
    """Per variable ``[elements changed, change norm]`` (``norm``: then its own norm) between its
    flat value ``after[j]`` and its stretch of the flat ``before``, in variable order: small
    variables reduced together (:data:`SMALL_VAR`), the others one by one."""
    import tensorflow as tf

    offs = np.cumsum([0] + sizes[:-1]).astype(np.int32)
    group = _grouped(sizes)
    inside = set(group)
    rows = {}
    for j, a in enumerate(after):
        if j in inside:
            continue
        b = before[int(offs[j]) : int(offs[j]) + sizes[j]]
        cols = [tf.reduce_sum(tf.cast(tf.not_equal(a, b), tf.float32)), tf.sqrt(tf.reduce_sum(tf.square(a - b)))]
        if norm:
            cols.append(tf.sqrt(tf.reduce_sum(tf.square(a))))
        rows[j] = [tf.stack(cols)]
    grouped = None
    if group:
        gs = [sizes[j] for j in group]
        ids, pos = _segments(gs)
        a = tf.concat([after[j] for j in group], axis=0)
        b = tf.gather(before, tf.gather(tf.constant([int(offs[j]) for j in group], tf.int32), ids) + pos)
        cols = [tf.math.unsorted_segment_sum(tf.cast(tf.not_equal(a, b), tf.float32), ids, len(gs)),
                tf.sqrt(tf.math.unsorted_segment_sum(tf.square(a - b), ids, len(gs)))]
        if norm:
            cols.append(tf.sqrt(tf.math.unsorted_segment_sum(tf.square(a), ids, len(gs))))
        grouped = tf.stack(cols, axis=1)
    return _in_order(rows, group, grouped, len(after))


def _numel(v: Any) -> int:
    n = 1
    for d in v.shape:
        n *= int(d)
    return n


def flat_values(variables: list[Any]) -> Any:
    """The variables' current values, cast to float32 and concatenated into one vector."""
    import tensorflow as tf

    if not variables:
        return tf.zeros([0], tf.float32)
    return tf.concat([tf.reshape(tf.cast(v.read_value(), tf.float32), [-1]) for v in variables], axis=0)


def dense_grad(g: Any, var_shape: list[int | None]) -> Any:
    """A dense gradient; ``tf.IndexedSlices`` are summed per index (repeats add up)."""
    import tensorflow as tf

    if isinstance(g, tf.IndexedSlices):
        rows = var_shape[0] if var_shape and var_shape[0] is not None else g.dense_shape[0]
        return tf.math.unsorted_segment_sum(g.values, g.indices, rows)
    return g


def plan(
    layout: Layout,
    var_indices: list[int],
    has_grad: list[bool],
    sizes: list[int],
    state_indices: list[int],
    state_rng: list[bool],
    extra_values: dict[str, tuple[int, ...]],
) -> None:
    """Fill ``layout``'s offsets in the same order :func:`step_vector` emits numbers."""
    k = layout.sketch_dim
    pos = len(HEADER)
    grad_slots: list[VarSlot] = []
    for v, g, n in zip(var_indices, has_grad, sizes, strict=False):
        slot = VarSlot(v=v, grad=g, offset=-1, size=n)
        layout.vars.append(slot)
        if g:
            grad_slots.append(slot)
    # grad stats of all vars with a grad come first (one block each), then apply stats
    grad_off: dict[int, int] = {}
    for slot in grad_slots:
        grad_off[id(slot)] = pos
        pos += len(VAR_GRAD_STATS) + k
    apply_off: list[int] = []
    for _ in layout.vars:
        apply_off.append(pos)
        pos += len(VAR_APPLY_STATS)
    for slot, a in zip(layout.vars, apply_off, strict=False):
        slot.offset = a
        if slot.grad:
            slot.grad_offset = grad_off[id(slot)]
    for v, r in zip(state_indices, state_rng, strict=False):
        layout.state.append(StateSlot(v=v, rng=r, offset=pos))
        pos += 2
    for key, shape in extra_values.items():
        size = int(np.prod(shape)) if shape else 1
        layout.values[key] = (pos, size)
        pos += size
    layout.width = pos


def decode_full(rows: np.ndarray, layout: Layout) -> list[dict[str, Any]]:
    """Turn full steps' vectors (a ``(m, width)`` block, ``row[FULL] == 1``) into StepRecord
    fields, ``vars`` and ``state`` in column form (:class:`~gradtrace.schema.VarColumns`).

    Each statistic is gathered for every variable and row at once (one numpy index per
    field, one conversion to Python floats): the cost is a few numpy calls per block,
    not a few objects per variable. The values are ours and already typed, so the
    columns are built without validating them again. Rows between two full ones
    (``row[FULL] == 0``) measured nothing per variable: the caller turns them into copies
    of a template record (``Run._decode_block``).
    """
    from gradtrace import schema

    m = len(rows)
    if not m:
        return []
    rows = np.asarray(rows, dtype=np.float64)
    k = layout.sketch_dim
    slots = layout.vars
    vs = [slot.v for slot in slots]
    grads = [slot.grad for slot in slots]
    at = np.array([slot.offset for slot in slots], dtype=np.int64)
    applied = (rows[:, at] > 0).tolist()
    update_norm = rows[:, at + 1].tolist()
    weight_norm = rows[:, at + 2].tolist()
    gpos = [j for j, slot in enumerate(slots) if slot.grad]
    g = np.array([slots[j].grad_offset for j in gpos], dtype=np.int64)
    gstats = [rows[:, g + i].tolist() for i in range(4)]  # norm, mean, min, max
    nf = rows[:, g + 4]
    nonfinite = np.where(np.isfinite(nf), nf, -1).astype(np.int64).tolist()
    sketch = rows[:, (g[:, None] + 5 + np.arange(k)[None, :])].tolist() if k and len(g) else None
    every = len(gpos) == len(slots)

    def spread(col: list[Any]) -> list[Any]:
        """Per-gradient values as a column over all variables (None where no gradient)."""
        if every:
            return col
        out: list[Any] = [None] * len(slots)
        for j, x in zip(gpos, col, strict=True):
            out[j] = x
        return out

    st = layout.state
    s_at = np.array([x.offset for x in st], dtype=np.int64)
    changed = (rows[:, s_at] > 0).tolist()
    delta = rows[:, s_at + 1].tolist()
    s_v = [x.v for x in st]
    rng = [x.rng for x in st] if any(x.rng for x in st) else None
    make_vars = schema.VarColumns.model_construct
    make_state = schema.StateColumns.model_construct
    out: list[dict[str, Any]] = []
    for r in range(m):
        row = rows[r]
        d: dict[str, Any] = {"mode": layout.mode}
        if layout.has_loss:
            d["loss"] = float(row[LOSS])
            d["target_shape"] = layout.target_shape
        if layout.has_lr:
            d["lr"] = float(row[LR])
        d["iterations"] = int(row[ITERS]) if np.isfinite(row[ITERS]) else None
        if slots:
            d["vars"] = make_vars(
                v=list(vs), grad=list(grads), applied=applied[r], update_norm=update_norm[r],
                weight_norm=weight_norm[r], norm=spread(gstats[0][r]), mean=spread(gstats[1][r]),
                min=spread(gstats[2][r]), max=spread(gstats[3][r]),
                nonfinite=spread([x if x >= 0 else None for x in nonfinite[r]]),
                sketch=spread(sketch[r]) if sketch is not None else None,
            )
        else:
            d["vars"] = []
        d["state"] = (make_state(v=list(s_v), changed=changed[r], delta_norm=delta[r],
                                 rng=list(rng) if rng else None) if st else [])
        out.append(d)
    return out


def decode_values(block: np.ndarray, layout: Layout) -> dict[str, np.ndarray]:
    """The step scope's values of a ``(n, width)`` block of rows: key -> ``(n, size)``."""
    return {key: block[:, off : off + size] for key, (off, size) in layout.values.items()}
