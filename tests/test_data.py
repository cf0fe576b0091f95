"""Datasets and deterministic batching."""

from __future__ import annotations

import sys
from pathlib import Path

import optree
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from esper_func import data
from esper_func.errors import EsperFuncError, ShapeError


@pytest.fixture(scope="module")
def digits() -> data.Dataset:
    pytest.importorskip("sklearn", reason="load_digits needs scikit-learn (the 'demo' extra)")
    return data.load_digits(seed=0)


# --------------------------------------------------------------------------- digits


def test_digits_shapes_and_dtypes(digits: data.Dataset) -> None:
    assert digits.name == "digits" and digits.num_classes == 10
    assert digits.x_train.shape[1:] == (1, 8, 8) and digits.image_shape == (1, 8, 8)
    assert digits.x_train.dtype == torch.float32 and digits.y_train.dtype == torch.int64
    assert digits.x_train.shape[0] + digits.x_val.shape[0] == 1797
    assert digits.x_val.shape[0] == pytest.approx(0.2 * 1797, abs=10)
    assert set(digits.y_train.tolist()) == set(range(10)) == set(digits.y_val.tolist())
    x, y = digits.val
    assert x is digits.x_val and y is digits.y_val


def test_digits_normalisation(digits: data.Dataset) -> None:
    from sklearn.datasets import load_digits

    assert abs(float(digits.x_train.mean())) < 1e-5
    assert float(digits.x_train.std()) == pytest.approx(1.0, abs=1e-5)
    # val uses the train constants: recover them and check against the raw pixels
    raw = torch.as_tensor(load_digits().images, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16
    train_idx, val_idx = data.stratified_split(torch.as_tensor(load_digits().target), val_fraction=0.2, seed=0)
    mean, std = raw[train_idx].mean(), raw[train_idx].std()
    torch.testing.assert_close(digits.x_val, (raw[val_idx] - mean) / std)
    torch.testing.assert_close(digits.x_train, (raw[train_idx] - mean) / std)


def test_digits_split_reproducible_stratified_disjoint(digits: data.Dataset) -> None:
    again = data.load_digits(seed=0)
    assert torch.equal(again.x_train, digits.x_train) and torch.equal(again.y_val, digits.y_val)
    other = data.load_digits(seed=1)
    assert not torch.equal(other.y_val, digits.y_val) or not torch.equal(other.x_val, digits.x_val)
    from sklearn.datasets import load_digits

    labels = torch.as_tensor(load_digits().target)
    train, val = data.stratified_split(labels, val_fraction=0.2, seed=0)
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(1797))
    counts, val_counts = torch.bincount(labels), torch.bincount(labels[val])
    assert torch.all((val_counts - 0.2 * counts).abs() <= 0.5)
    smaller = data.load_digits(seed=0, val_fraction=0.1)
    assert smaller.x_val.shape[0] < digits.x_val.shape[0]


DIGITS_SHA256 = "a9bcc3a0341f2534702ddfda8e3fef7ad8b24e5b4245d5bac503ada09a377ff3"  # seed 0, val_fraction 0.2


def test_digits_identity_record(digits: data.Dataset) -> None:
    import hashlib

    import numpy as np
    from sklearn.datasets import load_digits

    info = digits.info
    assert info is not None
    record = info.to_dict()
    assert record["name"] == "digits" and record["samples"] == 1797 and record["sha256"] == DIGITS_SHA256
    assert record["splits"] == {"train": digits.y_train.numel(), "val": digits.y_val.numel()}
    assert record["seed"] == 0 and record["val_fraction"] == 0.2 and record["source"].startswith("scikit-learn ")
    # the documented recipe: pixels (uint8), labels (uint8), one uint8 per sample (1 = validation)
    bunch = load_digits()
    _, val = data.stratified_split(torch.as_tensor(bunch.target), val_fraction=0.2, seed=0)
    is_val = np.zeros(1797, dtype=np.uint8)
    is_val[val.numpy()] = 1
    digest = hashlib.sha256(bunch.images.astype(np.uint8).tobytes() + bunch.target.astype(np.uint8).tobytes() + is_val.tobytes())
    assert digest.hexdigest() == DIGITS_SHA256
    assert data.load_digits(seed=1).info.sha256 != DIGITS_SHA256  # type: ignore[union-attr]


