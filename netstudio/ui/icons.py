"""Toolbar and panel icons, drawn with QPainter so no image files ship.

Each icon is a few strokes on a 24-unit grid, rendered at 48 px for crisp
scaling; the stroke colour follows the active theme.
"""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QIcon, QPainter, QPainterPath, QPen, QPixmap, QPolygonF

from netstudio.nodes.base import Category
from netstudio.ui.theme import CATEGORY_COLORS, theme

_SIZE = 48
_cache: dict[tuple[str, str], QIcon] = {}


def _render(draw: Callable[[QPainter, QColor], None], color: QColor | None = None) -> QIcon:
    pm = QPixmap(_SIZE, _SIZE)
    pm.fill(Qt.GlobalColor.transparent)
    p = QPainter(pm)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.scale(_SIZE / 24.0, _SIZE / 24.0)
    c = color or theme().text
    pen = QPen(c, 1.8, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap, Qt.PenJoinStyle.RoundJoin)
    p.setPen(pen)
    p.setBrush(Qt.BrushStyle.NoBrush)
    draw(p, c)
    p.end()
    return QIcon(pm)


def _doc(p: QPainter, c: QColor) -> None:
    path = QPainterPath()
    path.moveTo(6, 3)
    path.lineTo(14, 3)
    path.lineTo(19, 8)
    path.lineTo(19, 21)
    path.lineTo(6, 21)
    path.closeSubpath()
    p.drawPath(path)
    p.drawPolyline(QPolygonF([QPointF(14, 3), QPointF(14, 8), QPointF(19, 8)]))


def _new(p: QPainter, c: QColor) -> None:
    _doc(p, c)
    p.drawLine(QPointF(12.5, 11), QPointF(12.5, 17))
    p.drawLine(QPointF(9.5, 14), QPointF(15.5, 14))


def _open(p: QPainter, c: QColor) -> None:
    path = QPainterPath()
    path.moveTo(3, 19)
    path.lineTo(3, 5)
    path.lineTo(9, 5)
    path.lineTo(11, 7)
    path.lineTo(19, 7)
    path.lineTo(19, 10)
    p.drawPath(path)
    path2 = QPainterPath()
    path2.moveTo(3, 19)
    path2.lineTo(6, 10)
    path2.lineTo(22, 10)
    path2.lineTo(19, 19)
    path2.closeSubpath()
    p.drawPath(path2)


def _save(p: QPainter, c: QColor) -> None:
    path = QPainterPath()
    path.moveTo(4, 4)
    path.lineTo(17, 4)
    path.lineTo(20, 7)
    path.lineTo(20, 20)
    path.lineTo(4, 20)
    path.closeSubpath()
    p.drawPath(path)
    p.drawRect(QRectF(8, 4, 7, 5))
    p.drawRect(QRectF(7.5, 13, 9, 7))


def _arrow(p: QPainter, c: QColor, flip: bool) -> None:
    p.save()
    if flip:
        p.translate(24, 0)
        p.scale(-1, 1)
    path = QPainterPath()
    path.moveTo(9, 6)
    path.lineTo(4, 11)
    path.lineTo(9, 16)
    p.drawPath(path)
    arc = QPainterPath()
    arc.moveTo(4, 11)
    arc.lineTo(14, 11)
    arc.cubicTo(18.5, 11, 20.5, 14, 20.5, 16.5)
    arc.cubicTo(20.5, 19, 18.5, 20.5, 15, 20.5)
    p.drawPath(arc)
    p.restore()


def _layout(p: QPainter, c: QColor) -> None:
    for r in (QRectF(2.5, 9, 5, 6), QRectF(10, 3.5, 5, 6), QRectF(10, 14.5, 5, 6), QRectF(17.5, 9, 5, 6)):
        p.drawRoundedRect(r, 1.2, 1.2)
    p.drawLine(QPointF(7.5, 11), QPointF(10, 6.5))
    p.drawLine(QPointF(7.5, 13), QPointF(10, 17.5))
    p.drawLine(QPointF(15, 6.5), QPointF(17.5, 11))
    p.drawLine(QPointF(15, 17.5), QPointF(17.5, 13))


