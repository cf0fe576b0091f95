"""The lifecycle state of one slot: :class:`SeedMetrics`, :class:`SeedTelemetry`, :class:`SeedState`.

All three are frozen dataclasses registered as pytrees (optree namespace
``"esper_func"`` and ``torch.utils._pytree``). They hold Python scalars only,
never tensors. Numbers that change as training goes on are pytree children;
identities, stage enums, strings, the stage history and the blend settings
chosen at germination are static metadata.

Time is counted in epochs, never read from a clock: the entries of
``stage_history`` are values of ``metrics.epochs_total``, so replaying the
same calls reproduces the same state bit for bit.

Everything esper-lite keeps on the ``SeedSlot`` object next to its
``SeedState`` (blend algorithm id, tempo and alpha target chosen at
germination, topology, the blend-out freeze, the pending prune
reason/initiator) lives in the value here, so nothing about a slot's
lifecycle is held anywhere else.

Each value is stored once. Alpha lives in the alpha controller
(``state.alpha`` reads it; esper-lite's ``metrics.current_alpha`` is the same
value); whether the seed reads detached host features is a function of the
stage and the topology's rule (:attr:`SeedState.isolate_gradients`); the epoch at
which the current stage began is ``epochs_total - epochs_in_current_stage``.

The forward pass needs two fields: ``state.stage`` and ``state.alpha``, as in
``slot_apply(slot, params, torch.tensor(state.alpha), x, stage=state.stage)``.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from esper_func._pytree import pytree_dataclass, static_field
from esper_func.hosts import Topology, resolve_topology
from esper_func.lifecycle.alpha import AlphaAlgorithm, AlphaController
from esper_func.lifecycle.stages import GATED_STAGES, SEEDLESS_STAGES, SeedStage, is_active_stage

__all__ = [
    "AUTO_PRUNE_REASONS",
    "BLEND_ALGORITHMS",
    "DEFAULT_TELEMETRY_MAX_EPOCHS",
    "STAGE_HISTORY_MAXLEN",
    "NO_SEED_STAGES",
    "SeedMetrics",
    "SeedState",
    "SeedTelemetry",
    "has_gate",
    "has_seed",
    "is_free",
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

#: esper-lite's default ``SeedTelemetry.max_epochs``.
DEFAULT_TELEMETRY_MAX_EPOCHS: Final[int] = 25


def _clamp10(x: float) -> float:
    return max(-10.0, min(10.0, x))


def _esper_lite(key: str) -> dict[str, str]:
    """Field metadata naming the key esper-lite's ``to_dict()`` uses for this field."""
    return {"esper_lite": key}


@pytree_dataclass
@dataclasses.dataclass(frozen=True, kw_only=True)
class SeedMetrics:
    """Per-seed measurements (esper-lite's ``SeedMetrics``, as a value).

    Accuracies are in percent (0-100), as esper-lite records them.
    ``counterfactual_contribution`` and ``seed_gradient_norm_ratio`` are
    ``None`` until first measured (``None`` is "never measured", distinct from
    ``0.0``). esper-lite's ``current_alpha`` is not stored here: it is always
    the state's alpha (:attr:`SeedState.alpha`).
    """

    # Field order follows esper-lite's SeedMetrics.to_dict().
    epochs_total: int = 0
    epochs_in_current_stage: int = 0
    initial_val_accuracy: float = 0.0
    current_val_accuracy: float = 0.0
    best_val_accuracy: float = 0.0
    accuracy_at_stage_start: float = 0.0
    accuracy_at_blending_start: float = 0.0
    gradient_norm_avg: float = 0.0
    alpha_ramp_step: int = 0
    counterfactual_contribution: float | None = None
    prev_contribution: float | None = dataclasses.field(default=None, metadata=_esper_lite("_prev_contribution"))
    contribution_velocity: float = 0.0
    blending_started: bool = dataclasses.field(default=False, metadata=_esper_lite("_blending_started"))
    seed_gradient_norm_ratio: float | None = None
    host_param_count: int = 0
    seed_param_count: int = 0
    interaction_sum: float = 0.0
    boost_received: float = 0.0
    upstream_alpha_sum: float = 0.0
    downstream_alpha_sum: float = 0.0
    # Not persisted by esper-lite's to_dict().
    auto_pruned: bool = dataclasses.field(default=False, metadata=_esper_lite(""))
    auto_prune_reason: str = static_field(default="", metadata=_esper_lite(""))

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
class SeedTelemetry:
    """Gradient telemetry of a seed (the measured part of esper-lite's ``SeedTelemetry``).

    Unmeasured is not healthy: the four gradient fields are ``None`` until a
    gradient measurement sets them, and permissive gate G2 refuses a seed
    whose ``gradient_health`` was never measured. ``epoch`` is the training
    loop's epoch at the last :func:`~esper_func.lifecycle.sync_telemetry`
    (0 = never synced; esper-lite reports gradient flags in lifecycle events
    only after a sync), ``max_epochs`` the run length given then.
    """

    gradient_norm: float | None = None
    gradient_health: float | None = None
    has_vanishing: bool | None = None
    has_exploding: bool | None = None
    epoch: int = 0
    max_epochs: int = DEFAULT_TELEMETRY_MAX_EPOCHS

    @property
    def gradient_measured(self) -> bool:
        """Whether gradient health was actually measured (esper-lite's KTS-001 rule)."""
        return self.gradient_health is not None


