"""Graphics items of the canvas: node cards, typed ports, edges with shape labels.

Items are views only: each holds the id of what it shows and is updated by
:class:`netstudio.ui.canvas.scene.NodeScene` from graph events and analyses.
They never change the graph themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import (QBrush, QColor, QFont, QFontMetricsF, QLinearGradient, QPainter, QPainterPath,
                           QPainterPathStroker, QPen, QPolygonF)
from PySide6.QtWidgets import (QGraphicsItem, QGraphicsObject, QGraphicsPathItem, QStyle, QStyleOptionGraphicsItem,
                               QWidget)

from netstudio.errors import Problem
from netstudio.graph.model import Edge
from netstudio.nodes.base import Category, LayerType, NodeType, Port, PortKind
from netstudio.ui.theme import CATEGORY_COLORS, PORT_COLORS, theme

if TYPE_CHECKING:  # pragma: no cover
    from netstudio.ui.canvas.scene import NodeScene

GRID = 20.0
HEADER_H = 28.0
ROW_H = 18.0
PAD = 7.0
PORT_R = 5.5
PORT_HIT_R = 10.0
WIDE_W = 172.0
NARROW_W = 116.0
RADIUS = 7.0

# Below this zoom, text is unreadable anyway: draw plain shapes (fast panning of big graphs).
LOD_TEXT = 0.42


def _font(size: float, bold: bool = False, mono: bool = False) -> QFont:
    f = QFont()
    if mono:
        f.setFamilies(["JetBrains Mono", "DejaVu Sans Mono", "Menlo", "Consolas", "monospace"])
        f.setStyleHint(QFont.StyleHint.Monospace)
    f.setPointSizeF(size)
    f.setBold(bold)
    return f


TITLE_FONT = _font(10.0, bold=True)
NAME_FONT = _font(9.0)
BODY_FONT = _font(9.0)
PORT_FONT = _font(9.0)
LABEL_FONT = _font(8.0, mono=True)


def format_count(n: int) -> str:
    """Compact parameter count for a node card: 850, 12.3K, 1.2M."""
    if n < 1000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1000:.1f}K".replace(".0K", "K")
    return f"{n / 1_000_000:.2f}M".replace(".00M", "M")


def _port_path(kind: PortKind, r: float = PORT_R) -> QPainterPath:
    """The port glyph centred on (0, 0): the shape tells the value kind."""
    path = QPainterPath()
    if kind == PortKind.TENSOR:
        path.addEllipse(QRectF(-r, -r, 2 * r, 2 * r))
    elif kind == PortKind.TARGET:
        path.addPolygon(QPolygonF([QPointF(0, -r - 1), QPointF(r + 1, 0), QPointF(0, r + 1), QPointF(-r - 1, 0)]))
        path.closeSubpath()
    elif kind == PortKind.LOSS:
        path.addRoundedRect(QRectF(-r + 0.5, -r + 0.5, 2 * r - 1, 2 * r - 1), 1.5, 1.5)
    else:
        path.addPolygon(QPolygonF([QPointF(-r + 1, -r), QPointF(r + 1, 0), QPointF(-r + 1, r)]))
        path.closeSubpath()
    return path


class PortItem(QGraphicsPathItem):
    """One input or output port; its shape shows the port kind.

    tensor ● circle · target ◆ diamond · loss ■ square · optimizer ▶ triangle

    A plain path item styled with pen and brush: no Python ``paint`` or
    ``boundingRect`` runs per frame, which matters with thousands of ports.
    """

    def __init__(self, node_item: "NodeItem", port: Port, is_output: bool) -> None:
        super().__init__(_port_path(port.kind), node_item)
        self.node_item = node_item
        self.port = port
        self.is_output = is_output
        self.state = "normal"  # normal | hover | ok | bad
        self.connected = False
        self.setAcceptHoverEvents(True)
        self.setZValue(2)
        kind = port.kind.value + (", accepts several" if port.multi else "") + (", optional" if port.optional else "")
        self.setToolTip(f"{'output' if is_output else 'input'} '{port.display}' ({kind})"
                        + (f": {port.help}" if port.help else ""))
        self.refresh_theme()

    @property
    def node_id(self) -> str:
        return self.node_item.node_id

    @property
    def name(self) -> str:
        return self.port.name

    @property
    def kind(self) -> PortKind:
        return self.port.kind

    def set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.refresh_theme()

    def set_connected(self, connected: bool) -> None:
        if connected != self.connected:
            self.connected = connected
            self.refresh_theme()

    def refresh_theme(self) -> None:
        t = theme()
        color = PORT_COLORS[self.port.kind]
        scale = 1.0
        if self.state == "ok":
            color, scale = t.ok, 1.4
        elif self.state == "bad":
            color, scale = t.error, 1.4
        elif self.state == "hover":
            scale = 1.3
        filled = self.connected or self.state != "normal"
        # an open port is a ring in its kind colour; a connected one is filled
        self.setPen(QPen(t.node_body if filled else color, 2.0))
        self.setBrush(QBrush(color if filled else t.node_body_alt))
        self.setScale(scale)

    def hoverEnterEvent(self, event: Any) -> None:
        if self.state == "normal":
            self.set_state("hover")
        super().hoverEnterEvent(event)

    def hoverLeaveEvent(self, event: Any) -> None:
        if self.state == "hover":
            self.set_state("normal")
        super().hoverLeaveEvent(event)


class NodeItem(QGraphicsItem):
    """A node card: category-coloured header with type and name, key params, parameter count."""

    def __init__(self, node_id: str, nt: NodeType, name: str, params: dict[str, Any]) -> None:
        super().__init__()
        self.node_id = node_id
        self.nt = nt
        self.type_id = nt.type_id
        self.category: Category = nt.category
        self.name = name
        self.summary = nt.summary(params)
        self.props = _props(nt, params)  # one (label, value) row per summary param
        self.detail = ""             # extra line set by the scene (dataset sizes)
        self.param_count: int | None = None
        self.problems: list[Problem] = []
        self.resolved: dict[str, Any] = {}
        self.frozen = False           # trainable off: hatched body, snowflake in the header
        self._moving_by_model = False

        self.setFlags(QGraphicsItem.GraphicsItemFlag.ItemIsMovable
                      | QGraphicsItem.GraphicsItemFlag.ItemIsSelectable
                      | QGraphicsItem.GraphicsItemFlag.ItemSendsGeometryChanges)
        self.setAcceptHoverEvents(True)
        # Node cards are the expensive part of a repaint (text); caching them in
        # device pixels keeps panning smooth on big graphs.
        self.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.setZValue(1)

        self.show_port_labels = (len(nt.inputs) > 1 or len(nt.outputs) > 1 or nt.holds_graph
                                 or any(p.kind != PortKind.TENSOR for p in (*nt.inputs, *nt.outputs)))
        self.has_summary = bool(nt.summary_params)
        self.has_count = (isinstance(nt, LayerType) and bool(nt.params)) or nt.holds_graph  # a block: its sum
        self.has_detail = nt.category == Category.DATA
        # a title the narrow card would cut ("Block output") gets the wide card too
        long_title = QFontMetricsF(TITLE_FONT).horizontalAdvance(nt.title) > NARROW_W - 28
        wide = self.has_summary or self.show_port_labels or self.has_detail or long_title
        self.width = WIDE_W if wide else NARROW_W
        port_rows = max(len(nt.inputs), len(nt.outputs)) if self.show_port_labels else 0
        self.info_rows = len(nt.summary_params) + int(self.has_count) + int(self.has_detail)
        rows = port_rows + self.info_rows
        self.body_h = max(PAD * 2 + rows * ROW_H, 24.0)
        self.height = HEADER_H + self.body_h
        self.port_rows = port_rows
        self._bounds = QRectF(-3, -3, self.width + 6, self.height + 8)  # incl. the drop shadow

        self.in_ports: dict[str, PortItem] = {}
        self.out_ports: dict[str, PortItem] = {}
        for i, p in enumerate(nt.inputs):
            item = PortItem(self, p, False)
            item.setPos(0.0, self._port_y(i, len(nt.inputs)))
            self.in_ports[p.name] = item
        for i, p in enumerate(nt.outputs):
            item = PortItem(self, p, True)
            item.setPos(self.width, self._port_y(i, len(nt.outputs)))
            self.out_ports[p.name] = item
        self._update_tooltip()

    # --- geometry -----------------------------------------------------------
    def _port_y(self, index: int, count: int) -> float:
        if self.show_port_labels:
            return HEADER_H + PAD + index * ROW_H + ROW_H / 2
        return HEADER_H + self.body_h / 2

    def boundingRect(self) -> QRectF:
        return self._bounds

    def shape(self) -> QPainterPath:
        path = QPainterPath()
        path.addRoundedRect(QRectF(0, 0, self.width, self.height), RADIUS, RADIUS)
        return path

    def card_rect(self) -> QRectF:
        return QRectF(0, 0, self.width, self.height)

    def ports(self) -> list[PortItem]:
        return [*self.in_ports.values(), *self.out_ports.values()]

    # --- state from the model ---------------------------------------------------
    def set_name(self, name: str) -> None:
        self.name = name
        self._update_tooltip()
        self.update()

    def set_params(self, params: dict[str, Any]) -> None:
        self.summary = self.nt.summary(params)
        self.props = _props(self.nt, params)
        self.update()

    def set_problems(self, problems: list[Problem]) -> None:
        if problems != self.problems:
            self.problems = problems
            self._update_tooltip()
            self.update()

    def set_param_count(self, count: int | None) -> None:
        if count != self.param_count:
            self.param_count = count
            self.update()

    def set_detail(self, text: str) -> None:
        if text != self.detail:
            self.detail = text
            self.update()

    def set_frozen(self, frozen: bool) -> None:
        if frozen != self.frozen:
            self.frozen = frozen
            self._update_tooltip()
            self.update()

    @property
    def has_error(self) -> bool:
        return any(p.severity == "error" for p in self.problems)

    def _update_tooltip(self) -> None:
        lines = [f"<b>{self.nt.title}</b> '{self.name}'", self.nt.description]
        if self.frozen:
            lines.append("❄ frozen: its weights are not trained")
        for p in self.problems:
            color = "#ff5c5c" if p.severity == "error" else "#e8a317"
            lines.append(f"<span style='color:{color}'>● {p.message}</span>")
            if p.hint:
                lines.append(f"&nbsp;&nbsp;Fix: {p.hint}")
        self.setToolTip("<br>".join(x for x in lines if x))

    def set_pos_from_model(self, pos: tuple[float, float]) -> None:
        self._moving_by_model = True
        try:
            self.setPos(QPointF(pos[0], pos[1]))
        finally:
            self._moving_by_model = False

    def itemChange(self, change: QGraphicsItem.GraphicsItemChange, value: Any) -> Any:
        scene: "NodeScene | None" = self.scene()  # type: ignore[assignment]
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionChange and scene is not None:
            if not self._moving_by_model and scene.snap_enabled and scene.user_dragging:
                p = QPointF(value)
                return QPointF(round(p.x() / GRID) * GRID, round(p.y() / GRID) * GRID)
        elif change == QGraphicsItem.GraphicsItemChange.ItemPositionHasChanged and scene is not None:
            scene.node_item_moved(self)
        return super().itemChange(change, value)

    # --- painting -------------------------------------------------------------------
    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        t = theme()
        lod = option.levelOfDetailFromTransform(painter.worldTransform())
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = self.card_rect()
        cat = CATEGORY_COLORS[self.category]
        selected = self.isSelected()
        error = self.has_error

        if lod >= LOD_TEXT:
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(t.shadow)
            painter.drawRoundedRect(rect.translated(0, 3), RADIUS, RADIUS)

        body = QPainterPath()
        body.addRoundedRect(rect, RADIUS, RADIUS)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(t.node_body)
        painter.drawPath(body)

        # header band: clip the rounded card to the header height
        header = QPainterPath()
        header.addRect(QRectF(0, 0, self.width, HEADER_H))
        header = body.intersected(header)
        grad = QLinearGradient(0, 0, 0, HEADER_H)
        grad.setColorAt(0.0, cat.lighter(112))
        grad.setColorAt(1.0, cat.darker(108))
        painter.setBrush(QBrush(grad))
        painter.drawPath(header)
        if self.frozen:  # greyed, hatched card
            hatch = QColor(t.text_muted)
            hatch.setAlphaF(0.35)
            painter.setBrush(QBrush(hatch, Qt.BrushStyle.BDiagPattern))
            painter.drawPath(body)

        if selected:
            border = QPen(t.selection, 2.4)
        elif error:
            border = QPen(t.error, 2.4)
        else:
            border = QPen(t.node_border, 1.0)
        painter.setPen(border)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRoundedRect(rect, RADIUS, RADIUS)
        if selected and error:  # keep the error visible on a selected node
            painter.setPen(QPen(t.error, 1.4, Qt.PenStyle.DashLine))
            painter.drawRoundedRect(rect.adjusted(3, 3, -3, -3), RADIUS - 2, RADIUS - 2)

        if lod < LOD_TEXT:
            if lod >= 0.12:  # overview: one big type title, readable when zoomed far out
                fit = 10.0 * (self.width - 12) / max(QFontMetricsF(_font(10.0, bold=True))
                                                     .horizontalAdvance(self.nt.title), 1.0)
                f = _font(max(4.0, min(8.0 / lod, self.body_h * 0.5, fit)), bold=True)
                painter.setFont(f)
                painter.setPen(t.text)
                painter.drawText(QRectF(4, HEADER_H, self.width - 8, self.body_h), Qt.AlignmentFlag.AlignCenter,
                                 QFontMetricsF(f).elidedText(self.nt.title, Qt.TextElideMode.ElideRight,
                                                             self.width - 8))
            return

        # header text: type title bold, node name to the right
        right = self.width - 9
        if error:
            badge_c = QPointF(self.width - 14, HEADER_H / 2)
            painter.setPen(QPen(QColor("#ffffff"), 1.5))
            painter.setBrush(t.error)
            painter.drawEllipse(badge_c, 7, 7)
            painter.setPen(QColor("#ffffff"))
            painter.setFont(_font(8.0, bold=True))
            painter.drawText(QRectF(badge_c.x() - 7, badge_c.y() - 7, 14, 14), Qt.AlignmentFlag.AlignCenter, "!")
            right -= 20
        if self.frozen:
            painter.setPen(t.header_text)
            painter.setFont(_font(10.0, bold=True))
            painter.drawText(QRectF(right - 14, 0, 14, HEADER_H), Qt.AlignmentFlag.AlignCenter, "❄")
            right -= 18
        painter.setFont(TITLE_FONT)
        fm = QFontMetricsF(TITLE_FONT)
        title_w = min(fm.horizontalAdvance(self.nt.title), right - 10)
        painter.setPen(t.header_text)
        painter.drawText(QRectF(10, 0, title_w + 1, HEADER_H), Qt.AlignmentFlag.AlignVCenter,
                         fm.elidedText(self.nt.title, Qt.TextElideMode.ElideRight, right - 10))
        name_space = right - (10 + title_w + 8)
        painter.setFont(NAME_FONT)
        nfm = QFontMetricsF(NAME_FONT)
        if nfm.horizontalAdvance(self.name) <= name_space and self.name != self.nt.title.lower():
            c = QColor(t.header_text)
            c.setAlphaF(0.75)
            painter.setPen(c)
            painter.drawText(QRectF(right - name_space, 0, name_space, HEADER_H),
                             Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight,
                             self.name)

        y = HEADER_H + PAD
        if self.show_port_labels:
            painter.setFont(PORT_FONT)
            pfm = QFontMetricsF(PORT_FONT)
            half = self.width / 2 - 14
            for i, p in enumerate(self.nt.inputs):
                painter.setPen(t.text_muted)
                painter.drawText(QRectF(13, y + i * ROW_H, half, ROW_H), Qt.AlignmentFlag.AlignVCenter,
                                 pfm.elidedText(p.display, Qt.TextElideMode.ElideRight, half))
            for i, p in enumerate(self.nt.outputs):
                painter.setPen(t.text_muted)
                painter.drawText(QRectF(self.width - 13 - half, y + i * ROW_H, half, ROW_H),
                                 Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight,
                                 pfm.elidedText(p.display, Qt.TextElideMode.ElideRight, half))
            y += self.port_rows * ROW_H
        text_w = self.width - 24
        painter.setFont(BODY_FONT)
        bfm = QFontMetricsF(BODY_FONT)
        if not self.info_rows and not self.show_port_labels and self.nt.description:
            # parameterless cards (activations) show their formula instead of an empty body
            f = _font(9.0)
            f.setItalic(True)
            painter.setFont(f)
            painter.setPen(t.text_muted)
            text = self.nt.description.split(";")[0].rstrip(".")
            painter.drawText(QRectF(12, HEADER_H, text_w, self.body_h), Qt.AlignmentFlag.AlignCenter,
                             QFontMetricsF(f).elidedText(text, Qt.TextElideMode.ElideRight, text_w))
            return
        if not self.show_port_labels and self.info_rows:
            y = HEADER_H + (self.body_h - self.info_rows * ROW_H) / 2
        for label, value in self.props:
            vw = min(bfm.horizontalAdvance(value) + 2, text_w * 0.6)
            painter.setPen(t.text_muted)
            painter.drawText(QRectF(12, y, text_w - vw - 6, ROW_H), Qt.AlignmentFlag.AlignVCenter,
                             bfm.elidedText(label, Qt.TextElideMode.ElideRight, text_w - vw - 6))
            painter.setPen(t.text)
            painter.drawText(QRectF(12 + text_w - vw, y, vw, ROW_H),
                             Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight,
                             bfm.elidedText(value, Qt.TextElideMode.ElideRight, vw))
            y += ROW_H
        if self.has_detail:
            painter.setPen(t.text_muted)
            painter.drawText(QRectF(12, y, text_w, ROW_H), Qt.AlignmentFlag.AlignVCenter,
                             bfm.elidedText(self.detail, Qt.TextElideMode.ElideRight, text_w))
            y += ROW_H
        if self.has_count:
            painter.setPen(t.text_muted)
            text = "…" if self.param_count is None else format_count(self.param_count)
            painter.drawText(QRectF(12, y, text_w, ROW_H), Qt.AlignmentFlag.AlignVCenter, "params")
            painter.setPen(t.text if self.param_count else t.text_muted)
            painter.drawText(QRectF(12, y, text_w, ROW_H), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight,
                             text)


class EdgeLabel(QGraphicsItem):
    """The tensor shape flowing through an edge, in a rounded pill on the edge.

    The scene places it where it fits (see ``NodeScene.place_labels``); where the full
    shape does not fit, the label shows a shorter form (leading dimensions elided) and
    the tooltip keeps the full text.
    """

    def __init__(self, parent: "EdgeItem") -> None:
        super().__init__(parent)
        self.text = ""       # the full shape text
        self.shown = ""      # what the pill shows (the text, or a shortened form of it)
        self._rect = QRectF()
        self.setZValue(3)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        self.setVisible(False)
        self.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self._bounds = QRectF()

    @staticmethod
    def size_for(text: str) -> tuple[float, float]:
        """Width and height of the pill showing ``text`` (scene units)."""
        fm = QFontMetricsF(LABEL_FONT)
        return fm.horizontalAdvance(text) + 10, fm.height() + 3

    def variants(self) -> list[str]:
        """The full text, then shorter forms: leading dimensions elided (``…×28×28``)."""
        parts = self.text.split("×")
        return [self.text] + ["…×" + "×".join(parts[i:]) for i in range(1, len(parts))]

    def set_text(self, text: str) -> None:
        if text == self.text:
            return
        self.text = text
        self.set_shown(text)
        self.setVisible(bool(text))

    def set_shown(self, shown: str) -> None:
        if shown == self.shown:
            return
        self.prepareGeometryChange()
        self.shown = shown
        w, h = self.size_for(shown)
        self._rect = QRectF(-w / 2, -h / 2, w, h) if shown else QRectF()
        self._bounds = self._rect.adjusted(-1, -1, 1, 1)
        self.setToolTip(self.text if shown != self.text else "")
        self.update()

    def rect_at(self, center: QPointF, shown: str | None = None) -> QRectF:
        """The pill's scene rectangle if it were centred at ``center``."""
        w, h = self.size_for(self.shown if shown is None else shown)
        return QRectF(center.x() - w / 2, center.y() - h / 2, w, h)

    def boundingRect(self) -> QRectF:
        return self._bounds

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        if not self.shown:
            return
        if option.levelOfDetailFromTransform(painter.worldTransform()) < LOD_TEXT:
            return
        t = theme()
        edge: EdgeItem = self.parentItem()  # type: ignore[assignment]
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(edge.color() if not edge.isSelected() else t.selection, 1.0))
        painter.setBrush(t.edge_label_bg)
        painter.drawRoundedRect(self._rect, self._rect.height() / 2, self._rect.height() / 2)
        painter.setPen(t.edge_label_text)
        painter.setFont(LABEL_FONT)
        painter.drawText(self._rect, Qt.AlignmentFlag.AlignCenter, self.shown)


