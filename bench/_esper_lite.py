"""esper-lite's own models, side by side with esper_func ones holding the same weights (benchmarks only).

esper-lite is imported from the source tree named by ``ESPER_LITE_SRC``
(the directory that contains its ``esper`` package, commit 2016337e). It is
never imported by the package itself.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

import esper_func as ef

ENV = "ESPER_LITE_SRC"


def available() -> str | None:
    """The esper-lite source directory if ``ESPER_LITE_SRC`` names one that imports, else ``None``."""
    src = os.environ.get(ENV)
    if not src:
        return None
    if src not in sys.path:
        sys.path.insert(0, src)
    try:
        import esper.kasmina.host  # noqa: F401
    except ImportError as exc:
        print(f"{ENV}={src}: cannot import esper-lite ({exc}); skipping the esper-lite comparison", file=sys.stderr)
        return None
    return src


@dataclasses.dataclass
class Pair:
    """An esper_func model and esper-lite's ``MorphogeneticModel`` with the same weights and alphas."""

    model: ef.Model
    params: dict
    buffers: dict
    seeds: dict
    lite: Any  # esper.kasmina.host.MorphogeneticModel
    slot_ids: tuple[str, ...]


def blending_pair(
    host: ef.CNNHost | ef.TransformerHost,
    slot_ids: Sequence[str],
    blueprint: str,
    *,
    alpha: float = 0.3,
    jitter: float = 0.05,
) -> Pair:
    """``blueprint`` seeds BLENDING at ``alpha`` in ``slot_ids`` of both projects, same weights.

    Seed weights get a little noise (several blueprints start as the
    identity), so blends and sweeps compute something.
    """
    from esper.kasmina.host import CNNHost as LiteCNN
    from esper.kasmina.host import MorphogeneticModel
    from esper.kasmina.host import TransformerHost as LiteTransformer
    from esper.leyline import SeedStage as LiteStage

    registry = ef.default_registry()
    model, params, buffers = ef.build_model(host, list(slot_ids), generator=torch.Generator().manual_seed(0))
    seeds = {}
    for k, sid in enumerate(model.slot_order):
        model, params = ef.add_seed(model, params, sid, registry, blueprint, generator=torch.Generator().manual_seed(k + 1))
        state = ef.germinate(sid, blueprint, topology=host.topology)
        state, _, _ = ef.advance(state, ef.Gates(permissive=True, min_blending_epochs=0), ef.SeedStage.TRAINING)
        seeds[sid] = dataclasses.replace(state, stage=ef.SeedStage.BLENDING, alpha_controller=ef.AlphaController(alpha=alpha))
    model, params = ef.set_stages(model, params, seeds)
    g = torch.Generator().manual_seed(7)
    params = {
        "host": params["host"],
        "slots": {
            sid: {grp: {k: v + jitter * torch.randn(v.shape, generator=g) for k, v in d.items()} for grp, d in sp.items()}
            for sid, sp in params["slots"].items()
        },
    }

    if isinstance(host, ef.CNNHost):
        lite_host = LiteCNN(
            num_classes=host.num_classes, n_blocks=host.n_blocks, base_channels=host.base_channels,
            pool_layers=host.pool_layers,
            memory_format=torch.channels_last if host.memory_format == "channels_last" else torch.contiguous_format,
        )
    else:
        lite_host = LiteTransformer(
            vocab_size=host.vocab_size, n_embd=host.n_embd, n_head=host.n_head, n_layer=host.n_layer,
            block_size=host.block_size, dropout=host.dropout, num_segments=host.num_segments,
        )
    lite = MorphogeneticModel(lite_host, "cpu", slots=list(slot_ids))
    for sid in slot_ids:
        lite.germinate_seed(blueprint, f"seed-{sid}", slot=sid)
        slot = lite.seed_slots[sid]
        slot.advance_stage(LiteStage.TRAINING)
        # straight to BLENDING (its gates want epochs of history); the stage hook sets isolation
        assert slot.state.transition(LiteStage.BLENDING)
        slot._on_enter_stage(LiteStage.BLENDING, LiteStage.TRAINING)
        slot.set_alpha(alpha)
    state_dict = ef.to_state_dict(model, params, buffers)
    missing, unexpected = lite.load_state_dict(state_dict, strict=False)
    if unexpected or any(not key.endswith("_extra_state") for key in missing):
        raise RuntimeError(f"esper-lite model does not take esper_func's weights: missing {missing}, unexpected {unexpected}")
    return Pair(model, params, buffers, seeds, lite, tuple(slot_ids))


