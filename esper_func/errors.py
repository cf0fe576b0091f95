"""Exception types.

Every error raised on bad input is one of these. Each subclasses the
built-in exception a caller would naturally catch (``ValueError``,
``TypeError``, ``KeyError``), so ``except ValueError`` keeps working, and
each message says what was wrong, what was expected and, where it helps,
what is available.
"""

from __future__ import annotations

__all__ = [
    "EsperFuncError",
    "InvalidArgumentError",
    "InvalidTypeError",
    "UnknownBlueprintError",
    "BlueprintError",
    "BlueprintExistsError",
    "UnknownTopologyError",
    "ShapeError",
    "DTypeError",
    "ParamsMismatchError",
    "IllegalTransitionError",
    "CheckpointError",
    "TrainingDivergedError",
    "RunDirectoryError",
    "MissingDependencyError",
    "ImmutableError",
    "HostConfigError",
    "HostProtocolError",
    "UnknownHostError",
    "UnknownSlotError",
    "SegmentRangeError",
]


class EsperFuncError(Exception):
    """Base class of every esper_func error."""


class InvalidArgumentError(EsperFuncError, ValueError):
    """An argument whose value is not allowed (NaN, out of range, empty, non-positive)."""


class InvalidTypeError(EsperFuncError, TypeError):
    """An argument of the wrong type (a list where a tensor is needed, a float where an int is)."""


class UnknownBlueprintError(EsperFuncError, KeyError):
    """A blueprint name that the registry does not hold."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class BlueprintError(EsperFuncError, ValueError):
    """A blueprint whose module cannot run as a pure seed (e.g. it keeps buffers)."""


class BlueprintExistsError(EsperFuncError, ValueError):
    """Adding a blueprint under a name that is already taken."""


class UnknownTopologyError(EsperFuncError, ValueError):
    """A topology name that is neither built in (``"cnn"``, ``"transformer"``) nor given as a :class:`~esper_func.Topology`."""


class ShapeError(EsperFuncError, ValueError):
    """A tensor whose shape (rank, channels, batch) does not fit."""


class DTypeError(EsperFuncError, TypeError):
    """A tensor of the wrong dtype, or a Python number where a tensor is required."""


class ParamsMismatchError(EsperFuncError, ValueError):
    """A parameter tree with missing, extra or mis-shaped entries."""


class IllegalTransitionError(EsperFuncError, ValueError):
    """A lifecycle request that the stage machine forbids."""


class CheckpointError(EsperFuncError, ValueError):
    """A checkpoint that is corrupt, of an unknown version, or does not fit the model."""


class TrainingDivergedError(EsperFuncError, RuntimeError):
    """Training that the governor cannot save: it rolled back too many epochs in a row."""


class RunDirectoryError(EsperFuncError, ValueError):
    """A run directory that cannot be used as asked: it holds files the run does not own,
    already holds a run, is in use by another process, or cannot be written."""


class MissingDependencyError(EsperFuncError, ImportError):
    """An optional package (safetensors, matplotlib, scikit-learn) that a feature needs is not installed."""


class ImmutableError(EsperFuncError, AttributeError):
    """Setting or deleting an attribute of an immutable value (a registry): build a new one instead."""


class HostConfigError(EsperFuncError, ValueError):
    """A host constructor argument of the wrong type or out of range."""


class HostProtocolError(EsperFuncError, TypeError):
    """A host that does not implement the host protocol (:class:`esper_func.hosts.Host`).

    The message names the host's class, the member that is missing or wrong,
    and what the protocol requires of it.
    """


class UnknownHostError(EsperFuncError, KeyError):
    """A host class name (in a checkpoint) that is neither built in nor in the registry."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class UnknownSlotError(EsperFuncError, KeyError, ValueError):
    """A slot id the host does not expose (or the model does not enable)."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class SegmentRangeError(EsperFuncError, ValueError):
    """A ``start``/``stop`` surface pair the host cannot route."""