class EdgeItem(QGraphicsPathItem):
    """A connection drawn as a smooth curve from an output port to an input port."""

    def __init__(self, edge: Edge, src: PortItem, dst: PortItem) -> None:
        super().__init__()
        self.edge = edge
        self.src = src
        self.dst = dst
        self.kind = src.kind
        self.setZValue(0)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable)
        self.setAcceptHoverEvents(True)
        self.label = EdgeLabel(self)
        self._hover = False
        #: a colour from a training run's statistics (the source's activation std), over the port colour
        self.signal: QColor | None = None
        self.signal_tip = ""
        self._apply_pen()

    def color(self) -> QColor:
        return self.signal if self.signal is not None else PORT_COLORS[self.kind]

    def set_signal(self, color: QColor | None, tip: str = "") -> None:
        """Colour the edge by a run's statistics (None: back to the port colour); ``tip`` joins the tooltip."""
        if color == self.signal and tip == self.signal_tip:
            return
        self.signal, self.signal_tip = color, tip
        self._apply_pen()
        self.setToolTip(self._base_tip())

    def _apply_pen(self) -> None:
        t = theme()
        c = t.selection if self.isSelected() else QColor(self.color())
        if not self.isSelected() and not self._hover:
            c.setAlphaF(0.85)
        width = 2.6 if (self.isSelected() or self._hover) else 1.8
        style = Qt.PenStyle.SolidLine if self.kind in (PortKind.TENSOR, PortKind.TARGET) else Qt.PenStyle.DashLine
        self.setPen(QPen(c, width, style, Qt.PenCapStyle.RoundCap))

    def itemChange(self, change: QGraphicsItem.GraphicsItemChange, value: Any) -> Any:
        if change == QGraphicsItem.GraphicsItemChange.ItemSelectedHasChanged:
            self._apply_pen()
            self.label.update()
        return super().itemChange(change, value)

    def hoverEnterEvent(self, event: Any) -> None:
        self._hover = True
        self._apply_pen()
        super().hoverEnterEvent(event)

    def hoverLeaveEvent(self, event: Any) -> None:
        self._hover = False
        self._apply_pen()
        super().hoverLeaveEvent(event)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        # the selection shows in the pen (colour, width); Qt's dashed box around the
        # whole bounding rect would frame empty canvas
        opt = QStyleOptionGraphicsItem(option)
        opt.state &= ~(QStyle.StateFlag.State_Selected | QStyle.StateFlag.State_HasFocus)
        super().paint(painter, opt, widget)

    def shape(self) -> QPainterPath:
        stroker = QPainterPathStroker()
        stroker.setWidth(12)
        return stroker.createStroke(self.path())

    def set_route(self, path: QPainterPath, label_at: QPointF) -> None:
        self.setPath(path)
        self.label.setPos(label_at)

    def set_label(self, text: str) -> bool:
        """Set the shape text; True if it changed (the scene then finds the label a place)."""
        if text == self.label.text and self.toolTip():
            return False  # runs for every edge after every edit: skip the unchanged ones
        changed = text != self.label.text
        self.label.set_text(text)
        self.setToolTip(self._base_tip())
        return changed

    def _base_tip(self) -> str:
        text = self.label.text
        tip = f"{self.edge.src_port} → {self.edge.dst_port}" + (f": {text}" if text else "")
        return tip + (f"\n{self.signal_tip}" if self.signal_tip else "")

    def refresh_theme(self) -> None:
        self._apply_pen()


