"""Built-in seed blueprints for convolutional hosts.

Every seed maps ``[B, C, H, W] -> [B, C, H, W]`` and has exactly the
parameter names, shapes and initialisation of esper-lite's
``kasmina/blueprints/cnn.py``, so esper-lite seed weights load by name and a
seed built from seed ``k`` gets the same weights as esper-lite's under
``torch.manual_seed(k)`` (same layers, built in the same order, with torch's
default initialisers). ``germinate_slot`` runs the build with every draw
from an explicit generator (``esper_func._rng.run_seeded``), never from
torch's global RNG; calling a ``build`` function directly is plain module
construction and draws from the global RNG, as in torch.

All seeds use GroupNorm, never BatchNorm: no buffers, no running statistics,
and the same function in train and eval mode. Forwards are pure functions of
(parameters, input).

=============  ==========================================  ========  =========================
name           module                                      estimate  at birth
=============  ==========================================  ========  =========================
noop           identity, no parameters                     0         identity
norm           ``x + tanh(scale) * (GN(x) - x)``           130       identity (``scale = 0``)
attention      SE: ``x * sigmoid(fc(avgpool(x)))``         2000      ``sigmoid(3) * x``
depthwise      ``x + relu(GN(pw(dw3x3(x))))``              4800      not identity
bottleneck     ``x + GN(up(relu(3x3(relu(down(x))))))``    4500      identity (``up = 0``)
conv_small     ``x + relu(GN(conv1x1(x)))``                4200      identity (``conv = 0``)
conv_light     ``x + relu(GN(conv3x3(x)))``                37000     not identity
conv_heavy     two conv3x3-GN-ReLU blocks, residual        74000     not identity
=============  ==========================================  ========  =========================

Keyword arguments: ``attention(reduction=4)``, ``bottleneck(reduction=4)``;
the others take none.
"""

from __future__ import annotations

from typing import Any, Final, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esper_func.blueprints.registry import Blueprint, check_dim, reject_unknown_kwargs

__all__ = [
    "BLUEPRINTS",
    "TARGET_CHANNELS_PER_GROUP",
    "get_num_groups",
    "NormSeed",
    "AttentionSeed",
    "DepthwiseSeed",
    "BottleneckSeed",
    "ConvSmallSeed",
    "SeedConvBlock",
    "ConvLightSeed",
    "ConvHeavySeed",
]

#: GroupNorm aims for at least this many channels per group (esper-lite's rule).
TARGET_CHANNELS_PER_GROUP: Final[int] = 16
_GROUP_CANDIDATES: Final[tuple[int, ...]] = (32, 16, 8, 4, 2, 1)


def get_num_groups(channels: int, target_group_size: int = TARGET_CHANNELS_PER_GROUP) -> int:
    """GroupNorm group count for ``channels`` (esper-lite's rule).

    The largest of 32, 16, 8, 4, 2, 1 that divides ``channels`` and leaves at
    least ``target_group_size`` channels per group; if none does, the largest
    of them that divides ``channels`` (only reachable below 16 channels).
    E.g. 64 -> 4, 512 -> 32, 48 -> 2, 24 -> 1, 12 -> 4.
    """
    for groups in _GROUP_CANDIDATES:
        if channels % groups == 0 and channels // groups >= target_group_size:
            return groups
    for groups in _GROUP_CANDIDATES:
        if channels % groups == 0:
            return groups
    return 1  # unreachable: 1 divides everything


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(get_num_groups(channels), channels)


def _positive(key: str, name: str, value: object) -> int:
    return check_dim(key, value, what=name)


class NormSeed(nn.Module):
    """``x + tanh(scale) * (GroupNorm(x) - x)``; ``scale`` starts at 0 (identity)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _group_norm(channels)
        self.scale = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        # tanh bounds the mixing factor to (-1, 1).
        return x + torch.tanh(self.scale) * (self.norm(x) - x)


class AttentionSeed(nn.Module):
    """Squeeze-and-excitation channel gate ``x * sigmoid(W2 relu(W1 avgpool(x)) + b2)``.

    Multiplicative, not residual. ``W2 = 0`` and ``b2 = 3.0`` at birth, so the
    gate starts at ``sigmoid(3) ~= 0.953`` for every channel and input.
    """

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        reduced = max(1, channels // reduction)
        # Indices 0 and 2 of this Sequential are esper-lite's parameter names.
        self.fc = nn.Sequential(
            nn.Linear(channels, reduced, bias=False),
            nn.ReLU(),
            nn.Linear(reduced, channels, bias=True),
            nn.Sigmoid(),
        )
        excite = cast(nn.Linear, self.fc[2])
        nn.init.zeros_(excite.weight)
        nn.init.constant_(excite.bias, 3.0)

    def forward(self, x: Tensor) -> Tensor:
        squeezed = F.adaptive_avg_pool2d(x, 1).flatten(1)  # [B, C]
        gate = self.fc(squeezed)[:, :, None, None]
        return x * gate


class DepthwiseSeed(nn.Module):
    """``x + relu(GroupNorm(pointwise(depthwise3x3(x))))`` (no biases)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            channels, channels, kernel_size=3, padding=1, groups=channels, bias=False
        )
        self.pointwise = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.gn = _group_norm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + F.relu(self.gn(self.pointwise(self.depthwise(x))))


