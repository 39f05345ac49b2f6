"""The breadcrumb bar above the canvas: "Project › block1 › inner" while a block is open.

Each level is a button that goes back to it; the bar follows the document's
``path_changed`` and hides itself while the project's own graph is shown.
"""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QToolButton, QWidget

from netstudio.graph.model import EventKind, GraphEvent
from netstudio.ui.document import Document

SEPARATOR = "›"


class BreadcrumbBar(QWidget):
    def __init__(self, document: Document, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("breadcrumbBar")
        self.doc = document
        self._layout = QHBoxLayout(self)
        self._layout.setContentsMargins(8, 2, 8, 2)
        self._layout.setSpacing(4)
        self.buttons: list[QToolButton] = []
        document.path_changed.connect(self.refresh)
        document.project_replaced.connect(self.refresh)
        document.graph_event.connect(self._on_graph_event)
        self.refresh()

    def text(self) -> str:
        """What the bar shows, e.g. ``Project › block1``."""
        return f" {SEPARATOR} ".join(b.text() for b in self.buttons)

    def refresh(self) -> None:
        while self._layout.count():
            item = self._layout.takeAt(0)
            w = item.widget() if item is not None else None
            if w is not None:
                w.deleteLater()
        self.buttons = []
        names = ["Project", *self.doc.path_names()]
        for depth, name in enumerate(names):
            if depth:
                self._layout.addWidget(QLabel(SEPARATOR, self))
            b = QToolButton(self)
            b.setText(name)
            b.setAutoRaise(True)
            b.setEnabled(depth < len(names) - 1)  # the level shown is not a link
            b.setToolTip("Back to the project's graph" if depth == 0 else f"Back to block {name!r}")
            b.clicked.connect(lambda _checked=False, d=depth: self.doc.leave_to(d))
            self._layout.addWidget(b)
            self.buttons.append(b)
        self._layout.addStretch(1)
        self.setVisible(bool(self.doc.path))

    def _on_graph_event(self, ev: GraphEvent) -> None:
        # an open block renamed (e.g. by undo) changes the breadcrumb text
        if self.doc.path and ev.kind in (EventKind.NODE_RENAMED, EventKind.BLOCK_CHANGED):
            names = ["Project", *self.doc.path_names()]
            if [b.text() for b in self.buttons] != names:
                self.refresh()
