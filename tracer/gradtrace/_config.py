"""Tracer configuration: ``GRADTRACE_*`` environment variables and their defaults.

An argument given in code beats the environment variable, which beats the
default. A malformed environment value is logged (logger ``gradtrace.config``)
and the default is used: a typo in a shell profile must not break training. A
malformed *argument* is a programming error and raises ``ValueError`` naming it.

=============================== =================================== ===========================================
Variable                        Default                             Meaning
=============================== =================================== ===========================================
``GRADTRACE_URL``               ``sqlite:///./gradtrace.db``        Where records go: ``sqlite:///path.db``, any
                                                                    SQLAlchemy URL (``postgresql+psycopg://...``)
                                                                    or an ``http(s)://`` gradtrace server. A bare
                                                                    file path means a SQLite file.
``GRADTRACE_TOKEN``             (none)                              API token sent to a server as
                                                                    ``Authorization: Bearer <token>``.
``GRADTRACE_PROJECT``           ``default``                         Project of runs that do not name one.
``GRADTRACE_DISABLED``          ``false``                           Kill switch: ``trace`` does nothing at all.
``GRADTRACE_STRICT``            ``false``                           Re-raise tracer-internal errors instead of
                                                                    warning once (the test suite sets it).
``GRADTRACE_SPOOL_DIR``         ``$XDG_CACHE_HOME/gradtrace/spool`` Where batches wait when the destination is
                                (``~/.cache/gradtrace/spool``)      unreachable (created with mode 0700).
``GRADTRACE_SPOOL_MAX_MB``      ``512``                             Spool size cap per destination; the oldest
                                                                    files are discarded (and counted) beyond it.
``GRADTRACE_SPOOL_MAX_AGE_DAYS`` ``7``                              Spooled batches older than this are
                                                                    discarded (and counted).
``GRADTRACE_FLUSH_INTERVAL``    ``2.0``                             Seconds between background exports.
``GRADTRACE_BATCH_STEPS``       ``1024``                            Steps per shipped batch (an export starts as
                                                                    soon as this many are queued).
``GRADTRACE_QUEUE_STEPS``       ``20000``                           Bound of the in-memory queue; steps beyond it
                                                                    are dropped and counted as ``queue_full``.
``GRADTRACE_RETRY_SECONDS``     ``30``                              How long one batch is retried before it is
                                                                    spooled to disk.
``GRADTRACE_HTTP_TIMEOUT``      ``10``                              Seconds per HTTP request to a server.
``GRADTRACE_SHUTDOWN_TIMEOUT``  ``30``                              Seconds the final flush may take at the end
                                                                    of a run / at interpreter exit.
``GRADTRACE_FULL_TENSORS_EVERY`` ``0``                              Ship full gradient and weight tensors every N
                                                                    steps (0: never).
``GRADTRACE_SKETCH_DIM``        ``32``                              Numbers in each gradient's sketch (0: none,
                                                                    at most 256).
``GRADTRACE_RING_SIZE``         auto (64 to 4096)                   Steps the in-graph ring buffer holds between
                                                                    two reads by the host; by default as many as
                                                                    fit in 8 MiB, at least 64, at most 4096.
``GRADTRACE_OVERHEAD_BUDGET``   ``0.02``                            Fraction of the step time the per-variable
                                                                    statistics may cost when their cadence is
                                                                    chosen automatically (``stats_every`` unset).
``GRADTRACE_STATS_EVERY``       ``auto``                            Per-variable statistics on every N-th step
                                                                    (``1``: every step; ``auto``: N chosen within
                                                                    ``GRADTRACE_OVERHEAD_BUDGET``).
=============================== =================================== ===========================================

Booleans accept ``1/true/yes/on`` and ``0/false/no/off`` (any case).

Example::

    >>> from gradtrace import _config
    >>> cfg = _config.load(url="sqlite:///runs.db", batch_steps=64)
    >>> cfg.url, cfg.batch_steps
    ('sqlite:///runs.db', 64)
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradtrace.schema import MAX_NAME, MAX_SKETCH, MAX_STEPS_PER_BATCH

logger = logging.getLogger("gradtrace.config")

GRADTRACE_URL = "GRADTRACE_URL"
"""Destination of the records (store URL or ``http(s)://`` server)."""
GRADTRACE_TOKEN = "GRADTRACE_TOKEN"
"""API token for an ``http(s)://`` destination."""
GRADTRACE_PROJECT = "GRADTRACE_PROJECT"
"""Default project name."""
GRADTRACE_DISABLED = "GRADTRACE_DISABLED"
"""Kill switch: when true, tracing does nothing."""
GRADTRACE_STRICT = "GRADTRACE_STRICT"
"""When true, tracer-internal errors are re-raised (tests)."""
GRADTRACE_SPOOL_DIR = "GRADTRACE_SPOOL_DIR"
"""Directory of the on-disk spool of unsent batches."""
GRADTRACE_SPOOL_MAX_MB = "GRADTRACE_SPOOL_MAX_MB"
"""Size cap of the spool, per destination, in MiB."""
GRADTRACE_SPOOL_MAX_AGE_DAYS = "GRADTRACE_SPOOL_MAX_AGE_DAYS"
"""Age cap of spooled batches, in days."""
GRADTRACE_FLUSH_INTERVAL = "GRADTRACE_FLUSH_INTERVAL"
"""Seconds between background exports."""
GRADTRACE_BATCH_STEPS = "GRADTRACE_BATCH_STEPS"
"""Steps per batch."""
GRADTRACE_QUEUE_STEPS = "GRADTRACE_QUEUE_STEPS"
"""Bound of the in-memory step queue."""
GRADTRACE_RETRY_SECONDS = "GRADTRACE_RETRY_SECONDS"
"""Retry budget of one batch before it is spooled."""
GRADTRACE_HTTP_TIMEOUT = "GRADTRACE_HTTP_TIMEOUT"
"""Timeout of one HTTP request, in seconds."""
GRADTRACE_SHUTDOWN_TIMEOUT = "GRADTRACE_SHUTDOWN_TIMEOUT"
"""Budget of the final flush, in seconds."""
GRADTRACE_FULL_TENSORS_EVERY = "GRADTRACE_FULL_TENSORS_EVERY"
"""Ship full tensors every N steps (0: never)."""
GRADTRACE_SKETCH_DIM = "GRADTRACE_SKETCH_DIM"
"""Size of each gradient sketch."""
GRADTRACE_RING_SIZE = "GRADTRACE_RING_SIZE"
"""Steps held by the in-graph ring buffer (default: as many as fit in 8 MiB, 64 to 4096)."""
GRADTRACE_OVERHEAD_BUDGET = "GRADTRACE_OVERHEAD_BUDGET"
"""Share of the step time the automatic statistics cadence aims at."""
GRADTRACE_STATS_EVERY = "GRADTRACE_STATS_EVERY"
"""Per-variable statistics every N-th step (``auto``, the default: N chosen within the budget)."""

DEFAULT_URL = "sqlite:///./gradtrace.db"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def default_spool_dir() -> Path:
    """``$XDG_CACHE_HOME/gradtrace/spool``, else ``~/.cache/gradtrace/spool``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gradtrace" / "spool"


@dataclass(frozen=True)
class Config:
    """The tracer's settings, resolved once per run (see the module table)."""

    url: str = DEFAULT_URL
    token: str | None = None
    project: str = "default"
    disabled: bool = False
    strict: bool = False
    spool_dir: Path = dataclasses.field(default_factory=default_spool_dir)
    spool_max_bytes: int = 512 * 2**20
    spool_max_age: float = 7 * 86400.0
    flush_interval: float = 2.0
    batch_steps: int = 1024
    queue_steps: int = 20_000
    retry_seconds: float = 30.0
    http_timeout: float = 10.0
    shutdown_timeout: float = 30.0
    full_tensors_every: int = 0
    sketch_dim: int = 32
    ring_size: int | None = None  # None: sized from the step vector's width
    overhead_budget: float = 0.02
    stats_every: int | None = None  # None: chosen from measured costs within overhead_budget

    def __repr__(self) -> str:  # never print a token into a log
        fields = ", ".join(
            f"{f.name}={'***' if f.name == 'token' and self.token else getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
        )
        return f"Config({fields})"


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"expected one of 1/true/yes/on or 0/false/no/off, got {raw!r}")


