"""The epoch loop: train, validate, attribute, govern, advance the lifecycle, decide.

One epoch of :func:`run_epoch` is, in order (esper-lite's heuristic loop,
``simic/training/helpers.py``, with its governor), one small function per phase:

1. :func:`_train_phase`: :func:`~esper_func.train.train_step` over the
   epoch's batches (from an in-memory :class:`~esper_func.data.Dataset`, whose
   order is a pure function of ``(seed, epoch)`` and each rank takes its
   shard, or from any re-iterable batch source advanced with
   :func:`~esper_func.data.for_epoch`);
2. :func:`_validate_phase`: validate, and measure each blended seed's
   counterfactual contribution in the same pass: :func:`esper_func.sweep`
   over an ablation grid (the real alphas, then each seed's alpha set to 0);
3. :func:`_govern_phase`: a NaN/inf, lobotomised or diverging validation
   loss rolls the run back (:func:`_rollback`: host and fossilized seeds to
   the last-known-good snapshot, every live seed pruned with the panic
   reason, optimizer state reset) and ends the epoch there; too many
   rollbacks in a row stop the run with an error;
4. :func:`_record_phase`: accuracy and contribution into every slot holding a seed;
   then :func:`_tournament_phase`: a slot whose candidates (``FitConfig.tournament``)
   have incubated ``gates.min_blending_epochs`` epochs in TRAINING keeps the best one
   once one passes G2 (or after ``tournament_patience`` more epochs);
5. :func:`_lifecycle_phase`: count the free slots, then ``step_epoch`` every
   slot (alpha ramps, auto-forward gates, the cooldown after a prune): a
   slot freed here is germinated into an epoch later, as in esper-lite;
6. :func:`_decide_phase`: ask the controller for an action and apply it
   (germinate, advance, fossilize, prune), then bring the model's structure
   in line with the states;
7. :func:`_snapshot_phase` and :func:`_epoch_record`: refresh the snapshot
   (every 5 epochs and after a fossilization) and build the typed
   :class:`~esper_func.records.EpochRecord`.

Two tasks (``FitConfig.task``): ``"classification"`` (targets ``[B]``,
outputs ``[B, C]``) and ``"language_model"`` (tokens ``[B, T]``, targets
``[B, T]``, token cross-entropy; validation also reports bits per token).

Every number a decision reads (losses, accuracies, sweep results, gradient
norms) has been reduced across ranks by the :class:`~esper_func.train.Reducer`
first, so with data parallelism every rank takes the same decisions with no
broadcast. Everything is pure: the loop returns new values, and rollback is
keeping the old ones.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from typing import Any, cast

import torch
import torch.nn.functional as F
import torch.utils._pytree as torch_pytree
from torch import Tensor

from esper_func._validate import check_choice, check_int, describe
from esper_func.attribution import alpha_grid, coalition_grid
from esper_func.batching import IGNORE_INDEX, for_epoch
from esper_func.blueprints import Registry
from esper_func.candidates import Candidates
from esper_func.controller import Controller, HeuristicConfig, Observation, SlotView, heuristic
from esper_func.counterfactual import check_max_batch, flatten_tokens, grid_sums, sweep
from esper_func.data import Dataset, batch_indices, batches
from esper_func.errors import DTypeError, InvalidArgumentError, InvalidTypeError, ShapeError, TrainingDivergedError
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
from esper_func.lifecycle.events import LifecycleEvent, SeedFossilized, TournamentDecided
from esper_func.lifecycle.gates import GateLevel, Gates, check_gate
from esper_func.lifecycle.stages import SeedStage
from esper_func.model import Model, add_seed, alphas_of, set_stages
from esper_func.optim import Optimizer, reinit_like
from esper_func.records import TASKS, ActionRecord, EpochRecord, SlotRecord, Task, event_to_dict
from esper_func.slot import Slot
from esper_func.tournament import add_candidates, keep_candidate_opt_state, select_candidate
from esper_func.train import LocalReducer, LossFn, Reducer, StepMetrics, TrainState, record_step_gradients, train_step

__all__ = [
    "Batches",
    "EpochRecord",
    "FitConfig",
    "FitResult",
    "LoopState",
    "SlotRecord",
    "epochs",
    "event_to_dict",
    "fit",
    "run_epoch",
]

#: A batch source: any re-iterable of ``(inputs, targets)`` batches (a list, a
#: ``torch.utils.data.DataLoader``, :class:`~esper_func.data.TensorBatches`,
#: :class:`~esper_func.data.TokenBatches`). Iterated once per epoch, after
#: :func:`~esper_func.data.for_epoch`.
Batches = Iterable[tuple[Tensor, Tensor]]


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Static settings of a run.

    Attributes:
        epochs: epochs to run (1-based; esper-lite counts epochs from 1).
        batch_size: training batch size per rank (in-memory :class:`Dataset` only;
            a batch source brings its own batches).
        seed: data order of a :class:`Dataset` (a batch source has its own order).
        gates: quality gates for lifecycle transitions.
        auto_forward: gate levels ``step_epoch`` may pass on its own.
        governor: the loss governor's thresholds.
        val_batch_size: validation batch size per rank (in-memory :class:`Dataset` only).
        max_batch: bound on samples per host segment in the contribution sweep and
            in tournament scoring (see :func:`esper_func.tournament.score_candidates`).
        task: ``"classification"`` (inputs ``[B, ...]``, integer targets
            ``[B]``, a host with outputs ``[B, C]`` such as ``CNNHost``) or
            ``"language_model"`` (integer tokens ``[B, T]``, integer targets
            ``[B, T]`` where ``ef.data.IGNORE_INDEX`` marks padding, a host
            with outputs ``[B, T, V]`` such as ``TransformerHost``).
        tournament: candidates per germination. ``1`` (default) germinates
            the controller's blueprint alone, as esper-lite does. ``K > 1``
            germinates ``K`` candidates in the slot instead (see
            :mod:`esper_func.tournament`): the controller's blueprint first,
            initialised exactly as the single seed would be, then the next
            ``K - 1`` blueprints of ``tournament_blueprints`` after it
            (cycling; repeats start from other initialisations). They
            incubate together through GERMINATED and TRAINING. From the
            slot's ``gates.min_blending_epochs``-th epoch in TRAINING (the
            first epoch a seed could leave it) the candidates are compared
            every epoch (:func:`esper_func.tournament.select_candidate`):
            as soon as one passes G2, the best-scoring one of those passing
            is kept and continues as an ordinary seed; after
            ``tournament_patience`` more epochs with none passing, the
            best-scoring one is kept anyway. Needs
            ``gates.min_blending_epochs >= 1``.
        tournament_blueprints: the blueprints the other candidates are taken
            from, in order; ``None`` is the controller's default rotation of
            the host's topology (:data:`esper_func.controller.DEFAULT_BLUEPRINT_ROTATION`),
            else every blueprint the registry holds for it.
        tournament_patience: epochs a tournament waits, past the first
            comparison, for a candidate that passes G2.
    """

    epochs: int
    batch_size: int = 64
    seed: int = 0
    gates: Gates = dataclasses.field(default_factory=Gates)
    auto_forward: frozenset[GateLevel] = frozenset()
    governor: GovernorConfig = dataclasses.field(default_factory=GovernorConfig)
    val_batch_size: int = 512
    max_batch: int | None = None
    task: Task = "classification"
    tournament: int = 1
    tournament_blueprints: tuple[str, ...] | None = None
    tournament_patience: int = 10

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.val_batch_size < 1:
            raise InvalidArgumentError(
                f"epochs must be >= 0 and batch sizes >= 1; got epochs={self.epochs}, "
                f"batch_size={self.batch_size}, val_batch_size={self.val_batch_size}"
            )
        check_choice("FitConfig.task", self.task, TASKS)
        check_max_batch(self.max_batch, "FitConfig.max_batch")
        check_int("FitConfig.tournament (candidates per germination)", self.tournament, minimum=1)
        check_int("FitConfig.tournament_patience", self.tournament_patience, minimum=0)
        if self.tournament > 1 and self.gates.min_blending_epochs < 1:
            raise InvalidArgumentError(
                "FitConfig.tournament > 1 needs gates.min_blending_epochs >= 1: the candidates are compared after "
                f"that many epochs in TRAINING; got min_blending_epochs={self.gates.min_blending_epochs}"
            )
        if self.tournament_blueprints is not None:
            names = self.tournament_blueprints
            if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names) or not names:
                raise InvalidArgumentError(
                    f"FitConfig.tournament_blueprints must be a non-empty list or tuple of blueprint names or None; got {names!r}"
                )
            object.__setattr__(self, "tournament_blueprints", tuple(names))
        object.__setattr__(self, "auto_forward", frozenset(GateLevel(g) for g in self.auto_forward))


