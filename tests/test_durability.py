"""Durability of saves: the order of write, fsync, rename and directory fsync; a crash at every step; power loss.

The journal in ``_fsjournal.py`` records every call that changes the disk.
A *kill* at step ``k`` stops the process before its ``k``-th such call (no
clean-up handler runs); a *power loss* additionally undoes whatever was not
made durable (unsynced file contents, directory entries whose directory was
not fsynced). After either, earlier checkpoints must load, the one being
written must be complete or absent, and the next save must work.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from _fsjournal import DiskFull, FsJournal, Op, SimulatedCrash

import esper_func as ef
import esper_func.checkpoint as ckpt
from esper_func.fit import LoopState
from esper_func.runs import load_run, save_run
from esper_func.train import init_train_state, train_step

pytest.importorskip("safetensors", reason="checkpoints need safetensors (the 'demo' extra)")


@pytest.fixture(autouse=True)
def no_real_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Durability is simulated by the journal; real fsyncs would only make these tests slow."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def tensors_of(i: int) -> dict[str, Any]:
    return {"w": torch.full((4,), float(i)), "nested": {"b": torch.arange(i + 1), "empty": {}}}


def save(root: Path, i: int, keep: int = 2) -> Path:
    return ckpt.save_checkpoint(root, tensors=tensors_of(i), meta={"epoch": i}, keep=keep)


def epoch_loaded(root: Path, *, recover: bool) -> int | None:
    """The epoch of the checkpoint that loads, ``None`` when there is none; the tensors must match it."""
    try:
        tensors, meta = ckpt.load_checkpoint(root, recover=recover)
    except ef.CheckpointError:
        return None
    i = meta["epoch"]
    expected = tensors_of(i)
    assert torch.equal(tensors["w"], expected["w"]) and torch.equal(tensors["nested"]["b"], expected["nested"]["b"])
    return int(i)


def journal_of_save(root: Path, prior: int, monkeypatch: pytest.MonkeyPatch) -> FsJournal:
    for i in range(prior):
        save(root, i)
    journal = FsJournal()
    with journal.installed(monkeypatch):
        save(root, prior)
    return journal


# --------------------------------------------------------------------------- ordering


def under(path: str, directory: str) -> bool:
    return path.startswith(directory.rstrip("/") + "/")


def test_every_file_is_fsynced_before_its_rename_and_each_directory_after(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = journal_of_save(tmp_path, 3, monkeypatch)  # with keep=2 this save also prunes
    ops = journal.ops
    kinds = [op.kind for op in ops]
    assert {"create", "write", "fsync", "rename", "mkdir"} <= set(kinds)

    def fsynced_between(inode: int | None, start: int, end: int) -> bool:
        return any(op.kind == "fsync" and op.inode == inode for op in ops[start + 1 : end])

    renames = [(i, op) for i, op in enumerate(ops) if op.kind == "rename" and ".trash-" not in (op.dst or "")]
    assert len(renames) == 2  # the checkpoint directory, then LATEST
    for i, rename in renames:
        assert rename.dst is not None
        # The data under the old name is durable before the rename makes it visible under the new one.
        written: list[tuple[int, Op]] = [
            (j, op) for j, op in enumerate(ops[:i]) if op.kind == "write" and (op.path == rename.path or under(op.path, rename.path))
        ]
        assert written, f"nothing was written before {rename}"
        for j, write in written:
            assert fsynced_between(write.inode, j, i), f"{write.path} renamed at step {i} before an fsync"
        if rename.is_dir:
            entries = [j for j, op in enumerate(ops[:i]) if op.kind == "create" and under(op.path, rename.path)]
            assert fsynced_between(rename.inode, max(entries), i), f"directory {rename.path} not fsynced before its rename"
        # The rename itself is made durable by an fsync of the directory afterwards.
        assert fsynced_between(rename.dst_parent, i, len(ops)), f"no directory fsync after renaming to {rename.dst}"
    # Every directory entry created is made durable by an fsync of its directory.
    for i, op in enumerate(ops):
        if op.kind in ("create", "mkdir"):
            assert fsynced_between(op.parent, i, len(ops)), f"{op.path} created without an fsync of its directory"
    # Nothing is ever written under a checkpoint's final name, and LATEST switches only after the checkpoint is durable.
    for op in ops:
        if op.kind in ("create", "write"):
            assert "/.tmp-" in op.path, f"{op.path} written in place"
    (dir_rename, latest_rename) = (renames[0][1], renames[1][1])
    assert dir_rename.is_dir and Path(dir_rename.dst or "").name == "ckpt-000003"
    assert Path(latest_rename.dst or "").name == "LATEST" and renames[0][0] < renames[1][0]
    assert fsynced_between(dir_rename.dst_parent, renames[0][0], renames[1][0])
    assert not journal.not_durable() or all(
        op.kind == "rename" and ".trash-" in (op.dst or "") for _, op in journal.not_durable()
    )


def test_making_directories_fsyncs_each_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = FsJournal()
    with journal.installed(monkeypatch):
        save(tmp_path / "a" / "b" / "c", 0)
    journal.power_loss(tmp_path)
    assert epoch_loaded(tmp_path / "a" / "b" / "c", recover=False) == 0


# --------------------------------------------------------------------------- a crash at every step


def all_checkpoints_complete(root: Path) -> None:
    for path in ckpt.list_checkpoints(root):
        ckpt.verify_checkpoint(path)  # a checkpoint name never holds a half-written checkpoint


@pytest.mark.parametrize("power_loss", [False, True], ids=["kill", "power-loss"])
@pytest.mark.parametrize("prior", [0, 1, 3], ids=["first-save", "second-save", "save-with-prune"])
def test_a_crash_at_every_step_of_a_save_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prior: int, power_loss: bool
) -> None:
    steps = journal_of_save(tmp_path / "measure", prior, monkeypatch).steps
    assert steps >= 10
    previous = prior - 1 if prior else None
    for k in range(steps + 1):  # k == steps: the save returned, then the crash came
        root = tmp_path / f"crash-{k}"
        for i in range(prior):
            save(root, i)
        journal = FsJournal(crash_at=k if k < steps else None)
        with journal.installed(monkeypatch):
            try:
                save(root, prior)
                returned = True
            except SimulatedCrash:
                returned = False
        assert returned == (k == steps)
        if power_loss:
            journal.power_loss(root)
        where = f"crash before step {k} of {steps}"
        all_checkpoints_complete(root)
        strict, recovered = epoch_loaded(root, recover=False), epoch_loaded(root, recover=True)
        if returned:  # a save that returned is durable, whatever happens next
            assert strict == recovered == prior, where
        else:
            assert recovered in (previous, prior), where
            assert strict in (previous, prior), where  # LATEST names the old one or, once switched, the new one
            assert None not in (strict, recovered) or previous is None, where
            assert strict is None or recovered == max(strict, recovered or 0), where
        # The next save works and clears the leftovers.
        save(root, prior + 1)
        assert epoch_loaded(root, recover=False) == epoch_loaded(root, recover=True) == prior + 1, where
        assert not [p.name for p in root.iterdir() if p.name.startswith((".tmp-", ".trash-"))], where


def test_an_exception_at_every_step_leaves_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing call (disk full, permission) at any step: the save raises, cleans up, and LATEST is unchanged."""
    measured = journal_of_save(tmp_path / "measure", 1, monkeypatch)
    steps = measured.steps
    mutating = [op for op in measured.ops if op.kind in FsJournal.MUTATING]
    switch = next(i for i, op in enumerate(mutating) if op.kind == "rename" and Path(op.dst or "").name == "LATEST")
    for k in range(steps):
        root = tmp_path / f"fail-{k}"
        save(root, 0)
        journal = FsJournal(fail_at=k)
        with journal.installed(monkeypatch):
            try:
                save(root, 1)
                returned = True
            except DiskFull:
                returned = False
        all_checkpoints_complete(root)
        if k > switch:  # after LATEST switched: the new checkpoint stands (an fsync error is still raised)
            assert epoch_loaded(root, recover=False) == 1, f"failure at step {k}"
        else:
            assert not returned and epoch_loaded(root, recover=False) == 0, f"failure at step {k}"
            assert [p.name for p in ckpt.list_checkpoints(root)] == ["ckpt-000000"], f"failure at step {k}"
            assert sorted(p.name for p in root.iterdir()) == ["LATEST", "ckpt-000000"], f"failure at step {k} left files"


