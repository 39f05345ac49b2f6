"""Typed exceptions shared by every NetStudio layer.

Every error that concerns one node carries its id, so the UI can highlight
that node and the CLI can print it. ``hint`` tells the user how to fix it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from netstudio.enums import StrEnum

#: longest message / hint an error carries; input echoed into a message is cut to fit
MAX_MESSAGE = 1000
MAX_HINT = 400
MAX_NODE_ID = 120

# C0 and C1 controls (ESC starts ANSI sequences, U+009B is the one-byte CSI), DEL, line/paragraph
# separators, bidirectional overrides (text that reads differently than it runs) and lone surrogates.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape_char(m: "re.Match[str]") -> str:
    c = m.group()
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    if c in named:
        return named[c]
    o = ord(c)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def escape_text(text: Any) -> str:
    """``text`` with every control character (ANSI escapes included) shown as a visible escape."""
    return _UNSAFE.sub(_escape_char, text if isinstance(text, str) else str(text))


def clip_text(text: Any, limit: int = MAX_MESSAGE) -> str:
    """Escaped and at most ``limit`` characters: safe to show in a terminal, dialog or log line."""
    s = escape_text(text)
    if len(s) <= limit:
        return s
    more = f"… ({len(s) - limit:,} more characters)"
    return s[:max(0, limit - len(more))] + more


class NetStudioError(Exception):
    """Base class for all errors NetStudio raises on purpose.

    Message and hint are escaped and bounded here, once for every layer: an
    error that quotes a 2-million-character value or a terminal escape sequence
    still prints as one short, inert line.
    """

    def __init__(self, message: str, *, node_id: str | None = None, hint: str | None = None) -> None:
        message = clip_text(message, MAX_MESSAGE)
        super().__init__(message)
        self.message = message
        self.node_id = node_id  # kept exact: the editor selects the node by it (displays escape it)
        self.hint = clip_text(hint, MAX_HINT) if hint is not None else None

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


class SweepError(NetStudioError):
    """A hyperparameter search cannot run: a search space that does not parse or does not fit the graph,
    or Optuna missing (netstudio.project.sweep)."""


class ExportError(NetStudioError):
    pass


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


class Scope(StrEnum):
    """What a problem blocks: MODEL blocks compiling, TRAINING blocks only training."""

    MODEL = "model"
    TRAINING = "training"


@dataclass(frozen=True)
class Problem:
    """One validation finding, shown in the Problems panel and on the node."""

    message: str
    node_id: str | None = None
    hint: str | None = None
    severity: Severity = Severity.ERROR
    scope: Scope = Scope.MODEL

    def __post_init__(self) -> None:
        object.__setattr__(self, "severity", Severity(self.severity))  # plain strings are still accepted
        object.__setattr__(self, "scope", Scope(self.scope))
        object.__setattr__(self, "message", clip_text(self.message, MAX_MESSAGE))
        if self.hint is not None:
            object.__setattr__(self, "hint", clip_text(self.hint, MAX_HINT))

    def text(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message

    @classmethod
    def from_error(cls, err: NetStudioError, severity: Severity = Severity.ERROR, scope: Scope = Scope.MODEL,
                   node_id: str | None = None) -> "Problem":
        return cls(err.message, err.node_id or node_id, err.hint, severity, scope)
