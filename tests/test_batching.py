"""Next-token windows and re-iterable epoch batches: shards, coverage, determinism, DataLoader interop, bad input."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor
from torch.utils.data import DataLoader

import esper_func as ef
from esper_func.data import IGNORE_INDEX, PAD_TOKEN

EMPTY = torch.zeros(0, dtype=torch.int64)


def same(a: Iterable[tuple[Tensor, Tensor]], b: Iterable[tuple[Tensor, Tensor]]) -> bool:
    return all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b, strict=True))


def tokens_of(n: int, seed: int = 0) -> Tensor:
    return torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


# --------------------------------------------------------------------------- window properties


@given(
    n=st.integers(2, 400),
    block_size=st.integers(1, 40),
    batch_size=st.integers(1, 6),
    world_size=st.integers(1, 4),
    drop_last=st.booleans(),
)
def test_validation_windows_cover_the_text_exactly_once(n: int, block_size: int, batch_size: int, world_size: int, drop_last: bool) -> None:
    tokens = tokens_of(n)
    shards = [
        list(ef.data.token_batches(tokens, batch_size, block_size, shuffle=False, drop_last=drop_last, rank=r, world_size=world_size))
        for r in range(world_size)
    ]
    starts = [ef.data.window_starts(n, block_size, batch_size, shuffle=False, drop_last=drop_last, rank=r, world_size=world_size) for r in range(world_size)]
    flat = [torch.cat(s or [EMPTY]) for s in starts]
    # shards are disjoint and interleave into the ordered windows
    order = torch.empty(sum(f.numel() for f in flat), dtype=torch.int64)
    for r, f in enumerate(flat):
        order[r::world_size] = f
    assert torch.equal(order, torch.arange(0, order.numel() * block_size, block_size))
    if drop_last:
        assert len({len(s) for s in starts}) == 1  # same number of steps on every rank
        assert all(x.shape == (batch_size, block_size) for shard in shards for x, _ in shard)
        assert all(bool((y != IGNORE_INDEX).all()) for shard in shards for _, y in shard)
        return
    # every token but the first is a target exactly once; every token but the last an input once
    windows = {int(s): (x, y) for shard, st_ in zip(shards, starts, strict=True) for (xb, yb), sb in zip(shard, st_, strict=True) for s, x, y in zip(sb, xb, yb, strict=True)}
    targets = torch.cat([windows[s][1] for s in sorted(windows)])
    inputs = torch.cat([windows[s][0] for s in sorted(windows)])
    valid = targets != IGNORE_INDEX
    assert torch.equal(targets[valid], tokens[1:].long())
    assert torch.equal(inputs[valid], tokens[:-1].long())
    if (~valid).any():  # the padded window: the last token (nothing to predict), then padding
        assert int(inputs[~valid][0]) == int(tokens[-1]) and bool((inputs[~valid][1:] == PAD_TOKEN).all())
    assert int((~valid).sum()) < block_size  # only the last window is padded


@given(
    n=st.integers(2, 300),
    block_size=st.integers(1, 30),
    batch_size=st.integers(1, 5),
    world_size=st.integers(1, 4),
    epoch=st.integers(0, 3),
    steps=st.one_of(st.none(), st.integers(1, 6)),
    drop_last=st.booleans(),
)
def test_training_windows_are_full_disjoint_shards(
    n: int, block_size: int, batch_size: int, world_size: int, epoch: int, steps: int | None, drop_last: bool
) -> None:
    if n <= block_size:
        with pytest.raises(ef.InvalidArgumentError, match="block_size"):
            ef.data.window_starts(n, block_size, batch_size, shuffle=True, seed=1, epoch=epoch, steps=steps)
        return
    kw = {"shuffle": True, "seed": 1, "epoch": epoch, "steps": steps, "drop_last": drop_last, "world_size": world_size}
    shards = [ef.data.window_starts(n, block_size, batch_size, rank=r, **kw) for r in range(world_size)]  # type: ignore[arg-type]
    flat = [torch.cat(s or [EMPTY]) for s in shards]
    everything = torch.cat(flat)
    assert bool(((everything >= 0) & (everything + block_size < n)).all())  # full windows only
    if steps is not None:
        assert all(len(s) == steps and all(b.numel() == batch_size for b in s) for s in shards)
    elif drop_last:
        assert len({len(s) for s in shards}) == 1 and all(b.numel() == batch_size for s in shards for b in s)
    if steps is None:
        # one pass: one phase, no window twice, windows never overlap, and every rank's shard is its own
        assert len(set(everything.tolist())) == everything.numel()
        assert len(set((everything % block_size).tolist())) <= 1
        if not drop_last:
            phase = int(everything.min())
            assert everything.numel() == (n - 1 - phase) // block_size
    # batches: targets are the inputs shifted by one, plus the next token
    tokens = tokens_of(n, seed=3)
    for r, starts in enumerate(shards):
        got = list(ef.data.token_batches(tokens, batch_size, block_size, rank=r, **kw))  # type: ignore[arg-type]
        assert len(got) == len(starts)
        for (x, y), s in zip(got, starts, strict=True):
            assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (s.numel(), block_size)
            assert torch.equal(y[:, :-1], x[:, 1:])
            assert torch.equal(y[:, -1], tokens[s + block_size].long())
            assert torch.equal(x[:, 0], tokens[s].long())


def test_training_windows_are_deterministic_per_seed_and_epoch_and_leave_the_global_rng() -> None:
    tokens = tokens_of(5000)
    rng = torch.get_rng_state()
    torch.manual_seed(0)
    a = list(ef.data.token_batches(tokens, 8, 32, shuffle=True, seed=4, epoch=1, steps=5))
    torch.manual_seed(123)
    b = list(ef.data.token_batches(tokens, 8, 32, shuffle=True, seed=4, epoch=1, steps=5))
    torch.set_rng_state(rng)
    before = torch.get_rng_state()
    c = list(ef.data.token_batches(tokens, 8, 32, shuffle=True, seed=4, epoch=2, steps=5))
    d = list(ef.data.token_batches(tokens, 8, 32, shuffle=True, seed=5, epoch=1, steps=5))
    assert torch.equal(torch.get_rng_state(), before)
    assert same(a, b) and not same(a, c) and not same(a, d)
    # more steps than one pass holds: passes are chained, each pass without repeats
    starts = torch.cat(ef.data.window_starts(200, 10, 4, shuffle=True, seed=0, epoch=0, steps=12))
    assert starts.numel() == 48 and len(set(starts.tolist())) < 48
    first_pass = torch.cat(ef.data.window_starts(200, 10, 4, shuffle=True, seed=0, epoch=0))
    assert torch.equal(starts[: first_pass.numel()], first_pass)


# --------------------------------------------------------------------------- re-iterable values


def test_token_batches_from_the_corpus_are_reiterable_values() -> None:
    corpus = ef.data.load_stdlib_text()
    train = corpus.train_batches(16, 64, seed=0, steps=4)
    assert len(train) == 4 and train.epoch == 0 and isinstance(train, ef.data.EpochBatches)
    first, again = list(train), list(train)
    assert same(first, again)
    later = train.at_epoch(3)
    assert train.epoch == 0 and later.epoch == 3 and not same(first, later)
    assert same(later, ef.data.token_batches(corpus.train, 16, 64, shuffle=True, seed=0, epoch=3, steps=4, drop_last=True))
    assert ef.data.for_epoch(train, 3).epoch == 3
    # the whole held-out text, in order, as targets
    val = corpus.val_batches(256, 128)
    targets = torch.cat([y.flatten() for _, y in val])
    assert torch.equal(targets[targets != IGNORE_INDEX], corpus.val[1:].long())
    windows = -(-(corpus.val.numel() - 1) // 128)
    assert len(val) == -(-windows // 256)
    quick = corpus.val_batches(8, 128, steps=2)
    assert same(quick, list(ef.data.TokenBatches(corpus.val, 8, 128))[:2])
    # a full pass over the training text per epoch, sharded
    shard = [corpus.train_batches(64, 256, seed=1, rank=r, world_size=2) for r in range(2)]
    assert len(shard[0]) == len(shard[1]) > 0
    seen = torch.cat([torch.cat(s.indices()) for s in shard])
    assert len(set(seen.tolist())) == seen.numel()


def test_image_datasets_give_the_same_batches_as_before() -> None:
    ds = ef.data.synthetic_images(100, seed=0)
    train = ds.train_batches(16, seed=2, epoch=5)
    assert same(train, ef.data.batches(ds, 16, shuffle=True, seed=2, epoch=5))
    assert same(train, train) and len(train) == 5
    assert same(train.at_epoch(6), ef.data.batches(ds, 16, shuffle=True, seed=2, epoch=6))
    val = [ds.val_batches(7, rank=r, world_size=3) for r in range(3)]
    labels = torch.cat([y for shard in val for _, y in shard])
    assert sorted(labels.tolist()) == sorted(ds.y_val.tolist()) and labels.numel() == ds.y_val.numel()
    dp = [ds.train_batches(16, seed=2, drop_last=True, rank=r, world_size=2) for r in range(2)]
    assert len(dp[0]) == len(dp[1]) == 2


# --------------------------------------------------------------------------- DataLoader


def test_dataloader_wraps_the_batches_in_order_with_workers() -> None:
    corpus = ef.data.load_stdlib_text()
    val = corpus.val_batches(32, 64, steps=5)
    assert same(DataLoader(val, batch_size=None), val)
    assert same(DataLoader(val, batch_size=None, num_workers=2), val)
    images = ef.data.synthetic_images(80, seed=0).train_batches(8, seed=0, epoch=1)
    assert same(DataLoader(images, batch_size=None, num_workers=2), images)


def test_dataloader_with_the_epoch_sampler_replaces_the_batches() -> None:
    corpus = ef.data.load_stdlib_text()
    train = corpus.train_batches(8, 32, seed=0, steps=3)
    sampler = ef.data.EpochBatchSampler(train)
    loader = DataLoader(train.items, batch_sampler=sampler)
    assert len(loader) == 3 and same(loader, train)
    assert ef.data.for_epoch(loader, 4) is loader and sampler.epoch == 4
    assert same(loader, train.at_epoch(4))
    val = corpus.val_batches(64, 128, steps=3)
    assert same(DataLoader(val.items, batch_sampler=ef.data.EpochBatchSampler(val)), val)
    assert val.items[0][0].shape == (128,)
    images = ef.data.synthetic_images(60, seed=1).train_batches(8, seed=0)
    loader = DataLoader(images.items, batch_sampler=ef.data.EpochBatchSampler(images))
    ef.data.for_epoch(loader, 2)
    assert same(loader, images.at_epoch(2))


def test_for_epoch_on_other_sources() -> None:
    plain = [(torch.zeros(2, 3), torch.zeros(2, dtype=torch.int64))]
    assert ef.data.for_epoch(plain, 5) is plain
    wrapped = DataLoader(ef.data.synthetic_images(20, seed=0).val_batches(4), batch_size=None)
    with pytest.raises(ef.InvalidArgumentError, match=r"at_epoch\(epoch\)"):
        ef.data.for_epoch(wrapped, 1)

    class WithSetEpoch(list[int]):
        epoch = -1

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

    source = WithSetEpoch()
    assert ef.data.for_epoch(source, 2) is source and source.epoch == 2


# --------------------------------------------------------------------------- bad input

TOK = tokens_of(100)
X, Y = torch.zeros(10, 1, 2, 2), torch.zeros(10, dtype=torch.int64)

BAD: list[tuple[Callable[[], object], type[Exception], str]] = [
    (lambda: ef.data.window_starts(100, 0, 4, shuffle=False), ef.InvalidArgumentError, "block_size must be >= 1"),
    (lambda: ef.data.window_starts(100, 8, 4, shuffle=True), ef.InvalidArgumentError, "needs seed= and epoch="),
    (lambda: ef.data.window_starts(100, 8, 4, shuffle=True, seed=0, epoch=-1), ef.InvalidArgumentError, "epoch must be >= 0"),
    (lambda: ef.data.window_starts(100, 8, 4, shuffle=False, rank=2, world_size=2), ef.InvalidArgumentError, r"rank must be in \[0, world_size=2\)"),
    (lambda: ef.data.window_starts(100, 8, 4, shuffle=False, steps=0), ef.InvalidArgumentError, "steps must be >= 1"),
    (lambda: ef.data.window_starts(100, 8, 4, shuffle=1), ef.InvalidTypeError, "shuffle must be True or False"),
    (lambda: ef.data.window_starts(8, 8, 4, shuffle=True, seed=0, epoch=0), ef.InvalidArgumentError, "needs block_size \\+ 1 = 9 tokens"),
    (lambda: ef.data.window_starts(100, 8.0, 4, shuffle=False), ef.InvalidTypeError, "block_size must be an int"),
    (lambda: next(ef.data.token_batches(TOK.float(), 4, 8, shuffle=False)), ef.DTypeError, "integer tokens"),
    (lambda: next(ef.data.token_batches(TOK.reshape(10, 10), 4, 8, shuffle=False)), ef.ShapeError, "1-D token sequence"),
    (lambda: next(ef.data.token_batches([1, 2, 3], 4, 8, shuffle=False)), ef.InvalidTypeError, "tensor of integer tokens"),
    (lambda: next(ef.data.token_batches(torch.tensor([1, -2, 3]), 1, 1, shuffle=False)), ef.InvalidArgumentError, "non-negative"),
    (lambda: ef.data.TokenBatches(TOK, 4, 8, shuffle=True), ef.InvalidArgumentError, "needs seed= and epoch="),
    (lambda: ef.data.TokenBatches(TOK, 4, 8, seed=-1), ef.InvalidArgumentError, "seed must be >= 0"),
    (lambda: ef.data.TokenBatches(TOK, 0, 8), ef.InvalidArgumentError, "batch_size must be >= 1"),
    (lambda: ef.data.TensorBatches(X, Y[:5], 4), ef.ShapeError, "same first dimension"),
    (lambda: ef.data.TensorBatches(X, [0] * 10, 4), ef.InvalidTypeError, "y must be a tensor"),
    (lambda: ef.data.TensorBatches(X, Y, 4, world_size=0), ef.InvalidArgumentError, "world_size must be >= 1"),
    (lambda: ef.data.TensorBatches(X, Y, 4).at_epoch(-1), ef.InvalidArgumentError, "epoch must be >= 0"),
    (lambda: ef.data.TokenWindows(TOK, 8)[99], ef.InvalidArgumentError, "start must be <= 98"),
    (lambda: ef.data.EpochBatchSampler([1, 2]), ef.InvalidTypeError, "TensorBatches or TokenBatches"),
    (lambda: ef.data.for_epoch([], 1.5), ef.InvalidTypeError, "epoch must be an int"),
    (lambda: ef.data.batch_indices(10, 2, shuffle=True, seed=None, epoch=0), ef.InvalidArgumentError, "needs seed= and epoch="),
    (lambda: ef.data.batch_indices(-1, 2, shuffle=False), ef.InvalidArgumentError, "n must be >= 0"),
    (lambda: list(ef.data.batches("xy", 2, shuffle=False)), ef.InvalidTypeError, "data must be a Dataset"),
    (lambda: list(ef.data.batches(ef.data.synthetic_images(20), 2, shuffle=False, split="test")), ef.InvalidArgumentError, "split must be one of"),
    (lambda: ef.data.synthetic_images(10, noise=float("nan")), ef.InvalidArgumentError, "noise must be a number"),
    (lambda: ef.data.stratified_split(Y, val_fraction=1.0, seed=0), ef.InvalidArgumentError, r"val_fraction must be in \[0, 1\)"),
    (lambda: ef.data.load_digits(seed=-1), ef.InvalidArgumentError, "seed must be >= 0"),
    (lambda: ef.data.epoch_generator(0, True), ef.InvalidTypeError, "epoch must be an int"),
]


@pytest.mark.parametrize(("call", "error", "message"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_arguments_raise_esper_func_errors(call: Callable[[], object], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message) as info:
        call()
    assert isinstance(info.value, ef.EsperFuncError)
