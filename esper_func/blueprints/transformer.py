"""Built-in seed blueprints for transformer hosts.

Every seed maps ``[B, T, C] -> [B, T, C]`` and has exactly the parameter
names, shapes and initialisation of esper-lite's
``kasmina/blueprints/transformer.py`` (same layers built in the same order
with torch's default initialisers, then the same zero inits), so esper-lite
seed weights load by name; ``germinate_slot`` draws them from an explicit
generator, never from torch's global RNG. Every seed is the exact
identity at birth.

===============  =============================================  =========
name             module (zero-initialised layer)                estimate
===============  =============================================  =========
noop             identity, no parameters                        0
norm             ``x + tanh(scale) * (LN(x) - x)`` (``scale``)  800
lora             ``x + up(down(x))``, rank 8 (``up``)           6000
lora_large       same, rank 32 (``up``)                         25000
attention        ``x + proj(causal_mha(qkv(x)))`` (``proj``)    591000
flex_attention   same parameters; FlexAttention kernel          591000
mlp_small        ``x + fc2(gelu(fc1(x)))``, 2x (``fc2``)        591000
mlp              same, 4x (``fc2``)                             1200000
===============  =============================================  =========

Keyword arguments: ``lora(rank=8)``, ``lora_large(rank=32)``,
``attention(n_head=4)``, ``flex_attention(n_head=4)``,
``mlp_small(expansion=2, checkpoint=False)``,
``mlp(expansion=4, checkpoint=False)``; ``noop`` and ``norm`` take none.

Forwards are pure functions of (parameters, input) with no buffers and no
mask caches: causal masks are implied by the attention kernel, not stored.
"""

from __future__ import annotations

from typing import Any, Final

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as _activation_checkpoint

from esper_func.blueprints.registry import Blueprint, check_dim, reject_unknown_kwargs
from esper_func.errors import InvalidTypeError, ShapeError

try:  # FlexAttention ships with torch >= 2.5
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
except ImportError:  # pragma: no cover - exercised only on old torch
    create_block_mask = None  # type: ignore[assignment]
    flex_attention = None  # type: ignore[assignment]

__all__ = [
    "BLUEPRINTS",
    "TransformerNormSeed",
    "LoRASeed",
    "CausalSelfAttentionSeed",
    "FlexAttentionSeed",
    "MLPSeed",
    "causal_attention",
]


def _under_vmap(t: Tensor) -> bool:
    """Whether ``t`` is being batched by ``torch.func.vmap`` (at any level of nested transforms)."""
    functorch = torch._C._functorch
    while functorch.is_functorch_wrapped_tensor(t):
        if functorch.is_batchedtensor(t):
            return True
        t = functorch.get_unwrapped(t)
    return False


def causal_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Causal softmax attention on ``[..., T, D]`` tensors with scale ``D ** -0.5``.

    ``F.scaled_dot_product_attention(..., is_causal=True)``, as esper-lite
    computes it, so imported seeds predict bitwise as there. Under
    ``torch.func.vmap`` on the CPU the fused kernel has no batching rule (vmap
    would fall back to a slow per-sample loop and warn), so there it is
    written out: ``softmax(q k^T / sqrt(D) + causal mask) v`` with the mask
    made on the fly and the softmax in at least float32; the same function,
    rounded differently (about 1e-6).
    """
    if q.is_cuda or torch.compiler.is_compiling() or not _under_vmap(q):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    t = q.shape[-2]
    scores = torch.matmul(q, k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~causal, float("-inf"))  # the diagonal is never masked
    weights = scores.to(torch.promote_types(scores.dtype, torch.float32)).softmax(dim=-1)
    return torch.matmul(weights.to(v.dtype), v)


def _causal_mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
    return q_idx >= kv_idx


class TransformerNormSeed(nn.Module):
    """``x + tanh(scale) * (LayerNorm(x) - x)``; ``scale`` starts at 0 (identity)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.scale = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        return x + torch.tanh(self.scale) * (self.norm(x) - x)


class LoRASeed(nn.Module):
    """Low-rank residual adapter ``x + up(down(x))``; ``up`` is zero at birth (identity)."""

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.up(self.down(x))


