"""Small variables are reduced together, by segment (``_stats.SMALL_VAR``): the statistics must
be the ones each variable's own reductions give, in the same layout, with NaN and Inf kept,
for sparse gradients, in graph and under XLA, and the function must build far fewer ops."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from gradtrace import _stats

K = 8


def _inputs(seed: int = 0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    # small and large variables interleaved: the grouped rows must land in variable order
    shapes = [(5,), (70, 80), (3, 4), (1,), (9000,), (2, 2, 3), (64,)] + [(i + 2,) for i in range(12)] + [(3, 3)]
    tvars = [tf.Variable(rng.normal(size=s).astype("float32")) for s in shapes]
    before = tf.Variable(np.concatenate([v.numpy().ravel() for v in tvars]) + rng.normal(
        size=sum(int(np.prod(s)) for s in shapes)).astype("float32") * (rng.random(
            sum(int(np.prod(s)) for s in shapes)) < 0.5))
    grads = [rng.normal(size=s).astype("float32") for s in shapes]
    grads[0][2] = np.nan  # a NaN in a small gradient, an Inf in another, a NaN in a large one
    grads[3][0] = np.inf
    grads[1][3, 4] = np.nan
    grads = [tf.constant(g) for g in grads]
    # an Embedding-like sparse gradient with a repeated index, among the small ones
    grads[5] = tf.IndexedSlices(tf.constant(rng.normal(size=(3, 2, 3)).astype("float32")),
                                tf.constant([0, 1, 0]), tf.constant([2, 2, 3]))
    state = [tf.Variable(rng.normal(size=s).astype("float32")) for s in [(4,), (5000,)] + [(6,)] * 10]
    shadow = tf.Variable(np.concatenate([v.numpy().ravel() for v in state]) * np.float32(0.5))
    signs, sign_at = _stats.SIGNS.packed([int(np.prod(s)) for s in shapes], K)
    return grads, tvars, before, state, shadow, signs, sign_at, tuple(shapes)


def _run(small: int, jit: bool, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(_stats, "SMALL_VAR", small)
    grads, tvars, before, state, shadow, signs, sign_at, shapes = _inputs()

    @tf.function(jit_compile=jit, autograph=False)
    def f():  # type: ignore[no-untyped-def]
        return _stats._stats(grads, tf.constant(1.0), tvars, before, state, shadow, signs,
                             grad_shapes=shapes, k=K, sign_at=tuple(sign_at))

    ops = len(f.get_concrete_function().graph.get_operations())
    out = f().numpy()
    return out, ops, shadow.numpy()


@pytest.mark.parametrize("jit", [False, True])
def test_grouped_statistics_equal_each_variables_own(jit: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    apart, ops_apart, shadow_apart = _run(0, jit, monkeypatch)
    grouped, ops_grouped, shadow_grouped = _run(4096, jit, monkeypatch)
    assert apart.shape == grouped.shape
    nan = np.isnan(apart)
    if not jit:  # XLA's reduce_min/max skip NaN; the grouped pass keeps "NaN in, NaN out"
        np.testing.assert_array_equal(nan, np.isnan(grouped))
    np.testing.assert_allclose(grouped[~nan & ~np.isnan(grouped)], apart[~nan & ~np.isnan(grouped)],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(shadow_apart, shadow_grouped)
    assert ops_grouped < ops_apart


def test_grouped_statistics_match_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Against the host: norm, mean, min, max, non-finite count and sketch of each gradient."""
    out, _ops, _shadow = _run(4096, False, monkeypatch)
    grads, *_rest = _inputs()
    at = 0
    for g in grads:
        dense = tf.convert_to_tensor(g).numpy().ravel().astype(np.float64)
        row = out[at:at + 5 + K]
        at += 5 + K
        finite = np.isfinite(dense)
        assert row[4] == np.count_nonzero(~finite)
        if np.isnan(dense).any():
            assert np.isnan(row[2]) and np.isnan(row[3])
            continue
        np.testing.assert_allclose(row[:4], [np.linalg.norm(dense), dense.mean(), dense.min(), dense.max()],
                                   rtol=1e-5)
        if finite.all():
            np.testing.assert_allclose(row[5:], _stats.sketch_reference(dense, K), rtol=1e-4, atol=1e-5)
