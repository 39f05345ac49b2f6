"""Crash recovery: periodic copies of unsaved work, offered again on the next start.

Every window owns one recovery *slot* (a copy of its project plus a small JSON
sidecar saying which file it belongs to, what it was based on and when it was
written), so two untitled windows never overwrite each other's backup. A clean
exit, a save, or the user declining the offer deletes a slot; nothing else
does. A slot found at start-up whose window is gone (the app crashed) is
offered, whatever happened to the original file since: a project file touched
after the crash (git, a sync client) keeps its backup offered, with a note.

Slots of windows still open, in this process or in another running NetStudio
(the sidecar records the process id), are neither offered nor deleted.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netstudio.fileio import atomic_write, clean_stale_temp_files, pid_alive
from netstudio.project.io import Project

SUFFIX = ".recovery.nsproj"

#: slots owned by windows of this process that are still open
_LIVE: set[str] = set()


@dataclass(frozen=True)
class RecoveryInfo:
    path: Path                 # the recovery copy
    original: Path | None      # the project it belongs to (None: never saved)
    name: str
    saved_at: float            # seconds since the epoch
    slot: str = ""
    based_on: str | None = None      # e.g. the sample an untitled copy was opened from
    file_changed: bool = False       # the original file changed on disk after this work began from it
    base: tuple[int, int] | None = None  # (mtime_ns, size) of the original the edits started from

    def describe(self) -> str:
        """What this backup differs from, in words."""
        if self.original is not None:
            text = f"unsaved changes to {self.original}"
            if not self.original.exists():
                text += " (that file no longer exists)"
            elif self.file_changed:
                text += " (that file was changed on disk after this backup was started)"
            return text
        if self.based_on:
            return f"an unsaved copy of {self.based_on}"
        return "an untitled project that was never saved"


def default_recovery_dir() -> Path:
    env = os.environ.get("NETSTUDIO_RECOVERY_DIR")
    if env:
        return Path(env)
    from PySide6.QtCore import QStandardPaths

    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(base or tempfile.gettempdir()) / "recovery"


def new_slot() -> str:
    return f"w{os.getpid()}-{secrets.token_hex(4)}"


def _stamp(path: Path | None) -> tuple[int, int] | None:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


class RecoveryStore:
    """The recovery folder, seen from one window (which owns :attr:`slot`)."""

    def __init__(self, directory: Path | str | None = None, slot: str | None = None) -> None:
        self.dir = Path(directory) if directory is not None else default_recovery_dir()
        self.slot = slot or new_slot()
        self.based_on: str | None = None
        self._base_path: Path | None = None
        self._base: tuple[int, int] | None = None
        _LIVE.add(self.slot)

    # --- this window's slot ---------------------------------------------------------
    def file_for(self, slot: str | None = None) -> Path:
        return self.dir / f"{slot or self.slot}{SUFFIX}"

    def set_base(self, path: Path | None, based_on: str | None = None) -> None:
        """The file the window's work now starts from (after open or save)."""
        self._base_path = Path(path) if path is not None else None
        self._base = _stamp(self._base_path)
        self.based_on = based_on

    def write(self, project: Project) -> Path:
        """Save a copy of ``project`` into this window's slot, atomically; returns its path."""
        self.dir.mkdir(parents=True, exist_ok=True)
        target = self.file_for()
        base = self._base if (project.path is not None and self._base_path is not None
                              and Path(project.path) == self._base_path) else None
        meta = {"original": str(project.path) if project.path else None, "name": project.name,
                "saved_at": time.time(), "pid": os.getpid(), "slot": self.slot, "based_on": self.based_on,
                "base": list(base) if base else None}
        atomic_write(target, project.dumps())
        atomic_write(target.with_suffix(".json"), json.dumps(meta))
        return target

    def discard(self) -> None:
        """Delete this window's backup (after a save, or when its work was thrown away)."""
        _remove(self.file_for())

    def release(self) -> None:
        """The window closes: its slot no longer counts as in use."""
        _LIVE.discard(self.slot)

    def adopt(self, info: RecoveryInfo) -> None:
        """Continue in a restored slot: autosaves update that backup, a save deletes it."""
        if info.slot and info.slot != self.slot:
            self.discard()
            _LIVE.discard(self.slot)
            self.slot = info.slot
            _LIVE.add(self.slot)
        self._base_path = info.original
        self._base = info.base
        self.based_on = info.based_on

    # --- the whole folder ----------------------------------------------------------------
    def discard_info(self, info: RecoveryInfo) -> None:
        _remove(info.path)

    def pending(self) -> list[RecoveryInfo]:
        """Backups left by windows that are gone, newest first. Deletes none of them.

        Temporary files a crash left in the folder are removed on the way.
        """
        if not self.dir.is_dir():
            return []
        clean_stale_temp_files(self.dir)
        _clean_legacy_temp_files(self.dir)
        out: list[RecoveryInfo] = []
        for f in self.dir.glob(f"*{SUFFIX}"):
            try:
                info = self._info(f)
            except OSError:
                continue
            if info is not None:
                out.append(info)
        out.sort(key=lambda i: i.saved_at, reverse=True)
        return out

    def _info(self, f: Path) -> RecoveryInfo | None:
        slot = f.name[:-len(SUFFIX)]
        meta = _read_meta(f.with_suffix(".json"))
        pid = meta.get("pid")
        if slot in _LIVE:
            return None  # a window of this process is using it
        if isinstance(pid, int) and not isinstance(pid, bool) and pid != os.getpid() and pid_alive(pid):
            return None  # another NetStudio that is still running
        mtime = f.stat().st_mtime
        original = meta.get("original")
        original_p = Path(original) if isinstance(original, str) and original and "\0" not in original else None
        saved_at = meta.get("saved_at")
        if not (isinstance(saved_at, (int, float)) and not isinstance(saved_at, bool) and math.isfinite(saved_at)
                and 0 <= saved_at < 1e11):
            saved_at = mtime
        name = meta.get("name")
        based_on = meta.get("based_on")
        base_raw = meta.get("base")
        base = None
        if (isinstance(base_raw, list) and len(base_raw) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) for x in base_raw)):
            base = (int(base_raw[0]), int(base_raw[1]))
        changed = False
        if original_p is not None:
            now = _stamp(original_p)
            if now is not None:
                changed = now != base if base is not None else now[0] / 1e9 > mtime
        return RecoveryInfo(f, original_p, name if isinstance(name, str) and name else "Untitled", float(saved_at),
                            slot, based_on if isinstance(based_on, str) and based_on else None, changed, base)


def _read_meta(path: Path) -> dict[str, Any]:
    """The sidecar as a dict; a missing or damaged one ({"saved_at": "x"}, null, []) reads as {}."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return meta if isinstance(meta, dict) else {}


_LEGACY_TEMP = re.compile(r"^\..+\.recovery\.(nsproj|json)\.[A-Za-z0-9_]+\.tmp$")


def _clean_legacy_temp_files(folder: Path, min_age_s: float = 3600.0) -> None:
    """Temporary files earlier versions leaked here (``.<slot>.recovery.nsproj.<random>.tmp``, one per failed
    autosave). This folder is NetStudio's own, so an hour-old one is safely garbage."""
    now = time.time()
    for p in folder.iterdir():
        if _LEGACY_TEMP.match(p.name):
            try:
                if now - p.stat().st_mtime > min_age_s:
                    p.unlink()
            except OSError:
                pass


def _remove(target: Path) -> None:
    for p in (target, target.with_suffix(".json")):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
