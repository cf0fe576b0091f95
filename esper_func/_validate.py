"""Argument checks shared by every public function.

Each check returns the value normalised (``float`` for numbers, the enum
member for enums) or raises an exported :class:`~esper_func.errors.EsperFuncError`:
:class:`~esper_func.errors.InvalidTypeError` (also a ``TypeError``) when the
value has the wrong type, :class:`~esper_func.errors.InvalidArgumentError`
(also a ``ValueError``) when its value is not allowed. Messages name the
argument, say what was given and what is allowed.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from enum import IntEnum
from typing import Any, TypeVar

from esper_func.errors import InvalidArgumentError, InvalidTypeError

__all__ = [
    "CheckedIntEnum",
    "check_bool",
    "check_choice",
    "check_enum",
    "check_float",
    "check_int",
    "check_optional_bool",
    "check_optional_float",
    "check_str",
    "describe",
]

E = TypeVar("E", bound=IntEnum)


class CheckedIntEnum(IntEnum):
    """An ``IntEnum`` whose lookup of an unknown value raises :class:`InvalidArgumentError` naming the members.

    ``SeedStage(99)`` then says which values exist instead of Python's bare
    ``ValueError`` (``InvalidArgumentError`` is also a ``ValueError``).
    """

    @classmethod
    def _missing_(cls, value: object) -> Any:
        members = ", ".join(f"{m.name}={m.value}" for m in cls)
        raise InvalidArgumentError(f"{value!r} is not a {cls.__name__}; the members are {members}")


def describe(value: Any) -> str:
    """``"<type> <repr>"``, shortened, for error messages."""
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__name__} {text}"


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an ``int`` (``bool`` is refused), within ``[minimum, maximum]`` when given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidTypeError(f"{name} must be an int; got {describe(value)}")
    result = int(value)
    if minimum is not None and result < minimum:
        raise InvalidArgumentError(f"{name} must be >= {minimum}; got {result}")
    if maximum is not None and result > maximum:
        raise InvalidArgumentError(f"{name} must be <= {maximum}; got {result}")
    return result


def check_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    finite: bool = True,
) -> float:
    """``value`` (a real number, not ``bool``) as a ``float``.

    NaN is always refused; infinities unless ``finite=False``; values outside
    ``[minimum, maximum]`` (bounds given) are refused.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidTypeError(f"{name} must be a real number; got {describe(value)}")
    result = float(value)
    if math.isnan(result):
        raise InvalidArgumentError(f"{name} must be a number, not NaN")
    if finite and math.isinf(result):
        raise InvalidArgumentError(f"{name} must be finite; got {result}")
    if minimum is not None and result < minimum:
        raise InvalidArgumentError(f"{name} must be >= {minimum}; got {result}")
    if maximum is not None and result > maximum:
        raise InvalidArgumentError(f"{name} must be <= {maximum}; got {result}")
    return result


def check_optional_float(name: str, value: Any, **bounds: Any) -> float | None:
    """``None``, or :func:`check_float` of ``value``."""
    return None if value is None else check_float(name, value, **bounds)


def check_bool(name: str, value: Any) -> bool:
    """``value``, which must be ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise InvalidTypeError(f"{name} must be True or False; got {describe(value)}")
    return value


def check_optional_bool(name: str, value: Any) -> bool | None:
    """``None``, ``True`` or ``False``."""
    return None if value is None else check_bool(name, value)


def check_str(name: str, value: Any, *, nonempty: bool = False) -> str:
    """``value``, which must be a ``str`` (non-empty when ``nonempty``)."""
    if not isinstance(value, str):
        raise InvalidTypeError(f"{name} must be a str; got {describe(value)}")
    if nonempty and not value:
        raise InvalidArgumentError(f"{name} must be a non-empty str")
    return value


def check_choice(name: str, value: Any, options: Iterable[str]) -> str:
    """``value``, which must be one of the strings ``options``."""
    allowed = list(options)
    if not isinstance(value, str) or value not in allowed:
        raise InvalidArgumentError(f"{name} must be one of {allowed}; got {value!r}")
    return value


def check_enum(name: str, value: Any, enum: type[E]) -> E:
    """``value`` as a member of ``enum`` (a member, its integer value, or its name)."""
    if isinstance(value, enum):
        return value
    if isinstance(value, str) and value in enum.__members__:
        return enum[value]
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        try:
            return enum(int(value))
        except ValueError:
            pass
    members = ", ".join(f"{m.name}={m.value}" for m in enum)
    raise InvalidArgumentError(f"{name} must be a {enum.__name__} ({members}); got {value!r}")
