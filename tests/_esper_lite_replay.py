"""Replay recorded esper-lite lifecycle traces through esper_func and compare after every operation.

A trace (see ``tests/data/esper-lite-2016337e/README.md``) is a list of
operations on one esper-lite ``SeedSlot`` with its full state, return value
and telemetry events after each. :func:`replay_lifecycle` applies the same
operations to esper_func's pure lifecycle and checks, after every one:

- the return value (accepted/refused, the gate result with its check
  strings, or that both raise);
- the events (type and every payload field esper_func reproduces);
- the full state: stage, previous stage, history, every metric, the alpha
  controller, alpha, the measured telemetry, and the slot-level fields
  (isolation, blend-out freeze, pending prune, blend settings, topology, the
  gate network, whether a seed is present).

The deliberate deviations (``docs/migrating-from-esper-lite.md``) are
handled explicitly and counted, never silently:

- ``alpha lag``: after a zero-step retarget esper-lite's scalar alpha lags
  its controller until the next ``step_epoch``; esper_func has one alpha, the
  controller's. Alpha is then compared with esper-lite's controller.
- ``NaN target``: esper-lite takes ``set_alpha_target(nan)`` as a target of
  1.0; esper_func refuses NaN, so the replay checks the refusal and then
  issues the explicit 1.0.
- ``refused prune``: a prune esper-lite refuses in the cooldown stages still
  rewrites ``auto_pruned``; esper_func leaves the state alone, so those two
  fields are not compared until the next germination.
- ``half-applied``: a refused ``germinate`` on an occupied slot that still
  replaced the live seed's blend settings, and a gated blend with zero tempo
  that moved the stage before raising: esper_func refuses before changing
  anything, after which the two lifecycles legitimately differ; the replay
  stops that trace there (after checking that esper_func refused).
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

import esper_func as ef
from esper_func.lifecycle.codec import seed_state_to_esper_lite
from esper_func.lifecycle.events import GateEvaluated, SeedFossilized, SeedGerminated, SeedPruned, StageChanged
from esper_func.slot import Slot

REGISTRY = ef.default_registry()
S = ef.SeedStage

# Telemetry fields esper_func stores; the rest of esper-lite's telemetry dict is a snapshot it derives.
TELEMETRY_STORED = ("gradient_norm", "gradient_health", "has_vanishing", "has_exploding", "epoch", "max_epochs")


class Mismatch(AssertionError):
    """esper_func disagrees with the recorded esper-lite behaviour."""


@dataclasses.dataclass
class ReplayStats:
    """What a replay compared, and which deviations it met."""

    traces: int = 0
    operations: int = 0
    compared: int = 0
    stopped: Counter[str] = dataclasses.field(default_factory=Counter)
    deviations: Counter[str] = dataclasses.field(default_factory=Counter)


def gates_of(spec: Mapping[str, Any]) -> ef.Gates:
    return ef.Gates(
        permissive=spec["permissive"],
        min_blending_epochs=spec["min_blending_epochs"],
        min_training_improvement=spec["min_training_improvement"],
        min_seed_gradient_ratio=spec["min_seed_gradient_ratio"],
        min_gradient_health_for_blending=spec["min_gradient_health_for_blending"],
    )


def seed_param_count(topology: str, blueprint: str, channels: int) -> int:
    slot = Slot(REGISTRY.get(topology, blueprint), channels)
    return sum(math.prod(shape) for shape in slot.param_shapes["seed"].values())


def _expect(where: str, ours: Any, theirs: Any) -> None:
    if isinstance(ours, bool) or isinstance(theirs, bool):
        same = ours is theirs or (ours is None and theirs is None)
    elif isinstance(ours, float) and isinstance(theirs, float) and math.isnan(ours) and math.isnan(theirs):
        same = True
    else:
        same = ours == theirs
    if not same:
        raise Mismatch(f"{where}: esper_func {ours!r} != esper-lite {theirs!r}")


# --------------------------------------------------------------------------- events


def event_record(event: Any) -> dict[str, Any]:
    """An esper_func event in the recorded ``{"type", "data"}`` form (the fields both have)."""
    if isinstance(event, SeedGerminated):
        return {"type": "SEED_GERMINATED", "data": {
            "slot_id": event.slot_id, "blueprint_id": event.blueprint_id, "params": event.params,
            "alpha": event.alpha, "grad_ratio": 0.0, "has_vanishing": False, "has_exploding": False,
            "epochs_in_stage": 0, "blend_tempo_epochs": event.blend_tempo_epochs,
            "alpha_curve": event.alpha_curve.name}}
    if isinstance(event, GateEvaluated):
        return {"type": "SEED_GATE_EVALUATED", "data": {
            "slot_id": event.slot_id, "gate": event.gate.name, "passed": event.passed,
            "target_stage": event.target_stage.name, "checks_passed": list(event.checks_passed),
            "checks_failed": list(event.checks_failed), "message": event.message}}
    if isinstance(event, StageChanged):
        return {"type": "SEED_STAGE_CHANGED", "data": {
            "slot_id": event.slot_id, "from_stage": event.from_stage.name, "to_stage": event.to_stage.name,
            "alpha": event.alpha, "accuracy_delta": event.accuracy_delta, "epochs_in_stage": event.epochs_in_stage,
            "grad_ratio": event.grad_ratio, "has_vanishing": event.has_vanishing,
            "has_exploding": event.has_exploding, "alpha_curve": event.alpha_curve.name}}
    if isinstance(event, SeedFossilized):
        return {"type": "SEED_FOSSILIZED", "data": {
            "slot_id": event.slot_id, "blueprint_id": event.blueprint_id, "improvement": event.improvement,
            "params_added": event.params_added, "alpha": event.alpha, "epochs_total": event.epochs_total,
            "counterfactual": event.counterfactual, "blending_delta": event.blending_delta}}
    if isinstance(event, SeedPruned):
        return {"type": "SEED_PRUNED", "data": {
            "slot_id": event.slot_id, "reason": event.reason, "blueprint_id": event.blueprint_id,
            "improvement": event.improvement, "auto_pruned": event.auto_pruned, "epochs_total": event.epochs_total,
            "counterfactual": event.counterfactual, "blending_delta": event.blending_delta,
            "initiator": event.initiator}}
    raise TypeError(f"unknown event {event!r}")  # pragma: no cover


def compare_events(where: str, ours: list[Any], recorded: list[Mapping[str, Any]], *, alpha_lag: bool) -> None:
    mine = [event_record(e) for e in ours]
    if [e["type"] for e in mine] != [e["type"] for e in recorded]:
        raise Mismatch(f"{where}: events {[e['type'] for e in mine]} != esper-lite {[e['type'] for e in recorded]}")
    for k, (a, b) in enumerate(zip(mine, recorded, strict=True)):
        for key, value in a["data"].items():
            if key == "alpha" and alpha_lag:
                continue  # esper-lite reports its lagging scalar alpha (deviation "alpha lag")
            if key not in b["data"]:
                raise Mismatch(f"{where}: event {k} {a['type']} has no recorded field {key!r}")
            _expect(f"{where}: event {k} {a['type']}.{key}", value, b["data"][key])


# --------------------------------------------------------------------------- state


def compare_state(where: str, ours: ef.SeedState | None, after: Mapping[str, Any] | None, *,
                  skip_auto_pruned: bool = False, skip_blend_settings: bool = False,
                  isolation_in_forward_only: bool = False) -> None:
    """Our state against a recorded slot state (``None``: an empty slot)."""
    if after is None:
        if ours is not None and ours.stage != S.DORMANT:
            raise Mismatch(f"{where}: esper-lite's slot is empty, esper_func's is {ours.stage.name}")
        return
    if ours is None or ours.stage == S.DORMANT:
        raise Mismatch(f"{where}: esper_func's slot is empty, esper-lite's holds a state")
    theirs = after["seed_state"]
    mine = seed_state_to_esper_lite(ours)
    controller = theirs["alpha_controller"]
    for key in ("seed_id", "blueprint_id", "slot_id", "stage", "previous_stage", "alpha_algorithm",
                "blend_tempo_epochs", "is_healthy", "is_paused", "previous_epochs_in_stage"):
        _expect(f"{where}: {key}", mine[key], theirs[key])
    # One alpha here: esper-lite's scalar may lag its controller after a zero-step retarget.
    _expect(f"{where}: alpha", ours.alpha, controller["alpha"])
    _expect(f"{where}: stage_history", [stage for stage, _ in mine["stage_history"]], theirs["stage_history"])
    for key, value in mine["alpha_controller"].items():
        _expect(f"{where}: alpha_controller.{key}", value, controller[key])
    for key, value in mine["metrics"].items():
        if key == "current_alpha":
            continue  # the scalar alpha again (compared above)
        _expect(f"{where}: metrics.{key}", value, theirs["metrics"][key])
    telemetry = theirs["telemetry"]
    for key in TELEMETRY_STORED:
        _expect(f"{where}: telemetry.{key}", getattr(ours.telemetry, key), telemetry[key])
    if not skip_auto_pruned:
        _expect(f"{where}: auto_pruned", ours.metrics.auto_pruned, after["auto_pruned"])
        _expect(f"{where}: auto_prune_reason", ours.metrics.auto_prune_reason, after["auto_prune_reason"])
    slot = after["slot"]
    if not isolation_in_forward_only or ours.stage in (S.TRAINING, S.BLENDING, S.HOLDING, S.FOSSILIZED):
        # esper-lite's heuristic loop sets every slot's flag before the first germination; it is
        # only read in the forward pass, where esper_func derives it from the stage and topology.
        _expect(f"{where}: isolate_gradients", ours.isolate_gradients, slot["isolate_gradients"])
    _expect(f"{where}: blend_out_frozen", ours.blend_out_frozen, slot["blend_out_freeze_active"])
    _expect(f"{where}: pending_prune_reason", ours.pending_prune_reason, slot["pending_prune_reason"])
    _expect(f"{where}: pending_prune_initiator", ours.pending_prune_initiator, slot["pending_prune_initiator"])
    if not skip_blend_settings:
        _expect(f"{where}: blend_algorithm_id", ours.blend_algorithm_id, slot["blend_algorithm_id"])
        _expect(f"{where}: blend_tempo_epochs (slot)", ours.blend_tempo_epochs, slot["blend_tempo_epochs"])
        _expect(f"{where}: blend_alpha_target", ours.blend_alpha_target, slot["blend_alpha_target"])
        _expect(f"{where}: topology", ours.topology, slot["resolved_topology"])
    _expect(f"{where}: has_seed", ef.has_seed(ours), slot["has_seed"])
    _expect(f"{where}: has_gate", ef.has_gate(ours), slot["has_alpha_schedule"])
    if slot["has_alpha_schedule"]:
        _expect(f"{where}: gate_total_steps", ours.gate_total_steps, slot["alpha_schedule_total_steps"])
    _expect(f"{where}: trainable", ef.trainable(ours), ef.has_seed(ours) and not slot["blend_out_freeze_active"])


# --------------------------------------------------------------------------- operations


def _gate_result(where: str, ours: ef.GateResult, theirs: Mapping[str, Any]) -> None:
    _expect(f"{where}: gate", ours.gate.name, theirs["gate"])
    _expect(f"{where}: passed", ours.passed, theirs["passed"])
    _expect(f"{where}: score", ours.score, theirs["score"])
    _expect(f"{where}: checks_passed", list(ours.checks_passed), theirs["checks_passed"])
    _expect(f"{where}: checks_failed", list(ours.checks_failed), theirs["checks_failed"])
    _expect(f"{where}: message", ours.message, theirs["message"])


class _Stop(Exception):
    """The trace cannot be replayed further (a documented deviation)."""


class _BlendSettingsDiverged(Exception):
    """esper-lite half-applied a refused germination to a seed that no longer reads its blend settings."""


def apply_op(state: ef.SeedState | None, op: Mapping[str, Any], gates: ef.Gates, trace: Mapping[str, Any],
             stats: ReplayStats) -> tuple[ef.SeedState | None, list[Any], Any]:
    """Apply one recorded operation to ``state``; returns ``(state, events, returned)`` or raises."""
    name, a = op["op"], op["args"]
    if name == "germinate":
        topology = a["topology"] or "cnn"
        algorithm = ef.AlphaAlgorithm[a["alpha_algorithm"]]
        occupied = state is not None and state.stage != S.DORMANT
        if occupied and op.get("refused_but_changed"):
            # esper-lite replaced the live seed's blend settings, then refused. They are read again
            # only when blending starts: past TRAINING the lifecycles still agree on everything else.
            assert state is not None
            if state.stage in (S.GERMINATED, S.TRAINING):
                raise _Stop("half-applied germinate")
            stats.deviations["half-applied germinate"] += 1
            raise _BlendSettingsDiverged
        if occupied and op.get("raised", {}).get("type") == "RuntimeError":
            # esper-lite refuses a germination into an occupied slot; esper_func's executor refuses
            # it too (apply_action raises IllegalTransitionError) without touching the live seed.
            return state, [], None
        params = seed_param_count(topology, a["blueprint_id"], trace["channels"])
        new = ef.germinate(
            trace["slot_id"], a["blueprint_id"], seed_id=a["seed_id"], algorithm=algorithm,
            blend=a["blend_algorithm_id"], tempo=a["blend_tempo_epochs"], alpha_target=a["alpha_target"],
            topology=topology, seed_params=params, host_params=a["host_params"] or 0,
        )
        return new, [ef.germinated_event(new)], None
    if state is None:  # an empty slot: every request is refused or a no-op, as for a free DORMANT state
        state = ef.SeedState(slot_id=trace["slot_id"], seed_id="", blueprint_id="", stage=S.DORMANT)
    if name == "advance_stage":
        target = None if a["target"] is None else S[a["target"]]
        new, result, events = ef.advance(state, gates, target)
        return new, list(events), result
    if name == "prune":
        new, events = ef.prune(state, a["reason"], initiator=a["initiator"])
        return new, list(events), new is not state
    if name == "schedule_prune":
        curve = None if a["curve"] is None else ef.AlphaCurve[a["curve"]]
        new, events = ef.schedule_prune(state, steps=a["steps"], curve=curve, steepness=a["steepness"],
                                        reason=a["reason"], initiator=a["initiator"])
        return new, list(events), new is not state
    if name == "set_alpha_target":
        curve = None if a["curve"] is None else ef.AlphaCurve[a["curve"]]
        algorithm = None if a["alpha_algorithm"] is None else ef.AlphaAlgorithm[a["alpha_algorithm"]]
        target = a["alpha_target"]
        if isinstance(target, float) and math.isnan(target):
            try:
                ef.set_alpha_target(state, alpha_target=target, steps=a["steps"], curve=curve,
                                    steepness=a["steepness"], alpha_algorithm=algorithm)
            except ef.InvalidArgumentError:
                stats.deviations["NaN target"] += 1
                target = 1.0  # what esper-lite makes of it
            else:
                raise Mismatch("set_alpha_target(nan) was not refused") from None
        new, events = ef.set_alpha_target(state, alpha_target=target, steps=a["steps"], curve=curve,
                                          steepness=a["steepness"], alpha_algorithm=algorithm)
        return new, list(events), new is not state
    if name == "step_epoch":
        new, events = ef.step_epoch(state, gates, auto_forward={ef.GateLevel[g] for g in a["auto_forward"]})
        return new, list(events), None
    if name == "record_accuracy":
        return ef.record_accuracy(state, a["accuracy"]), [], None
    if name == "capture_gradients":
        return ef.record_gradients(state, host_grad_norm=a["host_grad_norm"], seed_grad_norm=a["seed_grad_norm"]), [], None
    if name == "sync_telemetry":
        return ef.sync_telemetry(
            state, epoch=a["epoch"], max_epochs=a["max_epochs"], gradient_norm=a["gradient_norm"],
            gradient_health=a["gradient_health"], has_vanishing=a["has_vanishing"], has_exploding=a["has_exploding"],
        ), [], None
    if name == "record_contribution":
        return ef.record_contribution(state, a["contribution"]), [], None
    raise Mismatch(f"unknown recorded operation {name!r}")


def _lags(after: Mapping[str, Any] | None) -> bool:
    if after is None:
        return False
    seed_state = after["seed_state"]
    return bool(seed_state["alpha"] != seed_state["alpha_controller"]["alpha"])


def replay_lifecycle(trace: Mapping[str, Any], stats: ReplayStats | None = None) -> ReplayStats:
    """Replay one lifecycle trace; raises :class:`Mismatch` at the first disagreement."""
    stats = stats or ReplayStats()
    stats.traces += 1
    gates = gates_of(trace["gates"])
    state: ef.SeedState | None = None
    skip_auto_pruned = skip_blend_settings = False
    previous_after: Mapping[str, Any] | None = None
    for op in trace["ops"]:
        stats.operations += 1
        where = f"{trace['id']} op {op['i']} {op['op']}({op['args']})"
        raised = op.get("raised")
        if op["op"] == "schedule_prune" and _lags(previous_after):
            # esper-lite decides "prune now" from its lagging scalar alpha (deviation "alpha lag").
            stats.stopped["alpha lag decision"] += 1
            return stats
        try:
            new, events, returned = apply_op(state, op, gates, trace, stats)
        except _Stop as stop:
            stats.stopped[str(stop)] += 1
            return stats
        except _BlendSettingsDiverged:
            skip_blend_settings = True
            previous_after = op.get("after")
            stats.compared += 1
            continue
        except ef.EsperFuncError as exc:
            if raised is None:
                raise Mismatch(f"{where}: esper_func raised {exc!r}; esper-lite did not") from exc
            if op.get("refused_but_changed"):
                # esper-lite changed its state before raising (gated zero tempo); esper_func refused first.
                stats.stopped["half-applied " + op["op"]] += 1
                return stats
            unknown_blueprint = isinstance(exc, ef.UnknownBlueprintError)  # a KeyError here, a ValueError there
            if not (isinstance(exc, ValueError) or unknown_blueprint) or raised["type"] != "ValueError":
                raise Mismatch(f"{where}: esper_func raised {type(exc).__name__}, esper-lite {raised['type']}") from exc
            stats.compared += 1
            continue
        if raised is not None and not (op["op"] == "germinate" and raised["type"] == "RuntimeError"):
            raise Mismatch(f"{where}: esper-lite raised {raised}; esper_func did not")
        if op["op"] in ("prune", "schedule_prune") and op.get("refused_but_changed"):
            # esper-lite's refused prune in the cooldown still rewrote auto_pruned (deviation "refused prune").
            stats.deviations["refused prune"] += 1
            skip_auto_pruned = True
        if op["op"] == "germinate" and new is not state:
            skip_auto_pruned = skip_blend_settings = False
        lag = _lags(op.get("after")) or _lags(previous_after)
        previous_after = op.get("after")
        if lag:
            stats.deviations["alpha lag"] += 1
        if op["op"] in ("prune", "schedule_prune", "set_alpha_target"):
            _expect(f"{where}: accepted", returned, op["returned"])
        elif op["op"] == "advance_stage":
            _gate_result(where, returned, op["returned"])
        compare_events(where, events, op["events"], alpha_lag=lag)
        compare_state(where, new, op["after"], skip_auto_pruned=skip_auto_pruned,
                      skip_blend_settings=skip_blend_settings)
        state = None if new is not None and new.stage == S.DORMANT and not new.seed_id else new
        stats.compared += 1
    return stats


# --------------------------------------------------------------------------- controller traces


def heuristic_config(trace: Mapping[str, Any]) -> Any:
    """esper_func's ``HeuristicConfig`` for a recorded ``HeuristicPolicyConfig`` and ``SignalTracker``."""
    from esper_func.controller import HeuristicConfig

    policy, tracker = trace["policy_config"], trace["tracker_config"]
    return HeuristicConfig(
        plateau_epochs_to_germinate=policy["plateau_epochs_to_germinate"],
        min_epochs_before_germinate=policy["min_epochs_before_germinate"],
        prune_after_epochs_without_improvement=policy["prune_after_epochs_without_improvement"],
        prune_if_accuracy_drops_by=policy["prune_if_accuracy_drops_by"],
        min_improvement_to_fossilize=policy["min_improvement_to_fossilize"],
        embargo_epochs_after_prune=policy["embargo_epochs_after_prune"],
        blueprint_rotation=tuple(policy["blueprint_rotation"]),
        blueprint_penalty_on_prune=policy["blueprint_penalty_on_prune"],
        blueprint_penalty_decay=policy["blueprint_penalty_decay"],
        blueprint_penalty_threshold=policy["blueprint_penalty_threshold"],
        ransomware_contribution_threshold=policy["ransomware_contribution_threshold"],
        ransomware_improvement_threshold=policy["ransomware_improvement_threshold"],
        plateau_threshold=tracker["plateau_threshold_pct"],
        stabilization_threshold=tracker["stabilization_threshold"],
        stabilization_epochs=tracker["stabilization_epochs"],
        regression_threshold=tracker["regression_threshold"],
    )


