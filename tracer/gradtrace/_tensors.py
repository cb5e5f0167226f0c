"""Full gradient and weight tensors at chosen steps (``full_tensors_every=N``).

Every N-th optimizer step of the run (steps 0, N, 2N, ...) the full gradient
and the full weight after the update of every trainable variable of the step
are shipped as :class:`~gradtrace.schema.TensorRecord` (float32, C order).

Inside ``tf.function``/XLA the optimizer hook runs once per trace, so the copy
is made by graph ops: at trace time a *bank* is created per step signature (the
variables of the step and which of them have a gradient), a ``[K, width]``
float32 ring (:class:`gradtrace._ring.Ring`) whose row holds, after a three
number header (write index, step number), every gradient (densified when it is
an ``IndexedSlices``) then every weight, flattened. The step writes a row only
when ``step mod N == 0`` (a ``tf.cond`` on the run's step counter), with one
``scatter_nd_update`` so the row is never seen half written, and the host
poller reads the rings. A row overwritten before the host read it is counted
in ``RunInfo.lost["full_tensors_overrun"]``, never silently missing.

With ``full_tensors_every == 0`` (the default) :func:`capture` returns before
touching TensorFlow: no variable and no op is added to any step.
"""

from __future__ import annotations

import base64
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gradtrace import schema

if TYPE_CHECKING:
    from gradtrace._hooks import _StepCtx
    from gradtrace._ring import Ring
    from gradtrace._trace import Run

logger = logging.getLogger("gradtrace.tensors")

BANK_BYTES = 64 * 2**20
"""Memory a bank's ring may take; it holds up to :data:`MAX_SLOTS` copies within it (at least one)."""
MAX_SLOTS = 4
_STEP = 2  # columns 0-1: the row id (gradtrace._ring.Ring.claim); 2-3: the step number, an int64 bitcast
_HEADER = 4


@dataclass(frozen=True)
class _Part:
    """One tensor inside a bank row."""

    v: int
    kind: str  # "grad" | "weight"
    shape: tuple[int, ...]
    offset: int
    size: int


class _Bank:
    """The ring of full-tensor rows of one step signature, and what each row holds."""

    def __init__(self, ring: Ring, parts: list[_Part]) -> None:
        self.ring = ring
        self.parts = parts


