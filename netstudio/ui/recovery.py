"""Crash recovery: periodic copies of unsaved work, offered again on the next start.

One recovery file per project (keyed by its path, or one slot for untitled
work) plus a small JSON sidecar naming the original file. A clean exit or a
save deletes them, so a recovery file found at start-up means the app did not
close properly. It is offered only when newer than the project file itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from netstudio.project.io import Project

SUFFIX = ".recovery.nsproj"


@dataclass(frozen=True)
class RecoveryInfo:
    path: Path                 # the recovery copy
    original: Path | None      # the project it belongs to (None: never saved)
    name: str
    saved_at: float            # seconds since the epoch


def default_recovery_dir() -> Path:
    env = os.environ.get("NETSTUDIO_RECOVERY_DIR")
    if env:
        return Path(env)
    from PySide6.QtCore import QStandardPaths

    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(base or tempfile.gettempdir()) / "recovery"


class RecoveryStore:
    def __init__(self, directory: Path | str | None = None) -> None:
        self.dir = Path(directory) if directory is not None else default_recovery_dir()

    def _key(self, original: Path | None) -> str:
        if original is None:
            return "untitled"
        return hashlib.sha1(str(Path(original).resolve()).encode("utf-8")).hexdigest()[:16]

    def file_for(self, original: Path | None) -> Path:
        return self.dir / f"{self._key(original)}{SUFFIX}"

    def write(self, project: Project) -> Path:
        """Save a copy of ``project`` atomically; returns the recovery file path."""
        self.dir.mkdir(parents=True, exist_ok=True)
        target = self.file_for(project.path)
        meta = {"original": str(project.path) if project.path else None, "name": project.name,
                "saved_at": time.time()}
        _atomic_write(target, project.dumps())
        _atomic_write(target.with_suffix(".json"), json.dumps(meta))
        return target

    def discard(self, original: Path | None) -> None:
        target = self.file_for(original)
        for p in (target, target.with_suffix(".json")):
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    def discard_info(self, info: RecoveryInfo) -> None:
        for p in (info.path, info.path.with_suffix(".json")):
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    def pending(self) -> list[RecoveryInfo]:
        """Recovery files worth offering, newest first; stale ones are removed."""
        if not self.dir.is_dir():
            return []
        out: list[RecoveryInfo] = []
        for f in self.dir.glob(f"*{SUFFIX}"):
            meta_path = f.with_suffix(".json")
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                meta = {}
            original = Path(meta["original"]) if isinstance(meta.get("original"), str) else None
            saved_at = float(meta.get("saved_at") or f.stat().st_mtime)
            info = RecoveryInfo(f, original, str(meta.get("name") or "Untitled"), saved_at)
            if original is not None and original.exists() and original.stat().st_mtime >= f.stat().st_mtime:
                self.discard_info(info)  # the project was saved after this copy: nothing to recover
                continue
            out.append(info)
        out.sort(key=lambda i: i.saved_at, reverse=True)
        return out


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
