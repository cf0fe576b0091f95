"""The epoch loop end to end: lifecycle on real training, resume, governor, run checkpoints."""

from __future__ import annotations

import dataclasses
import math
from functools import cache
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import esper_func as ef
from esper_func._pytree import tree_leaves
from esper_func.controller import HeuristicConfig, heuristic
from esper_func.fit import FitConfig, LoopState, fit, run_epoch
from esper_func.governor import Verdict
from esper_func.runs import load_run, save_run
from esper_func.train import init_train_state

HOST = ef.CNNHost(in_channels=1, n_blocks=2, base_channels=4, num_classes=4, memory_format="contiguous_format")
FAST = heuristic(HeuristicConfig(stabilization_epochs=0, min_epochs_before_germinate=2, plateau_epochs_to_germinate=1, tempo=2))
GATES = ef.Gates(permissive=True, min_blending_epochs=1)


@cache
def dataset():
    return ef.data.synthetic_images(240, classes=4, size=8, seed=0)


def fresh(optimizer):
    model, params, buffers = ef.build_model(HOST, HOST.slot_ids, generator=torch.Generator().manual_seed(0))
    return model, init_train_state(model, params, buffers, optimizer=optimizer, key=7)


def config(epochs: int) -> FitConfig:
    return FitConfig(epochs=epochs, batch_size=32, gates=GATES)


def leaves_equal(a, b) -> bool:
    la, lb = torch.utils._pytree.tree_leaves(a), torch.utils._pytree.tree_leaves(b)
    return len(la) == len(lb) and all(torch.equal(x, y) for x, y in zip(la, lb, strict=True))


@cache
def twelve_epochs():
    optimizer = ef.optim.adamw(1e-2)
    model, state = fresh(optimizer)
    return fit(model, state, dataset(), optimizer=optimizer, config=config(12), registry=ef.default_registry(), controller=FAST)


def test_a_run_germinates_blends_and_ends_a_seed():
    result = twelve_epochs()
    kinds = [type(e).__name__ for r in result.history for e in r.events]
    assert "SeedGerminated" in kinds
    stages = {e.to_stage for r in result.history for e in r.events if isinstance(e, ef.StageChanged)}
    assert ef.SeedStage.BLENDING in stages
    assert ef.SeedStage.FOSSILIZED in stages or ef.SeedStage.PRUNED in stages
    record = result.history[-1]
    assert set(record.to_dict()) >= {"epoch", "train_loss", "val_loss", "val_accuracy", "slots", "contributions", "events"}
    assert record.epoch == 12 and len(result.history) == 12 and result.history == result.loop.records
    assert [s.slot_id for s in record.slots] == list(result.model.slot_order)
    # The model's structure follows the lifecycle states.
    for sid in result.model.slot_order:
        seed_state = result.state.seeds.get(sid)
        if seed_state is not None and ef.has_seed(seed_state):
            assert result.model.stage(sid) == seed_state.stage and result.model.slot(sid) is not None


def test_resuming_after_epoch_three_gives_the_uninterrupted_run_bitwise(tmp_path: Path):
    optimizer = ef.optim.adamw(1e-2)
    full = twelve_epochs()
    model, state = fresh(optimizer)
    first = fit(model, state, dataset(), optimizer=optimizer, config=config(3), registry=ef.default_registry(), controller=FAST)
    save_run(tmp_path, first.model, first.state, first.loop)
    model, state, loop = load_run(tmp_path, registry=ef.default_registry()).restore(optimizer)
    rest = fit(model, state, dataset(), optimizer=optimizer, config=config(12), registry=ef.default_registry(),
               controller=FAST, loop=loop)
    assert rest.model == full.model
    assert leaves_equal(rest.state.params, full.state.params)
    assert leaves_equal(rest.state.buffers, full.state.buffers)
    assert rest.state.seeds == full.state.seeds and rest.state.step == full.state.step
    assert rest.loop.records == full.loop.records


def _poisoned(logits, targets):  # every training loss (and gradient) of the epoch is NaN
    return F.cross_entropy(logits, targets) * float("nan")


