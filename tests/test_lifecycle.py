"""Lifecycle transitions, measurements, serialization and hand-derived scenarios.

Scenario expectations were derived by reading esper-lite's ``SeedSlot``
(``advance_stage``, ``step_epoch``, ``schedule_prune``, ``_on_enter_stage``)
and are written as literal numbers.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import optree
import pytest
import torch
import torch.utils._pytree as torch_pytree

from esper_func.errors import CheckpointError, IllegalTransitionError, UnknownTopologyError
from esper_func.lifecycle import (
    SeedMetrics,
    SeedState,
    advance,
    germinate,
    germinated_event,
    global_norm,
    gradient_norms,
    gradient_ratio,
    has_seed,
    prune,
    record_accuracy,
    record_contribution,
    record_gradients,
    schedule_prune,
    seed_state_from_esper_lite,
    set_alpha_target,
    state_from_dict,
    state_to_dict,
    step_epoch,
    trainable,
)
from esper_func.lifecycle.alpha import AlphaAlgorithm, AlphaController, AlphaCurve, AlphaMode
from esper_func.lifecycle.events import GateEvaluated, SeedFossilized, SeedGerminated, SeedPruned, StageChanged
from esper_func.lifecycle.gates import GateLevel, GateResult, Gates
from esper_func.lifecycle.stages import SeedStage

S = SeedStage
G3 = frozenset({GateLevel.G3})

SIGMOID_5 = [0.02424426427877362, 0.23014069577164564, 0.7698593042283542, 0.9757557357212262, 1.0]


def kinds(events: tuple[Any, ...]) -> list[str]:
    return [type(e).__name__ for e in events]


def stage_moves(events: tuple[Any, ...]) -> list[tuple[str, str]]:
    return [(e.from_stage.name, e.to_stage.name) for e in events if isinstance(e, StageChanged)]


def fresh(**kwargs: Any) -> SeedState:
    kwargs.setdefault("seed_params", 1_000)
    kwargs.setdefault("host_params", 100_000)
    return germinate("r0c0", "norm", **kwargs)


def to_training(state: SeedState) -> SeedState:
    state, result, _ = advance(state, Gates(), SeedStage.TRAINING)
    assert result.passed
    return state


def to_blending(state: SeedState, gates: Gates | None = None) -> SeedState:
    gates = gates or Gates(permissive=True, min_blending_epochs=0)
    state, result, _ = advance(to_training(state), gates, SeedStage.BLENDING)
    assert result.passed, result
    return state


def to_holding(state: SeedState) -> SeedState:
    gates = Gates(permissive=True, min_blending_epochs=0)
    state = to_blending(state, gates)
    while state.stage == S.BLENDING:
        state, _ = step_epoch(state, gates, auto_forward=G3)
    assert state.stage == S.HOLDING
    return state


# ============================================================================ germinate


def test_germinate_defaults() -> None:
    state = germinate("r1c0", "attention")
    assert state.stage == S.GERMINATED and state.previous_stage == S.DORMANT
    assert state.seed_id == "r1c0-attention" and state.slot_id == "r1c0"
    assert state.alpha == 0.0 and state.alpha_controller == AlphaController()
    assert (state.blend_algorithm_id, state.blend_tempo_epochs, state.blend_alpha_target) == ("sigmoid", 5, 1.0)
    assert state.alpha_algorithm == AlphaAlgorithm.ADD and state.topology == "cnn"
    assert state.isolate_gradients is False and state.is_healthy and not state.is_paused
    assert state.stage_history == ((S.GERMINATED, 0),) and state.stage_entered_epoch == 0
    assert state.metrics == SeedMetrics()
    assert (state.pending_prune_reason, state.pending_prune_initiator) == (None, None)
    assert (state.gradient_health, state.has_exploding, state.has_vanishing) == (1.0, False, False)


def test_germinate_options() -> None:
    state = germinate(
        "r0c1",
        "lora",
        seed_id="s7",
        algorithm=AlphaAlgorithm.GATE,
        blend="gated",
        tempo=8,
        alpha_target=0.5,
        topology="transformer",
        seed_params=12,
        host_params=3_000,
    )
    assert state.seed_id == "s7" and state.alpha_algorithm == AlphaAlgorithm.GATE
    assert (state.blend_algorithm_id, state.blend_tempo_epochs, state.blend_alpha_target) == ("gated", 8, 0.5)
    assert state.topology == "transformer"
    assert (state.metrics.seed_param_count, state.metrics.host_param_count) == (12, 3_000)


def test_germinated_event() -> None:
    event = germinated_event(fresh())
    assert event == SeedGerminated(
        slot_id="r0c0",
        seed_id="r0c0-norm",
        blueprint_id="norm",
        epoch=0,
        params=1_000,
        alpha=0.0,
        blend_algorithm_id="sigmoid",
        blend_tempo_epochs=5,
        alpha_curve=AlphaCurve.LINEAR,
        topology="cnn",
    )


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"alpha_target": 0.0}, ValueError, r"within \(0, 1\]"),
        ({"alpha_target": 1.5}, ValueError, r"within \(0, 1\]"),
        ({"alpha_target": -0.1}, ValueError, r"within \(0, 1\]"),
        ({"alpha_target": float("nan")}, ValueError, r"within \(0, 1\]"),
        ({"blend": "gated"}, ValueError, "requires algorithm=AlphaAlgorithm.GATE"),
        ({"algorithm": AlphaAlgorithm.GATE}, ValueError, "requires blend='gated'"),
        ({"algorithm": AlphaAlgorithm.GATE, "blend": "linear"}, ValueError, "requires blend='gated'"),
        ({"blend": "cubic"}, ValueError, "unknown blend algorithm 'cubic'"),
        ({"topology": "rnn"}, UnknownTopologyError, "unknown topology 'rnn'"),
        ({"tempo": -1}, ValueError, "tempo must be >= 0"),
        ({"tempo": 2.5}, TypeError, "tempo must be an int"),
        ({"seed_params": -3}, ValueError, "seed_params must be >= 0"),
        ({"algorithm": 9}, ValueError, "unknown alpha algorithm"),
    ],
)
def test_germinate_validation(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        germinate("r0c0", "norm", **kwargs)


def test_germinate_unknown_topology_is_value_error_and_empty_blueprint_fails_g0() -> None:
    with pytest.raises(ValueError):
        germinate("r0c0", "norm", topology="mlp")
    with pytest.raises(ValueError, match="G0 gate failed"):
        germinate("r0c0", "")


# ============================================================================ advance


def test_advance_default_targets_follow_first_non_failure_successor() -> None:
    gates = Gates(permissive=True, min_blending_epochs=0)
    state = fresh()
    expected = [S.TRAINING, S.BLENDING]
    for stage in expected:
        state, result, _ = advance(state, gates)
        assert result.passed and state.stage == stage


def test_advance_gate_failure_keeps_state_and_reports_event() -> None:
    state = to_training(fresh())
    new, result, events = advance(state, Gates(), SeedStage.BLENDING)
    assert new is state
    assert not result.passed and result.gate == GateLevel.G2
    assert result.checks_failed == (
        "global_improvement_insufficient_0.00%",
        "seed_not_ready",
        "gradient_stats_never_measured",
    )
    assert events == (
        GateEvaluated(
            slot_id="r0c0",
            seed_id="r0c0-norm",
            epoch=0,
            gate=GateLevel.G2,
            target_stage=S.BLENDING,
            passed=False,
            score=0.0,
            checks_passed=(),
            checks_failed=result.checks_failed,
            message="Improvement: 0.00%",
        ),
    )


def test_advance_gate_passes_but_transition_illegal() -> None:
    # G0 passes for any seeded state, but TRAINING -> GERMINATED is not a legal move.
    state = to_training(fresh())
    new, result, events = advance(state, Gates(), SeedStage.GERMINATED)
    assert new is state
    assert result == GateResult(gate=GateLevel.G0, passed=False, checks_failed=("transition_failed",))
    assert kinds(events) == ["GateEvaluated"] and events[0].passed is True


@pytest.mark.parametrize("target", [S.PRUNED, S.EMBARGOED, S.RESETTING])
def test_advance_to_failure_stage_raises(target: SeedStage) -> None:
    with pytest.raises(IllegalTransitionError, match="cannot target failure stage"):
        advance(fresh(), Gates(), target)
    with pytest.raises(ValueError):
        advance(fresh(), Gates(), target)


@pytest.mark.parametrize("target", [S.DORMANT, S.UNKNOWN])
def test_advance_to_ungated_stage_raises(target: SeedStage) -> None:
    with pytest.raises(IllegalTransitionError, match="no gate is defined"):
        advance(fresh(), Gates(), target)


@pytest.mark.parametrize("target", [None, S.TRAINING, S.FOSSILIZED, S.PRUNED, S.DORMANT])
def test_advance_without_seed_fails_whatever_the_target(target: SeedStage | None) -> None:
    pruned, _ = prune(fresh())
    states = [pruned]
    for _ in range(7):
        pruned, _ = step_epoch(pruned, Gates())
        states.append(pruned)
    assert [s.stage for s in states] == [S.PRUNED, S.EMBARGOED] + [S.EMBARGOED] * 4 + [S.RESETTING, S.DORMANT]
    for state in states:
        new, result, events = advance(state, Gates(), target)
        assert new is state and events == ()
        assert result == GateResult(gate=GateLevel.G0, passed=False, checks_failed=("no_active_seed",))


def test_advance_from_fossilized_has_no_valid_transition() -> None:
    state = dataclasses.replace(fresh(), stage=S.FOSSILIZED)
    new, result, events = advance(state, Gates())
    assert new is state and events == ()
    assert result == GateResult(gate=GateLevel.G0, passed=False, checks_failed=("no_valid_transition",))


def test_enter_training_isolates() -> None:
    state, _, events = advance(fresh(), Gates())
    assert state.isolate_gradients is True
    assert stage_moves(events) == [("GERMINATED", "TRAINING")]
    assert state.previous_stage == S.GERMINATED and state.previous_epochs_in_stage == 0


@pytest.mark.parametrize("topology,isolated", [("cnn", True), ("transformer", False)])
def test_enter_blending_isolation_follows_topology(topology: str, isolated: bool) -> None:
    assert to_blending(fresh(topology=topology)).isolate_gradients is isolated


@pytest.mark.parametrize(
    "blend,algorithm,curve",
    [
        ("linear", AlphaAlgorithm.ADD, AlphaCurve.LINEAR),
        ("sigmoid", AlphaAlgorithm.MULTIPLY, AlphaCurve.SIGMOID),
        ("gated", AlphaAlgorithm.GATE, AlphaCurve.LINEAR),
    ],
)
def test_enter_blending_starts_controller_from_germination_settings(
    blend: str, algorithm: AlphaAlgorithm, curve: AlphaCurve
) -> None:
    state = to_blending(fresh(blend=blend, algorithm=algorithm, tempo=3, alpha_target=0.75))
    assert state.alpha_controller == AlphaController(
        alpha=0.0,
        alpha_start=0.0,
        alpha_target=0.75,
        alpha_mode=AlphaMode.UP,
        alpha_curve=curve,
        alpha_steepness=12.0,
        alpha_steps_total=3,
        alpha_steps_done=0,
    )
    assert state.alpha == 0.0


def test_enter_blending_snapshots_accuracy() -> None:
    state = to_training(fresh())
    state = record_accuracy(record_accuracy(state, 40.0), 42.5)
    state, _, _ = advance(state, Gates(permissive=True, min_blending_epochs=0), S.BLENDING)
    m = state.metrics
    assert m.blending_started and m.accuracy_at_blending_start == 42.5
    assert m.accuracy_at_stage_start == 42.5 and m.epochs_in_current_stage == 0
    assert state.previous_epochs_in_stage == 2 and state.stage_entered_epoch == 2
    assert m.blending_delta == 0.0
    assert record_accuracy(state, 44.0).metrics.blending_delta == 1.5


def test_tempo_zero_snaps_controller_on_entry_and_state_on_next_epoch() -> None:
    state = to_blending(fresh(tempo=0))
    assert state.alpha_controller.alpha == 1.0 and state.alpha_controller.alpha_mode == AlphaMode.HOLD
    assert state.alpha == 0.0  # esper-lite syncs the scalar alpha on the next step_epoch
    state, events = step_epoch(state, Gates(permissive=True), auto_forward=G3)
    assert state.alpha == 1.0 and state.stage == S.HOLDING
    assert kinds(events) == ["GateEvaluated", "StageChanged"]


def test_enter_holding_snaps_alpha_to_one() -> None:
    state = to_holding(fresh(blend="linear", tempo=2))
    assert state.alpha == 1.0 and state.metrics.current_alpha == 1.0
    assert state.alpha_controller == AlphaController(
        alpha=1.0,
        alpha_start=1.0,
        alpha_target=1.0,
        alpha_mode=AlphaMode.HOLD,
        alpha_curve=AlphaCurve.LINEAR,
        alpha_steps_total=2,
        alpha_steps_done=2,
    )


def test_fossilize_events() -> None:
    state = record_contribution(to_holding(fresh()), 3.0)
    new, result, events = advance(state, Gates())
    assert new.stage == S.FOSSILIZED and result.passed
    assert kinds(events) == ["GateEvaluated", "StageChanged", "SeedFossilized"]
    assert events[2] == SeedFossilized(
        slot_id="r0c0",
        seed_id="r0c0-norm",
        blueprint_id="norm",
        epoch=0,
        improvement=0.0,
        counterfactual=3.0,
        params_added=1_000,
        alpha=1.0,
        epochs_total=0,
    )


# ============================================================================ prune


@pytest.mark.parametrize("stage_fn", [lambda s: s, to_training, to_blending, to_holding])
def test_prune_from_every_seeded_stage(stage_fn: Any) -> None:
    state = stage_fn(fresh())
    new, events = prune(state, "underperforming", initiator="tamiyo")
    assert new.stage == S.PRUNED and new.previous_stage == state.stage
    assert new.alpha == 0.0 and new.metrics.current_alpha == 0.0
    c = new.alpha_controller
    assert (c.alpha, c.alpha_start, c.alpha_target, c.alpha_steps_total, c.alpha_steps_done, c.alpha_mode) == (
        0.0, 0.0, 0.0, 0, 0, AlphaMode.HOLD,
    )
    assert new.isolate_gradients is False and not has_seed(new) and not trainable(new)
    assert stage_moves(events) == [(state.stage.name, "PRUNED")]
    assert events[0].alpha == state.alpha
    assert events[1] == SeedPruned(
        slot_id="r0c0",
        seed_id="r0c0-norm",
        blueprint_id="norm",
        epoch=0,
        reason="underperforming",
        initiator="tamiyo",
        auto_pruned=False,
        improvement=0.0,
        counterfactual=None,
        epochs_total=0,
    )


def test_prune_auto_reason_flags_auto_prune() -> None:
    new, events = prune(to_training(fresh()), "governor_nan", initiator="governor")
    assert new.metrics.auto_pruned and new.metrics.auto_prune_reason == "governor_nan"
    assert events[1].auto_pruned is True


def test_prune_refused_for_fossilized_and_seedless() -> None:
    fossil = dataclasses.replace(to_holding(fresh()), stage=S.FOSSILIZED)
    new, events = prune(fossil)
    assert new is fossil and events == ()
    pruned, _ = prune(fresh())
    again, events = prune(pruned, "twice")
    assert again is pruned and events == ()


# ============================================================================ schedule_prune


def test_schedule_prune_from_holding_reenters_blending_and_ramps_down() -> None:
    state = to_holding(fresh())
    new, events = schedule_prune(state, steps=4, curve=AlphaCurve.COSINE, reason="weak", initiator="policy")
    assert new.stage == S.BLENDING and stage_moves(events) == [("HOLDING", "BLENDING")]
    c = new.alpha_controller
    assert (c.alpha_mode, c.alpha_start, c.alpha_target, c.alpha_curve, c.alpha_steps_total) == (
        AlphaMode.DOWN, 1.0, 0.0, AlphaCurve.COSINE, 4,
    )
    assert (new.pending_prune_reason, new.pending_prune_initiator) == ("weak", "policy")
    assert trainable(state) and not trainable(new)


@pytest.mark.parametrize("steps", [0, -2])
def test_schedule_prune_without_steps_prunes_now(steps: int) -> None:
    new, events = schedule_prune(to_holding(fresh()), steps=steps, reason="now")
    assert new.stage == S.PRUNED and kinds(events) == ["StageChanged", "SeedPruned"]
    assert events[1].reason == "now"


def test_schedule_prune_at_alpha_zero_prunes_now() -> None:
    new, events = schedule_prune(to_training(fresh()), steps=5)
    assert new.stage == S.PRUNED and kinds(events) == ["StageChanged", "SeedPruned"]


def test_schedule_prune_refusals() -> None:
    blending = to_blending(fresh())
    for _ in range(2):
        blending, _ = step_epoch(blending, Gates())
    assert blending.alpha_controller.alpha_mode == AlphaMode.UP
    new, events = schedule_prune(blending, steps=3)
    assert new is blending and events == ()
    fossil = dataclasses.replace(to_holding(fresh()), stage=S.FOSSILIZED)
    assert schedule_prune(fossil, steps=3) == (fossil, ())
    assert schedule_prune(fossil, steps=0)[0] is fossil


def test_schedule_prune_validation() -> None:
    with pytest.raises(ValueError, match="steepness must be a finite number"):
        schedule_prune(to_holding(fresh()), steps=3, steepness=float("nan"))
    with pytest.raises(TypeError, match="steps must be an int"):
        schedule_prune(to_holding(fresh()), steps=2.0)  # type: ignore[arg-type]


# ============================================================================ set_alpha_target


def test_set_alpha_target_partial_from_holding() -> None:
    state = to_holding(fresh())
    new, events = set_alpha_target(state, alpha_target=0.5, steps=2, curve=AlphaCurve.LINEAR)
    assert new.stage == S.BLENDING and stage_moves(events) == [("HOLDING", "BLENDING")]
    assert new.alpha_controller.alpha_mode == AlphaMode.DOWN and not trainable(new)
    new, _ = step_epoch(new, Gates(), auto_forward=G3)
    assert new.alpha == 0.75 and new.alpha_controller.alpha_mode == AlphaMode.DOWN
    new, events = step_epoch(new, Gates(permissive=True), auto_forward=G3)
    assert new.alpha == 0.5 and new.alpha_controller.alpha_mode == AlphaMode.HOLD and trainable(new)
    # G3 requires a full target: the auto-forward is evaluated and fails.
    assert new.stage == S.BLENDING and kinds(events) == ["GateEvaluated"]
    assert events[0].checks_failed == ("alpha_target_not_full_0.50",)
    # Back up to 1 from BLENDING: stays in BLENDING, ramps UP.
    up, events = set_alpha_target(new, alpha_target=1.0, steps=1)
    assert up.stage == S.BLENDING and events == () and up.alpha_controller.alpha_mode == AlphaMode.UP


def test_set_alpha_target_full_from_holding_stays_holding() -> None:
    state = to_holding(fresh())
    new, events = set_alpha_target(state, alpha_target=1.0, steps=3)
    assert new.stage == S.HOLDING and events == () and new.alpha_controller.alpha_mode == AlphaMode.HOLD


def test_set_alpha_target_clamps_above_one() -> None:
    state, _ = set_alpha_target(to_holding(fresh()), alpha_target=0.5, steps=0)
    state, _ = set_alpha_target(state, alpha_target=3.0, steps=2)
    assert state.alpha_controller.alpha_target == 1.0


@pytest.mark.parametrize("target", [0.0, -0.5])
def test_set_alpha_target_refuses_non_positive(target: float) -> None:
    state = to_holding(fresh())
    assert set_alpha_target(state, alpha_target=target, steps=2)[0] is state


def test_set_alpha_target_refusals() -> None:
    for state in (fresh(), to_training(fresh()), dataclasses.replace(to_holding(fresh()), stage=S.FOSSILIZED)):
        new, events = set_alpha_target(state, alpha_target=0.5, steps=2)
        assert new is state and events == ()
    ramping = to_blending(fresh())
    ramping, _ = step_epoch(ramping, Gates())
    assert set_alpha_target(ramping, alpha_target=0.5, steps=2)[0] is ramping
    with pytest.raises(ValueError, match="not NaN"):
        set_alpha_target(ramping, alpha_target=float("nan"), steps=2)


# ============================================================================ step_epoch


def test_step_epoch_auto_forward_g1() -> None:
    state = fresh()
    assert step_epoch(state, Gates()) == (state, ())
    new, events = step_epoch(state, Gates(), auto_forward={GateLevel.G1})
    assert new.stage == S.TRAINING and kinds(events) == ["GateEvaluated", "StageChanged"]


def test_step_epoch_auto_forward_g2_waits_for_min_epochs() -> None:
    gates = Gates(permissive=True, min_blending_epochs=3)
    state = to_training(fresh())
    af = {GateLevel.G2}
    for _ in range(2):
        state = record_accuracy(state, 50.0)
        state, events = step_epoch(state, gates, auto_forward=af)
        assert state.stage == S.TRAINING and events == ()  # not even evaluated
    state = record_accuracy(state, 50.0)
    state, events = step_epoch(state, gates, auto_forward=af)
    assert state.stage == S.BLENDING and kinds(events) == ["GateEvaluated", "StageChanged"]


def test_step_epoch_rejects_bad_auto_forward() -> None:
    with pytest.raises(ValueError, match="auto_forward"):
        step_epoch(fresh(), Gates(), auto_forward={4})


def test_step_epoch_holding_and_fossilized_do_nothing() -> None:
    holding = to_holding(fresh())
    assert step_epoch(holding, Gates(), auto_forward=set(GateLevel)) == (holding, ())
    fossil = dataclasses.replace(holding, stage=S.FOSSILIZED)
    assert step_epoch(fossil, Gates(), auto_forward=set(GateLevel)) == (fossil, ())


def test_cooldown_dwell_follows_gates() -> None:
    gates = Gates(embargo_epochs=2, resetting_epochs=3)
    state, _ = prune(to_training(fresh()))
    stages = []
    while state.stage != S.DORMANT:
        state, _ = step_epoch(state, gates)
        stages.append(state.stage.name)
    assert stages == ["EMBARGOED", "EMBARGOED", "RESETTING", "RESETTING", "RESETTING", "DORMANT"]


# ============================================================================ measurements


def test_record_accuracy() -> None:
    state = to_training(fresh())
    state = record_accuracy(state, 50.0)
    m = state.metrics
    assert (m.initial_val_accuracy, m.accuracy_at_stage_start, m.current_val_accuracy, m.best_val_accuracy) == (
        50.0, 50.0, 50.0, 50.0,
    )
    assert (m.epochs_total, m.epochs_in_current_stage) == (1, 1)
    state = record_accuracy(state, torch.tensor(47.5))
    m = state.metrics
    assert (m.initial_val_accuracy, m.current_val_accuracy, m.best_val_accuracy) == (50.0, 47.5, 50.0)
    assert m.total_improvement == -2.5 and m.improvement_since_stage_start == -2.5
    assert m.total_improvement_normalized == -0.25
    assert (m.epochs_total, m.epochs_in_current_stage) == (2, 2)
    with pytest.raises(ValueError, match="finite"):
        record_accuracy(state, float("inf"))
    with pytest.raises(TypeError):
        record_accuracy(state, "50")  # type: ignore[arg-type]


def test_record_accuracy_first_call_sets_baseline_in_any_stage() -> None:
    state = record_accuracy(fresh(), 30.0)  # GERMINATED counts too, as in esper-lite
    assert state.metrics.initial_val_accuracy == 30.0 and state.metrics.epochs_in_current_stage == 1


def test_measurements_are_noops_without_seed() -> None:
    pruned, _ = prune(fresh())
    assert record_accuracy(pruned, 50.0) is pruned
    assert record_contribution(pruned, 1.0) is pruned
    assert record_gradients(pruned, host_grad_norm=1.0, seed_grad_norm=1.0) is pruned


def test_record_contribution_velocity() -> None:
    state = record_contribution(fresh(), 0.5)
    assert state.metrics.counterfactual_contribution == 0.5 and state.metrics.contribution_velocity == 0.0
    state = record_contribution(state, 1.5)
    assert state.metrics.prev_contribution == 1.5
    assert state.metrics.contribution_velocity == pytest.approx(0.3)
    state = record_contribution(state, 1.0)
    assert state.metrics.contribution_velocity == pytest.approx(0.7 * 0.3 + 0.3 * -0.5)


def test_record_gradients_ratio_and_ema() -> None:
    state = fresh()  # 1_000 seed params, 100_000 host params: normalisation sqrt(100) = 10
    state = record_gradients(state, host_grad_norm=2.0, seed_grad_norm=0.05)
    assert state.metrics.seed_gradient_norm_ratio == pytest.approx(0.25)
    assert state.metrics.gradient_norm_avg == pytest.approx(0.005)
    state = record_gradients(state, host_grad_norm=torch.tensor(2.0), seed_grad_norm=torch.tensor(0.05))
    assert state.metrics.gradient_norm_avg == pytest.approx(0.05 * (1 - 0.9**2))
    assert record_gradients(state, host_grad_norm=0.1, seed_grad_norm=5.0).metrics.seed_gradient_norm_ratio == 10.0
    assert record_gradients(state, host_grad_norm=1e-9, seed_grad_norm=5.0).metrics.seed_gradient_norm_ratio == 0.0


def test_record_gradients_telemetry_flags() -> None:
    state = record_gradients(fresh(), host_grad_norm=1.0, seed_grad_norm=1.0, gradient_health=0.4, has_exploding=True)
    assert (state.gradient_health, state.has_exploding, state.has_vanishing) == (0.4, True, False)
    state = record_gradients(state, host_grad_norm=1.0, seed_grad_norm=1.0, has_vanishing=True)
    assert (state.gradient_health, state.has_exploding, state.has_vanishing) == (0.4, True, True)
    with pytest.raises(ValueError, match="has_exploding=True"):
        record_gradients(state, host_grad_norm=float("nan"), seed_grad_norm=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        record_gradients(state, host_grad_norm=1.0, seed_grad_norm=-1.0)


@pytest.mark.parametrize(
    "host,seed,hp,sp,expected",
    [
        (1.0, 0.5, 0, 0, 0.5),
        (1.0, 0.5, 400, 100, 1.0),
        (4.0, 1.0, 100, 0, 0.25),
        (0.0, 1.0, 1, 1, 0.0),
        (1.0, 20.0, 0, 0, 10.0),
    ],
)
def test_gradient_ratio(host: float, seed: float, hp: int, sp: int, expected: float) -> None:
    assert gradient_ratio(host, seed, host_params=hp, seed_params=sp) == expected


def test_gradient_norms() -> None:
    grads = {
        "host": {"a": torch.tensor([3.0, 0.0]), "b": {"c": torch.tensor([[4.0]])}, "none": None},
        "seed": {"w": torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64)},
        "empty": {},
    }
    snapshot = copy.deepcopy(grads)
    norms = gradient_norms(grads)
    assert set(norms) == {"host", "seed", "empty"}
    assert all(isinstance(v, torch.Tensor) and v.ndim == 0 for v in norms.values())
    assert norms["host"].item() == pytest.approx(5.0) and norms["host"].dtype == torch.float32
    assert norms["seed"].item() == pytest.approx(3.0) and norms["seed"].dtype == torch.float64
    assert norms["empty"].item() == 0.0
    assert torch.equal(grads["host"]["a"], snapshot["host"]["a"])
    state = record_gradients(fresh(), host_grad_norm=norms["host"], seed_grad_norm=norms["seed"])
    assert state.metrics.seed_gradient_norm_ratio == pytest.approx(3.0 / 5.0 * 10.0)
    with pytest.raises(TypeError, match="mapping"):
        gradient_norms([torch.ones(2)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tensors and None"):
        global_norm({"x": 1.0})


def test_global_norm_bfloat16_accumulates_in_float32() -> None:
    norm = global_norm([torch.full((1000,), 0.1, dtype=torch.bfloat16)])
    assert norm.dtype == torch.float32 and norm.item() == pytest.approx((1000 * 0.1**2) ** 0.5, rel=1e-2)


# ============================================================================ trainable / has_seed


def test_trainable_and_has_seed() -> None:
    assert trainable(fresh()) and has_seed(fresh())
    assert trainable(to_holding(fresh()))
    down, _ = schedule_prune(to_holding(fresh()), steps=3)
    assert has_seed(down) and not trainable(down)
    pruned, _ = prune(fresh())
    assert not has_seed(pruned) and not trainable(pruned)


# ============================================================================ pytree / purity


def test_state_is_frozen_pytree_with_python_scalars() -> None:
    state = record_gradients(to_holding(fresh()), host_grad_norm=1.0, seed_grad_norm=0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.alpha = 0.5  # type: ignore[misc]
    leaves, spec = optree.tree_flatten(state, namespace="esper_func")
    assert all(isinstance(x, (int, float, bool)) for x in leaves)
    assert optree.tree_unflatten(spec, leaves) == state
    tleaves, tspec = torch_pytree.tree_flatten(state)
    assert torch_pytree.tree_unflatten(tleaves, tspec) == state
    doubled = optree.tree_map(lambda x: x, state, namespace="esper_func")
    assert doubled == state
    hash(state)


def test_stage_history_is_bounded() -> None:
    state = to_holding(fresh())
    for _ in range(60):
        state, _ = set_alpha_target(state, alpha_target=0.5, steps=0)
        state, _ = set_alpha_target(state, alpha_target=1.0, steps=0)
        state, _, _ = advance(state, Gates(permissive=True), S.HOLDING)
    assert isinstance(state.stage_history, tuple) and len(state.stage_history) == 100
    assert state.stage_history[-1] == (S.HOLDING, 0)


def test_operations_do_not_mutate_inputs() -> None:
    gates = Gates(permissive=True, min_blending_epochs=0)
    state = record_accuracy(to_holding(fresh()), 50.0)
    snapshot = copy.deepcopy(state)
    as_dict = state_to_dict(state)
    prune(state, "x")
    schedule_prune(state, steps=3)
    set_alpha_target(state, alpha_target=0.5, steps=3)
    advance(state, gates)
    step_epoch(state, gates, auto_forward=set(GateLevel))
    record_accuracy(state, 1.0)
    record_contribution(state, 1.0)
    record_gradients(state, host_grad_norm=1.0, seed_grad_norm=1.0, gradient_health=0.1, has_exploding=True)
    state_to_dict(state)
    assert state == snapshot and state_to_dict(state) == as_dict


# ============================================================================ serialization


def test_state_dict_roundtrip_through_json() -> None:
    state = record_contribution(record_gradients(to_holding(fresh()), host_grad_norm=1.0, seed_grad_norm=0.2), 1.25)
    state, _ = schedule_prune(state, steps=3, reason="r", initiator="i")
    data = state_to_dict(state)
    assert data["schema"] == "esper_func.SeedState" and data["schema_version"] == 1
    text = json.dumps(data, allow_nan=False)
    back = state_from_dict(json.loads(text))
    assert back == state
    assert type(back.stage) is SeedStage and type(back.alpha_controller.alpha_mode) is AlphaMode
    assert back.stage_history == state.stage_history


def test_state_from_dict_missing_field_names_it() -> None:
    data = state_to_dict(fresh())
    del data["metrics"]["epochs_total"]
    with pytest.raises(CheckpointError, match=r"'metrics\.epochs_total' is missing"):
        state_from_dict(data)
    data = state_to_dict(fresh())
    del data["alpha"]
    with pytest.raises(CheckpointError, match="'alpha' is missing"):
        state_from_dict(data)


@pytest.mark.parametrize(
    "path,value,match",
    [
        (("alpha",), "0.5", "'alpha': expected a number"),
        (("stage",), 5, "'stage': 5 is not a SeedStage"),
        (("stage",), True, "'stage': expected an integer"),
        (("is_healthy",), 1, "'is_healthy': expected true or false"),
        (("topology",), "mlp", "'topology': 'mlp' is not one of"),
        (("metrics", "epochs_total"), 1.0, "'metrics.epochs_total': expected an integer"),
        (("alpha_controller", "alpha_mode"), 7, "'alpha_controller.alpha_mode': 7 is not a AlphaMode"),
        (("stage_history",), [[2]], r"'stage_history\[0\]': expected a \[stage, epoch\] pair"),
        (("metrics",), [], "'metrics': expected an object"),
    ],
)
def test_state_from_dict_wrong_type_names_field(path: tuple[str, ...], value: Any, match: str) -> None:
    data = state_to_dict(fresh())
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(CheckpointError, match=match):
        state_from_dict(data)


def test_state_from_dict_version_and_schema() -> None:
    data = state_to_dict(fresh())
    with pytest.raises(CheckpointError, match="schema_version 2 is not supported"):
        state_from_dict({**data, "schema_version": 2})
    with pytest.raises(CheckpointError, match="'schema_version' is missing"):
        state_from_dict({k: v for k, v in data.items() if k != "schema_version"})
    with pytest.raises(CheckpointError, match="not a seed state"):
        state_from_dict({**data, "schema": "other"})
    with pytest.raises(CheckpointError, match="unknown field"):
        state_from_dict({**data, "surprise": 1})
    with pytest.raises(CheckpointError, match="must be a dict"):
        state_from_dict([])  # type: ignore[arg-type]


def esper_lite_dict(**overrides: Any) -> dict[str, Any]:
    """A dict in esper-lite's SeedState.to_dict() layout (a BLENDING seed mid-ramp)."""
    data: dict[str, Any] = {
        "seed_id": "r0c0-norm",
        "blueprint_id": "norm",
        "slot_id": "r0c0",
        "stage": 4,
        "previous_stage": 3,
        "stage_entered_at": "2025-01-01T00:00:00+00:00",
        "alpha": 0.23014069577164564,
        "stage_history": [
            (2, "2025-01-01T00:00:00+00:00"),
            (3, "2025-01-01T00:01:00+00:00"),
            (4, "2025-01-01T00:02:00+00:00"),
        ],
        "metrics": {
            "_schema_version": 2,
            "epochs_total": 14,
            "epochs_in_current_stage": 2,
            "initial_val_accuracy": 40.0,
            "current_val_accuracy": 55.0,
            "best_val_accuracy": 56.0,
            "accuracy_at_stage_start": 54.0,
            "accuracy_at_blending_start": 54.0,
            "gradient_norm_avg": 0.01,
            "current_alpha": 0.23014069577164564,
            "alpha_ramp_step": 2,
            "counterfactual_contribution": None,
            "_prev_contribution": None,
            "contribution_velocity": 0.0,
            "_blending_started": True,
            "seed_gradient_norm_ratio": 0.4,
            "host_param_count": 100_000,
            "seed_param_count": 1_000,
            "interaction_sum": 0.0,
            "boost_received": 0.0,
            "upstream_alpha_sum": 0.0,
            "downstream_alpha_sum": 0.0,
        },
        "telemetry": {"gradient_health": 0.8, "has_vanishing": False, "has_exploding": True},
        "alpha_controller": {
            "alpha": 0.23014069577164564,
            "alpha_start": 0.0,
            "alpha_target": 1.0,
            "alpha_mode": 1,
            "alpha_curve": 3,
            "alpha_steepness": 12.0,
            "alpha_steps_total": 5,
            "alpha_steps_done": 2,
        },
        "alpha_algorithm": 1,
        "blend_tempo_epochs": 5,
        "is_healthy": True,
        "is_paused": False,
        "previous_epochs_in_stage": 12,
    }
    data.update(overrides)
    return data


