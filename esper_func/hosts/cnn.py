"""The built-in CNN host: esper-lite's ``CNNHost`` as a static spec.

Every conv block ``c`` exposes ``r0c{c}`` (after the block, before pooling;
``PRE_POOL``) and, when the block is pooled (``c < pool_layers``),
``r1c{c}`` (after the 2x2 max-pool; ``POST_POOL``). Forward execution order
interleaves them by block (``r0c0, r1c0, r0c1, r1c1, ...``); esper-lite's
``injection_specs()`` lists them row-major instead (``r0c0, r0c1, ...,
r1c0, ...``), which is the order its action indices use
(:attr:`CNNHost.spec_order`).

:meth:`CNNHost.build_module` gives an ``nn.Module`` whose ``state_dict()``
keys, shapes and initialisation match esper-lite's ``esper.kasmina.host.CNNHost``,
so weights move between the two projects by name. Its topology,
:data:`CNN_TOPOLOGY`, has features ``[B, C, H, W]`` and keeps blending seeds
isolated from the host's gradient, as esper-lite does for CNNs.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Final

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esper_func._rng import copy_generator
from esper_func.errors import DTypeError, HostConfigError, ShapeError
from esper_func.hosts.base import (
    HostBase,
    InjectionPoint,
    Topology,
    build_seeded,
    check_int,
    check_span,
    format_slot_id,
)

__all__ = ["CNN_TOPOLOGY", "POST_POOL", "PRE_POOL", "CNNHost", "CNNHostModule", "ConvBlock"]

#: Image features ``[B, C, H, W]``; a blending seed keeps reading the detached host
#: (esper-lite isolates CNN seeds from BLENDING on: stable spatial hierarchies).
CNN_TOPOLOGY: Final[Topology] = Topology("cnn", layout="BCHW", isolate_blending=True, probe_batch=1, probe_size=32)

# Surface kinds (esper-lite ``leyline.SurfaceType`` names).
PRE_POOL: Final[str] = "PRE_POOL"
POST_POOL: Final[str] = "POST_POOL"

_MEMORY_FORMATS: Final = {
    "channels_last": torch.channels_last,
    "contiguous_format": torch.contiguous_format,
}


class ConvBlock(nn.Module):
    """Conv(bias-free, "same" padding) -> BatchNorm2d -> ReLU (esper-lite's ``ConvBlock``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


_BLOCK: Final = "block"
_POOL: Final = "pool"


@dataclasses.dataclass(frozen=True)
class CNNHost(HostBase):
    """Static spec of esper-lite's ``CNNHost`` (conv blocks with doubling width).

    Block ``i`` is ``ConvBlock(c_in, base_channels * 2**i)``; the first
    ``pool_layers`` blocks are followed by a shared 2x2 max-pool; the head is
    global average pooling and ``Linear(channels, num_classes)``.

    Args (esper-lite's, same defaults):
        num_classes: output classes (10).
        n_blocks: conv blocks, at least 2 (3).
        base_channels: width of block 0; doubles each block (32).
        pool_layers: how many leading blocks are pooled; ``None`` = all (None).
        memory_format: ``"channels_last"`` (esper-lite's default) or
            ``"contiguous_format"``; a ``torch.memory_format`` is accepted and
            stored by name. Performance only.
        kernel_size: conv kernel size, padding ``kernel_size // 2`` (3).
        in_channels: input image channels. An esper_func extension: esper-lite
            always uses 3.
    """

    num_classes: int = 10
    n_blocks: int = 3
    base_channels: int = 32
    pool_layers: int | None = None
    memory_format: str = "channels_last"
    kernel_size: int = 3
    in_channels: int = 3

    topology: ClassVar[Topology] = CNN_TOPOLOGY

    def __post_init__(self) -> None:
        owner = "CNNHost"
        if isinstance(self.memory_format, torch.memory_format):
            names = {v: k for k, v in _MEMORY_FORMATS.items()}
            if self.memory_format not in names:
                raise HostConfigError(
                    f"{owner}: memory_format must be one of {sorted(_MEMORY_FORMATS)}; "
                    f"got {self.memory_format!r}"
                )
            object.__setattr__(self, "memory_format", names[self.memory_format])
        elif self.memory_format not in _MEMORY_FORMATS:
            raise HostConfigError(
                f"{owner}: memory_format must be one of {sorted(_MEMORY_FORMATS)}; "
                f"got {self.memory_format!r}"
            )
        check_int(owner, "num_classes", self.num_classes, 1)
        check_int(owner, "n_blocks", self.n_blocks, 2)
        check_int(owner, "base_channels", self.base_channels, 1)
        if self.pool_layers is not None:
            check_int(owner, "pool_layers", self.pool_layers, 0)
        check_int(owner, "kernel_size", self.kernel_size, 1)
        check_int(owner, "in_channels", self.in_channels, 1)

    # -- structure -----------------------------------------------------------

    @property
    def effective_pool_layers(self) -> int:
        """Number of pooled blocks (``pool_layers`` resolved and capped at ``n_blocks``)."""
        pools = self.n_blocks if self.pool_layers is None else self.pool_layers
        return min(pools, self.n_blocks)

    def block_channels(self, index: int) -> int:
        """Output channels of block ``index``."""
        return self.base_channels * 2**index

    @property
    def _ops(self) -> tuple[tuple[str, int], ...]:
        # One op per surface: op j takes surface j to surface j + 1.
        ops: list[tuple[str, int]] = []
        for i in range(self.n_blocks):
            ops.append((_BLOCK, i))
            if i < self.effective_pool_layers:
                ops.append((_POOL, i))
        return tuple(ops)

    @property
    def injection_points(self) -> tuple[InjectionPoint, ...]:
        """Injection points in execution order (``r0c0, r1c0, r0c1, r1c1, ...``)."""
        n, pools = self.n_blocks, self.effective_pool_layers
        points = []
        for surface, (op, i) in enumerate(self._ops, start=1):
            pre = op == _BLOCK
            points.append(
                InjectionPoint(
                    slot_id=format_slot_id(0 if pre else 1, i),
                    surface=surface,
                    channels=self.block_channels(i),
                    row=0 if pre else 1,
                    col=i,
                    kind=PRE_POOL if pre else POST_POOL,
                    order=i if pre else n + i,
                    layer_range=(i, i + 1),
                    position=(2 * i + (1 if pre else 2)) / (2 * n),
                )
            )
        assert len(points) == n + pools
        return tuple(points)

    def surface_shape(
        self, surface: int, batch: int, image_size: int | tuple[int, int] = 32
    ) -> tuple[int, ...]:
        """Shape of surface ``surface`` for a ``[batch, in_channels, H, W]`` input."""
        check_span(0, max(surface, 1), self.n_surfaces, self.slot_ids)
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        if surface == 0:
            return (batch, self.in_channels, h, w)
        if surface == self.output_surface:
            return (batch, self.num_classes)
        k = self.kernel_size
        channels = self.in_channels
        for op, i in self._ops[:surface]:
            if op == _BLOCK:
                h, w = h + 2 * (k // 2) - k + 1, w + 2 * (k // 2) - k + 1
                channels = self.block_channels(i)
            else:
                h, w = h // 2, w // 2
        return (batch, channels, h, w)

    # -- modules and inputs ---------------------------------------------------

    def build_module(
        self, *, seed: int | None = None, device: torch.device | str | None = None
    ) -> CNNHostModule:
        """Build the host ``nn.Module``, initialised as esper-lite initialises ``CNNHost``.

        Torch's default initialisers in esper-lite's order (block convs in
        order, then the classifier), drawing from an explicit generator seeded
        with ``seed`` (``None``: a fixed default seed): the weights equal
        esper-lite's built after ``torch.manual_seed(seed)``, and torch's
        global RNG is neither read nor written, so threads may build at
        once. The module is built on the CPU and moved to ``device`` (default:
        torch's default device); ``device="meta"`` gives a storage-free
        skeleton and draws nothing.
        """
        return build_seeded(lambda: CNNHostModule(self), seed=seed, device=device)

    def example_input(
        self,
        batch: int,
        generator: torch.Generator | None = None,
        *,
        image_size: int = 32,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """A standard-normal image batch ``[batch, in_channels, image_size, image_size]``.

        ``generator`` is read, not advanced (``None``: a fixed default seed), so
        the same generator gives the same batch and no global RNG is used.
        """
        return torch.randn(
            batch, self.in_channels, image_size, image_size, generator=copy_generator(generator), dtype=dtype
        )


def _channels_last(x: Tensor) -> Tensor:
    """``x`` in channels_last layout (values unchanged; a no-op when it already is).

    Spelled as permute/contiguous/permute rather than ``x.to(memory_format=...)``
    so that it also works on ``vmap``-batched tensors, whose physical rank is 5.
    """
    return x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)


class CNNHostModule(nn.Module):
    """The CNN host network; state_dict keys are esper-lite ``CNNHost``'s.

    Keys: ``blocks.<i>.conv.weight``, ``blocks.<i>.bn.{weight,bias,running_mean,
    running_var,num_batches_tracked}``, ``classifier.{weight,bias}``.
    """

    def __init__(self, spec: CNNHost) -> None:
        super().__init__()
        self.spec = spec
        self._ops = spec._ops
        self._slot_ids = spec.slot_ids
        self._surface_channels = (spec.in_channels, *(p.channels for p in spec.injection_points))
        self._channels_last = spec.memory_format == "channels_last"
        blocks: list[nn.Module] = []
        in_c = spec.in_channels
        for i in range(spec.n_blocks):
            out_c = spec.block_channels(i)
            blocks.append(ConvBlock(in_c, out_c, kernel_size=spec.kernel_size))
            in_c = out_c
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.MaxPool2d(2, 2)
        self.classifier = nn.Linear(in_c, spec.num_classes)

    def _check_input(self, x: Tensor, start: int) -> None:
        if x.dim() != 4:
            raise ShapeError(
                f"CNN host surface {start} expects a 4-D tensor [B, C, H, W]; got shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise DTypeError(f"CNN host expects a floating-point tensor; got dtype {x.dtype}")
        expected = self._surface_channels[start]
        if x.shape[1] != expected:
            where = "the input" if start == 0 else f"surface {start} ({self._slot_ids[start - 1]})"
            raise ShapeError(
                f"{where} expects {expected} channels; got a tensor of shape {tuple(x.shape)}"
            )
        if start == 0:
            pools = sum(1 for op, _ in self._ops if op == _POOL)
            need = 2**pools
            if x.shape[2] < need or x.shape[3] < need:
                raise ShapeError(
                    f"input spatial size {tuple(x.shape[2:])} is too small for {pools} 2x2 "
                    f"max-pools; need at least {need}x{need}"
                )

    def forward(
        self, x: Tensor, start: int = 0, stop: int | None = None, rng: torch.Generator | None = None
    ) -> Tensor:
        """Run surfaces ``start -> stop`` (``stop=None``: to the logits).

        ``rng`` is accepted for a uniform host interface and unused: the CNN
        host draws no random numbers.
        """
        del rng
        n = len(self._ops)
        start, stop = check_span(start, stop, n, self._slot_ids)
        self._check_input(x, start)
        if self._channels_last:
            x = _channels_last(x)
        for op, i in self._ops[start : min(stop, n)]:
            x = self.blocks[i](x) if op == _BLOCK else self.pool(x)
        if stop == n + 1:
            # Global average pool; a mean over H, W equals adaptive_avg_pool2d(x, 1)
            # and, unlike it, has a vmap batching rule for channels_last inputs.
            x = x.mean(dim=(2, 3))
            x = self.classifier(x)
        return x