def test_nan_gradients_with_a_live_seed_roll_back_and_prune_every_live_seed():
    # esper-lite's TolariaGovernor: host (and fossils) back to the last snapshot, every live seed
    # pruned with the panic reason by the governor, optimizer momentum dropped; training goes on.
    optimizer = ef.optim.adamw(1e-2)
    model, state = fresh(optimizer)
    loop = LoopState()
    registry = ef.default_registry()
    while not any(ef.has_seed(s) and s.stage != ef.SeedStage.FOSSILIZED for s in state.seeds.values()):
        model, state, loop, _ = run_epoch(model, state, loop, dataset(), optimizer=optimizer, config=config(30),
                                          registry=registry, controller=FAST)
    _snap_model, snapshot = loop.last_good
    live = sorted(sid for sid, s in state.seeds.items() if ef.has_seed(s) and s.stage != ef.SeedStage.FOSSILIZED)

    model, state, loop, record = run_epoch(model, state, loop, dataset(), optimizer=optimizer, config=config(30),
                                           registry=registry, controller=FAST, loss_fn=_poisoned)
    assert (record.verdict, record.verdict_reason) == (Verdict.ROLLBACK, "governor_nan") and record.action is None
    assert record.to_dict()["governor"] == {"verdict": "ROLLBACK", "reason": "governor_nan"}
    assert math.isnan(record.val_loss) and record.to_dict()["val_loss"] == "nan"
    assert leaves_equal(state.params["host"], snapshot.params["host"])
    assert leaves_equal(state.buffers, snapshot.buffers)
    pruned = [e for e in record.events if isinstance(e, ef.SeedPruned)]
    assert sorted((e.slot_id, e.reason, e.initiator) for e in pruned) == [
        (sid, "governor_nan", "governor") for sid in live
    ]
    for sid in live:
        assert state.seeds[sid].stage == ef.SeedStage.PRUNED and model.slot(sid) is None
        assert state.seeds[sid].metrics.auto_pruned
    fresh_opt = tree_leaves(optimizer.init(state.params))
    assert all(torch.equal(a, b) for a, b in zip(tree_leaves(state.opt_state), fresh_opt, strict=True))  # momentum dropped
    assert loop.consecutive_rollbacks == 1
    # Training goes on from the restored state.
    model, state, loop, record = run_epoch(model, state, loop, dataset(), optimizer=optimizer, config=config(30),
                                           registry=registry, controller=FAST)
    assert math.isfinite(record.val_loss) and loop.consecutive_rollbacks == 0


def test_the_snapshot_follows_esper_lites_schedule():
    # Refreshed at epochs 5, 10, ... and at the first healthy check after a fossilization.
    result = twelve_epochs()
    optimizer = ef.optim.adamw(1e-2)
    model, state = fresh(optimizer)
    loop = LoopState()
    snapshots = []
    for _ in range(12):
        before = loop.last_good
        fossilized = loop.fossilized_since_snapshot
        model, state, loop, record = run_epoch(model, state, loop, dataset(), optimizer=optimizer, config=config(12),
                                               registry=ef.default_registry(), controller=FAST)
        if loop.last_good is not before:
            snapshots.append(record.epoch)
            assert record.epoch % 5 == 0 or fossilized or before is None
    assert 5 in snapshots and 10 in snapshots
    assert result.loop.epoch == 12


def test_a_nan_in_the_validation_data_stops_the_run_with_a_clear_error():
    data = dataset()
    x_val = data.x_val.clone()
    x_val[0, 0, 0, 0] = float("nan")
    poisoned = dataclasses.replace(data, x_val=x_val)
    optimizer = ef.optim.adamw(1e-2)
    model, state = fresh(optimizer)
    with pytest.raises(ef.TrainingDivergedError, match=r"rolled back 3 epochs in a row.*x_val holds 1 non-finite"):
        fit(model, state, poisoned, optimizer=optimizer, config=config(10), registry=ef.default_registry(),
            controller=FAST)


def test_run_checkpoints_refuse_corruption_and_keep_the_previous_one(tmp_path: Path):
    result = twelve_epochs()
    save_run(tmp_path, result.model, result.state, result.loop, keep=5)
    newer = save_run(tmp_path, result.model, result.state, result.loop, keep=5)
    tensors = newer / "tensors.safetensors"
    data = bytearray(tensors.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tensors.write_bytes(bytes(data))
    with pytest.raises(ef.CheckpointError):
        load_run(tmp_path, registry=ef.default_registry())
    tensors.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(ef.CheckpointError):
        load_run(newer, registry=ef.default_registry())
    older = sorted(p for p in tmp_path.iterdir() if p.name.startswith("ckpt-"))[0]
    _model, state, _ = load_run(older, registry=ef.default_registry()).restore(ef.optim.adamw(1e-2))
    assert leaves_equal(state.params, result.state.params)


def test_loading_refuses_other_formats_versions_and_foreign_structures(tmp_path: Path):
    result = twelve_epochs()
    ef.checkpoint.save_checkpoint(tmp_path / "plain", tensors={"x": torch.zeros(1)}, meta={"format": "something-else"})
    with pytest.raises(ef.CheckpointError, match="not an esper_func run"):
        load_run(tmp_path / "plain", registry=ef.default_registry())
    path = save_run(tmp_path / "run", result.model, result.state, result.loop)
    meta_tensors, meta = ef.checkpoint.load_checkpoint(path)
    meta["version"] = 99
    ef.checkpoint.save_checkpoint(tmp_path / "future", tensors=meta_tensors, meta=meta)
    with pytest.raises(ef.CheckpointError, match="version 99"):
        load_run(tmp_path / "future", registry=ef.default_registry())
    saved = load_run(tmp_path / "run", registry=ef.default_registry())
    with pytest.raises(ef.CheckpointError, match="optimizer state"):
        saved.restore(ef.optim.sgd(0.1, momentum=0.9))  # AdamW state, SGD optimizer
    (tmp_path / "pickle").mkdir()
    torch.save({"x": torch.zeros(1)}, tmp_path / "pickle" / "tensors.safetensors")
    with pytest.raises(ef.CheckpointError):
        load_run(tmp_path / "pickle", registry=ef.default_registry())