@pytree_dataclass
@dataclasses.dataclass(frozen=True, kw_only=True)
class SeedState:
    """Complete lifecycle state of the seed in one slot.

    Build one with :func:`esper_func.lifecycle.germinate`; change it only
    through the lifecycle functions (or ``dataclasses.replace`` for fields
    such as ``is_healthy``). A slot that is free again after a prune is a
    state with ``stage == SeedStage.DORMANT`` whose identity fields still name
    the last occupant.

    ``blend_out_frozen`` is esper-lite's blend-out freeze: set when alpha is
    scheduled to ramp down (the seed's parameters stop training so they do
    not fight the decay), refreshed from the controller at the start of every
    :func:`~esper_func.lifecycle.step_epoch`, so it is lifted one epoch after
    the ramp ends, as in esper-lite.
    """

    slot_id: str = static_field()
    seed_id: str = static_field()
    blueprint_id: str = static_field()

    stage: SeedStage = static_field(default=SeedStage.DORMANT)
    previous_stage: SeedStage = static_field(default=SeedStage.UNKNOWN)
    previous_epochs_in_stage: int = 0
    #: Last :data:`STAGE_HISTORY_MAXLEN` ``(stage, epochs_total)`` entries, oldest first.
    stage_history: tuple[tuple[SeedStage, int], ...] = static_field(default=())

    metrics: SeedMetrics = dataclasses.field(default_factory=SeedMetrics)
    alpha_controller: AlphaController = dataclasses.field(default_factory=AlphaController)
    telemetry: SeedTelemetry = dataclasses.field(default_factory=SeedTelemetry)

    alpha_algorithm: AlphaAlgorithm = static_field(default=AlphaAlgorithm.ADD)
    #: Blend settings chosen at germination ("linear", "sigmoid" or "gated").
    blend_algorithm_id: str = static_field(default="sigmoid")
    blend_tempo_epochs: int = static_field(default=5)
    blend_alpha_target: float = static_field(default=1.0)
    #: The host's :class:`~esper_func.Topology` (a built-in name given here becomes the built-in
    #: ``Topology``); it equals its name, e.g. ``"cnn"``.
    topology: str = static_field(default="cnn")

    is_healthy: bool = True
    is_paused: bool = False
    blend_out_frozen: bool = False
    #: ``total_steps`` of the gate network's schedule (esper-lite's ``GatedBlend``
    #: config, kept for its checkpoints); 0 without a gate.
    gate_total_steps: int = static_field(default=0)

    pending_prune_reason: str | None = static_field(default=None)
    pending_prune_initiator: str | None = static_field(default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.topology, Topology):
            object.__setattr__(self, "topology", resolve_topology(self.topology))

    @property
    def alpha(self) -> float:
        """The blend weight: the alpha controller's current value."""
        return self.alpha_controller.alpha

    @property
    def epochs_in_stage(self) -> int:
        """Epochs counted in the current stage."""
        return self.metrics.epochs_in_current_stage

    @property
    def stage_entered_epoch(self) -> int:
        """``metrics.epochs_total`` when the current stage was entered."""
        return self.metrics.epochs_total - self.metrics.epochs_in_current_stage

    @property
    def isolate_gradients(self) -> bool:
        """Whether the seed reads the *detached* host features.

        Always in TRAINING (the incubator); from BLENDING on when the
        topology says so (``Topology.isolate_blending``: CNN seeds yes,
        transformer seeds co-adapt with the host); never without a seed in
        the forward pass.
        """
        if self.stage == SeedStage.TRAINING:
            return True
        return is_active_stage(self.stage) and resolve_topology(self.topology).isolate_blending


def has_seed(state: SeedState) -> bool:
    """Whether a seed is present (GERMINATED, TRAINING, BLENDING, HOLDING or FOSSILIZED).

    ``False`` for a free slot (DORMANT) and during the cooldown after a prune
    (PRUNED, EMBARGOED, RESETTING), where esper-lite has already dropped the
    seed module.
    """
    return state.stage not in NO_SEED_STAGES


def is_free(state: SeedState | None) -> bool:
    """Whether a slot with this state may receive a new seed (never used, or DORMANT again)."""
    return state is None or state.stage == SeedStage.DORMANT


def has_gate(state: SeedState) -> bool:
    """Whether the seed has its gate network (GATE algorithm, from BLENDING on).

    esper-lite creates a GATE seed's gate network when blending starts (or
    when ``set_alpha_target`` switches a holding seed to GATE) and drops it
    with the seed or when the algorithm is switched away from GATE.
    """
    return state.alpha_algorithm == AlphaAlgorithm.GATE and state.stage in GATED_STAGES


def trainable(state: SeedState) -> bool:
    """Whether the seed's (and its gate's) parameters may be updated this step.

    ``False`` under the blend-out freeze (``state.blend_out_frozen``: a seed
    being faded out must not fight the decay; its forward graph stays intact,
    so the host still gets gradients) and ``False`` when there is no live
    seed. The training step masks the seed's updates with this.
    """
    return has_seed(state) and not state.blend_out_frozen
