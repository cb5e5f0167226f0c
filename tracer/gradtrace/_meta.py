"""Run metadata: versions, Keras flavour, variable inventory, optimizer/loss/metric config, fingerprints.

Pure functions over Keras/TensorFlow objects. TensorFlow and Keras are imported
lazily inside the functions that need them, and every function works for both
Keras 3 (``keras``, ``tf.keras`` in TF >= 2.16) and legacy tf-keras (``tf_keras``,
``TF_USE_LEGACY_KERAS=1``), which can live side by side in one process: the
flavour is decided per object, from the modules of its class hierarchy.

The variable inventory is what two runs are aligned on: models are walked
depth-first, layers in order, each layer's own variables in creation order,
shared layers once. A variable's ``struct_key`` (``"3:Dense/kernel[128,10]"``)
is built from the layer's position, the layer class, the variable's short name
and its shape, never from TensorFlow's auto-generated names, so ``dense_3`` in
one run and ``dense_7`` in another get the same key.

Example::

    >>> import keras
    >>> from gradtrace import _meta
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> variables, layers, by_id = _meta.variable_inventory([model])
    >>> [v.struct_key for v in variables]
    ['1:Dense/kernel[4,2]', '1:Dense/bias[2]']
"""

from __future__ import annotations

import datetime
import hashlib
import inspect
import logging
import os
import platform
import socket
import sys
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from gradtrace import schema

logger = logging.getLogger("gradtrace.meta")

Flavour = Literal["keras3", "tf_keras"]

_DISTS = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tensorflow-intel"),
    "keras": ("keras",),
    "tf_keras": ("tf-keras", "tf_keras"),
    "numpy": ("numpy",),
}
# Layers that hold no state and do not compute: left out so that Sequential and
# Functional versions of one architecture number their layers alike.
_SKIPPED_LAYERS = frozenset({"InputLayer"})


# --------------------------------------------------------------------------- versions