def test_seed_state_from_esper_lite_continues_like_ours() -> None:
    extra = {
        "isolate_gradients": True,
        "blend_algorithm_id": "sigmoid",
        "blend_tempo_epochs": 5,
        "blend_alpha_target": 1.0,
        "resolved_topology": "cnn",
        "_extra_state_version": 1,
        "seed_state": None,
        "alpha_schedule_config": None,
    }
    state = seed_state_from_esper_lite(esper_lite_dict(), extra=extra)
    assert state.stage == S.BLENDING and state.previous_stage == S.TRAINING
    assert state.alpha == 0.23014069577164564 and state.alpha_controller.alpha_steps_done == 2
    assert state.stage_entered_epoch == 12
    assert state.stage_history == ((S.GERMINATED, -1), (S.TRAINING, -1), (S.BLENDING, 12))
    assert state.metrics.blending_started and state.metrics.seed_gradient_norm_ratio == 0.4
    assert (state.gradient_health, state.has_exploding) == (0.8, True)
    assert state.isolate_gradients and state.topology == "cnn" and state.blend_algorithm_id == "sigmoid"
    # The ramp continues exactly where esper-lite left it.
    alphas = []
    for _ in range(3):
        state, _ = step_epoch(state, Gates())
        alphas.append(state.alpha)
    assert alphas == pytest.approx(SIGMOID_5[2:], abs=1e-15)
    assert state_from_dict(state_to_dict(state)) == state


