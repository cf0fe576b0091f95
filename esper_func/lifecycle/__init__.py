"""Seed lifecycle as pure state transitions.

A slot's lifecycle is a frozen :class:`SeedState`; every operation is a pure
function returning a new state and the events it caused::

    state = germinate("r0c0", "norm", seed_params=1_000, host_params=100_000)
    state, result, events = advance(state, gates)          # -> TRAINING (G1)
    state = record_accuracy(state, 61.0)
    state, events = step_epoch(state, gates, auto_forward={GateLevel.G2})

Modules: :mod:`.state` (the values), :mod:`.transitions` (germinate, advance,
prune, schedule_prune, set_alpha_target, step_epoch), :mod:`.measure`
(record_* and gradient norms), :mod:`.serialization` (dicts and esper-lite
import). Gates live in :mod:`esper_func.lifecycle.gates`, events in
:mod:`esper_func.lifecycle.events`, the alpha controller in :mod:`esper_func.lifecycle.alpha`.
"""

from __future__ import annotations

from esper_func.lifecycle.codec import (
    seed_state_from_esper_lite,
    seed_state_to_esper_lite,
    state_from_dict,
    state_to_dict,
)
from esper_func.lifecycle.measure import (
    GradientHealth,
    gradient_health,
    global_norm,
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
    has_seed,
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
)

__all__ = [
    "AUTO_PRUNE_REASONS",
    "SeedMetrics",
    "SeedState",
    "advance",
    "germinate",
    "germinated_event",
    "global_norm",
    "GradientHealth",
    "gradient_health",
    "gradient_norms",
    "gradient_ratio",
    "has_seed",
    "prune",
    "record_accuracy",
    "record_contribution",
    "record_gradients",
    "schedule_prune",
    "seed_state_from_esper_lite",
    "seed_state_to_esper_lite",
    "set_alpha_target",
    "state_from_dict",
    "state_to_dict",
    "step_epoch",
    "trainable",
]
