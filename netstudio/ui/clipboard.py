"""Copy, cut, paste and duplicate of canvas nodes through the system clipboard.

The clipboard holds the selected subgraph as JSON (``{"format": "netstudio/nodes", ...}``);
pasting it is one undoable :class:`~netstudio.graph.commands.Paste` on the document.
"""

from __future__ import annotations

import json
import math
from typing import Any

from PySide6.QtCore import QObject, QPointF, Signal
from PySide6.QtGui import QCursor
from PySide6.QtWidgets import QApplication

from netstudio.errors import NetStudioError
from netstudio.graph.commands import Paste, RemoveNodes
from netstudio.graph.model import Graph
from netstudio.ui.canvas.items import GRID
from netstudio.ui.canvas.scene import NodeScene
from netstudio.ui.canvas.view import NodeView
from netstudio.ui.document import Document

CLIPBOARD_MARKER = "netstudio/nodes"


class NodeClipboard(QObject):
    """Copy/paste for one document shown in one scene and view."""

    #: a line for the status bar ("Copied 3 node(s)")
    message = Signal(str)

    def __init__(self, document: Document, scene: NodeScene, view: NodeView, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.document = document
        self.scene = scene
        self.view = view
        #: pastes of the same clipboard text so far (each goes one step further down)
        self.paste_count = 0
        self.last_text = ""
        #: last paste point under the cursor, and how often it was pasted there
        self.paste_at: tuple[QPointF, int] | None = None

    def push(self, command: Any) -> bool:
        try:
            return self.document.push(command)
        except NetStudioError as e:
            self.message.emit(str(e))
            return False

    def _selection_dict(self) -> dict[str, Any] | None:
        ids = self.scene.selected_node_ids()
        if not ids:
            return None
        data = self.document.current.subgraph_dict(ids)  # inside a block: its nodes
        return {"format": CLIPBOARD_MARKER, "version": 1, **data}

    def copy(self) -> bool:
        data = self._selection_dict()
        if data is None:
            return False
        text = json.dumps(data, indent=1)
        QApplication.clipboard().setText(text)
        self.paste_count = 0
        self.last_text = text
        self.message.emit(f"Copied {len(data['nodes'])} node(s)")
        return True

    def cut(self) -> None:
        if self.copy():
            ids = self.scene.selected_node_ids()
            cmd = RemoveNodes(ids)
            cmd.text = "Cut"
            self.push(cmd)

    def paste(self, at: QPointF | None = None) -> list[str]:
        """Paste the copied nodes with their top-left at ``at``, else under the mouse cursor when it
        is over the canvas, else next to the originals (each further paste one step further)."""
        text = QApplication.clipboard().text()
        data = parse_clipboard(text)
        if data is None:
            self.message.emit("The clipboard holds no NetStudio nodes")
            return []
        if text != self.last_text:
            self.last_text, self.paste_count = text, 0
        if at is None:
            vp = self.view.viewport()
            p = vp.mapFromGlobal(QCursor.pos())
            if vp.rect().contains(p) and vp.isVisible():
                at = self.scene.snap_point(self.view.mapToScene(p))
                # pasting again without moving the mouse: the next copy goes below the last one
                if self.paste_at is not None and self.paste_at[0] == at:
                    self.paste_at = (at, self.paste_at[1] + 1)
                else:
                    self.paste_at = (at, 0)
                at = QPointF(at.x(), at.y() + self._paste_step(data) * self.paste_at[1])
        self.paste_count += 1
        return self._paste_data(data, at, self.paste_count)

    def duplicate(self) -> list[str]:
        data = self._selection_dict()
        if data is None:
            return []
        return self._paste_data(data, None, 1)

    def _paste_data(self, data: dict[str, Any], at: QPointF | None, n: int) -> list[str]:
        if at is not None:
            xs = [rec["pos"][0] for rec in data["nodes"]]
            ys = [rec["pos"][1] for rec in data["nodes"]]
            p = self.scene.snap_point(at)
            offset = (p.x() - min(xs), p.y() - min(ys))
        else:
            offset = (0.0, self._paste_step(data) * n)
        cmd = Paste(data, offset)
        if not self.push(cmd):
            return []
        self.scene.select_nodes(cmd.new_ids)
        self.message.emit(f"Pasted {len(cmd.new_ids)} node(s)")
        return list(cmd.new_ids)

    def _paste_step(self, data: dict[str, Any]) -> float:
        """How far below the originals a copy goes so that it does not cover them: the height
        of the copied group plus a gap, on the grid."""
        top = bottom = None
        for rec in data["nodes"]:
            item = self.scene.node_items.get(rec.get("id", ""))
            h = item.height if item is not None else 120.0
            y = float(rec["pos"][1])
            top = y if top is None else min(top, y)
            bottom = y + h if bottom is None else max(bottom, y + h)
        span = (bottom or 0.0) - (top or 0.0)
        return math.ceil((span + 2 * GRID) / GRID) * GRID


def parse_clipboard(text: str) -> dict[str, Any] | None:
    """The copied subgraph if ``text`` is valid NetStudio clipboard JSON, else None."""
    if not text or CLIPBOARD_MARKER not in text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("format") != CLIPBOARD_MARKER:
        return None
    if not isinstance(data.get("nodes"), list) or not isinstance(data.get("edges", []), list) or not data["nodes"]:
        return None
    try:  # validate types, params and inner edges before anything touches the document
        Graph.from_dict({"nodes": data["nodes"], "edges": data.get("edges", [])})
    except (NetStudioError, KeyError, TypeError, ValueError):
        return None
    return data