def _bounded(kind: Callable[[str], Any], lo: float, hi: float | None = None) -> Callable[[Any], Any]:
    def parse(raw: Any) -> Any:
        if isinstance(raw, bool):
            raise ValueError(f"expected a number, got {raw!r}")
        value = kind(raw.strip()) if isinstance(raw, str) else kind(raw)
        if isinstance(raw, float) and kind is int and raw != int(raw):
            raise ValueError(f"expected an integer, got {raw!r}")
        if not (value >= lo) or (hi is not None and value > hi):  # `not >=` rejects NaN
            bound = f">= {lo}" if hi is None else f"between {lo} and {hi}"
            raise ValueError(f"must be {bound}, got {raw!r}")
        return value

    return parse


def normalize_url(raw: str) -> str:
    """A destination URL; a bare path (no ``scheme://``) means a SQLite file."""
    url = raw.strip()
    if not url:
        raise ValueError("must not be empty")
    if "://" not in url:
        return "sqlite:///" + url
    scheme = url.split("://", 1)[0]
    if not scheme or not all(c.isalnum() or c in "+-." for c in scheme):
        raise ValueError(f"has an invalid scheme {scheme!r}")
    return url


def _name(raw: str) -> str:
    value = raw.strip()
    if not 1 <= len(value) <= MAX_NAME:
        raise ValueError(f"must be 1 to {MAX_NAME} characters")
    return value


