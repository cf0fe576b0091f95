"""Lifecycle transitions, measurements, codecs and hand-derived scenarios.

Scenario expectations were derived by reading esper-lite's ``SeedSlot``
(``advance_stage``, ``step_epoch``, ``schedule_prune``, ``set_alpha_target``,
``_on_enter_stage``) and ``SeedState.sync_telemetry`` at 2016337e, and are
written as literal numbers. Where esper_func deliberately deviates (alpha
stored once, so a zero-step retarget moves alpha at once; a gated blend of
tempo 0 is refused before anything changes), the tests say so.
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
from hypothesis import given
from hypothesis import strategies as st

import esper_func as ef
from esper_func.errors import (
    CheckpointError,
    IllegalTransitionError,
    InvalidArgumentError,
    InvalidTypeError,
    UnknownTopologyError,
)
from esper_func.lifecycle import (
    AUTO_PRUNE_REASONS,
    SeedMetrics,
    SeedState,
    SeedTelemetry,
    advance,
    germinate,
    germinated_event,
    global_norm,
    gradient_norms,
    gradient_ratio,
    has_gate,
    has_seed,
    prune,
    record_accuracy,
    record_contribution,
    record_gradients,
    schedule_prune,
    seed_state_from_esper_lite,
    seed_state_to_esper_lite,
    set_alpha_target,
    slot_extra_state,
    state_from_dict,
    state_from_slot_extra_state,
    state_to_dict,
    step_epoch,
    sync_telemetry,
    trainable,
)
from esper_func.lifecycle.alpha import AlphaAlgorithm, AlphaController, AlphaCurve, AlphaMode
from esper_func.lifecycle.events import GateEvaluated, SeedFossilized, SeedGerminated, SeedPruned, StageChanged
from esper_func.lifecycle.gates import GateLevel, GateResult, Gates
from esper_func.lifecycle.stages import SeedStage

S = SeedStage
G3 = frozenset({GateLevel.G3})
ALL_LEVELS = frozenset(GateLevel)
PERMISSIVE = Gates(permissive=True, min_blending_epochs=0)
GATED_STAGES = (S.BLENDING, S.HOLDING, S.FOSSILIZED)

SIGMOID_5 = [0.02424426427877362, 0.23014069577164564, 0.7698593042283542, 0.9757557357212262, 1.0]


def kinds(events: tuple[Any, ...]) -> list[str]:
    return [type(e).__name__ for e in events]


def stage_moves(events: tuple[Any, ...]) -> list[tuple[str, str]]:
    return [(e.from_stage.name, e.to_stage.name) for e in events if isinstance(e, StageChanged)]


def fresh(**kwargs: Any) -> SeedState:
    kwargs.setdefault("seed_params", 1_000)
    kwargs.setdefault("host_params", 100_000)
    return germinate("r0c0", "norm", **kwargs)


def measured(state: SeedState, *, health: float = 1.0, exploding: bool = False, epoch: int = 1) -> SeedState:
    """What a training loop does after measuring gradients: esper-lite's ``sync_telemetry``."""
    return sync_telemetry(state, epoch=epoch, gradient_health=health, has_exploding=exploding)


def to_training(state: SeedState) -> SeedState:
    state, result, _ = advance(state, Gates(), SeedStage.TRAINING)
    assert result.passed
    return state


def to_blending(state: SeedState, gates: Gates = PERMISSIVE) -> SeedState:
    state, result, _ = advance(measured(to_training(state)), gates, SeedStage.BLENDING)
    assert result.passed, result
    return state


def to_holding(state: SeedState) -> SeedState:
    """Needs a full alpha target (HOLDING is full amplitude only)."""
    state = to_blending(state, PERMISSIVE)
    for _ in range(state.blend_tempo_epochs + 1):
        state, _ = step_epoch(state, PERMISSIVE, auto_forward=G3)
        if state.stage == S.HOLDING:
            return state
    raise AssertionError(f"no HOLDING after the ramp: {state}")


def to_fossilized(state: SeedState) -> SeedState:
    state, result, _ = advance(record_contribution(to_holding(state), 2.0), Gates(), S.FOSSILIZED)
    assert result.passed and state.stage == S.FOSSILIZED
    return state


def to_pruned(state: SeedState) -> SeedState:
    state, _ = prune(to_training(state), "test")
    assert state.stage == S.PRUNED
    return state


def to_embargoed(state: SeedState) -> SeedState:
    state, _ = step_epoch(to_pruned(state), Gates())
    assert state.stage == S.EMBARGOED
    return state


def to_resetting(state: SeedState) -> SeedState:
    gates = Gates(embargo_epochs=1)
    state, _ = step_epoch(to_embargoed(state), gates)
    assert state.stage == S.RESETTING
    return state


def to_dormant(state: SeedState) -> SeedState:
    state, _ = step_epoch(to_resetting(state), Gates())
    assert state.stage == S.DORMANT
    return state


# Every stage a slot can be in, built through the public functions.
REACH = {
    S.GERMINATED: lambda s: s,
    S.TRAINING: to_training,
    S.BLENDING: to_blending,
    S.HOLDING: to_holding,
    S.FOSSILIZED: to_fossilized,
    S.PRUNED: to_pruned,
    S.EMBARGOED: to_embargoed,
    S.RESETTING: to_resetting,
    S.DORMANT: to_dormant,
}


def reach(stage: SeedStage, **kwargs: Any) -> SeedState:
    state = REACH[stage](fresh(**kwargs))
    assert state.stage == stage
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
    # Unmeasured is not healthy: every gradient field starts as None, never synced.
    assert state.telemetry == SeedTelemetry(
        gradient_norm=None, gradient_health=None, has_vanishing=None, has_exploding=None, epoch=0, max_epochs=25
    )
    assert not state.telemetry.gradient_measured
    assert state.blend_out_frozen is False and trainable(state)
    assert state.gate_total_steps == 0 and not has_gate(state)


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
    # The gate network only exists from BLENDING on.
    assert not has_gate(state) and state.gate_total_steps == 0


@pytest.mark.parametrize("algorithm", [3, "GATE", AlphaAlgorithm.GATE])
def test_germinate_accepts_algorithm_by_value_and_name(algorithm: Any) -> None:
    state = germinate("r0c0", "norm", algorithm=algorithm, blend="gated")
    assert state.alpha_algorithm is AlphaAlgorithm.GATE


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
        ({"alpha_target": 0.0}, InvalidArgumentError, r"alpha_target must be within \(0, 1\] \(None means 1\.0\); got 0\.0"),
        ({"alpha_target": 1.5}, InvalidArgumentError, r"alpha_target must be within \(0, 1\] .*; got 1\.5"),
        ({"alpha_target": -0.1}, InvalidArgumentError, r"alpha_target must be within \(0, 1\]"),
        ({"alpha_target": float("inf")}, InvalidArgumentError, r"alpha_target must be finite"),
        ({"alpha_target": float("nan")}, InvalidArgumentError, r"alpha_target must be a number, not NaN"),
        ({"alpha_target": "1"}, InvalidTypeError, r"alpha_target must be a real number; got str '1'"),
        ({"blend": "gated"}, InvalidArgumentError, r"blend='gated' requires algorithm=AlphaAlgorithm\.GATE \(got ADD\)"),
        ({"algorithm": AlphaAlgorithm.GATE}, InvalidArgumentError, r"GATE requires blend='gated' \(got blend='sigmoid'\)"),
        (
            {"algorithm": AlphaAlgorithm.GATE, "blend": "linear"},
            InvalidArgumentError,
            r"GATE requires blend='gated' \(got blend='linear'\)",
        ),
        (
            {"blend": "cubic"},
            InvalidArgumentError,
            r"^blend must be one of \['linear', 'sigmoid', 'gated'\]; got 'cubic'$",
        ),
        ({"blend": None}, InvalidArgumentError, r"blend must be one of .*; got None"),
        ({"topology": "rnn"}, UnknownTopologyError, r"unknown topology 'rnn'; expected one of \['cnn', 'transformer'\]"),
        ({"tempo": -1}, InvalidArgumentError, r"^tempo must be >= 0; got -1$"),
        ({"tempo": 2.5}, InvalidTypeError, r"^tempo must be an int; got float 2\.5$"),
        ({"tempo": True}, InvalidTypeError, r"^tempo must be an int; got bool True$"),
        ({"seed_params": -3}, InvalidArgumentError, r"^seed_params must be >= 0; got -3$"),
        ({"host_params": -1}, InvalidArgumentError, r"^host_params must be >= 0; got -1$"),
        ({"host_params": 1.0}, InvalidTypeError, r"^host_params must be an int"),
        (
            {"algorithm": 9},
            InvalidArgumentError,
            r"^algorithm must be a AlphaAlgorithm \(ADD=1, MULTIPLY=2, GATE=3\); got 9$",
        ),
        ({"algorithm": "ADDITIVE"}, InvalidArgumentError, r"^algorithm must be a AlphaAlgorithm .*; got 'ADDITIVE'$"),
        ({"seed_id": 7}, InvalidTypeError, r"^seed_id must be a str; got int 7$"),
    ],
)
def test_germinate_validation(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        germinate("r0c0", "norm", **kwargs)


def test_germinate_error_types_are_the_builtin_ones_too() -> None:
    assert issubclass(InvalidArgumentError, ValueError) and issubclass(InvalidTypeError, TypeError)
    assert ef.InvalidArgumentError is InvalidArgumentError and ef.InvalidTypeError is InvalidTypeError
    with pytest.raises(ValueError):
        germinate("r0c0", "norm", topology="mlp")
    with pytest.raises(TypeError):
        germinate(1, "norm")  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match=r"^slot_id must be a str; got int 1$"):
        germinate(1, "norm")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"G0 gate failed: \('blueprint_id_missing',\)"):
        germinate("r0c0", "")


# ============================================================================ the state's shape


def test_alpha_is_stored_once_in_the_controller() -> None:
    names = {f.name for f in dataclasses.fields(SeedState)}
    assert "alpha" not in names and "alpha_controller" in names
    assert "current_alpha" not in {f.name for f in dataclasses.fields(SeedMetrics)}
    assert not hasattr(SeedMetrics(), "current_alpha")
    assert isinstance(SeedState.alpha, property) and SeedState.alpha.fset is None
    state = fresh()
    with pytest.raises(TypeError, match="alpha"):
        SeedState(slot_id="r0c0", seed_id="s", blueprint_id="norm", alpha=0.5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="alpha"):
        dataclasses.replace(state, alpha=0.5)  # type: ignore[call-arg]
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.alpha = 0.5  # type: ignore[misc]
    # The one way to set it: through the controller.
    moved = dataclasses.replace(state, alpha_controller=dataclasses.replace(state.alpha_controller, alpha=0.375))
    assert moved.alpha == 0.375 and moved.alpha_controller.alpha == 0.375


def test_removed_fields_are_gone() -> None:
    names = {f.name for f in dataclasses.fields(SeedState)}
    for gone in ("gradient_health", "has_exploding", "has_vanishing", "isolate_gradients", "stage_entered_epoch"):
        assert gone not in names
    state = fresh()
    for gone in ("gradient_health", "has_exploding", "has_vanishing"):
        assert not hasattr(state, gone)
    for derived in ("isolate_gradients", "stage_entered_epoch"):
        assert isinstance(getattr(SeedState, derived), property)
        with pytest.raises(TypeError, match=derived):
            dataclasses.replace(state, **{derived: 1})


ISOLATION = [
    (S.GERMINATED, "cnn", False),
    (S.GERMINATED, "transformer", False),
    (S.TRAINING, "cnn", True),
    (S.TRAINING, "transformer", True),
    (S.BLENDING, "cnn", True),
    (S.BLENDING, "transformer", False),
    (S.HOLDING, "cnn", True),
    (S.HOLDING, "transformer", False),
    (S.FOSSILIZED, "cnn", True),
    (S.FOSSILIZED, "transformer", False),
    (S.PRUNED, "cnn", False),
    (S.EMBARGOED, "cnn", False),
    (S.RESETTING, "transformer", False),
    (S.DORMANT, "cnn", False),
]


@pytest.mark.parametrize("stage,topology,isolated", ISOLATION)
def test_isolation_is_derived_from_stage_and_topology(stage: SeedStage, topology: str, isolated: bool) -> None:
    state = reach(stage, topology=topology)
    assert state.isolate_gradients is isolated
    assert slot_extra_state(state)["isolate_gradients"] is isolated


def test_stage_entered_epoch_is_derived_from_the_counters() -> None:
    state = to_training(fresh())
    for acc in (40.0, 41.0, 42.0):
        state = record_accuracy(state, acc)
    assert state.stage_entered_epoch == 0 and state.epochs_in_stage == 3
    state, _, _ = advance(measured(state), PERMISSIVE, S.BLENDING)
    assert (state.metrics.epochs_total, state.epochs_in_stage, state.stage_entered_epoch) == (3, 0, 3)
    state = record_accuracy(record_accuracy(state, 43.0), 44.0)
    assert (state.metrics.epochs_total, state.epochs_in_stage, state.stage_entered_epoch) == (5, 2, 3)
    assert state.stage_history[-1] == (S.BLENDING, 3)
    moved = dataclasses.replace(state, metrics=dataclasses.replace(state.metrics, epochs_total=9))
    assert moved.stage_entered_epoch == 7


# ============================================================================ gradient telemetry


