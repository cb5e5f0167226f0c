"""A sixth sweep: training scripts the tracer had not seen (scripts_f), each trained untraced
and traced on the same seed and checked by check_c.check: bit-identical weights, nothing new
on stderr, one record per optimizer step, the script's own losses, gradient norms, layer
modes, state changes, applied flags and the run's metadata.

Every script runs on Keras 3, several scripts per fresh process (check_f, see groups.Groups).
tf-keras runs a chosen subset, several scripts per fresh process, to keep the sweep's time
small."""

from __future__ import annotations

import inspect

import pytest

from . import groups
from . import scripts_f as sf

SCRIPTS = [f for n, f in inspect.getmembers(sf, inspect.isfunction)
           if f.__module__ == sf.__name__ and not n.startswith("_")]

# tf-keras: the scripts where it differs most from Keras 3 (its preprocessing layers and their
# variables, its recurrent layers under masking, its optimizers' schedules and clipping of
# IndexedSlices, its losses, float64 layers, a model copied into another, a step function
# reading its own batches to the end of the data), in one fresh process
TF_KERAS_GROUPS = [
    ["discretization_hashing_multi_hot_fit", "masking_bidirectional_sum_eager",
     "fit_initial_epoch_validation_freq_schedule", "focal_losses_two_outputs_fit",
     "embedding_regularizer_clipnorm_function", "float64_model_tape", "dqn_target_network_copy_function",
     "iterator_read_inside_function_until_end"],
]

# scripts left out of the tf-keras groups, with the reason
NOT_ON_TF_KERAS: dict[str, str] = {
    "multi_optimizer_map_fit": "MultiOptimizer and OptimizerMap are Keras 3's",
    "multi_optimizer_callable_apply_tape": "MultiOptimizer is Keras 3's",
    "muon_embedding_dense_tape": "Muon is Keras 3's",
    "lamb_einsum_attention_fit": "Lamb is Keras 3's",
    "schedule_free_adamw_tape": "ScheduleFreeAdamW is Keras 3's",
    "dice_segmentation_fit": "the Dice loss is Keras 3's",
    "mixed_float16_multi_optimizer_fit": "MultiOptimizer is Keras 3's",
    "callable_learning_rate_eager":
        "tf-keras' optimizers call a callable learning rate once, as the initial value of a variable "
        "(tf_keras/src/optimizers/optimizer.py _build_learning_rate): the rates the script sets are "
        "Keras 3's",
    "filtered_dataset_steps_per_execution_fit":
        "tf-keras' fit() with steps_per_execution > 1 needs steps_per_epoch on a dataset of unknown length",
    "padded_batch_stacked_cells_fit":
        "tf-keras' GRUCell dropout draws other masks when the script runs a second time in one "
        "process (untraced too): the groups run untraced and traced in one process",
}


KERAS3_GROUP_SIZE = 8  # scripts per fresh Keras 3 process


@pytest.fixture(scope="module")
def keras3(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> groups.Groups:
    return groups.Groups("check_f", [f.__name__ for f in SCRIPTS], tmp_path_factory.mktemp("sweep_f"),
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
    found = groups.run_all("check_f", TF_KERAS_GROUPS[group], tmp_path / "group.db", legacy=True,
                           env={"TF_CPP_MIN_LOG_LEVEL": "3"})
    bad = {n: p for n, p in found.items() if p}
    assert not bad, "\n".join(f"{n}: {p}" for n, p in bad.items())


@pytest.mark.slow
def test_multi_optimizer_compiled_before_trace(tmp_path):
    """compile() with a MultiOptimizer (and a first fit()) before the trace: one record per
    step, no warning of steps run untraced (its sub-optimizers' counters are its steps)."""
    p = groups.run("check_f", [], tmp_path / "before.db", legacy=False, args=("--compiled-before-trace",))
    assert p.returncode == 0 and p.found == {"multi_optimizer_compiled_before_trace": []}, p.tail()


def test_tf_keras_groups_name_scripts():
    names = {f.__name__ for f in SCRIPTS}
    listed = [n for g in TF_KERAS_GROUPS for n in g]
    assert set(listed) <= names and len(listed) == len(set(listed)), listed
    assert not set(listed) & set(NOT_ON_TF_KERAS), listed
    assert set(NOT_ON_TF_KERAS) <= names
