"""Deterministic, shardable batches for training loops: index batches, token windows, re-iterable epochs.

Everything here is a pure function of its arguments: the order of epoch
``e`` for seed ``s`` comes from a local ``torch.Generator`` seeded from
``(s, e)`` (torch's global RNG is never read or written), so a resumed run
sees exactly the same batches, and ``rank``/``world_size`` split each epoch
into disjoint shards for data-parallel training.

* :func:`batch_indices` — index batches over ``n`` samples.
* :func:`window_starts` / :func:`token_batches` — ``(inputs, targets)``
  windows of a token sequence for next-token language modelling.
* :class:`TensorBatches` / :class:`TokenBatches` — one epoch of one rank's
  batches as a frozen, re-iterable value (also a
  ``torch.utils.data.IterableDataset``); ``at_epoch(e)`` gives another epoch.
* :class:`EpochBatchSampler` — the same batches through a map-style
  ``DataLoader`` (``batch_sampler=``), epoch set with ``set_epoch``.
* :func:`for_epoch` — what a training loop calls once per epoch on any batch source.

The public names are re-exported by :mod:`esper_func.data` (``ef.data``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
from torch import Tensor
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import IterableDataset

from esper_func._validate import check_bool, check_int, describe
from esper_func.errors import DTypeError, InvalidArgumentError, InvalidTypeError, ShapeError

__all__ = [
    "IGNORE_INDEX",
    "PAD_TOKEN",
    "EpochBatchSampler",
    "EpochBatches",
    "TensorBatches",
    "TokenBatches",
    "TokenWindows",
    "batch_indices",
    "epoch_generator",
    "for_epoch",
    "token_batches",
    "window_starts",
]

IGNORE_INDEX = -100
"""The target of a padded position (``torch.nn.functional.cross_entropy``'s default ``ignore_index``)."""

PAD_TOKEN = 0
"""The input token of a padded position (only the last validation window of a text is ever padded)."""


# --------------------------------------------------------------------------- seeds


def _seed_of(*parts: int) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (stable across runs and machines)."""
    digest = hashlib.sha256(b"esper_func.data:" + ",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A new CPU ``torch.Generator`` seeded from ``(seed, epoch)`` alone."""
    seed = check_int("seed", seed, minimum=0)
    epoch = check_int("epoch", epoch, minimum=0)
    return torch.Generator().manual_seed(_seed_of(0, seed, epoch))


# --------------------------------------------------------------------------- sample batches


def _check_shard(rank: Any, world_size: Any) -> tuple[int, int]:
    world_size = check_int("world_size", world_size, minimum=1)
    rank = check_int("rank", rank, minimum=0)
    if rank >= world_size:
        raise InvalidArgumentError(f"rank must be in [0, world_size={world_size}); got {rank}")
    return rank, world_size


def batch_indices(
    n: int,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int | None = None,
    epoch: int | None = None,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> list[Tensor]:
    """The index batches (``int64`` tensors) that rank ``rank`` sees in epoch ``epoch``.

    The epoch's order is ``randperm(n)`` from :func:`epoch_generator`
    ``(seed, epoch)`` when ``shuffle`` (then ``seed`` and ``epoch`` are
    required), else ``0..n-1``. Rank ``r`` of ``world_size`` takes the
    strided shard ``order[r::world_size]``: shards are disjoint and together
    cover the epoch. Without ``drop_last`` every index is seen exactly once
    per epoch (the last batch may be short, and ranks may differ by one
    batch). With ``drop_last`` the order is first cut to a multiple of
    ``world_size * batch_size``, so every rank gets the same number of full
    batches (what data-parallel training needs); the cut-off indices
    change with the epoch when shuffling.
    """
    n = check_int("n", n, minimum=0)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    rank, world_size = _check_shard(rank, world_size)
    shuffle = check_bool("shuffle", shuffle)
    drop_last = check_bool("drop_last", drop_last)
    if shuffle:
        if seed is None or epoch is None:
            raise InvalidArgumentError("shuffle=True needs seed= and epoch= (the order is a pure function of both)")
        order = torch.randperm(n, generator=epoch_generator(seed, epoch))
    else:
        order = torch.arange(n)
    if drop_last:
        order = order[: (n // (world_size * batch_size)) * world_size * batch_size]
    shard = order[rank::world_size]
    return list(torch.split(shard, batch_size)) if shard.numel() else []


# --------------------------------------------------------------------------- token windows


def _check_tokens(name: str, tokens: Any) -> Tensor:
    if not isinstance(tokens, Tensor):
        raise InvalidTypeError(f"{name} must be a 1-D tensor of integer tokens; got {describe(tokens)}")
    if tokens.ndim != 1:
        raise ShapeError(f"{name} must be a 1-D token sequence; got shape {tuple(tokens.shape)}")
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
        raise DTypeError(f"{name} must hold integer tokens (uint8, int32, int64 ...); got {tokens.dtype}")
    if tokens.numel() and tokens.dtype != torch.uint8 and int(tokens.min()) < 0:
        raise InvalidArgumentError(f"{name} must hold non-negative token ids; found {int(tokens.min())}")
    return tokens


def _pass_starts(n: int, block_size: int, seed: int, epoch: int, index: int) -> Tensor:
    """One shuffled pass: a random phase, then every full window from it once, in random order."""
    g = torch.Generator().manual_seed(_seed_of(3, seed, epoch, index))
    phase = int(torch.randint(0, min(block_size, n - block_size), (1,), generator=g))
    count = (n - 1 - phase) // block_size
    return phase + block_size * torch.randperm(count, generator=g)


def window_starts(
    n: int,
    block_size: int,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int | None = None,
    epoch: int | None = None,
    steps: int | None = None,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> list[Tensor]:
    """The window start offsets (``int64`` tensors, one per batch) that rank ``rank`` sees in epoch ``epoch``.

    A window starting at ``s`` is tokens ``s .. s + block_size`` (inputs
    ``s .. s + block_size - 1``, targets one further) of a sequence of ``n``
    tokens.

    ``shuffle=True`` (training; needs ``seed`` and ``epoch``, and
    ``n > block_size``): the epoch is a chain of *passes*; pass ``p`` draws a
    phase ``0 <= phase < block_size`` and takes every full window starting at
    ``phase + k * block_size`` once, in random order (from
    ``(seed, epoch, p)`` alone). Within a pass, windows never overlap. With
    ``steps=None`` the epoch is pass 0; with ``steps=k`` the passes are
    chained and cut to exactly ``k * batch_size * world_size`` windows, so
    every rank gets exactly ``k`` full batches.

    ``shuffle=False`` (validation): windows start at ``0, block_size,
    2 * block_size, ...`` while there is a token to predict; the last one may
    run past the end (it is padded, see :func:`token_batches`), so every
    token but the first is a target exactly once. ``drop_last`` first drops
    that partial window. ``steps=k`` keeps each rank's first ``k`` batches.

    Sharding, as in :func:`batch_indices`: rank ``r`` takes
    ``order[r::world_size]``; ``drop_last`` cuts the order to a multiple of
    ``world_size * batch_size`` first (same number of full batches on every
    rank). Shards are disjoint and together cover the epoch's windows.
    """
    n = check_int("n", n, minimum=0)
    block_size = check_int("block_size", block_size, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    rank, world_size = _check_shard(rank, world_size)
    shuffle = check_bool("shuffle", shuffle)
    drop_last = check_bool("drop_last", drop_last)
    if steps is not None:
        steps = check_int("steps", steps, minimum=1)
    per_step = world_size * batch_size
    if shuffle:
        if seed is None or epoch is None:
            raise InvalidArgumentError("shuffle=True needs seed= and epoch= (the windows are a pure function of both)")
        seed = check_int("seed", seed, minimum=0)
        epoch = check_int("epoch", epoch, minimum=0)
        if n <= block_size:
            raise InvalidArgumentError(
                f"a training window needs block_size + 1 = {block_size + 1} tokens; the text has {n}: use a smaller block_size"
            )
        if steps is None:
            order = _pass_starts(n, block_size, seed, epoch, 0)
            if drop_last:
                order = order[: (order.numel() // per_step) * per_step]
        else:
            need, have = steps * per_step, 0
            parts: list[Tensor] = []
            while have < need:
                parts.append(_pass_starts(n, block_size, seed, epoch, len(parts)))
                have += parts[-1].numel()
            order = torch.cat(parts)[:need]
    else:
        order = torch.arange(0, max(n - 1, 0), block_size, dtype=torch.int64)
        if drop_last:
            full = order[order + block_size < n]
            order = full[: (full.numel() // per_step) * per_step]
    shard = order[rank::world_size]
    out = list(torch.split(shard, batch_size)) if shard.numel() else []
    return out[:steps] if steps is not None and not shuffle else out


def _gather_windows(tokens: Tensor, starts: Tensor, block_size: int) -> tuple[Tensor, Tensor]:
    """``(inputs, targets)``, ``int64 [len(starts), block_size]`` (contiguous, separate storage), padded past the end of ``tokens``."""
    n = tokens.numel()
    idx = starts.to(tokens.device)[:, None] + torch.arange(block_size + 1, device=tokens.device)
    if starts.numel() == 0 or int(idx[:, -1].max()) < n:
        w = tokens[idx].to(torch.int64)
        return w[:, :-1].contiguous(), w[:, 1:].contiguous()
    valid = idx < n
    w = tokens[idx.clamp(max=n - 1)].to(torch.int64)
    inputs = torch.where(valid[:, :-1], w[:, :-1], PAD_TOKEN)
    targets = torch.where(valid[:, 1:], w[:, 1:], IGNORE_INDEX)
    return inputs, targets


def token_batches(
    tokens: Tensor,
    batch_size: int,
    block_size: int,
    *,
    shuffle: bool,
    seed: int | None = None,
    epoch: int | None = None,
    steps: int | None = None,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Iterate over one epoch's next-token batches ``(inputs, targets)``, ``int64 [B, block_size]``.

    ``targets[:, t] == inputs[:, t + 1]`` within a window, and the last target
    is the token after the window. Windows, order and sharding are those of
    :func:`window_starts`. A validation window that runs past the end is
    padded: inputs :data:`PAD_TOKEN`, targets :data:`IGNORE_INDEX` (which
    ``torch.nn.functional.cross_entropy`` skips by default). The last batch
    may have fewer rows unless ``drop_last``. A one-shot iterator;
    :class:`TokenBatches` is the re-iterable form.
    """
    tokens = _check_tokens("tokens", tokens)
    for starts in window_starts(
        tokens.numel(), block_size, batch_size, shuffle=shuffle, seed=seed, epoch=epoch, steps=steps,
        drop_last=drop_last, rank=rank, world_size=world_size,
    ):
        yield _gather_windows(tokens, starts, block_size)


class TokenWindows(TorchDataset[tuple[Tensor, Tensor]]):
    """A map-style ``torch.utils.data.Dataset`` of windows: item ``s`` is the window starting at token ``s``.

    ``item[s] == (inputs, targets)``, ``int64 [block_size]`` each, padded
    past the end like :func:`token_batches`; ``len`` is ``len(tokens) - 1``
    (every start with a token to predict). With
    ``DataLoader(TokenWindows(...), batch_sampler=EpochBatchSampler(b))``
    the batches equal those of the :class:`TokenBatches` ``b``.
    """

    def __init__(self, tokens: Tensor, block_size: int) -> None:
        self.tokens = _check_tokens("tokens", tokens)
        self.block_size = check_int("block_size", block_size, minimum=1)

    def __len__(self) -> int:
        return max(self.tokens.numel() - 1, 0)

    def __getitem__(self, start: int) -> tuple[Tensor, Tensor]:
        start = check_int("start", start, minimum=0, maximum=len(self) - 1)
        inputs, targets = _gather_windows(self.tokens, torch.tensor([start]), self.block_size)
        return inputs[0], targets[0]

    def __getitems__(self, starts: list[int]) -> list[tuple[Tensor, Tensor]]:
        """Many items in one gather (``DataLoader`` calls this for a whole batch)."""
        checked = [check_int("start", s, minimum=0, maximum=len(self) - 1) for s in starts]
        inputs, targets = _gather_windows(self.tokens, torch.tensor(checked, dtype=torch.int64), self.block_size)
        return list(zip(inputs.unbind(), targets.unbind(), strict=True))


# --------------------------------------------------------------------------- re-iterable batches


def _worker_slice(items: Sequence[Tensor]) -> Iterable[Tensor]:
    """Inside a DataLoader worker, the batches that worker yields (round-robin, so the loader keeps the order)."""
    info = torch.utils.data.get_worker_info()
    if info is None:
        return items
    return items[info.id :: info.num_workers]


@dataclasses.dataclass(frozen=True, eq=False)
class TensorBatches(IterableDataset[tuple[Tensor, Tensor]]):
    """One epoch of ``(x, y)`` batches of aligned tensors, rank ``rank``'s shard: a frozen, re-iterable value.

    Iterating yields ``(x[idx], y[idx])`` for each ``idx`` of
    :func:`batch_indices` with these settings, the same every time;
    ``at_epoch(e)`` gives epoch ``e``. As an ``IterableDataset`` it works in
    ``DataLoader(b, batch_size=None, num_workers=k)`` with the same batches
    in the same order (each worker builds every ``k``-th batch). Arguments
    are checked here, not when iterating.
    """

    x: Tensor
    y: Tensor
    batch_size: int
    shuffle: bool = False
    seed: int | None = None
    epoch: int = 0
    drop_last: bool = False
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        for name, t in (("x", self.x), ("y", self.y)):
            if not isinstance(t, Tensor) or t.ndim == 0:
                raise InvalidTypeError(f"{name} must be a tensor with a first (sample) dimension; got {describe(t)}")
        if self.x.shape[0] != self.y.shape[0]:
            raise ShapeError(f"x and y must have the same first dimension; got {tuple(self.x.shape)} and {tuple(self.y.shape)}")
        check_int("epoch", self.epoch, minimum=0)
        if self.seed is not None:
            check_int("seed", self.seed, minimum=0)
        self.indices()  # checks the remaining arguments

    def indices(self) -> list[Tensor]:
        """The sample indices of each batch (what :class:`EpochBatchSampler` yields)."""
        return batch_indices(
            self.x.shape[0], self.batch_size, shuffle=self.shuffle, seed=self.seed, epoch=self.epoch,
            drop_last=self.drop_last, rank=self.rank, world_size=self.world_size,
        )

    @property
    def items(self) -> torch.utils.data.TensorDataset:
        """The map-style dataset whose items the batches gather: ``TensorDataset(x, y)``."""
        return torch.utils.data.TensorDataset(self.x, self.y)

    def at_epoch(self, epoch: int) -> TensorBatches:
        """The same batches for epoch ``epoch`` (a new value)."""
        return dataclasses.replace(self, epoch=epoch)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for idx in _worker_slice(self.indices()):
            yield self.x[idx.to(self.x.device)], self.y[idx.to(self.y.device)]

    def __len__(self) -> int:
        return len(self.indices())


@dataclasses.dataclass(frozen=True, eq=False)
class TokenBatches(IterableDataset[tuple[Tensor, Tensor]]):
    """One epoch of next-token ``(inputs, targets)`` batches of a token sequence, rank ``rank``'s shard.

    A frozen, re-iterable value: iterating yields :func:`token_batches` with
    these settings, the same every time; ``at_epoch(e)`` gives epoch ``e``.
    Made by :meth:`TextCorpus.train_batches` / :meth:`TextCorpus.val_batches`.
    As an ``IterableDataset`` it works in ``DataLoader(b, batch_size=None,
    num_workers=k)`` with the same batches in the same order. Arguments are
    checked here, not when iterating.
    """

    tokens: Tensor
    batch_size: int
    block_size: int
    shuffle: bool = False
    seed: int | None = None
    epoch: int = 0
    steps: int | None = None
    drop_last: bool = False
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        _check_tokens("tokens", self.tokens)
        check_int("epoch", self.epoch, minimum=0)
        if self.seed is not None:
            check_int("seed", self.seed, minimum=0)
        self.indices()  # checks the remaining arguments

    def indices(self) -> list[Tensor]:
        """The window starts of each batch (what :class:`EpochBatchSampler` yields); see :func:`window_starts`."""
        return window_starts(
            self.tokens.numel(), self.block_size, self.batch_size, shuffle=self.shuffle, seed=self.seed,
            epoch=self.epoch, steps=self.steps, drop_last=self.drop_last, rank=self.rank, world_size=self.world_size,
        )

    @property
    def items(self) -> TokenWindows:
        """The map-style dataset whose items the batches gather: ``TokenWindows(tokens, block_size)``."""
        return TokenWindows(self.tokens, self.block_size)

    def at_epoch(self, epoch: int) -> TokenBatches:
        """The same batches for epoch ``epoch`` (a new value)."""
        return dataclasses.replace(self, epoch=epoch)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for starts in _worker_slice(self.indices()):
            yield _gather_windows(self.tokens, starts, self.block_size)

    def __len__(self) -> int:
        return len(self.indices())


@runtime_checkable
class EpochBatches(Protocol):
    """What :class:`TensorBatches` and :class:`TokenBatches` share: re-iterable batches of one epoch."""

    @property
    def epoch(self) -> int: ...

    def at_epoch(self, epoch: int) -> Any: ...

    def indices(self) -> list[Tensor]: ...

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]: ...

    def __len__(self) -> int: ...


class EpochBatchSampler(torch.utils.data.Sampler[list[int]]):
    """A ``batch_sampler`` for ``torch.utils.data.DataLoader`` that yields the index lists of ``batches``.

    ``DataLoader(batches.items, batch_sampler=EpochBatchSampler(batches))``
    yields the same ``(inputs, targets)`` as iterating ``batches`` (the
    default collation stacks the items). Like PyTorch's
    ``DistributedSampler`` it is told the epoch with :meth:`set_epoch`
    (the one stateful object here, by that convention); it starts at
    ``batches.epoch``.
    """

    def __init__(self, batches: TensorBatches | TokenBatches) -> None:
        if not isinstance(batches, (TensorBatches, TokenBatches)):
            raise InvalidTypeError(f"batches must be a TensorBatches or TokenBatches; got {describe(batches)}")
        self.batches = batches

    @property
    def epoch(self) -> int:
        """The epoch whose batches the sampler yields."""
        return self.batches.epoch

    def set_epoch(self, epoch: int) -> None:
        """Yield epoch ``epoch``'s batches from now on."""
        self.batches = self.batches.at_epoch(check_int("epoch", epoch, minimum=0))

    def __iter__(self) -> Iterator[list[int]]:
        for idx in self.batches.indices():
            yield idx.tolist()

    def __len__(self) -> int:
        return len(self.batches)


B = TypeVar("B")


def for_epoch(source: B, epoch: int) -> B:
    """``source``'s batches for epoch ``epoch``: what a training loop calls once per epoch.

    * esper_func's batches (anything with ``at_epoch``): ``source.at_epoch(epoch)``,
      a new value; ``source`` is unchanged.
    * a ``DataLoader`` whose ``batch_sampler`` or ``sampler`` has ``set_epoch``
      (an :class:`EpochBatchSampler`, a ``DistributedSampler``), or any source
      with ``set_epoch``: calls it (PyTorch's convention) and returns ``source``.
    * anything else (a list of batches, a plain DataLoader): ``source``, whose
      batches are whatever it yields.

    Raises:
        InvalidArgumentError: a ``DataLoader`` over esper_func batches, which is
            fixed to one epoch: build ``DataLoader(batches.at_epoch(epoch), batch_size=None, ...)``
            each epoch, or use :class:`EpochBatchSampler`.
    """
    epoch = check_int("epoch", epoch, minimum=0)
    if isinstance(source, EpochBatches):
        return source.at_epoch(epoch)
    for holder in (source, getattr(source, "batch_sampler", None), getattr(source, "sampler", None)):
        set_epoch = getattr(holder, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
            return source
    if isinstance(getattr(source, "dataset", None), EpochBatches):
        raise InvalidArgumentError(
            "this DataLoader wraps esper_func batches fixed to one epoch; build one per epoch, "
            "DataLoader(batches.at_epoch(epoch), batch_size=None, ...), or use "
            "DataLoader(batches.items, batch_sampler=EpochBatchSampler(batches)) and for_epoch(loader, epoch)"
        )
    return source
