"""Table tests: every check of gates G0, G1, G2, G3, G5, passing and failing, in both modes.

Expected check names, messages and scores are esper-lite's ``QualityGates``
strings, written out literally.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esper_func.errors import IllegalTransitionError
from esper_func.lifecycle import SeedState, SeedTelemetry, germinate
from esper_func.lifecycle.alpha import AlphaController, AlphaMode
from esper_func.lifecycle.gates import GATE_FOR_STAGE, GateLevel, GateResult, Gates, check_gate, gate_for_stage
from esper_func.lifecycle.stages import SeedStage

S = SeedStage


def base(stage: SeedStage = S.GERMINATED) -> SeedState:
    return dataclasses.replace(germinate("r0c0", "norm", seed_params=100, host_params=10_000), stage=stage)


def with_metrics(state: SeedState, **kwargs: Any) -> SeedState:
    return dataclasses.replace(state, metrics=dataclasses.replace(state.metrics, **kwargs))


def training(
    improvement: float = 0.6,
    epochs: int = 10,
    ratio: float | None = 0.25,
    *,
    health: float | None = 1.0,
    exploding: bool | None = False,
    vanishing: bool | None = None,
) -> SeedState:
    """A TRAINING seed; gradient telemetry measured (health 1.0, not exploding) unless told otherwise."""
    state = with_metrics(
        base(S.TRAINING),
        accuracy_at_stage_start=50.0,
        current_val_accuracy=50.0 + improvement,
        epochs_in_current_stage=epochs,
        seed_gradient_norm_ratio=ratio,
    )
    telemetry = SeedTelemetry(gradient_health=health, has_exploding=exploding, has_vanishing=vanishing, epoch=1)
    return dataclasses.replace(state, telemetry=telemetry)


def blending(alpha: float = 1.0, target: float = 1.0, mode: AlphaMode = AlphaMode.HOLD, epochs: int = 10) -> SeedState:
    ctrl = AlphaController(alpha=alpha, alpha_start=0.0, alpha_target=target, alpha_mode=mode, alpha_steps_total=5)
    state = dataclasses.replace(base(S.BLENDING), alpha_controller=ctrl)
    return with_metrics(state, epochs_in_current_stage=epochs)


def holding(contribution: float | None = 1.5, healthy: bool = True) -> SeedState:
    ctrl = AlphaController(alpha=1.0, alpha_start=1.0, alpha_target=1.0, alpha_steps_total=5, alpha_steps_done=5)
    state = dataclasses.replace(base(S.HOLDING), is_healthy=healthy, alpha_controller=ctrl)
    return with_metrics(state, counterfactual_contribution=contribution)


BOTH = (False, True)

CASES: list[tuple[str, tuple[bool, ...], Callable[[], SeedState], SeedStage, GateResult]] = [
    # ---- G0 (same in both modes)
    (
        "g0-pass",
        BOTH,
        lambda: base(),
        S.GERMINATED,
        GateResult(
            gate=GateLevel.G0,
            passed=True,
            score=1.0,
            checks_passed=("seed_id_present", "blueprint_id_present"),
            message="Germination gate",
        ),
    ),
    (
        "g0-no-seed-id",
        BOTH,
        lambda: dataclasses.replace(base(), seed_id=""),
        S.GERMINATED,
        GateResult(
            gate=GateLevel.G0,
            passed=False,
            score=0.0,
            checks_passed=("blueprint_id_present",),
            checks_failed=("seed_id_missing",),
            message="Missing required fields",
        ),
    ),
    (
        "g0-no-ids",
        BOTH,
        lambda: dataclasses.replace(base(), seed_id="", blueprint_id=""),
        S.GERMINATED,
        GateResult(
            gate=GateLevel.G0,
            passed=False,
            score=0.0,
            checks_failed=("seed_id_missing", "blueprint_id_missing"),
            message="Missing required fields",
        ),
    ),
    # ---- G1 (same in both modes)
    (
        "g1-pass",
        BOTH,
        lambda: base(S.GERMINATED),
        S.TRAINING,
        GateResult(
            gate=GateLevel.G1, passed=True, score=1.0, checks_passed=("germinated",), message="Ready for training"
        ),
    ),
    (
        "g1-not-germinated",
        BOTH,
        lambda: base(S.BLENDING),
        S.TRAINING,
        GateResult(
            gate=GateLevel.G1, passed=False, score=0.0, checks_failed=("not_germinated",), message="Not germinated"
        ),
    ),
    # ---- G2 strict
    (
        "g2-strict-pass",
        (False,),
        lambda: training(),
        S.BLENDING,
        GateResult(
            gate=GateLevel.G2,
            passed=True,
            score=pytest.approx(0.12),  # type: ignore[arg-type]
            checks_passed=("global_improvement_0.60%", "seed_ready", "seed_gradient_active_0.25"),
            message="Improvement: 0.60%",
        ),
    ),
    (
        "g2-strict-boundaries-pass",
        (False,),
        lambda: training(improvement=0.5, epochs=10, ratio=0.10),
        S.BLENDING,
        GateResult(
            gate=GateLevel.G2,
            passed=True,
            score=0.1,
            checks_passed=("global_improvement_0.50%", "seed_ready", "seed_gradient_active_0.10"),
            message="Improvement: 0.50%",
        ),
    ),
    (
        "g2-strict-low-improvement",
        (False,),
        lambda: training(improvement=0.375),
        S.BLENDING,
        GateResult(
            gate=GateLevel.G2,
            passed=False,
            score=0.075,
            checks_passed=("seed_ready", "seed_gradient_active_0.25"),
            checks_failed=("global_improvement_insufficient_0.38%",),
            message="Improvement: 0.38%",
        ),
    ),
    (
        "g2-strict-negative-improvement",
        (False,),
        lambda: training(improvement=-1.25),
        S.BLENDING,
        GateResult(
            gate=GateLevel.G2,
            passed=False,
            score=0.0,
            checks_passed=("seed_ready", "seed_gradient_active_0.25"),
            checks_failed=("global_improvement_insufficient_-1.25%",),
            message="Improvement: -1.25%",
        ),
    ),
    (
        "g2-strict-too-few-epochs",
        (False,),
        lambda: training(epochs=9),
        S.BLENDING,
        GateResult(
            gate=GateLevel.G2,
            passed=False,
            score=pytest.approx(0.12),  # type: ignore[arg-type]
            checks_passed=("global_improvement_0.60%", "seed_gradient_active_0.25"),
            checks_failed=("seed_not_ready",),
            message="Improvement: 0.60%",
        ),
    ),
    (
        "g2-strict-never-measured",
        (False,),
        lambda: training(ratio=None),
        S.BLENDING,
        GateResult(
            gate=GateLevel.G2,
            passed=False,
            score=pytest.approx(0.12),  # type: ignore[arg-type]
            checks_passed=("global_improvement_0.60%", "seed_ready"),
            checks_failed=("gradient_stats_never_measured",),
            message="Improvement: 0.60%",
        ),
    ),
    (
        "g2-strict-low-gradient",
        (False,),
        lambda: training(ratio=0.05),
        S.BLENDING,
        GateResult(
            gate=GateLevel.G2,
            passed=False,
            score=pytest.approx(0.12),  # type: ignore[arg-type]
            checks_passed=("global_improvement_0.60%", "seed_ready"),
            checks_failed=("seed_gradient_low_0.05",),
            message="Improvement: 0.60%",
        ),
    ),
    (
        "g2-strict-all-fail",
        (False,),
        lambda: training(improvement=0.0, epochs=0, ratio=0.0, exploding=True, health=0.1),
        S.BLENDING,
        GateResult(
            gate=GateLevel.G2,
            passed=False,
            score=0.0,
            checks_failed=("global_improvement_insufficient_0.00%", "seed_not_ready", "seed_gradient_low_0.00"),
            message="Improvement: 0.00%",
        ),
    ),
    (
        # Strict G2 reads the gradient ratio only: unmeasured gradient health does not matter there.
        "g2-strict-ignores-gradient-health",
        (False,),
        lambda: training(health=None, exploding=None),
        S.BLENDING,
        GateResult(
            gate=GateLevel.G2,
            passed=True,
            score=pytest.approx(0.12),  # type: ignore[arg-type]
            checks_passed=("global_improvement_0.60%", "seed_ready", "seed_gradient_active_0.25"),
            message="Improvement: 0.60%",
        ),
    ),
    # ---- G2 permissive
    (
        "g2-permissive-pass",
        (True,),
        lambda: training(improvement=-3.0, ratio=None),
        S.BLENDING,
        GateResult(
            gate=GateLevel.G2,
            passed=True,
            score=0.0,
            checks_passed=("trained_10_epochs", "no_exploding_gradients", "gradient_health_1.00"),
            message="Permissive G2 Safety: PASS",
        ),
    ),
    (
        "g2-permissive-boundary-health",
        (True,),
        lambda: training(health=0.7),
        S.BLENDING,
        GateResult(
            gate=GateLevel.G2,
            passed=True,
            score=pytest.approx(0.12),  # type: ignore[arg-type]
            checks_passed=("trained_10_epochs", "no_exploding_gradients", "gradient_health_0.70"),
            message="Permissive G2 Safety: PASS",
        ),
    ),
    (
        # has_exploding never measured (None) is not "exploding": only gradient_health decides "measured".
        "g2-permissive-exploding-unmeasured",
        (True,),
        lambda: training(health=0.9, exploding=None),
        S.BLENDING,
        GateResult(
            gate=GateLevel.G2,
            passed=True,
            score=pytest.approx(0.12),  # type: ignore[arg-type]
            checks_passed=("trained_10_epochs", "no_exploding_gradients", "gradient_health_0.90"),
            message="Permissive G2 Safety: PASS",
        ),
    ),
    (
        "g2-permissive-too-few-epochs",
        (True,),
        lambda: training(epochs=3),
        S.BLENDING,
        GateResult(
            gate=GateLevel.G2,
            passed=False,
            score=pytest.approx(0.12),  # type: ignore[arg-type]
            checks_passed=("no_exploding_gradients", "gradient_health_1.00"),
            checks_failed=("insufficient_training_3_of_10",),
            message="Permissive G2 Safety: FAIL",
        ),
    ),
    (
        "g2-permissive-not-measured",
        (True,),
        lambda: training(health=None, exploding=None),
        S.BLENDING,
        GateResult(
            gate=GateLevel.G2,
            passed=False,
            score=pytest.approx(0.12),  # type: ignore[arg-type]
            checks_passed=("trained_10_epochs",),
            checks_failed=("gradient_health_not_measured",),
            message="Permissive G2 Safety: FAIL",
        ),
    ),
    (
        # Unmeasured health fails outright: no exploding or health check follows, whatever the flags say.
        "g2-permissive-not-measured-but-flagged",
        (True,),
        lambda: training(health=None, exploding=True, vanishing=True),
        S.BLENDING,
        GateResult(
            gate=GateLevel.G2,
            passed=False,
            score=pytest.approx(0.12),  # type: ignore[arg-type]
            checks_passed=("trained_10_epochs",),
            checks_failed=("gradient_health_not_measured",),
            message="Permissive G2 Safety: FAIL",
        ),
    ),
    (
        "g2-permissive-not-measured-too-few-epochs",
        (True,),
        lambda: training(improvement=0.0, epochs=3, health=None, exploding=False),
        S.BLENDING,
        GateResult(
            gate=GateLevel.G2,
            passed=False,
            score=0.0,
            checks_failed=("insufficient_training_3_of_10", "gradient_health_not_measured"),
            message="Permissive G2 Safety: FAIL",
        ),
    ),
    (
        # Exploding gradients make the health check moot: it is skipped, not reported as passed.
        "g2-permissive-exploding",
        (True,),
        lambda: training(exploding=True),
        S.BLENDING,
        GateResult(
            gate=GateLevel.G2,
            passed=False,
            score=pytest.approx(0.12),  # type: ignore[arg-type]
            checks_passed=("trained_10_epochs",),
            checks_failed=("exploding_gradients",),
            message="Permissive G2 Safety: FAIL",
        ),
    ),
    (
        "g2-permissive-exploding-and-unhealthy",
        (True,),
        lambda: training(epochs=2, exploding=True, health=0.1),
        S.BLENDING,
        GateResult(
            gate=GateLevel.G2,
            passed=False,
            score=pytest.approx(0.12),  # type: ignore[arg-type]
            checks_failed=("insufficient_training_2_of_10", "exploding_gradients"),
            message="Permissive G2 Safety: FAIL",
        ),
    ),
    (
        "g2-permissive-unhealthy-gradients",
        (True,),
        lambda: training(health=0.5),
        S.BLENDING,
        GateResult(
            gate=GateLevel.G2,
            passed=False,
            score=pytest.approx(0.12),  # type: ignore[arg-type]
            checks_passed=("trained_10_epochs", "no_exploding_gradients"),
            checks_failed=("gradient_health_low_0.50_need_0.70",),
            message="Permissive G2 Safety: FAIL",
        ),
    ),
    (
        # Measured zero health is measured: it fails the threshold, not the "measured" check.
        "g2-permissive-zero-health",
        (True,),
        lambda: training(health=0.0, exploding=False),
        S.BLENDING,
        GateResult(
            gate=GateLevel.G2,
            passed=False,
            score=pytest.approx(0.12),  # type: ignore[arg-type]
            checks_passed=("trained_10_epochs", "no_exploding_gradients"),
            checks_failed=("gradient_health_low_0.00_need_0.70",),
            message="Permissive G2 Safety: FAIL",
        ),
    ),
    (
        # Just below the threshold; the two-decimal name rounds it up to the threshold (esper-lite's format).
        "g2-permissive-health-just-below",
        (True,),
        lambda: training(health=0.699),
        S.BLENDING,
        GateResult(
            gate=GateLevel.G2,
            passed=False,
            score=pytest.approx(0.12),  # type: ignore[arg-type]
            checks_passed=("trained_10_epochs", "no_exploding_gradients"),
            checks_failed=("gradient_health_low_0.70_need_0.70",),
            message="Permissive G2 Safety: FAIL",
        ),
    ),
    # ---- G3 strict
    (
        "g3-strict-pass",
        (False,),
        lambda: blending(),
        S.HOLDING,
        GateResult(
            gate=GateLevel.G3,
            passed=True,
            score=1.0,
            checks_passed=("alpha_target_full", "alpha_target_reached", "blending_complete"),
        ),
    ),
    (
        "g3-strict-mid-ramp",
        (False,),
        lambda: blending(alpha=0.5, mode=AlphaMode.UP),
        S.HOLDING,
        GateResult(
            gate=GateLevel.G3,
            passed=False,
            score=0.5,
            checks_passed=("alpha_target_full", "blending_complete"),
            checks_failed=("alpha_not_at_target_0.50_target_1.00_mode_UP",),
        ),
    ),
    (
        "g3-strict-partial-target",
        (False,),
        lambda: blending(alpha=0.5, target=0.5),
        S.HOLDING,
        GateResult(
            gate=GateLevel.G3,
            passed=False,
            score=0.5,
            checks_passed=("alpha_target_reached", "blending_complete"),
            checks_failed=("alpha_target_not_full_0.50",),
        ),
    ),
    (
        "g3-strict-too-few-epochs",
        (False,),
        lambda: blending(epochs=3),
        S.HOLDING,
        GateResult(
            gate=GateLevel.G3,
            passed=False,
            score=1.0,
            checks_passed=("alpha_target_full", "alpha_target_reached"),
            checks_failed=("blending_incomplete_3",),
        ),
    ),
    # ---- G3 permissive
    (
        "g3-permissive-pass-without-epochs",
        (True,),
        lambda: blending(epochs=0),
        S.HOLDING,
        GateResult(
            gate=GateLevel.G3,
            passed=True,
            score=1.0,
            checks_passed=("alpha_target_full", "alpha_target_reached"),
            message="Permissive G3: alpha completion only",
        ),
    ),
    (
        "g3-permissive-ramping-down",
        (True,),
        lambda: blending(alpha=0.25, target=0.0, mode=AlphaMode.DOWN, epochs=20),
        S.HOLDING,
        GateResult(
            gate=GateLevel.G3,
            passed=False,
            score=0.25,
            checks_failed=("alpha_target_not_full_0.00", "alpha_not_at_target_0.25_target_0.00_mode_DOWN"),
            message="Permissive G3: alpha completion only",
        ),
    ),
    # ---- G5 strict
    (
        "g5-strict-pass",
        (False,),
        lambda: holding(1.5),
        S.FOSSILIZED,
        GateResult(
            gate=GateLevel.G5,
            passed=True,
            score=0.15,
            checks_passed=("counterfactual_available_1.50%", "healthy", "sufficient_contribution_1.50%"),
        ),
    ),
    (
        "g5-strict-boundary",
        (False,),
        lambda: holding(1.0),
        S.FOSSILIZED,
        GateResult(
            gate=GateLevel.G5,
            passed=True,
            score=0.1,
            checks_passed=("counterfactual_available_1.00%", "healthy", "sufficient_contribution_1.00%"),
        ),
    ),
    (
        "g5-strict-low-contribution",
        (False,),
        lambda: holding(0.5),
        S.FOSSILIZED,
        GateResult(
            gate=GateLevel.G5,
            passed=False,
            score=0.05,
            checks_passed=("counterfactual_available_0.50%", "healthy"),
            checks_failed=("insufficient_contribution_0.50%_below_1.0%",),
        ),
    ),
    (
        "g5-strict-negative-contribution",
        (False,),
        lambda: holding(-0.25),
        S.FOSSILIZED,
        GateResult(
            gate=GateLevel.G5,
            passed=False,
            score=0.0,
            checks_passed=("counterfactual_available_-0.25%", "healthy"),
            checks_failed=("insufficient_contribution_-0.25%_below_1.0%",),
        ),
    ),
    (
        "g5-strict-unhealthy",
        (False,),
        lambda: holding(2.0, healthy=False),
        S.FOSSILIZED,
        GateResult(
            gate=GateLevel.G5,
            passed=False,
            score=0.2,
            checks_passed=("counterfactual_available_2.00%", "sufficient_contribution_2.00%"),
            checks_failed=("unhealthy",),
        ),
    ),
    (
        "g5-no-counterfactual",
        BOTH,
        lambda: holding(None),
        S.FOSSILIZED,
        GateResult(gate=GateLevel.G5, passed=False, score=0.0, checks_failed=("counterfactual_not_available",)),
    ),
    # ---- G5 permissive
    (
        "g5-permissive-pass-below-threshold",
        (True,),
        lambda: holding(0.5),
        S.FOSSILIZED,
        GateResult(
            gate=GateLevel.G5,
            passed=True,
            score=0.05,
            checks_passed=("counterfactual_available_0.50%", "healthy"),
            message="Permissive G5: 0.50% contribution (no threshold)",
        ),
    ),
    (
        "g5-permissive-unhealthy",
        (True,),
        lambda: holding(12.0, healthy=False),
        S.FOSSILIZED,
        GateResult(
            gate=GateLevel.G5,
            passed=False,
            score=1.0,
            checks_passed=("counterfactual_available_12.00%",),
            checks_failed=("unhealthy",),
            message="Permissive G5: 12.00% contribution (no threshold)",
        ),
    ),
]

PARAMS = [
    pytest.param(permissive, build, target, expected, id=f"{name}-{'permissive' if permissive else 'strict'}")
    for name, modes, build, target, expected in CASES
    for permissive in modes
]


@pytest.mark.parametrize("permissive,build,target,expected", PARAMS)
def test_gate_table(
    permissive: bool, build: Callable[[], SeedState], target: SeedStage, expected: GateResult
) -> None:
    state = build()
    result = check_gate(Gates(permissive=permissive), state, target)
    assert result == expected
    assert isinstance(result.checks_passed, tuple) and isinstance(result.checks_failed, tuple)
    assert result.passed == (not result.checks_failed)


def test_every_gate_has_a_pass_and_a_fail_in_both_modes() -> None:
    seen = {(res.gate, res.passed, p) for _, modes, _, _, res in CASES for p in modes}
    for gate in GateLevel:
        for permissive in BOTH:
            assert (gate, True, permissive) in seen, (gate, permissive)
            assert (gate, False, permissive) in seen, (gate, permissive)


def test_gate_level_values_match_esper_lite() -> None:
    assert {g.name: int(g) for g in GateLevel} == {"G0": 0, "G1": 1, "G2": 2, "G3": 3, "G5": 5}
    assert dict(GATE_FOR_STAGE) == {
        S.GERMINATED: GateLevel.G0,
        S.TRAINING: GateLevel.G1,
        S.BLENDING: GateLevel.G2,
        S.HOLDING: GateLevel.G3,
        S.FOSSILIZED: GateLevel.G5,
    }


@pytest.mark.parametrize("target", [S.DORMANT, S.UNKNOWN, S.PRUNED, S.EMBARGOED, S.RESETTING])
def test_stage_without_gate_raises(target: SeedStage) -> None:
    with pytest.raises(IllegalTransitionError, match="no gate is defined"):
        check_gate(Gates(), base(), target)
    with pytest.raises(ValueError):
        gate_for_stage(target)


def test_thresholds_are_configurable() -> None:
    gates = Gates(min_training_improvement=0.1, min_blending_epochs=2, min_seed_gradient_ratio=0.01)
    result = check_gate(gates, training(improvement=0.25, epochs=2, ratio=0.02), S.BLENDING)
    assert result.passed
    assert result.checks_passed == ("global_improvement_0.25%", "seed_ready", "seed_gradient_active_0.02")
    result = check_gate(Gates(min_fossilize_contribution=3.0), holding(2.0), S.FOSSILIZED)
    assert result.checks_failed == ("insufficient_contribution_2.00%_below_3.0%",)
    strict_health = Gates(permissive=True, min_gradient_health_for_blending=0.95)
    result = check_gate(strict_health, training(health=0.9), S.BLENDING)
    assert result.checks_failed == ("gradient_health_low_0.90_need_0.95",)


def test_gates_defaults_are_esper_lite_constants() -> None:
    g = Gates()
    assert (
        g.permissive,
        g.min_training_improvement,
        g.min_blending_epochs,
        g.min_seed_gradient_ratio,
        g.min_gradient_health_for_blending,
        g.min_fossilize_contribution,
        g.embargo_epochs,
        g.resetting_epochs,
    ) == (False, 0.5, 10, 0.10, 0.7, 1.0, 5, 1)


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"permissive": 1}, TypeError),
        ({"min_blending_epochs": -1}, ValueError),
        ({"min_blending_epochs": 2.5}, TypeError),
        ({"embargo_epochs": "5"}, TypeError),
        ({"min_training_improvement": float("nan")}, ValueError),
        ({"min_fossilize_contribution": None}, TypeError),
    ],
)
def test_gates_validation(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error, match="Gates\\."):
        Gates(**kwargs)


def test_gates_coerce_int_thresholds_to_float() -> None:
    g = Gates(min_fossilize_contribution=2)
    assert isinstance(g.min_fossilize_contribution, float)
    assert check_gate(g, holding(0.5), S.FOSSILIZED).checks_failed == ("insufficient_contribution_0.50%_below_2.0%",)


# ----------------------------------------------------------------------------- G2 against an independent model


def expected_permissive_g2(
    epochs: int, min_epochs: int, health: float | None, exploding: bool | None, min_health: float
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """esper-lite's permissive G2 checks (KTS-001: unmeasured is not healthy), written out from its rules."""
    passed: list[str] = []
    failed: list[str] = []
    if epochs >= min_epochs:
        passed.append(f"trained_{epochs}_epochs")
    else:
        failed.append(f"insufficient_training_{epochs}_of_{min_epochs}")
    if health is None:
        failed.append("gradient_health_not_measured")
    elif exploding:
        failed.append("exploding_gradients")
    else:
        passed.append("no_exploding_gradients")
        if health >= min_health:
            passed.append(f"gradient_health_{health:.2f}")
        else:
            failed.append(f"gradient_health_low_{health:.2f}_need_{min_health:.2f}")
    return tuple(passed), tuple(failed)