def test_sync_telemetry_sets_given_fields_and_stamps_the_epoch() -> None:
    state = to_training(fresh())
    synced = sync_telemetry(state, epoch=3, gradient_health=0.8)
    assert synced.telemetry == SeedTelemetry(gradient_health=0.8, epoch=3)
    synced = sync_telemetry(synced, epoch=4, gradient_norm=2.5, has_vanishing=True, max_epochs=40)
    assert synced.telemetry == SeedTelemetry(
        gradient_norm=2.5, gradient_health=0.8, has_vanishing=True, has_exploding=None, epoch=4, max_epochs=40
    )
    # None leaves a field as stored; the epoch is always stamped (even going back), and so is
    # max_epochs, 25 unless given (esper-lite's sync_telemetry default).
    again = sync_telemetry(synced, epoch=2, has_exploding=False)
    assert again.telemetry == dataclasses.replace(synced.telemetry, has_exploding=False, epoch=2, max_epochs=25)
    assert sync_telemetry(again, epoch=0).telemetry == dataclasses.replace(again.telemetry, epoch=0)
    # Nothing else changes.
    assert dataclasses.replace(again, telemetry=state.telemetry) == state


def test_sync_telemetry_on_a_free_slot_and_in_the_cooldown() -> None:
    dormant = to_dormant(fresh())
    assert sync_telemetry(dormant, epoch=3, gradient_health=0.9) is dormant
    pruned = to_pruned(fresh())
    synced = sync_telemetry(pruned, epoch=3, gradient_health=0.9)
    assert synced.telemetry == SeedTelemetry(gradient_health=0.9, epoch=3)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"epoch": -1}, InvalidArgumentError, r"^epoch must be >= 0; got -1$"),
        ({"epoch": 1.0}, InvalidTypeError, r"^epoch must be an int; got float 1\.0$"),
        ({"epoch": 1, "max_epochs": -2}, InvalidArgumentError, r"^max_epochs must be >= 0; got -2$"),
        ({"epoch": 1, "gradient_health": 1.5}, InvalidArgumentError, r"^gradient_health must be <= 1\.0; got 1\.5$"),
        ({"epoch": 1, "gradient_health": -0.1}, InvalidArgumentError, r"^gradient_health must be >= 0\.0"),
        ({"epoch": 1, "gradient_health": float("nan")}, InvalidArgumentError, "gradient_health must be a number, not NaN"),
        ({"epoch": 1, "gradient_norm": -1.0}, InvalidArgumentError, r"^gradient_norm must be >= 0\.0; got -1\.0$"),
        ({"epoch": 1, "has_exploding": 1}, InvalidTypeError, r"^has_exploding must be True or False; got int 1$"),
        ({"epoch": 1, "has_vanishing": "no"}, InvalidTypeError, r"^has_vanishing must be True or False"),
    ],
)
def test_sync_telemetry_validation(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    state = to_training(fresh())
    with pytest.raises(error, match=match):
        sync_telemetry(state, **kwargs)
    # Arguments are checked even where the call would do nothing.
    with pytest.raises(error, match=match):
        sync_telemetry(to_dormant(fresh()), **kwargs)


def test_record_gradients_sets_telemetry_without_stamping_the_epoch() -> None:
    state = record_gradients(
        to_training(fresh()), host_grad_norm=1.0, seed_grad_norm=1.0, gradient_health=0.4, has_exploding=True
    )
    assert state.telemetry == SeedTelemetry(gradient_health=0.4, has_exploding=True, epoch=0)
    state = record_gradients(state, host_grad_norm=1.0, seed_grad_norm=1.0, has_vanishing=True, gradient_norm=3.0)
    assert state.telemetry == SeedTelemetry(
        gradient_norm=3.0, gradient_health=0.4, has_vanishing=True, has_exploding=True, epoch=0
    )
    state = sync_telemetry(state, epoch=6)
    state = record_gradients(
        state,
        host_grad_norm=1.0,
        seed_grad_norm=1.0,
        has_exploding=torch.tensor(False),
        gradient_health=torch.tensor(0.75, dtype=torch.float64),
    )
    assert state.telemetry == SeedTelemetry(
        gradient_norm=3.0, gradient_health=0.75, has_vanishing=True, has_exploding=False, epoch=6
    )
    assert type(state.telemetry.gradient_health) is float and type(state.telemetry.has_exploding) is bool


def test_record_gradients_validation() -> None:
    state = to_training(fresh())
    with pytest.raises(InvalidArgumentError, match=r"^host_grad_norm must be a number, not NaN$"):
        record_gradients(state, host_grad_norm=float("nan"), seed_grad_norm=1.0)
    with pytest.raises(InvalidArgumentError, match=r"^seed_grad_norm must be >= 0\.0; got -1\.0$"):
        record_gradients(state, host_grad_norm=1.0, seed_grad_norm=-1.0)
    with pytest.raises(InvalidArgumentError, match=r"^host_grad_norm must be finite; got inf$"):
        record_gradients(state, host_grad_norm=float("inf"), seed_grad_norm=1.0)
    with pytest.raises(InvalidArgumentError, match=r"^gradient_health must be <= 1\.0; got 2\.0$"):
        record_gradients(state, host_grad_norm=1.0, seed_grad_norm=1.0, gradient_health=2.0)
    with pytest.raises(InvalidTypeError, match=r"^has_exploding must be True or False; got str 'yes'$"):
        record_gradients(state, host_grad_norm=1.0, seed_grad_norm=1.0, has_exploding="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="one-element tensor"):
        record_gradients(state, host_grad_norm=torch.ones(2), seed_grad_norm=1.0)
    with pytest.raises(InvalidArgumentError, match="one-element tensor"):
        record_gradients(state, host_grad_norm=1.0, seed_grad_norm=1.0, has_vanishing=torch.zeros(2, dtype=torch.bool))


def test_permissive_g2_refuses_unmeasured_gradients() -> None:
    """advance() from TRAINING under permissive gates: unmeasured -> measured -> exploding -> healthy."""
    gates = Gates(permissive=True, min_blending_epochs=0)
    state = to_training(fresh())
    same, result, events = advance(state, gates)
    assert same is state and not result.passed
    assert (result.checks_passed, result.checks_failed) == (("trained_0_epochs",), ("gradient_health_not_measured",))
    assert kinds(events) == ["GateEvaluated"] and events[0].checks_failed == ("gradient_health_not_measured",)
    # A sync without gradient values keeps them unmeasured.
    still = sync_telemetry(state, epoch=5)
    assert advance(still, gates)[1].checks_failed == ("gradient_health_not_measured",)
    exploding = measured(state, health=0.2, exploding=True)
    assert advance(exploding, gates)[1].checks_failed == ("exploding_gradients",)
    assert advance(exploding, gates)[1].checks_passed == ("trained_0_epochs",)
    weak = measured(state, health=0.5)
    assert advance(weak, gates)[1].checks_failed == ("gradient_health_low_0.50_need_0.70",)
    # Measuring through record_gradients alone (no sync, epoch 0) is a measurement too.
    recorded = record_gradients(state, host_grad_norm=1.0, seed_grad_norm=0.5, gradient_health=0.9)
    new, result, _ = advance(recorded, gates)
    assert result.passed and new.stage == S.BLENDING
    assert result.checks_passed == ("trained_0_epochs", "no_exploding_gradients", "gradient_health_0.90")


def test_events_report_gradient_telemetry_only_after_a_sync() -> None:
    # seed 0.3 / host 1.0 with sqrt(100_000 / 1_000) = 10 -> ratio 3.0
    state = record_gradients(
        to_training(fresh()),
        host_grad_norm=1.0,
        seed_grad_norm=0.3,
        gradient_health=0.9,
        has_exploding=True,
        has_vanishing=True,
    )
    assert state.metrics.seed_gradient_norm_ratio == pytest.approx(3.0)
    _, events = prune(state)
    assert (events[0].grad_ratio, events[0].has_vanishing, events[0].has_exploding) == (0.0, False, False)
    # An epoch-0 sync is still "never synced".
    _, events = prune(sync_telemetry(state, epoch=0))
    assert (events[0].grad_ratio, events[0].has_vanishing, events[0].has_exploding) == (0.0, False, False)
    synced = sync_telemetry(state, epoch=2)
    _, events = prune(synced)
    assert events[0].grad_ratio == pytest.approx(3.0)
    assert (events[0].has_vanishing, events[0].has_exploding) == (True, True)
    # Synced, but flags and ratio never measured: reported as 0.0 / False, not None.
    bare = sync_telemetry(to_training(fresh()), epoch=2)
    _, events = prune(bare)
    assert (events[0].grad_ratio, events[0].has_vanishing, events[0].has_exploding) == (0.0, False, False)
    assert type(events[0].has_vanishing) is bool
    # Every StageChanged carries them: here the cooldown transition after the prune.
    pruned, _ = prune(synced)
    _, events = step_epoch(pruned, Gates())
    assert stage_moves(events) == [("PRUNED", "EMBARGOED")]
    assert events[0].grad_ratio == pytest.approx(3.0) and events[0].has_exploding is True


# ============================================================================ advance


def test_advance_default_targets_follow_first_non_failure_successor() -> None:
    state = measured(fresh())
    for stage in [S.TRAINING, S.BLENDING]:
        state, result, _ = advance(state, PERMISSIVE)
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


def test_advance_rejects_bad_arguments() -> None:
    with pytest.raises(IllegalTransitionError, match=r"unknown target stage 5"):
        advance(fresh(), Gates(), 5)  # type: ignore[arg-type]
    # (Which EsperFuncError a wrong type is reported as is not pinned here; the message is.)
    with pytest.raises(ef.EsperFuncError, match=r"advance\(\) expects Gates as its second argument; got NoneType"):
        advance(fresh(), None)  # type: ignore[arg-type]


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
    state = to_fossilized(fresh())
    new, result, events = advance(state, Gates())
    assert new is state and events == ()
    assert result == GateResult(gate=GateLevel.G0, passed=False, checks_failed=("no_valid_transition",))


def test_enter_training_isolates() -> None:
    state, _, events = advance(fresh(), Gates())
    assert state.isolate_gradients is True
    assert stage_moves(events) == [("GERMINATED", "TRAINING")]
    assert state.previous_stage == S.GERMINATED and state.previous_epochs_in_stage == 0


@pytest.mark.parametrize(
    "blend,algorithm,curve,gate_steps",
    [
        ("linear", AlphaAlgorithm.ADD, AlphaCurve.LINEAR, 0),
        ("sigmoid", AlphaAlgorithm.MULTIPLY, AlphaCurve.SIGMOID, 0),
        ("gated", AlphaAlgorithm.GATE, AlphaCurve.LINEAR, 3),
    ],
)
def test_enter_blending_starts_controller_from_germination_settings(
    blend: str, algorithm: AlphaAlgorithm, curve: AlphaCurve, gate_steps: int
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
    assert state.gate_total_steps == gate_steps and has_gate(state) == (algorithm == AlphaAlgorithm.GATE)
    assert not state.blend_out_frozen and trainable(state)


def test_enter_blending_snapshots_accuracy() -> None:
    state = to_training(fresh())
    state = record_accuracy(record_accuracy(state, 40.0), 42.5)
    state, _, _ = advance(measured(state), PERMISSIVE, S.BLENDING)
    m = state.metrics
    assert m.blending_started and m.accuracy_at_blending_start == 42.5
    assert m.accuracy_at_stage_start == 42.5 and m.epochs_in_current_stage == 0
    assert state.previous_epochs_in_stage == 2 and state.stage_entered_epoch == 2
    assert m.blending_delta == 0.0
    assert record_accuracy(state, 44.0).metrics.blending_delta == 1.5


def test_tempo_zero_moves_alpha_at_once() -> None:
    """Deliberate deviation: esper-lite's stored alpha lags the controller by one epoch here."""
    state = to_training(fresh(tempo=0, blend="linear"))
    state, result, events = advance(measured(state), PERMISSIVE, S.BLENDING)
    assert result.passed and state.stage == S.BLENDING
    assert state.alpha == 1.0 and state.alpha_controller == AlphaController(
        alpha=1.0, alpha_start=0.0, alpha_target=1.0, alpha_mode=AlphaMode.HOLD, alpha_steps_total=0
    )
    assert events[1].alpha == 1.0
    # G3 passes on the very next epoch (permissive: no minimum epochs).
    state, events = step_epoch(state, PERMISSIVE, auto_forward=G3)
    assert state.alpha == 1.0 and state.stage == S.HOLDING
    assert kinds(events) == ["GateEvaluated", "StageChanged"]


@pytest.mark.parametrize("via", ["advance", "advance_default", "step_epoch"])
def test_gated_blend_with_tempo_zero_is_refused_before_anything_changes(via: str) -> None:
    """Deliberate deviation: esper-lite moves the stage to BLENDING and then raises."""
    state = measured(to_training(fresh(algorithm=AlphaAlgorithm.GATE, blend="gated", tempo=0)))
    snapshot = copy.deepcopy(state)
    with pytest.raises(IllegalTransitionError, match=r"gated blend needs a tempo of at least 1 epoch.*tempo=0"):
        if via == "advance":
            advance(state, PERMISSIVE, S.BLENDING)
        elif via == "advance_default":
            advance(state, PERMISSIVE)
        else:
            step_epoch(state, PERMISSIVE, auto_forward={GateLevel.G2})
    assert state == snapshot and state.stage == S.TRAINING
    # A failing gate is an ordinary refusal, not an error.
    unmeasured = to_training(fresh(algorithm=AlphaAlgorithm.GATE, blend="gated", tempo=0))
    new, result, _ = advance(unmeasured, PERMISSIVE, S.BLENDING)
    assert new is unmeasured and result.checks_failed == ("gradient_health_not_measured",)
    # The seed can still be pruned.
    assert prune(state)[0].stage == S.PRUNED


def test_enter_holding_snaps_alpha_to_one() -> None:
    state = to_holding(fresh(blend="linear", tempo=2))
    assert state.alpha == 1.0
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
    state = to_training(fresh())
    state = measured(record_accuracy(record_accuracy(state, 40.0), 42.0))
    state, _, _ = advance(state, PERMISSIVE, S.BLENDING)
    while state.stage == S.BLENDING:
        state = record_accuracy(state, 45.5)
        state, _ = step_epoch(state, PERMISSIVE, auto_forward=G3)
    state = record_contribution(state, 3.0)
    new, result, events = advance(state, Gates())
    assert new.stage == S.FOSSILIZED and result.passed
    assert kinds(events) == ["GateEvaluated", "StageChanged", "SeedFossilized"]
    # 2 TRAINING epochs + 5 BLENDING epochs; improvement 45.5 - 40; blending delta 45.5 - 42.
    assert events[2] == SeedFossilized(
        slot_id="r0c0",
        seed_id="r0c0-norm",
        blueprint_id="norm",
        epoch=7,
        improvement=5.5,
        counterfactual=3.0,
        params_added=1_000,
        alpha=1.0,
        epochs_total=7,
        blending_delta=3.5,
    )
    assert has_gate(new) is False and new.isolate_gradients is True


def test_fossilized_gate_seed_keeps_its_gate() -> None:
    state = to_fossilized(fresh(algorithm=AlphaAlgorithm.GATE, blend="gated", tempo=4))
    assert has_gate(state) and state.gate_total_steps == 4
    assert slot_extra_state(state)["alpha_schedule_config"] == {"algorithm_id": "gated", "total_steps": 4, "current_step": 0}


# ============================================================================ prune


@pytest.mark.parametrize("stage", [S.GERMINATED, S.TRAINING, S.BLENDING, S.HOLDING])
def test_prune_from_every_seeded_stage(stage: SeedStage) -> None:
    state = reach(stage, algorithm=AlphaAlgorithm.GATE, blend="gated", tempo=3)
    new, events = prune(state, "underperforming", initiator="tamiyo")
    assert new.stage == S.PRUNED and new.previous_stage == state.stage
    assert new.alpha == 0.0
    assert new.alpha_controller == dataclasses.replace(
        state.alpha_controller,
        alpha=0.0,
        alpha_start=0.0,
        alpha_target=0.0,
        alpha_steps_total=0,
        alpha_steps_done=0,
        alpha_mode=AlphaMode.HOLD,
    )
    assert new.isolate_gradients is False and not has_seed(new) and not trainable(new)
    assert not has_gate(new) and new.gate_total_steps == 0 and not new.blend_out_frozen
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
        blending_delta=0.0,
    )


def test_pruned_event_reports_blending_delta() -> None:
    state = to_training(fresh())
    state = measured(record_accuracy(state, 50.0))
    state, _, _ = advance(state, PERMISSIVE, S.BLENDING)
    state = record_contribution(record_accuracy(record_accuracy(state, 51.0), 49.25), -0.5)
    _, events = prune(state, "hurts")
    assert events[1] == SeedPruned(
        slot_id="r0c0",
        seed_id="r0c0-norm",
        blueprint_id="norm",
        epoch=3,
        reason="hurts",
        initiator="policy",
        auto_pruned=False,
        improvement=-0.75,
        counterfactual=-0.5,
        epochs_total=3,
        blending_delta=-0.75,
    )
    # Before blending began there is no blending delta, whatever the accuracy did.
    _, events = prune(record_accuracy(record_accuracy(to_training(fresh()), 50.0), 60.0))
    assert events[1].improvement == 10.0 and events[1].blending_delta == 0.0


@pytest.mark.parametrize("reason", sorted(AUTO_PRUNE_REASONS))
def test_prune_auto_reason_flags_auto_prune(reason: str) -> None:
    new, events = prune(to_training(fresh()), reason, initiator="governor")
    assert new.metrics.auto_pruned and new.metrics.auto_prune_reason == reason
    assert events[1].auto_pruned is True and events[1].initiator == "governor"


def test_prune_refused_for_fossilized_and_seedless() -> None:
    fossil = to_fossilized(fresh())
    new, events = prune(fossil, "governor_nan")
    assert new is fossil and events == ()
    for stage in (S.PRUNED, S.EMBARGOED, S.RESETTING, S.DORMANT):
        state = reach(stage)
        # A refused prune changes nothing (esper-lite still sets auto_pruned first: a deliberate deviation).
        again, events = prune(state, "governor_nan")
        assert again is state and events == ()


def test_prune_validation() -> None:
    with pytest.raises(InvalidTypeError, match=r"^reason must be a str; got int 5$"):
        prune(fresh(), 5)  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match=r"^initiator must be a str; got NoneType None$"):
        prune(fresh(), "x", initiator=None)  # type: ignore[arg-type]


# ============================================================================ schedule_prune


def test_schedule_prune_from_holding_reenters_blending_and_ramps_down() -> None:
    state = to_holding(fresh())
    new, events = schedule_prune(state, steps=4, curve=AlphaCurve.COSINE, reason="weak", initiator="policy")
    assert new.stage == S.BLENDING and stage_moves(events) == [("HOLDING", "BLENDING")]
    assert events[0].alpha == 1.0
    c = new.alpha_controller
    assert (c.alpha, c.alpha_mode, c.alpha_start, c.alpha_target, c.alpha_curve, c.alpha_steps_total) == (
        1.0, AlphaMode.DOWN, 1.0, 0.0, AlphaCurve.COSINE, 4,
    )
    assert (new.pending_prune_reason, new.pending_prune_initiator) == ("weak", "policy")
    assert not state.blend_out_frozen and new.blend_out_frozen
    assert trainable(state) and not trainable(new) and has_seed(new)


def test_schedule_prune_from_blending_stays_and_keeps_curve() -> None:
    state = to_blending(fresh(tempo=0, blend="linear"))  # HOLD at alpha 1 in BLENDING
    new, events = schedule_prune(state, steps=2, steepness=0.01)
    assert events == () and new.stage == S.BLENDING and new.blend_out_frozen
    c = new.alpha_controller
    assert (c.alpha_mode, c.alpha_curve, c.alpha_steepness, c.alpha_steps_total) == (
        AlphaMode.DOWN, AlphaCurve.LINEAR, 0.1, 2,
    )
    assert (new.pending_prune_reason, new.pending_prune_initiator) == ("", "policy")


@pytest.mark.parametrize("steps", [0, -2])
def test_schedule_prune_without_steps_prunes_now(steps: int) -> None:
    new, events = schedule_prune(to_holding(fresh()), steps=steps, reason="now", initiator="gov")
    assert new.stage == S.PRUNED and kinds(events) == ["StageChanged", "SeedPruned"]
    assert (events[1].reason, events[1].initiator) == ("now", "gov")
    assert not new.blend_out_frozen and new.pending_prune_reason is None


@pytest.mark.parametrize("stage", [S.GERMINATED, S.TRAINING])
def test_schedule_prune_at_alpha_zero_prunes_now(stage: SeedStage) -> None:
    new, events = schedule_prune(reach(stage), steps=5, reason="r")
    assert new.stage == S.PRUNED and kinds(events) == ["StageChanged", "SeedPruned"]
    assert events[1].reason == "r" and new.pending_prune_reason is None


def test_schedule_prune_refusals() -> None:
    blending = to_blending(fresh())
    for _ in range(2):
        blending, _ = step_epoch(blending, Gates())
    assert blending.alpha_controller.alpha_mode == AlphaMode.UP
    new, events = schedule_prune(blending, steps=3)
    assert new is blending and events == ()
    # steps <= 0 prunes now, even mid-ramp (the HOLD check comes after it, as in esper-lite).
    assert schedule_prune(blending, steps=0)[0].stage == S.PRUNED
    fossil = to_fossilized(fresh())
    assert schedule_prune(fossil, steps=3) == (fossil, ())
    assert schedule_prune(fossil, steps=0)[0] is fossil
    for stage in (S.PRUNED, S.EMBARGOED, S.RESETTING, S.DORMANT):
        state = reach(stage)
        assert schedule_prune(state, steps=3) == (state, ())
        assert schedule_prune(state, steps=0) == (state, ())


def test_schedule_prune_validation() -> None:
    state = to_holding(fresh())
    with pytest.raises(InvalidArgumentError, match=r"steepness .*must be a number, not NaN"):
        schedule_prune(state, steps=3, steepness=float("nan"))
    with pytest.raises(InvalidTypeError, match=r"^steps must be an int; got float 2\.0$"):
        schedule_prune(state, steps=2.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"^curve must be a AlphaCurve \(LINEAR=1, COSINE=2, SIGMOID=3\); got 7$"):
        schedule_prune(state, steps=2, curve=7)  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match="reason must be a str"):
        schedule_prune(state, steps=2, reason=None)  # type: ignore[arg-type]


