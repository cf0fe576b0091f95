"""Counterfactual sweeps, evaluation and alpha gradients."""

from __future__ import annotations

import dataclasses
from functools import cache

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch.func import vmap

import esper_func as ef
import esper_func.testing as eft
from esper_func.counterfactual import sweep_plan_stats
from esper_func.errors import DTypeError, InvalidArgumentError, ShapeError

S = ef.SeedStage
A = ef.AlphaAlgorithm
CNN = ef.CNNHost(n_blocks=3, base_channels=8)  # 6 slots: r0c0 r1c0 r0c1 r1c1 r0c2 r1c2
TFM = ef.TransformerHost(vocab_size=32, n_embd=16, n_head=2, n_layer=4, block_size=8, num_segments=4, dropout=0.0)
STAGES = [S.GERMINATED, S.TRAINING, S.BLENDING, S.HOLDING, S.FOSSILIZED]


@cache
def registry() -> ef.Registry:
    return ef.default_registry()


@cache
def make(host, seeds: tuple[tuple[str, str, A, S], ...]):
    """A model with ``(slot_id, blueprint, algorithm, stage)`` seeds, weights moved off identity."""
    model, params, buffers = ef.build_model(host, host.slot_ids, generator=torch.Generator().manual_seed(0))
    for k, (sid, name, algorithm, stage) in enumerate(seeds):
        model, params = ef.add_seed(
            model, params, sid, registry(), name, algorithm=algorithm, stage=stage,
            generator=torch.Generator().manual_seed(k + 1),
        )
    g = torch.Generator().manual_seed(5)
    slots = {
        sid: {grp: {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in d.items()} for grp, d in sp.items()}
        for sid, sp in params["slots"].items()
    }
    return model, {"host": params["host"], "slots": slots}, buffers


