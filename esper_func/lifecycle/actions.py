"""Controller actions and their executor.

A controller (any policy, see :mod:`esper_func.controller`) answers an
observation with one :class:`Action`; :func:`apply_action` carries out its
lifecycle part on the slots' states, purely. The model side (adding or
removing the seed's parameters) follows from the new states with
:func:`esper_func.set_stages`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from esper_func._validate import CheckedIntEnum, check_choice, check_enum, check_int, check_str
from esper_func.errors import IllegalTransitionError, InvalidArgumentError, InvalidTypeError
from esper_func.lifecycle.alpha import AlphaAlgorithm
from esper_func.lifecycle.events import LifecycleEvent
from esper_func.lifecycle.gates import GateResult, Gates
from esper_func.lifecycle.stages import SeedStage
from esper_func.lifecycle.state import BLEND_ALGORITHMS, SeedState, has_seed, is_free
from esper_func.lifecycle.transitions import advance, germinate, germinated_event, prune

__all__ = ["Action", "ActionKind", "apply_action"]

Events = tuple[LifecycleEvent, ...]


class ActionKind(CheckedIntEnum):
    """What a controller asks for (values of esper-lite's ``LifecycleOp``; 2, SET_ALPHA_TARGET, is unused)."""

    WAIT = 0
    GERMINATE = 1
    PRUNE = 3
    FOSSILIZE = 4
    ADVANCE = 5


@dataclasses.dataclass(frozen=True, kw_only=True)
class Action:
    """One decision.

    ``slot_id`` names the target slot (required except for WAIT, where it may
    name the seed being waited on). ``blueprint`` and the optional germination
    settings ``blend``, ``tempo``, ``algorithm`` are for GERMINATE only
    (``None`` = :func:`esper_func.germinate`'s defaults). ``reason`` is a
    human-readable explanation; :func:`apply_action` uses it as the prune
    reason.
    """

    kind: ActionKind
    slot_id: str | None = None
    blueprint: str | None = None
    reason: str = ""
    blend: str | None = None
    tempo: int | None = None
    algorithm: AlphaAlgorithm | None = None

    def __post_init__(self) -> None:
        kind = check_enum("Action.kind", self.kind, ActionKind)
        object.__setattr__(self, "kind", kind)
        check_str("Action.reason", self.reason)
        if self.slot_id is not None:
            check_str("Action.slot_id", self.slot_id, nonempty=True)
        if kind != ActionKind.WAIT and self.slot_id is None:
            raise InvalidArgumentError(f"Action {kind.name} needs a slot_id")
        if kind == ActionKind.GERMINATE:
            if not isinstance(self.blueprint, str) or not self.blueprint:
                raise InvalidArgumentError(f"Action GERMINATE needs a blueprint name; got {self.blueprint!r}")
            if self.algorithm is not None:
                object.__setattr__(self, "algorithm", check_enum("Action.algorithm", self.algorithm, AlphaAlgorithm))
            if self.tempo is not None:
                check_int("Action.tempo", self.tempo, minimum=0)
            if self.blend is not None:
                check_choice("Action.blend", self.blend, BLEND_ALGORITHMS)
        elif (self.blueprint, self.blend, self.tempo, self.algorithm) != (None, None, None, None):
            raise InvalidArgumentError(f"Action {kind.name} takes no blueprint/blend/tempo/algorithm (GERMINATE only)")


def _illegal(action: Action, why: str) -> IllegalTransitionError:
    return IllegalTransitionError(f"cannot apply {action.kind.name} to slot {action.slot_id!r}: {why}")


def apply_action(
    action: Action,
    states: Mapping[str, SeedState],
    gates: Gates,
    *,
    epoch: int,
    topology: str | None = None,
    seed_params: int = 0,
    host_params: int = 0,
    seed_id: str | None = None,
    initiator: str = "policy",
) -> tuple[dict[str, SeedState], Events, GateResult | None]:
    """Apply the lifecycle part of ``action`` (pure; no model code).

    ``states`` maps slot ids to states; a slot absent from it is free. Returns
    ``(new_states, events, gate_result)``; ``new_states`` is a new dict (the
    argument is left alone), ``events`` happened at global epoch ``epoch``,
    and ``gate_result`` is the result of ADVANCE/FOSSILIZE (``None``
    otherwise). A failed gate is a normal outcome: the state is unchanged and
    the ``GateEvaluated`` event says why.

    - WAIT: nothing.
    - GERMINATE: :func:`esper_func.germinate` into a free slot (absent or
      DORMANT) with the action's blend settings; ``topology`` is required;
      ``seed_id`` defaults to ``f"{slot}-{blueprint}-e{epoch}"`` (unique over a
      run); ``seed_params``/``host_params`` feed the gradient-ratio gate.
      Events: ``(SeedGerminated,)``. The caller then adds the seed to the model.
    - ADVANCE: :func:`esper_func.advance` to the next stage.
    - FOSSILIZE: :func:`esper_func.advance` to FOSSILIZED, from HOLDING only.
    - PRUNE: :func:`esper_func.prune` now (esper-lite's heuristic prunes at
      once, not on a schedule) with ``action.reason`` and ``initiator``;
      the caller then removes the seed from the model.

    Raises:
        IllegalTransitionError: the action does not fit the slot (germinate
            into an occupied slot; advance, fossilize or prune a slot without
            a live seed; fossilize outside HOLDING; prune a FOSSILIZED seed).
        InvalidArgumentError: GERMINATE without ``topology``.
    """
    if not isinstance(action, Action):
        raise InvalidTypeError(f"apply_action() expects an Action; got {type(action).__name__}")
    if not isinstance(states, Mapping):
        raise InvalidTypeError(f"apply_action() expects a mapping slot_id -> SeedState; got {type(states).__name__}")
    if not isinstance(gates, Gates):
        raise InvalidTypeError(f"apply_action() expects Gates; got {type(gates).__name__}")
    check_int("apply_action(): epoch", epoch, minimum=0)
    new_states = dict(states)
    kind = action.kind
    if kind == ActionKind.WAIT:
        return new_states, (), None
    slot = action.slot_id
    assert slot is not None  # Action guarantees it
    current = states.get(slot)

    if kind == ActionKind.GERMINATE:
        if not is_free(current):
            assert current is not None
            raise _illegal(
                action, f"the slot is occupied (stage {current.stage.name}); free slots are DORMANT or unused"
            )
        if topology is None:
            raise InvalidArgumentError(
                "apply_action(): GERMINATE needs topology= ('cnn', 'transformer' or the host's Topology)"
            )
        blueprint = action.blueprint
        assert blueprint is not None
        algorithm = AlphaAlgorithm.ADD if action.algorithm is None else action.algorithm
        blend = action.blend
        if blend is None:
            blend = "gated" if algorithm == AlphaAlgorithm.GATE else "sigmoid"
        state = germinate(
            slot,
            blueprint,
            seed_id=seed_id if seed_id is not None else f"{slot}-{blueprint}-e{epoch}",
            algorithm=algorithm,
            blend=blend,
            tempo=5 if action.tempo is None else action.tempo,
            topology=topology,
            seed_params=seed_params,
            host_params=host_params,
        )
        new_states[slot] = state
        return new_states, (germinated_event(state),), None

    if current is None or not has_seed(current):
        stage = "unused" if current is None else current.stage.name
        raise _illegal(action, f"there is no live seed in it (stage {stage})")
    if current.stage == SeedStage.FOSSILIZED:
        raise _illegal(action, "the seed is FOSSILIZED (permanent)")

    if kind == ActionKind.PRUNE:
        state, events = prune(current, action.reason, initiator=initiator)
        new_states[slot] = state
        return new_states, events, None
    if kind == ActionKind.FOSSILIZE:
        if current.stage != SeedStage.HOLDING:
            raise _illegal(action, f"fossilization starts from HOLDING; the seed is {current.stage.name}")
        state, result, events = advance(current, gates, SeedStage.FOSSILIZED)
    else:
        state, result, events = advance(current, gates)
    new_states[slot] = state
    return new_states, events, result
