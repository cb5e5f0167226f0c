"""``make demo`` (``python -m gradtrace.demo``): it trains twice, diagnoses, and prints no TensorFlow noise."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_demo_prints_the_diagnosis(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gradtrace.demo", "--db", str(tmp_path / "demo.db")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "verdict: DIVERGED" in out
    assert "1. [ERROR] loss_scale" in out  # seed 002's mistake, found first
    assert "status finished  steps 171" in out  # both runs whole: 3 epochs of 57 batches
    assert (tmp_path / "demo.db").exists()
    # TensorFlow's start-up lines (absl before InitializeLog) are kept off the demo's output
    assert "cudart_stub" not in proc.stdout + proc.stderr
    assert "absl::InitializeLog" not in proc.stdout + proc.stderr


def test_startup_filter_passes_every_other_line():
    code = textwrap.dedent("""
        import os
        from gradtrace.demo import _without_startup_noise
        with _without_startup_noise():
            os.write(2, b"I0000 00:00:1796420761.207221    9590 cudart_stub.cc:31] Could not find cuda\\n")
            os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
            os.write(2, b"E0000 00:00:1796420765.265869    9590 some_op.cc:52] a real error\\n")
            os.write(2, b"gradtrace: a warning\\n")
        os.write(2, b"after\\n")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["E0000 00:00:1796420765.265869    9590 some_op.cc:52] a real error",
                                        "gradtrace: a warning", "after"]
