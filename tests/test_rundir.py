"""Run directories: the manifest, what a run owns, claiming, replacing, putting back, and the writer lock."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

import esper_func as ef
from esper_func.runs import (
    LOCK_FILE,
    MANIFEST_FILE,
    REPLACED_PREFIX,
    RunManifest,
    check_run_directory,
    claim_run_directory,
    foreign_entries,
    lock_run_directory,
    read_manifest,
    write_atomic,
    write_manifest,
)

MANIFEST = RunManifest(kind="trained", owns=("checkpoints", "metrics.jsonl", "report.png"), config={"epochs": 3})


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a digest of its bytes (directories as ``<dir>``)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = "<dir>"
        for name in files:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


def make_run(root: Path) -> None:
    """A run directory as ``demo`` leaves it."""
    root.mkdir(parents=True, exist_ok=True)
    write_manifest(root, MANIFEST)
    (root / "checkpoints" / "ckpt-000000").mkdir(parents=True)
    (root / "checkpoints" / "ckpt-000000" / "meta.json").write_text("{}")
    (root / "checkpoints" / "ckpt-000000" / "tensors.safetensors").write_bytes(b"\x00" * 16)
    (root / "checkpoints" / "LATEST").write_text("ckpt-000000\n")
    (root / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (root / "report.png").write_bytes(b"\x89PNG")
    (root / LOCK_FILE).write_text("")


def test_a_new_run_claims_a_missing_or_empty_directory(tmp_path: Path) -> None:
    claim = claim_run_directory(tmp_path / "a" / "b", MANIFEST)
    assert read_manifest(tmp_path / "a" / "b") == MANIFEST and claim.replaced is None
    (tmp_path / "empty").mkdir()
    claim_run_directory(tmp_path / "empty", MANIFEST)
    assert sorted(os.listdir(tmp_path / "empty")) == [MANIFEST_FILE]


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_directory_with_user_files_is_refused_and_left_alone(tmp_path: Path, overwrite: bool) -> None:
    (tmp_path / "thesis.txt").write_text("years of work")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("print()")
    (tmp_path / "metrics.jsonl").write_text("mine, not a run's")  # a run's name, but no manifest says so
    before = snapshot(tmp_path)
    with pytest.raises(ef.RunDirectoryError, match=r"not an esper-func run directory.*metrics\.jsonl, src, thesis\.txt") as info:
        claim_run_directory(tmp_path, MANIFEST, overwrite=overwrite)
    assert isinstance(info.value, ValueError) and ("--overwrite only" in str(info.value)) == overwrite
    assert snapshot(tmp_path) == before


def test_an_existing_run_is_not_replaced_without_overwrite(tmp_path: Path) -> None:
    make_run(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(ef.RunDirectoryError, match=r"already holds an esper-func run.*resume.*--overwrite"):
        claim_run_directory(tmp_path, MANIFEST)
    with pytest.raises(ef.RunDirectoryError, match=r"already holds an esper-func run \(trained\); use another directory$"):
        claim_run_directory(tmp_path, MANIFEST, command="import-esper-lite")
    assert snapshot(tmp_path) == before


FOREIGN = {
    "top-level file": ("notes.txt", lambda r: (r / "notes.txt").write_text("x")),
    "top-level dir": ("data", lambda r: (r / "data").mkdir()),
    "file in checkpoints": ("checkpoints/README", lambda r: (r / "checkpoints" / "README").write_text("x")),
    "file in a checkpoint": (
        "checkpoints/ckpt-000000/notes.txt",
        lambda r: (r / "checkpoints" / "ckpt-000000" / "notes.txt").write_text("x"),
    ),
    "dir named like an owned file": ("report.png", lambda r: ((r / "report.png").unlink(), (r / "report.png").mkdir())),
    "symlink": ("link", lambda r: (r / "link").symlink_to(r / "metrics.jsonl")),
    "checkpoints is a file": (
        "checkpoints",
        lambda r: (__import__("shutil").rmtree(r / "checkpoints"), (r / "checkpoints").write_text("x")),
    ),
}


@pytest.mark.parametrize("case", sorted(FOREIGN))
def test_overwrite_refuses_a_run_holding_anything_else_and_names_it(tmp_path: Path, case: str) -> None:
    make_run(tmp_path)
    name, add = FOREIGN[case]
    add(tmp_path)
    before = snapshot(tmp_path)
    assert name in foreign_entries(tmp_path, MANIFEST)
    with pytest.raises(ef.RunDirectoryError, match=f"--overwrite refused.*{name}"):
        claim_run_directory(tmp_path, MANIFEST, overwrite=True)
    assert snapshot(tmp_path) == before


def test_overwrite_moves_the_old_run_aside_until_commit(tmp_path: Path) -> None:
    make_run(tmp_path)
    (tmp_path / ".esper-func-tmp-metrics.jsonl-dead").write_text("a torn write")  # leftovers are the run's too
    old = snapshot(tmp_path)
    new = RunManifest(kind="trained", owns=("checkpoints", "metrics.jsonl"), config={"epochs": 9})
    claim = claim_run_directory(tmp_path, new, overwrite=True)
    assert claim.replaced is not None and claim.replaced.name.startswith(REPLACED_PREFIX)
    assert sorted(os.listdir(tmp_path)) == sorted([LOCK_FILE, MANIFEST_FILE, claim.replaced.name])
    assert read_manifest(tmp_path) == new
    (tmp_path / "checkpoints").mkdir()
    claim.commit()
    assert sorted(os.listdir(tmp_path)) == sorted([LOCK_FILE, MANIFEST_FILE, "checkpoints"])
    claim.commit()  # idempotent
    assert claim.rollback() == []  # nothing to undo after a commit
    assert old != snapshot(tmp_path)


def test_rollback_puts_the_old_run_back_and_keeps_files_added_meanwhile(tmp_path: Path) -> None:
    make_run(tmp_path)
    old = snapshot(tmp_path)
    claim = claim_run_directory(tmp_path, MANIFEST, overwrite=True)
    (tmp_path / "checkpoints").mkdir()  # the new run's partial output
    (tmp_path / "metrics.jsonl").write_text("new")
    (tmp_path / "user-notes.txt").write_text("written by the user while training")
    assert claim.rollback() == []
    after = snapshot(tmp_path)
    assert after.pop("user-notes.txt") and after == old


def test_check_run_directory_writes_nothing(tmp_path: Path) -> None:
    check_run_directory(tmp_path / "missing", overwrite=False)
    assert not (tmp_path / "missing").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ef.RunDirectoryError, match="is not a directory"):
        check_run_directory(tmp_path / "file", overwrite=True)


def test_the_lock_keeps_a_second_writer_out_and_dies_with_its_holder(tmp_path: Path) -> None:
    with lock_run_directory(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
        with pytest.raises(ef.RunDirectoryError, match=rf"in use by another esper-func process \(pid {os.getpid()}\)"):
            with lock_run_directory(tmp_path):
                pass
    with lock_run_directory(tmp_path):  # released
        pass
    with pytest.raises(ef.RunDirectoryError, match="cannot write to"):
        with lock_run_directory(tmp_path / "missing" / "dir"):
            pass


@pytest.mark.parametrize(
    "content",
    [
        b"", b"not json", b"[]", b'{"format": "other"}',
        b'{"format": "esper_func.run_directory", "version": 2, "kind": "trained", "owns": []}',
        b'{"format": "esper_func.run_directory", "version": 1, "kind": "weird", "owns": []}',
        b'{"format": "esper_func.run_directory", "version": 1, "kind": "trained", "owns": ["../etc"]}',
        b'{"format": "esper_func.run_directory", "version": 1, "kind": "trained", "owns": "checkpoints"}',
        b'{"format": "esper_func.run_directory", "version": 1, "kind": "trained", "owns": [], "config": 3}',
        b"\xff\xfe",
    ],
)
def test_a_malformed_manifest_is_one_clear_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / MANIFEST_FILE).write_bytes(content)
    with pytest.raises(ef.RunDirectoryError, match=r"esper-func-run\.json is malformed: .*restore it"):
        read_manifest(tmp_path)
    with pytest.raises(ef.RunDirectoryError):
        claim_run_directory(tmp_path, MANIFEST, overwrite=True)


def test_manifest_round_trip_and_atomic_writes(tmp_path: Path) -> None:
    write_manifest(tmp_path, MANIFEST.owning("rank0.jsonl", "rank1.jsonl"))
    manifest = read_manifest(tmp_path)
    assert manifest is not None and set(manifest.owns) == {*MANIFEST.owns, "rank0.jsonl", "rank1.jsonl"}
    assert json.loads((tmp_path / MANIFEST_FILE).read_text())["config"] == {"epochs": 3}
    write_atomic(tmp_path / "f", b"one")
    write_atomic(tmp_path / "f", b"two")
    assert (tmp_path / "f").read_bytes() == b"two" and sorted(os.listdir(tmp_path)) == sorted(["f", MANIFEST_FILE])


def test_a_kill_part_way_through_moving_a_run_aside_loses_nothing_and_says_where_it_is(tmp_path: Path) -> None:
    """Simulate a kill after each rename of an --overwrite's staging: the files are all somewhere, and a
    directory without its manifest is never treated as a new, empty run."""
    make_run(tmp_path / "ref")
    names = sorted(n for n in os.listdir(tmp_path / "ref") if n != LOCK_FILE)
    order = sorted(names, key=lambda n: (n != MANIFEST_FILE, n))
    assert order[0] == MANIFEST_FILE
    for moved in range(1, len(order)):
        root = tmp_path / f"kill-{moved}"
        make_run(root)
        aside = root / f"{REPLACED_PREFIX}dead"
        aside.mkdir()
        for name in order[:moved]:
            os.rename(root / name, aside / name)
        assert read_manifest(root) is None  # no longer claimed as a run
        with pytest.raises(ef.RunDirectoryError, match=rf"interrupted --overwrite left the previous run's files in {REPLACED_PREFIX}dead"):
            claim_run_directory(root, MANIFEST, overwrite=True)
        assert sorted([*os.listdir(aside), *(n for n in os.listdir(root) if n not in (LOCK_FILE, aside.name))]) == names
