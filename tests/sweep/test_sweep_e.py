"""A fifth sweep: training scripts the tracer had not seen (scripts_e), each trained untraced
and traced on the same seed and checked by check_c.check: bit-identical weights, nothing new
on stderr, one record per optimizer step, the script's own losses, gradient norms, layer
modes, state changes, applied flags and the run's metadata.

Every script runs on Keras 3, several scripts per fresh process (check_e, see groups.Groups):
XLA never unmaps the code it compiles, and these models in the pytest process held gigabytes and
ran it towards vm.max_map_count. tf-keras runs a chosen subset, several scripts per fresh
process, to keep the sweep's time small."""

from __future__ import annotations

import inspect

import pytest

from . import groups
from . import scripts_e as se

SCRIPTS = [f for n, f in inspect.getmembers(se, inspect.isfunction)
           if f.__module__ == se.__name__ and not n.startswith("_")]

# tf-keras: the scripts where it differs most from Keras 3 (add_metric, its optimizers' EMA and
# Adafactor/Ftrl/Lion, apply_gradients in train_step, OneDeviceStrategy, its RNN layers and
# preprocessing, Keras-less tf.Modules), in two fresh processes
TF_KERAS_GROUPS = [
    ["bigru_validation_reduce_lr_terminate_fit", "custom_layer_weight_loss_metric_fit",
     "tf_module_submodules_ftrl_eager", "one_device_strategy_run_loop", "train_step_optimizer_apply_metrics",
     "adamw_ema_overwrite_fit"],
    ["gru_lstm_stack_train_on_batch_class_weight", "adafactor_cnn_tape", "string_lookup_tokens_fit",
     "sampled_softmax_sparse_tables_tape", "model_and_raw_temperature_two_optimizers_tape", "conv_lstm1d_eager",
     "xla_function_layernorm_lion_tape"],
]

# scripts left out of the tf-keras groups, with the reason
NOT_ON_TF_KERAS: dict[str, str] = {
    "keras_ops_layer_seed_generator_tape": "keras.ops and keras.random are Keras 3's",
    "keras_ops_loss_repeat_steps_per_epoch_fit": "keras.ops is Keras 3's",
    "optimizer_gradient_accumulation_eager": "tf-keras optimizers have no gradient_accumulation_steps",
    "optimizer_gradient_accumulation_xla_tape": "tf-keras optimizers have no gradient_accumulation_steps",
    "accumulation_xla_steps_per_execution_fit": "tf-keras optimizers have no gradient_accumulation_steps",
    "xla_fit_steps_per_execution_cached_data":
        "tf-keras Dropout under jit_compile draws other masks when the script runs a second time in "
        "one process (untraced too): the groups run untraced and traced in one process",
}


KERAS3_GROUP_SIZE = 8  # scripts per fresh Keras 3 process


@pytest.fixture(scope="module")
def keras3(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> groups.Groups:
    return groups.Groups("check_e", [f.__name__ for f in SCRIPTS], tmp_path_factory.mktemp("sweep_e"),
                         groups.selected(request, "test_keras3", "script"), size=KERAS3_GROUP_SIZE)


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=[f.__name__ for f in SCRIPTS])
def test_keras3(keras3, script):
    problems = keras3.problems(script.__name__)
    assert not problems, "\n".join(problems)


@pytest.mark.slow
@pytest.mark.parametrize("group", range(len(TF_KERAS_GROUPS)), ids=[g[0] for g in TF_KERAS_GROUPS])
def test_tf_keras(tmp_path, group):
    pytest.importorskip("tf_keras")
    found = groups.run_all("check_e", TF_KERAS_GROUPS[group], tmp_path / "group.db", legacy=True,
                           env={"TF_CPP_MIN_LOG_LEVEL": "3"})
    bad = {n: p for n, p in found.items() if p}
    assert not bad, "\n".join(f"{n}: {p}" for n, p in bad.items())


def test_tf_keras_groups_name_scripts():
    names = {f.__name__ for f in SCRIPTS}
    listed = [n for g in TF_KERAS_GROUPS for n in g]
    assert set(listed) <= names and len(listed) == len(set(listed)), listed
    assert not set(listed) & set(NOT_ON_TF_KERAS), listed
    assert set(NOT_ON_TF_KERAS) <= names
