"""`make run` checks Qt's X11 plugin libraries first and prints the one install line (issue #11)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from netstudio.ui import qt_deps


def test_debian_package_names_from_sonames() -> None:
    assert qt_deps.package_for("libxcb-icccm.so.4") == "libxcb-icccm4"
    assert qt_deps.package_for("libxcb-keysyms.so.1") == "libxcb-keysyms1"
    assert qt_deps.package_for("libxcb-cursor.so.0") == "libxcb-cursor0"
    assert qt_deps.package_for("libxkbcommon-x11.so.0") == "libxkbcommon-x11-0"
    assert qt_deps.package_for("libX11-xcb.so.1") == "libx11-xcb1"
    assert qt_deps.package_for("libEGL.so.1") == "libegl1"


def _fake_qt(tmp_path: Path) -> Path:
    qt = tmp_path / "Qt"
    (qt / "plugins" / "platforms").mkdir(parents=True)
    (qt / "lib").mkdir()
    (qt / "plugins" / "platforms" / "libqxcb.so").write_bytes(b"\x7fELF")
    (qt / "lib" / "libQt6XcbQpa.so.6").write_bytes(b"\x7fELF")
    return qt


def test_missing_xcb_libraries_give_one_install_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    qt = _fake_qt(tmp_path)
    ldd_out = {
        "libqxcb.so": "\tlibQt6XcbQpa.so.6 => /x/libQt6XcbQpa.so.6 (0x1)\n"
                      "\tlibxcb-icccm.so.4 => not found\n\tlibxcb.so.1 => /usr/lib/libxcb.so.1 (0x2)\n",
        "libQt6XcbQpa.so.6": "\tlibxcb-icccm.so.4 => not found\n\tlibxcb-keysyms.so.1 => not found\n",
    }

    def fake_run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 0, ldd_out[Path(cmd[1]).name], "")

    monkeypatch.setattr(qt_deps.subprocess, "run", fake_run)
    monkeypatch.setattr(qt_deps.shutil, "which", lambda name: "/usr/bin/ldd")
    monkeypatch.setattr(qt_deps.ctypes.util, "find_library", lambda name: None if name == "xcb-cursor" else name)
    missing = qt_deps.missing_libraries(qt)
    assert missing == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libxcb-cursor.so.0"]
    assert qt_deps.install_line(missing) == "sudo apt-get install -y libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0"

    monkeypatch.setattr(qt_deps, "_qt_dir", lambda: qt)
    monkeypatch.setattr(qt_deps.sys, "platform", "linux")
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    assert qt_deps.main() == 1
    err = capsys.readouterr().err
    assert "sudo apt-get install -y libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0" in err
    # a platform other than xcb (offscreen, wayland) needs none of them
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert qt_deps.main() == 0


def test_nothing_missing_and_no_qt_import() -> None:
    # on this machine the check runs without importing Qt (it must work where Qt would abort)
    code = ("import sys; from netstudio.ui import qt_deps; qt_deps.missing_libraries(); "
            "assert not any(m.startswith(('PySide6', 'shiboken6')) for m in sys.modules)")
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=root,
                       env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
