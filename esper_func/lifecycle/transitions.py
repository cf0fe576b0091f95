"""Lifecycle transitions as pure functions ``state -> (new_state, ..., events)``.

Each function reproduces one method of esper-lite's ``SeedSlot`` (germinate,
advance_stage, prune, schedule_prune, set_alpha_target, step_epoch) on an
immutable :class:`~esper_func.lifecycle.state.SeedState`. Nothing is mutated;
nothing global is read; no clock is consulted.

Three kinds of outcome:

- **Done**: a new state and the events it caused (a tuple, in order).
- **Refused** (esper-lite returns ``False``): the *same* state object and no
  events, e.g. pruning a FOSSILIZED seed, retargeting alpha mid-ramp.
  Where esper-lite changes part of its state before refusing (a refused
  prune still sets ``auto_pruned``), nothing changes here.
- **Illegal** (esper-lite raises): an exception, nothing half-applied, e.g.
  ``advance`` to a failure stage, ``germinate`` with ``blend="gated"`` but
  ``algorithm=ADD``, entering BLENDING with a gated blend of zero tempo
  (esper-lite moves the stage first, then raises).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Final

from esper_func._validate import (
    check_choice,
    check_enum,
    check_float,
    check_int,
    check_optional_bool,
    check_optional_float,
    check_str,
)
from esper_func.errors import IllegalTransitionError, InvalidArgumentError, InvalidTypeError
from esper_func.hosts import resolve_topology
from esper_func.lifecycle.alpha import (
    DEFAULT_STEEPNESS,
    AlphaAlgorithm,
    AlphaController,
    AlphaCurve,
    AlphaMode,
    retarget,
    tick,
)
from esper_func.lifecycle.events import (
    GateEvaluated,
    LifecycleEvent,
    SeedFossilized,
    SeedGerminated,
    SeedPruned,
    StageChanged,
)
from esper_func.lifecycle.gates import GateLevel, GateResult, Gates, check_gate
from esper_func.lifecycle.stages import (
    VALID_TRANSITIONS,
    SeedStage,
    is_failure_stage,
    is_valid_transition,
)
from esper_func.lifecycle.state import (
    AUTO_PRUNE_REASONS,
    BLEND_ALGORITHMS,
    DEFAULT_TELEMETRY_MAX_EPOCHS,
    STAGE_HISTORY_MAXLEN,
    SeedState,
    SeedTelemetry,
    has_seed,
)

__all__ = [
    "germinate",
    "germinated_event",
    "advance",
    "prune",
    "schedule_prune",
    "set_alpha_target",
    "step_epoch",
    "sync_telemetry",
]

Events = tuple[LifecycleEvent, ...]

_EPS: Final[float] = 1e-6
_CURVE_FOR_BLEND: Final = {
    "linear": AlphaCurve.LINEAR,
    "sigmoid": AlphaCurve.SIGMOID,
    # A learned gate is already non-linear and starts near zero; a linear
    # amplitude ramp keeps it from being starved of gradient (esper-lite).
    "gated": AlphaCurve.LINEAR,
}


# --------------------------------------------------------------------------- helpers


def _check_steepness(steepness: object) -> float:
    return check_float("steepness", steepness)


def _check_curve(curve: object) -> AlphaCurve | None:
    return None if curve is None else check_enum("curve", curve, AlphaCurve)


def _with_alpha(state: SeedState, alpha: float) -> SeedState:
    """esper-lite's ``set_alpha``: alpha clamped to ``[0, 1]``, kept in the controller."""
    value = max(0.0, min(1.0, alpha))
    return dataclasses.replace(state, alpha_controller=dataclasses.replace(state.alpha_controller, alpha=value))


def _transition(state: SeedState, new_stage: SeedStage) -> SeedState | None:
    """esper-lite's ``SeedState.transition``; ``None`` when the move is not legal."""
    if not is_valid_transition(state.stage, new_stage):
        return None
    metrics = state.metrics
    history = (*state.stage_history, (new_stage, metrics.epochs_total))[-STAGE_HISTORY_MAXLEN:]
    return dataclasses.replace(
        state,
        previous_stage=state.stage,
        previous_epochs_in_stage=metrics.epochs_in_current_stage,
        stage=new_stage,
        stage_history=history,
        metrics=dataclasses.replace(
            metrics,
            accuracy_at_stage_start=metrics.current_val_accuracy,
            epochs_in_current_stage=0,
        ),
    )


