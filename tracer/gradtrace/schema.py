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

Schema versions. Version 1 sends a step's variables as a list of objects
(``"vars": [{"v": 0, "norm": 1.5, ...}, ...]``). Version 2, what :func:`dumps`
writes, sends them as one list per field (``"vars": {"v": [0, 1], "norm": [1.5,
0.2]}``, see :class:`VarColumns`; likewise ``state``, see :class:`StateColumns`):
a third of the bytes, and validating a step's few lists instead of one object per
variable is ten times cheaper. Both versions are read (a spool written before
version 2 stays readable); a batch declaring version 1 must use the list form.
``dumps(obj, version=1)`` writes version 1 for a server that reads only that.

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
import operator
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import Annotated, Any, ClassVar, Literal, overload

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FieldSerializationInfo,
    PlainValidator,
    TypeAdapter,
    field_serializer,
    model_validator,
)

SCHEMA_VERSION = 2
#: The versions this module reads (and :func:`dumps` can write).
SCHEMA_VERSIONS = (1, 2)

# Hard limits, enforced at validation so a bad client gets a 4xx naming the field.
MAX_NAME = 200
MAX_STEPS_PER_BATCH = 10_000
MAX_VARS = 100_000
MAX_SKETCH = 256
MAX_STEP = 2**31 - 1  # the stores' INTEGER step column
MAX_COUNT = 2**63 - 1  # the stores' BIGINT count columns

#: The layout of the batch fingerprints ``x_fp``/``y_fp`` (``gradtrace._probes.fingerprint``),
#: recorded in ``RunInfo.extra["fingerprint_version"]``. 2: a functional model's list of inputs is
#: taken by its Inputs' names, the labels of several outputs are fingerprinted leaf by leaf and
#: summed. 1 (runs without the key): structures concatenated in the order given.
FINGERPRINT_VERSION = 2

#: How the tracer's warning (in ``RunInfo.warnings``) for a run without any optimizer step
#: begins; the rest names what it does not see. The comparator quotes it as the reason.
NO_STEPS_WARNING = "no optimizer step was recorded. "

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


class DiscardedGradient(_Model):
    """A ``tape.gradient`` call with respect to trainable variables, traced into a training
    step's ``tf.function``, whose gradients nothing in the step uses: no optimizer applies them,
    no sum handed to one depends on them, no variable is assigned from them, the function does
    not return them (``g2 = tape.gradient(loss2, vars)`` next to the applied ``g1``)."""

    variables: list[int] = Field(default_factory=list, max_length=MAX_VARS)  # VariableInfo indices
    target_shape: list[int | None] | None = None  # of the tensor differentiated ([] for a scalar loss)
    step: int | None = Field(default=None, ge=0, le=MAX_STEP)  # the step counter when it was traced


