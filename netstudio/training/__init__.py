"""Training engine: a pure ``fit`` loop with report callback and stop/pause events.

The engine imports torch, so it is loaded on first use: importing this package
(the project file reader does, for :class:`TrainConfig`) stays cheap.
"""

from typing import Any

from netstudio.training.config import TrainConfig
from netstudio.training.events import EventKind, FitStatus

__all__ = ["TrainConfig", "FitStatus", "EventKind", "FitResult", "fit", "evaluate", "predict", "confusion_matrix",
           "resolve_device", "available_devices", "device_label"]

_ENGINE = ("FitResult", "fit", "evaluate", "predict", "confusion_matrix", "resolve_device", "available_devices",
           "device_label")


def __getattr__(name: str) -> Any:
    if name in _ENGINE:
        from netstudio.training import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'netstudio.training' has no attribute {name!r}")
