"""The record format: what the tracer ships and what every store ingests.

One schema, shared by the tracer's sinks (SQLite file, HTTP) and the server's
``POST /api/v1/ingest``, so the two cannot drift.

A :class:`Batch` carries the run's metadata (:class:`RunInfo`, re-sent with every
batch; the store keeps the copy with the highest ``revision``), a list of
:class:`StepRecord` (one per optimizer step) and optional full tensors. Batches
are idempotent by ``batch_id``: a store acknowledges a batch it has seen and
stores nothing twice.

Non-finite floats are data. In JSON they are encoded as the strings ``"NaN"``,
``"Infinity"`` and ``"-Infinity"`` (both directions; see :func:`dumps`).

Example::

    >>> from gradtrace.schema import Batch, RunInfo, StepRecord, VarStep
    >>> b = Batch(batch_id="b1", run=RunInfo(run_id="r1", name="demo"),
    ...           steps=[StepRecord(step=0, loss=float("nan"),
    ...                             vars=[VarStep(v=0, grad=True, norm=float("inf"))])])
    >>> Batch.model_validate_json(dumps(b)).steps[0].vars[0].norm
    inf
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

# Hard limits, enforced at validation so a bad client gets a 4xx naming the field.
MAX_NAME = 200
MAX_STEPS_PER_BATCH = 10_000
MAX_VARS = 100_000
MAX_SKETCH = 256

Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
Dim = int | None
Shape = list[Dim]
Status = Literal["running", "finished", "failed"]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        ser_json_inf_nan="strings",
        allow_inf_nan=True,
    )


class VariableInfo(_Model):
    """One variable of the traced model(s), in structural order.

    ``index`` is the variable's position in the run's inventory: models are
    walked depth-first in layer order and each layer's variables in creation
    order, so two runs of the same architecture give the same index to the same
    variable even when TensorFlow named them differently (``dense_3/kernel`` vs
    ``dense_7/kernel``). ``struct_key`` repeats that position in a readable form
    (``"2:Dense/kernel[128,10]"``) that the comparator aligns on.
    """

    index: int = Field(ge=0)
    name: Annotated[str, Field(max_length=1000)]
    path: Annotated[str, Field(max_length=1000)] | None = None
    shape: Shape = Field(default_factory=list)
    dtype: str = "float32"
    trainable: bool = True
    layer: Annotated[str, Field(max_length=1000)] | None = None
    layer_class: str | None = None
    layer_index: int | None = None
    struct_key: Annotated[str, Field(max_length=1000)] | None = None


class LayerInfo(_Model):
    """A layer of the traced model(s), in the same depth-first order."""

    index: int = Field(ge=0)
    name: Annotated[str, Field(max_length=1000)]
    class_name: str
    training_dependent: bool = False  # its call() takes a `training` argument
    struct_key: Annotated[str, Field(max_length=1000)] | None = None


class RunInfo(_Model):
    """Metadata of one run. Re-sent with every batch; highest ``revision`` wins."""

    run_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    name: Name
    project: Name = "default"
    revision: int = Field(default=0, ge=0)
    status: Status = "running"
    started_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    ended_at: datetime | None = None
    error: str | None = None  # exception type (and message) when status == "failed"
    host: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    keras_flavour: Literal["keras3", "tf_keras"] | None = None
    execution_mode: str | None = None  # "eager" | "tf.function" | "xla" | "mixed"
    dtype_policy: str | None = None
    strategy: str | None = None
    replicas: int | None = None
    variables: list[VariableInfo] = Field(default_factory=list, max_length=MAX_VARS)
    layers: list[LayerInfo] = Field(default_factory=list, max_length=MAX_VARS)
    optimizer: dict[str, Any] | None = None  # {"class": ..., "config": {...}}
    loss: dict[str, Any] | None = None  # {"class", "name", "reduction", "from_logits"}
    metrics: list[dict[str, Any]] = Field(default_factory=list)  # [{"name", "class"}]
    fit: dict[str, Any] | None = None  # class_weight, callbacks, epochs, jit_compile, ...
    init_fingerprint: str | None = None
    seeds: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    partial: bool = False  # a tracer failure left the trace incomplete
    lost: dict[str, int] = Field(default_factory=dict)  # records lost, by reason
    extra: dict[str, Any] = Field(default_factory=dict)


class VarStep(_Model):
    """One trainable variable at one optimizer step."""

    v: int = Field(ge=0)  # VariableInfo.index
    grad: bool = True  # a gradient (not None) reached the optimizer
    norm: float | None = None  # L2 norm of the gradient (sparse-aware)
    mean: float | None = None
    min: float | None = None
    max: float | None = None
    nonfinite: int | None = None  # count of NaN/Inf entries in the gradient
    sketch: list[float] | None = Field(default=None, max_length=MAX_SKETCH)
    applied: bool | None = None  # the weight changed in this step
    update_norm: float | None = None  # ||w_after - w_before||
    weight_norm: float | None = None  # ||w_after||


class StateStep(_Model):
    """One non-trainable variable at one optimizer step."""

    v: int = Field(ge=0)
    changed: bool
    delta_norm: float | None = None
    rng: bool = False  # RNG state (e.g. a SeedGenerator): changes are expected


class LossInfo(_Model):
    """What the step's loss looked like where a Keras loss object computed it."""

    cls: str | None = None
    name: str | None = None
    reduction: str | None = None
    from_logits: bool | None = None
    y_true_shape: Shape | None = None
    y_pred_shape: Shape | None = None
    sample_weight: bool = False
    per_sample_mean: float | None = None
    per_sample_min: float | None = None
    per_sample_max: float | None = None
    per_sample_count: int | None = None
    # The loss's denominators: sum, non-zero count and size of the sample weights; the
    # mask's valid entries and size (a Keras loss divides by those, hand-written ones vary).
    weight_sum: float | None = None
    weight_nonzero: int | None = None
    weight_count: int | None = None
    mask_valid: int | None = None
    mask_count: int | None = None


