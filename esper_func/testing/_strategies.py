"""Hypothesis strategies for esper_func values.

Every strategy here draws all of its randomness from hypothesis (so it is
deterministic under a hypothesis seed and replays from the example
database), shrinks towards short and simple values (the first option of
every choice is the simplest: CNN before transformer, GERMINATED before later
stages, ADD before the other algorithms, the smallest blueprint first, short
histories), and builds tensors from explicit ``torch.Generator`` objects seeded by
drawn integers: torch's global RNG is never read or written.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, NamedTuple

import torch
from hypothesis import strategies as st
from torch import Tensor

# Public names from the package's top level (the contract), internals from their modules.
from esper_func import (
    AlphaAlgorithm,
    AlphaCurve,
    AlphaMode,
    Blueprint,
    CNNHost,
    GateLevel,
    Gates,
    HostProtocolError,
    InvalidArgumentError,
    InvalidTypeError,
    Model,
    Registry,
    SeedStage,
    SeedState,
    TransformerHost,
    UnknownTopologyError,
    add_seed,
    alpha_grid,
    build_model,
    check_gate,
    default_registry,
    set_stages,
)
from esper_func._validate import check_int
from esper_func.attribution import MAX_FULL_FACTORIAL_N
from esper_func.hosts import check_host
from esper_func.lifecycle.measure import MAX_GRADIENT_RATIO
from esper_func.lifecycle.stages import FAILURE_STAGES, SEEDLESS_STAGES, TOPOLOGIES
from esper_func.lifecycle.state import AUTO_PRUNE_REASONS
from esper_func.testing._actions import (
    Advance,
    Germinate,
    LifecycleAction,
    Prune,
    RecordAccuracy,
    RecordContribution,
    RecordGradients,
    SchedulePrune,
    SetAlphaTarget,
    StepEpoch,
    SyncTelemetry,
)

__all__ = [
    "DrawnModel",
    "History",
    "REACHABLE_STAGES",
    "action_sequences",
    "alpha_grids",
    "blueprints",
    "gate_configs",
    "germinations",
    "histories",
    "hosts",
    "inputs",
    "lifecycle_actions",
    "models",
    "registries",
    "seed_states",
    "slot_states",
]

S = SeedStage
#: A host spec: the built-in ones, or any :class:`~esper_func.Host` (the strategies use its
#: ``topology``, ``slot_ids``, ``slot_channels`` and ``example_input``).
Host = Any

#: Every stage a lifecycle state can be in, simplest (shortest history) first. UNKNOWN is never reached.
REACHABLE_STAGES: Final[tuple[SeedStage, ...]] = (
    S.GERMINATED,
    S.TRAINING,
    S.BLENDING,
    S.HOLDING,
    S.FOSSILIZED,
    S.PRUNED,
    S.EMBARGOED,
    S.RESETTING,
    S.DORMANT,
)
#: The target of a history when any stage will do: none (wherever the random operations lead) or a stage;
#: BLENDING, where ramps, the blend-out freeze and scheduled prunes happen, three times as often.
_ANY_TARGET: Final[tuple[SeedStage | None, ...]] = (
    None, S.GERMINATED, S.TRAINING, S.BLENDING, S.BLENDING, S.BLENDING, S.HOLDING, S.FOSSILIZED,
    S.PRUNED, S.EMBARGOED, S.RESETTING, S.DORMANT,
)  # fmt: skip
#: Stages in which a model's slot holds a seed, in lifecycle order.
SEEDED_STAGES: Final[tuple[SeedStage, ...]] = (S.GERMINATED, S.TRAINING, S.BLENDING, S.HOLDING, S.FOSSILIZED)
_EMPTY_STAGES: Final[tuple[SeedStage, ...]] = (S.DORMANT, S.PRUNED, S.EMBARGOED, S.RESETTING)
_LIVE_ORDER: Final[tuple[SeedStage, ...]] = SEEDED_STAGES
_EPS: Final[float] = 1e-6
_BLENDS: Final[tuple[tuple[AlphaAlgorithm, str], ...]] = (
    (AlphaAlgorithm.ADD, "sigmoid"),
    (AlphaAlgorithm.ADD, "linear"),
    (AlphaAlgorithm.MULTIPLY, "sigmoid"),
    (AlphaAlgorithm.MULTIPLY, "linear"),
    (AlphaAlgorithm.GATE, "gated"),
)
_SEED_BITS: Final[int] = 2**31 - 1


@functools.cache
def _default_registry() -> Registry:
    return default_registry()


# --------------------------------------------------------------------------- argument handling


def _topologies(topology: str | None) -> tuple[str, ...]:
    if topology is None:
        return TOPOLOGIES
    if not isinstance(topology, str) or topology not in TOPOLOGIES:
        raise UnknownTopologyError(f"unknown topology {topology!r}; expected one of {list(TOPOLOGIES)} or None (any)")
    return (topology,)


def _stage_list(stages: SeedStage | Iterable[SeedStage] | None, allowed: Sequence[SeedStage], what: str) -> list[SeedStage]:
    """``stages`` as a list in the order of ``allowed`` (simplest first); ``None`` means all of ``allowed``."""
    if stages is None:
        return list(allowed)
    given = [stages] if isinstance(stages, (SeedStage, int, str)) else list(stages)
    chosen: set[SeedStage] = set()
    for value in given:
        try:
            stage = SeedStage[value] if isinstance(value, str) else SeedStage(value)
        except (KeyError, ValueError):
            raise InvalidArgumentError(f"{what}: {value!r} is not a SeedStage") from None
        if stage not in allowed:
            raise InvalidArgumentError(f"{what}: {stage.name} cannot be drawn; choose among {[s.name for s in allowed]}")
        chosen.add(stage)
    if not chosen:
        raise InvalidArgumentError(f"{what}: no stage given; pass None for any of {[s.name for s in allowed]}")
    return [s for s in allowed if s in chosen]


def _as_strategy(value: Any, kind: type, what: str, default: Callable[[], st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    if value is None:
        return default()
    if isinstance(value, kind):
        return st.just(value)
    if isinstance(value, st.SearchStrategy):
        return value
    raise InvalidTypeError(f"{what} must be a {kind.__name__}, a strategy of them, or None; got {type(value).__name__}")


# --------------------------------------------------------------------------- lifecycle actions


def gate_configs(*, permissive: bool | None = None) -> st.SearchStrategy[Gates]:
    """Small :class:`~esper_func.Gates` configurations that seeds can pass in a few epochs.

    Strict or permissive (``permissive=`` fixes it), 0-3 minimum blending
    epochs, cooldowns of 0-3 and 0-2 epochs, thresholds among esper-lite's
    defaults and harder or easier values. Shrinks towards strict gates with
    esper-lite's thresholds and the shortest dwell times.
    """
    return st.builds(
        Gates,
        permissive=st.booleans() if permissive is None else st.just(bool(permissive)),
        min_training_improvement=st.sampled_from([0.5, 0.0, 2.0]),
        min_blending_epochs=st.integers(0, 3),
        min_seed_gradient_ratio=st.sampled_from([0.1, 0.0, 1.0]),
        min_gradient_health_for_blending=st.sampled_from([0.7, 0.0, 0.95]),
        min_fossilize_contribution=st.sampled_from([1.0, 0.0, 3.0]),
        embargo_epochs=st.integers(0, 3),
        resetting_epochs=st.integers(0, 2),
    )


@st.composite
def _germinations(
    draw: st.DrawFn,
    topologies: tuple[str, ...],
    slot_id: str,
    blueprint_id: str | None,
    algorithm: AlphaAlgorithm | None,
) -> Germinate:
    topology = draw(st.sampled_from(topologies))
    blends = [b for b in _BLENDS if algorithm is None or b[0] == algorithm]
    chosen_algorithm, blend = draw(st.sampled_from(blends))
    return Germinate(
        blueprint_id=blueprint_id or draw(st.sampled_from(_default_registry().names(topology))),
        slot_id=slot_id,
        algorithm=chosen_algorithm,
        blend=blend,
        # A gated blend needs a tempo of at least 1 to create its gate network.
        tempo=draw(st.integers(1 if blend == "gated" else 0, 5)),
        alpha_target=draw(st.one_of(st.none(), st.sampled_from([0.5, 1.0, 0.25]))),
        topology=topology,
        seed_params=draw(st.sampled_from([0, 1_000])),
        host_params=draw(st.sampled_from([0, 100_000])),
    )


@functools.cache
def _germination_strategy(
    topologies: tuple[str, ...],
    slot_id: str = "r0c0",
    blueprint_id: str | None = None,
    algorithm: AlphaAlgorithm | None = None,
) -> st.SearchStrategy[Germinate]:
    return _germinations(topologies, slot_id, blueprint_id, algorithm)


def germinations(
    *,
    topology: str | None = None,
    slot_id: str = "r0c0",
    blueprint_id: str | None = None,
    algorithm: AlphaAlgorithm | None = None,
) -> st.SearchStrategy[Germinate]:
    """:class:`Germinate` actions into ``slot_id``.

    A built-in blueprint name (or ``blueprint_id``), a blend algorithm
    (``algorithm``, when given) with one of its curves, a tempo of 0-5 (1-5
    for a gated blend), a full or partial alpha target, known or unknown
    parameter counts.
    """
    if blueprint_id is not None and (not isinstance(blueprint_id, str) or not blueprint_id):
        raise InvalidArgumentError(f"germinations(): blueprint_id must be a non-empty str or None; got {blueprint_id!r}")
    chosen = None if algorithm is None else AlphaAlgorithm(algorithm)
    return _germination_strategy(_topologies(topology), slot_id, blueprint_id, chosen)


_floats = functools.partial(st.floats, allow_nan=False, allow_infinity=False, allow_subnormal=False)
_curves = st.one_of(st.none(), st.sampled_from(list(AlphaCurve)))
_steepness = st.sampled_from([12.0, 1.0, 0.1, 50.0])
_reasons = st.sampled_from(["", "underperforming", *sorted(AUTO_PRUNE_REASONS)])
_initiators = st.sampled_from(["policy", "governor"])
_health = st.one_of(st.none(), _floats(0.0, 1.0))
_flags = st.one_of(st.none(), st.booleans())


@functools.cache
def _action_kinds(topologies: tuple[str, ...]) -> dict[str, st.SearchStrategy[Any]]:
    return {
        "step": st.builds(StepEpoch, auto_forward=st.frozensets(st.sampled_from([GateLevel.G1, GateLevel.G2, GateLevel.G3]))),
        "accuracy": st.builds(RecordAccuracy, accuracy=_floats(0.0, 100.0)),
        "gradients": st.builds(
            RecordGradients,
            host_grad_norm=_floats(0.0, 10.0),
            seed_grad_norm=_floats(0.0, 10.0),
            gradient_health=_health,
            has_exploding=_flags,
            has_vanishing=_flags,
        ),
        "sync": st.builds(
            SyncTelemetry, epoch=st.integers(0, 50), gradient_health=_health, has_exploding=_flags, has_vanishing=_flags
        ),
        "contribution": st.builds(RecordContribution, contribution=_floats(-5.0, 5.0)),
        "advance": st.builds(Advance, target=st.one_of(st.none(), st.sampled_from(SEEDED_STAGES))),
        "retarget": st.builds(
            SetAlphaTarget,
            alpha_target=st.one_of(st.sampled_from([1.0, 0.5, 0.25, 0.75, 0.0, 1.5]), _floats(0.0, 1.0)),
            steps=st.integers(0, 5),
            curve=_curves,
            steepness=_steepness,
            alpha_algorithm=st.one_of(st.none(), st.sampled_from(list(AlphaAlgorithm))),
        ),
        "schedule_prune": st.builds(
            SchedulePrune, steps=st.integers(-1, 5), curve=_curves, steepness=_steepness, reason=_reasons, initiator=_initiators
        ),
        "prune": st.builds(Prune, reason=_reasons, initiator=_initiators),
        "germinate": _germination_strategy(topologies),
    }


#: How often each kind is drawn (repeats weigh it): epochs and measurements are what a run mostly does.
_KIND_WEIGHTS: Final[tuple[str, ...]] = (
    "step", "step", "step", "accuracy", "accuracy", "advance", "advance", "gradients", "sync", "contribution",
    "retarget", "schedule_prune", "prune", "germinate",
)  # fmt: skip


#: The operations tried after a seed reached its target stage (those that keep it there are kept).
_TAIL_WEIGHTS: Final[tuple[str, ...]] = (
    "step", "retarget", "schedule_prune", "step", "retarget", "accuracy", "gradients", "sync", "contribution",
)  # fmt: skip


@st.composite
def _actions(
    draw: st.DrawFn, kinds: dict[str, st.SearchStrategy[Any]], weights: tuple[str, ...] = _KIND_WEIGHTS
) -> LifecycleAction:
    action: LifecycleAction = draw(kinds[draw(st.sampled_from(weights))])
    return action


@functools.cache
def _action_strategy(topologies: tuple[str, ...], weights: tuple[str, ...]) -> st.SearchStrategy[LifecycleAction]:
    return _actions(_action_kinds(topologies), weights)


@functools.cache
def _sequence_strategy(
    topologies: tuple[str, ...], weights: tuple[str, ...], min_size: int, max_size: int
) -> st.SearchStrategy[list[LifecycleAction]]:
    return st.lists(_action_strategy(topologies, weights), min_size=min_size, max_size=max_size)


def lifecycle_actions(*, topology: str | None = None) -> st.SearchStrategy[LifecycleAction]:
    """One lifecycle operation with its arguments (see :func:`action_sequences`)."""
    return _action_strategy(_topologies(topology), _KIND_WEIGHTS)


def action_sequences(*, max_size: int = 30, min_size: int = 0, topology: str | None = None) -> st.SearchStrategy[list[LifecycleAction]]:
    """Lists of lifecycle operations, replayable on any slot with :func:`apply_actions`.

    Each element is one of :class:`StepEpoch` (with any subset of G1-G3 as
    ``auto_forward``), :class:`RecordAccuracy`, :class:`RecordGradients`,
    :class:`SyncTelemetry`, :class:`RecordContribution`, :class:`Advance` (to
    the next stage or a named live stage), :class:`SetAlphaTarget` (targets
    inside and outside ``(0, 1]``, zero or more steps, any curve, switching
    algorithm or not), :class:`SchedulePrune`, :class:`Prune` (policy and
    automatic reasons) and :class:`Germinate`, weighted towards epochs and
    measurements. Drawn independently of any state, so every prefix and every
    sub-list is again a valid sequence: lists shrink by dropping operations.
    """
    check_int("action_sequences(): max_size", max_size, minimum=0)
    check_int("action_sequences(): min_size", min_size, minimum=0, maximum=max_size)
    return _sequence_strategy(_topologies(topology), _KIND_WEIGHTS, min_size, max_size)


class History(NamedTuple):
    """A drawn lifecycle: ``apply_actions(None, actions, gates) == state``."""

    gates: Gates
    actions: tuple[LifecycleAction, ...]
    state: SeedState


def _toward(state: SeedState, target: SeedStage, gates: Gates, germ: Germinate) -> LifecycleAction:
    """The next operation on the way from ``state`` to ``target`` (legal operations only)."""
    stage, m, c = state.stage, state.metrics, state.alpha_controller
    if stage == S.DORMANT:
        return germ
    if stage in FAILURE_STAGES:
        return StepEpoch()
    if stage == S.FOSSILIZED:  # pragma: no cover - histories() never keeps a FOSSILIZED seed it must leave
        raise InvalidArgumentError("a FOSSILIZED seed cannot reach any other stage")
    if target in FAILURE_STAGES or target == S.DORMANT:
        return Prune()
    if _LIVE_ORDER.index(target) < _LIVE_ORDER.index(stage):
        if stage == S.HOLDING and target == S.BLENDING and c.alpha_mode == AlphaMode.HOLD:
            return SetAlphaTarget(alpha_target=0.5, steps=2)
        return Prune()
    if stage == S.GERMINATED:
        return Advance()
    following = _LIVE_ORDER[_LIVE_ORDER.index(stage) + 1]
    if stage == S.TRAINING and state.blend_algorithm_id == "gated" and state.blend_tempo_epochs == 0:
        return Prune()  # such a seed can never blend; start over
    if check_gate(gates, state, following).passed:
        return Advance()
    if stage == S.TRAINING:
        t = state.telemetry
        if gates.permissive:
            if t.gradient_health is None or t.has_exploding or t.gradient_health < gates.min_gradient_health_for_blending:
                return RecordGradients(host_grad_norm=1.0, seed_grad_norm=1.0, gradient_health=1.0, has_exploding=False)
            return RecordAccuracy(accuracy=m.current_val_accuracy)
        ratio = m.seed_gradient_norm_ratio
        if ratio is None or ratio < gates.min_seed_gradient_ratio:
            if gates.min_seed_gradient_ratio > MAX_GRADIENT_RATIO:
                raise InvalidArgumentError(
                    f"strict gates with min_seed_gradient_ratio={gates.min_seed_gradient_ratio} can never pass G2 "
                    f"(the ratio is capped at {MAX_GRADIENT_RATIO}); no seed reaches BLENDING"
                )
            return RecordGradients(host_grad_norm=1.0, seed_grad_norm=1000.0, gradient_health=1.0, has_exploding=False)
        needed = m.accuracy_at_stage_start + max(gates.min_training_improvement, 0.0) + 1.0
        return RecordAccuracy(accuracy=max(m.current_val_accuracy, needed))
    if stage == S.BLENDING:
        if c.alpha_mode != AlphaMode.HOLD:
            return StepEpoch()
        if c.alpha_target < 1.0 - _EPS or abs(c.alpha - c.alpha_target) > _EPS:
            return SetAlphaTarget(alpha_target=1.0, steps=0)
        return RecordAccuracy(accuracy=m.current_val_accuracy)
    # HOLDING -> FOSSILIZED: G5 wants a measured contribution from a healthy seed.
    if not state.is_healthy:  # pragma: no cover - no lifecycle operation makes a seed unhealthy
        raise InvalidArgumentError(f"an unhealthy seed cannot be fossilized: {state!r}")
    return RecordContribution(contribution=max(gates.min_fossilize_contribution, 0.0) + 1.0)


def _steer(state: SeedState, target: SeedStage, gates: Gates, germ: Germinate) -> tuple[SeedState, list[LifecycleAction]]:
    limit = 60 + 4 * (2 * gates.min_blending_epochs + gates.embargo_epochs + gates.resetting_epochs + 10)
    actions: list[LifecycleAction] = []
    while state.stage != target:
        if len(actions) > limit:  # pragma: no cover - every route above makes progress
            raise InvalidArgumentError(f"could not drive a seed to {target.name} under {gates!r}; stuck at {state!r}")
        action = _toward(state, target, gates, germ)
        new, _ = action.apply(state, gates)
        assert new is not None
        state = new
        actions.append(action)
    return state, actions


def _pinned(action: LifecycleAction, germ: Germinate) -> LifecycleAction:
    """``action`` with the seed pinned: re-germinate ``germ`` itself, never switch the algorithm."""
    if isinstance(action, Germinate):
        return germ
    if isinstance(action, SetAlphaTarget) and action.alpha_algorithm is not None:
        return dataclasses.replace(action, alpha_algorithm=None)
    return action


@st.composite
def _histories(
    draw: st.DrawFn,
    stages: list[SeedStage] | None,
    topologies: tuple[str, ...],
    gates: st.SearchStrategy[Gates],
    max_actions: int,
    slot_id: str,
    germination: st.SearchStrategy[Germinate] | None,
) -> History:
    g = draw(gates)
    if germination is None:
        topology = draw(st.sampled_from(topologies))
        germ = draw(_germination_strategy((topology,), slot_id))
    else:
        germ = draw(germination)
        topology = germ.topology

    def kept(action: LifecycleAction) -> LifecycleAction:
        return action if germination is None else _pinned(action, germ)

    target = draw(st.sampled_from(_ANY_TARGET if stages is None else stages))
    prefix = draw(_sequence_strategy((topology,), _KIND_WEIGHTS, 0, max_actions))
    state, _ = germ.apply(None, g)
    assert state is not None
    actions: list[LifecycleAction] = [germ]
    for action in map(kept, prefix):
        new, _ = action.apply(state, g)
        assert new is not None
        if target not in (None, S.FOSSILIZED) and new.stage == S.FOSSILIZED and state.stage != S.FOSSILIZED:
            continue  # FOSSILIZED is terminal: keep the way to the target open
        state = new
        actions.append(action)
    if target is not None:
        state, steering = _steer(state, target, g, germ)
        actions.extend(steering)
        if state.stage == S.BLENDING and draw(st.booleans()):
            # Let the ramp finish, then maybe start another: a fade-out, a partial target, a scheduled prune.
            for _ in range(state.alpha_controller.steps_remaining):
                new, _ = StepEpoch().apply(state, g)
                assert new is not None
                if new.stage != target:
                    break
                state = new
                actions.append(StepEpoch())
            fade = draw(st.sampled_from([None, "retarget", "schedule_prune"]))
            if fade is not None:
                action = kept(draw(_action_kinds((topology,))[fade]))
                new, _ = action.apply(state, g)
                assert new is not None
                if new.stage == target:
                    state = new
                    actions.append(action)
        # A few more operations that keep the seed in its stage: mid-ramp, frozen, fading out, switched.
        for action in map(kept, draw(_sequence_strategy((topology,), _TAIL_WEIGHTS, 0, min(6, max_actions)))):
            new, _ = action.apply(state, g)
            assert new is not None
            if new.stage == target:
                state = new
                actions.append(action)
    return History(g, tuple(actions), state)


def histories(
    *,
    stages: SeedStage | Iterable[SeedStage] | None = None,
    topology: str | None = None,
    gates: Gates | st.SearchStrategy[Gates] | None = None,
    max_actions: int = 25,
    slot_id: str = "r0c0",
    germination: Germinate | st.SearchStrategy[Germinate] | None = None,
) -> st.SearchStrategy[History]:
    """Lifecycles built from germination by legal operations: ``History(gates, actions, state)``.

    A history is a :class:`Germinate`, a drawn :func:`action_sequences` of up
    to ``max_actions`` operations (those that would fossilize a seed that
    must reach another stage are left out), then, when a target stage was
    drawn, the operations that drive the seed there through the gates (record
    an improving accuracy, measure healthy gradients, let a ramp finish,
    retarget alpha to 1, record a contribution, advance; prune and wait out
    the cooldown to go back), and a few more drawn operations that keep it in
    that stage (a ramp left half done, a fade-out or a scheduled prune
    started, an algorithm switched). ``apply_actions(None, history.actions,
    history.gates)`` gives ``history.state`` again.

    Args:
        stages: the stage(s) the final state must be in; ``None``: any (one
            history in twelve is left wherever the random operations took it;
            BLENDING is drawn three times as often as each other stage).
        topology: ``"cnn"``, ``"transformer"`` or ``None`` (either).
        gates: the :class:`~esper_func.Gates` to run under, a strategy of
            them, or ``None`` for :func:`gate_configs`.
        max_actions: the most random operations before steering.
        slot_id: the slot the seeds live in.
        germination: the seed's :class:`Germinate` (or a strategy of them,
            e.g. :func:`germinations` with a fixed blueprint and algorithm).
            When given, every germination in the history is this one and the
            algorithm is never switched, so the state fits a model's slot;
            ``None``: drawn, and free to change.
    """
    stage_list = None if stages is None else _stage_list(stages, REACHABLE_STAGES, "histories(stages=...)")
    check_int("histories(): max_actions", max_actions, minimum=0)
    topologies = _topologies(topology)
    if not isinstance(slot_id, str):
        raise InvalidTypeError(f"histories(): slot_id must be a str; got {type(slot_id).__name__}")
    germ_st: st.SearchStrategy[Germinate] | None = None
    if germination is not None:
        if isinstance(germination, Germinate):
            if germination.topology not in topologies:
                raise InvalidArgumentError(
                    f"histories(): the germination's topology {germination.topology!r} is not {topology!r}"
                )
            germination = dataclasses.replace(germination, slot_id=slot_id)
        germ_st = _as_strategy(germination, Germinate, "histories(): germination", lambda: st.nothing())
    gates_st = _as_strategy(gates, Gates, "histories(): gates", gate_configs)
    return _histories(stage_list, topologies, gates_st, max_actions, slot_id, germ_st)


def seed_states(
    *,
    stages: SeedStage | Iterable[SeedStage] | None = None,
    topology: str | None = None,
    gates: Gates | st.SearchStrategy[Gates] | None = None,
    max_actions: int = 25,
    slot_id: str = "r0c0",
    germination: Germinate | st.SearchStrategy[Germinate] | None = None,
) -> st.SearchStrategy[SeedState]:
    """:class:`~esper_func.SeedState` values reachable from germination by legal operations only.

    The ``state`` of :func:`histories` (same arguments): every state is the
    result of replaying a drawn action sequence, so it passes
    :func:`~esper_func.testing.check_state`, round-trips through
    ``state_to_dict``/``state_from_dict``, and shrinks to a short history.
    """
    strategy = histories(
        stages=stages, topology=topology, gates=gates, max_actions=max_actions, slot_id=slot_id, germination=germination
    )
    return strategy.map(lambda h: h.state)


# --------------------------------------------------------------------------- grids


@st.composite
def _listed_grid(draw: st.DrawFn, n: int, values: st.SearchStrategy[float], max_rows: int) -> Tensor:
    rows = draw(st.lists(st.lists(values, min_size=n, max_size=n), min_size=1, max_size=max_rows))
    return torch.tensor(rows, dtype=torch.float32)


@st.composite
def _shapley_grid(draw: st.DrawFn, n: int) -> Tensor:
    return alpha_grid("shapley", n, seed=draw(st.integers(0, _SEED_BITS)), samples=2 * draw(st.integers(1, 3)))


_GRID_STRATEGIES: Final[tuple[str, ...]] = ("fractional", "binary", "ablation", "shapley", "full_factorial")


def alpha_grids(n: int, *, strategy: str | None = None, max_rows: int = 8) -> st.SearchStrategy[Tensor]:
    """Alpha grids ``[K, n]`` (float32, values in ``[0, 1]``) for :func:`esper_func.sweep` and attribution.

    ``strategy``: ``"fractional"`` (1 to ``max_rows`` rows of values in
    ``[0, 1]``), ``"binary"`` (rows of 0s and 1s), or one of
    :func:`esper_func.alpha_grid`'s (``"ablation"``, ``"shapley"`` with a
    drawn seed and 2-6 permutations, ``"full_factorial"``); ``None`` draws
    any of them (the full factorial only for ``n <= 6``). Shrinks towards a
    single row of zeros. Each draw is a new tensor.
    """
    check_int("alpha_grids(): n", n, minimum=1)
    check_int("alpha_grids(): max_rows", max_rows, minimum=1)
    fractions = st.one_of(st.sampled_from([0.0, 1.0, 0.5, 0.25, 0.75]), _floats(0.0, 1.0, width=32))
    options: dict[str, st.SearchStrategy[Tensor]] = {
        "fractional": _listed_grid(n, fractions, max_rows),
        "binary": _listed_grid(n, st.sampled_from([0.0, 1.0]), max_rows),
        "ablation": st.builds(alpha_grid, st.just("ablation"), st.just(n)),
        "shapley": _shapley_grid(n),
        "full_factorial": st.builds(alpha_grid, st.just("full_factorial"), st.just(n)),
    }
    if strategy is None:
        return st.one_of(*(s for name, s in options.items() if name != "full_factorial" or n <= 6))
    if strategy not in options:
        raise InvalidArgumentError(f"alpha_grids(): unknown strategy {strategy!r}; expected one of {list(options)} or None")
    if strategy == "full_factorial" and n > MAX_FULL_FACTORIAL_N:
        raise InvalidArgumentError(f"alpha_grids(): a full factorial over n={n} has 2**{n} rows; the limit is n <= {MAX_FULL_FACTORIAL_N}")
    return options[strategy]


# --------------------------------------------------------------------------- registries, blueprints, hosts


def _sorted_blueprints(registry: Registry, topologies: tuple[str, ...]) -> list[Blueprint]:
    return [registry.get(topology, name) for topology in topologies for name in registry.names(topology)]


def blueprints(topology: str | None = None, *, registry: Registry | None = None) -> st.SearchStrategy[Blueprint]:
    """:class:`~esper_func.Blueprint` values of ``registry`` (default: :func:`esper_func.default_registry`).

    Restricted to ``topology`` when given; shrinks towards the smallest
    (CNN first, then by ``param_estimate``).
    """
    reg = _default_registry() if registry is None else registry
    if not isinstance(reg, Registry):
        raise InvalidTypeError(f"blueprints(): registry must be a Registry; got {type(reg).__name__}")
    found = _sorted_blueprints(reg, _topologies(topology))
    if not found:
        raise InvalidArgumentError(f"blueprints(): the registry has no {topology or ''} blueprint")
    return st.sampled_from(found)


@st.composite
def _registries(draw: st.DrawFn, base: Registry, topologies: tuple[str, ...]) -> Registry:
    chosen: list[Blueprint] = []
    for topology in topologies:
        options = _sorted_blueprints(base, (topology,))
        if options:
            chosen += draw(st.lists(st.sampled_from(options), min_size=1, unique_by=lambda b: b.name))
    return Registry.of(*chosen)


def registries(*, base: Registry | None = None, topology: str | None = None) -> st.SearchStrategy[Registry]:
    """Sub-registries of ``base`` (default: :func:`esper_func.default_registry`).

    Each holds at least one blueprint of every topology ``base`` has (of
    ``topology`` only, when given); shrinks towards the smallest blueprint
    alone.
    """
    reg = _default_registry() if base is None else base
    if not isinstance(reg, Registry):
        raise InvalidTypeError(f"registries(): base must be a Registry; got {type(reg).__name__}")
    topologies = tuple(t for t in _topologies(topology) if reg.names(t))
    if not topologies:
        raise InvalidArgumentError(f"registries(): the base registry has no {topology or ''} blueprint")
    return _registries(reg, topologies)


@st.composite
def _transformer_hosts(draw: st.DrawFn) -> TransformerHost:
    n_head = draw(st.sampled_from([1, 2]))
    segments = draw(st.integers(1, 3))
    return TransformerHost(
        vocab_size=draw(st.sampled_from([16, 32])),
        n_embd=n_head * draw(st.sampled_from([4, 8])),
        n_head=n_head,
        n_layer=segments * draw(st.integers(1, 2)),
        block_size=8,
        dropout=draw(st.sampled_from([0.0, 0.1])),
        num_segments=segments,
    )


def hosts(*, topology: str | None = None) -> st.SearchStrategy[Host]:
    """Small, fast host specs (:class:`~esper_func.CNNHost`, :class:`~esper_func.TransformerHost`).

    CNN: 2-3 blocks of 2-8 base channels, 1 or 3 input channels, 2-4 classes,
    kernel 1 or 3, either memory format. Transformer: 1-2 heads of width 4
    or 8, 1-3 segments of 1-2 layers, a vocabulary of 16 or 32, block size 8,
    dropout 0 or 0.1. Each builds in milliseconds; use :func:`inputs` for a
    batch that fits.
    """
    cnn = st.builds(
        CNNHost,
        num_classes=st.integers(2, 4),
        n_blocks=st.integers(2, 3),
        base_channels=st.sampled_from([4, 2, 8]),
        memory_format=st.sampled_from(["contiguous_format", "channels_last"]),
        kernel_size=st.sampled_from([3, 1]),
        in_channels=st.sampled_from([1, 3]),
    )
    options = {"cnn": cnn, "transformer": _transformer_hosts()}
    drawn = [options[t] for t in _topologies(topology) if t in options]
    if not drawn:
        raise InvalidArgumentError(f"hosts(): no strategy draws {topology} hosts; it draws {sorted(options)}")
    return st.one_of(*drawn)


def _is_host(value: Any) -> bool:
    try:
        check_host(value)
    except HostProtocolError:
        return False
    return True


@st.composite
def _inputs(draw: st.DrawFn, host: Any, max_batch: int) -> Tensor:
    batch = draw(st.integers(1, max_batch))
    generator = torch.Generator().manual_seed(draw(st.integers(0, _SEED_BITS)))
    # A small size, for an example_input that takes one (the built-in hosts' do).
    sizes = inspect.signature(host.example_input).parameters
    kwargs: dict[str, int] = {}
    if "image_size" in sizes:
        pooled = getattr(host, "effective_pool_layers", getattr(host, "n_blocks", 3))
        # At least 2x2 on the smallest surface: a seed's GroupNorm needs more than one value per group.
        kwargs = {"image_size": draw(st.sampled_from([2 ** (pooled + 1), 2 ** (pooled + 2)]))}
    elif "seq_len" in sizes:
        kwargs = {"seq_len": draw(st.integers(1, min(8, getattr(host, "block_size", 8))))}
    batch_of_inputs: Tensor = host.example_input(batch, generator, **kwargs)
    return batch_of_inputs


def inputs(host: Host | Model, *, max_batch: int = 3) -> st.SearchStrategy[Tensor]:
    """Input batches for ``host`` (or a model's host): 1 to ``max_batch`` samples.

    CNN: images that leave 2x2 (or 4x4) pixels after the host's pooling;
    transformer: 1-8 token ids per sample. Built with
    ``host.example_input`` from a drawn generator seed.
    """
    check_int("inputs(): max_batch", max_batch, minimum=1)
    spec = host.host if isinstance(host, Model) else host
    if not _is_host(spec):
        raise InvalidTypeError(f"inputs() expects a host spec or a Model; got {type(host).__name__}")
    return _inputs(spec, max_batch)


# --------------------------------------------------------------------------- models


def _shapes(tree: Any) -> Any:
    if isinstance(tree, Tensor):
        return f"{str(tree.dtype).removeprefix('torch.')}{list(tree.shape)}"
    if isinstance(tree, dict):
        return {k: _shapes(v) for k, v in tree.items()}
    return tree


class DrawnModel(NamedTuple):
    """``(model, params, buffers)``, as :func:`esper_func.build_model` returns them.

    Printed compactly (host, slots with blueprint, algorithm and stage,
    tensor shapes) in hypothesis's failure reports.
    """

    model: Model
    params: dict[str, Any]
    buffers: dict[str, Any]

    def describe(self) -> str:
        """One line per slot, then the parameter shapes."""
        m = self.model
        lines = [f"DrawnModel(host={m.host!r},"]
        for sid, slot, stage in zip(m.slot_order, m.slots, m.stages, strict=True):
            seed = "empty" if slot is None else f"{slot.blueprint.name!r} {slot.algorithm.name}{' gated' if slot.gated else ''}"
            lines.append(f"    {sid}: {seed}, {stage.name},")
        lines.append(f"    params={_shapes(self.params)},")
        lines.append(f"    buffers={_shapes(self.buffers)})")
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.describe())


def _perturbed(params: dict[str, Any], scale: float, generator: torch.Generator) -> dict[str, Any]:
    def move(t: Tensor) -> Tensor:
        if not t.is_floating_point():
            return t
        return t + scale * torch.randn(t.shape, generator=generator, dtype=t.dtype).to(t.device)

    slots = {
        sid: {group: {name: move(t) for name, t in tensors.items()} for group, tensors in groups.items()}
        for sid, groups in params["slots"].items()
    }
    return {"host": params["host"], "slots": slots}


@st.composite
def _models(
    draw: st.DrawFn,
    host_st: st.SearchStrategy[Host],
    registry_st: st.SearchStrategy[Registry],
    names: frozenset[str] | None,
    seeded_stages: list[SeedStage],
    empty_stages: list[SeedStage],
    algorithms: list[AlphaAlgorithm],
    min_seeds: int,
    max_seeds: int | None,
    dtype: torch.dtype,
) -> DrawnModel:
    host = draw(host_st)
    registry = draw(registry_st)
    available = [name for name in registry.names(host.topology) if names is None or name in names]
    if not available and min_seeds > 0:
        raise InvalidArgumentError(
            f"models(): the registry has no {host.topology} blueprint among {sorted(names or ())}; "
            f"it has {list(registry.names(host.topology))}"
        )
    ids = host.slot_ids
    most = len(ids) if max_seeds is None else min(max_seeds, len(ids))
    least = min(min_seeds, most) if available and seeded_stages else 0
    enabled_ids = draw(st.lists(st.sampled_from(ids), min_size=max(1, least), unique=True))
    enabled = [sid for sid in ids if sid in enabled_ids]
    most = min(most, len(enabled)) if available and seeded_stages else 0
    seeded = set(draw(st.lists(st.sampled_from(enabled), min_size=least, max_size=most, unique=True))) if most else set()
    seed = draw(st.integers(0, _SEED_BITS))
    scale = draw(st.sampled_from([0.0, 0.1]))
    model, params, buffers = build_model(host, enabled, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    empty: dict[str, SeedStage] = {}
    for k, sid in enumerate(enabled):
        if sid in seeded:
            model, params = add_seed(
                model,
                params,
                sid,
                registry,
                draw(st.sampled_from(available)),
                algorithm=draw(st.sampled_from(algorithms)),
                stage=draw(st.sampled_from(seeded_stages)),
                generator=torch.Generator().manual_seed((seed + 1 + k) % _SEED_BITS),
            )
        else:
            stage = draw(st.sampled_from(empty_stages))
            if stage != S.DORMANT:
                empty[sid] = stage
    if empty:
        model, params = set_stages(model, params, empty)
    if scale and params["slots"]:
        params = _perturbed(params, scale, torch.Generator().manual_seed((seed + 7919) % _SEED_BITS))
    return DrawnModel(model, params, buffers)


def models(
    *,
    host: Host | st.SearchStrategy[Host] | None = None,
    topology: str | None = None,
    registry: Registry | st.SearchStrategy[Registry] | None = None,
    blueprints: Iterable[str] | None = None,
    stages: SeedStage | Iterable[SeedStage] | None = None,
    algorithms: AlphaAlgorithm | Iterable[AlphaAlgorithm] | None = None,
    min_seeds: int = 1,
    max_seeds: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> st.SearchStrategy[DrawnModel]:
    """Models with seeds in drawn stages: ``DrawnModel(model, params, buffers)``.

    A host from :func:`hosts` (or ``host``), a non-empty set of its slots
    enabled, ``min_seeds`` to ``max_seeds`` of them holding a seed built from
    ``registry`` (default: every built-in blueprint; ``blueprints`` restricts
    the names) with a drawn algorithm and a drawn stage among ``stages``
    (stages without a seed, DORMANT, PRUNED, EMBARGOED, RESETTING, apply to
    the empty slots). Seed weights are either fresh (mostly the identity, as
    at germination) or moved off it by a little noise, so that seeds change
    the output. Shrinks towards one CNN slot holding the smallest blueprint
    in GERMINATED.

    Args:
        host: a host spec, a strategy of them, or ``None`` for
            ``hosts(topology=topology)``.
        topology: restricts the drawn hosts.
        registry: a registry, a strategy of them (e.g. :func:`registries`), or
            ``None`` for :func:`esper_func.default_registry`.
        blueprints: blueprint names to draw from (those the registry has).
        stages: the stages to draw (default: all but UNKNOWN).
        algorithms: the alpha algorithms to draw (default: all).
        min_seeds: the least number of slots that hold a seed.
        max_seeds: the most slots that hold a seed (``None``: every slot).
        dtype: floating dtype of every parameter and buffer.
    """
    if host is not None and not isinstance(host, st.SearchStrategy) and not _is_host(host):
        raise InvalidTypeError(f"models(): host must be a host spec, a strategy of them, or None; got {type(host).__name__}")
    host_st: st.SearchStrategy[Host]
    if host is None:
        host_st = hosts(topology=topology)
    elif isinstance(host, st.SearchStrategy):
        host_st = host
    else:
        if topology is not None and host.topology != topology:
            raise InvalidArgumentError(f"models(): host is a {host.topology} host but topology={topology!r}")
        host_st = st.just(host)
    registry_st = _as_strategy(registry, Registry, "models(): registry", lambda: st.just(_default_registry()))
    names = None if blueprints is None else frozenset([blueprints] if isinstance(blueprints, str) else blueprints)
    if names is not None and not names:
        raise InvalidArgumentError("models(): blueprints is empty; pass None for every blueprint")
    chosen = _stage_list(stages, (*SEEDED_STAGES, *_EMPTY_STAGES), "models(stages=...)")
    seeded_stages = [s for s in chosen if s not in SEEDLESS_STAGES]
    empty_stages = [s for s in chosen if s in SEEDLESS_STAGES] or [S.DORMANT]
    check_int("models(): min_seeds", min_seeds, minimum=0)
    if max_seeds is not None:
        check_int("models(): max_seeds", max_seeds, minimum=min_seeds)
    if min_seeds > 0 and not seeded_stages:
        raise InvalidArgumentError(
            f"models(): min_seeds={min_seeds} but stages {[s.name for s in chosen]} hold no seed; pass min_seeds=0"
        )
    if algorithms is None:
        algorithm_list = list(AlphaAlgorithm)
    else:
        given = [algorithms] if isinstance(algorithms, (AlphaAlgorithm, int)) else list(algorithms)
        algorithm_list = [a for a in AlphaAlgorithm if a in {AlphaAlgorithm(v) for v in given}]
        if not algorithm_list:
            raise InvalidArgumentError("models(): algorithms is empty; pass None for every algorithm")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InvalidTypeError(f"models(): dtype must be a floating torch.dtype; got {dtype!r}")
    return _models(host_st, registry_st, names, seeded_stages, empty_stages, algorithm_list, min_seeds, max_seeds, dtype)


@st.composite
def _slot_states(
    draw: st.DrawFn, model: Model, gates: st.SearchStrategy[Gates], max_actions: int
) -> dict[str, SeedState]:
    g = draw(gates)
    topology = model.host.topology
    states: dict[str, SeedState] = {}
    for sid, slot, stage in zip(model.slot_order, model.slots, model.stages, strict=True):
        if slot is not None:
            germination = germinations(
                topology=topology, slot_id=sid, blueprint_id=slot.blueprint.name, algorithm=slot.algorithm
            )
            states[sid] = draw(
                seed_states(stages=stage, gates=g, max_actions=max_actions, slot_id=sid, germination=germination)
            )
        elif stage != S.DORMANT:
            states[sid] = draw(seed_states(stages=stage, topology=topology, gates=g, max_actions=max_actions, slot_id=sid))
    return states


def slot_states(
    model: Model, *, gates: Gates | st.SearchStrategy[Gates] | None = None, max_actions: int = 10
) -> st.SearchStrategy[dict[str, SeedState]]:
    """Lifecycle states for a model's slots: ``{slot_id: SeedState}``, consistent with the model.

    Every slot holding a seed gets a state from :func:`seed_states` in the
    slot's stage, with its blueprint, algorithm (never switched) and topology;
    an empty slot in PRUNED, EMBARGOED or RESETTING gets a state in that
    stage; an empty DORMANT slot gets none (it was never used). So
    ``ef.set_stages(model, params, states)`` changes nothing, and
    ``ef.alphas_of(model, states)`` is the alpha vector those states blend
    with. All slots share one drawn :class:`~esper_func.Gates`.
    """
    if not isinstance(model, Model):
        raise InvalidTypeError(f"slot_states() expects a Model (e.g. models().model); got {type(model).__name__}")
    check_int("slot_states(): max_actions", max_actions, minimum=0)
    return _slot_states(model, _as_strategy(gates, Gates, "slot_states(): gates", gate_configs), max_actions)
