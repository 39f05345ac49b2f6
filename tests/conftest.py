"""Shared test setup: Qt runs offscreen, torch is quiet and deterministic."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYTHONHASHSEED", "0")
# runs are recorded beside their project (netstudio/project/runs.py): never into the checkout's samples;
# the run-history tests turn it back on for projects in their tmp folders
os.environ["NETSTUDIO_NO_RUNS"] = "1"

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_projects"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session", autouse=True)
def dataset_cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Parsed bundled datasets go to a folder of this session, never the user's ~/.cache (subprocesses too)."""
    before = os.environ.get("NETSTUDIO_CACHE_DIR")
    path = tmp_path_factory.mktemp("netstudio-cache")
    os.environ["NETSTUDIO_CACHE_DIR"] = str(path)
    yield path
    if before is None:
        os.environ.pop("NETSTUDIO_CACHE_DIR", None)
    else:
        os.environ["NETSTUDIO_CACHE_DIR"] = before


@pytest.fixture(scope="session", autouse=True)
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """NetStudio's user settings (the trusted user files) go to a folder of this session, never ~/.config."""
    before = os.environ.get("NETSTUDIO_CONFIG_DIR")
    path = tmp_path_factory.mktemp("netstudio-config")
    os.environ["NETSTUDIO_CONFIG_DIR"] = str(path)
    yield path
    if before is None:
        os.environ.pop("NETSTUDIO_CONFIG_DIR", None)
    else:
        os.environ["NETSTUDIO_CONFIG_DIR"] = before


@pytest.fixture(scope="module")
def one_thread() -> Any:
    """Tiny models: one intra-op thread is fastest and immune to a busy second core."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
