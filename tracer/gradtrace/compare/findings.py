"""Findings and the report document shared by the CLI (``--json``) and REST."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from gradtrace.compare.catalogue import SEVERITY_RANK, Severity, get

Verdict = Literal["equivalent", "diverged", "not_comparable"]


@dataclass
class Finding:
    """One explained difference (or one defect of a single run)."""

    kind: str
    summary: str
    severity: Severity | None = None  # None -> the catalogue's default
    steps: list[int] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    variables: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    fix: str | None = None  # None -> the catalogue's fix
    explains: float = 0.5  # 0..1: how much of the divergence this finding accounts for

    def __post_init__(self) -> None:
        entry = get(self.kind)
        if self.severity is None:
            self.severity = entry.severity
        if self.fix is None:
            self.fix = entry.fix

    def sort_key(self) -> tuple[int, float, int]:
        return (SEVERITY_RANK[str(self.severity)], -self.explains, get(self.kind).rank)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "summary": self.summary,
            "steps": [int(s) for s in self.steps],
            "layers": list(self.layers),
            "variables": list(self.variables),
            "evidence": jsonable(self.evidence),
            "fix": self.fix,
        }


@dataclass
class Report:
    """The comparator's answer: verdict, first divergent step, ranked findings."""

    verdict: Verdict
    a: dict[str, Any]
    b: dict[str, Any] | None
    first_divergent_step: int | None
    aligned_steps: int
    findings: list[Finding]
    skipped: list[dict[str, str]] = field(default_factory=list)
    noise: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (``gradtrace compare --json`` and ``GET /api/v1/compare``)."""
        out: dict[str, Any] = {
            "verdict": self.verdict,
            "a": jsonable(self.a),
            "b": jsonable(self.b),
            "first_divergent_step": self.first_divergent_step,
            "aligned_steps": int(self.aligned_steps),
            "findings": [f.to_dict() for f in self.findings],
            "skipped": list(self.skipped),
            "noise": jsonable(self.noise),
        }
        return out


def jsonable(x: Any) -> Any:
    """Plain JSON types; NaN/Inf become the strings the record format uses."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)):
        return [jsonable(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):  # numpy scalar
        try:
            x = x.item()
        except (ValueError, AttributeError):
            x = x.tolist()
    if hasattr(x, "tolist"):
        return jsonable(x.tolist())
    if isinstance(x, float):
        if math.isnan(x):
            return "NaN"
        if math.isinf(x):
            return "Infinity" if x > 0 else "-Infinity"
        return float(f"{x:.6g}")
    return x