def test_digits_without_scikit_learn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'esper-func\[demo\]'") as info:
        data.load_digits()
    assert isinstance(info.value, data.MissingDependencyError)


# --------------------------------------------------------------------------- synthetic


def test_synthetic_reproducible_and_learnable() -> None:
    ds = data.synthetic_images(400, classes=4, seed=3)
    again = data.synthetic_images(400, classes=4, seed=3)
    assert torch.equal(ds.x_train, again.x_train) and torch.equal(ds.y_val, again.y_val)
    assert not torch.equal(data.synthetic_images(400, classes=4, seed=4).x_train, ds.x_train)
    assert ds.x_train.shape == (320, 1, 8, 8) and ds.x_val.shape == (80, 1, 8, 8)
    assert torch.bincount(ds.y_train).tolist() == [80] * 4
    # class means differ, and a nearest-class-mean classifier fit on train does well on val
    means = torch.stack([ds.x_train[ds.y_train == c].mean(0) for c in range(4)]).flatten(1)
    assert torch.cdist(means, means).add(torch.eye(4) * 1e9).min() > 1.0
    pred = torch.cdist(ds.x_val.flatten(1), means).argmin(1)
    assert (pred == ds.y_val).float().mean() > 0.9


def test_synthetic_options() -> None:
    ds = data.synthetic_images(30, classes=3, size=16, channels=3, seed=0, val_fraction=0.0)
    assert ds.x_train.shape == (30, 3, 16, 16) and ds.x_val.shape == (0, 3, 16, 16) and ds.num_classes == 3
    with pytest.raises(ValueError):
        data.synthetic_images(2, classes=4)
    with pytest.raises(ValueError):
        data.synthetic_images(10, val_fraction=1.0)


def test_dataset_is_a_checked_pytree() -> None:
    ds = data.synthetic_images(40, seed=0)
    shapes = optree.tree_map(lambda t: tuple(t.shape), ds, namespace="esper_func")
    assert shapes.x_train == (32, 1, 8, 8) and shapes.num_classes == 4
    doubled = optree.tree_map(lambda t: t.double() if t.is_floating_point() else t, ds, namespace="esper_func")
    assert doubled.x_train.dtype == torch.float64 and doubled.name == "synthetic"
    with pytest.raises(ShapeError):
        data.Dataset(ds.x_train, ds.y_val, ds.x_val, ds.y_val, num_classes=4, name="bad")
    with pytest.raises(TypeError, match="int64") as info:
        data.Dataset(ds.x_train, ds.y_train.int(), ds.x_val, ds.y_val, num_classes=4, name="bad")
    assert isinstance(info.value, EsperFuncError)
    assert ds.info is not None and shapes.info == ds.info  # the identity record is static
    again = data.synthetic_images(40, seed=0)
    assert again.info == ds.info and data.synthetic_images(40, seed=1).info != ds.info
    assert ds.info.to_dict()["samples"] == 40 and data.Dataset(*ds.train, *ds.val, num_classes=4, name="hand-made").info is None


# --------------------------------------------------------------------------- batching


