"""Explicit, non-consuming randomness; torch's global RNG is never read or written.

Public functions take a ``torch.Generator`` (or ``None``) and *read* it: its
state is copied, never advanced, so calling twice with the same generator
gives the same result (the JAX key discipline) and the caller's generator is
an unchanged input.

Nothing here touches torch's process-global generators, not even to save and
restore them: ``torch.random.fork_rng`` + ``manual_seed`` is a read-modify-
restore of shared state, so two threads doing it at once see each other's
seeds (and a third thread's draws land in between). Instead:

- :func:`run_seeded` runs a block (building a module, say) under a
  thread-local dispatch mode that hands *every* random operator an explicit
  generator: a ``uniform_`` or ``normal_`` inside ``nn.init``, a
  ``torch.randn`` in a blueprint's ``__init__``, a ``randperm``. The block's
  own code is unchanged, so it draws exactly the numbers it would draw from a
  global RNG seeded with the same seed (a fresh CPU ``torch.Generator`` and
  the default CPU generator, seeded alike, give the same stream): torch's
  default initialisers and every custom initialiser keep their distributions
  and order, and esper-lite's weights under ``torch.manual_seed(k)`` are
  reproduced by ``run_seeded(build, k)``.
- Forward-pass randomness (dropout) takes its generator as an argument; see
  :func:`esper_func.apply`.

Constructing modules on the ``meta`` device consumes no randomness at all:
meta kernels of ``uniform_``/``normal_``/``randn``... compute shapes only and
never look at a generator.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from esper_func.errors import BlueprintError

__all__ = [
    "DEFAULT_SEED",
    "copy_generator",
    "derive_seed",
    "drawing_from",
    "generator_from_seed",
    "run_seeded",
    "split_seeds",
]

T = TypeVar("T")

#: The seed used when a function is given ``generator=None``.
DEFAULT_SEED = 0

_SEED_BOUND = 2**62
_SEEDED = torch.Tag.nondeterministic_seeded


def copy_generator(generator: torch.Generator | None) -> torch.Generator:
    """A new CPU generator in the state of ``generator`` (``None``: seeded with the default)."""
    fork = torch.Generator()
    if generator is None:
        fork.manual_seed(DEFAULT_SEED)
    else:
        fork.set_state(generator.get_state())
    return fork


def split_seeds(generator: torch.Generator | None, n: int) -> list[int]:
    """``n`` integer seeds drawn from a *copy* of ``generator`` (``None``: a fixed default)."""
    fork = copy_generator(generator)
    return [int(v) for v in torch.randint(0, _SEED_BOUND, (n,), generator=fork).tolist()]


def derive_seed(generator: torch.Generator | None) -> int:
    """A seed determined by ``generator``'s state (``None``: the default seed's), without drawing from it.

    A hash of the state bytes: no random operator runs, so this gives the
    same plain integer inside ``torch.func.vmap`` (whatever its
    ``randomness`` flag), ``grad`` or any other transform, and works for a
    generator of any device. The generator is only read.
    """
    state = copy_generator(None).get_state() if generator is None else generator.get_state()
    # tolist(), not numpy(): numpy() is refused inside torch.func transforms.
    digest = hashlib.blake2b(bytes(state.tolist()), digest_size=8, person=b"esper_func").digest()
    return int.from_bytes(digest, "little") % _SEED_BOUND


def generator_from_seed(seed: int, device: torch.device | str | None = None) -> torch.Generator:
    """A new generator for ``device`` (default CPU) seeded with ``seed``; no global state is involved."""
    generator = torch.Generator() if device is None else torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def _generator_argument(op: torch._ops.OpOverload) -> tuple[int, bool] | None:
    """``(position, kwarg_only)`` of ``op``'s ``generator`` argument, or ``None``."""
    for index, argument in enumerate(op._schema.arguments):
        if argument.name == "generator":
            return index, argument.kwarg_only
    return None


def _device_of(args: Sequence[Any], kwargs: Mapping[str, Any]) -> torch.device:
    for value in args:
        if isinstance(value, torch.Tensor):
            return value.device
    device = kwargs.get("device")
    return torch.device("cpu") if device is None else torch.device(device)


class _ExplicitGenerators(TorchDispatchMode):
    """Gives every random operator that was left to the default generator an explicit one.

    A dispatch mode is per thread, so other threads are unaffected. CPU (and
    ``meta``, whose kernels ignore it) draws come from ``generator``; a draw on
    another device gets a generator for that device, seeded from ``generator``
    the first time that device is seen. Operators that draw randomness but
    take no generator (``native_dropout``, fused attention with dropout, RNNs
    with dropout) are refused: they could only use the global RNG.
    """

    def __init__(self, generator: torch.Generator) -> None:
        super().__init__()
        self._cpu = generator
        self._others: dict[torch.device, torch.Generator] = {}

    def _generator_for(self, device: torch.device) -> torch.Generator:
        if device.type in ("cpu", "meta"):
            return self._cpu
        generator = self._others.get(device)
        if generator is None:
            seed = int(torch.randint(0, _SEED_BOUND, (1,), generator=self._cpu))
            generator = self._others[device] = generator_from_seed(seed, device)
        return generator

    def __torch_dispatch__(
        self,
        func: torch._ops.OpOverload,
        types: Sequence[type],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = dict(kwargs or {})
        if _SEEDED not in func.tags:
            return func(*args, **kwargs)
        where = _generator_argument(func)
        if where is None:
            # e.g. rand.default, whose sibling overload rand.generator takes one.
            if not any(_generator_argument(getattr(func.overloadpacket, name)) for name in func.overloadpacket.overloads()):
                raise BlueprintError(
                    f"{func} draws random numbers from torch's global RNG and takes no generator, so it cannot "
                    "run while esper_func initialises a module (initialisation must not touch global state); "
                    "draw with an operator that takes a generator (torch.rand, bernoulli_, uniform_, ...)"
                )
            generator = self._generator_for(_device_of(args, kwargs))
            return func.overloadpacket(*args, generator=generator, **kwargs)
        index, kwarg_only = where
        if kwarg_only or len(args) <= index:
            if kwargs.get("generator") is None:
                kwargs["generator"] = self._generator_for(_device_of(args, kwargs))
        elif args[index] is None:
            args = (*args[:index], self._generator_for(_device_of(args, kwargs)), *args[index + 1 :])
        return func(*args, **kwargs)


@contextlib.contextmanager
def drawing_from(generator: torch.Generator) -> Iterator[None]:
    """In this thread, make every random operator of the block that names no generator draw from ``generator``.

    ``generator`` (a CPU generator) is advanced by the block's draws; pass a
    fresh one. Explicit generators given by the block's own code are kept.
    Torch's global RNG is neither read nor written, and other threads are
    unaffected.
    """
    with _ExplicitGenerators(generator):
        yield


def run_seeded(fn: Callable[[], T], seed: int) -> T:
    """``fn()`` with its randomness drawn from a fresh CPU generator seeded with ``seed``, on the CPU.

    Factory calls without an explicit device allocate on the CPU whatever the
    default device is, so the values depend on ``seed`` alone. The result is
    the same as running ``fn`` after ``torch.manual_seed(seed)`` on the CPU,
    without touching the global RNG: safe to call from many threads at once.
    """
    with torch.device("cpu"), drawing_from(generator_from_seed(seed)):
        return fn()
