"""The seed lifecycle, as one layer of pure values and functions.

A slot's lifecycle is a frozen :class:`SeedState`; every operation is a pure
function returning a new state and the events it caused.

Examples:
    >>> from esper_func.lifecycle import advance, germinate, record_accuracy, step_epoch
    >>> from esper_func.lifecycle.gates import GateLevel, Gates
    >>> gates = Gates()                                 # esper-lite's strict defaults
    >>> state = germinate("r0c0", "norm", seed_params=1_000, host_params=100_000)
    >>> state, result, events = advance(state, gates)  # G1: GERMINATED -> TRAINING
    >>> result.passed, state.stage.name
    (True, 'TRAINING')
    >>> state = record_accuracy(state, 61.0)
    >>> new, events = step_epoch(state, gates, auto_forward={GateLevel.G2})
    >>> new.stage.name                                  # G2 wants 10 epochs in TRAINING
    'TRAINING'
    >>> state.metrics.epochs_total                      # the old state is left alone
    1

Modules (this package imports nothing of esper_func outside it but the base
modules ``errors``, ``_validate`` and ``_pytree``):

- :mod:`.stages`: stages and legal transitions;
- :mod:`.alpha`: the alpha controller, curves and algorithms;
- :mod:`.gates`: quality gates;
- :mod:`.events`: lifecycle events as values;
- :mod:`.state`: :class:`SeedMetrics`, :class:`SeedTelemetry`, :class:`SeedState`;
- :mod:`.transitions`: germinate, advance, prune, schedule_prune,
  set_alpha_target, sync_telemetry, step_epoch;
- :mod:`.measure`: record_* and gradient statistics;
- :mod:`.actions`: controller actions and their executor, :func:`apply_action`;
- :mod:`.codec`: esper_func JSON and esper-lite's layout.
"""

from __future__ import annotations

from esper_func.lifecycle.actions import Action, ActionKind, apply_action
from esper_func.lifecycle.codec import (
    seed_state_from_esper_lite,
    seed_state_to_esper_lite,
    slot_extra_state,
    state_from_dict,
    state_from_slot_extra_state,
    state_to_dict,
)
from esper_func.lifecycle.measure import (
    GradientHealth,
    global_norm,
    gradient_health,
    gradient_norms,
    gradient_ratio,
    record_accuracy,
    record_contribution,
    record_gradients,
)
from esper_func.lifecycle.state import (
    AUTO_PRUNE_REASONS,
    SeedMetrics,
    SeedState,
    SeedTelemetry,
    has_gate,
    has_seed,
    is_free,
    trainable,
)
from esper_func.lifecycle.transitions import (
    advance,
    germinate,
    germinated_event,
    prune,
    schedule_prune,
    set_alpha_target,
    step_epoch,
    sync_telemetry,
)

__all__ = [
    "AUTO_PRUNE_REASONS",
    "Action",
    "ActionKind",
    "GradientHealth",
    "SeedMetrics",
    "SeedState",
    "SeedTelemetry",
    "advance",
    "apply_action",
    "germinate",
    "germinated_event",
    "global_norm",
    "gradient_health",
    "gradient_norms",
    "gradient_ratio",
    "has_gate",
    "has_seed",
    "is_free",
    "prune",
    "record_accuracy",
    "record_contribution",
    "record_gradients",
    "schedule_prune",
    "seed_state_from_esper_lite",
    "seed_state_to_esper_lite",
    "set_alpha_target",
    "slot_extra_state",
    "state_from_dict",
    "state_from_slot_extra_state",
    "state_to_dict",
    "step_epoch",
    "sync_telemetry",
    "trainable",
]