def test_seed_state_from_esper_lite_defaults_without_extra() -> None:
    state = seed_state_from_esper_lite(
        esper_lite_dict(alpha_algorithm=3, telemetry=None, metrics=None), extra=None
    )
    assert state.blend_algorithm_id == "gated" and state.alpha_algorithm == AlphaAlgorithm.GATE
    assert state.isolate_gradients is True  # BLENDING on a CNN host
    assert state.metrics == SeedMetrics() and state.gradient_health == 1.0
    older = esper_lite_dict()
    del older["alpha_controller"]["alpha_steepness"]
    assert seed_state_from_esper_lite(older).alpha_controller.alpha_steepness == 12.0


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda d: d.pop("stage"), "'stage' is missing"),
        (lambda d: d["metrics"].pop("epochs_total"), "'metrics.epochs_total' is missing"),
        (lambda d: d["alpha_controller"].pop("alpha_mode"), "'alpha_controller.alpha_mode' is missing"),
        (lambda d: d.update(alpha="x"), "'alpha': expected a number"),
        (lambda d: d["metrics"].update(_schema_version=1), "SeedMetrics schema version 1"),
        (lambda d: d.update(stage=5), "5 is not a SeedStage"),
    ],
)
def test_seed_state_from_esper_lite_errors(mutate: Any, match: str) -> None:
    data = esper_lite_dict()
    mutate(data)
    with pytest.raises(CheckpointError, match=match):
        seed_state_from_esper_lite(data)


