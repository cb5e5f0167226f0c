"""Embedded-mode behaviour: a writer thread and a reader share one SQLite file; light imports."""

from __future__ import annotations

import doctest
import subprocess
import sys
import threading
from pathlib import Path

import gradtrace.store
from gradtrace.schema import Batch, RunInfo, StepRecord, VarStep
from gradtrace.store import open_store


def test_writer_and_reader_share_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    writer, reader = open_store(path), open_store(path)
    info = RunInfo(run_id="live", name="live")
    writer.ingest(Batch(batch_id="live-0", run=info, steps=[StepRecord(step=0, loss=1.0)]))
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for b in range(1, 40):
                writer.ingest(Batch(batch_id=f"live-{b}", run=info, steps=[
                    StepRecord(step=s, loss=float(s), vars=[VarStep(v=v, norm=1.0) for v in range(20)])
                    for s in range(b * 10 - 9, b * 10 + 1)
                ]))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=write)
    t.start()
    seen = []
    while t.is_alive() or not seen:
        n = reader.resolve("live").num_steps
        steps = [r["step"] for r in reader.steps("live", fields=["loss"])]
        # a reader sees whole batches only: the count and the rows agree, steps are contiguous
        assert steps == list(range(len(steps))) and len(steps) >= n
        seen.append(len(steps))
    t.join()
    assert not errors, errors
    assert reader.resolve("live").num_steps == 391
    assert len(set(seen)) > 1 or seen[-1] == 391
    writer.close()
    reader.close()


def test_store_docstring_example_runs() -> None:
    result = doctest.testmod(gradtrace.store, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_store_and_cli_import_light() -> None:
    code = (
        "import sys, argparse, gradtrace.store, gradtrace._cli_store as c; "
        "c.register(argparse.ArgumentParser().add_subparsers()); "
        "bad = [m for m in ('tensorflow', 'fastapi', 'keras') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
