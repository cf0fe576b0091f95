"""Explicit, non-consuming randomness.

Public functions take a ``torch.Generator`` (or ``None``) and *read* it: its
state is copied, never advanced, so calling twice with the same generator
gives the same result (the JAX key discipline) and the caller's generator is
an unchanged input. Neither is torch's global RNG touched: initialisers run
inside ``torch.random.fork_rng`` after seeding from the copy, and only the
generators that are forked (and restored) are seeded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["DEFAULT_SEED", "copy_generator", "seeded", "split_seeds"]

#: The seed used when a function is given ``generator=None``.
DEFAULT_SEED = 0

_SEED_BOUND = 2**62


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


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Run a block with the global RNG of the CPU (and of ``device``, if an accelerator) seeded.

    Every generator seeded here is forked first and restored on exit; no
    other device's generator is touched (``torch.manual_seed`` would seed
    them all without restoring them).
    """
    accelerator = device is not None and device.type != "cpu"
    devices = [device] if accelerator else []
    device_type = device.type if accelerator else "cuda"  # type: ignore[union-attr]
    with torch.random.fork_rng(devices=devices, device_type=device_type):
        torch.random.default_generator.manual_seed(seed)
        if accelerator:
            assert device is not None
            with torch.get_device_module(device.type).device(device):
                torch.get_device_module(device.type).manual_seed(seed)
        yield
