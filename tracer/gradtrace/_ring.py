"""The in-graph ring buffer of step vectors and the host thread that drains it.

Inside ``tf.function``/XLA no Python runs per step, and ``tf.py_function`` or
``tf.print`` fail under XLA. So each step writes its vector into a
preallocated ``tf.Variable`` ``[K, width]`` with ``scatter_nd_update`` (an
assign through a variable index, ``ring[i].assign(v)``, recompiles every step
under XLA) and bumps a counter; a background :class:`Poller` reads the counter
and the rows, never blocking the training thread.

Columns 0-1 of every row hold the row's own write index plus one, an int64
bitcast into two float32 columns (:meth:`Ring.claim`), so the reader can tell a
slot that was claimed (counter bumped) but not yet written from a written one.
A writer that laps the reader overwrites rows before they are read: those are
counted as lost (``ring_overrun``), never silently missing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gradtrace._stats import Layout, int_column

logger = logging.getLogger("gradtrace.ring")

FASTEST_STEP = 1e-4
"""Seconds of the fastest optimizer step the poller plans for (a tiny model in ``tf.function``)."""


def side_variable(initial: Any, name: str) -> Any:
    """A non-trainable variable of the tracer's own, created outside any graph being traced.

    ``tf.function`` refuses ``tf.Variable(...)`` on every trace but the first (a retrace
    for a new input shape, e.g. the last partial batch of an epoch, or fit()'s rebuilt
    train function): tensorflow/python/eager/polymorphic_function/polymorphic_function.py
    ``Function._call`` pushes ``invalid_creator_scope`` around later traces. That scope
    runs from ``VariableMetaclass.__call__`` only for ``tf.Variable`` itself
    (tensorflow/python/ops/variables.py ``Variable._variable_call`` returns None for
    subclasses), so constructing ``ResourceVariable`` directly under ``init_scope``
    gives an eager variable the traced function captures like any other.
    """
    import tensorflow as tf
    from tensorflow.python.ops import resource_variable_ops

    with tf.init_scope():
        return resource_variable_ops.ResourceVariable(initial, trainable=False, name=name)


class LazySideVariable:
    """A scalar :func:`side_variable` created on first use (once, thread-safe), not before.

    Creating a variable initialises TensorFlow's eager context, after which a script can no
    longer configure its devices (see ``Run.seq``): the run's own variables wait for its
    first step. ``initial()`` gives the starting value then; the variable is created under
    ``init_scope`` (the first use may be inside a function being traced).
    """

    def __init__(self, initial: Callable[[], int], dtype: str, name: str) -> None:
        self._initial = initial
        self._dtype = dtype
        self._name = name
        self._var: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        if self._var is None:
            with self._lock:
                if self._var is None:
                    import tensorflow as tf

                    with tf.init_scope():
                        self._var = side_variable(tf.constant(self._initial(), self._dtype), self._name)
        return self._var


class Ring:
    """A ``[size, layout.width]`` float32 ring for the steps of one layout."""

    def __init__(self, layout: Layout, size: int) -> None:
        import tensorflow as tf

        self.layout = layout
        self.size = int(size)
        with tf.init_scope():
            self.buf = side_variable(tf.fill([self.size, layout.width], float("nan")), "gradtrace_ring")
            self.count = side_variable(tf.constant(0, tf.int64), "gradtrace_count")
        self.writer: Any = None  # the compiled statistics function writing this ring
        self.read = 0  # host side: rows [0, read) are consumed (or counted lost)
        self.lock = threading.Lock()

    def claim(self) -> tuple[Any, Any]:
        """Graph ops: claim the next row. Returns ``(row id, slot)``: the two float32
        columns every row starts with and the slot to write it into.

        The counter is bumped atomically, so concurrent writers never share a slot. Write
        index ``i`` is stored as ``i + 1`` (the counter's new value, no subtraction) in
        slot ``(i + 1) mod size``, its int64 bits split into two float32 columns by a
        bitcast (copied, never computed with, so exact for any index): two ops where
        splitting it into float32-exact parts took six.
        """
        import tensorflow as tf

        i1 = self.count.assign_add(1)
        return tf.bitcast(i1, tf.float32), tf.math.floormod(i1, self.size)

    def put(self, slot: Any, row: Any) -> None:
        """Graph op: write ``row`` (float32, ``[width]``) into ``slot``.

        ``scatter_nd_update``, not ``buf[slot].assign``: under XLA an assign through a
        variable index recompiles every step (see the module docstring).
        """
        import tensorflow as tf

        self.buf.scatter_nd_update(tf.reshape(slot, [1, 1]), tf.reshape(row, [1, -1]))

    def drain(self) -> tuple[list[np.ndarray], int]:
        """Rows written since the last drain, and how many were overwritten unread.

        Reads only those rows (a gather), not the whole ring: for a large model a
        row is tens of kilobytes and most polls find a few new rows.
        """
        with self.lock:
            n1 = int(self.count.numpy())
            if n1 <= self.read:
                return [], 0
            first = max(self.read, n1 - self.size)
            idx = np.arange(first + 1, n1 + 1, dtype=np.int64) % self.size  # see claim()
            data = self.buf.sparse_read(idx).numpy()
            ids = int_column(data, 0)
            n2 = int(self.count.numpy())
            # Rows below n2 - size may have been overwritten while they were read.
            start = max(first, n2 - self.size)
            lost = start - self.read
            rows: list[np.ndarray] = []
            for i in range(start, n1):
                if ids[i - first] != i + 1:
                    break  # claimed but not written yet: the next drain takes it
                rows.append(data[i - first])
            self.read = start + len(rows)
            return rows, lost


class Poller:
    """Background thread that drains every ring of a run and hands rows on.

    The interval adapts to the step rate so a ring is read before it fills:
    about a third of the time the writer needs to go once round it. It never
    exceeds half the time steps of :data:`FASTEST_STEP` take to fill the smallest
    ring, so a burst of fast steps after a pause or a slow phase is read in time
    (a 4096-row ring: every 0.2 s at most; a 1024-row one: every 51 ms), nor
    ``max_interval``. Each poll costs a few eager TensorFlow calls and a wake-up of
    the interpreter, taken from the training's cores: a larger ring is read less often.
    """

    def __init__(
        self,
        on_rows: Callable[[list[tuple[Ring, np.ndarray]], list[tuple[Ring, int]]], None],
        max_interval: float = 0.5,
        min_interval: float = 0.005,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        self._on_rows = on_rows
        self._on_tick = on_tick
        self._rings: list[Ring] = []
        self._rings_lock = threading.Lock()
        self._drain_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._max = max_interval
        self._min = min_interval
        self._interval = min_interval * 4
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def add(self, ring: Ring) -> None:
        with self._rings_lock:
            self._rings.append(ring)
        self._wake.set()

    @property
    def rings(self) -> list[Ring]:
        with self._rings_lock:
            return list(self._rings)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="gradtrace-poller", daemon=True)
        self._thread.start()

    def poll(self) -> int:
        """Drain every ring now; returns the number of rows handed on."""
        from gradtrace._hooks import suppressed

        total = 0
        with self._drain_lock, suppressed():
            got: list[tuple[Ring, np.ndarray]] = []
            lost: list[tuple[Ring, int]] = []
            for ring in self.rings:
                rows, n_lost = ring.drain()
                if n_lost:
                    lost.append((ring, n_lost))
                got.extend((ring, r) for r in rows)
            if got or lost:
                self._on_rows(got, lost)
            total = len(got)
        return total

    def _adapt(self, rows: int, elapsed: float) -> None:
        smallest = min((r.size for r in self.rings), default=64)
        cap = max(self._min, min(self._max, smallest * FASTEST_STEP / 2))
        if rows <= 0 or elapsed <= 0:
            self._interval = min(cap, self._interval * 1.5)
            return
        rate = rows / elapsed  # steps per second
        want = smallest / rate / 3.0
        self._interval = min(cap, max(self._min, want))

    def _loop(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                n = self.poll()
                if self._on_tick is not None:
                    self._on_tick()
            except Exception as exc:  # the poller must outlive one bad read
                logger.exception("gradtrace: reading the step ring failed")
                self.error = exc
                n = 0
            now = time.monotonic()
            self._adapt(n, now - last)
            last = now

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (the caller drains once more afterwards)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
