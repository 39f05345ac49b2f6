"""Code from a user's Python file that an imported model references: hashed, trusted, then run.

A model imported from ``path/model.py:ClassName`` keeps each module class of that file the catalog lacks
(a custom activation) as a ``layer.user_module`` node that records the file's path and sha256. Its code
runs only when that exact (path, sha256) pair is *allowed* in this process — by the import that the user
confirmed, by the app after the user trusted the file (remembered in ``netstudio.project.trust``), or by
the CLI's ``--trust``. Nothing else here runs code: :func:`problem` only reads and hashes the file.

:func:`load_module` reads the file once, checks its hash and executes exactly the bytes it hashed, under
the module name of the file's stem (``model.py`` -> ``model``, registered in ``sys.modules``), so a model
saved with ``torch.save`` unpickles where ``import model`` finds the same file. Each (path, sha256) runs
once per process; later compiles reuse its module.
"""

from __future__ import annotations

import hashlib
import importlib.util
import keyword
import os
import stat
import sys
import threading
import types
from pathlib import Path
from typing import Any

from netstudio.errors import CompileError

#: largest user file read (a model definition, not a data file)
MAX_SOURCE_BYTES = 4 * 1024 * 1024
#: names a user file may not take: they would shadow the packages NetStudio itself runs on
_RESERVED = frozenset({"torch", "torchvision", "netstudio", "numpy", "PySide6", "shiboken6", "pyqtgraph", "sympy",
                       "typing_extensions", "onnx", "onnxruntime", "optuna", "tensorboard", "main"})

_lock = threading.RLock()
_allowed: set[tuple[str, str]] = set()
_modules: dict[tuple[str, str], types.ModuleType] = {}
_hashes: dict[str, tuple[int, int, str]] = {}  # path -> (mtime_ns, size, sha256)


def normpath(path: str | os.PathLike[str]) -> str:
    """The absolute, symlink-resolved form under which a file is hashed, trusted and loaded."""
    return str(Path(os.path.expanduser(str(path))).resolve())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def short(sha: str) -> str:
    """The first 12 hex digits, for messages (the full hash is in the project and the dialogs)."""
    return sha[:12] + "…" if len(sha) > 12 else sha


def file_sha256(path: str | os.PathLike[str]) -> str | None:
    """The sha256 of the file now (None: missing or unreadable); cached by mtime and size."""
    p = normpath(path)
    try:
        st = os.stat(p)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None  # a folder, device or pipe (reading a pipe would block): not a model file
    with _lock:
        hit = _hashes.get(p)
        if hit is not None and hit[:2] == (st.st_mtime_ns, st.st_size):
            return hit[2]
    try:
        data = _read(p)
    except OSError:
        return None
    sha = sha256_bytes(data)
    with _lock:
        _hashes[p] = (st.st_mtime_ns, st.st_size, sha)
    return sha


def _read(p: str) -> bytes:
    with open(p, "rb") as f:
        data = f.read(MAX_SOURCE_BYTES + 1)
    if len(data) > MAX_SOURCE_BYTES:
        raise OSError(f"{p} is larger than {MAX_SOURCE_BYTES // (1024 * 1024)} MiB")
    return data


def allow(path: str | os.PathLike[str], sha: str) -> None:
    """Let this process run the file at ``path`` while its content has hash ``sha``."""
    with _lock:
        _allowed.add((normpath(path), sha))


def is_allowed(path: str | os.PathLike[str], sha: str) -> bool:
    with _lock:
        return (normpath(path), sha) in _allowed


def revoke_all() -> None:
    """Forget every allowed file (tests; a new session). Loaded modules stay loaded but are not used again."""
    with _lock:
        _allowed.clear()
        _modules.clear()


def problem(path: str, sha: str) -> tuple[str, str] | None:
    """Why a node referencing ``path`` recorded with ``sha`` cannot run now, as (message, hint); None: it can.

    Reads and hashes the file only: never runs it."""
    name = Path(path).name
    now = file_sha256(path) if path else None
    if now is None:
        return (f"uses code from {path or '(no file)'}, which is missing",
                "put the file back where it was, or re-import the model")
    if now != sha:
        return (f"uses code from {name}, which changed after the project recorded it (sha256 {short(sha)}, "
                f"now {short(now)}); it is not run",
                "reopen the project and trust the changed file if you reviewed it, or re-import the model")
    if not is_allowed(path, sha):
        return (f"uses code from {path} (sha256 {short(sha)}), which is not trusted, so it is not run",
                "reopen the project and choose Trust and Run when asked (netstudio commands: pass --trust)")
    return None


