"""``make bench``: every benchmark of ``bench/`` in turn, each in its own process.

    .venv/bin/python bench/run_all.py [--quick]

``--quick`` passes smaller sizes (a few minutes instead of ~30). The ingest
benchmark needs the PostgreSQL at 127.0.0.1:5432 and, for the MLflow column, an
MLflow install of its own (see ``bench_ingest.py``); a benchmark that fails is
reported and the others still run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

FULL = [
    ["bench_overhead.py", "--steps", "500", "--repeats", "7"],
    ["bench_paired.py", "--kind", "mlp", "--repeats", "6"],
    ["bench_paired.py", "--kind", "fit", "--repeats", "6"],
    ["bench_paired.py", "--kind", "cnn", "--repeats", "6"],
    ["bench_defer.py", "--repeats", "6"],
    ["bench_startup.py"],
    ["bench_startup.py", "--model", "mobilenet", "--runs", "2"],
    ["bench_ingest.py"],
    ["bench_store.py"],
    ["bench_compare.py"],
]
QUICK = [
    ["bench_overhead.py", "--steps", "200", "--repeats", "3", "--only", "mlp-tape,gradtrace"],
    ["bench_paired.py", "--kind", "mlp", "--pairs", "1000", "--repeats", "2"],
    ["bench_defer.py", "--rounds", "500"],
    ["bench_startup.py", "--runs", "2"],
    ["bench_ingest.py", "--steps", "400", "--no-mlflow"],
    ["bench_store.py", "--steps", "400", "--repeats", "1"],
    ["bench_compare.py", "--steps", "2000"],
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    failed = []
    for cmd in QUICK if args.quick else FULL:
        print(f"\n== {' '.join(cmd)}", flush=True)
        rc = subprocess.run([sys.executable, str(HERE / cmd[0]), *cmd[1:]], cwd=HERE.parent).returncode
        if rc != 0:
            failed.append(cmd[0])
            print(f"!! {cmd[0]} exited with {rc}", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
