"""Float noise: how far two equivalent runs may drift, from the precision they computed in.

Two correct ways of writing the same training differ only by the order of float
additions (XLA fuses and reorders reductions; fit() and a tape loop call other
kernels). A reduction of ``n`` float terms carries a relative rounding error of
about ``eps * sqrt(n)`` (random-walk rounding), so the step-0 tolerance for
a loss or gradient is ``MARGIN * eps * sqrt(n)`` with ``n`` = batch size x
outputs. Each later step starts from weights that already differ by the
previous steps' noise and adds its own: the tolerance grows like a random walk,
with the square root of the step. Training dynamics can amplify that noise
further, but smoothly; a step where the difference jumps by more than ``JUMP``
times over the previous aligned step is a departure, a slow drift past the
tolerance is reported as amplified noise, not as a cause. Runs that agree bit for bit
from the start have accumulated no noise: the departure search counts the steps from
the last identical one (a run that parts at step 61 after sixty identical steps is held
to a step-1 tolerance, not to sixty steps of a drift it never had).

``MARGIN`` and ``GROWTH`` are checked by measurement (``python bench/bench_compare.py
--noise`` trains the equivalent case pairs of ``tests/cases`` and prints the
observed differences in units of the tolerance). On TF 2.21 / Keras 3.15 CPU:
fit vs tape loop, eager vs tf.function, train_step vs fit and Keras 3 vs
tf-keras are bit-identical at every step; XLA vs not differs by 0.006 x the
step-0 tolerance (7e-8 relative) and stays there over the aligned steps. The
margin leaves two orders of magnitude for other kernels and hardware. Every
report shows the tolerance used and the observed differences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradtrace.compare.data import RunData, first_batch

EPS = {"float32": float(np.finfo(np.float32).eps), "float16": float(np.finfo(np.float16).eps),
       "bfloat16": 2.0**-7, "float64": float(np.finfo(np.float64).eps)}
MARGIN = 16.0
GROWTH = 4.0  # tolerance added per sqrt(step), in units of the step-0 tolerance
JUMP = 10.0  # a departure: the relative difference grows this much within one step


@dataclass
class Noise:
    """Tolerances for one comparison and the differences observed at step 0."""

    eps: float = EPS["float32"]
    terms: int = 1
    tol0: float = MARGIN * EPS["float32"]
    observed: dict[str, Any] = field(default_factory=dict)

    def tol(self, step: int | np.ndarray) -> Any:
        """Relative tolerance at ``step`` (0-based)."""
        return self.tol0 * (1.0 + GROWTH * np.sqrt(np.maximum(np.asarray(step, dtype=np.float64), 0.0)))

    @property
    def cos_tol(self) -> float:
        """Tolerance on ``1 - cosine`` of two gradient sketches."""
        # 1 - cos of two vectors that differ by a relative r is about r^2 / 2; the sketch
        # itself is a float32 projection, so its own rounding sets the floor.
        return max(self.tol0, 64 * self.eps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "eps": self.eps,
            "reduction_terms": self.terms,
            "step0_rel_tolerance": self.tol0,
            "how": f"{MARGIN:g} x eps x sqrt(batch x outputs) x (1 + {GROWTH:g} sqrt(step))",
            **self.observed,
        }


def _compute_dtype(run: RunData) -> str:
    policy = str(run.meta.get("dtype_policy") or "")
    if "bfloat16" in policy:
        return "bfloat16"
    if "float16" in policy:
        return "float16"
    if "float64" in policy:
        return "float64"
    return "float32"


def _n_outputs(run: RunData) -> int:
    for shape, _, _ in run.y_pred_shapes:
        if shape and len(shape) >= 2 and shape[-1]:
            return int(np.prod([d for d in shape[1:] if d]))
    return 1


def rel(a: Any, b: Any) -> Any:
    """|a-b| / max(|a|, |b|); 0 where both are equal (NaN == NaN), inf where one is NaN."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        den = np.maximum(np.abs(a), np.abs(b))
        out = np.abs(a - b) / np.where(den > 0, den, 1.0)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    out = np.where(same, 0.0, out)
    out = np.where(np.isnan(out), np.inf, out)
    return out


def measure_noise(a: RunData, b: RunData, aligned_steps: int) -> Noise:
    """The tolerance model for this pair plus the step-0 differences actually observed."""
    dt = max((_compute_dtype(a), _compute_dtype(b)), key=lambda d: EPS[d])
    eps = EPS[dt]
    batch = first_batch(a, b, 1)
    terms = max(1, batch * max(_n_outputs(a), _n_outputs(b)))
    noise = Noise(eps=eps, terms=terms, tol0=MARGIN * eps * math.sqrt(terms))
    return noise
