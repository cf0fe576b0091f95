"""Pure seed slots: stage semantics, vmap, gradients, purity and bad input."""

from __future__ import annotations

import pickle
from functools import cache

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from torch.func import functional_call, grad, vmap

import esper_func as ef
from esper_func.blueprints import Blueprint, Registry
from esper_func.errors import (
    DTypeError,
    ParamsMismatchError,
    ShapeError,
    UnknownBlueprintError,
    UnknownTopologyError,
)
from esper_func.slot import germinate_slot, is_isolated, slot_apply

S = ef.SeedStage
A = ef.AlphaAlgorithm
CHANNELS = 16
ACTIVE = [S.TRAINING, S.BLENDING, S.HOLDING, S.FOSSILIZED]
INACTIVE = [S.UNKNOWN, S.DORMANT, S.GERMINATED, S.PRUNED, S.EMBARGOED, S.RESETTING]


@cache
def registry() -> Registry:
    return ef.default_registry()


def blueprint_keys() -> list[tuple[str, str]]:
    return [(t, n) for t in ("cnn", "transformer") for n in registry().names(t)]


@cache
def make(topology: str, name: str, algorithm: A = A.ADD, seed: int = 0):
    return germinate_slot(
        registry(), topology, name, CHANNELS, algorithm=algorithm, generator=torch.Generator().manual_seed(seed)
    )


def features(topology: str, seed: int, batch: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, CHANNELS, 5, 5) if topology == "cnn" else (batch, 6, CHANNELS)
    return torch.randn(shape, generator=g)


def clone_tree(tree):
    return {k: {n: t.clone() for n, t in v.items()} for k, v in tree.items()}


def assert_tree_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].keys() == b[k].keys()
        for n in a[k]:
            assert torch.equal(a[k][n], b[k][n]), (k, n)


cases = st.tuples(st.sampled_from(blueprint_keys()), st.sampled_from(list(A)))
stages = st.sampled_from(list(S))
unit = st.floats(0.0, 1.0)


# --------------------------------------------------------------------------- stage semantics


@given(cases, st.sampled_from(INACTIVE), unit, st.integers(0, 100))
def test_inactive_stages_are_identity(case, stage, a, seed):
    (topology, name), algorithm = case
    slot, params = make(topology, name, algorithm)
    x = features(topology, seed)
    assert torch.equal(slot_apply(slot, params, torch.tensor(a), x, stage=stage), x)


@given(cases, st.sampled_from(ACTIVE), st.integers(0, 100))
def test_identity_at_alpha_zero_for_every_operator(case, stage, seed):
    (topology, name), algorithm = case
    slot, params = make(topology, name, algorithm)
    x = features(topology, seed)
    out = slot_apply(slot, params, torch.tensor(0.0), x, stage=stage)
    assert torch.equal(out, x)


@given(st.sampled_from(blueprint_keys()), st.sampled_from([S.BLENDING, S.HOLDING]), unit, st.integers(0, 50))
def test_add_blends_the_seed_output(key, stage, a, seed):
    topology, name = key
    slot, params = make(topology, name)
    x = features(topology, seed)
    s = functional_call(slot.seed_skeleton, params["seed"], (x,))
    torch.testing.assert_close(slot_apply(slot, params, torch.tensor(a), x, stage=stage), torch.lerp(x, s, a))


@given(st.sampled_from(blueprint_keys()), unit, st.integers(0, 50))
def test_counterfactual_alpha_in_training_blends_like_blending(key, a, seed):
    topology, name = key
    slot, params = make(topology, name, A.MULTIPLY)
    x = features(topology, seed)
    alpha = torch.tensor(a)
    training = slot_apply(slot, params, alpha, x, stage=S.TRAINING)
    blending = slot_apply(slot, params, alpha, x, stage=S.BLENDING)
    torch.testing.assert_close(training, blending)


@pytest.mark.parametrize(("topology", "name"), blueprint_keys())
def test_multiply_valve_stays_within_bounds(topology, name):
    slot, params = make(topology, name, A.MULTIPLY)
    x = features(topology, 3).abs() + 0.1  # positive host, so out/x is the multiplier
    for a in (0.25, 1.0):
        ratio = slot_apply(slot, params, torch.tensor(a), x, stage=S.BLENDING) / x
        assert bool((ratio >= 1 - a - 1e-5).all()) and bool((ratio <= 1 + a + 1e-5).all())


