"""Counterfactual sweeps: many alpha settings in one shared computation.

esper-lite measures "what if this seed were off?" by mutating a slot
(``force_alpha``) or by repeating the whole batch once per configuration
(``fused_forward``). Here alpha is an argument, so a sweep over a grid of
alpha rows is one pure call, and it repeats no work:

- the distinct rows of the grid form a prefix tree, one level per slot in
  the forward pass (:class:`SweepPlan`); a node is an alpha prefix;
- the tree is walked depth first: everything before the first slot runs
  once; at each node the host segment up to the slot and the seed run once
  (a seed's output does not depend on its own alpha), then each child blends
  at its own alpha and continues down its branch. Every host segment and
  seed runs once per *distinct* prefix, on the batch as given, which is the
  least work any sweep can do; nothing is copied to gather branches, and
  only one root-to-leaf path of activations is alive at a time;
- every operation sees exactly the tensors and shapes that
  :func:`esper_func.predict` would for that row, so each output equals
  ``predict``'s (a seed's output is put into the host's memory layout once
  per node, as the model's forward does, so each child's blend is one
  vectorised pass).

Rows are deduplicated on the columns that matter (slots whose seed is in
the forward pass). ``max_batch`` bounds how many samples one host segment
processes at once: larger batches are swept in chunks.

The grid builders live in :mod:`esper_func.attribution`:
:func:`~esper_func.attribution.alpha_grid` for coalitions and
:func:`~esper_func.attribution.coalition_grid` to turn coalitions of a
model's seeds into alpha rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, cast

import torch
from torch import Tensor, nn
from torch.func import grad

from esper_func._pytree import pytree_dataclass, static_field
from esper_func._skeleton import Skeleton
from esper_func.attribution import alpha_grid, coalition_grid
from esper_func.batching import IGNORE_INDEX
from esper_func.errors import DTypeError, InvalidArgumentError, ShapeError
from esper_func.model import (
    Buffers,
    Model,
    Params,
    call_module,
    check_input,
    check_tree,
    model_cache,
    predict,
    seed_like_host,
)
from esper_func.slot import SlotModule

__all__ = [
    "EvaluationResult",
    "SweepModule",
    "SweepPlan",
    "alpha_grid",
    "alpha_sensitivity",
    "branch_sums",
    "check_grid",
    "coalition_grid",
    "evaluate",
    "flatten_tokens",
    "grid_sums",
    "sweep",
    "sweep_plan",
    "sweep_plan_stats",
]


def check_grid(model: Model, grid: Any) -> Tensor:
    """Validate an alpha grid ``[K, n_slots]`` (finite, in ``[0, 1]``) and return it."""
    if not isinstance(grid, Tensor):
        raise DTypeError(f"grid must be a torch.Tensor of shape [K, {model.n_slots}], got {type(grid).__name__}")
    if not grid.is_floating_point():
        raise DTypeError(f"grid must be a floating-point tensor, got dtype {grid.dtype}")
    if grid.ndim != 2 or grid.shape[1] != model.n_slots:
        raise ShapeError(
            f"grid must have shape [K, {model.n_slots}] (one column per slot in {list(model.slot_order)}), "
            f"got {list(grid.shape)}"
        )
    if grid.shape[0] == 0:
        raise ShapeError("grid is empty (K = 0); give at least one row of alphas")
    if bool(torch.isnan(grid).any()):
        raise InvalidArgumentError("grid contains NaN; every alpha must be a number in [0, 1]")
    if bool(((grid < 0) | (grid > 1)).any()):
        bad = grid[(grid < 0) | (grid > 1)][:5].tolist()
        raise InvalidArgumentError(f"grid values must lie in [0, 1]; found e.g. {bad}")
    return grid


# --------------------------------------------------------------------------- the plan


#: A node of the prefix tree: per child, ``(index of its alpha at this level, child)``; at the last
#: level the child is the index of a leaf (a distinct row), else the child's own node.
Node = tuple[tuple[int, Any], ...]


class SweepPlan(NamedTuple):
    """A prefix tree over distinct alpha rows, one level per slot in the forward pass.

    Attributes:
        alphas: per level, the distinct alpha values used there, as 0-d
            tensors (the grid's dtype and device, as ``predict`` receives them).
        root: the root :data:`Node` (the first routed slot's level); empty
            when no seed is in the forward pass.
        n_leaves: the number of distinct rows (leaves).
    """

    alphas: tuple[tuple[Tensor, ...], ...]
    root: Node
    n_leaves: int


def _active_columns(model: Model) -> list[int]:
    return [model.index(sid) for sid in model.routed]


def _distinct_rows(model: Model, grid: Tensor) -> tuple[list[tuple[float, ...]], list[tuple[float, ...]]]:
    """``(rows, distinct)``: each grid row on the routed columns, and the sorted distinct ones."""
    columns = _active_columns(model)
    rows: list[tuple[float, ...]] = [tuple(r) for r in grid[:, columns].tolist()] if columns else [()] * grid.shape[0]
    return rows, sorted(set(rows))


def sweep_plan(distinct: list[tuple[float, ...]], *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> SweepPlan:
    """The prefix tree of ``distinct`` (sorted, distinct rows of equal length); leaf ``i`` is ``distinct[i]``."""
    depth = len(distinct[0]) if distinct else 0
    values: list[dict[float, int]] = [{} for _ in range(depth)]
    for row in distinct:
        for d, v in enumerate(row):
            values[d].setdefault(v, len(values[d]))

    def build(rows: list[tuple[int, tuple[float, ...]]], d: int) -> Node:
        children: dict[float, list[tuple[int, tuple[float, ...]]]] = {}
        for leaf, row in rows:
            children.setdefault(row[d], []).append((leaf, row))
        if d + 1 == depth:
            return tuple((values[d][v], group[0][0]) for v, group in children.items())
        return tuple((values[d][v], build(group, d + 1)) for v, group in children.items())

    root: Node = build(list(enumerate(distinct)), 0) if depth else ()
    alphas = tuple(
        tuple(torch.tensor(list(level), dtype=dtype, device=device).unbind()) if level else ()
        for level in values
    )
    return SweepPlan(alphas, root, max(1, len(distinct)))


class SweepModule(nn.Module):
    """The model's host and slots walked along a :class:`SweepPlan` (eval mode), for one ``functional_call``.

    Shares the model module's submodules (the same tensor names), so the
    model's flat parameter dict binds to it as is. ``forward(x, plan)``
    returns the output of every leaf, in leaf order.
    """

    def __init__(self, host: nn.Module, slots: nn.ModuleDict, route: tuple[tuple[int, int, str, int], ...]) -> None:
        super().__init__()
        self.host = host
        self.slots = slots
        self.route = route

    def forward(self, x: Tensor, plan: SweepPlan) -> list[Tensor]:
        if not self.route:
            return [self.host(x, 0, None)] * plan.n_leaves
        outputs: list[Tensor | None] = [None] * plan.n_leaves
        self._visit(x, 0, 0, plan.root, plan.alphas, outputs)
        return cast(list[Tensor], outputs)

    def _visit(
        self, h: Tensor, start: int, depth: int, node: Node, alphas: tuple[tuple[Tensor, ...], ...], outputs: list[Tensor | None]
    ) -> None:
        _, surface, slot_id, stage = self.route[depth]
        h = self.host(h, start, surface)
        slot = cast(SlotModule, self.slots[slot_id])
        features = seed_like_host(h, slot.features(h, stage))  # once per node: the seed does not depend on its own alpha
        last = depth + 1 == len(self.route)
        for value, child in node:
            blended = slot.combine(h, features, alphas[depth][value], stage)
            if last:
                outputs[child] = self.host(blended, surface, None)
            else:
                self._visit(blended, surface, depth + 1, child, alphas, outputs)


def eval_runner(model: Model, module_cls: Callable[..., nn.Module]) -> Skeleton:
    """The per-thread skeleton of ``module_cls(host, slots, route)`` over ``model``'s eval modules (built once per model)."""
    cache = model_cache(model)
    key = f"eval_runner:{module_cls.__qualname__}"
    runner = cache.get(key)
    if runner is None:
        prototype = model.skeleton(train=False)
        runner = cache[key] = Skeleton(module_cls(prototype.host, prototype.slots, prototype.route))
    return cast(Skeleton, runner)


# --------------------------------------------------------------------------- sweep


def check_max_batch(max_batch: Any, name: str = "max_batch") -> None:
    """Raise :class:`InvalidArgumentError` unless ``max_batch`` is ``None`` or a positive int."""
    if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
        raise InvalidArgumentError(f"{name} must be a positive int (samples) or None; got {max_batch!r}")


def sweep(
    model: Model,
    params: Params,
    buffers: Buffers,
    x: Tensor,
    grid: Tensor,
    *,
    max_batch: int | None = None,
) -> Tensor:
    """Model outputs for every alpha row of ``grid``: ``[K, *predict_shape]``; pure.

    Equal to ``torch.stack([ef.predict(model, params, buffers, row, x) for
    row in grid])`` (each output is computed by the same operations on the
    same tensors), computed along a prefix tree over the rows (see the
    module docstring). Eval mode.

    Args:
        model: the model, as for :func:`esper_func.predict`.
        params: its parameters.
        buffers: its buffers.
        x: one input batch ``[B, ...]``.
        grid: alpha rows ``[K, n_slots]`` in ``model.slot_order``, values in
            ``[0, 1]`` (any values, not only 0/1), e.g. from :func:`alpha_grid`.
        max_batch: bound on the samples one host segment processes at once;
            a larger batch is swept in chunks of ``max_batch`` samples.
            ``None``: no bound.

    Raises:
        ShapeError: a grid of the wrong width or rank, or an empty grid.
        DTypeError: a grid that is not a floating-point tensor.
        InvalidArgumentError: NaN or values outside ``[0, 1]`` in the grid, or
            a ``max_batch`` below 1; and everything :func:`esper_func.predict`
            raises.
    """
    check_input(model, params, x)
    check_grid(model, grid)
    check_tree(model, params, buffers)
    check_max_batch(max_batch)
    rows, distinct = _distinct_rows(model, grid)
    plan = sweep_plan(distinct, dtype=grid.dtype, device=grid.device)
    position = {row: i for i, row in enumerate(distinct or [()])}
    module = eval_runner(model, SweepModule).get()
    flat = model.flatten(params, buffers["host"])
    if max_batch is None or x.shape[0] <= max_batch:
        leaves = call_module(module, flat, (x, plan))
    else:
        chunks = [call_module(module, flat, (part, plan)) for part in x.split(max_batch)]
        leaves = [torch.cat(parts) for parts in zip(*chunks, strict=True)]
    return torch.stack([leaves[position[row]] for row in rows])


def sweep_plan_stats(model: Model, grid: Tensor) -> list[int]:
    """Per routed slot, how many times its host segment and seed run in a sweep of ``grid`` (distinct prefixes)."""
    check_grid(model, grid)
    _, distinct = _distinct_rows(model, grid)
    depth = len(distinct[0]) if distinct else 0
    return [len({row[: d + 1] for row in distinct}) for d in range(depth)]


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class EvaluationResult:
    """Per-configuration mean loss and accuracy over a stream of batches.

    ``loss[k]`` and ``accuracy[k]`` belong to ``grid[k]``; accuracy is a
    fraction in ``[0, 1]`` (argmax of the last logit dimension equal to the
    target); ``count`` is the number of samples (or tokens) seen.
    """

    grid: Tensor
    loss: Tensor
    accuracy: Tensor
    count: int = static_field(default=0)


def flatten_tokens(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """``logits [..., V]`` and ``targets [...]`` as ``[N, V]`` and ``[N]`` (sequences become tokens).

    The one loss convention of the package: ``loss_fn(logits, targets)`` is
    called on these (``[B, V]`` classification outputs pass unchanged).
    """
    return logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)


def grid_sums(
    model: Model,
    params: Params,
    buffers: Buffers,
    x: Tensor,
    y: Tensor,
    grid: Tensor,
    *,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    max_batch: int | None = None,
) -> tuple[Tensor, Tensor, int]:
    """One batch's per-row sums for :func:`evaluate`: ``(loss_sum [K], correct [K], count)``.

    ``loss_sum[k]`` is ``loss_fn``'s mean loss for row ``k`` times the
    number of samples (tokens) ``count``; ``correct[k]`` counts argmax hits.
    Targets equal to :data:`~esper_func.data.IGNORE_INDEX` (the padding of
    a last, short token window) are left out of ``count``, as cross-entropy
    leaves them out of its mean; a batch of padding only gives zeros.
    Both are float64, on the device of the model's output, so a caller can
    add batches up and all-reduce the sums before dividing.
    """
    return branch_sums(sweep(model, params, buffers, x, grid, max_batch=max_batch), y, loss_fn=loss_fn)


def branch_sums(
    out: Tensor, y: Tensor, *, loss_fn: Callable[[Tensor, Tensor], Tensor]
) -> tuple[Tensor, Tensor, int]:
    """:func:`grid_sums` of outputs already computed: ``out`` is ``[K, *output]``, one row per branch."""
    k = out.shape[0]
    tokens = [flatten_tokens(out[i], y) for i in range(k)]
    targets_flat = tokens[0][1]
    # Padded targets (IGNORE_INDEX, which cross-entropy skips in its mean) are not counted.
    count = int((targets_flat != IGNORE_INDEX).sum()) if not targets_flat.is_floating_point() else targets_flat.shape[0]
    if count == 0:
        zeros = torch.zeros(k, dtype=torch.float64, device=out.device)
        return zeros, zeros.clone(), 0
    loss_sum = torch.stack([loss_fn(logits, targets).double() for logits, targets in tokens]) * count
    correct = torch.stack([(logits.argmax(dim=-1) == targets).sum() for logits, targets in tokens]).double()
    return loss_sum, correct, count


def evaluate(
    model: Model,
    params: Params,
    buffers: Buffers,
    batches: Iterable[tuple[Tensor, Tensor]],
    grid: Tensor,
    *,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    max_batch: int | None = None,
) -> EvaluationResult:
    """Loss and accuracy of every alpha row of ``grid``, streamed over ``batches``.

    ``loss_fn(logits, targets)`` returns the *mean* loss of a batch (e.g.
    ``torch.nn.functional.cross_entropy``); it is weighted by the batch's
    sample count when averaging over batches. Sequence outputs ``[B, T, V]``
    with targets ``[B, T]`` are flattened to tokens first (:func:`flatten_tokens`).
    """
    check_grid(model, grid)
    loss_sum: Tensor | int = 0
    correct: Tensor | int = 0
    count = 0
    for x, y in batches:
        batch_loss, batch_correct, n = grid_sums(model, params, buffers, x, y, grid, loss_fn=loss_fn, max_batch=max_batch)
        loss_sum, correct, count = loss_sum + batch_loss, correct + batch_correct, count + n
    if count == 0:
        raise InvalidArgumentError("evaluate needs at least one batch; got an empty iterable")
    assert isinstance(loss_sum, Tensor) and isinstance(correct, Tensor)
    return EvaluationResult(grid, (loss_sum / count).float(), (correct / count).float(), count)


def alpha_sensitivity(
    model: Model,
    params: Params,
    buffers: Buffers,
    x: Tensor,
    target: Tensor,
    alphas: Tensor,
    *,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
) -> Tensor:
    """``d loss / d alphas`` at ``alphas`` in one backward pass: ``[n_slots]``.

    A first-order attribution: ``-grad[i]`` estimates how much the loss
    would fall if slot ``i``'s alpha rose a little. It matches a
    removal-based contribution ``loss(alpha_i = 0) - loss(alphas)`` only
    while the loss is close to linear in ``alpha_i`` between the two points
    (small seeds, small alphas); interactions between slots and curvature
    (e.g. a seed that only helps fully blended) make them differ. Slots whose
    seed is not in the forward pass get 0, and so does a TRAINING seed at
    alpha 0 (the incubator's forward does not depend on alpha there).
    Eval mode; pure.
    """
    if not isinstance(alphas, Tensor) or alphas.ndim != 1:
        raise ShapeError(f"alphas must be a 1-D tensor [{model.n_slots}] for alpha_sensitivity")
    return grad(lambda a: loss_fn(*flatten_tokens(predict(model, params, buffers, a, x), target)))(alphas)