def _frame(p: QPainter, c: QColor) -> None:
    for sx, sy in ((1, 1), (-1, 1), (1, -1), (-1, -1)):
        x0 = 12 - sx * 8.5
        y0 = 12 - sy * 8.5
        p.drawPolyline(QPolygonF([QPointF(x0, y0 + sy * 5), QPointF(x0, y0), QPointF(x0 + sx * 5, y0)]))
    p.drawRoundedRect(QRectF(8, 8.5, 8, 7), 1.5, 1.5)


def _cut(p: QPainter, c: QColor) -> None:
    p.drawEllipse(QPointF(7, 18), 3, 3)
    p.drawEllipse(QPointF(17, 18), 3, 3)
    p.drawLine(QPointF(9, 16), QPointF(17, 4))
    p.drawLine(QPointF(15, 16), QPointF(7, 4))


def _copy(p: QPainter, c: QColor) -> None:
    p.drawRoundedRect(QRectF(8, 8, 12, 13), 1.5, 1.5)
    p.drawPolyline(QPolygonF([QPointF(5, 16), QPointF(4, 16), QPointF(4, 3), QPointF(15, 3), QPointF(15, 5)]))


def _paste(p: QPainter, c: QColor) -> None:
    p.drawRoundedRect(QRectF(5, 5, 14, 16), 1.5, 1.5)
    p.drawRoundedRect(QRectF(9, 3, 6, 4), 1, 1)


def _delete(p: QPainter, c: QColor) -> None:
    p.drawLine(QPointF(4, 6), QPointF(20, 6))
    p.drawPolyline(QPolygonF([QPointF(9, 6), QPointF(9, 3.5), QPointF(15, 3.5), QPointF(15, 6)]))
    path = QPainterPath()
    path.moveTo(6, 6)
    path.lineTo(7, 21)
    path.lineTo(17, 21)
    path.lineTo(18, 6)
    p.drawPath(path)


def _zoom(p: QPainter, c: QColor, plus: bool) -> None:
    p.drawEllipse(QPointF(10, 10), 6, 6)
    p.drawLine(QPointF(14.5, 14.5), QPointF(20, 20))
    p.drawLine(QPointF(7, 10), QPointF(13, 10))
    if plus:
        p.drawLine(QPointF(10, 7), QPointF(10, 13))


def _error(p: QPainter, c: QColor) -> None:
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QBrush(theme().error))
    p.drawEllipse(QPointF(12, 12), 9, 9)
    p.setPen(QPen(QColor("#ffffff"), 2.2, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))
    p.drawLine(QPointF(12, 7), QPointF(12, 13))
    p.drawPoint(QPointF(12, 16.8))


def _warning(p: QPainter, c: QColor) -> None:
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QBrush(QColor("#e8a317")))
    p.drawPolygon(QPolygonF([QPointF(12, 3), QPointF(22, 20.5), QPointF(2, 20.5)]))
    p.setPen(QPen(QColor("#1b1e23"), 2.2, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))
    p.drawLine(QPointF(12, 9), QPointF(12, 14))
    p.drawPoint(QPointF(12, 17.5))


def _ok(p: QPainter, c: QColor) -> None:
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QBrush(theme().ok))
    p.drawEllipse(QPointF(12, 12), 9, 9)
    p.setPen(QPen(QColor("#ffffff"), 2.2, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap, Qt.PenJoinStyle.RoundJoin))
    p.drawPolyline(QPolygonF([QPointF(7.5, 12.5), QPointF(10.5, 15.5), QPointF(16.5, 8.5)]))