def module_name(path: str | os.PathLike[str]) -> str:
    """The module name a user file is loaded as: its stem, which must be a plain identifier that does
    not shadow another importable module."""
    p = Path(normpath(path))
    stem = p.stem
    if p.suffix != ".py":
        raise CompileError(f"{p.name} is not a Python file (.py)")
    if not stem.isidentifier() or keyword.iskeyword(stem) or stem.startswith("_"):
        raise CompileError(f"{p.name} cannot be imported as a module: {stem!r} is not a plain Python name",
                           hint="rename the file to a name such as my_model.py")
    if stem in _RESERVED or stem in sys.stdlib_module_names or stem in sys.builtin_module_names:
        raise CompileError(f"{p.name} would shadow the module {stem!r} that Python or NetStudio uses",
                           hint="rename the file, e.g. to my_model.py")
    loaded = sys.modules.get(stem)
    if loaded is not None and not getattr(loaded, "__netstudio_user_file__", None):
        raise CompileError(f"{p.name} would replace the module {stem!r}, which is already imported",
                           hint="rename the file")
    if loaded is None:
        try:
            spec = importlib.util.find_spec(stem)
        except (ImportError, ValueError):
            spec = None
        origin = getattr(spec, "origin", None)
        if origin in ("built-in", "frozen") or (origin and _installed(origin) and normpath(origin) != str(p)):
            raise CompileError(f"{p.name} would shadow the installed module {stem!r} ({origin})",
                               hint="rename the file")
    return stem


def _installed(origin: str) -> bool:
    """True for a module of Python's library or an installed package (not some other folder's file)."""
    import site
    import sysconfig

    roots = {sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    try:
        roots.update(site.getsitepackages())
        roots.add(site.getusersitepackages())
    except AttributeError:  # a virtualenv's old site module
        pass
    where = Path(normpath(origin))
    return any(r and (where == Path(normpath(r)) or Path(normpath(r)) in where.parents) for r in roots)


def load_module(path: str | os.PathLike[str], sha: str, node_id: str | None = None) -> types.ModuleType:
    """Run the user file ``path`` (once per content) and return its module; only if (path, sha) is allowed
    and the file still has that hash."""
    p = normpath(path)
    with _lock:
        key = (p, sha)
        if key not in _allowed:
            raise CompileError(f"the code in {p} (sha256 {short(sha)}) is not trusted, so it is not run",
                               node_id=node_id, hint="trust the file when the app asks, or pass --trust")
        mod = _modules.get(key)
        if mod is not None:
            sys.modules[mod.__name__] = mod  # the latest loaded content of a name is the one pickles refer to
            return mod
        name = module_name(p)
        if file_sha256(p) is None:
            raise CompileError(f"{p} is missing or not a regular file", node_id=node_id,
                               hint="put the file back, or re-import the model")
        try:
            data = _read(p)
        except OSError as e:
            raise CompileError(f"cannot read {p}: {e.strerror or e}", node_id=node_id,
                               hint="put the file back, or re-import the model") from None
        now = sha256_bytes(data)
        if now != sha:
            raise CompileError(f"{Path(p).name} changed after it was trusted (sha256 {short(sha)}, now {short(now)})",
                               node_id=node_id, hint="reopen the project to review and trust the new version")
        mod = types.ModuleType(name)
        mod.__file__ = p
        mod.__netstudio_user_file__ = (p, sha)  # type: ignore[attr-defined]
        previous = sys.modules.get(name)
        sys.modules[name] = mod  # dataclasses, pickling and typing look their module up while it runs
        try:
            exec(compile(data, p, "exec"), mod.__dict__)  # noqa: S102 - the user trusted exactly these bytes
        except BaseException as e:
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
            if isinstance(e, KeyboardInterrupt):
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise CompileError(f"running {Path(p).name} failed: {type(e).__name__}: {first}", node_id=node_id,
                               hint="a model file must import only installed packages (not files beside it) "
                                    "and run without arguments") from None
        _modules[key] = mod
        return mod


def load_attr(path: str | os.PathLike[str], sha: str, qualname: str, node_id: str | None = None) -> Any:
    """The object ``qualname`` (``Swish``, ``Outer.Inner``) of the allowed user file."""
    mod = load_module(path, sha, node_id)
    obj: Any = mod
    for part in qualname.split("."):
        if not part.isidentifier():
            raise CompileError(f"{qualname!r} is not a qualified Python name", node_id=node_id)
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CompileError(f"{Path(path).name} has no {qualname}", node_id=node_id,
                               hint="re-import the model from the current file") from None
    return obj


def origin_of(obj: Any) -> tuple[str, str] | None:
    """(path, sha256) of the user file that defined the class or function ``obj``; None for other code."""
    mod = sys.modules.get(getattr(obj, "__module__", "") or "")
    with _lock:
        for key, m in _modules.items():
            if m is mod or (mod is None and m.__name__ == getattr(obj, "__module__", None)):
                if _defines(m, obj):
                    return key
        for key, m in _modules.items():  # an older content of the same file name
            if _defines(m, obj):
                return key
    return None


def _defines(mod: types.ModuleType, obj: Any) -> bool:
    target: Any = mod
    for part in str(getattr(obj, "__qualname__", "")).split("."):
        target = getattr(target, part, None)
        if target is None:
            return False
    return target is obj


def bind_for_pickle(root: Any) -> None:
    """Point ``sys.modules`` at the modules that defined the user classes inside ``root`` (an nn.Module), so
    ``torch.save`` pickles them by reference even when a newer version of the same file was loaded since."""
    seen: set[type] = set()
    for m in root.modules():
        cls = type(m)
        if cls in seen:
            continue
        seen.add(cls)
        key = origin_of(cls)
        if key is not None:
            with _lock:
                mod = _modules[key]
            sys.modules[mod.__name__] = mod
