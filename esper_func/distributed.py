"""Data parallelism with ``torch.distributed``, safe by construction.

``torch.func`` transforms cannot run through a ``DistributedDataParallel``
wrapper, and they do not need to: the training step computes functional
gradients, and :class:`AllReduceReducer` averages them across ranks as
flattened buckets of the gradient pytree. Every number a lifecycle decision
reads (validation loss and accuracy, the counterfactual sweep's sums,
gradient norms, BatchNorm statistics) is all-reduced *before* it is read, so
every rank computes the same decision from the same numbers: there is no
rank-0 broadcast and no ordering hazard, and counterfactuals cannot disturb
a replica because nothing is mutated.

Start with ``torchrun``; :func:`from_environment` picks the process group up
from the environment (gloo for CPU tensors, NCCL for runs on the GPU). At start-up
:meth:`World.check_consistent` compares a digest of every rank's static
structure (model, registry) and fails fast with a message instead of
hanging in a collective whose shapes differ.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.utils._pytree as torch_pytree
from torch import Tensor

from esper_func.blueprints import Registry
from esper_func.errors import EsperFuncError, InvalidArgumentError
from esper_func.model import Model, model_to_dict

__all__ = [
    "AllReduceReducer",
    "RankLog",
    "StructureMismatchError",
    "World",
    "from_environment",
    "params_digest",
    "structure_digest",
]

#: Bucket size for all-reduces of flattened tensors (elements).
BUCKET_ELEMENTS = 8 * 2**20


class StructureMismatchError(EsperFuncError, RuntimeError):
    """Ranks built different models or registries; training would deadlock or diverge."""


def structure_digest(model: Model, registry: Registry, extra: Mapping[str, Any] | None = None) -> str:
    """SHA-256 of the static structure: the model, the registry's blueprints and ``extra``."""
    blueprints = [
        [key, bp.param_estimate, f"{bp.build.__module__}.{bp.build.__qualname__}", bp.per_sample]
        for key, bp in sorted(registry.items())
    ]
    body = {"model": model_to_dict(model), "registry": blueprints, "extra": dict(extra or {})}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _exact_bytes(t: Tensor) -> bytes:
    # clone() gives a storage holding exactly this tensor's elements, in order.
    return bytes(t.detach().cpu().clone(memory_format=torch.contiguous_format).untyped_storage())


def params_digest(params: Any) -> str:
    """SHA-256 of every parameter's bytes, in sorted key-path order (dtype and shape included)."""
    leaves, _ = torch_pytree.tree_flatten_with_path(params)
    h = hashlib.sha256()
    for path, leaf in sorted(leaves, key=lambda item: torch_pytree.keystr(item[0])):
        h.update(torch_pytree.keystr(path).encode())
        h.update(f"{leaf.dtype}{tuple(leaf.shape)}".encode())
        h.update(_exact_bytes(leaf))
    return h.hexdigest()


class AllReduceReducer:
    """Sums or averages every tensor of a pytree across ranks, in flattened buckets.

    Leaves are grouped by dtype and device, flattened into buckets of at most
    :data:`BUCKET_ELEMENTS` elements, all-reduced with one collective per
    bucket and split back. Pure: returns new tensors. Integer tensors are
    summed exactly; their mean uses floor division.
    """

    def __init__(self, world: World) -> None:
        self.world = world

    def sum(self, tree: Any) -> Any:
        return self._reduce(tree, average=False)

    def mean(self, tree: Any) -> Any:
        return self._reduce(tree, average=True)

    def _reduce(self, tree: Any, *, average: bool) -> Any:
        leaves, spec = torch_pytree.tree_flatten(tree)
        out: list[Any] = list(leaves)
        groups: dict[tuple[torch.dtype, torch.device], list[int]] = {}
        for i, leaf in enumerate(leaves):
            if isinstance(leaf, Tensor):
                groups.setdefault((leaf.dtype, leaf.device), []).append(i)
        for (dtype, _), indices in groups.items():
            for bucket in _buckets(indices, leaves):
                flat = torch.cat([leaves[i].detach().reshape(-1) for i in bucket])
                dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.world.group)
                if average:
                    flat = flat / self.world.size if dtype.is_floating_point else flat // self.world.size
                offset = 0
                for i in bucket:
                    n = leaves[i].numel()
                    out[i] = flat[offset : offset + n].reshape(leaves[i].shape)
                    offset += n
        return torch_pytree.tree_unflatten(out, spec)


