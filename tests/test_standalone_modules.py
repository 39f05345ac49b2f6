"""The exported program's runtime code lives in real modules (netstudio/project/standalone, issue 13).

The script export copies them into train.py as they are; the library traces the same
Preprocess/Postprocess for its own exports. They must never import NetStudio, and the
program they make must stay plain, compilable and clean for a linter.
"""

from __future__ import annotations

import ast
import inspect
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from netstudio.compiler.build import build_plan
from netstudio.project import preprocess as pp
from netstudio.project import script_export as se
from netstudio.project.standalone import checkpoints, distributed, preprocess, threads, train_loop
from netstudio.training.config import TrainConfig
from test_script_export import iris_project, mlp

RUNTIME = (threads, preprocess, distributed, checkpoints, train_loop)
ALLOWED = {"argparse", "datetime", "math", "os", "sys", "time", "numpy", "torch"}


def _modules() -> list[Path]:
    root = resources.files("netstudio.project.standalone")
    return sorted(Path(str(p)) for p in root.iterdir() if str(p).endswith(".py"))


def test_standalone_modules_never_import_netstudio() -> None:
    files = _modules()
    assert {f.stem for f in files} >= {m.__name__.rsplit(".", 1)[1] for m in RUNTIME}
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                tops = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # a sibling standalone module: train.py defines those names itself
                    continue
                tops = {(node.module or "").split(".")[0]}
            else:
                continue
            assert "netstudio" not in tops, f"{f.name} imports netstudio"
            if f.stem in ("threads", "preprocess", "distributed", "checkpoints", "train_loop"):
                assert tops <= ALLOWED | {"__future__"}, f"{f.name} imports {tops - ALLOWED}"


def _script(graph=None, **cfg) -> str:
    project = iris_project()
    plan = build_plan(graph if graph is not None else project.graph, 16)
    return se.training_script(plan, TrainConfig(**{"epochs": 2, "batch_size": 16, **cfg}), title="t")


def test_train_py_carries_the_runtime_modules_verbatim() -> None:
    text = _script(threads=3)
    for mod in RUNTIME:
        for name, obj in vars(mod).items():
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == mod.__name__:
                assert inspect.getsource(obj) in text, f"{mod.__name__}.{name}"
    # module constants become the project's values, written as literals
    assert "\nTHREADS = 3  # CPU threads per process; 0 = automatic\n" in text
    assert "\nDATA_HELP = 'not used by this dataset'" in text
    imports = [line for line in text.splitlines() if line.lstrip().startswith(("import ", "from "))]
    assert not [line for line in imports if "netstudio" in line or line.startswith("from .")]


@pytest.mark.parametrize("case", ["iris", "regression", "kl_div", "mnist"])
def test_generated_program_compiles_and_passes_ruff(tmp_path: Path, case: str) -> None:
    graph = {"iris": None,
             "regression": mlp({"source": "regression", "n_features": 3}, out=1, loss="loss.mse",
                               scheduler="sched.plateau"),
             "kl_div": mlp({"source": "iris"}, out=3, loss="loss.kl_div", optimizer="optim.adamw",
                           scheduler="sched.onecycle"),
             "mnist": mlp({"source": "mnist", "path": str(tmp_path / "tv"), "download": True}, out=10)}[case]
    path = tmp_path / "train.py"
    path.write_text(_script(graph), encoding="utf-8")
    subprocess.run([sys.executable, "-m", "py_compile", str(path)], check=True)
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        pytest.skip("ruff is not installed")
    done = subprocess.run([ruff, "check", "--isolated", "--no-cache", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_library_preprocess_and_postprocess_are_the_standalone_modules() -> None:
    spec = {"kind": "image", "pixel_scale": 255.0, "gray": True, "size": [4, 5],
            "mean": [0.4], "std": [0.2], "input_shape": [3, 8, 10]}
    gm = pp.build_module(spec)
    assert type(gm).__name__ == "Preprocess"
    x = torch.rand(2, 3, 8, 10) * 255
    want = (x / 255.0 * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    want = (F.interpolate(want, size=(4, 5), mode="bilinear", align_corners=False, antialias=True) - 0.4) / 0.2
    assert torch.allclose(gm(x), want, atol=1e-6)
    fitted = {"pixel_scale": 255.0, "gray": True, "size": [4, 5], "mean": [0.4], "std": [0.2]}
    assert torch.equal(gm(x), preprocess.Preprocess(fitted)(x))
    post = pp.build_postprocess({"scale": [2.0, 3.0], "shift": [1.0, -1.0]})
    y = torch.randn(4, 2)
    assert torch.allclose(post(y), y * torch.tensor([2.0, 3.0]) + torch.tensor([1.0, -1.0]))
    assert torch.equal(post(y), preprocess.Postprocess({"target_scale": [2.0, 3.0], "target_shift": [1.0, -1.0]})(y))
    # the traced modules refer to plain torch only: their code names no NetStudio module
    assert "netstudio" not in gm.code and "netstudio" not in post.code
