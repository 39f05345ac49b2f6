"""Optional TensorBoard logging from ``fit``'s events (``pip install netstudio[tensorboard]``).

:class:`TensorBoardLogger` is a report callback like any other (``netstudio train --tensorboard DIR``,
the Training panel's TensorBoard setting, each rank 0 of a distributed job): after every epoch it
writes the scalars ``loss/train``, ``loss/val``, ``accuracy/train``, ``accuracy/val``, ``lr`` and
``samples_per_s`` at step = the epoch, through ``torch.utils.tensorboard.SummaryWriter``, into one
folder per run under the chosen directory (``tensorboard --logdir DIR`` shows them side by side). A
multi-phase run (several optimizers, a GAN) adds each phase's learning rate as ``lr/<optimizer name>``.
Nothing here imports Qt.
"""

from __future__ import annotations

import datetime
import math
import os
import re
from pathlib import Path
from typing import Any, Callable

from netstudio.errors import TrainingError

INSTALL_HINT = "pip install netstudio[tensorboard]"

#: epoch event field -> scalar tag
SCALARS = (("train_loss", "loss/train"), ("val_loss", "loss/val"), ("train_accuracy", "accuracy/train"),
           ("val_accuracy", "accuracy/val"), ("lr", "lr"), ("samples_per_s", "samples_per_s"))


def require_tensorboard() -> Any:
    """torch's ``SummaryWriter`` class, or TrainingError saying how to install TensorBoard."""
    try:
        import tensorboard  # noqa: F401 - torch.utils.tensorboard needs it; asked first for a clear error
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TrainingError("TensorBoard logging needs the tensorboard package, which is not installed",
                            hint=INSTALL_HINT) from None
    return SummaryWriter


def tensorboard_installed() -> bool:
    """Whether the tensorboard package is there (cheap: nothing is imported)."""
    import importlib.util

    try:
        return importlib.util.find_spec("tensorboard") is not None
    except (ImportError, ValueError):
        return False


def tensorboard_available() -> bool:
    try:
        require_tensorboard()
    except TrainingError:
        return False
    return True


def run_folder_name(name: str, now: datetime.datetime | None = None) -> str:
    """``<name>-YYYYmmdd-HHMMSS``: one folder per run, sorted by time (a safe file name)."""
    now = now or datetime.datetime.now()
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "run"
    return f"{stem[:60]}-{now.strftime('%Y%m%d-%H%M%S')}"


class TensorBoardLogger:
    """Report callback writing each epoch's scalars; ``log_dir`` is this run's own folder."""

    def __init__(self, root: str | os.PathLike[str], name: str = "run") -> None:
        writer_cls = require_tensorboard()
        base = Path(root)
        folder = base / run_folder_name(name)
        n = 1
        while folder.exists():  # two runs in the same second
            n += 1
            folder = base / f"{run_folder_name(name)}-{n}"
        self.log_dir = folder
        try:
            self.writer = writer_cls(log_dir=str(folder))
        except OSError as e:
            raise TrainingError(f"Cannot write TensorBoard logs to {folder}: {e.strerror or e}",
                                hint="choose another TensorBoard folder") from None
        self.epochs_written = 0

    def __call__(self, ev: dict[str, Any]) -> None:
        kind = ev.get("kind")
        if kind == "epoch":
            step = int(ev.get("epoch") or 0)
            for key, tag in SCALARS:
                v = ev.get(key)
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self.writer.add_scalar(tag, float(v), step)
            self.epochs_written += 1
            self.writer.flush()  # a watching TensorBoard sees every epoch as it ends
        elif kind == "phases" and ev.get("scope") == "epoch":
            step = int(ev.get("epoch") or 0)
            for name, v in (ev.get("lrs") or {}).items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.writer.add_scalar(f"lr/{name}", float(v), step)
        elif kind == "start":
            settings = {k: ev.get(k) for k in ("device", "epochs", "n_train", "n_val", "precision", "augmentation")}
            self.writer.add_text("run", "  \n".join(f"{k}: {v}" for k, v in settings.items()), 0)
        elif kind == "end":
            self.writer.add_text("run/end", f"{ev.get('status')}: {ev.get('message')}", self.epochs_written)
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def with_tensorboard(report: Callable[[dict[str, Any]], None] | None, root: str | os.PathLike[str] | None,
                     name: str = "run") -> tuple[Callable[[dict[str, Any]], None] | None, TensorBoardLogger | None]:
    """``report`` that also logs to TensorBoard under ``root`` (unchanged without a root); close the logger after."""
    if not root:
        return report, None
    logger = TensorBoardLogger(root, name)

    def both(ev: dict[str, Any]) -> None:
        if report is not None:
            report(ev)
        logger(ev)

    return both, logger
