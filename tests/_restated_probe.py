"""Probe seeds for the restated esper-lite tests: slots whose seed output is known exactly.

esper-lite's blend and incubator tests feed hand-made seed tensors to its
blend operators. esper_func's public forward is ``ef.slot_apply``, so the
restated tests build slots from tiny blueprints whose output is a simple,
known function of the host features:

- ``affine``: ``seed(x) = x * scale + shift`` with per-channel ``scale`` and
  ``shift`` (``scale = 0`` makes the seed output the constant ``shift``,
  ``scale = 1`` makes it ``x + shift``);
- ``linear``: a bias-free ``nn.Linear(C, C)`` over the last axis, initialised
  to the identity (transformer topology).

Build functions are module-level so the blueprints pickle.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

import esper_func as ef


class Affine(nn.Module):
    """``x * scale + shift`` with per-channel parameters (CNN: ``[C, 1, 1]``, transformer: ``[C]``)."""

    def __init__(self, dim: int, topology: str) -> None:
        super().__init__()
        shape = (dim, 1, 1) if topology == "cnn" else (dim,)
        self.scale = nn.Parameter(torch.ones(shape))
        self.shift = nn.Parameter(torch.zeros(shape))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.shift


class IdentityLinear(nn.Module):
    """A bias-free ``Linear(C, C)`` on the last axis, initialised to the identity."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.layer = nn.Linear(dim, dim, bias=False)
        nn.init.eye_(self.layer.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


def build_affine_cnn(dim: int) -> nn.Module:
    return Affine(dim, "cnn")


def build_affine_transformer(dim: int) -> nn.Module:
    return Affine(dim, "transformer")


def build_identity_linear(dim: int) -> nn.Module:
    return IdentityLinear(dim)


AFFINE_CNN = ef.Blueprint("affine", "cnn", build_affine_cnn, 0, "test probe: x * scale + shift")
AFFINE_TRANSFORMER = ef.Blueprint("affine", "transformer", build_affine_transformer, 0, "test probe: x * scale + shift")
IDENTITY_LINEAR = ef.Blueprint("linear", "transformer", build_identity_linear, 0, "test probe: identity Linear")
REGISTRY = ef.default_registry().with_blueprint(AFFINE_CNN).with_blueprint(AFFINE_TRANSFORMER).with_blueprint(
    IDENTITY_LINEAR
)


def affine_slot(
    channels: int,
    *,
    topology: str = "cnn",
    algorithm: ef.AlphaAlgorithm = ef.AlphaAlgorithm.ADD,
    scale: float | Tensor = 1.0,
    shift: float | Tensor = 0.0,
    gate: float | None = None,
) -> tuple[ef.Slot, dict[str, dict[str, Tensor]]]:
    """An ``affine`` probe slot and its parameters.

    For ``AlphaAlgorithm.GATE``, ``gate`` (in ``(0, 1)``) fixes the gate
    network's output: its last linear layer gets zero weights and the bias
    ``logit(gate)``, so ``g(x) == gate`` for every input.
    """
    slot, params = ef.germinate_slot(REGISTRY, topology, "affine", channels, algorithm=algorithm)
    shape = params["seed"]["scale"].shape
    params["seed"] = {
        "scale": torch.as_tensor(scale, dtype=torch.float32).expand(shape).clone(),
        "shift": torch.as_tensor(shift, dtype=torch.float32).expand(shape).clone(),
    }
    if gate is not None:
        assert "gate" in params, "only a GATE slot has a gate network"
        last = params["gate"]
        last["gate.2.weight"] = torch.zeros_like(last["gate.2.weight"])
        last["gate.2.bias"] = torch.full_like(last["gate.2.bias"], float(torch.logit(torch.tensor(gate))))
    return slot, params
