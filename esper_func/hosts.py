"""Host networks: static skeleton specs with segment-addressable forwards.

A host is described by a frozen, hashable dataclass (:class:`CNNHost`,
:class:`TransformerHost`) holding only plain Python fields. The spec is the
*static structure*; :meth:`CNNHost.build_module` turns it into an
``nn.Module`` whose ``state_dict()`` keys, shapes and initialisation match
esper-lite's ``esper.kasmina.host`` classes, so weights move between the two
projects by name.

Surfaces
--------
Slots sit at injection points between host segments. The module's forward is
addressable by *surface index*::

    0            the raw input (images ``[B, C, H, W]`` / tokens ``[B, T]``)
    1 .. n       the features at injection point ``slot_ids[i - 1]``
                 (exactly what esper-lite's slot at that point receives)
    n + 1        the final output (logits)

``module(x)`` runs ``0 -> n + 1``; ``module(h, start=i, stop=j)`` continues
from surface ``i`` to surface ``j``. ``start``/``stop`` are static Python
ints, so the forward traces under ``torch.compile(fullgraph=True)`` and runs
under ``torch.func.functional_call``/``vmap``. Splitting is exact:
``module(module(x, 0, i), i)`` equals ``module(x)`` bitwise.

Injection points (esper-lite, ``kasmina/host.py`` with pre/post-pool surfaces)
-----------------------------------------------------------------------------
CNN: every conv block ``c`` exposes ``r0c{c}`` (after the block, before
pooling; ``PRE_POOL``) and, when the block is pooled (``c < pool_layers``),
``r1c{c}`` (after the 2x2 max-pool; ``POST_POOL``). Forward execution order
interleaves them by block (``r0c0, r1c0, r0c1, r1c1, ...``); esper-lite's
``injection_specs()`` lists them row-major instead (``r0c0, r0c1, ..., r1c0,
...``), which is the order its action indices use (:attr:`CNNHost.spec_order`).

Transformer: ``num_segments`` equal groups of layers; ``r0c{s}`` is the hidden
state after segment ``s`` (the last one is after the final layer, before
``ln_f``). Execution order and spec order coincide.

esper-lite ``MorphogeneticModel`` state_dict layout
---------------------------------------------------
The model registers the host as ``host`` and the slots in an
``nn.ModuleDict`` called ``seed_slots`` keyed by slot id, so its keys are::

    host.<host key>                                   e.g. host.blocks.0.conv.weight
    seed_slots.<slot_id>.seed.<blueprint key>         the seed module
    seed_slots.<slot_id>.alpha_schedule.<gate key>    GatedBlend, e.g. ...alpha_schedule.gate.0.weight
    seed_slots.<slot_id>._extra_state                 the slot's lifecycle state (get_extra_state)

The constants and helpers below (:data:`HOST_PREFIX`, :func:`seed_key`,
:func:`gate_key`, :func:`extra_state_key`, :func:`parse_model_key`) encode
this layout for the model and interop code.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esper_func._rng import DEFAULT_SEED, copy_generator, run_seeded
from esper_func.errors import (
    DTypeError,
    EsperFuncError,
    InvalidArgumentError,
    InvalidTypeError,
    ParamsMismatchError,
    ShapeError,
)

__all__ = [
    "HOST_PREFIX",
    "SLOTS_PREFIX",
    "SEED_PREFIX",
    "GATE_PREFIX",
    "EXTRA_STATE_KEY",
    "PRE_POOL",
    "POST_POOL",
    "BLOCK_END",
    "HostConfigError",
    "UnknownSlotError",
    "SegmentRangeError",
    "InjectionPoint",
    "CNNHost",
    "TransformerHost",
    "Host",
    "CNNHostModule",
    "TransformerHostModule",
    "ConvBlock",
    "CausalSelfAttention",
    "MLP",
    "TransformerBlock",
    "format_slot_id",
    "host_key",
    "slot_prefix",
    "seed_key",
    "gate_key",
    "extra_state_key",
    "parse_model_key",
]

M = TypeVar("M", bound=nn.Module)

# ---------------------------------------------------------------------------
# esper-lite MorphogeneticModel key layout
# ---------------------------------------------------------------------------

#: Prefix of every host key in an esper-lite ``MorphogeneticModel`` state_dict.
HOST_PREFIX: Final[str] = "host."
#: Prefix of every slot key (``seed_slots.<slot_id>.``).
SLOTS_PREFIX: Final[str] = "seed_slots."
#: Sub-prefix, inside a slot, of the seed module's keys.
SEED_PREFIX: Final[str] = "seed."
#: Sub-prefix, inside a slot, of the gate network (esper-lite's ``GatedBlend``,
#: whose own keys are ``gate.0.weight``, ``gate.0.bias``, ``gate.2.weight``, ...).
GATE_PREFIX: Final[str] = "alpha_schedule."
#: Key, inside a slot, of the lifecycle state written by ``SeedSlot.get_extra_state``.
EXTRA_STATE_KEY: Final[str] = "_extra_state"

# Surface kinds (esper-lite ``leyline.SurfaceType`` names).
PRE_POOL: Final[str] = "PRE_POOL"
POST_POOL: Final[str] = "POST_POOL"
BLOCK_END: Final[str] = "BLOCK_END"

_MEMORY_FORMATS: Final = {
    "channels_last": torch.channels_last,
    "contiguous_format": torch.contiguous_format,
}


def format_slot_id(row: int, col: int) -> str:
    """Canonical slot id ``"r{row}c{col}"`` (esper-lite ``leyline.slot_id``)."""
    if row < 0 or col < 0:
        raise InvalidArgumentError(f"slot row and column must be non-negative; got row={row}, col={col}")
    return f"r{row}c{col}"


def host_key(name: str) -> str:
    """The MorphogeneticModel key of host state_dict entry ``name``."""
    return HOST_PREFIX + name


def slot_prefix(slot_id: str) -> str:
    """``"seed_slots.<slot_id>."``, the prefix of every key of one slot."""
    return f"{SLOTS_PREFIX}{slot_id}."


def seed_key(slot_id: str, name: str) -> str:
    """The MorphogeneticModel key of seed state_dict entry ``name`` in ``slot_id``."""
    return slot_prefix(slot_id) + SEED_PREFIX + name


def gate_key(slot_id: str, name: str) -> str:
    """The MorphogeneticModel key of gate entry ``name`` (e.g. ``"gate.0.weight"``)."""
    return slot_prefix(slot_id) + GATE_PREFIX + name


def extra_state_key(slot_id: str) -> str:
    """The MorphogeneticModel key of the slot's serialised lifecycle state."""
    return slot_prefix(slot_id) + EXTRA_STATE_KEY


