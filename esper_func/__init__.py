"""esper_func: pure, torch.func-native seed slots for morphogenetic networks.

Import as ``import esper_func as ef``. Every public function is pure: it
returns new values and leaves its arguments (and all module-level state)
untouched.
"""

from __future__ import annotations

from esper_func.blend import AlphaAlgorithm as AlphaAlgorithm
from esper_func.blueprints import Blueprint as Blueprint
from esper_func.blueprints import Registry as Registry
from esper_func.blueprints import default_registry as default_registry
from esper_func.errors import BlueprintExistsError as BlueprintExistsError
from esper_func.errors import CheckpointError as CheckpointError
from esper_func.errors import DTypeError as DTypeError
from esper_func.errors import EsperFuncError as EsperFuncError
from esper_func.errors import IllegalTransitionError as IllegalTransitionError
from esper_func.errors import ParamsMismatchError as ParamsMismatchError
from esper_func.errors import ShapeError as ShapeError
from esper_func.errors import UnknownBlueprintError as UnknownBlueprintError
from esper_func.errors import UnknownTopologyError as UnknownTopologyError
from esper_func.slot import Slot as Slot
from esper_func.slot import germinate_slot as germinate_slot
from esper_func.slot import slot_apply as slot_apply
from esper_func.stages import SeedStage as SeedStage

__version__ = "0.1.0"