def test_gate_slot_has_esper_lite_gate_names_and_shapes():
    _slot, params = make("cnn", "norm", A.GATE)
    hidden = max(8, CHANNELS // 4)
    assert {k: tuple(v.shape) for k, v in params["gate"].items()} == {
        "gate.0.weight": (hidden, CHANNELS),
        "gate.0.bias": (hidden,),
        "gate.2.weight": (1, hidden),
        "gate.2.bias": (1,),
    }


@given(st.sampled_from(blueprint_keys()), unit, st.integers(0, 50))
def test_gate_blend_uses_pooled_gate_of_seed_input(key, a, seed):
    topology, name = key
    slot, params = make(topology, name, A.GATE)
    x = features(topology, seed)
    pooled = x.mean(dim=(2, 3)) if topology == "cnn" else x.mean(dim=1)
    w0, b0, w2, b2 = (params["gate"][k] for k in ("gate.0.weight", "gate.0.bias", "gate.2.weight", "gate.2.bias"))
    g = torch.sigmoid(torch.relu(pooled @ w0.T + b0) @ w2.T + b2).reshape(-1, *([1] * (x.ndim - 1)))
    s = functional_call(slot.seed_skeleton, params["seed"], (x,))
    expected = x + (a * g) * (s - x)
    torch.testing.assert_close(slot_apply(slot, params, torch.tensor(a), x, stage=S.BLENDING), expected)


# --------------------------------------------------------------------------- vmap


@given(cases, stages, st.lists(unit, min_size=1, max_size=5), st.integers(0, 50))
def test_vmap_over_alpha_equals_loop(case, stage, alpha_values, seed):
    (topology, name), algorithm = case
    slot, params = make(topology, name, algorithm)
    x = features(topology, seed)
    alphas = torch.tensor(alpha_values)
    batched = vmap(lambda a: slot_apply(slot, params, a, x, stage=stage))(alphas)
    looped = torch.stack([slot_apply(slot, params, a, x, stage=stage) for a in alphas])
    torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-6)


@given(cases, st.sampled_from(ACTIVE), unit, st.integers(0, 50))
def test_vmap_over_a_population_of_seeds_equals_loop(case, stage, a, seed):
    (topology, name), algorithm = case
    population = [make(topology, name, algorithm, seed=k)[1] for k in range(3)]
    slot = make(topology, name, algorithm)[0]
    assume(slot.num_params() > 0)  # a parameter-free seed (noop) has nothing to stack
    stacked = torch.utils._pytree.tree_map(lambda *ts: torch.stack(ts), *population)
    x = features(topology, seed)
    alpha = torch.tensor(a)
    batched = vmap(lambda p: slot_apply(slot, p, alpha, x, stage=stage))(stacked)
    looped = torch.stack([slot_apply(slot, p, alpha, x, stage=stage) for p in population])
    torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-6)