# --------------------------------------------------------------------------- runs: resume after each crash

HOST = ef.CNNHost(in_channels=1, n_blocks=2, base_channels=2, num_classes=3, memory_format="contiguous_format")


def small_run(steps: int) -> tuple[Any, Any, LoopState]:
    optimizer = ef.optim.sgd(0.1, momentum=0.9)
    model, params, buffers = ef.build_model(HOST, HOST.slot_ids, generator=torch.Generator().manual_seed(0))
    model, params = ef.add_seed(model, params, HOST.slot_ids[0], ef.default_registry(), "norm")
    seed = ef.germinate(HOST.slot_ids[0], "norm")
    seed, _, _ = ef.advance(seed, ef.Gates(permissive=True))
    model, params = ef.set_stages(model, params, {HOST.slot_ids[0]: seed})
    state = init_train_state(model, params, buffers, optimizer=optimizer, seeds={HOST.slot_ids[0]: seed}, key=3)
    g = torch.Generator().manual_seed(1)
    batch = (torch.randn(6, 1, 8, 8, generator=g), torch.randint(0, 3, (6,), generator=g))
    for _ in range(steps):
        state, _ = train_step(model, state, batch, optimizer=optimizer, loss_fn=torch.nn.functional.cross_entropy)
    return model, state, LoopState(epoch=steps, last_good=(model, state))


def same_state(a: Any, b: Any) -> bool:
    leaves_a, leaves_b = torch.utils._pytree.tree_leaves((a.params, a.buffers)), torch.utils._pytree.tree_leaves((b.params, b.buffers))
    return (
        a.step == b.step and a.key == b.key and a.seeds == b.seeds
        and len(leaves_a) == len(leaves_b) and all(torch.equal(x, y) for x, y in zip(leaves_a, leaves_b, strict=True))
    )


@pytest.mark.parametrize("power_loss", [False, True], ids=["kill", "power-loss"])
def test_a_run_resumes_after_a_crash_at_every_step_of_its_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, power_loss: bool
) -> None:
    registry, optimizer = ef.default_registry(), ef.optim.sgd(0.1, momentum=0.9)
    first, second = small_run(1), small_run(2)
    measure = FsJournal()
    save_run(tmp_path / "measure", *first)
    with measure.installed(monkeypatch):
        save_run(tmp_path / "measure", *second)
    for k in range(measure.steps):
        root = tmp_path / f"crash-{k}"
        save_run(root, *first)
        journal = FsJournal(crash_at=k)
        with journal.installed(monkeypatch), pytest.raises(SimulatedCrash):
            save_run(root, *second)
        if power_loss:
            journal.power_loss(root)
        saved = load_run(root, registry=registry, recover=True)
        model, state, loop = saved.restore(optimizer)
        assert loop.epoch in (1, 2), f"crash before step {k}"
        expected = first if loop.epoch == 1 else second
        assert model == expected[0] and same_state(state, expected[1]), f"crash before step {k}"
        assert os.path.isdir(saved.path or "")
