"""A layer called with other arguments in the two runs: a MultiHeadAttention given
``use_causal_mask=True`` in one script and no flag in the other is named as the cause of the
step-0 gradient difference; ``use_causal_mask=False`` against no flag is the same call (the
signature's default). Real trainings of a tiny attention model through ``gradtrace.trace``."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import gradtrace  # noqa: E402
from gradtrace.compare import compare, render_text  # noqa: E402
from gradtrace.store import open_store  # noqa: E402

BATCH, STEPS, SEQ, DIM = 16, 4, 6, 8


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(BATCH * STEPS, SEQ, DIM)).astype("float32")
    return x, rng.integers(0, 3, size=BATCH * STEPS).astype("int32")


def _model(causal: bool | None):  # type: ignore[no-untyped-def]
    keras.utils.set_random_seed(13)
    inp = keras.Input((SEQ, DIM))
    flag = {} if causal is None else {"use_causal_mask": causal}
    h = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(inp, inp, **flag)
    out = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(h))
    return keras.Model(inp, out)


def _fit(url: str, name: str, causal: bool | None) -> None:
    x, y = _data()
    model = _model(causal)
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with gradtrace.trace(run=name, project="callargs", store=url):
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def _loop(url: str, name: str, causal: bool | None) -> None:
    """A subclassed model in a tf.function tape loop: the flag passed by the user's own call."""
    x, y = _data()

    class Net(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.att = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
            self.pool = keras.layers.GlobalAveragePooling1D()
            self.head = keras.layers.Dense(3)

        def call(self, t, training=None):  # type: ignore[no-untyped-def]
            flag = {} if causal is None else {"use_causal_mask": causal}
            return self.head(self.pool(self.att(t, t, training=training, **flag)))

    keras.utils.set_random_seed(13)
    model = Net()
    model(x[:1])
    opt = keras.optimizers.SGD(0.1)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):  # type: ignore[no-untyped-def]
        with tf.GradientTape() as tape:
            loss = ce(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    with gradtrace.trace(run=name, project="callargs", store=url):
        for i in range(0, len(x), BATCH):
            step(x[i:i + BATCH], y[i:i + BATCH])


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('callargs') / 'runs.db'}"
    _fit(url, "causal", causal=True)
    _fit(url, "no-flag", causal=None)
    _fit(url, "causal-false", causal=False)
    _loop(url, "loop-causal", causal=True)
    _loop(url, "loop-no-flag", causal=None)
    return url


def test_a_forgotten_causal_mask_is_named_as_the_cause(url: str) -> None:
    with open_store(url) as store:
        report = compare(store, "causal", "no-flag", project="callargs")
    text = render_text(report, verbose=True)
    assert report.verdict == "diverged" and report.first_divergent_step == 0, text
    top = report.findings[0]
    assert top.kind == "call_argument_mismatch" and top.severity == "error", text
    (diff,) = top.evidence["differences"]
    assert diff["argument"] == "use_causal_mask" and diff["a"] is True and diff["b"] is False, text
    assert diff["given_a"] and not diff["given_b"], text
    assert "use_causal_mask=True in run a" in top.summary and "multi_head_attention" in top.summary, text
    # The step-0 gradient difference is its evidence, not a finding of its own.
    assert not any(f.kind == "gradient_mismatch" for f in report.findings), text
    assert any(e["kind"] == "gradient_mismatch" for e in top.evidence["step_evidence"]), text


def test_the_flag_set_to_its_default_is_no_difference(url: str) -> None:
    with open_store(url) as store:
        same = compare(store, "causal-false", "no-flag", project="callargs")
        other = compare(store, "causal", "causal-false", project="callargs")
    text = render_text(same, verbose=True)
    assert same.verdict == "equivalent" and not same.findings, text
    text = render_text(other, verbose=True)
    top = other.findings[0]
    assert top.kind == "call_argument_mismatch", text
    assert "at its default (use_causal_mask=False) in run b" in top.summary, text


def test_a_subclassed_model_in_a_tape_loop_is_paired_by_structure(url: str) -> None:
    """The user's own call passes the flag; the layers' names differ between the processes' models
    (multi_head_attention_3 vs _4): pairing goes through the variables they own."""
    with open_store(url) as store:
        report = compare(store, "loop-no-flag", "loop-causal", project="callargs")
    text = render_text(report, verbose=True)
    top = report.findings[0]
    assert top.kind == "call_argument_mismatch" and top.severity == "error", text
    (diff,) = top.evidence["differences"]
    assert diff["argument"] == "use_causal_mask" and diff["b"] is True and diff["layer_a"] != diff["layer_b"], text
    assert "as run b does" in str(top.fix), text


# --------------------------------------------------------------------------- synthetic runs

_DEFAULTS = {"attention_mask": None, "use_causal_mask": False}


def _synth(name: str, calls: list[dict] | None, recorded: bool = True, **kw):  # type: ignore[no-untyped-def]
    from .synth import make_run

    args = {} if calls is None else {"dense_1": {"class": "Dense", "calls": calls, "defaults": _DEFAULTS}}
    meta = {"keras_flavour": "keras3", **({"extra": {"call_args": args}} if recorded else {})}
    return make_run(name, meta=meta, **kw)


def _kinds(report) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {f.kind: f for f in report.findings}


def test_a_tensor_given_in_one_run_only_and_calls_that_differ_as_sets() -> None:
    from gradtrace.compare.engine import compare_runs

    r = compare_runs(_synth("a", [{"attention_mask": "<tensor>"}]), _synth("b", None, rotate=[0, 2]))
    f = _kinds(r)["call_argument_mismatch"]
    assert f.severity == "error" and "with a tensor as attention_mask in run a and without attention_mask in run b" \
        in f.summary, r.to_dict()
    assert "gradient_mismatch" not in _kinds(r)  # folded into the cause
    # A layer called two ways in one run (a shared layer), one way in the other.
    r = compare_runs(_synth("a", [{}, {"use_causal_mask": True}]), _synth("b", [{"use_causal_mask": True}]))
    f = _kinds(r)["call_argument_mismatch"]
    assert f.evidence["differences"][0]["argument"] == "calls", r.to_dict()
    # The same calls, in another order, with a default spelled out: no difference.
    r = compare_runs(_synth("a", [{}, {"use_causal_mask": True}]),
                     _synth("b", [{"use_causal_mask": True}, {"use_causal_mask": False}]))
    assert "call_argument_mismatch" not in _kinds(r), r.to_dict()


def test_unrecorded_runs_and_steps_that_agree() -> None:
    from gradtrace.compare.engine import compare_runs

    # A run traced before call arguments were recorded says nothing about them.
    r = compare_runs(_synth("a", [{"use_causal_mask": True}]), _synth("b", None, recorded=False))
    assert "call_argument_mismatch" not in _kinds(r), r.to_dict()
    # Every aligned step agrees: the argument made no difference here, context.
    r = compare_runs(_synth("a", [{"use_causal_mask": True}]), _synth("b", None))
    f = _kinds(r)["call_argument_mismatch"]
    assert f.severity == "info" and "made no difference" in f.summary and r.verdict == "equivalent", r.to_dict()
