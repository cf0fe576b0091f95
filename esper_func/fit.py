"""The epoch loop: train, validate, attribute, govern, advance the lifecycle, decide.

One epoch of :func:`run_epoch` is, in order (esper-lite's heuristic loop,
``simic/training/helpers.py``, with its governor):

1. train: :func:`~esper_func.train.train_step` over the epoch's batches (the
   order is a pure function of ``(seed, epoch)``; each rank takes its shard);
2. validate, and measure each blended seed's counterfactual contribution in
   the same pass: :func:`esper_func.sweep` over an ablation grid (the real
   alphas, then each seed's alpha set to 0) on the validation set;
3. govern: a NaN/inf, lobotomised or diverging validation loss rolls the run
   back (host and fossilized seeds to the last-known-good snapshot, every
   live seed pruned with the panic reason, optimizer state reset) and ends
   the epoch there; the snapshot is refreshed every 5 epochs and after a
   fossilization; too many rollbacks in a row stop the run with an error;
4. record accuracy and contribution into every slot holding a seed;
5. count the free slots, then ``step_epoch`` every slot (alpha ramps,
   auto-forward gates, the cooldown after a prune): a slot freed here is
   germinated into an epoch later, as in esper-lite;
6. ask the controller for an action and apply it (germinate, advance,
   fossilize, prune), then bring the model's structure in line with the
   states.

Every number a decision reads (losses, accuracies, sweep results, gradient
norms) has been reduced across ranks by the :class:`~esper_func.train.Reducer`
first, so with data parallelism every rank takes the same decisions with no
broadcast. Everything is pure: the loop returns new values, and rollback is
keeping the old ones.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from esper_func.attribution import alpha_grid, coalition_grid
from esper_func.blueprints import Registry
from esper_func.controller import Controller, HeuristicConfig, Observation, SlotView, heuristic
from esper_func.counterfactual import grid_sums
from esper_func.data import Dataset, batch_indices, batches
from esper_func.errors import InvalidArgumentError, TrainingDivergedError
from esper_func.governor import (
    GovernorConfig,
    GovernorState,
    Verdict,
    governor_check,
    governor_init,
    prune_on_rollback,
    should_snapshot,
)
from esper_func.lifecycle import (
    Action,
    ActionKind,
    SeedState,
    apply_action,
    has_seed,
    is_free,
    record_accuracy,
    record_contribution,
    step_epoch,
    sync_telemetry,
)
from esper_func.lifecycle.alpha import AlphaAlgorithm
from esper_func.lifecycle.events import LifecycleEvent, SeedFossilized
from esper_func.lifecycle.gates import GateLevel, Gates
from esper_func.lifecycle.stages import SeedStage
from esper_func.model import Model, add_seed, alphas_of, set_stages
from esper_func.optim import Optimizer, reinit_like
from esper_func.slot import Slot
from esper_func.train import LocalReducer, LossFn, Reducer, StepMetrics, TrainState, record_step_gradients, train_step

__all__ = ["EpochRecord", "FitConfig", "FitResult", "LoopState", "fit", "event_to_dict", "run_epoch"]


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Static settings of a run.

    Attributes:
        epochs: epochs to run (1-based; esper-lite counts epochs from 1).
        batch_size: training batch size per rank.
        seed: data order and the run's RNG key.
        gates: quality gates for lifecycle transitions.
        auto_forward: gate levels ``step_epoch`` may pass on its own.
        governor: the loss governor's thresholds.
        val_batch_size: validation batch size (per rank).
        max_batch: bound on samples per host segment in the contribution sweep.
    """

    epochs: int
    batch_size: int = 64
    seed: int = 0
    gates: Gates = dataclasses.field(default_factory=Gates)
    auto_forward: frozenset[GateLevel] = frozenset()
    governor: GovernorConfig = dataclasses.field(default_factory=GovernorConfig)
    val_batch_size: int = 512
    max_batch: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.val_batch_size < 1:
            raise InvalidArgumentError(
                f"epochs must be >= 0 and batch sizes >= 1; got epochs={self.epochs}, "
                f"batch_size={self.batch_size}, val_batch_size={self.val_batch_size}"
            )
        object.__setattr__(self, "auto_forward", frozenset(GateLevel(g) for g in self.auto_forward))


