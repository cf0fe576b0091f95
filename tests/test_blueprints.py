"""Tests for the built-in blueprints (esper_func.blueprints.cnn / .transformer / ._init).

Expected names, shapes, estimates and init facts are hand-written from
esper-lite's ``src/esper/kasmina/blueprints/{cnn,transformer,initialization}.py``.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call, vmap

from esper_func.blueprints import default_registry, zero_init_final_layer
from esper_func.blueprints._init import final_affine_layer_name
from esper_func.blueprints.cnn import get_num_groups
from esper_func.blueprints.transformer import causal_attention
from esper_func.errors import ShapeError

REG = default_registry()
CNN_NAMES = (
    "noop", "norm", "attention", "depthwise",
    "bottleneck", "conv_small", "conv_light", "conv_heavy",
)  # fmt: skip
TF_NAMES = ("noop", "norm", "lora", "lora_large", "attention", "flex_attention", "mlp_small", "mlp")
ALL_KEYS = [f"cnn:{n}" for n in CNN_NAMES] + [f"transformer:{n}" for n in TF_NAMES]

# --- expected tables (dim = 64; GroupNorm(64) has 4 groups) -----------------
C = 64
EXPECTED_STATE: dict[str, dict[str, tuple[int, ...]]] = {
    "cnn:noop": {},
    "cnn:norm": {"scale": (1,), "norm.weight": (C,), "norm.bias": (C,)},
    "cnn:attention": {"fc.0.weight": (16, C), "fc.2.weight": (C, 16), "fc.2.bias": (C,)},
    "cnn:depthwise": {
        "depthwise.weight": (C, 1, 3, 3),
        "pointwise.weight": (C, C, 1, 1),
        "gn.weight": (C,),
        "gn.bias": (C,),
    },
    "cnn:bottleneck": {
        "down.weight": (16, C, 1, 1),
        "conv.weight": (16, 16, 3, 3),
        "up.weight": (C, 16, 1, 1),
        "gn.weight": (C,),
        "gn.bias": (C,),
    },
    "cnn:conv_small": {"conv.weight": (C, C, 1, 1), "gn.weight": (C,), "gn.bias": (C,)},
    "cnn:conv_light": {
        "enhance.conv.weight": (C, C, 3, 3),
        "enhance.gn.weight": (C,),
        "enhance.gn.bias": (C,),
    },
    "cnn:conv_heavy": {
        "enhance.0.conv.weight": (C, C, 3, 3),
        "enhance.0.gn.weight": (C,),
        "enhance.0.gn.bias": (C,),
        "enhance.1.conv.weight": (C, C, 3, 3),
        "enhance.1.gn.weight": (C,),
        "enhance.1.gn.bias": (C,),
    },
    "transformer:noop": {},
    "transformer:norm": {"scale": (1,), "norm.weight": (C,), "norm.bias": (C,)},
    "transformer:lora": {"down.weight": (8, C), "up.weight": (C, 8)},
    "transformer:lora_large": {"down.weight": (32, C), "up.weight": (C, 32)},
    "transformer:attention": {
        "qkv.weight": (3 * C, C),
        "qkv.bias": (3 * C,),
        "proj.weight": (C, C),
        "proj.bias": (C,),
    },
    "transformer:flex_attention": {
        "qkv.weight": (3 * C, C),
        "qkv.bias": (3 * C,),
        "proj.weight": (C, C),
        "proj.bias": (C,),
    },
    "transformer:mlp_small": {
        "fc1.weight": (2 * C, C),
        "fc1.bias": (2 * C,),
        "fc2.weight": (C, 2 * C),
        "fc2.bias": (C,),
    },
    "transformer:mlp": {
        "fc1.weight": (4 * C, C),
        "fc1.bias": (4 * C,),
        "fc2.weight": (C, 4 * C),
        "fc2.bias": (C,),
    },
}

EXPECTED_ESTIMATE = {
    "cnn:noop": 0,
    "cnn:norm": 130,
    "cnn:attention": 2000,
    "cnn:depthwise": 4800,
    "cnn:bottleneck": 4500,
    "cnn:conv_small": 4200,
    "cnn:conv_light": 37000,
    "cnn:conv_heavy": 74000,
    "transformer:noop": 0,
    "transformer:norm": 800,
    "transformer:lora": 6000,
    "transformer:lora_large": 25000,
    "transformer:attention": 591000,
    "transformer:flex_attention": 591000,
    "transformer:mlp_small": 591000,
    "transformer:mlp": 1200000,
}

EXPECTED_KWARGS = {
    "cnn:attention": ("reduction",),
    "cnn:bottleneck": ("reduction",),
    "transformer:lora": ("rank",),
    "transformer:lora_large": ("rank",),
    "transformer:attention": ("n_head",),
    "transformer:flex_attention": ("n_head",),
    "transformer:mlp_small": ("expansion", "checkpoint"),
    "transformer:mlp": ("expansion", "checkpoint"),
}

#: Seeds that are exactly the identity at birth.
IDENTITY_AT_BIRTH = {
    "cnn:noop",
    "cnn:norm",
    "cnn:bottleneck",
    "cnn:conv_small",
    *(f"transformer:{n}" for n in TF_NAMES),
}

#: What esper-lite's zero_init_final_layer zeroes (the last Linear/Conv in named_modules order).
EXPECTED_FINAL_LAYER = {
    "cnn:noop": None,
    "cnn:norm": None,
    "cnn:attention": "fc.2",
    "cnn:depthwise": "pointwise",
    "cnn:bottleneck": "up",
    "cnn:conv_small": "conv",
    "cnn:conv_light": "enhance.conv",
    "cnn:conv_heavy": "enhance.1.conv",
    "transformer:noop": None,
    "transformer:norm": None,
    "transformer:lora": "up",
    "transformer:lora_large": "up",
    "transformer:attention": "proj",
    "transformer:flex_attention": "proj",
    "transformer:mlp_small": "fc2",
    "transformer:mlp": "fc2",
}


def build(key: str, dim: int = C, *, seed: int = 0, **kwargs: object) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return REG[key].build(dim, **kwargs)


def sample_input(key: str, dim: int, *, seed: int = 1, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if key.startswith("cnn:"):
        return torch.randn(batch, dim, 5, 4, generator=g)
    return torch.randn(batch, 6, dim, generator=g)


def perturbed_params(module: nn.Module, seed: int = 3) -> dict[str, torch.Tensor]:
    """Parameters moved off their init so zero-initialised layers do something."""
    g = torch.Generator().manual_seed(seed)
    return {
        n: p.detach() + 0.1 * torch.randn(p.shape, generator=g)
        for n, p in module.named_parameters()
    }


# --- registry contents -------------------------------------------------------


def test_default_registry_holds_exactly_the_16_builtins() -> None:
    assert sorted(REG) == sorted(ALL_KEYS)
    assert set(REG.names("cnn")) == set(CNN_NAMES)
    assert set(REG.names("transformer")) == set(TF_NAMES)


@pytest.mark.parametrize("key", ALL_KEYS)
def test_param_estimate_matches_esper_lite(key: str) -> None:
    assert REG[key].param_estimate == EXPECTED_ESTIMATE[key]


@pytest.mark.parametrize("key", ALL_KEYS)
def test_state_dict_names_and_shapes_match_esper_lite(key: str) -> None:
    module = build(key)
    got = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    assert got == EXPECTED_STATE[key]
    assert list(got) == list(EXPECTED_STATE[key])  # same order as esper-lite


@pytest.mark.parametrize("key", ALL_KEYS)
def test_no_buffers_and_all_params_trainable(key: str) -> None:
    module = build(key)
    assert list(module.buffers()) == []
    assert all(p.requires_grad for p in module.parameters())


def test_bottleneck_and_attention_widths_follow_esper_lite() -> None:
    # bottleneck width is max(8, C // reduction); SE hidden width max(1, C // reduction)
    assert build("cnn:bottleneck", 16).down.weight.shape == (8, 16, 1, 1)
    assert build("cnn:bottleneck", 64, reduction=2).down.weight.shape == (32, 64, 1, 1)
    assert build("cnn:attention", 3).fc[0].weight.shape == (1, 3)
    assert build("cnn:attention", 64, reduction=8).fc[0].weight.shape == (8, 64)


# --- shapes (hypothesis) -----------------------------------------------------


@pytest.mark.parametrize("name", CNN_NAMES)
@given(
    channels=st.integers(1, 40),
    batch=st.integers(1, 3),
    height=st.integers(1, 6),
    width=st.integers(2, 6),  # GroupNorm rejects groups holding a single value
    seed=st.integers(0, 2**16),
)
def test_cnn_seeds_keep_feature_shape(
    name: str, channels: int, batch: int, height: int, width: int, seed: int
) -> None:
    module = build(f"cnn:{name}", channels, seed=seed)
    x = torch.randn(batch, channels, height, width)
    y = functional_call(module, perturbed_params(module, seed), (x,), strict=True)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", TF_NAMES)
@given(
    heads_dim=st.integers(1, 12),
    batch=st.integers(1, 3),
    seq=st.integers(1, 8),
    seed=st.integers(0, 2**16),
)
def test_transformer_seeds_keep_feature_shape(
    name: str, heads_dim: int, batch: int, seq: int, seed: int
) -> None:
    dim = 4 * heads_dim  # attention seeds need dim % n_head == 0 (n_head = 4)
    module = build(f"transformer:{name}", dim, seed=seed)
    x = torch.randn(batch, seq, dim)
    y = functional_call(module, perturbed_params(module, seed), (x,), strict=True)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


# --- initialisation facts ------------------------------------------------------


@pytest.mark.parametrize("key", sorted(IDENTITY_AT_BIRTH))
def test_identity_at_birth(key: str) -> None:
    module = build(key, 16)
    x = sample_input(key, 16)
    assert torch.equal(module(x), x)


@pytest.mark.parametrize("key", sorted(set(ALL_KEYS) - IDENTITY_AT_BIRTH))
def test_not_identity_at_birth_where_esper_lite_is_not(key: str) -> None:
    module = build(key, 16)
    x = sample_input(key, 16)
    assert not torch.equal(module(x), x)


def test_se_attention_gate_starts_at_sigmoid_3() -> None:
    module = build("cnn:attention", 32)
    assert torch.equal(module.fc[2].weight, torch.zeros(32, 8))
    assert torch.equal(module.fc[2].bias, torch.full((32,), 3.0))
    assert module.fc[0].bias is None
    x = sample_input("cnn:attention", 32)
    assert torch.equal(module(x), x * torch.sigmoid(torch.tensor(3.0)))


@pytest.mark.parametrize(("key", "rank"), [("transformer:lora", 8), ("transformer:lora_large", 32)])
def test_lora_ranks(key: str, rank: int) -> None:
    module = build(key, 48)
    assert module.down.weight.shape == (rank, 48)
    assert module.up.weight.shape == (48, rank)
    assert torch.equal(module.up.weight, torch.zeros(48, rank))
    assert build(key, 48, rank=3).down.weight.shape == (3, 48)


@pytest.mark.parametrize(
    ("channels", "groups"),
    [
        (1, 1), (2, 2), (3, 1), (7, 1), (8, 8), (12, 4), (16, 1), (17, 1), (24, 1), (32, 2),
        (48, 2), (64, 4), (80, 4), (96, 4), (128, 8), (256, 16), (512, 32), (1024, 32),
    ],
)  # fmt: skip
def test_groupnorm_group_rule(channels: int, groups: int) -> None:
    assert get_num_groups(channels) == groups
    assert build("cnn:norm", channels).norm.num_groups == groups
    assert build("cnn:conv_light", channels).enhance.gn.num_groups == groups


@given(channels=st.integers(1, 2048))
def test_groupnorm_group_rule_properties(channels: int) -> None:
    groups = get_num_groups(channels)
    assert groups in (1, 2, 4, 8, 16, 32)
    assert channels % groups == 0
    bigger = [g for g in (2, 4, 8, 16, 32) if g > groups and channels % g == 0]
    if channels // groups >= 16:  # any bigger divisor leaves fewer than 16 per group
        assert all(channels // g < 16 for g in bigger)
    else:  # no divisor reaches 16 per group, so the largest divisor wins
        assert not bigger


@pytest.mark.parametrize("key", [k for k in ALL_KEYS if k not in ("cnn:noop", "transformer:noop")])
def test_same_seed_same_weights_bitwise(key: str) -> None:
    a, b = build(key, 32, seed=7), build(key, 32, seed=7)
    for (na, ta), (nb, tb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert na == nb and torch.equal(ta, tb)
    c = build(key, 32, seed=8)
    # norm: ones/zeros only; conv_small: its one random tensor is then zeroed
    randomly_initialised = key not in ("cnn:norm", "transformer:norm", "cnn:conv_small")
    pairs = zip(a.state_dict().values(), c.state_dict().values(), strict=True)
    differs = any(not torch.equal(ta, tc) for ta, tc in pairs)
    assert differs == randomly_initialised


def test_build_restores_nothing_but_uses_global_rng_as_esper_lite_does() -> None:
    # Same layers in the same order as esper-lite, so a hand-made reference
    # built under the same seed has the same weights.
    with torch.random.fork_rng():
        torch.manual_seed(11)
        ref_down = nn.Conv2d(32, 8, 1, bias=False)
        ref_conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
    got = build("cnn:bottleneck", 32, seed=11)
    assert torch.equal(got.down.weight, ref_down.weight)
    assert torch.equal(got.conv.weight, ref_conv.weight)

    with torch.random.fork_rng():
        torch.manual_seed(12)
        ref_qkv = nn.Linear(16, 48)
    got = build("transformer:flex_attention", 16, seed=12)
    assert torch.equal(got.qkv.weight, ref_qkv.weight)
    assert torch.equal(got.qkv.bias, ref_qkv.bias)

    with torch.random.fork_rng():
        torch.manual_seed(13)
        ref_fc0 = nn.Linear(16, 4, bias=False)
    assert torch.equal(build("cnn:attention", 16, seed=13).fc[0].weight, ref_fc0.weight)


def test_fork_rng_leaves_global_rng_untouched() -> None:
    before = torch.random.get_rng_state()
    build("cnn:conv_heavy", 16)
    assert torch.equal(torch.random.get_rng_state(), before)


# --- keyword arguments --------------------------------------------------------


@pytest.mark.parametrize("key", ALL_KEYS)
def test_unknown_kwarg_raises_type_error_naming_accepted(key: str) -> None:
    with pytest.raises(TypeError) as info:
        REG[key].build(16, bogus=1)
    message = str(info.value)
    assert "bogus" in message and key in message
    for kw in EXPECTED_KWARGS.get(key, ()):
        assert kw in message
    if key not in EXPECTED_KWARGS:
        assert "none" in message


def test_attention_head_divisibility() -> None:
    with pytest.raises(ShapeError, match="n_head"):
        REG.get("transformer", "attention").build(30)
    with pytest.raises(ShapeError, match="n_head"):
        REG.get("transformer", "flex_attention").build(64, n_head=5)
    assert build("transformer:attention", 30, n_head=3).n_head == 3


@pytest.mark.parametrize("bad", [0, -4, 2.0, True])
def test_bad_dim_rejected(bad: object) -> None:
    with pytest.raises((TypeError, ValueError), match="cnn:conv_light"):
        REG.get("cnn", "conv_light").build(bad)


def test_mlp_kwargs() -> None:
    assert build("transformer:mlp", 8, expansion=2).fc1.weight.shape == (16, 8)
    assert build("transformer:mlp_small", 8).fc1.weight.shape == (16, 8)
    with pytest.raises(TypeError, match="checkpoint"):
        REG.get("transformer", "mlp").build(8, checkpoint="yes")


def test_mlp_checkpoint_changes_no_values_or_grads() -> None:
    plain = build("transformer:mlp", 8, seed=5)
    ckpt = build("transformer:mlp", 8, seed=5, checkpoint=True)
    params = perturbed_params(plain)
    x = torch.randn(2, 3, 8, requires_grad=True)
    outs, grads = [], []
    for module in (plain, ckpt):
        module.train()
        p = {n: t.clone().requires_grad_(True) for n, t in params.items()}
        y = functional_call(module, p, (x,), strict=True)
        g = torch.autograd.grad(y.square().sum(), [x, *p.values()])
        outs.append(y.detach())
        grads.append(g)
    assert torch.equal(outs[0], outs[1])
    for a, b in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(a, b)


# --- zero_init_final_layer --------------------------------------------------------


@pytest.mark.parametrize("key", ALL_KEYS)
def test_zero_init_final_layer_zeroes_what_esper_lite_zeroes(key: str) -> None:
    module = build(key, 16)
    assert final_affine_layer_name(module) == EXPECTED_FINAL_LAYER[key]
    before = {n: t.clone() for n, t in module.state_dict().items()}
    assert zero_init_final_layer(module) is module
    prefix = EXPECTED_FINAL_LAYER[key]
    for name, tensor in module.state_dict().items():
        if prefix is not None and name in (f"{prefix}.weight", f"{prefix}.bias"):
            assert torch.equal(tensor, torch.zeros_like(tensor)), name
        else:
            assert torch.equal(tensor, before[name]), name


@pytest.mark.parametrize("key", ["cnn:depthwise", "cnn:conv_light", "cnn:conv_heavy"])
def test_zero_init_final_layer_makes_residual_convs_identity(key: str) -> None:
    module = zero_init_final_layer(build(key, 16))
    x = sample_input(key, 16)
    assert torch.equal(module(x), x)


def test_zero_init_final_layer_zeroes_se_bias_too() -> None:
    module = zero_init_final_layer(build("cnn:attention", 16))
    x = sample_input("cnn:attention", 16)
    assert torch.equal(module(x), x * 0.5)  # sigmoid(0), as in esper-lite


def test_zero_init_final_layer_missing() -> None:
    module = build("cnn:norm", 8)
    assert zero_init_final_layer(module) is module
    with pytest.raises(ValueError, match="allow_missing"):
        zero_init_final_layer(build("transformer:noop", 8), allow_missing=False)


# --- functional-runtime constraints -------------------------------------------------


@pytest.mark.parametrize("key", ALL_KEYS)
def test_pure_functional_call_on_meta_skeleton(key: str) -> None:
    module = build(key, 16)
    params = perturbed_params(module)
    skeleton = copy.deepcopy(module).to("meta")
    x = sample_input(key, 16)
    x_before = x.clone()
    params_before = {n: t.clone() for n, t in params.items()}

    y = functional_call(skeleton, params, (x,), strict=True)
    assert torch.equal(x, x_before)
    assert all(torch.equal(params[n], params_before[n]) for n in params)
    torch.testing.assert_close(y, functional_call(module, params, (x,), strict=True))

    module.eval()  # no dropout / batch-norm: train and eval are the same function
    torch.testing.assert_close(functional_call(module, params, (x,), strict=True), y)


@pytest.mark.parametrize("key", ALL_KEYS)
def test_vmap_over_params_and_inputs(key: str) -> None:
    module = build(key, 16)
    skeleton = copy.deepcopy(module).to("meta")
    x = sample_input(key, 16, batch=3)
    p1, p2 = perturbed_params(module, 1), perturbed_params(module, 2)

    def apply(p: dict[str, torch.Tensor], inp: torch.Tensor) -> torch.Tensor:
        return functional_call(skeleton, p, (inp,), strict=True)

    loop = torch.stack([apply(p1, x), apply(p2, x)])
    if p1:
        stacked = {n: torch.stack([p1[n], p2[n]]) for n in p1}
        torch.testing.assert_close(vmap(apply, in_dims=(0, None))(stacked, x), loop)
    per_sample = vmap(lambda xi: apply(p1, xi[None])[0])(x)
    torch.testing.assert_close(per_sample, apply(p1, x))


@pytest.mark.parametrize("key", ALL_KEYS)
def test_compiles_fullgraph(key: str) -> None:
    torch._dynamo.reset()
    module = build(key, 16)
    skeleton = copy.deepcopy(module).to("meta")
    params = perturbed_params(module)
    x = sample_input(key, 16)

    def apply(p: dict[str, torch.Tensor], inp: torch.Tensor) -> torch.Tensor:
        return functional_call(skeleton, p, (inp,), strict=True)

    compiled = torch.compile(apply, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(params, x), apply(params, x))


# --- attention kernels -------------------------------------------------------------


def naive_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Row-by-row causal softmax attention, written with loops (test oracle)."""
    _b, _h, t, d = q.shape
    out = torch.empty_like(q)
    for i in range(t):
        scores = (q[:, :, i : i + 1, :] @ k[:, :, : i + 1, :].transpose(-2, -1)) / math.sqrt(d)
        out[:, :, i, :] = (scores.softmax(dim=-1) @ v[:, :, : i + 1, :])[:, :, 0, :]
    return out