# ============================================================================ set_alpha_target


def test_set_alpha_target_partial_from_holding() -> None:
    state = to_holding(fresh())
    new, events = set_alpha_target(state, alpha_target=0.5, steps=2, curve=AlphaCurve.LINEAR)
    assert new.stage == S.BLENDING and stage_moves(events) == [("HOLDING", "BLENDING")]
    assert new.alpha_controller.alpha_mode == AlphaMode.DOWN and not trainable(new) and new.blend_out_frozen
    assert new.pending_prune_reason is None
    new, _ = step_epoch(new, Gates(), auto_forward=G3)
    assert new.alpha == 0.75 and new.alpha_controller.alpha_mode == AlphaMode.DOWN
    new, events = step_epoch(new, PERMISSIVE, auto_forward=G3)
    assert new.alpha == 0.5 and new.alpha_controller.alpha_mode == AlphaMode.HOLD
    # The freeze is lifted one epoch later (it is refreshed at the start of step_epoch).
    assert new.blend_out_frozen and not trainable(new)
    # G3 requires a full target: the auto-forward is evaluated and fails.
    assert new.stage == S.BLENDING and kinds(events) == ["GateEvaluated"]
    assert events[0].checks_failed == ("alpha_target_not_full_0.50",)
    # Back up to 1 from BLENDING: stays in BLENDING, ramps UP, and the freeze goes at once.
    up, events = set_alpha_target(new, alpha_target=1.0, steps=1)
    assert up.stage == S.BLENDING and events == () and up.alpha_controller.alpha_mode == AlphaMode.UP
    assert not up.blend_out_frozen and trainable(up)


def test_set_alpha_target_full_from_holding_stays_holding() -> None:
    state = to_holding(fresh())
    new, events = set_alpha_target(state, alpha_target=1.0, steps=3)
    assert new.stage == S.HOLDING and events == () and new.alpha_controller.alpha_mode == AlphaMode.HOLD
    assert new.alpha == 1.0 and new.alpha_controller.alpha_steps_total == 3 and not new.blend_out_frozen


def test_set_alpha_target_with_zero_steps_moves_alpha_at_once() -> None:
    """Deliberate deviation: esper-lite's stored alpha lags a zero-step retarget by one epoch."""
    state = to_holding(fresh())
    new, events = set_alpha_target(state, alpha_target=0.25, steps=0)
    assert new.stage == S.BLENDING and stage_moves(events) == [("HOLDING", "BLENDING")]
    assert new.alpha == 0.25 and new.alpha_controller == AlphaController(
        alpha=0.25,
        alpha_start=1.0,
        alpha_target=0.25,
        alpha_mode=AlphaMode.HOLD,
        alpha_curve=AlphaCurve.SIGMOID,
        alpha_steps_total=0,
    )
    # A snap is not a down-ramp: no freeze.
    assert not new.blend_out_frozen and trainable(new)
    # And the slot computes with the new alpha right away.
    assert slot_extra_state(new)["seed_state"]["alpha"] == 0.25


def test_set_alpha_target_clamps_above_one() -> None:
    state, _ = set_alpha_target(to_holding(fresh()), alpha_target=0.5, steps=0)
    state, _ = set_alpha_target(state, alpha_target=3.0, steps=2)
    assert state.alpha_controller.alpha_target == 1.0 and state.alpha_controller.alpha_mode == AlphaMode.UP
    state, _ = set_alpha_target(to_holding(fresh()), alpha_target=float("inf"), steps=2)
    assert state.stage == S.HOLDING and state.alpha_controller.alpha_target == 1.0


@pytest.mark.parametrize("target", [0.0, -0.5, float("-inf")])
def test_set_alpha_target_refuses_non_positive(target: float) -> None:
    state = to_holding(fresh())
    assert set_alpha_target(state, alpha_target=target, steps=2) == (state, ())
    assert set_alpha_target(state, alpha_target=target, steps=2, alpha_algorithm=AlphaAlgorithm.GATE)[0] is state