@given(cases, st.sampled_from(ACTIVE), st.integers(0, 50))
def test_per_sample_alpha_rows_equal_separate_calls(case, stage, seed):
    (topology, name), algorithm = case
    slot, params = make(topology, name, algorithm)
    x = features(topology, seed, batch=4)
    alphas = torch.tensor([0.0, 0.3, 1.0, 0.6])
    together = slot_apply(slot, params, alphas, x, stage=stage)
    for i in range(4):
        alone = slot_apply(slot, params, alphas[i], x[i : i + 1], stage=stage)
        torch.testing.assert_close(together[i : i + 1], alone, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- gradients


def _host_then_slot(slot, stage, alpha, x, w_out):
    """A one-parameter 'host' (scale) before the slot, and a linear loss after it."""

    def loss(host_scale, seed_params):
        h = x * host_scale
        params = {"seed": seed_params}
        return (slot_apply(slot, params, alpha, h, stage=stage) * w_out).sum()

    return loss


@pytest.mark.parametrize(("topology", "name"), blueprint_keys())
def test_incubator_forward_is_host_and_seed_gets_upstream_gradient(topology, name):
    slot, params = make(topology, name)
    x = features(topology, 7)
    w_out = features(topology, 8)
    alpha = torch.tensor(0.0)
    assert torch.equal(slot_apply(slot, params, alpha, x, stage=S.TRAINING), x)

    g_seed = grad(lambda p: (slot_apply(slot, {"seed": p}, alpha, x, stage=S.TRAINING) * w_out).sum())(
        params["seed"]
    )
    # Upstream gradient of the output is w_out; the seed receives it unchanged.
    expected = grad(lambda p: (functional_call(slot.seed_skeleton, p, (x,)) * w_out).sum())(params["seed"])
    for k in expected:
        torch.testing.assert_close(g_seed[k], expected[k])

    # With isolation the host's gradient equals that of a model without the seed.
    scale = torch.tensor(1.3)
    host_grad = grad(_host_then_slot(slot, S.TRAINING, alpha, x, w_out))(scale, params["seed"])
    bare_grad = grad(_host_then_slot(slot, S.DORMANT, alpha, x, w_out))(scale, params["seed"])
    assert torch.equal(host_grad, bare_grad)


@pytest.mark.parametrize(("topology", "name"), blueprint_keys())
def test_isolation_blocks_the_seed_path_into_the_host(topology, name):
    slot, params = make(topology, name)
    x = features(topology, 5)
    w_out = features(topology, 6)
    a = 0.4
    g_x = grad(lambda h: (slot_apply(slot, params, torch.tensor(a), h, stage=S.BLENDING) * w_out).sum())(x)
    if is_isolated(topology, S.BLENDING):
        torch.testing.assert_close(g_x, (1 - a) * w_out)  # only the direct path
    else:
        seed_path = grad(
            lambda h: (torch.lerp(h.detach(), functional_call(slot.seed_skeleton, params["seed"], (h,)), a) * w_out).sum()
        )(x)
        torch.testing.assert_close(g_x, (1 - a) * w_out + seed_path, rtol=1e-4, atol=1e-5)


def test_isolation_rule():
    for stage in S:
        assert is_isolated("cnn", stage) == (stage in ACTIVE)
        assert is_isolated("transformer", stage) == (stage == S.TRAINING)


# --------------------------------------------------------------------------- purity


@given(cases, stages, st.floats(-1.0, 2.0), st.integers(0, 50))
def test_slot_apply_leaves_inputs_bitwise_unchanged(case, stage, a, seed):
    (topology, name), algorithm = case
    slot, params = make(topology, name, algorithm)
    x = features(topology, seed)
    alpha = torch.tensor(a)
    before_params, before_x, before_alpha = clone_tree(params), x.clone(), alpha.clone()
    slot_apply(slot, params, alpha, x, stage=stage)
    assert_tree_equal(params, before_params)
    assert torch.equal(x, before_x) and torch.equal(alpha, before_alpha)


def test_germination_leaves_generators_and_global_rng_alone():
    g = torch.Generator().manual_seed(123)
    g_state = g.get_state().clone()
    global_state = torch.get_rng_state().clone()
    _, p1 = germinate_slot(registry(), "cnn", "conv_light", 8, generator=g)
    _, p2 = germinate_slot(registry(), "cnn", "conv_light", 8, generator=g)
    assert torch.equal(g.get_state(), g_state)
    assert torch.equal(torch.get_rng_state(), global_state)
    assert_tree_equal(p1, p2)  # same generator state, same weights
    _, p3 = germinate_slot(registry(), "cnn", "conv_light", 8, generator=torch.Generator().manual_seed(124))
    assert not torch.equal(p1["seed"]["enhance.conv.weight"], p3["seed"]["enhance.conv.weight"])


# --------------------------------------------------------------------------- static slot


def test_slot_is_hashable_comparable_and_pickles():
    slot, params = make("cnn", "conv_light", A.GATE)
    again, _ = germinate_slot(registry(), "cnn", "conv_light", CHANNELS, algorithm=A.GATE)
    assert slot == again and hash(slot) == hash(again)
    restored = pickle.loads(pickle.dumps(slot))
    assert restored == slot
    x = features("cnn", 0)
    out = slot_apply(restored, params, torch.tensor(0.5), x, stage=S.BLENDING)
    torch.testing.assert_close(out, slot_apply(slot, params, torch.tensor(0.5), x, stage=S.BLENDING))
    assert all(t.device.type == "meta" for t in slot.seed_skeleton.state_dict().values())


def test_bf16_host_with_fp32_alpha():
    slot, params = germinate_slot(registry(), "cnn", "conv_light", 8, dtype=torch.bfloat16)
    x = torch.randn(2, 8, 4, 4, dtype=torch.bfloat16)
    out = slot_apply(slot, params, torch.tensor(0.5, dtype=torch.float32), x, stage=S.BLENDING)
    assert out.dtype == torch.bfloat16 and out.shape == x.shape


def test_multiply_germination_zero_inits_the_last_layer():
    # conv_light is residual: with its last affine layer zeroed it starts as the identity,
    # so the MULTIPLY valve starts closed (output == host) at any alpha.
    slot, params = make("cnn", "conv_light", A.MULTIPLY)
    x = features("cnn", 1)
    torch.testing.assert_close(slot_apply(slot, params, torch.tensor(1.0), x, stage=S.BLENDING), x)


# --------------------------------------------------------------------------- bad input


def test_bad_alpha():
    slot, params = make("cnn", "norm")
    x = features("cnn", 0)
    with pytest.raises(DTypeError, match=r"torch\.Tensor"):
        slot_apply(slot, params, 0.5, x, stage=S.BLENDING)
    with pytest.raises(DTypeError, match="floating"):
        slot_apply(slot, params, torch.tensor(1), x, stage=S.BLENDING)
    with pytest.raises(ShapeError, match=r"\[3\]"):
        slot_apply(slot, params, torch.zeros(2), x, stage=S.BLENDING)
    with pytest.raises(ShapeError):
        slot_apply(slot, params, torch.zeros(3, 1), x, stage=S.BLENDING)


def test_bad_features():
    slot, params = make("cnn", "norm")
    with pytest.raises(ShapeError, match=f"\\[B, {CHANNELS}, H, W\\]"):
        slot_apply(slot, params, torch.tensor(0.5), torch.zeros(2, CHANNELS + 1, 4, 4), stage=S.BLENDING)
    with pytest.raises(ShapeError):
        slot_apply(slot, params, torch.tensor(0.5), torch.zeros(2, CHANNELS, 4), stage=S.BLENDING)
    with pytest.raises(DTypeError, match="floating"):
        slot_apply(slot, params, torch.tensor(0.5), torch.zeros(2, CHANNELS, 4, 4, dtype=torch.long), stage=S.BLENDING)
    tslot, tparams = make("transformer", "norm")
    with pytest.raises(ShapeError, match=f"\\[B, T, {CHANNELS}\\]"):
        slot_apply(tslot, tparams, torch.tensor(0.5), torch.zeros(2, 3, CHANNELS, 1), stage=S.BLENDING)


def test_bad_params():
    slot, params = make("cnn", "conv_light")
    missing = {"seed": dict(list(params["seed"].items())[1:])}
    with pytest.raises(ParamsMismatchError, match="missing"):
        slot_apply(slot, missing, torch.tensor(0.5), features("cnn", 0), stage=S.BLENDING)
    extra = {"seed": {**params["seed"], "bogus": torch.zeros(1)}}
    with pytest.raises(ParamsMismatchError, match="bogus"):
        slot_apply(slot, extra, torch.tensor(0.5), features("cnn", 0), stage=S.BLENDING)
    with pytest.raises(ParamsMismatchError, match="gate"):
        slot_apply(slot, {**params, "gate": {}}, torch.tensor(0.5), features("cnn", 0), stage=S.BLENDING)
    key = next(iter(params["seed"]))
    wrong = {"seed": {**params["seed"], key: torch.zeros(1)}}
    with pytest.raises(ParamsMismatchError, match="shape"):
        slot_apply(slot, wrong, torch.tensor(0.5), features("cnn", 0), stage=S.BLENDING)


def test_bad_germination_requests():
    with pytest.raises(UnknownTopologyError, match="transformer"):
        germinate_slot(registry(), "rnn", "norm", 8)
    with pytest.raises(UnknownBlueprintError, match="conv_light"):
        germinate_slot(registry(), "cnn", "conv_huge", 8)
    with pytest.raises(TypeError, match="bogus"):
        germinate_slot(registry(), "cnn", "norm", 8, bogus=1)
    with pytest.raises(ValueError, match="positive"):
        germinate_slot(registry(), "cnn", "norm", 0)


class _Shrink(torch.nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = torch.nn.Conv2d(dim, dim, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def _build_shrink(dim: int) -> torch.nn.Module:
    return _Shrink(dim)


def test_germination_refuses_a_seed_that_changes_the_feature_shape():
    bad = Blueprint(name="shrink", topology="cnn", build=_build_shrink, param_estimate=1, description="bad")
    reg = registry().with_blueprint(bad)
    with pytest.raises(ShapeError, match="shrink"):
        germinate_slot(reg, "cnn", "shrink", 8)


def test_negative_alpha_in_training_is_still_the_incubator():
    slot, params = make("cnn", "conv_light")
    x = features("cnn", 2)
    w_out = features("cnn", 3)

    def seed_grad(a: float) -> float:
        g = grad(lambda p: (slot_apply(slot, {"seed": p}, torch.tensor(a), x, stage=S.TRAINING) * w_out).sum())(
            params["seed"]
        )
        return float(sum(t.abs().sum() for t in g.values()))

    assert torch.equal(slot_apply(slot, params, torch.tensor(-0.25), x, stage=S.TRAINING), x)
    assert seed_grad(-0.25) == seed_grad(0.0) > 0


class _WithBuffer(torch.nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x)


def _build_with_buffer(dim: int) -> torch.nn.Module:
    return _WithBuffer(dim)


def test_blueprints_with_buffers_are_refused():
    bad = Blueprint(name="batchnorm", topology="cnn", build=_build_with_buffer, param_estimate=1, description="bad")
    with pytest.raises(ef.errors.BlueprintError, match="running_mean"):
        germinate_slot(registry().with_blueprint(bad), "cnn", "batchnorm", 8)
