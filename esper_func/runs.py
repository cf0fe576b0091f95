"""Saving and resuming whole runs: model structure, train state and loop state; run directories.

A run checkpoint is an :mod:`esper_func.checkpoint` directory: tensors
(params, buffers, optimizer state, and the last good state the governor
would roll back to) in safetensors, everything else (model structure, seed
lifecycles, loop records and events, governor memory, the caller's config)
in JSON. Loading refuses pickles, unknown versions, and tensors whose names or
shapes do not fit the saved structure. Because every source of randomness in
a run is a pure function of ``(seed, epoch)`` or ``(key, step)``, a run
stopped after epoch 3 and resumed to epoch 6 ends with exactly the parameters
of an uninterrupted 6-epoch run.

A *run directory* (what ``esper-func demo --out DIR`` writes) holds a
manifest, ``esper-func-run.json``, naming the entries the run owns
(``checkpoints/``, ``metrics.jsonl``, ``report.png``, the rank logs) and the
configuration the run was started with. Only what the manifest names is ever
replaced or removed: :func:`claim_run_directory` refuses a directory that is
neither empty nor a run, and refuses to replace a run that holds anything
else (listing the foreign entries). A replaced run is moved aside, not
deleted, until the new run's first checkpoint is on disk, and is put back if
the command fails before that. :func:`lock_run_directory` keeps a second
writer out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from esper_func.blueprints import Registry
from esper_func.checkpoint import (
    LATEST_FILE,
    META_FILE,
    TENSORS_FILE,
    _fsync_dir,
    _index,
    _make_dirs,
    _write_atomic,
    open_checkpoint,
    save_checkpoint,
)
from esper_func.errors import (
    CheckpointError,
    EsperFuncError,
    RunDirectoryError,
    UnknownBlueprintError,
    UnknownHostError,
)
from esper_func.fit import LoopState
from esper_func.governor import GovernorState
from esper_func.lifecycle import state_from_dict, state_to_dict
from esper_func.lifecycle.events import LifecycleEvent
from esper_func.model import Model, check_tree, model_from_dict, model_to_dict
from esper_func.optim import Optimizer, state_from_tree, state_to_tree
from esper_func.records import EpochRecord, event_to_dict
from esper_func.records import event_from_dict as _event_from_dict
from esper_func.train import TrainState

__all__ = [
    "CHECKPOINTS_DIR",
    "LOCK_FILE",
    "MANIFEST_FILE",
    "RUN_FORMAT",
    "RUN_VERSION",
    "RunClaim",
    "RunManifest",
    "SavedRun",
    "check_run_directory",
    "claim_run_directory",
    "event_from_dict",
    "foreign_entries",
    "load_run",
    "lock_run_directory",
    "read_manifest",
    "save_run",
    "write_atomic",
    "write_manifest",
]

RUN_FORMAT = "esper_func.run"
RUN_VERSION = 1

def event_from_dict(data: Mapping[str, Any]) -> tuple[LifecycleEvent, int]:
    """Rebuild ``(event, run_epoch)`` from :func:`esper_func.fit.event_to_dict`'s output.

    Raises:
        CheckpointError: the dict is not a lifecycle event (see :func:`esper_func.records.event_from_dict`).
    """
    try:
        return _event_from_dict(data)
    except EsperFuncError as exc:
        raise CheckpointError(str(exc)) from exc


def _state_meta(model: Model, state: TrainState) -> dict[str, Any]:
    return {
        "model": model_to_dict(model),
        "seeds": {sid: state_to_dict(s) for sid, s in state.seeds.items()},
        "step": state.step,
        "key": state.key,
    }


def _state_tensors(state: TrainState) -> dict[str, Any]:
    return {"params": state.params, "buffers": state.buffers, "opt_state": state_to_tree(state.opt_state)}


def save_run(
    directory: str | os.PathLike[str],
    model: Model,
    state: TrainState,
    loop: LoopState,
    *,
    extra: Mapping[str, Any] | None = None,
    keep: int | None = 3,
) -> Path:
    """Write the run atomically into ``directory`` (see :func:`esper_func.checkpoint.save_checkpoint`).

    ``extra`` is any JSON-compatible dict the caller needs to resume (its
    hyperparameters, data choice, ...); it comes back from :func:`load_run`.
    """
    last_model, last_state = loop.last_good if loop.last_good is not None else (model, state)
    meta = {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "current": _state_meta(model, state),
        "last_good": _state_meta(last_model, last_state),
        "loop": {
            "epoch": loop.epoch,
            "records": [record.to_dict() for record in loop.records],
            "events": [event_to_dict(e, ep) for e, ep in zip(loop.events, loop.event_epochs, strict=True)],
            "governor": {
                "losses": list(loop.governor.losses),
                "consecutive_panics": loop.governor.consecutive_panics,
                "rollbacks": loop.governor.rollbacks,
            },
            "consecutive_rollbacks": loop.consecutive_rollbacks,
            "fossilized_since_snapshot": loop.fossilized_since_snapshot,
        },
        "extra": dict(extra or {}),
    }
    tensors = {"current": _state_tensors(state), "last_good": _state_tensors(last_state)}
    return save_checkpoint(directory, tensors=tensors, meta=meta, keep=keep)


def _malformed(where: str, exc: BaseException) -> CheckpointError:
    detail = str(exc) if isinstance(exc, EsperFuncError) else f"{type(exc).__name__}: {exc}"
    return CheckpointError(f"run checkpoint field {where} is malformed ({detail}); the checkpoint was edited or damaged")


def _int_field(value: Any, where: str, *, low: int | None = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        bound = "an int" if low is None else f"an int >= {low}"
        raise CheckpointError(f"run checkpoint field {where} must be {bound}; got {value!r}")
    return value


def _dict_field(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CheckpointError(f"run checkpoint field {where} must be a JSON object; got {type(value).__name__}")
    return value


def _list_field(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise CheckpointError(f"run checkpoint field {where} must be a JSON list; got {type(value).__name__}")
    return value


@dataclasses.dataclass(frozen=True)
class SavedRun:
    """A loaded run; :meth:`restore` rebuilds it for an optimizer.

    ``path`` is the ``ckpt-NNNNNN`` directory that was loaded and ``skipped``
    what ``load_run(..., recover=True)`` passed over to find it (see
    :class:`esper_func.checkpoint.LoadedCheckpoint`).
    """

    meta: dict[str, Any]
    tensors: dict[str, Any]
    registry: Registry
    path: Path | None = None
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def extra(self) -> dict[str, Any]:
        """The caller's ``extra`` dict given to :func:`save_run`."""
        return dict(self.meta["extra"])

    @property
    def epoch(self) -> int:
        """Epochs completed when the run was saved."""
        return _int_field(self.meta["loop"].get("epoch"), "loop.epoch")

    def _pair(self, which: str, optimizer: Optimizer | None) -> tuple[Model, TrainState]:
        meta = _dict_field(self.meta[which], which)
        tensors = _dict_field(self.tensors.get(which), f"tensors {which!r}")
        for key in ("model", "seeds", "step", "key"):
            if key not in meta:
                raise CheckpointError(f"run checkpoint field {which}.{key} is missing; the checkpoint was edited or damaged")
        for key in ("params", "buffers", "opt_state"):
            if key not in tensors:
                raise CheckpointError(f"run checkpoint tensors {which}.{key} are missing; the checkpoint was edited or damaged")
        try:
            model = model_from_dict(_dict_field(meta["model"], f"{which}.model"), self.registry)
        except (CheckpointError, UnknownBlueprintError, UnknownHostError):
            raise
        except (EsperFuncError, KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise _malformed(f"{which}.model", exc) from exc
        params, buffers = tensors["params"], tensors["buffers"]
        if not isinstance(params, dict) or not isinstance(buffers, dict):
            raise CheckpointError(f"run checkpoint tensors {which}.params/buffers must be dicts of tensors")
        expected_slots = set(model.seeded)
        if set(params.get("slots", {})) != expected_slots:
            raise CheckpointError(
                f"checkpoint {which!r}: params hold seeds for {sorted(params.get('slots', {}))} "
                f"but the saved structure has seeds in {sorted(expected_slots)}"
            )
        try:
            check_tree(model, params, buffers)
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"checkpoint {which!r} does not fit its saved structure: {exc}") from exc
        try:
            opt_state = None if optimizer is None else state_from_tree(optimizer, tensors["opt_state"], params)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CheckpointError(
                f"checkpoint {which!r}: the optimizer state does not fit {type(optimizer).__name__}: {exc}"
            ) from exc
        seeds_meta = _dict_field(meta["seeds"], f"{which}.seeds")
        seeds = {}
        for sid, d in seeds_meta.items():
            try:
                seeds[sid] = state_from_dict(d)
            except CheckpointError:
                raise
            except (EsperFuncError, KeyError, TypeError, ValueError, AttributeError) as exc:
                raise _malformed(f"{which}.seeds[{sid!r}]", exc) from exc
        step = _int_field(meta["step"], f"{which}.step")
        run_key = _int_field(meta["key"], f"{which}.key", low=None)
        return model, TrainState(params, buffers, opt_state, seeds, step, run_key)

    def restore(self, optimizer: Optimizer | None) -> tuple[Model, TrainState, LoopState]:
        """``(model, state, loop)`` ready for :func:`esper_func.fit.run_epoch`.

        With ``optimizer=None`` the optimizer state is not rebuilt
        (``state.opt_state`` is ``None``): enough to evaluate, not to train.

        Raises:
            CheckpointError: a field of the run metadata is missing or malformed
                (the message names it), or the tensors do not fit the saved structure.
        """
        model, state = self._pair("current", optimizer)
        last_good = self._pair("last_good", optimizer)
        loop_meta = _dict_field(self.meta["loop"], "loop")
        for key in ("epoch", "records", "events", "governor"):
            if key not in loop_meta:
                raise CheckpointError(f"run checkpoint field loop.{key} is missing; the checkpoint was edited or damaged")
        events = _list_field(loop_meta["events"], "loop.events")
        decoded = [event_from_dict(_dict_field(e, f"loop.events[{i}]")) for i, e in enumerate(events)]
        records = []
        for i, raw in enumerate(_list_field(loop_meta["records"], "loop.records")):
            try:
                records.append(EpochRecord.from_dict(_dict_field(raw, f"loop.records[{i}]")))
            except CheckpointError:
                raise
            except EsperFuncError as exc:
                raise _malformed(f"loop.records[{i}]", exc) from exc
        # Written since version 1 added them; a checkpoint without them restores the values a run starts with.
        rollbacks_in_a_row = _int_field(loop_meta.get("consecutive_rollbacks", 0), "loop.consecutive_rollbacks")
        fossilized = loop_meta.get("fossilized_since_snapshot", False)
        if not isinstance(fossilized, bool):
            raise CheckpointError(f"run checkpoint field loop.fossilized_since_snapshot must be true or false; got {fossilized!r}")
        governor = _dict_field(loop_meta["governor"], "loop.governor")
        try:
            losses = tuple(float(x) for x in _list_field(governor["losses"], "loop.governor.losses"))
            panics = _int_field(governor["consecutive_panics"], "loop.governor.consecutive_panics")
            rollbacks = _int_field(governor["rollbacks"], "loop.governor.rollbacks")
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise _malformed("loop.governor", exc) from exc
        loop = LoopState(
            epoch=_int_field(loop_meta["epoch"], "loop.epoch"),
            records=tuple(records),
            events=tuple(e for e, _ in decoded),
            event_epochs=tuple(ep for _, ep in decoded),
            governor=GovernorState(losses=losses, consecutive_panics=panics, rollbacks=rollbacks),
            last_good=last_good,
            consecutive_rollbacks=rollbacks_in_a_row,
            fossilized_since_snapshot=fossilized,
        )
        return model, state, loop


