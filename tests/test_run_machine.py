"""A stateful machine over a run: germinate, train, save, crash mid-save (kill or power loss), resume.

The model of the disk is a list: the last save known to be durable (it
returned) and the saves interrupted since (each may or may not have reached
the disk). Resuming must give back exactly one of those -- never anything
older than the last durable one -- and every ``ckpt-*`` name must always hold
a complete checkpoint.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _fsjournal import FsJournal, SimulatedCrash
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import esper_func as ef
from esper_func.checkpoint import list_checkpoints, verify_checkpoint
from esper_func.fit import LoopState
from esper_func.optim import reinit_like, state_to_tree
from esper_func.runs import load_run, save_run
from esper_func.train import TrainState, init_train_state, train_step

pytest.importorskip("safetensors", reason="checkpoints need safetensors (the 'demo' extra)")

HOST = ef.CNNHost(in_channels=1, n_blocks=2, base_channels=2, num_classes=3, memory_format="contiguous_format")
OPTIMIZER = ef.optim.adamw(1e-2)
REGISTRY = ef.default_registry()
_g = torch.Generator().manual_seed(0)
BATCH = (torch.randn(4, 1, 8, 8, generator=_g), torch.randint(0, 3, (4,), generator=_g))

Snapshot = tuple[int, ef.Model, TrainState]


def leaves(state: TrainState) -> list[torch.Tensor]:
    return torch.utils._pytree.tree_leaves((state.params, state.buffers, state_to_tree(state.opt_state)))


def same(a: Snapshot, model: ef.Model, state: TrainState, epoch: int) -> bool:
    a_epoch, a_model, a_state = a
    la, lb = leaves(a_state), leaves(state)
    return (
        a_epoch == epoch and a_model == model and a_state.seeds == state.seeds
        and (a_state.step, a_state.key) == (state.step, state.key)
        and len(la) == len(lb) and all(x.dtype == y.dtype and torch.equal(x, y) for x, y in zip(la, lb, strict=True))
    )


class RunMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="esper-func-machine-"))
        model, params, buffers = ef.build_model(HOST, HOST.slot_ids, generator=torch.Generator().manual_seed(0))
        self.model: ef.Model = model
        self.state = init_train_state(model, params, buffers, optimizer=OPTIMIZER, key=5)
        self.epoch = 0
        self.durable: Snapshot | None = None
        self.maybe: list[Snapshot] = []
        self.monkeypatch = pytest.MonkeyPatch()

    def teardown(self) -> None:
        self.monkeypatch.undo()
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ the model side

    @rule(steps=st.integers(1, 2))
    def train(self, steps: int) -> None:
        for _ in range(steps):
            self.state, _ = train_step(self.model, self.state, BATCH, optimizer=OPTIMIZER, loss_fn=F.cross_entropy)

    @precondition(lambda self: any(self.model.slot(s) is None for s in HOST.slot_ids))
    @rule(data=st.data(), blueprint=st.sampled_from(["norm", "noop", "depthwise"]))
    def germinate(self, data: st.DataObject, blueprint: str) -> None:
        slot = data.draw(st.sampled_from([s for s in HOST.slot_ids if self.model.slot(s) is None]))
        model, params = ef.add_seed(self.model, self.state.params, slot, REGISTRY, blueprint)
        seed = ef.germinate(slot, blueprint)
        seed, _, _ = ef.advance(seed, ef.Gates(permissive=True))  # TRAINING: in the forward pass
        model, params = ef.set_stages(model, params, {slot: seed})
        opt_state = reinit_like(OPTIMIZER, self.state.opt_state, params)
        self.model = model
        self.state = TrainState(params, self.state.buffers, opt_state, {**self.state.seeds, slot: seed}, self.state.step, self.state.key)

    # ------------------------------------------------------------------ the disk side

    def _save(self, journal: FsJournal | None) -> bool:
        self.epoch += 1
        loop = LoopState(epoch=self.epoch, last_good=(self.model, self.state))
        snapshot = (self.epoch, self.model, self.state)
        try:
            if journal is None:
                save_run(self.root, self.model, self.state, loop, keep=2)
            else:
                with journal.installed(self.monkeypatch):
                    save_run(self.root, self.model, self.state, loop, keep=2)
        except SimulatedCrash:
            self.maybe.append(snapshot)
            return False
        self.durable, self.maybe = snapshot, []
        return True

    @rule()
    def save(self) -> None:
        assert self._save(None)

    @rule(step=st.integers(0, 40), power_loss=st.booleans())
    def crash_during_save(self, step: int, power_loss: bool) -> None:
        journal = FsJournal(crash_at=step)
        self._save(journal)
        if power_loss:
            journal.power_loss(self.root)

    @rule()
    def resume(self) -> None:
        """The process restarts: what is in memory is gone; the run continues from the disk."""
        if self.durable is None and not self.maybe:
            with pytest.raises(ef.CheckpointError):
                load_run(self.root, registry=REGISTRY, recover=True)
            return
        try:
            saved = load_run(self.root, registry=REGISTRY, recover=True)
        except ef.CheckpointError:
            assert self.durable is None, "a save that returned was lost"
            return
        model, state, loop = saved.restore(OPTIMIZER)
        options = ([self.durable] if self.durable is not None else []) + self.maybe
        assert any(same(o, model, state, loop.epoch) for o in options), f"epoch {loop.epoch} is none of {[o[0] for o in options]}"
        assert self.durable is None or loop.epoch >= self.durable[0]
        self.model, self.state = model, state
        self.durable = (loop.epoch, model, state)
        self.maybe = [m for m in self.maybe if m[0] > loop.epoch]

    @invariant()
    def every_checkpoint_name_holds_a_complete_checkpoint(self) -> None:
        for path in list_checkpoints(self.root):
            verify_checkpoint(path)


RunMachine.TestCase.settings = settings(settings.default, stateful_step_count=10)
test_run_machine = RunMachine.TestCase


def test_machine_rules_cover_a_crash_and_a_resume() -> None:
    """One fixed walk through the machine, so the rules themselves are exercised deterministically."""
    machine = RunMachine()
    try:
        machine.train(1)
        machine.save()
        machine.crash_during_save(step=10, power_loss=True)
        machine.resume()
        assert machine.durable is not None
        machine.crash_during_save(step=100, power_loss=False)  # past the end: the save completes
        assert not machine.maybe
        machine.resume()
        machine.every_checkpoint_name_holds_a_complete_checkpoint()
    finally:
        machine.teardown()