@dataclasses.dataclass(frozen=True)
class LoopState:
    """What the loop carries from one epoch to the next besides the model and train state.

    ``records`` holds every epoch's :class:`EpochRecord` so far; ``events``
    and ``event_epochs`` every lifecycle event with its epoch (what the
    controller replays). ``last_good`` is the ``(model, TrainState)``
    snapshot a governor rollback returns to (taken every
    ``governor.snapshot_interval`` epochs and after a fossilization, as
    esper-lite's loop does); ``consecutive_rollbacks`` counts rollbacks in a
    row; ``fossilized_since_snapshot`` asks for a snapshot at the next
    healthy epoch.
    """

    epoch: int = 0
    records: tuple[EpochRecord, ...] = ()
    events: tuple[LifecycleEvent, ...] = ()
    event_epochs: tuple[int, ...] = ()
    governor: GovernorState = dataclasses.field(default_factory=governor_init)
    last_good: tuple[Model, TrainState] | None = None
    consecutive_rollbacks: int = 0
    fossilized_since_snapshot: bool = False


@dataclasses.dataclass(frozen=True)
class FitResult:
    """``(model, state, loop)`` after the last epoch; :attr:`history` is every epoch's record."""

    model: Model
    state: TrainState
    loop: LoopState

    @property
    def history(self) -> tuple[EpochRecord, ...]:
        """Every epoch's :class:`EpochRecord`, oldest first (``loop.records``)."""
        return self.loop.records