def load_run(directory: str | os.PathLike[str], *, registry: Registry, recover: bool = False) -> SavedRun:
    """Load a run written by :func:`save_run` (no pickles; integrity checked).

    Args:
        directory: the checkpoint directory given to :func:`save_run`, or one
            ``ckpt-NNNNNN`` directory in it.
        registry: where the saved blueprints (and a host class of your own,
            :meth:`~esper_func.Registry.with_host`) are looked up.
        recover: load the newest *complete* checkpoint, passing over newer
            damaged ones and a missing or stale ``LATEST`` (what a resume
            after a crash wants); ``SavedRun.skipped`` says what was passed over.

    Raises:
        CheckpointError: not a run checkpoint, an unknown version, corrupt
            files (with ``recover``: no complete checkpoint at all), or
            tensors that do not fit the saved structure.
    """
    loaded = open_checkpoint(directory, recover=recover)
    meta, tensors = loaded.meta, loaded.tensors
    if meta.get("format") != RUN_FORMAT:
        raise CheckpointError(f"{directory} is not an esper_func run (format {meta.get('format')!r}, expected {RUN_FORMAT!r})")
    if meta.get("version") != RUN_VERSION:
        raise CheckpointError(
            f"{directory}: run format version {meta.get('version')!r} is not supported; this esper_func reads version {RUN_VERSION}"
        )
    for key in ("current", "last_good", "loop", "extra"):
        if key not in meta:
            raise CheckpointError(f"{directory}: run metadata is missing {key!r}")
    for key in ("current", "last_good", "loop", "extra"):
        _dict_field(meta[key], key)
    return SavedRun(meta, tensors, registry, loaded.path, loaded.skipped)


