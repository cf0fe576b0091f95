"""The morphogenetic model: a host with seed slots, as static structure plus pytrees.

A :class:`Model` is hashable static structure: the host spec, which of the
host's injection points are enabled (``slot_order``, in execution order),
the :class:`~esper_func.slot.Slot` germinated in each (or ``None``) and each
slot's :class:`~esper_func.lifecycle.stages.SeedStage`. Numbers live outside it::

    params  = {"host": {name: tensor}, "slots": {slot_id: {"seed": {...}, ["gate": {...}]}}}
    buffers = {"host": {name: tensor}}          # BatchNorm running statistics

``params["slots"]`` holds exactly the slots that have a seed. :func:`predict`
and :func:`apply` are pure: alphas are a tensor argument (``[n_slots]`` in
``model.slot_order``, or per-sample ``[B, n_slots]``), buffers updated by a
training-mode forward come back as new tensors, and nothing passed in is
mutated. Both ``vmap`` over alphas and over params (in eval mode).

Changing structure (germinating, removing a seed, changing stages) returns a
new ``(model, params)`` through :func:`add_seed`, :func:`remove_seed` and
:func:`set_stages`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Hashable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.func import functional_call

from esper_func._rng import derive_seed, generator_from_seed, split_seeds
from esper_func._skeleton import Skeleton, on_meta
from esper_func.blueprints import Registry
from esper_func.candidates import CANDIDATE_STAGES, Candidates
from esper_func.errors import (
    CheckpointError,
    DTypeError,
    HostProtocolError,
    IllegalTransitionError,
    InvalidArgumentError,
    InvalidTypeError,
    ParamsMismatchError,
    ShapeError,
    UnknownBlueprintError,
    UnknownHostError,
)
from esper_func.hosts import Host, UnknownSlotError, check_host, check_host_module
from esper_func.lifecycle.alpha import AlphaAlgorithm
from esper_func.lifecycle.stages import GATED_STAGES, SEEDLESS_STAGES, SeedStage, is_active_stage
from esper_func.slot import (
    SeedFeatures,
    Slot,
    SlotModule,
    SlotParams,
    check_named_tensors,
    check_slot_params,
    detached_copies,
    germinate_slot,
    init_gate_params,
    init_slot_params,
)

__all__ = [
    "Model",
    "ModelModule",
    "Params",
    "Buffers",
    "build_model",
    "check_tree",
    "predict",
    "apply",
    "add_seed",
    "remove_seed",
    "set_stages",
    "alphas_of",
    "model_from_dict",
    "model_to_dict",
]

#: ``{"host": {name: tensor}, "slots": {slot_id: SlotParams}}``.
Params = dict[str, Any]
#: ``{"host": {name: tensor}}``.
Buffers = dict[str, dict[str, Tensor]]


class ModelModule(nn.Module):
    """Host plus slot modules with the model's routing, for one ``functional_call``.

    Tensor names are ``host.<name>`` and ``slots.<slot_id>.seed.<name>`` /
    ``slots.<slot_id>.gate.<name>``. ``forward(x, alphas)`` takes alphas
    already validated (``[n_slots]`` or ``[B, n_slots]``). ``route`` holds,
    per slot in the forward pass, ``(alpha index, surface, slot id, stage)``.
    """

    def __init__(self, host: nn.Module, slots: Mapping[str, nn.Module], route: tuple[tuple[int, int, str, int], ...]) -> None:
        super().__init__()
        self.host = host
        self.slots = nn.ModuleDict(dict(slots))
        self.route = route

    def forward(self, x: Tensor, alphas: Tensor, rng: torch.Generator | None = None) -> Tensor:
        """The model's output for ``alphas``; ``rng`` drives the host's dropout in training mode (see :func:`apply`)."""
        h, start = x, 0
        for index, surface, slot_id, stage in self.route:
            h = self.host(h, start, surface, rng=rng)
            alpha = alphas[..., index]
            if alpha.ndim == 1:
                alpha = alpha.reshape((h.shape[0],) + (1,) * (h.ndim - 1))
            slot = cast(SlotModule, self.slots[slot_id])
            h = slot.combine(h, seed_like_host(h, slot.features(h, stage)), alpha, stage)
            start = surface
        return self.host(h, start, None, rng=rng)


def seed_like_host(h: Tensor, features: SeedFeatures) -> SeedFeatures:
    """``features`` with the seed's output in ``h``'s memory format (channels_last hosts).

    A seed reads a contiguous copy of channels_last features (as esper-lite
    feeds it), so its output is contiguous while the host's is channels_last,
    and the blend of the two would run elementwise over mismatched strides
    (forward and backward). One copy into the host's layout makes the blend a
    straight vectorised pass and hands the next host segment the layout it
    wants. The values are the same, to the rounding of the blend.
    """
    out = features.seed_out
    if h.ndim != 4 or out.shape != h.shape or torch._C._functorch.is_batchedtensor(h):
        return features  # (vmap cannot query channels_last contiguity)
    if not h.is_contiguous() and h.is_contiguous(memory_format=torch.channels_last):
        return features._replace(seed_out=out.contiguous(memory_format=torch.channels_last))
    return features


@dataclasses.dataclass(frozen=True)
class Model:
    """Static structure of a host with seed slots (hashable; holds no tensors).

    Attributes:
        host: the host spec: :class:`~esper_func.hosts.CNNHost`,
            :class:`~esper_func.hosts.TransformerHost` or any other
            :class:`~esper_func.hosts.Host`.
        slot_order: the enabled injection points, in forward execution order;
            this is the order of the alpha vector.
        slots: per enabled slot, its :class:`Slot`, or ``None`` when empty.
        stages: per enabled slot, the seed's lifecycle stage (``DORMANT`` when empty).
    """

    host: Host
    slot_order: tuple[str, ...]
    slots: tuple[Slot | None, ...]
    stages: tuple[SeedStage, ...]

    def __post_init__(self) -> None:
        check_host(self.host)
        order = tuple(self.slot_order)
        known = self.host.slot_ids
        for slot_id in order:
            if slot_id not in known:
                raise UnknownSlotError(
                    f"{type(self.host).__name__} has no injection point {slot_id!r}; "
                    f"available (execution order): {list(known)}"
                )
        if len(set(order)) != len(order):
            raise InvalidArgumentError(f"slot_order has duplicates: {list(order)}")
        if list(order) != sorted(order, key=known.index):
            raise InvalidArgumentError(f"slot_order must follow the host's execution order {list(known)}; got {list(order)}")
        if not (len(self.slots) == len(self.stages) == len(order)):
            raise InvalidArgumentError(
                f"slot_order, slots and stages must have one entry per slot; got lengths "
                f"{len(order)}, {len(self.slots)}, {len(self.stages)}"
            )
        stages = tuple(SeedStage(s) for s in self.stages)
        for slot_id, slot, stage in zip(order, self.slots, stages, strict=True):
            if slot is None:
                if stage not in SEEDLESS_STAGES:
                    raise InvalidArgumentError(f"slot {slot_id!r} has no seed but stage {stage.name}; an empty slot's stage must be one without a seed")
                continue
            if slot.topology != self.host.topology:
                raise InvalidArgumentError(
                    f"slot {slot_id!r} holds a {slot.topology} seed but the host is a {self.host.topology} host"
                )
            channels = self.host.slot_channels(slot_id)
            if slot.channels != channels:
                raise ShapeError(f"slot {slot_id!r} has {channels} channels but its seed was built for {slot.channels}")
            if isinstance(slot, Candidates) and stage not in CANDIDATE_STAGES:
                raise IllegalTransitionError(
                    f"slot {slot_id!r} holds {slot.k} candidate seeds, which live in GERMINATED and TRAINING only; "
                    f"got stage {stage.name} (choose one with esper_func.tournament.select_candidate first)"
                )
        object.__setattr__(self, "slot_order", order)
        object.__setattr__(self, "slots", tuple(self.slots))
        object.__setattr__(self, "stages", stages)
        self._build_runtime()

    def _build_runtime(self) -> None:
        # Derived, non-field attributes: excluded from eq/hash/repr, rebuilt on unpickling.
        host_eval = on_meta(lambda: self.host.build_module(), train=False)
        check_host_module(self.host, host_eval)
        # Stages as plain ints: torch.compile guards ints by value, not IntEnum members.
        route = tuple((self.index(sid), self.host.surface_index(sid), sid, int(self.stage(sid))) for sid in self.routed)
        slot_modules = {sid: self.slot(sid).module for _, _, sid, _ in route}  # type: ignore[union-attr]
        train_slots = {sid: copy.deepcopy(m).train() for sid, m in slot_modules.items()}
        runners = (
            Skeleton(ModelModule(host_eval, slot_modules, route)),
            Skeleton(ModelModule(copy.deepcopy(host_eval).train(), train_slots, route)),
        )
        object.__setattr__(self, "_runners", runners)
        param_shapes = {k: tuple(v.shape) for k, v in host_eval.named_parameters()}
        buffer_shapes = {k: tuple(v.shape) for k, v in host_eval.named_buffers()}
        object.__setattr__(self, "_host_shapes", (MappingProxyType(param_shapes), MappingProxyType(buffer_shapes)))
        names: list[tuple[str, ...]] = [("params", "host", k) for k in param_shapes]
        names += [("params", "host", self.host.tied_keys[alias]) for alias in self.host.tied_keys]
        flat_keys = [f"host.{k}" for k in param_shapes] + [f"host.{alias}" for alias in self.host.tied_keys]
        names += [("buffers", "host", k) for k in buffer_shapes]
        flat_keys += [f"host.{k}" for k in buffer_shapes]
        for _, _, sid, _ in route:
            for group, name, flat in self.slot(sid)._flat_names:  # type: ignore[union-attr]
                names.append(("slot", sid, group, name))
                flat_keys.append(f"slots.{sid}.{flat}")
        object.__setattr__(self, "_flat_names", tuple(zip(names, flat_keys, strict=True)))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Model, (self.host, self.slot_order, self.slots, self.stages))

    def flatten(self, params: Params, host_buffers: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The flat tensor dict of the model module (``host.*`` and ``slots.<id>.*``)."""
        out = {}
        for path, key in self._flat_names:  # type: ignore[attr-defined]
            if path[0] == "params":
                out[key] = params["host"][path[2]]
            elif path[0] == "buffers":
                out[key] = host_buffers[path[2]]
            else:
                out[key] = params["slots"][path[1]][path[2]][path[3]]
        return out

    @property
    def n_slots(self) -> int:
        """Number of enabled slots (the length of the alpha vector)."""
        return len(self.slot_order)

    @property
    def routed(self) -> tuple[str, ...]:
        """Slot ids whose seed runs in the forward pass (a seed in TRAINING or later), in execution order."""
        return tuple(
            sid
            for sid, slot, stage in zip(self.slot_order, self.slots, self.stages, strict=True)
            if slot is not None and is_active_stage(stage)
        )

    def index(self, slot_id: str) -> int:
        """Position of ``slot_id`` in :attr:`slot_order` (and in the alpha vector)."""
        try:
            return self.slot_order.index(slot_id)
        except ValueError:
            raise UnknownSlotError(
                f"slot {slot_id!r} is not enabled in this model; enabled slots: {list(self.slot_order)}"
            ) from None

    def slot(self, slot_id: str) -> Slot | None:
        """The :class:`Slot` germinated at ``slot_id``, or ``None``."""
        return self.slots[self.index(slot_id)]

    def stage(self, slot_id: str) -> SeedStage:
        """The lifecycle stage of the seed at ``slot_id``."""
        return self.stages[self.index(slot_id)]

    @property
    def seeded(self) -> tuple[str, ...]:
        """Slot ids that hold a seed (the keys of ``params["slots"]``)."""
        return tuple(sid for sid, slot in zip(self.slot_order, self.slots, strict=True) if slot is not None)

    def host_skeleton(self, *, train: bool = False) -> nn.Module:
        """The host module on the ``meta`` device (eval- or train-mode prototype)."""
        return self._runners[int(train)].prototype.host  # type: ignore[attr-defined]

    def skeleton(self, *, train: bool = False) -> ModelModule:
        """The whole model as a ``meta``-device :class:`ModelModule` prototype (eval or train mode).

        A shared prototype: never call it directly; run a per-thread copy
        (:class:`~esper_func._skeleton.Skeleton`) with :func:`call_module`.
        Its submodules may be wrapped by other runners (the sweep's).
        """
        return cast(ModelModule, self._runners[int(train)].prototype)  # type: ignore[attr-defined]

    @property
    def host_shapes(self) -> tuple[Mapping[str, tuple[int, ...]], Mapping[str, tuple[int, ...]]]:
        """``(param_shapes, buffer_shapes)`` expected in ``params["host"]`` / ``buffers["host"]``."""
        return self._host_shapes  # type: ignore[attr-defined]

    def replace_slot(self, slot_id: str, *, slot: Slot | None, stage: SeedStage) -> Model:
        """A copy with ``slot_id`` holding ``slot`` in ``stage``."""
        i = self.index(slot_id)
        return Model(
            self.host,
            self.slot_order,
            (*self.slots[:i], slot, *self.slots[i + 1 :]),
            (*self.stages[:i], SeedStage(stage), *self.stages[i + 1 :]),
        )


