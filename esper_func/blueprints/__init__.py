"""Seed blueprints and the immutable blueprint registry.

``default_registry()`` holds esper-lite's 16 built-in blueprints; build a
seed with ``default_registry().get("cnn", "conv_light").build(64)``.
"""

from __future__ import annotations

from esper_func.blueprints._init import zero_init_final_layer as zero_init_final_layer
from esper_func.blueprints.registry import Blueprint as Blueprint
from esper_func.blueprints.registry import Registry as Registry
from esper_func.blueprints.registry import default_registry as default_registry

__all__ = ["Blueprint", "Registry", "default_registry", "zero_init_final_layer"]
