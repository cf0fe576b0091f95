"""The command line, through real subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

import esper_func as ef


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "esper_func", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_demo_resume_and_sweep(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = run("demo", "--epochs", "3", "--dataset", "synthetic", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "epoch   3" in done.stdout and "final validation accuracy" in done.stdout
    records = read_metrics(out / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert set(records[0]) >= {"epoch", "train_loss", "val_loss", "val_accuracy", "slots", "contributions", "events"}
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "checkpoints" / "LATEST").exists()

    again = run("demo", "--epochs", "3", "--dataset", "synthetic", "--out", str(out), cwd=tmp_path)
    assert again.returncode != 0 and "resume" in again.stderr

    resumed = run("resume", str(out), "--epochs", "5", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert [r["epoch"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3, 4, 5]

    swept = run("sweep", str(out), cwd=tmp_path)
    assert swept.returncode == 0, swept.stderr


def test_import_esper_lite_then_sweep(tmp_path: Path) -> None:
    host = ef.CNNHost(in_channels=1, num_classes=4, n_blocks=2, base_channels=4, memory_format="contiguous_format")
    model, params, buffers = ef.build_model(host, ["r0c0", "r0c1"])
    model, params = ef.add_seed(model, params, "r0c0", ef.default_registry(), "norm")
    state = ef.germinate("r0c0", "norm")
    state, _, _ = ef.advance(state, ef.Gates())
    model, params = ef.set_stages(model, params, {"r0c0": state})
    torch.save(ef.to_state_dict(model, params, buffers, states={"r0c0": state}), tmp_path / "esper_lite.pt")

    out = tmp_path / "imported"
    args = ["--host-arg", "in_channels=1", "--host-arg", "num_classes=4", "--host-arg", "n_blocks=2",
            "--host-arg", "base_channels=4", "--host-arg", "memory_format=contiguous_format"]
    done = run("import-esper-lite", str(tmp_path / "esper_lite.pt"), str(out), *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "r0c0" in done.stdout and "TRAINING" in done.stdout
    swept = run("sweep", str(out), "--data", "synthetic", cwd=tmp_path)
    assert swept.returncode == 0, swept.stderr
    refused = run("resume", str(out), cwd=tmp_path)
    assert refused.returncode != 0 and "not resumed" in refused.stderr


def test_errors_are_reported_without_a_traceback(tmp_path: Path) -> None:
    missing = run("resume", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr and "nowhere" in missing.stderr
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    bad = run("import-esper-lite", str(tmp_path / "bad.pt"), str(tmp_path / "x"), cwd=tmp_path)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