def test_set_alpha_target_refusals() -> None:
    refused = [reach(stage) for stage in (S.GERMINATED, S.TRAINING, S.FOSSILIZED, S.PRUNED, S.EMBARGOED, S.DORMANT)]
    ramping = to_blending(fresh())
    ramping, _ = step_epoch(ramping, Gates())
    assert ramping.alpha_controller.alpha_mode == AlphaMode.UP
    for state in [*refused, ramping]:
        for algorithm in (None, AlphaAlgorithm.GATE, AlphaAlgorithm.MULTIPLY):
            new, events = set_alpha_target(state, alpha_target=0.5, steps=2, alpha_algorithm=algorithm)
            assert new is state and events == ()


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"alpha_target": float("nan"), "steps": 2}, InvalidArgumentError, r"^alpha_target must be a number, not NaN$"),
        ({"alpha_target": "0.5", "steps": 2}, InvalidTypeError, r"^alpha_target must be a real number; got str"),
        ({"alpha_target": 0.5, "steps": -1}, InvalidArgumentError, r"^steps must be >= 0; got -1$"),
        ({"alpha_target": 0.5, "steps": 1.0}, InvalidTypeError, r"^steps must be an int; got float 1\.0$"),
        ({"alpha_target": 0.5, "steps": 2, "steepness": float("inf")}, InvalidArgumentError, "steepness .*must be finite"),
        ({"alpha_target": 0.5, "steps": 2, "curve": 0}, InvalidArgumentError, r"^curve must be a AlphaCurve"),
        (
            {"alpha_target": 0.5, "steps": 2, "alpha_algorithm": 9},
            InvalidArgumentError,
            r"^alpha_algorithm must be a AlphaAlgorithm \(ADD=1, MULTIPLY=2, GATE=3\); got 9$",
        ),
    ],
)
def test_set_alpha_target_validation(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    # Checked before anything else, so even a request that would be refused raises.
    for state in (to_holding(fresh()), fresh()):
        with pytest.raises(error, match=match):
            set_alpha_target(state, **kwargs)


def test_set_alpha_target_switches_algorithm_to_gate_and_back() -> None:
    state = to_holding(fresh(blend="linear"))
    assert state.alpha_algorithm == AlphaAlgorithm.ADD and not has_gate(state)
    # To GATE with zero steps: a gate of at least one step.
    gated, events = set_alpha_target(state, alpha_target=1.0, steps=0, alpha_algorithm=AlphaAlgorithm.GATE)
    assert events == () and gated.stage == S.HOLDING
    assert gated.alpha_algorithm == AlphaAlgorithm.GATE and has_gate(gated) and gated.gate_total_steps == 1
    assert gated.blend_algorithm_id == "linear"  # the germination setting is kept
    assert slot_extra_state(gated)["alpha_schedule_config"] == {"algorithm_id": "gated", "total_steps": 1, "current_step": 0}
    # The slot's checkpoint carries the switch (and keeps the germination blend id).
    assert state_from_slot_extra_state(slot_extra_state(gated)) == esper_lite_view(gated)
    assert state_from_slot_extra_state(slot_extra_state(gated)).blend_algorithm_id == "linear"
    # GATE -> GATE keeps the existing gate.
    same, _ = set_alpha_target(gated, alpha_target=1.0, steps=6, alpha_algorithm=AlphaAlgorithm.GATE)
    assert same.gate_total_steps == 1
    # Away from GATE drops it; back to GATE sizes it from the steps of that request.
    plain, _ = set_alpha_target(gated, alpha_target=1.0, steps=0, alpha_algorithm=AlphaAlgorithm.MULTIPLY)
    assert plain.alpha_algorithm == AlphaAlgorithm.MULTIPLY and not has_gate(plain) and plain.gate_total_steps == 0
    assert slot_extra_state(plain)["alpha_schedule_config"] is None
    again, events = set_alpha_target(plain, alpha_target=0.5, steps=3, alpha_algorithm=AlphaAlgorithm.GATE)
    assert stage_moves(events) == [("HOLDING", "BLENDING")]
    assert again.alpha_algorithm == AlphaAlgorithm.GATE and again.gate_total_steps == 3 and has_gate(again)
    assert again.alpha_controller.alpha_mode == AlphaMode.DOWN and again.blend_out_frozen


def test_set_alpha_target_switches_a_blending_gate_seed_away_from_gate() -> None:
    state = to_blending(fresh(algorithm=AlphaAlgorithm.GATE, blend="gated", tempo=2))
    while state.alpha_controller.alpha_mode != AlphaMode.HOLD:
        state, _ = step_epoch(state, Gates())
    assert state.stage == S.BLENDING and state.gate_total_steps == 2 and has_gate(state)
    new, events = set_alpha_target(state, alpha_target=0.5, steps=1, alpha_algorithm=AlphaAlgorithm.ADD)
    assert events == () and new.alpha_algorithm == AlphaAlgorithm.ADD and not has_gate(new)
    assert new.gate_total_steps == 0 and new.blend_algorithm_id == "gated"


@pytest.mark.parametrize("stage", list(REACH))
def test_has_gate_by_stage(stage: SeedStage) -> None:
    gate_seed = reach(stage, algorithm=AlphaAlgorithm.GATE, blend="gated", tempo=3)
    assert has_gate(gate_seed) == (stage in GATED_STAGES)
    assert (gate_seed.gate_total_steps == 3) == (stage in GATED_STAGES)
    assert (gate_seed.gate_total_steps == 0) == (stage not in GATED_STAGES)
    assert not has_gate(reach(stage, algorithm=AlphaAlgorithm.MULTIPLY, blend="linear", tempo=3))
    assert ef.has_gate is has_gate


# ============================================================================ the blend-out freeze


def test_freeze_is_a_stored_flag_and_trainable_reads_it() -> None:
    state = to_holding(fresh())
    assert trainable(state)
    assert not trainable(dataclasses.replace(state, blend_out_frozen=True))
    for stage in (S.PRUNED, S.EMBARGOED, S.RESETTING, S.DORMANT):
        assert not trainable(reach(stage))


def test_prune_and_the_return_to_dormant_clear_the_freeze() -> None:
    down, _ = schedule_prune(to_holding(fresh()), steps=3, reason="r", initiator="i")
    assert down.blend_out_frozen
    pruned, _ = prune(down, "now")
    assert not pruned.blend_out_frozen and pruned.pending_prune_reason is None
    # Even a hand-made frozen state in the cooldown leaves it cleared on DORMANT.
    state = dataclasses.replace(to_resetting(fresh()), blend_out_frozen=True, pending_prune_reason="x")
    state, _ = step_epoch(state, Gates())
    assert state.stage == S.DORMANT and not state.blend_out_frozen and state.pending_prune_reason is None


def test_step_epoch_refreshes_the_freeze_from_the_controller() -> None:
    holding = to_holding(fresh())
    # A stale flag is corrected by the next step_epoch, whatever the stage.
    stale = dataclasses.replace(holding, blend_out_frozen=True)
    refreshed, events = step_epoch(stale, Gates())
    assert events == () and not refreshed.blend_out_frozen and refreshed == holding
    down, _ = schedule_prune(holding, steps=3)
    thawed = dataclasses.replace(down, blend_out_frozen=False)
    assert step_epoch(thawed, Gates())[0].blend_out_frozen
    # A DORMANT slot is left exactly as it is.
    dormant = dataclasses.replace(to_dormant(fresh()), blend_out_frozen=True)
    assert step_epoch(dormant, Gates()) == (dormant, ())


@given(
    target=st.sampled_from([0.1, 0.25, 0.5, 0.9]),
    steps=st.integers(1, 6),
    curve=st.sampled_from(list(AlphaCurve)),
    from_holding=st.booleans(),
)
def test_freeze_lifts_one_step_epoch_after_the_down_ramp_reaches_its_target(
    target: float, steps: int, curve: AlphaCurve, from_holding: bool
) -> None:
    state = to_holding(fresh(blend="linear", tempo=1))
    if not from_holding:  # a partial target first, so the down-ramp starts in BLENDING
        state, _ = set_alpha_target(state, alpha_target=0.95, steps=0)
        assert state.stage == S.BLENDING and state.alpha == 0.95
    state, _ = set_alpha_target(state, alpha_target=target, steps=steps, curve=curve)
    assert state.alpha_controller.alpha_mode == AlphaMode.DOWN and state.blend_out_frozen and not trainable(state)
    for done in range(1, steps + 1):
        state, _ = step_epoch(state, PERMISSIVE, auto_forward=G3)
        assert state.stage == S.BLENDING and state.blend_out_frozen and not trainable(state)
        assert (state.alpha_controller.alpha_mode == AlphaMode.HOLD) == (done == steps)
    assert state.alpha == target
    state, _ = step_epoch(state, PERMISSIVE, auto_forward=G3)
    assert not state.blend_out_frozen and trainable(state)
    state, _ = step_epoch(state, PERMISSIVE, auto_forward=G3)
    assert not state.blend_out_frozen and trainable(state)


@given(steps=st.integers(1, 6), curve=st.sampled_from(list(AlphaCurve)))
def test_scheduled_prune_stays_frozen_until_the_prune(steps: int, curve: AlphaCurve) -> None:
    state, _ = schedule_prune(to_holding(fresh()), steps=steps, curve=curve, reason="fade", initiator="tamiyo")
    for _ in range(steps - 1):
        state, events = step_epoch(state, Gates(), auto_forward=ALL_LEVELS)
        assert events == () and state.stage == S.BLENDING and state.blend_out_frozen
        assert state.pending_prune_reason == "fade"
    state, events = step_epoch(state, Gates(), auto_forward=ALL_LEVELS)
    assert state.stage == S.PRUNED and kinds(events) == ["StageChanged", "SeedPruned"]
    assert (events[1].reason, events[1].initiator) == ("fade", "tamiyo")
    assert not state.blend_out_frozen and state.pending_prune_reason is None and state.pending_prune_initiator is None


# ============================================================================ step_epoch


def test_step_epoch_auto_forward_g1() -> None:
    state = fresh()
    assert step_epoch(state, Gates()) == (state, ())
    new, events = step_epoch(state, Gates(), auto_forward={GateLevel.G1})
    assert new.stage == S.TRAINING and kinds(events) == ["GateEvaluated", "StageChanged"]


def test_step_epoch_auto_forward_g2_waits_for_min_epochs() -> None:
    gates = Gates(permissive=True, min_blending_epochs=3)
    state = measured(to_training(fresh()))
    af = {GateLevel.G2}
    for _ in range(2):
        state = record_accuracy(state, 50.0)
        state, events = step_epoch(state, gates, auto_forward=af)
        assert state.stage == S.TRAINING and events == ()  # not even evaluated
    state = record_accuracy(state, 50.0)
    state, events = step_epoch(state, gates, auto_forward=af)
    assert state.stage == S.BLENDING and kinds(events) == ["GateEvaluated", "StageChanged"]


def test_step_epoch_auto_forward_g2_refuses_unmeasured_gradients() -> None:
    gates = Gates(permissive=True, min_blending_epochs=1)
    state = record_accuracy(to_training(fresh()), 50.0)
    same, events = step_epoch(state, gates, auto_forward={GateLevel.G2})
    assert same is state and kinds(events) == ["GateEvaluated"]
    assert events[0].checks_failed == ("gradient_health_not_measured",)
    new, _ = step_epoch(measured(state), gates, auto_forward={GateLevel.G2})
    assert new.stage == S.BLENDING


def test_step_epoch_rejects_bad_arguments() -> None:
    with pytest.raises(InvalidArgumentError, match="auto_forward must be a set of GateLevel"):
        step_epoch(fresh(), Gates(), auto_forward={4})
    with pytest.raises(ef.EsperFuncError, match=r"step_epoch\(\) expects Gates as its second argument; got dict"):
        step_epoch(fresh(), {})  # type: ignore[arg-type]


def test_step_epoch_holding_and_fossilized_do_nothing() -> None:
    holding = to_holding(fresh())
    assert step_epoch(holding, Gates(), auto_forward=ALL_LEVELS) == (holding, ())
    fossil = to_fossilized(fresh())
    assert step_epoch(fossil, Gates(), auto_forward=ALL_LEVELS) == (fossil, ())


def test_step_epoch_blending_ticks_and_counts_ramp_steps() -> None:
    state = to_blending(fresh())
    alphas, ramp_steps = [], []
    for _ in range(6):
        state, events = step_epoch(state, Gates(), auto_forward=G3)
        alphas.append(state.alpha)
        ramp_steps.append(state.metrics.alpha_ramp_step)
    assert alphas == pytest.approx([*SIGMOID_5, 1.0], abs=1e-15)
    assert ramp_steps == [1, 2, 3, 4, 5, 5]
    # step_epoch does not count epochs in BLENDING (record_accuracy does): strict G3 is not even evaluated.
    assert state.stage == S.BLENDING and state.epochs_in_stage == 0 and events == ()
    # Permissive G3 ignores the epochs.
    state, events = step_epoch(state, PERMISSIVE, auto_forward=G3)
    assert state.stage == S.HOLDING and kinds(events) == ["GateEvaluated", "StageChanged"]


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
    assert type(m.current_val_accuracy) is float
    assert m.total_improvement == -2.5 and m.improvement_since_stage_start == -2.5
    assert m.total_improvement_normalized == -0.25
    assert (m.epochs_total, m.epochs_in_current_stage) == (2, 2)
    with pytest.raises(InvalidArgumentError, match=r"^accuracy must be finite; got inf$"):
        record_accuracy(state, float("inf"))
    with pytest.raises(InvalidTypeError, match=r"^accuracy must be a real number; got str '50'$"):
        record_accuracy(state, "50")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"^contribution must be a number, not NaN$"):
        record_contribution(state, float("nan"))


def test_record_accuracy_first_call_sets_baseline_in_any_stage() -> None:
    state = record_accuracy(fresh(), 30.0)  # GERMINATED counts too, as in esper-lite
    assert state.metrics.initial_val_accuracy == 30.0 and state.metrics.epochs_in_current_stage == 1


@pytest.mark.parametrize("stage", [S.PRUNED, S.EMBARGOED, S.RESETTING])
def test_record_accuracy_and_contribution_count_in_the_cooldown(stage: SeedStage) -> None:
    state = reach(stage)
    before = state.metrics
    new = record_accuracy(state, 61.0)
    # The first measurement ever (epochs_total 0) also sets the baselines (esper-lite's rule); the
    # RESETTING state here has one epoch counted by the embargo, so it is not a first measurement.
    first = before.epochs_total == 0
    assert first == (stage != S.RESETTING)
    assert new.metrics == dataclasses.replace(
        before,
        initial_val_accuracy=61.0 if first else before.initial_val_accuracy,
        accuracy_at_stage_start=61.0 if first else before.accuracy_at_stage_start,
        current_val_accuracy=61.0,
        best_val_accuracy=61.0,
        epochs_total=before.epochs_total + 1,
        epochs_in_current_stage=before.epochs_in_current_stage + 1,
    )
    assert new.stage == stage and dataclasses.replace(new, metrics=before) == state
    contributed = record_contribution(state, 1.25)
    assert contributed.metrics.counterfactual_contribution == 1.25 and contributed.stage == stage
    # Gradients need a live seed.
    assert record_gradients(state, host_grad_norm=1.0, seed_grad_norm=1.0, gradient_health=0.5) is state


def test_measurements_leave_a_free_slot_alone() -> None:
    dormant = to_dormant(fresh())
    assert record_accuracy(dormant, 50.0) is dormant
    assert record_contribution(dormant, 1.0) is dormant
    assert record_gradients(dormant, host_grad_norm=1.0, seed_grad_norm=1.0) is dormant
    assert sync_telemetry(dormant, epoch=4, gradient_health=1.0) is dormant