class FullTensors:
    """A run's full-tensor capture: graph side (:meth:`capture`) and host side (:meth:`drain`)."""

    def __init__(self, every: int, bank_bytes: int | None = None) -> None:
        if every < 1:
            raise ValueError(f"full_tensors_every must be >= 1, got {every}")
        self.every = int(every)
        self.bank_bytes = int(BANK_BYTES if bank_bytes is None else bank_bytes)
        self._banks: dict[tuple[Any, ...], _Bank] = {}
        self._lock = threading.Lock()  # bank creation (training threads)
        self._drain_lock = threading.Lock()  # host reads (poller, flush, finish)

    # -- graph side ----------------------------------------------------------------------

    def _bank(self, key: tuple[Any, ...], parts: list[_Part], width: int) -> _Bank:
        from gradtrace._ring import Ring
        from gradtrace._stats import Layout

        with self._lock:
            bank = self._banks.get(key)
            if bank is None:
                slots = int(np.clip(self.bank_bytes // max(4 * width, 1), 1, MAX_SLOTS))
                # Ring only uses the layout's width; the bank keeps its own meaning of the row.
                bank = _Bank(Ring(Layout(width=width, mode="full_tensors"), slots), parts)
                self._banks[key] = bank
        return bank

    def capture(self, run: Run, ctx: _StepCtx) -> None:
        """Add the ops that copy this step's gradients and updated weights on chosen steps.

        Called at the end of the optimizer hook, after the step's statistics writer
        claimed the step number (``run.seq`` was incremented), so this step is
        ``run.seq - 1``. Reads of the weights are ordered after the optimizer's
        assignments by automatic control dependencies (same resource).
        """
        import tensorflow as tf

        from gradtrace._hooks import tf_variable
        from gradtrace._stats import cond, dense_grad

        indices = [run.var_index(v) for v in ctx.vars]
        shapes = [tuple(int(d) for d in tf_variable(v).shape) for v in ctx.vars]
        parts: list[_Part] = []
        pos = _HEADER
        for idx, shape, has in zip(indices, shapes, ctx.has_grad, strict=True):
            if has:
                n = int(np.prod(shape, dtype=np.int64))
                parts.append(_Part(idx, "grad", shape, pos, n))
                pos += n
        for idx, shape in zip(indices, shapes, strict=True):
            n = int(np.prod(shape, dtype=np.int64))
            parts.append(_Part(idx, "weight", shape, pos, n))
            pos += n
        key = (tuple(indices), tuple(ctx.has_grad), tuple(shapes))
        bank = self._bank(key, parts, pos)
        ring = bank.ring
        every = self.every
        grads = [(g, list(s)) for g, s, h in zip(ctx.grads, shapes, ctx.has_grad, strict=True) if h]
        weights = [tf_variable(v) for v in ctx.vars]

        def write() -> Any:
            row_id, slot = ring.claim()
            flat = [tf.reshape(tf.cast(dense_grad(g, s), tf.float32), [-1]) for g, s in grads]
            flat += [tf.reshape(tf.cast(w.read_value(), tf.float32), [-1]) for w in weights]
            row = tf.concat([row_id, tf.bitcast(tf.cast(step, tf.int64), tf.float32), *flat], axis=0)
            ring.put(slot, row)
            return tf.constant(True)

        if tf.executing_eagerly():
            step = int(run.seq.numpy()) - 1
            if step % every == 0:
                write()
            return
        step = run.seq.read_value() - 1
        cond(tf.equal(tf.math.floormod(step, every), 0), write, lambda: tf.constant(False))

    # -- host side -----------------------------------------------------------------------

    def drain(self) -> tuple[list[schema.TensorRecord], int]:
        """Tensors written since the last drain, and how many rows were overwritten unread."""
        from gradtrace._stats import int_column

        records: list[schema.TensorRecord] = []
        lost = 0
        with self._drain_lock:
            with self._lock:
                banks = list(self._banks.values())
            for bank in banks:
                rows, n_lost = bank.ring.drain()
                lost += n_lost
                steps = int_column(np.stack(rows), _STEP).tolist() if rows else []
                for row, step in zip(rows, steps, strict=True):
                    records.extend(_records(step, row, bank.parts))
        return records, lost

    @property
    def banks(self) -> int:
        """Number of step signatures seen so far."""
        return len(self._banks)


def _records(step: int, row: np.ndarray, parts: list[_Part]) -> list[schema.TensorRecord]:
    out = []
    for p in parts:
        data = np.ascontiguousarray(row[p.offset : p.offset + p.size], dtype="<f4").tobytes()
        out.append(
            schema.TensorRecord(
                step=step,
                v=p.v,
                kind=p.kind,
                shape=list(p.shape),  # type: ignore[arg-type]
                data=base64.b64encode(data).decode("ascii"),
            )
        )
    return out


def for_run(config: Any) -> FullTensors | None:
    """The capture for a run's configuration, or None when ``full_tensors_every`` is 0."""
    every = int(getattr(config, "full_tensors_every", 0) or 0)
    return FullTensors(every) if every > 0 else None


def capture(run: Run, ctx: _StepCtx) -> None:
    """The optimizer hook's entry point: nothing at all unless the run asked for full tensors."""
    ft = run.full_tensors
    if ft is not None:
        ft.capture(run, ctx)


def decode(record: schema.TensorRecord) -> np.ndarray:
    """A :class:`~gradtrace.schema.TensorRecord`'s data as a float32 array of its shape."""
    return np.frombuffer(base64.b64decode(record.data), dtype="<f4").reshape(record.shape)


__all__ = ["BANK_BYTES", "FullTensors", "capture", "decode", "for_run"]