# --------------------------------------------------------------------------- batch sources


def _check_source(name: str, source: Any) -> Batches:
    """``source`` if it can be a batch source; a clear error for the usual mistakes."""
    if isinstance(source, Tensor) or isinstance(source, (str, bytes)) or not isinstance(source, Iterable):
        what = "an esper_func.data.Dataset or " if name == "data" else ""
        raise InvalidTypeError(
            f"{name} must be {what}a re-iterable of (inputs, targets) batches "
            f"(a list, a DataLoader, ef.data.TensorBatches / TokenBatches); got {describe(source)}"
        )
    if isinstance(source, (tuple, list)) and source and all(isinstance(t, Tensor) for t in source):
        raise InvalidTypeError(
            f"{name} is a sequence of {len(source)} tensors, not of batches; wrap aligned tensors as "
            "ef.data.TensorBatches(x, y, batch_size, shuffle=True, seed=...) (or pass [(x, y)] for one batch)"
        )
    if isinstance(source, Iterator):
        raise InvalidTypeError(
            f"{name} is a one-shot iterator ({type(source).__name__}), which the loop would exhaust in its first "
            "epoch; pass a re-iterable source: a list, a DataLoader, ef.data.TensorBatches / TokenBatches"
        )
    return cast(Batches, source)


def _check_batch(batch: Any, task: str, where: str) -> tuple[Tensor, Tensor]:
    """``batch`` as ``(inputs, targets)`` fit for ``task``; metadata checks only (no device sync)."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise InvalidTypeError(f"{where} must be a pair (inputs, targets); got {describe(batch)}")
    x, y = batch
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise InvalidTypeError(
            f"{where} must be a pair of tensors (inputs, targets); got ({type(x).__name__}, {type(y).__name__})"
        )
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise DTypeError(f"{where}: targets must be integer class or token ids (int64); got {y.dtype}")
    if task == "classification":
        if y.ndim != 1 or x.ndim < 1 or x.shape[0] != y.shape[0]:
            raise ShapeError(
                f"{where}: task 'classification' takes inputs [B, ...] and one label per sample, targets [B]; "
                f"got inputs {tuple(x.shape)} and targets {tuple(y.shape)}"
                + (" (token targets [B, T]: use FitConfig(task='language_model'))" if y.ndim == 2 else "")
            )
    else:
        if x.ndim != 2 or y.shape != x.shape:
            raise ShapeError(
                f"{where}: task 'language_model' takes tokens [B, T] and next-token targets [B, T] of the same "
                f"shape; got inputs {tuple(x.shape)} and targets {tuple(y.shape)}"
                + (" (one label per sample: use FitConfig(task='classification'))" if y.ndim == 1 else "")
            )
        if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
            raise DTypeError(f"{where}: task 'language_model' takes integer token inputs; got {x.dtype}")
    return x, y


def _check_task(model: Model, task: str) -> None:
    """The host must produce what the task scores: ``[B, C]`` for classification, ``[B, T, V]`` for language models."""
    topology = model.host.topology
    if task == "language_model" and topology != "transformer":
        raise InvalidArgumentError(
            f"task 'language_model' needs a host that predicts a token at every position (a TransformerHost); "
            f"this model's host is a {type(model.host).__name__} (topology {topology!r}): use "
            "FitConfig(task='classification')"
        )
    if task == "classification" and topology == "transformer":
        raise InvalidArgumentError(
            f"task 'classification' needs a host with one prediction per sample; a {type(model.host).__name__} "
            "predicts the next token at every position: use FitConfig(task='language_model')"
        )


def _sources(
    data: Dataset | Batches,
    val: Batches | None,
    *,
    epoch: int,
    config: FitConfig,
    rank: int,
    world_size: int,
) -> tuple[Iterable[Any], int, Iterable[Any]]:
    """``(training batches, how many (0: unknown), validation batches)`` of epoch ``epoch``."""
    if isinstance(data, Dataset):
        order = batch_indices(data.x_train.shape[0], config.batch_size, shuffle=True, seed=config.seed, epoch=epoch,
                              rank=rank, world_size=world_size, drop_last=world_size > 1)
        train: Iterable[Any] = ((data.x_train[indices], data.y_train[indices]) for indices in order)
        total = len(order)
        if val is None:
            return train, total, batches(data.val, config.val_batch_size, shuffle=False, rank=rank, world_size=world_size)
    else:
        source = for_epoch(_check_source("data", data), epoch)
        train, total = source, len(source) if isinstance(source, Sized) else 0
        if val is None:
            raise InvalidArgumentError(
                "a run on a batch source needs validation batches: pass val= (a re-iterable of (inputs, targets)); "
                "the loop validates every epoch to take its decisions"
            )
    return train, total, for_epoch(_check_source("val", val), epoch)


# --------------------------------------------------------------------------- measurement


@dataclasses.dataclass(frozen=True)
class _Measured:
    """An epoch's measurements, reduced over ranks: what the record and the controller read."""

    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    contributions: Mapping[str, float]  # slot id -> accuracy points


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


