"""Bad input at the public boundary raises an exported ``EsperFuncError`` subclass, and leaves the inputs alone.

One row per mistake a user can make; each must raise a subclass of
``ef.EsperFuncError`` that the top-level namespace (or its public module)
exports, with a message naming what was wrong.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import esper_func as ef

REGISTRY = ef.default_registry()
HOST = ef.CNNHost(in_channels=1, n_blocks=2, base_channels=4, num_classes=3, memory_format="contiguous_format")


def _setup() -> dict[str, Any]:
    model, params, buffers = ef.build_model(HOST, ["r0c0", "r0c1"], generator=torch.Generator().manual_seed(0))
    model, params = ef.add_seed(model, params, "r0c0", REGISTRY, "norm", generator=torch.Generator().manual_seed(1))
    state = ef.germinate("r0c0", "norm")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (4,), generator=g)
    alphas = ef.alphas_of(model, {"r0c0": state})
    opt = ef.optim.sgd(0.1)
    ts = ef.init_train_state(model, params, buffers, optimizer=opt, seeds={"r0c0": state})
    return dict(model=model, params=params, buffers=buffers, state=state, x=x, y=y, a=alphas, opt=opt, ts=ts)


S = _setup()
M, P, B, X, Y, A, OPT, TS, ST = S["model"], S["params"], S["buffers"], S["x"], S["y"], S["a"], S["opt"], S["ts"], S["state"]


def _step(state: Any, batch: Any) -> Any:
    return ef.train_step(M, state, batch, optimizer=OPT, loss_fn=F.cross_entropy)


def _corrupt_checkpoint(tmp: Path) -> Any:
    path = tmp / "bad.ckpt"
    path.write_bytes(b"not a checkpoint")
    return ef.checkpoint.load_checkpoint(path)


CASES: dict[str, tuple[Callable[[Path], Any], str]] = {
    # forward
    "predict: numpy input": (lambda _: ef.predict(M, P, B, A, X.numpy()), "torch.Tensor"),
    "predict: float64 input, float32 model": (lambda _: ef.predict(M, P, B, A, X.double()), "float64"),
    "predict: input without batch axis": (lambda _: ef.predict(M, P, B, A, X[0]), "4-D"),
    "predict: wrong channel count": (lambda _: ef.predict(M, P, B, A, torch.randn(4, 3, 8, 8)), "channels"),
    "predict: NaN alphas": (lambda _: ef.predict(M, P, B, torch.full_like(A, float("nan")), X), r"\[0, 1\]"),
    "predict: alpha above 1": (lambda _: ef.predict(M, P, B, torch.tensor([2.0, 0.0]), X), r"\[0, 1\]"),
    "predict: alphas of the wrong length": (lambda _: ef.predict(M, P, B, torch.zeros(5), X), r"\[2\]"),
    "predict: alphas as a list": (lambda _: ef.predict(M, P, B, [0.0, 0.0], X), "torch.Tensor"),
    "predict: integer alphas": (lambda _: ef.predict(M, P, B, torch.zeros(2, dtype=torch.long), X), "floating"),
    "predict: host params missing": (lambda _: ef.predict(M, {"host": {}, "slots": P["slots"]}, B, A, X), "host"),
    "apply: numpy input in training": (lambda _: ef.apply(M, P, B, A, X.numpy(), train=True), "torch.Tensor"),
    "sweep: 1-D grid": (lambda _: ef.sweep(M, P, B, X, torch.zeros(2)), r"\[K, 2\]"),
    "sweep: NaN in the grid": (lambda _: ef.sweep(M, P, B, X, torch.full((2, 2), float("nan"))), "NaN"),
    "sweep: numpy input": (lambda _: ef.sweep(M, P, B, X.numpy(), torch.zeros(2, 2)), "torch.Tensor"),
    "sweep: max_batch 0": (lambda _: ef.sweep(M, P, B, X, torch.zeros(2, 2), max_batch=0), "max_batch"),
    # structure
    "alphas_of: a list of states": (lambda _: ef.alphas_of(M, [ST]), "mapping"),
    "alphas_of: unknown slot id": (lambda _: ef.alphas_of(M, {"r9c9": ST}), "r9c9"),
    "build_model: integer dtype": (lambda _: ef.build_model(HOST, ["r0c0"], dtype=torch.int64), "floating"),
    "build_model: unknown slot": (lambda _: ef.build_model(HOST, ["r7c0"]), "r7c0"),
    "build_model: a slot twice": (lambda _: ef.build_model(HOST, ["r0c0", "r0c0"]), "more than once"),
    "add_seed: unknown blueprint": (lambda _: ef.add_seed(M, P, "r0c1", REGISTRY, "nope"), "nope"),
    "add_seed: occupied slot": (lambda _: ef.add_seed(M, P, "r0c0", REGISTRY, "norm"), "already holds"),
    "add_seed: start in PRUNED": (lambda _: ef.add_seed(M, P, "r0c1", REGISTRY, "norm", stage=ef.SeedStage.PRUNED), "PRUNED"),
    "add_seed: unknown blueprint kwarg": (lambda _: ef.add_seed(M, P, "r0c1", REGISTRY, "norm", bogus=3), "bogus"),
    "set_stages: live stage for an empty slot": (lambda _: ef.set_stages(M, P, {"r0c1": ef.SeedStage.TRAINING}), "empty"),
    "registry: unknown topology": (lambda _: REGISTRY.names("rnn"), "rnn"),
    "registry: unknown blueprint": (lambda _: REGISTRY.get("cnn", "nothing"), "nothing"),
    # lifecycle
    "SeedStage: unknown value": (lambda _: ef.SeedStage(99), "members"),
    "AlphaAlgorithm: unknown value": (lambda _: ef.AlphaAlgorithm(7), "ADD"),
    "record_accuracy: NaN": (lambda _: ef.record_accuracy(ST, float("nan")), "NaN"),
    "record_accuracy: a string": (lambda _: ef.record_accuracy(ST, "high"), "real number"),
    "record_gradients: negative norm": (lambda _: ef.record_gradients(ST, host_grad_norm=-1.0, seed_grad_norm=1.0), "host_grad_norm"),
    "Gates: negative epochs": (lambda _: ef.Gates(min_blending_epochs=-1), "min_blending_epochs"),
    "CNNHost: no blocks": (lambda _: ef.CNNHost(n_blocks=0), "n_blocks"),
    "TransformerHost: heads do not divide width": (lambda _: ef.TransformerHost(n_embd=10, n_head=3), "divisible"),
    # training
    "init_train_state: unknown seed slot": (lambda _: ef.init_train_state(M, P, B, optimizer=OPT, seeds={"zz": ST}), "zz"),
    "train_step: numpy inputs": (lambda _: _step(TS, (X.numpy(), Y)), "torch.Tensor"),
    "train_step: float class targets": (lambda _: _step(TS, (X, Y.float())), "class indices"),
    "train_step: a bare tensor as batch": (lambda _: _step(TS, X), "pair"),
    "train_step: batch sizes differ": (lambda _: _step(TS, (X, Y[:2])), "batch size"),
    "train_step: float64 inputs": (lambda _: _step(TS, (X.double(), Y)), "float64"),
    "train_step: params of another model": (lambda _: _step(dataclasses.replace(TS, params={"host": {}, "slots": {}}), (X, Y)), "host"),
    "sgd: NaN learning rate": (lambda _: ef.optim.sgd(float("nan")), "lr"),
    "sgd: negative learning rate": (lambda _: ef.optim.sgd(-1.0), "lr"),
    "adamw: beta above 1": (lambda _: ef.optim.adamw(1e-3, betas=(1.5, 0.9)), "beta"),
    # attribution
    "shapley: grid and values disagree": (lambda _: ef.shapley(torch.zeros(3), torch.zeros(3)), "rank 2"),
    "alpha_grid: zero players": (lambda _: ef.alpha_grid("full", 0), "n"),
    "alpha_grid: unknown strategy": (lambda _: ef.alpha_grid("everything", 3), "everything"),
    # interop and checkpoints
    "from_state_dict: foreign keys": (lambda _: ef.from_state_dict(M, {"a": 1}), "missing"),
    "from_state_dict: tensor of the wrong shape": (
        lambda _: ef.from_state_dict(M, {**ef.to_state_dict(M, P, B), "host.blocks.0.conv.weight": torch.zeros(1)}),
        "blocks.0.conv.weight",
    ),
    "load_checkpoint: missing path": (lambda tmp: ef.checkpoint.load_checkpoint(tmp / "nothing-here"), "does not exist"),
    "load_checkpoint: corrupt file": (_corrupt_checkpoint, "not an esper_func checkpoint"),
}


def _exported(exc_type: type) -> bool:
    """The exception class is reachable by its public name from ``esper_func`` or the module that raises it."""
    if getattr(ef, exc_type.__name__, None) is exc_type:
        return True
    module = __import__(exc_type.__module__, fromlist=["_"])
    return not exc_type.__name__.startswith("_") and getattr(module, exc_type.__name__, None) is exc_type


def _snapshot() -> list[torch.Tensor]:
    return [t.clone() for t in torch.utils._pytree.tree_leaves((P, B, X, Y, A, TS.params, TS.opt_state)) if isinstance(t, torch.Tensor)]


def test_the_sample_is_large_enough() -> None:
    assert len(CASES) >= 25


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_raises_an_exported_esper_func_error(name: str, tmp_path: Path) -> None:
    fn, pattern = CASES[name]
    before = _snapshot()
    with pytest.raises(ef.EsperFuncError, match=pattern) as info:
        fn(tmp_path)
    assert _exported(type(info.value)), f"{type(info.value).__module__}.{type(info.value).__name__} is not exported"
    assert str(info.value).strip(), "the message must say what was wrong"
    after = _snapshot()
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True)), "a failing call changed its inputs"
