"""Small built-in datasets and deterministic, shardable batch iteration.

* :func:`load_digits` — scikit-learn's bundled 8x8 handwritten digits (no
  download; needs ``pip install 'esper-func[demo]'``).
* :func:`synthetic_images` — a tiny learnable dataset for fast tests.
* :func:`load_cifar10` — CIFAR-10 from a local copy of the *binary* release
  (``cifar-10-batches-bin``), read with plain byte parsing: never downloads,
  never unpickles.
* :func:`batch_indices` / :func:`batches` — the order of epoch ``e`` for
  seed ``s`` is a pure function of ``(s, e)`` (a local ``torch.Generator``;
  torch's global RNG is never touched), so a resumed run sees exactly the
  same batches, and ``rank``/``world_size`` split each epoch's permutation
  into disjoint shards for data-parallel training.

Every split is made with a local generator too: the same ``seed`` gives the
same split on every machine and every run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal, overload

import torch
from torch import Tensor

from esper_func._pytree import pytree_dataclass, static_field
from esper_func.errors import MissingDependencyError, ShapeError

__all__ = [
    "Dataset",
    "MissingDependencyError",
    "batch_indices",
    "batches",
    "epoch_generator",
    "load_cifar10",
    "load_digits",
    "stratified_split",
    "synthetic_images",
]


@pytree_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """An image classification dataset split into train and validation tensors.

    A frozen pytree: ``tree_map`` over it (e.g. ``.to(device)``) maps the
    four tensors; ``num_classes`` and ``name`` are static. Shapes and label
    dtypes are checked when all four fields are tensors.

    Attributes:
        x_train, x_val: images ``[N, C, H, W]``, ``float32``.
        y_train, y_val: labels ``[N]``, ``int64`` in ``[0, num_classes)``.
        num_classes: number of classes.
        name: a short identifier (``"digits"``, ``"synthetic"``, ``"cifar10"``).
    """

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    num_classes: int = static_field()
    name: str = static_field()

    def __post_init__(self) -> None:
        fields = (self.x_train, self.y_train, self.x_val, self.y_val)
        if not all(isinstance(t, Tensor) for t in fields):
            return  # a tree transformation with non-tensor leaves (e.g. tree_map(lambda t: t.shape, ds))
        for split in ("train", "val"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.ndim != 4 or y.ndim != 1 or x.shape[0] != y.shape[0]:
                raise ShapeError(
                    f"{split} split must be images [N, C, H, W] and labels [N]; got {tuple(x.shape)} and {tuple(y.shape)}"
                )
            if y.dtype != torch.int64:
                raise TypeError(f"y_{split} must be int64; got {y.dtype}")
        if self.x_train.shape[1:] != self.x_val.shape[1:]:
            raise ShapeError(f"train and val images differ in shape: {tuple(self.x_train.shape[1:])} vs {tuple(self.x_val.shape[1:])}")

    @property
    def train(self) -> tuple[Tensor, Tensor]:
        """``(x_train, y_train)``."""
        return self.x_train, self.y_train

    @property
    def val(self) -> tuple[Tensor, Tensor]:
        """``(x_val, y_val)``."""
        return self.x_val, self.y_val

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)


# --------------------------------------------------------------------------- determinism helpers


def _seed_of(*parts: int) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (stable across runs and machines)."""
    digest = hashlib.sha256(b"esper_func.data:" + ",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _check_int(name: str, value: object, *, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}; got {value!r}")
    return value


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A new CPU ``torch.Generator`` seeded from ``(seed, epoch)`` alone."""
    return torch.Generator().manual_seed(_seed_of(0, _check_int("seed", seed), _check_int("epoch", epoch)))


def stratified_split(labels: Tensor, *, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """``(train_idx, val_idx)``: per class, ``round(val_fraction * n_class)`` indices go to validation.

    Deterministic in ``seed``; both index tensors are sorted, disjoint and together cover ``range(len(labels))``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction!r}")
    g = torch.Generator().manual_seed(_seed_of(1, _check_int("seed", seed)))
    val_parts = []
    for cls in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == cls).flatten()
        perm = idx[torch.randperm(idx.numel(), generator=g)]
        val_parts.append(perm[: round(val_fraction * idx.numel())])
    val = torch.sort(torch.cat(val_parts)).values if val_parts else torch.zeros(0, dtype=torch.int64)
    is_val = torch.zeros(labels.shape[0], dtype=torch.bool)
    is_val[val] = True
    return torch.nonzero(~is_val).flatten(), val