@given(
    embargo=st.integers(0, 6),
    resetting=st.integers(0, 3),
    in_pruned=st.integers(0, 3),
    in_embargo=st.integers(0, 8),
    in_resetting=st.integers(0, 4),
)
def test_recording_in_the_cooldown_shortens_it_exactly_as_counted(
    embargo: int, resetting: int, in_pruned: int, in_embargo: int, in_resetting: int
) -> None:
    """esper-lite's SeedMetrics.record_accuracy counts cooldown epochs too, so the dwell ends sooner."""
    gates = Gates(embargo_epochs=embargo, resetting_epochs=resetting)
    state = to_pruned(fresh())
    total = state.metrics.epochs_total
    for i in range(in_pruned):  # counted in PRUNED, which always lasts one step_epoch
        state = record_accuracy(state, 50.0 + i)
    state, events = step_epoch(state, gates)
    assert stage_moves(events) == [("PRUNED", "EMBARGOED")] and events[0].epochs_in_stage == in_pruned
    assert state.previous_epochs_in_stage == in_pruned and state.epochs_in_stage == 0
    for _ in range(in_embargo):
        state = record_accuracy(state, 60.0)
    embargo_steps = 0
    while state.stage == S.EMBARGOED and embargo_steps < 20:
        state, _ = step_epoch(state, gates)
        embargo_steps += 1
    assert embargo_steps == max(1, embargo - in_embargo)
    assert state.stage == S.RESETTING and state.previous_epochs_in_stage == in_embargo + embargo_steps
    for _ in range(in_resetting):
        state = record_accuracy(state, 70.0)
    resetting_steps = 0
    while state.stage == S.RESETTING and resetting_steps < 20:
        state, _ = step_epoch(state, gates)
        resetting_steps += 1
    assert resetting_steps == max(1, resetting - in_resetting)
    assert state.stage == S.DORMANT
    assert state.metrics.epochs_total == (
        total + in_pruned + in_embargo + embargo_steps + in_resetting + resetting_steps
    )
    expected_accuracy = [0.0, 50.0 + in_pruned - 1, 60.0, 70.0]
    last = 3 if in_resetting else 2 if in_embargo else 1 if in_pruned else 0
    assert state.metrics.current_val_accuracy == expected_accuracy[last]


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
    assert state.telemetry == SeedTelemetry()  # norms alone are no gradient-health measurement
    state = record_gradients(state, host_grad_norm=torch.tensor(2.0), seed_grad_norm=torch.tensor(0.05))
    assert state.metrics.gradient_norm_avg == pytest.approx(0.05 * (1 - 0.9**2))
    assert record_gradients(state, host_grad_norm=0.1, seed_grad_norm=5.0).metrics.seed_gradient_norm_ratio == 10.0
    assert record_gradients(state, host_grad_norm=1e-9, seed_grad_norm=5.0).metrics.seed_gradient_norm_ratio == 0.0


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
    assert all(v.dtype == torch.float64 for v in norms.values())
    assert norms["host"].item() == 5.0 and norms["seed"].item() == 3.0
    assert norms["empty"].item() == 0.0
    assert torch.equal(grads["host"]["a"], snapshot["host"]["a"])
    state = record_gradients(fresh(), host_grad_norm=norms["host"], seed_grad_norm=norms["seed"])
    assert state.metrics.seed_gradient_norm_ratio == pytest.approx(3.0 / 5.0 * 10.0)
    with pytest.raises(InvalidTypeError, match="mapping"):
        gradient_norms([torch.ones(2)])  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match="tensors and None"):
        global_norm({"x": 1.0})


def test_global_norm_bfloat16_accumulates_in_float64() -> None:
    norm = global_norm([torch.full((1000,), 0.1, dtype=torch.bfloat16)])
    assert norm.dtype == torch.float64 and norm.item() == pytest.approx((1000 * 0.1**2) ** 0.5, rel=1e-2)


def test_global_norm_does_not_overflow_where_float32_squares_would() -> None:
    # 1e20 squared overflows float32; esper-lite's collectors square in float64.
    norm = global_norm({"w": torch.full((50,), 1e20)})
    assert norm.item() == pytest.approx(50**0.5 * 1e20, rel=1e-6)


# ============================================================================ trainable / has_seed


@pytest.mark.parametrize("stage", list(REACH))
def test_trainable_and_has_seed_by_stage(stage: SeedStage) -> None:
    state = reach(stage)
    live = stage in (S.GERMINATED, S.TRAINING, S.BLENDING, S.HOLDING, S.FOSSILIZED)
    assert has_seed(state) is live and trainable(state) is live
    assert not trainable(dataclasses.replace(state, blend_out_frozen=True))


def test_trainable_during_a_scheduled_prune() -> None:
    down, _ = schedule_prune(to_holding(fresh()), steps=3)
    assert has_seed(down) and not trainable(down)


# ============================================================================ pytree / purity


def test_state_is_frozen_pytree_with_python_scalars() -> None:
    state = record_gradients(to_holding(fresh()), host_grad_norm=1.0, seed_grad_norm=0.1, gradient_health=0.5)
    state = sync_telemetry(state, epoch=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.blend_out_frozen = True  # type: ignore[misc]
    leaves, spec = optree.tree_flatten(state, namespace="esper_func")
    assert all(isinstance(x, (int, float, bool)) for x in leaves)
    assert optree.tree_unflatten(spec, leaves) == state
    tleaves, tspec = torch_pytree.tree_flatten(state)
    assert torch_pytree.tree_unflatten(tleaves, tspec) == state
    assert optree.tree_map(lambda x: x, state, namespace="esper_func") == state
    # Unmeasured telemetry (None) survives both flattenings.
    bare = fresh()
    leaves, spec = optree.tree_flatten(bare, namespace="esper_func")
    assert optree.tree_unflatten(spec, leaves) == bare
    tleaves, tspec = torch_pytree.tree_flatten(bare)
    assert torch_pytree.tree_unflatten(tleaves, tspec) == bare
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
    state = measured(record_accuracy(to_holding(fresh(algorithm=AlphaAlgorithm.GATE, blend="gated")), 50.0))
    snapshot = copy.deepcopy(state)
    as_dict = state_to_dict(state)
    prune(state, "x")
    schedule_prune(state, steps=3)
    set_alpha_target(state, alpha_target=0.5, steps=3, alpha_algorithm=AlphaAlgorithm.ADD)
    advance(state, gates)
    step_epoch(state, gates, auto_forward=ALL_LEVELS)
    record_accuracy(state, 1.0)
    record_contribution(state, 1.0)
    record_gradients(state, host_grad_norm=1.0, seed_grad_norm=1.0, gradient_health=0.1, has_exploding=True)
    sync_telemetry(state, epoch=9, gradient_health=0.2, has_vanishing=True)
    state_to_dict(state)
    seed_state_to_esper_lite(state)
    slot_extra_state(state)
    assert state == snapshot and state_to_dict(state) == as_dict


# ============================================================================ esper_func JSON (schema version 2)

STATE_KEYS = {
    "schema",
    "schema_version",
    "slot_id",
    "seed_id",
    "blueprint_id",
    "stage",
    "previous_stage",
    "previous_epochs_in_stage",
    "stage_history",
    "metrics",
    "alpha_controller",
    "telemetry",
    "alpha_algorithm",
    "blend_algorithm_id",
    "blend_tempo_epochs",
    "blend_alpha_target",
    "topology",
    "is_healthy",
    "is_paused",
    "blend_out_frozen",
    "gate_total_steps",
    "pending_prune_reason",
    "pending_prune_initiator",
}


def through_json(state: SeedState) -> SeedState:
    return state_from_dict(json.loads(json.dumps(state_to_dict(state), allow_nan=False)))


def test_state_dict_roundtrip_through_json() -> None:
    state = to_holding(fresh(algorithm=AlphaAlgorithm.GATE, blend="gated", tempo=2))
    state = record_contribution(record_gradients(state, host_grad_norm=1.0, seed_grad_norm=0.2), 1.25)
    state = sync_telemetry(state, epoch=7, max_epochs=30, gradient_norm=0.5, has_vanishing=True)
    state, _ = schedule_prune(state, steps=3, reason="r", initiator="i")
    data = state_to_dict(state)
    assert set(data) == STATE_KEYS
    assert (data["schema"], data["schema_version"]) == ("esper_func.SeedState", 2)
    assert data["telemetry"] == {
        "gradient_norm": 0.5,
        "gradient_health": 1.0,
        "has_vanishing": True,
        "has_exploding": False,
        "epoch": 7,
        "max_epochs": 30,
    }
    assert data["alpha_controller"]["alpha"] == 1.0 and "current_alpha" not in data["metrics"]
    assert (data["blend_out_frozen"], data["gate_total_steps"]) == (True, 2)
    back = through_json(state)
    assert back == state
    assert type(back.stage) is SeedStage and type(back.alpha_controller.alpha_mode) is AlphaMode
    assert type(back.alpha_algorithm) is AlphaAlgorithm
    assert back.stage_history == state.stage_history


def test_state_dict_keeps_unmeasured_telemetry_as_none() -> None:
    data = state_to_dict(fresh())
    assert data["telemetry"] == {
        "gradient_norm": None,
        "gradient_health": None,
        "has_vanishing": None,
        "has_exploding": None,
        "epoch": 0,
        "max_epochs": 25,
    }
    back = through_json(fresh())
    assert back == fresh() and back.telemetry.gradient_health is None


def test_non_finite_gradient_norms_are_refused_everywhere() -> None:
    # A non-finite epoch goes to the governor; it is never recorded, so states stay strict JSON.
    state = to_training(fresh())
    for call in (
        lambda: sync_telemetry(state, epoch=1, gradient_norm=float("inf"), has_exploding=True),
        lambda: record_gradients(state, host_grad_norm=1.0, seed_grad_norm=1.0, gradient_norm=float("inf")),
    ):
        with pytest.raises(ef.InvalidArgumentError, match="gradient_norm must be finite"):
            call()
    data = state_to_dict(sync_telemetry(state, epoch=1, gradient_norm=2.0))
    data["telemetry"]["gradient_norm"] = float("inf")
    with pytest.raises(ef.CheckpointError, match=r"'telemetry\.gradient_norm': expected a finite number"):
        state_from_dict(data)


# Written by the version-1 codec (esper_func before alpha moved into the controller).
V1_TRAINING = {
    "schema": "esper_func.SeedState", "schema_version": 1, "slot_id": "r0c0", "seed_id": "r0c0-norm",
    "blueprint_id": "norm", "stage": 3, "previous_stage": 2, "previous_epochs_in_stage": 0,
    "stage_entered_epoch": 0, "stage_history": [[2, 0], [3, 0]], "alpha": 0.0, "alpha_algorithm": 1,
    "blend_algorithm_id": "sigmoid", "blend_tempo_epochs": 5, "blend_alpha_target": 1.0, "topology": "cnn",
    "isolate_gradients": True, "is_healthy": True, "is_paused": False, "pending_prune_reason": None,
    "pending_prune_initiator": None, "gradient_health": 1.0, "has_exploding": False, "has_vanishing": False,
    "metrics": {
        "epochs_total": 1, "epochs_in_current_stage": 1, "initial_val_accuracy": 50.0,
        "current_val_accuracy": 50.0, "best_val_accuracy": 50.0, "accuracy_at_stage_start": 50.0,
        "accuracy_at_blending_start": 0.0, "blending_started": False, "gradient_norm_avg": 0.0,
        "seed_gradient_norm_ratio": None, "host_param_count": 100000, "seed_param_count": 1000,
        "current_alpha": 0.0, "alpha_ramp_step": 0, "counterfactual_contribution": None,
        "prev_contribution": None, "contribution_velocity": 0.0, "auto_pruned": False, "auto_prune_reason": "",
        "interaction_sum": 0.0, "boost_received": 0.0, "upstream_alpha_sum": 0.0, "downstream_alpha_sum": 0.0,
    },
    "alpha_controller": {
        "alpha": 0.0, "alpha_start": 0.0, "alpha_target": 0.0, "alpha_mode": 0, "alpha_curve": 1,
        "alpha_steepness": 12.0, "alpha_steps_total": 0, "alpha_steps_done": 0,
    },
}  # fmt: skip

V1_FADING = {
    "schema": "esper_func.SeedState", "schema_version": 1, "slot_id": "r1c0", "seed_id": "r1c0-conv_light",
    "blueprint_id": "conv_light", "stage": 4, "previous_stage": 6, "previous_epochs_in_stage": 1,
    "stage_entered_epoch": 1, "stage_history": [[2, 0], [3, 0], [4, 0], [6, 0], [4, 1]],
    "alpha": 0.6666666666666667, "alpha_algorithm": 1, "blend_algorithm_id": "linear", "blend_tempo_epochs": 2,
    "blend_alpha_target": 1.0, "topology": "transformer", "isolate_gradients": False, "is_healthy": True,
    "is_paused": False, "pending_prune_reason": "weak", "pending_prune_initiator": "tamiyo",
    "gradient_health": 0.25, "has_exploding": True, "has_vanishing": False,
    "metrics": {
        "epochs_total": 1, "epochs_in_current_stage": 0, "initial_val_accuracy": 40.0,
        "current_val_accuracy": 40.0, "best_val_accuracy": 40.0, "accuracy_at_stage_start": 40.0,
        "accuracy_at_blending_start": 0.0, "blending_started": True, "gradient_norm_avg": 0.04999999999999999,
        "seed_gradient_norm_ratio": 5.0, "host_param_count": 1000, "seed_param_count": 10,
        "current_alpha": 0.6666666666666667, "alpha_ramp_step": 1, "counterfactual_contribution": None,
        "prev_contribution": None, "contribution_velocity": 0.0, "auto_pruned": False, "auto_prune_reason": "",
        "interaction_sum": 0.0, "boost_received": 0.0, "upstream_alpha_sum": 0.0, "downstream_alpha_sum": 0.0,
    },
    "alpha_controller": {
        "alpha": 0.6666666666666667, "alpha_start": 1.0, "alpha_target": 0.0, "alpha_mode": 2, "alpha_curve": 1,
        "alpha_steepness": 12.0, "alpha_steps_total": 3, "alpha_steps_done": 1,
    },
}  # fmt: skip

# What a version-1 state's gradient fields mean now: measured (version 1 had no "unmeasured").
V1_TELEMETRY = SeedTelemetry(gradient_health=1.0, has_exploding=False, has_vanishing=False)


def test_version_1_dicts_are_migrated() -> None:
    # The same history replayed now gives the same state, up to the gradient telemetry.
    expected = record_accuracy(to_training(fresh()), 50.0)
    assert state_from_dict(copy.deepcopy(V1_TRAINING)) == dataclasses.replace(expected, telemetry=V1_TELEMETRY)

    gates = Gates(permissive=True, min_blending_epochs=0)
    state = germinate("r1c0", "conv_light", blend="linear", tempo=2, topology="transformer", seed_params=10, host_params=1000)
    state = to_holding(state)
    state = record_gradients(state, host_grad_norm=1.0, seed_grad_norm=0.5, gradient_health=0.25, has_exploding=True)
    state = record_accuracy(state, 40.0)
    state, _ = schedule_prune(state, steps=3, reason="weak", initiator="tamiyo")
    state, _ = step_epoch(state, gates)
    migrated = state_from_dict(copy.deepcopy(V1_FADING))
    assert migrated == dataclasses.replace(
        state, telemetry=SeedTelemetry(gradient_health=0.25, has_exploding=True, has_vanishing=False)
    )
    # The freeze is derived from the controller (ramping DOWN), and the fade-out finishes as before.
    assert migrated.blend_out_frozen and migrated.alpha == 0.6666666666666667 and not migrated.isolate_gradients
    migrated, _ = step_epoch(migrated, gates)
    migrated, events = step_epoch(migrated, gates)
    assert migrated.stage == S.PRUNED and (events[1].reason, events[1].initiator) == ("weak", "tamiyo")
    # Written back, a migrated state is version 2.
    assert state_to_dict(state_from_dict(copy.deepcopy(V1_FADING)))["schema_version"] == 2


@pytest.mark.parametrize("missing", ["alpha", "gradient_health", "has_exploding", "stage_entered_epoch"])
def test_incomplete_version_1_dict(missing: str) -> None:
    data = copy.deepcopy(V1_TRAINING)
    del data[missing]
    with pytest.raises(CheckpointError, match=f"version-1 seed state is incomplete: missing '{missing}'"):
        state_from_dict(data)
    data = copy.deepcopy(V1_TRAINING)
    del data["metrics"]["current_alpha"]
    with pytest.raises(CheckpointError, match="version-1 seed state is incomplete: missing 'current_alpha'"):
        state_from_dict(data)


def _set(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


@pytest.mark.parametrize(
    "path,value,match",
    [
        # unknown enum values
        (("stage",), 5, r"field 'stage': 5 is not a SeedStage; expected one of \[0, 1, 2, 3, 4, 6, 7, 8, 9, 10\]"),
        (("previous_stage",), 11, "'previous_stage': 11 is not a SeedStage"),
        (("alpha_algorithm",), 4, r"'alpha_algorithm': 4 is not a AlphaAlgorithm; expected one of \[1, 2, 3\]"),
        (("alpha_controller", "alpha_mode"), 7, "'alpha_controller.alpha_mode': 7 is not a AlphaMode"),
        (("alpha_controller", "alpha_curve"), 0, "'alpha_controller.alpha_curve': 0 is not a AlphaCurve"),
        (("stage_history",), [[2, 0], [5, 0]], r"'stage_history\[1\]\[0\]': 5 is not a SeedStage"),
        # wrong types
        (("stage",), True, "'stage': expected an integer"),
        (("is_healthy",), 1, "'is_healthy': expected true or false, got int 1"),
        (("blend_out_frozen",), "no", "'blend_out_frozen': expected true or false"),
        (("telemetry", "has_exploding"), "yes", "'telemetry.has_exploding': expected true or false, got str 'yes'"),
        (("telemetry", "epoch"), 1.5, "'telemetry.epoch': expected an integer"),
        (("metrics", "epochs_total"), 1.0, "'metrics.epochs_total': expected an integer"),
        (("pending_prune_reason",), 3, "'pending_prune_reason': expected a string, got int 3"),
        (("stage_history",), [[2]], r"'stage_history\[0\]': expected a \[stage, epoch\] pair"),
        (("metrics",), [], "'metrics': expected an object"),
        (("telemetry",), None, "'telemetry': expected an object"),
        (("alpha_controller", "alpha"), "0.5", "'alpha_controller.alpha': expected a number, got str"),
        # NaN and infinities
        (("metrics", "current_val_accuracy"), float("nan"), "'metrics.current_val_accuracy': expected a number, got float nan"),
        (("telemetry", "gradient_health"), float("nan"), "'telemetry.gradient_health': expected a number"),
        (("metrics", "best_val_accuracy"), float("inf"), "'metrics.best_val_accuracy': expected a finite number"),
        # negative counts
        (("metrics", "epochs_total"), -1, "'metrics.epochs_total': expected a count >= 0, got int -1"),
        (("previous_epochs_in_stage",), -2, "'previous_epochs_in_stage': expected a count >= 0"),
        (("gate_total_steps",), -1, "'gate_total_steps': expected a count >= 0"),
        (("telemetry", "epoch"), -1, "'telemetry.epoch': expected a count >= 0"),
        (("alpha_controller", "alpha_steps_total"), -3, "'alpha_controller.alpha_steps_total': expected a count >= 0"),
        # values out of range
        (("alpha_controller", "alpha"), 5.0, r"'alpha_controller.alpha': expected a number within \[0\.0, 1\.0\], got float 5\.0"),
        (("alpha_controller", "alpha_start"), -0.5, r"'alpha_controller.alpha_start': expected a number within \[0\.0, 1\.0\]"),
        (("alpha_controller", "alpha_target"), 1.5, r"'alpha_controller.alpha_target': expected a number within"),
        (("alpha_controller", "alpha_steepness"), 0.05, r"'alpha_controller.alpha_steepness': expected a number within \[0\.1, inf\]"),
        (("telemetry", "gradient_health"), 1.5, r"'telemetry.gradient_health': expected a number within \[0\.0, 1\.0\]"),
        (("telemetry", "gradient_norm"), -1.0, "'telemetry.gradient_norm': expected a number within"),
        (("metrics", "seed_gradient_norm_ratio"), -1.0, "'metrics.seed_gradient_norm_ratio': expected a number within"),
        (("blend_alpha_target",), 1.5, "'blend_alpha_target': expected a number within"),
        (("topology",), "mlp", r"topology': 'mlp' is not one of \['cnn', 'transformer'\]"),
        (("blend_algorithm_id",), "cubic", r"blend_algorithm_id': 'cubic' is not one of \['linear', 'sigmoid', 'gated'\]"),
    ],
)
def test_state_from_dict_invalid_value_names_the_field(path: tuple[str, ...], value: Any, match: str) -> None:
    data = state_to_dict(to_blending(fresh()))
    _set(data, path, value)
    with pytest.raises(CheckpointError, match=match):
        state_from_dict(data)


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda d: d["telemetry"].pop("epoch"), r"missing field\(s\) \['telemetry\.epoch'\], unknown field\(s\) \[\]"),
        (lambda d: d["metrics"].pop("epochs_total"), r"missing field\(s\) \['metrics\.epochs_total'\]"),
        (lambda d: d["alpha_controller"].pop("alpha"), r"missing field\(s\) \['alpha_controller\.alpha'\]"),
        (lambda d: d.pop("blend_out_frozen"), r"missing field\(s\) \['blend_out_frozen'\]"),
        (lambda d: d.pop("telemetry"), r"missing field\(s\) \['telemetry'\]"),
        # Version-1 fields are unknown in version 2.
        (lambda d: d.update(alpha=0.5), r"unknown field\(s\) \['alpha'\]"),
        (lambda d: d.update(isolate_gradients=True), r"unknown field\(s\) \['isolate_gradients'\]"),
        (lambda d: d["metrics"].update(current_alpha=0.0), r"unknown field\(s\) \['metrics\.current_alpha'\]"),
        (lambda d: d["telemetry"].update(accuracy=1.0), r"unknown field\(s\) \['telemetry\.accuracy'\]"),
        (lambda d: d.update(surprise=1), r"unknown field\(s\) \['surprise'\]"),
    ],
)
def test_state_from_dict_missing_or_unknown_field_names_it(edit: Any, match: str) -> None:
    data = state_to_dict(fresh())
    edit(data)
    with pytest.raises(CheckpointError, match=match):
        state_from_dict(data)


