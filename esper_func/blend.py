"""Blend operators: how a seed's output is mixed into the host stream.

All operators are pure tensor functions (no control flow on values), so
they trace under ``torch.compile(fullgraph=True)`` and batch under
``torch.func.vmap``. Alpha is clamped to ``[0, 1]`` and everything is
computed in the *host's* dtype: a bf16 host blended with an fp32 alpha gives
a bf16 result.

Contracts (checked by the tests):

- every operator is the identity at ``alpha == 0``;
- ``ADD``: ``lerp(h, s, a)``;
- ``MULTIPLY``: ``h * (1 + a * tanh(s - seed_input))``, whose multiplier lies
  in ``[1 - a, 1 + a]``;
- ``GATE``: ``lerp(h, s, clamp(a * gate))`` with the effective alpha in
  ``[0, 1]``;
- :func:`straight_through` returns exactly ``h`` in the forward pass while
  the seed receives the full upstream gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from esper_func.errors import InvalidArgumentError
from esper_func.lifecycle.alpha import AlphaAlgorithm

__all__ = [
    "AlphaAlgorithm",
    "blend",
    "blend_add",
    "blend_gate",
    "blend_multiply",
    "gate_effective_alpha",
    "multiply_multiplier",
    "straight_through",
]


def _unit(x: Tensor) -> Tensor:
    return x.clamp(0.0, 1.0)


def blend_add(host: Tensor, seed: Tensor, alpha: Tensor) -> Tensor:
    """Convex cross-fade ``lerp(host, seed, alpha)``."""
    dtype = host.dtype
    return torch.lerp(host, seed.to(dtype), _unit(alpha).to(dtype))


def multiply_multiplier(alpha: Tensor, modulation: Tensor) -> Tensor:
    """The MULTIPLY valve ``1 + a * tanh(m)``, bounded to ``[1 - a, 1 + a]``."""
    return 1.0 + _unit(alpha) * torch.tanh(modulation)


def blend_multiply(host: Tensor, seed: Tensor, alpha: Tensor, *, seed_input: Tensor) -> Tensor:
    """Modulate the host by ``1 + a * tanh(seed - seed_input)``.

    ``seed_input`` is what the seed saw (the detached host when isolated), so
    under isolation no gradient reaches the host through the modulation term.
    """
    dtype = host.dtype
    modulation = seed.to(dtype) - seed_input.to(dtype)
    return host * multiply_multiplier(alpha.to(dtype), modulation)


def gate_effective_alpha(alpha: Tensor, gate: Tensor) -> Tensor:
    """Per-sample alpha ``clamp(clamp(alpha) * clamp(gate))``, always in ``[0, 1]``."""
    return _unit(_unit(alpha) * _unit(gate))


def blend_gate(host: Tensor, seed: Tensor, alpha: Tensor, gate: Tensor) -> Tensor:
    """Gated cross-fade ``lerp(host, seed, alpha * gate)``."""
    dtype = host.dtype
    effective = gate_effective_alpha(alpha.to(dtype), gate.to(dtype))
    return torch.lerp(host, seed.to(dtype), effective)


def straight_through(host: Tensor, seed: Tensor) -> Tensor:
    """Incubator output: forward value ``host``; the seed gets the upstream gradient.

    ``host + (seed - seed.detach())`` equals ``host`` exactly in the forward
    pass, while ``d out / d seed`` is the identity.
    """
    seed = seed.to(host.dtype)
    return host + (seed - seed.detach())


def blend(
    algorithm: AlphaAlgorithm | int,
    host: Tensor,
    seed: Tensor,
    alpha: Tensor,
    *,
    seed_input: Tensor,
    gate: Tensor | None = None,
) -> Tensor:
    """Dispatch to the operator for ``algorithm`` (a static choice; an int value is fine)."""
    if algorithm == AlphaAlgorithm.ADD:
        return blend_add(host, seed, alpha)
    if algorithm == AlphaAlgorithm.MULTIPLY:
        return blend_multiply(host, seed, alpha, seed_input=seed_input)
    if algorithm == AlphaAlgorithm.GATE:
        if gate is None:
            raise InvalidArgumentError("AlphaAlgorithm.GATE needs the gate network's output; got gate=None")
        return blend_gate(host, seed, alpha, gate)
    raise InvalidArgumentError(f"unknown alpha algorithm {algorithm!r}; expected one of {list(AlphaAlgorithm)}")
