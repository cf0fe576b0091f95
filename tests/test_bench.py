"""The benchmarks run (one quick round, no compile, no LM row) and print their tables.

Timing is never asserted; this keeps ``bench/table.py`` in step with the API.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_benchmark_table_runs_and_prints_every_row() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ESPER_LITE_SRC"}  # in-repo baselines only
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "table.py"), "--rounds", "1", "--skip-compile", "--skip-lm"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for row in ("train step, 3-slot CNN", "train step, small CNN", "full-factorial sweep"):
        assert row in done.stdout
    assert "ratio" in done.stdout


def test_the_tournament_benchmark_runs_and_prints_every_variant() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "tournament.py"), "--rounds", "1", "--ks", "2", "--vectorize", "false"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for row in ("1 seed", "K=2", "vectorize=False"):
        assert row in done.stdout
