"""Seed slots as pure functions of ``(params, alpha, inputs)``.

A :class:`Slot` is static, hashable structure: which blueprint (with which
keyword arguments) sits in the slot, at what feature width, composed with
which :class:`~esper_func.blend.AlphaAlgorithm`. Its parameters live outside
it, in a plain nested dict, and :func:`slot_apply` runs the seed through
:func:`torch.func.functional_call` on a storage-free skeleton (a copy of
the seed module on the ``meta`` device).

Counterfactuals need no mutation: "force alpha to 0" is calling
``slot_apply`` with ``alpha=torch.tensor(0.)``. ``vmap`` over alpha (or over
a stack of parameter dicts, a population of candidate seeds) just works.

Stage semantics (esper-lite's ``SeedSlot.forward``):

- outside TRAINING, BLENDING, HOLDING, FOSSILIZED the slot is the identity;
- the seed reads ``x.detach()`` when isolated: always in TRAINING, and from
  BLENDING on when the topology says so (``Topology.isolate_blending``: CNN
  seeds stay isolated, transformer seeds co-adapt with the host);
- TRAINING at alpha 0 is the *incubator*: the output equals the host's
  features exactly, yet the seed receives the full upstream gradient
  (straight-through). Any other alpha in TRAINING (a counterfactual) blends
  as in BLENDING;
- BLENDING and later blend with the slot's algorithm.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Hashable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.func import functional_call

from esper_func._rng import run_seeded, split_seeds
from esper_func._skeleton import Skeleton, on_meta
from esper_func.blend import blend, straight_through
from esper_func.blueprints import Blueprint, Registry, zero_init_final_layer
from esper_func.errors import (
    BlueprintError,
    DTypeError,
    InvalidArgumentError,
    InvalidTypeError,
    ParamsMismatchError,
    ShapeError,
)
from esper_func.hosts import Topology, resolve_topology
from esper_func.lifecycle.alpha import AlphaAlgorithm
from esper_func.lifecycle.stages import SeedStage, is_active_stage

__all__ = [
    "GateNetwork",
    "Slot",
    "SlotModule",
    "check_named_tensors",
    "check_slot_params",
    "detached_copies",
    "SlotParams",
    "germinate_slot",
    "init_gate_params",
    "init_slot_params",
    "slot_apply",
    "is_isolated",
]

#: ``{"seed": {name: tensor}}``, plus ``"gate": {name: tensor}`` for GATE slots.
SlotParams = dict[str, dict[str, Tensor]]


class GateNetwork(nn.Module):
    """Per-sample gate of the GATE algorithm, named as esper-lite's ``GatedBlend``.

    ``Linear(C, max(8, C // 4)) -> ReLU -> Linear(., 1) -> Sigmoid`` on the
    features mean-pooled to ``[B, C]`` over the topology's
    :attr:`~esper_func.Topology.pool_dims` (``H, W`` for CNNs, ``T`` for
    transformers, none for ``[B, C]`` features). Returns ``[B]``.
    """

    def __init__(self, channels: int, topology: str) -> None:
        super().__init__()
        hidden = max(8, channels // 4)
        self.gate = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
            nn.Sigmoid(),
        )
        self._pool_dims: tuple[int, ...] = resolve_topology(topology).pool_dims

    def forward(self, x: Tensor) -> Tensor:
        # An empty dim list would make mean() reduce everything: [B, C] features pass as they are.
        pooled = x.mean(dim=self._pool_dims) if self._pool_dims else x
        return self.gate(pooled).squeeze(-1)


class SeedFeatures(NamedTuple):
    """The alpha-independent part of a slot's forward: what to blend with."""

    seed_input: Tensor
    seed_out: Tensor
    gate: Tensor | None


class SlotModule(nn.Module):
    """A seed (and gate) with the slot's forward semantics, for ``functional_call``.

    ``forward(x, alpha, stage)`` expects ``alpha`` already validated and shaped
    to broadcast against ``x`` (0-d or ``[B, 1, ...]``). Its parameter names
    are ``seed.<name>`` and ``gate.<name>``.
    """

    def __init__(self, seed: nn.Module, gate: GateNetwork | None, algorithm: AlphaAlgorithm, topology: str) -> None:
        super().__init__()
        self.seed = seed
        self.gate = gate
        # Plain ints, not IntEnums: torch.compile guards int attributes by value,
        # but (as of torch 2.13) not IntEnum members, so an enum here could let a
        # graph traced for one algorithm or stage be reused for another.
        self.algorithm = int(AlphaAlgorithm(algorithm))
        # A plain bool for the same reason: the graph depends on the rule, not on the topology's name.
        self.isolate_blending = bool(resolve_topology(topology).isolate_blending)

    def forward(self, x: Tensor, alpha: Tensor, stage: int) -> Tensor:
        """Blend ``x`` with the seed; ``stage`` is a ``SeedStage`` value as a plain int."""
        if not is_active_stage(stage):
            return x
        return self.combine(x, self.features(x, stage), alpha, stage)

    def features(self, x: Tensor, stage: int) -> SeedFeatures:
        """What the seed computes from ``x``; everything that does not depend on alpha."""
        isolated = stage == SeedStage.TRAINING or (self.isolate_blending and is_active_stage(stage))
        seed_input = x.detach() if isolated else x
        if not seed_input.is_contiguous():
            # A channels_last host: give the seed a contiguous copy, as esper-lite
            # does (GroupNorm cannot query channels_last contiguity under vmap, and
            # torch 2.13's CPU GroupNorm backward crashes the process on a
            # channels_last input that needs no gradient, as a detached one).
            seed_input = seed_input.contiguous()
        seed_out = self.seed(seed_input)
        gate = None
        if self.gate is not None:
            gate = self.gate(seed_input).reshape((x.shape[0],) + (1,) * (x.ndim - 1))
        return SeedFeatures(seed_input, seed_out, gate)

    def combine(self, x: Tensor, features: SeedFeatures, alpha: Tensor, stage: int) -> Tensor:
        """Blend host features ``x`` with precomputed seed ``features`` at ``alpha``.

        A GATE seed without its gate network yet (before BLENDING) blends with
        the gate fully open: a counterfactual alpha in TRAINING then adds the
        seed as ADD does.
        """
        seed_input, seed_out, gate = features
        algorithm = self.algorithm
        if algorithm == AlphaAlgorithm.GATE and gate is None:
            algorithm = int(AlphaAlgorithm.ADD)
        blended = blend(algorithm, x, seed_out, alpha, seed_input=seed_input, gate=gate)
        if stage != SeedStage.TRAINING:
            return blended
        # The incubator: at alpha 0 (or below, which clamps to 0) the value is the
        # host's and the seed still learns.
        return torch.where(alpha <= 0, straight_through(x, seed_out), blended)


@dataclasses.dataclass(frozen=True)
class Slot:
    """Static description of a germinated slot (hashable, picklable, no tensors).

    Attributes:
        blueprint: the blueprint the seed was built from.
        channels: feature width at the injection point.
        algorithm: how the seed is blended into the host.
        blueprint_kwargs: the keyword arguments given to ``blueprint.build``,
            as a sorted tuple of ``(name, value)`` pairs.
        gated: whether a GATE seed has its gate network (parameters
            ``"gate"``). esper-lite creates it when blending starts, so a
            model's GATE seed has it from BLENDING on
            (:func:`esper_func.set_stages` adds it); ``None`` means "yes for
            GATE". Only GATE slots can be gated.
    """

    blueprint: Blueprint
    channels: int
    algorithm: AlphaAlgorithm = AlphaAlgorithm.ADD
    blueprint_kwargs: tuple[tuple[str, Hashable], ...] = ()
    gated: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "algorithm", AlphaAlgorithm(self.algorithm))
        if self.gated is None:
            object.__setattr__(self, "gated", self.algorithm == AlphaAlgorithm.GATE)
        elif self.gated and self.algorithm != AlphaAlgorithm.GATE:
            raise InvalidArgumentError(
                f"only a GATE slot has a gate network; got gated=True with algorithm {self.algorithm.name}"
            )
        kwargs = dict(self.blueprint_kwargs)
        gated = bool(self.gated)
        module = on_meta(
            lambda: SlotModule(
                self.blueprint.build(self.channels, **kwargs),
                GateNetwork(self.channels, self.topology) if gated else None,
                self.algorithm,
                self.topology,
            )
        )
        buffers = [name for name, _ in module.seed.named_buffers()]
        if buffers:
            raise BlueprintError(
                f"blueprint {self.blueprint.key!r} builds a module with buffers {buffers}; seeds must keep all "
                "their state in parameters (use GroupNorm or LayerNorm rather than BatchNorm, and compute "
                "constants such as masks in forward)"
            )
        # Not dataclass fields: excluded from eq/hash/repr, rebuilt on unpickling.
        object.__setattr__(self, "_skeleton", Skeleton(module))
        shapes = {"seed": MappingProxyType(_state_shapes(module.seed))}
        if module.gate is not None:
            shapes["gate"] = MappingProxyType(_state_shapes(module.gate))
        object.__setattr__(self, "_param_shapes", MappingProxyType(shapes))
        flat = tuple((group, name, f"{group}.{name}") for group, names in shapes.items() for name in names)
        object.__setattr__(self, "_flat_names", flat)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Slot, (self.blueprint, self.channels, self.algorithm, self.blueprint_kwargs, self.gated))

    @property
    def module(self) -> SlotModule:
        """The slot as a ``meta``-device :class:`SlotModule` prototype (no storage)."""
        return self._skeleton.prototype  # type: ignore[attr-defined]

    @property
    def topology(self) -> Topology:
        """The blueprint's :class:`~esper_func.Topology` (equal to its name, e.g. ``"cnn"``)."""
        return resolve_topology(self.blueprint.topology)

    @property
    def blueprint_id(self) -> str:
        """The blueprint's name, e.g. ``"conv_light"``."""
        return self.blueprint.name

    @property
    def seed_skeleton(self) -> nn.Module:
        """The seed module on the ``meta`` device (no storage); run it with ``functional_call``."""
        return self.module.seed

    @property
    def gate_skeleton(self) -> nn.Module | None:
        """The gate network on the ``meta`` device, for GATE slots; else ``None``."""
        return self.module.gate

    def flatten(self, params: Mapping[str, Mapping[str, Tensor]]) -> dict[str, Tensor]:
        """``params`` as the flat ``{"seed.<name>": tensor, ...}`` dict of :attr:`module`."""
        return {flat: params[group][name] for group, name, flat in self._flat_names}  # type: ignore[attr-defined]

    @property
    def param_shapes(self) -> Mapping[str, Mapping[str, tuple[int, ...]]]:
        """Expected ``{group: {name: shape}}`` of this slot's parameter tree (read-only)."""
        return self._param_shapes  # type: ignore[attr-defined]

    def num_params(self) -> int:
        """Number of scalars in the seed (and gate) parameter tensors."""
        return sum(
            int(torch.Size(shape).numel())
            for group in self.param_shapes.values()
            for shape in group.values()
        )