def test_state_from_dict_version_and_schema() -> None:
    data = state_to_dict(fresh())
    with pytest.raises(CheckpointError, match="schema_version 3 is not supported; this esper_func reads 1 and 2"):
        state_from_dict({**data, "schema_version": 3})
    with pytest.raises(CheckpointError, match="schema_version None is not supported"):
        state_from_dict({k: v for k, v in data.items() if k != "schema_version"})
    with pytest.raises(CheckpointError, match="not a seed state: 'schema' is 'other'"):
        state_from_dict({**data, "schema": "other"})
    with pytest.raises(CheckpointError, match="a seed state must be a dict; got list"):
        state_from_dict([])  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="state_to_dict\\(\\) takes a SeedState; got dict"):
        state_to_dict(data)  # type: ignore[arg-type]
    # A version-2 dict labelled version 1 is not silently accepted.
    with pytest.raises(CheckpointError, match="version-1 seed state is incomplete"):
        state_from_dict({**data, "schema_version": 1})


# ============================================================================ esper-lite layout


def esper_lite_telemetry(**overrides: Any) -> dict[str, Any]:
    """esper-lite's SeedTelemetry.to_dict() of a BLENDING seed mid-ramp."""
    data: dict[str, Any] = {
        "schema_version": 1,
        "seed_id": "r0c0-norm",
        "blueprint_id": "norm",
        "layer_id": "",
        "gradient_norm": 0.5,
        "gradient_health": 0.8,
        "has_vanishing": False,
        "has_exploding": True,
        "accuracy": 55.0,
        "accuracy_delta": 1.0,
        "epochs_in_stage": 2,
        "stage": 4,
        "alpha": 0.23014069577164564,
        "alpha_target": 1.0,
        "alpha_mode": 1,
        "alpha_steps_total": 5,
        "alpha_steps_done": 2,
        "time_to_target": 3,
        "alpha_velocity": 0.2,
        "alpha_algorithm": 1,
        "epoch": 14,
        "max_epochs": 25,
        "captured_at": "2025-01-01T00:02:00+00:00",
        "blend_tempo_epochs": 5,
        "blending_velocity": 0.11507034788582282,
        "alpha_curve": "LINEAR",
    }
    data.update(overrides)
    return data


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
        "telemetry": esper_lite_telemetry(),
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


EXTRA = {
    "_extra_state_version": 1,
    "isolate_gradients": True,
    "blend_algorithm_id": "sigmoid",
    "blend_tempo_epochs": 5,
    "blend_alpha_target": 1.0,
    "resolved_topology": "cnn",
    "seed_state": None,
    "alpha_schedule_config": None,
}


def test_seed_state_from_esper_lite_continues_like_ours() -> None:
    state = seed_state_from_esper_lite(esper_lite_dict(), extra=EXTRA)
    assert state.stage == S.BLENDING and state.previous_stage == S.TRAINING
    assert state.alpha == 0.23014069577164564 and state.alpha_controller.alpha_steps_done == 2
    assert state.stage_entered_epoch == 12
    assert state.stage_history == ((S.GERMINATED, -1), (S.TRAINING, -1), (S.BLENDING, 12))
    assert state.metrics.blending_started and state.metrics.seed_gradient_norm_ratio == 0.4
    assert state.telemetry == SeedTelemetry(
        gradient_norm=0.5, gradient_health=0.8, has_vanishing=False, has_exploding=True, epoch=14, max_epochs=25
    )
    assert state.isolate_gradients and state.topology == "cnn" and state.blend_algorithm_id == "sigmoid"
    assert not state.blend_out_frozen and trainable(state) and state.gate_total_steps == 0
    # The ramp continues exactly where esper-lite left it.
    alphas = []
    for _ in range(3):
        state, _ = step_epoch(state, Gates())
        alphas.append(state.alpha)
    assert alphas == pytest.approx(SIGMOID_5[2:], abs=1e-15)
    assert through_json(state) == state


def test_seed_state_from_esper_lite_keeps_unmeasured_telemetry_none() -> None:
    unmeasured = esper_lite_telemetry(gradient_norm=None, gradient_health=None, has_vanishing=None, has_exploding=None, epoch=0)
    state = seed_state_from_esper_lite(esper_lite_dict(telemetry=unmeasured), extra=EXTRA)
    assert state.telemetry == SeedTelemetry()
    written = seed_state_to_esper_lite(state)["telemetry"]
    assert [written[k] for k in ("gradient_norm", "gradient_health", "has_vanishing", "has_exploding", "epoch")] == [
        None, None, None, None, 0,
    ]
    # A seed with no telemetry at all (esper-lite: optional for a new seed) is unmeasured too.
    for empty in (None, {}):
        assert seed_state_from_esper_lite(esper_lite_dict(telemetry=empty)).telemetry == SeedTelemetry()


