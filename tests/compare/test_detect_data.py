"""Batch fingerprints read for more than equality: inputs scaled by one map, batches stepped twice."""

from __future__ import annotations

import numpy as np
import pytest
from gradtrace.compare.detect_data import (
    FP_POSITIONS,
    batch_stride,
    batch_subsequence,
    input_map,
    input_permutation,
    input_transform,
    repeated_steps,
    same_examples_reordered,
)

from .synth import make_run


def _fp(x: np.ndarray) -> list[float]:
    """The tracer's fingerprint of a batch, in float32 as the step computes it."""
    v = np.asarray(x, dtype=np.float32).reshape(-1)
    m = min(v.size, FP_POSITIONS)
    idx = np.arange(m, dtype=np.int64)
    w = ((idx * 7919 + 13) % 10007).astype(np.float32) / np.float32(10007.0) - np.float32(0.5)
    return [float(v.sum(dtype=np.float32)), float((v * v).sum(dtype=np.float32)),
            float((v[:m] * w).sum(dtype=np.float32)), float(v.size)]


def _batches(steps: int = 6, shape: tuple[int, ...] = (32, 28, 28), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=shape).astype(np.float32) for _ in range(steps)]


def _fps(batches: list[np.ndarray]) -> np.ndarray:
    return np.array([_fp(b) for b in batches])


@pytest.mark.parametrize("k", [1 / 255.0, 255.0, 2.0, 1 / 127.5])
def test_a_constant_factor_is_measured_through_float32_rounding(k: float) -> None:
    xs = _batches()
    labels = _fps([np.arange(32, dtype=np.float32) % 10 for _ in xs])
    m = input_map(_fps(xs), _fps([(x * np.float32(k)).astype(np.float32) for x in xs]), labels, labels)
    assert m is not None and m["c"] == 0.0 and m["labels_equal"]
    assert abs(m["k"] - k) <= 1e-5 * k


def test_an_affine_map_is_measured() -> None:
    xs = _batches()
    ys = [(x / np.float32(127.5) - np.float32(1.0)).astype(np.float32) for x in xs]
    labels = _fps([np.ones(32, dtype=np.float32) for _ in xs])
    m = input_map(_fps(xs), _fps(ys), labels, labels)
    assert m is not None
    assert abs(m["k"] - 1 / 127.5) < 1e-7 and abs(m["c"] + 1.0) < 1e-4


def test_other_batches_equal_batches_and_other_labels_are_no_map() -> None:
    xs, other = _batches(seed=0), _batches(seed=1)
    labels = _fps([np.arange(32, dtype=np.float32) for _ in xs])
    assert input_map(_fps(xs), _fps(other), labels, labels) is None  # other examples
    assert input_map(_fps(xs), _fps(xs), labels, labels) is None  # nothing to say
    # reordered examples: per-feature sums survive, the projection does not
    shuffled = [x[::-1].copy() for x in xs]
    assert input_map(_fps(xs), _fps(shuffled), labels, labels) is None
    # the same inputs scaled but labels of other examples: not "the same examples scaled"
    labels_b = _fps([np.arange(32, dtype=np.float32)[::-1] * 2 for _ in xs])
    assert input_map(_fps(xs), _fps([x * 2 for x in xs]), labels, labels_b) is None


def test_per_feature_standardisation_is_not_one_map() -> None:
    rng = np.random.default_rng(3)
    xs = [rng.normal(size=(32, 8)).astype(np.float32) * np.arange(1, 9, dtype=np.float32) for _ in range(6)]
    scale = np.arange(1, 9, dtype=np.float32)
    ys = [(x / scale).astype(np.float32) for x in xs]  # each feature by its own factor
    labels = _fps([np.ones(32, dtype=np.float32) for _ in xs])
    assert input_map(_fps(xs), _fps(ys), labels, labels) is None