class CausalSelfAttentionSeed(nn.Module):
    """Residual causal multi-head self-attention ``x + proj(attn(qkv(x)))``.

    ``proj`` (weight and bias) is zero at birth, so the seed starts as the identity.
    """

    def __init__(self, dim: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.head_dim = dim // n_head
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return causal_attention(q, k, v)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.n_head, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, T, D]
        out = self._attend(q, k, v).transpose(1, 2).reshape(b, t, c)
        return x + self.proj(out)


class FlexAttentionSeed(CausalSelfAttentionSeed):
    """:class:`CausalSelfAttentionSeed` whose kernel is FlexAttention where that runs.

    Same parameters, same function. Which path runs:

    - **FlexAttention** (``torch.nn.attention.flex_attention`` with a causal
      block mask built inside the call, no cache) when the input is on CUDA,
      the call is being traced by ``torch.compile`` (the only setting in which
      FlexAttention is a fused kernel; eagerly it materialises the full score
      matrix and warns), and ``head_dim`` is a power of two >= 16.
    - :func:`causal_attention` everywhere else (CPU, eager CUDA, small or odd
      head sizes): the same causal softmax attention with scale
      ``head_dim ** -0.5``, as SDPA on CUDA and written out elsewhere.

    FlexAttention has no ``vmap`` batching rule, so ``vmap`` of a compiled
    forward on CUDA is not supported; eager ``vmap`` takes the fallback.
    """

    def _use_flex(self, q: Tensor) -> bool:
        d = self.head_dim
        return (
            flex_attention is not None
            and q.is_cuda
            and torch.compiler.is_compiling()
            and d >= 16
            and d & (d - 1) == 0
        )

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if self._use_flex(q):
            t = q.shape[-2]
            block_mask = create_block_mask(
                _causal_mask_mod, B=None, H=None, Q_LEN=t, KV_LEN=t, device=q.device
            )
            return flex_attention(q, k, v, block_mask=block_mask)
        return causal_attention(q, k, v)


class MLPSeed(nn.Module):
    """Residual MLP ``x + fc2(gelu(fc1(x)))`` with hidden width ``expansion * dim``.

    ``fc2`` (weight and bias) is zero at birth (identity). With
    ``use_checkpoint`` the hidden activation is recomputed in the backward
    pass when the module is in training mode and ``x`` requires grad (as in
    esper-lite); this saves memory and never changes values. Checkpointing
    needs eager autograd: inside a ``torch.func`` transform (``grad``, which
    ``ef.train.train_step`` uses, or ``vmap``) saved-tensor hooks are not
    supported, so there the plain forward runs (same values, no memory saving).
    """

    def __init__(self, dim: int, expansion: int, use_checkpoint: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, dim * expansion)
        self.fc2 = nn.Linear(dim * expansion, dim)
        self.use_checkpoint = use_checkpoint
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: Tensor) -> Tensor:
        weights = (self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)
        if self.use_checkpoint and self.training and x.requires_grad and not _in_functorch_transform(x):
            # The weights are passed in, not read from self during recomputation:
            # under functional_call the module's own tensors are swapped back by
            # the time backward runs, so a closure over self would recompute
            # with the wrong weights. _mlp_delta draws no random numbers, so the
            # global RNG state need not be saved and restored around the recompute
            # (preserve_rng_state=True would read and write it, racing other threads).
            return x + _activation_checkpoint(
                _mlp_delta, x, *weights, use_reentrant=False, preserve_rng_state=False
            )
        return x + _mlp_delta(x, *weights)


def _in_functorch_transform(x: Tensor) -> bool:
    # torch exposes no public predicate; fall back to "no" if this one disappears.
    is_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return bool(is_wrapped(x)) if is_wrapped is not None else False


def _mlp_delta(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
    return F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2)


# --- builders (module level, so blueprints pickle by reference) -------------


def _heads(key: str, dim: int, n_head: object) -> int:
    n_head = check_dim(key, n_head, what="n_head")
    if dim % n_head != 0:
        raise ShapeError(f"{key}: dim must be divisible by n_head; got dim={dim}, n_head={n_head}")
    return n_head


