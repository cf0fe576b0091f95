"""esper_func: pure, torch.func-native seed slots for morphogenetic networks.

Import as ``import esper_func as ef``. Every public function is pure: it
returns new values and leaves its arguments (and all module-level state)
untouched.
"""

from __future__ import annotations

# Alpha scheduling
from esper_func.lifecycle.alpha import AlphaController as AlphaController
from esper_func.lifecycle.alpha import AlphaCurve as AlphaCurve
from esper_func.lifecycle.alpha import AlphaMode as AlphaMode
from esper_func.lifecycle.alpha import retarget as retarget
from esper_func.lifecycle.alpha import tick as tick

# Submodules with their own namespaces
from esper_func import checkpoint as checkpoint
from esper_func import counterfactual as counterfactual
from esper_func import data as data
from esper_func import hosts as hosts
from esper_func import optim as optim
from esper_func import train as train
from esper_func import tournament as tournament

# Attribution and counterfactuals
from esper_func.attribution import alpha_grid as alpha_grid
from esper_func.attribution import banzhaf as banzhaf
from esper_func.attribution import interactions as interactions
from esper_func.attribution import shapley as shapley
from esper_func.counterfactual import alpha_sensitivity as alpha_sensitivity
from esper_func.counterfactual import evaluate as evaluate
from esper_func.counterfactual import sweep as sweep

# Blending and blueprints
from esper_func.lifecycle.alpha import AlphaAlgorithm as AlphaAlgorithm
from esper_func.blueprints import Blueprint as Blueprint
from esper_func.blueprints import Registry as Registry
from esper_func.blueprints import default_registry as default_registry

# Errors
from esper_func.errors import BlueprintError as BlueprintError
from esper_func.errors import BlueprintExistsError as BlueprintExistsError
from esper_func.errors import CheckpointError as CheckpointError
from esper_func.errors import DTypeError as DTypeError
from esper_func.errors import EsperFuncError as EsperFuncError
from esper_func.errors import HostConfigError as HostConfigError
from esper_func.errors import HostProtocolError as HostProtocolError
from esper_func.errors import IllegalTransitionError as IllegalTransitionError
from esper_func.errors import ImmutableError as ImmutableError
from esper_func.errors import InvalidArgumentError as InvalidArgumentError
from esper_func.errors import InvalidTypeError as InvalidTypeError
from esper_func.errors import MissingDependencyError as MissingDependencyError
from esper_func.errors import ParamsMismatchError as ParamsMismatchError
from esper_func.errors import RunDirectoryError as RunDirectoryError
from esper_func.errors import SegmentRangeError as SegmentRangeError
from esper_func.errors import ShapeError as ShapeError
from esper_func.errors import TrainingDivergedError as TrainingDivergedError
from esper_func.errors import UnknownBlueprintError as UnknownBlueprintError
from esper_func.errors import UnknownHostError as UnknownHostError
from esper_func.errors import UnknownSlotError as UnknownSlotError
from esper_func.errors import UnknownTopologyError as UnknownTopologyError

# Lifecycle events and gates
from esper_func.lifecycle.events import GateEvaluated as GateEvaluated
from esper_func.lifecycle.events import LifecycleEvent as LifecycleEvent
from esper_func.lifecycle.events import SeedFossilized as SeedFossilized
from esper_func.lifecycle.events import SeedGerminated as SeedGerminated
from esper_func.lifecycle.events import SeedPruned as SeedPruned
from esper_func.lifecycle.events import StageChanged as StageChanged
from esper_func.lifecycle.events import TournamentDecided as TournamentDecided
from esper_func.lifecycle.gates import GateLevel as GateLevel
from esper_func.lifecycle.gates import GateResult as GateResult
from esper_func.lifecycle.gates import Gates as Gates
from esper_func.lifecycle.gates import check_gate as check_gate

# Hosts (the protocol, topologies and the built-in hosts)
from esper_func.hosts import CNNHost as CNNHost
from esper_func.hosts import Host as Host
from esper_func.hosts import HostBase as HostBase
from esper_func.hosts import InjectionPoint as InjectionPoint
from esper_func.hosts import Topology as Topology
from esper_func.hosts import TransformerHost as TransformerHost

