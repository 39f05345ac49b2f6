"""Run every benchmark in bench/ in turn, each as its own subprocess, printing its output.

    .venv/bin/python bench/run_all.py [--only NAME ...]

QT_QPA_PLATFORM=offscreen is set for every script. A failing script does not
stop the run; the exit status is 1 if any failed, 0 otherwise.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# (script, extra arguments) — bench_trainer.py has --quick (1 repeat, 1 epoch: a smoke run)
BENCHES: list[tuple[str, list[str]]] = [
    ("bench_shapes.py", []),
    ("bench_load.py", []),
    ("bench_trainer.py", ["--quick"]),
    ("bench_gui.py", []),
    ("bench_gui_latency.py", []),
    ("bench_memory.py", []),
    ("bench_startup.py", []),
    ("bench_busy.py", []),
    ("bench_time_to_result.py", []),
    ("bench_stats.py", ["--quick"]),
    ("bench_scale.py", ["--repeat", "3"]),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None, help="run only these scripts (e.g. bench_memory.py)")
    args = ap.parse_args()

    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    results: list[tuple[str, int, float]] = []
    for script, extra in BENCHES:
        if args.only and script not in args.only and script.removesuffix(".py") not in args.only:
            continue
        cmd = [sys.executable, str(HERE / script), *extra]
        print(f"\n===== {script} {' '.join(extra)}".rstrip() + " =====", flush=True)
        t = time.perf_counter()
        if not (HERE / script).exists():
            print(f"missing: {HERE / script}", flush=True)
            rc = 127
        else:
            try:
                rc = subprocess.run(cmd, env=env, cwd=str(ROOT)).returncode
            except OSError as exc:
                print(f"could not start: {exc}", flush=True)
                rc = 126
        results.append((script, rc, time.perf_counter() - t))

    print("\n===== summary =====")
    for script, rc, secs in results:
        print(f"{'ok  ' if rc == 0 else 'FAIL'}  {script:<24} rc={rc:<4} {secs:7.1f} s")
    failed = [s for s, rc, _ in results if rc != 0]
    if failed:
        print(f"{len(failed)} of {len(results)} failed: {', '.join(failed)}")
        return 1
    print(f"all {len(results)} passed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