def check_same_outputs(pair: Pair, x: torch.Tensor) -> None:
    """Both models compute the same eval outputs (to float rounding)."""
    pair.lite.eval()
    with torch.no_grad():
        theirs = pair.lite(x)
        ours = ef.predict(pair.model, pair.params, pair.buffers, ef.alphas_of(pair.model, pair.seeds), x)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def lite_train_step(
    pair: Pair, x: torch.Tensor, y: torch.Tensor, make_optimizer: Callable[[Any], torch.optim.Optimizer], *, compiled: bool = False
) -> Callable[[], None]:
    """esper-lite's training step as its epoch loop runs it (``simic/training/helpers.py``).

    ``zero_grad``; forward; ``compute_task_loss_with_metrics`` (cross entropy
    and the argmax hits); ``loss.backward()``; ``optimizer.step()``; loss and
    hits accumulated as tensors (no host sync per step). No gradient
    collection (its default when telemetry is off).

    ``compiled=True`` runs it as esper-lite's ``compiled_train_step`` does:
    ``torch.compile(mode="default", dynamic=True)`` of the forward and the
    loss, on a copy of the model; ``backward`` and the optimizer eagerly.
    """
    compute_task_loss_with_metrics = _lite_loss_module().compute_task_loss_with_metrics
    lite = copy.deepcopy(pair.lite).train() if compiled else pair.lite.train()
    optimizer = make_optimizer(lite.parameters())
    criterion = torch.nn.CrossEntropyLoss()
    task = "classification" if pair.model.host.topology == "cnn" else "lm"
    running_loss = torch.zeros(1, device=x.device)
    running_correct = torch.zeros(1, device=x.device, dtype=torch.long)

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        return lite(inputs)

    run = torch.compile(forward, mode="default", dynamic=True) if compiled else forward

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss, correct, total = compute_task_loss_with_metrics(run(x), y, criterion, task)
        loss.backward()
        optimizer.step()
        running_loss.add_(loss.detach() * total)
        running_correct.add_(correct)

    return step


def _lite_loss_module() -> Any:
    """esper-lite's ``esper/utils/loss.py``, loaded by path (its package ``__init__`` wants torchvision)."""
    import esper

    name = "_esper_lite_loss"
    if name not in sys.modules:
        path = Path(esper.__file__).parent / "utils" / "loss.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


@contextlib.contextmanager
def forced(lite: Any, slot_ids: Sequence[str], row: Sequence[float]) -> Iterator[None]:
    """esper-lite's ``force_alpha`` on every slot at once (nested contexts)."""
    with contextlib.ExitStack() as stack:
        for sid, value in zip(slot_ids, row, strict=True):
            stack.enter_context(lite.seed_slots[sid].force_alpha(float(value)))
        yield


def lite_sweeps(pair: Pair, x: torch.Tensor, grid: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
    """esper-lite's two ways to evaluate every row of ``grid``: the ``force_alpha`` loop and ``fused_forward``."""
    lite = pair.lite.eval()
    columns = [pair.model.index(sid) for sid in pair.slot_ids]
    rows = grid[:, columns].tolist()
    k, batch = grid.shape[0], x.shape[0]
    x_rep = x.repeat(k, *([1] * (x.ndim - 1)))
    trailing = (1,) * (x.ndim - 1) if pair.model.host.topology == "cnn" else (1, 1)
    overrides = {
        sid: grid[:, c].repeat_interleave(batch).reshape(k * batch, *trailing).contiguous()
        for sid, c in zip(pair.slot_ids, columns, strict=True)
    }

    def force_alpha_loop() -> torch.Tensor:
        outs = []
        with torch.inference_mode():
            for row in rows:
                with forced(lite, pair.slot_ids, row):
                    outs.append(lite(x))
        return torch.stack(outs)

    def fused_forward() -> torch.Tensor:
        with torch.inference_mode():
            out = lite.fused_forward(x_rep, overrides)
        return out.reshape(k, batch, *out.shape[1:])

    return {"force_alpha loop": force_alpha_loop, "fused_forward": fused_forward}