def _token_sums(
    model: Model, state: TrainState, x: Tensor, y: Tensor, grid: Tensor, *, loss_fn: LossFn, max_batch: int | None
) -> Tensor:
    """One language-model batch's ``[loss sums (k), correct counts (k), target count]``, float64.

    Only targets that are not ``IGNORE_INDEX`` count (the padded end of a
    validation text): ``loss_fn`` returns their mean, so the mean times their
    number is their sum. Tensors only: no device sync.
    """
    out = sweep(model, state.params, state.buffers, x, grid, max_batch=max_batch)
    targets = y.reshape(-1)
    valid = targets != IGNORE_INDEX
    count = valid.sum().double()
    losses, hits = [], []
    for k in range(grid.shape[0]):
        logits, flat = flatten_tokens(out[k], y)
        losses.append(loss_fn(logits, flat).double())
        hits.append(((logits.argmax(dim=-1) == flat) & valid).sum())
    # A batch of padding only adds nothing (its mean loss would be 0/0).
    loss_sum = torch.where(count > 0, torch.stack(losses) * count, torch.zeros_like(count))
    return torch.cat([loss_sum, torch.stack(hits).double(), count.reshape(1)])


def _validate_phase(
    model: Model,
    state: TrainState,
    val: Iterable[Any],
    *,
    config: FitConfig,
    loss_fn: LossFn,
    reducer: Reducer,
) -> tuple[float, float, dict[str, float]]:
    """Phase 2: ``(val_loss, val_accuracy, {slot: contribution in accuracy points})``, reduced over ranks.

    One pass over the validation batches, each swept over the ablation grid
    of :func:`_validation_grid`; the sums of all batches are one vector and
    one collective, read back once.
    """
    grid, contributors = _validation_grid(model, state.seeds, _device_of(state))
    k = grid.shape[0]
    # [loss sums (k), correct counts (k), sample count]: one vector, one collective.
    totals = torch.zeros(2 * k + 1, dtype=torch.float64, device=_device_of(state))
    for i, batch in enumerate(val):
        x, y = _check_batch(batch, config.task, f"validation batch {i}")
        if config.task == "classification":
            loss_sum, correct, n = grid_sums(
                model, state.params, state.buffers, x, y, grid, loss_fn=loss_fn, max_batch=config.max_batch
            )
            totals = totals + torch.cat([loss_sum, correct, loss_sum.new_tensor([n])])
        else:
            totals = totals + _token_sums(model, state, x, y, grid, loss_fn=loss_fn, max_batch=config.max_batch)
    totals = reducer.sum(totals)  # a rank with an empty shard adds zeros
    total_count = float(totals[-1])
    if total_count == 0:
        raise InvalidArgumentError(
            "the validation set is empty (no batch, or no target that is not IGNORE_INDEX); "
            "a run needs validation data to take decisions"
        )
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
    germinated: Mapping[str, tuple[tuple[str, ...], AlphaAlgorithm]],
    init_seed: int,
) -> tuple[Model, TrainState]:
    """Make the model's seeds and stages follow ``states``; rebuild the optimizer state to match.

    ``germinated`` maps a slot to the blueprints germinated there (one: a
    seed; several: a tournament's candidates, the first initialised as the
    seed would be) and the blend algorithm.
    """
    params = state.params
    fresh = {}
    for slot_id, (blueprints, algorithm) in germinated.items():
        seed = init_seed + model.index(slot_id)
        if len(blueprints) == 1:
            generator = torch.Generator().manual_seed(seed)
            model, params = add_seed(model, params, slot_id, registry, blueprints[0], algorithm=algorithm,
                                     generator=generator)
        else:
            generators = [torch.Generator().manual_seed((seed + i * 1_000_003) % (2**62)) for i in range(len(blueprints))]
            model, params = add_candidates(model, params, slot_id, registry, blueprints, generators=generators,
                                           algorithm=algorithm)
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


def _candidate_blueprints(config: FitConfig, registry: Registry, topology: str, chosen: str) -> tuple[str, ...]:
    """The blueprints a germination of ``chosen`` puts in the slot (``config.tournament`` of them, ``chosen`` first)."""
    if config.tournament == 1:
        return (chosen,)
    pool = config.tournament_blueprints or HeuristicConfig().rotation_for(topology, registry.names(topology))
    after = pool[pool.index(chosen) + 1 :] + pool[: pool.index(chosen)] if chosen in pool else pool
    others = [name for name in after if name != chosen] or [chosen]
    return (chosen, *(others[i % len(others)] for i in range(config.tournament - 1)))