# --------------------------------------------------------------------------- run directories

#: The manifest of a run directory: which entries the run owns, and how it was started.
MANIFEST_FILE: Final[str] = "esper-func-run.json"
MANIFEST_FORMAT: Final[str] = "esper_func.run_directory"
MANIFEST_VERSION: Final[int] = 1
#: The lock file that keeps a second writer out (held with ``flock`` while a command writes).
LOCK_FILE: Final[str] = ".esper-func.lock"
#: Where a run directory keeps its checkpoints.
CHECKPOINTS_DIR: Final[str] = "checkpoints"
#: Temporary files of atomic writes, and runs moved aside by an overwrite, carry these prefixes.
TMP_PREFIX: Final[str] = ".esper-func-tmp-"
REPLACED_PREFIX: Final[str] = ".esper-func-replaced-"

_CHECKPOINT_INTERNAL_PREFIXES = (".tmp-", ".trash-")


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace the file ``path`` with ``data`` atomically and durably (temporary file, fsync, rename, fsync)."""
    _write_atomic(Path(path), data, tmp_prefix=TMP_PREFIX)


@dataclasses.dataclass(frozen=True)
class RunManifest:
    """What ``esper-func-run.json`` says about a run directory.

    Attributes:
        kind: ``"trained"`` (made by ``demo``; resumable) or ``"imported"``
            (made by ``import-esper-lite``; can be swept, not resumed).
        owns: the top-level entries the run owns, besides the manifest, the
            lock file and temporaries of its own writes.
        config: the configuration the run was started with (a JSON object),
            so that a run with no complete checkpoint can start over; ``None``
            when there is none.
    """

    kind: str
    owns: tuple[str, ...]
    config: dict[str, Any] | None = None

    def to_json(self) -> bytes:
        body = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "kind": self.kind,
            "owns": sorted(set(self.owns)),
            "config": self.config,
        }
        return (json.dumps(body, indent=1, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")

    def owning(self, *names: str) -> RunManifest:
        """This manifest with ``names`` added to ``owns``."""
        return dataclasses.replace(self, owns=tuple(sorted(set(self.owns) | set(names))))


def read_manifest(directory: str | os.PathLike[str]) -> RunManifest | None:
    """The manifest of run directory ``directory``; ``None`` when there is none.

    Raises:
        RunDirectoryError: the manifest exists but is unreadable or malformed.
    """
    path = Path(directory) / MANIFEST_FILE
    if not os.path.lexists(path):
        return None
    problem = None
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        doc, problem = None, f"it is not readable JSON ({exc})"
    if problem is None:
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
            problem = f"its format is not {MANIFEST_FORMAT!r}"
        elif doc.get("version") != MANIFEST_VERSION:
            problem = f"version {doc.get('version')!r} is not supported (this esper_func reads {MANIFEST_VERSION})"
        elif doc.get("kind") not in ("trained", "imported"):
            problem = f"kind {doc.get('kind')!r} is not 'trained' or 'imported'"
        elif not isinstance(doc.get("owns"), list) or not all(
            isinstance(n, str) and n and "/" not in n and "\\" not in n and n not in (".", "..") for n in doc["owns"]
        ):
            problem = "'owns' must be a list of entry names"
        elif doc.get("config") is not None and not isinstance(doc.get("config"), dict):
            problem = "'config' must be a JSON object or null"
    if problem is not None:
        raise RunDirectoryError(
            f"{path} is malformed: {problem}. It records which files the run owns; restore it, "
            f"or move the run's files elsewhere and start again"
        )
    assert isinstance(doc, dict)
    return RunManifest(kind=doc["kind"], owns=tuple(doc["owns"]), config=doc.get("config"))


def write_manifest(directory: str | os.PathLike[str], manifest: RunManifest) -> None:
    """Write ``manifest`` into ``directory`` atomically and durably."""
    write_atomic(Path(directory) / MANIFEST_FILE, manifest.to_json())


def _always_owned(name: str) -> bool:
    return name in (MANIFEST_FILE, LOCK_FILE) or name.startswith((TMP_PREFIX, REPLACED_PREFIX))


def _checkpoint_foreign(path: Path, rel: str) -> list[str]:
    """Entries inside a checkpoint directory that esper_func did not write."""
    if path.is_symlink() or not path.is_dir():
        return [rel]
    foreign = []
    for entry in sorted(path.iterdir()):
        name = entry.name
        if name == LATEST_FILE and entry.is_file() and not entry.is_symlink():
            continue
        if name.startswith(_CHECKPOINT_INTERNAL_PREFIXES) and not entry.is_symlink():
            continue
        if _index(name) is not None and entry.is_dir() and not entry.is_symlink():
            foreign += [
                f"{rel}/{name}/{inner.name}"
                for inner in sorted(entry.iterdir())
                if inner.name not in (META_FILE, TENSORS_FILE) or inner.is_symlink() or not inner.is_file()
            ]
            continue
        foreign.append(f"{rel}/{name}")
    return foreign


def foreign_entries(directory: str | os.PathLike[str], manifest: RunManifest | None) -> list[str]:
    """Entries of ``directory`` the run does not own (paths relative to it, sorted).

    Everything is foreign when there is no manifest, except the lock file and
    temporaries of esper_func's own writes. Inside ``checkpoints/``, anything
    but ``LATEST``, ``ckpt-NNNNNN/{meta.json,tensors.safetensors}`` and the
    temporaries of unfinished saves is foreign; so is a symbolic link anywhere.
    """
    root = Path(directory)
    owns = set(manifest.owns) if manifest is not None else set()
    foreign: list[str] = []
    for entry in sorted(root.iterdir()):
        name = entry.name
        if entry.is_symlink():
            foreign.append(name)
        elif _always_owned(name) and (name != MANIFEST_FILE or manifest is not None):
            continue
        elif name not in owns:
            foreign.append(name)
        elif name == CHECKPOINTS_DIR:
            foreign += _checkpoint_foreign(entry, name)
        elif not entry.is_file():
            foreign.append(name)
    return foreign


def _describe(entries: list[str], limit: int = 8) -> str:
    shown = ", ".join(entries[:limit])
    return shown + (f" and {len(entries) - limit} more" if len(entries) > limit else "")


@contextlib.contextmanager
def lock_run_directory(directory: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the run directory's write lock (``flock`` on ``.esper-func.lock``) for the ``with`` block.

    The lock is released when the block exits or the process dies, so a
    killed command never leaves a stale lock behind.

    Raises:
        RunDirectoryError: another process holds the lock, or the lock file cannot be created.
    """
    path = Path(directory) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RunDirectoryError(f"cannot write to {directory}: {exc.strerror or exc}; choose a writable directory") from None
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no advisory locks on this platform
            fcntl = None  # type: ignore[assignment]
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.lseek(fd, 0, os.SEEK_SET)
                holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
                raise RunDirectoryError(
                    f"{directory} is in use by another esper-func process (pid {holder}); "
                    "wait for it to finish, or use another directory"
                ) from None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        yield
    finally:
        os.close(fd)