@given(
    epochs=st.integers(0, 15),
    min_epochs=st.integers(0, 12),
    health=st.one_of(st.none(), st.floats(0.0, 1.0)),
    exploding=st.one_of(st.none(), st.booleans()),
    vanishing=st.one_of(st.none(), st.booleans()),
    min_health=st.sampled_from([0.0, 0.5, 0.7, 0.95, 1.0]),
    improvement=st.floats(-20.0, 20.0),
)
def test_permissive_g2_matches_model(
    epochs: int,
    min_epochs: int,
    health: float | None,
    exploding: bool | None,
    vanishing: bool | None,
    min_health: float,
    improvement: float,
) -> None:
    gates = Gates(permissive=True, min_blending_epochs=min_epochs, min_gradient_health_for_blending=min_health)
    state = training(improvement=improvement, epochs=epochs, health=health, exploding=exploding, vanishing=vanishing)
    result = check_gate(gates, state, S.BLENDING)
    passed, failed = expected_permissive_g2(epochs, min_epochs, health, exploding, min_health)
    assert (result.checks_passed, result.checks_failed) == (passed, failed)
    assert result.passed == (not failed)
    assert result.message == f"Permissive G2 Safety: {'PASS' if not failed else 'FAIL'}"
    current = 50.0 + improvement
    delta = current - 50.0
    assert result.score == (min(1.0, delta / 5.0) if delta > 0 else 0.0)
    # The gradient ratio (strict G2's signal) and the sync epoch play no part in permissive G2.
    for other in (
        with_metrics(state, seed_gradient_norm_ratio=None),
        dataclasses.replace(state, telemetry=dataclasses.replace(state.telemetry, epoch=0)),
    ):
        assert check_gate(gates, other, S.BLENDING) == result


