"""Training checkpoints: model/optimizer/scheduler state and the finished epoch, written atomically.

Written after every epoch when a run has a checkpoint folder (by rank 0 of a distributed job),
read back with ``weights_only=True`` and a checksum over the whole content, so a damaged or
foreign file is refused with a readable error instead of being loaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from netstudio.errors import TrainingError

CHECKPOINT_FILE = "last.pt"
CHECKPOINT_FORMAT = "netstudio-checkpoint"


def default_checkpoint_dir(project: str | os.PathLike[str]) -> str:
    """``<project>.checkpoints`` next to the project file, so ``--resume`` needs no other flag."""
    p = Path(project)
    return str(p.with_name(p.stem + ".checkpoints"))


def checkpoint_path(folder: str | os.PathLike[str]) -> str:
    """The checkpoint file a run with this checkpoint folder writes and resumes from."""
    return os.path.join(folder, CHECKPOINT_FILE)


def first_line(e: BaseException) -> str:
    """``Type: first line of the message`` of an exception, for one-line errors."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__

def save_checkpoint(path: str | os.PathLike[str], *, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, epoch: int, extra: Mapping[str, Any] | None = None) -> Path:
    """Write model/optimizer/scheduler state and the finished ``epoch`` atomically.

    The keys ``epoch``/``model``/``optimizer``/``scheduler`` are the ones an exported
    training script (``--format script``) uses for its own checkpoints.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    inner = getattr(model, "module", model)  # DDP keeps the real model in .module
    state: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "epoch": int(epoch),
        "model": {k: v.detach().cpu() for k, v in inner.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
    }
    if extra:
        state.update(extra)
    state["checksum"] = state_checksum(state)  # read_checkpoint refuses a file whose content changed
    from netstudio.fileio import atomic_write, torch_writer

    # temp file + fsync + rename: a crash mid-save leaves the previous checkpoint intact
    return atomic_write(p, torch_writer(state))


def state_checksum(state: Mapping[str, Any]) -> str:
    """SHA-256 over a checkpoint's content (every tensor's bytes, dtype and shape, every plain value)."""
    import hashlib

    h = hashlib.sha256()

    def feed(v: Any) -> None:
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            if t.numel():
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(v, Mapping):
            h.update(b"{")
            for k, x in v.items():
                if k == "checksum" and v is state:
                    continue
                feed(k)
                feed(x)
            h.update(b"}")
        elif isinstance(v, (list, tuple)):
            h.update(b"[" if isinstance(v, list) else b"(")
            for x in v:
                feed(x)
            h.update(b"]")
        else:
            h.update(f"{type(v).__name__}:{v!r};".encode("utf-8", "backslashreplace"))

    feed(state)
    return h.hexdigest()


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (tensors on the CPU), None if there is none; TrainingError if unreadable
    or damaged (its stored checksum no longer matches its content)."""
    import warnings

    from netstudio.fileio import torch_load_reason

    p = Path(path)
    if not p.exists():
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on odd pickle protocols; our error says enough
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated file, foreign pickle...
        raise TrainingError(f"Cannot read the checkpoint {p}: {torch_load_reason(e)}",
                            hint="delete it to start from scratch") from e
    if not isinstance(state, dict) or not {"epoch", "model", "optimizer"} <= set(state):
        raise TrainingError(f"{p} is not a training checkpoint", hint="delete it to start from scratch")
    stored = state.get("checksum")
    if stored is not None:  # older checkpoints carry none
        try:
            actual = state_checksum(state)
        except Exception as e:  # noqa: BLE001 - a damaged value torch still loaded
            raise TrainingError(f"The checkpoint {p} is damaged: {first_line(e)}",
                                hint="delete it to start from scratch") from e
        if stored != actual:
            raise TrainingError(f"The checkpoint {p} is damaged: its content does not match its checksum "
                                "(the file was changed or corrupted after it was written)",
                                hint="delete it to start from scratch")
        del state["checksum"]
    return state