def _start_blending(state: SeedState) -> SeedState:
    """A fresh controller ramping from the current alpha to the germination target."""
    curve = _CURVE_FOR_BLEND[state.blend_algorithm_id]
    ctrl = retarget(
        AlphaController(alpha=state.alpha),
        alpha_target=state.blend_alpha_target,
        steps=state.blend_tempo_epochs,
        curve=curve,
        steepness=DEFAULT_STEEPNESS,
    )
    gate_steps = state.blend_tempo_epochs if state.blend_algorithm_id == "gated" else 0
    return dataclasses.replace(state, alpha_controller=ctrl, gate_total_steps=gate_steps)


def _check_can_start_blending(state: SeedState) -> None:
    """Refuse, before anything changes, a blend esper-lite cannot start."""
    if state.blend_algorithm_id == "gated" and state.blend_tempo_epochs <= 0:
        raise IllegalTransitionError(
            f"slot {state.slot_id!r}: a gated blend needs a tempo of at least 1 epoch to create its gate "
            f"network, but this seed was germinated with tempo={state.blend_tempo_epochs}; prune it, or "
            "germinate with tempo >= 1"
        )


def _on_enter_stage(state: SeedState, new_stage: SeedStage, old_stage: SeedStage) -> SeedState:
    """Stage-entry side effects, whichever operation caused the transition."""
    if new_stage == SeedStage.BLENDING and old_stage == SeedStage.TRAINING:
        metrics = dataclasses.replace(
            state.metrics,
            accuracy_at_blending_start=state.metrics.current_val_accuracy,
            blending_started=True,
        )
        return _start_blending(dataclasses.replace(state, metrics=metrics))
    if new_stage == SeedStage.HOLDING and old_stage == SeedStage.BLENDING:
        ctrl = state.alpha_controller
        ctrl = dataclasses.replace(
            ctrl,
            alpha=1.0,
            alpha_start=1.0,
            alpha_target=1.0,
            alpha_mode=AlphaMode.HOLD,
            alpha_steps_done=ctrl.alpha_steps_total,
        )
        return dataclasses.replace(state, alpha_controller=ctrl)
    return state


def _synced(state: SeedState) -> bool:
    return state.telemetry.epoch > 0


def _grad_ratio(state: SeedState) -> float:
    ratio = state.metrics.seed_gradient_norm_ratio
    return 0.0 if ratio is None or not _synced(state) else float(ratio)


def _stage_changed(
    state: SeedState,
    *,
    from_stage: SeedStage,
    to_stage: SeedStage,
    alpha: float,
    accuracy_delta: float,
    epochs_in_stage: int,
) -> StageChanged:
    telemetry = state.telemetry
    synced = _synced(state)
    return StageChanged(
        slot_id=state.slot_id,
        seed_id=state.seed_id,
        blueprint_id=state.blueprint_id,
        epoch=state.metrics.epochs_total,
        from_stage=from_stage,
        to_stage=to_stage,
        alpha=alpha,
        accuracy_delta=accuracy_delta,
        epochs_in_stage=epochs_in_stage,
        alpha_curve=state.alpha_controller.alpha_curve,
        grad_ratio=_grad_ratio(state),
        has_vanishing=bool(telemetry.has_vanishing) if synced else False,
        has_exploding=bool(telemetry.has_exploding) if synced else False,
    )


def _reenter_blending(state: SeedState) -> tuple[SeedState, StageChanged]:
    """HOLDING -> BLENDING, for a partial alpha target or a scheduled prune."""
    new = _transition(state, SeedStage.BLENDING)
    assert new is not None  # HOLDING -> BLENDING is always legal
    new = _on_enter_stage(new, SeedStage.BLENDING, state.stage)
    event = _stage_changed(
        new,
        from_stage=state.stage,
        to_stage=SeedStage.BLENDING,
        alpha=new.alpha,
        accuracy_delta=state.metrics.total_improvement,
        epochs_in_stage=state.metrics.epochs_in_current_stage,
    )
    return new, event