def test_seed_state_from_esper_lite_defaults_without_extra() -> None:
    state = seed_state_from_esper_lite(esper_lite_dict(alpha_algorithm=3, telemetry=None, metrics=None), extra=None)
    assert state.blend_algorithm_id == "gated" and state.alpha_algorithm == AlphaAlgorithm.GATE
    assert state.isolate_gradients is True  # BLENDING on a CNN host
    assert state.metrics == SeedMetrics() and state.telemetry == SeedTelemetry()
    assert seed_state_from_esper_lite(esper_lite_dict(), topology="transformer").isolate_gradients is False
    # A missing previous stage reads as UNKNOWN.
    assert seed_state_from_esper_lite(esper_lite_dict(previous_stage=None)).previous_stage == S.UNKNOWN


def test_seed_state_from_esper_lite_rederives_the_freeze() -> None:
    data = esper_lite_dict()
    data["alpha_controller"].update(alpha_start=1.0, alpha_target=0.0, alpha_mode=2)
    state = seed_state_from_esper_lite(data)
    assert state.blend_out_frozen and not trainable(state)


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda d: d.pop("stage"), "has no 'stage'"),
        (lambda d: d.pop("alpha"), "has no 'alpha'"),
        (lambda d: d["alpha_controller"].pop("alpha_steepness"), r"no alpha_controller\.'alpha_steepness'"),
        (lambda d: d["alpha_controller"].pop("alpha_mode"), r"no alpha_controller\.'alpha_mode'"),
        (lambda d: d["metrics"].pop("epochs_total"), r"no metrics\.'epochs_total'"),
        (lambda d: d["metrics"].pop("current_alpha"), "has no 'metrics.current_alpha'"),
        (lambda d: d["metrics"].pop("_blending_started"), r"no metrics\.'_blending_started'"),
        (lambda d: d["telemetry"].pop("gradient_health"), r"no telemetry\.'gradient_health'"),
        (lambda d: d.pop("alpha_algorithm"), "missing required 'alpha_algorithm'"),
        (lambda d: d.pop("alpha_controller"), "missing required 'alpha_controller'"),
        (lambda d: d.update(alpha="x"), "'alpha': expected a number"),
        (lambda d: d.update(alpha=5.0), r"'alpha': expected a number within \[0\.0, 1\.0\]"),
        (lambda d: d["telemetry"].update(gradient_health=float("nan")), "'telemetry.gradient_health': expected a number"),
        (lambda d: d["metrics"].update(epochs_total=-4), "'metrics.epochs_total': expected a count >= 0"),
        (lambda d: d["metrics"].update(_schema_version=1), "SeedMetrics schema version 1"),
        (lambda d: d.update(stage=5), "5 is not a SeedStage"),
        (lambda d: d.update(alpha_algorithm=0), "0 is not a AlphaAlgorithm"),
        (lambda d: d.update(stage_history=[(2,)]), r"'stage_history\[0\]': expected a \[stage, timestamp\] pair"),
    ],
)
def test_seed_state_from_esper_lite_errors(mutate: Any, match: str) -> None:
    data = esper_lite_dict()
    mutate(data)
    with pytest.raises(CheckpointError, match=match):
        seed_state_from_esper_lite(data)


def test_seed_state_to_esper_lite_layout() -> None:
    state = record_accuracy(to_blending(fresh()), 41.0)
    state, _ = step_epoch(state, Gates())
    data = seed_state_to_esper_lite(state)
    assert set(data) == {
        "seed_id", "blueprint_id", "slot_id", "stage", "previous_stage", "stage_entered_at", "alpha",
        "stage_history", "metrics", "telemetry", "alpha_controller", "alpha_algorithm", "blend_tempo_epochs",
        "is_healthy", "is_paused", "previous_epochs_in_stage",
    }  # fmt: skip
    assert data["alpha"] == data["metrics"]["current_alpha"] == data["alpha_controller"]["alpha"] == SIGMOID_5[0]
    assert data["metrics"]["_schema_version"] == 2 and data["metrics"]["_blending_started"] is True
    assert "auto_pruned" not in data["metrics"] and "blending_started" not in data["metrics"]
    assert data["stage_entered_at"] == ef.lifecycle.codec.epoch_timestamp(0) == "1970-01-01T00:00:00+00:00"
    assert data["stage_history"][-1] == [4, "1970-01-01T00:00:00+00:00"]
    t = data["telemetry"]
    assert (t["gradient_health"], t["has_exploding"], t["has_vanishing"], t["gradient_norm"], t["epoch"]) == (
        1.0, False, None, None, 1,
    )
    assert (t["stage"], t["alpha"], t["alpha_mode"], t["time_to_target"], t["epochs_in_stage"]) == (
        4, SIGMOID_5[0], 1, 4, 1,
    )
    assert t["alpha_velocity"] == pytest.approx(0.2) and t["blending_velocity"] == SIGMOID_5[0]
    json.dumps(data, allow_nan=False)
    with pytest.raises(CheckpointError, match="takes a SeedState"):
        seed_state_to_esper_lite({})  # type: ignore[arg-type]


def esper_lite_view(state: SeedState) -> SeedState:
    """``state`` as esper-lite's layout carries it (see ``seed_state_to_esper_lite``'s docstring)."""
    history = (*((stage, -1) for stage, _ in state.stage_history[:-1]), (state.stage, state.stage_entered_epoch))
    return dataclasses.replace(
        state,
        stage_history=history,
        metrics=dataclasses.replace(state.metrics, auto_pruned=False, auto_prune_reason=""),
        pending_prune_reason=None,
        pending_prune_initiator=None,
        blend_out_frozen=state.alpha_controller.alpha_mode == AlphaMode.DOWN,
    )


def freed_view(state: SeedState) -> SeedState:
    """A DORMANT ``state`` as a slot's esper-lite ``_extra_state`` carries it: the blend settings only."""
    return SeedState(
        slot_id=state.slot_id,
        seed_id="",
        blueprint_id="",
        blend_algorithm_id=state.blend_algorithm_id,
        blend_tempo_epochs=state.blend_tempo_epochs,
        blend_alpha_target=state.blend_alpha_target,
        topology=state.topology,
    )


def check_codecs(state: SeedState) -> None:
    """Every codec gives back what it can carry, through strict JSON."""
    assert through_json(state) == state
    assert state.stage_history[-1] == (state.stage, state.stage_entered_epoch)
    extra = json.loads(json.dumps(slot_extra_state(state), allow_nan=False))
    assert extra["isolate_gradients"] is state.isolate_gradients
    assert (extra["blend_algorithm_id"], extra["blend_tempo_epochs"], extra["blend_alpha_target"]) == (
        state.blend_algorithm_id,
        state.blend_tempo_epochs,
        state.blend_alpha_target,
    )
    assert extra["resolved_topology"] == state.topology
    expected_schedule = (
        {"algorithm_id": "gated", "total_steps": state.gate_total_steps, "current_step": 0} if has_gate(state) else None
    )
    assert extra["alpha_schedule_config"] == expected_schedule
    back = state_from_slot_extra_state(extra, slot_id=state.slot_id)
    if state.stage == S.DORMANT:
        # A freed slot keeps only the last seed's blend settings, and is written back as it was saved.
        assert extra["seed_state"] is None and back == freed_view(state)
        assert slot_extra_state(back) == extra
        return
    view = esper_lite_view(state)
    assert back == view
    assert seed_state_from_esper_lite(seed_state_to_esper_lite(state), extra=extra) == view
    # Without the slot's extra state, only the blend settings fall back to esper-lite's defaults.
    bare = seed_state_from_esper_lite(seed_state_to_esper_lite(state), topology=state.topology)
    assert dataclasses.replace(
        bare,
        blend_algorithm_id=view.blend_algorithm_id,
        blend_alpha_target=view.blend_alpha_target,
        gate_total_steps=view.gate_total_steps,
    ) == view


@pytest.mark.parametrize("stage", list(REACH))
@pytest.mark.parametrize("algorithm,blend", [(AlphaAlgorithm.ADD, "sigmoid"), (AlphaAlgorithm.GATE, "gated")])
def test_codecs_in_every_stage(stage: SeedStage, algorithm: AlphaAlgorithm, blend: str) -> None:
    target = None if stage in (S.HOLDING, S.FOSSILIZED) else 0.5
    check_codecs(reach(stage, algorithm=algorithm, blend=blend, tempo=3, alpha_target=target, topology="transformer"))


def test_slot_extra_state_layouts() -> None:
    assert slot_extra_state(None, topology="cnn") == {
        "_extra_state_version": 1,
        "isolate_gradients": False,
        "blend_algorithm_id": None,
        "blend_tempo_epochs": None,
        "blend_alpha_target": None,
        "resolved_topology": "cnn",
        "seed_state": None,
        "alpha_schedule_config": None,
    }
    assert state_from_slot_extra_state(slot_extra_state(None, topology="cnn")) is None
    # A slot freed after a prune keeps the last occupant's blend settings, as esper-lite's slot does.
    dormant = to_dormant(fresh(blend="linear", tempo=3, alpha_target=0.5, topology="transformer"))
    assert slot_extra_state(dormant) == {
        "_extra_state_version": 1,
        "isolate_gradients": False,
        "blend_algorithm_id": "linear",
        "blend_tempo_epochs": 3,
        "blend_alpha_target": 0.5,
        "resolved_topology": "transformer",
        "seed_state": None,
        "alpha_schedule_config": None,
    }
    freed = state_from_slot_extra_state(slot_extra_state(dormant), slot_id="r3c1")
    assert freed == dataclasses.replace(freed_view(dormant), slot_id="r3c1")
    assert freed.stage == S.DORMANT and (freed.seed_id, freed.blueprint_id) == ("", "")
    assert slot_extra_state(freed) == slot_extra_state(dormant)
    gated = to_blending(fresh(algorithm=AlphaAlgorithm.GATE, blend="gated", tempo=4))
    extra = slot_extra_state(gated)
    assert extra["alpha_schedule_config"] == {"algorithm_id": "gated", "total_steps": 4, "current_step": 0}
    assert extra["seed_state"] == seed_state_to_esper_lite(gated)
    assert state_from_slot_extra_state(extra) == esper_lite_view(gated)
    with pytest.raises(CheckpointError, match="takes a SeedState or None"):
        slot_extra_state({})  # type: ignore[arg-type]


def test_state_from_slot_extra_state_uses_the_given_topology_when_none_was_recorded() -> None:
    extra = slot_extra_state(to_blending(fresh()))
    extra["resolved_topology"] = None
    assert state_from_slot_extra_state(extra, topology="transformer").topology == "transformer"


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda e: e.pop("resolved_topology"), r"lacks \['resolved_topology'\]"),
        (lambda e: e.pop("alpha_schedule_config"), r"lacks \['alpha_schedule_config'\]"),
        (lambda e: e.update(_extra_state_version=2), "has _extra_state_version 2; this esper_func reads version 1"),
        (lambda e: e.update(isolate_gradients=1), "isolate_gradients': expected true or false"),
        (lambda e: e.update(alpha_schedule_config=None), "a GATE seed in stage BLENDING has no gate schedule"),
        (
            lambda e: e.update(alpha_schedule_config={"algorithm_id": "linear", "total_steps": 2, "current_step": 0}),
            "algorithm_id 'linear' is not supported",
        ),
        (
            lambda e: e.update(alpha_schedule_config={"algorithm_id": "gated", "total_steps": 0, "current_step": 0}),
            r"total_steps must be >= 1 \(esper-lite's GatedBlend\); got 0",
        ),
        (lambda e: e.update(blend_tempo_epochs=-1), "'extra.blend_tempo_epochs': expected a count >= 0"),
        (lambda e: e.update(resolved_topology="rnn"), r"topology': 'rnn' is not one of"),
        (lambda e: e["seed_state"].pop("alpha"), "has no 'alpha'"),
        (lambda e: e["seed_state"]["alpha_controller"].pop("alpha_steepness"), r"alpha_controller\.'alpha_steepness'"),
    ],
)
def test_state_from_slot_extra_state_errors(edit: Any, match: str) -> None:
    extra = copy.deepcopy(slot_extra_state(to_blending(fresh(algorithm=AlphaAlgorithm.GATE, blend="gated", tempo=2))))
    edit(extra)
    with pytest.raises(CheckpointError, match=match):
        state_from_slot_extra_state(extra)


def test_state_from_slot_extra_state_refuses_a_gate_schedule_that_does_not_fit() -> None:
    extra = slot_extra_state(to_blending(fresh()))  # an ADD seed
    extra["alpha_schedule_config"] = {"algorithm_id": "gated", "total_steps": 2, "current_step": 0}
    with pytest.raises(CheckpointError, match="a 'gated' schedule but the seed's alpha_algorithm is ADD"):
        state_from_slot_extra_state(extra)
    free = slot_extra_state(None, topology="cnn")
    free["alpha_schedule_config"] = {"algorithm_id": "gated", "total_steps": 2, "current_step": 0}
    with pytest.raises(CheckpointError, match="has an alpha_schedule_config but no seed_state"):
        state_from_slot_extra_state(free)
    training_gate = slot_extra_state(to_training(fresh(algorithm=AlphaAlgorithm.GATE, blend="gated")))
    training_gate["alpha_schedule_config"] = {"algorithm_id": "gated", "total_steps": 2, "current_step": 0}
    with pytest.raises(CheckpointError, match="a GATE seed in stage TRAINING has a gate schedule"):
        state_from_slot_extra_state(training_gate)
    with pytest.raises(CheckpointError, match=r"must be the dict written by esper-lite's SeedSlot\.get_extra_state"):
        state_from_slot_extra_state([])


# ============================================================================ random legal operation sequences

_health = st.one_of(st.none(), st.sampled_from([0.0, 0.5, 0.7, 0.9, 1.0]))
_flag = st.one_of(st.none(), st.booleans())
_curve = st.one_of(st.none(), st.sampled_from(list(AlphaCurve)))
_reason = st.sampled_from(["", "policy_prune", "governor_nan"])