def replay_controller(trace: Mapping[str, Any], stats: ReplayStats | None = None) -> ReplayStats:
    """Replay one controller trace: esper_func's lifecycle and heuristic in esper-lite's loop order.

    Per epoch the recorded inputs go through the lifecycle (gradients,
    contributions, accuracy of the slots with a seed, telemetry), the free
    slots are counted, every slot is stepped, ``decide`` is asked and its
    answer applied as esper-lite's heuristic loop applies it. The tracker's
    plateau and stabilisation, the decision (kind, slot, blueprint), the
    events and every slot's state must equal the recording.
    """
    from esper_func.controller import Observation, SlotView, decide, recall

    stats = stats or ReplayStats()
    stats.traces += 1
    config = heuristic_config(trace)
    gates = gates_of(trace["gates"])
    slot_ids = [s["slot_id"] for s in trace["slots"]]
    channels = {s["slot_id"]: s["channels"] for s in trace["slots"]}
    states: dict[str, ef.SeedState | None] = dict.fromkeys(slot_ids)
    accuracies: list[float] = []
    losses: list[float] = []
    log: list[tuple[int, Any]] = []
    germinations = 0
    epochs = trace["epochs"]

    def live(sid: str) -> ef.SeedState | None:
        state = states[sid]
        return state if state is not None and ef.has_seed(state) else None

    for record in epochs:
        stats.operations += 1
        epoch, inputs = record["epoch"], record["inputs"]
        where = f"{trace['id']} epoch {epoch}"
        for sid, (host_norm, seed_norm) in (inputs["gradients"] or {}).items():
            if (state := live(sid)) is not None:
                states[sid] = ef.record_gradients(state, host_grad_norm=host_norm, seed_grad_norm=seed_norm)
        for sid, contribution in (inputs["contributions"] or {}).items():
            if (state := live(sid)) is not None:
                states[sid] = ef.record_contribution(state, contribution)
        for sid in slot_ids:
            if (state := live(sid)) is not None:
                states[sid] = ef.record_accuracy(state, inputs["val_accuracy"])
        for sid, telemetry in (inputs["telemetry"] or {}).items():
            if (state := live(sid)) is not None:
                states[sid] = ef.sync_telemetry(state, **telemetry)
        available = sum(1 for sid in slot_ids if ef.is_free(states[sid]))
        _expect(f"{where}: available slots", available, record["available_slots"])
        accuracies.append(inputs["val_accuracy"])
        losses.append(inputs["val_loss"])

        events: list[Any] = []
        for sid in slot_ids:
            state = states[sid]
            if state is not None:
                states[sid], ticked = ef.step_epoch(state, gates)
                events += ticked
                if states[sid].stage == S.DORMANT:  # type: ignore[union-attr]
                    states[sid] = None
        log += [(epoch, e) for e in events]

        observation = Observation(
            epoch=epoch, max_epochs=len(epochs), topology="cnn",
            val_accuracy=inputs["val_accuracy"], val_loss=inputs["val_loss"], train_loss=inputs["train_loss"],
            accuracy_history=tuple(accuracies), loss_history=tuple(losses),
            slots=tuple(SlotView(sid, states[sid]) for sid in slot_ids),
            events=tuple(e for _, e in log), event_epochs=tuple(t for t, _ in log),
            available_blueprints=tuple(REGISTRY.names("cnn")), available_slots=available,
        )
        memory = recall(config, observation)
        signals = record["signals"]
        _expect(f"{where}: plateau epochs", memory.plateau_epochs, signals["plateau_epochs"])
        _expect(f"{where}: host stabilised", int(memory.host_stabilized), signals["host_stabilized"])
        action = decide(config, observation)
        decision, applied = record["decision"], record["applied"]
        _expect(f"{where}: decision", action.kind.name, decision["op"])
        if decision["op"] == "GERMINATE":
            _expect(f"{where}: blueprint", action.blueprint, decision["blueprint_id"])
        elif decision["op"] != "WAIT":
            _expect(f"{where}: target slot", action.slot_id, decision["target_slot"])

        acted: list[Any] = []
        if decision["op"] == "GERMINATE" and "skipped" not in applied:
            slot = next(sid for sid in slot_ids if ef.is_free(states[sid]))
            _expect(f"{where}: germination slot", slot, applied["slot"])
            assert action.blueprint is not None
            new = ef.germinate(
                slot, action.blueprint, seed_id=f"seed_{germinations}", topology="cnn",
                seed_params=seed_param_count("cnn", action.blueprint, channels[slot]),
                host_params=trace["host_params"],
            )
            germinations += 1
            states[slot] = new
            acted.append(ef.germinated_event(new))
        elif decision["op"] in ("ADVANCE", "FOSSILIZE", "PRUNE") and "skipped" not in applied:
            sid = decision["target_slot"]
            state = states[sid]
            assert state is not None
            if decision["op"] == "ADVANCE":
                states[sid], result, done = ef.advance(state, gates)
                _gate_result(f"{where}: advance", result, applied["returned"])
            elif decision["op"] == "FOSSILIZE":
                states[sid], result, done = ef.advance(state, gates, S.FOSSILIZED)
                _gate_result(f"{where}: fossilize", result, applied["returned"])
            else:
                states[sid], done = ef.prune(state, "", initiator="policy")  # esper-lite's loop prunes with no reason
                _expect(f"{where}: prune accepted", states[sid] is not state, applied["returned"])
            acted += done
        log += [(epoch, e) for e in acted]
        compare_events(where, events + acted, record["events"], alpha_lag=False)
        for sid in slot_ids:
            compare_state(f"{where} slot {sid}", states[sid], record["slots"][sid], isolation_in_forward_only=True)
        stats.compared += 1
    return stats


