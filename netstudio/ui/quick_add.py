"""Search-to-add popup (Tab or double-click on the empty canvas)."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QPoint, Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QFrame, QLineEdit, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from netstudio.ui.icons import category_icon
from netstudio.ui.palette import TYPE_ROLE, search_types
from netstudio.ui.theme import CATEGORY_LABELS


class QuickAddPopup(QFrame):
    """Type to filter node types; Enter or click creates the highlighted one."""

    chosen = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Popup)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.search = QLineEdit(self)
        self.search.setPlaceholderText("Add node: type to search…")
        self.list = QListWidget(self)
        self.list.setUniformItemSizes(True)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.setSpacing(4)
        lay.addWidget(self.search)
        lay.addWidget(self.list)
        self.resize(300, 340)
        self.search.textChanged.connect(self.refilter)
        self.search.installEventFilter(self)
        self.list.itemActivated.connect(self._choose_item)
        self.list.itemClicked.connect(self._choose_item)
        self.refilter("")

    def refilter(self, text: str) -> None:
        self.list.clear()
        for t in search_types(text):
            item = QListWidgetItem(category_icon(t.category), f"{t.title}")
            item.setData(TYPE_ROLE, t.type_id)
            item.setToolTip(f"{CATEGORY_LABELS.get(t.category, '')}: {t.description}")
            self.list.addItem(item)
        if self.list.count():
            self.list.setCurrentRow(0)

    def current_type(self) -> str | None:
        item = self.list.currentItem()
        return str(item.data(TYPE_ROLE)) if item is not None else None

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        # arrow keys move through the list while typing in the search box
        if obj is self.search and event.type() == QEvent.Type.KeyPress and isinstance(event, QKeyEvent):
            key = event.key()
            if key in (Qt.Key.Key_Down, Qt.Key.Key_Up):
                row = self.list.currentRow() + (1 if key == Qt.Key.Key_Down else -1)
                self.list.setCurrentRow(max(0, min(self.list.count() - 1, row)))
                return True
            if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                self.accept_current()
                return True
            if key == Qt.Key.Key_Escape:
                self.close()
                return True
        return super().eventFilter(obj, event)

    def accept_current(self) -> None:
        type_id = self.current_type()
        self.close()
        if type_id:
            self.chosen.emit(type_id)

    def _choose_item(self, item: QListWidgetItem) -> None:
        self.list.setCurrentItem(item)
        self.accept_current()

    def popup_at(self, global_pos: QPoint) -> None:
        self.move(global_pos)
        self.show()
        self.search.setFocus()
