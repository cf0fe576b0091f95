"""esper_func: pure, torch.func-native seed slots for morphogenetic networks."""

from __future__ import annotations

__version__ = "0.1.0"
