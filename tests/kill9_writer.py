"""kill -9 during saves: a process saves two versions of a file in turn until it is killed at a random moment.

Run by tests/test_kill9.py (and usable alone):

    python tests/kill9_writer.py FOLDER --trials 110 [--seed 0]

One process imports NetStudio (and torch) once, then for every trial forks a
child that writes version A, B, A, B… of a project file, a recovery copy
(+ its sidecar) and a weights export, and SIGKILLs it after a random delay.
After each kill the file must be exactly version A or version B, never a mix,
a truncation or missing. At the end, the temporary files the killed writers
left are removed the way the next start removes them, and none may remain.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--trials", type=int, default=110)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-delay-ms", type=float, default=25.0)
    args = ap.parse_args()

    # torch is imported only for the export case, after the others: forking a small process is faster
    from netstudio.fileio import clean_stale_temp_files, is_temp_file
    from netstudio.project.io import Project, load_project, save_project
    from netstudio.ui.recovery import RecoveryStore

    base = Path(args.folder)
    rng = random.Random(args.seed)
    sample = json.loads((ROOT / "sample_projects" / "resnet_block.nsproj").read_text(encoding="utf-8"))
    a = Project.from_dict(sample)
    a.name = "version A"
    b = Project.from_dict(sample)
    b.name = "version B"
    b.description = "B is longer. " * 400  # a torn write of B over A (or back) cannot pass for either
    versions = (a, b)
    texts = {a.dumps(), b.dumps()}
    compiled: Any = None

    def check_project(path: Path) -> None:
        text = path.read_text(encoding="utf-8")
        assert text in texts, "torn project file"
        load_project(path)

    store_dir = base / "recovery"
    store = RecoveryStore(store_dir, slot="killed-window")

    def check_recovery(path: Path) -> None:
        check_project(path)
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        assert isinstance(meta, dict) and meta["slot"] == "killed-window"

    def export(p: Project) -> Any:
        from netstudio.project import export as ex

        return ex.export_weights(compiled, p, base / "export" / "w.pt")

    def check_export(path: Path) -> None:
        from netstudio.project import export as ex

        project_text, state = ex.read_weights(path)
        assert project_text in texts, "torn weights export"
        assert set(state) == set(compiled.module.state_dict())

    cases: list[tuple[str, Path, Callable[[Project], Any], Callable[[Path], None]]] = [
        ("project", base / "project" / "p.nsproj", lambda p: save_project(p, base / "project" / "p.nsproj"),
         check_project),
        ("recovery", store.file_for(), store.write, check_recovery),
        ("export", base / "export" / "w.pt", export, check_export),
    ]
    report: dict[str, Any] = {"trials": {}, "failures": [], "kills_inside_a_write": {},
                              "temp_files_left_by_kills": {}, "temp_files_after_cleanup": {}}
    for name, path, write, check in cases:
        if name == "export":
            import torch

            from netstudio.compiler.build import compile_model

            torch.set_num_threads(1)
            compiled = compile_model(a.graph, 4)
        path.parent.mkdir(parents=True, exist_ok=True)
        write(a)  # version A is on disk before the first kill
        inside = 0
        for trial in range(args.trials):
            temps_before = {p.name for p in path.parent.iterdir() if is_temp_file(p.name)}
            pid = os.fork()
            if pid == 0:  # the writer: A, B, A, B, ... until killed
                try:
                    i = trial
                    while True:
                        i += 1
                        write(versions[i % 2])
                except BaseException:  # noqa: BLE001 - report by exit code, never return into the parent's loop
                    os._exit(3)
            time.sleep(rng.uniform(0, args.max_delay_ms) / 1000)
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            if not os.WIFSIGNALED(status):
                report["failures"].append(f"{name} trial {trial}: the writer exited with {status}")
                continue
            if any(is_temp_file(p.name) and p.name not in temps_before for p in path.parent.iterdir()):
                inside += 1  # the kill hit the middle of a write
            try:
                check(path)
            except Exception as e:  # noqa: BLE001
                report["failures"].append(f"{name} trial {trial}: {type(e).__name__}: {e}")
        report["trials"][name] = args.trials
        report["kills_inside_a_write"][name] = inside
        report["temp_files_left_by_kills"][name] = sum(is_temp_file(p.name) for p in path.parent.iterdir())
        clean_stale_temp_files(path.parent)  # what the next start does
        report["temp_files_after_cleanup"][name] = sum(is_temp_file(p.name) for p in path.parent.iterdir())
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