@dataclasses.dataclass(frozen=True)
class LoopState:
    """What the loop carries from one epoch to the next besides the model and train state.

    ``last_good`` is the ``(model, TrainState)`` snapshot a governor rollback
    returns to (taken every ``governor.snapshot_interval`` epochs and after a
    fossilization, as esper-lite's loop does); ``consecutive_rollbacks``
    counts rollbacks in a row; ``fossilized_since_snapshot`` asks for a
    snapshot at the next healthy epoch.
    """

    epoch: int = 0
    records: tuple[dict[str, Any], ...] = ()
    events: tuple[LifecycleEvent, ...] = ()
    event_epochs: tuple[int, ...] = ()
    governor: GovernorState = dataclasses.field(default_factory=governor_init)
    last_good: tuple[Model, TrainState] | None = None
    consecutive_rollbacks: int = 0
    fossilized_since_snapshot: bool = False


EpochRecord = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class FitResult:
    """``(model, state, loop)`` after the last epoch."""

    model: Model
    state: TrainState
    loop: LoopState


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def event_to_dict(event: LifecycleEvent, epoch: int) -> dict[str, Any]:
    """A JSON-compatible dict of ``event`` with its type and the run's ``epoch``."""
    body = {k: _jsonable(v) for k, v in dataclasses.asdict(event).items()}
    body["seed_epoch"] = body.pop("epoch")
    return {"type": type(event).__name__, "epoch": epoch, **body}


# --------------------------------------------------------------------------- measurement


def _device_of(state: TrainState) -> torch.device:
    return next(iter(state.params["host"].values())).device


def _validation_grid(model: Model, states: Mapping[str, SeedState], device: torch.device) -> tuple[Tensor, list[str]]:
    """Row 0: the real alphas; then one row per blended seed with its alpha set to 0 (the ablation rows)."""
    alphas = alphas_of(model, states)
    contributors = [sid for sid in model.routed if float(alphas[model.index(sid)]) > 0.0]
    n = len(contributors)
    coalitions = alpha_grid("ablation", n)[: n + 1] if n else torch.ones(1, 0)
    grid = coalition_grid(alphas, [model.index(sid) for sid in contributors], coalitions)
    return grid.to(device), contributors


def _validate(
    model: Model,
    state: TrainState,
    data: Dataset,
    config: FitConfig,
    loss_fn: LossFn,
    reducer: Reducer,
    rank: int,
    world_size: int,
) -> tuple[float, float, dict[str, float]]:
    """``(val_loss, val_accuracy, {slot: contribution in accuracy points})``, reduced over ranks."""
    grid, contributors = _validation_grid(model, state.seeds, _device_of(state))
    k = grid.shape[0]
    # [loss sums (k), correct counts (k), sample count]: one vector, one collective.
    totals = torch.zeros(2 * k + 1, dtype=torch.float64, device=_device_of(state))
    for x, y in batches(data.val, config.val_batch_size, shuffle=False, rank=rank, world_size=world_size):
        loss_sum, correct, n = grid_sums(
            model, state.params, state.buffers, x, y, grid, loss_fn=loss_fn, max_batch=config.max_batch
        )
        totals = totals + torch.cat([loss_sum, correct, loss_sum.new_tensor([n])])
    totals = reducer.sum(totals)  # a rank with an empty shard adds zeros
    total_count = float(totals[-1])
    if total_count == 0:
        raise InvalidArgumentError("the validation set is empty; a run needs validation data to take decisions")
    losses, accuracy = totals[:k] / total_count, totals[k : 2 * k] / total_count
    contributions = {sid: 100.0 * float(accuracy[0] - accuracy[i + 1]) for i, sid in enumerate(contributors)}
    return float(losses[0]), float(accuracy[0]), contributions


# --------------------------------------------------------------------------- structure sync


