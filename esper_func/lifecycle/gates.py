"""Quality gates: the checks a seed must pass to move to its next stage.

:class:`Gates` is a frozen configuration; :func:`check_gate` is a pure
function of ``(gates, state, target)`` returning a :class:`GateResult`. It
reproduces esper-lite's ``QualityGates`` (strict and permissive modes),
including the exact check-name strings, numbers formatted as there (two
decimals, e.g. ``global_improvement_0.60%``).

Gate per target stage:

====================  =====  =============================================
target                gate   checks (strict; permissive in brackets)
====================  =====  =============================================
GERMINATED            G0     seed id and blueprint id present [same]
TRAINING              G1     stage is GERMINATED [same]
BLENDING              G2     stage improvement >= ``min_training_improvement``;
                             epochs in stage >= ``min_blending_epochs``;
                             gradient ratio measured and >=
                             ``min_seed_gradient_ratio``
                             [epochs; gradient health measured; no
                             exploding gradients; gradient health >=
                             ``min_gradient_health_for_blending``]
HOLDING               G3     alpha target is 1; controller reached it (HOLD);
                             epochs in stage >= ``min_blending_epochs``
                             [alpha checks only]
FOSSILIZED            G5     counterfactual measured; seed healthy;
                             contribution >= ``min_fossilize_contribution``
                             [counterfactual; healthy]
====================  =====  =============================================
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from esper_func._validate import CheckedIntEnum, check_bool, check_float, check_int
from esper_func.errors import IllegalTransitionError
from esper_func.lifecycle.alpha import AlphaMode
from esper_func.lifecycle.stages import SeedStage

if TYPE_CHECKING:
    from esper_func.lifecycle.state import SeedState

__all__ = [
    "GateLevel",
    "GateResult",
    "Gates",
    "GATE_FOR_STAGE",
    "DEFAULT_MIN_TRAINING_IMPROVEMENT",
    "DEFAULT_MIN_BLENDING_EPOCHS",
    "DEFAULT_GRADIENT_RATIO_THRESHOLD",
    "DEFAULT_MIN_GRADIENT_HEALTH_FOR_BLENDING",
    "DEFAULT_MIN_FOSSILIZE_CONTRIBUTION",
    "DEFAULT_EMBARGO_EPOCHS_AFTER_PRUNE",
    "DEFAULT_RESETTING_EPOCHS",
    "DEFAULT_BLENDING_TOTAL_STEPS",
    "DEFAULT_GRADIENT_EMA_DECAY",
    "check_gate",
    "gate_for_stage",
]

# esper-lite's leyline constants (src/esper/leyline/__init__.py).
DEFAULT_MIN_TRAINING_IMPROVEMENT: Final[float] = 0.5
DEFAULT_MIN_BLENDING_EPOCHS: Final[int] = 10
DEFAULT_GRADIENT_RATIO_THRESHOLD: Final[float] = 0.10
DEFAULT_MIN_GRADIENT_HEALTH_FOR_BLENDING: Final[float] = 0.7
DEFAULT_MIN_FOSSILIZE_CONTRIBUTION: Final[float] = 1.0
DEFAULT_EMBARGO_EPOCHS_AFTER_PRUNE: Final[int] = 5
DEFAULT_RESETTING_EPOCHS: Final[int] = 1
DEFAULT_BLENDING_TOTAL_STEPS: Final[int] = 5
DEFAULT_GRADIENT_EMA_DECAY: Final[float] = 0.9

_EPS: Final[float] = 1e-6


class GateLevel(CheckedIntEnum):
    """Quality gate levels (esper-lite's values; 4 is unused since its G4 was removed)."""

    G0 = 0  # germination sanity
    G1 = 1  # training readiness
    G2 = 2  # blending readiness
    G3 = 3  # holding readiness
    G5 = 5  # fossilization readiness


#: Which gate guards the move into each stage.
GATE_FOR_STAGE: Final = MappingProxyType(
    {
        SeedStage.GERMINATED: GateLevel.G0,
        SeedStage.TRAINING: GateLevel.G1,
        SeedStage.BLENDING: GateLevel.G2,
        SeedStage.HOLDING: GateLevel.G3,
        SeedStage.FOSSILIZED: GateLevel.G5,
    }
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GateResult:
    """Outcome of one gate check. Check names are tuples, in evaluation order."""

    gate: GateLevel
    passed: bool
    score: float = 0.0
    checks_passed: tuple[str, ...] = ()
    checks_failed: tuple[str, ...] = ()
    message: str = ""


def _require(name: str, value: object, kind: type) -> None:
    """Type/range check of one ``Gates`` field (``kind`` is bool, int or float)."""
    if kind is bool:
        check_bool(f"Gates.{name}", value)
    elif kind is int:
        check_int(f"Gates.{name}", value, minimum=0)
    else:
        check_float(f"Gates.{name}", value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Gates:
    """Gate thresholds and cooldown lengths (esper-lite's defaults).

    ``permissive=True`` keeps only the structural/safety checks (used when a
    learned policy should discover quality thresholds itself).
    ``embargo_epochs`` and ``resetting_epochs`` are the dwell times of the
    cooldown after a prune, used by ``step_epoch``.
    """

    permissive: bool = False
    min_training_improvement: float = DEFAULT_MIN_TRAINING_IMPROVEMENT
    min_blending_epochs: int = DEFAULT_MIN_BLENDING_EPOCHS
    min_seed_gradient_ratio: float = DEFAULT_GRADIENT_RATIO_THRESHOLD
    min_gradient_health_for_blending: float = DEFAULT_MIN_GRADIENT_HEALTH_FOR_BLENDING
    min_fossilize_contribution: float = DEFAULT_MIN_FOSSILIZE_CONTRIBUTION
    embargo_epochs: int = DEFAULT_EMBARGO_EPOCHS_AFTER_PRUNE
    resetting_epochs: int = DEFAULT_RESETTING_EPOCHS

    def __post_init__(self) -> None:
        _require("permissive", self.permissive, bool)
        for name in (
            "min_training_improvement",
            "min_seed_gradient_ratio",
            "min_gradient_health_for_blending",
            "min_fossilize_contribution",
        ):
            _require(name, getattr(self, name), float)
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("min_blending_epochs", "embargo_epochs", "resetting_epochs"):
            _require(name, getattr(self, name), int)


def gate_for_stage(target: SeedStage) -> GateLevel:
    """The gate guarding ``target``.

    Raises:
        IllegalTransitionError: ``target`` has no gate (DORMANT, UNKNOWN and
            the failure stages are never entered through a gate).
    """
    try:
        return GATE_FOR_STAGE[SeedStage(target)]
    except (KeyError, ValueError):
        names = ", ".join(s.name for s in GATE_FOR_STAGE)
        raise IllegalTransitionError(
            f"no gate is defined for target stage {target!r}; gated stages are {names}. "
            "Failure stages are entered with prune()/schedule_prune() and the cooldown in "
            "step_epoch(), never through a gate."
        ) from None


def check_gate(gates: Gates, state: SeedState, target: SeedStage) -> GateResult:
    """Evaluate the gate that guards ``target`` for ``state`` (pure)."""
    level = gate_for_stage(target)
    if level == GateLevel.G0:
        return _check_g0(state)
    if level == GateLevel.G1:
        return _check_g1(state)
    if level == GateLevel.G2:
        return _check_g2(gates, state)
    if level == GateLevel.G3:
        return _check_g3(gates, state)
    return _check_g5(gates, state)


def _score_from_improvement(improvement: float, scale: float) -> float:
    return min(1.0, improvement / scale) if improvement > 0 else 0.0


def _check_g0(state: SeedState) -> GateResult:
    passed_checks: list[str] = []
    failed_checks: list[str] = []
    if state.seed_id:
        passed_checks.append("seed_id_present")
    else:
        failed_checks.append("seed_id_missing")
    if state.blueprint_id:
        passed_checks.append("blueprint_id_present")
    else:
        failed_checks.append("blueprint_id_missing")
    passed = not failed_checks
    return GateResult(
        gate=GateLevel.G0,
        passed=passed,
        score=1.0 if passed else 0.0,
        checks_passed=tuple(passed_checks),
        checks_failed=tuple(failed_checks),
        message="Germination gate" if passed else "Missing required fields",
    )


def _check_g1(state: SeedState) -> GateResult:
    passed = state.stage == SeedStage.GERMINATED
    return GateResult(
        gate=GateLevel.G1,
        passed=passed,
        score=1.0 if passed else 0.0,
        checks_passed=("germinated",) if passed else (),
        checks_failed=() if passed else ("not_germinated",),
        message="Ready for training" if passed else "Not germinated",
    )


def _check_g2(gates: Gates, state: SeedState) -> GateResult:
    metrics = state.metrics
    improvement = metrics.improvement_since_stage_start
    epochs = metrics.epochs_in_current_stage
    passed_checks: list[str] = []
    failed_checks: list[str] = []
    score = _score_from_improvement(improvement, 5.0)

    if gates.permissive:
        epochs_ok = epochs >= gates.min_blending_epochs
        if epochs_ok:
            passed_checks.append(f"trained_{epochs}_epochs")
        else:
            failed_checks.append(f"insufficient_training_{epochs}_of_{gates.min_blending_epochs}")
        # Unmeasured is not healthy (esper-lite's KTS-001): without a measured
        # gradient health the safety checks fail outright, and exploding
        # gradients make the health check moot.
        telemetry = state.telemetry
        health = telemetry.gradient_health
        if health is None:
            failed_checks.append("gradient_health_not_measured")
            exploding_ok = health_ok = False
        elif telemetry.has_exploding:
            failed_checks.append("exploding_gradients")
            exploding_ok = health_ok = False
        else:
            passed_checks.append("no_exploding_gradients")
            exploding_ok = True
            health_ok = health >= gates.min_gradient_health_for_blending
            if health_ok:
                passed_checks.append(f"gradient_health_{health:.2f}")
            else:
                failed_checks.append(
                    f"gradient_health_low_{health:.2f}_need_{gates.min_gradient_health_for_blending:.2f}"
                )
        passed = epochs_ok and exploding_ok and health_ok
        return GateResult(
            gate=GateLevel.G2,
            passed=passed,
            score=score,
            checks_passed=tuple(passed_checks),
            checks_failed=tuple(failed_checks),
            message=f"Permissive G2 Safety: {'PASS' if passed else 'FAIL'}",
        )

    perf_ok = improvement >= gates.min_training_improvement
    if perf_ok:
        passed_checks.append(f"global_improvement_{improvement:.2f}%")
    else:
        failed_checks.append(f"global_improvement_insufficient_{improvement:.2f}%")
    seed_ok = epochs >= gates.min_blending_epochs
    if seed_ok:
        passed_checks.append("seed_ready")
    else:
        failed_checks.append("seed_not_ready")
    ratio = metrics.seed_gradient_norm_ratio
    if ratio is None:
        failed_checks.append("gradient_stats_never_measured")
        gradient_ok = False
    elif ratio >= gates.min_seed_gradient_ratio:
        passed_checks.append(f"seed_gradient_active_{ratio:.2f}")
        gradient_ok = True
    else:
        failed_checks.append(f"seed_gradient_low_{ratio:.2f}")
        gradient_ok = False
    return GateResult(
        gate=GateLevel.G2,
        passed=perf_ok and seed_ok and gradient_ok,
        score=score,
        checks_passed=tuple(passed_checks),
        checks_failed=tuple(failed_checks),
        message=f"Improvement: {improvement:.2f}%",
    )


def _check_g3(gates: Gates, state: SeedState) -> GateResult:
    ctrl = state.alpha_controller
    passed_checks: list[str] = []
    failed_checks: list[str] = []
    if ctrl.alpha_target >= 1.0 - _EPS:
        passed_checks.append("alpha_target_full")
    else:
        failed_checks.append(f"alpha_target_not_full_{ctrl.alpha_target:.2f}")
    if ctrl.alpha_mode == AlphaMode.HOLD and abs(ctrl.alpha - ctrl.alpha_target) <= _EPS:
        passed_checks.append("alpha_target_reached")
    else:
        failed_checks.append(
            f"alpha_not_at_target_{ctrl.alpha:.2f}_target_{ctrl.alpha_target:.2f}_mode_{ctrl.alpha_mode.name}"
        )
    if gates.permissive:
        return GateResult(
            gate=GateLevel.G3,
            passed=not failed_checks,
            score=ctrl.alpha,
            checks_passed=tuple(passed_checks),
            checks_failed=tuple(failed_checks),
            message="Permissive G3: alpha completion only",
        )
    epochs = state.metrics.epochs_in_current_stage
    if epochs >= gates.min_blending_epochs:
        passed_checks.append("blending_complete")
    else:
        failed_checks.append(f"blending_incomplete_{epochs}")
    return GateResult(
        gate=GateLevel.G3,
        passed=not failed_checks,
        score=ctrl.alpha,
        checks_passed=tuple(passed_checks),
        checks_failed=tuple(failed_checks),
    )


def _check_g5(gates: Gates, state: SeedState) -> GateResult:
    contribution = state.metrics.counterfactual_contribution
    if contribution is None:
        return GateResult(gate=GateLevel.G5, passed=False, checks_failed=("counterfactual_not_available",))
    passed_checks = [f"counterfactual_available_{contribution:.2f}%"]
    failed_checks: list[str] = []
    if state.is_healthy:
        passed_checks.append("healthy")
    else:
        failed_checks.append("unhealthy")
    score = _score_from_improvement(contribution, 10.0)
    if gates.permissive:
        return GateResult(
            gate=GateLevel.G5,
            passed=state.is_healthy,
            score=score,
            checks_passed=tuple(passed_checks),
            checks_failed=tuple(failed_checks),
            message=f"Permissive G5: {contribution:.2f}% contribution (no threshold)",
        )
    threshold = gates.min_fossilize_contribution
    if contribution >= threshold:
        passed_checks.append(f"sufficient_contribution_{contribution:.2f}%")
    else:
        failed_checks.append(f"insufficient_contribution_{contribution:.2f}%_below_{threshold}%")
    return GateResult(
        gate=GateLevel.G5,
        passed=not failed_checks,
        score=score,
        checks_passed=tuple(passed_checks),
        checks_failed=tuple(failed_checks),
    )