# --------------------------------------------------------------------------- governor traces


def governor_config(trace: Mapping[str, Any]) -> Any:
    from esper_func.governor import GovernorConfig

    c = trace["constructor"]
    return GovernorConfig(
        sensitivity=c["sensitivity"], multiplier=c["multiplier"], absolute_threshold=c["absolute_threshold"],
        history_window=c["history_window"], min_panics_before_rollback=c["min_panics_before_rollback"],
        random_guess_loss=c["random_guess_loss"],
    )


def replay_governor(trace: Mapping[str, Any], stats: ReplayStats | None = None) -> ReplayStats:
    """Replay one governor trace: verdicts, the governor's memory, snapshots and rollback prunes.

    The slots' lifecycle operations between checks are replayed too, so that
    a rollback's prunes (every live seed, the panic's reason, initiator
    ``"governor"``) and the states after it can be compared. As in
    esper-lite, a rollback first restores the FOSSILIZED seeds' states of the
    snapshot (their ``_extra_state`` is part of it).
    """
    from esper_func.governor import Verdict, governor_check, governor_init, prune_on_rollback, should_snapshot

    stats = stats or ReplayStats()
    stats.traces += 1
    config = governor_config(trace)
    gates = gates_of(trace["gates"])
    slot_ids = [s["slot_id"] for s in trace["slots"]]
    trace_for_ops = {"slot_id": None, "channels": None}
    channels = {s["slot_id"]: s["channels"] for s in trace["slots"]}
    gstate = governor_init(config)
    states: dict[str, ef.SeedState | None] = dict.fromkeys(slot_ids)
    snapshot: dict[str, ef.SeedState | None] = dict(states)
    fossilized = False
    # Slots whose blend settings esper-lite changed in a refused germination (deviation "half-applied").
    diverged: set[str] = set()
    # Slots whose esper-lite scalar alpha may lag its controller (a zero-step retarget since the last tick).
    lag_slots: set[str] = set()
    for step in trace["steps"]:
        stats.operations += 1
        where = f"{trace['id']} epoch {step['epoch']}"
        gstate, verdict, reason = governor_check(config, gstate, step["loss"])
        _expect(f"{where}: rollback", verdict == Verdict.ROLLBACK, step["returned"])
        recorded = step["governor"]
        _expect(f"{where}: loss history", list(gstate.losses), recorded["loss_history"])
        # esper-lite's pending-panic flag: set by every divergence anomaly (the confirming one too).
        pending = verdict == Verdict.PANIC or (verdict == Verdict.ROLLBACK and reason == "governor_divergence")
        _expect(f"{where}: pending panic", pending, recorded["pending_panic"])
        if verdict == Verdict.ROLLBACK:
            rollback = step["rollback"]
            _expect(f"{where}: panic reason", reason, recorded["panic_reason"])
            _expect(f"{where}: panics after rollback", gstate.consecutive_panics,
                    rollback["governor_after"]["consecutive_panics"])
            restored = dict(states)
            for sid, snap in snapshot.items():
                if snap is not None and snap.stage == S.FOSSILIZED:
                    # esper-lite loads the fossil's snapshot _extra_state; its set_extra_state restores
                    # a gate by restarting a "gated" blend, which renames the blend of a switched seed.
                    loaded = ef.state_from_slot_extra_state(ef.slot_extra_state(snap))
                    assert loaded is not None
                    if ef.has_gate(loaded):
                        loaded = dataclasses.replace(loaded, blend_algorithm_id="gated")
                    restored[sid] = loaded
            present = {sid: s for sid, s in restored.items() if s is not None}
            pruned, events = prune_on_rollback(config, present, reason)
            accepted = [p["slot"] for p in rollback["prunes"] if p["returned"]]
            _expect(f"{where}: pruned slots", [sid for sid in slot_ids if sid in present
                                               and pruned[sid] is not present[sid]], accepted)
            for p in rollback["prunes"]:
                _expect(f"{where}: prune reason", (p["reason"], p["initiator"]), (reason, "governor"))
            lagging = any(_lags(before) for before in rollback["slots_before"].values())
            compare_events(where, list(events), rollback["events"], alpha_lag=lagging)
            refused_in_cooldown = {p["slot"] for p in rollback["prunes"] if not p["returned"]}
            for sid in slot_ids:
                states[sid] = pruned.get(sid, restored[sid])
                if ef.is_free(snapshot[sid]) and not ef.is_free(states[sid]):
                    # esper-lite restored this slot's blend settings from its empty snapshot.
                    diverged.add(sid)
                compare_state(
                    f"{where} slot {sid}", states[sid], rollback["slots_after"][sid],
                    skip_auto_pruned=sid in refused_in_cooldown,
                    # esper-lite restores the slot-level fields of a slot that was empty at the snapshot.
                    skip_blend_settings=ef.is_free(snapshot[sid]) or sid in diverged,
                )
        else:
            _expect(f"{where}: panics", gstate.consecutive_panics, recorded["consecutive_panics"])
            _expect(f"{where}: panic reason", "governor_divergence" if verdict == Verdict.PANIC else None,
                    recorded["panic_reason"])
            take = should_snapshot(config, step["epoch"], fossilized=fossilized)
            _expect(f"{where}: snapshot", take, step["snapshot"])
            _expect(f"{where}: snapshot request", fossilized, step["needs_snapshot_before"])
            if take:
                snapshot, fossilized = dict(states), False
            for op in step["actions"]:
                sid = op["slot"]
                trace_for_ops = {"slot_id": sid, "channels": channels[sid]}
                current = states[sid]
                if op["op"] == "germinate" and current is not None and not ef.is_free(current):
                    # esper-lite may have replaced this slot's blend settings before refusing.
                    if current.stage in (S.GERMINATED, S.TRAINING):
                        stats.stopped["half-applied germinate"] += 1
                        return stats
                    diverged.add(sid)
                    continue
                if op["op"] == "germinate":
                    diverged.discard(sid)
                if op["op"] == "schedule_prune" and sid in lag_slots:
                    stats.stopped["alpha lag decision"] += 1
                    return stats
                try:
                    new, events, _ = apply_op(states[sid], op, gates, trace_for_ops, stats)
                except ef.EsperFuncError:
                    if "raised" not in op:
                        raise
                    if "GatedBlend requires total_steps > 0" in op["raised"]["message"]:
                        # esper-lite moved the stage before raising; esper_func refused first.
                        stats.stopped["half-applied " + op["op"]] += 1
                        return stats
                    continue
                except (_Stop, _BlendSettingsDiverged):
                    stats.stopped["half-applied germinate"] += 1
                    return stats
                fossilized = fossilized or any(isinstance(e, SeedFossilized) for e in events)
                before = states[sid]
                states[sid] = None if new is not None and new.stage == S.DORMANT and not new.seed_id else new
                after = states[sid]
                ctrl = None if after is None else after.alpha_controller
                if op["op"] == "step_epoch" or after is None or not ef.has_seed(after):
                    lag_slots.discard(sid)
                if (
                    after is not None and before is not None and ctrl is not None
                    and ctrl.alpha_mode == ef.AlphaMode.HOLD and ctrl.alpha_steps_total == 0
                    and after.alpha != before.alpha and op["op"] != "step_epoch"
                ):
                    lag_slots.add(sid)  # a zero-step retarget moved alpha without a tick
                if (
                    after is not None and before is not None and op["op"] in ("advance_stage", "step_epoch")
                    and before.stage == S.TRAINING and after.stage == S.BLENDING and after.blend_tempo_epochs == 0
                ):
                    lag_slots.add(sid)  # a zero-tempo blend snapped its controller on entry
        _expect(f"{where}: stages", {sid: None if s is None or s.stage == S.DORMANT else s.stage.name
                                     for sid, s in states.items()}, step["stages"])
        stats.compared += 1
    return stats
