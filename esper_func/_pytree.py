"""Pytree node registration for frozen dataclasses.

``torch.func`` flattens its inputs with ``torch.utils._pytree``; the project's
own tree utilities use :mod:`optree`. A custom node type must be known to
both, or it becomes an opaque leaf to one of them. :func:`pytree_dataclass`
registers a frozen dataclass with both libraries at once (optree under the
``"esper_func"`` namespace).

Fields marked with :func:`static_field` are part of the tree *structure*
(hashable Python metadata, compared when trees are matched); every other
field is a child subtree.

The two libraries order dict leaves differently (optree sorts keys, torch
keeps insertion order), so never pair leaf lists from the two by position;
flatten and unflatten with one library at a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar, cast

import optree
import torch.utils._pytree as torch_pytree

__all__ = ["NAMESPACE", "pytree_dataclass", "static_field", "tree_map", "tree_leaves"]

NAMESPACE = "esper_func"

_STATIC = "esper_func.static"

T = TypeVar("T")


def static_field(**kwargs: Any) -> Any:
    """A dataclass field that is tree metadata rather than a child.

    Accepts the keyword arguments of :func:`dataclasses.field`.
    """
    metadata = dict(kwargs.pop("metadata", None) or {})
    metadata[_STATIC] = True
    return dataclasses.field(metadata=metadata, **kwargs)


def pytree_dataclass(cls: type[T]) -> type[T]:
    """Make ``cls`` a frozen, keyword-friendly dataclass registered as a pytree.

    The class is registered with :mod:`optree` (namespace ``"esper_func"``)
    and with :mod:`torch.utils._pytree`, so instances pass through
    ``torch.func.vmap``/``grad`` and through ``optree.tree_map(...,
    namespace="esper_func")`` alike.
    """
    if not dataclasses.is_dataclass(cls):
        cls = dataclasses.dataclass(frozen=True)(cls)
    elif not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__name__} must be a frozen dataclass to be a pytree node")
    node_cls: type[Any] = cls  # a dataclass from here on (type[T] cannot say so)

    fields = dataclasses.fields(node_cls)
    child_names = tuple(f.name for f in fields if f.init and not f.metadata.get(_STATIC))
    static_names = tuple(f.name for f in fields if f.init and f.metadata.get(_STATIC))

    def flatten(node: Any) -> tuple[list[Any], tuple[Any, ...]]:
        children = [getattr(node, name) for name in child_names]
        statics = tuple(getattr(node, name) for name in static_names)
        return children, statics

    def unflatten(statics: tuple[Any, ...], children: Any) -> Any:
        kwargs = dict(zip(child_names, children, strict=True))
        kwargs.update(zip(static_names, statics, strict=True))
        return node_cls(**kwargs)

    def optree_flatten(node: Any) -> tuple[list[Any], tuple[Any, ...], tuple[str, ...]]:
        children, statics = flatten(node)
        return children, statics, child_names

    optree.register_pytree_node(
        node_cls,
        optree_flatten,
        lambda statics, children: unflatten(cast("tuple[Any, ...]", statics), list(children)),
        namespace=NAMESPACE,
    )

    def torch_flatten_with_keys(node: Any) -> tuple[list[tuple[Any, Any]], tuple[Any, ...]]:
        children, statics = flatten(node)
        keys = [torch_pytree.GetAttrKey(name) for name in child_names]
        return list(zip(keys, children, strict=True)), statics

    torch_pytree.register_pytree_node(
        node_cls,
        flatten,
        lambda children, statics: unflatten(statics, list(children)),
        serialized_type_name=f"{cls.__module__}.{cls.__qualname__}",
        flatten_with_keys_fn=torch_flatten_with_keys,
    )
    return cls


def tree_map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    """``optree.tree_map`` in the project's namespace (``None`` is a leaf-free node)."""
    return optree.tree_map(fn, tree, *rest, namespace=NAMESPACE)


def tree_leaves(tree: Any) -> list[Any]:
    """``optree.tree_leaves`` in the project's namespace."""
    return optree.tree_leaves(tree, namespace=NAMESPACE)
