"""``LifecycleMachine``: a hypothesis state machine over the slots of a model, with the lifecycle's invariants."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from esper_func.errors import IllegalTransitionError, InvalidArgumentError
from esper_func.lifecycle import state_from_dict, state_to_dict
from esper_func.lifecycle.events import LifecycleEvent
from esper_func.lifecycle.gates import GateLevel, Gates
from esper_func.lifecycle.stages import TOPOLOGIES
from esper_func.lifecycle.state import SeedState
from esper_func.testing._actions import Events, Germinate, LifecycleAction, StepEpoch
from esper_func.testing._invariants import InvariantError, check_state, check_transition
from esper_func.testing._strategies import gate_configs, lifecycle_actions

__all__ = ["LifecycleMachine"]

_ALL_LEVELS = frozenset({GateLevel.G1, GateLevel.G2, GateLevel.G3})


class LifecycleMachine(RuleBasedStateMachine):
    """A state machine over the lifecycle states of a few slots; subclass it to test your own code.

    The machine keeps ``self.states`` (slot id -> :class:`~esper_func.SeedState`;
    a slot absent from it was never used), ``self.gates`` (drawn once per run
    by :meth:`setup_lifecycle`), ``self.topology_of_run``, ``self.epoch`` (a
    counter for your loop; :meth:`lifecycle_epoch` advances it) and
    ``self.events`` (every event recorded so far, in order).

    After every rule, :meth:`lifecycle_invariants` runs
    :func:`~esper_func.testing.check_state` on each slot's state and
    :func:`~esper_func.testing.check_transition` from the state it last saw,
    so a rule that breaks the lifecycle, or code that produces a state no
    legal sequence of operations could produce, fails at the step that did
    it. At the end of each run every state must round-trip through
    ``state_to_dict``/``state_from_dict`` (via strict JSON).

    Drive the slots from your rules with :meth:`act` (one lifecycle operation
    on one slot), :meth:`update` (a state your code computed, with its
    events) or :meth:`update_all` (the result of
    :func:`esper_func.apply_action`, or of a whole training step). The built-in
    rules :meth:`lifecycle_action` (a random operation on a random slot) and
    :meth:`lifecycle_epoch` (``step_epoch`` on every slot) perturb the slots
    between your steps; set ``random_actions = False`` to leave the slots to
    your rules alone (then define at least one rule).

    Class attributes to override: ``slot_ids`` (the slots, default
    ``("r0c0", "r0c1")``), ``topology`` (``"cnn"``, ``"transformer"``, or
    ``None`` to draw one per run), ``random_actions``. To choose the gates,
    override :meth:`setup_lifecycle` with your own ``@initialize`` rule.

    Run it as ``TestMine = MyMachine.TestCase`` (pytest collects it) or with
    :func:`hypothesis.stateful.run_state_machine_as_test`.
    """

    slot_ids: ClassVar[tuple[str, ...]] = ("r0c0", "r0c1")
    topology: ClassVar[str | None] = None
    random_actions: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        if not self.slot_ids:
            raise InvalidArgumentError(f"{type(self).__name__}.slot_ids is empty; name at least one slot")
        self.gates: Gates = Gates()
        self.topology_of_run: str = self.topology or TOPOLOGIES[0]
        self.states: dict[str, SeedState] = {}
        self.events: list[LifecycleEvent] = []
        self.epoch: int = 0
        self._seen: dict[str, SeedState] = {}

    # ------------------------------------------------------------------ setup

    @initialize(gates=gate_configs(), topology=st.sampled_from(TOPOLOGIES))
    def setup_lifecycle(self, gates: Gates, topology: str) -> None:
        """Draw the gates (from :func:`~esper_func.testing.gate_configs`) and, unless fixed, the topology."""
        self.gates = gates
        self.topology_of_run = self.topology or topology

    # ------------------------------------------------------------------ driving the slots

    def act(self, slot_id: str, action: LifecycleAction) -> tuple[SeedState | None, Events]:
        """Apply one lifecycle operation to ``slot_id``, check the result, and keep it.

        A :class:`~esper_func.testing.Germinate` takes the run's topology and
        the slot's id. Returns the operation's ``(state, events)``.
        """
        if isinstance(action, Germinate):
            action = dataclasses.replace(action, slot_id=slot_id, topology=self.topology_of_run)
        new, events = action.apply(self.states.get(slot_id), self.gates)
        if new is not None:
            self.update(slot_id, new, events)
        return new, events

    def update(self, slot_id: str, state: SeedState, events: Iterable[LifecycleEvent] | None = ()) -> None:
        """Record ``state`` as the slot's new state and check it against the last one.

        ``events`` are what the operations that produced it returned
        (``None`` if unknown; they are then not cross-checked).
        """
        if not isinstance(state, SeedState):
            raise InvariantError(f"slot {slot_id!r}: expected a SeedState, got {type(state).__name__}")
        if state.slot_id != slot_id:
            raise InvariantError(f"a state of slot {state.slot_id!r} was stored as slot {slot_id!r}")
        listed = None if events is None else tuple(events)
        self._check(slot_id, state, listed)
        self.states[slot_id] = state
        if listed:
            self.events.extend(listed)

    def update_all(self, states: Mapping[str, SeedState], events: Iterable[LifecycleEvent] | None = ()) -> None:
        """:meth:`update` every slot of ``states`` that changed; ``events`` are split by their ``slot_id``.

        Takes ``new_states, events, _ = ef.apply_action(...)`` as is.
        """
        listed = None if events is None else tuple(events)
        for slot_id, state in states.items():
            if state is not self.states.get(slot_id):
                mine = None if listed is None else tuple(e for e in listed if getattr(e, "slot_id", None) == slot_id)
                self.update(slot_id, state, mine)

    def _check(self, slot_id: str, state: SeedState, events: tuple[LifecycleEvent, ...] | None) -> None:
        previous = self._seen.get(slot_id)
        if previous is state:
            return
        check_state(state)
        if previous is not None:
            check_transition(previous, state, events)
        self._seen[slot_id] = state

    # ------------------------------------------------------------------ built-in rules

    @precondition(lambda self: self.random_actions)
    @rule(slot=st.integers(0, 7), action=lifecycle_actions())
    def lifecycle_action(self, slot: int, action: LifecycleAction) -> None:
        """A random lifecycle operation on one of the slots."""
        try:
            self.act(self.slot_ids[slot % len(self.slot_ids)], action)
        except IllegalTransitionError:
            # Only a seed germinated elsewhere with a gated blend of tempo 0 can make an operation
            # illegal (it can never blend); the lifecycle refused it before changing anything.
            pass

    @precondition(lambda self: self.random_actions)
    @rule(auto_forward=st.sampled_from([_ALL_LEVELS, frozenset()]))
    def lifecycle_epoch(self, auto_forward: frozenset[GateLevel]) -> None:
        """One epoch of lifecycle time: ``step_epoch`` on every slot."""
        self.epoch += 1
        for slot_id in self.slot_ids:
            if slot_id in self.states:
                try:
                    self.act(slot_id, StepEpoch(auto_forward=auto_forward))
                except IllegalTransitionError:
                    pass

    # ------------------------------------------------------------------ checks

    @invariant()
    def lifecycle_invariants(self) -> None:
        """Every slot's state passes ``check_state``, and follows from the state seen before it."""
        for slot_id, state in self.states.items():
            self._check(slot_id, state, None)

    def teardown(self) -> None:
        for state in self.states.values():
            encoded = json.loads(json.dumps(state_to_dict(state), allow_nan=False))
            if state_from_dict(encoded) != state:
                raise InvariantError(f"slot {state.slot_id!r}: the state does not survive state_to_dict/state_from_dict")
        super().teardown()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(states={ {k: v.stage.name for k, v in self.states.items()} })"
