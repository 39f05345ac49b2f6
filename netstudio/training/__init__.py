"""Training engine: a pure ``fit`` loop with report callback and stop/pause events."""

from netstudio.training.config import TrainConfig

__all__ = ["TrainConfig"]
