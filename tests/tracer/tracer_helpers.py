"""Reference computations the tracer tests compare recorded values against."""

from __future__ import annotations

from typing import Any

import numpy as np


def data(n: int = 32, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    y = (x @ rng.normal(size=(d, 1)) + 0.1).astype("float32")
    return x, y


def grads_of(model: Any, x: np.ndarray, y: np.ndarray, training: bool = True) -> list[np.ndarray]:
    """The gradient of Keras' MSE at the model's current weights (not applied)."""
    import keras
    import tensorflow as tf

    loss_fn = keras.losses.MeanSquaredError()
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=training))
    return [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]


def var_rows(step: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {v["v"]: v for v in step["vars"]}


def state_rows(step: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {s["v"]: s for s in step["state"]}


def assert_grad_stats(rec: dict[str, Any], g: np.ndarray, sketch_dim: int, rtol: float = 1e-5) -> None:
    """Recorded statistics of one gradient equal those computed here in float64."""
    from gradtrace._stats import sketch_reference

    g64 = np.asarray(g, dtype=np.float64)
    assert rec["grad"] is True
    np.testing.assert_allclose(rec["norm"], np.linalg.norm(g64), rtol=rtol)
    np.testing.assert_allclose(rec["mean"], g64.mean(), rtol=rtol, atol=1e-7)
    np.testing.assert_allclose(rec["min"], g64.min(), rtol=rtol)
    np.testing.assert_allclose(rec["max"], g64.max(), rtol=rtol)
    assert rec["nonfinite"] == int((~np.isfinite(g64)).sum())
    if sketch_dim:
        np.testing.assert_allclose(rec["sketch"], sketch_reference(g64, sketch_dim), rtol=1e-4, atol=1e-6)
