"""Stateful baselines the benchmarks compare against (not part of the package)."""

from __future__ import annotations

import torch
from torch import nn

import esper_func as ef
from esper_func.slot import is_isolated


class StatefulModel(nn.Module):
    """A host module, seed modules and an alpha buffer, blended with ``lerp``: the esper-lite shape of things.

    Holds copies of the same weights as ``(model, params, buffers)``; empty
    slots are skipped.
    """

    def __init__(self, model: ef.Model, params: dict, buffers: dict, alphas: torch.Tensor) -> None:
        super().__init__()
        self.host = model.host.build_module()
        self.host.load_state_dict({**params["host"], **buffers["host"]}, strict=False)
        self.seeds = nn.ModuleDict()
        self.route = []
        for i, sid in enumerate(model.slot_order):
            slot = model.slot(sid)
            if slot is None:
                continue
            seed = slot.blueprint.build(slot.channels)
            seed.load_state_dict(params["slots"][sid]["seed"])
            self.seeds[sid] = seed
            self.route.append((i, model.host.surface_index(sid), sid, is_isolated(slot.topology, model.stage(sid))))
        self.register_buffer("alphas", alphas.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, start = x, 0
        for i, surface, sid, isolate in self.route:
            h = self.host(h, start, surface)
            seed_input = h.detach() if isolate else h
            # esper-lite feeds seeds a contiguous copy of channels_last features, as esper_func does.
            seed_input = seed_input.contiguous()
            h = torch.lerp(h, self.seeds[sid](seed_input), self.alphas[i].clamp(0, 1))
            start = surface
        return self.host(h, start, None)