# --------------------------------------------------------------------------- germinate


def germinate(
    slot_id: str,
    blueprint_id: str,
    *,
    seed_id: str | None = None,
    algorithm: AlphaAlgorithm = AlphaAlgorithm.ADD,
    blend: str = "sigmoid",
    tempo: int = 5,
    alpha_target: float | None = None,
    topology: str = "cnn",
    seed_params: int = 0,
    host_params: int = 0,
) -> SeedState:
    """A new seed in stage GERMINATED.

    Args:
        slot_id: the slot's id (e.g. ``"r0c0"``).
        blueprint_id: the blueprint's name; must not be empty (gate G0).
        seed_id: defaults to ``f"{slot_id}-{blueprint_id}"``.
        algorithm: how the seed is composed with the host.
        blend: ``"linear"``, ``"sigmoid"`` or ``"gated"``; picks the alpha curve
            used when blending starts (``"gated"`` ramps linearly and requires
            ``algorithm=GATE``, and ``GATE`` requires ``"gated"``).
        tempo: blending length in epochs (controller ticks), ``>= 0``.
        alpha_target: alpha reached at the end of blending, in ``(0, 1]``;
            ``None`` means 1.
        topology: ``"cnn"``, ``"transformer"`` or a :class:`~esper_func.Topology`
            of your own (a host's ``host.topology``); its ``isolate_blending``
            decides gradient isolation from BLENDING on.
        seed_params: the seed's trainable parameter count, used to
            normalise the gradient ratio of gate G2 (0 = unknown).
        host_params: the host's trainable parameter count (likewise).

    Use :func:`germinated_event` for the matching ``SeedGerminated`` event.

    Raises:
        InvalidArgumentError: ``alpha_target`` outside ``(0, 1]``; gated/GATE
            mismatch; unknown blend id or algorithm; negative tempo or
            parameter counts; empty ``blueprint_id`` (G0 fails).
        InvalidTypeError: an argument of the wrong type.
        UnknownTopologyError: ``topology`` is neither a built-in name nor a ``Topology``.
    """
    check_str("slot_id", slot_id)
    check_str("blueprint_id", blueprint_id)
    if seed_id is not None:
        check_str("seed_id", seed_id)
    target = 1.0 if alpha_target is None else check_float("alpha_target", alpha_target)
    if not 0.0 < target <= 1.0:
        raise InvalidArgumentError(f"alpha_target must be within (0, 1] (None means 1.0); got {alpha_target!r}")
    algorithm = check_enum("algorithm", algorithm, AlphaAlgorithm)
    check_choice("blend", blend, BLEND_ALGORITHMS)
    if blend == "gated" and algorithm != AlphaAlgorithm.GATE:
        raise InvalidArgumentError(
            f"blend='gated' requires algorithm=AlphaAlgorithm.GATE (got {algorithm.name}); "
            "use blend='linear' or 'sigmoid' for ADD and MULTIPLY"
        )
    if algorithm == AlphaAlgorithm.GATE and blend != "gated":
        raise InvalidArgumentError(f"algorithm=AlphaAlgorithm.GATE requires blend='gated' (got blend={blend!r})")
    resolved = resolve_topology(topology)
    check_int("tempo", tempo, minimum=0)
    check_int("seed_params", seed_params, minimum=0)
    check_int("host_params", host_params, minimum=0)
    if not blueprint_id:
        raise InvalidArgumentError("G0 gate failed: ('blueprint_id_missing',); blueprint_id must be a non-empty name")

    dormant = SeedState(
        slot_id=slot_id,
        seed_id=seed_id or f"{slot_id}-{blueprint_id}",
        blueprint_id=blueprint_id,
        stage=SeedStage.DORMANT,
        alpha_algorithm=algorithm,
        blend_algorithm_id=blend,
        blend_tempo_epochs=int(tempo),
        blend_alpha_target=target,
        topology=resolved,
    )
    dormant = dataclasses.replace(
        dormant,
        metrics=dataclasses.replace(
            dormant.metrics, seed_param_count=int(seed_params), host_param_count=int(host_params)
        ),
    )
    state = _transition(dormant, SeedStage.GERMINATED)
    assert state is not None
    return state


