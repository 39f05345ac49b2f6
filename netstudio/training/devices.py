"""Training devices: what ``auto``/``cpu``/``cuda[:N]``/``mps`` mean on this machine."""

from __future__ import annotations

import torch

from netstudio.errors import TrainingError


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps`` → torch.device; TrainingError if unusable."""
    key = (name or "auto").strip().lower()
    if key == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if key == "cpu":
        return torch.device("cpu")
    if key == "cuda" or key.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise TrainingError(f"Device '{name}' was requested but no CUDA GPU is available on this machine",
                                hint="choose 'auto' or 'cpu'")
        if key == "cuda":
            return torch.device("cuda", torch.cuda.current_device())
        index = key[5:]
        if not index.isdigit():
            raise TrainingError(f"Unknown device '{name}'", hint="write cuda:0, cuda:1, …")
        count = torch.cuda.device_count()
        if int(index) >= count:
            raise TrainingError(f"Device '{name}' does not exist: this machine has {count} CUDA "
                                f"GPU{'s' if count != 1 else ''}", hint=f"use cuda:0 … cuda:{count - 1}")
        return torch.device("cuda", int(index))
    if key == "mps":
        if not _mps_available():
            raise TrainingError("Device 'mps' was requested but Apple's Metal backend is not available",
                                hint="choose 'auto' or 'cpu'")
        return torch.device("mps")
    raise TrainingError(f"Unknown device '{name}'", hint="use auto, cpu, cuda, cuda:N or mps")


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple GPU (mps)"
    return "cpu"


def available_devices(cpu_threads: int | None = None) -> list[tuple[str, str]]:
    """(device id, human label) of every usable device, CPU first; 'auto' is not listed.

    ``cpu_threads``: the threads training will use, when not this thread's torch setting.
    """
    n = cpu_threads or torch.get_num_threads()
    out = [("cpu", f"CPU ({n} thread{'s' if n != 1 else ''})")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            out.append((f"cuda:{i}", torch.cuda.get_device_name(i)))
    if _mps_available():
        out.append(("mps", "Apple GPU (mps)"))
    return out