_TRAIN = st.tuples(
    st.just("train"),
    st.sampled_from([-0.5, 0.0, 0.75, 2.0]),
    st.sampled_from([1.0, 1.0, 0.9, None, 0.5]),
    st.sampled_from([False, False, None, True]),
)
_GERMINATE = st.tuples(
    st.just("germinate"),
    st.sampled_from([("sigmoid", AlphaAlgorithm.ADD), ("linear", AlphaAlgorithm.MULTIPLY), ("gated", AlphaAlgorithm.GATE)]),
    st.integers(1, 4),
    st.sampled_from([None, 1.0, 0.25]),
    st.sampled_from(["cnn", "transformer"]),
)
_ADVANCE = st.tuples(st.just("advance"), st.sampled_from([None, None, S.TRAINING, S.BLENDING, S.HOLDING, S.FOSSILIZED]))
_OPERATIONS = {
    "train": _TRAIN,
    "advance": _ADVANCE,
    # Prunes act in one draw of four (or from BLENDING/HOLDING), so that seeds live long enough to grow.
    "prune": st.tuples(st.just("prune"), _reason, st.integers(0, 3)),
    "schedule_prune": st.tuples(st.just("schedule_prune"), st.integers(-1, 4), _curve, _reason, st.integers(0, 3)),
    "set_alpha_target": st.tuples(
        st.just("set_alpha_target"),
        st.sampled_from([-0.5, 0.0, 1e-7, 0.25, 0.5, 1.0, 1.5]),
        st.integers(0, 4),
        _curve,
        st.one_of(st.none(), st.sampled_from(list(AlphaAlgorithm))),
    ),
    "step": st.tuples(st.just("step"), st.frozensets(st.sampled_from([GateLevel.G1, GateLevel.G2, GateLevel.G3]))),
    "accuracy": st.tuples(st.just("accuracy"), st.floats(0.0, 100.0)),
    "contribution": st.tuples(st.just("contribution"), st.floats(-5.0, 5.0)),
    "gradients": st.tuples(st.just("gradients"), st.floats(0.0, 10.0), st.floats(0.0, 10.0), _health, _flag, _flag),
    "sync": st.tuples(
        st.just("sync"), st.integers(0, 30), _health, _flag, _flag, st.one_of(st.none(), st.floats(0.0, 50.0))
    ),
    "germinate": _GERMINATE,
}
# Training epochs and advances are drawn most often, so that seeds get to HOLDING, FOSSILIZED and back.
_WEIGHTS = {"train": 5, "advance": 3, "germinate": 2, "set_alpha_target": 2}
OPERATION = st.sampled_from([name for name in _OPERATIONS for _ in range(_WEIGHTS.get(name, 1))]).flatmap(
    _OPERATIONS.__getitem__
)

Step = tuple[str, SeedState, SeedState, tuple[Any, ...]]


def run(first: SeedState, operations: list[tuple[Any, ...]], gates: Gates) -> list[Step]:
    """Apply ``operations`` in order (germinate only into a free slot); every single call is one step."""
    steps: list[Step] = []
    state = first
    epoch = 0

    def do(name: str, new: SeedState, events: tuple[Any, ...] = ()) -> None:
        nonlocal state
        steps.append((name, state, new, events))
        state = new

    for op in operations:
        name = op[0]
        if name == "train":
            _, delta, health, exploding = op
            epoch += 1
            do("accuracy", record_accuracy(state, min(100.0, max(0.0, state.metrics.current_val_accuracy + delta))))
            do("sync", sync_telemetry(state, epoch=epoch, gradient_health=health, has_exploding=exploding))
            do("contribution", record_contribution(state, delta))
            do("step", *step_epoch(state, gates, auto_forward=ALL_LEVELS))
        elif name == "advance":
            new, _, events = advance(state, gates, op[1])
            do(name, new, events)
        elif name == "prune" and op[2] == 0:
            do(name, *prune(state, op[1]))
        elif name == "schedule_prune" and (op[4] == 0 or state.stage in (S.BLENDING, S.HOLDING)):
            do(name, *schedule_prune(state, steps=op[1], curve=op[2], reason=op[3]))
        elif name == "set_alpha_target":
            _, target, n, curve, algorithm = op
            do(name, *set_alpha_target(state, alpha_target=target, steps=n, curve=curve, alpha_algorithm=algorithm))
        elif name == "step":
            do(name, *step_epoch(state, gates, auto_forward=op[1]))
        elif name == "accuracy":
            do(name, record_accuracy(state, op[1]))
        elif name == "contribution":
            do(name, record_contribution(state, op[1]))
        elif name == "gradients":
            _, host, seed, health, exploding, vanishing = op
            new = record_gradients(
                state,
                host_grad_norm=host,
                seed_grad_norm=seed,
                gradient_health=health,
                has_exploding=exploding,
                has_vanishing=vanishing,
            )
            do(name, new)
        elif name == "sync":
            _, at, health, exploding, vanishing, norm = op
            new = sync_telemetry(
                state, epoch=at, gradient_health=health, has_exploding=exploding, has_vanishing=vanishing, gradient_norm=norm
            )
            do(name, new)
        elif name == "germinate" and state.stage == S.DORMANT:
            _, (blend, algorithm), tempo, target, topology = op
            new = germinate(
                "r0c0", "norm", algorithm=algorithm, blend=blend, tempo=tempo, alpha_target=target, topology=topology
            )
            do(name, new)
    return steps


def expected_freeze(name: str, old: SeedState, new: SeedState, events: tuple[Any, ...]) -> bool:
    """The blend-out freeze rule, written out from its specification."""
    if new is old or name in ("accuracy", "contribution", "gradients", "sync", "advance"):
        return old.blend_out_frozen
    if name in ("germinate", "prune"):
        return False
    if name == "schedule_prune":  # accepted: either pruned now or fading out
        return new.stage != S.PRUNED
    if name == "set_alpha_target":
        return new.alpha_controller.alpha_mode == AlphaMode.DOWN
    assert name == "step"
    if any(isinstance(e, SeedPruned) for e in events) or new.stage == S.DORMANT:
        return False
    return old.alpha_controller.alpha_mode == AlphaMode.DOWN


@given(
    first=st.sampled_from([("sigmoid", AlphaAlgorithm.ADD), ("gated", AlphaAlgorithm.GATE), ("linear", AlphaAlgorithm.MULTIPLY)]),
    tempo=st.integers(1, 3),
    topology=st.sampled_from(["cnn", "transformer"]),
    min_epochs=st.integers(0, 2),
    operations=st.lists(OPERATION, min_size=20, max_size=60),
)
def test_random_sequences_keep_the_derived_rules_and_round_trip_every_codec(
    first: tuple[str, AlphaAlgorithm], tempo: int, topology: str, min_epochs: int, operations: list[tuple[Any, ...]]
) -> None:
    gates = Gates(permissive=True, min_blending_epochs=min_epochs, embargo_epochs=2)
    start = germinate("r0c0", "norm", blend=first[0], algorithm=first[1], tempo=tempo, topology=topology)
    check_codecs(start)
    new = start
    for name, old, new, events in run(start, operations, gates):
        # Freeze: the stored flag follows its rule, and trainable() reads it.
        frozen = expected_freeze(name, old, new, events)
        assert new.blend_out_frozen is frozen, (name, old, new)
        assert trainable(new) is (has_seed(new) and not frozen)
        # Alpha lives in the controller, within [0, 1].
        assert new.alpha == new.alpha_controller.alpha and 0.0 <= new.alpha <= 1.0
        # Derived fields.
        active = new.stage in GATED_STAGES
        assert new.isolate_gradients is (new.stage == S.TRAINING or (active and new.topology == "cnn"))
        assert has_gate(new) is (new.alpha_algorithm == AlphaAlgorithm.GATE and active)
        assert (new.gate_total_steps > 0) is has_gate(new)
        assert (new.pending_prune_reason is None) is (new.pending_prune_initiator is None)
        if new.pending_prune_reason is not None:
            assert new.stage == S.BLENDING and new.alpha_controller.alpha_mode == AlphaMode.DOWN
            assert new.alpha_controller.alpha_target == 0.0 and new.blend_out_frozen
        # Every codec on each lifecycle change; the esper_func JSON on each measurement (decoding is not cheap).
        if new.stage != old.stage or (new is not old and name not in ("accuracy", "contribution", "sync", "gradients")):
            check_codecs(new)
        elif new is not old:
            assert through_json(new) == new
    check_codecs(new)


# ============================================================================ scenarios


def test_scenario_germinate_to_fossilized_strict() -> None:
    """Default strict gates; the training loop records and syncs, then calls step_epoch with G3 auto-forward."""
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
        state = sync_telemetry(state, epoch=i, gradient_norm=0.05, gradient_health=0.95, has_vanishing=False, has_exploding=False)
        state, events = step_epoch(state, gates)  # no auto-forward: nothing happens
        assert events == () and state.stage == S.TRAINING
        if i == 9:
            same, result, _ = advance(state, gates)
            assert same is state and result.checks_failed == ("seed_not_ready",)
            assert result.checks_passed == ("global_improvement_0.70%", "seed_gradient_active_0.25")
    assert state.metrics.gradient_norm_avg == pytest.approx(0.05 * (1 - 0.9**10))
    assert state.telemetry == SeedTelemetry(
        gradient_norm=0.05, gradient_health=0.95, has_vanishing=False, has_exploding=False, epoch=10
    )

    state, result, events = advance(state, gates)
    assert result.passed
    assert result.checks_passed == ("global_improvement_0.75%", "seed_ready", "seed_gradient_active_0.25")
    assert result.message == "Improvement: 0.75%" and result.score == pytest.approx(0.15)
    assert state.stage == S.BLENDING and state.isolate_gradients
    assert state.metrics.accuracy_at_blending_start == 60.75
    assert (state.alpha_controller.alpha_mode, state.alpha_controller.alpha_curve) == (AlphaMode.UP, AlphaCurve.SIGMOID)
    # Synced, so the stage event carries the gradient telemetry.
    stage_event = events[1]
    assert stage_event.grad_ratio == pytest.approx(0.25) and (stage_event.has_vanishing, stage_event.has_exploding) == (
        False, False,
    )
    assert (stage_event.epoch, stage_event.epochs_in_stage, stage_event.accuracy_delta) == (10, 10, 0.75)

    # BLENDING: alpha follows the closed-form sigmoid (steepness 12, 5 steps); G3 needs 10 epochs.
    expected_alpha = SIGMOID_5 + [1.0] * 5
    expected_mode = [AlphaMode.UP] * 4 + [AlphaMode.HOLD] * 6
    for epoch in range(10):
        state = record_accuracy(state, 61.0)
        state, events = step_epoch(state, gates, auto_forward=G3)
        assert state.alpha == pytest.approx(expected_alpha[epoch], abs=1e-15)
        assert state.alpha_controller.alpha_mode == expected_mode[epoch]
        assert state.metrics.alpha_ramp_step == min(epoch + 1, 5)
        assert not state.blend_out_frozen
        if epoch < 9:  # strict G3 is evaluated once the seed has 10 epochs in BLENDING
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
    assert events[2] == SeedFossilized(
        slot_id="r0c0",
        seed_id="r0c0-norm",
        blueprint_id="norm",
        epoch=20,
        improvement=1.0,
        counterfactual=1.5,
        params_added=1_000,
        alpha=1.0,
        epochs_total=20,
        blending_delta=0.25,
    )
    assert [s for s, _ in state.stage_history] == [S.GERMINATED, S.TRAINING, S.BLENDING, S.HOLDING, S.FOSSILIZED]
    assert [e for _, e in state.stage_history] == [0, 0, 10, 20, 20]

    # FOSSILIZED is terminal.
    assert prune(state) == (state, ())
    assert schedule_prune(state, steps=3) == (state, ())
    assert set_alpha_target(state, alpha_target=0.5, steps=2) == (state, ())
    assert advance(state, gates)[1].checks_failed == ("no_valid_transition",)
    assert step_epoch(state, gates, auto_forward=ALL_LEVELS) == (state, ())
    check_codecs(state)


def test_scenario_scheduled_prune_through_cooldown() -> None:
    """Permissive gates, linear tempo 4, scheduled prune over 2 epochs, default dwell 5 + 1, no records."""
    gates = Gates(permissive=True, min_blending_epochs=2)
    state = germinate("r2c0", "conv_light", blend="linear", tempo=4, seed_params=500)
    state, _, _ = advance(state, gates)
    state = record_accuracy(record_accuracy(state, 50.0), 49.0)  # permissive: no improvement needed
    same, result, _ = advance(state, gates)
    assert same is state and result.checks_failed == ("gradient_health_not_measured",)
    state = sync_telemetry(state, epoch=2, gradient_health=0.8, has_exploding=False)
    state, result, _ = advance(state, gates)
    assert result.passed
    assert result.checks_passed == ("trained_2_epochs", "no_exploding_gradients", "gradient_health_0.80")
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
    assert events[1].blending_delta == 0.0 and events[1].improvement == -1.0
    assert state.pending_prune_reason is None and not trainable(state) and not state.blend_out_frozen

    trace = []
    for _ in range(7):
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


def test_scenario_recording_through_the_cooldown() -> None:
    """A loop that records every slot each epoch shortens the embargo (esper-lite counts those epochs)."""
    state, _ = prune(to_holding(fresh()))
    trace = []
    while state.stage != S.DORMANT and len(trace) < 10:
        state = record_accuracy(state, 99.0)
        state, events = step_epoch(state, Gates())
        trace.append((state.stage.name, state.metrics.epochs_in_current_stage, state.metrics.epochs_total, stage_moves(events)))
    assert trace == [
        ("EMBARGOED", 0, 1, [("PRUNED", "EMBARGOED")]),
        ("EMBARGOED", 2, 3, []),
        ("EMBARGOED", 4, 5, []),
        ("RESETTING", 0, 7, [("EMBARGOED", "RESETTING")]),
        ("DORMANT", 0, 9, [("RESETTING", "DORMANT")]),
    ]
    assert state.metrics.current_val_accuracy == 99.0
    # Once DORMANT, records are ignored again.
    assert record_accuracy(state, 10.0) is state
