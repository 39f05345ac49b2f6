"""Checks run before a training run allocates anything (the CLI and the app call the same ones)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from netstudio.errors import TrainingError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from netstudio.compiler.memory import MemoryEstimate
    from netstudio.graph.model import Graph


def training_device(requested: str) -> "torch.device":
    """The device a run with this setting would use; the CPU when it cannot be used here
    (that mistake is reported on its own, when the run starts)."""
    import torch

    from netstudio.training.engine import resolve_device

    try:
        return resolve_device(requested)
    except TrainingError:
        return torch.device("cpu")


def check_memory(graph: "Graph", batch_size: int, device: "str | torch.device", processes: int = 1
                 ) -> "MemoryEstimate | None":
    """MemoryLimitError (with the node that makes it too big) when training the model at
    ``batch_size`` cannot fit on ``device``; the estimate otherwise (None for an invalid model,
    which compiling reports). ``processes``: ranks of a distributed job on this machine; CPU
    ranks share its RAM, each with a copy of the model (GPU ranks have a GPU each)."""
    from netstudio.compiler import memory
    from netstudio.compiler.shapes import analyze

    an = analyze(graph, batch_size)
    if not an.model_ok:
        return None
    dev = training_device(device) if isinstance(device, str) else device
    return memory.check_training_fits(graph, an, dev, processes=processes if dev.type == "cpu" else 1)
