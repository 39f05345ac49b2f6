"""Shared test setup: Qt runs offscreen, torch is quiet and deterministic."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYTHONHASHSEED", "0")

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_projects"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