def germinated_event(state: SeedState) -> SeedGerminated:
    """The ``SeedGerminated`` event describing a state returned by :func:`germinate`."""
    return SeedGerminated(
        slot_id=state.slot_id,
        seed_id=state.seed_id,
        blueprint_id=state.blueprint_id,
        epoch=state.metrics.epochs_total,
        params=state.metrics.seed_param_count,
        alpha=state.alpha,
        blend_algorithm_id=state.blend_algorithm_id,
        blend_tempo_epochs=state.blend_tempo_epochs,
        alpha_curve=state.alpha_controller.alpha_curve,
        topology=str(state.topology),
    )


# --------------------------------------------------------------------------- advance

_NO_ACTIVE_SEED = GateResult(gate=GateLevel.G0, passed=False, checks_failed=("no_active_seed",))
_NO_VALID_TRANSITION = GateResult(gate=GateLevel.G0, passed=False, checks_failed=("no_valid_transition",))


def advance(
    state: SeedState, gates: Gates, target: SeedStage | None = None
) -> tuple[SeedState, GateResult, Events]:
    """Check the gate for ``target`` and, if it passes, move there.

    ``target=None`` picks the first non-failure successor of the current
    stage (TRAINING, BLENDING, HOLDING, FOSSILIZED in turn).

    Returns ``(state, result, events)``:

    - no seed in the slot (DORMANT, PRUNED, EMBARGOED, RESETTING): the state
      unchanged and a failed G0 result ``("no_active_seed",)``, whatever the
      target; no events;
    - no successor (FOSSILIZED, ``target=None``): failed G0
      ``("no_valid_transition",)``; no events;
    - gate failed: the state unchanged, the failed result, ``(GateEvaluated,)``;
    - gate passed but ``target`` is not a legal successor: the state
      unchanged, a failed result ``("transition_failed",)``,
      ``(GateEvaluated,)`` (which records the gate's own verdict);
    - otherwise the new state, the passed result and
      ``(GateEvaluated, StageChanged[, SeedFossilized])``.

    Raises:
        IllegalTransitionError: (a ``ValueError``) ``target`` is a failure
            stage (use :func:`prune`), a stage without a gate (DORMANT,
            UNKNOWN), or BLENDING for a gated blend germinated with tempo 0.
    """
    if not isinstance(gates, Gates):
        raise InvalidTypeError(f"advance() expects Gates as its second argument; got {type(gates).__name__}")
    if not has_seed(state):
        return state, _NO_ACTIVE_SEED, ()
    if target is not None:
        try:
            target = SeedStage(target)
        except ValueError:
            raise IllegalTransitionError(
                f"advance(): unknown target stage {target!r}; expected a SeedStage or None"
            ) from None
        if is_failure_stage(target):
            raise IllegalTransitionError(
                f"advance() cannot target failure stage {target.name}; use prune() or "
                "schedule_prune(), and let step_epoch() run the cooldown"
            )
    else:
        target = next((s for s in VALID_TRANSITIONS.get(state.stage, ()) if not is_failure_stage(s)), None)
        if target is None:
            return state, _NO_VALID_TRANSITION, ()

    result = check_gate(gates, state, target)
    events: list[LifecycleEvent] = [
        GateEvaluated(
            slot_id=state.slot_id,
            seed_id=state.seed_id,
            epoch=state.metrics.epochs_total,
            gate=result.gate,
            target_stage=target,
            passed=result.passed,
            score=result.score,
            checks_passed=result.checks_passed,
            checks_failed=result.checks_failed,
            message=result.message,
        )
    ]
    if not result.passed:
        return state, result, tuple(events)

    moved = _transition(state, target)
    if moved is None:
        failed = GateResult(gate=result.gate, passed=False, checks_failed=("transition_failed",))
        return state, failed, tuple(events)
    if target == SeedStage.BLENDING and state.stage == SeedStage.TRAINING:
        _check_can_start_blending(state)
    new = _on_enter_stage(moved, target, state.stage)
    metrics = state.metrics
    events.append(
        _stage_changed(
            new,
            from_stage=state.stage,
            to_stage=target,
            alpha=new.alpha,
            accuracy_delta=metrics.total_improvement,
            epochs_in_stage=metrics.epochs_in_current_stage,
        )
    )
    if target == SeedStage.FOSSILIZED:
        events.append(
            SeedFossilized(
                slot_id=new.slot_id,
                seed_id=new.seed_id,
                blueprint_id=new.blueprint_id,
                epoch=metrics.epochs_total,
                improvement=metrics.total_improvement,
                counterfactual=metrics.counterfactual_contribution,
                params_added=metrics.seed_param_count,
                alpha=new.alpha,
                epochs_total=metrics.epochs_total,
                blending_delta=metrics.blending_delta,
            )
        )
    return new, result, tuple(events)


