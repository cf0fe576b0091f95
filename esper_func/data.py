"""Built-in datasets and deterministic, shardable batches for training loops.

Datasets (nothing is ever downloaded):

* :func:`load_digits` — scikit-learn's bundled 8x8 handwritten digits
  (needs ``pip install 'esper-func[demo]'``).
* :func:`load_stdlib_text` — a byte-level text corpus made of the Python
  standard library's own source files (see :mod:`esper_func.text` for the
  selection rule, the vocabulary and the split).
* :func:`synthetic_images` — a tiny learnable dataset for fast tests.
* :func:`load_cifar10` — CIFAR-10 from a local copy of the *binary* release
  (``cifar-10-batches-bin``), read with plain byte parsing: never unpickles.

Every dataset carries a :class:`DataInfo` record (``name``, ``bytes`` or
``samples``, ``sha256`` of the exact data used, split sizes, source) that a
run directory stores as its ``dataset`` entry.

Batches. The order of epoch ``e`` for seed ``s`` is a pure function of
``(s, e)`` (a local ``torch.Generator``; torch's global RNG is never
touched), so a resumed run sees exactly the same batches, and
``rank``/``world_size`` split each epoch into disjoint shards for
data-parallel training:

* :func:`batch_indices` / :func:`batches` — index batches over samples
  (images, any aligned tensors).
* :func:`window_starts` / :func:`token_batches` — ``(inputs, targets)``
  windows of a token sequence for next-token language modelling
  (``targets`` are ``inputs`` shifted by one).
* :class:`TensorBatches` / :class:`TokenBatches` — the same as frozen,
  re-iterable values (``Dataset.train_batches``, ``TextCorpus.val_batches``
  ...), each one epoch of one rank's batches; ``at_epoch(e)`` gives another
  epoch, :func:`for_epoch` does it for any batch source (DataLoaders
  included). They are ``torch.utils.data.IterableDataset`` s, so
  ``DataLoader(b, batch_size=None, num_workers=k)`` yields the same batches
  in the same order; :class:`EpochBatchSampler` with :attr:`TensorBatches.items`
  / :attr:`TokenBatches.items` builds the same batches from a map-style
  DataLoader instead.

Every split is made with a local generator too: the same ``seed`` gives the
same split on every machine and every run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, overload

import torch
from torch import Tensor

from esper_func import text as _text
from esper_func._pytree import pytree_dataclass, static_field
from esper_func._validate import check_choice, check_float, check_int, describe
from esper_func.batching import (
    IGNORE_INDEX,
    PAD_TOKEN,
    EpochBatches,
    EpochBatchSampler,
    TensorBatches,
    TokenBatches,
    TokenWindows,
    _seed_of,
    batch_indices,
    epoch_generator,
    for_epoch,
    token_batches,
    window_starts,
)
from esper_func.errors import DTypeError, InvalidArgumentError, InvalidTypeError, MissingDependencyError, ShapeError
from esper_func.text import VOCAB_SIZE, SourceFile, decode, encode, ngram_bits_per_byte

__all__ = [
    "IGNORE_INDEX",
    "PAD_TOKEN",
    "VOCAB_SIZE",
    "DataInfo",
    "Dataset",
    "EpochBatchSampler",
    "EpochBatches",
    "MissingDependencyError",
    "SourceFile",
    "TensorBatches",
    "TextCorpus",
    "TokenBatches",
    "TokenWindows",
    "batch_indices",
    "batches",
    "decode",
    "encode",
    "epoch_generator",
    "for_epoch",
    "load_cifar10",
    "load_digits",
    "load_stdlib_text",
    "ngram_bits_per_byte",
    "stratified_split",
    "synthetic_images",
    "token_batches",
    "window_starts",
]


# --------------------------------------------------------------------------- identity records


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What a dataset is, exactly: the record a run directory keeps as ``dataset``.

    Attributes:
        name: ``"digits"``, ``"python-stdlib"``, ...
        unit: ``"samples"`` (image datasets) or ``"bytes"`` (text).
        size: the number of samples or bytes, both splits together.
        sha256: hex digest of the exact data used (each loader documents which bytes).
        splits: ``(("train", n), ("val", n))`` in ``unit``.
        source: where the data came from, for people (``"scikit-learn 1.9.1 load_digits"``).
        files: per-split file counts (text corpora), else empty.
        details: further ``(key, value)`` pairs (scalars), e.g. the Python
            version a text corpus was read from or the split seed.
    """

    name: str
    unit: Literal["samples", "bytes"]
    size: int
    sha256: str
    splits: tuple[tuple[str, int], ...]
    source: str
    files: tuple[tuple[str, int], ...] = ()
    details: tuple[tuple[str, str | int | float | bool | None], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"name", "samples" | "bytes", "sha256", "splits", "source", ["files"], **details}``."""
        out: dict[str, Any] = {"name": self.name, self.unit: self.size, "sha256": self.sha256, "splits": dict(self.splits), "source": self.source}
        if self.files:
            out["files"] = dict(self.files)
        out.update(self.details)
        return out


def _sha256_of(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def _tensor_bytes(t: Tensor) -> bytes:
    return t.detach().cpu().contiguous().numpy().tobytes() if t.numel() else b""


# --------------------------------------------------------------------------- image datasets


@pytree_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A classification dataset split into train and validation tensors.

    A frozen pytree: ``tree_map`` over it (e.g. ``.to(device)``) maps the
    four tensors; ``num_classes``, ``name`` and ``info`` are static. Shapes
    and label dtypes are checked when all four fields are tensors.

    Attributes:
        x_train, x_val: inputs ``[N, ...]``: images ``[N, C, H, W]`` (the
            built-in datasets), feature vectors ``[N, F]`` for a host of your
            own, ...; whatever one sample of the model's host input is.
        y_train, y_val: labels ``[N]``, ``int64`` in ``[0, num_classes)``.
        num_classes: number of classes.
        name: a short identifier (``"digits"``, ``"synthetic"``, ``"cifar10"``).
        info: the dataset's identity record (``None`` for a hand-built dataset).
    """

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    num_classes: int = static_field()
    name: str = static_field()
    info: DataInfo | None = static_field(default=None)

    def __post_init__(self) -> None:
        fields = (self.x_train, self.y_train, self.x_val, self.y_val)
        if not all(isinstance(t, Tensor) for t in fields):
            return  # a tree transformation with non-tensor leaves (e.g. tree_map(lambda t: t.shape, ds))
        for split in ("train", "val"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.ndim < 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
                raise ShapeError(
                    f"{split} split must be inputs [N, ...] (e.g. images [N, C, H, W]) and labels [N]; "
                    f"got {tuple(x.shape)} and {tuple(y.shape)}"
                )
            if y.dtype != torch.int64:
                raise DTypeError(f"y_{split} must be int64; got {y.dtype}")
        if self.x_train.shape[1:] != self.x_val.shape[1:]:
            raise ShapeError(f"train and val inputs differ in shape: {tuple(self.x_train.shape[1:])} vs {tuple(self.x_val.shape[1:])}")
        if self.info is not None and not isinstance(self.info, DataInfo):
            raise InvalidTypeError(f"info must be a DataInfo or None; got {describe(self.info)}")

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
        """``(C, H, W)`` of an image dataset."""
        if self.x_train.ndim != 4:
            raise ShapeError(f"{self.name!r} holds inputs of shape {tuple(self.x_train.shape[1:])}, not images (C, H, W)")
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    def train_batches(
        self,
        batch_size: int,
        *,
        seed: int,
        epoch: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> TensorBatches:
        """Epoch ``epoch`` of the shuffled training split, rank ``rank``'s shard (see :func:`batch_indices`).

        Re-iterable; ``.at_epoch(e)`` (or :func:`for_epoch`) gives another epoch.
        Use ``drop_last=True`` under data parallelism (every rank the same number of full batches).
        """
        return TensorBatches(
            self.x_train, self.y_train, batch_size, shuffle=True, seed=seed, epoch=epoch,
            drop_last=drop_last, rank=rank, world_size=world_size,
        )

    def val_batches(self, batch_size: int, *, rank: int = 0, world_size: int = 1) -> TensorBatches:
        """The validation split in order, rank ``rank``'s shard; every sample once over all ranks."""
        return TensorBatches(self.x_val, self.y_val, batch_size, shuffle=False, rank=rank, world_size=world_size)


# --------------------------------------------------------------------------- splits


def stratified_split(labels: Tensor, *, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """``(train_idx, val_idx)``: per class, ``round(val_fraction * n_class)`` indices go to validation.

    Deterministic in ``seed``; both index tensors are sorted, disjoint and together cover ``range(len(labels))``.
    """
    if not isinstance(labels, Tensor) or labels.ndim != 1:
        raise InvalidTypeError(f"labels must be a 1-D tensor; got {describe(labels)}")
    val_fraction = check_float("val_fraction", val_fraction, minimum=0.0)
    if not val_fraction < 1.0:
        raise InvalidArgumentError(f"val_fraction must be in [0, 1); got {val_fraction!r}")
    g = torch.Generator().manual_seed(_seed_of(1, check_int("seed", seed, minimum=0)))
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

    ``info.sha256`` is the digest of the exact integer data and the split:
    the pixels as ``uint8`` (``N x 64``, row-major, in scikit-learn's order),
    then the labels as ``uint8``, then one ``uint8`` per sample, 1 where it
    went to validation. The float tensors are a fixed function of these
    (the digest avoids them because a float reduction's last bit may differ
    between CPUs).

    Raises:
        MissingDependencyError: scikit-learn is not installed.
    """
    seed = check_int("seed", seed, minimum=0)
    try:
        import sklearn
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:
        raise MissingDependencyError(
            "load_digits needs scikit-learn, which is not installed: pip install 'esper-func[demo]'"
        ) from exc
    bunch = sk_load_digits()
    pixels = torch.as_tensor(bunch.images).reshape(-1, 64)
    x = pixels.to(torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    train, val = stratified_split(y, val_fraction=val_fraction, seed=seed)
    x_train, x_val = _standardise(x[train], x[val])
    is_val = torch.zeros(y.numel(), dtype=torch.uint8)
    is_val[val] = 1
    info = DataInfo(
        name="digits",
        unit="samples",
        size=int(y.numel()),
        sha256=_sha256_of(_tensor_bytes(pixels.to(torch.uint8)), _tensor_bytes(y.to(torch.uint8)), _tensor_bytes(is_val)),
        splits=(("train", int(train.numel())), ("val", int(val.numel()))),
        source=f"scikit-learn {sklearn.__version__} load_digits",
        details=(("seed", seed), ("val_fraction", float(val_fraction))),
    )
    return Dataset(x_train, y[train], x_val, y[val], num_classes=10, name="digits", info=info)


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
    ``info.sha256`` digests the four tensors as produced (``float32`` and
    ``int64`` bytes, train images, train labels, val images, val labels).
    """
    n = check_int("n", n, minimum=1)
    classes = check_int("classes", classes, minimum=2)
    size = check_int("size", size, minimum=1)
    channels = check_int("channels", channels, minimum=1)
    noise = check_float("noise", noise, minimum=0.0)
    if n < classes:
        raise InvalidArgumentError(f"n ({n}) must be at least classes ({classes})")
    g = torch.Generator().manual_seed(_seed_of(2, check_int("seed", seed, minimum=0)))
    coarse = max(1, size // 4)
    protos = torch.randn(classes, channels, coarse, coarse, generator=g)
    protos = torch.nn.functional.interpolate(protos, size=(size, size), mode="bilinear", align_corners=False)
    protos = (protos - protos.mean(dim=(1, 2, 3), keepdim=True)) / protos.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    y = (torch.arange(n) % classes)[torch.randperm(n, generator=g)]
    x = protos[y] + noise * torch.randn(n, channels, size, size, generator=g)
    train, val = stratified_split(y, val_fraction=val_fraction, seed=seed)
    parts = (x[train], y[train], x[val], y[val])
    info = DataInfo(
        name="synthetic",
        unit="samples",
        size=n,
        sha256=_sha256_of(*(_tensor_bytes(t) for t in parts)),
        splits=(("train", int(train.numel())), ("val", int(val.numel()))),
        source="esper_func synthetic_images",
        details=(("seed", seed), ("classes", classes), ("size", size), ("channels", channels), ("noise", noise)),
    )
    return Dataset(*parts, num_classes=classes, name="synthetic", info=info)


_CIFAR_RECORD = 1 + 3 * 32 * 32


def _read_cifar_bin(raws: Sequence[tuple[Path, bytes]]) -> tuple[Tensor, Tensor]:
    chunks = []
    for path, raw in raws:
        if len(raw) % _CIFAR_RECORD:
            raise InvalidArgumentError(f"{path} is not a CIFAR-10 binary batch: {len(raw)} bytes is not a multiple of {_CIFAR_RECORD}")
        chunks.append(torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(-1, _CIFAR_RECORD))
    records = torch.cat(chunks)
    y = records[:, 0].to(torch.int64)
    if y.numel() and int(y.max()) > 9:
        raise InvalidArgumentError(f"CIFAR-10 labels must be 0..9; found {int(y.max())} in {[str(p) for p, _ in raws]}")
    x = records[:, 1:].reshape(-1, 3, 32, 32).to(torch.float32) / 255.0
    return x, y


def load_cifar10(root: str | os.PathLike[str]) -> Dataset:
    """CIFAR-10 from a local copy of the binary release; never downloads, never unpickles.

    ``root`` is the ``cifar-10-batches-bin`` directory (or its parent)
    holding ``data_batch_1.bin`` ... ``data_batch_5.bin`` and
    ``test_batch.bin`` (from https://www.cs.toronto.edu/~kriz/cifar.html,
    "CIFAR-10 binary version"). Train = the five data batches, val = the
    test batch; images ``[N, 3, 32, 32]`` scaled to [0, 1] then standardised
    per channel with train statistics. ``info.sha256`` digests the six files'
    bytes in that order.

    Raises:
        FileNotFoundError: the files are not there (the message says what to download and where).
    """
    if not isinstance(root, (str, os.PathLike)):
        raise InvalidTypeError(f"root must be a path (str or os.PathLike); got {describe(root)}")
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
    train_raw = [(p, p.read_bytes()) for p in train_files]
    test_raw = [(test_file, test_file.read_bytes())]
    x_train, y_train = _read_cifar_bin(train_raw)
    x_val, y_val = _read_cifar_bin(test_raw)
    x_train, x_val = _standardise(x_train, x_val)
    info = DataInfo(
        name="cifar10",
        unit="samples",
        size=int(y_train.numel() + y_val.numel()),
        sha256=_sha256_of(*(raw for _, raw in (*train_raw, *test_raw))),
        splits=(("train", int(y_train.numel())), ("val", int(y_val.numel()))),
        source="CIFAR-10 binary version (local files)",
    )
    return Dataset(x_train, y_train, x_val, y_val, num_classes=10, name="cifar10", info=info)


# --------------------------------------------------------------------------- the text corpus


@pytree_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class TextCorpus:
    """A byte-level text corpus split by file into training and held-out validation text.

    A frozen pytree: the two token tensors are leaves (``tree_map`` moves
    them to a device), everything else is static.

    Attributes:
        train, val: 1-D ``uint8`` tensors of byte tokens (``0 .. 255``).
        name: the corpus name (``"python-stdlib"``).
        info: the identity record; ``info.sha256`` is the digest of
            ``train`` followed by ``val``, the exact bytes used.
        files: each file used, with its split, offset into its split and length.
        missing: listed files the installation did not have (skipped).
        vocab_size: 256 (tokens are bytes).
    """

    train: Tensor
    val: Tensor
    name: str = static_field()
    info: DataInfo = static_field()
    files: tuple[SourceFile, ...] = static_field(default=())
    missing: tuple[str, ...] = static_field(default=())
    vocab_size: int = static_field(default=VOCAB_SIZE)

    def __post_init__(self) -> None:
        if not all(isinstance(t, Tensor) for t in (self.train, self.val)):
            return  # a tree transformation with non-tensor leaves
        for split in ("train", "val"):
            t = getattr(self, split)
            if t.ndim != 1:
                raise ShapeError(f"{split} must be a 1-D token tensor; got shape {tuple(t.shape)}")
            if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
                raise DTypeError(f"{split} must hold integer tokens; got {t.dtype}")

    def train_batches(
        self,
        batch_size: int,
        block_size: int,
        *,
        seed: int,
        epoch: int = 0,
        steps: int | None = None,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> TokenBatches:
        """Random ``block_size`` windows of the training text: epoch ``epoch``, rank ``rank``'s shard.

        ``steps=None``: one pass over the training text per epoch (a random
        phase, then every non-overlapping window once, shuffled); ``steps=k``:
        exactly ``k`` batches per rank. See :func:`window_starts`. Every batch
        is ``[batch_size, block_size]`` by default (``drop_last=True``).
        """
        return TokenBatches(
            self.train, batch_size, block_size, shuffle=True, seed=seed, epoch=epoch, steps=steps,
            drop_last=drop_last, rank=rank, world_size=world_size,
        )

    def val_batches(
        self,
        batch_size: int,
        block_size: int,
        *,
        steps: int | None = None,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> TokenBatches:
        """The held-out text in order, in non-overlapping windows: every byte after the first is a target exactly once.

        The last window may be padded (targets :data:`IGNORE_INDEX`); weight
        per-batch means by ``(targets != IGNORE_INDEX).sum()``. ``steps=k``
        keeps only each rank's first ``k`` batches (a quick estimate).
        """
        return TokenBatches(
            self.val, batch_size, block_size, shuffle=False, steps=steps, drop_last=drop_last, rank=rank,
            world_size=world_size,
        )


def load_stdlib_text(root: str | os.PathLike[str] | None = None, *, val_fraction: float = 0.1) -> TextCorpus:
    """The Python standard library's source as a byte-level corpus, split into train and validation by file.

    Reads the files of :data:`esper_func.text.STDLIB_FILES` (a fixed list of
    top-level modules, about 3 MB on CPython 3.11) from
    ``sysconfig.get_paths()["stdlib"]``, or from ``root``; a file is held out
    when the hash of its path says so (:func:`esper_func.text.is_validation_file`),
    about ``val_fraction`` of the files. Tokens are bytes (``vocab_size`` 256).
    Takes milliseconds; reads files and nothing else (no RNG, no cache, no writes).

    ``info`` records the name, total ``bytes``, the ``sha256`` of the exact bytes
    used (train then val), bytes and files per split, the Python
    implementation and version the files came from, the selection version
    and the vocabulary. The same Python release gives the same corpus on
    every machine.

    Raises:
        MissingDependencyError: the standard library's ``.py`` sources are not
            there (fewer than 1 MB of the listed files found); the message
            says where it looked.
    """
    source = _text.read_stdlib(root, val_fraction=val_fraction)
    n_train, n_val = len(source.train), len(source.val)
    files_per_split = {split: sum(1 for f in source.files if f.split == split) for split in ("train", "val")}
    info = DataInfo(
        name=_text.CORPUS_NAME,
        unit="bytes",
        size=n_train + n_val,
        sha256=source.sha256,
        splits=(("train", n_train), ("val", n_val)),
        source=(
            f"{source.python} standard library ({len(source.files)} files)"
            if source.python
            else f"standard library files read from a given directory ({len(source.files)} files)"
        ),
        files=(("train", files_per_split["train"]), ("val", files_per_split["val"])),
        details=(
            ("python", source.python),
            ("selection", _text.SELECTION),
            ("missing_files", len(source.missing)),
            ("val_fraction", source.val_fraction),
            ("tokens", "bytes"),
            ("vocab_size", VOCAB_SIZE),
        ),
    )
    return TextCorpus(
        train=encode(source.train),
        val=encode(source.val),
        name=_text.CORPUS_NAME,
        info=info,
        files=source.files,
        missing=source.missing,
    )


# --------------------------------------------------------------------------- sample batches


def _tensors_of(data: Any, split: str) -> tuple[Tensor, ...]:
    if isinstance(data, Dataset):
        split = check_choice("split", split, ("train", "val"))
        tensors: tuple[Tensor, ...] = data.train if split == "train" else data.val
    elif isinstance(data, Tensor):
        tensors = (data,)
    else:
        if not isinstance(data, Sequence) or isinstance(data, (str, bytes)):
            raise InvalidTypeError(f"data must be a Dataset, a tensor or a non-empty sequence of tensors; got {describe(data)}")
        tensors = tuple(data)
        if not tensors or not all(isinstance(t, Tensor) for t in tensors):
            raise InvalidTypeError(f"data must be a Dataset, a tensor or a non-empty sequence of tensors; got {describe(data)}")
    if any(t.ndim == 0 for t in tensors):
        raise ShapeError(f"every tensor needs a first (sample) dimension; got shapes {[tuple(t.shape) for t in tensors]}")
    n = tensors[0].shape[0]
    if any(t.shape[0] != n for t in tensors):
        raise ShapeError(f"all tensors must have the same first dimension; got {[tuple(t.shape) for t in tensors]}")
    return tensors


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
    A one-shot iterator; :class:`TensorBatches` is the re-iterable form.
    """
    tensors = _tensors_of(data, split)
    for idx in batch_indices(
        tensors[0].shape[0], batch_size, shuffle=shuffle, seed=seed, epoch=epoch, drop_last=drop_last, rank=rank,
        world_size=world_size,
    ):
        yield tuple(t[idx.to(t.device)] for t in tensors)


