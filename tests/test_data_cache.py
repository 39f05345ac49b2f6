"""Parsed bundled datasets kept in the user cache (netstudio/data/cache.py).

Every test points NETSTUDIO_CACHE_DIR at its own tmp_path: nothing is read from
or written to the user's ~/.cache.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from netstudio.data import builtin
from netstudio.data import cache as C


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NETSTUDIO_CACHE_DIR", str(tmp_path / "cache"))
    builtin._raw_sklearn.cache_clear()
    builtin._raw_mnist_5k.cache_clear()
    yield tmp_path / "cache"
    builtin._raw_sklearn.cache_clear()
    builtin._raw_mnist_5k.cache_clear()


def test_cache_folder_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NETSTUDIO_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert C.cache_dir() == tmp_path / "xdg" / "netstudio"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert C.cache_dir() == tmp_path / "home" / ".cache" / "netstudio"
    monkeypatch.setenv("NETSTUDIO_CACHE_DIR", str(tmp_path / "mine"))
    assert C.cache_dir() == tmp_path / "mine"


def _parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count real parses of sklearn's files (the cache must make them rare)."""
    calls: list[str] = []
    real = builtin._parse_sklearn

    def counting(src: str):  # type: ignore[no-untyped-def]
        calls.append(src)
        return real(src)

    monkeypatch.setattr(builtin, "_parse_sklearn", counting)
    return calls


def _damage_truncate(path: Path) -> None:  # a writer that died half-way (without the atomic rename)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _damage_flip(path: Path) -> None:  # one flipped byte inside the pixel data
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x5A
    path.write_bytes(bytes(data))


def _damage_empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize("damage", [_damage_truncate, _damage_flip, _damage_empty], ids=["half", "flipped", "empty"])
def test_a_damaged_cache_file_is_detected_and_rebuilt(cache: Path, monkeypatch: pytest.MonkeyPatch, damage) -> None:
    fresh_x, fresh_y, feats, names = builtin._parse_sklearn("digits")
    calls = _parses(monkeypatch)
    x, y, *_ = builtin._raw_sklearn("digits")  # first use: parsed and stored
    assert calls == ["digits"]
    files = list(cache.glob("sklearn-digits-*.npz"))
    assert len(files) == 1
    builtin._raw_sklearn.cache_clear()
    x2, y2, feats2, names2 = builtin._raw_sklearn("digits")  # second use: read back, not parsed
    assert calls == ["digits"]
    assert np.array_equal(x2, fresh_x) and np.array_equal(y2, fresh_y) and y2.dtype == fresh_y.dtype
    assert (feats2, names2) == (feats, names)

    damage(files[0])
    assert C.read(files[0], builtin._sklearn_expect("digits")) is None  # detected
    builtin._raw_sklearn.cache_clear()
    x3, y3, *_ = builtin._raw_sklearn("digits")
    assert calls == ["digits", "digits"]  # parsed again ...
    assert np.array_equal(x3, fresh_x) and np.array_equal(y3, fresh_y)  # ... the same arrays as a fresh parse
    back = C.read(files[0], builtin._sklearn_expect("digits"))  # ... and the file is sound again
    assert back is not None and np.array_equal(back["x"], fresh_x)
    assert [p.name for p in cache.iterdir()] == [files[0].name]  # no temporary files left behind


def test_the_key_changes_with_the_source_file_and_the_version(tmp_path: Path, cache: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "data.csv"
    src.write_text("1,2\n")
    a = C.cache_path("set", src)
    src.write_text("1,3\n")
    b = C.cache_path("set", src)
    monkeypatch.setattr("netstudio.__version__", "9.9.9")
    c = C.cache_path("set", src)
    assert len({a, b, c}) == 3 and "9.9.9" in c.name


def test_concurrent_writers_and_readers_see_whole_files(tmp_path: Path, cache: Path) -> None:
    src = tmp_path / "source.bin"
    src.write_bytes(b"x" * 100)
    want = {"x": np.arange(200_000, dtype=np.int64).reshape(1000, 200), "y": np.arange(1000, dtype=np.int64)}
    expect = {"x": ((1000, 200), "int64"), "y": ((1000,), "int64")}
    results: list[dict] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(5):
                results.append(C.cached_arrays("big", src, lambda: {k: v.copy() for k, v in want.items()}, expect))
                for p in cache.glob("big-*.npz"):  # a reader racing the writers: whole or absent, never half
                    assert C.read(p, expect) is not None
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 20 and all(np.array_equal(r["x"], want["x"]) for r in results)
    files = list(cache.iterdir())
    assert len(files) == 1 and C.read(files[0], expect) is not None


def test_an_unwritable_cache_only_means_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("NETSTUDIO_CACHE_DIR", str(blocker / "cache"))
    src = tmp_path / "s"
    src.write_bytes(b"1")
    out = C.cached_arrays("t", src, lambda: {"a": np.ones(3, dtype=np.float32)}, {"a": ((3,), "float32")})
    assert np.array_equal(out["a"], np.ones(3, dtype=np.float32))


def test_unexpected_arrays_are_returned_but_not_kept(tmp_path: Path, cache: Path) -> None:
    src = tmp_path / "s"
    src.write_bytes(b"1")
    out = C.cached_arrays("t", src, lambda: {"a": np.ones(4, dtype=np.float32)}, {"a": ((3,), "float32")})
    assert out["a"].shape == (4,)
    assert not cache.exists() or not list(cache.iterdir())