def inputs(host, batch: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return host.example_input(batch, g, image_size=8) if host.topology == "cnn" else host.example_input(batch, g, seq_len=5)


def stacked_predict(model, params, buffers, x, grid):
    return torch.stack([ef.predict(model, params, buffers, row, x) for row in grid])


# --------------------------------------------------------------------------- equivalence


@given(eft.models(), st.data())
def test_sweep_equals_stacked_predict(drawn: eft.DrawnModel, data: st.DataObject) -> None:
    model, params, buffers = drawn
    grid = data.draw(eft.alpha_grids(model.n_slots))
    x = data.draw(eft.inputs(model))
    torch.testing.assert_close(
        ef.sweep(model, params, buffers, x, grid), stacked_predict(model, params, buffers, x, grid), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("max_batch", [1, 3, 7, 1000])
def test_chunked_sweeps_equal_the_unchunked_one(max_batch):
    seeds = tuple((sid, "conv_light", A.ADD, S.BLENDING) for sid in CNN.slot_ids[:4])
    model, params, buffers = make(CNN, seeds)
    grid = ef.alpha_grid("full_factorial", model.n_slots)
    x = inputs(CNN)
    full = ef.sweep(model, params, buffers, x, grid)
    torch.testing.assert_close(ef.sweep(model, params, buffers, x, grid, max_batch=max_batch), full, rtol=1e-6, atol=1e-6)


def test_prefix_tree_branches_only_where_alphas_differ():
    seeds = (("r0c0", "norm", A.ADD, S.BLENDING), ("r0c1", "norm", A.ADD, S.BLENDING), ("r0c2", "norm", A.ADD, S.BLENDING))
    model, _, _ = make(CNN, seeds)
    # r1c* are empty: their columns are ignored. The first routed slot never varies.
    grid = torch.tensor([[1.0, 0, 0, 0, 0, 0], [1.0, 1, 1, 1, 0, 0], [1.0, 0, 1, 0, 1, 1]])
    assert sweep_plan_stats(model, grid) == [1, 2, 3]
    assert sweep_plan_stats(model, ef.alpha_grid("full_factorial", 6)) == [2, 4, 8]


def test_sweep_is_the_same_under_vmap_compile_and_inference_mode():
    seeds = (("r0c0", "conv_light", A.GATE, S.BLENDING), ("r1c1", "conv_small", A.MULTIPLY, S.TRAINING))
    model, params, buffers = make(CNN, seeds)
    grid = ef.alpha_grid("ablation", model.n_slots)
    x = inputs(CNN)
    expected = stacked_predict(model, params, buffers, x, grid)
    with torch.inference_mode():
        torch.testing.assert_close(ef.sweep(model, params, buffers, x, grid), expected, rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()
    compiled = torch.compile(lambda inp: ef.sweep(model, params, buffers, inp, grid), backend="eager")
    torch.testing.assert_close(compiled(x), expected, rtol=1e-5, atol=1e-5)
    population = [make(CNN, seeds)[1], {**params, "slots": {s: {g: {k: v * 1.1 for k, v in d.items()} for g, d in sp.items()} for s, sp in params["slots"].items()}}]
    stacked = torch.utils._pytree.tree_map(lambda *ts: torch.stack(ts), *population)
    batched = vmap(lambda p: ef.sweep(model, p, buffers, x, grid))(stacked)
    for i, p in enumerate(population):
        torch.testing.assert_close(batched[i], stacked_predict(model, p, buffers, x, grid), rtol=1e-5, atol=1e-5)


def test_a_counterfactual_inside_a_training_step_changes_nothing():
    seeds = (("r0c0", "conv_light", A.ADD, S.BLENDING), ("r0c1", "norm", A.GATE, S.BLENDING))
    model, params, buffers = make(CNN, seeds)
    x, y = inputs(CNN, batch=4), torch.tensor([0, 1, 2, 3])
    alphas = torch.full((model.n_slots,), 0.6)

    def step(with_sweep: bool):
        leaves = torch.utils._pytree.tree_map(lambda t: t.clone().requires_grad_(t.is_floating_point()), params)
        out, new_buffers = ef.apply(model, leaves, buffers, alphas, x, train=True)
        if with_sweep:
            ef.sweep(model, leaves, buffers, x, ef.alpha_grid("full_factorial", model.n_slots))
        flat = torch.utils._pytree.tree_leaves(leaves)
        grads = torch.autograd.grad(F.cross_entropy(out, y), flat)
        return grads, new_buffers

    plain, plain_buffers = step(False)
    swept, swept_buffers = step(True)
    for a, b in zip(plain, swept, strict=True):
        assert torch.equal(a, b)
    for k in plain_buffers["host"]:
        assert torch.equal(plain_buffers["host"][k], swept_buffers["host"][k])


def test_sweep_leaves_inputs_unchanged():
    model, params, buffers = make(CNN, (("r0c0", "conv_light", A.ADD, S.BLENDING),))
    x = inputs(CNN)
    grid = ef.alpha_grid("full_factorial", model.n_slots)
    before = torch.utils._pytree.tree_map(torch.clone, (params, buffers, x, grid))
    ef.sweep(model, params, buffers, x, grid)
    after = (params, buffers, x, grid)
    for a, b in zip(torch.utils._pytree.tree_leaves(before), torch.utils._pytree.tree_leaves(after), strict=True):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- evaluate and gradients


def test_evaluate_streams_loss_and_accuracy_per_configuration():
    model, params, buffers = make(CNN, (("r0c0", "conv_light", A.ADD, S.BLENDING), ("r0c2", "norm", A.ADD, S.BLENDING)))
    grid = ef.alpha_grid("full_factorial", model.n_slots)[:5]
    xs = [inputs(CNN, batch=b, seed=s) for s, b in ((0, 3), (1, 2))]
    ys = [torch.tensor([1, 2, 3]), torch.tensor([4, 5])]
    result = ef.evaluate(model, params, buffers, zip(xs, ys, strict=True), grid, loss_fn=F.cross_entropy)
    x_all, y_all = torch.cat(xs), torch.cat(ys)
    for k, row in enumerate(grid):
        logits = ef.predict(model, params, buffers, row, x_all)
        torch.testing.assert_close(result.loss[k], F.cross_entropy(logits, y_all), rtol=1e-5, atol=1e-6)
        assert result.accuracy[k] == pytest.approx((logits.argmax(-1) == y_all).float().mean().item())
    assert result.count == 5


def test_evaluate_on_token_sequences_counts_tokens():
    model, params, buffers = make(TFM, (("r0c1", "lora", A.ADD, S.BLENDING),))
    x = inputs(TFM, batch=2)
    y = torch.randint(0, 32, x.shape, generator=torch.Generator().manual_seed(1))
    grid = ef.alpha_grid("ablation", model.n_slots)
    result = ef.evaluate(model, params, buffers, [(x, y)], grid, loss_fn=F.cross_entropy)
    logits = ef.predict(model, params, buffers, grid[0], x)
    torch.testing.assert_close(result.loss[0], F.cross_entropy(logits.reshape(-1, 32), y.reshape(-1)), rtol=1e-5, atol=1e-6)
    assert result.count == x.numel()


def test_alpha_sensitivity_is_the_gradient_of_the_loss():
    model, params, buffers = make(CNN, (("r0c0", "conv_light", A.ADD, S.BLENDING), ("r0c1", "norm", A.MULTIPLY, S.BLENDING)))
    x, y = inputs(CNN, batch=4), torch.tensor([0, 1, 2, 3])
    alphas = torch.full((model.n_slots,), 0.5)
    sens = ef.alpha_sensitivity(model, params, buffers, x, y, alphas, loss_fn=F.cross_entropy)
    leaf = alphas.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(F.cross_entropy(ef.predict(model, params, buffers, leaf, x), y), leaf)
    torch.testing.assert_close(sens, expected)
    empty = [i for i, sid in enumerate(model.slot_order) if model.slot(sid) is None]
    assert bool((sens[empty] == 0).all())
    eps = 1e-3
    i = model.index("r0c0")
    bumped = alphas.clone()
    bumped[i] += eps
    finite = (F.cross_entropy(ef.predict(model, params, buffers, bumped, x), y) - F.cross_entropy(ef.predict(model, params, buffers, alphas, x), y)) / eps
    assert sens[i].item() == pytest.approx(finite.item(), rel=1e-2, abs=1e-4)


# --------------------------------------------------------------------------- bad input


def test_bad_grids_raise_clear_errors():
    model, params, buffers = make(CNN, (("r0c0", "norm", A.ADD, S.BLENDING),))
    x = inputs(CNN)
    n = model.n_slots
    with pytest.raises(ShapeError, match=f"\\[K, {n}\\]"):
        ef.sweep(model, params, buffers, x, torch.zeros(2, n + 1))
    with pytest.raises(ShapeError, match="empty"):
        ef.sweep(model, params, buffers, x, torch.zeros(0, n))
    with pytest.raises(InvalidArgumentError, match="NaN"):
        ef.sweep(model, params, buffers, x, torch.full((1, n), float("nan")))
    with pytest.raises(InvalidArgumentError, match=r"\[0, 1\]"):
        ef.sweep(model, params, buffers, x, torch.full((1, n), 1.5))
    with pytest.raises(DTypeError):
        ef.sweep(model, params, buffers, x, torch.zeros(1, n, dtype=torch.long))
    with pytest.raises(InvalidArgumentError, match="max_batch"):
        ef.sweep(model, params, buffers, x, torch.zeros(1, n), max_batch=0)
    with pytest.raises(InvalidArgumentError, match="at least one batch"):
        ef.evaluate(model, params, buffers, [], torch.zeros(1, n), loss_fn=F.cross_entropy)


# --------------------------------------------------------------------------- the plan, the runner and the grid builder


@pytest.mark.parametrize("host", [CNN, TFM], ids=["cnn", "transformer"])
def test_sweep_outputs_are_bitwise_the_predict_outputs(host):
    """Each row is computed by the same operations on the same tensors as ``predict`` for that row."""
    slot_ids = host.slot_ids[:3]
    names = {"cnn": "conv_light", "transformer": "lora"}
    seeds = tuple((sid, names[host.topology], A.ADD, S.BLENDING) for sid in slot_ids)
    model, params, buffers = make(host, seeds)
    grid = ef.alpha_grid("full_factorial", model.n_slots)[:: max(1, 2 ** (model.n_slots - 3))]
    x = inputs(host, batch=4)
    with torch.no_grad():
        got = ef.sweep(model, params, buffers, x, grid)
        want = stacked_predict(model, params, buffers, x, grid)
    assert torch.equal(got, want)


def test_the_plan_is_a_prefix_tree_over_distinct_rows():
    from esper_func.counterfactual import SweepPlan, sweep_plan

    rows = sorted({(0.0, 0.0), (0.0, 1.0), (1.0, 0.5), (1.0, 1.0)})
    plan = sweep_plan(rows)
    assert isinstance(plan, SweepPlan) and plan.n_leaves == 4
    assert [[float(a) for a in level] for level in plan.alphas] == [[0.0, 1.0], [0.0, 1.0, 0.5]]
    # root: alpha 0 -> leaves 0 (0, 0) and 1 (0, 1); alpha 1 -> leaves 2 (1, 0.5) and 3 (1, 1)
    assert plan.root == ((0, ((0, 0), (1, 1))), (1, ((2, 2), (1, 3))))
    assert sweep_plan([()]).root == ()
    assert not hasattr(ef.model, "SweepPlan")  # the sweep has one home


def test_coalition_grid_keeps_the_real_alphas_of_players_that_are_on():
    from esper_func.attribution import coalition_grid

    base = torch.tensor([0.5, 0.0, 0.8, 1.0])
    coalitions = ef.alpha_grid("full_factorial", 2)
    grid = coalition_grid(base, [0, 2], coalitions)
    expected = torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.5, 0.0, 0.0, 1.0], [0.0, 0.0, 0.8, 1.0], [0.5, 0.0, 0.8, 1.0]])
    assert torch.equal(grid, expected)
    assert torch.equal(base, torch.tensor([0.5, 0.0, 0.8, 1.0]))  # pure
    ablation = coalition_grid(base, [0, 2, 3], ef.alpha_grid("ablation", 3))
    assert torch.equal(ablation[0], base) and torch.equal(ablation[-1], torch.tensor([0.0, 0.0, 0.0, 0.0]))
    assert torch.equal(ablation[2], torch.tensor([0.5, 0.0, 0.0, 1.0]))  # player 1 (column 2) off
    assert coalition_grid(base, [], torch.ones(3, 0)).shape == (3, 4)
    with pytest.raises(ValueError, match="distinct"):
        coalition_grid(base, [0, 0], torch.ones(1, 2))
    with pytest.raises(ShapeError):
        coalition_grid(base, [0, 1], torch.ones(1, 3))
    with pytest.raises(ValueError, match="0 \\(off\\) and 1"):
        coalition_grid(base, [0], torch.full((1, 1), 0.5))
    with pytest.raises(DTypeError):
        coalition_grid(torch.ones(2, 2), [0], torch.ones(1, 1))


