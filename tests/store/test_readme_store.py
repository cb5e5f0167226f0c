"""The README's Python examples of the store import what they use and run against a real file."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from gradtrace.schema import Batch, RunInfo, StepRecord, VarStep
from gradtrace.store import open_store

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_every_open_store_mention_says_where_it_comes_from() -> None:
    import_line = "from gradtrace.store import open_store"
    for m in re.finditer(r"open_store\(", README):
        near = README[max(0, m.start() - 300) : m.end() + 300]
        assert import_line in near, f"README shows open_store without its import: {near!r}"
    assert import_line in README


def test_readme_store_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README, re.S) if "open_store" in b]
    assert blocks, "README shows no open_store example"
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///gradtrace.db") as store:
        store.ingest(Batch(batch_id="b1", run=RunInfo(run_id="r1", name="fit"),
                           steps=[StepRecord(step=i, loss=1.0 / (i + 1), vars=[VarStep(v=0, norm=float(i))])
                                  for i in range(3)]))
    scope: dict[str, object] = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)  # noqa: S102 - our own documentation
    assert scope["losses"] == [1.0, 0.5, 1 / 3]
    assert list(scope["steps"]) == [0, 1, 2] and list(scope["norms"]) == [0.0, 1.0, 2.0]  # type: ignore[call-overload]
    assert os.path.exists("gradtrace.db")