@given(
    batch=st.integers(1, 2), heads=st.integers(1, 3), seq=st.integers(1, 7), hd=st.integers(1, 8)
)
def test_causal_attention_matches_naive_and_sdpa(batch: int, heads: int, seq: int, hd: int) -> None:
    g = torch.Generator().manual_seed(batch * 1000 + heads * 100 + seq * 10 + hd)
    shape = (batch, heads, seq, hd)
    q, k, v = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3))
    got = causal_attention(q, k, v)
    torch.testing.assert_close(got, naive_causal_attention(q, k, v))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(got, ref)


def test_flex_attention_fallback_equals_hand_computed_causal_attention() -> None:
    dim, n_head = 16, 4
    module = build("transformer:flex_attention", dim, seed=3)
    params = perturbed_params(module)  # makes proj non-zero so attention shows
    x = torch.randn(2, 5, dim, generator=torch.Generator().manual_seed(4))

    qkv = x @ params["qkv.weight"].T + params["qkv.bias"]
    q, k, v = (
        t.reshape(2, 5, n_head, dim // n_head).transpose(1, 2) for t in qkv.split(dim, dim=-1)
    )
    attn = naive_causal_attention(q, k, v).transpose(1, 2).reshape(2, 5, dim)
    expected = x + attn @ params["proj.weight"].T + params["proj.bias"]

    got = functional_call(module, params, (x,), strict=True)
    torch.testing.assert_close(got, expected)
    # The plain attention seed computes the same function from the same parameters.
    plain = build("transformer:attention", dim)
    torch.testing.assert_close(functional_call(plain, params, (x,), strict=True), got)


def test_attention_is_causal() -> None:
    module = build("transformer:attention", 16)
    params = perturbed_params(module)
    x = torch.randn(1, 6, 16)
    y = functional_call(module, params, (x,), strict=True)
    x2 = x.clone()
    x2[:, 4:] += 1.0  # change the future only
    y2 = functional_call(module, params, (x2,), strict=True)
    torch.testing.assert_close(y[:, :4], y2[:, :4])
    assert not torch.allclose(y[:, 4:], y2[:, 4:])


def test_low_precision_attention_stays_in_dtype() -> None:
    module = build("transformer:attention", 16).to(torch.bfloat16)
    x = torch.randn(2, 4, 16, dtype=torch.bfloat16)
    assert module(x).dtype == torch.bfloat16