@dataclasses.dataclass
class RunClaim:
    """A run directory claimed by :func:`claim_run_directory` for a new run.

    When an existing run was replaced, it sits in ``replaced`` until
    :meth:`commit` (call it once the new run's first checkpoint is written)
    deletes it, or :meth:`rollback` (call it when the command fails before
    that) removes the new run's entries and puts the old run back.
    """

    directory: Path
    manifest: RunManifest
    replaced: Path | None = None
    committed: bool = False

    def commit(self) -> None:
        """Delete the replaced run (and leftovers of earlier interrupted overwrites); idempotent."""
        if self.committed:
            return
        self.committed = True
        for entry in self.directory.iterdir():
            if entry.name.startswith(REPLACED_PREFIX) and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
        self.replaced = None

    def rollback(self) -> list[str]:
        """Undo the claim before :meth:`commit`: remove the new run's entries, restore the replaced run.

        Returns the entries that could not be restored (left in the
        ``.esper-func-replaced-*`` directory), normally none.
        """
        if self.committed:
            return []
        self.committed = True
        manifest = self.manifest
        for entry in sorted(self.directory.iterdir()):
            if entry == self.replaced or entry.name == LOCK_FILE or entry.is_symlink():
                continue
            if entry.name in manifest.owns or entry.name == MANIFEST_FILE or entry.name.startswith(TMP_PREFIX):
                with contextlib.suppress(OSError):
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        left: list[str] = []
        if self.replaced is not None:
            for entry in sorted(self.replaced.iterdir()):
                target = self.directory / entry.name
                try:
                    if os.path.lexists(target):
                        raise FileExistsError(target)
                    os.rename(entry, target)
                except OSError:
                    left.append(entry.name)
            if not left:
                with contextlib.suppress(OSError):
                    self.replaced.rmdir()
            _fsync_dir(self.directory)
        return left


