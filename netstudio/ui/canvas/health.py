"""Per-node health on the canvas while a run trains (issue #14).

Each node card the run's statistics cover gets a :class:`HealthStrip` child item:
a thin bar under the card coloured by the node's worst signal (green ok, amber a
warning such as dead ReLUs or vanishing gradients, red NaN/Inf or exploding
gradients) with a sparkline of its gradient norm (log scale); hovering it shows
the figures. The node where NaN/Inf first appeared is outlined in red.

:class:`HealthOverlay` follows the training session's ``node_health_changed``
signal and the scene's node items (by node id); ``set_enabled`` is the View
menu's toggle. The strips are children of the node items, so they move and
disappear with them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem, QWidget
from shiboken6 import isValid

from netstudio.training.health import HealthBook, NodeHealth

if TYPE_CHECKING:  # pragma: no cover
    from netstudio.ui.canvas.items import NodeItem
    from netstudio.ui.canvas.scene import NodeScene

STRIP_H = 9.0
GAP = 3.0
LEVEL_COLORS = {0: QColor("#3fb950"), 1: QColor("#e8a317"), 2: QColor("#ff5c5c")}
LEVEL_WORDS = {0: "healthy", 1: "warning", 2: "error"}

_LABELS = (("mean", "output mean"), ("std", "output std"), ("zeros", "zeros"), ("saturated", "saturated"),
           ("min", "min"), ("max", "max"), ("nonfinite", "NaN/Inf values"), ("weight_norm", "weight norm"),
           ("grad_norm", "gradient norm"), ("update_ratio", "update/weight"))


def _fmt(key: str, v: float | None) -> str:
    if v is None:
        return "–"
    if key in ("zeros", "saturated"):
        return f"{v:.0%}"
    if key == "nonfinite":
        return str(int(v))
    return f"{v:.3g}"


def health_tooltip(name: str, h: NodeHealth, step: int) -> str:
    rows = [f"<b>{name}</b> — {LEVEL_WORDS[h.level]} (step {step})"]
    rows += [f"{label}: {_fmt(key, h.figures[key])}" for key, label in _LABELS if key in h.figures]
    for d in h.findings:
        color = "#ff5c5c" if d.get("severity") == "error" else "#e8a317"
        rows.append(f"<span style='color:{color}'>● {d['message']}</span><br>&nbsp;&nbsp;Fix: {d['hint']}")
    return "<br>".join(rows)


class HealthStrip(QGraphicsItem):
    """The health bar under one node card (and the NaN outline around it)."""

    def __init__(self, node: "NodeItem") -> None:
        super().__init__(node)
        self.node = node
        self.level = 0
        self.grad_norms: list[float] = []
        self.nan_origin = False
        self.setAcceptHoverEvents(True)
        self.setZValue(-0.5)

    def _strip_rect(self) -> QRectF:
        return QRectF(0.0, self.node.height + GAP, self.node.width, STRIP_H)

    def boundingRect(self) -> QRectF:
        w, h = self.node.width, self.node.height
        return QRectF(-5.0, -5.0, w + 10.0, h + GAP + STRIP_H + 10.0)

    def shape(self) -> QPainterPath:  # hover/tooltip on the strip only, not on the card
        path = QPainterPath()
        path.addRect(self._strip_rect())
        return path

    def set_health(self, h: NodeHealth, nan_origin: bool, tooltip: str) -> None:
        self.level, self.grad_norms, self.nan_origin = h.level, list(h.grad_norms), nan_origin
        self.setToolTip(tooltip)
        self.update()

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        r = self._strip_rect()
        color = LEVEL_COLORS[self.level]
        fill = QColor(color)
        fill.setAlpha(150)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(fill)
        painter.drawRoundedRect(r, 3.0, 3.0)
        logs = [math.log10(g) for g in self.grad_norms if g > 0 and math.isfinite(g)]
        if len(logs) >= 2:
            lo, hi = min(logs), max(logs)
            span = hi - lo if hi > lo else 1.0
            path = QPainterPath()
            n = len(logs)
            for i, v in enumerate(logs):
                x = r.left() + 2 + (r.width() - 4) * i / (n - 1)
                y = r.bottom() - 1.5 - (r.height() - 3) * ((v - lo) / span if hi > lo else 0.5)
                if i == 0:
                    path.moveTo(QPointF(x, y))
                else:
                    path.lineTo(QPointF(x, y))
            painter.setPen(QPen(QColor(255, 255, 255, 230), 1.2))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawPath(path)
        if self.nan_origin:
            painter.setPen(QPen(LEVEL_COLORS[2], 2.5))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRoundedRect(QRectF(-3.0, -3.0, self.node.width + 6.0, self.node.height + 6.0), 9.0, 9.0)


#: activation std bands for edge colours: below LOW the signal is fading (a dying path, vanishing
#: activations), above HIGH it is blowing up; in between the edge is healthy
STD_LOW, STD_HIGH = 1e-2, 10.0
STD_COLORS = {"low": QColor("#8b7cf6"), "ok": QColor("#3fb950"), "high": QColor("#ff5c5c")}


def std_color(std: float | None) -> QColor | None:
    """The edge colour for an activation std (None: no figure, the port colour stays)."""
    if std is None:
        return None
    if not math.isfinite(std) or std > STD_HIGH:
        return STD_COLORS["high"]
    return STD_COLORS["low"] if std < STD_LOW else STD_COLORS["ok"]


class HealthOverlay(QObject):
    """Keeps the scene's health strips in step with the session's per-node statistics."""

    def __init__(self, scene: "NodeScene", session: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.scene = scene
        self.session = session
        self.enabled = True
        self.edges_by_std = True  # View → Colour Edges by Activation Std
        self.strips: dict[str, HealthStrip] = {}
        session.node_health_changed.connect(self.show_health)

    def set_enabled(self, on: bool) -> None:
        self.enabled = on
        self.show_health(self.session.health)

    def set_edges_by_std(self, on: bool) -> None:
        self.edges_by_std = on
        self.show_health(self.session.health)

    def _color_edges(self, book: HealthBook) -> None:
        """Each edge in the colour of its source's output std (the signal it carries), with the figure."""
        on = self.enabled and self.edges_by_std
        for edge, item in self.scene.edge_items.items():
            h = book.nodes.get(edge.src) if on else None
            std = h.figures.get("std") if h is not None else None
            if std is None:
                item.set_signal(None)
                continue
            band = "fading" if std < STD_LOW else "exploding" if not math.isfinite(std) or std > STD_HIGH else "healthy"
            item.set_signal(std_color(std), f"activation std {_fmt('std', std)} ({band}, step {book.step})")

    def _drop(self, nid: str) -> None:
        strip = self.strips.pop(nid)
        if isValid(strip) and strip.scene() is not None:  # not deleted with its node (a new project)
            strip.scene().removeItem(strip)

    def show_health(self, book: HealthBook) -> None:
        items = self.scene.node_items
        for nid in list(self.strips):
            strip = self.strips[nid]
            # gone with its node, the overlay off, or a new run with no figures yet
            if not self.enabled or not isValid(strip) or items.get(nid) is not strip.node or nid not in book.nodes:
                self._drop(nid)
        self._color_edges(book)
        if not self.enabled:
            return
        for nid, h in book.nodes.items():
            node = items.get(nid)
            if node is None:
                continue
            if nid not in self.strips:
                self.strips[nid] = HealthStrip(node)
            self.strips[nid].set_health(h, book.nan_origin == nid, health_tooltip(node.name, h, book.step))
