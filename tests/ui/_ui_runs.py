"""Real training runs for the UI tests.

Two tiny Keras models (Dense -> BatchNormalization -> Dropout -> Dense on
sklearn's digits) trained from the same initial weights on the same batches:

- ``fit-style``: a tape loop that calls ``model(x, training=True)`` (what fit does)
- ``tape-loop``: the same loop written the common wrong way, ``model(x)``, so
  BatchNormalization and Dropout run in inference mode and BN's moving
  statistics never change (seed 000 / 003).

``record(...)`` returns ``schema.Batch`` objects whose numbers the test
computed itself with TensorFlow: loss, per-variable gradient statistics and a
16-number random-projection sketch, the applied update, BN state changes and
the ``training`` value each layer's ``call`` received. ``traced(...)`` writes
the same trainings through ``gradtrace.trace`` when the tracer is available.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

SKETCH = 16
STEPS = 40
BATCH = 32


def _data() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype("float32"), y.astype("int32")


def _model(seed: int = 0) -> Any:
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu", name="dense"),
            keras.layers.BatchNormalization(name="batch_normalization"),
            keras.layers.Dropout(0.3, name="dropout"),
            keras.layers.Dense(10, name="logits"),
        ]
    )


def _projection(shape: tuple[int, ...]) -> np.ndarray:
    # Fixed per shape, so two runs' sketches of the same variable are comparable.
    seed = int.from_bytes(hashlib.sha256(repr(shape).encode()).digest()[:4], "little")
    n = int(np.prod(shape)) if shape else 1
    return np.random.default_rng(seed).standard_normal((n, SKETCH)) / np.sqrt(SKETCH)


def record(run_id: str, name: str, training: bool | None, project: str = "digits", steps: int = STEPS) -> list[Any]:
    """Train one run and return its records as ``schema.Batch`` objects (several batches)."""
    import keras
    import tensorflow as tf
    from gradtrace import schema

    x_all, y_all = _data()
    model = _model()
    opt = keras.optimizers.SGD(learning_rate=0.05)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    variables, layers = [], []
    index = 0
    for li, layer in enumerate(model.layers):
        layers.append(schema.LayerInfo(index=li, name=layer.name, class_name=type(layer).__name__,
                                       training_dependent=type(layer).__name__ in ("BatchNormalization", "Dropout")))
        for w in layer.weights:
            short = w.path.rsplit("/", 1)[-1]
            variables.append(schema.VariableInfo(
                index=index, name=w.path, path=w.path, shape=list(w.shape), dtype=str(w.dtype),
                trainable=w.trainable, layer=layer.name, layer_class=type(layer).__name__, layer_index=li,
                struct_key=f"{li}:{type(layer).__name__}/{short}{list(w.shape)}",
            ))
            index += 1
    weights = [w for layer in model.layers for w in layer.weights]
    trainable = [w for w in weights if w.trainable]
    index_of = {id(w): i for i, w in enumerate(weights)}
    mode_layers = [layer.name for layer in model.layers if type(layer).__name__ in ("BatchNormalization", "Dropout")]
    t0 = 1_700_000_000.0
    info = schema.RunInfo(
        run_id=run_id, name=name, project=project, status="running", keras_flavour="keras3", execution_mode="eager",
        variables=variables, layers=layers,
        optimizer={"class": "SGD", "config": {"learning_rate": 0.05, "momentum": 0.0}},
        loss={"class": "SparseCategoricalCrossentropy", "name": "sparse_categorical_crossentropy",
              "reduction": "sum_over_batch_size", "from_logits": True},
        metrics=[{"name": "accuracy", "class": "SparseCategoricalAccuracy"}],
        versions={"tensorflow": tf.__version__, "keras": keras.__version__},
        seeds={"keras": 0},
    )
    recs = []
    for step in range(steps):
        lo = (step * BATCH) % (len(x_all) - BATCH)
        x, y = x_all[lo : lo + BATCH], y_all[lo : lo + BATCH]
        before = [w.numpy().copy() for w in weights]
        with tf.GradientTape() as tape:
            out = model(x) if training is None else model(x, training=training)
            loss = loss_fn(y, out)
        grads = tape.gradient(loss, trainable)
        opt.apply_gradients(zip(grads, trainable, strict=True))
        after = [w.numpy() for w in weights]
        vs, ss = [], []
        for w, g in zip(trainable, grads, strict=True):
            i = index_of[id(w)]
            g = g.numpy().astype("float64")
            d = after[i] - before[i]
            vs.append(schema.VarStep(
                v=i, grad=True, norm=float(np.linalg.norm(g)), mean=float(g.mean()), min=float(g.min()),
                max=float(g.max()), nonfinite=int((~np.isfinite(g)).sum()),
                sketch=[float(s) for s in g.reshape(-1) @ _projection(tuple(g.shape))],
                applied=bool(np.any(d != 0)), update_norm=float(np.linalg.norm(d)),
                weight_norm=float(np.linalg.norm(after[i])),
            ))
        for w in weights:
            if w.trainable:
                continue
            i = index_of[id(w)]
            d = after[i] - before[i]
            ss.append(schema.StateStep(v=i, changed=bool(np.any(d != 0)), delta_norm=float(np.linalg.norm(d))))
        recs.append(schema.StepRecord(
            step=step, wall_time=t0 + step * 0.05, mode="eager", loss=float(loss), target_shape=[],
            batch_size=BATCH, lr=0.05, iterations=step + 1,
            x_fp=[float(x.sum()), float((x * x).sum())], y_fp=[float(y.sum())],
            modes={n: training for n in mode_layers}, vars=vs, state=ss,
        ))
    batches = []
    per = 16
    for k in range(0, steps, per):
        last = k + per >= steps
        run = info.model_copy(update={"revision": k // per, "status": "finished" if last else "running"})
        if last:
            from datetime import timedelta

            run = run.model_copy(update={"ended_at": run.started_at + timedelta(seconds=steps * 0.05)})
        batches.append(schema.Batch(batch_id=f"{run_id}-{k}", run=run, steps=recs[k : k + per]))
    return batches


def synthetic_long(run_id: str, steps: int, n_vars: int, project: str = "digits", stats_every: int = 1) -> list[Any]:
    """A long run of made-up numbers (for the downsampling figure), with one NaN step.

    ``stats_every`` > 1: per-variable statistics on every such step only, as the tracer's
    default cadence records them (the steps between carry ``n_grad`` and no ``vars``)."""
    from gradtrace import schema

    rng = np.random.default_rng(0)
    variables = [schema.VariableInfo(index=i, name=f"layer_{i // 2}/{'kernel' if i % 2 == 0 else 'bias'}",
                                     shape=[8, 8] if i % 2 == 0 else [8], layer=f"layer_{i // 2}", layer_index=i // 2,
                                     layer_class="Dense") for i in range(n_vars)]
    layers = [schema.LayerInfo(index=i, name=f"layer_{i}", class_name="Dense") for i in range((n_vars + 1) // 2)]
    # one layer called with a flag off its default, as extra.call_args records it
    calls = {"attention": {"class": "MultiHeadAttention", "calls": [{"use_causal_mask": True}],
                           "defaults": {"use_causal_mask": False}},
             "plain": {"class": "Dense", "calls": [{}], "defaults": {}}}
    info = schema.RunInfo(run_id=run_id, name=run_id, project=project, status="finished",
                          variables=variables, layers=layers, extra={"call_args": calls})
    batches = []
    per = 2000
    for k in range(0, steps, per):
        recs = []
        for s in range(k, min(steps, k + per)):
            norms = np.exp(-s / steps + rng.normal(0, 0.3, n_vars))
            loss = float(np.exp(-3 * s / steps) + rng.normal(0, 0.01))
            if s == steps // 2:
                loss = float("nan")
            if s % stats_every:
                recs.append(schema.StepRecord(step=s, loss=loss, n_grad=n_vars))
                continue
            recs.append(schema.StepRecord(step=s, loss=loss, vars=[
                schema.VarStep(v=i, norm=float(norms[i]), update_norm=float(norms[i]) * 0.01, weight_norm=1.0)
                for i in range(n_vars)]))
        batches.append(schema.Batch(batch_id=f"{run_id}-{k}", run=info, steps=recs))
    return batches


def traced(url: str, project: str = "digits", steps: int = STEPS) -> dict[str, str]:
    """The same two trainings recorded by ``gradtrace.trace`` into ``url``: ``model.fit``
    and a hand-written tape loop that forgets ``training=True``. Returns name -> run id."""
    import gradtrace
    import keras
    import tensorflow as tf

    x, y = _data()
    n = steps * BATCH
    model = _model()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    with gradtrace.trace(run="fit", project=project, store=url) as fit_run:
        model.fit(x[:n], y[:n], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)

    model = _model()
    opt = keras.optimizers.SGD(learning_rate=0.05)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with gradtrace.trace(run="tape-loop", project=project, store=url) as tape_run:
        for s in range(steps):
            xb, yb = x[s * BATCH : (s + 1) * BATCH], y[s * BATCH : (s + 1) * BATCH]
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    return {"fit": fit_run.info.run_id, "tape-loop": tape_run.info.run_id}


def fine_tuned(url: str, project: str = "finetune", steps: int = 4) -> tuple[str, int]:
    """``fit()`` of the head on a frozen first Dense layer, then of the whole model after
    unfreezing it and compiling again with another loss and EarlyStopping(restore_best_weights=True),
    traced as one run (``fine-tune``). Returns the run id and the step the second fit() call started at."""
    import gradtrace
    import keras

    x, y = _data()
    n = steps * BATCH
    model = _model()
    model.get_layer("dense").trainable = False
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with gradtrace.trace(run="fine-tune", project=project, store=url) as run:
        model.fit(x[:n], y[:n], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        second = int(model.optimizer.iterations.numpy())
        model.get_layer("dense").trainable = True
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01),
                      loss=keras.losses.CategoricalFocalCrossentropy(from_logits=True))
        # EarlyStopping sets the best epoch's weights back when fit() ends: a weight write
        model.fit(x[:n], keras.utils.to_categorical(y[:n], 10), batch_size=2 * BATCH, epochs=1, shuffle=False,
                  verbose=0, callbacks=[keras.callbacks.EarlyStopping(monitor="loss", restore_best_weights=True)])
        # the head's columns projected to norm <= 1 by hand: the script's own write of a trained variable
        kernel = model.layers[-1].kernel
        kernel.assign(keras.ops.convert_to_tensor(keras.constraints.MaxNorm(1.0)(kernel)))
        model(x[:BATCH], training=True)  # a forward pass in training mode outside the steps
    return run.info.run_id, second
