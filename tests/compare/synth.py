"""Synthetic runs built from schema records: detectors tested without TensorFlow or a database."""

from __future__ import annotations

from typing import Any

import numpy as np
from gradtrace.compare import data as _data
from gradtrace.compare.data import RunData
from gradtrace.schema import LayerInfo, RunInfo, StateStep, StepRecord, VariableInfo, VarStep

from_records = _data.from_records  # the reader tests swap it to capture the records

SHAPES = [[8, 4], [4], [4, 3], [3]]


def make_run(
    name: str,
    *,
    steps: int = 6,
    seed: int = 0,
    loss_factor: float = 1.0,
    grad_factors: list[float] | None = None,
    update_factor: float = 1.0,
    noise: float = 0.0,
    rotate: list[int] | None = None,
    data_seed: int = 0,
    init: str = "init-0",
    bn_training: bool | None = True,
    state_changes: bool = True,
    no_grad: list[int] | None = None,
    not_applied: list[int] | None = None,
    reg: float | None = None,
    reg_added: bool = False,
    meta: dict[str, Any] | None = None,
    step_extra: dict[str, Any] | None = None,
    name_offset: int = 0,
    diverge_at: int | None = None,
    nan_at: int | None = None,
    overflow_at: list[int] | None = None,
    stats_every: int | None = None,
) -> RunData:
    """A plausible run: losses decay, gradients shrink; knobs inject one difference each.

    ``overflow_at``: steps that dynamic loss scaling skipped (mixed precision): every
    gradient non-finite, nothing applied, ``skipped=True`` and the loss scale halved.
    """
    rng = np.random.default_rng(seed)
    ctx = np.random.default_rng(1234)  # shared between runs: the "true" trajectory
    base_sk = ctx.normal(size=(steps, len(SHAPES), 16))
    base_norm = ctx.uniform(0.5, 2.0, size=(steps, len(SHAPES)))
    base_loss = 2.3 * np.exp(-0.05 * np.arange(steps))
    drng = np.random.default_rng(100 + data_seed)
    fps = drng.normal(size=(steps, 4))
    gf = grad_factors or [loss_factor] * len(SHAPES)
    variables = [
        VariableInfo(index=i, name=f"dense_{i // 2 + name_offset}/{'kernel' if i % 2 == 0 else 'bias'}",
                     shape=s, layer=f"dense_{i // 2 + name_offset}", layer_class="Dense",
                     struct_key=f"{i // 2}:Dense/{'kernel' if i % 2 == 0 else 'bias'}{s}")
        for i, s in enumerate(SHAPES)
    ]
    variables += [
        VariableInfo(index=4, name=f"bn_{name_offset}/moving_mean", shape=[4], trainable=False,
                     layer=f"bn_{name_offset}", layer_class="BatchNormalization", struct_key="2:BN/mm[4]"),
        VariableInfo(index=5, name=f"drop_{name_offset}/seed", shape=[2], trainable=False, dtype="uint32",
                     layer=f"drop_{name_offset}", layer_class="Dropout", struct_key="3:Dropout/seed[2]"),
    ]
    layers = [
        LayerInfo(index=0, name=f"dense_{name_offset}", class_name="Dense", struct_key="0:Dense"),
        LayerInfo(index=1, name=f"dense_{1 + name_offset}", class_name="Dense", struct_key="1:Dense"),
        LayerInfo(index=2, name=f"bn_{name_offset}", class_name="BatchNormalization",
                  training_dependent=True, struct_key="2:BN"),
        LayerInfo(index=3, name=f"drop_{name_offset}", class_name="Dropout", training_dependent=True,
                  struct_key="3:Dropout"),
    ]
    kw: dict[str, Any] = {"optimizer": {"class": "SGD", "config": {"learning_rate": 0.1}}, **(meta or {})}
    info = RunInfo(run_id=f"r-{name}", name=name, project="t", variables=variables, layers=layers,
                   init_fingerprint=init, **kw)
    recs = []
    for k in range(steps):
        off = k >= diverge_at if diverge_at is not None else False
        loss = base_loss[k] * loss_factor * (1 + (0.3 if off else 0.0)) * (1 + noise * rng.normal())
        if reg_added and reg:
            loss += reg
        vs = []
        for i in range(len(SHAPES)):
            sk = base_sk[k, i].copy()
            if rotate and i in rotate:
                sk = sk + 0.8 * ctx.normal(size=16) if False else np.roll(sk, 3) * 0.5 + sk * 0.5
            nrm = base_norm[k, i] * gf[i] * (1 + noise * rng.normal()) * (1.3 if off else 1.0)
            g = not (no_grad and i in no_grad)
            app = g and not (not_applied and i in not_applied)
            nf = 0
            if nan_at is not None and k >= nan_at and i == 2:
                nrm, nf = float("nan"), 3
            if overflow_at and k in overflow_at:
                nrm, nf, app = float("inf"), 5, False
            vs.append(VarStep(v=i, grad=g, norm=nrm if g else None, sketch=(sk * gf[i]).tolist() if g else None,
                              applied=app, nonfinite=nf if g else None,
                              update_norm=(0.1 * nrm / gf[i] * update_factor) if app else 0.0,
                              weight_norm=1.0))
        if nan_at is not None and k >= nan_at:
            loss = float("nan")
        state = [StateStep(v=4, changed=bool(state_changes)), StateStep(v=5, changed=True, rng=True)]
        if stats_every and k >= 2 and k % stats_every:
            # the tracer's cadence: between two full steps only the gradient flags are recorded
            vs = [VarStep(v=x.v, grad=x.grad) for x in vs]
            state = []
        rec = dict(step=k, loss=loss, batch_size=32, y_pred_shape=[32, 3], x_fp=fps[k].tolist(),
                   y_fp=fps[k, :2].tolist(), lr=0.1, iterations=k + 1, mode="tf.function",
                   modes={f"bn_{name_offset}": bn_training, f"drop_{name_offset}": bn_training},
                   reg_loss=reg, vars=vs, state=state, target_shape=[])
        if overflow_at is not None:
            rec.update(skipped=k in overflow_at,
                       loss_scale=2.0 ** (15 - sum(1 for s in overflow_at if s <= k)))
        rec.update(step_extra or {})
        recs.append(StepRecord(**rec))
    return from_records(info, recs)
