"""Realistic batches for server tests: what the tracer ships for an MLP, with exploding steps."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
from gradtrace import schema


def make_batches(
    run_id: str,
    *,
    name: str = "fit",
    project: str = "default",
    n_steps: int = 30,
    n_vars: int = 4,
    per_batch: int = 10,
    seed: int = 0,
    status_at_end: str = "finished",
    started_at: datetime | None = None,
) -> list[schema.Batch]:
    """Batches of one run: stats drawn from a seeded RNG, step 7 non-finite (NaN loss, Inf norm)."""
    rng = np.random.default_rng(seed)
    started = started_at or datetime.now(timezone.utc)
    shapes = [[8, 16], [16], [16, 2], [2]] * (n_vars // 4 + 1)
    variables = [
        schema.VariableInfo(
            index=i, name=f"dense_{i // 2}/{'kernel' if i % 2 == 0 else 'bias'}", shape=shapes[i],
            layer=f"dense_{i // 2}", layer_class="Dense", layer_index=i // 2,
            struct_key=f"{i // 2}:Dense/{'kernel' if i % 2 == 0 else 'bias'}{shapes[i]}",
        )
        for i in range(n_vars)
    ]
    layers = [
        schema.LayerInfo(index=j, name=f"dense_{j}", class_name="Dense", struct_key=f"{j}:Dense")
        for j in range((n_vars + 1) // 2)
    ]
    batches = []
    n_batches = math.ceil(n_steps / per_batch)
    for b in range(n_batches):
        last = b == n_batches - 1
        steps = []
        for s in range(b * per_batch, min(n_steps, (b + 1) * per_batch)):
            loss = float(rng.uniform(0.1, 2.0))
            vars_: list[schema.VarStep] = []
            for v in range(n_vars):
                norm = float(rng.lognormal())
                vars_.append(
                    schema.VarStep(
                        v=v, norm=math.inf if s == 7 and v == 0 else norm,
                        mean=float(rng.normal()), min=float(-norm), max=float(norm),
                        nonfinite=3 if s == 7 and v == 0 else 0,
                        sketch=[float(x) for x in rng.normal(size=4).astype(np.float32)],
                        applied=True, update_norm=float(norm * 1e-3), weight_norm=float(rng.uniform(1, 5)),
                    )
                )
            steps.append(
                schema.StepRecord(
                    step=s, wall_time=1_700_000_000.0 + s, mode="tf.function",
                    loss=math.nan if s == 7 else loss, target_shape=[], batch_size=32,
                    lr=1e-3, iterations=s + 1, x_fp=[float(rng.normal()), 1.0], modes={"dropout": True},
                    vars=vars_,
                    state=[schema.StateStep(v=n_vars, changed=True, delta_norm=-math.inf if s == 7 else 0.1)],
                )
            )
        run = schema.RunInfo(
            run_id=run_id, name=name, project=project, revision=b,
            status=status_at_end if last else "running",  # type: ignore[arg-type]
            started_at=started, ended_at=started + timedelta(seconds=n_steps) if last else None,
            keras_flavour="keras3", execution_mode="tf.function", variables=variables, layers=layers,
            optimizer={"class": "Adam", "config": {"learning_rate": 1e-3, "epsilon": 1e-7}},
            loss={"class": "MeanSquaredError", "reduction": "sum_over_batch_size"},
        )
        batches.append(schema.Batch(batch_id=f"{run_id}-b{b}", run=run, steps=steps))
    return batches


def normalise(obj: Any) -> Any:
    """JSON-ish value with non-finite floats as the API's strings, for NaN-aware equality."""
    from gradtrace_server._json import jsonable

    return jsonable(obj)
