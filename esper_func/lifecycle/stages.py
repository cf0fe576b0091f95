"""Seed lifecycle stages and the legal transitions between them.

The integer values match esper-lite's ``SeedStage`` (value 5 is unused), so
stage numbers read from an esper-lite checkpoint mean the same here::

    DORMANT -> GERMINATED -> TRAINING -> BLENDING -> HOLDING -> FOSSILIZED
                   |            |           |          |  ^        (terminal)
                   v            v           v          v  |
                 PRUNED <-------+-----------+----------+  +-- HOLDING -> BLENDING
                   |                                          (partial target or
                   v                                           scheduled prune)
               EMBARGOED -> RESETTING -> DORMANT
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

from esper_func._validate import CheckedIntEnum
from esper_func.hosts import BUILTIN_TOPOLOGIES, Topology

__all__ = [
    "SeedStage",
    "Topology",  # re-exported from esper_func.hosts
    "TOPOLOGIES",
    "VALID_TRANSITIONS",
    "ACTIVE_STAGES",
    "FAILURE_STAGES",
    "SEEDLESS_STAGES",
    "GATED_STAGES",
    "is_valid_transition",
    "is_active_stage",
    "is_failure_stage",
    "is_terminal_stage",
]

#: The built-in topology names (``"cnn"``, ``"transformer"``); a topology of your own is a
#: :class:`~esper_func.Topology` value and needs no entry here.
TOPOLOGIES: Final[tuple[str, ...]] = tuple(BUILTIN_TOPOLOGIES)


class SeedStage(CheckedIntEnum):
    """Lifecycle stage of the seed in one slot."""

    UNKNOWN = 0
    DORMANT = 1
    GERMINATED = 2
    TRAINING = 3
    BLENDING = 4
    HOLDING = 6
    FOSSILIZED = 7
    PRUNED = 8
    EMBARGOED = 9
    RESETTING = 10


_S = SeedStage

#: Legal next stages, in esper-lite's order (the first non-failure entry is
#: the default target of ``advance``).
VALID_TRANSITIONS: Final = MappingProxyType(
    {
        _S.UNKNOWN: (_S.DORMANT,),
        _S.DORMANT: (_S.GERMINATED,),
        _S.GERMINATED: (_S.TRAINING, _S.PRUNED),
        _S.TRAINING: (_S.BLENDING, _S.PRUNED),
        _S.BLENDING: (_S.HOLDING, _S.PRUNED),
        _S.HOLDING: (_S.FOSSILIZED, _S.BLENDING, _S.PRUNED),
        _S.FOSSILIZED: (),
        _S.PRUNED: (_S.EMBARGOED,),
        _S.EMBARGOED: (_S.RESETTING,),
        _S.RESETTING: (_S.DORMANT,),
    }
)

#: Stages in which the seed takes part in the forward pass.
ACTIVE_STAGES: Final = frozenset({_S.TRAINING, _S.BLENDING, _S.HOLDING, _S.FOSSILIZED})

#: Stages after a prune: the seed is gone and the slot is cooling down.
FAILURE_STAGES: Final = frozenset({_S.PRUNED, _S.EMBARGOED, _S.RESETTING})

#: Stages in which the slot holds no seed module (esper-lite: ``seed is None``).
SEEDLESS_STAGES: Final = FAILURE_STAGES | {_S.UNKNOWN, _S.DORMANT}

#: Stages in which a GATE seed has its gate network (esper-lite creates it when blending starts).
GATED_STAGES: Final = frozenset({_S.BLENDING, _S.HOLDING, _S.FOSSILIZED})


def is_valid_transition(from_stage: SeedStage, to_stage: SeedStage) -> bool:
    """Whether ``from_stage -> to_stage`` is a legal lifecycle transition."""
    return to_stage in VALID_TRANSITIONS.get(from_stage, ())


def is_active_stage(stage: SeedStage | int) -> bool:
    """Whether a seed in ``stage`` changes the forward pass (TRAINING and later, not failed)."""
    return stage in ACTIVE_STAGES


def is_failure_stage(stage: SeedStage) -> bool:
    """Whether ``stage`` is one of PRUNED, EMBARGOED, RESETTING."""
    return stage in FAILURE_STAGES


def is_terminal_stage(stage: SeedStage) -> bool:
    """Whether ``stage`` has no way out (FOSSILIZED)."""
    return stage == SeedStage.FOSSILIZED