class MisappliedGradient(_Model):
    """A gradient the optimizer was handed with another variable than the one
    ``tape.gradient`` computed it for: ``zip(grads, vars_b)`` with ``vars_b`` the
    differentiated variables in another order (equal shapes, so TensorFlow trains on)."""

    applied_to: int = Field(ge=0, lt=MAX_VARS)  # VariableInfo.index of the variable it updated
    computed_for: int = Field(ge=0, lt=MAX_VARS)  # VariableInfo.index of the source it is the gradient of
    step: int | None = Field(default=None, ge=0, le=MAX_STEP)  # the first optimizer step it was seen at
    mode: str | None = None  # "eager" | "tf.function" | "xla"
    # "identical": the tape's output object itself; "derived": a copy of it only rescaled,
    # clipped, cast or copied on the way (followed op by op inside a tf.function)
    via: Literal["identical", "derived"] = "identical"


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
    # LayerInfo.index (as text) -> the layer's get_config() without names, dtypes and
    # initializers, for layers without sublayers (what the comparator diffs).
    layer_configs: dict[str, dict[str, Any]] = Field(default_factory=dict, max_length=MAX_VARS)
    optimizer: dict[str, Any] | None = None  # {"class": ..., "config": {...}}: the first one to step
    # Every optimizer that stepped (GANs, per-submodel optimizers), in order of first step:
    # the same description plus "variables", the inventory indices it stepped.
    optimizers: list[dict[str, Any]] = Field(default_factory=list, max_length=64)
    loss: dict[str, Any] | None = None  # {"class", "name", "reduction", "from_logits"}
    metrics: list[dict[str, Any]] = Field(default_factory=list)  # [{"name", "class"}]
    fit: dict[str, Any] | None = None  # the last fit() call: class_weight, callbacks, epochs, jit_compile, ...
    # every fit() call of the run in order (the first 32), each as ``fit`` plus "first_step"
    fit_calls: list[dict[str, Any]] = Field(default_factory=list)
    # Trainability changed after registration (VariableInfo.trainable): a layer frozen or
    # unfrozen between fit() calls ("at": "fit") or by the run's end ("at": "end"), each as
    # {"at", "step": the next step's number, "trainable": [index, ...], "frozen": [index, ...]}.
    trainable_changes: list[dict[str, Any]] = Field(default_factory=list)
    # Weights overwritten outside the optimizer's steps (the first 32 times), each as
    # {"how": "set_weights" | "load_weights" | "ema", "step": the next step's number, "by": the
    # Keras callback ("EarlyStopping") or "fit" that did it, None for the script itself,
    # "variables": [index, ...] of the inventory}. "ema": an optimizer with use_ema wrote its
    # moving average of the weights into the model (fit() does when it ends).
    weight_writes: list[dict[str, Any]] = Field(default_factory=list)
    # Train/inference-dependent layers that ran with training=True while no gradient tape
    # recorded (outside the optimizer steps: a validation pass model(x, training=True), a
    # BatchNormalization hard-wired to training=True run by evaluate/predict), each as
    # {"layer": tracked name, "calls": n, "first_step": the next step's number at the first
    # (for a graph, at its first trace), "how": "eager" | "graph", "model": the registration
    # position of the root model holding the layer}. See gradtrace._outside.
    training_outside_steps: list[dict[str, Any]] = Field(default_factory=list)
    # Registered root models none of whose variables an optimizer of the run was given (a
    # mean teacher or a target network updated by assign, a frozen teacher), each as
    # {"model": registration position (training_outside_steps rows' "model"), "name",
    # "variables": their inventory indices}.
    untrained_models: list[dict[str, Any]] = Field(default_factory=list)
    # Tracked layer name (as in StepRecord.layer_modes and training_outside_steps) -> the
    # registration position of the root model holding it: which layers are a teacher's.
    layer_models: dict[str, int] = Field(default_factory=dict)
    init_fingerprint: str | None = None  # "<count>:<hash>" over every variable, in registration order
    # Per variable, by VariableInfo.index: a 16-hex fingerprint of its initial value (None
    # where none was taken). The comparator decides "same start" on the trainable weights
    # it pairs by structure; non-trainable state (a Dropout's RNG seed) may differ.
    init_fingerprints: list[str | None] = Field(default_factory=list)
    seeds: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    # gradients applied to another variable than the one they were computed for (runs
    # recorded before this field read as an empty list)
    misapplied_gradients: list[MisappliedGradient] = Field(default_factory=list, max_length=MAX_VARS)
    # VariableInfo indices of variables for which tape.gradient returned None while the
    # optimizer was handed a tensor for them (zeros put in place of None: a tf.stop_gradient
    # or another cut between them and the loss, hidden from Keras' warning)
    replaced_none_gradients: list[int] = Field(default_factory=list, max_length=MAX_VARS)
    # tape.gradient calls of a traced training step whose gradients nothing uses (runs
    # recorded before this field read as an empty list)
    discarded_gradients: list[DiscardedGradient] = Field(default_factory=list, max_length=64)
    partial: bool = False  # a tracer failure left the trace incomplete
    lost: dict[str, int] = Field(default_factory=dict)  # records lost, by reason
    extra: dict[str, Any] = Field(default_factory=dict)


class VarStep(_Model):
    """One trainable variable at one optimizer step."""

    v: int = Field(ge=0, lt=MAX_VARS)  # VariableInfo.index
    # A gradient (not None) reached the optimizer, or the step's tape computed one for a
    # trainable variable left out of the optimizer call (its weight then does not change).
    grad: bool = True
    norm: float | None = None  # L2 norm of the gradient (sparse-aware)
    mean: float | None = None
    min: float | None = None
    max: float | None = None
    nonfinite: int | None = Field(default=None, ge=0, le=MAX_COUNT)  # count of NaN/Inf entries in the gradient
    sketch: list[float] | None = Field(default=None, max_length=MAX_SKETCH)
    applied: bool | None = None  # the weight changed in this step
    update_norm: float | None = None  # ||w_after - w_before||
    weight_norm: float | None = None  # ||w_after||


