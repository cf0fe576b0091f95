"""The GPU path: the train step, the optimizers, the sweep and tournaments on CUDA (skipped without a GPU; CI is CPU-only).

``bench/cuda_check.py`` runs the same checks and the GPU timings in one script.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import esper_func as ef
from esper_func.train import init_train_state, train_step

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

S = ef.SeedStage
HOST = ef.CNNHost(n_blocks=2, base_channels=8, num_classes=4)


def to(tree, device):
    return torch.utils._pytree.tree_map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, tree)


def problem():
    model, params, buffers = ef.build_model(HOST, ["r0c0", "r0c1"], generator=torch.Generator().manual_seed(0))
    seeds = {}
    for k, sid in enumerate(model.slot_order):
        model, params = ef.add_seed(model, params, sid, ef.default_registry(), "conv_light", generator=torch.Generator().manual_seed(k + 1))
        state, _, _ = ef.advance(ef.germinate(sid, "conv_light"), ef.Gates(permissive=True), S.TRAINING)
        seeds[sid] = dataclasses.replace(state, stage=S.BLENDING, alpha=0.4)
    model, params = ef.set_stages(model, params, seeds)
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(16, 3, 16, 16, generator=g), torch.randint(0, 4, (16,), generator=g)
    return model, params, buffers, seeds, x, y


@pytest.mark.parametrize("make", [lambda: ef.optim.sgd(0.05, momentum=0.9, weight_decay=1e-3), lambda: ef.optim.adamw(1e-3)], ids=["sgd", "adamw"])
def test_the_step_on_the_gpu_equals_the_cpu_step_and_never_waits_for_the_device(make):
    model, params, buffers, seeds, x, y = problem()
    optimizer = make()
    cpu = init_train_state(model, params, buffers, optimizer=optimizer, seeds=seeds)
    gpu = init_train_state(model, to(params, "cuda"), to(buffers, "cuda"), optimizer=optimizer, seeds=seeds)
    batch = (x.cuda(), y.cuda())
    cpu, _ = train_step(model, cpu, (x, y), optimizer=optimizer, loss_fn=F.cross_entropy)
    gpu, _ = train_step(model, gpu, batch, optimizer=optimizer, loss_fn=F.cross_entropy)  # warms the memos
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        gpu, metrics = train_step(model, gpu, batch, optimizer=optimizer, loss_fn=F.cross_entropy)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    cpu, expected = train_step(model, cpu, (x, y), optimizer=optimizer, loss_fn=F.cross_entropy)
    for a, b in zip(torch.utils._pytree.tree_leaves(gpu.params), torch.utils._pytree.tree_leaves(cpu.params), strict=True):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(metrics.loss.cpu(), expected.loss, rtol=1e-2, atol=1e-3)


def test_the_compiled_step_on_the_gpu_equals_eager():
    model, params, buffers, seeds, x, y = problem()
    optimizer = ef.optim.sgd(0.05, momentum=0.9)
    state = init_train_state(model, to(params, "cuda"), to(buffers, "cuda"), optimizer=optimizer, seeds=seeds)
    batch = (x.cuda(), y.cuda())
    torch._dynamo.reset()
    step = torch.compile(lambda s, b: train_step(model, s, b, optimizer=optimizer, loss_fn=F.cross_entropy))
    compiled, _ = step(state, batch)
    eager, _ = train_step(model, state, batch, optimizer=optimizer, loss_fn=F.cross_entropy)
    for a, b in zip(torch.utils._pytree.tree_leaves(compiled.params), torch.utils._pytree.tree_leaves(eager.params), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_the_sweep_on_the_gpu_equals_stacked_predict():
    model, params, buffers, _, x, _ = problem()
    params, buffers, x = to(params, "cuda"), to(buffers, "cuda"), x.cuda()
    grid = ef.alpha_grid("full_factorial", model.n_slots).cuda()
    expected = torch.stack([ef.predict(model, params, buffers, row, x) for row in grid])
    torch.testing.assert_close(ef.sweep(model, params, buffers, x, grid), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("vectorize", [None, False])
def test_candidates_on_the_gpu_train_as_each_alone(vectorize):
    registry = ef.default_registry()
    model, params, buffers = ef.build_model(HOST, ["r0c0"], generator=torch.Generator().manual_seed(0), device="cuda")
    names = ["conv_light", "norm", "conv_light"]
    gens = [torch.Generator().manual_seed(i) for i in range(len(names))]
    state, _, _ = ef.advance(ef.germinate("r0c0", "candidates"), ef.Gates(permissive=True), S.TRAINING)
    g = torch.Generator().manual_seed(3)
    data = [to((torch.randn(16, 3, 16, 16, generator=g), torch.randint(0, 4, (16,), generator=g)), "cuda") for _ in range(3)]
    optimizer = ef.optim.adamw(1e-3)

    def train(m, p):
        s = init_train_state(m, p, buffers, optimizer=optimizer, seeds={"r0c0": state})
        for batch in data:
            s, _ = train_step(m, s, batch, optimizer=optimizer, loss_fn=F.cross_entropy)
        return s

    group_model, group_params = ef.add_candidates(model, params, "r0c0", registry, names, generators=gens, vectorize=vectorize)
    together = ef.candidate_params(group_model, train(group_model, group_params).params, "r0c0")
    for i, name in enumerate(names):
        alone_model, alone_params = ef.add_seed(model, params, "r0c0", registry, name, generator=gens[i], stage=S.TRAINING)
        alone = train(alone_model, alone_params).params["slots"]["r0c0"]["seed"]
        for key, tensor in alone.items():
            torch.testing.assert_close(together[i]["seed"][key], tensor, rtol=1e-3, atol=1e-4)