def _flag(key: str, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidTypeError(f"{key}: {name} must be a bool; got {value!r}")
    return value


def build_noop(dim: int, **unknown: Any) -> nn.Module:
    """``transformer:noop``: the identity (no parameters)."""
    reject_unknown_kwargs("transformer:noop", unknown, ())
    check_dim("transformer:noop", dim)
    return nn.Identity()


def build_norm(dim: int, **unknown: Any) -> nn.Module:
    """``transformer:norm``: :class:`TransformerNormSeed`."""
    reject_unknown_kwargs("transformer:norm", unknown, ())
    return TransformerNormSeed(check_dim("transformer:norm", dim))


def build_lora(dim: int, *, rank: int = 8, **unknown: Any) -> nn.Module:
    """``transformer:lora``: :class:`LoRASeed` of rank ``rank`` (default 8)."""
    reject_unknown_kwargs("transformer:lora", unknown, ("rank",))
    dim = check_dim("transformer:lora", dim)
    return LoRASeed(dim, check_dim("transformer:lora", rank, what="rank"))


def build_lora_large(dim: int, *, rank: int = 32, **unknown: Any) -> nn.Module:
    """``transformer:lora_large``: :class:`LoRASeed` of rank ``rank`` (default 32)."""
    reject_unknown_kwargs("transformer:lora_large", unknown, ("rank",))
    dim = check_dim("transformer:lora_large", dim)
    return LoRASeed(dim, check_dim("transformer:lora_large", rank, what="rank"))


def build_attention(dim: int, *, n_head: int = 4, **unknown: Any) -> nn.Module:
    """``transformer:attention``: :class:`CausalSelfAttentionSeed` (SDPA, causal)."""
    reject_unknown_kwargs("transformer:attention", unknown, ("n_head",))
    dim = check_dim("transformer:attention", dim)
    return CausalSelfAttentionSeed(dim, _heads("transformer:attention", dim, n_head))


def build_flex_attention(dim: int, *, n_head: int = 4, **unknown: Any) -> nn.Module:
    """``transformer:flex_attention``: :class:`FlexAttentionSeed`."""
    reject_unknown_kwargs("transformer:flex_attention", unknown, ("n_head",))
    dim = check_dim("transformer:flex_attention", dim)
    return FlexAttentionSeed(dim, _heads("transformer:flex_attention", dim, n_head))


def build_mlp_small(
    dim: int, *, expansion: int = 2, checkpoint: bool = False, **unknown: Any
) -> nn.Module:
    """``transformer:mlp_small``: :class:`MLPSeed` with 2x expansion by default."""
    key = "transformer:mlp_small"
    reject_unknown_kwargs(key, unknown, ("expansion", "checkpoint"))
    dim = check_dim(key, dim)
    expansion = check_dim(key, expansion, what="expansion")
    return MLPSeed(dim, expansion, _flag(key, "checkpoint", checkpoint))


def build_mlp(
    dim: int, *, expansion: int = 4, checkpoint: bool = False, **unknown: Any
) -> nn.Module:
    """``transformer:mlp``: :class:`MLPSeed` with 4x expansion by default."""
    key = "transformer:mlp"
    reject_unknown_kwargs(key, unknown, ("expansion", "checkpoint"))
    dim = check_dim(key, dim)
    expansion = check_dim(key, expansion, what="expansion")
    return MLPSeed(dim, expansion, _flag(key, "checkpoint", checkpoint))


_T = "transformer"

#: The built-in transformer blueprints, with esper-lite's names and parameter estimates.
BLUEPRINTS: Final[tuple[Blueprint, ...]] = (
    Blueprint("noop", _T, build_noop, 0, "Identity; placeholder seed with no parameters", per_sample=True),
    Blueprint("norm", _T, build_norm, 800, "LayerNorm refinement with a tanh-bounded mix", per_sample=True),
    Blueprint("lora", _T, build_lora, 6000, "Low-rank residual adapter, rank 8", per_sample=True),
    Blueprint("lora_large", _T, build_lora_large, 25000, "Low-rank residual adapter, rank 32", per_sample=True),
    Blueprint("attention", _T, build_attention, 591000, "Extra causal self-attention, 4 heads", per_sample=True),
    Blueprint(
        "flex_attention",
        _T,
        build_flex_attention,
        591000,
        "Extra causal self-attention, 4 heads, FlexAttention kernel where available",
        per_sample=True,
    ),
    Blueprint("mlp_small", _T, build_mlp_small, 591000, "Residual MLP, 2x expansion", per_sample=True),
    Blueprint("mlp", _T, build_mlp, 1200000, "Residual MLP, 4x expansion", per_sample=True),
)