def _check_can_claim(root: Path, *, overwrite: bool, command: str) -> RunManifest | None:
    """Read-only: refuse a directory a new run may not be written into; return its current manifest."""
    if os.path.lexists(root) and ((root.is_symlink() and not root.is_dir()) or not root.is_dir()):
        raise RunDirectoryError(f"{root} exists and is not a directory; the run needs a directory (missing, empty, or a run)")
    if not root.exists():
        return None
    manifest = read_manifest(root)
    if manifest is None:
        foreign = foreign_entries(root, None)
        if foreign:
            raise RunDirectoryError(
                f"{root} is not empty and is not an esper-func run directory (it has no {MANIFEST_FILE}); "
                f"it holds {_describe(foreign)}. A new run needs a missing or empty directory"
                + ("; --overwrite only ever replaces a run's own files" if overwrite else "")
                + interrupted_overwrite_hint(root)
            )
        return None
    if not overwrite:
        hint = f"'esper-func resume {root}', " if manifest.kind == "trained" and command == "demo" else ""
        raise RunDirectoryError(
            f"{root} already holds an esper-func run ({manifest.kind}); use {hint}another directory"
            + (", or --overwrite to replace it" if command == "demo" else "")
        )
    foreign = foreign_entries(root, manifest)
    if foreign:
        raise RunDirectoryError(
            f"--overwrite refused: {root} holds entries the run does not own: {_describe(foreign)}. "
            f"Only a run's own files are replaced; move these out of the directory, or choose another one"
        )
    return manifest


