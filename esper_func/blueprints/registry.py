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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NoReturn

from torch import nn

from esper_func.errors import (
    BlueprintExistsError,
    ImmutableError,
    InvalidArgumentError,
    InvalidTypeError,
    UnknownBlueprintError,
    UnknownTopologyError,
)
from esper_func.lifecycle.stages import TOPOLOGIES

__all__ = ["Blueprint", "Registry", "default_registry"]


def _check_topology(topology: object) -> str:
    if topology not in TOPOLOGIES:
        raise UnknownTopologyError(
            f"unknown topology {topology!r}; expected one of {list(TOPOLOGIES)}"
        )
    return topology


@dataclass(frozen=True)
class Blueprint:
    """How to build one kind of seed module.

    Attributes:
        name: Blueprint name, unique within its topology (``"conv_light"``).
        topology: ``"cnn"`` (seeds map ``[B, C, H, W] -> [B, C, H, W]``) or
            ``"transformer"`` (seeds map ``[B, T, C] -> [B, T, C]``).
        build: A module-level function ``build(dim, **kwargs) -> nn.Module``;
            ``dim`` is the channel (CNN) or embedding (transformer) width.
            It initialises with torch's default initialisers and the global RNG,
            so wrap it in ``torch.random.fork_rng()`` + ``torch.manual_seed`` for
            reproducible weights. Unknown keyword arguments raise ``TypeError``.
        param_estimate: esper-lite's rough parameter count, used to order blueprints.
        description: One line for humans.
    """

    name: str
    topology: str
    build: Callable[..., nn.Module]
    param_estimate: int
    description: str = ""

    def __post_init__(self) -> None:
        _check_topology(self.topology)
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


class Registry(Mapping[str, Blueprint]):
    """Immutable mapping ``"topology:name" -> Blueprint``.

    Build with :meth:`of`; derive new registries with :meth:`with_blueprint`
    and :meth:`without`. Iteration is in sorted key order. Two registries
    are equal (and hash equal) when they hold the same blueprints; they pickle
    by value (the build functions by reference).

    Note that :meth:`get` deliberately takes ``(topology, name)`` instead of
    ``Mapping.get``'s ``(key, default)``; use ``reg.get(t, n)`` or ``reg[f"{t}:{n}"]``.
    """

    __slots__ = ("_entries",)
    _entries: Mapping[str, Blueprint]

    def __init__(self, entries: Mapping[str, Blueprint] | None = None) -> None:
        # Private: use Registry.of(...). The mapping is copied and frozen.
        items = dict(entries or {})
        for key, bp in items.items():
            if not isinstance(bp, Blueprint):
                raise InvalidTypeError(f"registry values must be Blueprint instances; got {bp!r}")
            if key != bp.key:
                raise InvalidArgumentError(f"registry key {key!r} does not match blueprint key {bp.key!r}")
        object.__setattr__(self, "_entries", MappingProxyType(dict(sorted(items.items()))))

    @classmethod
    def of(cls, *blueprints: Blueprint) -> Registry:
        """A registry holding exactly ``blueprints``.

        Raises:
            TypeError: an argument is not a :class:`Blueprint`.
            BlueprintExistsError: two blueprints share a ``topology:name`` key.
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
        return cls(entries)

    # --- Mapping protocol -------------------------------------------------
    def __getitem__(self, key: str) -> Blueprint:
        try:
            return self._entries[key]
        except KeyError:
            topology, _, name = str(key).partition(":")
            if topology in TOPOLOGIES and name:
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
    def get(self, topology: str, name: str) -> Blueprint:  # type: ignore[override]
        """The blueprint ``name`` of ``topology``.

        Raises:
            UnknownTopologyError: ``topology`` is not ``"cnn"``/``"transformer"``.
            UnknownBlueprintError: no such blueprint; the message lists the names
                available for ``topology``.
        """
        _check_topology(topology)
        bp = self._entries.get(f"{topology}:{name}")
        if bp is None:
            self._raise_unknown(topology, name)
        return bp

    def names(self, topology: str) -> tuple[str, ...]:
        """Blueprint names of ``topology``, sorted by ``(param_estimate, name)``."""
        _check_topology(topology)
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
        return Registry({**self._entries, blueprint.key: blueprint})

    def without(self, topology: str, name: str) -> Registry:
        """A new registry without blueprint ``topology:name``; this one is unchanged.

        Raises:
            UnknownTopologyError, UnknownBlueprintError: as :meth:`get`.
        """
        key = self.get(topology, name).key
        return Registry({k: v for k, v in self._entries.items() if k != key})

    # --- Value semantics --------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Registry):
            return NotImplemented
        return dict(self._entries) == dict(other._entries)

    def __hash__(self) -> int:
        return hash(tuple(self._entries.items()))

    def __reduce__(self) -> tuple[Any, tuple[Blueprint, ...]]:
        return (Registry.of, tuple(self._entries.values()))

    def __repr__(self) -> str:
        parts = []
        for topology in TOPOLOGIES:
            names = self.names(topology)
            if names:
                parts.append(f"{topology}=({', '.join(names)})")
        return f"Registry({', '.join(parts)})"

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise ImmutableError(f"Registry is immutable; cannot set {name!r} (use with_blueprint)")

    def __delattr__(self, name: str) -> NoReturn:
        raise ImmutableError(f"Registry is immutable; cannot delete {name!r} (use without)")


@functools.cache
def default_registry() -> Registry:
    """The 16 built-in blueprints (8 CNN, 8 transformer), as in esper-lite.

    The result is cached; it is immutable, so sharing it is safe.
    """
    from esper_func.blueprints import cnn, transformer  # here to avoid an import cycle

    return Registry.of(*cnn.BLUEPRINTS, *transformer.BLUEPRINTS)
