"""The built-in transformer host: esper-lite's ``TransformerHost`` (a GPT-style decoder) as a static spec.

``num_segments`` equal groups of layers; injection point ``r0c{s}`` is the
hidden state after segment ``s`` (the last one is after the final layer,
before ``ln_f``). Execution order and esper-lite's spec order coincide.

:meth:`TransformerHost.build_module` gives an ``nn.Module`` whose
``state_dict()`` keys, shapes and initialisation match esper-lite's, so
weights move between the two projects by name. Its dropout draws from the
``rng`` generator the forward is given, never from torch's global RNG. Its
topology, :data:`TRANSFORMER_TOPOLOGY`, has features ``[B, T, C]`` and lets
blending seeds co-adapt with the host, as esper-lite does for transformers.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Final

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esper_func._rng import copy_generator
from esper_func.errors import DTypeError, HostConfigError, ShapeError
from esper_func.hosts.base import (
    BLOCK_END,
    HostBase,
    InjectionPoint,
    Topology,
    build_seeded,
    check_int,
    check_span,
    format_slot_id,
)

__all__ = [
    "TRANSFORMER_TOPOLOGY",
    "CausalSelfAttention",
    "MLP",
    "TransformerBlock",
    "TransformerHost",
    "TransformerHostModule",
]

#: Token features ``[B, T, C]``; a blending seed reads the live host (esper-lite lets
#: transformer seeds co-adapt with the host from BLENDING on).
TRANSFORMER_TOPOLOGY: Final[Topology] = Topology(
    "transformer", layout="BTC", isolate_blending=False, probe_batch=2, probe_size=8
)


def _dropout(x: Tensor, module: nn.Dropout, rng: torch.Generator | None) -> Tensor:
    """``module``'s dropout of ``x``, with its mask drawn from ``rng``.

    Identity in eval mode or at ``p = 0``. In training mode it is inverted
    dropout, ``x * keep / (1 - p)`` with ``keep = rand >= p`` and ``rand``
    from ``torch.rand(..., generator=rng)`` on ``x``'s device (``rng`` must
    live there), so the mask depends on ``rng`` alone: no global state, safe
    from many threads, and differentiable under ``torch.func.grad``. Under
    ``torch.func.vmap`` the draw follows vmap's ``randomness`` flag
    (``"different"``: a mask per batch element; ``"same"``: one shared
    mask; the default ``"error"`` raises). With ``rng=None`` this is
    ``module(x)`` (torch's global RNG), for the host module used as a plain
    ``nn.Module``; esper_func's own forwards always pass a generator.
    """
    if not module.training or module.p == 0.0:
        return x
    if rng is None:
        return module(x)
    keep = torch.rand(x.shape, generator=rng, device=x.device, dtype=torch.float32) >= module.p
    return x * keep.to(x.dtype) * (1.0 / (1.0 - module.p))


def _causal_attention_dropout(q: Tensor, k: Tensor, v: Tensor, p: float, rng: torch.Generator) -> Tensor:
    """``scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)`` with the mask drawn from ``rng``.

    SDPA's own dropout draws from the global RNG; this is its math path
    written out (scale ``D ** -0.5``, softmax in at least float32), with the
    attention weights dropped as :func:`_dropout` drops activations.
    """
    t = q.shape[-2]
    scores = torch.matmul(q, k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    weights = scores.to(torch.promote_types(scores.dtype, torch.float32)).softmax(dim=-1).to(v.dtype)
    keep = torch.rand(weights.shape, generator=rng, device=weights.device, dtype=torch.float32) >= p
    return torch.matmul(weights * keep.to(weights.dtype) * (1.0 / (1.0 - p)), v)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention via ``scaled_dot_product_attention(is_causal=True)``.

    In training mode with dropout and a generator the attention weights are
    dropped by :func:`_causal_attention_dropout` instead (SDPA's fused
    dropout can only draw from the global RNG).
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.n_head = n_head
        self.n_embd = n_embd
        self.head_dim = n_embd // n_head
        self.dropout_p = dropout
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, rng: torch.Generator | None = None) -> Tensor:
        """Attention of ``x``; dropout (training mode) draws from ``rng`` (see :func:`_dropout`)."""
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(b, t, self.n_head, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.n_head, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.n_head, self.head_dim).transpose(1, 2)
        p = self.dropout_p if self.training else 0.0
        if p > 0.0 and rng is not None:
            y = _causal_attention_dropout(q, k, v, p, rng)
        else:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        return _dropout(self.c_proj(y), self.resid_dropout, rng)


class MLP(nn.Module):
    """``Linear(C, 4C) -> GELU -> Linear(4C, C) -> Dropout``."""

    def __init__(self, n_embd: int, dropout: float) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.c_proj = nn.Linear(4 * n_embd, n_embd)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, rng: torch.Generator | None = None) -> Tensor:
        """The MLP of ``x``; dropout (training mode) draws from ``rng`` (see :func:`_dropout`)."""
        return _dropout(self.c_proj(F.gelu(self.c_fc(x))), self.dropout, rng)


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``."""

    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout)
        self.ln2 = nn.LayerNorm(n_embd)
        self.mlp = MLP(n_embd, dropout)

    def forward(self, x: Tensor, rng: torch.Generator | None = None) -> Tensor:
        """One block; dropout (training mode) draws from ``rng`` (see :func:`_dropout`)."""
        x = x + self.attn(self.ln1(x), rng)
        return x + self.mlp(self.ln2(x), rng)