def versions() -> dict[str, str]:
    """Versions of python, tensorflow, keras, tf_keras, numpy and gradtrace (those installed)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for key, dists in _DISTS.items():
        module = sys.modules.get(key)
        version = getattr(module, "__version__", None) if module is not None else None
        if not isinstance(version, str):
            version = None
            for dist in dists:
                try:
                    version = metadata.version(dist)
                    break
                except metadata.PackageNotFoundError:
                    continue
        if version:
            out[key] = version
    try:
        import gradtrace

        out["gradtrace"] = gradtrace.__version__
    except Exception:  # a partially installed package must not stop a run
        try:
            out["gradtrace"] = metadata.version("gradtrace")
        except metadata.PackageNotFoundError:
            pass
    return out


# --------------------------------------------------------------------------- flavour


def keras_flavour(obj: Any) -> Flavour | None:
    """``"keras3"`` or ``"tf_keras"`` for a Keras object (model, layer, optimizer, loss, variable).

    Decided by the modules of the object's class hierarchy, so a user subclass
    defined in ``__main__`` still gets its base's flavour. None for anything else
    (a plain ``tf.Variable``, a function, a string).
    """
    cls = obj if isinstance(obj, type) else type(obj)
    for klass in getattr(cls, "__mro__", (cls,)):
        module = getattr(klass, "__module__", "") or ""
        root = module.split(".", 1)[0]
        if root == "tf_keras":
            return "tf_keras"
        if root == "keras":
            return "keras3"
    if callable(obj) and not isinstance(obj, type):
        module = getattr(obj, "__module__", "") or ""
        root = module.split(".", 1)[0]
        if root == "tf_keras":
            return "tf_keras"
        if root == "keras":
            return "keras3"
    return None


# --------------------------------------------------------------------------- inventory


def _short_name(v: Any) -> str:
    name = str(getattr(v, "name", "") or "")
    name = name.rsplit("/", 1)[-1]
    return name.split(":", 1)[0] or "var"


def _shape(v: Any) -> list[int | None]:
    try:
        return [None if d is None else int(d) for d in v.shape]
    except (TypeError, ValueError):  # unknown rank
        return []


def _dtype(v: Any) -> str:
    dtype = getattr(v, "dtype", "float32")
    return str(getattr(dtype, "name", dtype))


def _sublayers(layer: Any) -> list[Any]:
    """Direct sublayers in tracking (attribute assignment / model) order."""
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is not None:
        # keras/src/layers/layer.py Layer._flatten_layers and
        # tf_keras/src/engine/base_layer.py Layer._flatten_layers: both yield
        # tracked sublayers in order, deduplicated; include_self/recursive as named.
        try:
            return list(flatten(include_self=False, recursive=False))
        except TypeError:
            pass
    return list(getattr(layer, "layers", []) or [])


def variables_of(layer: Any) -> list[Any]:
    """``layer.variables``, or [] while it has none: an unbuilt tf-keras model raises
    (tf_keras/src/engine/training.py ``Model._assert_weights_created``). Only variables:
    tf-keras lists a lookup layer's table there too, as a weight handler without a shape
    (tf_keras/src/layers/preprocessing/index_lookup.py ``VocabWeightHandler``:
    StringLookup, IntegerLookup, TextVectorization)."""
    try:
        found = list(layer.variables)
    except Exception:  # a layer that is not built yet
        return []
    return [v for v in found if hasattr(v, "shape")]


def trainable_ids(models: Any) -> set[int] | None:
    """id()s (see :func:`_inner_ids`) of the variables ``models`` train, or None if unknown.

    Trainability is membership in the model's ``trainable_variables``, not the
    variable's own flag: tf-keras freezes a layer (``layer.trainable = False``) by
    leaving it out of ``trainable_weights`` while its ``tf.Variable`` keeps
    ``trainable=True`` (tf_keras/src/engine/base_layer.py ``Layer.trainable_weights``);
    Keras 3 sets both (keras/src/layers/layer.py ``Layer.trainable`` setter).
    """
    if not isinstance(models, list | tuple):
        models = [models]
    ids: set[int] = set()
    for model in models:
        try:
            tvars = list(model.trainable_variables)
        except Exception:  # not a Keras model (or not built): the variables' own flags decide
            return None
        for v in tvars:
            ids.update(_inner_ids(v))
    return ids


def is_trainable(v: Any, trained: set[int] | None) -> bool:
    """Whether ``v`` is trained, by membership in ``trained`` (:func:`trainable_ids`) when known."""
    if trained is None:
        return bool(getattr(v, "trainable", True))
    return any(i in trained for i in _inner_ids(v))


def _inner_ids(v: Any) -> list[int]:
    """id() of ``v`` and of the tf.Variable(s) it wraps (Keras 3 Variable, AutoCastVariable)."""
    ids = [id(v)]
    for _ in range(3):
        inner = getattr(v, "_value", None)
        if inner is None or not hasattr(inner, "shape") or not hasattr(inner, "assign"):
            inner = getattr(v, "_variable", None)
        if inner is None or inner is v:
            break
        ids.append(id(inner))
        v = inner
    return ids


def branches_on_training(layer: Any) -> bool:
    """Whether ``layer.call`` uses ``training`` for more than handing it on as
    ``sublayer(..., training=training)``: ``if training:``, ``tf.cond(training, ...)``.

    A container that only hands it on behaves as its leaves do; one that branches on it
    behaves differently itself (and may hide its leaves in one mode). Unreadable source:
    False (its leaves still tell).
    """
    return _reads_training(type(layer), beyond_passing=True)


def training_dependent(layer: Any) -> bool:
    """Whether ``layer`` behaves differently with ``training=True`` and ``False``.

    Decided generically, not from a list of classes: the layer's ``call`` takes a
    ``training`` argument *and its body reads it*. Keras 3's ``Dense.call`` takes
    ``training`` and ignores it; ``Dropout``/``BatchNormalization`` (and a user's
    layer that passes ``training`` on) read it. When the source cannot be read the
    signature alone decides.
    """
    return _reads_training(type(layer), beyond_passing=False)


_READS_TRAINING: dict[tuple[type, bool], bool] = {}  # per class: its source is parsed once
_DIRECT_CALLS: dict[type, tuple[str, ...]] = {}


def direct_call_attrs(layer: Any) -> tuple[str, ...]:
    """The attributes ``X`` whose ``call`` the layer's ``call`` runs itself (``self.X.call(...)``
    instead of ``self.X(...)``): that layer's ``__call__``, where Keras resolves ``training``,
    never runs (keras/src/layers/rnn/time_distributed.py ``TimeDistributed.call`` runs
    ``self.layer.call``; keras/src/models/sequential.py ``Sequential.call`` runs
    ``self._functional.call``, whose layers are called as usual)."""
    cls = type(layer)
    cached = _DIRECT_CALLS.get(cls)
    if cached is None:
        cached = _DIRECT_CALLS[cls] = _direct_call_attrs(cls)
    return cached


def _direct_call_attrs(cls: type) -> tuple[str, ...]:
    import ast
    import textwrap

    call = getattr(cls, "call", None)
    if call is None:
        return ()
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(inspect.unwrap(call))))
    except (OSError, TypeError, SyntaxError, IndentationError):
        return ()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "call":
            owner = node.func.value
            if (isinstance(owner, ast.Attribute) and isinstance(owner.value, ast.Name)
                    and owner.value.id == "self" and owner.attr not in found):
                found.append(owner.attr)
    return tuple(found)


def _reads_training(cls: type, beyond_passing: bool) -> bool:
    key = (cls, beyond_passing)
    cached = _READS_TRAINING.get(key)
    if cached is None:
        cached = _READS_TRAINING[key] = _call_reads_training(cls, beyond_passing)
    return cached


def _call_reads_training(cls: type, beyond_passing: bool = False) -> bool:
    import ast
    import textwrap

    call = getattr(cls, "call", None)
    if call is None:
        return False
    try:
        params = inspect.signature(call).parameters
    except (TypeError, ValueError):
        return False
    if "training" not in params:
        return False
    try:
        source = textwrap.dedent(inspect.getsource(inspect.unwrap(call)))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return not beyond_passing
    func = next(
        (n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None
    )
    if func is None:
        return not beyond_passing
    passed: set[int] = set()
    if beyond_passing:  # `training=training` handed to a call
        passed = {id(n.value) for stmt in func.body for n in ast.walk(stmt)
                  if isinstance(n, ast.keyword) and n.arg == "training"}
    return any(
        isinstance(node, ast.Name) and node.id == "training" and isinstance(node.ctx, ast.Load)
        and id(node) not in passed
        for stmt in func.body
        for node in ast.walk(stmt)
    )


def _config(obj: Any) -> Any:
    """``obj.get_config()`` without the warnings it gives: Keras 3 serialises a callable
    argument and warns on a ``lambda`` (keras/src/saving/serialization_lib.py
    ``serialize_keras_object``: a learning rate given as a lambda, a MultiOptimizer's
    selector); describing the run adds nothing to the script's own warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return obj.get_config()


