"""Atomic saves under kill -9 (issue #17): projects, recovery files and exports.

tests/kill9_writer.py forks a writer per trial that saves version A, B, A, ... and
kills it with SIGKILL at a random moment; after every kill the file must be one
whole version. Temporary files the killed writers left are then cleaned the way
the next start cleans them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

TRIALS = 100


@pytest.mark.slow  # subprocess, end to end
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_saves_survive_kill_9_at_random_moments(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "kill9_writer.py"), str(tmp_path),
                           "--trials", str(TRIALS), "--max-delay-ms", "15"],
                          capture_output=True, text=True, timeout=240, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["failures"] == []
    assert report["trials"] == {"project": TRIALS, "recovery": TRIALS, "export": TRIALS}
    # the kills really land inside writes, not only between them
    assert all(n >= 10 for n in report["kills_inside_a_write"].values()), report
    assert report["temp_files_left_by_kills"]["export"] > 0, report
    assert report["temp_files_after_cleanup"] == {"project": 0, "recovery": 0, "export": 0}
