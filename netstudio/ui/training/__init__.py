"""Training inside the app: the Training dock (live plots, results) and the export dialog.

The slow work runs in the Qt-free core (``netstudio.training.fit``,
``netstudio.project.export``); this package only drives it from a QThread and
shows what it reports.
"""

from netstudio.ui.training.dock import TrainingDock
from netstudio.ui.training.export_dialog import ExportDialog
from netstudio.ui.training.session import RunState, TrainingSession

__all__ = ["ExportDialog", "RunState", "TrainingDock", "TrainingSession"]