@given(
    improvement=st.floats(-5.0, 5.0),
    epochs=st.integers(0, 15),
    ratio=st.one_of(st.none(), st.floats(0.0, 10.0)),
    health=st.one_of(st.none(), st.floats(0.0, 1.0)),
    exploding=st.one_of(st.none(), st.booleans()),
)
def test_strict_g2_matches_model_and_ignores_gradient_telemetry(
    improvement: float, epochs: int, ratio: float | None, health: float | None, exploding: bool | None
) -> None:
    gates = Gates()
    state = training(improvement=improvement, epochs=epochs, ratio=ratio, health=health, exploding=exploding)
    result = check_gate(gates, state, S.BLENDING)
    delta = state.metrics.improvement_since_stage_start
    passed: list[str] = []
    failed: list[str] = []
    (passed if delta >= 0.5 else failed).append(
        f"global_improvement_{delta:.2f}%" if delta >= 0.5 else f"global_improvement_insufficient_{delta:.2f}%"
    )
    (passed if epochs >= 10 else failed).append("seed_ready" if epochs >= 10 else "seed_not_ready")
    if ratio is None:
        failed.append("gradient_stats_never_measured")
    elif ratio >= 0.1:
        passed.append(f"seed_gradient_active_{ratio:.2f}")
    else:
        failed.append(f"seed_gradient_low_{ratio:.2f}")
    assert (result.checks_passed, result.checks_failed) == (tuple(passed), tuple(failed))
    assert result.passed == (not failed) and result.message == f"Improvement: {delta:.2f}%"
    unmeasured = dataclasses.replace(state, telemetry=SeedTelemetry())
    assert check_gate(gates, unmeasured, S.BLENDING) == result
