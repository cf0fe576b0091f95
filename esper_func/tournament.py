"""Seed tournaments: several candidate seeds incubated in one slot at once, then one kept.

In TRAINING a seed is an incubator: it reads the *detached* host features
and its forward value is the host's (``h + (s - s.detach())``), so it
changes nothing the host computes, forward or backward, and it receives the
full upstream gradient at its slot. Any number of candidates can therefore
share one slot: the host trains exactly as with the slot empty, and each
candidate receives exactly the gradient it would receive alone.

- :func:`add_candidates` puts ``K`` candidates (any mix of blueprints,
  repeats allowed) into a free slot, as a
  :class:`~esper_func.candidates.Candidates` group in TRAINING. The model's
  forward, :func:`esper_func.train_step` (eager and compiled), the
  optimizers and checkpoints work with it unchanged; the candidates of one
  blueprint run as one ``vmap`` over their stacked parameters.
- :func:`candidate_params` reads the candidates back, each in a single
  seed's layout.
- :func:`select_candidate` scores every candidate by what it would
  contribute blended in (one sweep on validation data: the host prefix once,
  one branch per candidate at the slot) and by the gate G2 checks it would
  face, keeps the winner as an ordinary seed in TRAINING and drops the
  rest, with a :class:`~esper_func.lifecycle.events.TournamentDecided` event.
- :func:`keep_candidate_tree` narrows any params-shaped tree (the
  optimizer's moments) to one candidate, so training continues where the
  winner was.

Everything is pure: inputs are never mutated.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, cast

import torch
from torch import Tensor, nn

from esper_func._rng import split_seeds
from esper_func.blueprints import Blueprint, Registry
from esper_func.candidates import CANDIDATE_STAGE, Candidates, CandidatesModule
from esper_func.counterfactual import branch_sums, check_max_batch, eval_runner, flatten_tokens
from esper_func.errors import (
    IllegalTransitionError,
    InvalidArgumentError,
    InvalidTypeError,
    UnknownTopologyError,
)
from esper_func.lifecycle.alpha import AlphaAlgorithm
from esper_func.lifecycle.events import LifecycleEvent, TournamentDecided
from esper_func.lifecycle.gates import GateLevel, GateResult, Gates, check_gate
from esper_func.lifecycle.measure import gradient_health, record_gradients
from esper_func.lifecycle.stages import SeedStage
from esper_func.lifecycle.state import SeedState
from esper_func.model import (
    Buffers,
    Model,
    Params,
    alphas_of,
    apply,
    call_module,
    check_input,
    check_tree,
    seed_like_host,
)
from esper_func.slot import SlotModule, SlotParams, init_slot_params
from esper_func.train import LocalReducer, Reducer

__all__ = [
    "CandidateScores",
    "Candidates",
    "add_candidates",
    "candidate_params",
    "keep_candidate_opt_state",
    "keep_candidate_tree",
    "score_candidates",
    "select_candidate",
]

LossFn = Callable[[Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------- adding and reading candidates


def _blueprints(registry: Registry, topology: str, blueprints: Any) -> tuple[Blueprint, ...]:
    if isinstance(blueprints, (str, Blueprint)) or not isinstance(blueprints, Sequence):
        raise InvalidTypeError(
            f"blueprints must be a sequence of blueprint names (or Blueprints), one per candidate; got {blueprints!r}"
        )
    if len(blueprints) < 1:
        raise InvalidArgumentError("a tournament needs at least one candidate (K >= 1); got an empty list of blueprints")
    out = []
    for i, entry in enumerate(blueprints):
        if isinstance(entry, Blueprint):
            if entry.topology != topology:
                raise UnknownTopologyError(
                    f"candidate {i} is the {entry.topology} blueprint {entry.name!r}, but the slot is in a {topology} host; "
                    f"{topology} blueprints: {list(registry.names(topology))}"
                )
            out.append(entry)
        elif isinstance(entry, str):
            out.append(registry.get(topology, entry))  # UnknownBlueprintError lists the names
        else:
            raise InvalidTypeError(f"candidate {i} must be a blueprint name or a Blueprint; got {type(entry).__name__}")
    return tuple(out)


def add_candidates(
    model: Model,
    params: Params,
    slot_id: str,
    registry: Registry,
    blueprints: Sequence[str | Blueprint],
    *,
    generators: Sequence[torch.Generator | None] | None = None,
    algorithm: AlphaAlgorithm = AlphaAlgorithm.ADD,
    vectorize: bool | None = None,
) -> tuple[Model, Params]:
    """Incubate one candidate seed per entry of ``blueprints`` in the free slot ``slot_id``.

    The slot then holds a :class:`~esper_func.candidates.Candidates` group in
    TRAINING (the only stage a group lives in), and ``params["slots"][slot_id]``
    holds one stack of parameters per distinct blueprint
    (``{blueprint: {name: Tensor[n, *shape]}}``). Train it like any model:
    the host trains exactly as with the slot empty and each candidate as it
    would alone (see the module docstring). The lifecycle state of the slot
    (one :class:`~esper_func.SeedState` in TRAINING, e.g. from
    :func:`esper_func.germinate` and :func:`esper_func.advance`) tells the
    train step the slot trains.

    Args:
        model: the model (left untouched).
        params: its parameters (left untouched).
        slot_id: a free slot of ``model`` (no seed).
        registry: where the blueprints are looked up.
        blueprints: one blueprint name (or :class:`~esper_func.Blueprint`) per
            candidate, of the host's topology; repeats are allowed.
        generators: per candidate, the generator it is initialised from
            (read, not advanced): candidate ``i`` then starts with exactly the
            weights ``esper_func.add_seed(..., blueprints[i],
            generator=generators[i], algorithm=algorithm)`` would give it.
            ``None``: candidate ``i`` draws from
            ``torch.Generator().manual_seed(s_i)`` with ``s_0, s_1, ...``
            derived from the default seed, so repeated blueprints start apart.
        algorithm: how the chosen candidate will blend (``MULTIPLY``
            zero-initialises each candidate's last affine layer as
            ``add_seed`` does).
        vectorize: ``True`` runs each blueprint's candidates as one ``vmap``;
            ``False`` one at a time, bit for bit as each would run alone;
            ``None`` (default) the faster for the device (see
            :class:`~esper_func.candidates.Candidates`).

    Returns:
        A new ``(model, params)``; the candidates live on the device and in
        the dtype of the host's first parameter.

    Raises:
        InvalidArgumentError: no candidates (K < 1), or ``generators`` of the
            wrong length.
        InvalidTypeError: ``blueprints`` or ``generators`` of the wrong type.
        UnknownBlueprintError: a name the registry does not have for the host's
            topology (the message lists those it has).
        UnknownTopologyError: a ``Blueprint`` of the other topology.
        IllegalTransitionError: the slot already holds a seed (or candidates).
        UnknownSlotError: ``slot_id`` is not a slot of the model.
    """
    model.index(slot_id)
    if model.slot(slot_id) is not None:
        raise IllegalTransitionError(
            f"slot {slot_id!r} already holds a {model.slot(slot_id).blueprint_id!r} seed "  # type: ignore[union-attr]
            f"in stage {model.stage(slot_id).name}; remove it first"
        )
    topology = model.host.topology
    members = _blueprints(registry, topology, blueprints)
    k = len(members)
    if generators is None:
        gens: list[torch.Generator | None] = [torch.Generator().manual_seed(s) for s in split_seeds(None, k)]
    else:
        if isinstance(generators, torch.Generator) or not isinstance(generators, Sequence):
            raise InvalidTypeError(f"generators must be a sequence of {k} torch.Generator (or None), one per candidate")
        if len(generators) != k:
            raise InvalidArgumentError(
                f"generators must have one entry per candidate: {k} blueprints but {len(generators)} generators"
            )
        for i, g in enumerate(generators):
            if g is not None and not isinstance(g, torch.Generator):
                raise InvalidTypeError(f"generators[{i}] must be a torch.Generator or None; got {type(g).__name__}")
        gens = list(generators)
    algorithm = AlphaAlgorithm(algorithm)
    if vectorize is not None and not isinstance(vectorize, bool):
        raise InvalidTypeError(f"vectorize must be True, False or None; got {vectorize!r}")
    group = Candidates(members[0], model.host.slot_channels(slot_id), algorithm, (), False, members, vectorize)
    reference = next(iter(params["host"].values()), None)
    device = None if reference is None else reference.device
    dtype = None if reference is None else reference.dtype
    singles = [
        init_slot_params(member, gen, device=device, dtype=dtype)["seed"]
        for member, gen in zip(group.member_slots, gens, strict=True)
    ]
    stacks: SlotParams = {}
    for key in group.groups:
        rows = [singles[i] for i in range(k) if group.position(i)[0] == key]
        stacks[key] = {name: torch.stack([row[name] for row in rows]) for name in rows[0]}
    new_model = model.replace_slot(slot_id, slot=group, stage=CANDIDATE_STAGE)
    return new_model, {**params, "slots": {**params["slots"], slot_id: stacks}}


def _group(model: Model, slot_id: str) -> Candidates:
    slot = model.slot(slot_id)
    if not isinstance(slot, Candidates):
        held = "nothing" if slot is None else f"a single {slot.blueprint_id!r} seed"
        raise IllegalTransitionError(f"slot {slot_id!r} holds {held}, not candidate seeds (see add_candidates)")
    return slot


def candidate_params(model: Model, params: Params, slot_id: str) -> tuple[SlotParams, ...]:
    """The candidates of ``slot_id``, each as a single seed's parameters ``{"seed": {name: tensor}}``.

    In candidate order; new tensors (copies), so nothing returned aliases ``params``.

    Raises:
        IllegalTransitionError: the slot holds no candidate group.
    """
    group = _group(model, slot_id)
    slot_params = params["slots"][slot_id]
    return tuple(
        {"seed": {name: t.clone() for name, t in group.unstack(slot_params, i).items()}} for i in range(group.k)
    )


def keep_candidate_tree(model: Model, tree: Any, slot_id: str, index: int) -> Any:
    """A params-shaped ``tree`` with the slot's candidate stacks narrowed to candidate ``index``.

    ``tree["slots"][slot_id]`` becomes ``{"seed": {name: stack[row]}}``:
    the layout of the winner as an ordinary seed. Works on the parameters
    and on every per-leaf tree of an optimizer state (moments are sliced;
    0-d leaves such as step counts, shared by the whole stack, are kept).
    ``None`` passes through. The input is not modified.
    """
    if tree is None:
        return None
    group = _group(model, slot_id)
    key, row = group.position(index)
    stacked = tree["slots"][slot_id][key]
    seed = {name: (t[row] if isinstance(t, Tensor) and t.ndim > 0 else t) for name, t in stacked.items()}
    return {**tree, "slots": {**tree["slots"], slot_id: {"seed": seed}}}


def keep_candidate_opt_state(model: Model, opt_state: Any, slot_id: str, index: int) -> Any:
    """An optimizer state (:class:`~esper_func.optim.SGDState`, :class:`~esper_func.optim.AdamState`)
    narrowed to candidate ``index`` of ``slot_id``: :func:`keep_candidate_tree` on each of its per-leaf trees.

    The winner then trains on with the moments it built up while
    incubating. The input is not modified.

    Raises:
        InvalidTypeError: ``opt_state`` is not an optimizer state dataclass.
        IllegalTransitionError: the slot holds no candidate group.
    """
    if not dataclasses.is_dataclass(opt_state) or isinstance(opt_state, type):
        raise InvalidTypeError(f"opt_state must be an esper_func optimizer state; got {type(opt_state).__name__}")
    narrowed = {
        f.name: keep_candidate_tree(model, getattr(opt_state, f.name), slot_id, index)
        for f in dataclasses.fields(opt_state)
    }
    return dataclasses.replace(opt_state, **narrowed)


# --------------------------------------------------------------------------- scoring


class _TournamentModule(nn.Module):
    """The model's eval forward with the candidate slot fanned out into one branch per candidate.

    Shares the model module's submodules (the same tensor names). The host
    runs once up to the slot; there the batch becomes ``1 + K`` branches (the
    host without the slot, then each candidate blended in at ``alpha``),
    which continue through the rest of the model as one batch of
    ``(1 + K) * B`` samples (eval mode: each sample is computed on its own).
    """

    def __init__(self, host: nn.Module, slots: nn.ModuleDict, route: tuple[tuple[int, int, str, int], ...]) -> None:
        super().__init__()
        self.host = host
        self.slots = slots
        self.route = route

    def forward(self, x: Tensor, alphas: Tensor, target: str, alpha: Tensor, order: tuple[int, ...]) -> Tensor:
        h, start, branches = x, 0, 1
        for index, surface, slot_id, stage in self.route:
            h = self.host(h, start, surface)
            if slot_id == target:
                group = cast(CandidatesModule, self.slots[slot_id])
                fanned = torch.cat([h.unsqueeze(0), group.blended(h, alpha, order)])
                branches = fanned.shape[0]
                h = fanned.flatten(0, 1)
            else:
                slot = cast(SlotModule, self.slots[slot_id])
                h = slot.combine(h, seed_like_host(h, slot.features(h, stage)), alphas[index], stage)
            start = surface
        out = self.host(h, start, None)
        return out.unflatten(0, (branches, -1))


def _check_alpha(alpha: Any) -> float:
    """``alpha`` (a number or a 0-d floating tensor) as a float in ``[0, 1]``."""
    if isinstance(alpha, Tensor) and alpha.ndim == 0 and alpha.is_floating_point():
        value = float(alpha)
    elif isinstance(alpha, (int, float)) and not isinstance(alpha, bool):
        value = float(alpha)
    else:
        raise InvalidTypeError(f"alpha must be a number or a 0-d floating tensor in [0, 1]; got {alpha!r}")
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise InvalidArgumentError(f"alpha must be in [0, 1]; got {value!r}")
    return value


class CandidateScores(NamedTuple):
    """What each candidate would do blended into the model, on validation data.

    Attributes:
        loss: ``[K]`` mean loss with candidate ``i`` blended in at ``alpha``.
        accuracy: ``[K]`` accuracy (fraction) likewise.
        baseline_loss: 0-d, the model without the slot (the host's features pass through).
        baseline_accuracy: 0-d, likewise.
        n_samples: samples (tokens) seen.
    """

    loss: Tensor
    accuracy: Tensor
    baseline_loss: Tensor
    baseline_accuracy: Tensor
    n_samples: int

    @property
    def contribution(self) -> Tensor:
        """``[K]`` accuracy gain over the baseline in percentage points (esper-lite's counterfactual contribution)."""
        return (self.accuracy - self.baseline_accuracy) * 100.0


def score_candidates(
    model: Model,
    params: Params,
    buffers: Buffers,
    states: Mapping[str, Any],
    slot_id: str,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    loss_fn: LossFn,
    alpha: float | Tensor = 1.0,
    reducer: Reducer | None = None,
    max_batch: int | None = None,
) -> CandidateScores:
    """Score every candidate of ``slot_id`` blended in at ``alpha``, in one sweep per batch; pure, eval mode.

    Per batch the host runs once up to the slot, the candidates run there
    (one ``vmap`` per blueprint or one at a time, as the group's
    ``vectorize`` says), and the rest of the model runs once on the ``1 + K``
    branches (the slot off, then each candidate blended with the slot's
    algorithm). The other slots blend at their states' alphas
    (:func:`esper_func.alphas_of`). Branch ``i`` equals
    ``ef.predict`` of the model with candidate ``i`` as an ordinary seed
    BLENDING at ``alpha`` there. Targets equal to
    :data:`~esper_func.data.IGNORE_INDEX` (padding) are not counted. With a
    distributed ``reducer`` the sums are all-reduced, so every rank gets the
    scores of all ranks' batches. ``max_batch`` bounds the samples one batch
    runs with at once (each of them fans out into ``1 + K`` branches after
    the slot); a larger batch is scored in chunks of ``max_batch`` samples,
    as :func:`esper_func.sweep` does.

    Raises:
        IllegalTransitionError: the slot holds no candidate group.
        InvalidArgumentError: no batches (no counted target on any rank),
            ``alpha`` outside ``[0, 1]``, or a ``max_batch`` below 1.
    """
    group = _group(model, slot_id)
    value = _check_alpha(alpha)
    check_max_batch(max_batch)
    check_tree(model, params, buffers)
    module = eval_runner(model, _TournamentModule).get()
    flat = model.flatten(params, buffers["host"])
    device = next(iter(flat.values())).device if flat else torch.device("cpu")
    # [loss sums (1 + K), correct counts (1 + K), target count]: one vector, one collective.
    totals = torch.zeros(2 * (1 + group.k) + 1, dtype=torch.float64, device=device)
    alphas = alphas_of(model, states, device=device)
    a = torch.tensor(value, dtype=torch.float32, device=device)
    with torch.no_grad():
        for x, y in batches:
            check_input(model, params, x)
            pieces = [(x, y)]
            if max_batch is not None and x.shape[0] > max_batch:
                if not isinstance(y, Tensor) or y.shape[:1] != x.shape[:1]:
                    raise InvalidArgumentError(
                        f"targets must have one row per input to be scored in chunks; got {tuple(x.shape)} inputs "
                        f"and targets {tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}"
                    )
                pieces = list(zip(x.split(max_batch), y.split(max_batch), strict=True))
            for xs, ys in pieces:
                out = call_module(module, flat, (xs, alphas, slot_id, a, group.order))
                loss_sum, correct, n = branch_sums(out, ys, loss_fn=loss_fn)
                totals = totals + torch.cat([loss_sum, correct, loss_sum.new_tensor([n])])
    totals = (reducer or LocalReducer()).sum(totals)
    count = int(totals[-1])
    if count == 0:
        raise InvalidArgumentError("score_candidates needs at least one validation batch with a counted target; got none")
    branches = 1 + group.k
    mean_loss, accuracy = (totals[:branches] / count).float(), (totals[branches:-1] / count).float()
    return CandidateScores(mean_loss[1:], accuracy[1:], mean_loss[0], accuracy[0], count)


def _candidate_gradients(
    model: Model,
    params: Params,
    buffers: Buffers,
    states: Mapping[str, Any],
    slot_id: str,
    batch: tuple[Tensor, Tensor] | None,
    loss_fn: LossFn,
    reducer: Reducer,
) -> tuple[float, list[tuple[float, float, bool, bool]]]:
    """``(host_grad_norm, per candidate (seed_grad_norm, health, has_exploding, has_vanishing))`` on one batch (eval mode).

    The gradients are averaged over ranks first (as data-parallel training
    averages them), so every rank measures the same telemetry. A rank with
    no batch (an empty validation shard) adds zeros and still takes part.
    """
    group = _group(model, slot_id)
    host = {k: v.detach().requires_grad_() for k, v in params["host"].items()}
    stacks = {key: {n: t.detach().requires_grad_() for n, t in tensors.items()} for key, tensors in params["slots"][slot_id].items()}
    forward = {"host": host, "slots": {**params["slots"], slot_id: stacks}}
    leaves = list(host.values()) + [t for tensors in stacks.values() for t in tensors.values()]
    if batch is None:
        grads: tuple[Tensor, ...] = tuple(torch.zeros_like(t) for t in leaves)
    else:
        x, y = batch
        with torch.enable_grad():
            out, _ = apply(model, forward, buffers, alphas_of(model, states, device=x.device), x, train=False)
            loss = loss_fn(*flatten_tokens(out, y))
            grads = torch.autograd.grad(loss, leaves, allow_unused=True, materialize_grads=True)
    grads = tuple(reducer.mean(list(grads)))
    host_grads = grads[: len(host)]
    host_norm = float(torch.linalg.vector_norm(torch.stack([g.double().norm() for g in host_grads]))) if host_grads else 0.0
    by_leaf = dict(zip([(key, n) for key, tensors in stacks.items() for n in tensors], grads[len(host) :], strict=True))
    per_candidate = []
    for i in range(group.k):
        key, row = group.position(i)
        own = [by_leaf[(key, n)][row] for n in stacks[key]]
        health = gradient_health(own)
        per_candidate.append(
            (float(health.norm), float(health.health), bool(health.has_exploding), bool(health.has_vanishing))
        )
    return host_norm, per_candidate


# --------------------------------------------------------------------------- selection


def select_candidate(
    model: Model,
    params: Params,
    buffers: Buffers,
    states: Mapping[str, SeedState],
    slot_id: str,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    gates: Gates,
    loss_fn: LossFn,
    alpha: float | Tensor | None = None,
    reducer: Reducer | None = None,
    wait_for_gate: bool = False,
    max_batch: int | None = None,
) -> tuple[Model, Params, dict[str, SeedState], tuple[LifecycleEvent, ...]]:
    """End the tournament at ``slot_id``: keep the best candidate as an ordinary seed, drop the others.

    Each candidate is scored by what it would do blended in at ``alpha``
    (:func:`score_candidates` on ``batches``): the lower validation loss
    wins, ties go to the larger contribution (accuracy with it minus
    accuracy without it, in percentage points), then to the lower index.
    The default ``alpha``, ``1 / state.blend_tempo_epochs``, is where a
    linear blend ramp stands after its first BLENDING epoch: incubation
    trains each candidate on the host's gradient as if added, a first-order
    objective, so a small alpha measures what each has learned, where a
    full blend of a seed that never saw its own effect mostly measures its
    overshoot. (The default sigmoid ramp starts lower, 0.024 at tempo 5;
    scored there, digits tournaments chose worse: docs/tournament.md.)
    Each candidate is also checked against gate G2 as it would
    face it: the slot's state with the candidate's blueprint, parameter
    count and gradient telemetry (measured on the first batch, eval mode, as
    :func:`esper_func.record_gradients` records it). The winner is the
    best-scoring candidate that passes G2, or, when none passes, the
    best-scoring one (it stays in TRAINING and can keep training until it
    does).

    The winner becomes an ordinary seed in the slot, in TRAINING, with its
    own parameters (:func:`esper_func.advance` can take it to BLENDING as
    usual); the slot's state takes its blueprint, parameter count and
    gradient telemetry. Narrow the optimizer state with
    :func:`keep_candidate_tree` and the event's ``winner`` index.

    Args:
        model: the model with a candidate group at ``slot_id``.
        params: its parameters (left untouched).
        buffers: its buffers (left untouched).
        states: lifecycle states per slot; ``states[slot_id]`` is the slot's
            state in TRAINING.
        slot_id: the slot holding the candidates.
        batches: validation batches ``(x, y)``; iterated once.
        gates: the gate configuration G2 is checked with.
        loss_fn: mean loss ``loss_fn(logits, targets)`` (e.g. cross-entropy).
        alpha: the blend weight the candidates are scored at (``None``:
            ``1 / states[slot_id].blend_tempo_epochs``).
        reducer: how scores and gradients are combined across data-parallel
            ranks (default: one process). With a distributed reducer every
            rank scores on all ranks' batches and keeps the same winner.
        wait_for_gate: when no candidate passes G2, change nothing and return
            no event (the tournament goes on; call again after more
            training) instead of keeping the best-scoring candidate.
        max_batch: bound on the samples scored at once (see
            :func:`score_candidates`). The G2 telemetry's gradient pass runs
            on the first batch whole, as a training step on it would.

    Returns:
        ``(model, params, states, events)``: new values; ``events`` is one
        :class:`~esper_func.lifecycle.events.TournamentDecided` (none when
        ``wait_for_gate`` postponed the choice).

    Raises:
        IllegalTransitionError: the slot holds no candidate group, or its
            state is missing or not in TRAINING.
        InvalidArgumentError: no validation batches; ``alpha`` outside ``[0, 1]``;
            a ``max_batch`` below 1.
    """
    group = _group(model, slot_id)
    if not isinstance(gates, Gates):
        raise InvalidTypeError(f"gates must be an esper_func.Gates; got {type(gates).__name__}")
    state = states.get(slot_id) if isinstance(states, Mapping) else None
    if not isinstance(state, SeedState) or state.stage != SeedStage.TRAINING:
        got = "no state" if state is None else f"stage {getattr(state, 'stage', state)!r}"
        raise IllegalTransitionError(f"states[{slot_id!r}] must be the slot's SeedState in TRAINING; got {got}")
    reducer = reducer or LocalReducer()
    alpha = 1.0 / max(1, state.blend_tempo_epochs) if alpha is None else _check_alpha(alpha)
    batch_list = list(batches)
    # No batch at all raises in score_candidates, on every rank at once (after the all-reduce).
    scores = score_candidates(
        model, params, buffers, states, slot_id, batch_list, loss_fn=loss_fn, alpha=alpha, reducer=reducer,
        max_batch=max_batch,
    )
    host_norm, telemetry = _candidate_gradients(
        model, params, buffers, states, slot_id, batch_list[0] if batch_list else None, loss_fn, reducer
    )

    losses = [float(v) for v in scores.loss.tolist()]
    accuracies = [float(v) for v in scores.accuracy.tolist()]
    contributions = [float(v) for v in scores.contribution.tolist()]
    candidate_states: list[SeedState] = []
    results: list[GateResult] = []
    for i, member in enumerate(group.member_slots):
        seed_norm, health, exploding, vanishing = telemetry[i]
        own = dataclasses.replace(
            state,
            blueprint_id=member.blueprint_id,
            seed_id=_seed_id(state, slot_id, member.blueprint_id),
            metrics=dataclasses.replace(state.metrics, seed_param_count=member.num_params()),
        )
        if math.isfinite(host_norm) and math.isfinite(seed_norm):
            own = record_gradients(
                own, host_grad_norm=host_norm, seed_grad_norm=seed_norm, gradient_norm=seed_norm,
                gradient_health=health, has_exploding=exploding, has_vanishing=vanishing,
            )
        candidate_states.append(own)
        results.append(check_gate(gates, own, SeedStage.BLENDING))

    def rank(i: int) -> tuple[float, float, int]:
        c, lo = contributions[i], losses[i]
        return (lo if math.isfinite(lo) else math.inf, -c if math.isfinite(c) else math.inf, i)

    # A candidate that diverged (non-finite loss or gradients) keeps no telemetry of its own: it never passes.
    for i, (seed_norm, *_rest) in enumerate(telemetry):
        if not (math.isfinite(losses[i]) and math.isfinite(seed_norm) and math.isfinite(host_norm)):
            results[i] = GateResult(gate=GateLevel.G2, passed=False, checks_failed=("non_finite_measurement",),
                                    message="candidate diverged: non-finite loss or gradients")
    passing = [i for i in range(group.k) if results[i].passed]
    if wait_for_gate and not passing:
        return model, params, dict(states), ()
    pool = passing or list(range(group.k))
    winner = min(pool, key=rank)
    name = group.member_slots[winner].blueprint_id
    summary = (
        f"candidate {winner} ({name}): loss {losses[winner]:.4f} at alpha {float(alpha):.2f} "
        f"(without the slot {float(scores.baseline_loss):.4f}), contribution {contributions[winner]:+.2f} pp"
    )
    if passing:
        reason = f"lowest loss among the {len(passing)} of {group.k} candidates passing G2; {summary}"
    else:
        reason = f"no candidate passes G2 yet; lowest loss of all {group.k}, kept in TRAINING; {summary}"

    winner_state = candidate_states[winner]
    new_model = model.replace_slot(slot_id, slot=group.member_slots[winner], stage=SeedStage.TRAINING)
    new_params = keep_candidate_tree(model, params, slot_id, winner)
    new_params["slots"][slot_id]["seed"] = {k: v.clone() for k, v in new_params["slots"][slot_id]["seed"].items()}
    event = TournamentDecided(
        slot_id=slot_id,
        seed_id=winner_state.seed_id,
        blueprint_id=name,
        epoch=state.metrics.epochs_total,
        alpha=float(alpha),
        baseline_loss=float(scores.baseline_loss),
        baseline_accuracy=float(scores.baseline_accuracy),
        candidates=tuple(m.blueprint_id for m in group.member_slots),
        losses=tuple(losses),
        accuracies=tuple(accuracies),
        contributions=tuple(contributions),
        gate_passed=tuple(r.passed for r in results),
        gate_checks_failed=tuple(",".join(r.checks_failed) for r in results),
        winner=winner,
        reason=reason,
    )
    return new_model, new_params, {**states, slot_id: winner_state}, (event,)


def _seed_id(state: SeedState, slot_id: str, blueprint_id: str) -> str:
    """The candidate's seed id: the default id renamed to its blueprint, a caller's own id kept."""
    return f"{slot_id}-{blueprint_id}" if state.seed_id == f"{slot_id}-{state.blueprint_id}" else state.seed_id
