"""Storage-free module skeletons that are safe to share between threads.

``torch.func.functional_call`` works by temporarily swapping the given
tensors into the module it calls, so two threads calling it on the same
module object would see each other's tensors. :class:`Skeleton` hands each
thread its own deep copy of a ``meta``-device module (copies are cheap: they
hold no storage). Under ``torch.compile`` the prototype itself is used:
the swap happens at trace time only and the compiled graph takes the tensors
as inputs.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

__all__ = ["Skeleton", "on_meta"]

M = TypeVar("M", bound=nn.Module)


def on_meta(build: Callable[[], M], *, train: bool = False) -> M:
    """Build a module with every tensor on ``meta`` (no storage), in eval or train mode.

    Meta kernels compute shapes only: initialisers on ``meta`` tensors draw no
    random numbers and never look at a generator, so building consumes and
    touches no RNG (no ``fork_rng`` needed, which would itself race with
    other threads). Safe to call from many threads at once.
    """
    with torch.device("meta"):
        return build().train(train)


class Skeleton:
    """A ``meta`` module prototype with one private copy per calling thread."""

    def __init__(self, prototype: nn.Module) -> None:
        self.prototype = prototype
        self._local = threading.local()

    def get(self) -> nn.Module:
        """The calling thread's copy (the prototype while ``torch.compile`` traces)."""
        if torch.compiler.is_compiling():
            return self.prototype
        module = getattr(self._local, "module", None)
        if module is None:
            module = copy.deepcopy(self.prototype)
            self._local.module = module
        return module
