"""``gradtrace run``: a training script traced without editing it, run as ``python script.py``
would run it (argv, ``__main__``, its folder on sys.path), its exit code passed on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("keras")

from gradtrace.cli import main  # noqa: E402
from gradtrace.store import open_store  # noqa: E402

# A script as users write it: a tape loop in a tf.function, then fit(); it imports a module
# lying beside it and writes down what it saw and what it computed itself.
SCRIPT = """\
import json, sys
import numpy as np
import keras, tensorflow as tf
from sibling import BATCH, data

x, y = data()
keras.utils.set_random_seed(3)
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(6, activation="relu"), keras.layers.Dense(1)])
opt = keras.optimizers.SGD(0.05)
mse = keras.losses.MeanSquaredError()

@tf.function
def step(xb, yb):
    with tf.GradientTape() as tape:
        loss = mse(yb, model(xb, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    opt.apply_gradients(zip(grads, model.trainable_variables))
    return loss

losses = [float(step(x[i:i + BATCH], y[i:i + BATCH])) for i in range(0, len(x), BATCH)]
model.compile(keras.optimizers.SGD(0.05), "mse")
epochs = int(sys.argv[sys.argv.index("--epochs") + 1])
model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0)
steps = len(losses) + epochs * -(-len(x) // BATCH)
with open(sys.argv[sys.argv.index("--out") + 1], "w") as f:
    json.dump({"name": __name__, "argv": sys.argv, "losses": losses, "steps": steps}, f)
if "--raise" in sys.argv:
    raise ValueError("the script's own error")
if "--exit" in sys.argv:
    sys.exit(int(sys.argv[sys.argv.index("--exit") + 1]))
"""

SIBLING = """\
import numpy as np
BATCH = 8

def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(36, 8)).astype("float32")
    return x, (x @ rng.normal(size=(8, 1))).astype("float32")
"""


@pytest.fixture
def program(tmp_path: Path) -> Path:
    folder = tmp_path / "proj"
    (folder / "pkg").mkdir(parents=True)
    (folder / "train.py").write_text(SCRIPT)
    (folder / "sibling.py").write_text(SIBLING)
    (folder / "pkg" / "__init__.py").write_text("")
    (folder / "pkg" / "train.py").write_text(SCRIPT)
    (folder / "pkg" / "sibling.py").write_text(SIBLING)
    return folder


def _gradtrace_run(args: list[str], cwd: Path, db: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "GRADTRACE_SPOOL_DIR": str(cwd / "spool")}
    env.pop("GRADTRACE_URL", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, "-m", "gradtrace", "run", "--store", db, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _recorded(db: str, name: str) -> tuple[object, list[dict[str, object]]]:
    with open_store(db) as store:
        summary = store.resolve(name)
        return store.run_detail(summary.id), sorted(store.steps(summary.id), key=lambda r: r["step"])


def test_a_script_runs_unchanged_and_every_step_is_recorded(program: Path, tmp_path: Path) -> None:
    db, out = f"sqlite:///{tmp_path / 'runs.db'}", tmp_path / "seen.json"
    proc = _gradtrace_run(["--name", "tape-then-fit", "--project", "cli", "train.py", "--epochs", "2",
                           "--out", str(out)], program, db)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(out.read_text())
    # as `python train.py --epochs 2 --out ...`: __main__, its own argv, its folder importable
    assert seen["name"] == "__main__" and seen["argv"] == ["train.py", "--epochs", "2", "--out", str(out)]
    detail, steps = _recorded(db, "tape-then-fit")
    assert detail.summary.status == "finished" and detail.summary.project == "cli"
    assert len(steps) == seen["steps"]  # the tape loop's steps and fit()'s, one record each
    for k, loss in enumerate(seen["losses"]):  # the tape loop's own losses
        assert steps[k]["loss"] == pytest.approx(loss, rel=1e-6)
    assert "tape-then-fit" in proc.stderr and f"{seen['steps']} optimizer steps, finished" in proc.stderr
    assert f"gradtrace show tape-then-fit --db {db}" in proc.stderr  # what to do next, on this store


def test_the_script_failing_is_recorded_and_its_traceback_starts_in_the_script(program: Path,
                                                                               tmp_path: Path) -> None:
    db, out = f"sqlite:///{tmp_path / 'runs.db'}", tmp_path / "seen.json"
    proc = _gradtrace_run(["train.py", "--epochs", "1", "--out", str(out), "--raise"], program, db)
    assert proc.returncode == 1, proc.stderr
    tb = proc.stderr[proc.stderr.index("Traceback"):]
    assert tb.splitlines()[1].strip().startswith(f'File "{program / "train.py"}"') or \
        tb.splitlines()[1].strip().startswith('File "train.py"'), tb
    assert "runpy" not in tb and "_cli_run" not in tb and "ValueError: the script's own error" in tb
    detail, steps = _recorded(db, "train")  # the default name: the script's
    assert detail.summary.status == "failed" and "ValueError" in (detail.meta.get("error") or "")
    assert len(steps) == json.loads(out.read_text())["steps"]


@pytest.mark.parametrize("code", [0, 3])
def test_a_module_runs_as_python_m_and_its_exit_code_is_passed_on(program: Path, tmp_path: Path, code: int) -> None:
    db, out = f"sqlite:///{tmp_path / 'runs.db'}", tmp_path / "seen.json"
    proc = _gradtrace_run(["-m", "pkg.train", "--epochs", "1", "--out", str(out), "--exit", str(code)],
                          program, db, pythonpath=program / "pkg")
    assert proc.returncode == code, proc.stderr
    seen = json.loads(out.read_text())
    assert seen["name"] == "__main__" and seen["argv"][1:] == ["--epochs", "1", "--out", str(out), "--exit", str(code)]
    detail, steps = _recorded(db, "train")  # the default name: the module's last part
    assert len(steps) == seen["steps"]
    if code == 0:  # sys.exit(0) is a normal end
        assert detail.summary.status == "finished"
    else:
        assert detail.summary.status == "failed" and "SystemExit" in (detail.meta.get("error") or "")


def test_usage_errors_say_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run"]) == 2
    assert "name the training script" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.py")]) == 2
    assert "no such script" in capsys.readouterr().err
    assert main(["run", "-m"]) == 2
    assert "-m needs a module name" in capsys.readouterr().err
    (tmp_path / "t.py").write_text("")
    assert main(["run", "--stats-every", "0", str(tmp_path / "t.py")]) == 2
    assert "--stats-every must be 1 or more" in capsys.readouterr().err


def test_a_disabled_tracer_runs_the_script_and_says_nothing_was_recorded(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADTRACE_DISABLED", "1")
    out = tmp_path / "ran.txt"
    script = tmp_path / "t.py"
    script.write_text(f"import sys\nopen({str(out)!r}, 'w').write(' '.join(sys.argv[1:]))\n")
    assert main(["run", "--store", str(tmp_path / "runs.db"), str(script), "--flag", "1"]) == 0
    assert out.read_text() == "--flag 1"
    assert "tracing is disabled (GRADTRACE_DISABLED): nothing was recorded" in capsys.readouterr().err