# --------------------------------------------------------------------------- prune


def prune(state: SeedState, reason: str = "", *, initiator: str = "policy") -> tuple[SeedState, Events]:
    """Remove the seed now: stage PRUNED, alpha 0, controller HOLD at 0.

    Refused (state returned as is, no events) when there is no seed to prune
    (DORMANT, or already in the cooldown) or the seed is FOSSILIZED
    (permanent by design). A reason in
    :data:`~esper_func.lifecycle.state.AUTO_PRUNE_REASONS` marks the prune as
    automatic (``metrics.auto_pruned``).

    Events: ``(StageChanged(-> PRUNED), SeedPruned)``; the stage event carries
    the alpha the seed had just before removal.
    """
    check_str("reason", reason)
    check_str("initiator", initiator)
    if not has_seed(state) or state.stage == SeedStage.FOSSILIZED:
        return state, ()
    metrics = state.metrics
    is_auto = reason in AUTO_PRUNE_REASONS
    marked = dataclasses.replace(
        state,
        metrics=dataclasses.replace(metrics, auto_pruned=is_auto, auto_prune_reason=reason if is_auto else ""),
    )
    moved = _transition(marked, SeedStage.PRUNED)
    assert moved is not None  # every seeded, non-fossilized stage may be pruned
    events: Events = (
        _stage_changed(
            moved,
            from_stage=state.stage,
            to_stage=SeedStage.PRUNED,
            alpha=state.alpha,
            accuracy_delta=metrics.total_improvement,
            epochs_in_stage=metrics.epochs_in_current_stage,
        ),
        SeedPruned(
            slot_id=state.slot_id,
            seed_id=state.seed_id,
            blueprint_id=state.blueprint_id,
            epoch=metrics.epochs_total,
            reason=reason,
            initiator=initiator,
            auto_pruned=is_auto,
            improvement=metrics.total_improvement,
            counterfactual=metrics.counterfactual_contribution,
            epochs_total=metrics.epochs_total,
            blending_delta=metrics.blending_delta,
        ),
    )
    ctrl = dataclasses.replace(
        moved.alpha_controller,
        alpha=0.0,
        alpha_start=0.0,
        alpha_target=0.0,
        alpha_steps_total=0,
        alpha_steps_done=0,
        alpha_mode=AlphaMode.HOLD,
    )
    new = dataclasses.replace(
        moved,
        alpha_controller=ctrl,
        blend_out_frozen=False,
        gate_total_steps=0,
        pending_prune_reason=None,
        pending_prune_initiator=None,
    )
    return new, events