def _standardise(x_train: Tensor, x_val: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel standardisation with the *train* split's statistics."""
    dims = (0, 2, 3)
    mean = x_train.mean(dim=dims, keepdim=True)
    std = x_train.std(dim=dims, keepdim=True).clamp_min(1e-8)
    return (x_train - mean) / std, (x_val - mean) / std


# --------------------------------------------------------------------------- datasets


def load_digits(*, seed: int = 0, val_fraction: float = 0.2) -> Dataset:
    """scikit-learn's handwritten digits (1797 images, 10 classes), split and normalised.

    Images are ``[N, 1, 8, 8]`` ``float32``: pixel values (0..16) divided by
    16, then standardised with the train split's mean and standard deviation
    (so the train images have mean 0 and std 1; validation uses the same
    constants). Labels are ``int64``. The split is stratified by class:
    per class, ``round(val_fraction * n_class)`` images (chosen by ``seed``)
    go to validation.

    Raises:
        MissingDependencyError: scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:
        raise MissingDependencyError(
            "load_digits needs scikit-learn, which is not installed: pip install 'esper-func[demo]'"
        ) from exc
    bunch = sk_load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    train, val = stratified_split(y, val_fraction=val_fraction, seed=seed)
    x_train, x_val = _standardise(x[train], x[val])
    return Dataset(x_train, y[train], x_val, y[val], num_classes=10, name="digits")


def synthetic_images(
    n: int,
    *,
    classes: int = 4,
    size: int = 8,
    channels: int = 1,
    seed: int = 0,
    noise: float = 0.5,
    val_fraction: float = 0.2,
) -> Dataset:
    """A small learnable image dataset: one fixed random pattern per class plus Gaussian noise.

    Each class has a smooth prototype (unit-variance random pattern,
    upsampled from a quarter-resolution grid) drawn from ``seed``; an image
    is its class's prototype plus ``noise`` times standard normal noise.
    Labels are balanced (``i % classes``, shuffled), split stratified into
    train/val. Everything is a pure function of the arguments.
    """
    n = _check_int("n", n, low=1)
    classes = _check_int("classes", classes, low=2)
    size = _check_int("size", size, low=1)
    channels = _check_int("channels", channels, low=1)
    if n < classes:
        raise ValueError(f"n ({n}) must be at least classes ({classes})")
    g = torch.Generator().manual_seed(_seed_of(2, _check_int("seed", seed)))
    coarse = max(1, size // 4)
    protos = torch.randn(classes, channels, coarse, coarse, generator=g)
    protos = torch.nn.functional.interpolate(protos, size=(size, size), mode="bilinear", align_corners=False)
    protos = (protos - protos.mean(dim=(1, 2, 3), keepdim=True)) / protos.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    y = (torch.arange(n) % classes)[torch.randperm(n, generator=g)]
    x = protos[y] + float(noise) * torch.randn(n, channels, size, size, generator=g)
    train, val = stratified_split(y, val_fraction=val_fraction, seed=seed)
    return Dataset(x[train], y[train], x[val], y[val], num_classes=classes, name="synthetic")


_CIFAR_RECORD = 1 + 3 * 32 * 32


def _read_cifar_bin(paths: Sequence[Path]) -> tuple[Tensor, Tensor]:
    chunks = []
    for path in paths:
        raw = path.read_bytes()
        if len(raw) % _CIFAR_RECORD:
            raise ValueError(f"{path} is not a CIFAR-10 binary batch: {len(raw)} bytes is not a multiple of {_CIFAR_RECORD}")
        chunks.append(torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(-1, _CIFAR_RECORD))
    records = torch.cat(chunks)
    y = records[:, 0].to(torch.int64)
    if y.numel() and int(y.max()) > 9:
        raise ValueError(f"CIFAR-10 labels must be 0..9; found {int(y.max())} in {[str(p) for p in paths]}")
    x = records[:, 1:].reshape(-1, 3, 32, 32).to(torch.float32) / 255.0
    return x, y


def load_cifar10(root: str | os.PathLike[str]) -> Dataset:
    """CIFAR-10 from a local copy of the binary release; never downloads, never unpickles.

    ``root`` is the ``cifar-10-batches-bin`` directory (or its parent)
    holding ``data_batch_1.bin`` ... ``data_batch_5.bin`` and
    ``test_batch.bin`` (from https://www.cs.toronto.edu/~kriz/cifar.html,
    "CIFAR-10 binary version"). Train = the five data batches, val = the
    test batch; images ``[N, 3, 32, 32]`` scaled to [0, 1] then standardised
    per channel with train statistics.

    Raises:
        FileNotFoundError: the files are not there (the message says what to download and where).
    """
    base = Path(root)
    if (base / "cifar-10-batches-bin").is_dir():
        base = base / "cifar-10-batches-bin"
    train_files = [base / f"data_batch_{i}.bin" for i in range(1, 6)]
    test_file = base / "test_batch.bin"
    missing = [p.name for p in (*train_files, test_file) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 binary files {missing} not found in {base}; esper_func never downloads data: fetch "
            f"'CIFAR-10 binary version' (cifar-10-binary.tar.gz) and extract it under {Path(root)}"
        )
    x_train, y_train = _read_cifar_bin(train_files)
    x_val, y_val = _read_cifar_bin([test_file])
    x_train, x_val = _standardise(x_train, x_val)
    return Dataset(x_train, y_train, x_val, y_val, num_classes=10, name="cifar10")


# --------------------------------------------------------------------------- batching


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
    n = _check_int("n", n)
    batch_size = _check_int("batch_size", batch_size, low=1)
    world_size = _check_int("world_size", world_size, low=1)
    rank = _check_int("rank", rank)
    if rank >= world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}); got {rank}")
    if shuffle:
        if seed is None or epoch is None:
            raise ValueError("shuffle=True needs seed= and epoch= (the order is a pure function of both)")
        order = torch.randperm(n, generator=epoch_generator(seed, epoch))
    else:
        order = torch.arange(n)
    if drop_last:
        order = order[: (n // (world_size * batch_size)) * world_size * batch_size]
    shard = order[rank::world_size]
    return list(torch.split(shard, batch_size))


@overload
def batches(
    data: Dataset | tuple[Tensor, Tensor],
    batch_size: int,
    *,
    shuffle: bool,
    seed: int | None = None,
    epoch: int | None = None,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
    split: Literal["train", "val"] = "train",
) -> Iterator[tuple[Tensor, Tensor]]: ...


@overload
def batches(
    data: Tensor | Sequence[Tensor],
    batch_size: int,
    *,
    shuffle: bool,
    seed: int | None = None,
    epoch: int | None = None,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
    split: Literal["train", "val"] = "train",
) -> Iterator[tuple[Tensor, ...]]: ...


def batches(
    data: Dataset | Tensor | Sequence[Tensor],
    batch_size: int,
    *,
    shuffle: bool,
    seed: int | None = None,
    epoch: int | None = None,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
    split: Literal["train", "val"] = "train",
) -> Iterator[tuple[Tensor, ...]]:
    """Iterate over one epoch's batches: tuples ``(x, y)`` (or one tensor per input tensor).

    ``data`` is a :class:`Dataset` (its ``split``: ``"train"`` or ``"val"``),
    a tensor, or a sequence of tensors with the same first dimension. The
    order, the sharding and ``drop_last`` are those of :func:`batch_indices`.
    """
    if isinstance(data, Dataset):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val'; got {split!r}")
        tensors: tuple[Tensor, ...] = data.train if split == "train" else data.val
    elif isinstance(data, Tensor):
        tensors = (data,)
    else:
        tensors = tuple(data)
        if not tensors or not all(isinstance(t, Tensor) for t in tensors):
            raise TypeError("data must be a Dataset, a tensor or a non-empty sequence of tensors")
    n = tensors[0].shape[0]
    if any(t.shape[0] != n for t in tensors):
        raise ShapeError(f"all tensors must have the same first dimension; got {[tuple(t.shape) for t in tensors]}")
    for idx in batch_indices(
        n, batch_size, shuffle=shuffle, seed=seed, epoch=epoch, drop_last=drop_last, rank=rank, world_size=world_size
    ):
        yield tuple(t[idx.to(t.device)] for t in tensors)