def _run_with(fps: np.ndarray, loss: np.ndarray, iterations: np.ndarray):
    run = make_run("r", steps=len(fps))
    run.x_fp = np.full((len(fps), run.x_fp.shape[1]), np.nan)
    run.x_fp[:, :4] = fps
    run.y_fp = np.full_like(run.x_fp, np.nan)
    run.loss = loss.astype(float)
    run.iterations = iterations.astype(float)
    return run


def test_the_same_values_in_another_order_with_the_same_labels_are_a_permutation() -> None:
    xs = [np.concatenate([b[:, :6], b[:, 6:]], axis=1) for b in _batches(shape=(32, 12))]
    swapped = [np.concatenate([x[:, 6:], x[:, :6]], axis=1) for x in xs]  # two inputs swapped
    labels = _fps([np.arange(32, dtype=np.float32) % 3 for _ in xs])
    m = input_permutation(_fps(xs), _fps(swapped), labels, labels)
    assert m == {"steps": 6, "steps_differing": 6}
    # the same inputs, other batches, or examples reordered along with their labels: no permutation
    assert input_permutation(_fps(xs), _fps(xs), labels, labels) is None
    assert input_permutation(_fps(xs), _fps(_batches(shape=(32, 12), seed=1)), labels, labels) is None
    rolled = _fps([np.arange(32, dtype=np.float32)[::-1] % 3 for _ in xs])
    assert input_permutation(_fps(xs), _fps([x[::-1] for x in xs]), labels, rolled) is None


def test_repeated_steps_counts_k_per_batch_and_spares_full_batch_and_turn_taking() -> None:
    xs = _fps(_batches(steps=4))
    loss = np.linspace(2.0, 1.0, 12)
    three = _run_with(np.repeat(xs, 3, axis=0), loss, np.arange(1, 13))
    rep = repeated_steps(three)
    assert rep is not None and rep["per_batch"] == 3 and rep["batches"] == 4 and not rep["same_gradients"]

    once = _run_with(np.concatenate([xs, xs, xs]), loss, np.arange(1, 13))  # 4 batches, 3 epochs
    assert repeated_steps(once) is None
    full = _run_with(np.repeat(xs[:1], 12, axis=0), loss, np.arange(1, 13))  # one batch, every step
    assert repeated_steps(full) is None
    # two optimizers taking turns on each batch: each counter advances once per batch
    turns = _run_with(np.repeat(xs, 3, axis=0)[:8], loss[:8], np.repeat(np.arange(1, 5), 2))
    assert repeated_steps(turns) is None


def test_the_same_gradients_applied_again_show_as_a_step_without_a_batch_and_the_same_loss() -> None:
    xs = _fps(_batches(steps=5))
    fps = np.full((10, 4), np.nan)
    fps[0::2] = xs
    loss = np.repeat(np.linspace(2.0, 1.0, 5), 2)
    rep = repeated_steps(_run_with(fps, loss, np.arange(1, 11)))
    assert rep is not None and rep["per_batch"] == 2 and rep["same_gradients"]
    # a step without fingerprint whose loss differs is not the same gradients
    loss2 = np.linspace(2.0, 1.0, 10)
    assert repeated_steps(_run_with(fps, loss2, np.arange(1, 11))) is None


