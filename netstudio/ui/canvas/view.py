"""The canvas view: zoom, pan, grid, drop from the palette, Tab search-to-add."""

from __future__ import annotations

import math
from typing import Any, Callable

from PySide6.QtCore import QLineF, QPoint, QPointF, QRect, QRectF, Qt, Signal
from PySide6.QtGui import (QContextMenuEvent, QCursor, QDragEnterEvent, QDragMoveEvent, QDropEvent, QFont,
                           QKeyEvent, QMouseEvent, QPainter, QPainterPath, QPen, QPolygonF, QWheelEvent)
from PySide6.QtWidgets import QGraphicsView, QMenu, QWidget

from netstudio.errors import NetStudioError
from netstudio.graph.commands import AddNode
from netstudio.ui.canvas.items import GRID, EdgeItem
from netstudio.ui.canvas.scene import NodeScene
from netstudio.ui.palette import NODE_MIME
from netstudio.ui.theme import theme

#: drag-and-drop payload from the palette: the node type id as UTF-8

MIN_ZOOM = 0.12
MAX_ZOOM = 3.0


class NodeView(QGraphicsView):
    #: a node was created by drop or search (its id)
    node_created = Signal(str)
    #: the zoom factor changed (1.0 = 100 %)
    zoom_changed = Signal(float)

    def __init__(self, scene: NodeScene, parent: QWidget | None = None) -> None:
        super().__init__(scene, parent)
        self.node_scene = scene
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.TextAntialiasing
                            | QPainter.RenderHint.SmoothPixmapTransform)
        self.setDragMode(QGraphicsView.DragMode.RubberBandDrag)
        self.setRubberBandSelectionMode(Qt.ItemSelectionMode.IntersectsItemShape)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.SmartViewportUpdate)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setFrameShape(QGraphicsView.Shape.NoFrame)
        self.setAcceptDrops(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setCacheMode(QGraphicsView.CacheModeFlag.CacheBackground)
        self._pan_from: QPoint | None = None
        self._box_band: QPolygonF | None = None  # the rubber band in scene coordinates
        self._kept_edges: set[EdgeItem] = set()
        self._space = False
        self.quick_add_popup: Any = None
        #: (scene position, item under the cursor or None) -> context menu; set by the main window
        self.context_menu_provider: Callable[[QPointF, Any], QMenu | None] | None = None
        self._had_nodes = bool(scene.node_items)
        self._shown_zoom = self.zoom()
        # after the scene (connected first) has mirrored the change: repaint the whole
        # viewport when the empty-canvas hint appears or goes
        scene.doc.graph_event.connect(self._check_hint)
        scene.doc.project_replaced.connect(self._check_hint)
        self.centerOn(0, 0)

    def _check_hint(self, *_args: Any) -> None:
        has = bool(self.node_scene.node_items)
        if has != self._had_nodes:
            self._had_nodes = has
            self.viewport().update()

    def _zoom_changed(self) -> None:
        z = self.zoom()
        if z != self._shown_zoom:
            self._shown_zoom = z
            self.zoom_changed.emit(z)

    # --- zoom & pan ----------------------------------------------------------
    def zoom(self) -> float:
        return self.transform().m11()

    def set_zoom(self, z: float, anchor: QPointF | None = None) -> None:
        z = max(MIN_ZOOM, min(MAX_ZOOM, z))
        factor = z / self.zoom()
        if abs(factor - 1.0) < 1e-9:
            return
        self.scale(factor, factor)
        self.resetCachedContent()
        self._zoom_changed()

    def zoom_by(self, factor: float) -> None:
        self.set_zoom(self.zoom() * factor)

    def wheelEvent(self, event: QWheelEvent) -> None:
        delta = event.angleDelta().y() or event.angleDelta().x()
        if delta == 0:
            return
        self.set_zoom(self.zoom() * math.pow(1.0015, delta))
        event.accept()

    def frame_rect(self, rect: QRectF, max_zoom: float = 1.0) -> None:
        if rect.isNull() or not rect.isValid():
            self.resetTransform()
            self.centerOn(0, 0)
            self._zoom_changed()
            return
        rect = rect.adjusted(-36, -36, 36, 36)
        self.fitInView(rect, Qt.AspectRatioMode.KeepAspectRatio)
        if self.zoom() > max_zoom:
            self.set_zoom(max_zoom)
        elif self.zoom() < MIN_ZOOM:
            self.set_zoom(MIN_ZOOM)
        self.centerOn(rect.center())
        self.resetCachedContent()
        self._zoom_changed()

    def frame_all(self) -> None:
        self.frame_rect(self.node_scene.nodes_rect())

    def frame_nodes(self, ids: list[str]) -> None:
        rect = QRectF()
        for nid in ids:
            item = self.node_scene.node_items.get(nid)
            if item is not None:
                rect = rect.united(item.sceneBoundingRect())
        if not rect.isNull():
            # keep the zoom if the nodes fit; a problem click should not jump around
            vis = self.mapToScene(self.viewport().rect()).boundingRect()
            if vis.width() >= rect.width() + 100 and vis.height() >= rect.height() + 100:
                self.centerOn(rect.center())
            else:
                self.frame_rect(rect)

    def pan_by(self, dx: int, dy: int) -> None:
        self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() + dx)
        self.verticalScrollBar().setValue(self.verticalScrollBar().value() + dy)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.MiddleButton:
            self._pan_from = event.position().toPoint()
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
            event.accept()
            return
        super().mousePressEvent(event)
        # edges already selected (Ctrl + box adds to the selection) stay selected
        self._kept_edges = {it for it in self.scene().selectedItems() if isinstance(it, EdgeItem)}

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._pan_from is not None:
            p = event.position().toPoint()
            d = p - self._pan_from
            self._pan_from = p
            self.pan_by(-d.x(), -d.y())
            event.accept()
            return
        super().mouseMoveEvent(event)
        band = self.rubberBandRect()
        if not band.isNull():
            self._box_band = self.mapToScene(band)
            self._trim_box_selected_edges(self._box_band)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.MiddleButton and self._pan_from is not None:
            self._pan_from = None
            self.viewport().unsetCursor()
            event.accept()
            return
        super().mouseReleaseEvent(event)
        band, self._box_band = self._box_band, None
        if band is not None:
            self._trim_box_selected_edges(band)

    def _trim_box_selected_edges(self, band: QPolygonF) -> None:
        """Box select keeps an edge only if both its nodes are selected or it lies inside the box.

        Qt selects every item whose shape the box touches, so a box around one node would
        also pick the edges that merely pass through it.
        """
        area = QPainterPath()
        area.addPolygon(band)
        for item in self.scene().selectedItems():
            if not isinstance(item, EdgeItem):
                continue
            ends = (item.src.node_item.isSelected(), item.dst.node_item.isSelected())
            if all(ends) or item in self._kept_edges or area.contains(item.sceneBoundingRect()):
                continue
            item.setSelected(False)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        pos = self.mapToScene(event.position().toPoint())
        node = self.node_scene.node_at(pos) if event.button() == Qt.MouseButton.LeftButton else None
        doc = self.node_scene.doc
        if node is not None and doc.current.nodes[node.node_id].inner is not None:
            doc.enter_block(node.node_id)  # a block opens for editing in this canvas
            event.accept()
            return
        if event.button() == Qt.MouseButton.LeftButton and node is None and not self._edge_at(pos):
            self.open_quick_add(pos)
            event.accept()
            return
        super().mouseDoubleClickEvent(event)

    def _edge_at(self, pos: QPointF) -> bool:
        return any(isinstance(it, EdgeItem) for it in self.scene().items(pos))

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        if key == Qt.Key.Key_Space and not event.isAutoRepeat() and not self._space:
            self._space = True
            self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
            self.setInteractive(False)
            event.accept()
            return
        if key == Qt.Key.Key_Tab and not self.node_scene.locked:
            self.open_quick_add(self.cursor_scene_pos())
            event.accept()
            return
        if key == Qt.Key.Key_Escape and self.node_scene.dragging_connection:
            self.node_scene._cancel_drag()
            event.accept()
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat() and self._space:
            self._space = False
            self.setDragMode(QGraphicsView.DragMode.RubberBandDrag)
            self.setInteractive(True)
            event.accept()
            return
        super().keyReleaseEvent(event)

    def focusNextPrevChild(self, next: bool) -> bool:  # noqa: A002 - Qt's name
        return False  # Tab opens the search-to-add popup instead of moving focus

    def cursor_scene_pos(self) -> QPointF:
        p = self.viewport().mapFromGlobal(QCursor.pos())
        if not self.viewport().rect().contains(p):
            p = self.viewport().rect().center()
        return self.mapToScene(p)

    # --- adding nodes ------------------------------------------------------------
    def add_node(self, type_id: str, scene_pos: QPointF) -> str | None:
        """Create a node of ``type_id`` with its top-left at ``scene_pos`` (snapped); one undo step."""
        p = self.node_scene.snap_point(scene_pos)
        cmd = AddNode(type_id, (p.x(), p.y()))
        try:
            self.node_scene.doc.push(cmd)
        except NetStudioError as e:
            self.node_scene.say(f"Cannot add node: {e}")
            return None
        assert cmd.node_id is not None
        self.node_scene.select_nodes([cmd.node_id])
        self.node_created.emit(cmd.node_id)
        return cmd.node_id

    def open_quick_add(self, scene_pos: QPointF) -> Any:
        """Show the search-to-add popup; the chosen type is created at ``scene_pos``."""
        import shiboken6

        from netstudio.ui.quick_add import QuickAddPopup

        if self.node_scene.locked:
            return None
        # the popup deletes itself when it closes (WA_DeleteOnClose): only close one still alive
        old = self.quick_add_popup
        self.quick_add_popup = None
        if old is not None and shiboken6.isValid(old):
            old.close()
        popup = QuickAddPopup(self)
        popup.chosen.connect(lambda type_id: self.add_node(type_id, scene_pos))
        global_pos = self.viewport().mapToGlobal(self.mapFromScene(scene_pos))
        popup.popup_at(global_pos)
        self.quick_add_popup = popup
        popup.destroyed.connect(lambda _obj=None, p=popup: self._forget_quick_add(p))
        return popup

    def _forget_quick_add(self, popup: Any) -> None:
        if self.quick_add_popup is popup:
            self.quick_add_popup = None

    # --- drag and drop from the palette ---------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasFormat(NODE_MIME) and not self.node_scene.locked:
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        if event.mimeData().hasFormat(NODE_MIME) and not self.node_scene.locked:
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        mime = event.mimeData()
        if not mime.hasFormat(NODE_MIME) or self.node_scene.locked:
            event.ignore()
            return
        type_id = bytes(mime.data(NODE_MIME).data()).decode("utf-8")
        pos = self.mapToScene(event.position().toPoint())
        if self.add_node(type_id, pos) is not None:
            event.acceptProposedAction()
            self.setFocus()
        else:
            event.ignore()

    # --- context menu -----------------------------------------------------------------
    def contextMenuEvent(self, event: QContextMenuEvent) -> None:
        if self.context_menu_provider is None:
            return super().contextMenuEvent(event)
        pos = self.mapToScene(event.pos())
        item: Any = self.node_scene.node_at(pos)
        if item is None:
            edges = [it for it in self.scene().items(pos) if isinstance(it, EdgeItem)]
            item = edges[0] if edges else None
        if item is not None and not item.isSelected():
            self.scene().clearSelection()
            item.setSelected(True)
        menu = self.context_menu_provider(pos, item)
        if menu is not None:
            menu.exec(event.globalPos())

    # --- painting ------------------------------------------------------------------------
    def drawBackground(self, painter: QPainter, rect: QRectF | QRect) -> None:
        rect = QRectF(rect)
        t = theme()
        painter.fillRect(rect, t.canvas_bg)
        z = self.zoom()
        if z < 0.3:
            return
        left = math.floor(rect.left() / GRID) * GRID
        top = math.floor(rect.top() / GRID) * GRID
        minor: list[tuple[tuple[float, float], tuple[float, float]]] = []
        major: list[tuple[tuple[float, float], tuple[float, float]]] = []
        x = left
        while x < rect.right():
            (major if round(x / GRID) % 5 == 0 else minor).append(((x, rect.top()), (x, rect.bottom())))
            x += GRID
        y = top
        while y < rect.bottom():
            (major if round(y / GRID) % 5 == 0 else minor).append(((rect.left(), y), (rect.right(), y)))
            y += GRID
        if z >= 0.55:
            painter.setPen(QPen(t.grid_minor, 0))
            painter.drawLines([QLineF(a[0], a[1], b[0], b[1]) for a, b in minor])
        painter.setPen(QPen(t.grid_major, 0))
        painter.drawLines([QLineF(a[0], a[1], b[0], b[1]) for a, b in major])

    def drawForeground(self, painter: QPainter, rect: QRectF | QRect) -> None:
        if self.node_scene.node_items:
            return
        painter.save()
        painter.resetTransform()
        t = theme()
        f = QFont()
        f.setPointSizeF(11)
        painter.setFont(f)
        painter.setPen(t.text_muted)
        painter.drawText(self.viewport().rect(), Qt.AlignmentFlag.AlignCenter,
                         "Drag a node from the palette, or press Tab to search\n"
                         "Connect an output port to an input port to build the network")
        painter.restore()


__all__ = ["NodeView", "NODE_MIME"]
