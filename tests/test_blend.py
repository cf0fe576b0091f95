"""Blend operators against hand-computed values and their contracts."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from esper_func.blend import (
    AlphaAlgorithm,
    blend,
    blend_add,
    blend_gate,
    blend_multiply,
    gate_effective_alpha,
    multiply_multiplier,
    straight_through,
)

alphas = st.floats(-2.0, 3.0, allow_nan=False)
shapes = st.sampled_from([(2, 3, 4, 4), (3, 5, 4), (1, 2, 1, 1)])
seeds = st.integers(0, 2**16)


def _pair(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


@given(shapes, seeds)
def test_every_operator_is_identity_at_alpha_zero(shape, seed):
    h, s = _pair(shape, seed)
    zero = torch.tensor(0.0)
    gate = torch.rand(shape[0], *([1] * (len(shape) - 1)), generator=torch.Generator().manual_seed(seed))
    for algorithm in AlphaAlgorithm:
        out = blend(algorithm, h, s, zero, seed_input=s * 0.5, gate=gate)
        assert torch.equal(out, h), algorithm


@given(shapes, seeds, alphas)
def test_add_is_a_clamped_lerp(shape, seed, a):
    h, s = _pair(shape, seed)
    clamped = min(max(a, 0.0), 1.0)
    expected = h + clamped * (s - h)
    torch.testing.assert_close(blend_add(h, s, torch.tensor(a)), expected)


@given(shapes, seeds, alphas)
def test_multiply_multiplier_is_bounded(shape, seed, a):
    _, m = _pair(shape, seed)
    m = m * 10
    clamped = min(max(a, 0.0), 1.0)
    mult = multiply_multiplier(torch.tensor(a), m)
    assert bool((mult >= 1 - clamped - 1e-6).all()) and bool((mult <= 1 + clamped + 1e-6).all())


@given(shapes, seeds, alphas)
def test_multiply_matches_formula(shape, seed, a):
    h, s = _pair(shape, seed)
    seed_input = h.detach() * 0.5
    clamped = min(max(a, 0.0), 1.0)
    expected = h * (1 + clamped * torch.tanh(s - seed_input))
    out = blend_multiply(h, s, torch.tensor(a), seed_input=seed_input)
    torch.testing.assert_close(out, expected)


@given(alphas, st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=8))
def test_gate_effective_alpha_in_unit_interval(a, gates):
    eff = gate_effective_alpha(torch.tensor(a), torch.tensor(gates))
    assert bool((eff >= 0).all()) and bool((eff <= 1).all())


@given(shapes, seeds, st.floats(0.0, 1.0))
def test_gate_is_lerp_with_alpha_times_gate(shape, seed, a):
    h, s = _pair(shape, seed)
    gate = torch.rand(shape[0], *([1] * (len(shape) - 1)), generator=torch.Generator().manual_seed(seed + 1))
    expected = h + (a * gate) * (s - h)
    torch.testing.assert_close(blend_gate(h, s, torch.tensor(a), gate), expected)


def test_straight_through_forward_is_host_and_seed_gets_upstream_gradient():
    h, s = _pair((2, 3, 4, 4), 0)
    h.requires_grad_(True)
    s.requires_grad_(True)
    out = straight_through(h, s)
    assert torch.equal(out, h)
    upstream = torch.randn_like(out)
    grad_h, grad_s = torch.autograd.grad(out, (h, s), upstream)
    assert torch.equal(grad_s, upstream)
    assert torch.equal(grad_h, upstream)


@pytest.mark.parametrize("algorithm", list(AlphaAlgorithm))
def test_result_is_in_host_dtype(algorithm):
    h, s = _pair((2, 4, 3, 3), 1)
    h16 = h.to(torch.bfloat16)
    gate = torch.full((2, 1, 1, 1), 0.5)
    out = blend(algorithm, h16, s, torch.tensor(0.3), seed_input=s, gate=gate)
    assert out.dtype == torch.bfloat16
    assert straight_through(h16, s).dtype == torch.bfloat16


def test_gate_without_gate_output_is_a_clear_error():
    h, s = _pair((2, 3), 0)
    with pytest.raises(ValueError, match="gate"):
        blend(AlphaAlgorithm.GATE, h, s, torch.tensor(0.5), seed_input=h)


@given(shapes, seeds, alphas)
def test_operators_do_not_mutate_inputs(shape, seed, a):
    h, s = _pair(shape, seed)
    alpha = torch.tensor(a)
    gate = torch.full((shape[0],) + (1,) * (len(shape) - 1), 0.7)
    before = [t.clone() for t in (h, s, alpha, gate)]
    for algorithm in AlphaAlgorithm:
        blend(algorithm, h, s, alpha, seed_input=s, gate=gate)
    straight_through(h, s)
    for old, new in zip(before, (h, s, alpha, gate), strict=True):
        assert torch.equal(old, new)