def _tournament_phase(
    model: Model,
    state: TrainState,
    states: Mapping[str, SeedState],
    val: Callable[[], Iterable[Any]],
    *,
    epoch: int,
    config: FitConfig,
    loss_fn: LossFn,
    reducer: Reducer,
) -> tuple[Model, TrainState, dict[str, SeedState], tuple[LifecycleEvent, ...]]:
    """Phase 4b: end every tournament whose incubation is over; ``(model, state, states, events)``.

    A slot holding candidates is compared from its
    ``gates.min_blending_epochs``-th epoch in TRAINING on, before anything
    could move it on (G2 and ``step_epoch`` need as many epochs): once a
    candidate passes G2, or ``tournament_patience`` epochs later in any case,
    the winner (:func:`esper_func.tournament.select_candidate`, scored on
    this epoch's validation batches, reduced over ranks) becomes the slot's
    seed, with its optimizer moments; the others are dropped.
    """
    states = dict(states)
    events: list[LifecycleEvent] = []
    for slot_id in model.slot_order:
        seed_state = states.get(slot_id)
        if not isinstance(model.slot(slot_id), Candidates) or seed_state is None:
            continue
        incubated = seed_state.metrics.epochs_in_current_stage
        if seed_state.stage != SeedStage.TRAINING or incubated < config.gates.min_blending_epochs:
            continue
        batches = (_check_batch(b, config.task, f"validation batch {i} of epoch {epoch}") for i, b in enumerate(val()))
        chosen, params, states, decided = select_candidate(
            model, state.params, state.buffers, states, slot_id, batches, gates=config.gates, loss_fn=loss_fn,
            reducer=reducer,
            max_batch=config.max_batch,
            # Never wait while the group's own state would pass G2: the controller or step_epoch
            # could then move a slot still holding candidates to BLENDING.
            wait_for_gate=incubated < config.gates.min_blending_epochs + config.tournament_patience
            and not check_gate(config.gates, seed_state, SeedStage.BLENDING).passed,
        )
        if not decided:
            continue
        winner = cast(TournamentDecided, decided[0]).winner
        opt_state = keep_candidate_opt_state(model, state.opt_state, slot_id, winner)
        model, state = chosen, dataclasses.replace(state, params=params, opt_state=opt_state, seeds=dict(states))
        events += decided
    return model, state, states, tuple(events)


def _host_param_count(state: TrainState) -> int:
    return sum(t.numel() for t in state.params["host"].values())


def _param_count(state: TrainState) -> int:
    """Parameters of the whole grown model: host, seeds and gates."""
    return sum(t.numel() for t in torch_pytree.tree_leaves(state.params) if isinstance(t, Tensor))


# --------------------------------------------------------------------------- the phases


def _train_phase(
    model: Model,
    state: TrainState,
    train: Iterable[Any],
    *,
    total: int,
    epoch: int,
    optimizer: Optimizer,
    config: FitConfig,
    loss_fn: LossFn,
    reducer: Reducer,
    on_step: Callable[[int, int], None] | None,
) -> tuple[TrainState, float, float]:
    """Phase 1: one pass over the epoch's training batches; ``(state, train_loss, train_accuracy)``.

    Losses and accuracies stay tensors until the end of the epoch (one
    read-back); the last step's gradient telemetry is folded into the seed
    states once, as esper-lite's loop does.

    Raises:
        InvalidArgumentError: the epoch has no training batch.
        InvalidTypeError, ShapeError, DTypeError: a batch that is not a pair
            of tensors fit for ``config.task``.
    """
    losses: list[Tensor] = []
    accuracies: list[Tensor] = []
    metrics: StepMetrics | None = None
    for done, batch in enumerate(train, start=1):
        x, y = _check_batch(batch, config.task, f"training batch {done - 1} of epoch {epoch}")
        state, metrics = train_step(model, state, (x, y), optimizer=optimizer, loss_fn=loss_fn, reducer=reducer)
        losses.append(metrics.loss)  # tensors: no host sync per step
        accuracies.append(metrics.accuracy)
        if on_step is not None:
            on_step(done, total)
    if not losses:
        raise InvalidArgumentError(
            f"epoch {epoch} has no training batch; give the loop a non-empty training set (with world_size > 1 an "
            "in-memory Dataset drops the last partial round of batches: at least world_size * batch_size samples)"
        )
    train_loss, train_accuracy = torch.stack(
        [torch.stack(losses).double().mean(), torch.stack(accuracies).double().mean()]
    ).tolist()
    if metrics is not None and math.isfinite(train_loss):
        # As esper-lite's loop: the last batch's gradient telemetry, materialised once per epoch.
        state = dataclasses.replace(state, seeds=record_step_gradients(state.seeds, metrics))
    return state, train_loss, train_accuracy


def _govern_phase(
    config: FitConfig, loop: LoopState, epoch: int, measured: _Measured, data: Dataset | Batches
) -> tuple[GovernorState, Verdict, str, int]:
    """Phase 3: the governor's verdict on the validation loss; ``(governor, verdict, reason, rollbacks in a row)``.

    Raises:
        TrainingDivergedError: ``config.governor.max_consecutive_rollbacks``
            rollbacks in a row (the message says what is not finite).
    """
    governor, verdict, reason = governor_check(config.governor, loop.governor, measured.val_loss)
    rollbacks = loop.consecutive_rollbacks + 1 if verdict == Verdict.ROLLBACK else 0
    limit = config.governor.max_consecutive_rollbacks
    if verdict == Verdict.ROLLBACK and limit and rollbacks >= limit:
        raise TrainingDivergedError(_divergence_message(data, epoch, rollbacks, reason, measured))
    return governor, verdict, reason, rollbacks


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