def _buckets(indices: list[int], leaves: list[Any]) -> list[list[int]]:
    buckets: list[list[int]] = [[]]
    size = 0
    for i in indices:
        n = leaves[i].numel()
        if buckets[-1] and size + n > BUCKET_ELEMENTS:
            buckets.append([])
            size = 0
        buckets[-1].append(i)
        size += n
    return [b for b in buckets if b]


@dataclasses.dataclass
class World:
    """This process's place in the run: ``rank`` of ``size`` (``size == 1``: no collectives)."""

    rank: int = 0
    size: int = 1
    group: Any = None
    launched: bool = False
    owns_group: bool = False
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    def reducer(self) -> Any:
        """The reducer for :func:`esper_func.train.train_step` and :func:`esper_func.fit.run_epoch`."""
        from esper_func.train import LocalReducer

        return AllReduceReducer(self) if self.launched else LocalReducer()

    def check_consistent(self, model: Model, registry: Registry, extra: Mapping[str, Any] | None = None) -> str:
        """All ranks compare :func:`structure_digest`; raises on every rank if any differ.

        One ``all_gather`` of a fixed-size digest: it cannot hang on shape
        mismatches, which is the point.
        """
        digest = structure_digest(model, registry, extra)
        if not self.launched:
            return digest
        mine = torch.frombuffer(bytearray(bytes.fromhex(digest)), dtype=torch.uint8).to(self.device)
        gathered = [torch.empty(32, dtype=torch.uint8, device=self.device) for _ in range(self.size)]
        dist.all_gather(gathered, mine, group=self.group)
        digests = [bytes(g.cpu().tolist()).hex() for g in gathered]
        if len(set(digests)) > 1:
            lines = ", ".join(f"rank {r}: {d[:12]}" for r, d in enumerate(digests))
            raise StructureMismatchError(
                f"ranks built different static structures ({lines}); every rank must build the same host, "
                "slots, seeds, stages and blueprint registry from the same configuration"
            )
        return digest

    def finish(self) -> None:
        """Tear down the process group if this world created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def from_environment(*, backend: str = "gloo", timeout_s: float = 300.0) -> World:
    """The :class:`World` ``torchrun`` describes in the environment (or a single process).

    Initialises the default process group unless one exists. ``backend`` is
    ``"gloo"`` (the default: every tensor the collectives see lives on the
    CPU, as in the command line's runs) or ``"nccl"`` for runs whose
    parameters live on the GPU; then ``World.device`` is ``cuda:LOCAL_RANK``
    and the caller must keep params, buffers and batches there.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return World()
    if backend not in ("gloo", "nccl"):
        raise InvalidArgumentError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
        owns = True
    return World(rank=rank, size=size, group=None, launched=True, owns_group=owns, device=device)


class RankLog:
    """Per-rank audit log ``DIR/rank{r}.jsonl``: each epoch's params digest and lifecycle events.

    Written only when the run is launched by ``torchrun``; ranks of a
    consistent run write identical lines.
    """

    def __init__(self, directory: Path, rank: int, *, enabled: bool | None = None) -> None:
        self.path = Path(directory) / f"rank{rank}.jsonl"
        self.enabled = ("RANK" in os.environ) if enabled is None else enabled

    def write(self, record: Mapping[str, Any], state: Any) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = {"epoch": record["epoch"], "params_digest": params_digest(state.params), "events": record["events"]}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, sort_keys=True) + "\n")