class ConnectionPreview(QGraphicsPathItem):
    """The rubber edge drawn while the user drags from a port."""

    def __init__(self, kind: PortKind) -> None:
        super().__init__()
        self.kind = kind
        self.setZValue(10)
        self.set_valid(None)

    def set_valid(self, valid: bool | None) -> None:
        t = theme()
        c = PORT_COLORS[self.kind] if valid is None else (t.ok if valid else t.error)
        self.setPen(QPen(c, 2.2, Qt.PenStyle.DashLine, Qt.PenCapStyle.RoundCap))


class CursorNote(QGraphicsObject):
    """A small message box next to the cursor (why a connection is refused)."""

    def __init__(self) -> None:
        super().__init__()
        self.text = ""
        self.good = False
        self._rect = QRectF()
        self.setZValue(20)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)

    def set_message(self, text: str, good: bool = False) -> None:
        self.prepareGeometryChange()
        self.text = text
        self.good = good
        fm = QFontMetricsF(BODY_FONT)
        br = fm.boundingRect(QRectF(0, 0, 320, 400), int(Qt.TextFlag.TextWordWrap), text)
        self._rect = QRectF(14, 14, br.width() + 16, br.height() + 10)
        self.setVisible(bool(text))
        self.update()

    def boundingRect(self) -> QRectF:
        return self._rect.adjusted(-1, -1, 1, 1)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        t = theme()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(t.ok if self.good else t.error, 1.2))
        painter.setBrush(t.node_body)
        painter.drawRoundedRect(self._rect, 5, 5)
        painter.setPen(t.text)
        painter.setFont(BODY_FONT)
        painter.drawText(self._rect.adjusted(8, 5, -8, -5), int(Qt.TextFlag.TextWordWrap), self.text)


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "×".join(str(x) for x in v)
    return str(v)


def _props(nt: NodeType, params: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for name in nt.summary_params:
        try:
            label = nt.param(name).display
        except KeyError:
            label = name
        out.append((label, _fmt_value(params.get(name))))
    return out