def schedule_prune(
    state: SeedState,
    *,
    steps: int,
    curve: AlphaCurve | None = None,
    steepness: float = DEFAULT_STEEPNESS,
    reason: str = "",
    initiator: str = "policy",
) -> tuple[SeedState, Events]:
    """Fade the seed out over ``steps`` epochs, then prune it (in :func:`step_epoch`).

    - ``steps <= 0`` or alpha already 0: prune now (as :func:`prune`).
    - Refused when there is no seed, the seed is FOSSILIZED, or the alpha
      controller is mid-ramp (not HOLD).
    - From HOLDING the seed re-enters BLENDING (event ``StageChanged``); from
      BLENDING it stays; from any other stage it is pruned now.

    The controller then ramps DOWN to 0 (``curve=None`` keeps its curve), the
    reason and initiator are kept in the state until the prune completes, and
    the blend-out freeze is on (:func:`~esper_func.lifecycle.state.trainable`
    is ``False``) meanwhile.
    """
    check_int("steps", steps)
    curve = _check_curve(curve)
    steepness = _check_steepness(steepness)
    check_str("reason", reason)
    check_str("initiator", initiator)
    if not has_seed(state) or state.stage == SeedStage.FOSSILIZED:
        return state, ()
    if steps <= 0 or state.alpha <= 0.0:
        return prune(state, reason, initiator=initiator)
    if state.alpha_controller.alpha_mode != AlphaMode.HOLD:
        return state, ()
    events: Events = ()
    if state.stage == SeedStage.HOLDING:
        state, event = _reenter_blending(state)
        events = (event,)
    elif state.stage != SeedStage.BLENDING:
        return prune(state, reason, initiator=initiator)
    ctrl = retarget(state.alpha_controller, alpha_target=0.0, steps=steps, curve=curve, steepness=steepness)
    new = dataclasses.replace(
        state,
        alpha_controller=ctrl,
        blend_out_frozen=True,
        pending_prune_reason=reason,
        pending_prune_initiator=initiator,
    )
    return new, events


def set_alpha_target(
    state: SeedState,
    *,
    alpha_target: float,
    steps: int,
    curve: AlphaCurve | None = None,
    steepness: float = DEFAULT_STEEPNESS,
    alpha_algorithm: AlphaAlgorithm | None = None,
) -> tuple[SeedState, Events]:
    """Ramp alpha to a new non-zero target over ``steps`` epochs.

    Refused (state as is, no events) when: there is no seed; the seed is
    FOSSILIZED; ``alpha_target <= 0`` (use :func:`schedule_prune`); the
    controller is mid-ramp; the stage is not BLENDING or HOLDING.
    HOLDING is full-amplitude only, so a target below 1 re-enters BLENDING
    (event ``StageChanged``). Targets above 1 are clamped to 1; ``steps=0``
    moves alpha to the target at once. The blend-out freeze is on exactly
    when the new ramp goes down.

    ``alpha_algorithm`` switches how the seed is blended (ADD, MULTIPLY,
    GATE) while holding: switching to GATE gives the seed a gate network,
    switching away drops it (the model follows with
    :func:`esper_func.set_stages`).

    Raises:
        InvalidArgumentError: ``alpha_target`` is NaN, ``steps`` negative,
            ``steepness`` not finite, or an unknown curve or algorithm.
    """
    target = check_float("alpha_target", alpha_target, finite=False)
    check_int("steps", steps, minimum=0)
    curve = _check_curve(curve)
    steepness = _check_steepness(steepness)
    if alpha_algorithm is not None:
        alpha_algorithm = check_enum("alpha_algorithm", alpha_algorithm, AlphaAlgorithm)
    if not has_seed(state) or state.stage == SeedStage.FOSSILIZED:
        return state, ()
    if target <= 0.0:
        return state, ()
    if state.alpha_controller.alpha_mode != AlphaMode.HOLD:
        return state, ()
    if state.stage not in (SeedStage.BLENDING, SeedStage.HOLDING):
        return state, ()
    events: Events = ()
    if state.stage == SeedStage.HOLDING and target < 1.0 - _EPS:
        state, event = _reenter_blending(state)
        events = (event,)
    if alpha_algorithm is not None and alpha_algorithm != state.alpha_algorithm:
        if alpha_algorithm == AlphaAlgorithm.GATE:
            gate_steps = state.gate_total_steps or max(1, steps)
        else:
            gate_steps = 0
        state = dataclasses.replace(state, alpha_algorithm=alpha_algorithm, gate_total_steps=gate_steps)
    ctrl = retarget(state.alpha_controller, alpha_target=min(target, 1.0), steps=steps, curve=curve, steepness=steepness)
    new = dataclasses.replace(state, alpha_controller=ctrl, blend_out_frozen=ctrl.alpha_mode == AlphaMode.DOWN)
    return new, events