def _record_phase(
    states: Mapping[str, SeedState],
    measured: _Measured,
    *,
    epoch: int,
    max_epochs: int,
) -> dict[str, SeedState]:
    """Phase 4: this epoch's accuracy into every slot with a seed, each blended seed's contribution,
    and the epoch stamp of the gradient telemetry the training steps measured.

    As esper-lite's heuristic loop, only slots holding a seed (live or
    FOSSILIZED) record accuracy (in percent); a slot cooling down after a
    prune counts its epochs in ``step_epoch`` only. The telemetry sync
    follows the accuracy, as in esper-lite's training loop.
    """
    recorded = dict(states)
    for slot_id, seed_state in states.items():
        if has_seed(seed_state):
            seed_state = record_accuracy(seed_state, 100.0 * measured.val_accuracy)
            if slot_id in measured.contributions:
                seed_state = record_contribution(seed_state, measured.contributions[slot_id])
            seed_state = sync_telemetry(seed_state, epoch=epoch, max_epochs=max(max_epochs, epoch))
            recorded[slot_id] = seed_state
    return recorded


def _lifecycle_phase(
    model: Model, states: Mapping[str, SeedState], config: FitConfig
) -> tuple[dict[str, SeedState], list[LifecycleEvent], int]:
    """Phase 5: count the free slots, then ``step_epoch`` every slot; ``(states, events, free slots before)``.

    ``step_epoch`` runs the alpha ramps, the auto-forward gates and the
    cooldown after a prune. The free slots are counted *before* the step, as
    esper-lite's loop counts them, so a slot freed here is offered to the
    controller an epoch later.
    """
    available = sum(1 for sid in model.slot_order if is_free(states.get(sid)))
    stepped = dict(states)
    events: list[LifecycleEvent] = []
    for slot_id, seed_state in states.items():
        stepped[slot_id], ticked = step_epoch(seed_state, config.gates, auto_forward=config.auto_forward)
        events += ticked
    return stepped, events, available


def _decide_phase(
    model: Model,
    state: TrainState,
    states: Mapping[str, SeedState],
    loop: LoopState,
    measured: _Measured,
    *,
    epoch: int,
    available: int,
    optimizer: Optimizer,
    config: FitConfig,
    registry: Registry,
    controller: Controller,
) -> tuple[Model, TrainState, Action, tuple[LifecycleEvent, ...]]:
    """Phase 6: observe, ask the controller, apply its action, and bring the model's structure in line.

    Returns ``(model, state, action, events of the action)``. A germinated
    seed is initialised from ``(state.key, epoch)`` alone.
    """
    observation = _observe(model, states, loop, measured, epoch=epoch, config=config, registry=registry,
                           available_slots=available)
    action = controller(observation)
    states, acted, _ = apply_action(
        action, states, config.gates, epoch=epoch, topology=model.host.topology,
        seed_params=_seed_params(model, registry, action), host_params=_host_param_count(state),
    )
    germinated = {}
    if action.kind == ActionKind.GERMINATE:
        assert action.slot_id is not None and action.blueprint is not None
        blueprints = _candidate_blueprints(config, registry, model.host.topology, action.blueprint)
        germinated[action.slot_id] = (blueprints, action.algorithm or AlphaAlgorithm.ADD)
    model, state = _sync_structure(
        model, state, states, optimizer=optimizer, registry=registry, germinated=germinated,
        init_seed=(state.key * 7919 + epoch * 104729) % (2**62),
    )
    return model, state, action, tuple(acted)


def _observe(
    model: Model,
    states: Mapping[str, SeedState],
    loop: LoopState,
    measured: _Measured,
    *,
    epoch: int,
    config: FitConfig,
    registry: Registry,
    available_slots: int,
) -> Observation:
    """The controller's view: this epoch's measurements, the typed history in ``loop.records``, the slots."""
    accuracies = (*(100.0 * r.val_accuracy for r in loop.records), 100.0 * measured.val_accuracy)
    val_losses = (*(r.val_loss for r in loop.records), measured.val_loss)
    return Observation(
        epoch=epoch,
        max_epochs=config.epochs,
        topology=model.host.topology,
        val_accuracy=100.0 * measured.val_accuracy,
        val_loss=measured.val_loss,
        train_loss=measured.train_loss,
        accuracy_history=accuracies,
        loss_history=val_losses,
        slots=tuple(SlotView(sid, states.get(sid), measured.contributions.get(sid)) for sid in model.slot_order),
        events=loop.events,
        event_epochs=loop.event_epochs,
        available_blueprints=registry.names(model.host.topology),
        available_slots=available_slots,
    )


def _snapshot_phase(
    model: Model,
    state: TrainState,
    loop: LoopState,
    *,
    epoch: int,
    verdict: Verdict,
    events: tuple[LifecycleEvent, ...],
    config: FitConfig,
) -> tuple[tuple[Model, TrainState] | None, bool]:
    """Phase 7a: ``(last_good, fossilized_since_snapshot)`` after this epoch.

    A healthy epoch refreshes the snapshot every ``snapshot_interval``
    epochs and at the first healthy epoch after a fossilization (esper-lite's
    schedule); a rolled-back epoch never does.
    """
    fossilized_now = any(isinstance(e, SeedFossilized) for e in events)
    if verdict != Verdict.ROLLBACK and should_snapshot(config.governor, epoch, fossilized=loop.fossilized_since_snapshot):
        return (model, state), fossilized_now
    return loop.last_good, loop.fossilized_since_snapshot or fossilized_now


