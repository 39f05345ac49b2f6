"""The node palette: every registered node type by category, with a filter box.

Generated from ``CATALOG.by_category()``: a new node class appears here with
its title, category colour and description tooltip without touching the UI.
Items drag onto the canvas as :data:`NODE_MIME` payloads.
"""

from __future__ import annotations

from typing import Sequence

from PySide6.QtCore import QMimeData, Qt, Signal
from PySide6.QtWidgets import QLineEdit, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from netstudio.nodes import CATALOG
from netstudio.nodes.base import Category, NodeType
from netstudio.ui.icons import category_icon
from netstudio.ui.theme import CATEGORY_LABELS

#: the drag payload of a palette item: the node type id as UTF-8
NODE_MIME = "application/x-netstudio-node-type"

TYPE_ROLE = Qt.ItemDataRole.UserRole + 1


def search_types(text: str, types: Sequence[type[NodeType]] | None = None) -> list[type[NodeType]]:
    """Node types matching ``text``, best first (title prefix, title, id, description)."""
    all_types = list(types) if types is not None else CATALOG.types()
    q = text.strip().lower()
    if not q:
        order = {c: i for i, c in enumerate(Category)}
        return sorted(all_types, key=lambda t: (order[t.category], t.title.lower()))
    scored: list[tuple[int, str, type[NodeType]]] = []
    for t in all_types:
        title = t.title.lower()
        if title.startswith(q):
            score = 0
        elif q in title:
            score = 1
        elif q in t.type_id.lower() or q in t.category.value:
            score = 2
        elif q in t.description.lower():
            score = 3
        else:
            continue
        scored.append((score, title, t))
    scored.sort(key=lambda s: (s[0], s[1]))
    return [s[2] for s in scored]


class PaletteTree(QTreeWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setHeaderHidden(True)
        self.setDragEnabled(True)
        self.setDragDropMode(QTreeWidget.DragDropMode.DragOnly)
        self.setRootIsDecorated(True)
        self.setIndentation(14)
        self.setUniformRowHeights(True)
        self.setAnimated(True)

    def mimeTypes(self) -> list[str]:
        return [NODE_MIME]

    def mimeData(self, items: Sequence[QTreeWidgetItem]) -> QMimeData:
        mime = QMimeData()
        for it in items:
            type_id = it.data(0, TYPE_ROLE)
            if type_id:
                mime.setData(NODE_MIME, str(type_id).encode("utf-8"))
                mime.setText(str(type_id))
                break
        return mime


class PaletteWidget(QWidget):
    """Filter box + category tree; double-click (or Enter) asks to add at the view centre."""

    add_requested = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.filter = QLineEdit(self)
        self.filter.setPlaceholderText("Filter nodes…")
        self.filter.setClearButtonEnabled(True)
        self.tree = PaletteTree(self)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.setSpacing(6)
        lay.addWidget(self.filter)
        lay.addWidget(self.tree)
        self.category_items: dict[Category, QTreeWidgetItem] = {}
        self.type_items: dict[str, QTreeWidgetItem] = {}
        self.populate()
        self.filter.textChanged.connect(self.apply_filter)
        self.tree.itemActivated.connect(self._activated)

    def populate(self) -> None:
        self.tree.clear()
        self.category_items.clear()
        self.type_items.clear()
        for cat, types in CATALOG.by_category().items():
            if not types:
                continue
            top = QTreeWidgetItem([CATEGORY_LABELS.get(cat, cat.value.title())])
            top.setIcon(0, category_icon(cat))
            top.setFlags(Qt.ItemFlag.ItemIsEnabled)
            f = top.font(0)
            f.setBold(True)
            top.setFont(0, f)
            self.tree.addTopLevelItem(top)
            self.category_items[cat] = top
            for t in sorted(types, key=lambda t: t.title.lower()):
                child = QTreeWidgetItem([t.title])
                child.setData(0, TYPE_ROLE, t.type_id)
                child.setToolTip(0, f"<b>{t.title}</b> <small>({t.type_id})</small><br>{t.description}")
                child.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
                               | Qt.ItemFlag.ItemIsDragEnabled)
                top.addChild(child)
                self.type_items[t.type_id] = child
            top.setExpanded(True)

    def apply_filter(self, text: str) -> None:
        matches = {t.type_id for t in search_types(text)}
        for top in self.category_items.values():
            any_visible = False
            for i in range(top.childCount()):
                child = top.child(i)
                assert child is not None
                visible = child.data(0, TYPE_ROLE) in matches
                child.setHidden(not visible)
                any_visible |= visible
            top.setHidden(not any_visible)
            if text:
                top.setExpanded(True)

    def visible_type_ids(self) -> list[str]:
        out = []
        for tid, it in self.type_items.items():
            parent = it.parent()
            if not it.isHidden() and parent is not None and not parent.isHidden():
                out.append(tid)
        return out

    def _activated(self, item: QTreeWidgetItem, column: int) -> None:
        type_id = item.data(0, TYPE_ROLE)
        if type_id:
            self.add_requested.emit(str(type_id))