# --------------------------------------------------------------------------- telemetry


def sync_telemetry(
    state: SeedState,
    *,
    epoch: int,
    max_epochs: int = DEFAULT_TELEMETRY_MAX_EPOCHS,
    gradient_norm: float | None = None,
    gradient_health: float | None = None,
    has_vanishing: bool | None = None,
    has_exploding: bool | None = None,
) -> SeedState:
    """Record the epoch's gradient telemetry (esper-lite's ``SeedState.sync_telemetry``).

    ``epoch`` is the training loop's epoch and ``max_epochs`` its length (both
    stamped on every call; 25 by default, as in esper-lite). Gradient
    arguments left ``None`` keep what was
    stored: a seed that was never measured stays unmeasured, and permissive
    G2 refuses it (unmeasured is not healthy). From the first sync with
    ``epoch > 0`` on, lifecycle events report the gradient flags and ratio.
    A free (DORMANT) slot has no telemetry: returned as is.

    Raises:
        InvalidArgumentError, InvalidTypeError: a negative epoch, a NaN or
            negative norm, a health outside ``[0, 1]``, a flag that is not a bool.
    """
    epoch = check_int("epoch", epoch, minimum=0)
    max_epochs = check_int("max_epochs", max_epochs, minimum=0)
    norm = check_optional_float("gradient_norm", gradient_norm, minimum=0.0)
    health = check_optional_float("gradient_health", gradient_health, minimum=0.0, maximum=1.0)
    vanishing = check_optional_bool("has_vanishing", has_vanishing)
    exploding = check_optional_bool("has_exploding", has_exploding)
    if state.stage == SeedStage.DORMANT:
        return state
    old = state.telemetry
    telemetry = SeedTelemetry(
        gradient_norm=old.gradient_norm if norm is None else norm,
        gradient_health=old.gradient_health if health is None else health,
        has_vanishing=old.has_vanishing if vanishing is None else vanishing,
        has_exploding=old.has_exploding if exploding is None else exploding,
        epoch=epoch,
        max_epochs=max_epochs,
    )
    return dataclasses.replace(state, telemetry=telemetry)


# --------------------------------------------------------------------------- step_epoch


def _auto_levels(auto_forward: Iterable[GateLevel]) -> frozenset[GateLevel]:
    try:
        return frozenset(GateLevel(level) for level in auto_forward)
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"auto_forward must be a set of GateLevel (G1, G2 and/or G3 are used); got {auto_forward!r}"
        ) from None


def _cooldown_step(state: SeedState, *, dwell: int, next_stage: SeedStage) -> tuple[SeedState, Events]:
    """One epoch of EMBARGOED/RESETTING: count it, and move on once the dwell is served."""
    metrics = state.metrics
    metrics = dataclasses.replace(
        metrics,
        epochs_total=metrics.epochs_total + 1,
        epochs_in_current_stage=metrics.epochs_in_current_stage + 1,
    )
    state = dataclasses.replace(state, metrics=metrics)
    if metrics.epochs_in_current_stage < max(1, dwell):
        return state, ()
    moved = _transition(state, next_stage)
    assert moved is not None
    event = _stage_changed(
        moved,
        from_stage=state.stage,
        to_stage=next_stage,
        alpha=state.alpha,
        accuracy_delta=0.0,
        epochs_in_stage=metrics.epochs_in_current_stage,
    )
    if next_stage == SeedStage.DORMANT:
        moved = dataclasses.replace(
            moved, blend_out_frozen=False, pending_prune_reason=None, pending_prune_initiator=None
        )
    return moved, (event,)


