"""Host networks: the :class:`Host` protocol, its :class:`Topology`, and the built-in hosts.

- :mod:`esper_func.hosts.base`: the protocol (:class:`Host`, :func:`check_host`),
  :class:`Topology`, :class:`InjectionPoint`, the :class:`HostBase` helper
  class and the helpers a host implementation uses (:func:`build_seeded`,
  :func:`check_span`);
- :mod:`esper_func.hosts.cnn`: :class:`CNNHost` (topology ``"cnn"``);
- :mod:`esper_func.hosts.transformer`: :class:`TransformerHost` (topology ``"transformer"``).

A built-in host is one module plus an entry in :data:`BUILTIN_HOSTS`; its
topology becomes a built-in topology (:data:`BUILTIN_TOPOLOGIES`), known by
name everywhere. A host of your own needs no entry here: pass its
``Topology`` (``host.topology``) where a topology is asked for, register its
blueprints in a :class:`~esper_func.Registry` (and the host class with
:meth:`~esper_func.Registry.with_host`, so that checkpoints can rebuild it).
See ``docs/hosts.md``.

esper-lite's ``MorphogeneticModel`` state_dict key layout (``HOST_PREFIX``,
``seed_key``, ...) lives in :mod:`esper_func.interop`; the names are still
importable from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from esper_func.errors import (
    HostConfigError,
    HostProtocolError,
    SegmentRangeError,
    UnknownSlotError,
    UnknownTopologyError,
)
from esper_func.hosts.base import (
    BLOCK_END,
    Host,
    HostBase,
    InjectionPoint,
    Topology,
    build_seeded,
    check_host,
    check_host_module,
    check_span,
    format_slot_id,
)
from esper_func.hosts.cnn import CNN_TOPOLOGY, POST_POOL, PRE_POOL, CNNHost, CNNHostModule, ConvBlock
from esper_func.hosts.transformer import (
    MLP,
    TRANSFORMER_TOPOLOGY,
    CausalSelfAttention,
    TransformerBlock,
    TransformerHost,
    TransformerHostModule,
)

__all__ = [
    "BLOCK_END",
    "BUILTIN_HOSTS",
    "BUILTIN_TOPOLOGIES",
    "CNN_TOPOLOGY",
    "POST_POOL",
    "PRE_POOL",
    "TRANSFORMER_TOPOLOGY",
    "CNNHost",
    "CNNHostModule",
    "CausalSelfAttention",
    "ConvBlock",
    "Host",
    "HostBase",
    "HostConfigError",
    "HostProtocolError",
    "InjectionPoint",
    "MLP",
    "SegmentRangeError",
    "Topology",
    "TransformerBlock",
    "TransformerHost",
    "TransformerHostModule",
    "UnknownSlotError",
    "build_seeded",
    "check_host",
    "check_host_module",
    "check_span",
    "format_slot_id",
    "resolve_topology",
]

#: The built-in host classes, keyed by class name (the ``"type"`` that checkpoints store).
#: Adding a host to esper_func is a module in this package plus an entry here.
BUILTIN_HOSTS: Final[Mapping[str, type[Any]]] = MappingProxyType(
    {cls.__name__: cls for cls in (CNNHost, TransformerHost)}
)

#: The built-in hosts' topologies, keyed by name: these are known by name everywhere.
BUILTIN_TOPOLOGIES: Final[Mapping[str, Topology]] = MappingProxyType(
    {cls.topology.name: cls.topology for cls in BUILTIN_HOSTS.values()}
)


def resolve_topology(topology: object, known: Mapping[str, Topology] | None = None) -> Topology:
    """The :class:`Topology` meant by ``topology``: itself, or the one a name stands for.

    A :class:`Topology` is returned as it is; a name is looked up in
    ``known`` (default: :data:`BUILTIN_TOPOLOGIES`).

    Raises:
        UnknownTopologyError: a name not in ``known``, anything that is not
            a str, or a ``Topology`` that reuses a built-in name with other
            rules. The message lists the known names.
    """
    table = BUILTIN_TOPOLOGIES if known is None else known
    if isinstance(topology, Topology):
        builtin = BUILTIN_TOPOLOGIES.get(topology.name)
        if builtin is not None and builtin.rules() != topology.rules():
            raise UnknownTopologyError(
                f"{topology.describe()} reuses the name of the built-in {builtin.describe()}; "
                "give a topology of your own a name of its own"
            )
        return topology
    if isinstance(topology, str):
        found = table.get(topology)
        if found is not None:
            return found
    raise UnknownTopologyError(
        f"unknown topology {topology!r}; expected one of {list(table)} "
        "or an esper_func.Topology (a host's .topology) for a topology of your own"
    )


_INTEROP_NAMES: Final[frozenset[str]] = frozenset(
    {
        "HOST_PREFIX",
        "SLOTS_PREFIX",
        "SEED_PREFIX",
        "GATE_PREFIX",
        "EXTRA_STATE_KEY",
        "host_key",
        "slot_prefix",
        "seed_key",
        "gate_key",
        "extra_state_key",
        "parse_model_key",
    }
)


def __getattr__(name: str) -> Any:
    # esper-lite's key layout moved to esper_func.interop; keep the old import path working
    # (imported lazily: interop imports the model, which imports this package).
    if name in _INTEROP_NAMES:
        from esper_func import interop

        return getattr(interop, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