# Keys of a layer's get_config() that describe its identity or its initial values, not its
# behaviour (the initial weights are compared by their fingerprint).
_CONFIG_SKIP = {"name", "trainable", "dtype", "dtype_policy", "autocast", "build_config", "compile_config",
                "seed", "batch_input_shape", "batch_shape", "input_shape", "module", "registered_name"}
MAX_LAYER_CONFIG = 4000  # characters of JSON; a larger config (a lookup table) is not kept


def _raw_config(layer: Any) -> dict[str, Any] | None:
    try:
        config = _config(layer)
    except Exception:  # noqa: BLE001 - a layer without a config is just not compared
        return None
    return config if isinstance(config, dict) else None


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - values without a plain equality (arrays) count as different
        return False


def _is_layer_spec(value: Any) -> bool:
    """A serialised layer (``{"class_name", "config", ...}``) or a list of them: a wrapper's
    sublayer inside its config (Bidirectional's ``layer``, a recurrent layer's ``cell``)."""
    if isinstance(value, list | tuple):
        return bool(value) and all(_is_layer_spec(v) for v in value)
    return isinstance(value, dict) and "class_name" in value and isinstance(value.get("config"), dict)


def _value_key(value: Any) -> str:
    """A constant, default or closure value by its value where it is a plain one, else by its
    type (a repr with a memory address would differ from run to run)."""
    if value is None or isinstance(value, bool | int | float | complex | str | bytes):
        return repr(value)
    if isinstance(value, tuple | list | frozenset):
        return f"{type(value).__name__}({','.join(_value_key(v) for v in value)})"
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def _code_key(code: Any) -> tuple[Any, ...]:
    """What a code object computes, without where it was written: its bytecode, constants
    (nested code objects the same way), global and attribute names and argument counts; not
    its file, line numbers, qualified name or its arguments' and locals' names (the bytecode
    reads them by position)."""
    consts = tuple(_code_key(c) if inspect.iscode(c) else _value_key(c) for c in code.co_consts)
    return (code.co_code, consts, code.co_names, code.co_nlocals, len(code.co_freevars), code.co_argcount,
            code.co_kwonlyargcount, code.co_flags & ~inspect.CO_NESTED)  # written in a function or not