def parse_model_key(key: str) -> tuple[str, str | None, str]:
    """Split an esper-lite ``MorphogeneticModel`` key into ``(kind, slot_id, name)``.

    ``kind`` is ``"host"``, ``"seed"``, ``"gate"`` or ``"extra_state"``;
    ``slot_id`` is ``None`` for host keys; ``name`` is the key inside the host,
    seed or gate module (``""`` for ``extra_state``).

    Raises ``ValueError`` for a key that fits none of these forms.
    """
    if key.startswith(HOST_PREFIX):
        return "host", None, key[len(HOST_PREFIX) :]
    if key.startswith(SLOTS_PREFIX):
        rest = key[len(SLOTS_PREFIX) :]
        slot_id, dot, inner = rest.partition(".")
        if dot and slot_id:
            if inner == EXTRA_STATE_KEY:
                return "extra_state", slot_id, ""
            if inner.startswith(SEED_PREFIX):
                return "seed", slot_id, inner[len(SEED_PREFIX) :]
            if inner.startswith(GATE_PREFIX):
                return "gate", slot_id, inner[len(GATE_PREFIX) :]
    raise InvalidArgumentError(
        f"unrecognised MorphogeneticModel state_dict key {key!r}; expected "
        f"'{HOST_PREFIX}<name>', '{SLOTS_PREFIX}<slot>.{SEED_PREFIX}<name>', "
        f"'{SLOTS_PREFIX}<slot>.{GATE_PREFIX}<name>' or '{SLOTS_PREFIX}<slot>.{EXTRA_STATE_KEY}'"
    )


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class HostConfigError(EsperFuncError, ValueError):
    """A host constructor argument of the wrong type or out of range."""


