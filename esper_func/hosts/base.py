"""The host protocol: what esper_func needs from a host network, and the topology it belongs to.

A *host* is a static, hashable spec (a frozen dataclass of plain Python
fields) that describes a network with *injection points*, places between
two segments of its forward where a slot may blend a seed into the
features. The built-in hosts are :class:`~esper_func.hosts.CNNHost` and
:class:`~esper_func.hosts.TransformerHost`; a host of your own implements
:class:`Host` (most easily by subclassing :class:`HostBase`) and is used
exactly as they are.

Surfaces and the segment-addressable forward
--------------------------------------------
A host with ``n`` injection points has ``n + 2`` *surfaces*::

    0            the raw input
    1 .. n       the features at injection point ``slot_ids[i - 1]``
    n + 1        the final output (logits)

The module from ``host.build_module()`` runs any contiguous span of them:
``module(x)`` runs ``0 -> n + 1`` and ``module(h, start=i, stop=j)``
continues from surface ``i`` to surface ``j`` (``stop=None`` is the
output). ``start`` and ``stop`` are static Python ints (validate them with
:func:`check_span`), so the forward traces under ``torch.compile`` and runs
under ``torch.func.functional_call``/``vmap``. Splitting must be exact:
``module(module(x, 0, i), i)`` equals ``module(x)``. The forward also takes
``rng``, a ``torch.Generator`` that a host whose training-mode forward draws
random numbers (dropout; :attr:`Host.draws_randomness`) must draw from, and
that any other host may ignore.

Topologies
----------
Every host belongs to a :class:`Topology`: the layout of the features at its
injection points (``"BCHW"`` for the CNN, ``"BTC"`` for the transformer)
and whether a seed keeps reading detached host features once it blends.
Blueprints are registered per topology, and slots read the topology for the
gate network's pooling, the isolation rule and the shape probe that checks a
seed preserves the feature shape. A topology *is* its name (a ``str``), so
everything that takes a topology name takes a :class:`Topology` too.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final, Protocol, TypeVar, runtime_checkable

import torch
from torch import Tensor, nn

from esper_func._rng import DEFAULT_SEED, run_seeded
from esper_func.errors import (
    HostConfigError,
    HostProtocolError,
    ImmutableError,
    InvalidArgumentError,
    InvalidTypeError,
    ParamsMismatchError,
    SegmentRangeError,
    ShapeError,
    UnknownSlotError,
)

__all__ = [
    "BLOCK_END",
    "Host",
    "HostBase",
    "InjectionPoint",
    "Topology",
    "build_seeded",
    "check_host",
    "check_span",
    "check_int",
    "format_slot_id",
]

M = TypeVar("M", bound=nn.Module)

#: Surface kind of an injection point after a block of layers (esper-lite's ``SurfaceType.BLOCK_END``).
BLOCK_END: Final[str] = "BLOCK_END"


# ---------------------------------------------------------------------------
# Topology
# ---------------------------------------------------------------------------


def _topology_name(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidTypeError(f"a topology name must be a str; got {type(name).__name__} {name!r}")
    if not name or ":" in name or not name.isprintable() or any(c.isspace() for c in name):
        raise InvalidArgumentError(
            f"a topology name must be a non-empty string without ':' or whitespace "
            f"(it is the first half of a registry key 'topology:blueprint'); got {name!r}"
        )
    return str(name)


def _layout(name: str, layout: object) -> str:
    if not isinstance(layout, str):
        raise InvalidTypeError(f"Topology {name!r}: layout must be a str such as 'BCHW'; got {layout!r}")
    ok = (
        len(layout) >= 2
        and layout[0] == "B"
        and layout.count("C") == 1
        and layout.isascii()
        and layout.isalpha()
        and layout.isupper()
        and len(set(layout)) == len(layout)
    )
    if not ok:
        raise InvalidArgumentError(
            f"Topology {name!r}: layout must name each feature dimension once with an upper-case "
            f"letter, batch first and exactly one channel dimension 'C' (e.g. 'BCHW', 'BTC', 'BC'); "
            f"got {layout!r}"
        )
    return layout


def _positive(name: str, what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"Topology {name!r}: {what} must be an int >= 1; got {value!r}")
    return value


class Topology(str):
    """A topology: the name hosts and blueprints share, and the rules slots follow.

    A ``Topology`` is a ``str`` equal to (and hashing as) its name, so it
    goes wherever a topology name goes (registry keys, ``germinate``,
    checkpoints, which store the name); it also carries what a slot needs
    to know about the features at the injection points of its hosts.
    Build one with ``Topology(name, *, layout, isolate_blending,
    probe_batch=2, probe_size=8)``; the name has no ``':'`` and no
    whitespace.

    Attributes:
        name: the topology's name (``"cnn"``), as a plain ``str``.
        layout: the features' dimensions, one upper-case letter each, batch
            ``B`` first and exactly one channel dimension ``C``: ``"BCHW"``
            (CNN), ``"BTC"`` (transformer), ``"BC"`` (a vector per sample).
            The gate network of the GATE algorithm mean-pools every
            dimension except ``B`` and ``C``; a slot checks its features'
            rank and channel width against it.
        isolate_blending: whether a seed keeps reading the *detached* host
            features once it blends (BLENDING, HOLDING, FOSSILIZED), so that
            no gradient reaches the host through the seed. In TRAINING a
            seed is always isolated. esper-lite: ``True`` for CNNs (stable
            spatial hierarchies), ``False`` for transformers (co-adaptation).
        probe_batch: samples in the shape probe that checks a new seed maps
            features to features of the same shape.
        probe_size: the probe's size along every dimension other than ``B``
            and ``C``.

    Raises:
        InvalidTypeError: an argument of the wrong type.
        InvalidArgumentError: a malformed name or layout, or a probe size
            below 1 (the message says what is allowed).

    Examples:
        >>> import esper_func as ef
        >>> mlp = ef.Topology("mlp", layout="BC", isolate_blending=True)
        >>> mlp == "mlp", mlp.pool_dims, mlp.probe_shape(16)
        (True, (), (2, 16))
        >>> ef.CNNHost().topology.pool_dims, ef.TransformerHost().topology.pool_dims
        ((2, 3), (1,))
    """

    layout: str
    isolate_blending: bool
    probe_batch: int
    probe_size: int

    def __new__(
        cls,
        name: str,
        *,
        layout: str,
        isolate_blending: bool,
        probe_batch: int = 2,
        probe_size: int = 8,
    ) -> Topology:
        name = _topology_name(name)
        layout = _layout(name, layout)
        if not isinstance(isolate_blending, bool):
            raise InvalidTypeError(f"Topology {name!r}: isolate_blending must be a bool; got {isolate_blending!r}")
        self = super().__new__(cls, name)
        values = {
            "layout": layout,
            "isolate_blending": isolate_blending,
            "probe_batch": _positive(name, "probe_batch", probe_batch),
            "probe_size": _positive(name, "probe_size", probe_size),
        }
        for key, value in values.items():
            object.__setattr__(self, key, value)
        return self

    # -- value semantics --------------------------------------------------------

    def __setattr__(self, name: str, value: object) -> None:
        raise ImmutableError(f"Topology {self.name!r} is immutable; cannot set {name!r} (build another Topology)")

    def __delattr__(self, name: str) -> None:
        raise ImmutableError(f"Topology {self.name!r} is immutable; cannot delete {name!r}")

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (_make_topology, (self.name, self.layout, self.isolate_blending, self.probe_batch, self.probe_size))

    def __copy__(self) -> Topology:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Topology:
        return self

    def __repr__(self) -> str:
        # The name's repr, as for the str it is: messages and the reprs of blueprints, slots
        # and models read as they do with a plain name. describe() shows the rules.
        return repr(self.name)

    def describe(self) -> str:
        """The constructor call that builds this topology, e.g. ``"Topology('cnn', layout='BCHW', ...)"``."""
        return (
            f"Topology({self.name!r}, layout={self.layout!r}, isolate_blending={self.isolate_blending}, "
            f"probe_batch={self.probe_batch}, probe_size={self.probe_size})"
        )

    @property
    def name(self) -> str:
        """The name, as a plain ``str``."""
        return str.__str__(self)

    def rules(self) -> tuple[str, bool, int, int]:
        """``(layout, isolate_blending, probe_batch, probe_size)``: what two definitions of one name must agree on."""
        return (self.layout, self.isolate_blending, self.probe_batch, self.probe_size)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict; :meth:`from_dict` reads it back."""
        return {
            "name": self.name,
            "layout": self.layout,
            "isolate_blending": self.isolate_blending,
            "probe_batch": self.probe_batch,
            "probe_size": self.probe_size,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Topology:
        """The topology :meth:`to_dict` wrote."""
        return cls(
            data["name"],
            layout=data["layout"],
            isolate_blending=data["isolate_blending"],
            probe_batch=data.get("probe_batch", 2),
            probe_size=data.get("probe_size", 8),
        )

    # -- the features at an injection point --------------------------------------

    @property
    def rank(self) -> int:
        """Number of dimensions of the features (batch included)."""
        return len(self.layout)

    @property
    def channel_dim(self) -> int:
        """Index of the channel dimension."""
        return self.layout.index("C")

    @property
    def pool_dims(self) -> tuple[int, ...]:
        """Dimensions the gate network mean-pools to get ``[B, C]`` (every one but ``B`` and ``C``)."""
        return tuple(i for i, d in enumerate(self.layout) if d not in "BC")

    def probe_shape(self, channels: int) -> tuple[int, ...]:
        """The input shape of the probe that checks a seed of width ``channels`` preserves shapes."""
        return tuple(
            self.probe_batch if d == "B" else channels if d == "C" else self.probe_size for d in self.layout
        )

    def feature_shape(self, channels: int) -> str:
        """The features' shape as text, e.g. ``"[B, 16, H, W]"``, for messages."""
        return "[" + ", ".join(str(channels) if d == "C" else d for d in self.layout) + "]"

    def check_features(self, x: Tensor, channels: int) -> None:
        """Raise :class:`~esper_func.errors.ShapeError` unless ``x`` has this layout with ``channels`` channels."""
        if x.ndim != self.rank or x.shape[self.channel_dim] != channels:
            raise ShapeError(
                f"a {self.name} slot with {channels} channels expects x of shape "
                f"{self.feature_shape(channels)}, got {list(x.shape)}"
            )


def _make_topology(name: str, layout: str, isolate_blending: bool, probe_batch: int, probe_size: int) -> Topology:
    return Topology(name, layout=layout, isolate_blending=isolate_blending, probe_batch=probe_batch, probe_size=probe_size)


# ---------------------------------------------------------------------------
# Static description of an injection point
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InjectionPoint:
    """One injection point, as esper-lite's ``InjectionSpec`` describes it.

    Only ``slot_id``, ``surface`` and ``channels`` are needed by esper_func;
    the rest describe esper-lite's grid and default to a single row.

    Attributes:
        slot_id: canonical id (``"r0c1"``).
        surface: 1-based surface index in forward execution order.
        channels: feature width at this point (channels / ``n_embd``).
        row, col: grid coordinates of ``slot_id`` (default: row 0, column ``surface - 1``).
        kind: ``"PRE_POOL"``, ``"POST_POOL"`` (CNN) or ``"BLOCK_END"`` (the default).
        order: esper-lite's row-major ``InjectionSpec.order`` (action index;
            default ``surface - 1``).
        layer_range: ``(start, end)`` blocks/layers this point covers
            (default ``(surface - 1, surface)``).
        position: relative depth in ``(0, 1]`` (visualisation only; default 0).
    """

    slot_id: str
    surface: int
    channels: int
    row: int = 0
    col: int = -1
    kind: str = BLOCK_END
    order: int = -1
    layer_range: tuple[int, int] = (-1, -1)
    position: float = 0.0

    def __post_init__(self) -> None:
        if self.col < 0:
            object.__setattr__(self, "col", self.surface - 1)
        if self.order < 0:
            object.__setattr__(self, "order", self.surface - 1)
        if self.layer_range == (-1, -1):
            object.__setattr__(self, "layer_range", (self.surface - 1, self.surface))


# ---------------------------------------------------------------------------
# Helpers for host implementations
# ---------------------------------------------------------------------------


def format_slot_id(row: int, col: int) -> str:
    """Canonical slot id ``"r{row}c{col}"`` (esper-lite ``leyline.slot_id``)."""
    if row < 0 or col < 0:
        raise InvalidArgumentError(f"slot row and column must be non-negative; got row={row}, col={col}")
    return f"r{row}c{col}"


def check_int(owner: str, name: str, value: Any, minimum: int) -> None:
    """Raise :class:`~esper_func.errors.HostConfigError` unless ``value`` is an int ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise HostConfigError(f"{owner}: {name} must be an int >= {minimum}; got {value!r}")
    if value < minimum:
        raise HostConfigError(f"{owner}: {name} must be >= {minimum}; got {value}")


def check_span(start: Any, stop: Any, n: int, slot_ids: tuple[str, ...]) -> tuple[int, int]:
    """Validate a static ``(start, stop)`` surface pair of a host with ``n`` injection points.

    ``stop=None`` means the output (surface ``n + 1``). Returns ``(start,
    stop)`` as ints. Raises :class:`~esper_func.errors.InvalidTypeError` for
    anything but a Python int (a tensor would make the route dynamic) and
    :class:`~esper_func.errors.SegmentRangeError` unless ``0 <= start < stop
    <= n + 1``. A host module's ``forward`` calls this first.
    """
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


def build_seeded(make: Callable[[], M], *, seed: int | None = None, device: torch.device | str | None = None) -> M:
    """``make()`` initialised from ``seed``, on ``device``: the contract of ``Host.build_module``.

    Torch's global RNG is never read or written (safe from many threads).
    On ``meta`` (``device="meta"``, or torch's default device inside
    ``with torch.device("meta")``) nothing is drawn: the module is a
    storage-free skeleton. Otherwise the module is built on the CPU with an
    explicit generator seeded with ``seed`` (``None``: a fixed default
    seed), which gives the same numbers, in the same order, as building
    after ``torch.manual_seed(seed)``, and is then moved to ``device``
    (default: torch's default device), so a seed gives the same weights on
    every device.
    """
    target = torch.get_default_device() if device is None else torch.device(device)
    if target.type == "meta":
        with torch.device("meta"):  # meta kernels draw nothing and read no generator
            return make()
    module = run_seeded(make, DEFAULT_SEED if seed is None else seed)
    return module if target.type == "cpu" else module.to(target)


# ---------------------------------------------------------------------------
# The protocol
# ---------------------------------------------------------------------------


@runtime_checkable
class Host(Protocol):
    """What esper_func needs from a host spec (a structural protocol).

    A host spec is static structure: immutable, hashable and comparable by
    value (a frozen dataclass of plain fields), so that a
    :class:`~esper_func.Model` holding it is too. The model, the training
    step, the sweep, the esper-lite interop, the checkpoints and the command
    line use exactly these members; :func:`check_host` checks them with
    messages that say what is missing. :class:`HostBase` derives everything
    but ``topology``, ``injection_points``, ``build_module`` and
    ``example_input``.

    Members:
        topology: the host's :class:`Topology` (a class attribute).
        slot_ids: the injection points' slot ids in forward execution order;
            ``slot_ids[i]`` is surface ``i + 1``.
        slot_channels(slot_id): the feature width there (the size of the
            topology's ``C`` dimension).
        surface_index(slot_id): its 1-based surface index.
        tied_keys: ``{alias: master}`` for state_dict entries that share one
            tensor (a tied LM head); ``{}`` for most hosts.
        draws_randomness: whether the training-mode forward draws random
            numbers (dropout). If so, :func:`esper_func.apply` and the
            training step pass the forward a ``torch.Generator`` as ``rng``
            and the host must draw from it alone.
        build_module(seed=None, device=None): the host ``nn.Module``, whose
            ``forward(x, start=0, stop=None, rng=None)`` runs surfaces
            ``start -> stop`` and validates its input (see the module
            docstring); its parameter and buffer names are the keys of
            ``params["host"]``/``buffers["host"]``. Built with :func:`build_seeded`
            semantics: ``seed`` gives the weights, the global RNG is never
            used, ``device="meta"`` gives a storage-free skeleton.
        example_input(batch, generator=None): a batch of inputs the host
            takes (``generator`` read, not advanced).
        to_dict() / from_dict(data): the spec as a JSON-compatible dict of
            constructor arguments, and back (checkpoints store it with the
            class name; see :meth:`esper_func.Registry.with_host`).
    """

    topology: ClassVar[Topology]

    @property
    def slot_ids(self) -> tuple[str, ...]: ...

    def slot_channels(self, slot_id: str) -> int: ...

    def surface_index(self, slot_id: str) -> int: ...

    @property
    def tied_keys(self) -> Mapping[str, str]: ...

    @property
    def draws_randomness(self) -> bool: ...

    def build_module(self, *, seed: int | None = None, device: torch.device | str | None = None) -> nn.Module: ...

    def example_input(self, batch: int, generator: torch.Generator | None = None) -> Tensor: ...

    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Host: ...


_MEMBERS: Final[tuple[tuple[str, str], ...]] = (
    ("topology", "a class attribute holding its esper_func Topology"),
    ("slot_ids", "a tuple of slot ids in execution order"),
    ("slot_channels", "a method slot_channels(slot_id) -> int"),
    ("surface_index", "a method surface_index(slot_id) -> int"),
    ("tied_keys", "a mapping {alias: master} of tied state_dict entries ({} if none)"),
    ("draws_randomness", "a bool: whether the training forward draws random numbers"),
    ("build_module", "a method build_module(*, seed=None, device=None) -> nn.Module"),
    ("example_input", "a method example_input(batch, generator=None) -> Tensor"),
    ("to_dict", "a method to_dict() -> dict of its constructor arguments"),
    ("from_dict", "a classmethod from_dict(data) -> host"),
)

_PROTOCOL_HINT: Final[str] = (
    "see esper_func.hosts.Host; subclassing esper_func.HostBase (with a frozen dataclass) "
    "supplies everything but topology, injection_points, build_module and example_input"
)


def _protocol_error(host: object, what: str) -> HostProtocolError:
    return HostProtocolError(f"{type(host).__name__} is not an esper_func host: {what} ({_PROTOCOL_HINT})")


def check_host(host: object) -> None:
    """Raise :class:`~esper_func.errors.HostProtocolError` unless ``host`` implements :class:`Host`.

    Checks every member's presence and kind, that the spec hashes (it is
    static structure), that the slot ids are distinct strings numbered
    ``1..n`` in execution order by ``surface_index``, and that every
    injection point has a positive width. Cheap: nothing is built.
    """
    for name, requirement in _MEMBERS:
        try:
            getattr(host, name)
        except AttributeError:
            raise _protocol_error(host, f"it has no {name!r}; the protocol needs {requirement}") from None
        except Exception as exc:  # a property that fails is a broken member
            raise _protocol_error(host, f"reading {name!r} raised {type(exc).__name__}: {exc}") from exc
    topology = host.topology  # type: ignore[attr-defined]
    if not isinstance(topology, Topology):
        raise _protocol_error(
            host,
            f"topology must be an esper_func Topology (e.g. Topology('mlp', layout='BC', isolate_blending=True)), "
            f"got {type(topology).__name__} {topology!r}",
        )
    try:
        hash(host)
    except TypeError as exc:
        raise _protocol_error(host, f"it is not hashable ({exc}); make it a frozen dataclass of plain fields") from None
    for name in ("slot_channels", "surface_index", "build_module", "example_input", "to_dict", "from_dict"):
        if not callable(getattr(host, name)):
            raise _protocol_error(host, f"{name!r} must be callable; got {getattr(host, name)!r}")
    slot_ids = host.slot_ids  # type: ignore[attr-defined]
    if not isinstance(slot_ids, tuple) or not all(isinstance(s, str) and s for s in slot_ids):
        raise _protocol_error(host, f"slot_ids must be a tuple of non-empty str; got {slot_ids!r}")
    if len(set(slot_ids)) != len(slot_ids):
        raise _protocol_error(host, f"slot_ids must be distinct; got {list(slot_ids)}")
    for position, slot_id in enumerate(slot_ids, start=1):
        surface = host.surface_index(slot_id)  # type: ignore[attr-defined]
        if isinstance(surface, bool) or surface != position:
            raise _protocol_error(
                host,
                f"surface_index({slot_id!r}) is {surface!r}, but slot_ids[{position - 1}] must be surface {position} "
                "(surfaces 1..n are the injection points in execution order)",
            )
        channels = host.slot_channels(slot_id)  # type: ignore[attr-defined]
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise _protocol_error(host, f"slot_channels({slot_id!r}) must be an int >= 1; got {channels!r}")
    tied = host.tied_keys  # type: ignore[attr-defined]
    if not isinstance(tied, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tied.items()):
        raise _protocol_error(host, f"tied_keys must be a mapping of str to str; got {tied!r}")
    if not isinstance(host.draws_randomness, bool):  # type: ignore[attr-defined]
        raise _protocol_error(host, f"draws_randomness must be a bool; got {host.draws_randomness!r}")  # type: ignore[attr-defined]


def check_host_module(host: object, module: nn.Module) -> None:
    """Raise :class:`~esper_func.errors.HostProtocolError` unless ``module`` has the segment-addressable forward."""
    if not isinstance(module, nn.Module):
        raise _protocol_error(host, f"build_module() must return a torch.nn.Module; got {type(module).__name__}")
    try:
        parameters = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - a builtin forward
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    missing = [name for name in ("start", "stop", "rng") if name not in parameters]
    if missing:
        raise _protocol_error(
            host,
            f"its module's forward({', '.join(parameters)}) has no parameter(s) {missing}; the "
            "host forward contract is forward(x, start=0, stop=None, rng=None)",
        )


# ---------------------------------------------------------------------------
# A base class that derives the protocol from injection points
# ---------------------------------------------------------------------------


class HostBase:
    """Everything of :class:`Host` derived from ``injection_points``, for host specs to subclass.

    A subclass (a frozen dataclass) supplies ``topology`` (a class
    attribute), the ``injection_points`` property (a tuple of
    :class:`InjectionPoint` in execution order, surfaces ``1..n``),
    ``build_module`` and ``example_input``. Override ``tied_keys`` for tied
    weights and ``draws_randomness`` for a forward with dropout;
    ``to_dict``/``from_dict`` default to the dataclass fields.
    """

    topology: ClassVar[Topology]

    @property
    def injection_points(self) -> tuple[InjectionPoint, ...]:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must define the injection_points property")

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

    @property
    def draws_randomness(self) -> bool:
        """Whether the training-mode forward draws random numbers (``False``: no dropout)."""
        return False

    def build_module(  # pragma: no cover - abstract
        self, *, seed: int | None = None, device: torch.device | str | None = None
    ) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must define build_module(*, seed=None, device=None)")

    def example_input(  # pragma: no cover - abstract
        self, batch: int, generator: torch.Generator | None = None
    ) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define example_input(batch, generator=None)")

    def build_skeleton(self) -> nn.Module:
        """The module on the ``meta`` device: no storage, for ``functional_call``."""
        return self.build_module(device="meta")

    def state_dict_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{key: shape}`` of the module's ``state_dict()`` (built on ``meta``)."""
        return {k: tuple(v.shape) for k, v in self.build_skeleton().state_dict().items()}

    def surface_shapes(self, x: Tensor) -> tuple[tuple[int, ...], ...]:
        """Shapes of surfaces ``0 .. n + 1`` for the input ``x``, computed on ``meta`` (nothing is run).

        Raises what the host's forward raises for an input it does not take
        (:class:`~esper_func.errors.ShapeError`, :class:`~esper_func.errors.DTypeError`),
        so this is also the way to check an input against a host.
        """
        module = self.build_skeleton().eval()
        h = torch.empty(x.shape, dtype=x.dtype, device="meta")
        shapes = [tuple(h.shape)]
        n = self.n_surfaces
        with torch.no_grad():
            for surface in range(1, n + 2):
                h = module(h, surface - 1, surface)
                shapes.append(tuple(h.shape))
        return tuple(shapes)

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

    def to_dict(self) -> dict[str, Any]:
        """The spec's constructor arguments as a JSON-compatible dict (the dataclass fields).

        Override together with :meth:`from_dict` when a field is not a plain
        JSON value.
        """
        if not dataclasses.is_dataclass(self):
            raise HostProtocolError(
                f"{type(self).__name__}.to_dict(): HostBase derives to_dict from dataclass fields; "
                "make the host a frozen dataclass or override to_dict and from_dict"
            )
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        """The spec :meth:`to_dict` wrote: ``cls(**data)``."""
        return cls(**dict(data))
