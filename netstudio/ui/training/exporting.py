"""What the Training dock saves: the trained model (through the export dialog) and its plots.

Kept apart from the dock's widgets: these functions take the session's trained
model and the current project explicitly and return what they made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QFileDialog, QWidget

from netstudio.training.config import TrainConfig
from netstudio.ui.training.export_dialog import ExportDialog
from netstudio.ui.training.plots import LivePlots
from netstudio.ui.training.session import TrainedModel


def trained_project(trained: TrainedModel | None, current: Any) -> Any:
    """The project the weights were trained from (the graph snapshot, not later edits)."""
    from netstudio.graph.model import Graph
    from netstudio.project.io import Project

    if trained is None:
        return current
    return Project(Graph.from_dict(trained.graph_dict), TrainConfig.from_dict(trained.config.to_dict()),
                   getattr(current, "name", "Untitled"), getattr(current, "description", ""))


def make_export_dialog(parent: QWidget | None, trained: TrainedModel | None, current: Any,
                       note: str = "") -> ExportDialog | None:
    """An export dialog for the trained weights (None without any); exporting marks them saved."""
    if trained is None:
        return None
    where = getattr(current, "path", None)
    dlg = ExportDialog(parent, trained.model, trained_project(trained, current), trained.plan,
                       trained.example_input(), default_dir=Path(where).parent if where else None,
                       default_name=Path(where).stem if where else None, data=trained.data, note=note)
    dlg.exported.connect(lambda _fmt, _path, t=trained: setattr(t, "exported", True))
    return dlg


def save_plots_png(parent: QWidget | None, plots: LivePlots) -> str:
    """Ask for a file and save the plots there; the status text ("" if cancelled)."""
    path, _ = QFileDialog.getSaveFileName(parent, "Save plots as PNG", "training.png", "PNG image (*.png)")
    if not path:
        return ""
    files = plots.export_png(path)
    return "Saved " + ", ".join(p.name for p in files)


def save_history_csv(parent: QWidget | None, plots: LivePlots) -> str:
    """Ask for a file and save the epoch history there; the status text ("" if cancelled)."""
    path, _ = QFileDialog.getSaveFileName(parent, "Save history as CSV", "training.csv", "CSV (*.csv)")
    if not path:
        return ""
    return f"Saved {plots.export_csv(path).name}"
