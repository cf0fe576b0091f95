"""A small CNN run shared by the tests that follow a live seed through the epoch loop."""

from __future__ import annotations

from functools import cache
from typing import Any

import torch

import esper_func as ef
from esper_func.controller import Observation
from esper_func.train import init_train_state

HOST = ef.CNNHost(in_channels=1, n_blocks=2, base_channels=4, num_classes=4, memory_format="contiguous_format")


@cache
def dataset() -> ef.data.Dataset:
    return ef.data.synthetic_images(160, classes=4, size=8, seed=1)


def germinate_once(algorithm: ef.AlphaAlgorithm, blueprint: str, *, tempo: int = 6) -> Any:
    """Germinate ``blueprint`` into r0c0 with ``algorithm`` and a slow blend, advance it, fossilize it when holding."""

    def controller(observation: Observation) -> ef.Action:
        view = next(v for v in observation.slots if v.slot_id == "r0c0")
        if view.state is None:
            return ef.Action(kind=ef.ActionKind.GERMINATE, slot_id="r0c0", blueprint=blueprint,
                             algorithm=algorithm, tempo=tempo, reason="test")
        stage = view.state.stage
        if stage in (ef.SeedStage.GERMINATED, ef.SeedStage.TRAINING) or (stage == ef.SeedStage.BLENDING and view.state.alpha >= 1.0):
            return ef.Action(kind=ef.ActionKind.ADVANCE, slot_id="r0c0", reason="test")
        if stage == ef.SeedStage.HOLDING:
            return ef.Action(kind=ef.ActionKind.FOSSILIZE, slot_id="r0c0", reason="test")
        return ef.Action(kind=ef.ActionKind.WAIT, reason="test")

    return controller


def start(optimizer: ef.optim.Optimizer) -> tuple[ef.Model, Any]:
    """The model with slots r0c0 and r0c1 and its train state at initialisation."""
    model, params, buffers = ef.build_model(HOST, ["r0c0", "r0c1"], generator=torch.Generator().manual_seed(0))
    return model, init_train_state(model, params, buffers, optimizer=optimizer, key=3)


def leaves_equal(a: Any, b: Any) -> bool:
    """Whether two pytrees have the same leaves, tensors bit for bit."""
    la, lb = torch.utils._pytree.tree_leaves(a), torch.utils._pytree.tree_leaves(b)
    return len(la) == len(lb) and all(
        torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y for x, y in zip(la, lb, strict=True)
    )
