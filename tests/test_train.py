"""The pure train step: parity with a stateful loop, masks, gradient telemetry, purity."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import esper_func as ef
from esper_func.train import init_train_state, record_step_gradients, train_step, update_mask

S = ef.SeedStage
HOST = ef.CNNHost(in_channels=1, n_blocks=2, base_channels=4, num_classes=4, memory_format="contiguous_format")


def data(n: int = 32, seed: int = 0):
    return ef.data.synthetic_images(n, classes=4, size=8, seed=seed, val_fraction=0.25)


def clone_tree(tree):
    return torch.utils._pytree.tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, tree)


def tree_equal(a, b) -> bool:
    la, lb = torch.utils._pytree.tree_leaves(a), torch.utils._pytree.tree_leaves(b)
    return len(la) == len(lb) and all(
        (torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y) for x, y in zip(la, lb, strict=True)
    )


def seeded(stage: S):
    model, params, buffers = ef.build_model(HOST, HOST.slot_ids, generator=torch.Generator().manual_seed(0))
    model, params = ef.add_seed(model, params, "r0c0", ef.default_registry(), "conv_light", stage=stage)
    state = ef.germinate("r0c0", "conv_light", seed_params=model.slot("r0c0").num_params(), host_params=100)
    for target in (S.TRAINING, S.BLENDING):
        if stage >= target:
            state, _, _ = ef.advance(state, ef.Gates(permissive=True, min_blending_epochs=0), target)
    return model, params, buffers, {"r0c0": state}


@pytest.mark.parametrize(
    "make_optimizer, make_torch",
    [
        (lambda: ef.optim.sgd(0.05, momentum=0.9, weight_decay=1e-3),
         lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3)),
        (lambda: ef.optim.adamw(1e-2), lambda ps: torch.optim.AdamW(ps, lr=1e-2)),
    ],
    ids=["sgd", "adamw"],
)
def test_train_steps_match_a_stateful_module_with_torch_optim(make_optimizer, make_torch):
    ds = data(64)
    model, params, buffers = ef.build_model(HOST, HOST.slot_ids, generator=torch.Generator().manual_seed(1))
    optimizer = make_optimizer()
    state = init_train_state(model, params, buffers, optimizer=optimizer)

    module = HOST.build_module()
    module.load_state_dict({**params["host"], **buffers["host"]})
    module.train()
    torch_opt = make_torch(module.parameters())
    for epoch in range(100):  # 300 steps
        for x, y in ef.data.batches(ds.train, 16, shuffle=True, seed=0, epoch=epoch):
            state, _ = train_step(model, state, (x, y), optimizer=optimizer, loss_fn=F.cross_entropy)
            torch_opt.zero_grad()
            F.cross_entropy(module(x), y).backward()
            torch_opt.step()
    for name, tensor in module.state_dict().items():
        mine = state.params["host"].get(name, state.buffers["host"].get(name))
        torch.testing.assert_close(mine, tensor, rtol=1e-6, atol=1e-6, msg=name)
    assert state.step == 300


def test_train_step_is_pure_and_deterministic():
    model, params, buffers, seeds = seeded(S.BLENDING)
    optimizer = ef.optim.adamw(1e-2)
    state = init_train_state(model, params, buffers, optimizer=optimizer, seeds=seeds, key=5)
    x, y = data().train
    before = clone_tree(state)
    one, m1 = train_step(model, state, (x, y), optimizer=optimizer, loss_fn=F.cross_entropy)
    assert tree_equal(state, before)
    two, m2 = train_step(model, state, (x, y), optimizer=optimizer, loss_fn=F.cross_entropy)
    assert tree_equal(one.params, two.params) and tree_equal(m1, m2)
    assert one.step == 1 and state.step == 0


def test_a_blending_seed_learns_and_its_gradient_telemetry_is_recorded():
    model, params, buffers, seeds = seeded(S.BLENDING)
    seeds = {"r0c0": dataclasses.replace(seeds["r0c0"], alpha=0.5)}
    optimizer = ef.optim.sgd(0.1)
    state = init_train_state(model, params, buffers, optimizer=optimizer, seeds=seeds)
    assert state.seeds["r0c0"].metrics.seed_gradient_norm_ratio is None
    new, metrics = train_step(model, state, data().train, optimizer=optimizer, loss_fn=F.cross_entropy)
    assert not tree_equal(new.params["slots"], state.params["slots"])
    assert not tree_equal(new.params["host"], state.params["host"])
    assert metrics.seed_grad_norms["r0c0"] > 0
    assert new.seeds == state.seeds  # the step leaves the lifecycle alone
    recorded = record_step_gradients(new.seeds, metrics)
    assert recorded["r0c0"].metrics.seed_gradient_norm_ratio is not None


def test_germinated_and_blending_out_seeds_are_frozen():
    model, params, buffers, seeds = seeded(S.GERMINATED)
    optimizer = ef.optim.sgd(0.1, weight_decay=0.1)
    state = init_train_state(model, params, buffers, optimizer=optimizer, seeds=seeds)
    assert update_mask(model, state.seeds) == {"host": True, "slots": {"r0c0": False}}
    new, _ = train_step(model, state, data().train, optimizer=optimizer, loss_fn=F.cross_entropy)
    assert tree_equal(new.params["slots"], state.params["slots"])  # not even weight decay

    model, params, buffers, seeds = seeded(S.BLENDING)
    holding_at = ef.AlphaController(alpha=0.8, alpha_start=0.8, alpha_target=0.8)  # HOLD mode
    fading, _ = ef.schedule_prune(dataclasses.replace(seeds["r0c0"], alpha=0.8, alpha_controller=holding_at), steps=3)
    assert not ef.trainable(fading)
    state = init_train_state(model, params, buffers, optimizer=optimizer, seeds={"r0c0": fading})
    new, metrics = train_step(model, state, data().train, optimizer=optimizer, loss_fn=F.cross_entropy)
    assert tree_equal(new.params["slots"], state.params["slots"])
    assert metrics.seed_grad_norms["r0c0"] > 0  # the forward graph is intact ("ghost gradients")


def test_dropout_randomness_comes_from_key_and_step():
    host = ef.TransformerHost(vocab_size=16, n_embd=8, n_head=2, n_layer=2, block_size=8, num_segments=2, dropout=0.5)
    model, params, buffers = ef.build_model(host, host.slot_ids)
    optimizer = ef.optim.sgd(0.1)
    x = torch.randint(0, 16, (4, 8), generator=torch.Generator().manual_seed(0))

    def loss(logits, targets):
        return F.cross_entropy(logits.reshape(-1, 16), targets.reshape(-1))

    def step(key: int, step_count: int):
        state = dataclasses.replace(init_train_state(model, params, buffers, optimizer=optimizer, key=key), step=step_count)
        return train_step(model, state, (x, x), optimizer=optimizer, loss_fn=loss)[1].loss

    assert step(1, 0) == step(1, 0)
    assert step(1, 0) != step(2, 0)
    assert step(1, 0) != step(1, 1)


def test_sequence_models_train_with_the_plain_cross_entropy():
    host = ef.TransformerHost(vocab_size=16, n_embd=8, n_head=2, n_layer=2, block_size=8, num_segments=2, dropout=0.0)
    model, params, buffers = ef.build_model(host, host.slot_ids)
    optimizer = ef.optim.sgd(0.1)
    tokens = torch.randint(0, 16, (4, 8), generator=torch.Generator().manual_seed(0))
    state = init_train_state(model, params, buffers, optimizer=optimizer)
    new, metrics = train_step(model, state, (tokens, tokens), optimizer=optimizer, loss_fn=F.cross_entropy)
    logits = ef.predict(model, params, buffers, torch.zeros(model.n_slots), tokens)
    expected = F.cross_entropy(logits.reshape(-1, 16), tokens.reshape(-1))
    assert float(metrics.loss) == pytest.approx(float(expected), rel=1e-5)
    assert new.step == 1


def test_activation_checkpointing_gives_the_same_gradients():
    host = ef.TransformerHost(vocab_size=16, n_embd=8, n_head=2, n_layer=2, block_size=8, num_segments=2, dropout=0.0)
    base, params, buffers = ef.build_model(host, host.slot_ids)
    tokens = torch.randint(0, 16, (4, 8), generator=torch.Generator().manual_seed(0))
    grads = []
    for checkpoint in (False, True):
        model, p = ef.add_seed(base, params, "r0c0", ef.default_registry(), "mlp", stage=S.BLENDING, checkpoint=checkpoint)
        p = {"host": p["host"], "slots": {"r0c0": {"seed": {k: v + 0.1 for k, v in p["slots"]["r0c0"]["seed"].items()}}}}
        leaf = torch.utils._pytree.tree_map(lambda t: t.clone().requires_grad_(), p)
        out, _ = ef.apply(model, leaf, buffers, torch.tensor([0.5, 0.0]), tokens, train=True)
        grads.append(torch.autograd.grad(out.square().mean(), torch.utils._pytree.tree_leaves(leaf)))
        state = dataclasses.replace(ef.germinate("r0c0", "mlp", topology="transformer"), stage=S.BLENDING, alpha=0.5)
        train_state = init_train_state(model, p, buffers, optimizer=ef.optim.sgd(0.1), seeds={"r0c0": state})
        train_step(model, train_state, (tokens, tokens), optimizer=ef.optim.sgd(0.1), loss_fn=F.cross_entropy)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)
