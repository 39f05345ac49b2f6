"""Every file NetStudio writes lands on disk through :func:`atomic_write`.

The data goes to a temporary file in the target's own folder, is flushed to
disk (fsync), then renamed over the target (``os.replace``), so a crash or a
``kill -9`` at any moment leaves either the old file or the new one, never half
of one. On top of that:

- a new file gets the mode a plain ``open(path, "w")`` would give it (0666
  minus the umask); an existing file keeps its mode;
- a symbolic link is followed: its target is rewritten, the link stays;
- the temporary file is removed when anything fails, and temporary files
  left by a crash (their process is gone) are removed by
  :func:`clean_stale_temp_files`, which the app and ``load_project`` call.

Core module: no Qt, no torch.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path
from typing import Callable, Iterable

#: temporary files are named ``.<name>.<pid>.<random>.nstmp<suffix>``
TEMP_MARK = ".nstmp"
_TEMP_RE = re.compile(r"^\.(?P<stem>.*)\.(?P<pid>\d+)\.(?P<rand>[0-9a-f]{8})\.nstmp(?P<suffix>\.[^.]*)?$")
#: a temp file whose process is alive is left alone unless it is older than this
STALE_AFTER_S = 24 * 3600
_NAME_ROOM = 120  # characters of the target's name kept in the temp name (NAME_MAX is 255)

Writer = Callable[[str], None]


def user_dir(env: str, xdg_var: str, fallback: str) -> Path:
    """A per-user NetStudio folder (not created here): ``$env`` if set, else ``$xdg_var/netstudio``, else
    ``~/<fallback>/netstudio`` (XDG: ``XDG_CONFIG_HOME`` / ``.config``, ``XDG_CACHE_HOME`` / ``.cache``)."""
    explicit = os.environ.get(env)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get(xdg_var)
    base = Path(xdg).expanduser() if xdg else Path.home() / fallback
    return base / "netstudio"


def torch_writer(obj: object) -> Writer:
    """A writer for :func:`atomic_write` that ``torch.save``s ``obj`` through an open file.

    Given a path, torch names the archive's top folder after the file, which would be
    the temporary name; through a file object it is always ``archive``, so a file's
    bytes do not depend on where it was written first.
    """

    def write(tmp: str) -> None:
        import torch

        with open(tmp, "wb") as fh:
            torch.save(obj, fh)

    return write


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)  # no /proc: the classic read-by-setting (briefly process-wide)
    os.umask(old)
    return old


def resolve_target(path: str | os.PathLike[str]) -> Path:
    """The file that writing ``path`` should change: symbolic links followed (also dangling ones)."""
    p = Path(path)
    if p.is_symlink():
        return Path(os.path.realpath(p))
    return p


def temp_name(target: Path, suffix: str = "") -> str:
    stem = target.name[:_NAME_ROOM]
    return f".{stem}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_MARK}{suffix}"


def atomic_write(path: str | os.PathLike[str], data: bytes | str | Writer, *, keep_suffix: bool = False,
                 make_parents: bool = False) -> Path:
    """Replace ``path`` with ``data`` (bytes, text written as UTF-8, or ``writer(tmp_path)``).

    ``keep_suffix`` ends the temporary name with the target's suffix (torch.export
    insists on ``.pt2``). ``make_parents`` creates missing folders (and removes the
    ones it created if the write fails). Returns the path written (the link's
    target for a symbolic link). Raises ``OSError`` (and whatever ``writer``
    raises); the target is then untouched and no temporary file remains.
    """
    target = resolve_target(path)
    if isinstance(data, str):
        data = data.encode("utf-8")  # before any file exists: a lone surrogate fails here, leaking nothing
    created = _make_parents(target.parent) if make_parents else []
    try:
        try:
            mode = os.stat(target).st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~current_umask()
        tmp = str(target.parent / temp_name(target, target.suffix if keep_suffix else ""))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                if callable(data):
                    os.close(fd)
                    fd = -1
                    data(tmp)
                    fd = os.open(tmp, os.O_RDWR)  # fsync needs write access on Windows
                else:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                if fd >= 0:
                    os.close(fd)
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        except BaseException:
            _unlink(tmp)
            raise
        _fsync_dir(target.parent)
    except BaseException:
        remove_created(created)
        raise
    return target


def make_parents(folder: Path) -> list[Path]:
    """mkdir -p, returning the folders it created (deepest last)."""
    missing: list[Path] = []
    p = folder
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    missing.reverse()
    made: list[Path] = []
    try:
        for m in missing:
            os.mkdir(m)
            made.append(m)
    except BaseException:
        remove_created(made)
        raise
    return made


_make_parents = make_parents  # atomic_write's keyword of the same name hides the function


def remove_created(folders: Iterable[Path]) -> None:
    """Remove folders an aborted write created, deepest first, if they are still empty."""
    for d in reversed(list(folders)):
        try:
            os.rmdir(d)
        except OSError:
            pass


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def describe_os_error(e: OSError, path: str | os.PathLike[str] | None = None) -> str:
    """A short, plain reason for a failed file operation (no raw errno text for the common cases)."""
    import errno

    where = Path(path) if path is not None else (Path(e.filename) if isinstance(e.filename, str) else None)
    if e.errno == errno.ENAMETOOLONG and where is not None:
        longest = max((len(part) for part in where.parts), default=0)
        return (f"the file name is too long ({longest} characters in one name; the file system allows at most "
                f"{_name_max(where)})")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied: that folder is not writable" if e.errno != errno.EROFS else \
            "the file system is read-only"
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return "the folder does not exist and cannot be created there (a part of the path is a file or missing)"
    if e.errno == errno.ENOSPC:
        return "the disk is full"
    return e.strerror or type(e).__name__


def _name_max(p: Path) -> int:
    folder = p.parent
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def torch_load_reason(e: BaseException) -> str:
    """Why ``torch.load(..., weights_only=True)`` refused a file, without torch's advice to retry
    with ``weights_only=False`` (never good advice for a file someone sent you)."""
    text = str(e)
    if "weights_only" in text or "Weights only load failed" in text or "GLOBAL" in text:
        m = re.search(r"(unsupported GLOBAL \S+|Unsupported global: GLOBAL \S+|Unsupported operand \S+)", text)
        detail = f" ({m.group(1)})" if m else ""
        return ("it contains objects other than tensors and plain data, which NetStudio never loads because "
                "that could run code" + detail)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "weights_only" not in ln]
    first = lines[0] if lines else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def _unlink(p: str | Path) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def pid_alive(pid: int) -> bool:
    """Is there a running process with this id? (Never signals it: on Windows ``os.kill`` would end it.)"""
    if not 0 < pid < 2**31:
        return False
    if os.name == "nt":  # pragma: no cover - exercised on Windows only
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ok = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return bool(ok) and code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def is_temp_file(name: str) -> bool:
    return _TEMP_RE.match(name) is not None


def clean_stale_temp_files(folder: str | os.PathLike[str], for_name: str | None = None) -> list[Path]:
    """Delete temporary files a crashed write left in ``folder``; returns what was removed.

    Only names this module generates are considered; a file still being written
    by a live process (and younger than a day) is kept. ``for_name`` limits the
    sweep to temporaries of that one file name.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if m is None:
            continue
        if for_name is not None and m.group("stem") != for_name[:_NAME_ROOM]:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        pid = int(m.group("pid"))
        if pid == os.getpid() or (pid_alive(pid) and age < STALE_AFTER_S):
            continue  # possibly being written right now
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


__all__ = ["atomic_write", "clean_stale_temp_files", "current_umask", "describe_os_error", "is_temp_file",
           "make_parents", "pid_alive", "remove_created", "resolve_target", "torch_load_reason"]