@dataclasses.dataclass(frozen=True)
class TransformerHost(HostBase):
    """Static spec of esper-lite's ``TransformerHost`` (GPT-style causal decoder).

    Token + learned position embeddings, ``n_layer`` pre-norm blocks, final
    LayerNorm and a bias-free LM head tied to the token embedding. The layers
    split into ``num_segments`` equal segments; slot ``r0c{s}`` sees the hidden
    state after segment ``s``.

    Args (esper-lite's, same defaults): ``vocab_size=50257``, ``n_embd=384``,
    ``n_head=6``, ``n_layer=6``, ``block_size=256``, ``dropout=0.1``,
    ``num_segments=3``. ``n_layer`` must divide evenly into ``num_segments``
    and ``n_embd`` into ``n_head``.
    """

    vocab_size: int = 50257
    n_embd: int = 384
    n_head: int = 6
    n_layer: int = 6
    block_size: int = 256
    dropout: float = 0.1
    num_segments: int = 3

    topology: ClassVar[Topology] = TRANSFORMER_TOPOLOGY

    def __post_init__(self) -> None:
        owner = "TransformerHost"
        check_int(owner, "vocab_size", self.vocab_size, 1)
        check_int(owner, "n_embd", self.n_embd, 1)
        check_int(owner, "n_head", self.n_head, 1)
        check_int(owner, "n_layer", self.n_layer, 1)
        check_int(owner, "block_size", self.block_size, 1)
        check_int(owner, "num_segments", self.num_segments, 1)
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)):
            raise HostConfigError(f"{owner}: dropout must be a float in [0, 1); got {self.dropout!r}")
        if not (0.0 <= float(self.dropout) < 1.0) or math.isnan(float(self.dropout)):
            raise HostConfigError(f"{owner}: dropout must be in [0, 1); got {self.dropout}")
        object.__setattr__(self, "dropout", float(self.dropout))
        if self.n_embd % self.n_head != 0:
            raise HostConfigError(
                f"{owner}: n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        if self.n_layer % self.num_segments != 0:
            raise HostConfigError(
                f"{owner}: n_layer ({self.n_layer}) must be divisible by "
                f"num_segments ({self.num_segments})"
            )

    @property
    def layers_per_segment(self) -> int:
        """Transformer layers between consecutive injection points."""
        return self.n_layer // self.num_segments

    @property
    def tied_keys(self) -> dict[str, str]:
        """The LM head is tied to the token embedding: ``{"head.weight": "tok_emb.weight"}``."""
        return {"head.weight": "tok_emb.weight"}

    @property
    def draws_randomness(self) -> bool:
        """Whether the training-mode forward draws dropout masks (``dropout > 0``)."""
        return self.dropout > 0

    @property
    def injection_points(self) -> tuple[InjectionPoint, ...]:
        """Injection points ``r0c0 .. r0c{num_segments-1}`` in execution order."""
        lps = self.layers_per_segment
        return tuple(
            InjectionPoint(
                slot_id=format_slot_id(0, s),
                surface=s + 1,
                channels=self.n_embd,
                row=0,
                col=s,
                kind=BLOCK_END,
                order=s,
                layer_range=(s * lps, (s + 1) * lps),
                position=(s + 1) / self.num_segments,
            )
            for s in range(self.num_segments)
        )

    def surface_shape(self, surface: int, batch: int, seq_len: int = 16) -> tuple[int, ...]:
        """Shape of surface ``surface`` for a ``[batch, seq_len]`` token input."""
        check_span(0, max(surface, 1), self.n_surfaces, self.slot_ids)
        if surface == 0:
            return (batch, seq_len)
        if surface == self.output_surface:
            return (batch, seq_len, self.vocab_size)
        return (batch, seq_len, self.n_embd)

    def build_module(
        self, *, seed: int | None = None, device: torch.device | str | None = None
    ) -> TransformerHostModule:
        """Build the host ``nn.Module``, initialised as esper-lite initialises ``TransformerHost``.

        PyTorch default initialisation in esper-lite's construction order
        (embeddings, layers, ``ln_f``, then the LM head, whose fresh weight is
        drawn and then replaced by the tied token embedding). ``seed`` and
        ``device`` as in :meth:`CNNHost.build_module`.
        """
        return build_seeded(lambda: TransformerHostModule(self), seed=seed, device=device)

    def example_input(
        self,
        batch: int,
        generator: torch.Generator | None = None,
        *,
        seq_len: int | None = None,
    ) -> Tensor:
        """Uniform random token ids ``[batch, seq_len]`` (``seq_len`` defaults to ``min(16, block_size)``).

        ``generator`` is read, not advanced (``None``: a fixed default seed).
        """
        t = min(16, self.block_size) if seq_len is None else seq_len
        return torch.randint(0, self.vocab_size, (batch, t), generator=copy_generator(generator))


class TransformerHostModule(nn.Module):
    """The transformer host network; state_dict keys are esper-lite ``TransformerHost``'s.

    Keys: ``tok_emb.weight``, ``pos_emb.weight``, ``layers.<i>.{ln1,ln2}.{weight,bias}``,
    ``layers.<i>.attn.{c_attn,c_proj}.{weight,bias}``,
    ``layers.<i>.mlp.{c_fc,c_proj}.{weight,bias}``, ``ln_f.{weight,bias}``,
    ``head.weight`` (the same tensor as ``tok_emb.weight``). Position ids are
    computed on the fly, so no non-persistent buffer exists.
    """

    def __init__(self, spec: TransformerHost) -> None:
        super().__init__()
        self.spec = spec
        self._slot_ids = spec.slot_ids
        self._lps = spec.layers_per_segment
        self._n_segments = spec.num_segments
        self._block_size = spec.block_size
        self._n_embd = spec.n_embd
        self.tok_emb = nn.Embedding(spec.vocab_size, spec.n_embd)
        self.pos_emb = nn.Embedding(spec.block_size, spec.n_embd)
        self.drop = nn.Dropout(spec.dropout)
        self.layers = nn.ModuleList(
            TransformerBlock(spec.n_embd, spec.n_head, spec.dropout)
            for _ in range(spec.n_layer)
        )
        self.ln_f = nn.LayerNorm(spec.n_embd)
        self.head = nn.Linear(spec.n_embd, spec.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying; tok_emb is the master

    def _check_input(self, x: Tensor, start: int) -> None:
        if start == 0:
            if x.dim() != 2:
                raise ShapeError(
                    f"transformer host input must be token ids [B, T]; got shape {tuple(x.shape)}"
                )
            if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
                raise DTypeError(f"transformer host input must be integer token ids; got {x.dtype}")
            if x.shape[1] > self._block_size:
                raise ShapeError(
                    f"sequence length {x.shape[1]} exceeds block_size {self._block_size}"
                )
        elif x.dim() != 3 or x.shape[-1] != self._n_embd:
            raise ShapeError(
                f"surface {start} ({self._slot_ids[start - 1]}) expects hidden states "
                f"[B, T, {self._n_embd}]; got shape {tuple(x.shape)}"
            )

    def forward(
        self, x: Tensor, start: int = 0, stop: int | None = None, rng: torch.Generator | None = None
    ) -> Tensor:
        """Run surfaces ``start -> stop`` (``stop=None``: to the logits).

        In training mode every dropout draws its mask from ``rng``, in
        execution order (see :func:`_dropout`); ``rng=None`` uses torch's
        global RNG as ``nn.Dropout`` does.
        """
        n = self._n_segments
        start, stop = check_span(start, stop, n, self._slot_ids)
        self._check_input(x, start)
        h = x
        if start == 0:
            positions = torch.arange(x.shape[1], device=x.device)
            h = _dropout(self.tok_emb(x) + self.pos_emb(positions), self.drop, rng)
        for layer in self.layers[start * self._lps : min(stop, n) * self._lps]:
            h = layer(h, rng)
        if stop == n + 1:
            h = self.head(self.ln_f(h))
        return h
