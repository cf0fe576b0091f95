"""Saving and resuming whole runs: model structure, train state and loop state.

A run checkpoint is an :mod:`esper_func.checkpoint` directory: tensors
(params, buffers, optimizer state, and the last good state the governor
would roll back to) in safetensors, everything else (model structure, seed
lifecycles, loop records and events, governor memory, the caller's config)
in JSON. Loading refuses pickles, unknown versions, and tensors whose names or
shapes do not fit the saved structure. Because every source of randomness in
a run is a pure function of ``(seed, epoch)`` or ``(key, step)``, a run
stopped after epoch 3 and resumed to epoch 6 ends with exactly the parameters
of an uninterrupted 6-epoch run.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from esper_func.blueprints import Registry
from esper_func.checkpoint import load_checkpoint, save_checkpoint
from esper_func.errors import CheckpointError
from esper_func.fit import LoopState, event_to_dict
from esper_func.governor import GovernorState
from esper_func.lifecycle import state_from_dict, state_to_dict
from esper_func.lifecycle.alpha import AlphaCurve
from esper_func.lifecycle.events import (
    GateEvaluated,
    LifecycleEvent,
    SeedFossilized,
    SeedGerminated,
    SeedPruned,
    StageChanged,
)
from esper_func.lifecycle.gates import GateLevel
from esper_func.lifecycle.stages import SeedStage
from esper_func.model import Model, check_tree, model_from_dict, model_to_dict
from esper_func.optim import Optimizer, state_from_tree, state_to_tree
from esper_func.train import TrainState

__all__ = ["RUN_FORMAT", "RUN_VERSION", "SavedRun", "event_from_dict", "load_run", "save_run"]

RUN_FORMAT = "esper_func.run"
RUN_VERSION = 1

_EVENT_TYPES: dict[str, type] = {
    cls.__name__: cls for cls in (SeedGerminated, GateEvaluated, StageChanged, SeedFossilized, SeedPruned)
}
_ENUM_FIELDS: dict[str, Any] = {
    "gate": GateLevel,
    "target_stage": SeedStage,
    "from_stage": SeedStage,
    "to_stage": SeedStage,
    "alpha_curve": AlphaCurve,
}


def event_from_dict(data: Mapping[str, Any]) -> tuple[LifecycleEvent, int]:
    """Rebuild ``(event, run_epoch)`` from :func:`esper_func.fit.event_to_dict`'s output."""
    try:
        cls = _EVENT_TYPES[data["type"]]
        fields = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for name in fields:
            raw = data["seed_epoch"] if name == "epoch" else data[name]
            if name in _ENUM_FIELDS:
                raw = _ENUM_FIELDS[name][raw]
            elif isinstance(raw, list):
                raw = tuple(raw)
            values[name] = raw
        return cls(**values), int(data["epoch"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"malformed lifecycle event {dict(data)!r}: {exc!r}") from exc


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
            "records": list(loop.records),
            "events": [event_to_dict(e, ep) for e, ep in zip(loop.events, loop.event_epochs, strict=True)],
            "governor": {
                "losses": list(loop.governor.losses),
                "consecutive_panics": loop.governor.consecutive_panics,
                "rollbacks": loop.governor.rollbacks,
            },
        },
        "extra": dict(extra or {}),
    }
    tensors = {"current": _state_tensors(state), "last_good": _state_tensors(last_state)}
    return save_checkpoint(directory, tensors=tensors, meta=meta, keep=keep)


@dataclasses.dataclass(frozen=True)
class SavedRun:
    """A loaded run; :meth:`restore` rebuilds it for an optimizer."""

    meta: dict[str, Any]
    tensors: dict[str, Any]
    registry: Registry

    @property
    def extra(self) -> dict[str, Any]:
        """The caller's ``extra`` dict given to :func:`save_run`."""
        return dict(self.meta["extra"])

    @property
    def epoch(self) -> int:
        """Epochs completed when the run was saved."""
        return int(self.meta["loop"]["epoch"])

    def _pair(self, which: str, optimizer: Optimizer | None) -> tuple[Model, TrainState]:
        meta, tensors = self.meta[which], self.tensors[which]
        model = model_from_dict(meta["model"], self.registry)
        params, buffers = tensors["params"], tensors["buffers"]
        expected_slots = set(model.seeded)
        if set(params.get("slots", {})) != expected_slots:
            raise CheckpointError(
                f"checkpoint {which!r}: params hold seeds for {sorted(params.get('slots', {}))} "
                f"but the saved structure has seeds in {sorted(expected_slots)}"
            )
        try:
            check_tree(model, params, buffers)
        except ValueError as exc:
            raise CheckpointError(f"checkpoint {which!r} does not fit its saved structure: {exc}") from exc
        try:
            opt_state = None if optimizer is None else state_from_tree(optimizer, tensors["opt_state"], params)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(
                f"checkpoint {which!r}: the optimizer state does not fit {type(optimizer).__name__}: {exc}"
            ) from exc
        seeds = {sid: state_from_dict(d) for sid, d in meta["seeds"].items()}
        return model, TrainState(params, buffers, opt_state, seeds, int(meta["step"]), int(meta["key"]))

    def restore(self, optimizer: Optimizer | None) -> tuple[Model, TrainState, LoopState]:
        """``(model, state, loop)`` ready for :func:`esper_func.fit.run_epoch`.

        With ``optimizer=None`` the optimizer state is not rebuilt
        (``state.opt_state`` is ``None``): enough to evaluate, not to train.
        """
        model, state = self._pair("current", optimizer)
        last_good = self._pair("last_good", optimizer)
        loop_meta = self.meta["loop"]
        decoded = [event_from_dict(e) for e in loop_meta["events"]]
        governor = loop_meta["governor"]
        loop = LoopState(
            epoch=int(loop_meta["epoch"]),
            records=tuple(loop_meta["records"]),
            events=tuple(e for e, _ in decoded),
            event_epochs=tuple(ep for _, ep in decoded),
            governor=GovernorState(
                losses=tuple(float(x) for x in governor["losses"]),
                consecutive_panics=int(governor["consecutive_panics"]),
                rollbacks=int(governor["rollbacks"]),
            ),
            last_good=last_good,
        )
        return model, state, loop


def load_run(directory: str | os.PathLike[str], *, registry: Registry) -> SavedRun:
    """Load a run written by :func:`save_run` (no pickles; integrity checked).

    Raises:
        CheckpointError: not a run checkpoint, an unknown version, corrupt
            files, or tensors that do not fit the saved structure.
    """
    tensors, meta = load_checkpoint(directory)
    if meta.get("format") != RUN_FORMAT:
        raise CheckpointError(f"{directory} is not an esper_func run (format {meta.get('format')!r}, expected {RUN_FORMAT!r})")
    if meta.get("version") != RUN_VERSION:
        raise CheckpointError(
            f"{directory}: run format version {meta.get('version')!r} is not supported; this esper_func reads version {RUN_VERSION}"
        )
    for key in ("current", "last_good", "loop", "extra"):
        if key not in meta:
            raise CheckpointError(f"{directory}: run metadata is missing {key!r}")
    return SavedRun(meta, tensors, registry)