def _state_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in module.state_dict().items()}


def _check_kwargs(blueprint: Blueprint, kwargs: Mapping[str, Any]) -> None:
    signature = inspect.signature(blueprint.build)
    params = list(signature.parameters.values())[1:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    accepted = [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise InvalidTypeError(
            f"blueprint {blueprint.key!r} got unknown keyword argument(s) {unknown}; "
            f"it accepts {accepted or 'no keyword arguments'}"
        )


def _check_shape_preserving(slot: Slot, seed: nn.Module) -> None:
    shape = slot.topology.probe_shape(slot.channels)
    try:
        with torch.no_grad():
            out = slot.seed_skeleton(torch.empty(shape, device="meta"))
    except (NotImplementedError, RuntimeError):
        with torch.no_grad():  # some kernels have no meta implementation
            out = seed(torch.zeros(shape))
    if not isinstance(out, Tensor) or tuple(out.shape) != shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ShapeError(
            f"blueprint {slot.blueprint.key!r} does not preserve the feature shape: "
            f"input {shape} gave {got}; a seed must map features to features of the same shape"
        )


def germinate_slot(
    registry: Registry,
    topology: str,
    blueprint: str,
    channels: int,
    *,
    algorithm: AlphaAlgorithm = AlphaAlgorithm.ADD,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **blueprint_kwargs: Hashable,
) -> tuple[Slot, SlotParams]:
    """Build a seed from ``registry`` and return its static slot and fresh parameters.

    Args:
        registry: where to look the blueprint up (passed explicitly; never global).
        topology: ``"cnn"``, ``"transformer"``, or a topology ``registry``
            knows (its name or the :class:`~esper_func.Topology`; a host's
            ``host.topology``).
        blueprint: the blueprint's name within ``topology``.
        channels: feature width at the injection point.
        algorithm: blend operator. ``MULTIPLY`` zero-initialises the seed's last
            affine layer (so the valve starts closed); ``GATE`` adds a gate network.
        generator: source of the initial weights. It is *read, not advanced*:
            the same generator state always gives the same weights, and the
            caller's generator is left as it was. Torch's global RNG is never
            read or written (safe to call from many threads at once).
            ``None`` means a fixed default seed.
        device: where the parameters live.
        dtype: the precision of the parameters.
        **blueprint_kwargs: options of the blueprint (an unknown one raises ``TypeError``).

    Returns:
        ``(slot, params)`` with ``params == {"seed": {...}}`` (keys are the
        blueprint module's ``state_dict()`` names) plus ``"gate": {...}`` for
        ``GATE`` (keys as esper-lite's ``GatedBlend``: ``gate.0.weight``, ...).

    Raises:
        UnknownTopologyError, UnknownBlueprintError: bad names (messages list what exists).
        TypeError: an unknown blueprint keyword.
        ValueError: ``channels`` not a positive int.
        ShapeError: the seed does not preserve the feature shape.
    """
    topology = registry.topology(topology)
    if isinstance(channels, bool) or not isinstance(channels, int) or channels <= 0:
        raise InvalidArgumentError(f"channels must be a positive int, got {channels!r}")
    algorithm = AlphaAlgorithm(algorithm)
    bp = registry.get(topology, blueprint)
    _check_kwargs(bp, blueprint_kwargs)

    slot = Slot(bp, channels, algorithm, tuple(sorted(blueprint_kwargs.items())))
    return slot, init_slot_params(slot, generator, device=device, dtype=dtype)


def init_slot_params(
    slot: Slot,
    generator: torch.Generator | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> SlotParams:
    """Fresh parameters for ``slot``, initialised as esper-lite initialises the seed.

    ``generator`` is read, not advanced (see :func:`germinate_slot`); torch's
    global RNG is never read or written, so threads may germinate at once
    and get the weights they would get one at a time. Raises
    :class:`ShapeError` when the seed does not preserve the feature shape.
    """
    kwargs = dict(slot.blueprint_kwargs)

    def build() -> tuple[nn.Module, GateNetwork | None]:
        seed = slot.blueprint.build(slot.channels, **kwargs)
        if slot.algorithm == AlphaAlgorithm.MULTIPLY:
            seed = zero_init_final_layer(seed)
        gate = GateNetwork(slot.channels, slot.topology) if slot.gated else None
        _check_shape_preserving(slot, seed)
        return seed, gate

    # Every random draw (the blueprint's initialisers, the gate's, a probe) comes
    # from a generator derived from ``generator``; torch's global RNG is untouched.
    (init_seed,) = split_seeds(generator, 1)
    seed, gate = run_seeded(build, init_seed)

    params: SlotParams = {"seed": detached_copies(seed.state_dict().items(), device, dtype)}
    if gate is not None:
        params["gate"] = detached_copies(gate.state_dict().items(), device, dtype)
    return params


def init_gate_params(
    slot: Slot,
    generator: torch.Generator | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, Tensor]:
    """Fresh parameters of ``slot``'s gate network (esper-lite's ``GatedBlend`` init).

    For a GATE seed that gains its gate when blending starts. ``generator`` is
    read, not advanced; torch's global RNG is not touched.
    """
    (init_seed,) = split_seeds(generator, 1)
    gate = run_seeded(lambda: GateNetwork(slot.channels, slot.topology), init_seed)
    return detached_copies(gate.state_dict().items(), device, dtype)


def detached_copies(
    named: Iterable[tuple[str, Tensor]], device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> dict[str, Tensor]:
    """Fresh detached copies of ``(name, tensor)`` pairs; floating tensors cast to ``dtype`` if given."""
    out = {}
    for name, tensor in named:
        tensor = tensor.detach().to(device=device)
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        out[name] = tensor.clone()
    return out


def is_isolated(topology: str, stage: SeedStage | int) -> bool:
    """Whether the seed reads the *detached* host features in ``stage``.

    Always in TRAINING; in BLENDING, HOLDING and FOSSILIZED when
    ``topology.isolate_blending`` (a built-in name or a :class:`~esper_func.Topology`).
    """
    return stage == SeedStage.TRAINING or (resolve_topology(topology).isolate_blending and is_active_stage(stage))


def check_named_tensors(where: str, got: Any, expected: Mapping[str, tuple[int, ...]]) -> None:
    """Raise :class:`ParamsMismatchError` unless ``got`` maps exactly ``expected``'s names to tensors of those shapes."""
    if not isinstance(got, Mapping):
        raise ParamsMismatchError(f"{where} must be a dict of tensors, got {type(got).__name__}")
    if got.keys() != expected.keys():
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        raise ParamsMismatchError(
            f"{where} does not match: missing {missing}, unexpected {extra}; expected exactly {sorted(expected)}"
        )
    for key, shape in expected.items():
        if tuple(got[key].shape) != shape:
            raise ParamsMismatchError(f"{where}[{key!r}] has shape {tuple(got[key].shape)}, expected {shape}")


def check_slot_params(slot: Slot, params: Any, *, where: str = "params") -> None:
    """Raise :class:`ParamsMismatchError` unless ``params`` has exactly ``slot``'s names and shapes."""
    if not isinstance(params, Mapping):
        raise ParamsMismatchError(f"{where} must be a dict of parameter groups, got {type(params).__name__}")
    expected = slot.param_shapes
    if params.keys() != expected.keys():
        raise ParamsMismatchError(
            f"{where} has groups {sorted(params)}, but a {slot.algorithm.name} slot needs "
            f"exactly {sorted(expected)}"
        )
    for group, shapes in expected.items():
        check_named_tensors(f"{where}[{group!r}]", params[group], shapes)


def _check_features(slot: Slot, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise DTypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise DTypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    slot.topology.check_features(x, slot.channels)


def _broadcast_alpha(alpha: Tensor, x: Tensor) -> Tensor:
    """Validate ``alpha`` (0-d or ``[B]``) and shape it to broadcast against ``x``."""
    if not isinstance(alpha, Tensor):
        raise DTypeError(
            f"alpha must be a torch.Tensor (0-d or shape [B]), got {type(alpha).__name__}; "
            "wrap numbers as torch.tensor(value) so changing alpha never recompiles"
        )
    if not alpha.is_floating_point():
        raise DTypeError(f"alpha must be a floating-point tensor, got dtype {alpha.dtype}")
    if alpha.ndim == 0:
        return alpha
    if alpha.ndim == 1 and alpha.shape[0] == x.shape[0]:
        return alpha.reshape((x.shape[0],) + (1,) * (x.ndim - 1))
    raise ShapeError(
        f"alpha must be 0-d or per-sample with shape [{x.shape[0]}], got {list(alpha.shape)}"
    )


def slot_apply(
    slot: Slot,
    params: Mapping[str, Mapping[str, Tensor]],
    alpha: Tensor,
    x: Tensor,
    *,
    stage: SeedStage,
) -> Tensor:
    """Apply the slot to host features ``x``; a pure function.

    Args:
        slot: static slot description from :func:`germinate_slot`.
        params: ``{"seed": ..., ["gate": ...]}`` as returned by ``germinate_slot``
            (or any tree of the same names and shapes, e.g. after an update).
        alpha: blend amount, a floating tensor, 0-d or per-sample ``[B]``;
            clamped to ``[0, 1]``. Never a Python float: a tensor input means
            a new value never recompiles a ``torch.compile``d caller.
        x: host features in the slot's topology's layout: ``[B, C, H, W]``
            (CNN), ``[B, T, C]`` (transformer), ...
        stage: the seed's lifecycle stage (static; see the module docstring).

    Returns:
        Features of the same shape and dtype as ``x``. Nothing is mutated.

    Raises:
        ShapeError: features of the wrong shape (the message gives the expected one).
        DTypeError: features or alpha of the wrong dtype.
        ParamsMismatchError: parameters whose names or shapes do not match the slot.
    """
    stage = SeedStage(stage)
    _check_features(slot, x)
    a = _broadcast_alpha(alpha, x)
    check_slot_params(slot, params)
    if not is_active_stage(stage):
        return x
    module = slot._skeleton.get()  # type: ignore[attr-defined]
    if not slot._flat_names:  # type: ignore[attr-defined]
        return module(x, a, int(stage))  # a tensor-free seed (noop): nothing to bind
    return functional_call(
        module, slot.flatten(params), (x, a), {"stage": int(stage)}, strict=True, tie_weights=False
    )