def state_dict_mismatch(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str | None:
    """What keeps ``state`` from loading into ``model`` (missing, unexpected, wrong-shaped tensors), or None."""
    own = model.state_dict()
    report = compare_weights(own, state)
    if report.fits:
        return None
    order = {k: i for i, k in enumerate(own)}
    wrong = [f"{k} {a} vs {b}" for k, a, b in sorted(report.mismatched, key=lambda m: order[m[0]])]
    missing, unexpected = report.missing, report.unexpected
    parts = []
    if missing:
        parts.append("missing " + ", ".join(missing[:5]) + (" …" if len(missing) > 5 else ""))
    if unexpected:
        parts.append("unexpected " + ", ".join(unexpected[:5]) + (" …" if len(unexpected) > 5 else ""))
    if wrong:
        parts.append("wrong shape " + ", ".join(wrong[:3]) + (" …" if len(wrong) > 3 else ""))
    return "; ".join(parts)


def restore_checkpoint(state: Mapping[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
                       scheduler: Any) -> int:
    """Load a checkpoint into the live objects; returns the epoch it finished."""
    inner = getattr(model, "module", model)
    mismatch = state_dict_mismatch(inner, state["model"])
    if mismatch is not None:
        raise TrainingError(f"The checkpoint does not fit this model: The weights do not match this model: {mismatch}",
                            hint="it belongs to another project; delete it or use another --checkpoint-dir")
    try:
        inner.load_state_dict(state["model"])
    except Exception as e:  # noqa: BLE001 - a value torch refuses (dtype...)
        raise TrainingError(f"The checkpoint does not fit this model: {first_line(e)}",
                            hint="it belongs to another project; delete it or use another --checkpoint-dir") from e
    try:
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
    except (ValueError, KeyError, RuntimeError) as e:
        raise TrainingError(f"The checkpoint's optimizer/scheduler state does not fit: {first_line(e)}",
                            hint="the optimizer or scheduler changed; delete the checkpoint to start over") from e
    return int(state["epoch"])


@dataclass
class WeightsReport:
    """What :func:`load_weights_onto` took from a state_dict and what it left."""

    loaded: list[str]
    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]   # key, file shape, graph shape

    def text(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors"]
        if self.missing:
            lines.append(f"missing (kept as initialised): {', '.join(self.missing)}")
        if self.unexpected:
            lines.append(f"unexpected (ignored): {', '.join(self.unexpected)}")
        for k, a, b in self.mismatched:
            lines.append(f"mis-shaped (kept as initialised): {k}: file {tuple(a)}, graph {tuple(b)}")
        return "\n".join(lines)

    @property
    def fits(self) -> bool:
        """True when every tensor of the file fits and the model lacks none."""
        return not (self.missing or self.unexpected or self.mismatched)


def compare_weights(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> WeightsReport:
    """Which of ``state``'s tensors fit ``own`` (a model's state_dict) by key and shape, which do not,
    and which of ``own`` the file lacks; lists follow the file's key order (``missing``: the model's)."""
    loaded, unexpected, mismatched = [], [], []
    for k, v in state.items():
        if k not in own:
            unexpected.append(k)
        elif tuple(v.shape) != tuple(own[k].shape):
            mismatched.append((k, tuple(v.shape), tuple(own[k].shape)))
        else:
            loaded.append(k)
    missing = [k for k in own if k not in state]
    return WeightsReport(loaded, missing, unexpected, mismatched)


def load_weights_onto(model: nn.Module, state: Mapping[str, torch.Tensor]) -> WeightsReport:
    """Load ``state`` onto ``model`` by module path ("layer1_0_conv1.weight"); keys that are missing,
    unexpected or mis-shaped are reported, not fatal (transfer learning replaces heads)."""
    report = compare_weights(model.state_dict(), state)
    model.load_state_dict({k: state[k] for k in report.loaded}, strict=False)
    return report
