"""The optional arguments layers are called with (``use_causal_mask=True``, a ``mask`` given).

A layer's constructor arguments are its config (``RunInfo.layer_configs``); the flags passed
to its ``call`` are not, yet they change what it computes as much: a causal mask forgotten in
one script, an ``initial_state`` handed to a recurrent layer in one run only. This module is
called from the tracer's ``Layer.__call__`` wrapper (``_probes._make_layer_call``) with the
call's raw ``args``/``kwargs``, as the caller wrote them, before Keras resolves anything. It is
plain Python: eagerly it runs at every call, inside a ``tf.function`` once per trace, and it
adds no op to any graph.

Recorded, per layer, are the arguments of ``call`` that have a default (the inputs have none),
other than ``training`` (recorded per step as the layer's mode): a static Python scalar as
itself, a tensor as ``"<tensor>"`` (only the fact that it was given), anything else by its type.
An argument given its default value counts as not given. A layer called with none of them is
not listed; the first time one is given, the earlier plain calls count as a variant ``{}``. The result, in ``RunInfo.extra["call_args"]``::

    {layer name: {"class": "MultiHeadAttention",
                  "calls": [{"use_causal_mask": True}],       # distinct calls, first seen first
                  "defaults": {"use_causal_mask": False, ...}}}  # the signature's, encoded alike

Calls a Keras layer makes to its own sublayers (MultiHeadAttention's Softmax getting the
attention mask) follow from the outer call's arguments and are not recorded: only calls made
by a model's graph (Sequential, Functional), a user's code or a user's layer are.
"""

from __future__ import annotations

import inspect
import weakref
from typing import Any

MAX_LAYERS = 256
MAX_CALLS = 4  # distinct argument sets per layer
MAX_ARGS = 12  # arguments per set (signature order)
MAX_STR = 64
TENSOR = "<tensor>"


class _Options:
    """What a class's ``call`` takes besides its inputs (computed once per class)."""

    __slots__ = ("defaults", "library", "names", "positional", "required", "var_kw")

    def __init__(self, cls: type) -> None:
        call = getattr(cls, "call", None)
        self.positional: list[str | None] = []  # by position after self; None: not an option
        self.names: list[str] = []  # every positional parameter after self
        self.defaults: dict[str, Any] = {}
        self.var_kw = False
        self.required = 0  # leading positional parameters without a default (the inputs)
        module = getattr(call, "__module__", "") or ""
        # Keras's own layer (not a model): its sublayers' calls are its implementation.
        self.library = module.split(".", 1)[0] in ("keras", "tf_keras") and not hasattr(cls, "fit")
        try:
            params = list(inspect.signature(call).parameters.values())[1:]  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return
        leading = True
        for p in params:
            if p.kind is p.VAR_POSITIONAL:
                break
            if p.kind is p.VAR_KEYWORD:
                self.var_kw = True
                continue
            optional = p.default is not p.empty and p.name != "training"
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                self.positional.append(p.name if optional else None)
                self.names.append(p.name)
                if leading and p.default is p.empty:
                    self.required += 1
                else:
                    leading = False
            if optional:
                self.defaults[p.name] = encode(p.default)

    @property
    def any(self) -> bool:
        return bool(self.defaults) or self.var_kw


_OPTIONS: weakref.WeakKeyDictionary[type, _Options] = weakref.WeakKeyDictionary()


def options(cls: type) -> _Options:
    found = _OPTIONS.get(cls)
    if found is None:
        found = _OPTIONS[cls] = _Options(cls)
    return found


