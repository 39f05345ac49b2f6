"""The scene: a live mirror of the document's graph, plus the canvas interactions.

The scene subscribes to graph events and creates, moves and deletes items to
match; analyses update edge shape labels and red problem outlines. User
gestures (moving nodes, dragging a connection) become one core command each,
pushed through :meth:`Document.push`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable

import shiboken6
from PySide6.QtCore import QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QPainterPath
from PySide6.QtWidgets import QGraphicsScene, QGraphicsSceneMouseEvent

from netstudio.compiler.shapes import Analysis
from netstudio.errors import NetStudioError, Problem
from netstudio.graph.commands import Connect, MoveNodes
from netstudio.graph.model import Edge, EventKind, GraphEvent
from netstudio.nodes.base import TensorInfo
from netstudio.ui.canvas.items import (GRID, PORT_HIT_R, ConnectionPreview, CursorNote, EdgeItem, NodeItem,
                                       PortItem)
from netstudio.ui.document import Document
from netstudio.ui.layout import layered_layout
from netstudio.ui.paramcount import ParamCounter

log = logging.getLogger(__name__)


def _innermost(ev: GraphEvent) -> GraphEvent:
    """The event inside the BLOCK_CHANGED events that carry an edit made inside blocks."""
    while ev.kind == EventKind.BLOCK_CHANGED and isinstance(ev.new, GraphEvent):
        ev = ev.new
    return ev


def edge_label_text(analysis: Analysis | None, edge: Edge) -> str:
    """The shape shown on an edge, e.g. ``64×1×28×28`` (empty for loss/optimizer links)."""
    if analysis is None:
        return ""
    info = analysis.edge_info(edge)
    if not isinstance(info, TensorInfo) or info.dtype in ("loss", "optimizer"):
        return ""
    return info.fmt()


@dataclass
class _ConnectionDrag:
    origin: PortItem
    preview: ConnectionPreview
    note: CursorNote
    target: PortItem | None = None
    valid: bool = False
    reason: str = ""
    hint: str | None = None
    candidates: list[PortItem] = field(default_factory=list)


class NodeScene(QGraphicsScene):
    #: a short message for the status bar
    message = Signal(str)
    #: the set of selected node ids changed
    node_selection_changed = Signal(list)

    def __init__(self, document: Document, parent: Any = None) -> None:
        super().__init__(parent)
        self.doc = document
        self.node_items: dict[str, NodeItem] = {}
        self.edge_items: dict[Edge, EdgeItem] = {}
        self._node_edges: dict[str, set[Edge]] = {}
        self.snap_enabled = True
        self.user_dragging = False
        self.locked = False
        self.last_message = ""
        self.param_counter = ParamCounter()
        self._press_positions: dict[str, QPointF] | None = None
        self._drag: _ConnectionDrag | None = None
        self._analysis: Analysis | None = None
        self._bulk = 0
        # card rectangles (x0, y0, x1, y1) for edge routing: a plain dict scan is far
        # cheaper than QGraphicsScene.items(), which calls Python boundingRect()s
        self._rects: dict[str, tuple[float, float, float, float]] = {}
        self._pending_routes: set[Edge] = set()
        # where edge labels may go: node cards and placed labels, bucketed by grid cell
        self._node_cells: dict[tuple[int, int], set[str]] = {}
        self._node_cell_keys: dict[str, list[tuple[int, int]]] = {}
        self._label_rects: dict[Edge, QRectF] = {}
        self._label_cells: dict[tuple[int, int], set[Edge]] = {}
        self._moved_nodes: set[str] = set()

        # Infinite-feeling canvas: a big fixed rect gives the view room to pan.
        self.setSceneRect(-200000, -200000, 400000, 400000)
        self.setItemIndexMethod(QGraphicsScene.ItemIndexMethod.BspTreeIndex)

        self._count_timer = QTimer(self)
        self._count_timer.setSingleShot(True)
        self._count_timer.setInterval(40)
        self._count_timer.timeout.connect(self.update_param_counts)
        self._reroute_timer = QTimer(self)
        self._reroute_timer.setSingleShot(True)
        self._reroute_timer.setInterval(0)
        self._reroute_timer.timeout.connect(self.flush_routes)

        document.project_replaced.connect(self.rebuild)
        document.path_changed.connect(self.rebuild)
        document.graph_event.connect(self._on_graph_event)
        document.analysis_changed.connect(self.apply_analysis)
        # an edit, undo or redo that only moved nodes brings no new analysis: route its edges now all the same
        document.undo_stack.indexChanged.connect(self._on_undo_index)
        document.locked_changed.connect(self.set_locked)
        self.selectionChanged.connect(self._emit_selection)
        self.rebuild()

    # ------------------------------------------------------------------
    # mirroring the model
    # ------------------------------------------------------------------
    def rebuild(self) -> None:
        """Drop every item and recreate them from the current graph."""
        self._cancel_drag()
        self.clear()
        self.node_items.clear()
        self.edge_items.clear()
        self._node_edges.clear()
        self._rects.clear()
        self._pending_routes.clear()
        self._node_cells.clear()
        self._node_cell_keys.clear()
        self._label_rects.clear()
        self._label_cells.clear()
        self._moved_nodes.clear()
        graph = self.doc.current
        self._bulk += 1
        try:
            for nid in graph.nodes:
                self._add_node_item(nid)
            for e in graph.edges:
                self._add_edge_item(e)
        finally:
            self._bulk -= 1
        self.reroute_all()
        self.apply_analysis(self.doc.analysis())

    def _on_graph_event(self, ev: GraphEvent) -> None:
        # events come from the project's graph; inside a block, follow the ones of the open block
        inner = self.doc.current_event(ev)
        if inner is None:
            if self.doc.path and _innermost(ev).kind == EventKind.TRAINABLE_CHANGED:
                self._refresh_frozen()  # an open block (or one around it) was frozen or unfrozen
            return
        ev = inner
        graph = self.doc.current
        k = ev.kind
        if k == EventKind.BLOCK_CHANGED and ev.node_id in self.node_items:
            self._renew_node_item(ev.node_id)  # its inside changed: its ports may have too
        elif k == "node_added" and ev.node_id is not None:
            self._add_node_item(ev.node_id)
        elif k == "node_removed" and ev.node_id is not None:
            for e in list(self._node_edges.get(ev.node_id, ())):
                self._remove_edge_item(e)
            item = self.node_items.pop(ev.node_id, None)
            self._node_edges.pop(ev.node_id, None)
            self._rects.pop(ev.node_id, None)
            self._unindex_node(ev.node_id)
            if item is not None:
                self.removeItem(item)
        elif k == "edge_added" and ev.edge is not None:
            self._add_edge_item(ev.edge)
        elif k == "edge_removed" and ev.edge is not None:
            self._remove_edge_item(ev.edge)
        elif k == "param_changed" and ev.node_id in self.node_items:
            self.node_items[ev.node_id].set_params(graph.nodes[ev.node_id].params)
        elif k == "node_moved" and ev.node_id in self.node_items:
            self.node_items[ev.node_id].set_pos_from_model(graph.nodes[ev.node_id].pos)
        elif k == "node_renamed" and ev.node_id in self.node_items:
            self.node_items[ev.node_id].set_name(graph.nodes[ev.node_id].name)
        elif k == EventKind.TRAINABLE_CHANGED and ev.node_id in self.node_items:
            self.node_items[ev.node_id].set_frozen(not graph.nodes[ev.node_id].trainable or self._in_frozen_block())
        elif k == "reset":
            QTimer.singleShot(0, self.rebuild)

    def _renew_node_item(self, nid: str) -> None:
        """Replace a node's item (a block whose ports changed), with its edges."""
        edges = list(self._node_edges.get(nid, ()))
        selected = self.node_items[nid].isSelected()
        for e in edges:
            self._remove_edge_item(e)
        old = self.node_items.pop(nid)
        self._unindex_node(nid)
        self.removeItem(old)
        item = self._add_node_item(nid)
        item.setSelected(selected)
        graph = self.doc.current
        for e in graph.edges:
            if nid in (e.src, e.dst):
                self._add_edge_item(e)
        if self._analysis is not None:
            self.apply_analysis(self.doc.analysis())

    def _add_node_item(self, nid: str) -> NodeItem:
        graph = self.doc.current
        node = graph.nodes[nid]
        item = NodeItem(nid, graph.node_type(node), node.name, node.params)
        item.set_frozen(not node.trainable or self._in_frozen_block())
        item.setFlag(item.GraphicsItemFlag.ItemIsMovable, not self.locked)
        self.node_items[nid] = item
        self._node_edges.setdefault(nid, set())
        item.set_pos_from_model(node.pos)
        self._store_rect(item)
        self.addItem(item)
        return item

    def _in_frozen_block(self) -> bool:
        """True inside an open block that is frozen (or lies in a frozen one): all its nodes are frozen."""
        g = self.doc.graph
        for bid in self.doc.path:
            node = g.nodes[bid]
            if not node.trainable:
                return True
            assert node.inner is not None
            g = node.inner
        return False

    def _refresh_frozen(self) -> None:
        around = self._in_frozen_block()
        graph = self.doc.current
        for nid, item in self.node_items.items():
            item.set_frozen(around or not graph.nodes[nid].trainable)

    def _store_rect(self, item: NodeItem) -> None:
        p = item.pos()
        r = (p.x(), p.y(), p.x() + item.width, p.y() + item.height)
        self._rects[item.node_id] = r
        self._unindex_node(item.node_id)
        keys = _cells(*r)
        self._node_cell_keys[item.node_id] = keys
        for k in keys:
            self._node_cells.setdefault(k, set()).add(item.node_id)

    def _unindex_node(self, nid: str) -> None:
        for k in self._node_cell_keys.pop(nid, ()):
            cell = self._node_cells.get(k)
            if cell is not None:
                cell.discard(nid)

    def _add_edge_item(self, e: Edge) -> EdgeItem | None:
        src, dst = self.node_items.get(e.src), self.node_items.get(e.dst)
        if src is None or dst is None or e.src_port not in src.out_ports or e.dst_port not in dst.in_ports:
            log.warning("edge %s has no matching items", e)
            return None
        item = EdgeItem(e, src.out_ports[e.src_port], dst.in_ports[e.dst_port])
        self.edge_items[e] = item
        self._node_edges.setdefault(e.src, set()).add(e)
        self._node_edges.setdefault(e.dst, set()).add(e)
        self.addItem(item)
        item.set_label(edge_label_text(self._analysis, e))
        self._update_port_connected(item.src)
        self._update_port_connected(item.dst)
        if not self._bulk:
            self._route(item)
        return item

    def _remove_edge_item(self, e: Edge) -> None:
        self._unindex_label(e)
        item = self.edge_items.pop(e, None)
        for nid in (e.src, e.dst):
            self._node_edges.get(nid, set()).discard(e)
        if item is not None:
            self.removeItem(item)
            self._update_port_connected(item.src)
            self._update_port_connected(item.dst)

    def _update_port_connected(self, port: PortItem) -> None:
        nid, name = port.node_id, port.name
        connected = any((e.src == nid and e.src_port == name) if port.is_output else
                        (e.dst == nid and e.dst_port == name) for e in self._node_edges.get(nid, ()))
        port.set_connected(connected)

    # ------------------------------------------------------------------
    # analysis → labels, outlines, parameter counts
    # ------------------------------------------------------------------
    def apply_analysis(self, analysis: Analysis) -> None:
        """Show ``analysis`` (the project's); inside a block, the part of it for the open block."""
        if self.doc.path:
            analysis = analysis.inner(self.doc.path) or Analysis([], {}, [], analysis.batch_size)
        self.flush_routes()
        self._analysis = analysis
        by_node: dict[str, list[Problem]] = {}
        for p in analysis.problems:
            if p.node_id is not None:
                by_node.setdefault(p.node_id, []).append(p)
        for nid, item in self.node_items.items():
            item.set_problems(by_node.get(nid, []))
            if item.has_detail:
                item.set_detail(_dataset_detail(analysis, nid))
        relabel = [edge_item for e, edge_item in self.edge_items.items()
                   if edge_item.set_label(edge_label_text(analysis, e))]
        for edge_item in relabel:
            self._place_label(edge_item)
        self._count_timer.start()

    def update_param_counts(self) -> None:
        """Compute parameter counts (imports torch on first use)."""
        an = self.doc.current_analysis()
        graph = self.doc.current
        if an is None:
            return
        for nid, item in self.node_items.items():
            if item.has_count:
                item.set_param_count(self.param_counter.count(graph, an, nid))

    # ------------------------------------------------------------------
    # edge routing
    # ------------------------------------------------------------------
    def node_item_moved(self, item: NodeItem) -> None:
        if item.node_id not in self.node_items:
            return
        self._store_rect(item)
        edges = self._node_edges.get(item.node_id, ())
        self._moved_nodes.add(item.node_id)
        if item._moving_by_model:
            # model moves come in batches (undo, auto layout): route once at the end
            self._pending_routes.update(edges)
            self._reroute_timer.start()
            return
        routed = [self.edge_items[e] for e in edges if e in self.edge_items]
        for edge_item in routed:  # the user drags: follow the mouse now
            self._route(edge_item, place=False)
        self._place_labels(routed)

    def _on_undo_index(self, _index: int) -> None:
        if not self._bulk:
            self.flush_routes()

    def flush_routes(self) -> None:
        pending, self._pending_routes = self._pending_routes, set()
        routed = [self.edge_items[e] for e in pending if e in self.edge_items]
        for item in routed:
            self._route(item, place=False)
        self._place_labels(routed)

    def reroute_all(self) -> None:
        self._pending_routes.clear()
        self._moved_nodes.clear()
        for item in self.edge_items.values():
            self._route(item, place=False)
        self._label_rects.clear()
        self._label_cells.clear()
        self._place_labels(list(self.edge_items.values()))

    def _route(self, item: EdgeItem, place: bool = True) -> None:
        path, mid = self.route(item.src.scenePos(), item.dst.scenePos(), {item.edge.src, item.edge.dst})
        item.set_route(path, mid)
        if place:
            self._place_label(item)

    # ------------------------------------------------------------------
    # edge labels: where they fit
    # ------------------------------------------------------------------
    def _place_labels(self, items: list[EdgeItem]) -> None:
        """Place the labels of ``items``, then move any other label a moved node now covers."""
        for item in items:
            self._place_label(item)
        moved, self._moved_nodes = self._moved_nodes, set()
        if not moved:
            return
        done = {item.edge for item in items}
        hit: list[EdgeItem] = []
        for nid in moved:
            r = self._rects.get(nid)
            if r is None:
                continue
            rect = QRectF(r[0], r[1], r[2] - r[0], r[3] - r[1]).adjusted(-LABEL_MARGIN, -LABEL_MARGIN,
                                                                          LABEL_MARGIN, LABEL_MARGIN)
            for e in self._labels_near(rect):
                if e not in done and self._label_rects[e].intersects(rect) and e in self.edge_items:
                    done.add(e)
                    hit.append(self.edge_items[e])
        for item in hit:
            self._place_label(item)

    def _labels_near(self, rect: QRectF) -> set[Edge]:
        out: set[Edge] = set()
        for k in _cells(rect.left(), rect.top(), rect.right(), rect.bottom()):
            out |= self._label_cells.get(k, set())
        return out

    def _unindex_label(self, e: Edge) -> None:
        r = self._label_rects.pop(e, None)
        if r is None:
            return
        for k in _cells(r.left(), r.top(), r.right(), r.bottom()):
            cell = self._label_cells.get(k)
            if cell is not None:
                cell.discard(e)

    def _label_fits(self, rect: QRectF, edge: Edge) -> bool:
        r = rect.adjusted(-LABEL_MARGIN, -LABEL_MARGIN, LABEL_MARGIN, LABEL_MARGIN)
        x0, y0, x1, y1 = r.left(), r.top(), r.right(), r.bottom()
        keys = _cells(x0, y0, x1, y1)
        seen: set[str] = set()
        for k in keys:
            for nid in self._node_cells.get(k, ()):
                if nid in seen:
                    continue
                seen.add(nid)
                a, b, c, d = self._rects[nid]
                if a < x1 and c > x0 and b < y1 and d > y0:
                    return False
        for k in keys:
            for e in self._label_cells.get(k, ()):
                if e != edge and self._label_rects[e].intersects(r):
                    return False
        return True

    def _place_label(self, item: EdgeItem) -> None:
        """Put the edge's shape label on the first spot along the edge where it covers no node
        card and no other label; shorten it (full text in the tooltip) if the full one fits nowhere."""
        label = item.label
        self._unindex_label(item.edge)
        if not label.text:
            return
        path = item.path()
        choice: tuple[str, QPointF] | None = None
        for shown in label.variants():
            for t in LABEL_SPOTS:
                c = path.pointAtPercent(t)
                if self._label_fits(label.rect_at(c, shown), item.edge):
                    choice = (shown, c)
                    break
            if choice is not None:
                break
        if choice is None:  # no room anywhere: the shortest form in the middle
            choice = (label.variants()[-1], path.pointAtPercent(0.5))
        shown, c = choice
        label.set_shown(shown)
        label.setPos(c)
        rect = label.rect_at(c)
        self._label_rects[item.edge] = rect
        for k in _cells(rect.left(), rect.top(), rect.right(), rect.bottom()):
            self._label_cells.setdefault(k, set()).add(item.edge)

    def label_rects(self) -> dict[Edge, QRectF]:
        """Scene rectangles of the visible edge labels (tests, screenshots)."""
        return {e: QRectF(r) for e, r in self._label_rects.items()
                if e in self.edge_items and self.edge_items[e].label.isVisible()}

    def route(self, p0: QPointF, p1: QPointF, exclude: Iterable[str] = ()) -> tuple[QPainterPath, QPointF]:
        """A smooth path from an output port to an input port, and where its label goes.

        A plain S-curve when nothing is in the way; otherwise the edge drops
        into a free horizontal lane above or below the nodes it would cross,
        so long edges (dataset → loss target) never run through node cards.
        """
        x0, y0, x1, y1 = p0.x(), p0.y(), p1.x(), p1.y()
        dx = x1 - x0
        path = QPainterPath(p0)
        if dx < 30:  # backwards (the next row of a wrapped layout) or stacked
            return self._back_route(p0, p1, set(exclude))
        k = max(24.0, dx * 0.45)
        path.cubicTo(QPointF(x0 + k, y0), QPointF(x1 - k, y1), p1)
        excluded = set(exclude)
        lo, hi = x0 + 6, x1 - 6
        obstacles = [QRectF(a - 4, b - 4, c - a + 8, d - b + 8) for nid, (a, b, c, d) in self._rects.items()
                     if c > lo and a < hi and nid not in excluded]
        if not obstacles or not _path_hits(path, obstacles):
            return path, path.pointAtPercent(0.5)
        below = _free_lane(obstacles, max(y0, y1), +1)
        above = _free_lane(obstacles, min(y0, y1), -1)
        lane = below if abs(below - y0) + abs(below - y1) <= abs(above - y0) + abs(above - y1) else above
        w = min(70.0, dx / 3)
        path = QPainterPath(p0)
        path.cubicTo(QPointF(x0 + w * 0.6, y0), QPointF(x0 + w * 0.4, lane), QPointF(x0 + w, lane))
        path.lineTo(QPointF(x1 - w, lane))
        path.cubicTo(QPointF(x1 - w * 0.4, lane), QPointF(x1 - w * 0.6, y1), p1)
        if abs(y1 - y0) > 40 and _path_hits(path, obstacles, 48):
            around = self._around_route(p0, p1, excluded)
            if around is not None:
                return around
        return path, QPointF((x0 + x1) / 2, lane)

    def _around_route(self, p0: QPointF, p1: QPointF, ends: set[str]) -> tuple[QPainterPath, QPointF] | None:
        """An edge from one row of cards to a row further down (or up), e.g. the dataset's target
        to the loss in a wrapped layout: into the gap beside its source row, along it to the left
        of every card in between, and back along the gap beside the target's row."""
        x0, y0, x1, y1 = p0.x(), p0.y(), p1.x(), p1.y()
        down = y1 > y0
        step = 14.0
        xa, xb = x0 + step, x1 - step
        all_rects = [QRectF(a - 4, b - 4, c - a + 8, d - b + 8) for a, b, c, d in self._rects.values()]
        left = min((r.left() for r in all_rects), default=min(x0, x1)) - 26
        src_span = [r for r in all_rects if r.right() > left and r.left() < xa]
        dst_span = [r for r in all_rects if r.right() > left and r.left() < xb]
        g0 = _free_lane(src_span, y0, +1 if down else -1)
        g1 = _free_lane(dst_span, y1, -1 if down else +1)
        if (g1 <= g0) if down else (g1 >= g0):
            return None
        path = _rounded_polyline([p0, QPointF(xa, y0), QPointF(xa, g0), QPointF(left, g0), QPointF(left, g1),
                                  QPointF(xb, g1), QPointF(xb, y1), p1], 12.0)
        others = [QRectF(a - 2, b - 2, c - a + 4, d - b + 4) for nid, (a, b, c, d) in self._rects.items()
                  if nid not in ends]
        if _path_hits(path, others, 96):
            return None
        return path, QPointF((xb + left) / 2, g1)

    def _back_route(self, p0: QPointF, p1: QPointF, ends: set[str]) -> tuple[QPainterPath, QPointF]:
        """An edge to a node left of its source: out to the right, along a free horizontal lane
        between the cards (the gap between two rows), and into the input from the left."""
        x0, y0, x1, y1 = p0.x(), p0.y(), p1.x(), p1.y()
        r = 26.0
        lo, hi = x1 - r - 4, x0 + r + 4
        obstacles = [QRectF(a - 4, b - 4, c - a + 8, d - b + 8) for nid, (a, b, c, d) in self._rects.items()
                     if c > lo and a < hi]
        down = y1 >= y0
        lane = _free_lane(obstacles, y0, +1 if down else -1)
        if down and lane > y1 and not any(o.top() < y1 < o.bottom() and o.left() < x1 - r for o in obstacles):
            lane = (y0 + y1) / 2 if abs(y1 - y0) > 8 else y0 + 60
        path = _rounded_polyline([p0, QPointF(x0 + r, y0), QPointF(x0 + r, lane), QPointF(x1 - r, lane),
                                  QPointF(x1 - r, y1), p1], 12.0)
        return path, QPointF((x0 + x1) / 2, lane)

    # ------------------------------------------------------------------
    # selection helpers
    # ------------------------------------------------------------------
    def _emit_selection(self) -> None:
        if shiboken6.isValid(self):  # the scene's destructor deselects items as it goes
            self.node_selection_changed.emit(self.selected_node_ids())

    def selected_node_ids(self) -> list[str]:
        order = list(self.doc.current.nodes)
        ids = [it.node_id for it in self.selectedItems() if isinstance(it, NodeItem)]
        return sorted(ids, key=lambda n: order.index(n) if n in order else 0)

    def selected_edges(self) -> list[Edge]:
        return [it.edge for it in self.selectedItems() if isinstance(it, EdgeItem)]

    def select_nodes(self, ids: Iterable[str]) -> None:
        wanted = set(ids)
        self.blockSignals(True)
        try:
            self.clearSelection()
            for nid in wanted:
                item = self.node_items.get(nid)
                if item is not None:
                    item.setSelected(True)
        finally:
            self.blockSignals(False)
        self.node_selection_changed.emit(self.selected_node_ids())

    def set_locked(self, locked: bool) -> None:
        self.locked = locked
        self._cancel_drag()
        for item in self.node_items.values():
            item.setFlag(item.GraphicsItemFlag.ItemIsMovable, not locked)

    def nodes_rect(self) -> QRectF:
        rect = QRectF()
        for item in self.node_items.values():
            rect = rect.united(item.sceneBoundingRect())
        return rect

    def snap_point(self, p: QPointF) -> QPointF:
        if not self.snap_enabled:
            return QPointF(p)
        return QPointF(round(p.x() / GRID) * GRID, round(p.y() / GRID) * GRID)

    def say(self, text: str) -> None:
        self.last_message = text
        self.message.emit(text)

    # ------------------------------------------------------------------
    # automatic layout
    # ------------------------------------------------------------------
    def layout_positions(self, fit: tuple[float, float] | None = None) -> dict[str, tuple[float, float]]:
        """Auto-layout positions; the layers wrap into rows that fit ``fit`` (w, h in pixels; by
        default the size of the view showing this scene)."""
        graph = self.doc.current
        if fit is None and self.views():
            vp = self.views()[0].viewport().size()
            fit = (float(vp.width()), float(vp.height()))
        items = self.node_items
        sizes = {nid: (it.width, it.height) for nid, it in items.items()}

        def port_offset(nid: str, port: str, is_output: bool) -> float:
            it = items[nid]
            p = (it.out_ports if is_output else it.in_ports).get(port)
            return p.pos().y() if p is not None else it.height / 2

        origin = (0.0, 0.0)
        if items:
            r = self.nodes_rect()
            origin = (round(r.left() / GRID) * GRID, round(r.top() / GRID) * GRID)
        hint = {nid: it.pos().y() for nid, it in items.items()}
        labels = {(e.src, e.src_port, e.dst, e.dst_port): it.label.size_for(it.label.text)[0]
                  for e, it in self.edge_items.items() if it.label.text}

        def edge_gap(e: tuple[str, str, str, str]) -> float:
            # room for the shape label plus the two ports on either side of it
            w = labels.get(e)
            return 0.0 if w is None else w + 22

        return layered_layout(list(graph.nodes), [tuple(e.to_list()) for e in graph.edges],  # type: ignore[misc]
                              sizes, port_offset, order_hint=hint, origin=origin, grid=GRID, edge_gap=edge_gap,
                              fit=fit)

    def auto_layout(self, fit: tuple[float, float] | None = None) -> bool:
        """Lay the graph out left to right, wrapped into rows that fit the view, as one undoable move."""
        new = self.layout_positions(fit)
        graph = self.doc.current
        old = {nid: graph.nodes[nid].pos for nid in new}
        changed = {nid: pos for nid, pos in new.items() if pos != old[nid]}
        if not changed:
            return False
        cmd = MoveNodes({nid: old[nid] for nid in changed}, changed)
        cmd.text = "Auto layout"
        self._bulk += 1  # every edge is routed once below, not also as the move's edges
        try:
            ok = self.doc.push(cmd)
        finally:
            self._bulk -= 1
        self.reroute_all()
        return ok

    # ------------------------------------------------------------------
    # mouse: moving nodes and dragging connections
    # ------------------------------------------------------------------
    def port_at(self, pos: QPointF) -> PortItem | None:
        r = PORT_HIT_R
        best: PortItem | None = None
        best_d = r * r + 1
        for it in self.items(QRectF(pos.x() - r, pos.y() - r, 2 * r, 2 * r)):
            if isinstance(it, PortItem):
                d = _dist2(it.scenePos(), pos)
                if d < best_d:
                    best, best_d = it, d
        return best

    def node_at(self, pos: QPointF) -> NodeItem | None:
        for it in self.items(pos):
            if isinstance(it, NodeItem):
                return it
            if isinstance(it, PortItem):
                return it.node_item
        return None

    def mousePressEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            port = self.port_at(event.scenePos())
            if port is not None:
                if self.locked:
                    self.say("The graph is locked while training")
                else:
                    self._begin_drag(port, event.scenePos())
                event.accept()
                return
            self.user_dragging = True
            super().mousePressEvent(event)
            self._press_positions = {it.node_id: it.pos() for it in self.selectedItems()
                                     if isinstance(it, NodeItem)}
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        if self._drag is not None:
            self._update_drag(event.scenePos())
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        if self._drag is not None and event.button() == Qt.MouseButton.LeftButton:
            self._update_drag(event.scenePos())
            self._finish_drag()
            event.accept()
            return
        super().mouseReleaseEvent(event)
        if event.button() == Qt.MouseButton.LeftButton:
            self.user_dragging = False
            self._commit_move()

    def _commit_move(self) -> None:
        """A finished drag of nodes becomes one MoveNodes command."""
        before, self._press_positions = self._press_positions, None
        if not before:
            return
        graph = self.doc.current
        old: dict[str, tuple[float, float]] = {}
        new: dict[str, tuple[float, float]] = {}
        for nid in before:
            item = self.node_items.get(nid)
            if item is None or nid not in graph.nodes:
                continue
            pos = (item.pos().x(), item.pos().y())
            if pos != graph.nodes[nid].pos:
                old[nid] = graph.nodes[nid].pos
                new[nid] = pos
        if new:
            try:
                self.doc.push(MoveNodes(old, new))
            except NetStudioError as e:
                for nid, pos in old.items():  # locked: put the cards back
                    self.node_items[nid].set_pos_from_model(pos)
                self.say(str(e))
            self.reroute_all()

    # --- connection drag ----------------------------------------------------------
    def _begin_drag(self, port: PortItem, pos: QPointF) -> None:
        preview = ConnectionPreview(port.kind)
        note = CursorNote()
        note.setVisible(False)
        self.addItem(preview)
        self.addItem(note)
        self._drag = _ConnectionDrag(port, preview, note)
        self._update_drag(pos)

    def _endpoints(self, origin: PortItem, other: PortItem) -> tuple[PortItem, PortItem]:
        return (origin, other) if origin.is_output else (other, origin)

    def _candidate(self, pos: QPointF) -> PortItem | None:
        assert self._drag is not None
        origin = self._drag.origin
        port = self.port_at(pos)
        if port is not None and port.is_output != origin.is_output and port.node_item is not origin.node_item:
            return port
        node = self.node_at(pos)
        if node is None or node is origin.node_item:
            return None
        # Dropping on a card: the nearest port of the right direction; a
        # compatible one wins, so users need not hit the small port exactly.
        ports = list(node.in_ports.values() if origin.is_output else node.out_ports.values())
        if not ports:
            return None
        ports.sort(key=lambda p: _dist2(p.scenePos(), pos))
        for p in ports:
            if self._check(origin, p)[0]:
                return p
        return ports[0]

    def _check(self, origin: PortItem, other: PortItem) -> tuple[bool, str, str | None]:
        src, dst = self._endpoints(origin, other)
        try:
            self.doc.current.check_connect(src.node_id, src.name, dst.node_id, dst.name)
        except NetStudioError as e:
            return False, e.message, e.hint
        return True, "", None

    def _update_drag(self, pos: QPointF) -> None:
        d = self._drag
        if d is None:
            return
        target = self._candidate(pos)
        if target is not d.target:
            if d.target is not None:
                d.target.set_state("normal")
            d.target = target
        if target is not None:
            d.valid, d.reason, d.hint = self._check(d.origin, target)
            target.set_state("ok" if d.valid else "bad")
            d.preview.set_valid(d.valid)
            if d.valid:
                d.note.setVisible(False)
            else:
                d.note.set_message(d.reason + (f"\n→ {d.hint}" if d.hint else ""))
                d.note.setPos(pos)
                self.say(f"Cannot connect: {d.reason}" + (f" — {d.hint}" if d.hint else ""))
        else:
            d.valid, d.reason, d.hint = False, "", None
            d.preview.set_valid(None)
            d.note.setVisible(False)
        end = target.scenePos() if target is not None else pos
        start = d.origin.scenePos()
        a, b = (start, end) if d.origin.is_output else (end, start)
        k = max(30.0, abs(b.x() - a.x()) * 0.45)
        path = QPainterPath(a)
        path.cubicTo(QPointF(a.x() + k, a.y()), QPointF(b.x() - k, b.y()), b)
        d.preview.setPath(path)

    def _finish_drag(self) -> None:
        d = self._drag
        if d is None:
            return
        target, valid = d.target, d.valid
        reason, hint = d.reason, d.hint
        origin = d.origin
        self._cancel_drag()
        if target is None:
            return
        if not valid:
            self.say(f"Connection refused: {reason}" + (f" — {hint}" if hint else ""))
            return
        src, dst = self._endpoints(origin, target)
        try:
            self.doc.push(Connect(src.node_id, src.name, dst.node_id, dst.name))
        except NetStudioError as e:
            self.say(f"Connection refused: {e}")
            return
        self.say(f"Connected {self.doc.current.nodes[src.node_id].name}.{src.name} → "
                 f"{self.doc.current.nodes[dst.node_id].name}.{dst.name}")

    def _cancel_drag(self) -> None:
        d, self._drag = self._drag, None
        if d is None:
            return
        if d.target is not None:
            d.target.set_state("normal")
        for it in (d.preview, d.note):
            if it.scene() is self:
                self.removeItem(it)

    @property
    def dragging_connection(self) -> bool:
        return self._drag is not None

    @property
    def drag_target(self) -> PortItem | None:
        return self._drag.target if self._drag else None

    @property
    def drag_note_text(self) -> str:
        return self._drag.note.text if self._drag and self._drag.note.isVisible() else ""


