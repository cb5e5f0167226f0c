"""Layers that ran in training mode outside the optimizer steps (``RunInfo.training_outside_steps``).

A train/inference-dependent layer (BatchNormalization, Dropout, ...) called with
``training=True`` while no gradient tape records is not part of any optimizer step:
``model(x_val, training=True)`` for a validation pass, or a functional model built with
``BatchNormalization()(x, training=True)`` hard-wired and then run by ``evaluate()`` or
``predict()``. A BatchNormalization layer then folds those batches into its moving
statistics, and Dropout drops units of the predictions. Nothing of it shows in the
steps, yet the run's evaluation differs from a run that trained the same way.

Counted where it ran, never by guess:
- an eager call is counted by the Python that runs it;
- a call inside a function being traced adds one ``assign_add`` on a counter of the
  tracer's own to that function's graph (trace-time Python runs once, the function
  many times): only executions count, and a scratch graph Keras traces to infer
  shapes (keras/src/backend/tensorflow/core.py ``compute_output_spec``) never runs.

Published into the run's metadata when the probes are removed, as
``[{"layer", "calls", "first_step", "how": "eager" | "graph"}, ...]`` (``first_step``:
the number of the next optimizer step when the first such call ran, for a graph the
first trace of a function holding one).

Example::

    >>> calls = OutsideCalls(lambda rows: print(rows), lambda: 3)
    >>> calls.see("bn", True, tape_active=False)
    >>> calls.see("bn", True, tape_active=True)  # a step's forward pass: not counted
    >>> calls.publish()
    [{'layer': 'bn', 'calls': 1, 'first_step': 3, 'how': 'eager'}]
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

MAX_LAYERS = 64
"""Layers listed at most (the first ones seen); further layers are not counted."""


def _saving() -> bool:
    """A SavedModel export is tracing functions now (``tf.saved_model.save``: tf-keras's
    ``ModelCheckpoint(save_weights_only=False)``, ``model.save`` to a folder, Keras 3's
    ``model.export``). A counter captured by a function traced there makes the export fail:
    tensorflow/python/saved_model/save.py refuses a concrete function that captures a
    variable the saved object does not track. Asked through
    tensorflow/python/saved_model/save_context.py ``in_save_context`` (internal)."""
    try:
        from tensorflow.python.saved_model import save_context
    except ImportError:  # moved: count nothing in graphs rather than break an export
        return True
    return bool(save_context.in_save_context())


class OutsideCalls:
    """Counts of training-mode layer calls that no gradient tape recorded, per layer."""

    def __init__(self, publish: Callable[[list[dict[str, Any]]], None], step: Callable[[], int | None]) -> None:
        self._publish = publish
        self._step = step
        self._lock = threading.Lock()
        self._eager: dict[str, list[Any]] = {}  # layer -> [calls, first_step]
        self._graph: dict[str, list[Any]] = {}  # layer -> [counter variable, first_step]

    def see(self, name: str, training: Any, tape_active: bool) -> None:
        """A tracked layer's call resolved ``training``; ``tape_active``: a tape recorded it."""
        if tape_active or training is None or training is False:
            return
        import tensorflow as tf

        if not tf.executing_eagerly() and _saving():
            return  # a SavedModel export traces the layers' calls: no op of ours may be saved with them
        if tf.is_tensor(training) and not tf.executing_eagerly():
            self._in_graph(name, tf.cast(tf.reshape(training, []), tf.int64))
            return
        if tf.is_tensor(training) and tf.executing_eagerly():
            training = bool(training.numpy())
        if not training:
            return
        if not tf.executing_eagerly():
            self._in_graph(name, tf.constant(1, tf.int64))
            return
        with self._lock:
            row = self._eager.get(name)
            if row is None:
                if len(self._eager) + len(self._graph) >= MAX_LAYERS:
                    return
                row = self._eager[name] = [0, self._step()]
            row[0] += 1

    def _in_graph(self, name: str, amount: Any) -> None:
        from gradtrace._ring import side_variable

        with self._lock:
            row = self._graph.get(name)
            if row is None:
                if len(self._eager) + len(self._graph) >= MAX_LAYERS:
                    return
                import numpy as np

                # A numpy initial value: a tensor made here would belong to the graph being traced.
                row = self._graph[name] = [side_variable(np.int64(0), "gradtrace_outside"), self._step()]
        row[0].assign_add(amount)

    def rows(self) -> list[dict[str, Any]]:
        """What ran so far, eager rows first, each layer's calls > 0 only."""
        with self._lock:
            eager = [(n, int(r[0]), r[1], "eager") for n, r in self._eager.items()]
            graph = [(n, r[0], r[1], "graph") for n, r in self._graph.items()]
        out = [{"layer": n, "calls": c, "first_step": s, "how": how} for n, c, s, how in eager if c]
        for n, var, s, how in graph:
            c = int(var.numpy())
            if c:
                out.append({"layer": n, "calls": c, "first_step": s, "how": how})
        return out

    def publish(self) -> None:
        """Hand the rows to the run (once at the end; nothing when nothing ran outside)."""
        rows = self.rows()
        if rows:
            self._publish(rows)