def _epoch_record(
    model: Model,
    state: TrainState,
    measured: _Measured,
    *,
    epoch: int,
    task: Task,
    events: tuple[LifecycleEvent, ...],
    action: Action | None,
    verdict: Verdict,
    reason: str,
    seconds: float,
) -> EpochRecord:
    """Phase 7b: the typed record of the epoch (slots as the model holds them after the epoch)."""
    slots = []
    for slot_id in model.slot_order:
        seed_state = state.seeds.get(slot_id)
        slot = model.slot(slot_id)
        slots.append(SlotRecord(
            slot_id,
            model.stage(slot_id),
            0.0 if seed_state is None else float(seed_state.alpha),
            None if slot is None else slot.blueprint_id,
            measured.contributions.get(slot_id),
        ))
    return EpochRecord(
        epoch=epoch,
        step=state.step,
        task=task,
        train_loss=measured.train_loss,
        train_accuracy=measured.train_accuracy,
        val_loss=measured.val_loss,
        val_accuracy=measured.val_accuracy,
        val_bits_per_token=measured.val_loss / math.log(2) if task == "language_model" else None,
        params=_param_count(state),
        seconds=seconds,
        slots=tuple(slots),
        action=None if action is None else ActionRecord.of(action),
        verdict=verdict,
        verdict_reason=reason,
        events=events,
    )


# --------------------------------------------------------------------------- one epoch