#: where along an edge its label may sit, in order of preference
LABEL_SPOTS = (0.5, 0.42, 0.58, 0.34, 0.66, 0.26, 0.74, 0.18, 0.82, 0.1, 0.9)
#: free space kept around a label (scene units)
LABEL_MARGIN = 2.0
_CELL = 160.0


def _cells(x0: float, y0: float, x1: float, y1: float) -> list[tuple[int, int]]:
    """The grid cells a rectangle touches (a cheap spatial index for cards and labels)."""
    i0, i1 = int(x0 // _CELL), int(x1 // _CELL)
    j0, j1 = int(y0 // _CELL), int(y1 // _CELL)
    return [(i, j) for i in range(i0, i1 + 1) for j in range(j0, j1 + 1)]


def _rounded_polyline(points: list[QPointF], radius: float) -> QPainterPath:
    """A path through ``points`` with its corners rounded."""
    path = QPainterPath(points[0])
    for i in range(1, len(points) - 1):
        a, b, c = points[i - 1], points[i], points[i + 1]
        d1 = ((b.x() - a.x()) ** 2 + (b.y() - a.y()) ** 2) ** 0.5
        d2 = ((c.x() - b.x()) ** 2 + (c.y() - b.y()) ** 2) ** 0.5
        rr = min(radius, d1 / 2, d2 / 2)
        if rr < 0.5:
            path.lineTo(b)
            continue
        p = QPointF(b.x() + (a.x() - b.x()) * rr / d1, b.y() + (a.y() - b.y()) * rr / d1)
        q = QPointF(b.x() + (c.x() - b.x()) * rr / d2, b.y() + (c.y() - b.y()) * rr / d2)
        path.lineTo(p)
        path.quadTo(b, q)
    path.lineTo(points[-1])
    return path


def _dist2(a: QPointF, b: QPointF) -> float:
    return (a.x() - b.x()) ** 2 + (a.y() - b.y()) ** 2


def _path_hits(path: QPainterPath, rects: list[QRectF], samples: int = 24) -> bool:
    for i in range(1, samples):
        p = path.pointAtPercent(i / samples)
        if any(r.contains(p) for r in rects):
            return True
    return False


def _free_lane(rects: list[QRectF], start: float, direction: int) -> float:
    """First y from ``start`` (going down if direction > 0) not inside any rect, with a margin."""
    y = start
    margin = 16.0
    for _ in range(len(rects) + 1):
        hits = [r for r in rects if r.top() - margin < y < r.bottom() + margin]
        if not hits:
            return y
        y = (max(r.bottom() for r in hits) + margin + 2) if direction > 0 else \
            (min(r.top() for r in hits) - margin - 2)
    return y


def _dataset_detail(analysis: Analysis, nid: str) -> str:
    res = analysis.results.get(nid)
    info = res.extra.get("dataset") if res is not None else None
    if info is None:
        return ""
    shape = "×".join(str(d) for d in info.feature_shape)
    if info.task == "classification" and info.num_classes:
        return f"{shape} → {info.num_classes} classes"
    return f"{shape} → regression"


__all__ = ["NodeScene", "edge_label_text"]
