"""Data parallelism with real processes on loopback (gloo), each run under a timeout."""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import esper_func as ef
from esper_func import distributed

WORKER = Path(__file__).with_name("_distributed_worker.py")
TIMEOUT_S = 240

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(scenario: str, world_size: int, tmp_path: Path) -> list[dict]:
    port = str(free_port())
    outs = [tmp_path / f"{scenario}-rank{r}.json" for r in range(world_size)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), scenario, str(r), str(world_size), port, str(outs[r])],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for r in range(world_size)
    ]
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=TIMEOUT_S)
            assert proc.returncode == 0, err[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return [json.loads(out.read_text()) for out in outs]


def test_two_ranks_end_bitwise_identical_with_identical_histories(tmp_path: Path) -> None:
    ranks = launch("same-data", 2, tmp_path)
    assert ranks[0]["params_digest"] == ranks[1]["params_digest"]
    assert ranks[0]["records"] == ranks[1]["records"]
    events = [e["type"] for r in ranks[0]["records"] for e in r["events"]]
    assert "SeedGerminated" in events
    assert any(r["contributions"] for r in ranks[0]["records"])  # counterfactual sweeps ran


def test_ranks_with_different_local_data_still_decide_identically(tmp_path: Path) -> None:
    ranks = launch("different-data", 2, tmp_path)
    assert ranks[0]["params_digest"] == ranks[1]["params_digest"]
    assert ranks[0]["records"] == ranks[1]["records"]
    assert ranks[0]["stages"] == ranks[1]["stages"]


def test_ranks_with_different_local_data_choose_the_same_tournament_winner(tmp_path: Path) -> None:
    ranks = launch("tournament", 2, tmp_path)
    assert ranks[0]["params_digest"] == ranks[1]["params_digest"]
    assert ranks[0]["records"] == ranks[1]["records"]
    decided = [e for r in ranks[0]["records"] for e in r["events"] if e["type"] == "TournamentDecided"]
    assert decided and all(len(e["candidates"]) == 3 for e in decided)


def test_one_process_run_equals_the_plain_fit(tmp_path: Path) -> None:
    (launched,) = launch("same-data", 1, tmp_path)
    (plain,) = launch("plain", 1, tmp_path)  # same process settings, no process group
    assert launched["params_digest"] == plain["params_digest"]
    assert launched["records"] == plain["records"]


def test_a_structure_mismatch_fails_fast_on_every_rank(tmp_path: Path) -> None:
    ranks = launch("mismatch", 2, tmp_path)
    for report in ranks:
        assert "different static structures" in report["error"]


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")
def test_the_cli_trains_data_parallel_under_torchrun(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = subprocess.run(
        ["torchrun", "--standalone", "--nproc-per-node", "2", "-m", "esper_func", "demo",
         "--epochs", "3", "--dataset", "synthetic", "--out", str(out)],
        capture_output=True, text=True, timeout=TIMEOUT_S, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rank0 = (out / "rank0.jsonl").read_text().splitlines()
    rank1 = (out / "rank1.jsonl").read_text().splitlines()
    assert len(rank0) == 3 and rank0 == rank1
    assert (out / "metrics.jsonl").exists() and (out / "report.png").exists()


def test_reducer_sums_and_means_trees_in_buckets(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_all_reduce(tensor, op=None, group=None):
        calls.append(tensor.numel())
        tensor.mul_(2)  # as if a second rank held the same values

    monkeypatch.setattr(distributed.dist, "all_reduce", fake_all_reduce)
    monkeypatch.setattr(distributed, "BUCKET_ELEMENTS", 5)
    world = distributed.World(rank=0, size=2, launched=True)
    tree = {"a": torch.ones(3), "b": {"c": torch.full((2, 2), 3.0)}, "n": torch.tensor(4)}
    before = torch.utils._pytree.tree_map(torch.clone, tree)
    mean = distributed.AllReduceReducer(world).mean(tree)
    total = distributed.AllReduceReducer(world).sum(tree)
    torch.testing.assert_close(mean["b"]["c"], tree["b"]["c"])
    torch.testing.assert_close(total["a"], 2 * tree["a"])
    assert int(mean["n"]) == 4 and int(total["n"]) == 8
    assert max(calls) <= 5  # bucketed
    for x, y in zip(torch.utils._pytree.tree_leaves(tree), torch.utils._pytree.tree_leaves(before), strict=True):
        assert torch.equal(x, y)


def test_digests_depend_on_structure_and_bytes() -> None:
    host = ef.CNNHost(n_blocks=2, base_channels=4)
    model, params, _ = ef.build_model(host, host.slot_ids)
    registry = ef.default_registry()
    assert distributed.structure_digest(model, registry) == distributed.structure_digest(model, registry)
    other, _, _ = ef.build_model(host, host.slot_ids[:1])
    assert distributed.structure_digest(model, registry) != distributed.structure_digest(other, registry)
    assert distributed.structure_digest(model, registry) != distributed.structure_digest(
        model, registry.without("cnn", "noop")
    )
    light = registry.get("cnn", "conv_light")
    not_per_sample = registry.without("cnn", "conv_light").with_blueprint(dataclasses.replace(light, per_sample=False))
    assert distributed.structure_digest(model, registry) != distributed.structure_digest(model, not_per_sample)
    nudged = {"host": {**params["host"]}, "slots": {}}
    key = next(iter(nudged["host"]))
    nudged["host"][key] = params["host"][key].clone()
    nudged["host"][key].view(-1)[0] += 1e-6
    assert distributed.params_digest(params) != distributed.params_digest(nudged)
    assert distributed.params_digest(params) == distributed.params_digest({"host": dict(params["host"]), "slots": {}})