# ============================================================================ scenarios


def test_scenario_germinate_to_fossilized_strict() -> None:
    """Default strict gates; the training loop records, then calls step_epoch with G3 auto-forward."""
    gates = Gates()
    state = germinate("r0c0", "norm", seed_params=1_000, host_params=100_000)

    state, result, events = advance(state, gates)
    assert (state.stage, result.gate, result.passed) == (S.TRAINING, GateLevel.G1, True)
    assert result.checks_passed == ("germinated",)
    assert stage_moves(events) == [("GERMINATED", "TRAINING")] and state.isolate_gradients

    # Ten TRAINING epochs: accuracy 60.00 -> 60.75, ratio (0.05/2) * sqrt(100) = 0.25.
    accuracies = [60.0, 60.1, 60.2, 60.25, 60.3, 60.4, 60.5, 60.6, 60.7, 60.75]
    for i, acc in enumerate(accuracies, start=1):
        state = record_accuracy(state, acc)
        state = record_gradients(state, host_grad_norm=2.0, seed_grad_norm=0.05)
        state, events = step_epoch(state, gates)  # no auto-forward: nothing happens
        assert events == () and state.stage == S.TRAINING
        if i == 9:
            same, result, _ = advance(state, gates)
            assert same is state and result.checks_failed == ("seed_not_ready",)
            assert result.checks_passed == ("global_improvement_0.70%", "seed_gradient_active_0.25")
    assert state.metrics.gradient_norm_avg == pytest.approx(0.05 * (1 - 0.9**10))

    state, result, events = advance(state, gates)
    assert result.passed
    assert result.checks_passed == ("global_improvement_0.75%", "seed_ready", "seed_gradient_active_0.25")
    assert result.message == "Improvement: 0.75%" and result.score == pytest.approx(0.15)
    assert state.stage == S.BLENDING and state.isolate_gradients
    assert state.metrics.accuracy_at_blending_start == 60.75
    assert (state.alpha_controller.alpha_mode, state.alpha_controller.alpha_curve) == (AlphaMode.UP, AlphaCurve.SIGMOID)

    # BLENDING: alpha follows the closed-form sigmoid (steepness 12, 5 steps); G3 needs 10 epochs.
    expected_alpha = SIGMOID_5 + [1.0] * 5
    expected_mode = [AlphaMode.UP] * 4 + [AlphaMode.HOLD] * 6
    for epoch in range(10):
        state = record_accuracy(state, 61.0)
        state, events = step_epoch(state, gates, auto_forward=G3)
        assert state.alpha == pytest.approx(expected_alpha[epoch], abs=1e-15)
        assert state.alpha_controller.alpha_mode == expected_mode[epoch]
        assert state.metrics.current_alpha == state.alpha
        assert state.metrics.alpha_ramp_step == min(epoch + 1, 5)
        if epoch < 9:
            assert state.stage == S.BLENDING and events == ()
    assert state.stage == S.HOLDING
    gate_event, stage_event = events
    assert gate_event.gate == GateLevel.G3 and gate_event.checks_passed == (
        "alpha_target_full", "alpha_target_reached", "blending_complete",
    )
    assert (stage_event.from_stage, stage_event.to_stage, stage_event.epochs_in_stage) == (S.BLENDING, S.HOLDING, 10)
    assert stage_event.accuracy_delta == 1.0 and stage_event.alpha == 1.0
    assert state.alpha_controller.alpha_steps_done == 5 and state.alpha_controller.alpha_start == 1.0

    # HOLDING -> FOSSILIZED needs a counterfactual of at least 1.0 %.
    same, result, _ = advance(state, gates)
    assert same is state and result.checks_failed == ("counterfactual_not_available",)
    state = record_contribution(state, 0.5)
    same, result, _ = advance(state, gates)
    assert result.checks_failed == ("insufficient_contribution_0.50%_below_1.0%",)
    state = record_contribution(state, 1.5)
    state, result, events = advance(state, gates)
    assert result.passed and result.checks_passed == (
        "counterfactual_available_1.50%", "healthy", "sufficient_contribution_1.50%",
    )
    assert state.stage == S.FOSSILIZED and kinds(events) == ["GateEvaluated", "StageChanged", "SeedFossilized"]
    assert events[2].improvement == 1.0 and events[2].epochs_total == 20 and events[2].counterfactual == 1.5
    assert [s for s, _ in state.stage_history] == [S.GERMINATED, S.TRAINING, S.BLENDING, S.HOLDING, S.FOSSILIZED]
    assert [e for _, e in state.stage_history] == [0, 0, 10, 20, 20]

    # FOSSILIZED is terminal.
    assert prune(state) == (state, ())
    assert schedule_prune(state, steps=3) == (state, ())
    assert set_alpha_target(state, alpha_target=0.5, steps=2) == (state, ())
    assert advance(state, gates)[1].checks_failed == ("no_valid_transition",)
    assert step_epoch(state, gates, auto_forward=set(GateLevel)) == (state, ())