def _sync_structure(
    model: Model,
    state: TrainState,
    states: Mapping[str, SeedState],
    *,
    optimizer: Optimizer,
    registry: Registry,
    germinated: Mapping[str, tuple[str, AlphaAlgorithm]],
    init_seed: int,
) -> tuple[Model, TrainState]:
    """Make the model's seeds and stages follow ``states``; rebuild the optimizer state to match."""
    params = state.params
    fresh = {}
    for slot_id, (blueprint, algorithm) in germinated.items():
        generator = torch.Generator().manual_seed(init_seed + model.index(slot_id))
        model, params = add_seed(model, params, slot_id, registry, blueprint, algorithm=algorithm, generator=generator)
        fresh[slot_id] = True
    # A GATE seed entering BLENDING gets its gate network, initialised from the epoch's seed.
    gates_generator = torch.Generator().manual_seed((init_seed + 1) % (2**62))
    model, params = set_stages(
        model, params, {sid: s for sid, s in states.items() if sid in model.slot_order}, generator=gates_generator
    )
    opt_state = state.opt_state
    if params is not state.params:
        opt_state = reinit_like(optimizer, opt_state, params, reset={"slots": fresh})
    return model, dataclasses.replace(state, params=params, opt_state=opt_state, seeds=dict(states))


def _host_param_count(state: TrainState) -> int:
    return sum(t.numel() for t in state.params["host"].values())


# --------------------------------------------------------------------------- one epoch


def _train(
    model: Model,
    state: TrainState,
    data: Dataset,
    *,
    epoch: int,
    optimizer: Optimizer,
    config: FitConfig,
    loss_fn: LossFn,
    reducer: Reducer,
    rank: int,
    world_size: int,
    on_step: Callable[[int, int], None] | None,
) -> tuple[TrainState, float, float]:
    """Phase 1: one pass over the training data; ``(state, train_loss, train_accuracy)``."""
    order = batch_indices(data.x_train.shape[0], config.batch_size, shuffle=True, seed=config.seed, epoch=epoch,
                          rank=rank, world_size=world_size, drop_last=world_size > 1)
    losses: list[Tensor] = []
    accuracies: list[Tensor] = []
    metrics: StepMetrics | None = None
    for done, indices in enumerate(order, start=1):
        batch = (data.x_train[indices], data.y_train[indices])
        state, metrics = train_step(model, state, batch, optimizer=optimizer, loss_fn=loss_fn, reducer=reducer)
        losses.append(metrics.loss)  # tensors: no host sync per step
        accuracies.append(metrics.accuracy)
        if on_step is not None:
            on_step(done, len(order))
    train_loss, train_accuracy = 0.0, 0.0
    if losses:  # one read-back per epoch
        train_loss, train_accuracy = torch.stack(
            [torch.stack(losses).double().mean(), torch.stack(accuracies).double().mean()]
        ).tolist()
    if metrics is not None and math.isfinite(train_loss):
        # As esper-lite's loop: the last batch's gradient telemetry, materialised once per epoch.
        state = dataclasses.replace(state, seeds=record_step_gradients(state.seeds, metrics))
    return state, train_loss, train_accuracy


def _rollback(
    model: Model,
    state: TrainState,
    loop: LoopState,
    reason: str,
    *,
    optimizer: Optimizer,
    config: FitConfig,
    registry: Registry,
) -> tuple[Model, TrainState, tuple[LifecycleEvent, ...]]:
    """Phase 3 on ROLLBACK, as esper-lite's ``execute_rollback``.

    The host and the fossilized seeds return to the last-known-good snapshot;
    every live seed is pruned with the panic reason (initiator
    ``"governor"``); the optimizer state starts afresh (momentum that led to
    the divergence is dropped).
    """
    assert loop.last_good is not None
    _snap_model, snap = loop.last_good
    # A seed fossilized at the snapshot returns to it whole, weights and lifecycle state alike
    # (esper-lite's snapshot holds the fossil's _extra_state); every live seed is pruned.
    current = dict(state.seeds)
    slots = dict(state.params["slots"])
    for slot_id, snapped in snap.seeds.items():
        if snapped.stage == SeedStage.FOSSILIZED and slot_id in snap.params["slots"]:
            current[slot_id] = snapped
            slots[slot_id] = snap.params["slots"][slot_id]
    states, events = prune_on_rollback(config.governor, current, reason)
    restored = dataclasses.replace(state, params={"host": snap.params["host"], "slots": slots}, buffers=snap.buffers)
    model, restored = _sync_structure(
        model, restored, states, optimizer=optimizer, registry=registry, germinated={}, init_seed=0
    )
    restored = dataclasses.replace(restored, opt_state=optimizer.init(restored.params))
    return model, restored, events


