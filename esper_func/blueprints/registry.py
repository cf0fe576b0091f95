"""Blueprints and the immutable blueprint registry.

A :class:`Blueprint` is static, hashable metadata: a name, a topology and a
*module-level* ``build(dim, **kwargs) -> nn.Module`` function (so blueprints,
and registries of them, pickle by reference and cross process boundaries).

A :class:`Registry` is an immutable ``Mapping[str, Blueprint]`` keyed
``"topology:name"``. It is built once with :meth:`Registry.of` and passed
explicitly; "registering" a blueprint means building a new registry with
:meth:`Registry.with_blueprint`. There is no shared mutable registry anywhere,
which is the point: esper-lite's class-level dict of blueprints is replaced by
a value.

Topologies: a blueprint's topology is a built-in name (``"cnn"``,
``"transformer"``) or an :class:`~esper_func.Topology` of your own; a
registry knows the built-in topologies and every topology its blueprints and
hosts bring, and looks them up by name. It also holds the host classes of
your own (:meth:`Registry.with_host`), so that a checkpoint of a model on
such a host can be opened with it; the built-in hosts need no entry.

Examples:
    >>> import torch
    >>> from esper_func.blueprints import Blueprint, default_registry
    >>> reg = default_registry()
    >>> seed = reg.get("cnn", "conv_light").build(64)
    >>> seed(torch.zeros(2, 64, 8, 8)).shape
    torch.Size([2, 64, 8, 8])
    >>> def build_tiny(dim):                        # module-level in real code, so it pickles
    ...     return torch.nn.Conv2d(dim, dim, 1)
    >>> mine = reg.with_blueprint(Blueprint("tiny", "cnn", build_tiny, 10, "my seed"))
    >>> "cnn:tiny" in mine, "cnn:tiny" in reg       # the default registry is unchanged
    (True, False)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NoReturn

from torch import nn

from esper_func.errors import (
    BlueprintExistsError,
    HostProtocolError,
    ImmutableError,
    InvalidArgumentError,
    InvalidTypeError,
    UnknownBlueprintError,
    UnknownHostError,
    UnknownTopologyError,
)
from esper_func.hosts import BUILTIN_HOSTS, BUILTIN_TOPOLOGIES, Topology, resolve_topology

__all__ = ["Blueprint", "Registry", "default_registry"]


@dataclass(frozen=True)
class Blueprint:
    """How to build one kind of seed module.

    Attributes:
        name: Blueprint name, unique within its topology (``"conv_light"``).
        topology: ``"cnn"`` (seeds map ``[B, C, H, W] -> [B, C, H, W]``),
            ``"transformer"`` (seeds map ``[B, T, C] -> [B, T, C]``) or a
            :class:`~esper_func.Topology` of your own (seeds map features of
            its layout to the same shape). Stored as the
            :class:`~esper_func.Topology` (which equals its name).
        build: A module-level function ``build(dim, **kwargs) -> nn.Module``;
            ``dim`` is the channel width (the topology's ``C`` dimension).
            It initialises with torch's default initialisers and the global RNG,
            so wrap it in ``torch.random.fork_rng()`` + ``torch.manual_seed`` for
            reproducible weights. Unknown keyword arguments raise ``TypeError``.
        param_estimate: esper-lite's rough parameter count, used to order blueprints.
        description: One line for humans.
        per_sample: The seed maps every sample (every index of the first
            dimension) on its own, with no statistics or attention across the
            batch, so its parameter gradient over a batch is the sum of the
            gradients over any split of it. Every built-in blueprint is; the
            default is ``False`` because nothing can check it. Candidate
            groups (:func:`esper_func.add_candidates`) use it to incubate
            over micro-batches on CPU.
    """

    name: str
    topology: str
    build: Callable[..., nn.Module]
    param_estimate: int
    description: str = ""
    per_sample: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "topology", resolve_topology(self.topology))
        if not isinstance(self.name, str) or not self.name or ":" in self.name:
            raise InvalidArgumentError(
                f"blueprint name must be a non-empty string without ':'; got {self.name!r}"
            )
        if not callable(self.build):
            raise InvalidTypeError(f"blueprint {self.key!r}: build must be callable; got {self.build!r}")
        if (
            not isinstance(self.param_estimate, int)
            or isinstance(self.param_estimate, bool)
            or self.param_estimate < 0
        ):
            raise InvalidArgumentError(
                f"blueprint {self.key!r}: param_estimate must be a non-negative int; "
                f"got {self.param_estimate!r}"
            )
        if not isinstance(self.per_sample, bool):
            raise InvalidTypeError(f"blueprint {self.key!r}: per_sample must be a bool; got {self.per_sample!r}")

    @property
    def key(self) -> str:
        """Registry key ``"topology:name"``."""
        return f"{self.topology}:{self.name}"


def check_dim(key: str, dim: object, what: str = "dim") -> int:
    """``dim`` as a positive int, else ``TypeError``/``ValueError`` naming blueprint ``key``."""
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise InvalidTypeError(f"{key}: {what} must be an int; got {type(dim).__name__} {dim!r}")
    if dim < 1:
        raise InvalidArgumentError(f"{key}: {what} must be >= 1; got {dim}")
    return dim


def reject_unknown_kwargs(key: str, unknown: Mapping[str, Any], accepted: tuple[str, ...]) -> None:
    """Raise ``TypeError`` naming the accepted keywords when ``unknown`` is non-empty.

    Used by the built-in ``build`` functions, which take ``**unknown`` so that
    the error can list what *is* accepted (Python's own message does not).
    """
    if unknown:
        accepted_text = ", ".join(accepted) if accepted else "none besides dim"
        raise InvalidTypeError(
            f"{key} got unexpected keyword argument(s) {sorted(unknown)}; "
            f"accepted keywords: {accepted_text}"
        )


def _sort_key(bp: Blueprint) -> tuple[int, str]:
    return (bp.param_estimate, bp.name)


def _check_host_type(host_type: object) -> type[Any]:
    if not isinstance(host_type, type):
        raise InvalidTypeError(f"a registry holds host classes; got {type(host_type).__name__} {host_type!r}")
    topology = getattr(host_type, "topology", None)
    if not isinstance(topology, Topology):
        raise HostProtocolError(
            f"{host_type.__name__} is not an esper_func host class: its topology class attribute must be an "
            f"esper_func Topology; got {topology!r}"
        )
    if not callable(getattr(host_type, "from_dict", None)) or not callable(getattr(host_type, "to_dict", None)):
        raise HostProtocolError(
            f"{host_type.__name__} is not an esper_func host class: it needs to_dict() and a classmethod "
            "from_dict(data) (esper_func.HostBase derives both from dataclass fields)"
        )
    builtin = BUILTIN_HOSTS.get(host_type.__name__)
    if builtin is not None and builtin is not host_type:
        raise InvalidArgumentError(
            f"host class {host_type.__module__}.{host_type.__qualname__} has the name of the built-in "
            f"{host_type.__name__}; checkpoints store hosts by class name, so give it another name"
        )
    return host_type


class Registry(Mapping[str, Blueprint]):
    """Immutable mapping ``"topology:name" -> Blueprint``, plus the host classes of your own.

    Build with :meth:`of`; derive new registries with :meth:`with_blueprint`,
    :meth:`without` and :meth:`with_host`. Iteration is in sorted key order.
    Two registries are equal (and hash equal) when they hold the same
    blueprints and hosts; they pickle by value (build functions and host
    classes by reference).

    The topologies a registry knows (:attr:`topologies`) are the built-in
    ones and those of its blueprints and hosts; one name has one set of
    rules. Wherever a topology is asked for, its name or the
    :class:`~esper_func.Topology` itself may be given.

    Note that :meth:`get` deliberately takes ``(topology, name)`` instead of
    ``Mapping.get``'s ``(key, default)``; use ``reg.get(t, n)`` or ``reg[f"{t}:{n}"]``.
    """

    __slots__ = ("_entries", "_hosts", "_topologies")
    _entries: Mapping[str, Blueprint]
    _hosts: Mapping[str, type[Any]]
    _topologies: Mapping[str, Topology]

    def __init__(
        self, entries: Mapping[str, Blueprint] | None = None, hosts: Mapping[str, type[Any]] | None = None
    ) -> None:
        # Private: use Registry.of(...). The mappings are copied and frozen.
        items = dict(entries or {})
        topologies: dict[str, Topology] = dict(BUILTIN_TOPOLOGIES)

        def learn(topology: Topology, where: str) -> None:
            known = topologies.setdefault(topology.name, topology)
            if known.rules() != topology.rules():
                raise InvalidArgumentError(
                    f"{where} has {topology.describe()}, but the registry already knows {known.describe()}; "
                    "a topology name stands for one set of rules"
                )

        for key, bp in items.items():
            if not isinstance(bp, Blueprint):
                raise InvalidTypeError(f"registry values must be Blueprint instances; got {bp!r}")
            if key != bp.key:
                raise InvalidArgumentError(f"registry key {key!r} does not match blueprint key {bp.key!r}")
            learn(resolve_topology(bp.topology), f"blueprint {bp.key!r}")
        host_types = dict(hosts or {})
        for name, host_type in host_types.items():
            _check_host_type(host_type)
            if name != host_type.__name__:
                raise InvalidArgumentError(f"host key {name!r} does not match the class name {host_type.__name__!r}")
            learn(host_type.topology, f"host {name!r}")
        object.__setattr__(self, "_entries", MappingProxyType(dict(sorted(items.items()))))
        object.__setattr__(self, "_hosts", MappingProxyType(dict(sorted(host_types.items()))))
        object.__setattr__(self, "_topologies", MappingProxyType(topologies))

    @classmethod
    def of(cls, *blueprints: Blueprint, hosts: Iterable[type[Any]] = ()) -> Registry:
        """A registry holding exactly ``blueprints`` and the host classes ``hosts``.

        Raises:
            TypeError: an argument is not a :class:`Blueprint` (or not a host class).
            BlueprintExistsError: two blueprints share a ``topology:name`` key.
            InvalidArgumentError: one topology name with two sets of rules, or
                two host classes of one name.
        """
        entries: dict[str, Blueprint] = {}
        for bp in blueprints:
            if not isinstance(bp, Blueprint):
                raise InvalidTypeError(f"Registry.of takes Blueprint instances; got {bp!r}")
            if bp.key in entries:
                raise BlueprintExistsError(
                    f"blueprint {bp.key!r} given twice to Registry.of; keys must be unique"
                )
            entries[bp.key] = bp
        host_types: dict[str, type[Any]] = {}
        for host_type in hosts:
            _check_host_type(host_type)
            if host_type.__name__ in host_types:
                raise InvalidArgumentError(f"two host classes named {host_type.__name__!r}; names must be unique")
            host_types[host_type.__name__] = host_type
        return cls(entries, host_types)

    # --- Mapping protocol -------------------------------------------------
    def __getitem__(self, key: str) -> Blueprint:
        try:
            return self._entries[key]
        except KeyError:
            topology, _, name = str(key).partition(":")
            if topology in self._topologies and name:
                self._raise_unknown(topology, name)
            raise UnknownBlueprintError(
                f"no blueprint under key {key!r}; keys look like 'topology:name', "
                f"available: {list(self._entries)}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    # --- Queries ----------------------------------------------------------
    @property
    def topologies(self) -> Mapping[str, Topology]:
        """Every topology this registry knows, by name: the built-in ones, then those of its blueprints and hosts."""
        return self._topologies

    def topology(self, topology: str) -> Topology:
        """The :class:`~esper_func.Topology` named ``topology`` (a ``Topology`` is checked and returned).

        Raises:
            UnknownTopologyError: a name the registry does not know (the
                message lists the known ones), or a ``Topology`` whose rules
                differ from the registry's topology of that name.
        """
        resolved = resolve_topology(topology, self._topologies)
        known = self._topologies.get(resolved.name)
        if known is not None and known.rules() != resolved.rules():
            raise UnknownTopologyError(
                f"{resolved.describe()} is not the registry's topology {resolved.name!r}, which is {known.describe()}"
            )
        return resolved

    @property
    def hosts(self) -> Mapping[str, type[Any]]:
        """The host classes of your own this registry holds, by class name (the built-in hosts are implied)."""
        return self._hosts

    def host_type(self, name: str) -> type[Any]:
        """The host class a checkpoint names ``name``: a built-in host, or one of :attr:`hosts`.

        Raises:
            UnknownHostError: no such host class; the message lists the
                known ones and says how to add one.
        """
        found = BUILTIN_HOSTS.get(name) or self._hosts.get(name)
        if found is None:
            raise UnknownHostError(
                f"unknown host type {name!r}; this registry knows {sorted({*BUILTIN_HOSTS, *self._hosts})}. "
                "Register a host class of your own with registry.with_host(HostClass)"
            )
        return found

    def get(self, topology: str, name: str) -> Blueprint:  # type: ignore[override]
        """The blueprint ``name`` of ``topology`` (a name or a :class:`~esper_func.Topology`).

        Raises:
            UnknownTopologyError: ``topology`` is not a topology the registry knows.
            UnknownBlueprintError: no such blueprint; the message lists the names
                available for ``topology``.
        """
        topology = self.topology(topology)
        bp = self._entries.get(f"{topology}:{name}")
        if bp is None:
            self._raise_unknown(topology, name)
        return bp

    def names(self, topology: str) -> tuple[str, ...]:
        """Blueprint names of ``topology``, sorted by ``(param_estimate, name)``."""
        topology = self.topology(topology)
        return tuple(
            bp.name
            for bp in sorted(
                (bp for bp in self._entries.values() if bp.topology == topology), key=_sort_key
            )
        )

    def _raise_unknown(self, topology: str, name: str) -> NoReturn:
        available = list(self.names(topology)) or "(none)"
        raise UnknownBlueprintError(
            f"unknown {topology} blueprint {name!r}; available {topology} blueprints: {available}"
        )

    # --- Derivation (returns new registries) -------------------------------
    def with_blueprint(self, blueprint: Blueprint) -> Registry:
        """A new registry with ``blueprint`` added; this one is unchanged.

        Raises:
            BlueprintExistsError: the key is taken (remove it first with :meth:`without`).
        """
        if not isinstance(blueprint, Blueprint):
            raise InvalidTypeError(f"with_blueprint takes a Blueprint; got {blueprint!r}")
        if blueprint.key in self._entries:
            raise BlueprintExistsError(
                f"blueprint {blueprint.key!r} already exists; to replace it use "
                f"registry.without({blueprint.topology!r}, {blueprint.name!r})"
                ".with_blueprint(...)"
            )
        return Registry({**self._entries, blueprint.key: blueprint}, self._hosts)

    def without(self, topology: str, name: str) -> Registry:
        """A new registry without blueprint ``topology:name``; this one is unchanged.

        Raises:
            UnknownTopologyError, UnknownBlueprintError: as :meth:`get`.
        """
        key = self.get(topology, name).key
        return Registry({k: v for k, v in self._entries.items() if k != key}, self._hosts)

    def with_host(self, host_type: type[Any]) -> Registry:
        """A new registry that also holds the host class ``host_type``; this one is unchanged.

        A checkpoint stores a model's host as its class name and
        ``host.to_dict()``; loading it with this registry rebuilds the host
        with ``host_type.from_dict``. The host's topology becomes known by
        name. The built-in hosts are always known.

        Raises:
            HostProtocolError: not a host class (no ``Topology``, no ``to_dict``/``from_dict``).
            InvalidArgumentError: another class of that name is registered (or built in),
                or its topology's name stands for other rules here.
        """
        _check_host_type(host_type)
        existing = self._hosts.get(host_type.__name__)
        if existing is not None and existing is not host_type:
            raise InvalidArgumentError(
                f"the registry already holds another host class named {host_type.__name__!r} "
                f"({existing.__module__}.{existing.__qualname__})"
            )
        if existing is host_type or BUILTIN_HOSTS.get(host_type.__name__) is host_type:
            return self
        return Registry(self._entries, {**self._hosts, host_type.__name__: host_type})

    # --- Value semantics --------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Registry):
            return NotImplemented
        return dict(self._entries) == dict(other._entries) and dict(self._hosts) == dict(other._hosts)

    def __hash__(self) -> int:
        return hash((tuple(self._entries.items()), tuple(self._hosts.items())))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (_registry_of, (tuple(self._entries.values()), tuple(self._hosts.values())))

    def __repr__(self) -> str:
        parts = []
        for topology in self._topologies:
            names = self.names(topology)
            if names:
                parts.append(f"{topology}=({', '.join(names)})")
        if self._hosts:
            parts.append(f"hosts=({', '.join(self._hosts)})")
        return f"Registry({', '.join(parts)})"

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise ImmutableError(f"Registry is immutable; cannot set {name!r} (use with_blueprint)")

    def __delattr__(self, name: str) -> NoReturn:
        raise ImmutableError(f"Registry is immutable; cannot delete {name!r} (use without)")


def _registry_of(blueprints: tuple[Blueprint, ...], hosts: tuple[type[Any], ...] = ()) -> Registry:
    return Registry.of(*blueprints, hosts=hosts)


@functools.cache
def default_registry() -> Registry:
    """The 16 built-in blueprints (8 CNN, 8 transformer), as in esper-lite.

    The result is cached; it is immutable, so sharing it is safe.
    """
    from esper_func.blueprints import cnn, transformer  # here to avoid an import cycle

    return Registry.of(*cnn.BLUEPRINTS, *transformer.BLUEPRINTS)
