"""A wheel built from this repository is complete: installed into a fresh virtualenv it
ships every module and the sample projects, and `netstudio train` trains a bundled sample."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _build_wheel(tmp_path: Path) -> Path:
    """Build from a copy of the sources, so the checkout gets no build/ or egg-info folders."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("netstudio", "sample_projects"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(dist), str(src)], check=True, capture_output=True, text=True, timeout=240)
    (wheel,) = dist.glob("netstudio-*.whl")
    return wheel


def test_wheel_installs_in_a_fresh_virtualenv_and_trains_a_bundled_sample(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    # every module of the source tree is in the wheel (pyproject lists the packages explicitly)
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "netstudio").rglob("*.py")}
    assert sources - names == set()
    samples = {p.name for p in (ROOT / "sample_projects").glob("*.nsproj")}
    assert samples and {f"netstudio/samples/{s}" for s in samples} <= names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, text=True, timeout=240)
    # the heavy dependencies (torch, PySide6, …) come from this test's environment, not from a download;
    # a directory added by a .pth file is not a site directory, so the editable install there stays inert
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    exe = str(venv / "bin" / "netstudio")
    out = subprocess.run([exe, "samples"], cwd=tmp_path, env=env, check=True, capture_output=True, text=True,
                         timeout=120).stdout
    listed = dict(line.split(None, 1) for line in out.splitlines())
    assert set(listed) == {Path(s).stem for s in samples}
    sample = Path(listed["logistic_regression"].strip())
    assert sample.is_file() and site in sample.parents  # the installed copy, not the checkout's

    proc = subprocess.run([exe, "train", str(sample), "--epochs", "3", "--device", "cpu", "--json", "--quiet"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["val_accuracy"] > 0.9
    where = subprocess.run([str(py), "-c", "import netstudio; print(netstudio.__file__)"], cwd=tmp_path, env=env,
                           check=True, capture_output=True, text=True).stdout.strip()
    assert Path(where).is_relative_to(site)