def _tabular(steps: int = 6, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Raw tabular batches (columns on very different scales) and their labels' fingerprints."""
    rng = np.random.default_rng(seed)
    scales = np.array([1.0, 10.0, 100.0, 1000.0, 0.1], dtype=np.float32)
    xs = [(rng.normal(1.0, 1.0, size=(32, 5)).astype(np.float32) * scales).astype(np.float32)
          for _ in range(steps)]
    labels = _fps([rng.integers(0, 3, size=32).astype(np.float32) for _ in range(steps)])
    return xs, labels


def test_a_per_feature_standardisation_is_a_transform_of_the_same_examples() -> None:
    xs, labels = _tabular()
    allx = np.concatenate(xs)
    mu, sd = allx.mean(0), allx.std(0)
    scaled = [((x - mu) / sd).astype(np.float32) for x in xs]
    fa, fb = _fps(xs), _fps(scaled)
    assert input_map(fa, fb, labels, labels) is None  # no single factor and offset
    assert input_permutation(fa, fb, labels, labels) is None
    t = input_transform(fa, fb, labels, labels)
    assert t is not None and t["steps"] == 6
    assert abs(t["mean_b"]) < 0.5 < t["mean_a"] and t["rms_a"] > 10 * t["rms_b"]


def test_no_transform_without_the_same_labels_or_from_random_draws_in_both_runs() -> None:
    xs, labels = _tabular()
    other = _fps([np.arange(32, dtype=np.float32) % 3 for _ in xs])
    scaled = _fps([x / np.float32(7.0) + np.float32(1.0) * (x > 0) for x in xs])
    assert input_transform(_fps(xs), scaled, labels, other) is None  # other labels: other examples
    constant = _fps([np.zeros(32, dtype=np.float32) for _ in xs])  # labels that tell no batch apart
    assert input_transform(_fps(xs), scaled, constant, constant) is None
    assert input_transform(_fps(xs), _fps(xs), labels, labels) is None  # the same inputs
    # unseeded noise added in both runs: the inputs' moments move either way, step by step
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(2)
    noisy_a = [(x + rng_a.normal(0, 1.0, x.shape)).astype(np.float32) for x in xs]
    noisy_b = [(x + rng_b.normal(0, 1.0, x.shape)).astype(np.float32) for x in xs]
    da = _fps(noisy_b)[:, :2] - _fps(noisy_a)[:, :2]
    assert not any(np.all(d > 0) or np.all(d < 0) for d in da.T)  # this draw: both signs seen
    assert input_transform(_fps(noisy_a), _fps(noisy_b), labels, labels) is None


def test_the_same_examples_batched_in_another_order_are_recognised_over_the_epoch() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(256, 64)).astype(np.float32)
    y = rng.integers(0, 10, size=256).astype(np.float32)
    order = rng.permutation(256)

    def fps(xs, ys, steps=8):
        return (_fps([xs[i * 32:(i + 1) * 32] for i in range(steps)]),
                _fps([ys[i * 32:(i + 1) * 32] for i in range(steps)]))

    fa, ya = fps(x, y)
    fb, yb = fps(x[order], y[order])
    assert same_examples_reordered(fa, fb, ya, yb)  # one run shuffled: the epoch's totals agree
    assert not same_examples_reordered(fa[:4], fb[:4], ya[:4], yb[:4])  # half an epoch says nothing
    other = rng.normal(size=(256, 64)).astype(np.float32)
    fo, _ = fps(other, y)
    assert not same_examples_reordered(fa, fo, ya, ya)  # other examples
    assert not same_examples_reordered(fa, fa, ya, ya)  # the same batches: not a reordering


def _with_batches(run, batches: list[np.ndarray], labels: list[np.ndarray]):
    run.x_fp = _fps(batches)
    run.y_fp = _fps(labels)
    return run


def test_a_run_stepping_on_every_other_batch_is_found_with_its_stride_and_offset() -> None:
    xs = _batches(8)
    ys = [np.arange(32, dtype=np.float32) % (i + 2) for i in range(8)]
    a = _with_batches(make_run("a", steps=8), xs, ys)
    for off in (0, 1):
        b = _with_batches(make_run("b", steps=4), xs[off::2], ys[off::2])
        st = batch_stride(a, b)
        assert st is not None and st["run"] == "b" and st["stride"] == 2 and st["offset"] == off, st
        assert st["steps_other"] == list(range(off, 8, 2))
        assert batch_stride(b, a)["run"] == "a"  # the same, seen from the other side
    c = _with_batches(make_run("c", steps=3), xs[::3], ys[::3])
    assert batch_stride(a, c)["stride"] == 3
    # as many steps in both runs: the skipping run went through twice the batches
    xs16 = _batches(16, seed=2)
    ys16 = [np.arange(32, dtype=np.float32) % (i + 2) for i in range(16)]
    full = _with_batches(make_run("f", steps=8), xs16[:8], ys16[:8])
    st = batch_stride(full, _with_batches(make_run("g", steps=8), xs16[::2], ys16[::2]))
    assert st is not None and (st["stride"], st["matched"]) == (2, 4)