class StateStep(_Model):
    """One non-trainable variable at one optimizer step."""

    v: int = Field(ge=0, lt=MAX_VARS)
    changed: bool
    delta_norm: float | None = None
    rng: bool = False  # RNG state (e.g. a SeedGenerator): changes are expected


class _Columns(_Model):
    """Records of one kind as one list per field (the wire form of schema version 2).

    ``v`` lists the variables; every other field either is absent (each record has
    the field's default) or has one entry per variable. Reading it as a sequence
    gives the records (built on access; the store reads the lists directly).
    """

    row_model: ClassVar[type[_Model]]
    _fields: ClassVar[tuple[str, ...]]
    _defaults: ClassVar[dict[str, Any]]
    v: list[Annotated[int, Field(ge=0, lt=MAX_VARS)]] = Field(max_length=MAX_VARS)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        row = cls.__dict__.get("row_model")
        if row is not None:
            cls._fields = tuple(row.model_fields)
            cls._defaults = {
                n: f.default for n, f in row.model_fields.items() if not f.is_required()
            }

    @model_validator(mode="after")
    def _same_lengths(self) -> _Columns:
        n = len(self.v)
        for name in self._fields:
            col = self.__dict__[name]
            if col is not None and len(col) != n:
                raise ValueError(f"{name}: {len(col)} values for {n} variables (v)")
        return self

    @classmethod
    def from_rows(cls, rows: Sequence[_Model]) -> dict[str, list[Any]]:
        """The column form of ``rows``, as a plain dict; a column whose every entry
        is the field's default is left out."""
        get = operator.attrgetter(*cls._fields)
        out: dict[str, list[Any]] = {}
        defaults = cls._defaults
        for name, col in zip(cls._fields, zip(*map(get, rows), strict=True), strict=True):
            if name in defaults:
                d = defaults[name]
                if col.count(d) == len(col):  # d is None, True or False
                    continue
            out[name] = list(col)
        return out

    def column(self, name: str) -> list[Any] | None:
        """The values of field ``name``, or None when every record has its default."""
        col: list[Any] | None = self.__dict__[name]
        return col

    def rows(self) -> list[Any]:
        """The records, built without validating again."""
        n = len(self.v)
        names = [f for f in self._fields if self.__dict__[f] is not None]
        construct = self.row_model.model_construct
        return [construct(**dict(zip(names, vals, strict=True))) for vals in
                zip(*(self.__dict__[f] for f in names), strict=True)] if n else []

    def __len__(self) -> int:
        return len(self.v)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return iter(self.rows())

    def __getitem__(self, i: int) -> Any:
        return self.rows()[i]


class VarColumns(_Columns):
    """The variables of one step as one list per :class:`VarStep` field (version 2)."""

    row_model: ClassVar[type[_Model]] = VarStep
    grad: list[bool] | None = None
    norm: list[float | None] | None = None
    mean: list[float | None] | None = None
    min: list[float | None] | None = None
    max: list[float | None] | None = None
    nonfinite: list[Annotated[int, Field(ge=0, le=MAX_COUNT)] | None] | None = None
    sketch: list[Annotated[list[float], Field(max_length=MAX_SKETCH)] | None] | None = None
    applied: list[bool | None] | None = None
    update_norm: list[float | None] | None = None
    weight_norm: list[float | None] | None = None

    def __iter__(self) -> Iterator[VarStep]:  # type: ignore[override]
        return iter(self.rows())

    @overload
    def __getitem__(self, i: int) -> VarStep: ...
    @overload
    def __getitem__(self, i: slice) -> list[VarStep]: ...
    def __getitem__(self, i: int | slice) -> VarStep | list[VarStep]:
        return self.rows()[i]  # type: ignore[no-any-return]


class StateColumns(_Columns):
    """The non-trainable variables of one step as one list per :class:`StateStep` field."""

    row_model: ClassVar[type[_Model]] = StateStep
    changed: list[bool]
    delta_norm: list[float | None] | None = None
    rng: list[bool] | None = None

    def __iter__(self) -> Iterator[StateStep]:  # type: ignore[override]
        return iter(self.rows())

    @overload
    def __getitem__(self, i: int) -> StateStep: ...
    @overload
    def __getitem__(self, i: slice) -> list[StateStep]: ...
    def __getitem__(self, i: int | slice) -> StateStep | list[StateStep]:
        return self.rows()[i]  # type: ignore[no-any-return]


