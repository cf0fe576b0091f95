"""The pure train step: parity with a stateful loop, masks, gradient telemetry, purity."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import esper_func as ef
from esper_func.lifecycle.measure import gradient_health
from esper_func.train import init_train_state, record_step_gradients, train_step, update_mask

S = ef.SeedStage
HOST = ef.CNNHost(in_channels=1, n_blocks=2, base_channels=4, num_classes=4, memory_format="contiguous_format")



def with_alpha(state: ef.SeedState, alpha: float) -> ef.SeedState:
    """``state`` with its controller (the one home of alpha) at ``alpha``."""
    return dataclasses.replace(state, alpha_controller=dataclasses.replace(state.alpha_controller, alpha=alpha))


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
    state = ef.sync_telemetry(state, epoch=1, gradient_health=1.0, has_exploding=False)  # permissive G2 needs it
    for target in (S.TRAINING, S.BLENDING):
        if stage >= target:
            state, result, _ = ef.advance(state, ef.Gates(permissive=True, min_blending_epochs=0), target)
            assert result.passed, result
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
    seeds = {"r0c0": with_alpha(seeds["r0c0"], 0.5)}
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
    fading, _ = ef.schedule_prune(dataclasses.replace(seeds["r0c0"], alpha_controller=holding_at), steps=3)
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
        state = with_alpha(dataclasses.replace(ef.germinate("r0c0", "mlp", topology="transformer"), stage=S.BLENDING), 0.5)
        train_state = init_train_state(model, p, buffers, optimizer=ef.optim.sgd(0.1), seeds={"r0c0": state})
        train_step(model, train_state, (tokens, tokens), optimizer=ef.optim.sgd(0.1), loss_fn=F.cross_entropy)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


# --------------------------------------------------------------------------- telemetry as tensors


def test_metrics_are_tensors_and_seed_health_matches_measure_gradient_health():
    model, params, buffers, seeds = seeded(S.BLENDING)
    optimizer = ef.optim.sgd(0.1)
    state = init_train_state(model, params, buffers, optimizer=optimizer, seeds=seeds)
    x, y = data().train
    _, metrics = train_step(model, state, (x, y), optimizer=optimizer, loss_fn=F.cross_entropy)
    assert all(isinstance(t, torch.Tensor) for t in torch.utils._pytree.tree_leaves(metrics))
    # the seed's gradients, by hand
    leaf = torch.utils._pytree.tree_map(lambda t: t.clone().requires_grad_(), params)
    out, _ = ef.apply(model, leaf, buffers, ef.alphas_of(model, seeds), x, train=True)
    grads = torch.autograd.grad(F.cross_entropy(out, y), torch.utils._pytree.tree_leaves(leaf["slots"]["r0c0"]))
    expected = gradient_health(list(grads))
    got = metrics.seed_health["r0c0"]
    torch.testing.assert_close(got.norm, expected.norm, rtol=1e-5, atol=0)
    torch.testing.assert_close(got.health, expected.health)
    assert bool(got.has_vanishing) == bool(expected.has_vanishing) and bool(got.has_exploding) == bool(expected.has_exploding)


def test_record_step_gradients_folds_finite_telemetry_and_skips_non_finite():
    model, params, buffers, seeds = seeded(S.BLENDING)
    optimizer = ef.optim.sgd(0.1)
    state = init_train_state(model, params, buffers, optimizer=optimizer, seeds=seeds)
    _, metrics = train_step(model, state, data().train, optimizer=optimizer, loss_fn=F.cross_entropy)
    folded = record_step_gradients(state.seeds, metrics)
    health = metrics.seed_health["r0c0"]
    expected = ef.record_gradients(
        state.seeds["r0c0"], host_grad_norm=float(metrics.host_grad_norm), seed_grad_norm=float(health.norm),
        gradient_norm=float(health.norm), gradient_health=float(health.health), has_exploding=bool(health.has_exploding), has_vanishing=bool(health.has_vanishing),
    )
    assert folded["r0c0"] == expected and folded["r0c0"].telemetry.gradient_health is not None
    for broken in (
        dataclasses.replace(metrics, loss=torch.tensor(float("nan"))),
        dataclasses.replace(metrics, host_grad_norm=torch.tensor(float("inf"))),
        dataclasses.replace(metrics, seed_leaf_norms={"r0c0": torch.tensor([1.0, float("nan"), 2.0], dtype=torch.float64)}),
    ):
        assert record_step_gradients(state.seeds, broken) == state.seeds  # nothing recorded, nothing raised


def test_a_non_finite_step_does_not_raise():
    model, params, buffers, seeds = seeded(S.BLENDING)
    optimizer = ef.optim.sgd(0.1)
    state = init_train_state(model, params, buffers, optimizer=optimizer, seeds=seeds)
    x, y = data().train
    _, metrics = train_step(model, state, (x * float("inf"), y), optimizer=optimizer, loss_fn=F.cross_entropy)
    assert not torch.isfinite(metrics.loss) or not torch.isfinite(metrics.host_grad_norm)


def test_the_epoch_loop_records_the_last_steps_gradients_once():
    from esper_func.controller import Action, ActionKind
    from esper_func.fit import FitConfig, LoopState, run_epoch

    model, params, buffers, seeds = seeded(S.BLENDING)
    seeds = {"r0c0": with_alpha(seeds["r0c0"], 0.5)}
    optimizer = ef.optim.sgd(0.05)
    state = init_train_state(model, params, buffers, optimizer=optimizer, seeds=seeds)
    ds = data(48)
    config = FitConfig(epochs=1, batch_size=16, gates=ef.Gates(permissive=True))
    wait = lambda observation: Action(kind=ActionKind.WAIT, reason="test")  # noqa: E731
    _, after, _, record = run_epoch(model, state, LoopState(), ds, optimizer=optimizer, config=config,
                                    registry=ef.default_registry(), controller=wait)
    # replay the epoch's steps by hand: the recorded telemetry is the last step's, recorded once
    replay = state
    for indices in ef.data.batch_indices(ds.x_train.shape[0], 16, shuffle=True, seed=0, epoch=1):
        replay, last = train_step(model, replay, (ds.x_train[indices], ds.y_train[indices]), optimizer=optimizer, loss_fn=F.cross_entropy)
    metrics = after.seeds["r0c0"].metrics
    assert metrics.gradient_norm_avg == pytest.approx(0.1 * float(last.seed_health["r0c0"].norm), rel=1e-6)
    assert after.seeds["r0c0"].telemetry.gradient_health == pytest.approx(float(last.seed_health["r0c0"].health))
    assert tree_equal(after.params, replay.params)
    assert isinstance(record.train_loss, float) and isinstance(record.train_accuracy, float)


def test_no_value_is_read_back_to_python_during_a_step(monkeypatch):
    """No .item(), float(), bool() or .tolist() on a tensor: on a GPU each would wait for the device."""
    model, params, buffers, seeds = seeded(S.BLENDING)
    optimizer = ef.optim.adamw(1e-2)
    state = init_train_state(model, params, buffers, optimizer=optimizer, seeds=seeds)
    batch = data().train
    state, _ = train_step(model, state, batch, optimizer=optimizer, loss_fn=F.cross_entropy)  # warm the memos

    def refuse(*args, **kwargs):
        raise AssertionError("a tensor value was read back to the host inside the train step")

    for name in ("item", "tolist", "__float__", "__bool__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    state, metrics = train_step(model, state, batch, optimizer=optimizer, loss_fn=F.cross_entropy)
    monkeypatch.undo()
    assert state.step == 2 and float(metrics.loss) > 0


# --------------------------------------------------------------------------- torch.compile


def _graphs(counter) -> int:
    """Graphs with operations in them (Dynamo also hands over an empty one before the step's first graph break)."""
    return sum(1 for g in counter.graphs if any(node.op == "call_function" for node in g.graph.nodes))


def _compiled(model, optimizer_box, loss=F.cross_entropy, backend="aot_eager"):
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    counter = CompileCounterWithBackend(backend)
    step = torch.compile(
        lambda state, batch: train_step(model, state, batch, optimizer=optimizer_box["opt"], loss_fn=loss), backend=counter
    )
    return step, counter


@pytest.mark.parametrize("make_optimizer", [lambda lr: ef.optim.sgd(lr, momentum=0.9, weight_decay=1e-3), lambda lr: ef.optim.adamw(lr)], ids=["sgd", "adamw"])
def test_the_compiled_step_equals_eager_and_does_not_recompile_for_new_alphas_data_or_lr(make_optimizer):
    model, params, buffers, seeds = seeded(S.BLENDING)
    seeds = {"r0c0": with_alpha(seeds["r0c0"], 0.3)}
    box = {"opt": make_optimizer(0.05)}
    step, counter = _compiled(model, box)
    state = init_train_state(model, params, buffers, optimizer=box["opt"], seeds=seeds)
    eager = state
    ds = data(64)
    batches = list(ef.data.batches(ds.train, 16, shuffle=True, seed=0, epoch=1))
    before = clone_tree(state)
    for i, batch in enumerate(batches):
        # new alphas, new data and a new learning rate on every step
        seeds = {"r0c0": with_alpha(state.seeds["r0c0"], 0.3 + 0.1 * i)}
        box["opt"] = make_optimizer(0.05 / (i + 1))
        state, metrics = step(dataclasses.replace(state, seeds=seeds), batch)
        eager, expected = train_step(model, dataclasses.replace(eager, seeds=seeds), batch, optimizer=box["opt"], loss_fn=F.cross_entropy)
        for a, b in zip(torch.utils._pytree.tree_leaves((state.params, state.opt_state, state.buffers, metrics)),
                        torch.utils._pytree.tree_leaves((eager.params, eager.opt_state, eager.buffers, expected)), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert state.step == eager.step == i + 1
        if i == 0:
            compiled_once = counter.frame_count
    assert counter.frame_count == compiled_once  # never recompiled
    assert _graphs(counter) == 2  # the forward (AOTAutograd compiles its backward with it) and the update
    assert tree_equal(before.params, params)  # the inputs were not touched


def test_the_compiled_step_recompiles_only_for_structure():
    model, params, buffers, seeds = seeded(S.BLENDING)
    box = {"opt": ef.optim.sgd(0.05)}
    step, counter = _compiled(model, box, backend="eager")
    state = init_train_state(model, params, buffers, optimizer=box["opt"], seeds=seeds)
    batch = data().train
    state, _ = step(state, batch)
    state, _ = step(state, batch)
    assert _graphs(counter) == 2
    # the seed starts blending out: its parameters freeze, so the update is another graph (the forward is not)
    holding_at = ef.AlphaController(alpha=0.8, alpha_start=0.8, alpha_target=0.8)
    fading, _ = ef.schedule_prune(dataclasses.replace(state.seeds["r0c0"], alpha_controller=holding_at), steps=3)
    frozen, _ = step(dataclasses.replace(state, seeds={"r0c0": fading}), batch)
    assert _graphs(counter) == 3
    assert tree_equal(frozen.params["slots"], state.params["slots"])


def test_the_compiled_step_leaves_its_inputs_unchanged():
    model, params, buffers, seeds = seeded(S.BLENDING)
    box = {"opt": ef.optim.adamw(1e-2)}
    step, _ = _compiled(model, box)
    state = init_train_state(model, params, buffers, optimizer=box["opt"], seeds=seeds)
    batch = data().train
    before = clone_tree((state, batch))
    step(state, batch)
    step(state, batch)
    assert tree_equal((state, batch), before)
