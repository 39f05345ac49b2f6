"""Typed exceptions shared by every NetStudio layer.

Every error that concerns one node carries its id, so the UI can highlight
that node and the CLI can print it. ``hint`` tells the user how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass


class NetStudioError(Exception):
    """Base class for all errors NetStudio raises on purpose."""

    def __init__(self, message: str, *, node_id: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.node_id = node_id
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class GraphError(NetStudioError):
    """An edit that would make the graph invalid (refused, graph unchanged)."""


class CycleError(GraphError):
    pass


class PortError(GraphError):
    """Unknown port, or an output kind that cannot feed this input kind."""


class DuplicateEdgeError(GraphError):
    pass


class UnknownNodeTypeError(GraphError):
    pass


class ParamError(NetStudioError):
    """A parameter value outside its declared type/range/choices."""

    def __init__(self, message: str, *, node_id: str | None = None, hint: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message, node_id=node_id, hint=hint)
        self.param = param


class ShapeError(NetStudioError):
    """Shape inference failed at a node (e.g. in_features mismatch)."""


class MissingInputError(NetStudioError):
    pass


class CompileError(NetStudioError):
    pass


class MemoryLimitError(CompileError):
    """The model (or training it) would need more memory than the device has; refused before allocating."""


class DataError(NetStudioError):
    """A dataset could not be described or loaded (bad CSV row, missing folder...)."""


class ProjectError(NetStudioError):
    """A project file could not be read or written."""


class TrainingError(NetStudioError):
    """Training stopped for a reason the user must see (NaN loss, OOM...)."""


class ExportError(NetStudioError):
    pass


@dataclass(frozen=True)
class Problem:
    """One validation finding, shown in the Problems panel and on the node."""

    message: str
    node_id: str | None = None
    hint: str | None = None
    severity: str = "error"  # "error" | "warning"
    scope: str = "model"  # "model": blocks compiling; "training": blocks only training

    def text(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message

    @classmethod
    def from_error(cls, err: NetStudioError, severity: str = "error", scope: str = "model",
                   node_id: str | None = None) -> "Problem":
        return cls(err.message, err.node_id or node_id, err.hint, severity, scope)
