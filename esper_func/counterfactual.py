"""Counterfactual sweeps: many alpha settings in one batched, shared computation.

esper-lite measures "what if this seed were off?" by mutating a slot
(``force_alpha``) or by repeating the whole batch once per configuration
(``fused_forward``). Here alpha is an argument, so a sweep over a grid of
alpha rows is one pure call, and it repeats no work:

- everything before the first slot whose alpha varies runs once;
- after each slot the computation branches only into the *distinct* alpha
  prefixes seen in the grid (a prefix tree over the rows), and each seed runs
  once per parent branch: its output does not depend on its own alpha;
- branches are folded into the batch axis (one large batch per host
  segment), which on CPU is faster than ``vmap`` over configurations.

Rows are deduplicated on the columns that matter (slots whose seed is in
the forward pass), and ``max_batch`` bounds memory by splitting the sorted
rows into chunks whose widest level fits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call, grad

from esper_func._pytree import pytree_dataclass, static_field
from esper_func.attribution import alpha_grid
from esper_func.errors import DTypeError, InvalidArgumentError, ShapeError
from esper_func.model import Buffers, Model, Params, SweepPlan, check_tree, predict

__all__ = [
    "EvaluationResult",
    "alpha_grid",
    "alpha_sensitivity",
    "check_grid",
    "evaluate",
    "flatten_tokens",
    "grid_sums",
    "sweep",
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


def _active_columns(model: Model) -> list[int]:
    return [model.index(sid) for sid in model.routed]


def _plan(rows: list[tuple[float, ...]], device: torch.device, dtype: torch.dtype) -> tuple[SweepPlan, list[int]]:
    """Build the prefix tree of ``rows``; returns the plan and each row's leaf index."""
    levels = []
    index: dict[tuple[float, ...], int] = {(): 0}
    for depth in range(1, len(rows[0]) + 1 if rows else 1):
        children: dict[tuple[float, ...], int] = {}
        parents, alphas = [], []
        for row in rows:
            prefix = row[:depth]
            if prefix not in children:
                children[prefix] = len(children)
                parents.append(index[prefix[:-1]])
                alphas.append(prefix[-1])
        branches = parents != list(range(len(index)))
        levels.append(
            (
                torch.tensor(parents, dtype=torch.long, device=device),
                torch.tensor(alphas, dtype=dtype, device=device),
                branches,
            )
        )
        index = children
    return SweepPlan(tuple(levels)), [index[row] for row in rows]


def _chunks(rows: list[tuple[float, ...]], order: list[int], batch: int, max_batch: int | None) -> Iterable[list[int]]:
    """Split sorted distinct rows into chunks whose widest tree level has at most ``max_batch`` samples."""
    if max_batch is None or not rows or not rows[0]:
        yield order
        return
    limit = max(1, max_batch // batch)
    chunk: list[int] = []
    widths: list[set[tuple[float, ...]]] = [set() for _ in rows[0]]
    for i in order:
        row = rows[i]
        grown = [len(w | {row[: d + 1]}) for d, w in enumerate(widths)]
        if chunk and max(grown) > limit:
            yield chunk
            chunk, widths = [], [set() for _ in rows[0]]
        chunk.append(i)
        for d, w in enumerate(widths):
            w.add(row[: d + 1])
    if chunk:
        yield chunk


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

    Equal (to float rounding) to ``torch.stack([ef.predict(model, params,
    buffers, row, x) for row in grid])``, computed as a prefix tree over the
    rows (see the module docstring). Eval mode.

    Args:
        model, params, buffers: as for :func:`esper_func.predict`.
        x: one input batch ``[B, ...]``.
        grid: alpha rows ``[K, n_slots]`` in ``model.slot_order``, values in
            ``[0, 1]`` (any values, not only 0/1), e.g. from :func:`alpha_grid`.
        max_batch: bound on the samples (branches x ``B``) one host segment
            processes at once; larger grids run in chunks of rows. ``None``:
            no bound (the widest level holds every distinct row).

    Raises:
        ShapeError, DTypeError, InvalidArgumentError: a grid of the wrong width or rank,
        an empty grid, NaN or values outside ``[0, 1]``; and everything
        :func:`esper_func.predict` raises.
    """
    check_grid(model, grid)
    check_tree(model, params, buffers)
    if max_batch is not None and max_batch < 1:
        raise InvalidArgumentError(f"max_batch must be a positive number of samples or None, got {max_batch}")
    columns = _active_columns(model)
    rows = [tuple(r) for r in grid[:, columns].tolist()] if columns else [() for _ in range(grid.shape[0])]
    distinct = sorted(set(rows))
    position = {row: i for i, row in enumerate(distinct)}
    batch = x.shape[0]
    module = model._runners[0].get()  # type: ignore[attr-defined]
    flat = model.flatten(params, buffers["host"])
    leaves: list[Tensor | None] = [None] * len(distinct)
    for chunk in _chunks(distinct, list(range(len(distinct))), batch, max_batch):
        chunk_rows = [distinct[i] for i in chunk]
        plan, leaf_of = _plan(chunk_rows, x.device, grid.dtype)
        out = functional_call(module, flat, (x,), {"plan": plan}, strict=False, tie_weights=False)
        out = out.reshape((-1, batch, *out.shape[1:]))
        for i, leaf in zip(chunk, leaf_of, strict=True):
            leaves[i] = out[leaf]
    return torch.stack([leaves[position[row]] for row in rows])  # type: ignore[misc]


def sweep_plan_stats(model: Model, grid: Tensor) -> list[int]:
    """Branches per routed slot for ``grid`` (the batch multiplier of each host segment)."""
    check_grid(model, grid)
    columns = _active_columns(model)
    rows = sorted({tuple(r) for r in grid[:, columns].tolist()})
    return [len({row[: d + 1] for row in rows}) for d in range(len(columns))]


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
    Both are float64, on the device of the model's output, so a caller can
    add batches up and all-reduce the sums before dividing.
    """
    out = sweep(model, params, buffers, x, grid, max_batch=max_batch)
    k = grid.shape[0]
    tokens = [flatten_tokens(out[i], y) for i in range(k)]
    count = tokens[0][1].shape[0]
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