class BottleneckSeed(nn.Module):
    """``x + GroupNorm(up(relu(conv3x3(relu(down(x))))))`` with width ``max(8, C // reduction)``.

    ``up`` is zero at birth, and GroupNorm of an all-zero map is zero, so the
    seed starts as the exact identity.
    """

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        width = max(8, channels // reduction)
        self.down = nn.Conv2d(channels, width, kernel_size=1, bias=False)
        self.conv = nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False)
        self.up = nn.Conv2d(width, channels, kernel_size=1, bias=False)
        self.gn = _group_norm(channels)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.down(x))
        h = F.relu(self.conv(h))
        return x + self.gn(self.up(h))


class ConvSmallSeed(nn.Module):
    """``x + relu(GroupNorm(conv1x1(x)))``; the conv is zero at birth (identity)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.gn = _group_norm(channels)
        nn.init.zeros_(self.conv.weight)

    def forward(self, x: Tensor) -> Tensor:
        return x + F.relu(self.gn(self.conv(x)))


class SeedConvBlock(nn.Module):
    """``relu(GroupNorm(conv(x)))`` with a same-padded, bias-free conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False
        )
        self.gn = _group_norm(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.gn(self.conv(x)))


class ConvLightSeed(nn.Module):
    """``x + SeedConvBlock(x)`` (one 3x3 conv)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.enhance = SeedConvBlock(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.enhance(x)


class ConvHeavySeed(nn.Module):
    """``x + block2(block1(x))`` with two 3x3 :class:`SeedConvBlock` s."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.enhance = nn.Sequential(
            SeedConvBlock(channels, channels), SeedConvBlock(channels, channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.enhance(x)


# --- builders (module level, so blueprints pickle by reference) -------------


def build_noop(dim: int, **unknown: Any) -> nn.Module:
    """``cnn:noop``: the identity (no parameters)."""
    reject_unknown_kwargs("cnn:noop", unknown, ())
    check_dim("cnn:noop", dim)
    return nn.Identity()


def build_norm(dim: int, **unknown: Any) -> nn.Module:
    """``cnn:norm``: :class:`NormSeed`."""
    reject_unknown_kwargs("cnn:norm", unknown, ())
    return NormSeed(check_dim("cnn:norm", dim))


def build_attention(dim: int, *, reduction: int = 4, **unknown: Any) -> nn.Module:
    """``cnn:attention``: :class:`AttentionSeed` with hidden width ``max(1, dim // reduction)``."""
    reject_unknown_kwargs("cnn:attention", unknown, ("reduction",))
    dim = check_dim("cnn:attention", dim)
    return AttentionSeed(dim, _positive("cnn:attention", "reduction", reduction))


def build_depthwise(dim: int, **unknown: Any) -> nn.Module:
    """``cnn:depthwise``: :class:`DepthwiseSeed`."""
    reject_unknown_kwargs("cnn:depthwise", unknown, ())
    return DepthwiseSeed(check_dim("cnn:depthwise", dim))


def build_bottleneck(dim: int, *, reduction: int = 4, **unknown: Any) -> nn.Module:
    """``cnn:bottleneck``: :class:`BottleneckSeed` with width ``max(8, dim // reduction)``."""
    reject_unknown_kwargs("cnn:bottleneck", unknown, ("reduction",))
    dim = check_dim("cnn:bottleneck", dim)
    return BottleneckSeed(dim, _positive("cnn:bottleneck", "reduction", reduction))


def build_conv_small(dim: int, **unknown: Any) -> nn.Module:
    """``cnn:conv_small``: :class:`ConvSmallSeed`."""
    reject_unknown_kwargs("cnn:conv_small", unknown, ())
    return ConvSmallSeed(check_dim("cnn:conv_small", dim))


def build_conv_light(dim: int, **unknown: Any) -> nn.Module:
    """``cnn:conv_light``: :class:`ConvLightSeed`."""
    reject_unknown_kwargs("cnn:conv_light", unknown, ())
    return ConvLightSeed(check_dim("cnn:conv_light", dim))


def build_conv_heavy(dim: int, **unknown: Any) -> nn.Module:
    """``cnn:conv_heavy``: :class:`ConvHeavySeed`."""
    reject_unknown_kwargs("cnn:conv_heavy", unknown, ())
    return ConvHeavySeed(check_dim("cnn:conv_heavy", dim))


#: The built-in CNN blueprints, with esper-lite's names and parameter estimates.
BLUEPRINTS: Final[tuple[Blueprint, ...]] = (
    Blueprint("noop", "cnn", build_noop, 0, "Identity; placeholder seed with no parameters", per_sample=True),
    Blueprint("norm", "cnn", build_norm, 130, "GroupNorm refinement with a tanh-bounded mix", per_sample=True),
    Blueprint("attention", "cnn", build_attention, 2000, "Squeeze-and-excitation channel gate", per_sample=True),
    Blueprint("depthwise", "cnn", build_depthwise, 4800, "Depthwise-separable 3x3 conv, residual", per_sample=True),
    Blueprint("bottleneck", "cnn", build_bottleneck, 4500, "1x1-3x3-1x1 bottleneck, residual", per_sample=True),
    Blueprint("conv_small", "cnn", build_conv_small, 4200, "1x1 channel-mixing conv, residual", per_sample=True),
    Blueprint("conv_light", "cnn", build_conv_light, 37000, "One 3x3 conv-GN-ReLU block, residual", per_sample=True),
    Blueprint("conv_heavy", "cnn", build_conv_heavy, 74000, "Two 3x3 conv-GN-ReLU blocks, resid.", per_sample=True),
)