def _record(
    states: Mapping[str, SeedState],
    val_accuracy: float,
    contributions: Mapping[str, float],
    *,
    epoch: int,
    max_epochs: int,
) -> dict[str, SeedState]:
    """Phase 4: this epoch's accuracy into every slot with a seed, each blended seed's contribution,
    and the epoch stamp of the gradient telemetry the training steps measured.

    As esper-lite's heuristic loop, only slots holding a seed (live or
    FOSSILIZED) record accuracy; a slot cooling down after a prune counts its
    epochs in ``step_epoch`` only. The telemetry sync follows the accuracy,
    as in esper-lite's training loop.
    """
    recorded = dict(states)
    for slot_id, seed_state in states.items():
        if has_seed(seed_state):
            seed_state = record_accuracy(seed_state, 100.0 * val_accuracy)
            if slot_id in contributions:
                seed_state = record_contribution(seed_state, contributions[slot_id])
            seed_state = sync_telemetry(seed_state, epoch=epoch, max_epochs=max(max_epochs, epoch))
            recorded[slot_id] = seed_state
    return recorded


def _step_lifecycle(
    states: Mapping[str, SeedState], config: FitConfig
) -> tuple[dict[str, SeedState], list[LifecycleEvent]]:
    """Phase 5: ``step_epoch`` every slot (alpha ramps, auto-forward gates, the cooldown)."""
    stepped = dict(states)
    events: list[LifecycleEvent] = []
    for slot_id, seed_state in states.items():
        stepped[slot_id], ticked = step_epoch(seed_state, config.gates, auto_forward=config.auto_forward)
        events += ticked
    return stepped, events


