"""Germination-time initialisation helpers for seed modules.

:func:`zero_init_final_layer` reproduces esper-lite's
``kasmina/blueprints/initialization.py``: when a seed is germinated with
``AlphaAlgorithm.MULTIPLY``, the *last* affine layer of the freshly built
module (the last ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Conv3d``
in ``named_modules()`` order) has its weight and bias set to zero, so that a
residual seed ``x + delta(x)`` starts with ``delta == 0`` and the multiply
valve starts at exactly 1.

Which layer that is, per built-in blueprint:

============  =======================================================
cnn           noop, norm: nothing (no affine layer);
              attention: ``fc.2`` (its 3.0 bias is zeroed too);
              depthwise: ``pointwise``; bottleneck: ``up``;
              conv_small: ``conv``; conv_light: ``enhance.conv``;
              conv_heavy: ``enhance.1.conv``
transformer   noop, norm: nothing; lora, lora_large: ``up``;
              attention, flex_attention: ``proj``;
              mlp_small, mlp: ``fc2``
============  =======================================================
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from esper_func.errors import InvalidArgumentError

__all__ = ["final_affine_layer_name", "zero_init_final_layer"]

_AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def final_affine_layer_name(module: nn.Module) -> str | None:
    """Qualified name of the last affine layer of ``module``, or ``None`` if it has none.

    "Last" means last in ``module.named_modules()`` order (registration order,
    depth first), which is what esper-lite uses; it is not a data-flow analysis.
    The module itself counts (its name is ``""``).
    """
    found: str | None = None
    for name, child in module.named_modules():
        if isinstance(child, _AFFINE):
            found = name
    return found


def zero_init_final_layer(module: nn.Module, *, allow_missing: bool = True) -> nn.Module:
    """Zero the weight and bias of ``module``'s last affine layer; return ``module``.

    This is the one in-place function of the package, by design: it is meant
    for a module that was *just built* by a blueprint and that nobody else
    holds yet (the germination path builds, zero-inits, then extracts the
    parameters into a fresh dict). Do not call it on a module whose tensors
    are shared with a live parameter tree.

    Args:
        module: A freshly built seed module.
        allow_missing: With ``True`` (the default, as esper-lite's germination
            path calls it) a module without any affine layer is returned
            unchanged; with ``False`` it raises ``ValueError``.

    Raises:
        ValueError: no affine layer and ``allow_missing=False``.
    """
    name = final_affine_layer_name(module)
    if name is None:
        if allow_missing:
            return module
        raise InvalidArgumentError(
            f"{type(module).__name__} has no affine layer (Linear/Conv1d/Conv2d/Conv3d) to "
            "zero-initialise; pass allow_missing=True to leave such modules unchanged"
        )
    layer = module.get_submodule(name)
    with torch.no_grad():
        nn.init.zeros_(cast(Tensor, layer.weight))
        if getattr(layer, "bias", None) is not None:
            nn.init.zeros_(cast(Tensor, layer.bias))
    return module
