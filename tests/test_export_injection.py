"""Hostile strings never become code in generated files.

Every template that writes Python (the training program's CSV, image-folder,
torchvision and built-in data sections, its loss section, model.py, the ``.py``
export with its preprocessing metadata) gets project names, column names, class
names, paths and node names full of quotes, backslashes, triple quotes and
newlines followed by code. The generated files must parse, run without executing
that code (even ``train.py --help``), keep no project string inside a comment,
and hold each string unchanged as a literal.
"""

from __future__ import annotations

import csv
import io
import os
import runpy
import subprocess
import sys
import tokenize
from pathlib import Path

import numpy as np
import pytest
import torch

from netstudio.graph.model import Graph
from netstudio.project import export as ex
from netstudio.project.io import Project
from netstudio.project.script_export import export_script
from netstudio.training.config import TrainConfig

MARK = "PWNED"


def hostile(tag: str) -> str:
    """Code in most unsafe contexts: it closes quotes and docstrings, or leaves a comment, then acts."""
    return tag + "'\"\"\"'''\\\\\n__import__('pathlib').Path('" + MARK + "_" + tag + "').touch()\n#" + tag


def _graph(params: dict, n_out: int, loss: str = "loss.cross_entropy") -> Graph:
    g = Graph()
    d = g.add_node("data.dataset", params, name="data")
    fl = g.add_node("layer.flatten", {}, name="flat")
    fc = g.add_node("layer.linear", {"out_features": n_out}, name="head")
    lo = g.add_node(loss, {}, name="loss\n__import__('os')")  # node names are sanitized to identifiers
    opt = g.add_node("optim.sgd", {"lr": 0.1}, name="opt")
    g.connect(d.id, "features", fl.id, "input")
    g.connect(fl.id, "output", fc.id, "input")
    g.connect(fc.id, "output", lo.id, "prediction")
    g.connect(d.id, "target", lo.id, "target")
    g.connect(lo.id, "loss", opt.id, "loss")
    return g


def _comments(text: str) -> list[str]:
    return [t.string for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.COMMENT]


def _check_files(folder: Path, strings: list[str]) -> dict:
    """No marker file appears when the generated programs run; no project string sits in a comment."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    proc = subprocess.run([sys.executable, "-I", "train.py", "--help"], cwd=folder, capture_output=True, text=True,
                          env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr
    namespace = runpy.run_path(str(folder / "train.py"), run_name="not_main")  # constants, no training
    runpy.run_path(str(folder / "model.py"), run_name="not_main")
    assert not list(folder.rglob(f"{MARK}*")) and not list(Path.cwd().glob(f"{MARK}*"))
    for name in ("train.py", "model.py"):
        text = (folder / name).read_text(encoding="utf-8")
        for comment in _comments(text):
            assert MARK not in comment, (name, comment)
            assert not any(s.splitlines()[0] in comment for s in strings if s.splitlines()[0].strip()), comment
    return namespace


@pytest.mark.slow  # subprocess, end to end
def test_csv_training_program_keeps_hostile_strings_literal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    col, target = hostile("col"), hostile("target")
    cls_a, cls_b, title = hostile("classA"), hostile("classB"), hostile("title")
    folder = tmp_path / ("data'\"\n" + MARK[:2])
    folder.mkdir()
    f = folder / "table.csv"
    rng = np.random.RandomState(0)
    with f.open("w", newline="", encoding="utf-8") as out:
        w = csv.writer(out)
        w.writerow(["plain", col, target])
        for i in range(20):
            w.writerow([f"{rng.randn():.3f}", f"{rng.randn():.3f}", (cls_a, cls_b)[i % 2]])
    project = Project(_graph({"source": "csv", "path": str(f)}, 2), TrainConfig(epochs=1, batch_size=4), title)
    res = export_script(project, tmp_path / "out")
    ns = _check_files(res.folder, [col, target, cls_a, cls_b, title])
    assert ns["PROJECT"] == title and ns["TARGET_NAME"] == target
    assert ns["FEATURE_NAMES"] == ["plain", col.strip()]
    assert ns["CLASS_NAMES"] == sorted([cls_a.strip(), cls_b.strip()])
    assert ns["DATA_PATH"] == str(f)
    tx, ty, vx, vy = ns["load_data"]()  # and the loader still reads the file
    assert len(tx) + len(vx) == 20


@pytest.mark.slow  # subprocess, end to end
def test_image_folder_program_and_py_export_keep_hostile_strings_literal(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    import netstudio.data as D
    from netstudio.compiler.build import build_plan
    from netstudio.project.preprocess import export_input

    monkeypatch.chdir(tmp_path)
    classes = [hostile("dogs"), hostile("cats")]
    root = tmp_path / "imgs"
    for ci, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((4, 4), 60 * ci + i, dtype=np.uint8), mode="L").save(root / name / f"{i}.png")
    title = hostile("folder")
    project = Project(_graph({"source": "image_folder", "path": str(root)}, 2), TrainConfig(epochs=1), title)
    res = export_script(project, tmp_path / "out")
    ns = _check_files(res.folder, classes + [title])
    assert ns["CLASS_NAMES"] == sorted(classes) and ns["PROJECT"] == title
    assert ns["LOSS_NAMES"] == [n.name for n in project.graph.nodes.values() if n.type_id.startswith("loss.")]

    # the .py export: the project name and the class names of its metadata, as literals
    plan = build_plan(project.graph, 4)
    data = D.load(plan.dataset_params)
    path = ex.export_py(plan.compiled, tmp_path / "m.py", title=title, inp=export_input(data))
    text = path.read_text(encoding="utf-8")
    assert all(MARK not in c for c in _comments(text))
    mod = runpy.run_path(str(path), run_name="not_main")
    assert not list(tmp_path.rglob(f"{MARK}*"))
    assert mod["PROJECT"] == title and mod["METADATA"]["class_names"] == sorted(classes)
    out = mod["load_model"]()(torch.full((2, 1, 4, 4), 100.0))
    assert out.shape == (2, 2)


@pytest.mark.slow  # subprocess, end to end
def test_torchvision_and_builtin_programs_keep_hostile_strings_literal(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    where = str(tmp_path / hostile("root"))
    title = hostile("tv")
    project = Project(_graph({"source": "mnist", "path": where}, 10), TrainConfig(epochs=1), title)
    res = export_script(project, tmp_path / "tv")
    ns = _check_files(res.folder, [where, title])
    assert ns["DATA_PATH"] == where and ns["PROJECT"] == title
    # the sklearn-table, synthetic and bundled-image templates
    for params, n_out in (({"source": "iris"}, 3), ({"source": "moons"}, 2), ({"source": "digits"}, 10)):
        project = Project(_graph(params, n_out), TrainConfig(epochs=1), hostile(params["source"]))
        res = export_script(project, tmp_path / params["source"])
        ns = _check_files(res.folder, [project.name])
        assert ns["PROJECT"] == project.name and ns["DATA_SOURCE"] == params["source"]
