"""The selected node's activations and gradients over the run's statistics samples (issue #14).

Two heat maps (pyqtgraph): one column per sample, oldest left; each column is that
sample's histogram of the node's output values (top) or of its parameters'
gradients (bottom) between the sample's own min and max, darker = more values.
The value range of the newest sample is written under each map. Shown in the
inspector while a single node with statistics is selected; follows the training
session's ``node_health_changed`` and the scene's selection. For a 2-d convolution
the trained weights' kernels are drawn as small images too (first input channel of
each output channel, each scaled to its own range), once the session holds weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from netstudio.training.health import HealthBook


def kernel_tiles(weight: np.ndarray) -> np.ndarray:
    """Conv weights (out, in, kh, kw) as one image: each output channel's first input-channel kernel,
    scaled to [0, 1], on a grid with one-pixel gaps (NaN, drawn empty)."""
    out, _, kh, kw = weight.shape
    cols = int(np.ceil(np.sqrt(out)))
    rows = int(np.ceil(out / cols))
    img = np.full((cols * (kw + 1) - 1, rows * (kh + 1) - 1), np.nan)
    for i in range(out):
        k = weight[i, 0].astype(np.float64)
        span = k.max() - k.min()
        k = (k - k.min()) / span if span > 0 else np.zeros_like(k)
        r, c = divmod(i, cols)
        img[c * (kw + 1):c * (kw + 1) + kw, r * (kh + 1):r * (kh + 1) + kh] = k.T[:, ::-1]
    return img


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
        self.kernels_label = QLabel(self)
        self.kernels = pg.PlotWidget(self)
        self.kernels.setMinimumHeight(110)
        self.kernels.setMaximumHeight(160)
        self.kernels.setMenuEnabled(False)
        self.kernels.setMouseEnabled(False, False)
        self.kernels.hideButtons()
        self.kernels.getPlotItem().hideAxis("left")
        self.kernels.getPlotItem().hideAxis("bottom")
        self.kernels.setAspectLocked(True)
        self.kernel_image = pg.ImageItem()
        self.kernel_image.setColorMap(pg.colormap.get("CET-D1"))
        self.kernels.addItem(self.kernel_image)
        lay.addWidget(self.kernels_label)
        lay.addWidget(self.kernels)
        session.node_health_changed.connect(self.refresh)
        session.run_finished.connect(lambda _end: self.refresh(self.session.health))
        self.hide()

    def _conv_weight(self) -> np.ndarray | None:
        """The trained weights of the selected node when it is a 2-d convolution, else None."""
        trained = getattr(self.session, "trained", None)
        if trained is None or self.node_id is None or trained.plan is None:
            return None
        attr = trained.plan.compiled.module_names.get(self.node_id)
        if attr is None:
            return None
        try:
            module = trained.model.get_submodule(attr)
        except AttributeError:
            return None
        weight = getattr(module, "weight", None)
        if type(module).__name__ != "Conv2d" or weight is None or weight.dim() != 4:
            return None
        return weight.detach().float().cpu().numpy()

    def set_selection(self, node_ids: list[str]) -> None:
        self.node_id = node_ids[0] if len(node_ids) == 1 else None
        self.refresh(self.session.health)

    def refresh(self, book: HealthBook) -> None:
        h = book.nodes.get(self.node_id) if self.node_id is not None else None
        weight = self._conv_weight()
        self.kernels.setVisible(weight is not None)
        self.kernels_label.setVisible(weight is not None)
        if weight is not None:
            self.kernel_image.setImage(kernel_tiles(weight), autoLevels=False, levels=(0.0, 1.0))
            self.kernels_label.setText(f"kernels ({weight.shape[0]} × {weight.shape[2]}×{weight.shape[3]}, "
                                       f"input channel 1) of {self.session.trained.describe()}")
        if h is None or not h.histograms:
            self.title.setText("<b>Trained weights</b>")
            self.setVisible(weight is not None)
            for w, _, rng in self.plots.values():
                w.hide()
                rng.hide()
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
