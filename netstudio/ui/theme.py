"""Colours of the editor and the application palette, dark or light.

The canvas items read :func:`theme` at paint time, so switching the theme is
one ``apply_theme`` call plus a repaint. ``mode="system"`` follows
``QStyleHints.colorScheme`` (and its change signal).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

from netstudio.nodes.base import Category, PortKind


@dataclass(frozen=True)
class Theme:
    name: str
    canvas_bg: QColor
    grid_minor: QColor
    grid_major: QColor
    node_body: QColor
    node_body_alt: QColor
    node_border: QColor
    selection: QColor
    text: QColor
    text_muted: QColor
    header_text: QColor
    error: QColor
    ok: QColor
    edge_label_bg: QColor
    edge_label_text: QColor
    shadow: QColor
    banner_bg: QColor
    banner_text: QColor

    @property
    def dark(self) -> bool:
        return self.name == "dark"


DARK = Theme(
    name="dark",
    canvas_bg=QColor("#1b1e23"),
    grid_minor=QColor("#23272e"),
    grid_major=QColor("#2b3038"),
    node_body=QColor("#2a2f37"),
    node_body_alt=QColor("#323842"),
    node_border=QColor("#3d444f"),
    selection=QColor("#f2b84b"),
    text=QColor("#e6e9ee"),
    text_muted=QColor("#b6bfcb"),  # >= 7:1 on the card body: small grey text must stay readable
    header_text=QColor("#ffffff"),
    error=QColor("#ff5c5c"),
    ok=QColor("#4cd07d"),
    edge_label_bg=QColor("#2f353e"),
    edge_label_text=QColor("#e6eaf0"),
    shadow=QColor(0, 0, 0, 90),
    banner_bg=QColor("#7a4b0f"),
    banner_text=QColor("#fff4e0"),
)

LIGHT = Theme(
    name="light",
    canvas_bg=QColor("#f3f4f6"),
    grid_minor=QColor("#e8eaee"),
    grid_major=QColor("#dadde3"),
    node_body=QColor("#ffffff"),
    node_body_alt=QColor("#f5f6f8"),
    node_border=QColor("#c9ced6"),
    selection=QColor("#d48806"),
    text=QColor("#1f2328"),
    text_muted=QColor("#4a5461"),
    header_text=QColor("#ffffff"),
    error=QColor("#d92d20"),
    ok=QColor("#1f9d55"),
    edge_label_bg=QColor("#ffffff"),
    edge_label_text=QColor("#2b3440"),
    shadow=QColor(0, 0, 0, 40),
    banner_bg=QColor("#fff1d6"),
    banner_text=QColor("#6b3e00"),
)

#: Category colours (node headers, palette swatches); readable with white text.
CATEGORY_COLORS: dict[Category, QColor] = {
    Category.DATA: QColor("#1f9e89"),
    Category.LAYER: QColor("#3b6fd4"),
    Category.ACTIVATION: QColor("#8a5cc9"),
    Category.MERGE: QColor("#c98a1c"),
    Category.LOSS: QColor("#cf4a4a"),
    Category.OPTIMIZER: QColor("#3f9a4a"),
    Category.SCHEDULER: QColor("#627284"),
}

CATEGORY_LABELS: dict[Category, str] = {
    Category.DATA: "Data",
    Category.LAYER: "Layers",
    Category.ACTIVATION: "Activations",
    Category.MERGE: "Merge",
    Category.LOSS: "Losses",
    Category.OPTIMIZER: "Optimizers",
    Category.SCHEDULER: "Schedulers",
}

#: Port/edge colours by the kind of value flowing.
PORT_COLORS: dict[PortKind, QColor] = {
    PortKind.TENSOR: QColor("#7fb2ff"),
    PortKind.TARGET: QColor("#f0a04b"),
    PortKind.LOSS: QColor("#ff7a7a"),
    PortKind.OPTIMIZER: QColor("#6fd07b"),
}

_current: Theme = DARK
_mode: str = "system"


def theme() -> Theme:
    """The active canvas theme."""
    return _current


def theme_mode() -> str:
    return _mode


def system_prefers_dark() -> bool:
    app = QGuiApplication.instance()
    if app is None:
        return False
    scheme = QGuiApplication.styleHints().colorScheme()
    return scheme == Qt.ColorScheme.Dark


def resolve_mode(mode: str) -> Theme:
    """``system`` | ``dark`` | ``light`` → the Theme; env NETSTUDIO_THEME overrides ``system``."""
    if mode == "system":
        forced = os.environ.get("NETSTUDIO_THEME", "").lower()
        if forced in ("dark", "light"):
            mode = forced
        else:
            mode = "dark" if system_prefers_dark() else "light"
    return DARK if mode == "dark" else LIGHT


def apply_theme(mode: str = "system") -> Theme:
    """Set the Fusion style and a matching palette on the running QApplication."""
    global _current, _mode
    _mode = mode
    _current = resolve_mode(mode)
    app = QApplication.instance()
    if isinstance(app, QApplication):
        # Replacing the application style deletes the old QStyle, which widgets with
        # style sheets still point to: set it once, then only swap palettes.
        if app.style().name().lower() != "fusion":
            app.setStyle("Fusion")
        palette = make_palette(_current)
        app.setPalette(palette)
        indicators = indicator_palette(palette, _current)
        for cls in ("QCheckBox", "QRadioButton"):
            app.setPalette(indicators, cls)  # type: ignore[arg-type]  # the stub says bytes; only str works
    return _current


def indicator_palette(base: QPalette, t: Theme) -> QPalette:
    """Palette for check boxes and radio buttons, whose empty box must stay visible.

    Fusion outlines the indicator with the Window colour made darker: on a dark
    window that outline vanishes and an unchecked box is invisible. These widgets
    paint no background of their own, so a lighter Window only lightens the outline.
    """
    p = QPalette(base)
    if t.dark:
        p.setColor(QPalette.ColorRole.Window, QColor("#9aa3b0"))
        p.setColor(QPalette.ColorRole.Base, QColor("#2c3138"))
    return p


def make_palette(t: Theme) -> QPalette:
    p = QPalette()
    if t.dark:
        window, base, alt, text, button = "#24282e", "#1e2126", "#272b31", "#e6e9ee", "#2c3138"
        disabled = "#6b7380"
        highlight = "#3b6fd4"
    else:
        window, base, alt, text, button = "#eef0f3", "#ffffff", "#f5f6f8", "#1f2328", "#f7f8fa"
        disabled = "#9aa3af"
        highlight = "#3b6fd4"
    roles = {
        QPalette.ColorRole.Window: window, QPalette.ColorRole.WindowText: text,
        QPalette.ColorRole.Base: base, QPalette.ColorRole.AlternateBase: alt,
        QPalette.ColorRole.ToolTipBase: base, QPalette.ColorRole.ToolTipText: text,
        QPalette.ColorRole.PlaceholderText: disabled,
        QPalette.ColorRole.Text: text, QPalette.ColorRole.Button: button,
        QPalette.ColorRole.ButtonText: text, QPalette.ColorRole.BrightText: "#ff5c5c",
        QPalette.ColorRole.Highlight: highlight, QPalette.ColorRole.HighlightedText: "#ffffff",
        QPalette.ColorRole.Link: "#5a9cff",
    }
    for role, color in roles.items():
        p.setColor(role, QColor(color))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
        p.setColor(QPalette.ColorGroup.Disabled, role, QColor(disabled))
    return p
