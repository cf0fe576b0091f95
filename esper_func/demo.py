"""Pieces of the ``esper-func demo`` runs that are useful on their own; pure functions.

The demo trains a grown model and two baselines (the same host with no
seeds, and a static host widened to the grown model's final parameter
count) and compares them; see ``docs/demos.md``. This module holds the
parts that do not touch the disk:

- :func:`gpt_init`: GPT-style re-initialisation of a transformer host's weights;
- :func:`cosine_lr`: a per-epoch cosine learning-rate schedule;
- :func:`fixed_windows`: evenly spaced full windows of a held-out text;
- :func:`closest_width`: the width whose parameter count is closest to a target;
- :func:`slot_shapley`: the Shapley value of every blended seed on validation data;
- :func:`verdict`: a one-line comparison of a grown model with its baselines.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from esper_func.errors import InvalidArgumentError

__all__ = ["closest_width", "cosine_lr", "fixed_windows", "gpt_init", "slot_shapley", "verdict"]


def gpt_init(host_params: Mapping[str, Tensor], n_layer: int, *, seed: int) -> dict[str, Tensor]:
    """New host parameters initialised as GPT-2 does: a pure function of ``(host_params' shapes, n_layer, seed)``.

    Every 2-D weight is drawn from ``N(0, 0.02)``, except the residual
    projections (names ending in ``c_proj.weight``), drawn from
    ``N(0, 0.02 / sqrt(2 * n_layer))``; every bias is 0; other tensors
    (layer-norm weights) are kept. Draws come from a generator seeded with
    ``seed`` in the order of ``host_params``; the inputs are not modified.

    Raises:
        InvalidArgumentError: ``n_layer < 1``.
    """
    if n_layer < 1:
        raise InvalidArgumentError(f"n_layer must be >= 1; got {n_layer}")
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, Tensor] = {}
    for name, value in host_params.items():
        if value.ndim == 2:
            std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("c_proj.weight") else 0.02
            draw = torch.randn(value.shape, generator=generator, dtype=torch.float32) * std
            out[name] = draw.to(dtype=value.dtype, device=value.device)
        elif name.endswith(".bias"):
            out[name] = torch.zeros_like(value)
        else:
            out[name] = value
    return out


def cosine_lr(epoch: int, epochs: int, lr: float, min_lr: float) -> float:
    """The learning rate of ``epoch`` (from 1): cosine from ``lr`` at epoch 1 down to ``min_lr`` at ``epochs``.

    ``min_lr >= lr`` (or a single epoch) gives ``lr`` throughout.

    Raises:
        InvalidArgumentError: ``epoch`` outside ``1..epochs``.
    """
    if not 1 <= epoch <= epochs:
        raise InvalidArgumentError(f"epoch must be from 1 to {epochs}; got {epoch}")
    if min_lr >= lr or epochs == 1:
        return lr
    f = (epoch - 1) / (epochs - 1)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * f))


def fixed_windows(tokens: Tensor, count: int, block_size: int) -> tuple[Tensor, Tensor]:
    """``count`` evenly spaced full windows of ``tokens``: inputs and next-token targets, ``[count, block_size]`` int64.

    Window ``i`` starts at ``(i * (W - 1) // (count - 1)) * block_size`` over
    the ``W`` non-overlapping windows that fit, so no target is padding and
    the windows span the whole text.

    Raises:
        InvalidArgumentError: ``count`` or ``block_size`` < 1, or fewer than
            ``count`` windows fit in ``tokens``.
    """
    if count < 1 or block_size < 1:
        raise InvalidArgumentError(f"count and block_size must be >= 1; got {count}, {block_size}")
    fits = (tokens.numel() - 1) // block_size
    if fits < count:
        raise InvalidArgumentError(f"{count} windows of {block_size} need {count * block_size + 1} tokens; got {tokens.numel()}")
    starts = (torch.linspace(0, fits - 1, count).long() * block_size).tolist()
    x = torch.stack([tokens[s : s + block_size] for s in starts]).long()
    y = torch.stack([tokens[s + 1 : s + block_size + 1] for s in starts]).long()
    return x, y


def closest_width(params_of: Callable[[int], int], target: int, widths: Iterable[int]) -> tuple[int, int]:
    """``(width, params)``: the width whose ``params_of(width)`` is closest to ``target`` (the smaller on a tie).

    Raises:
        InvalidArgumentError: ``widths`` is empty.
    """
    best: tuple[int, int, int] | None = None
    for width in widths:
        n = params_of(width)
        key = (abs(n - target), width, n)
        if best is None or key < best:
            best = key
    if best is None:
        raise InvalidArgumentError("closest_width needs at least one width")
    return best[1], best[2]


def slot_shapley(
    model: Any, params: Any, buffers: Any, states: Mapping[str, Any], batches: Iterable[tuple[Tensor, Tensor]],
    *, loss_fn: Callable[[Tensor, Tensor], Tensor],
) -> dict[str, float]:
    """The Shapley value of each seed in the forward pass (stage past GERMINATED), in validation accuracy points.

    A coalition sweep over the seeds at their current alphas (every
    coalition for up to 10 seeds, sampled antithetic permutations beyond,
    seed 0), evaluated on ``batches`` with :func:`esper_func.evaluate`;
    ``{}`` when no seed is in the forward pass. The values add up to the
    accuracy with every seed minus the accuracy with none.
    """
    import esper_func as ef

    seeded = [sid for sid in model.seeded if model.stage(sid) != ef.SeedStage.GERMINATED]
    if not seeded:
        return {}
    n = len(seeded)
    permutations = None
    if n <= 10:
        coalitions = ef.alpha_grid("full_factorial", n)
    else:
        coalitions, permutations = ef.alpha_grid("shapley", n, seed=0, return_permutations=True)
    base = ef.alphas_of(model, states)
    grid = ef.counterfactual.coalition_grid(base, [model.index(sid) for sid in seeded], coalitions)
    result = ef.evaluate(model, params, buffers, list(batches), grid, loss_fn=loss_fn)
    phi = ef.shapley(coalitions, 100.0 * result.accuracy.double(), permutations=permutations)
    return {sid: float(phi.mean[j]) for j, sid in enumerate(seeded)}


def verdict(
    task: str, grown: Mapping[str, float | None], baselines: Mapping[str, Mapping[str, float | None]],
    *, names: Mapping[str, str] | None = None,
) -> str:
    """One line comparing the grown model's final metrics with each baseline's, whichever way it goes.

    The text task compares bits per character (``val_bpc``, lower is
    better), the others validation accuracy (``val_accuracy``, a fraction;
    differences in percentage points). ``names`` gives each baseline's
    words (default: its key).
    """
    names = names or {}
    text = task == "text"
    key = "val_bpc" if text else "val_accuracy"

    def show(v: float) -> str:
        return f"{v:.3f} bpc" if text else f"{100 * v:.1f}%"

    mine = grown.get(key)
    if mine is None:
        return "no comparison: the grown model has no final metrics"
    parts: list[str] = []
    beaten: list[str] = []
    tied: list[str] = []
    lost: list[str] = []
    for name, metrics in baselines.items():
        theirs = metrics.get(key)
        label = names.get(name, name)
        if theirs is None:
            continue
        if text:
            diff = theirs - mine
            parts.append(f"{label} {show(theirs)} ({-diff:+.3f} bpc)")
        else:
            diff = mine - theirs
            parts.append(f"{label} {show(theirs)} ({100 * diff:+.1f} pts)")
        (beaten if diff > 0 else tied if diff == 0 else lost).append(label)
    if not parts:
        return f"grown {show(mine)}; no baseline finished"
    clauses = [f"beat {', '.join(beaten)}"] if beaten else []
    clauses += [f"tied with {', '.join(tied)}"] if tied else []
    clauses += [f"lost to {', '.join(lost)}"] if lost else []
    outcome = "the grown model " + (" and ".join(clauses) if len(clauses) < 3 else ", ".join(clauses[:2]) + " and " + clauses[2])
    return f"grown {show(mine)} vs {'; '.join(parts)}: {outcome}"