for _cols in (VarColumns, StateColumns):  # one list per record field, no more, no less
    if set(_cols.model_fields) != set(_cols.row_model.model_fields):
        raise TypeError(f"{_cols.__name__} does not mirror {_cols.row_model.__name__}'s fields")


def _rows_or_columns(rows: TypeAdapter[Any], columns: type[_Columns]) -> Any:
    """Validator of a field holding records as a list (version 1) or as columns (2).

    Dispatching on the input's shape keeps error locations those of the form sent
    (``steps.1.vars.0.v`` or ``steps.1.vars.v.0``) rather than one per union member.
    """

    def validate(value: Any) -> Any:
        if isinstance(value, (dict, columns)):
            return columns.model_validate(value)
        return rows.validate_python(value)

    return validate


_VAR_ROWS: TypeAdapter[list[VarStep]] = TypeAdapter(
    Annotated[list[VarStep], Field(max_length=MAX_VARS)]
)
_STATE_ROWS: TypeAdapter[list[StateStep]] = TypeAdapter(
    Annotated[list[StateStep], Field(max_length=MAX_VARS)]
)
VarSteps = Annotated[
    list[VarStep] | VarColumns,
    PlainValidator(_rows_or_columns(_VAR_ROWS, VarColumns), json_schema_input_type=list[VarStep] | VarColumns),
]
StateSteps = Annotated[
    list[StateStep] | StateColumns,
    PlainValidator(_rows_or_columns(_STATE_ROWS, StateColumns), json_schema_input_type=list[StateStep] | StateColumns),
]


def _version(info: FieldSerializationInfo) -> int:
    ctx = info.context
    return int(ctx.get("schema_version", SCHEMA_VERSION)) if isinstance(ctx, dict) else SCHEMA_VERSION


class LossCall(_Model):
    """One Keras loss object called in a step: what it is and what it was given."""

    cls: str | None = None
    name: str | None = None
    reduction: str | None = None
    from_logits: bool | None = None
    # the loss function's scalar arguments (label_smoothing, delta, axis, ...), defaults included
    args: dict[str, bool | int | float | str | None] | None = Field(default=None, max_length=16)
    y_true_shape: Shape | None = None
    y_pred_shape: Shape | None = None
    sample_weight: bool = False
    # A Keras loss *function* called directly (``keras.losses.categorical_crossentropy(y, p)``):
    # its name (``cls`` is then the class wrapping the same function, ``reduction`` None: the
    # script reduces what it returns) and the shape it returned (per sample: ``(N,)``).
    function: str | None = None
    out_shape: Shape | None = None
    # Whether the value this call returned reaches the tensor handed to tape.gradient
    # (found inside a tf.function by following the graph; None eagerly or when unknown).
    in_target: bool | None = None
    # The call got the model's output as y_true and other data (the labels) as y_pred:
    # ``loss(pred, y)``, PyTorch's ``loss(input, target)`` order (True only; None otherwise).
    swapped: bool | None = None
    # What computed y_pred, read from the graph (None eagerly or when it is something else):
    # "softmax" / "sigmoid" (probabilities), "linear" (a Dense or convolution's output, logits), or
    # another activation bounded on one side or both ("relu", "relu6", "softplus", "exponential", "tanh").
    pred_activation: Literal["softmax", "sigmoid", "linear", "relu", "relu6", "softplus", "exponential",
                             "tanh"] | None = None
    # Eagerly, for a cross-entropy whose y_pred carries no Keras activation's logits (which Keras
    # itself would use): whether y_pred's values are probabilities (True: in [0, 1], rows summing
    # to 1 for a categorical loss), or not (False: values outside [0, 1], logits); None inside a
    # tf.function (``pred_activation`` says it there) or not measured. Measured on a loss's first call.
    pred_probabilities: bool | None = None
    # The root model whose output the loss took as its predictions (its registration position, as
    # ``RunInfo.untrained_models`` numbers them), when y_pred is that output itself and y_true is no
    # model's output (a loss between two models' outputs has no such side).
    pred_model: int | None = Field(default=None, ge=0)


class LossInfo(LossCall):
    """What the step's loss looked like where a Keras loss object or loss function computed it
    (the last one the step called; ``calls`` lists them all, in order, when it called several)."""

    calls: list[LossCall] | None = Field(default=None, max_length=32)
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
    # A loss function (which applies no mask) called on a model output that carries one: that
    # mask's valid entries and size (its reduction, written by the script, may count the padding).
    output_mask_valid: int | None = None
    output_mask_count: int | None = None