def run_epoch(
    model: Model,
    state: TrainState,
    loop: LoopState,
    data: Dataset | Batches,
    *,
    val: Batches | None = None,
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
    """Run epoch ``loop.epoch + 1``; returns the new ``(model, state, loop, record)``.

    Phases, in esper-lite's order: train; validate (with each blended seed's
    contribution); govern (a rollback restores the last-known-good snapshot,
    prunes every live seed and ends the epoch); record accuracy and
    contributions; count the free slots and ``step_epoch`` every slot; ask the
    controller and apply its action; bring the model's structure in line with
    the states; refresh the snapshot; build the record.

    Data:
        ``data`` is an in-memory :class:`~esper_func.data.Dataset` (its
        training split shuffled by ``(config.seed, epoch)``, batches of
        ``config.batch_size``, rank ``rank`` of ``world_size`` taking the
        strided shard, ``drop_last`` when ``world_size > 1``; its validation
        split in order, batches of ``config.val_batch_size``, sharded the
        same way), or any re-iterable of ``(inputs, targets)`` batches (a
        list, a ``torch.utils.data.DataLoader``, ``ef.data.TensorBatches``,
        ``ef.data.TokenBatches``), which is then this rank's shard as it is.
        ``val`` is the validation batches (required with a batch source;
        overrides a Dataset's validation split). Both sources go through
        :func:`esper_func.data.for_epoch` with the epoch first: esper_func's
        batches become ``source.at_epoch(epoch)``; a DataLoader whose
        sampler or batch sampler has ``set_epoch`` (``DistributedSampler``,
        ``ef.data.EpochBatchSampler``) is told the epoch, PyTorch's
        convention and the one thing the loop changes in place.

    Purity and determinism: nothing else is mutated; with a Dataset, or a
    source whose batches are a function of the epoch, a run resumed from its
    checkpoint equals the uninterrupted run bitwise. ``on_step(done,
    total)`` is called after each training step (``total`` is 0 when the
    source has no ``len``). ``record.seconds`` is the epoch's wall-clock time.

    Raises:
        TrainingDivergedError: ``config.governor.max_consecutive_rollbacks``
            rollbacks in a row (the message says what is not finite).
        InvalidArgumentError: the task does not fit the host, an empty
            training epoch or validation set, a batch source without ``val``.
        InvalidTypeError, ShapeError, DTypeError: a source that is not
            re-iterable, a batch that is not a pair of tensors, targets or
            inputs whose shape or dtype does not fit ``config.task``.
    """
    started = time.perf_counter()
    reducer = reducer or LocalReducer()
    controller = controller or heuristic(HeuristicConfig())
    _check_task(model, config.task)
    for name in config.tournament_blueprints or () if config.tournament > 1 else ():
        registry.get(model.host.topology, name)  # UnknownBlueprintError names the blueprints it has
    epoch = loop.epoch + 1
    if loop.last_good is None:
        loop = dataclasses.replace(loop, last_good=(model, state))
    train, total, val_batches = _sources(data, val, epoch=epoch, config=config, rank=rank, world_size=world_size)

    state, train_loss, train_accuracy = _train_phase(
        model, state, train, total=total, epoch=epoch, optimizer=optimizer, config=config, loss_fn=loss_fn,
        reducer=reducer, on_step=on_step,
    )
    val_loss, val_accuracy, contributions = _validate_phase(
        model, state, val_batches, config=config, loss_fn=loss_fn, reducer=reducer
    )
    measured = _Measured(train_loss, train_accuracy, val_loss, val_accuracy, contributions)
    governor, verdict, reason, rollbacks = _govern_phase(config, loop, epoch, measured, data)
    action: Action | None = None
    if verdict == Verdict.ROLLBACK:
        model, state, events = _rollback(model, state, loop, reason, optimizer=optimizer, config=config,
                                         registry=registry)
    else:
        states = _record_phase(state.seeds, measured, epoch=epoch, max_epochs=config.epochs)
        model, state, states, decided = _tournament_phase(
            model, state, states,
            lambda: _sources(data, val, epoch=epoch, config=config, rank=rank, world_size=world_size)[2],
            epoch=epoch, config=config, loss_fn=loss_fn, reducer=reducer,
        )
        states, ticked, available = _lifecycle_phase(model, states, config)
        model, state, action, acted = _decide_phase(
            model, state, states, loop, measured, epoch=epoch, available=available, optimizer=optimizer,
            config=config, registry=registry, controller=controller,
        )
        events = (*decided, *ticked, *acted)

    last_good, fossilized = _snapshot_phase(model, state, loop, epoch=epoch, verdict=verdict, events=events,
                                            config=config)
    record = _epoch_record(model, state, measured, epoch=epoch, task=config.task, events=events, action=action,
                           verdict=verdict, reason=reason, seconds=time.perf_counter() - started)
    loop = LoopState(
        epoch=epoch,
        records=(*loop.records, record),
        events=loop.events + events,
        event_epochs=loop.event_epochs + (epoch,) * len(events),
        governor=governor,
        last_good=last_good,
        consecutive_rollbacks=rollbacks,
        fossilized_since_snapshot=fossilized,
    )
    return model, state, loop, record


def _divergence_message(data: Dataset | Batches, epoch: int, rollbacks: int, reason: str, measured: _Measured) -> str:
    """What is not finite, for the error that ends a run the governor cannot save."""
    found = []
    if isinstance(data, Dataset):
        for name in ("x_train", "y_train", "x_val", "y_val"):
            tensor = getattr(data, name, None)
            if isinstance(tensor, Tensor) and tensor.is_floating_point():
                bad = int((~torch.isfinite(tensor)).sum())
                if bad:
                    found.append(f"{name} holds {bad} non-finite value(s)")
        where = "; ".join(found) if found else "the data are finite, so the model diverges (lower the learning rate)"
    else:
        where = "check the batches for non-finite values, or lower the learning rate"
    return (
        f"epoch {epoch}: the governor rolled back {rollbacks} epochs in a row ({reason}; validation loss "
        f"{measured.val_loss}, training loss {measured.train_loss}); {where}. Stopping instead of rolling back forever."
    )


def _seed_params(model: Model, registry: Registry, action: Action) -> int:
    """Parameters of the seed a GERMINATE action would create (the gate excluded, as in esper-lite)."""
    if action.kind != ActionKind.GERMINATE or action.blueprint is None or action.slot_id is None:
        return 0
    blueprint = registry.get(model.host.topology, action.blueprint)
    shapes = Slot(blueprint, model.host.slot_channels(action.slot_id)).param_shapes["seed"]
    return sum(math.prod(shape) for shape in shapes.values())


# --------------------------------------------------------------------------- the whole run


def fit(
    model: Model,
    state: TrainState,
    data: Dataset | Batches,
    *,
    val: Batches | None = None,
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
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> FitResult:
    """Run epochs ``loop.epoch + 1 .. config.epochs`` (from scratch when ``loop`` is None).

    ``data`` and ``val`` as in :func:`run_epoch`. ``on_epoch(record)`` is
    called once after each epoch, with the record that ends up in
    ``result.history``. Pure apart from the callbacks and a DataLoader
    sampler's ``set_epoch``.
    """
    result = FitResult(model, state, loop or LoopState())
    for after in epochs(
        model, state, data, val=val, optimizer=optimizer, config=config, registry=registry, controller=controller,
        loss_fn=loss_fn, loop=loop, reducer=reducer, rank=rank, world_size=world_size, on_step=on_step,
        on_epoch=on_epoch,
    ):
        result = FitResult(*after[:3])
    return result


def epochs(
    model: Model,
    state: TrainState,
    data: Dataset | Batches,
    *,
    val: Batches | None = None,
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
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> Iterator[tuple[Model, TrainState, LoopState, EpochRecord]]:
    """:func:`run_epoch` repeatedly, yielding ``(model, state, loop, record)`` after each epoch.

    ``on_epoch(record)`` is called once per epoch, before the epoch is yielded.
    """
    loop = loop or LoopState()
    while loop.epoch < config.epochs:
        model, state, loop, record = run_epoch(
            model, state, loop, data, val=val, optimizer=optimizer, config=config, registry=registry,
            controller=controller, loss_fn=loss_fn, reducer=reducer, rank=rank, world_size=world_size,
            on_step=on_step,
        )
        if on_epoch is not None:
            on_epoch(record)
        yield model, state, loop, record
