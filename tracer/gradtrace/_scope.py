"""What the current optimizer step carries besides its gradients.

Hooks that run before the optimizer step (a layer's ``call``, a Keras loss,
``train_step``) *put* values here; the optimizer hook *takes* them when it builds
the step's statistics vector. Inside ``tf.function``/XLA the hooks run once per
trace, so a value is a tensor of the graph being traced (it becomes part of the
step's vector and is read back every step) and a static fact is a Python value
fixed for that trace (it becomes part of the trace's layout).

Scopes are per thread and per graph: a value put while tracing one function is
never taken by another, and eager work is its own graph.

Contract (both sides rely on it):
- ``current()`` returns the calling thread's scope for the graph being built now
  (or for eager execution); it never imports TensorFlow at module import.
- ``put(key, value)``: a float tensor (any shape, flattened) or a Python number.
  Putting the same key again in the same step replaces it.
- ``put_static(key, value)``: a JSON-able Python value.
- ``put_default(key, make)``: ``make()`` builds the value at ``take()`` if nothing was
  put under ``key`` by then (a fallback that costs nothing when it is not needed).
- ``marks``: a set the putters may use to remember what they put in this step.
- ``take()`` returns ``(values, statics)`` and clears the scope (marks too).
- The host turns the read-back ``values`` (``dict[str, numpy.ndarray]``) and the
  ``statics`` into ``StepRecord`` fields with ``gradtrace._probes.decode_block``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_local = threading.local()


def _graph_key() -> object:
    import tensorflow as tf

    if tf.executing_eagerly():
        return "eager"
    return tf.compat.v1.get_default_graph()


class StepScope:
    """Values and facts collected for the next optimizer step of one graph."""

    __slots__ = ("values", "statics", "defaults", "marks")

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.statics: dict[str, Any] = {}
        self.defaults: dict[str, Callable[[], Any]] = {}
        self.marks: set[str] = set()  # the putters' own notes for this step (not recorded)

    def put(self, key: str, value: Any) -> None:
        self.values[key] = value

    def put_static(self, key: str, value: Any) -> None:
        self.statics[key] = value

    def put_default(self, key: str, make: Callable[[], Any]) -> None:
        self.defaults[key] = make

    def take(self) -> tuple[dict[str, Any], dict[str, Any]]:
        values, statics, defaults = self.values, self.statics, self.defaults
        self.values, self.statics, self.defaults, self.marks = {}, {}, {}, set()
        for key, make in defaults.items():
            if key not in values:
                value = make()
                if value is not None:
                    values[key] = value
        return values, statics


def current() -> StepScope:
    """The calling thread's scope for the graph being built (or eager)."""
    scopes: dict[object, StepScope] | None = getattr(_local, "scopes", None)
    if scopes is None:
        scopes = _local.scopes = {}
    key = _graph_key()
    scope = scopes.get(key)
    if scope is None:
        # Graphs come and go (every trace is a new FuncGraph); keep the dict small.
        if len(scopes) > 64:
            scopes.clear()
        scope = scopes[key] = StepScope()
    return scope


def reset() -> None:
    """Forget every scope of the calling thread (on leaving a trace)."""
    _local.scopes = {}