class UnknownSlotError(EsperFuncError, KeyError, ValueError):
    """A slot id the host does not expose."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class SegmentRangeError(EsperFuncError, ValueError):
    """A ``start``/``stop`` surface pair the host cannot route."""


# ---------------------------------------------------------------------------
# Static description of an injection point
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InjectionPoint:
    """One injection point, as esper-lite's ``InjectionSpec`` describes it.

    Attributes:
        slot_id: canonical id (``"r0c1"``).
        surface: 1-based surface index in forward execution order.
        channels: feature width at this point (channels / ``n_embd``).
        row, col: grid coordinates of ``slot_id``.
        kind: ``"PRE_POOL"``, ``"POST_POOL"`` (CNN) or ``"BLOCK_END"`` (transformer).
        order: esper-lite's row-major ``InjectionSpec.order`` (action index).
        layer_range: ``(start, end)`` blocks/layers this point covers.
        position: relative depth in ``(0, 1]`` (visualisation only).
    """

    slot_id: str
    surface: int
    channels: int
    row: int
    col: int
    kind: str
    order: int
    layer_range: tuple[int, int]
    position: float


# ---------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------


def _check_int(owner: str, name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HostConfigError(f"{owner}: {name} must be an int >= {minimum}; got {value!r}")
    if value < minimum:
        raise HostConfigError(f"{owner}: {name} must be >= {minimum}; got {value}")


def _check_span(start: Any, stop: Any, n: int, slot_ids: tuple[str, ...]) -> tuple[int, int]:
    """Validate a static ``(start, stop)`` surface pair; ``stop=None`` is the output."""
    last = n + 1
    if stop is None:
        stop = last
    for name, value in (("start", start), ("stop", stop)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidTypeError(
                f"{name} must be a Python int surface index (static, not a tensor); got {value!r}"
            )
    if not (0 <= start < stop <= last):
        raise SegmentRangeError(
            f"cannot route from surface {start} to surface {stop}: need 0 <= start < stop <= {last} "
            f"(0 = input, 1..{n} = slots {list(slot_ids)} in execution order, {last} = output)"
        )
    return start, stop


class _HostBase:
    """Shared read-only views for host specs (the subclass supplies ``injection_points``)."""

    topology: ClassVar[str]

    @property
    def injection_points(self) -> tuple[InjectionPoint, ...]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def slot_ids(self) -> tuple[str, ...]:
        """Every injection point's slot id, in forward execution order."""
        return tuple(p.slot_id for p in self.injection_points)

    @property
    def spec_order(self) -> tuple[str, ...]:
        """Slot ids in esper-lite's ``injection_specs()`` (row-major, action-index) order."""
        return tuple(p.slot_id for p in sorted(self.injection_points, key=lambda p: p.order))

    @property
    def n_surfaces(self) -> int:
        """Number of injection points ``n``; the output is surface ``n + 1``."""
        return len(self.injection_points)

    @property
    def output_surface(self) -> int:
        """Index of the output surface (``n + 1``)."""
        return self.n_surfaces + 1

    @property
    def segment_channels(self) -> dict[str, int]:
        """``{slot_id: channels}`` in execution order (esper-lite's ``segment_channels``)."""
        return {p.slot_id: p.channels for p in self.injection_points}

    def injection_point(self, slot_id: str) -> InjectionPoint:
        """The :class:`InjectionPoint` of ``slot_id``."""
        for p in self.injection_points:
            if p.slot_id == slot_id:
                return p
        raise UnknownSlotError(
            f"{type(self).__name__} has no injection point {slot_id!r}; "
            f"available (execution order): {list(self.slot_ids)}"
        )

    def slot_channels(self, slot_id: str) -> int:
        """Feature width (channels or ``n_embd``) at ``slot_id``."""
        return self.injection_point(slot_id).channels

    def surface_index(self, slot_id: str) -> int:
        """1-based surface index of ``slot_id`` (``module(x, 0, i)`` gives its features)."""
        return self.injection_point(slot_id).surface

    def build_skeleton(self) -> nn.Module:
        """The module on the ``meta`` device: no storage, for ``functional_call``."""
        return self.build_module(device="meta")

    def build_module(  # pragma: no cover - abstract
        self, *, seed: int | None = None, device: torch.device | str | None = None
    ) -> nn.Module:
        raise NotImplementedError

    def state_dict_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{key: shape}`` of the module's ``state_dict()`` (built on ``meta``)."""
        return {k: tuple(v.shape) for k, v in self.build_skeleton().state_dict().items()}

    @property
    def tied_keys(self) -> dict[str, str]:
        """``{alias_key: master_key}`` for state_dict entries that share one tensor.

        ``state_dict()`` lists both names; pass only the master to
        ``functional_call`` (or the very same tensor object under both), since
        two different tensors for tied keys are rejected.
        """
        return {}

    def without_tied_aliases(self, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """A copy of ``tensors`` without the alias keys of :attr:`tied_keys`.

        ``state_dict()`` detaches every entry, so tied keys come back as two
        tensor objects that ``functional_call`` refuses; drop the aliases
        before passing a state_dict as parameters. Raises
        :class:`~esper_func.errors.ParamsMismatchError` when an alias holds
        values different from its master.
        """
        out = dict(tensors)
        for alias, master in self.tied_keys.items():
            if alias not in out:
                continue
            value = out.pop(alias)
            if master not in out:
                out[master] = value
            elif value is not out[master] and not (
                value.shape == out[master].shape and torch.equal(value, out[master])
            ):
                raise ParamsMismatchError(
                    f"{alias!r} is tied to {master!r} but holds different values; "
                    f"a tied pair must be one tensor"
                )
        return out

    def num_parameters(self) -> int:
        """Number of distinct parameter elements (tied weights counted once)."""
        return sum(p.numel() for p in self.build_skeleton().parameters())


def _construct(make: Callable[[], M], seed: int | None, device: torch.device | str | None) -> M:
    """``make()`` initialised from ``seed`` (``None``: :data:`~esper_func._rng.DEFAULT_SEED`), on ``device``.

    Torch's global RNG is never read or written (safe from many threads).
    On ``meta`` nothing is drawn. Otherwise the module is built on the CPU
    with an explicit generator seeded with ``seed`` (the same numbers, in the
    same order, as building after ``torch.manual_seed(seed)``), then moved
    to ``device`` (default: torch's default device), so a seed gives the
    same weights on every device.
    """
    target = torch.get_default_device() if device is None else torch.device(device)
    if target.type == "meta":
        with torch.device("meta"):  # meta kernels draw nothing and read no generator
            return make()
    module = run_seeded(make, DEFAULT_SEED if seed is None else seed)
    return module if target.type == "cpu" else module.to(target)


# ---------------------------------------------------------------------------
# CNN host
# ---------------------------------------------------------------------------


class ConvBlock(nn.Module):
    """Conv(bias-free, "same" padding) -> BatchNorm2d -> ReLU (esper-lite's ``ConvBlock``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


_BLOCK: Final = "block"
_POOL: Final = "pool"


@dataclasses.dataclass(frozen=True)
class CNNHost(_HostBase):
    """Static spec of esper-lite's ``CNNHost`` (conv blocks with doubling width).

    Block ``i`` is ``ConvBlock(c_in, base_channels * 2**i)``; the first
    ``pool_layers`` blocks are followed by a shared 2x2 max-pool; the head is
    global average pooling and ``Linear(channels, num_classes)``.

    Args (esper-lite's, same defaults):
        num_classes: output classes (10).
        n_blocks: conv blocks, at least 2 (3).
        base_channels: width of block 0; doubles each block (32).
        pool_layers: how many leading blocks are pooled; ``None`` = all (None).
        memory_format: ``"channels_last"`` (esper-lite's default) or
            ``"contiguous_format"``; a ``torch.memory_format`` is accepted and
            stored by name. Performance only.
        kernel_size: conv kernel size, padding ``kernel_size // 2`` (3).
        in_channels: input image channels. An esper_func extension: esper-lite
            always uses 3.
    """

    num_classes: int = 10
    n_blocks: int = 3
    base_channels: int = 32
    pool_layers: int | None = None
    memory_format: str = "channels_last"
    kernel_size: int = 3
    in_channels: int = 3

    topology: ClassVar[str] = "cnn"

    def __post_init__(self) -> None:
        owner = "CNNHost"
        if isinstance(self.memory_format, torch.memory_format):
            names = {v: k for k, v in _MEMORY_FORMATS.items()}
            if self.memory_format not in names:
                raise HostConfigError(
                    f"{owner}: memory_format must be one of {sorted(_MEMORY_FORMATS)}; "
                    f"got {self.memory_format!r}"
                )
            object.__setattr__(self, "memory_format", names[self.memory_format])
        elif self.memory_format not in _MEMORY_FORMATS:
            raise HostConfigError(
                f"{owner}: memory_format must be one of {sorted(_MEMORY_FORMATS)}; "
                f"got {self.memory_format!r}"
            )
        _check_int(owner, "num_classes", self.num_classes, 1)
        _check_int(owner, "n_blocks", self.n_blocks, 2)
        _check_int(owner, "base_channels", self.base_channels, 1)
        if self.pool_layers is not None:
            _check_int(owner, "pool_layers", self.pool_layers, 0)
        _check_int(owner, "kernel_size", self.kernel_size, 1)
        _check_int(owner, "in_channels", self.in_channels, 1)

    # -- structure -----------------------------------------------------------

    @property
    def effective_pool_layers(self) -> int:
        """Number of pooled blocks (``pool_layers`` resolved and capped at ``n_blocks``)."""
        pools = self.n_blocks if self.pool_layers is None else self.pool_layers
        return min(pools, self.n_blocks)

    def block_channels(self, index: int) -> int:
        """Output channels of block ``index``."""
        return self.base_channels * 2**index

    @property
    def _ops(self) -> tuple[tuple[str, int], ...]:
        # One op per surface: op j takes surface j to surface j + 1.
        ops: list[tuple[str, int]] = []
        for i in range(self.n_blocks):
            ops.append((_BLOCK, i))
            if i < self.effective_pool_layers:
                ops.append((_POOL, i))
        return tuple(ops)

    @property
    def injection_points(self) -> tuple[InjectionPoint, ...]:
        """Injection points in execution order (``r0c0, r1c0, r0c1, r1c1, ...``)."""
        n, pools = self.n_blocks, self.effective_pool_layers
        points = []
        for surface, (op, i) in enumerate(self._ops, start=1):
            pre = op == _BLOCK
            points.append(
                InjectionPoint(
                    slot_id=format_slot_id(0 if pre else 1, i),
                    surface=surface,
                    channels=self.block_channels(i),
                    row=0 if pre else 1,
                    col=i,
                    kind=PRE_POOL if pre else POST_POOL,
                    order=i if pre else n + i,
                    layer_range=(i, i + 1),
                    position=(2 * i + (1 if pre else 2)) / (2 * n),
                )
            )
        assert len(points) == n + pools
        return tuple(points)

    def surface_shape(
        self, surface: int, batch: int, image_size: int | tuple[int, int] = 32
    ) -> tuple[int, ...]:
        """Shape of surface ``surface`` for a ``[batch, in_channels, H, W]`` input."""
        _check_span(0, max(surface, 1), self.n_surfaces, self.slot_ids)
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        if surface == 0:
            return (batch, self.in_channels, h, w)
        if surface == self.output_surface:
            return (batch, self.num_classes)
        k = self.kernel_size
        channels = self.in_channels
        for op, i in self._ops[:surface]:
            if op == _BLOCK:
                h, w = h + 2 * (k // 2) - k + 1, w + 2 * (k // 2) - k + 1
                channels = self.block_channels(i)
            else:
                h, w = h // 2, w // 2
        return (batch, channels, h, w)

    # -- modules and inputs ---------------------------------------------------

    def build_module(
        self, *, seed: int | None = None, device: torch.device | str | None = None
    ) -> CNNHostModule:
        """Build the host ``nn.Module``, initialised as esper-lite initialises ``CNNHost``.

        Torch's default initialisers in esper-lite's order (block convs in
        order, then the classifier), drawing from an explicit generator seeded
        with ``seed`` (``None``: a fixed default seed): the weights equal
        esper-lite's built after ``torch.manual_seed(seed)``, and torch's
        global RNG is neither read nor written, so threads may build at
        once. The module is built on the CPU and moved to ``device`` (default:
        torch's default device); ``device="meta"`` gives a storage-free
        skeleton and draws nothing.
        """
        return _construct(lambda: CNNHostModule(self), seed, device)

    def example_input(
        self,
        batch: int,
        generator: torch.Generator | None = None,
        *,
        image_size: int = 32,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """A standard-normal image batch ``[batch, in_channels, image_size, image_size]``.

        ``generator`` is read, not advanced (``None``: a fixed default seed), so
        the same generator gives the same batch and no global RNG is used.
        """
        return torch.randn(
            batch, self.in_channels, image_size, image_size, generator=copy_generator(generator), dtype=dtype
        )


def _channels_last(x: Tensor) -> Tensor:
    """``x`` in channels_last layout (values unchanged; a no-op when it already is).

    Spelled as permute/contiguous/permute rather than ``x.to(memory_format=...)``
    so that it also works on ``vmap``-batched tensors, whose physical rank is 5.
    """
    return x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)


class CNNHostModule(nn.Module):
    """The CNN host network; state_dict keys are esper-lite ``CNNHost``'s.

    Keys: ``blocks.<i>.conv.weight``, ``blocks.<i>.bn.{weight,bias,running_mean,
    running_var,num_batches_tracked}``, ``classifier.{weight,bias}``.
    """

    def __init__(self, spec: CNNHost) -> None:
        super().__init__()
        self.spec = spec
        self._ops = spec._ops
        self._slot_ids = spec.slot_ids
        self._surface_channels = (spec.in_channels, *(p.channels for p in spec.injection_points))
        self._channels_last = spec.memory_format == "channels_last"
        blocks: list[nn.Module] = []
        in_c = spec.in_channels
        for i in range(spec.n_blocks):
            out_c = spec.block_channels(i)
            blocks.append(ConvBlock(in_c, out_c, kernel_size=spec.kernel_size))
            in_c = out_c
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.MaxPool2d(2, 2)
        self.classifier = nn.Linear(in_c, spec.num_classes)

    def _check_input(self, x: Tensor, start: int) -> None:
        if x.dim() != 4:
            raise ShapeError(
                f"CNN host surface {start} expects a 4-D tensor [B, C, H, W]; got shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise DTypeError(f"CNN host expects a floating-point tensor; got dtype {x.dtype}")
        expected = self._surface_channels[start]
        if x.shape[1] != expected:
            where = "the input" if start == 0 else f"surface {start} ({self._slot_ids[start - 1]})"
            raise ShapeError(
                f"{where} expects {expected} channels; got a tensor of shape {tuple(x.shape)}"
            )
        if start == 0:
            pools = sum(1 for op, _ in self._ops if op == _POOL)
            need = 2**pools
            if x.shape[2] < need or x.shape[3] < need:
                raise ShapeError(
                    f"input spatial size {tuple(x.shape[2:])} is too small for {pools} 2x2 "
                    f"max-pools; need at least {need}x{need}"
                )

    def forward(
        self, x: Tensor, start: int = 0, stop: int | None = None, rng: torch.Generator | None = None
    ) -> Tensor:
        """Run surfaces ``start -> stop`` (``stop=None``: to the logits).

        ``rng`` is accepted for a uniform host interface and unused: the CNN
        host draws no random numbers.
        """
        del rng
        n = len(self._ops)
        start, stop = _check_span(start, stop, n, self._slot_ids)
        self._check_input(x, start)
        if self._channels_last:
            x = _channels_last(x)
        for op, i in self._ops[start : min(stop, n)]:
            x = self.blocks[i](x) if op == _BLOCK else self.pool(x)
        if stop == n + 1:
            # Global average pool; a mean over H, W equals adaptive_avg_pool2d(x, 1)
            # and, unlike it, has a vmap batching rule for channels_last inputs.
            x = x.mean(dim=(2, 3))
            x = self.classifier(x)
        return x


# ---------------------------------------------------------------------------
# Transformer host
# ---------------------------------------------------------------------------


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
class TransformerHost(_HostBase):
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

    topology: ClassVar[str] = "transformer"

    def __post_init__(self) -> None:
        owner = "TransformerHost"
        _check_int(owner, "vocab_size", self.vocab_size, 1)
        _check_int(owner, "n_embd", self.n_embd, 1)
        _check_int(owner, "n_head", self.n_head, 1)
        _check_int(owner, "n_layer", self.n_layer, 1)
        _check_int(owner, "block_size", self.block_size, 1)
        _check_int(owner, "num_segments", self.num_segments, 1)
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
        _check_span(0, max(surface, 1), self.n_surfaces, self.slot_ids)
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
        return _construct(lambda: TransformerHostModule(self), seed, device)

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
        start, stop = _check_span(start, stop, n, self._slot_ids)
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


#: Either host spec.
Host = CNNHost | TransformerHost
