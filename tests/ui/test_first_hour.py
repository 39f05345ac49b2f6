"""Defects a new user hits in the first hour (issue #11, items 1, 2, 6-10).

Each test drives the real widgets offscreen and failed before its fix.
"""

from __future__ import annotations

from typing import Any

import pytest
import shiboken6
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest

from tests.ui.helpers import add, connect


def _quick_add(window: Any, qtbot: Any, text: str, *, tab: bool) -> None:
    window.view.setFocus()
    if tab:
        QTest.keyClick(window.view, Qt.Key.Key_Tab)
    else:
        QTest.mouseDClick(window.view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                          QPoint(150, 150))
    popup = window.view.quick_add_popup
    assert popup is not None and popup.isVisible()
    QTest.keyClicks(popup.search, text)
    QTest.keyClick(popup.search, Qt.Key.Key_Return)
    # the popup deletes itself on close: let the event loop do that, as it would for a user
    qtbot.waitUntil(lambda: not shiboken6.isValid(popup), timeout=2000)
    # the view must not keep a dead popup around (closing it again crashed or raised)
    assert window.view.quick_add_popup is None or shiboken6.isValid(window.view.quick_add_popup)


# --- 1. search-to-add works every time ---------------------------------------------------------
def test_search_to_add_works_again_and_again(window: Any, qtbot: Any, dialogs: Any) -> None:
    _quick_add(window, qtbot, "relu", tab=True)
    _quick_add(window, qtbot, "linear", tab=True)
    _quick_add(window, qtbot, "dropout", tab=False)
    # Escape closes it without adding; the next search still works
    QTest.keyClick(window.view, Qt.Key.Key_Tab)
    popup = window.view.quick_add_popup
    QTest.keyClick(popup.search, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not shiboken6.isValid(popup), timeout=2000)
    _quick_add(window, qtbot, "tanh", tab=True)
    types = sorted(n.type_id for n in window.document.graph.nodes.values())
    assert types == ["activation.relu", "activation.tanh", "layer.dropout", "layer.linear"]
    assert dialogs.errors == []