def run_epoch(
    model: Model,
    state: TrainState,
    loop: LoopState,
    data: Dataset,
    *,
    optimizer: Optimizer,
    config: FitConfig,
    registry: Registry,
    controller: Controller | None = None,
    loss_fn: LossFn = F.cross_entropy,
    reducer: Reducer | None = None,
    rank: int = 0,
    world_size: int = 1,
    on_step: Callable[[int, int], None] | None = None,
) -> tuple[Model, TrainState, LoopState, EpochRecord]:
    """Run epoch ``loop.epoch + 1``; returns the new ``(model, state, loop, record)``. Pure.

    Phases, in esper-lite's order: train; validate (with each blended seed's
    contribution); govern (a rollback restores the last-known-good snapshot,
    prunes every live seed and ends the epoch); record accuracy and
    contributions; count the free slots; ``step_epoch`` every slot; ask the
    controller and apply its action; bring the model's structure in line with
    the states. ``on_step(done, total)`` is called after each training step
    (progress display).

    Raises:
        TrainingDivergedError: ``config.governor.max_consecutive_rollbacks``
            rollbacks in a row (the message says what is not finite).
    """
    reducer = reducer or LocalReducer()
    controller = controller or heuristic(HeuristicConfig())
    epoch = loop.epoch + 1
    if loop.last_good is None:
        loop = dataclasses.replace(loop, last_good=(model, state))

    state, train_loss, train_accuracy = _train(
        model, state, data, epoch=epoch, optimizer=optimizer, config=config, loss_fn=loss_fn, reducer=reducer,
        rank=rank, world_size=world_size, on_step=on_step,
    )
    val_loss, val_accuracy, contributions = _validate(model, state, data, config, loss_fn, reducer, rank, world_size)
    governor, verdict, reason = governor_check(config.governor, loop.governor, val_loss)
    events: list[LifecycleEvent] = []
    action: Action | None = None
    rollbacks = loop.consecutive_rollbacks + 1 if verdict == Verdict.ROLLBACK else 0
    if verdict == Verdict.ROLLBACK:
        limit = config.governor.max_consecutive_rollbacks
        if limit and rollbacks >= limit:
            raise TrainingDivergedError(_divergence_message(data, epoch, rollbacks, reason, val_loss, train_loss))
        model, state, pruned = _rollback(
            model, state, loop, reason, optimizer=optimizer, config=config, registry=registry
        )
        events += pruned
    else:
        states = _record(state.seeds, val_accuracy, contributions, epoch=epoch, max_epochs=config.epochs)
        available = sum(1 for sid in model.slot_order if is_free(states.get(sid)))
        states, ticked = _step_lifecycle(states, config)
        events += ticked
        observation = _observe(
            model, states, loop, epoch, config, registry, val_accuracy, val_loss, train_loss, contributions,
            available_slots=available,
        )
        action = controller(observation)
        states, acted, _ = apply_action(
            action, states, config.gates, epoch=epoch, topology=model.host.topology,
            seed_params=_seed_params(model, registry, action), host_params=_host_param_count(state),
        )
        events += acted
        germinated = {}
        if action.kind == ActionKind.GERMINATE:
            assert action.slot_id is not None and action.blueprint is not None
            germinated[action.slot_id] = (action.blueprint, action.algorithm or AlphaAlgorithm.ADD)
        model, state = _sync_structure(
            model, state, states, optimizer=optimizer, registry=registry, germinated=germinated,
            init_seed=(state.key * 7919 + epoch * 104729) % (2**62),
        )

    fossilized = loop.fossilized_since_snapshot or any(isinstance(e, SeedFossilized) for e in events)
    last_good = loop.last_good
    if verdict != Verdict.ROLLBACK and should_snapshot(config.governor, epoch, fossilized=loop.fossilized_since_snapshot):
        last_good, fossilized = (model, state), any(isinstance(e, SeedFossilized) for e in events)
    record = _epoch_record(model, state, epoch, train_loss, train_accuracy, val_loss, val_accuracy, contributions,
                           events, action, verdict, reason)
    loop = LoopState(
        epoch=epoch,
        records=(*loop.records, record),
        events=loop.events + tuple(events),
        event_epochs=loop.event_epochs + (epoch,) * len(events),
        governor=governor,
        last_good=last_good,
        consecutive_rollbacks=rollbacks,
        fossilized_since_snapshot=fossilized,
    )
    return model, state, loop, record


def _divergence_message(
    data: Dataset, epoch: int, rollbacks: int, reason: str, val_loss: float, train_loss: float
) -> str:
    """What is not finite, for the error that ends a run the governor cannot save."""
    found = []
    for name in ("x_train", "y_train", "x_val", "y_val"):
        tensor = getattr(data, name, None)
        if isinstance(tensor, Tensor) and tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                found.append(f"{name} holds {bad} non-finite value(s)")
    where = "; ".join(found) if found else "the data are finite, so the model diverges (lower the learning rate)"
    return (
        f"epoch {epoch}: the governor rolled back {rollbacks} epochs in a row ({reason}; validation loss "
        f"{val_loss}, training loss {train_loss}); {where}. Stopping instead of rolling back forever."
    )


def _seed_params(model: Model, registry: Registry, action: Action) -> int:
    """Parameters of the seed a GERMINATE action would create (the gate excluded, as in esper-lite)."""
    if action.kind != ActionKind.GERMINATE or action.blueprint is None or action.slot_id is None:
        return 0
    blueprint = registry.get(model.host.topology, action.blueprint)
    shapes = Slot(blueprint, model.host.slot_channels(action.slot_id)).param_shapes["seed"]
    return sum(math.prod(shape) for shape in shapes.values())


