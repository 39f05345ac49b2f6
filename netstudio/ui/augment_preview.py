"""The Dataset node's augmentation preview: a strip of training images above their augmented versions.

Shown in the inspector under a Dataset node's params. The images come from
:func:`netstudio.training.augment.preview` on a worker thread (the first call may load the data);
the button asks again, so each press shows the same seeded draws for the current settings.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWidget

from netstudio.ui.training.worker import WorkerThread, _ThreadedWorker

#: images in the strip, and the gap between them (pixels of the composed image)
N_IMAGES = 8
GAP = 2


class PreviewWorker(_ThreadedWorker):
    """Computes one preview strip; ``done`` carries {"status": "ok", "strip": HxWx3 uint8 array} or an error."""

    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__()
        self.params = params

    def _work(self) -> dict[str, Any]:
        return {"status": "ok", "strip": strip(self.params)}


def strip(params: dict[str, Any], n: int = N_IMAGES) -> Any:
    """The originals (top row) and their augmentations (bottom row) as one HxWx3 uint8 numpy array."""
    import torch

    from netstudio.training.augment import preview

    orig, aug = preview(params, n=n)
    rows = []
    for batch in (orig, aug):
        imgs = batch if batch.shape[1] == 3 else batch[:, :1].expand(-1, 3, -1, -1)
        gap = torch.ones(3, imgs.shape[2], GAP)
        parts = []
        for i, im in enumerate(imgs):
            parts += [im] if i == 0 else [gap, im]
        rows.append(torch.cat(parts, 2))
    img = torch.cat([rows[0], torch.ones(3, GAP, rows[0].shape[2]), rows[1]], 1)
    return (img.permute(1, 2, 0) * 255).round().to(torch.uint8).contiguous().numpy()


class AugmentPreview(QWidget):
    """'Preview augmentation' button and the strip it shows (for the Dataset node in the inspector)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.params: dict[str, Any] | None = None
        self._thread: WorkerThread | None = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 4, 0, 0)
        self.button = QPushButton("Preview augmentation")
        self.button.setToolTip("the first training images (top) and one augmentation of each (bottom)")
        self.button.clicked.connect(self.refresh)
        self.image = QLabel()
        self.image.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.note = QLabel()
        self.note.setWordWrap(True)
        for w in (self.button, self.image, self.note):
            lay.addWidget(w)
        self.image.hide()
        self.note.hide()

    def set_params(self, params: dict[str, Any] | None) -> None:
        """The Dataset node's params (None: not a Dataset node, the preview hides)."""
        self.params = dict(params) if params is not None else None
        self.image.clear()
        self.image.hide()
        self.note.hide()
        self.setVisible(params is not None)

    def refresh(self) -> None:
        if self.params is None or (self._thread is not None and self._thread.is_running()):
            return
        self.button.setEnabled(False)
        self.note.setText("loading…")
        self.note.show()
        worker = PreviewWorker(dict(self.params))
        worker.done.connect(self._show)
        self._thread = WorkerThread(worker, "augment-preview")
        self._thread.start()

    def _show(self, outcome: dict[str, Any]) -> None:
        self.button.setEnabled(True)
        if outcome.get("status") != "ok":
            self.note.setText(str(outcome.get("message") or "the preview failed"))
            self.image.hide()
            return
        arr = outcome["strip"]
        h, w = arr.shape[:2]
        qimg = QImage(arr.tobytes(), w, h, 3 * w, QImage.Format.Format_RGB888).copy()
        scale = max(1, 2 if w < 200 else 1)
        self.image.setPixmap(QPixmap.fromImage(qimg).scaled(w * scale, h * scale))
        self.image.show()
        self.note.setText("top: training images · bottom: augmented (the same seed draws the same)")