def step_epoch(
    state: SeedState, gates: Gates, *, auto_forward: Iterable[GateLevel] = frozenset()
) -> tuple[SeedState, Events]:
    """Advance the lifecycle clock by one epoch.

    First the blend-out freeze is refreshed from the controller (on while it
    ramps DOWN). Then, per stage:

    - GERMINATED: with ``G1`` in ``auto_forward``, ``advance`` to TRAINING.
    - TRAINING: with ``G2`` in ``auto_forward`` and at least
      ``gates.min_blending_epochs`` epochs in the stage, ``advance`` to
      BLENDING.
    - BLENDING: tick the alpha controller (``metrics.alpha_ramp_step``
      follows). Once the target is reached: a target of 0 completes a
      scheduled prune (:func:`prune` with the pending reason, or
      ``"scheduled_prune"``); otherwise, with ``G3`` in ``auto_forward`` and
      (permissive gates or enough epochs in the stage), ``advance`` to
      HOLDING.
    - HOLDING, FOSSILIZED, DORMANT: nothing (fossilizing is always explicit).
    - PRUNED -> EMBARGOED at once; EMBARGOED and RESETTING count their own
      epochs and move on after ``gates.embargo_epochs`` and
      ``gates.resetting_epochs`` (at least one each): a pruned slot is DORMANT
      after ``1 + embargo + resetting`` calls (7 by default) when nothing
      else counts its epochs.

    Returns ``(state, events)``; the events of any ``advance``/``prune`` done
    on the way are included.
    """
    if not isinstance(gates, Gates):
        raise InvalidTypeError(f"step_epoch() expects Gates as its second argument; got {type(gates).__name__}")
    levels = _auto_levels(auto_forward)
    stage = state.stage
    if stage == SeedStage.DORMANT:
        return state, ()
    frozen = state.alpha_controller.alpha_mode == AlphaMode.DOWN
    if frozen != state.blend_out_frozen:
        state = dataclasses.replace(state, blend_out_frozen=frozen)
    if stage == SeedStage.GERMINATED:
        if GateLevel.G1 in levels:
            new, _, events = advance(state, gates, SeedStage.TRAINING)
            return new, events
        return state, ()
    if stage == SeedStage.TRAINING:
        if GateLevel.G2 in levels and state.metrics.epochs_in_current_stage >= gates.min_blending_epochs:
            new, _, events = advance(state, gates, SeedStage.BLENDING)
            return new, events
        return state, ()
    if stage == SeedStage.BLENDING:
        ctrl, reached = tick(state.alpha_controller)
        state = dataclasses.replace(
            state,
            alpha_controller=ctrl,
            metrics=dataclasses.replace(state.metrics, alpha_ramp_step=ctrl.alpha_steps_done),
        )
        target_reached = reached or (
            ctrl.alpha_mode == AlphaMode.HOLD and abs(ctrl.alpha - ctrl.alpha_target) <= _EPS
        )
        if target_reached:
            if ctrl.alpha_target <= _EPS:
                return prune(
                    state,
                    state.pending_prune_reason or "scheduled_prune",
                    initiator=state.pending_prune_initiator or "policy",
                )
            if GateLevel.G3 in levels and (
                gates.permissive or state.metrics.epochs_in_current_stage >= gates.min_blending_epochs
            ):
                new, _, events = advance(state, gates, SeedStage.HOLDING)
                return new, events
        return state, ()
    if stage == SeedStage.PRUNED:
        moved = _transition(state, SeedStage.EMBARGOED)
        assert moved is not None
        event = _stage_changed(
            moved,
            from_stage=stage,
            to_stage=SeedStage.EMBARGOED,
            alpha=moved.alpha,
            accuracy_delta=0.0,
            epochs_in_stage=state.metrics.epochs_in_current_stage,
        )
        return moved, (event,)
    if stage == SeedStage.EMBARGOED:
        return _cooldown_step(state, dwell=gates.embargo_epochs, next_stage=SeedStage.RESETTING)
    if stage == SeedStage.RESETTING:
        return _cooldown_step(state, dwell=gates.resetting_epochs, next_stage=SeedStage.DORMANT)
    return state, ()
