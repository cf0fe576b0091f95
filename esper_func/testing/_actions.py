"""Lifecycle operations as values, and their replay.

Every operation of the lifecycle API is a small frozen dataclass holding its
arguments; ``action.apply(state, gates)`` runs it and returns ``(state,
events)``; :func:`apply_actions` replays a sequence. A slot is described by
its :class:`~esper_func.SeedState`, or ``None`` while it has never been used.

Replaying never raises for an operation that does not fit the slot: it is
refused as the lifecycle refuses it (the same state, no events), e.g. pruning
a FOSSILIZED seed, retargeting alpha mid-ramp, recording into a free slot.
:class:`Germinate` into an occupied slot is refused the same way. What the
lifecycle rejects as illegal still raises (``Advance`` to a failure stage,
entering BLENDING with a gated blend of tempo 0); the strategies of this
package never draw those.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from enum import Enum
from typing import Any, ClassVar, TypeAlias, overload

from esper_func.errors import InvalidTypeError
from esper_func.lifecycle import (
    advance,
    germinate,
    germinated_event,
    is_free,
    prune,
    record_accuracy,
    record_contribution,
    record_gradients,
    schedule_prune,
    set_alpha_target,
    step_epoch,
    sync_telemetry,
)
from esper_func.lifecycle.alpha import DEFAULT_STEEPNESS, AlphaAlgorithm, AlphaCurve
from esper_func.lifecycle.events import LifecycleEvent
from esper_func.lifecycle.gates import GateLevel, Gates
from esper_func.lifecycle.stages import SeedStage
from esper_func.lifecycle.state import DEFAULT_TELEMETRY_MAX_EPOCHS, SeedState

__all__ = [
    "Advance",
    "Events",
    "Germinate",
    "LifecycleAction",
    "Prune",
    "RecordAccuracy",
    "RecordContribution",
    "RecordGradients",
    "SchedulePrune",
    "SetAlphaTarget",
    "StepEpoch",
    "SyncTelemetry",
    "apply_actions",
]

Events: TypeAlias = tuple[LifecycleEvent, ...]


def _show(value: Any) -> str:
    if isinstance(value, Enum):
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, frozenset):
        return "{" + ", ".join(sorted(_show(v) for v in value)) + "}" if value else "frozenset()"
    return repr(value)


class _Action:
    """Shared behaviour: a short, code-like repr showing only the non-default arguments."""

    name: ClassVar[str]

    def __repr__(self) -> str:
        shown = []
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            if field.default is not dataclasses.MISSING and value == field.default:
                continue
            shown.append(f"{field.name}={_show(value)}")
        return f"{type(self).__name__}({', '.join(shown)})"

    def apply(self, state: SeedState | None, gates: Gates) -> tuple[SeedState | None, Events]:
        """Run the operation on ``state`` (``None``: a never-used slot); returns ``(state, events)``."""
        raise NotImplementedError  # pragma: no cover - every action overrides it


@dataclasses.dataclass(frozen=True, repr=False)
class Germinate(_Action):
    """:func:`esper_func.germinate` into a free slot (never used, or DORMANT again); refused otherwise.

    The new seed takes the slot id of the state it replaces (``slot_id`` is
    used only for a never-used slot).
    """

    blueprint_id: str = "norm"
    slot_id: str = "r0c0"
    algorithm: AlphaAlgorithm = AlphaAlgorithm.ADD
    blend: str = "sigmoid"
    tempo: int = 5
    alpha_target: float | None = None
    topology: str = "cnn"
    seed_params: int = 0
    host_params: int = 0

    def apply(self, state: SeedState | None, gates: Gates) -> tuple[SeedState | None, Events]:
        if not is_free(state):
            return state, ()
        new = germinate(
            self.slot_id if state is None else state.slot_id,
            self.blueprint_id,
            algorithm=self.algorithm,
            blend=self.blend,
            tempo=self.tempo,
            alpha_target=self.alpha_target,
            topology=self.topology,
            seed_params=self.seed_params,
            host_params=self.host_params,
        )
        return new, (germinated_event(new),)


@dataclasses.dataclass(frozen=True, repr=False)
class RecordAccuracy(_Action):
    """:func:`esper_func.record_accuracy`."""

    accuracy: float = 0.0

    def apply(self, state: SeedState | None, gates: Gates) -> tuple[SeedState | None, Events]:
        return (None if state is None else record_accuracy(state, self.accuracy)), ()


@dataclasses.dataclass(frozen=True, repr=False)
class RecordContribution(_Action):
    """:func:`esper_func.record_contribution`."""

    contribution: float = 0.0

    def apply(self, state: SeedState | None, gates: Gates) -> tuple[SeedState | None, Events]:
        return (None if state is None else record_contribution(state, self.contribution)), ()


@dataclasses.dataclass(frozen=True, repr=False)
class RecordGradients(_Action):
    """:func:`esper_func.record_gradients`."""

    host_grad_norm: float = 1.0
    seed_grad_norm: float = 1.0
    gradient_health: float | None = None
    has_exploding: bool | None = None
    has_vanishing: bool | None = None

    def apply(self, state: SeedState | None, gates: Gates) -> tuple[SeedState | None, Events]:
        if state is None:
            return None, ()
        new = record_gradients(
            state,
            host_grad_norm=self.host_grad_norm,
            seed_grad_norm=self.seed_grad_norm,
            gradient_health=self.gradient_health,
            has_exploding=self.has_exploding,
            has_vanishing=self.has_vanishing,
        )
        return new, ()


@dataclasses.dataclass(frozen=True, repr=False)
class SyncTelemetry(_Action):
    """:func:`esper_func.sync_telemetry`."""

    epoch: int = 1
    max_epochs: int = DEFAULT_TELEMETRY_MAX_EPOCHS
    gradient_health: float | None = None
    has_exploding: bool | None = None
    has_vanishing: bool | None = None

    def apply(self, state: SeedState | None, gates: Gates) -> tuple[SeedState | None, Events]:
        if state is None:
            return None, ()
        new = sync_telemetry(
            state,
            epoch=self.epoch,
            max_epochs=self.max_epochs,
            gradient_health=self.gradient_health,
            has_exploding=self.has_exploding,
            has_vanishing=self.has_vanishing,
        )
        return new, ()


@dataclasses.dataclass(frozen=True, repr=False)
class Advance(_Action):
    """:func:`esper_func.advance` (``target=None``: the next stage); a failed gate leaves the state as is."""

    target: SeedStage | None = None

    def apply(self, state: SeedState | None, gates: Gates) -> tuple[SeedState | None, Events]:
        if state is None:
            return None, ()
        new, _, events = advance(state, gates, self.target)
        return new, events


@dataclasses.dataclass(frozen=True, repr=False)
class Prune(_Action):
    """:func:`esper_func.prune`."""

    reason: str = ""
    initiator: str = "policy"

    def apply(self, state: SeedState | None, gates: Gates) -> tuple[SeedState | None, Events]:
        if state is None:
            return None, ()
        return prune(state, self.reason, initiator=self.initiator)


@dataclasses.dataclass(frozen=True, repr=False)
class SchedulePrune(_Action):
    """:func:`esper_func.schedule_prune`."""

    steps: int = 1
    curve: AlphaCurve | None = None
    steepness: float = DEFAULT_STEEPNESS
    reason: str = ""
    initiator: str = "policy"

    def apply(self, state: SeedState | None, gates: Gates) -> tuple[SeedState | None, Events]:
        if state is None:
            return None, ()
        return schedule_prune(
            state,
            steps=self.steps,
            curve=self.curve,
            steepness=self.steepness,
            reason=self.reason,
            initiator=self.initiator,
        )


@dataclasses.dataclass(frozen=True, repr=False)
class SetAlphaTarget(_Action):
    """:func:`esper_func.set_alpha_target` (with ``alpha_algorithm=`` to switch the blend algorithm)."""

    alpha_target: float = 1.0
    steps: int = 1
    curve: AlphaCurve | None = None
    steepness: float = DEFAULT_STEEPNESS
    alpha_algorithm: AlphaAlgorithm | None = None

    def apply(self, state: SeedState | None, gates: Gates) -> tuple[SeedState | None, Events]:
        if state is None:
            return None, ()
        return set_alpha_target(
            state,
            alpha_target=self.alpha_target,
            steps=self.steps,
            curve=self.curve,
            steepness=self.steepness,
            alpha_algorithm=self.alpha_algorithm,
        )


@dataclasses.dataclass(frozen=True, repr=False)
class StepEpoch(_Action):
    """:func:`esper_func.step_epoch` with the given ``auto_forward`` gate levels."""

    auto_forward: frozenset[GateLevel] = frozenset()

    def apply(self, state: SeedState | None, gates: Gates) -> tuple[SeedState | None, Events]:
        if state is None:
            return None, ()
        return step_epoch(state, gates, auto_forward=self.auto_forward)


LifecycleAction: TypeAlias = (
    Germinate
    | RecordAccuracy
    | RecordContribution
    | RecordGradients
    | SyncTelemetry
    | Advance
    | Prune
    | SchedulePrune
    | SetAlphaTarget
    | StepEpoch
)

_ACTION_TYPES = (
    Germinate,
    RecordAccuracy,
    RecordContribution,
    RecordGradients,
    SyncTelemetry,
    Advance,
    Prune,
    SchedulePrune,
    SetAlphaTarget,
    StepEpoch,
)


@overload
def apply_actions(state: SeedState, actions: Iterable[LifecycleAction], gates: Gates) -> SeedState: ...
@overload
def apply_actions(state: None, actions: Iterable[LifecycleAction], gates: Gates) -> SeedState | None: ...
def apply_actions(state: SeedState | None, actions: Iterable[LifecycleAction], gates: Gates) -> SeedState | None:
    """Replay ``actions`` on one slot, in order, and return its final state (pure).

    ``state`` is the slot's state, or ``None`` for a slot that was never used
    (then only a :class:`Germinate` changes it). Operations that do not fit
    the slot at that point are refused as the lifecycle refuses them (see the
    module docstring). Use ``action.apply(state, gates)`` for the events of
    each step.

    Raises:
        TypeError: an element is not one of this module's actions, or
            ``gates`` is not a :class:`~esper_func.Gates`.
        IllegalTransitionError: what the lifecycle itself raises (an
            ``Advance`` to a failure stage; a gated blend of tempo 0 entering
            BLENDING).
    """
    if not isinstance(gates, Gates):
        raise InvalidTypeError(f"apply_actions() expects Gates as its third argument; got {type(gates).__name__}")
    if state is not None and not isinstance(state, SeedState):
        raise InvalidTypeError(f"apply_actions() expects a SeedState or None; got {type(state).__name__}")
    for i, action in enumerate(actions):
        if not isinstance(action, _ACTION_TYPES):
            raise InvalidTypeError(
                f"apply_actions(): action {i} is a {type(action).__name__}; expected one of "
                f"{[t.__name__ for t in _ACTION_TYPES]} (from esper_func.testing)"
            )
        state, _ = action.apply(state, gates)
    return state
