"""A layer argument that is a Python function (a Lambda's function) is recorded by what its code computes: the same lambda written in two places (another
file, other lines, another argument name) is the same argument, another constant is another,
and functions get_config() names by a string (`activation="relu"`) keep their name. On both
Keras flavours, each in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json
import tensorflow as tf
from gradtrace import _meta

keras = tf.keras
half_a = keras.layers.Lambda(lambda t: t * 0.5)


def other_place():
    return keras.layers.Lambda(lambda h: h * 0.5)


quarter = keras.layers.Lambda(lambda t: t * 0.25)
dense = keras.layers.Dense(3, activation="relu")
print("CONFIGS " + json.dumps([_meta.layer_config(x).get(k) for x, k in
      ((half_a, "function"), (other_place(), "function"), (quarter, "function"), (dense, "activation"))]))
"""


@pytest.mark.parametrize("legacy", [False, True], ids=["keras3", "tf_keras"])
def test_lambda_recorded_by_its_code(legacy):
    if legacy:
        pytest.importorskip("tf_keras")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join(str(ROOT / p) for p in ("tracer", "server")))
    env.pop("TF_USE_LEGACY_KERAS", None)
    if legacy:
        env["TF_USE_LEGACY_KERAS"] = "1"
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("CONFIGS "))
    half_a, half_b, quarter, relu = json.loads(line[len("CONFIGS "):])
    assert half_a == half_b and isinstance(half_a, dict), (half_a, half_b)
    assert quarter != half_a, quarter
    assert relu == "relu", relu