def _function_config(fn: Any) -> dict[str, Any] | None:
    """A plain Python function a layer holds (a Lambda's ``function``, its ``output_shape`` or
    ``mask``, an activation given as a lambda; not one get_config() names by a string),
    described by what it computes: get_config() serialises it with ``marshal``, whose bytes
    carry the script's file name and line numbers, so the same ``lambda`` written in two scripts
    looked like two layer arguments. A digest of the code (:func:`_code_key`), its defaults and
    its closure's values; None for anything else (a Keras object, a builtin)."""
    code = getattr(fn, "__code__", None)
    if not inspect.isfunction(fn) or code is None:
        return None
    try:
        cells = tuple(_value_key(c.cell_contents) for c in (fn.__closure__ or ()))
    except ValueError:  # an empty cell
        cells = ("<empty>",)
    key = repr((_code_key(code), _value_key(fn.__defaults__), cells))
    out: dict[str, Any] = {"python_function": hashlib.sha256(key.encode()).hexdigest()[:16]}
    source = _function_source(fn)
    if source:
        out["python_source"] = source  # shown to the user, not compared
    return out


def _function_source(fn: Any, limit: int = 160) -> str | None:
    """The text a function was written as, on one line: the ``lambda`` itself for a lambda
    (not the whole line around it), the ``def`` for a function; None where the source cannot
    be read (code typed into a console, exec'd strings)."""
    import ast
    import textwrap

    try:
        lines, _ = inspect.getsourcelines(fn)
    except (OSError, TypeError):
        return None
    text = textwrap.dedent("".join(lines))
    segment = None
    if fn.__name__ == "<lambda>":
        try:
            tree = ast.parse(text)
        except SyntaxError:  # a lambda inside an expression cut off by getsourcelines
            tree = None
        if tree is not None:
            argc = fn.__code__.co_argcount
            names = list(fn.__code__.co_varnames[:argc])
            found = [n for n in ast.walk(tree) if isinstance(n, ast.Lambda)
                     and [a.arg for a in n.args.args] == names]
            if len(found) == 1:
                segment = ast.get_source_segment(text, found[0])
    text = " ".join((segment or text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _initializer_name(spec: Any) -> str:
    """A serialised initializer as ``Class(arg=value, ...)`` without its seed (``"zeros"`` as is)."""
    if isinstance(spec, dict) and spec.get("class_name"):
        args = {k: v for k, v in (spec.get("config") or {}).items() if k != "seed"}
        inner = ", ".join(f"{k}={v!r}" for k, v in args.items())
        return f"{spec['class_name']}({inner})" if inner else str(spec["class_name"])
    return str(spec)


def layer_config(layer: Any, subs: list[Any] | None = None) -> dict[str, Any] | None:
    """What a layer was built with (``get_config()`` without names, dtypes, initializers
    and seeds), or None for an unreadable or oversized config.

    For a layer holding ``subs`` (a wrapper such as Bidirectional or TimeDistributed, a
    recurrent layer around its cell), its own arguments only: its sublayers' serialised
    configs and the arguments a direct sublayer repeats with the same value are left out
    (the sublayer's own config carries them). A model's config repeats its layers' and is
    not asked for (see :func:`variable_inventory`)."""
    import json

    config = _raw_config(layer)
    if config is None:
        return None
    out = {k: v for k, v in config.items() if k not in _CONFIG_SKIP and not k.endswith("_initializer")}
    inits = {k: _initializer_name(v) for k, v in config.items() if k.endswith("_initializer") and v is not None}
    for k in list(out):
        # a function serialised as its code (a lambda, a script's own function), not by a name
        described = None if isinstance(out[k], str) else _function_config(getattr(layer, k, None))
        if described is not None:
            out[k] = described
    if subs:
        inner = [c for c in (_raw_config(x) for x in subs) if c is not None]
        out = {k: v for k, v in out.items()
               if not _is_layer_spec(v) and not any(k in c and _equal(c[k], v) for c in inner)}
        if not out:
            return None
    if inits:  # which initializer made the weights: named when two runs start apart (init_mismatch)
        out["_initializers"] = inits
    out = _jsonable(out)
    try:
        if len(json.dumps(out, allow_nan=False)) > MAX_LAYER_CONFIG:
            return None
    except (TypeError, ValueError):
        return None
    return out


def variable_inventory(
    models: Any, configs: dict[str, dict[str, Any]] | None = None,
) -> tuple[list[schema.VariableInfo], list[schema.LayerInfo], dict[int, int]]:
    """The structural inventory of ``models`` (one model or a list).

    Returns ``(variables, layers, by_id)``: ``by_id`` maps ``id()`` of each
    variable (and of the ``tf.Variable`` it wraps) to its index. Layers are
    walked depth-first in order; each layer lists the variables it owns itself
    (not its sublayers'), in creation order; a layer or variable reached twice
    (shared) is listed once, where first met.
    """
    if not isinstance(models, list | tuple):
        models = [models]
    variables: list[schema.VariableInfo] = []
    layers: list[schema.LayerInfo] = []
    by_id: dict[int, int] = {}
    seen_layers: set[int] = set()
    trained = trainable_ids(models)

    def add_var(v: Any, layer: Any, layer_index: int, layer_class: str) -> None:
        ids = _inner_ids(v)
        if any(i in by_id for i in ids):
            return
        idx = len(variables)
        shape = _shape(v)
        short = _short_name(v)
        dims = ",".join("?" if d is None else str(d) for d in shape)
        path = getattr(v, "path", None)
        variables.append(
            schema.VariableInfo(
                index=idx,
                name=str(path or getattr(v, "name", short)),
                path=str(path) if path else None,
                shape=shape,
                dtype=_dtype(v),
                trainable=is_trainable(v, trained),
                layer=str(getattr(layer, "name", "")) or None,
                layer_class=layer_class,
                layer_index=layer_index,
                struct_key=f"{layer_index}:{layer_class}/{short}[{dims}]",
            )
        )
        for i in ids:
            by_id[i] = idx

    def walk(layer: Any) -> None:
        if id(layer) in seen_layers:
            return
        seen_layers.add(id(layer))
        cls = type(layer).__name__
        subs = [s for s in _sublayers(layer) if s is not layer]
        if cls in _SKIPPED_LAYERS and not variables_of(layer):
            for sub in subs:
                walk(sub)
            return
        index = len(layers)
        if configs is not None and not (subs and (hasattr(layer, "fit") or hasattr(layer, "layers"))):
            config = layer_config(layer, subs)  # a leaf, or a wrapper's own arguments (not a model's)
            if config is not None:
                configs[str(index)] = config
        layers.append(
            schema.LayerInfo(
                index=index,
                name=str(getattr(layer, "name", cls)),
                class_name=cls,
                training_dependent=training_dependent(layer),
                struct_key=f"{index}:{cls}",
            )
        )
        inner: set[int] = set()
        for sub in subs:
            for v in variables_of(sub):
                inner.update(_inner_ids(v))
        for v in variables_of(layer):
            if id(v) not in inner:
                add_var(v, layer, index, cls)
        for sub in subs:
            walk(sub)

    for model in models:
        walk(model)
    return variables, layers, by_id


# --------------------------------------------------------------------------- optimizer / loss / metrics


def _jsonable(value: Any, depth: int = 0) -> Any:
    """A JSON-able copy: numpy/tensor scalars to numbers, objects to their config or name."""
    if depth > 12:
        return repr(value)[:200]
    # Exact built-in types only: a subclass (a tracked str, an IntEnum, a numpy float64)
    # would be copied through __reduce__ by the exporter thread's snapshot.
    if value is None or isinstance(value, bool):
        return None if value is None else bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)  # NaN/Inf are encoded by the schema's JSON
    if isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if isinstance(value, list | tuple | set):
        return [_jsonable(v, depth + 1) for v in value]
    item = getattr(value, "item", None)
    numpy = getattr(value, "numpy", None)
    if numpy is not None and callable(numpy):
        try:
            value = numpy()
            item = getattr(value, "item", None)
        except Exception:
            pass
    if item is not None and callable(item) and getattr(value, "size", 2) == 1:
        try:
            return _jsonable(item(), depth + 1)
        except Exception:
            pass
    tolist = getattr(value, "tolist", None)
    if tolist is not None and callable(tolist):
        try:
            return _jsonable(tolist(), depth + 1)
        except Exception:
            pass
    get_config = getattr(value, "get_config", None)
    if get_config is not None and callable(get_config):
        try:
            return {"class": type(value).__name__, "config": _jsonable(_config(value), depth + 1)}
        except Exception:
            pass
    if callable(value):
        return getattr(value, "__name__", type(value).__name__)
    return repr(value)[:200]


def _as_float(value: Any) -> float | None:
    try:
        out = _jsonable(value)
        return float(out) if isinstance(out, int | float) and not isinstance(out, bool) else None
    except Exception:
        return None


_OPT_KEYS = (
    "momentum",
    "nesterov",
    "epsilon",
    "beta_1",
    "beta_2",
    "rho",
    "amsgrad",
    "clipnorm",
    "global_clipnorm",
    "clipvalue",
    "weight_decay",
    "use_ema",
    "ema_momentum",
    "gradient_accumulation_steps",
    "loss_scale_factor",
)


def keras3_loss_scale(opt: Any) -> Any:
    """The scale a Keras 3 LossScaleOptimizer applies now: its ``dynamic_scale`` variable once
    built, the Python ``initial_scale`` before (keras/src/optimizers/loss_scale_optimizer.py
    ``scale_loss``; in an eager loop the first ``scale_loss`` and the first ``apply`` come
    before ``build`` creates the variable, initialised to ``initial_scale``). None if neither."""
    scale = getattr(opt, "dynamic_scale", None) if getattr(opt, "built", True) else None
    return scale if scale is not None else getattr(opt, "initial_scale", None)


def optimizer_info(opt: Any) -> dict[str, Any]:
    """Class and full configuration of an optimizer (JSON-able).

    ``{"class", "flavour", "config", "learning_rate", "learning_rate_schedule",
    <the usual hyper-parameters>, "loss_scale", "inner"}``: ``learning_rate`` is
    the current value for a constant rate; a schedule appears as
    ``learning_rate_schedule`` (class and config). A LossScaleOptimizer describes
    its scaling under ``loss_scale`` and its inner optimizer under ``inner``.
    """
    out: dict[str, Any] = {"class": type(opt).__name__, "flavour": keras_flavour(opt)}
    try:
        config = _jsonable(_config(opt))
    except Exception as exc:
        logger.debug("get_config() of %s failed: %s", type(opt).__name__, exc)
        config = {}
    out["config"] = config
    for key in _OPT_KEYS:
        if isinstance(config, dict) and key in config:
            out[key] = config[key]
        elif hasattr(opt, key) and not callable(getattr(opt, key, None)):
            out[key] = _jsonable(getattr(opt, key))
    lr_config = config.get("learning_rate") if isinstance(config, dict) else None
    raw_lr = getattr(opt, "_learning_rate", None)
    if raw_lr is None:
        # tf_keras/src/optimizers/legacy/optimizer_v2.py keeps hyper-parameters in `_hyper`.
        raw_lr = (getattr(opt, "_hyper", None) or {}).get("learning_rate")
    schedule = raw_lr if raw_lr is not None and hasattr(raw_lr, "get_config") and callable(raw_lr) else None
    if schedule is not None or isinstance(lr_config, dict):
        if schedule is not None:
            out["learning_rate_schedule"] = {
                "class": type(schedule).__name__,
                "config": _jsonable(_config(schedule)),
            }
        else:
            out["learning_rate_schedule"] = {
                "class": lr_config.get("class_name"),  # type: ignore[union-attr]
                "config": lr_config.get("config"),  # type: ignore[union-attr]
            }
        # the schedule's value at step 0; the rate in effect is recorded per step
        initial = None
        if schedule is not None:
            try:
                initial = _as_float(schedule(0))
            except Exception as exc:
                logger.debug("schedule %s not evaluable at 0: %s", type(schedule).__name__, exc)
        out["learning_rate_schedule"]["initial"] = initial
        out["learning_rate"] = initial
    else:
        out["learning_rate"] = _as_float(lr_config if lr_config is not None else getattr(opt, "learning_rate", None))
    inner = getattr(opt, "inner_optimizer", None)
    if inner is not None:
        scale: dict[str, Any] = {}
        for key in ("dynamic", "initial_scale", "dynamic_growth_steps"):
            if isinstance(config, dict) and key in config:
                scale[key] = config[key]
        for attr in ("dynamic_scale", "loss_scale"):  # Keras 3 / tf-keras current scale
            if hasattr(opt, attr):
                current = _as_float(getattr(opt, attr))
                if current is not None:
                    scale["current"] = current
                    break
        out["loss_scale"] = scale
        out["inner"] = optimizer_info(inner)
        if out.get("learning_rate") is None and "learning_rate_schedule" not in out:
            out["learning_rate"] = out["inner"].get("learning_rate")
    return out


_COMPILE_DEFAULT_REDUCTION = "sum_over_batch_size"


def loss_info(loss: Any, flavour: Flavour | None = None) -> dict[str, Any] | None:
    """Class, name, reduction and ``from_logits`` of a loss object, function or name.

    Accepts what ``compile(loss=...)`` accepts (a string resolves through the
    Keras of ``flavour``, Keras 3 by default; ``compile`` wraps a string or a
    function so its reduction is ``sum_over_batch_size``, reported as such with
    ``"wrapped": True``), a compiled model (its ``loss``), or a dict/list of
    these (``{"class": "dict"|"list", "items": ...}``). ``reduction`` of a plain
    function called directly is None: it returns one value per sample.
    """
    if loss is None:
        return None
    if hasattr(loss, "compile") and hasattr(loss, "layers"):  # a model: what compile() got
        model_flavour = keras_flavour(loss)
        return loss_info(getattr(loss, "loss", None), model_flavour)
    if isinstance(loss, dict):
        return {"class": "dict", "items": {str(k): loss_info(v, flavour) for k, v in loss.items()}}
    if isinstance(loss, list | tuple):
        return {"class": "list", "items": [loss_info(v, flavour) for v in loss]}
    if isinstance(loss, str):
        fn = _resolve_loss_name(loss, flavour)
        info = loss_info(fn, flavour) if fn is not None else {"class": None, "name": loss}
        assert info is not None
        info.update(
            {"name": loss, "reduction": _COMPILE_DEFAULT_REDUCTION, "wrapped": True, "given": "string"}
        )
        return info
    cls = type(loss).__name__
    if inspect.isfunction(loss) or inspect.isbuiltin(loss) or not hasattr(loss, "get_config"):
        name = getattr(loss, "__name__", cls)
        return {
            "class": "function",
            "name": name,
            "fn": name,
            "reduction": None,
            "from_logits": _default_kwarg(loss, "from_logits"),
            "flavour": keras_flavour(loss),
        }
    try:
        config = _jsonable(_config(loss))
    except Exception:
        config = {}
    config = config if isinstance(config, dict) else {}
    fn = getattr(loss, "fn", None)
    fn_kwargs = getattr(loss, "_fn_kwargs", None) or {}
    from_logits = config.get("from_logits", fn_kwargs.get("from_logits"))
    if from_logits is None and fn is not None:
        from_logits = _default_kwarg(fn, "from_logits")
    reduction = config.get("reduction", getattr(loss, "reduction", None))
    reduction = (str(getattr(reduction, "value", reduction)) if reduction is not None
                 else "none" if "reduction" in config or hasattr(loss, "reduction") else None)  # Keras 3's None
    out = {
        "class": cls,
        "name": config.get("name", getattr(loss, "name", None)),
        "fn": getattr(fn, "__name__", None) if fn is not None else config.get("fn"),
        "reduction": reduction,
        "from_logits": from_logits,
        "flavour": keras_flavour(loss),
        "config": config,
    }
    if reduction == "auto":  # tf-keras: fit() and direct calls resolve it to this
        out["effective_reduction"] = _COMPILE_DEFAULT_REDUCTION
    return out


def _default_kwarg(fn: Any, name: str) -> Any:
    try:
        param = inspect.signature(fn).parameters.get(name)
    except (TypeError, ValueError):
        return None
    if param is None or param.default is inspect.Parameter.empty:
        return None
    return param.default


def _resolve_loss_name(name: str, flavour: Flavour | None) -> Any:
    try:
        if flavour == "tf_keras":
            import tf_keras

            return tf_keras.losses.get(name)
        import keras

        return keras.losses.get(name)
    except Exception:
        return None


def metric_info(model: Any) -> list[dict[str, Any]]:
    """The metric objects a compiled model resolved (after its first train step).

    ``"accuracy"`` becomes e.g. ``SparseCategoricalAccuracy`` once the labels'
    shape is known. Keras 3: ``model._compile_metrics.metrics``; tf-keras:
    ``model.compiled_metrics.metrics``. Empty before the first step.
    """
    # keras/src/trainers/trainer.py Trainer.compile stores a CompileMetrics in
    # `_compile_metrics`; tf_keras/src/engine/training.py Model.compile a
    # MetricsContainer in `compiled_metrics`. Both expose `.metrics` once built.
    container = getattr(model, "_compile_metrics", None) or getattr(model, "compiled_metrics", None)
    if container is None:
        return []
    try:
        metrics = list(container.metrics)
    except Exception:
        return []
    out = []
    for m in metrics:
        fn = getattr(m, "_fn", None)
        out.append(
            {
                "name": str(getattr(m, "name", type(m).__name__)),
                "class": type(m).__name__,
                "fn": getattr(fn, "__name__", None) if fn is not None else None,
            }
        )
    return out


# --------------------------------------------------------------------------- fingerprints


def _array(v: Any) -> Any:
    import numpy as np

    value = v.numpy() if hasattr(v, "numpy") else v
    return np.ascontiguousarray(np.asarray(value))


def variable_fingerprints(variables: Iterable[Any], values: Mapping[int, Any] | None = None) -> list[str]:
    """A 16-hex fingerprint of each variable's value (dtype, shape and bytes).

    ``values``: id() of a variable (or of the tf.Variable it wraps) -> the value to use
    instead of its current one.
    """
    import numpy as np

    out = []
    for v in variables:
        kept = next((values[i] for i in _inner_ids(v) if i in values), None) if values else None
        arr = _array(v) if kept is None else np.ascontiguousarray(np.asarray(kept))
        out.append(array_fingerprint(arr))
    return out


def array_fingerprint(arr: Any) -> str:
    """The 16-hex fingerprint :func:`variable_fingerprints` gives a variable holding ``arr``
    (the comparator checks a recorded fingerprint against a constant with it)."""
    import numpy as np

    arr = np.ascontiguousarray(arr)
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def weights_fingerprint(variables: Iterable[Any]) -> str:
    """A stable hash of the values of ``variables`` in order: equal weights, equal fingerprint.

    Names play no part, so two identically initialised models with different
    auto-generated names fingerprint alike; dtype and shape do.
    """
    return combine_fingerprints(variable_fingerprints(variables))


def combine_fingerprints(fingerprints: Iterable[str]) -> str:
    """One fingerprint of per-variable fingerprints in order (what :func:`weights_fingerprint` returns)."""
    h = hashlib.sha256()
    n = 0
    for fp in fingerprints:
        h.update(fp.encode())
        n += 1
    return f"{n}:{h.hexdigest()[:32]}"


# --------------------------------------------------------------------------- environment


def _dtype_policy(flavour: Flavour | None) -> str | None:
    try:
        if flavour == "tf_keras":
            import tf_keras

            return str(tf_keras.mixed_precision.global_policy().name)
        import keras

        return str(keras.config.dtype_policy().name)
    except Exception:
        return None


def _seeds() -> dict[str, Any]:
    seeds: dict[str, Any] = {}
    try:
        # tensorflow/python/eager/context.py Context._seed holds tf.random.set_seed's value.
        from tensorflow.python.eager import context

        seed = context.global_seed()
        if seed is not None:
            seeds["tf_global_seed"] = int(seed)
    except Exception:
        pass
    if "keras" in sys.modules:
        try:
            # keras/src/utils/rng_utils.py set_random_seed stores it as a global attribute.
            from keras.src.backend.common import global_state

            seed = global_state.get_global_attribute("global_random_seed")
            if seed is not None:
                seeds["keras_seed"] = int(seed)
        except Exception:
            pass
    if os.environ.get("PYTHONHASHSEED"):
        seeds["python_hash_seed"] = os.environ["PYTHONHASHSEED"]
    try:
        import tensorflow as tf

        seeds["op_determinism"] = bool(tf.config.experimental.is_op_determinism_enabled())
    except Exception:
        pass
    return seeds


def environment_info(flavour: Flavour | None = None) -> dict[str, Any]:
    """Host, platform, dtype policy, distribution strategy and replicas, seeds, devices.

    Keys match :class:`~gradtrace.schema.RunInfo` fields (``host``,
    ``dtype_policy``, ``strategy``, ``replicas``, ``seeds``) plus ``extra``.
    """
    import tensorflow as tf

    out: dict[str, Any] = {"host": socket.gethostname(), "dtype_policy": _dtype_policy(flavour)}
    try:
        strategy = tf.distribute.get_strategy()
        out["strategy"] = type(strategy).__name__
        out["replicas"] = int(strategy.num_replicas_in_sync)
    except Exception:
        out["strategy"], out["replicas"] = None, None
    out["seeds"] = _seeds()
    extra: dict[str, Any] = {"platform": platform.platform()}
    try:
        extra["devices"] = sorted({d.device_type for d in tf.config.list_physical_devices()})
    except Exception:
        pass
    out["extra"] = extra
    return out


__all__ = [
    "environment_info",
    "keras_flavour",
    "loss_info",
    "metric_info",
    "combine_fingerprints",
    "optimizer_info",
    "variable_fingerprints",
    "variable_inventory",
    "versions",
    "weights_fingerprint",
]