def _optional_str(raw: str) -> str | None:
    return raw.strip() or None


def _path(raw: Any) -> Path:
    value = os.fspath(raw)
    if not str(value).strip():
        raise ValueError("must not be empty")
    return Path(os.path.expanduser(str(value)))


def _bool_arg(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        return _parse_bool(raw)
    raise ValueError(f"expected a bool, got {raw!r}")


def _every(raw: Any) -> int | None:
    if isinstance(raw, str) and raw.strip().lower() in ("", "auto"):
        return None
    return int(_bounded(int, 1)(raw))


# field -> (env var, parser); the parser turns an env string (or an argument) into the value
_FIELDS: Mapping[str, tuple[str, Callable[[Any], Any]]] = {
    "url": (GRADTRACE_URL, normalize_url),
    "token": (GRADTRACE_TOKEN, _optional_str),
    "project": (GRADTRACE_PROJECT, _name),
    "disabled": (GRADTRACE_DISABLED, _bool_arg),
    "strict": (GRADTRACE_STRICT, _bool_arg),
    "spool_dir": (GRADTRACE_SPOOL_DIR, _path),
    "spool_max_bytes": (GRADTRACE_SPOOL_MAX_MB, _bounded(float, 0.0)),
    "spool_max_age": (GRADTRACE_SPOOL_MAX_AGE_DAYS, _bounded(float, 0.0)),
    "flush_interval": (GRADTRACE_FLUSH_INTERVAL, _bounded(float, 0.01, 3600.0)),
    "batch_steps": (GRADTRACE_BATCH_STEPS, _bounded(int, 1, MAX_STEPS_PER_BATCH)),
    "queue_steps": (GRADTRACE_QUEUE_STEPS, _bounded(int, 1)),
    "retry_seconds": (GRADTRACE_RETRY_SECONDS, _bounded(float, 0.0)),
    "http_timeout": (GRADTRACE_HTTP_TIMEOUT, _bounded(float, 0.01)),
    "shutdown_timeout": (GRADTRACE_SHUTDOWN_TIMEOUT, _bounded(float, 0.0)),
    "full_tensors_every": (GRADTRACE_FULL_TENSORS_EVERY, _bounded(int, 0)),
    "sketch_dim": (GRADTRACE_SKETCH_DIM, _bounded(int, 0, MAX_SKETCH)),
    "ring_size": (GRADTRACE_RING_SIZE, _bounded(int, 1, 1_000_000)),
    "overhead_budget": (GRADTRACE_OVERHEAD_BUDGET, _bounded(float, 1e-6, 100.0)),
    "stats_every": (GRADTRACE_STATS_EVERY, _every),
}
# Env vars in human units; arguments are in the field's own unit.
_ENV_SCALE = {"spool_max_bytes": float(2**20), "spool_max_age": 86400.0}


# Reasons a run's ``lost`` counts records by -> what to change so it does not happen again.
LOST_HINTS: Mapping[str, str] = {
    "ring_overrun": f"raise {GRADTRACE_RING_SIZE} (the in-graph ring filled before the host read it)",
    "queue_full": f"raise {GRADTRACE_QUEUE_STEPS} (the hand-off queue to the exporter was full)",
    "full_tensors_overrun": f"raise {GRADTRACE_FULL_TENSORS_EVERY} (full tensors came faster than they were read)",
    "tensors_queue_full": f"raise {GRADTRACE_FULL_TENSORS_EVERY} (full tensors filled the exporter's queue)",
    "spool_full": f"raise {GRADTRACE_SPOOL_MAX_MB} or resend sooner (gradtrace spool flush)",
    "spool_expired": f"raise {GRADTRACE_SPOOL_MAX_AGE_DAYS} or resend sooner (gradtrace spool flush)",
    "spool_error": f"make {GRADTRACE_SPOOL_DIR} a writable directory",
    "spool_corrupt": "a spooled batch file was unreadable (kept under the spool's rejected/)",
    "after_shutdown": "steps arrived after the traced run had ended",
    "disabled": f"tracing was disabled ({GRADTRACE_DISABLED})",
}


def lost_hint(reason: str) -> str:
    """What to change so records are not lost for ``reason`` (a key of a run's ``lost``)."""
    base = reason.removeprefix("tensors_") if reason.startswith("tensors_rejected_") else reason
    if base in LOST_HINTS:
        return LOST_HINTS[base]
    if base.startswith("rejected_http_401") or base.startswith("rejected_http_403"):
        return f"the server refused the token: set {GRADTRACE_TOKEN}, then gradtrace spool requeue"
    if base.startswith("rejected_"):
        return "the destination refused the batch: see the .reason files under the spool's rejected/"
    return "see the run's warnings"


def lost_steps(lost: Mapping[str, int] | None) -> dict[str, int]:
    """The step-record part of a run's ``lost`` counts (full tensors left out), by reason."""
    return {
        k: int(v)
        for k, v in (lost or {}).items()
        if v and not k.startswith("tensors_") and k != "full_tensors_overrun"
    }


def load(env: Mapping[str, str] | None = None, **overrides: Any) -> Config:
    """Resolve the configuration: argument, else environment variable, else default.

    ``overrides`` are :class:`Config` field names; a value of ``None`` means
    "not given". An unknown name raises ``TypeError``, an invalid value
    ``ValueError`` naming the field. ``env`` replaces ``os.environ`` (tests).
    """
    environ = os.environ if env is None else env
    unknown = set(overrides) - set(_FIELDS)
    if unknown:
        raise TypeError(f"unknown gradtrace setting(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for field, (var, parse) in _FIELDS.items():
        arg = overrides.get(field)
        if arg is not None:
            try:
                values[field] = parse(arg)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"gradtrace setting {field!r}: {exc}") from None
            continue
        raw = environ.get(var)
        if raw is None:
            continue
        try:
            value = parse(raw)
        except (TypeError, ValueError) as exc:
            logger.warning("ignoring %s=%r: %s; using the default", var, raw, exc)
            continue
        if field in _ENV_SCALE:
            value = value * _ENV_SCALE[field]
        if value is not None:
            values[field] = value
    if "spool_max_bytes" in values:
        values["spool_max_bytes"] = int(values["spool_max_bytes"])
    return Config(**values)


__all__ = ["Config", "DEFAULT_URL", "LOST_HINTS", "default_spool_dir", "load", "lost_hint", "lost_steps", "normalize_url"]