def test_no_stride_for_the_same_batches_other_batches_or_one_batch_repeated() -> None:
    xs, other = _batches(8, seed=0), _batches(4, seed=1)
    ys = [np.arange(32, dtype=np.float32) % 5 for _ in range(8)]
    a = _with_batches(make_run("a", steps=8), xs, ys)
    assert batch_stride(a, _with_batches(make_run("b", steps=8), xs, ys)) is None  # the same batches
    assert batch_stride(a, _with_batches(make_run("b", steps=4), xs[:4], ys[:4])) is None  # a shorter run
    assert batch_stride(a, _with_batches(make_run("b", steps=4), other, ys[:4])) is None  # other examples
    # full-batch training: every step on one batch, so any stride would match
    full = _with_batches(make_run("f", steps=8), [xs[0]] * 8, [ys[0]] * 8)
    assert batch_stride(full, _with_batches(make_run("g", steps=4), [xs[0]] * 4, [ys[0]] * 4)) is None
    # labels that differ at the matched steps: not the same batches
    b = _with_batches(make_run("b", steps=4), xs[::2], [y + 1 for y in ys[::2]])
    assert batch_stride(a, b) is None


def test_a_partial_last_batch_dropped_is_a_subsequence_with_the_small_batches_left_out() -> None:
    """fit() keeps the last, partial batch of each epoch; a loop with drop_remainder=True does not."""
    full = _batches(4, seed=3)
    part = [full[0][:26]]  # 26 examples: the epoch's remainder
    xs_a = full + part + full + part
    ys = [np.arange(len(x), dtype=np.float32) % 3 for x in xs_a]
    a = _with_batches(make_run("a", steps=10), xs_a, ys)
    a.batch_size = np.array([float(len(x)) for x in xs_a])
    b = _with_batches(make_run("b", steps=8), full + full, ys[:4] + ys[5:9])
    sub = batch_subsequence(a, b)
    # the last epoch's partial batch, after run b's last step, is left out too
    assert sub is not None and sub["run"] == "b" and sub["skipped_steps"] == [4, 9], sub
    assert sub["skipped_count"] == 2 == a.n_steps - b.n_steps, sub
    assert sub["skipped_batch_sizes"] == [26] and sub["batch_size"] == 32 and sub["first_short_step"] == 4
    # a run that goes on for another epoch after run b's last step: trained longer, not skipped
    xs_c = xs_a + full
    c = _with_batches(make_run("c", steps=14), xs_c, ys + ys[:4])
    c.batch_size = np.array([float(len(x)) for x in xs_c])
    assert batch_subsequence(c, b)["skipped_steps"] == [4]
    # a last batch of another size than the ones skipped: not counted either
    xs_e = xs_a[:9] + [full[0][:20]]
    e = _with_batches(make_run("e", steps=10), xs_e, ys[:9] + [ys[9][:20]])
    e.batch_size = np.array([float(len(x)) for x in xs_e])
    assert batch_subsequence(e, b)["skipped_steps"] == [4]
    # the same batches, or a run that simply stops earlier, leave nothing out
    assert batch_subsequence(a, _with_batches(make_run("c", steps=5), xs_a[:5], ys[:5])) is None
    assert batch_subsequence(a, _with_batches(make_run("d", steps=3), _batches(3, seed=9), ys[:3])) is None