def _observe(
    model: Model,
    states: Mapping[str, SeedState],
    loop: LoopState,
    epoch: int,
    config: FitConfig,
    registry: Registry,
    val_accuracy: float,
    val_loss: float,
    train_loss: float,
    contributions: Mapping[str, float],
    *,
    available_slots: int,
) -> Observation:
    accuracies = (*(100.0 * float(r["val_accuracy"]) for r in loop.records), 100.0 * val_accuracy)
    val_losses = (*(float(r["val_loss"]) for r in loop.records), val_loss)
    return Observation(
        epoch=epoch,
        max_epochs=config.epochs,
        topology=model.host.topology,
        val_accuracy=100.0 * val_accuracy,
        val_loss=val_loss,
        train_loss=train_loss,
        accuracy_history=accuracies,
        loss_history=val_losses,
        slots=tuple(SlotView(sid, states.get(sid), contributions.get(sid)) for sid in model.slot_order),
        events=loop.events,
        event_epochs=loop.event_epochs,
        available_blueprints=registry.names(model.host.topology),
        available_slots=available_slots,
    )


def _epoch_record(
    model: Model,
    state: TrainState,
    epoch: int,
    train_loss: float,
    train_accuracy: float,
    val_loss: float,
    val_accuracy: float,
    contributions: Mapping[str, float],
    events: list[LifecycleEvent],
    action: Action | None,
    verdict: Verdict,
    reason: str,
) -> EpochRecord:
    slots = {}
    for slot_id in model.slot_order:
        seed_state = state.seeds.get(slot_id)
        slot = model.slot(slot_id)
        slots[slot_id] = {
            "stage": model.stage(slot_id).name,
            "alpha": 0.0 if seed_state is None else float(seed_state.alpha),
            "blueprint": None if slot is None else slot.blueprint_id,
            "contribution": contributions.get(slot_id),
        }
    return {
        "epoch": epoch,
        "step": state.step,
        "train_loss": _jsonable(train_loss),
        "train_accuracy": train_accuracy,
        "val_loss": _jsonable(val_loss),
        "val_accuracy": val_accuracy,
        "slots": slots,
        "contributions": dict(contributions),
        "action": None if action is None else {
            "kind": action.kind.name, "slot": action.slot_id, "blueprint": action.blueprint, "reason": action.reason,
        },
        "governor": {"verdict": verdict.name, "reason": reason},
        "events": [event_to_dict(e, epoch) for e in events],
    }


# --------------------------------------------------------------------------- the whole run


def fit(
    model: Model,
    state: TrainState,
    data: Dataset,
    *,
    optimizer: Optimizer,
    config: FitConfig,
    registry: Registry,
    controller: Controller | None = None,
    loss_fn: LossFn = F.cross_entropy,
    loop: LoopState | None = None,
    reducer: Reducer | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> FitResult:
    """Run epochs ``loop.epoch + 1 .. config.epochs`` (from scratch when ``loop`` is None). Pure."""
    result = FitResult(model, state, loop or LoopState())
    for after in epochs(
        model, state, data, optimizer=optimizer, config=config, registry=registry, controller=controller,
        loss_fn=loss_fn, loop=loop, reducer=reducer, rank=rank, world_size=world_size,
    ):
        result = FitResult(*after[:3])
    return result


def epochs(
    model: Model,
    state: TrainState,
    data: Dataset,
    *,
    optimizer: Optimizer,
    config: FitConfig,
    registry: Registry,
    controller: Controller | None = None,
    loss_fn: LossFn = F.cross_entropy,
    loop: LoopState | None = None,
    reducer: Reducer | None = None,
    rank: int = 0,
    world_size: int = 1,
    on_step: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[Model, TrainState, LoopState, EpochRecord]]:
    """:func:`run_epoch` repeatedly, yielding ``(model, state, loop, record)`` after each epoch."""
    loop = loop or LoopState()
    while loop.epoch < config.epochs:
        model, state, loop, record = run_epoch(
            model, state, loop, data, optimizer=optimizer, config=config, registry=registry, controller=controller,
            loss_fn=loss_fn, reducer=reducer, rank=rank, world_size=world_size, on_step=on_step,
        )
        yield model, state, loop, record
