"""Property-based testing for code built on esper_func: hypothesis strategies, checks and a state machine.

Needs `hypothesis <https://hypothesis.readthedocs.io>`_ (``pip install
'esper-func[testing]'``); ``import esper_func`` itself never imports it.

Strategies (all deterministic under a hypothesis seed, shrinking towards
short and simple cases, never touching torch's global RNG):

- :func:`seed_states`, :func:`histories`: lifecycle states reachable from
  germination by legal operations, built by replaying drawn operations;
- :func:`action_sequences`, :func:`lifecycle_actions`, :func:`germinations`,
  :func:`gate_configs`, and :func:`apply_actions` to replay a sequence;
- :func:`alpha_grids`, :func:`registries`, :func:`blueprints`,
  :func:`hosts` (small, fast), :func:`inputs`, :func:`models` (a model
  with seeds in drawn stages, its parameters and buffers) and
  :func:`slot_states` (lifecycle states that fit a model).

Checks: :func:`assert_pure` (inputs, generators and the global RNG left
alone, no output aliasing an input), :func:`check_state` and
:func:`check_transition` (the lifecycle's invariants).

:class:`LifecycleMachine`: a ``RuleBasedStateMachine`` to subclass, driving
your controller or training loop with the lifecycle's invariants checked
after every step.
"""

from __future__ import annotations

from esper_func.errors import MissingDependencyError

_INSTALL = (
    "esper_func.testing needs hypothesis (>= 6.100), which is not installed; install it with "
    "`pip install 'esper-func[testing]'` (or `pip install hypothesis`)"
)

try:
    import hypothesis as _hypothesis
except ImportError as _exc:
    raise MissingDependencyError(_INSTALL) from _exc
if _hypothesis.__version_info__ < (6, 100):
    raise MissingDependencyError(f"{_INSTALL}; found hypothesis {_hypothesis.__version__}")

from esper_func.testing._actions import Advance as Advance  # noqa: E402
from esper_func.testing._actions import Events as Events  # noqa: E402
from esper_func.testing._actions import Germinate as Germinate  # noqa: E402
from esper_func.testing._actions import LifecycleAction as LifecycleAction  # noqa: E402
from esper_func.testing._actions import Prune as Prune  # noqa: E402
from esper_func.testing._actions import RecordAccuracy as RecordAccuracy  # noqa: E402
from esper_func.testing._actions import RecordContribution as RecordContribution  # noqa: E402
from esper_func.testing._actions import RecordGradients as RecordGradients  # noqa: E402
from esper_func.testing._actions import SchedulePrune as SchedulePrune  # noqa: E402
from esper_func.testing._actions import SetAlphaTarget as SetAlphaTarget  # noqa: E402
from esper_func.testing._actions import StepEpoch as StepEpoch  # noqa: E402
from esper_func.testing._actions import SyncTelemetry as SyncTelemetry  # noqa: E402
from esper_func.testing._actions import apply_actions as apply_actions  # noqa: E402
from esper_func.testing._invariants import InvariantError as InvariantError  # noqa: E402
from esper_func.testing._invariants import check_state as check_state  # noqa: E402
from esper_func.testing._invariants import check_transition as check_transition  # noqa: E402
from esper_func.testing._machine import LifecycleMachine as LifecycleMachine  # noqa: E402
from esper_func.testing._purity import PurityError as PurityError  # noqa: E402
from esper_func.testing._purity import assert_pure as assert_pure  # noqa: E402
from esper_func.testing._strategies import REACHABLE_STAGES as REACHABLE_STAGES  # noqa: E402
from esper_func.testing._strategies import DrawnModel as DrawnModel  # noqa: E402
from esper_func.testing._strategies import History as History  # noqa: E402
from esper_func.testing._strategies import action_sequences as action_sequences  # noqa: E402
from esper_func.testing._strategies import alpha_grids as alpha_grids  # noqa: E402
from esper_func.testing._strategies import blueprints as blueprints  # noqa: E402
from esper_func.testing._strategies import gate_configs as gate_configs  # noqa: E402
from esper_func.testing._strategies import germinations as germinations  # noqa: E402
from esper_func.testing._strategies import histories as histories  # noqa: E402
from esper_func.testing._strategies import hosts as hosts  # noqa: E402
from esper_func.testing._strategies import inputs as inputs  # noqa: E402
from esper_func.testing._strategies import lifecycle_actions as lifecycle_actions  # noqa: E402
from esper_func.testing._strategies import models as models  # noqa: E402
from esper_func.testing._strategies import registries as registries  # noqa: E402
from esper_func.testing._strategies import seed_states as seed_states  # noqa: E402
from esper_func.testing._strategies import slot_states as slot_states  # noqa: E402

__all__ = [
    # strategies
    "seed_states",
    "histories",
    "History",
    "REACHABLE_STAGES",
    "action_sequences",
    "lifecycle_actions",
    "germinations",
    "gate_configs",
    "alpha_grids",
    "registries",
    "blueprints",
    "hosts",
    "inputs",
    "models",
    "DrawnModel",
    "slot_states",
    # lifecycle operations as values
    "LifecycleAction",
    "Events",
    "Germinate",
    "RecordAccuracy",
    "RecordContribution",
    "RecordGradients",
    "SyncTelemetry",
    "Advance",
    "Prune",
    "SchedulePrune",
    "SetAlphaTarget",
    "StepEpoch",
    "apply_actions",
    # checks
    "assert_pure",
    "PurityError",
    "check_state",
    "check_transition",
    "InvariantError",
    # state machine
    "LifecycleMachine",
]