class Broadcast(_Model):
    """An elementwise op in the loss that broadcast two shapes into a larger one."""

    op: str
    a_shape: Shape
    b_shape: Shape
    out_shape: Shape


class StepRecord(_Model):
    """One optimizer step (one ``apply``/``apply_gradients`` call), numbered from 0."""

    step: int = Field(ge=0, le=MAX_STEP)
    wall_time: float | None = None
    mode: str | None = None  # "eager" | "tf.function" | "xla"
    loss: float | None = None  # the value handed to tape.gradient (summed if non-scalar)
    target_shape: Shape | None = None  # shape of the tensor handed to tape.gradient
    loss_scale: float | None = None  # mixed precision: the scale the target carried
    # a loss-scale optimizer skipped this step (its scaled gradients overflowed); a step that
    # only accumulates (gradient_accumulation_steps) shows as n_applied == 0 instead
    skipped: bool | None = None
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
    # A list of records (schema version 1) or columns (2); see the module docstring.
    vars: VarSteps = Field(default_factory=list)
    state: StateSteps = Field(default_factory=list)
    # Set on steps between two full ones: how many variables had a gradient. ``vars``
    # then lists only the exceptions (variables without one); nothing was measured.
    n_grad: int | None = Field(default=None, ge=0)

    @field_serializer("vars", "state")
    def _wire_form(self, value: Any, info: FieldSerializationInfo) -> Any:
        # JSON: version 2 sends columns, version 1 records; an empty list is the same in
        # both. model_dump() in Python mode gives records (dicts), whatever the form.
        if not info.mode_is_json():
            return value.rows() if isinstance(value, _Columns) else value
        if isinstance(value, _Columns):
            if _version(info) < 2:
                return value.rows()
            return {k: v for k, v in value.__dict__.items() if v is not None}
        if value and _version(info) >= 2:
            return (VarColumns if info.field_name == "vars" else StateColumns).from_rows(value)
        return value


class TensorRecord(_Model):
    """A full tensor at one step (``full_tensors_every=N``)."""

    step: int = Field(ge=0, le=MAX_STEP)
    v: int = Field(ge=0, lt=MAX_VARS)
    kind: Literal["grad", "weight"]
    shape: list[int]
    dtype: Literal["float32"] = "float32"
    data: str  # base64 of little-endian float32, C order


class Batch(_Model):
    """The unit of shipping and of storing: all of it or nothing."""

    schema_version: Literal[1, 2] = SCHEMA_VERSION
    batch_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    run: RunInfo
    steps: list[StepRecord] = Field(default_factory=list, max_length=MAX_STEPS_PER_BATCH)
    tensors: list[TensorRecord] = Field(default_factory=list, max_length=10_000)

    @model_validator(mode="after")
    def _version_form(self) -> Batch:
        if self.schema_version < 2:
            for i, rec in enumerate(self.steps):
                for name in ("vars", "state"):
                    if isinstance(getattr(rec, name), _Columns):
                        raise ValueError(
                            f"steps[{i}].{name}: columns need schema_version 2 (version 1 sends a list)"
                        )
        return self

    @field_serializer("schema_version", when_used="json")
    def _written_version(self, value: int, info: FieldSerializationInfo) -> int:
        return _version(info)  # dumps writes the version it is asked for


def dumps(model: BaseModel, version: int = SCHEMA_VERSION) -> str:
    """Serialise a schema object to JSON in schema ``version``, non-finite floats as strings."""
    if version not in SCHEMA_VERSIONS:
        raise ValueError(f"schema version {version}: this module writes {SCHEMA_VERSIONS}")
    return model.model_dump_json(context={"schema_version": version})


def finite_or_none(x: float | None) -> float | None:
    """``x`` if it is a finite float, else None (for places that cannot hold NaN)."""
    if x is None or not math.isfinite(x):
        return None
    return x


__all__ = [
    "SCHEMA_VERSION",
    "SCHEMA_VERSIONS",
    "Batch",
    "Broadcast",
    "LayerInfo",
    "LossCall",
    "LossInfo",
    "MisappliedGradient",
    "RunInfo",
    "StateColumns",
    "StateStep",
    "StateSteps",
    "StepRecord",
    "TensorRecord",
    "VarColumns",
    "VarStep",
    "VarSteps",
    "VariableInfo",
    "dumps",
]