def interrupted_overwrite_hint(directory: str | os.PathLike[str]) -> str:
    """A sentence pointing at runs an interrupted ``--overwrite`` left moved aside (empty when none)."""
    root = Path(directory)
    try:
        aside = sorted(e.name for e in root.iterdir() if e.name.startswith(REPLACED_PREFIX) and e.is_dir())
    except OSError:
        return ""
    if not aside:
        return ""
    return (
        f". An interrupted --overwrite left the previous run's files in {', '.join(aside)}; "
        "move them back to resume that run, or remove them"
    )


def check_run_directory(directory: str | os.PathLike[str], *, overwrite: bool, command: str = "demo") -> None:
    """Raise :class:`RunDirectoryError` when :func:`claim_run_directory` would refuse ``directory``; writes nothing."""
    _check_can_claim(Path(directory), overwrite=overwrite, command=command)


def claim_run_directory(
    directory: str | os.PathLike[str],
    manifest: RunManifest,
    *,
    overwrite: bool = False,
    command: str = "demo",
) -> RunClaim:
    """Make ``directory`` the home of a new run described by ``manifest``; call it holding the lock.

    The directory must be missing or empty, or (with ``overwrite``) hold a
    run and nothing else. A replaced run is moved into a
    ``.esper-func-replaced-*`` directory (see :class:`RunClaim`); then the new
    manifest is written.

    Raises:
        RunDirectoryError: the directory is a file, holds foreign entries,
            already holds a run (without ``overwrite``), or cannot be written.
    """
    root = Path(directory)
    _check_can_claim(root, overwrite=overwrite, command=command)
    try:
        _make_dirs(root)
    except OSError as exc:
        raise RunDirectoryError(f"cannot create {root}: {exc.strerror or exc}; choose a writable directory") from None
    claim = RunClaim(root, manifest)
    # The manifest goes first: a kill part-way leaves a directory that is no longer claimed as a run
    # (its checkpoints still resume as a run without a manifest), never a manifest without its files.
    movable = sorted(
        (e for e in root.iterdir() if e.name != LOCK_FILE and not e.name.startswith(REPLACED_PREFIX) and not e.is_symlink()),
        key=lambda e: (e.name != MANIFEST_FILE, e.name),
    )
    if movable:
        stage = root / f"{REPLACED_PREFIX}{secrets.token_hex(4)}"
        os.mkdir(stage)
        claim.replaced = stage
        for entry in movable:
            os.rename(entry, stage / entry.name)
        _fsync_dir(stage)
        _fsync_dir(root)
    try:
        write_manifest(root, manifest)
    except BaseException:
        claim.rollback()
        raise
    return claim