def encode(value: Any) -> Any:
    """A call argument as recorded: a scalar as itself, a tensor (or a list of them) as
    ``"<tensor>"``, anything else as ``"<type name>"``."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value[:MAX_STR]
    item = getattr(value, "item", None)  # a numpy scalar
    if item is not None and getattr(value, "shape", None) == ():
        try:
            return encode(item())
        except (TypeError, ValueError):
            pass
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return TENSOR
    if isinstance(value, list | tuple) and value and all(
            hasattr(v, "shape") and hasattr(v, "dtype") or v is None for v in value):
        return TENSOR
    return f"<{type(value).__name__}>"[:MAX_STR]


_ABSENT = object()
_TRAINING = frozenset(("training",))


def same(x: Any, y: Any) -> bool:
    """Equal recorded values: ``True`` is not ``1``, ``1`` is ``1.0``."""
    return x == y and (isinstance(x, bool) == isinstance(y, bool))


def _propagated(name: str, value: Any, opts: _Options, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """A mask Keras hands on from an input that carries one (an Embedding's ``mask_zero``), not
    the caller's own: keras/src/layers/layer.py Layer.__call__ (step 6, "Populate mask
    argument(s)") fills ``mask`` and ``<input>_mask`` from the inputs' ``_keras_mask``, and a
    functional node stores the filled kwargs, so a Functional model passes them explicitly
    where a subclassed model's layers fill them inside ``__call__``, unseen. Either way the
    model's structure says it (``layer_configs``)."""
    if value != TENSOR or not (name == "mask" or name.endswith("_mask")):
        return False
    source = opts.names[0] if name == "mask" and opts.names else name[:-len("_mask")]
    if source in kwargs:
        x = kwargs[source]
    elif source in opts.names and opts.names.index(source) < len(args):
        x = args[opts.names.index(source)]
    else:
        return False
    return any(getattr(t, "_keras_mask", None) is not None for t in (x if isinstance(x, list | tuple) else [x]))


def _symbolic(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """A functional model being built (KerasTensors), not a call that computes."""
    first = args[0] if args else next(iter(kwargs.values()), None)
    return type(first).__name__ == "KerasTensor"


class Recorder:
    """The call arguments of one run's layers (see the module's docstring)."""

    def __init__(self, publish: Any) -> None:
        self.publish = publish  # callable(dict): write the snapshot into the run's metadata
        self.layers: dict[int, dict[str, Any]] = {}  # id(layer) -> entry
        self.refs: dict[int, Any] = {}  # keeps the ids valid while tracing
        self.plain: set[int] = set()  # layers called at least once with no option given
        self.names: set[str] = set()

    def see(self, layer: Any, caller: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """One ``layer.__call__(*args, **kwargs)``; ``caller`` the layer whose call made it, if any."""
        if caller is not None and options(type(caller)).library:
            return
        opts = options(type(layer))
        if not opts.any:
            return
        given: dict[str, Any] = {}
        if len(args) <= opts.required and (not kwargs or kwargs.keys() <= _TRAINING):
            self._add(id(layer), layer, given, opts)
            return
        if _symbolic(args, kwargs):
            return
        for i, value in enumerate(args[:len(opts.positional)]):
            name = opts.positional[i]
            if name is not None:
                given[name] = encode(value)
        for name, value in kwargs.items():
            if name != "training" and (name in opts.defaults or opts.var_kw and name not in opts.positional):
                given[name] = encode(value)
        # An argument given its default is no argument given (`use_causal_mask=False`, the
        # `mask=None` Keras 3's Functional passes every layer whose call takes a mask).
        given = {k: v for k, v in given.items()
                 if not same(v, opts.defaults.get(k, _ABSENT)) and not _propagated(k, v, opts, args, kwargs)}
        order = list(opts.defaults)
        given = dict(sorted(given.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
                     [:MAX_ARGS])
        self._add(id(layer), layer, given, opts)

    def _add(self, key: int, layer: Any, given: dict[str, Any], opts: _Options) -> None:
        entry = self.layers.get(key)
        if entry is None:
            if not given:
                self.plain.add(key)
                return
            if len(self.layers) >= MAX_LAYERS:
                return
            name = str(getattr(layer, "name", "") or type(layer).__name__)
            if name in self.names:
                return  # another layer of that name: the comparator could not tell them apart
            self.names.add(name)
            entry = {"name": name, "class": type(layer).__name__, "calls": [],
                     "defaults": dict(list(opts.defaults.items())[:MAX_ARGS])}
            if key in self.plain:
                entry["calls"].append({})
            self.layers[key] = entry
            self.refs[key] = layer
        if given in entry["calls"] or len(entry["calls"]) >= MAX_CALLS:
            return
        entry["calls"].append(given)
        self.publish({e["name"]: {k: v for k, v in e.items() if k != "name"} for e in self.layers.values()})

    def clear(self) -> None:
        self.refs.clear()
