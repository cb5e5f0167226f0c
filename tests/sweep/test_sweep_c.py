"""A third sweep: training scripts the tracer had not seen (scripts_c), each trained untraced
and traced on the same seed, on Keras 3 (several scripts per fresh process, see groups.Groups:
XLA never unmaps the code it compiles, and these models in the pytest process held gigabytes)
and tf-keras (a fresh process with ``TF_USE_LEGACY_KERAS=1``). The record must hold against what the script computed itself:
bit-identical weights, nothing new on stderr, one record per optimizer step, the script's
losses and ``tf.norm`` of its gradients, layer modes, state changes, applied flags and the
run's metadata (see check_c.check)."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from . import groups
from . import scripts_c as sc

SCRIPTS = [f for n, f in inspect.getmembers(sc, inspect.isfunction)
           if f.__module__ == sc.__name__ and not n.startswith("_")]

# scripts that tf-keras cannot run as written, with the reason
NOT_ON_TF_KERAS: dict[str, str] = {}


KERAS3_GROUP_SIZE = 8  # scripts per fresh Keras 3 process


def _keras3(request: pytest.FixtureRequest, tmp: Path, test: str, every: int) -> groups.Groups:
    return groups.Groups("groups", [f.__name__ for f in SCRIPTS], tmp, groups.selected(request, test, "script"),
                         size=KERAS3_GROUP_SIZE, args=("--scripts=scripts_c", f"--stats-every={every}"))


@pytest.fixture(scope="module")
def keras3(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> groups.Groups:
    return _keras3(request, tmp_path_factory.mktemp("sweep_c"), "test_keras3", 1)


@pytest.fixture(scope="module")
def keras3_every_third(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> groups.Groups:
    return _keras3(request, tmp_path_factory.mktemp("sweep_c_every_3"), "test_keras3_statistics_every_third_step", 3)


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=[f.__name__ for f in SCRIPTS])
def test_keras3(keras3, script):
    problems = keras3.problems(script.__name__)
    assert not problems, "\n".join(problems)


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=[f.__name__ for f in SCRIPTS])
def test_keras3_statistics_every_third_step(keras3_every_third, script):
    """The same with statistics on steps 0, 3, 6, ... only: the steps between (recorded from a
    template) still carry their own loss, batch, rate and modes, and a full step's state
    change covers the steps since the previous full one."""
    problems = keras3_every_third.problems(script.__name__)
    assert not problems, "\n".join(problems)


def _legacy_check(name: str, tmp: Path) -> list[str]:
    """The untraced and the traced run each in a fresh tf-keras process, then the comparison."""
    env = groups.environment(legacy=True, env={"TF_CPP_MIN_LOG_LEVEL": "3"})
    db = f"sqlite:///{tmp / 'legacy.db'}"
    plain, traced = str(tmp / "plain.pkl"), str(tmp / "traced.pkl")
    steps = [["run", name, db, plain], ["run", name, db, traced, "--traced"], ["compare", name, db, plain, traced]]
    for args in steps:
        out = subprocess.run([sys.executable, "-m", "tests.sweep.check_c", *args], cwd=groups.ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("PROBLEMS ")]
    assert lines, out.stdout[-3000:]
    return json.loads(lines[-1][len("PROBLEMS "):])


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=[f.__name__ for f in SCRIPTS])
def test_tf_keras(tmp_path, script):
    pytest.importorskip("tf_keras")
    if script.__name__ in NOT_ON_TF_KERAS:
        pytest.skip(NOT_ON_TF_KERAS[script.__name__])
    problems = _legacy_check(script.__name__, tmp_path)
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_second_model_leaves_the_first_models_state_alone(tmp_path):
    """Two models trained one after the other in one run (fit() with 4 steps per execution,
    then the same model with 1): once the second model's steps start, the first model's
    BatchNormalization statistics no longer move, and no step may say they did. A new set of
    state variables measured them from their values when the first model was registered,
    so its whole training showed up as one change in the second model's first step."""
    import gradtrace
    from gradtrace.store import open_store

    url = f"sqlite:///{tmp_path / 'two.db'}"
    with gradtrace.trace(run="two", store=url, stats_every=1):
        first, _ = sc._spe_fit(4)
        n1 = int(first.optimizer.iterations.numpy())
        second, _ = sc._spe_fit(1)
    n2 = int(second.optimizer.iterations.numpy())
    store = open_store(url)
    try:
        detail = store.run_detail(store.resolve("two").id)
        steps = sorted(store.steps(detail.summary.id), key=lambda r: r["step"])
    finally:
        store.close()
    names = {v.path for v in first.variables}
    first_bn = [v["index"] for v in detail.variables if "moving" in v["name"] and v["name"] in names]
    assert len(steps) == n1 + n2 and len(first_bn) == 2, (len(steps), detail.variables)
    for s in steps:
        changed = {r["v"]: r["changed"] for r in s["state"]}
        assert [changed[v] for v in first_bn] == [s["step"] < n1] * 2, (s["step"], s["state"])


@pytest.mark.slow
def test_class_weight_is_not_sample_weights_from_the_data(tmp_path):
    """fit(class_weight=...) hands its train step (x, y, w) batches, w looked up from the
    labels: the run says class weights, not sample weights found in the data."""
    import gradtrace
    import tensorflow as tf
    from gradtrace.store import open_store

    keras = tf.keras
    x, y = sc.data.wine()
    keras.utils.set_random_seed(61)
    model = keras.Sequential([keras.Input((13,)), keras.layers.Dense(3)])
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    url = f"sqlite:///{tmp_path / 'cw.db'}"
    with gradtrace.trace(run="cw", store=url):
        model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, class_weight={0: 1.0, 1: 2.0, 2: 0.5})
    store = open_store(url)
    try:
        detail = store.run_detail(store.resolve("cw").id)
        steps = list(store.steps(detail.summary.id))
    finally:
        store.close()
    fit = detail.meta["fit"]
    assert fit["class_weight"] == {"0": 1.0, "1": 2.0, "2": 0.5}, fit
    assert not fit["sample_weight"] and "sample_weight_from" not in fit, fit
    assert all(s["loss_info"]["sample_weight"] for s in steps)  # the loss did receive the weights
