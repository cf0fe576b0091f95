"""The lifecycle state of one slot: :class:`SeedMetrics` and :class:`SeedState`.

Both are frozen dataclasses registered as pytrees (optree namespace
``"esper_func"`` and ``torch.utils._pytree``). They hold Python scalars only,
never tensors. Numbers that change as training goes on are pytree children;
identities, stage enums, strings, the stage history and the blend settings
chosen at germination are static metadata.

Time is counted in epochs, never read from a clock: ``stage_entered_epoch``
and the entries of ``stage_history`` are values of ``metrics.epochs_total``,
so replaying the same calls reproduces the same state bit for bit.

Everything esper-lite keeps on the ``SeedSlot`` object next to its
``SeedState`` (blend algorithm id, tempo and alpha target chosen at
germination, topology, the isolate-gradients flag, the pending prune
reason/initiator, the gradient-health telemetry) lives in the value here, so
nothing about a slot's lifecycle is held anywhere else.

The forward pass needs two fields: ``state.stage`` and ``state.alpha``, as in
``slot_apply(slot, params, torch.tensor(state.alpha), x, stage=state.stage)``.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from esper_func._pytree import pytree_dataclass, static_field
from esper_func.lifecycle.alpha import AlphaAlgorithm, AlphaController, AlphaMode
from esper_func.lifecycle.stages import SEEDLESS_STAGES, SeedStage

__all__ = [
    "AUTO_PRUNE_REASONS",
    "BLEND_ALGORITHMS",
    "STAGE_HISTORY_MAXLEN",
    "NO_SEED_STAGES",
    "SeedMetrics",
    "SeedState",
    "has_seed",
    "trainable",
]

#: How many ``(stage, epoch)`` entries ``SeedState.stage_history`` keeps.
STAGE_HISTORY_MAXLEN: Final[int] = 100

#: Prune reasons that count as automatic (safety) prunes rather than policy decisions.
AUTO_PRUNE_REASONS: Final[frozenset[str]] = frozenset(
    {"governor_nan", "governor_lobotomy", "governor_divergence", "governor_rollback"}
)

#: Blend algorithm ids accepted at germination (they pick the alpha curve).
BLEND_ALGORITHMS: Final[tuple[str, ...]] = ("linear", "sigmoid", "gated")

#: Stages in which the slot holds no seed (esper-lite: ``seed is None``).
NO_SEED_STAGES: Final[frozenset[SeedStage]] = SEEDLESS_STAGES


def _clamp10(x: float) -> float:
    return max(-10.0, min(10.0, x))


@pytree_dataclass
@dataclasses.dataclass(frozen=True, kw_only=True)
class SeedMetrics:
    """Per-seed measurements (esper-lite's ``SeedMetrics``, as a value).

    Accuracies are in percent (0-100), as esper-lite records them.
    ``counterfactual_contribution`` and ``seed_gradient_norm_ratio`` are
    ``None`` until first measured (``None`` is "never measured", distinct from
    ``0.0``).
    """

    epochs_total: int = 0
    epochs_in_current_stage: int = 0

    initial_val_accuracy: float = 0.0
    current_val_accuracy: float = 0.0
    best_val_accuracy: float = 0.0
    accuracy_at_stage_start: float = 0.0
    accuracy_at_blending_start: float = 0.0
    blending_started: bool = False

    gradient_norm_avg: float = 0.0
    seed_gradient_norm_ratio: float | None = None
    host_param_count: int = 0
    seed_param_count: int = 0

    current_alpha: float = 0.0
    alpha_ramp_step: int = 0

    counterfactual_contribution: float | None = None
    prev_contribution: float | None = None
    contribution_velocity: float = 0.0

    auto_pruned: bool = False
    auto_prune_reason: str = static_field(default="")

    interaction_sum: float = 0.0
    boost_received: float = 0.0
    upstream_alpha_sum: float = 0.0
    downstream_alpha_sum: float = 0.0

    @property
    def total_improvement(self) -> float:
        """Accuracy now minus accuracy at the first measurement."""
        return self.current_val_accuracy - self.initial_val_accuracy

    @property
    def improvement_since_stage_start(self) -> float:
        """Accuracy now minus accuracy when the current stage began."""
        return self.current_val_accuracy - self.accuracy_at_stage_start

    @property
    def total_improvement_normalized(self) -> float:
        """``total_improvement`` clamped to +-10 points and scaled to ``[-1, 1]``."""
        return _clamp10(self.total_improvement) / 10.0

    @property
    def improvement_since_stage_start_normalized(self) -> float:
        """``improvement_since_stage_start`` clamped to +-10 points and scaled to ``[-1, 1]``."""
        return _clamp10(self.improvement_since_stage_start) / 10.0

    @property
    def blending_delta(self) -> float:
        """Accuracy change since blending began (telemetry only; 0 if it never began)."""
        if not self.blending_started:
            return 0.0
        return self.current_val_accuracy - self.accuracy_at_blending_start


@pytree_dataclass
@dataclasses.dataclass(frozen=True, kw_only=True)
class SeedState:
    """Complete lifecycle state of the seed in one slot.

    Build one with :func:`esper_func.lifecycle.germinate`; change it only
    through the lifecycle functions (or ``dataclasses.replace`` for fields
    such as ``is_healthy``). A slot that is free again after a prune is a
    state with ``stage == SeedStage.DORMANT`` whose identity fields still name
    the last occupant.
    """

    slot_id: str = static_field()
    seed_id: str = static_field()
    blueprint_id: str = static_field()

    stage: SeedStage = static_field(default=SeedStage.DORMANT)
    previous_stage: SeedStage = static_field(default=SeedStage.UNKNOWN)
    previous_epochs_in_stage: int = 0
    #: ``metrics.epochs_total`` when the current stage was entered.
    stage_entered_epoch: int = 0
    #: Last :data:`STAGE_HISTORY_MAXLEN` ``(stage, epochs_total)`` entries, oldest first.
    stage_history: tuple[tuple[SeedStage, int], ...] = static_field(default=())

    alpha: float = 0.0
    metrics: SeedMetrics = dataclasses.field(default_factory=SeedMetrics)
    alpha_controller: AlphaController = dataclasses.field(default_factory=AlphaController)

    alpha_algorithm: AlphaAlgorithm = static_field(default=AlphaAlgorithm.ADD)
    #: Blend settings chosen at germination ("linear", "sigmoid" or "gated").
    blend_algorithm_id: str = static_field(default="sigmoid")
    blend_tempo_epochs: int = static_field(default=5)
    blend_alpha_target: float = static_field(default=1.0)
    topology: str = static_field(default="cnn")

    isolate_gradients: bool = False
    is_healthy: bool = True
    is_paused: bool = False

    pending_prune_reason: str | None = static_field(default=None)
    pending_prune_initiator: str | None = static_field(default=None)

    #: Gradient telemetry (esper-lite keeps these on ``SeedTelemetry``).
    gradient_health: float = 1.0
    has_exploding: bool = False
    has_vanishing: bool = False

    @property
    def epochs_in_stage(self) -> int:
        """Epochs counted in the current stage."""
        return self.metrics.epochs_in_current_stage


def has_seed(state: SeedState) -> bool:
    """Whether a seed is present (GERMINATED, TRAINING, BLENDING, HOLDING or FOSSILIZED).

    ``False`` for a free slot (DORMANT) and during the cooldown after a prune
    (PRUNED, EMBARGOED, RESETTING), where esper-lite has already dropped the
    seed module.
    """
    return state.stage not in NO_SEED_STAGES


def trainable(state: SeedState) -> bool:
    """Whether the seed's (and its gate's) parameters may be updated this step.

    ``False`` while the alpha controller ramps DOWN (the blend-out freeze: a
    seed being faded out must not fight the decay; its forward graph stays
    intact, so the host still gets gradients) and ``False`` when there is no
    live seed. The training step masks the seed's updates with this.
    """
    return has_seed(state) and state.alpha_controller.alpha_mode != AlphaMode.DOWN