def test_the_validation_grid_is_the_real_alphas_then_each_blended_seed_off():
    from esper_func.fit import _validation_grid

    seeds = (("r0c0", "norm", A.ADD, S.BLENDING), ("r0c1", "norm", A.ADD, S.BLENDING), ("r0c2", "norm", A.ADD, S.TRAINING))
    model, _, _ = make(CNN, seeds)
    states = {sid: dataclasses.replace(ef.germinate(sid, "norm"), stage=stage, alpha_controller=ef.AlphaController(alpha=alpha))
              for (sid, _, _, stage), alpha in zip(seeds, (0.5, 0.25, 0.0), strict=True)}
    grid, contributors = _validation_grid(model, states, torch.device("cpu"))
    base = ef.alphas_of(model, states)
    assert contributors == ["r0c0", "r0c1"]  # r0c2 is at alpha 0: nothing to remove
    assert torch.equal(grid[0], base)
    for row, sid in zip(grid[1:], contributors, strict=True):
        expected = base.clone()
        expected[model.index(sid)] = 0.0
        assert torch.equal(row, expected)


def test_padded_targets_are_left_out_of_the_evaluation_count_and_means():
    host = ef.TransformerHost(vocab_size=32, n_embd=16, n_head=2, n_layer=2, block_size=8, num_segments=2)
    model, params, buffers = ef.build_model(host, host.slot_ids, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 32, (3, 8), generator=g)
    y = torch.randint(0, 32, (3, 8), generator=g)
    padded = y.clone()
    padded[2, 5:] = ef.data.IGNORE_INDEX  # a short last window
    grid = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    got = ef.evaluate(model, params, buffers, [(x, padded)], grid, loss_fn=F.cross_entropy)
    assert got.count == 3 * 8 - 3
    keep = padded.reshape(-1) != ef.data.IGNORE_INDEX
    for k in range(grid.shape[0]):
        logits = ef.predict(model, params, buffers, grid[k], x).reshape(-1, 32)[keep]
        targets = padded.reshape(-1)[keep]
        torch.testing.assert_close(got.loss[k].double(), F.cross_entropy(logits, targets).double())
        expected_accuracy = (logits.argmax(-1) == targets).double().mean()
        torch.testing.assert_close(got.accuracy[k].double(), expected_accuracy)
    only_padding = torch.full_like(y, ef.data.IGNORE_INDEX)
    empty = ef.evaluate(model, params, buffers, [(x, only_padding), (x, y)], grid, loss_fn=F.cross_entropy)
    full = ef.evaluate(model, params, buffers, [(x, y)], grid, loss_fn=F.cross_entropy)
    assert empty.count == full.count
    torch.testing.assert_close(empty.loss, full.loss)
