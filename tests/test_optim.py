"""Pure optimizers: parity with torch.optim, masks, purity, structure changes."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import optree
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from esper_func import optim
from esper_func.errors import DTypeError, ParamsMismatchError, ShapeError

NS = "esper_func"


def leaves(tree: Any) -> list[torch.Tensor]:
    return optree.tree_leaves(tree, namespace=NS)


def snapshot(tree: Any) -> Any:
    return optree.tree_map(lambda t: t.detach().clone(), tree, namespace=NS)


def assert_trees_equal(a: Any, b: Any) -> None:
    """Same structure, same dtypes, bitwise-equal values."""
    la, sa = optree.tree_flatten(a, namespace=NS)
    lb, sb = optree.tree_flatten(b, namespace=NS)
    assert sa == sb
    for x, y in zip(la, lb, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert torch.equal(x, y)


# --------------------------------------------------------------------------- parity with torch.optim


def make_mlp() -> nn.Module:
    torch.manual_seed(0)  # only the module initialisation; the tests' data uses local generators
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


CONFIGS: list[tuple[str, Callable[[], optim.Optimizer], Callable[[list[nn.Parameter]], torch.optim.Optimizer]]] = [
    ("sgd", lambda: optim.sgd(0.05), lambda p: torch.optim.SGD(p, lr=0.05)),
    (
        "sgd-momentum-wd",
        lambda: optim.sgd(0.05, momentum=0.9, weight_decay=1e-3),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
    ),
    (
        "sgd-nesterov-wd",
        lambda: optim.sgd(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    ),
    (
        "sgd-dampening",
        lambda: optim.sgd(0.05, momentum=0.8, dampening=0.3),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, dampening=0.3),
    ),
    ("adamw", lambda: optim.adamw(3e-3), lambda p: torch.optim.AdamW(p, lr=3e-3)),
    (
        "adamw-amsgrad",
        lambda: optim.adamw(3e-3, betas=(0.8, 0.99), weight_decay=0.05, amsgrad=True),
        lambda p: torch.optim.AdamW(p, lr=3e-3, betas=(0.8, 0.99), weight_decay=0.05, amsgrad=True),
    ),
    ("adam-l2", lambda: optim.adam(3e-3, weight_decay=0.01), lambda p: torch.optim.Adam(p, lr=3e-3, weight_decay=0.01)),
]


@pytest.mark.parametrize("name,ours,theirs", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_matches_torch_optim_over_30_steps(name: str, ours: Callable[[], optim.Optimizer], theirs: Callable[..., Any]) -> None:
    ref = make_mlp()
    torch_opt = theirs(list(ref.parameters()))
    params = {"host": {k: v.detach().clone() for k, v in ref.named_parameters()}, "slots": {}}
    opt = ours()
    state = opt.init(params)
    gen = torch.Generator().manual_seed(1)
    w_true = torch.randn(6, 3, generator=gen)
    for _ in range(30):
        # the same gradient sequence for both: the reference model's (its weights are ours, to 1e-6)
        x = torch.randn(32, 6, generator=gen)
        torch_opt.zero_grad()
        nn.functional.mse_loss(ref(x), torch.tanh(x @ w_true)).backward()
        grads = {"host": {k: v.grad.clone() for k, v in ref.named_parameters()}, "slots": {}}
        torch_opt.step()
        params, state = opt.update(grads, state, params)
    for key, p in ref.named_parameters():
        torch.testing.assert_close(params["host"][key], p.detach(), rtol=0, atol=1e-6)
    # the run actually moved the weights
    assert any(not torch.equal(params["host"][k], v) for k, v in make_mlp().state_dict().items())
    assert float(state.count["host"]["0.weight"]) == 30.0


def test_optimizers_are_frozen_hashable_values() -> None:
    opt = optim.adamw(1e-3)
    assert opt == optim.adamw(1e-3) and hash(opt) == hash(optim.adamw(1e-3))
    with pytest.raises(dataclasses.FrozenInstanceError):
        opt.lr = 1.0  # type: ignore[misc]
    assert optim.sgd(0.1).init({"w": torch.ones(2)}).momentum is None


@pytest.mark.parametrize(
    "build",
    [
        lambda: optim.sgd(-1.0),
        lambda: optim.sgd(0.1, nesterov=True),
        lambda: optim.sgd(0.1, momentum=0.9, nesterov=True, dampening=0.1),
        lambda: optim.adamw(0.1, betas=(1.0, 0.9)),
        lambda: optim.adamw(0.1, eps=-1.0),
        lambda: optim.adamw(float("nan")),
    ],
)
def test_bad_hyperparameters_raise(build: Callable[[], Any]) -> None:
    with pytest.raises(ValueError):
        build()


# --------------------------------------------------------------------------- masks


def model_like_params() -> dict[str, Any]:
    g = torch.Generator().manual_seed(3)
    return {
        "host": {"conv.weight": torch.randn(4, 3, generator=g), "conv.bias": torch.randn(4, generator=g)},
        "slots": {
            "r0c0": {"seed": {"w": torch.randn(3, 3, generator=g)}, "gate": {"gate.0.weight": torch.randn(2, 3, generator=g)}},
            "r1c0": {"seed": {"w": torch.randn(5, generator=g)}},
        },
    }


def random_grads(params: Any, seed: int) -> Any:
    g = torch.Generator().manual_seed(seed)
    return optree.tree_map(lambda p: torch.randn(p.shape, generator=g, dtype=p.dtype), params, namespace=NS)


OPTIMIZERS = [
    optim.sgd(0.1, momentum=0.9, weight_decay=0.1),
    optim.sgd(0.1, momentum=0.9, dampening=0.5),
    optim.adamw(0.01, weight_decay=0.1, amsgrad=True),
    optim.adam(0.01, weight_decay=0.1),
]


def trained(opt: optim.Optimizer, steps: int = 3) -> tuple[Any, Any]:
    params = model_like_params()
    state = opt.init(params)
    for i in range(steps):
        params, state = opt.update(random_grads(params, i), state, params)
    return params, state


def subtree(tree: Any, *path: str) -> Any:
    for key in path:
        tree = tree[key]
    return tree


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=repr)
def test_mask_false_freezes_params_and_state_bitwise(opt: optim.Optimizer) -> None:
    params, state = trained(opt)
    mask = {"host": True, "slots": {"r0c0": False}}
    new_params, new_state = opt.update(random_grads(params, 99), state, params, mask=mask)
    assert_trees_equal(subtree(new_params, "slots", "r0c0"), subtree(params, "slots", "r0c0"))
    for field in optim.state_to_tree(state):
        assert_trees_equal(subtree(getattr(new_state, field), "slots", "r0c0"), subtree(getattr(state, field), "slots", "r0c0"))
    # everything else trained: params moved, counts advanced
    for path in (("host",), ("slots", "r1c0")):
        for before, after in zip(leaves(subtree(params, *path)), leaves(subtree(new_params, *path)), strict=True):
            assert not torch.equal(before, after)
        assert all(float(c) == 4.0 for c in leaves(subtree(new_state.count, *path)))
    assert all(float(c) == 3.0 for c in leaves(subtree(new_state.count, "slots", "r0c0")))


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=repr)
def test_frozen_leaf_gets_no_weight_decay_and_resumes_as_if_absent(opt: optim.Optimizer) -> None:
    """A leaf frozen for k steps continues exactly as a run in which those k steps never happened."""
    params = model_like_params()
    grads = [random_grads(params, i) for i in range(6)]
    frozen_steps = {1, 2, 4}
    p, s = params, opt.init(params)
    for i, g in enumerate(grads):
        p, s = opt.update(g, s, p, mask={"slots": {"r1c0": i not in frozen_steps}})
    # reference: only r1c0, only on its unfrozen steps
    sub = {"w": params["slots"]["r1c0"]["seed"]["w"]}
    ps, ss = sub, opt.init(sub)
    for i, g in enumerate(grads):
        if i not in frozen_steps:
            ps, ss = opt.update({"w": g["slots"]["r1c0"]["seed"]["w"]}, ss, ps)
    assert torch.equal(p["slots"]["r1c0"]["seed"]["w"], ps["w"])
    assert float(s.count["slots"]["r1c0"]["seed"]["w"]) == 3.0


def test_mask_forms() -> None:
    opt = optim.sgd(0.1, weight_decay=0.5)
    params = model_like_params()
    state = opt.init(params)
    zeros = optree.tree_map(torch.zeros_like, params, namespace=NS)

    # top-level False: nothing changes (not even weight decay)
    new, new_state = opt.update(zeros, state, params, mask=False)
    assert_trees_equal(new, params)
    assert_trees_equal(new_state, state)

    # per-leaf mask, keys absent from the mask default to True, unknown keys are ignored
    mask = {"host": {"conv.bias": False}, "slots": {"r9c9": False}}
    new, _ = opt.update(zeros, state, params, mask=mask)
    assert torch.equal(new["host"]["conv.bias"], params["host"]["conv.bias"])
    assert not torch.equal(new["host"]["conv.weight"], params["host"]["conv.weight"])  # weight decay applied
    assert not torch.equal(new["slots"]["r0c0"]["seed"]["w"], params["slots"]["r0c0"]["seed"]["w"])

    # a callable mask is applied to params
    new, _ = opt.update(zeros, state, params, mask=lambda p: {k: k == "host" for k in p})
    assert_trees_equal(new["slots"], params["slots"])
    assert not torch.equal(new["host"]["conv.weight"], params["host"]["conv.weight"])


def test_none_grad_freezes_leaf() -> None:
    opt = optim.adamw(0.1)
    params = {"a": torch.ones(3), "b": torch.ones(2)}
    state = opt.init(params)
    new, new_state = opt.update({"a": torch.ones(3), "b": None}, state, params)
    assert torch.equal(new["b"], params["b"]) and float(new_state.count["b"]) == 0.0
    assert not torch.equal(new["a"], params["a"]) and float(new_state.count["a"]) == 1.0


def test_bad_masks_raise() -> None:
    opt = optim.sgd(0.1)
    params = {"a": {"w": torch.ones(2)}}
    state = opt.init(params)
    grads = {"a": {"w": torch.ones(2)}}
    with pytest.raises(TypeError, match="Python bool"):
        opt.update(grads, state, params, mask={"a": {"w": 0}})
    with pytest.raises(TypeError, match="Python bool"):
        opt.update(grads, state, params, mask={"a": {"w": {"deeper": False}}})
    with pytest.raises(TypeError, match="bool, a dict"):
        opt.update(grads, state, params, mask={"a": torch.tensor(True)})


# --------------------------------------------------------------------------- purity


keys = st.sampled_from(["host", "slots", "seed", "gate", "r0c0", "w.0", "b"])


@st.composite
def tensor_leaf(draw: st.DrawFn) -> torch.Tensor:
    shape = draw(st.lists(st.integers(0, 3), min_size=0, max_size=3))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    seed = draw(st.integers(0, 2**31 - 1))
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed), dtype=dtype)


trees = st.recursive(tensor_leaf(), lambda children: st.dictionaries(keys, children, max_size=3), max_leaves=8).filter(
    lambda t: isinstance(t, dict)
)


@given(
    tree=trees,
    which=st.integers(0, len(OPTIMIZERS) - 1),
    freeze=st.booleans(),
    seed=st.integers(0, 1000),
    requires_grad=st.booleans(),
)
def test_update_is_pure(tree: dict[str, Any], which: int, freeze: bool, seed: int, requires_grad: bool) -> None:
    opt = OPTIMIZERS[which]
    params = optree.tree_map(lambda t: t.requires_grad_(requires_grad), tree, namespace=NS)
    state = opt.init(params)
    params, state = opt.update(random_grads(params, seed), state, params)  # non-trivial state
    grads = random_grads(params, seed + 1)
    mask = {k: not freeze for k in list(params)[:1]}
    before = snapshot((params, grads, state))
    new_params, new_state = opt.update(grads, state, params, mask=mask)
    assert_trees_equal((params, grads, state), before)
    # trained leaves are new tensors; a frozen leaf's parameter and state are the very same tensors
    frozen = {k for k, v in mask.items() if not v}
    for key in params:
        old_leaves = leaves((params[key], *(getattr(state, f)[key] for f in optim.state_to_tree(state))))
        new_leaves = leaves((new_params[key], *(getattr(new_state, f)[key] for f in optim.state_to_tree(new_state))))
        if key in frozen:
            assert all(a is b for a, b in zip(old_leaves, new_leaves, strict=True))
        else:
            inputs = {t.data_ptr() for t in leaves((params, grads, state)) if t.numel()}
            assert not any(t.numel() and t.data_ptr() in inputs for t in new_leaves)
    # structure and requires_grad are preserved
    assert optree.tree_structure(new_params, namespace=NS) == optree.tree_structure(params, namespace=NS)
    assert all(n.requires_grad == p.requires_grad for n, p in zip(leaves(new_params), leaves(params), strict=True))


def test_empty_subdicts() -> None:
    for opt in OPTIMIZERS:
        params = {"host": {"w": torch.ones(2)}, "slots": {"r0c0": {}}, "empty": {}}
        state = opt.init(params)
        assert state.count == {"host": {"w": torch.zeros(())}, "slots": {"r0c0": {}}, "empty": {}}
        new, new_state = opt.update({"host": {"w": torch.ones(2)}, "slots": {"r0c0": {}}, "empty": {}}, state, params)
        assert new["slots"] == {"r0c0": {}} and new["empty"] == {}
        assert new_state.count["slots"] == {"r0c0": {}}
        # no leaves at all
        nothing = {"host": {}, "slots": {}}
        assert opt.update(nothing, opt.init(nothing), nothing)[0] == nothing


def test_structure_errors() -> None:
    opt = optim.adamw(0.1)
    params = model_like_params()
    state = opt.init(params)
    grads = random_grads(params, 0)
    bad = {**grads, "slots": {"r0c0": grads["slots"]["r0c0"]}}
    with pytest.raises(ParamsMismatchError, match=r"missing .*'r1c0'"):
        opt.update(bad, state, params)
    grown = {**params, "slots": {**params["slots"], "r2c0": {"seed": {"w": torch.ones(2)}}}}
    with pytest.raises(ParamsMismatchError, match="reinit_like"):
        opt.update(random_grads(grown, 0), state, grown)
    wrong_shape = optree.tree_map(lambda g: g, grads, namespace=NS)
    wrong_shape["host"]["conv.bias"] = torch.ones(7)
    with pytest.raises(ShapeError, match=r"\['host'\]\['conv.bias'\]"):
        opt.update(wrong_shape, state, params)
    with pytest.raises(DTypeError):
        opt.init({"w": 1.0})
    with pytest.raises(TypeError, match="AdamState"):
        opt.update(grads, optim.sgd(0.1).init(params), params)


# --------------------------------------------------------------------------- structure changes


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=repr)
def test_reinit_like_keeps_surviving_state(opt: optim.Optimizer) -> None:
    params, state = trained(opt)
    before = snapshot(state)
    new_params = {
        "host": {**params["host"], "conv.bias": torch.ones(9)},  # re-shaped: re-initialised
        "slots": {"r1c0": params["slots"]["r1c0"], "r2c0": {"seed": {"v": torch.ones(2, 2)}}},  # r0c0 removed
    }
    new_state = optim.reinit_like(opt, state, new_params)
    assert_trees_equal(state, before)  # pure
    fresh = opt.init(new_params)
    for field in optim.state_to_tree(state):
        old_tree, new_tree, init_tree = getattr(state, field), getattr(new_state, field), getattr(fresh, field)
        assert optree.tree_structure(new_tree, namespace=NS) == optree.tree_structure(new_params, namespace=NS)
        assert torch.equal(new_tree["host"]["conv.weight"], old_tree["host"]["conv.weight"])
        assert_trees_equal(new_tree["slots"]["r1c0"], old_tree["slots"]["r1c0"])
        assert torch.equal(new_tree["host"]["conv.bias"], init_tree["host"]["conv.bias"])
        assert_trees_equal(new_tree["slots"]["r2c0"], init_tree["slots"]["r2c0"])
        assert "r0c0" not in new_tree["slots"]
    assert new_state.count["slots"]["r1c0"]["seed"]["w"].data_ptr() != state.count["slots"]["r1c0"]["seed"]["w"].data_ptr()
    # reset= re-initialises a surviving subtree (a new seed of the same blueprint)
    reset_state = optim.reinit_like(opt, state, new_params, reset={"slots": {"r1c0": True}})
    assert_trees_equal(reset_state.count["slots"]["r1c0"], fresh.count["slots"]["r1c0"])
    assert torch.equal(reset_state.count["host"]["conv.weight"], state.count["host"]["conv.weight"])
    # and the new state trains
    opt.update(random_grads(new_params, 5), new_state, new_params)


def test_state_tree_round_trip() -> None:
    for opt in OPTIMIZERS:
        params, state = trained(opt)
        tree = optim.state_to_tree(state)
        assert all(isinstance(v, dict) for v in tree.values())
        back = optim.state_from_tree(opt, snapshot(tree), params)
        assert_trees_equal(back, state)
        with pytest.raises(ParamsMismatchError):
            optim.state_from_tree(opt, {k: v for k, v in list(tree.items())[1:]}, params)
        bad = snapshot(tree)
        bad["count"]["host"]["conv.bias"] = torch.zeros(2)
        with pytest.raises(ShapeError):
            optim.state_from_tree(opt, bad, params)


# --------------------------------------------------------------------------- foreach arithmetic, tensor learning rates, compile


SGD_CONFIGS = [c for c in CONFIGS if c[0].startswith("sgd")]


@pytest.mark.parametrize("name,ours,theirs", SGD_CONFIGS, ids=[c[0] for c in SGD_CONFIGS])
def test_sgd_is_bitwise_torch_optim_sgd(name: str, ours: Callable[[], optim.Optimizer], theirs: Callable[..., Any]) -> None:
    """The same operations in the same order: bitwise equal to torch.optim.SGD over 30 steps on the CPU."""
    ref = make_mlp()
    torch_opt = theirs(list(ref.parameters()))
    params = {k: v.detach().clone() for k, v in ref.named_parameters()}
    opt = ours()
    state = opt.init(params)
    gen = torch.Generator().manual_seed(4)
    for _ in range(30):
        grads = {k: torch.randn(v.shape, generator=gen) for k, v in params.items()}
        for key, p in ref.named_parameters():
            p.grad = grads[key].clone()
        torch_opt.step()
        params, state = opt.update(grads, state, params)
    for key, p in ref.named_parameters():
        assert torch.equal(params[key], p.detach()), key


def test_a_tensor_learning_rate_equals_the_float_one() -> None:
    params = model_like_params()
    for float_opt, tensor_opt in (
        (optim.sgd(0.1, momentum=0.9, weight_decay=0.1), optim.sgd(torch.tensor(0.1), momentum=0.9, weight_decay=0.1)),
        (optim.adamw(0.01, weight_decay=0.1), optim.adamw(torch.tensor(0.01), weight_decay=0.1)),
    ):
        a, sa = params, float_opt.init(params)
        b, sb = params, tensor_opt.init(params)
        for i in range(5):
            a, sa = float_opt.update(random_grads(params, i), sa, a)
            b, sb = tensor_opt.update(random_grads(params, i), sb, b)
        for x, y in zip(leaves(a), leaves(b), strict=True):
            torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="0-d"):
        optim.sgd(torch.ones(2))
    with pytest.raises(ValueError, match="finite"):
        optim.adamw(torch.tensor(float("inf")))


def test_update_compiles_and_a_new_learning_rate_does_not_recompile() -> None:
    from torch._dynamo.testing import CompileCounter

    params = model_like_params()
    torch._dynamo.reset()
    counter = CompileCounter()
    box = {"opt": optim.adamw(torch.tensor(0.01), weight_decay=0.1)}
    update = torch.compile(lambda g, s, p: box["opt"].update(g, s, p), backend=counter)
    state = box["opt"].init(params)
    eager_params, eager_state = params, state
    for i in range(3):
        box["opt"] = optim.adamw(torch.tensor(0.01 / (i + 1)), weight_decay=0.1)
        grads = random_grads(params, i)
        params, state = update(grads, state, params)
        eager_params, eager_state = box["opt"].update(grads, eager_state, eager_params)
    assert counter.frame_count == 1
    for x, y in zip(leaves((params, state)), leaves((eager_params, eager_state)), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)


def test_frozen_leaves_cost_nothing_and_stay_the_same_objects() -> None:
    opt = optim.sgd(0.1, momentum=0.9, weight_decay=0.1)
    params = model_like_params()
    state = opt.init(params)
    new, new_state = opt.update(random_grads(params, 0), state, params, mask={"slots": False})
    assert new["slots"]["r0c0"]["seed"]["w"] is params["slots"]["r0c0"]["seed"]["w"]
    assert new_state.momentum["slots"]["r1c0"]["seed"]["w"] is state.momentum["slots"]["r1c0"]["seed"]["w"]
    assert new["host"]["conv.weight"] is not params["host"]["conv.weight"]