def test_batches_cover_every_index_once_and_are_reproducible() -> None:
    rng_before = torch.get_rng_state()
    order = torch.cat(data.batch_indices(103, 10, shuffle=True, seed=5, epoch=2))
    assert sorted(order.tolist()) == list(range(103))
    assert torch.equal(order, torch.cat(data.batch_indices(103, 10, shuffle=True, seed=5, epoch=2)))
    assert not torch.equal(order, torch.cat(data.batch_indices(103, 10, shuffle=True, seed=5, epoch=3)))
    assert not torch.equal(order, torch.cat(data.batch_indices(103, 10, shuffle=True, seed=6, epoch=2)))
    assert torch.equal(torch.cat(data.batch_indices(7, 3, shuffle=False)), torch.arange(7))
    assert [b.numel() for b in data.batch_indices(103, 10, shuffle=True, seed=5, epoch=2)] == [10] * 10 + [3]
    assert [b.numel() for b in data.batch_indices(103, 10, shuffle=True, seed=5, epoch=2, drop_last=True)] == [10] * 10
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_batches_do_not_depend_on_global_rng() -> None:
    torch.manual_seed(0)
    a = data.batch_indices(50, 8, shuffle=True, seed=1, epoch=0)
    torch.manual_seed(123)
    b = data.batch_indices(50, 8, shuffle=True, seed=1, epoch=0)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@given(
    n=st.integers(0, 60),
    batch_size=st.integers(1, 9),
    world_size=st.integers(1, 5),
    epoch=st.integers(0, 3),
    drop_last=st.booleans(),
)
def test_shards_are_disjoint_and_cover(n: int, batch_size: int, world_size: int, epoch: int, drop_last: bool) -> None:
    shards = [
        torch.cat(data.batch_indices(n, batch_size, shuffle=True, seed=0, epoch=epoch, drop_last=drop_last, rank=r, world_size=world_size) or [torch.zeros(0, dtype=torch.int64)])
        for r in range(world_size)
    ]
    seen = [i for s in shards for i in s.tolist()]
    assert len(seen) == len(set(seen))  # disjoint
    if drop_last:
        per_rank = [len(data.batch_indices(n, batch_size, shuffle=True, seed=0, epoch=epoch, drop_last=True, rank=r, world_size=world_size)) for r in range(world_size)]
        assert len(set(per_rank)) == 1  # same number of steps on every rank
        assert len(seen) == (n // (batch_size * world_size)) * batch_size * world_size
    else:
        assert sorted(seen) == list(range(n))  # covering
    # the union of shards is the epoch's permutation, interleaved
    full = torch.cat(data.batch_indices(n, n or 1, shuffle=True, seed=0, epoch=epoch) or [torch.zeros(0, dtype=torch.int64)])
    if not drop_last:
        for r, s in enumerate(shards):
            assert torch.equal(s, full[r::world_size])


def test_batches_yield_aligned_tensors() -> None:
    x = torch.arange(20).float().reshape(20, 1, 1, 1)
    y = torch.arange(20)
    ds = data.Dataset(x, y, x[:5], y[:5], num_classes=20, name="toy")
    got = list(data.batches(ds, 6, shuffle=True, seed=0, epoch=1))
    assert [b[0].shape[0] for b in got] == [6, 6, 6, 2]
    for xb, yb in got:
        assert torch.equal(xb.flatten().long(), yb)
    idx = data.batch_indices(20, 6, shuffle=True, seed=0, epoch=1)
    assert all(torch.equal(yb, i) for (_, yb), i in zip(got, idx, strict=True))
    val = list(data.batches(ds, 4, shuffle=False, split="val"))
    assert torch.equal(torch.cat([b[1] for b in val]), y[:5])
    (single,) = next(data.batches(y, 5, shuffle=False))
    assert torch.equal(single, y[:5])
    with pytest.raises(ValueError, match="seed= and epoch="):
        next(data.batches(ds, 4, shuffle=True))
    with pytest.raises(ValueError, match="rank"):
        data.batch_indices(10, 2, shuffle=False, rank=2, world_size=2)
    with pytest.raises(ShapeError):
        next(data.batches((x, y[:3]), 2, shuffle=False))


# --------------------------------------------------------------------------- CIFAR-10 (binary release)


def _write_cifar(root: Path, per_file: int) -> None:
    g = torch.Generator().manual_seed(0)
    root.mkdir(parents=True)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = torch.randint(0, 10, (per_file, 1), generator=g, dtype=torch.uint8)
        pixels = torch.randint(0, 256, (per_file, 3072), generator=g, dtype=torch.uint8)
        (root / name).write_bytes(torch.cat([labels, pixels], 1).numpy().tobytes())


def test_load_cifar10_binary(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "cifar-10-batches-bin", per_file=4)
    ds = data.load_cifar10(tmp_path)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_val.shape == (4, 3, 32, 32)
    assert ds.y_train.dtype == torch.int64 and int(ds.y_train.max()) < 10
    torch.testing.assert_close(ds.x_train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    raw = (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").read_bytes()
    assert ds.y_val[0] == raw[0]
    assert ds.info is not None and ds.info.to_dict()["samples"] == 24 and len(ds.info.sha256) == 64


def test_load_cifar10_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="never downloads"):
        data.load_cifar10(tmp_path)
