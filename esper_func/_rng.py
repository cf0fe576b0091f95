"""Explicit, non-consuming randomness.

Public functions take a ``torch.Generator`` (or ``None``) and *read* it: its
state is copied, never advanced, so calling twice with the same generator
gives the same result (the JAX key discipline) and the caller's generator is
an unchanged input. Neither is torch's global RNG touched: initialisers run
inside ``torch.random.fork_rng`` after seeding from the copy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["DEFAULT_SEED", "seeded", "split_seeds"]

#: The seed used when a function is given ``generator=None``.
DEFAULT_SEED = 0

_SEED_BOUND = 2**62


def split_seeds(generator: torch.Generator | None, n: int) -> list[int]:
    """``n`` integer seeds drawn from a *copy* of ``generator`` (``None``: a fixed default)."""
    fork = torch.Generator()
    if generator is None:
        fork.manual_seed(DEFAULT_SEED)
    else:
        fork.set_state(generator.get_state())
    return [int(v) for v in torch.randint(0, _SEED_BOUND, (n,), generator=fork).tolist()]


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global CPU RNG seeded to ``seed``, then restore it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
