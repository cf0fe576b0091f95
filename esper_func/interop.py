"""State dicts in esper-lite's ``MorphogeneticModel`` layout, and importing its checkpoints.

esper-lite keeps a model as one ``nn.Module`` whose ``state_dict()`` has::

    host.<name>                                  host parameters and buffers (tied
                                                 aliases such as host.head.weight too)
    seed_slots.<slot_id>._extra_state            the slot's lifecycle (get_extra_state)
    seed_slots.<slot_id>.seed.<name>             the seed module
    seed_slots.<slot_id>.alpha_schedule.<name>   the GATE network (GatedBlend)

esper_func keeps the same numbers as ``(model, params, buffers)`` plus a
``SeedState`` per slot. Three pure functions convert:

- :func:`to_state_dict` writes the flat dict (with ``_extra_state`` entries
  when given the states);
- :func:`from_state_dict` reads one back for a model whose structure you
  already have;
- :func:`from_esper_lite` rebuilds the structure *and* the states from an
  esper-lite checkpoint alone.

Tensors are passed through, never copied: the dicts returned hold the very
tensors they were given, and nothing passed in is ever mutated (neither dicts
nor tensors). Clone (``torch.utils._pytree.tree_map(torch.clone, params)``)
if you mean to update in place.

Every problem raises :class:`~esper_func.errors.CheckpointError` naming the
key and saying what was expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import torch
from torch import Tensor, nn

from esper_func._rng import run_seeded, split_seeds
from esper_func.blueprints import Registry, default_registry
from esper_func.candidates import Candidates
from esper_func.errors import (
    CheckpointError,
    IllegalTransitionError,
    InvalidArgumentError,
    InvalidTypeError,
    UnknownBlueprintError,
)
from esper_func.hosts import Host, check_host
from esper_func.lifecycle.alpha import AlphaAlgorithm
from esper_func.lifecycle.codec import EXTRA_STATE_VERSION, slot_extra_state, state_from_slot_extra_state
from esper_func.lifecycle.stages import SeedStage
from esper_func.lifecycle.state import SeedState, has_gate, has_seed
from esper_func.model import Buffers, Model, Params, check_tree
from esper_func.slot import GateNetwork, Slot, detached_copies

__all__ = [
    "EXTRA_STATE_KEY",
    "EXTRA_STATE_VERSION",
    "GATE_PREFIX",
    "HOST_PREFIX",
    "SEED_PREFIX",
    "SLOTS_PREFIX",
    "extra_state_key",
    "gate_key",
    "host_key",
    "parse_model_key",
    "seed_key",
    "slot_prefix",
    "to_state_dict",
    "from_state_dict",
    "from_esper_lite",
    "extra_state_from_state",
]

#: Stages in which esper-lite's GATE seed has its gate network (``alpha_schedule``).
_GATE_STAGES: Final[frozenset[SeedStage]] = frozenset({SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED})
#: Stages of a live GATE seed whose gate esper-lite has not created yet.
_PRE_GATE_STAGES: Final[frozenset[SeedStage]] = frozenset({SeedStage.GERMINATED, SeedStage.TRAINING})

_MAX_LISTED: Final[int] = 12

# ---------------------------------------------------------------------------
# esper-lite MorphogeneticModel key layout
# ---------------------------------------------------------------------------
#
# The model registers the host as ``host`` and the slots in an
# ``nn.ModuleDict`` called ``seed_slots`` keyed by slot id, so its keys are::
#
#     host.<host key>                                   e.g. host.blocks.0.conv.weight
#     seed_slots.<slot_id>.seed.<blueprint key>         the seed module
#     seed_slots.<slot_id>.alpha_schedule.<gate key>    GatedBlend, e.g. ...alpha_schedule.gate.0.weight
#     seed_slots.<slot_id>._extra_state                 the slot's lifecycle state (get_extra_state)
#
# The layout is the same for every host: host keys are whatever the host
# module's state_dict() names.

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


def _listing(keys: list[str]) -> str:
    keys = sorted(keys)
    if len(keys) <= _MAX_LISTED:
        return repr(keys)
    return f"{keys[:_MAX_LISTED]!r} ... and {len(keys) - _MAX_LISTED} more"


# --------------------------------------------------------------------------- the expected layout


def _host_layout(model: Model) -> list[tuple[str, str, str, Tensor]]:
    """``(flat key, kind, name, meta tensor)`` for the host, in ``state_dict()`` order.

    ``kind`` is ``"param"``, ``"buffer"`` or ``"tied"`` (``name`` is then the
    master parameter's name).
    """
    skeleton = model.host_skeleton()
    params = dict(skeleton.named_parameters())
    buffers = dict(skeleton.named_buffers())
    tied = model.host.tied_keys
    out = []
    for name, meta in skeleton.state_dict(keep_vars=True).items():
        if name in tied:
            out.append((host_key(name), "tied", tied[name], meta))
        elif name in params:
            out.append((host_key(name), "param", name, meta))
        elif name in buffers:
            out.append((host_key(name), "buffer", name, meta))
        else:  # pragma: no cover - a host state_dict entry that is neither
            raise CheckpointError(f"host state_dict entry {name!r} is neither a parameter nor a buffer")
    return out


def _group_layout(module: nn.Module | None) -> list[tuple[str, Tensor]]:
    if module is None:
        return []
    return list(module.state_dict(keep_vars=True).items())


def _slot_layout(slot_id: str, slot: Slot) -> list[tuple[str, str, str, Tensor]]:
    """``(flat key, group, name, meta tensor)`` for one seeded slot (seed, then gate)."""
    out = [(seed_key(slot_id, n), "seed", n, t) for n, t in _group_layout(slot.seed_skeleton)]
    out += [(gate_key(slot_id, n), "gate", n, t) for n, t in _group_layout(slot.gate_skeleton)]
    return out


# --------------------------------------------------------------------------- to_state_dict


def extra_state_from_state(state: SeedState | None, *, topology: str | None = None) -> dict[str, Any]:
    """A slot's ``_extra_state`` in esper-lite's ``SeedSlot.get_extra_state()`` layout.

    The same as :func:`esper_func.lifecycle.slot_extra_state` (the lifecycle
    codec writes it).
    """
    return slot_extra_state(state, topology=topology)


def _check_states(model: Model, states: Any) -> Mapping[str, SeedState]:
    if not isinstance(states, Mapping):
        raise CheckpointError(f"states must be a mapping slot_id -> SeedState; got {type(states).__name__}")
    unknown = sorted(set(states) - set(model.slot_order))
    if unknown:
        raise CheckpointError(
            f"states has slot id(s) {unknown} that are not enabled in the model; enabled slots: {list(model.slot_order)}"
        )
    for slot_id in model.slot_order:
        stage = model.stage(slot_id)
        state = states.get(slot_id)
        if state is None:
            if stage != SeedStage.DORMANT:
                raise CheckpointError(
                    f"slot {slot_id!r} is in stage {stage.name} but states has no SeedState for it; "
                    f"esper-lite's _extra_state needs the lifecycle state of every slot that is not DORMANT"
                )
            continue
        if not isinstance(state, SeedState):
            raise CheckpointError(f"states[{slot_id!r}] must be a SeedState; got {type(state).__name__}")
        if state.slot_id != slot_id:
            raise CheckpointError(f"states[{slot_id!r}] is the state of slot {state.slot_id!r}")
        if state.stage != stage:
            raise CheckpointError(
                f"states[{slot_id!r}] is in stage {state.stage.name} but the model has the slot in stage {stage.name}; "
                f"update the model with ef.set_stages(model, params, states)"
            )
        slot = model.slot(slot_id)
        if slot is not None and (state.blueprint_id != slot.blueprint_id or state.alpha_algorithm != slot.algorithm):
            raise CheckpointError(
                f"states[{slot_id!r}] describes a {state.blueprint_id!r} seed with {state.alpha_algorithm.name}, "
                f"but the model's slot holds a {slot.blueprint_id!r} seed with {slot.algorithm.name}"
            )
    return states


def to_state_dict(
    model: Model,
    params: Params,
    buffers: Buffers,
    *,
    states: Mapping[str, SeedState] | None = None,
) -> dict[str, Any]:
    """The model as a flat dict with esper-lite ``MorphogeneticModel`` key names.

    Keys, in the order ``torch.nn.Module.state_dict()`` of esper-lite's model
    lists them: the host's (``host.<name>``, parameters and buffers, with tied
    aliases such as ``host.head.weight`` mapped to the same tensor as
    ``host.tok_emb.weight``), then, for each slot in ``model.slot_order``,
    ``seed_slots.<id>._extra_state`` (only when ``states`` is given),
    ``seed_slots.<id>.seed.<name>`` and ``seed_slots.<id>.alpha_schedule.<name>``
    (GATE seeds).

    Args:
        model: the model, as from :func:`esper_func.build_model`.
        params: its parameters.
        buffers: its buffers.
        states: per-slot lifecycle states (``slot_id -> SeedState``). When
            given, every enabled slot gets an ``_extra_state`` entry in
            esper-lite's ``SeedSlot.get_extra_state()`` layout (version 1; see
            :func:`extra_state_from_state`). A slot missing from ``states``
            must be DORMANT in the model and is written as an empty slot. Each
            state must match the model (slot id, stage, blueprint, algorithm).

    Returns:
        A new dict; its tensor values are the caller's tensors (not copies).

    Note:
        esper-lite creates a GATE seed's gate network when blending starts,
        so a GATE seed in GERMINATED or TRAINING is written without its
        ``alpha_schedule`` keys (esper-lite's strict ``load_state_dict``
        would reject them); :func:`from_state_dict` and
        :func:`from_esper_lite` initialise such a gate afresh when reading.

    Raises:
        ParamsMismatchError: ``params`` / ``buffers`` do not fit ``model``.
        CheckpointError: ``states`` does not fit ``model``.
        IllegalTransitionError: a slot holds a tournament's candidates
            (esper-lite has no form for them; choose one first).
    """
    if not isinstance(model, Model):
        raise InvalidTypeError(f"to_state_dict takes an esper_func Model first; got {type(model).__name__}")
    check_tree(model, params, buffers)
    for slot_id in model.slot_order:
        held = model.slot(slot_id)
        if isinstance(held, Candidates):
            raise IllegalTransitionError(
                f"slot {slot_id!r} holds {held.k} tournament candidates ({held.blueprint_id}); esper-lite's "
                "state dict holds one seed per slot: keep one with esper_func.select_candidate first "
                "(save_run keeps the whole group)"
            )
    checked = None if states is None else _check_states(model, states)

    out: dict[str, Any] = {}
    for key, kind, name, _ in _host_layout(model):
        out[key] = buffers["host"][name] if kind == "buffer" else params["host"][name]
    for slot_id in model.slot_order:
        if checked is not None:
            out[extra_state_key(slot_id)] = extra_state_from_state(checked.get(slot_id), topology=None)
        slot = model.slot(slot_id)
        if slot is None:
            continue
        gated = model.stage(slot_id) in _GATE_STAGES
        for key, group, name, _ in _slot_layout(slot_id, slot):
            if group == "gate" and not gated:
                continue  # esper-lite creates a GATE seed's gate network when blending starts
            out[key] = params["slots"][slot_id][group][name]
    return out


# --------------------------------------------------------------------------- from_state_dict


def _check_tensor(key: str, value: Any, meta: Tensor) -> Tensor:
    if not isinstance(value, Tensor):
        raise CheckpointError(f"checkpoint key {key!r} must be a torch.Tensor; got {type(value).__name__}")
    if tuple(value.shape) != tuple(meta.shape):
        raise CheckpointError(
            f"checkpoint key {key!r} has shape {tuple(value.shape)}, expected {tuple(meta.shape)}"
        )
    if meta.is_floating_point():
        if not value.is_floating_point():
            raise CheckpointError(
                f"checkpoint key {key!r} has dtype {value.dtype}, expected a floating-point dtype (like {meta.dtype})"
            )
    elif value.dtype != meta.dtype:
        raise CheckpointError(f"checkpoint key {key!r} has dtype {value.dtype}, expected {meta.dtype}")
    return value


def _slot_of(key: str) -> str | None:
    if not key.startswith(SLOTS_PREFIX):
        return None
    slot_id, dot, _ = key[len(SLOTS_PREFIX) :].partition(".")
    return slot_id if dot and slot_id else None


def _read_tensors(
    model: Model, state_dict: Mapping[str, Any], *, optional_gates: frozenset[str] = frozenset()
) -> tuple[Params, Buffers, list[str]]:
    """Read every tensor ``model`` needs; returns ``(params, buffers, slots whose gate was absent)``.

    ``_extra_state`` entries of enabled slots are ignored. A slot in
    ``optional_gates`` may lack *all* its gate keys.
    """
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"a state dict must be a mapping of key -> tensor; got {type(state_dict).__name__}")
    for key in state_dict:
        if not isinstance(key, str):
            raise CheckpointError(f"state dict keys must be strings; got {type(key).__name__} {key!r}")

    host_layout = _host_layout(model)
    slot_layouts = {sid: _slot_layout(sid, model.slot(sid)) for sid in model.seeded}  # type: ignore[arg-type]
    expected = {key for key, *_ in host_layout}
    for layout in slot_layouts.values():
        expected.update(key for key, *_ in layout)
    ignored = {extra_state_key(sid) for sid in model.slot_order}

    absent_gates = []
    for sid in sorted(optional_gates & set(slot_layouts)):
        gate_keys = {key for key, group, *_ in slot_layouts[sid] if group == "gate"}
        if gate_keys and not (gate_keys & set(state_dict)):
            expected -= gate_keys
            absent_gates.append(sid)

    missing = sorted(expected - set(state_dict))
    if missing:
        raise CheckpointError(f"checkpoint is missing {len(missing)} key(s) the model needs: {_listing(missing)}")
    unexpected = sorted(set(state_dict) - expected - ignored)
    if unexpected:
        slot_ids = sorted({key_sid for key in unexpected if (key_sid := _slot_of(key)) is not None} - set(model.slot_order))
        hint = (
            f"; slot id(s) {slot_ids} are not enabled in the model (enabled: {list(model.slot_order)})" if slot_ids else ""
        )
        raise CheckpointError(
            f"checkpoint has {len(unexpected)} unexpected key(s): {_listing(unexpected)}{hint}; "
            f"expected exactly the host's keys ({HOST_PREFIX}...) and those of the seeded slots {list(model.seeded)}"
        )

    host_params: dict[str, Tensor] = {}
    host_buffers: dict[str, Tensor] = {}
    tied: list[tuple[str, str, Tensor]] = []
    for key, kind, name, meta in host_layout:
        value = _check_tensor(key, state_dict[key], meta)
        if kind == "param":
            host_params[name] = value
        elif kind == "buffer":
            host_buffers[name] = value
        else:
            tied.append((key, name, value))
    for key, master, value in tied:
        reference = host_params[master]
        if value is not reference and not torch.equal(value, reference):
            raise CheckpointError(
                f"checkpoint key {key!r} is tied to {host_key(master)!r} (the same parameter) but holds "
                f"different values; a tied pair must hold one tensor"
            )

    slot_params: dict[str, dict[str, dict[str, Tensor]]] = {}
    for sid, layout in slot_layouts.items():
        groups: dict[str, dict[str, Tensor]] = {"seed": {}}
        for key, group, name, meta in layout:
            if sid in absent_gates and group == "gate":
                continue
            groups.setdefault(group, {})[name] = _check_tensor(key, state_dict[key], meta)
        slot_params[sid] = groups
    return {"host": host_params, "slots": slot_params}, {"host": host_buffers}, absent_gates


def _pre_gate_slots(model: Model) -> frozenset[str]:
    """GATE slots whose seed esper-lite has not given its gate network yet (before BLENDING)."""
    return frozenset(
        sid
        for sid in model.seeded
        if (slot := model.slot(sid)) is not None
        and slot.algorithm == AlphaAlgorithm.GATE
        and model.stage(sid) in _PRE_GATE_STAGES
    )


def _fill_absent_gates(
    model: Model, params: Params, absent: list[str], generator: torch.Generator | None
) -> Params:
    """Fresh gate networks for the slots in ``absent``, seeded by their position in the host."""
    if not absent:
        return params
    known = model.host.slot_ids
    seeds = split_seeds(generator, len(known))
    slot_params = dict(params["slots"])
    for slot_id in absent:
        gated_slot = model.slot(slot_id)
        assert gated_slot is not None
        reference = _reference_tensor(params, slot_params[slot_id])
        gate = _fresh_gate(gated_slot, seeds[known.index(slot_id)], reference)
        slot_params[slot_id] = {**slot_params[slot_id], "gate": gate}
    return {"host": params["host"], "slots": slot_params}


def from_state_dict(
    model: Model, state_dict: Mapping[str, Any], *, generator: torch.Generator | None = None
) -> tuple[Params, Buffers]:
    """Read ``(params, buffers)`` for ``model`` from a dict with esper-lite key names.

    The inverse of :func:`to_state_dict` for a model whose structure you
    already have (use :func:`from_esper_lite` to rebuild the structure from
    the checkpoint). ``_extra_state`` entries of the model's slots are ignored.

    Strict: every key the model needs must be present and no other; each
    value must be a tensor of the expected shape; a floating-point entry may
    come in any floating dtype (kept as is), any other entry (such as
    BatchNorm's ``num_batches_tracked``) must have exactly the expected dtype.
    A tied alias (``host.head.weight``) must equal its master
    (``host.tok_emb.weight``); the master's tensor is used. A GATE seed
    before BLENDING may come without its gate network (esper-lite has none
    yet): it is initialised from ``generator`` (read, not advanced), as
    :func:`from_esper_lite` does.

    Returns:
        New dicts holding the checkpoint's own tensors (not copies; nothing
        is mutated).

    Raises:
        CheckpointError: naming the missing, unexpected or mismatched key(s)
            and what was expected.
    """
    if not isinstance(model, Model):
        raise InvalidTypeError(f"from_state_dict takes an esper_func Model first; got {type(model).__name__}")
    params, buffers, absent = _read_tensors(model, state_dict, optional_gates=_pre_gate_slots(model))
    return _fill_absent_gates(model, params, absent, generator), buffers


# --------------------------------------------------------------------------- from_esper_lite


def _reference_tensor(params: Params, slot_params: Mapping[str, Mapping[str, Tensor]]) -> Tensor | None:
    for tensor in list(slot_params.get("seed", {}).values()) + list(params["host"].values()):
        if tensor.is_floating_point():
            return tensor
    return None


def _fresh_gate(slot: Slot, seed: int, reference: Tensor | None) -> dict[str, Tensor]:
    gate = run_seeded(lambda: GateNetwork(slot.channels, slot.topology), seed)  # the global RNG is untouched
    device = None if reference is None else reference.device
    dtype = None if reference is None else reference.dtype
    return detached_copies(gate.state_dict().items(), device, dtype)


def from_esper_lite(
    state_dict: Mapping[str, Any],
    host: Host,
    *,
    registry: Registry | None = None,
) -> tuple[Model, Params, Buffers, dict[str, SeedState]]:
    """Open an esper-lite ``MorphogeneticModel`` checkpoint: structure, tensors and lifecycle.

    Args:
        state_dict: esper-lite's ``model.state_dict()`` (e.g. from
            ``torch.load(path, weights_only=True)``), or :func:`to_state_dict`
            output with ``states``.
        host: the host spec the checkpoint was trained with
            (:class:`~esper_func.hosts.CNNHost` / :class:`~esper_func.hosts.TransformerHost`
            with the same constructor arguments, or any :class:`~esper_func.hosts.Host`
            whose module has the checkpoint's ``host.*`` keys).
        registry: where the seeds' blueprints are looked up (default
            :func:`esper_func.default_registry`).

    The enabled slots are the slot ids under ``seed_slots.``, in the host's
    execution order. Each needs its ``_extra_state`` (version 1) with every
    field esper-lite writes. ``seed_state`` ``None`` is an empty DORMANT slot.
    Otherwise the state is read with
    :func:`~esper_func.lifecycle.seed_state_from_esper_lite` and, for a live
    seed (GERMINATED to FOSSILIZED), the slot is the registry's blueprint at
    the host's channel width with the state's ``alpha_algorithm``; its
    ``seed.*`` tensors are required. In PRUNED, EMBARGOED and RESETTING
    esper-lite has dropped the module, so there must be no seed tensors.

    A GATE seed has its gate (``alpha_schedule.*``) exactly from BLENDING on,
    as in esper-lite, which creates it when blending starts; the model's
    slot follows (``Slot.gated``), and :func:`esper_func.set_stages` gives the
    seed a fresh gate when it enters BLENDING later.

    Returns:
        ``(model, params, buffers, states)``. ``states`` maps each slot id
        whose ``seed_state`` is not ``None`` to its ``SeedState``, and each
        slot freed after a prune to a DORMANT state that keeps the last
        seed's blend settings (esper-lite's slot keeps them);
        slots that never held a seed are omitted, which
        :func:`esper_func.alphas_of` reads as alpha 0 and
        :func:`esper_func.set_stages` leaves alone. Predictions
        equal esper-lite's with ``ef.predict(model, params, buffers,
        ef.alphas_of(model, states), x)``. Tensors are the checkpoint's own.

    Raises:
        CheckpointError: an unknown slot id (lists the host's), a missing
            ``_extra_state`` or field, an unknown ``_extra_state_version`` or
            ``SeedMetrics`` schema version, an unknown blueprint (lists the
            available ones), missing / unexpected keys, wrong shapes or dtypes.
            The message names the key.
        HostProtocolError: ``host`` is not a host spec.
    """
    check_host(host)
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"a state dict must be a mapping of key -> tensor; got {type(state_dict).__name__}")
    registry = default_registry() if registry is None else registry

    known = host.slot_ids
    seen: set[str] = set()
    for key in state_dict:
        if not isinstance(key, str):
            raise CheckpointError(f"state dict keys must be strings; got {type(key).__name__} {key!r}")
        try:
            _kind, slot_id, _ = parse_model_key(key)
        except ValueError:
            raise CheckpointError(
                f"unexpected checkpoint key {key!r}; esper-lite MorphogeneticModel keys are "
                f"'{HOST_PREFIX}<name>', '{SLOTS_PREFIX}<slot>.{EXTRA_STATE_KEY}', "
                f"'{SLOTS_PREFIX}<slot>.{SEED_PREFIX}<name>' and '{SLOTS_PREFIX}<slot>.{GATE_PREFIX}<name>'"
            ) from None
        if slot_id is not None:
            if slot_id not in known:
                raise CheckpointError(
                    f"checkpoint key {key!r} names slot {slot_id!r}, which the {type(host).__name__} does not have; "
                    f"its slot ids (execution order): {list(known)}"
                )
            seen.add(slot_id)
    order = tuple(sid for sid in known if sid in seen)

    slots: list[Slot | None] = []
    stages: list[SeedStage] = []
    states: dict[str, SeedState] = {}
    for slot_id in order:
        key = extra_state_key(slot_id)
        if key not in state_dict:
            raise CheckpointError(
                f"checkpoint is missing {key!r}; esper-lite writes every slot's lifecycle state there "
                f"(SeedSlot.get_extra_state) and it is needed to rebuild slot {slot_id!r}"
            )
        state = state_from_slot_extra_state(state_dict[key], topology=host.topology, slot_id=slot_id, where=key)
        if state is not None:
            if state.slot_id != slot_id:
                raise CheckpointError(f"{key!r} holds the seed state of slot {state.slot_id!r}, expected {slot_id!r}")
            if state.topology != host.topology:
                raise CheckpointError(
                    f"{key!r} has resolved_topology {state.topology!r} but the host is a {host.topology} host"
                )

        if state is None or not has_seed(state):
            slots.append(None)
            stages.append(SeedStage.DORMANT if state is None else state.stage)
            tensor_keys = sorted(
                k for k in state_dict if k.startswith(f"{SLOTS_PREFIX}{slot_id}.") and k != key
            )
            if tensor_keys:
                what = "no seed (seed_state is None)" if state is None else f"no seed in stage {state.stage.name}"
                raise CheckpointError(
                    f"slot {slot_id!r} has {what}, so esper-lite has no module there, but the checkpoint has "
                    f"unexpected key(s) {_listing(tensor_keys)}"
                )
        else:
            try:
                blueprint = registry.get(host.topology, state.blueprint_id)
            except UnknownBlueprintError as exc:
                raise CheckpointError(f"{key!r}: seed_state.blueprint_id: {exc}") from exc
            slot = Slot(blueprint, host.slot_channels(slot_id), state.alpha_algorithm, gated=has_gate(state))
            slots.append(slot)
            stages.append(state.stage)
        if state is not None:
            states[slot_id] = state

    model = Model(host, order, tuple(slots), tuple(stages))
    params, buffers, _ = _read_tensors(model, state_dict)
    return model, params, buffers, states
