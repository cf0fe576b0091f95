"""A candidate group: several seeds incubated in one slot at once.

:class:`Candidates` is a :class:`~esper_func.slot.Slot` (so a
:class:`~esper_func.model.Model` holds it in a slot position like any seed)
whose parameters are the stacked parameters of ``K`` candidate seeds, one
stack per distinct blueprint::

    params["slots"][slot_id] == {"conv_light": {name: Tensor[n_conv_light, *shape]},
                                 "norm":       {name: Tensor[n_norm, *shape]}}

A group lives in GERMINATED and TRAINING only (the incubator), never blended. Each candidate reads the
*detached* host features and the slot's forward value is the host's,
``h + sum_k (s_k - s_k.detach())``, which equals ``h`` exactly while every
``s_k`` receives exactly the upstream gradient. So the host computes what it
would compute with the slot empty, and each candidate trains as it would
alone. The candidates of one blueprint run as one ``torch.func.vmap`` of the
seed over its stacked parameters (the model-ensembling pattern), all reading
the same host features.

The operations on groups (adding, reading one candidate back, choosing the
winner) live in :mod:`esper_func.tournament`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from esper_func._skeleton import Skeleton, on_meta
from esper_func.blend import blend
from esper_func.blueprints import Blueprint
from esper_func.errors import IllegalTransitionError, InvalidArgumentError, InvalidTypeError
from esper_func.lifecycle.alpha import AlphaAlgorithm
from esper_func.lifecycle.stages import SeedStage
from esper_func.slot import SeedFeatures, Slot

__all__ = ["CANDIDATE_STAGE", "CANDIDATE_STAGES", "MICRO_BATCH_BYTES", "Candidates", "CandidatesModule"]


def _stacked_meta(seed: nn.Module, n: int) -> nn.Module:
    """A copy of the meta seed module whose parameters have a leading stack dimension ``n``."""
    holder = copy.deepcopy(seed)
    for name, param in list(holder.named_parameters()):
        owner_name, _, attr = name.rpartition(".")
        owner = holder.get_submodule(owner_name) if owner_name else holder
        owner._parameters[attr] = nn.Parameter(torch.empty((n, *param.shape), device="meta"), requires_grad=param.requires_grad)
    return holder


class _Incubator(torch.autograd.Function):
    """``h`` forward; the candidates run in the backward pass, on the gradient ``h`` receives.

    A candidate's output never reaches the forward value (it is
    ``h + (s_k - s_k.detach())``); all the step needs from it is the
    gradient of its parameters under the upstream gradient of ``h``. So the
    forward only keeps the detached seed input, and the backward hands ``h``
    its gradient unchanged and computes each candidate's parameter gradient,
    one candidate (or one ``vmap`` of a blueprint's candidates) at a time,
    so only one candidate's activations are alive at once
    (:meth:`CandidatesModule.parameter_grads`). The candidates run again
    under the forward's autocast state, and with ``create_graph=True`` the
    gradients stay differentiable (second-order gradients are the plain
    expression's).
    """

    @staticmethod
    def forward(ctx: Any, h: Tensor, seed_input: Tensor, module: CandidatesModule, *params: Tensor) -> Tensor:
        ctx.module = module
        ctx.thread = threading.get_ident()
        ctx.needs = tuple(p.requires_grad for p in params)
        device = seed_input.device.type
        ctx.autocast = (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device),
                        torch.is_autocast_cache_enabled())
        ctx.save_for_backward(seed_input, *params)
        return h.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        seed_input, *params = ctx.saved_tensors
        module = ctx.module
        if threading.get_ident() != ctx.thread:
            # functional_call swaps tensors into the forward thread's modules, which that thread may be using.
            module = copy.deepcopy(module)
        device, enabled, dtype, cache = ctx.autocast
        unchanged = torch.is_autocast_enabled(device) == enabled and (not enabled or torch.get_autocast_dtype(device) == dtype)
        autocast = contextlib.nullcontext() if unchanged else torch.autocast(device, dtype=dtype, enabled=enabled,
                                                                               cache_enabled=cache)
        with autocast:
            grads = module.parameter_grads(seed_input, params, ctx.needs, grad)
        return (grad, None, None, *grads)


#: On CPU (unless ``vectorize=False``), candidates of per-sample blueprints
#: are incubated over micro-batches whose seed input is at most this many
#: bytes (stacked over the candidates of a ``vmap``).
#: Whole-batch activations (16 MiB for 32 channels at 32x32, batch 128) are
#: handed back to the OS by the C allocator after every candidate and
#: page-faulted in again by the next; micro-batches of this size are reused in
#: place (measured on 2 cores: a conv_light candidate 38 ms -> 22 ms).
MICRO_BATCH_BYTES = 4 * 2**20


class CandidatesModule(nn.Module):
    """The candidate group's forward, for ``functional_call`` inside the model module.

    Parameter names are ``stacks.<blueprint>.<name>`` with shapes
    ``[n, *shape]``. :meth:`features` ties the host features to every
    candidate as ``h + sum_k (s_k - s_k.detach())`` would (value ``h``;
    every ``s_k`` receives the upstream gradient), which :meth:`combine`
    returns; the candidates themselves run in the backward pass
    (:meth:`parameter_grads`). The forward value is the host's at every
    alpha: a group has no blend to counterfactually switch on (score its
    candidates with :meth:`blended`).

    ``groups`` holds, per blueprint, ``(name, per-candidate seed skeleton,
    count, per_sample)``; ``vectorize`` is :attr:`Candidates.vectorize`.
    The seed skeletons are not submodules and stay in eval mode: a
    blueprint whose forward reads ``self.training`` (dropout) runs as in
    eval mode while it is a candidate.
    """

    def __init__(
        self, groups: tuple[tuple[str, nn.Module, int, bool], ...], algorithm: AlphaAlgorithm, vectorize: bool | None = None
    ) -> None:
        super().__init__()
        self.stacks = nn.ModuleDict({key: _stacked_meta(seed, n) for key, seed, n, _ in groups})
        # Not registered as submodules: the seeds are the per-candidate skeletons run under vmap.
        self.seeds: tuple[nn.Module, ...] = tuple(seed for _, seed, _, _ in groups)
        self.keys: tuple[str, ...] = tuple(key for key, _, _, _ in groups)
        self.counts: tuple[int, ...] = tuple(n for _, _, n, _ in groups)
        self.per_sample: tuple[bool, ...] = tuple(bool(flag) for _, _, _, flag in groups)
        self.names: tuple[tuple[str, ...], ...] = tuple(tuple(n for n, _ in seed.named_parameters()) for seed in self.seeds)
        self.algorithm = int(AlphaAlgorithm(algorithm))
        self.vectorize = vectorize if vectorize is None else bool(vectorize)

    def _stacked(self, group: int) -> dict[str, Tensor]:
        holder = self.stacks[self.keys[group]]
        out = {}
        for name in self.names[group]:
            owner_name, _, attr = name.rpartition(".")
            owner = holder.get_submodule(owner_name) if owner_name else holder
            out[name] = getattr(owner, attr)  # the tensor bound by functional_call (not necessarily a Parameter)
        return out

    def _vectorized(self, x: Tensor) -> bool:
        """Whether a blueprint's candidates run as one ``vmap`` on ``x``'s device.

        Never under autocast: ``vmap``'s batched kernels skip its casts, so a
        ``vmap`` would see half-precision features with float32 weights.
        """
        if torch.is_autocast_enabled(x.device.type):
            return False
        return self.vectorize if self.vectorize is not None else x.device.type != "cpu"

    def _call(self, group: int, params: dict[str, Tensor], x: Tensor, *, vectorized: bool) -> Tensor:
        """``group``'s seed on ``x`` with ``params``: one candidate's, or (``vectorized``) the stack's under ``vmap``."""
        seed = self.seeds[group]

        def run(p: dict[str, Tensor]) -> Tensor:
            return functional_call(seed, p, (x,), strict=True, tie_weights=False)

        return vmap(run)(params) if vectorized else run(params)

    def group_outputs(self, x: Tensor, *, stack: bool = True) -> list[Tensor]:
        """Per blueprint group, the candidates' outputs ``[n, *x.shape]`` on ``x`` (as given).

        ``stack=False`` when candidates run one at a time: one output per
        candidate instead (no stacking copy).
        """
        vectorized = self._vectorized(x)
        outputs = []
        for group, seed in enumerate(self.seeds):
            stacked = self._stacked(group)
            if not stacked:  # a tensor-free blueprint (noop): every candidate computes the same thing
                out = seed(x)
                outputs.append(out.unsqueeze(0).expand(self.counts[group], *out.shape))
            elif vectorized:
                outputs.append(self._call(group, stacked, x, vectorized=True))
            else:  # one candidate at a time: the very kernels a lone seed runs
                rows = [self._call(group, {n: t[j] for n, t in stacked.items()}, x, vectorized=False)
                        for j in range(self.counts[group])]
                if stack:
                    outputs.append(torch.stack(rows))
                else:
                    outputs.extend(rows)
        return outputs

    def _flat_params(self) -> list[Tensor]:
        """Every stacked parameter, group by group in :attr:`names` order (the incubator's inputs)."""
        return [t for group in range(len(self.seeds)) for t in self._stacked(group).values()]

    def _micro_batches(
        self, group: int, seed_input: Tensor, grad: Tensor, *, vectorized: bool
    ) -> list[tuple[Tensor, Tensor]]:
        """``(seed input, upstream gradient)`` pieces ``group``'s candidates run on in the backward pass.

        Micro-batches on CPU only, for per-sample blueprints, and never with
        ``vectorize=False`` (the bit-exact mode); a ``vmap`` over ``n``
        candidates gets ``n`` times smaller ones (its activations are
        stacked).
        """
        whole = [(seed_input, grad)]
        if self.vectorize is False or seed_input.device.type != "cpu" or not self.per_sample[group] or seed_input.ndim == 0:
            return whole
        per_sample = seed_input[0].numel() * seed_input.element_size() * (self.counts[group] if vectorized else 1)
        size = max(1, MICRO_BATCH_BYTES // max(1, per_sample))
        if size >= seed_input.shape[0]:
            return whole
        return list(zip(seed_input.split(size), grad.split(size), strict=True))

    def _vjp(
        self, group: int, tensors: list[Tensor], wanted: tuple[bool, ...], pieces: list[tuple[Tensor, Tensor]],
        *, vectorized: bool, create_graph: bool,
    ) -> list[Tensor]:
        """Gradients of the ``wanted`` ``tensors`` (``group``'s parameters, in :attr:`names` order) summed over ``pieces``.

        With ``create_graph`` the gradients are taken through ``tensors``
        themselves, so they stay differentiable; otherwise through detached
        copies.
        """
        with torch.enable_grad():
            leaves = tensors if create_graph else [t.detach().requires_grad_(w) for t, w in zip(tensors, wanted, strict=True)]
            trained = [t for t, w in zip(leaves, wanted, strict=True) if w]
            bound = dict(zip(self.names[group], leaves, strict=True))
            total: list[Tensor] = []
            for x, cotangent in pieces:
                out = self._call(group, bound, x, vectorized=vectorized)
                part = torch.autograd.grad(out, trained, cotangent.to(out.dtype).expand(out.shape), allow_unused=True,
                                           materialize_grads=True, create_graph=create_graph)
                total = list(part) if not total else [a + b for a, b in zip(total, part, strict=True)]
            return total

    def parameter_grads(
        self, seed_input: Tensor, params: list[Tensor], needs: tuple[bool, ...], grad: Tensor
    ) -> list[Tensor | None]:
        """The gradient of every stacked parameter when each candidate's output receives ``grad``.

        ``params`` and ``needs`` are in :meth:`_flat_params` order; a
        parameter that needs no gradient gets ``None``. Candidates (or a
        blueprint's whole stack, vectorized) run one after another, so only
        one candidate's activations are alive at a time. Run one at a time
        on the whole batch, each candidate's gradient is bit for bit the one
        a lone seed receives; over micro-batches (:meth:`_micro_batches`) it
        is their sum, equal up to float rounding.
        """
        vectorized = self._vectorized(seed_input)
        create_graph = torch.is_grad_enabled()  # a backward runs in grad mode only under create_graph=True
        grads: list[Tensor | None] = []
        offset = 0
        for group, names in enumerate(self.names):
            stacked, wanted = params[offset:offset + len(names)], needs[offset:offset + len(names)]
            offset += len(names)
            if not any(wanted):
                grads.extend(None for _ in names)
                continue
            pieces = self._micro_batches(group, seed_input, grad, vectorized=vectorized)
            mode = {"vectorized": vectorized, "create_graph": create_graph}
            if vectorized:
                per_param = self._vjp(group, stacked, wanted, pieces, **mode)
            else:
                rows = [self._vjp(group, [t[j] for t in stacked], wanted, pieces, **mode) for j in range(self.counts[group])]
                per_param = [torch.stack(column) for column in zip(*rows, strict=True)]
            trained = iter(per_param)
            grads.extend(next(trained) if w else None for w in wanted)
        return grads

    def features(self, x: Tensor, stage: int) -> SeedFeatures:
        """The detached host features for the candidates, and ``x`` tied to them by the incubator.

        ``seed_out`` is the incubated host features: ``x``'s values, whose
        gradient flows to ``x`` unchanged; in the backward pass each
        candidate's parameters receive the gradient they would receive if
        that candidate's output had been added as ``s - s.detach()``.
        """
        seed_input = x.detach()
        if not seed_input.is_contiguous():
            # As a single seed reads a channels_last host (and see Slot.features: channels_last
            # would halve a conv seed's cost on CPU, but GroupNorm's backward crashes on it).
            seed_input = seed_input.contiguous()
        params = self._flat_params()
        if not torch.is_grad_enabled() or not any(p.requires_grad for p in params):
            return SeedFeatures(seed_input, x, None)  # nothing to train: no candidate can change the value
        if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
            # The plain expression: the compiler fuses it (Dynamo would instantiate the Function),
            # and torch.func transforms differentiate it (the Function is autograd-only).
            h = x
            for out in self.group_outputs(seed_input, stack=False):
                if out.requires_grad:
                    out = out.to(x.dtype)
                    h = h + (out - out.detach() if out.shape == x.shape else (out - out.detach()).sum(0))
            return SeedFeatures(seed_input, h, None)
        return SeedFeatures(seed_input, _Incubator.apply(x, seed_input, self, *params), None)

    def combine(self, x: Tensor, features: SeedFeatures, alpha: Tensor, stage: int) -> Tensor:
        """The host's features; each candidate gets their upstream gradient (see :meth:`features`)."""
        return features.seed_out

    def forward(self, x: Tensor, alpha: Tensor, stage: int) -> Tensor:
        """The incubator's output (the host's features, with the candidates on the gradient path)."""
        return self.combine(x, self.features(x, stage), alpha, stage)

    def blended(self, x: Tensor, alpha: Tensor, order: tuple[int, ...]) -> Tensor:
        """Every candidate blended into ``x`` at ``alpha``, ``[K, *x.shape]`` in candidate order.

        What each candidate would contribute as a seed of the slot's
        algorithm (a GATE seed blends as ADD before it has its gate network).
        ``order[i]`` is candidate ``i``'s row in the concatenated group outputs.
        """
        seed_input = x.contiguous()
        outs = torch.cat(self.group_outputs(seed_input))
        outs = outs[list(order)] if list(order) != list(range(len(order))) else outs
        algorithm = self.algorithm if self.algorithm != AlphaAlgorithm.GATE else int(AlphaAlgorithm.ADD)
        return blend(algorithm, x.unsqueeze(0), outs, alpha, seed_input=seed_input.unsqueeze(0))


@dataclasses.dataclass(frozen=True)
class Candidates(Slot):
    """Static description of a slot incubating several candidate seeds (hashable, picklable, no tensors).

    A :class:`~esper_func.slot.Slot` whose ``blueprint`` is the first
    candidate's; :attr:`members` lists every candidate's blueprint in
    candidate order (repeats allowed). All candidates share the slot's
    ``channels`` and ``algorithm`` (the one each would blend with once
    chosen); they take no blueprint keyword arguments and have no gate
    network while incubating. Build one with
    :func:`esper_func.tournament.add_candidates`.

    Attributes:
        members: per candidate, its blueprint.
        vectorize: how the candidates run in the backward pass. ``False``:
            one at a time on the whole batch, the kernels a lone seed runs,
            so each candidate's numbers equal its solo run bit for bit.
            ``True``: each blueprint's candidates as one ``vmap`` over their
            stacked parameters (the model-ensembling pattern; ``vmap``'s
            batched kernels may round differently). ``None`` (the default):
            the faster for the device, ``vmap`` on accelerators and one at a
            time on CPU. Under ``torch.autocast`` they always run one at a
            time (``vmap`` does not apply autocast's casts). On CPU, except
            with ``False``, candidates of
            :attr:`~esper_func.Blueprint.per_sample` blueprints run over
            micro-batches of at most :data:`MICRO_BATCH_BYTES` of (stacked)
            seed input; their gradients then equal the solo run's up to the
            rounding of the sum over micro-batches.
    """

    members: tuple[Blueprint, ...] = ()
    vectorize: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.members, tuple) or not self.members:
            raise InvalidArgumentError(f"a candidate group needs at least one member blueprint; got {self.members!r}")
        for bp in self.members:
            if not isinstance(bp, Blueprint):
                raise InvalidTypeError(f"Candidates.members must be Blueprints; got {type(bp).__name__}")
            if bp.topology != self.members[0].topology:
                raise InvalidArgumentError(
                    f"candidates of one slot must share a topology; got {self.members[0].topology} and {bp.topology}"
                )
        if self.vectorize is not None and not isinstance(self.vectorize, bool):
            raise InvalidTypeError(f"Candidates.vectorize must be True, False or None; got {self.vectorize!r}")
        if self.blueprint != self.members[0]:
            raise InvalidArgumentError("Candidates.blueprint must be the first member's blueprint")
        if self.blueprint_kwargs:
            raise InvalidArgumentError("candidates take no blueprint keyword arguments")
        object.__setattr__(self, "algorithm", AlphaAlgorithm(self.algorithm))
        if self.gated:
            raise InvalidArgumentError("candidates have no gate network while incubating; gated must be False")
        object.__setattr__(self, "gated", False)
        member_slots = tuple(Slot(bp, self.channels, self.algorithm, (), False) for bp in self.members)
        keys: list[str] = []
        for bp in self.members:
            if bp.name not in keys:
                keys.append(bp.name)
        counts = {k: sum(1 for bp in self.members if bp.name == k) for k in keys}
        # candidate i -> (its group, its row within the group's stack)
        seen: dict[str, int] = {}
        position = []
        for bp in self.members:
            position.append((keys.index(bp.name), seen.get(bp.name, 0)))
            seen[bp.name] = seen.get(bp.name, 0) + 1
        offsets = [sum(counts[k] for k in keys[:g]) for g in range(len(keys))]
        order = tuple(offsets[g] + row for g, row in position)
        prototypes = {bp.name: s.seed_skeleton for bp, s in zip(self.members, member_slots, strict=True)}
        per_sample = {bp.name: bp.per_sample for bp in self.members}
        module = on_meta(
            lambda: CandidatesModule(
                tuple((k, copy.deepcopy(prototypes[k]), counts[k], per_sample[k]) for k in keys),
                self.algorithm,
                self.vectorize,
            )
        )
        shapes = {
            k: MappingProxyType({name: tuple(p.shape) for name, p in module.stacks[k].named_parameters()})
            for k in keys
        }
        object.__setattr__(self, "_skeleton", Skeleton(module))
        object.__setattr__(self, "_param_shapes", MappingProxyType(shapes))
        object.__setattr__(
            self, "_flat_names", tuple((k, name, f"stacks.{k}.{name}") for k, names in shapes.items() for name in names)
        )
        object.__setattr__(self, "_members", member_slots)
        object.__setattr__(self, "_position", tuple(position))
        object.__setattr__(self, "_order", order)
        object.__setattr__(self, "_keys", tuple(keys))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Candidates, (self.blueprint, self.channels, self.algorithm, (), False, self.members, self.vectorize))

    @property
    def k(self) -> int:
        """The number of candidates."""
        return len(self.members)

    @property
    def blueprint_id(self) -> str:
        """``"candidates(conv_light,conv_light,norm)"``: the members' names in candidate order."""
        return "candidates(" + ",".join(bp.name for bp in self.members) + ")"

    @property
    def member_slots(self) -> tuple[Slot, ...]:
        """Per candidate, the plain :class:`Slot` it becomes once chosen (same channels and algorithm, no gate yet)."""
        return self._members  # type: ignore[attr-defined]

    @property
    def groups(self) -> tuple[str, ...]:
        """The parameter groups (distinct blueprint names, in order of first appearance)."""
        return self._keys  # type: ignore[attr-defined]

    def position(self, index: int) -> tuple[str, int]:
        """``(group, row)``: where candidate ``index``'s parameters sit in the stacks."""
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < self.k:
            raise InvalidArgumentError(f"candidate index must be an int in [0, {self.k}); got {index!r}")
        group, row = self._position[index]  # type: ignore[attr-defined]
        return self._keys[group], row  # type: ignore[attr-defined]

    @property
    def order(self) -> tuple[int, ...]:
        """Per candidate, its row in the concatenation of the group stacks (group order)."""
        return self._order  # type: ignore[attr-defined]

    @property
    def seed_skeleton(self) -> nn.Module:
        """Not defined for a group: a group has no single seed module."""
        raise IllegalTransitionError("a candidate group has no single seed module; use member_slots[i].seed_skeleton")

    def unstack(self, params: Mapping[str, Mapping[str, Tensor]], index: int) -> dict[str, Tensor]:
        """Candidate ``index``'s ``{name: tensor}`` (views into the stacks; clone before mutating)."""
        group, row = self.position(index)
        return {name: t[row] for name, t in params[group].items()}


#: Stage :func:`esper_func.add_candidates` puts a candidate group in (the incubator).
CANDIDATE_STAGE = SeedStage.TRAINING

#: Stages a candidate group can be in: germinated (identity, no update, as a
#: single seed) and incubating. A group never blends: choose one first.
CANDIDATE_STAGES = frozenset({SeedStage.GERMINATED, SeedStage.TRAINING})