def _fix(p: QPainter, c: QColor) -> None:
    # a wrench: "apply the suggested fix"
    p.save()
    p.translate(12, 12)
    p.rotate(45)
    p.drawLine(QPointF(0, -2), QPointF(0, 9))
    path = QPainterPath()
    path.arcMoveTo(QRectF(-5, -10, 10, 10), 300)
    path.arcTo(QRectF(-5, -10, 10, 10), 300, 300)
    p.drawPath(path)
    p.restore()


def _app(p: QPainter, c: QColor) -> None:
    # three layers of neurons, the NetStudio mark
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QBrush(QColor("#1b1e23")))
    p.drawRoundedRect(QRectF(0.5, 0.5, 23, 23), 5, 5)
    cols = [(5, (7, 17)), (12, (5, 12, 19)), (19, (9, 15))]
    pen = QPen(QColor("#7fb2ff"), 0.9)
    p.setPen(pen)
    for (x0, ys0), (x1, ys1) in zip(cols, cols[1:]):
        for y0 in ys0:
            for y1 in ys1:
                p.drawLine(QPointF(x0, y0), QPointF(x1, y1))
    p.setPen(Qt.PenStyle.NoPen)
    colors = ["#1f9e89", "#3b6fd4", "#cf4a4a"]
    for (x, ys), col in zip(cols, colors):
        p.setBrush(QBrush(QColor(col)))
        for y in ys:
            p.drawEllipse(QPointF(x, y), 2.4, 2.4)


def _train(p: QPainter, c: QColor) -> None:
    path = QPainterPath()
    path.moveTo(7, 4.5)
    path.lineTo(19, 12)
    path.lineTo(7, 19.5)
    path.closeSubpath()
    p.setBrush(QBrush(c))
    p.drawPath(path)


def _stop(p: QPainter, c: QColor) -> None:
    p.setBrush(QBrush(c))
    p.drawRoundedRect(QRectF(6, 6, 12, 12), 2, 2)


def _grid(p: QPainter, c: QColor) -> None:
    for i in (5, 12, 19):
        for j in (5, 12, 19):
            p.drawPoint(QPointF(i, j))
    p.drawRoundedRect(QRectF(8.5, 8.5, 7, 7), 1, 1)


_DRAW: dict[str, Callable[[QPainter, QColor], None]] = {
    "new": _new, "open": _open, "save": _save,
    "undo": lambda p, c: _arrow(p, c, False), "redo": lambda p, c: _arrow(p, c, True),
    "layout": _layout, "frame": _frame, "cut": _cut, "copy": _copy, "paste": _paste, "delete": _delete,
    "zoom_in": lambda p, c: _zoom(p, c, True), "zoom_out": lambda p, c: _zoom(p, c, False),
    "error": _error, "warning": _warning, "ok": _ok, "fix": _fix, "app": _app, "train": _train,
    "grid": _grid, "stop": _stop,
}


def icon(name: str) -> QIcon:
    """A themed icon by name (cached per theme)."""
    key = (name, theme().name)
    ic = _cache.get(key)
    if ic is None:
        ic = _cache[key] = _render(_DRAW[name])
    return ic


def category_icon(cat: Category) -> QIcon:
    """A rounded swatch in the category colour (palette, quick-add list)."""
    key = (f"cat:{cat.value}", "")
    ic = _cache.get(key)
    if ic is None:
        col = CATEGORY_COLORS[cat]

        def draw(p: QPainter, c: QColor) -> None:
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(QBrush(col))
            p.drawRoundedRect(QRectF(4, 6, 16, 12), 3, 3)
            p.setBrush(QBrush(col.lighter(150)))
            p.drawRoundedRect(QRectF(4, 6, 16, 4), 2, 2)

        ic = _cache[key] = _render(draw)
    return ic


def clear_cache() -> None:
    """Called when the theme changes: stroke colours depend on it."""
    _cache.clear()


__all__ = ["icon", "category_icon", "clear_cache"]