# Interop with esper-lite checkpoints
from esper_func.interop import from_esper_lite as from_esper_lite
from esper_func.interop import from_state_dict as from_state_dict
from esper_func.interop import to_state_dict as to_state_dict

# Lifecycle state and transitions
from esper_func.lifecycle import Action as Action
from esper_func.lifecycle import ActionKind as ActionKind
from esper_func.lifecycle import GradientHealth as GradientHealth
from esper_func.lifecycle import SeedTelemetry as SeedTelemetry
from esper_func.lifecycle import apply_action as apply_action
from esper_func.lifecycle import gradient_health as gradient_health
from esper_func.lifecycle import has_gate as has_gate
from esper_func.lifecycle import is_free as is_free
from esper_func.lifecycle import slot_extra_state as slot_extra_state
from esper_func.lifecycle import state_from_slot_extra_state as state_from_slot_extra_state
from esper_func.lifecycle import sync_telemetry as sync_telemetry
from esper_func.lifecycle import SeedMetrics as SeedMetrics
from esper_func.lifecycle import SeedState as SeedState
from esper_func.lifecycle import advance as advance
from esper_func.lifecycle import germinate as germinate
from esper_func.lifecycle import germinated_event as germinated_event
from esper_func.lifecycle import gradient_norms as gradient_norms
from esper_func.lifecycle import has_seed as has_seed
from esper_func.lifecycle import prune as prune
from esper_func.lifecycle import record_accuracy as record_accuracy
from esper_func.lifecycle import record_contribution as record_contribution
from esper_func.lifecycle import record_gradients as record_gradients
from esper_func.lifecycle import schedule_prune as schedule_prune
from esper_func.lifecycle import seed_state_from_esper_lite as seed_state_from_esper_lite
from esper_func.lifecycle import seed_state_to_esper_lite as seed_state_to_esper_lite
from esper_func.lifecycle import set_alpha_target as set_alpha_target
from esper_func.lifecycle import state_from_dict as state_from_dict
from esper_func.lifecycle import state_to_dict as state_to_dict
from esper_func.lifecycle import step_epoch as step_epoch
from esper_func.lifecycle import trainable as trainable

# Model
from esper_func.model import Model as Model
from esper_func.model import add_seed as add_seed
from esper_func.model import alphas_of as alphas_of
from esper_func.model import apply as apply
from esper_func.model import build_model as build_model
from esper_func.model import predict as predict
from esper_func.model import remove_seed as remove_seed
from esper_func.model import set_stages as set_stages

# Epoch records (what each epoch of esper_func.fit reports)
from esper_func.records import ActionRecord as ActionRecord
from esper_func.records import EpochRecord as EpochRecord
from esper_func.records import SlotRecord as SlotRecord

# Training (a pure step; torch.compile it as is)
from esper_func.train import StepMetrics as StepMetrics
from esper_func.train import TrainState as TrainState
from esper_func.train import init_train_state as init_train_state
from esper_func.train import record_step_gradients as record_step_gradients
from esper_func.train import train_step as train_step

# Seed tournaments (candidate seeds incubated together in one slot)
from esper_func.candidates import Candidates as Candidates
from esper_func.tournament import CandidateScores as CandidateScores
from esper_func.tournament import add_candidates as add_candidates
from esper_func.tournament import candidate_params as candidate_params
from esper_func.tournament import keep_candidate_opt_state as keep_candidate_opt_state
from esper_func.tournament import keep_candidate_tree as keep_candidate_tree
from esper_func.tournament import score_candidates as score_candidates
from esper_func.tournament import select_candidate as select_candidate

# Slots and stages
from esper_func.slot import Slot as Slot
from esper_func.slot import germinate_slot as germinate_slot
from esper_func.slot import slot_apply as slot_apply
from esper_func.lifecycle.stages import SeedStage as SeedStage

__version__ = "0.1.0"
