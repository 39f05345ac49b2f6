"""Training settings stored in the project file (plain data, no torch)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from netstudio.errors import ProjectError

DEVICES = ("auto", "cpu", "cuda", "mps")
#: mixed precision: off (float32), bf16 (autocast to bfloat16: CPU and recent GPUs), fp16 (CUDA, gradient scaler)
PRECISIONS = ("off", "bf16", "fp16")
MAX_SEED = 2**32 - 1


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    device: str = "auto"          # auto | cpu | cuda | cuda:N | mps
    seed: int = 0
    shuffle: bool = True
    early_stopping_patience: int = 0  # epochs without val-loss improvement; 0 = off
    keep_best: bool = True            # restore the weights of the best val-loss epoch at the end
    fast_path: str = "auto"           # auto | off: whole-step CUDA graph capture when possible
    threads: int = 0                  # CPU intra-op threads; 0 = automatic (adapts to machine load)
    # --- step controls (netstudio.training.controls) ---
    clip_norm: float = 0.0            # clip the gradients' total L2 norm to this; 0 = off
    clip_value: float = 0.0           # clip every gradient element to ±this; 0 = off
    warmup_epochs: int = 0            # linear lr warm-up over these epochs (per batch), before any scheduler
    precision: str = "off"            # off | bf16 | fp16 (mixed precision; see PRECISIONS)
    stats_every: int = 200            # per-node statistics every N steps (nodestats.DEFAULT_EVERY); 0 = off

    def to_dict(self) -> dict[str, Any]:
        """Every setting, except those added later left at their default (step controls off, statistics
        every 200 steps): a project that does not use
        them is written as before they existed, so older NetStudio versions open it unchanged."""
        d = asdict(self)
        for name, default in OPTIONAL_DEFAULTS.items():
            if d[name] == default:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        if not isinstance(data, Mapping):
            raise ProjectError("'training' must be an object")
        cfg = cls()
        for f in fields(cls):
            if f.name not in data:
                continue
            v = data[f.name]
            default = getattr(cfg, f.name)
            if isinstance(default, float) and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)  # JSON writes 1.0 as 1 in some editors
            ok = isinstance(v, type(default)) and not (isinstance(v, bool) and not isinstance(default, bool))
            if not ok:
                raise ProjectError(f"training.{f.name} must be {type(default).__name__}, got {v!r}")
            setattr(cfg, f.name, v)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if not 1 <= self.epochs <= 1_000_000:
            raise ProjectError(f"epochs must be between 1 and 1000000, got {self.epochs}")
        if not 1 <= self.batch_size <= 1_000_000:
            raise ProjectError(f"batch_size must be between 1 and 1000000, got {self.batch_size}")
        if not (self.device in DEVICES or self.device.startswith("cuda:")):
            raise ProjectError(f"device must be one of {', '.join(DEVICES)} or cuda:N, got {self.device!r}")
        if self.fast_path not in ("auto", "off"):
            raise ProjectError(f"fast_path must be 'auto' or 'off', got {self.fast_path!r}")
        if not 0 <= self.threads <= 1024:
            raise ProjectError(f"threads must be between 0 (automatic) and 1024, got {self.threads}")
        if not 0 <= self.stats_every <= 1_000_000_000:
            raise ProjectError(f"stats_every must be between 0 (off) and 1000000000, got {self.stats_every}")
        if self.early_stopping_patience < 0 or self.seed < 0:
            raise ProjectError("seed and early_stopping_patience must not be negative")
        if self.seed > MAX_SEED:
            raise ProjectError(f"seed must be between 0 and {MAX_SEED}, got {self.seed}",
                               hint="random generators (PyTorch, NumPy) take 32-bit seeds")
        for name in ("clip_norm", "clip_value"):
            v = getattr(self, name)
            if not (0.0 <= v <= 1e9):  # also refuses NaN
                raise ProjectError(f"{name} must be between 0 (off) and 1e9, got {v!r}")
        if not 0 <= self.warmup_epochs <= 1_000_000:
            raise ProjectError(f"warmup_epochs must be between 0 (off) and 1000000, got {self.warmup_epochs}")
        if self.precision not in PRECISIONS:
            raise ProjectError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.early_stopping_patience > 1_000_000:
            raise ProjectError(f"early_stopping_patience must be at most 1000000, got "
                               f"{self.early_stopping_patience}")


#: settings added after format 1 was fixed: written only when not at these defaults (see ``to_dict``)
OPTIONAL_DEFAULTS: dict[str, Any] = {"clip_norm": 0.0, "clip_value": 0.0, "warmup_epochs": 0, "precision": "off",
                                     "stats_every": 200}
