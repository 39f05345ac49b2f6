"""The selected node's activations and gradients over the run's statistics samples (issue #14).

Two heat maps (pyqtgraph): one column per sample, oldest left; each column is that
sample's histogram of the node's output values (top) or of its parameters'
gradients (bottom) between the sample's own min and max, darker = more values.
The value range of the newest sample is written under each map. Shown in the
inspector while a single node with statistics is selected; follows the training
session's ``node_health_changed`` and the scene's selection.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from netstudio.training.health import HealthBook


def heat(columns: list[list[float]]) -> np.ndarray:
    """(samples × bins) of each column's counts as fractions of its largest bin."""
    a = np.array([c[2:] for c in columns], dtype=np.float64)
    peak = a.max(axis=1, keepdims=True)
    return a / np.where(peak > 0, peak, 1.0)


class NodeHistograms(QWidget):
    """Activation and gradient histograms of one node over time."""

    def __init__(self, session: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.node_id: str | None = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(10, 4, 10, 8)
        self.title = QLabel("Training statistics", self)
        lay.addWidget(self.title)
        self.plots: dict[str, tuple[pg.PlotWidget, pg.ImageItem, QLabel]] = {}
        for key, text in (("output", "activations"), ("grad", "gradients")):
            w = pg.PlotWidget(self)
            w.setMinimumHeight(90)
            w.setMaximumHeight(130)
            w.setMenuEnabled(False)
            w.setMouseEnabled(False, False)
            w.hideButtons()
            w.getPlotItem().hideAxis("left")
            w.getPlotItem().setLabel("bottom", f"{text}: sample →")
            img = pg.ImageItem()
            img.setColorMap(pg.colormap.get("viridis"))
            w.addItem(img)
            rng = QLabel(self)
            lay.addWidget(w)
            lay.addWidget(rng)
            self.plots[key] = (w, img, rng)
        session.node_health_changed.connect(self.refresh)
        self.hide()

    def set_selection(self, node_ids: list[str]) -> None:
        self.node_id = node_ids[0] if len(node_ids) == 1 else None
        self.refresh(self.session.health)

    def refresh(self, book: HealthBook) -> None:
        h = book.nodes.get(self.node_id) if self.node_id is not None else None
        if h is None or not h.histograms:
            self.hide()
            return
        self.title.setText(f"<b>Training statistics</b> — {len(h.histograms)} samples, step {h.histograms[-1][0]}")
        for key, (w, img, rng) in self.plots.items():
            cols = [hist[key] for _, hist in h.histograms if key in hist]
            w.setVisible(bool(cols))
            rng.setVisible(bool(cols))
            if not cols:
                continue
            img.setImage(heat(cols), autoLevels=False, levels=(0.0, 1.0))
            w.getPlotItem().setRange(xRange=(0, len(cols)), yRange=(0, len(cols[-1]) - 2), padding=0)
            rng.setText(f"newest: {cols[-1][0]:.3g} … {cols[-1][1]:.3g}")
        self.show()