def test_scenario_scheduled_prune_through_cooldown() -> None:
    """Permissive gates, linear tempo 4, scheduled prune over 2 epochs, default dwell 5 + 1."""
    gates = Gates(permissive=True, min_blending_epochs=2)
    state = germinate("r2c0", "conv_light", blend="linear", tempo=4, seed_params=500)
    state, _, _ = advance(state, gates)
    state = record_accuracy(record_accuracy(state, 50.0), 49.0)  # permissive: no improvement needed
    state, result, _ = advance(state, gates)
    assert result.passed
    assert result.checks_passed == ("trained_2_epochs", "no_exploding_gradients", "gradient_health_1.00")
    assert result.message == "Permissive G2 Safety: PASS" and result.score == 0.0

    alphas = []
    for _ in range(4):
        state, events = step_epoch(state, gates, auto_forward=G3)
        alphas.append(state.alpha)
    assert alphas == [0.25, 0.5, 0.75, 1.0]
    assert state.stage == S.HOLDING and stage_moves(events) == [("BLENDING", "HOLDING")]
    assert events[0].checks_passed == ("alpha_target_full", "alpha_target_reached")

    state, events = schedule_prune(state, steps=2, reason="underperforming", initiator="tamiyo")
    assert state.stage == S.BLENDING and stage_moves(events) == [("HOLDING", "BLENDING")]
    assert state.alpha_controller.alpha_mode == AlphaMode.DOWN and not trainable(state)

    state, events = step_epoch(state, gates, auto_forward=G3)
    assert (state.stage, state.alpha, events) == (S.BLENDING, 0.5, ())
    assert state.alpha_controller.alpha_mode == AlphaMode.DOWN
    epochs_before = state.metrics.epochs_total
    state, events = step_epoch(state, gates, auto_forward=G3)
    assert state.stage == S.PRUNED and state.alpha == 0.0
    assert kinds(events) == ["StageChanged", "SeedPruned"]
    assert events[0].alpha == 0.0 and (events[0].from_stage, events[0].to_stage) == (S.BLENDING, S.PRUNED)
    assert (events[1].reason, events[1].initiator, events[1].auto_pruned) == ("underperforming", "tamiyo", False)
    assert state.pending_prune_reason is None and not trainable(state)

    trace = []
    for _ in range(7):
        state = record_accuracy(state, 99.0)  # ignored: no seed
        state, events = step_epoch(state, gates)
        trace.append((state.stage.name, state.metrics.epochs_in_current_stage, stage_moves(events)))
    assert trace == [
        ("EMBARGOED", 0, [("PRUNED", "EMBARGOED")]),
        ("EMBARGOED", 1, []),
        ("EMBARGOED", 2, []),
        ("EMBARGOED", 3, []),
        ("EMBARGOED", 4, []),
        ("RESETTING", 0, [("EMBARGOED", "RESETTING")]),
        ("DORMANT", 0, [("RESETTING", "DORMANT")]),
    ]
    assert state.metrics.epochs_total == epochs_before + 6
    assert state.alpha == 0.0 and state.alpha_controller.alpha_mode == AlphaMode.HOLD
    assert not has_seed(state) and not trainable(state)
    assert advance(state, gates)[1].checks_failed == ("no_active_seed",)
    assert step_epoch(state, gates) == (state, ())
    # The slot is free: a new seed can be germinated there.
    assert germinate(state.slot_id, "norm").stage == S.GERMINATED