class Broadcast(_Model):
    """An elementwise op in the loss that broadcast two shapes into a larger one."""

    op: str
    a_shape: Shape
    b_shape: Shape
    out_shape: Shape


class StepRecord(_Model):
    """One optimizer step (one ``apply``/``apply_gradients`` call), numbered from 0."""

    step: int = Field(ge=0)
    wall_time: float | None = None
    mode: str | None = None  # "eager" | "tf.function" | "xla"
    loss: float | None = None  # the value handed to tape.gradient (summed if non-scalar)
    target_shape: Shape | None = None  # shape of the tensor handed to tape.gradient
    loss_scale: float | None = None  # mixed precision: the scale the target carried
    skipped: bool | None = None  # the optimizer skipped this step (overflow, accumulation)
    reg_loss: float | None = None  # sum(model.losses) when the model has any
    loss_info: LossInfo | None = None
    broadcasts: list[Broadcast] = Field(default_factory=list)
    y_pred_shape: Shape | None = None  # the model output that reached the loss
    batch_size: int | None = None
    x_fp: list[float] | None = Field(default=None, max_length=16)  # input fingerprint
    y_fp: list[float] | None = Field(default=None, max_length=16)  # label fingerprint
    lr: float | None = None
    iterations: int | None = None  # optimizer.iterations after the step
    modes: dict[str, bool | None] = Field(default_factory=dict)  # layer name -> training
    # training-dependent layers that ran with trainable=False (BatchNormalization then
    # runs in inference mode whatever `training` says)
    frozen: list[str] = Field(default_factory=list)
    vars: list[VarStep] = Field(default_factory=list, max_length=MAX_VARS)
    state: list[StateStep] = Field(default_factory=list, max_length=MAX_VARS)
    # Set on steps between two full ones: how many variables had a gradient. ``vars``
    # then lists only the exceptions (variables without one); nothing was measured.
    n_grad: int | None = Field(default=None, ge=0)


class TensorRecord(_Model):
    """A full tensor at one step (``full_tensors_every=N``)."""

    step: int = Field(ge=0)
    v: int = Field(ge=0)
    kind: Literal["grad", "weight"]
    shape: list[int]
    dtype: Literal["float32"] = "float32"
    data: str  # base64 of little-endian float32, C order


class Batch(_Model):
    """The unit of shipping and of storing: all of it or nothing."""

    schema_version: Literal[1] = SCHEMA_VERSION
    batch_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    run: RunInfo
    steps: list[StepRecord] = Field(default_factory=list, max_length=MAX_STEPS_PER_BATCH)
    tensors: list[TensorRecord] = Field(default_factory=list, max_length=10_000)


def dumps(model: BaseModel) -> str:
    """Serialise a schema object to JSON, non-finite floats as strings."""
    return model.model_dump_json()


def finite_or_none(x: float | None) -> float | None:
    """``x`` if it is a finite float, else None (for places that cannot hold NaN)."""
    if x is None or not math.isfinite(x):
        return None
    return x


__all__ = [
    "SCHEMA_VERSION",
    "Batch",
    "Broadcast",
    "LayerInfo",
    "LossInfo",
    "RunInfo",
    "StateStep",
    "StepRecord",
    "TensorRecord",
    "VarStep",
    "VariableInfo",
    "dumps",
]
