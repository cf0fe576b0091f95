"""``esper-func demo --quick`` for both tasks: the run directory contract (metrics, summary, report)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import esper_func as ef
from esper_func import cli
from esper_func.demo import closest_width, cosine_lr, fixed_windows, gpt_init, verdict

STAGES = {s.name for s in ef.SeedStage}
BASELINES = {"no_seeds", "widened"}


def fraction(value: Any) -> bool:
    return isinstance(value, float | int) and not isinstance(value, bool) and 0.0 <= value <= 1.0


def check_metrics(out: Path, task: str) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == list(range(1, len(lines) + 1)) and lines
    for r in lines:
        assert isinstance(r["val_loss"], float) and math.isfinite(r["val_loss"])
        assert fraction(r["val_accuracy"])
        assert isinstance(r["params"], int) and r["params"] > 0
        if task == "text":
            assert r["val_bpc"] == pytest.approx(r["val_loss"] / math.log(2))
        for sid, info in r["slots"].items():
            assert isinstance(sid, str) and info["stage"] in STAGES
            assert isinstance(info["alpha"], float | int) and 0.0 <= info["alpha"] <= 1.0
            assert "contribution" in info
        for event in r["events"]:
            assert {"kind", "slot", "reason"} <= set(event) and isinstance(event["reason"], str)
        assert set(r["baseline"]) == BASELINES
        for metrics in r["baseline"].values():
            assert isinstance(metrics["val_loss"], float) and fraction(metrics["val_accuracy"])
            if task == "text":
                assert metrics["val_bpc"] == pytest.approx(metrics["val_loss"] / math.log(2))
        # The library's part of each line is a typed record's JSON.
        library = {k: v for k, v in r.items() if k not in ("baseline", "val_bpc")}
        assert ef.EpochRecord.from_dict(library).to_dict() == library
    return lines


def check_summary(out: Path, task: str, gates: str, sha256: str) -> dict[str, Any]:
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == task and summary["gates"] == gates
    dataset = summary["dataset"]
    assert isinstance(dataset["name"], str) and dataset["sha256"] == sha256
    assert isinstance(dataset.get("bytes", dataset.get("samples")), int)
    for key in ("final", "best"):
        assert set(summary[key]) == {"grown"} | BASELINES
        for metrics in summary[key].values():
            assert fraction(metrics["val_accuracy"]) and isinstance(metrics["val_loss"], float)
            if task == "text":
                assert isinstance(metrics["val_bpc"], float)
    assert summary["best"]["grown"]["val_accuracy"] >= summary["final"]["grown"]["val_accuracy"]
    assert isinstance(summary["wall_seconds"], float | int) and summary["wall_seconds"] > 0
    assert isinstance(summary["verdict"], str) and "\n" not in summary["verdict"] and "grown" in summary["verdict"]
    assert set(summary["params"]) == {"grown"} | BASELINES
    assert isinstance(summary["shapley_points"], dict)
    return summary


def test_quick_digits_demo_keeps_the_run_directory_contract(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "digits"
    assert cli.main(["demo", "--quick", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "no seeds" in stdout and "widened static host" in stdout and "RunConfig(" not in stdout
    lines = check_metrics(out, "digits")
    assert len(lines) == cli.RunConfig.for_task("digits", quick=True).epochs
    summary = check_summary(out, "digits", "strict", ef.data.load_digits(seed=0).info.sha256)
    assert summary["final"]["grown"]["val_accuracy"] == lines[-1]["val_accuracy"]
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quick_text_demo_keeps_the_run_directory_contract(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "text"
    threads = torch.get_num_threads()
    assert cli.main(["demo", "--task", "text", "--quick", "--out", str(out)]) == 0
    assert torch.get_num_threads() == threads  # the text task's one-thread pin is undone
    stdout = capsys.readouterr().out
    assert "bits per character" in stdout and "permissive gates" in stdout
    check_metrics(out, "text")
    corpus = ef.data.load_stdlib_text()
    data = bytes(corpus.train.to(torch.uint8).tolist()) + bytes(corpus.val.to(torch.uint8).tolist())
    summary = check_summary(out, "text", "permissive", hashlib.sha256(data).hexdigest())
    assert summary["dataset"]["bytes"] == len(data)
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_trains_a_missing_baseline_and_ends_like_an_uninterrupted_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert cli.main(["demo", "--task", "text", "--quick", "--out", str(out)]) == 0
    reference = (out / "metrics.jsonl").read_text()
    stored = json.loads((out / "baselines.json").read_text())
    del stored["runs"]["widened"]  # as if killed while the widened baseline trained
    (out / "baselines.json").write_text(json.dumps(stored))
    (out / "summary.json").unlink()
    assert cli.main(["resume", str(out)]) == 0
    assert "widened static host" in capsys.readouterr().out
    without_seconds = [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in reference.splitlines()]
    again = [{k: v for k, v in json.loads(x).items() if k != "seconds"}
             for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert again == without_seconds and (out / "summary.json").exists()


def test_task_and_dataset_must_agree(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--task", "text", "--dataset", "synthetic"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "disagree" in err


# --------------------------------------------------------------------------- the pure helpers


def test_cosine_lr_runs_from_lr_to_min_lr() -> None:
    assert cosine_lr(1, 20, 3e-3, 3e-4) == pytest.approx(3e-3)
    assert cosine_lr(20, 20, 3e-3, 3e-4) == pytest.approx(3e-4)
    values = [cosine_lr(e, 20, 3e-3, 3e-4) for e in range(1, 21)]
    assert values == sorted(values, reverse=True)
    assert cosine_lr(1, 1, 1.0, 0.1) == 1.0
    with pytest.raises(ef.InvalidArgumentError):
        cosine_lr(0, 20, 1.0, 0.1)


def test_fixed_windows_are_full_evenly_spaced_and_shifted_by_one() -> None:
    tokens = torch.arange(1000)
    x, y = fixed_windows(tokens, 8, 16)
    assert x.shape == y.shape == (8, 16) and x.dtype == torch.int64
    assert torch.equal(y, x + 1) and int(x[0, 0]) == 0 and int(y[-1, -1]) < 1000
    with pytest.raises(ef.InvalidArgumentError):
        fixed_windows(tokens, 100, 16)


def test_gpt_init_is_seeded_and_pure() -> None:
    params = {"a.weight": torch.ones(4, 4), "b.c_proj.weight": torch.ones(4, 4), "a.bias": torch.ones(4),
              "ln.weight": torch.ones(4)}
    first, second = gpt_init(params, 2, seed=3), gpt_init(params, 2, seed=3)
    assert all(torch.equal(first[k], second[k]) for k in params)
    assert torch.equal(params["a.weight"], torch.ones(4, 4))  # the input is untouched
    assert torch.equal(first["a.bias"], torch.zeros(4)) and torch.equal(first["ln.weight"], torch.ones(4))
    assert float(first["b.c_proj.weight"].std()) < float(first["a.weight"].std()) * 2


def test_closest_width_and_verdict() -> None:
    assert closest_width(lambda w: w * w, 50, range(1, 10)) == (7, 49)
    assert closest_width(lambda w: 10 * w, 15, [1, 2]) == (1, 10)  # a tie goes to the smaller
    line = verdict("text", {"val_bpc": 2.0}, {"a": {"val_bpc": 2.1}, "b": {"val_bpc": 1.9}})
    assert "beat a" in line and "lost to b" in line
    line = verdict("accuracy", {"val_accuracy": 0.9}, {"a": {"val_accuracy": 0.9}})
    assert "tied with a" in line
