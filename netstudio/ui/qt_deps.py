"""Check, before the app starts, that Qt's X11 (xcb) platform plugin can load.

    python -m netstudio.ui.qt_deps        # exit 1 and print the apt-get line if a library is missing

On a fresh Debian/Ubuntu machine the PySide6 wheel's xcb plugin needs system
libraries (libxcb-icccm4, libxcb-keysyms1, libxcb-cursor0, ...) that are not
installed by default; without them Qt aborts with "Could not load the Qt
platform plugin xcb". This runs ``ldd`` on the plugin and the libraries it
loads, and looks for the one Qt opens at run time (libxcb-cursor). It does not
import Qt, so it works where Qt itself would abort.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

#: loaded by the xcb plugin with dlopen (so ldd cannot see it); needed since Qt 6.5
RUNTIME_LIBS = ("libxcb-cursor.so.0",)
#: libraries whose Debian package name does not follow the soname
PACKAGE_NAMES = {"libGL.so.1": "libgl1", "libEGL.so.1": "libegl1", "libOpenGL.so.0": "libopengl0"}


def package_for(soname: str) -> str:
    """Debian/Ubuntu package for a shared library: libxcb-icccm.so.4 -> libxcb-icccm4."""
    if soname in PACKAGE_NAMES:
        return PACKAGE_NAMES[soname]
    m = re.match(r"(.+?)\.so\.(\d+)", soname)
    if not m:
        return soname
    stem, major = m.group(1).lower(), m.group(2)
    return f"{stem}-{major}" if stem[-1].isdigit() else f"{stem}{major}"


def _qt_dir() -> Path | None:
    spec = importlib.util.find_spec("PySide6")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "Qt"


def missing_libraries(qt_dir: Path | None = None) -> list[str]:
    """Sonames the xcb platform plugin needs that the system does not have ([] if all are there
    or nothing can be checked)."""
    qt_dir = qt_dir or _qt_dir()
    ldd = shutil.which("ldd")
    if qt_dir is None or ldd is None:
        return []
    plugin = qt_dir / "plugins" / "platforms" / "libqxcb.so"
    if not plugin.is_file():
        return []
    targets = [plugin, *sorted((qt_dir / "lib").glob("libQt6XcbQpa.so*"))[:1]]
    missing: list[str] = []
    for target in targets:
        try:
            out = subprocess.run([ldd, str(target)], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return []
        for line in out.splitlines():
            if "not found" in line:
                name = line.split("=>")[0].strip()
                if name and name not in missing:
                    missing.append(name)
    for lib in RUNTIME_LIBS:
        short = lib.split(".so")[0].removeprefix("lib")
        if lib not in missing and ctypes.util.find_library(short) is None:
            missing.append(lib)
    return missing


def install_line(missing: list[str]) -> str:
    return "sudo apt-get install -y " + " ".join(dict.fromkeys(package_for(m) for m in missing))


def main() -> int:
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if not sys.platform.startswith("linux") or (platform and not platform.startswith("xcb")):
        return 0
    missing = missing_libraries()
    if not missing:
        return 0
    print("NetStudio cannot start: Qt's X11 platform plugin (xcb) needs system libraries that are "
          f"missing: {', '.join(missing)}.\nInstall them with:\n\n    {install_line(missing)}\n",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