# --------------------------------------------------------------------------- construction


def build_model(
    host: Host,
    slots: Mapping[str, Slot | None] | Iterable[str],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[Model, Params, Buffers]:
    """Build a model and its freshly initialised parameters and buffers.

    Args:
        host: a host spec (:class:`~esper_func.hosts.CNNHost`,
            :class:`~esper_func.hosts.TransformerHost`, or any
            :class:`~esper_func.hosts.Host`).
        slots: the injection points to enable: either slot ids (all empty),
            or a mapping ``slot_id -> Slot | None``; a given ``Slot`` starts
            in ``GERMINATED`` with fresh parameters. Any order; the model
            keeps the host's execution order.
        generator: source of every initial weight (read, not advanced; see
            :func:`esper_func.germinate_slot`). The host is initialised as
            esper-lite initialises it.
        device: where the tensors live.
        dtype: the precision of the floating-point tensors.

    Returns:
        ``(model, params, buffers)``.

    Raises:
        HostProtocolError: ``host`` does not implement the host protocol.
        UnknownSlotError: a slot id the host does not have.
    """
    check_host(host)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise DTypeError(f"dtype must be a floating-point torch.dtype (parameters are trained); got {dtype!r}")
    if isinstance(slots, Mapping):
        requested = dict(slots)
    else:
        if isinstance(slots, str):
            raise InvalidTypeError(f"slots must be slot ids (a list) or a mapping slot_id -> Slot | None; got the string {slots!r}")
        ids = list(slots)
        duplicates = sorted({sid for sid in ids if ids.count(sid) > 1})
        if duplicates:
            raise InvalidArgumentError(f"slots lists {duplicates} more than once; each injection point is one slot")
        requested = {sid: None for sid in ids}
    known = host.slot_ids
    for sid in requested:
        if sid not in known:
            raise UnknownSlotError(
                f"{type(host).__name__} has no injection point {sid!r}; available (execution order): {list(known)}"
            )
    order = tuple(sid for sid in known if sid in requested)
    chosen = tuple(requested[sid] for sid in order)
    stages = tuple(SeedStage.DORMANT if s is None else SeedStage.GERMINATED for s in chosen)
    model = Model(host, order, chosen, stages)

    host_seed, *slot_seeds = split_seeds(generator, 1 + len(order))
    module = host.build_module(seed=host_seed)  # explicit generators; the global RNG is untouched
    host_params = detached_copies(module.named_parameters(), device, dtype)
    host_buffers = detached_copies(module.named_buffers(), device, dtype)
    slot_params = {
        sid: init_slot_params(slot, torch.Generator().manual_seed(seed), device=device, dtype=dtype)
        for sid, slot, seed in zip(order, chosen, slot_seeds, strict=True)
        if slot is not None
    }
    return model, {"host": host_params, "slots": slot_params}, {"host": host_buffers}


# --------------------------------------------------------------------------- validation


def check_tree(model: Model, params: Any, buffers: Any) -> None:
    """Raise :class:`ParamsMismatchError` unless ``params``/``buffers`` fit ``model`` exactly (names and shapes)."""
    if not isinstance(params, Mapping) or set(params) != {"host", "slots"}:
        got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
        raise ParamsMismatchError(f'params must be {{"host": ..., "slots": ...}}; got {got}')
    if not isinstance(buffers, Mapping) or set(buffers) != {"host"}:
        got = sorted(buffers) if isinstance(buffers, Mapping) else type(buffers).__name__
        raise ParamsMismatchError(f'buffers must be {{"host": ...}}; got {got}')
    param_shapes, buffer_shapes = model.host_shapes
    check_named_tensors('params["host"]', params["host"], param_shapes)
    check_named_tensors('buffers["host"]', buffers["host"], buffer_shapes)
    seeded_ids = model.seeded
    if not isinstance(params["slots"], Mapping) or set(params["slots"]) != set(seeded_ids):
        got = sorted(params["slots"]) if isinstance(params["slots"], Mapping) else type(params["slots"]).__name__
        raise ParamsMismatchError(
            f'params["slots"] must hold exactly the slots with a seed {sorted(seeded_ids)}; got {got}'
        )
    for slot_id in seeded_ids:
        slot = model.slot(slot_id)
        assert slot is not None
        check_slot_params(slot, params["slots"][slot_id], where=f'params["slots"][{slot_id!r}]')


def _check_alphas(model: Model, alphas: Any, x: Tensor) -> None:
    if not isinstance(alphas, Tensor):
        raise DTypeError(
            f"alphas must be a torch.Tensor of shape [{model.n_slots}] or [B, {model.n_slots}] "
            f"(slots {list(model.slot_order)}), got {type(alphas).__name__}"
        )
    if not alphas.is_floating_point():
        raise DTypeError(f"alphas must be a floating-point tensor, got dtype {alphas.dtype}")
    n = model.n_slots
    if not (alphas.shape == (n,) or (alphas.ndim == 2 and alphas.shape == (x.shape[0], n))):
        raise ShapeError(
            f"alphas must have shape [{n}] or [B={x.shape[0]}, {n}] (one per slot in {list(model.slot_order)}); "
            f"got {list(alphas.shape)}"
        )
    if torch.compiler.is_compiling() or alphas.device.type == "meta":
        return
    try:
        in_range = bool(((alphas >= 0) & (alphas <= 1)).all())  # False for NaN too
    except RuntimeError:  # under torch.func.vmap values cannot be read; the caller's transform owns them
        return
    if not in_range:
        bad = alphas.detach()[~((alphas >= 0) & (alphas <= 1))][:5].tolist()
        raise InvalidArgumentError(f"alphas must be numbers in [0, 1] (no NaN); found e.g. {bad}")


def check_input(model: Model, params: Params, x: Any, *, where: str = "x") -> Tensor:
    """Raise unless ``x`` is a tensor the host can take with these parameters; return it.

    Checks the type and, for floating-point inputs, that the dtype matches the
    parameters' (a float64 batch into a float32 model is a user error, not
    a silent upcast). Shapes are checked by the host's own forward.
    """
    if not isinstance(x, Tensor):
        raise InvalidTypeError(
            f"{where} must be a torch.Tensor; got {type(x).__name__}"
            + (" (convert with torch.from_numpy)" if type(x).__module__ == "numpy" else "")
        )
    if x.is_floating_point():
        host = params.get("host") if isinstance(params, Mapping) else None
        reference = next(iter(host.values()), None) if isinstance(host, Mapping) else None
        if isinstance(reference, Tensor) and reference.is_floating_point() and reference.dtype != x.dtype:
            raise DTypeError(
                f"{where} has dtype {x.dtype} but the model's parameters are {reference.dtype}; "
                f"cast the input with .to({reference.dtype})"
            )
    return x


# --------------------------------------------------------------------------- forward


def apply(
    model: Model,
    params: Params,
    buffers: Buffers,
    alphas: Tensor,
    x: Tensor,
    *,
    train: bool,
    rng: torch.Generator | None = None,
) -> tuple[Tensor, Buffers]:
    """Run the model; pure.

    Args:
        model: the model, as returned by :func:`build_model`.
        params: its parameters.
        buffers: its buffers.
        alphas: blend amounts, ``[n_slots]`` in ``model.slot_order`` or
            per-sample ``[B, n_slots]``; a tensor (gradients flow through it).
        x: the host's input (images or token ids).
        train: training-mode forward (BatchNorm uses batch statistics and
            updates its running statistics; dropout is active).
        rng: randomness for dropout in training mode (read, not advanced;
            ``None`` means a fixed default seed, so pass a fresh generator
            per step). Masks come from ``torch.rand(..., generator=g)`` with
            ``g`` derived from ``rng`` on ``x``'s device; torch's global RNG
            is never read or written, so threads may call this at once and
            get the results they would get one at a time. Only a host whose
            ``draws_randomness`` is true gets a generator. Differentiable
            under ``torch.func.grad``. Under ``torch.func.vmap`` a host with
            dropout follows vmap's ``randomness`` flag: ``"different"`` (a mask
            per batch element), ``"same"`` (one mask for all), or the default
            ``"error"``, which raises. ``torch.compile`` cannot trace a
            generator, so a compiled training forward with dropout breaks the
            graph at each dropout. Seeds get no generator: the built-in
            blueprints draw nothing in their forward, and a user blueprint
            whose forward draws random numbers (its own ``nn.Dropout``)
            would draw from torch's global RNG.

    Returns:
        ``(output, new_buffers)``. In eval mode ``new_buffers`` is ``buffers``
        itself; in training mode it holds new tensors (the caller's are
        untouched).
    """
    check_input(model, params, x)
    _check_alphas(model, alphas, x)
    check_tree(model, params, buffers)
    if not train:
        return _forward(model, params, buffers["host"], alphas, x, train=False), buffers
    new_host_buffers = {k: v.clone() for k, v in buffers["host"].items()}
    dropout_rng = None
    if model.host.draws_randomness:
        # derive_seed runs no random operator, so this also works inside vmap.
        dropout_rng = generator_from_seed(derive_seed(rng), x.device)
    out = _forward(model, params, new_host_buffers, alphas, x, train=True, rng=dropout_rng)
    return out, {"host": new_host_buffers}


def predict(model: Model, params: Params, buffers: Buffers, alphas: Tensor, x: Tensor) -> Tensor:
    """Eval-mode forward; pure. Shorthand for ``apply(..., train=False)[0]``."""
    return apply(model, params, buffers, alphas, x, train=False)[0]


def _forward(
    model: Model,
    params: Params,
    host_buffers: Mapping[str, Tensor],
    alphas: Tensor,
    x: Tensor,
    *,
    train: bool,
    rng: torch.Generator | None = None,
) -> Tensor:
    module = model._runners[int(train)].get()  # type: ignore[attr-defined]
    flat = model.flatten(params, host_buffers)
    # ``flat`` has exactly the skeleton's tensor names by construction (they are
    # read off the skeleton itself, and check_tree validated every name and
    # shape), and the skeleton holds only meta tensors, so nothing can silently
    # fall back to module state.
    return call_module(module, flat, (x, alphas), None if rng is None else {"rng": rng})


def call_module(module: nn.Module, tensors: Mapping[str, Tensor], args: tuple[Any, ...], kwargs: Mapping[str, Any] | None = None) -> Any:
    """``functional_call(module, tensors, args, kwargs, strict=False, tie_weights=False)``, with less overhead.

    ``module`` is a calling thread's private skeleton copy (see
    :class:`~esper_func._skeleton.Skeleton`) and ``tensors`` names exactly
    its parameters and buffers. Eagerly the tensors are bound straight into
    the submodules' parameter and buffer tables (the lookups are computed
    once per module object) and the meta tensors put back afterwards, which
    is what ``functional_call`` does without re-resolving every dotted name on
    every call; under ``torch.compile`` it is ``functional_call`` itself,
    which Dynamo traces natively.
    """
    if torch.compiler.is_compiling():
        return functional_call(module, dict(tensors), args, dict(kwargs or {}), strict=False, tie_weights=False)
    slots = _binding_slots(module, tensors)
    originals = [table[name] for table, name, _ in slots]
    try:
        for table, name, key in slots:
            table[name] = tensors[key]
        return module(*args, **(kwargs or {}))
    finally:
        for (table, name, _), original in zip(slots, originals, strict=True):
            table[name] = original


def _binding_slots(module: nn.Module, tensors: Mapping[str, Tensor]) -> list[tuple[dict[str, Any], str, str]]:
    """``(submodule._parameters or ._buffers, attribute, key)`` for every key of ``tensors`` (memoised per module and key set)."""
    owner_and_memo = module.__dict__.get("_esper_binding")
    if owner_and_memo is None or owner_and_memo[0] != id(module):  # a deep copy carries its original's memo
        owner_and_memo = (id(module), {})
        object.__setattr__(module, "_esper_binding", owner_and_memo)
    memo: dict[frozenset[str], list[tuple[dict[str, Any], str, str]]] = owner_and_memo[1]
    keys = frozenset(tensors)
    slots = memo.get(keys)
    if slots is None:
        slots = []
        for key in tensors:
            owner_name, _, name = key.rpartition(".")
            owner = module.get_submodule(owner_name) if owner_name else module
            if name in owner._parameters:
                slots.append((owner._parameters, name, key))
            elif name in owner._buffers:
                slots.append((owner._buffers, name, key))
            else:
                raise ParamsMismatchError(f"{key!r} is neither a parameter nor a buffer of the model's modules")
        memo[keys] = slots
    return slots


def model_cache(model: Model) -> dict[str, Any]:
    """A per-model dict for derived, read-only values (layouts, sweep runners); not part of equality or pickling."""
    cache: dict[str, Any] | None = model.__dict__.get("_cache")
    if cache is None:
        cache = {}
        object.__setattr__(model, "_cache", cache)
    return cache


# --------------------------------------------------------------------------- structure changes


def add_seed(
    model: Model,
    params: Params,
    slot_id: str,
    registry: Registry,
    blueprint: str,
    *,
    algorithm: AlphaAlgorithm = AlphaAlgorithm.ADD,
    generator: torch.Generator | None = None,
    stage: SeedStage = SeedStage.GERMINATED,
    **blueprint_kwargs: Hashable,
) -> tuple[Model, Params]:
    """Germinate ``blueprint`` into the empty slot ``slot_id``; returns a new ``(model, params)``.

    The new seed's parameters live on the device and in the dtype of the
    host's first parameter.
    """
    if SeedStage(stage) in SEEDLESS_STAGES:
        raise IllegalTransitionError(
            f"a new seed cannot start in stage {SeedStage(stage).name} (a stage without a seed); "
            f"allowed: {[s.name for s in SeedStage if s not in SEEDLESS_STAGES]}"
        )
    if model.slot(slot_id) is not None:
        raise IllegalTransitionError(
            f"slot {slot_id!r} already holds a {model.slot(slot_id).blueprint_id!r} seed "  # type: ignore[union-attr]
            f"in stage {model.stage(slot_id).name}; remove it first"
        )
    reference = next(iter(params["host"].values()), None)
    slot, new_params = germinate_slot(
        registry,
        model.host.topology,
        blueprint,
        model.host.slot_channels(slot_id),
        algorithm=algorithm,
        generator=generator,
        device=None if reference is None else reference.device,
        dtype=None if reference is None else reference.dtype,
        **blueprint_kwargs,
    )
    if slot.gated and SeedStage(stage) not in GATED_STAGES:
        # esper-lite gives a GATE seed its gate network when blending starts.
        slot = dataclasses.replace(slot, gated=False)
        new_params = {"seed": new_params["seed"]}
    return model.replace_slot(slot_id, slot=slot, stage=stage), _with_slot_params(params, slot_id, new_params)


def remove_seed(model: Model, params: Params, slot_id: str, *, stage: SeedStage = SeedStage.DORMANT) -> tuple[Model, Params]:
    """Remove the seed at ``slot_id`` (its parameters are dropped); returns a new ``(model, params)``."""
    model.index(slot_id)
    slots = {k: v for k, v in params["slots"].items() if k != slot_id}
    return model.replace_slot(slot_id, slot=None, stage=stage), {**params, "slots": slots}


def set_stages(
    model: Model,
    params: Params,
    stages: Mapping[str, Any],
    *,
    generator: torch.Generator | None = None,
) -> tuple[Model, Params]:
    """Make the model's slots follow per-slot ``SeedState``s (or bare ``SeedStage``s).

    - A slot whose new stage has no seed (DORMANT, PRUNED, EMBARGOED,
      RESETTING) loses its seed and parameters, as esper-lite frees a pruned
      seed.
    - A state's ``alpha_algorithm`` (``set_alpha_target(alpha_algorithm=...)``
      switches it) becomes the slot's algorithm; the seed keeps its weights.
    - A GATE seed has its gate network exactly from BLENDING on (esper-lite
      creates it when blending starts, and when a holding seed is switched to
      GATE): new gate parameters are initialised from ``generator`` (read, not
      advanced; each slot draws from its own position), dropped ones vanish.

    Returns a new ``(model, params)``.

    Raises:
        IllegalTransitionError: a stage with a seed for an empty slot.
    """
    seeds = split_seeds(generator, len(model.host.slot_ids))
    for slot_id, value in stages.items():
        stage = SeedStage(getattr(value, "stage", value))
        if stage in SEEDLESS_STAGES:
            if model.slot(slot_id) is not None:
                model, params = remove_seed(model, params, slot_id, stage=stage)
            else:
                model = model.replace_slot(slot_id, slot=None, stage=stage)
            continue
        slot = model.slot(slot_id)
        if slot is None:
            raise IllegalTransitionError(f"slot {slot_id!r} is empty; it cannot be in stage {stage.name} (add a seed first)")
        algorithm = AlphaAlgorithm(getattr(value, "alpha_algorithm", slot.algorithm))
        gated = algorithm == AlphaAlgorithm.GATE and stage in GATED_STAGES
        if (algorithm, gated) != (slot.algorithm, slot.gated):
            new_slot = dataclasses.replace(slot, algorithm=algorithm, gated=gated)
            groups = {"seed": params["slots"][slot_id]["seed"]}
            if gated:
                old_gate = params["slots"][slot_id].get("gate")
                if old_gate is None:
                    reference = next(iter(groups["seed"].values()), next(iter(params["host"].values()), None))
                    old_gate = init_gate_params(
                        new_slot,
                        torch.Generator().manual_seed(seeds[model.host.slot_ids.index(slot_id)]),
                        device=None if reference is None else reference.device,
                        dtype=None if reference is None else reference.dtype,
                    )
                groups["gate"] = old_gate
            params = _with_slot_params(params, slot_id, groups)
            slot = new_slot
        model = model.replace_slot(slot_id, slot=slot, stage=stage)
    return model, params


def alphas_of(
    model: Model,
    states: Mapping[str, Any],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """The alpha vector ``[n_slots]`` from per-slot states (anything with ``.alpha``); 0 where absent.

    Raises:
        InvalidTypeError: ``states`` is not a mapping ``slot_id -> state``.
        UnknownSlotError: a key names no slot of the model (a typo would
            otherwise silently read alpha 0 for the intended slot).
    """
    if not isinstance(states, Mapping):
        raise InvalidTypeError(f"states must be a mapping slot_id -> state; got {type(states).__name__}")
    unknown = sorted(str(sid) for sid in states if sid not in model.slot_order)
    if unknown:
        raise UnknownSlotError(f"states name slots {unknown} that the model does not have; its slots: {list(model.slot_order)}")
    values = [float(getattr(states[sid], "alpha", 0.0)) if sid in states else 0.0 for sid in model.slot_order]
    return torch.tensor(values, dtype=dtype, device=device)


def _with_slot_params(params: Params, slot_id: str, slot_params: SlotParams) -> Params:
    return {**params, "slots": {**params["slots"], slot_id: slot_params}}


# --------------------------------------------------------------------------- serialisation


def model_to_dict(model: Model) -> dict[str, Any]:
    """The model's static structure as a JSON-compatible dict (see :func:`model_from_dict`).

    The host is stored as ``{"type": <its class name>, **host.to_dict()}``.
    """
    slots: list[dict[str, Any] | None] = []
    for slot in model.slots:
        if slot is None:
            slots.append(None)
            continue
        entry: dict[str, Any] = {
            "topology": slot.topology.name,
            "blueprint": slot.blueprint.name,
            "channels": slot.channels,
            "algorithm": int(slot.algorithm),
            "gated": bool(slot.gated),
            "blueprint_kwargs": [[k, v] for k, v in slot.blueprint_kwargs],
        }
        if isinstance(slot, Candidates):  # a candidate group: every member's blueprint, in candidate order
            entry["candidates"] = [bp.name for bp in slot.members]
            entry["vectorize"] = slot.vectorize
        slots.append(entry)
    spec = model.host.to_dict()
    if "type" in spec:
        raise HostProtocolError(
            f"{type(model.host).__name__}.to_dict() has a 'type' entry; checkpoints keep the host's class name "
            "there, so a host's constructor arguments cannot use that name"
        )
    return {
        "host": {"type": type(model.host).__name__, **spec},
        "slot_order": list(model.slot_order),
        "slots": slots,
        "stages": [int(s) for s in model.stages],
    }


def _read_vectorize(value: Any) -> bool | None:
    """A saved ``Candidates.vectorize``: ``True``, ``False`` or ``None`` (absent: ``None``, the automatic choice)."""
    if value is None or isinstance(value, bool):
        return value
    raise CheckpointError(f"a candidate group's 'vectorize' must be true, false or null; got {value!r}")


def model_from_dict(data: Mapping[str, Any], registry: Registry) -> Model:
    """Rebuild a :class:`Model` written by :func:`model_to_dict`; blueprints come from ``registry``.

    The host class is a built-in one or one the registry holds
    (:meth:`~esper_func.Registry.with_host`), rebuilt with its ``from_dict``.

    Raises :class:`CheckpointError` (or the registry's ``UnknownBlueprintError``
    and ``UnknownHostError``) for a malformed description, naming the
    offending field.
    """
    try:
        host_fields = dict(data["host"])
        host_type = registry.host_type(host_fields.pop("type"))
        host = host_type.from_dict(host_fields)
        slots: list[Slot | None] = []
        for entry in data["slots"]:
            if entry is None:
                slots.append(None)
                continue
            blueprint = registry.get(entry["topology"], entry["blueprint"])
            if "candidates" in entry:
                members = tuple(registry.get(entry["topology"], name) for name in entry["candidates"])
                slots.append(Candidates(blueprint, int(entry["channels"]), AlphaAlgorithm(entry["algorithm"]), (), False, members,
                                        _read_vectorize(entry.get("vectorize"))))
                continue
            kwargs = tuple((k, v) for k, v in entry["blueprint_kwargs"])
            # "gated" is absent from structures written before gates followed the stage.
            gated = entry.get("gated")
            slots.append(
                Slot(blueprint, int(entry["channels"]), AlphaAlgorithm(entry["algorithm"]), kwargs,
                     None if gated is None else bool(gated))
            )
        return Model(host, tuple(data["slot_order"]), tuple(slots), tuple(SeedStage(s) for s in data["stages"]))
    except (UnknownBlueprintError, UnknownHostError):
        raise
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"malformed model description: {exc!r}; expected the layout of model_to_dict()") from exc
