"""The sample projects that ship with NetStudio.

In a source checkout they live in ``sample_projects/`` beside the package; an
installed wheel carries them as ``netstudio/samples/`` (see pyproject.toml).
"""

from __future__ import annotations

from pathlib import Path

import netstudio
from netstudio.project.io import SUFFIX

DEFAULT_SAMPLE = "mnist_mlp_sgd" + SUFFIX


def sample_dirs() -> list[Path]:
    """Folders that may hold bundled samples, the checkout's first."""
    root = Path(netstudio.__file__).resolve().parent
    return [root.parent / "sample_projects", root / "samples"]


def bundled_samples() -> list[Path]:
    """Every bundled sample project, one per name (the checkout's copy wins), sorted by name."""
    found: dict[str, Path] = {}
    for d in sample_dirs():
        if d.is_dir():
            for f in sorted(d.glob("*" + SUFFIX)):
                found.setdefault(f.name, f)
    return [found[k] for k in sorted(found)]


def find_sample(name: str = DEFAULT_SAMPLE) -> Path | None:
    """The bundled sample called ``name`` (with or without the suffix), or None."""
    if not name.endswith(SUFFIX):
        name += SUFFIX
    return next((p for p in bundled_samples() if p.name == name), None)


__all__ = ["DEFAULT_SAMPLE", "bundled_samples", "find_sample", "sample_dirs"]
