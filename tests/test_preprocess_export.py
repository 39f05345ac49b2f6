"""Exports take raw inputs: train, export every format, and reproduce the app's predictions without NetStudio.

One subprocess per dataset kind (MNIST 5k, an image folder of PNGs, a CSV with a
text column and missing values) loads the .pt, .pt2, .py and .onnx exports in an
interpreter that cannot import NetStudio, feeds the inputs as the data source
delivers them (pixels 0–255, decoded images, raw CSV columns), and compares with
the trained model's predictions on NetStudio's own preprocessed features.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import netstudio.data as D
from netstudio.compiler.build import build_plan
from netstudio.data.core import normalize_params, split_indices
from netstudio.graph.model import Graph
from netstudio.project import export as ex
from netstudio.project.io import Project
from netstudio.project.preprocess import export_input
from netstudio.training.config import TrainConfig
from netstudio.training.engine import fit
from test_export import run_without_netstudio

HAS_ONNX = importlib.util.find_spec("onnx") is not None and importlib.util.find_spec("onnxscript") is not None


def _graph(params: dict, layers: list[tuple[str, dict]], loss: str) -> Graph:
    g = Graph()
    prev = g.add_node("data.dataset", params, name="data")
    d = prev
    for i, (type_id, p) in enumerate(layers):
        node = g.add_node(type_id, p, name=f"l{i}")
        g.connect(prev.id, "features" if prev is d else "output", node.id, "input")
        prev = node
    lo = g.add_node(loss, {}, name="loss")
    opt = g.add_node("optim.adam", {"lr": 0.01}, name="adam")
    g.connect(prev.id, "output", lo.id, "prediction")
    g.connect(d.id, "target", lo.id, "target")
    g.connect(lo.id, "loss", opt.id, "loss")
    return g


def _train(graph: Graph, epochs: int = 2, batch_size: int = 32):
    torch.manual_seed(0)
    plan = build_plan(graph, batch_size)
    data = D.load(plan.dataset_params)
    result = fit(plan, data, TrainConfig(epochs=epochs, batch_size=batch_size, device="cpu"))
    assert result.status == "finished", result.message
    return plan, data, result.model.eval()


def _export_all(model, data, folder: Path, project: Project) -> list[str]:
    inp = export_input(data)
    fmts = ["pt", "pt2", "py"] + (["onnx"] if HAS_ONNX else [])
    for fmt in fmts:
        ex.export(fmt, model, folder / f"m.{fmt}", project=project, inp=inp)
    return fmts


_CHECK = """
import json, runpy, torch
folder = {folder!r}
raw = torch.load(folder + "/raw.pt")
ref = torch.load(folder + "/ref.pt")
mode = {mode!r}
results = {{}}
def same(out):
    out = torch.as_tensor(out)
    if mode == "labels":
        return bool(torch.equal(out.argmax(1), ref.argmax(1)))
    return float((out - ref).abs().max())
for fmt in {fmts!r}:
    if fmt == "pt":
        m = torch.load(folder + "/m.pt", weights_only=False)
        meta = json.loads(m.netstudio_metadata)
        assert next(iter(m.named_children()))[0] == "preprocess"  # the visible first module
        results["pt"] = same(m(raw))
        if {uint8!r}:  # decoded images may come as uint8
            results["pt_uint8"] = same(m(raw.to(torch.uint8)))
    elif fmt == "pt2":
        extra = {{"netstudio_metadata.json": ""}}
        prog = torch.export.load(folder + "/m.pt2", extra_files=extra)
        assert json.loads(extra["netstudio_metadata.json"]) == meta
        results["pt2"] = same(prog.module()(raw))
    elif fmt == "py":
        ns = runpy.run_path(folder + "/m.py")
        assert ns["METADATA"] == meta
        results["py"] = same(ns["load_model"]()(raw))
    elif fmt == "onnx":
        import onnx
        from onnx.reference import ReferenceEvaluator
        proto = onnx.load(folder + "/m.onnx")
        props = {{p.key: p.value for p in proto.metadata_props}}
        assert json.loads(props["netstudio_metadata"]) == meta
        results["onnx"] = same(ReferenceEvaluator(proto).run(None, {{"x": raw.numpy()}})[0])
print("RESULTS", json.dumps(results))
print("META", json.dumps(meta))
"""


def _check_without_netstudio(folder: Path, raw: torch.Tensor, ref: torch.Tensor, mode: str, fmts: list[str],
                             uint8: bool = False) -> tuple[dict, dict]:
    torch.save(raw, folder / "raw.pt")
    torch.save(ref, folder / "ref.pt")
    proc = run_without_netstudio(_CHECK.format(folder=str(folder), mode=mode, fmts=fmts, uint8=uint8), folder)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS "))
    meta = next(ln for ln in proc.stdout.splitlines() if ln.startswith("META "))
    return json.loads(line[8:]), json.loads(meta[5:])


@pytest.mark.slow  # subprocess, end to end
def test_mnist_exports_take_raw_pixels(tmp_path: Path) -> None:
    from netstudio.data.builtin import _raw_mnist_5k

    params = {"source": "mnist_5k", "val_fraction": 0.1}
    g = _graph(params, [("layer.flatten", {}), ("layer.linear", {"out_features": 32}), ("activation.relu", {}),
                        ("layer.linear", {"out_features": 10})], "loss.cross_entropy")
    plan, data, model = _train(g, epochs=1, batch_size=64)
    fmts = _export_all(model, data, tmp_path, Project(g, TrainConfig(), "MNIST"))
    p = normalize_params(params)
    _, va = split_indices(5000, p["val_fraction"], p["seed"])
    images, _ = _raw_mnist_5k()
    raw = torch.from_numpy(images[va[:200]]).unsqueeze(1).float()  # 0-255, N x 1 x 28 x 28
    with torch.no_grad():
        ref = model(data.val_x[:200])  # the app's predictions on its normalized features
        # the bare network on raw pixels is wrong: that is what the preprocessing fixes
        assert (model(raw).argmax(1) != ref.argmax(1)).float().mean() > 0.05
    results, meta = _check_without_netstudio(tmp_path, raw, ref, "labels", fmts, uint8=True)
    assert results == {**{f: True for f in fmts}, "pt_uint8": True}
    assert meta["input"]["shape"] == [1, 28, 28] and meta["class_names"] == [str(i) for i in range(10)]
    assert "0–255" in meta["input"]["description"]


def _png_folder(root: Path, per_class: int = 8) -> Path:
    from PIL import Image

    rng = np.random.RandomState(1)
    for ci, cls in enumerate(("dark", "light")):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            arr = (rng.rand(6, 5, 3) * 120 + ci * 120).astype(np.uint8)  # 5 wide, 6 high, RGB
            Image.fromarray(arr, mode="RGB").save(root / cls / f"{i}.png")
    return root


@pytest.mark.slow  # subprocess, end to end
def test_image_folder_exports_take_decoded_images(tmp_path: Path) -> None:
    from PIL import Image

    root = _png_folder(tmp_path / "imgs")
    params = {"source": "image_folder", "path": str(root), "val_fraction": 0.25}
    g = _graph(params, [("layer.flatten", {}), ("layer.linear", {"out_features": 2})], "loss.cross_entropy")
    plan, data, model = _train(g, epochs=3, batch_size=4)
    out = tmp_path / "out"
    out.mkdir()
    fmts = _export_all(model, data, out, Project(g, TrainConfig(), "Folder"))
    files = [path for path, _ in data.val_set.samples] + [path for path, _ in data.train_set.samples]
    # decoded the ordinary way: PIL, RGB, channels first, values 0-255
    raw = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32)).permute(2, 0, 1)
                       for f in files])
    feats = torch.stack([data.val_set[i][0] for i in range(len(data.val_set))]
                        + [data.train_set[i][0] for i in range(len(data.train_set))])
    with torch.no_grad():
        ref = model(feats)
    results, meta = _check_without_netstudio(out, raw, ref, "labels", fmts, uint8=True)
    assert all(results.values()), results
    assert meta["class_names"] == ["dark", "light"]
    assert meta["input"]["shape"] == [3, 6, 5] and meta["input"]["image_size"] == [6, 5]


def _messy_csv(path: Path, n: int = 120, missing: float = 0.05, seed: int = 0) -> Path:
    """Regression table: two numeric columns and a text column, ~5 % of feature cells empty."""
    rng = np.random.RandomState(seed)
    colors = ["red", "green", "blue"]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["a", "color", "b", "y"])
        for _ in range(n):
            a, b, c = rng.randn(), rng.randn() * 3 + 10, int(rng.randint(3))
            y = 2 * a - 0.5 * b + (1.5, 0.0, -1.5)[c]
            cells = [f"{a:.5f}", colors[c], f"{b:.5f}"]
            cells = ["" if rng.rand() < missing else v for v in cells]
            w.writerow(cells + [f"{y:.5f}"])
    return path


def _raw_csv_rows(path: Path, categories: dict[str, list[str]]) -> torch.Tensor:
    """The CSV's feature columns as a user would feed them: numbers, category codes, NaN when empty."""
    rows = []
    with path.open(encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        for r in reader:
            vals = []
            for name, cell in zip(header[:-1], r[:-1]):
                if cell == "":
                    vals.append(math.nan)
                elif name in categories:
                    vals.append(float(categories[name].index(cell)))
                else:
                    vals.append(float(cell))
            rows.append(vals)
    return torch.tensor(rows, dtype=torch.float32)


@pytest.mark.slow  # subprocess, end to end
def test_csv_exports_take_raw_columns(tmp_path: Path) -> None:
    f = _messy_csv(tmp_path / "messy.csv")
    params = {"source": "csv", "path": str(f), "missing": "mean", "task": "regression", "val_fraction": 0.2}
    g = _graph(params, [("layer.linear", {"out_features": 1})], "loss.mse")
    plan, data, model = _train(g, epochs=3, batch_size=16)
    assert data.info.feature_shape == (5,)  # a, 3 one-hot colours, b
    fmts = _export_all(model, data, tmp_path, Project(g, TrainConfig(), "Messy"))
    meta = export_input(data).metadata
    assert meta["input"]["columns"] == ["a", "color", "b"]
    assert meta["input"]["categories"] == {"color": ["blue", "green", "red"]}
    raw = _raw_csv_rows(f, meta["input"]["categories"])
    assert torch.isnan(raw).any()  # the raw rows keep their holes: the export fills them
    p = normalize_params(params)
    tr, va = split_indices(len(raw), p["val_fraction"], p["seed"])
    with torch.no_grad():
        ref = torch.cat([model(data.val_x), model(data.train_x)])
    raw = torch.cat([raw[torch.from_numpy(va)], raw[torch.from_numpy(tr)]])
    results, _ = _check_without_netstudio(tmp_path, raw, ref, "close", fmts)
    assert all(v < 1e-4 for v in results.values()), results


def test_csv_missing_value_options_train(tmp_path: Path) -> None:
    f = _messy_csv(tmp_path / "holes.csv", n=200)
    rows = {}
    for how in ("drop", "mean", "median", "constant"):
        params = {"source": "csv", "path": str(f), "missing": how, "fill_value": -7.0, "normalize": "none",
                  "val_fraction": 0.2, "task": "regression"}
        info = D.describe(params)
        rows[how] = info.n_train + info.n_val
        g = _graph(params, [("layer.linear", {"out_features": 1})], "loss.mse")
        _, data, _ = _train(g, epochs=2, batch_size=32)
        assert torch.isfinite(data.train_x).all()
        if how == "constant":  # the empty 'a' cells became -7 (normalize none keeps raw values)
            assert (data.train_x[:, 0] == -7.0).any() or (data.val_x[:, 0] == -7.0).any()
        assert any("missing" in n for n in info.notes)
    assert rows["mean"] == rows["median"] == rows["constant"] == 200
    assert 100 < rows["drop"] < 200  # ~14 % of rows have an empty cell
    note = next(n for n in D.describe({"source": "csv", "path": str(f), "task": "regression"}).notes)
    assert f"{200 - rows['drop']} of 200 rows" in note and "dropped" in note


def test_csv_bad_cells_counted_with_positions(tmp_path: Path) -> None:
    lines = ["a,b,y"] + [f"{i},{'oops' if i % 9 == 0 else i * 2},{i % 2}" for i in range(1, 60)]
    f = tmp_path / "bad.csv"
    f.write_text("\n".join(lines) + "\n")
    from netstudio.errors import DataError

    with pytest.raises(DataError) as e:
        D.describe({"source": "csv", "path": str(f)})
    msg, hint = e.value.message, e.value.hint
    assert "6 cells are not a number" in msg  # rows 9, 18, ..., 54
    assert "line 10 column 'b' ('oops')" in msg and "line 46 column 'b'" in msg and "…" in msg
    assert "line 55" not in msg  # only the first few positions
    assert "fix those cells" in hint and "\n" not in msg
    # a wholly text column is not a broken row: it is categorical
    text = tmp_path / "text.csv"
    text.write_text("size,kind,y\n" + "".join(f"{i},{'ab'[i % 2]},{i % 2}\n" for i in range(20)))
    info = D.describe({"source": "csv", "path": str(text)})
    assert info.feature_shape == (3,)
    assert D.describe({"source": "csv", "path": str(text), "categorical": "ordinal"}).feature_shape == (2,)


def test_csv_malformed_row_and_overflow_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from netstudio.errors import DataError

    f = tmp_path / "ragged.csv"
    f.write_text("a,b,y\n1,2,0\n3,4,5,1\n6,7,0\n8,9,1,2\n")
    with pytest.raises(DataError) as e:
        D.describe({"source": "csv", "path": str(f)})
    assert "\n" not in str(e.value) and "2 rows with more than the 3 fields" in e.value.message
    assert "line 3 (4)" in e.value.message and "line 5 (4)" in e.value.message
    # values whose spread overflows: a clear data error, no numpy warning, no blame on the learning rate
    big = tmp_path / "big.csv"
    big.write_text("a,b,y\n" + "".join(f"{1e308 if i % 2 else -1e308},{i},{i % 2}\n" for i in range(10)))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any RuntimeWarning would fail here
        with pytest.raises(DataError) as e:
            D.load({"source": "csv", "path": str(big)})
    assert "Feature 'a'" in e.value.message and "learning rate" not in str(e.value)
    assert "too large" in e.value.message and "rescale" in e.value.hint


def test_wide_csv_is_read_column_free(tmp_path: Path) -> None:
    """Reading cost does not grow per column: 200,000 columns × 4 rows in a few seconds."""
    import time

    cols = 200_000
    f = tmp_path / "wide.csv"
    with f.open("w") as out:
        out.write(",".join(f"c{i}" for i in range(cols)) + ",y\n")
        for r in range(4):
            out.write(",".join(str((i + r) % 7) for i in range(cols)) + f",{r % 2}\n")
    t0 = time.perf_counter()
    info = D.describe({"source": "csv", "path": str(f), "val_fraction": 0.25})
    elapsed = time.perf_counter() - t0
    assert info.feature_shape == (cols,) and info.n_train == 3
    assert elapsed < 30, elapsed  # ~1 s unloaded; the per-column reader took ~240 s


def test_embedding_from_csv_token_ids(tmp_path: Path) -> None:
    """categorical = ids: a CSV of words/ids feeds an Embedding; the vocabulary comes from the training split."""
    rng = np.random.RandomState(0)
    words = ["good", "great", "fine", "bad", "awful", "poor"]
    f = tmp_path / "tokens.csv"
    with f.open("w") as out:
        out.write("w0,w1,w2,label\n")
        for _ in range(120):
            pos = rng.rand() < 0.5
            pick = [words[rng.randint(3) + (0 if pos else 3)] for _ in range(3)]
            out.write(",".join(pick) + f",{int(pos)}\n")
    params = {"source": "csv", "path": str(f), "categorical": "ids"}
    info = D.describe(params)
    assert info.feature_dtype == "int64" and info.feature_shape == (3,)
    assert any("vocabulary: 6 tokens" in n for n in info.notes)
    g = _graph(params, [("layer.embedding", {"num_embeddings": 7, "embedding_dim": 4}), ("layer.flatten", {}),
                        ("layer.linear", {"out_features": 2})], "loss.cross_entropy")
    plan, data, model = _train(g, epochs=30, batch_size=16)
    assert data.train_x.dtype == torch.int64 and int(data.train_x.max()) <= 6
    with torch.no_grad():
        acc = (model(data.val_x).argmax(1) == data.val_y).float().mean()
    assert acc > 0.9
    inp = export_input(data)
    assert inp.metadata["input"]["vocabulary"] == sorted(words)
    pt = ex.export_pt(model, tmp_path / "tok.pt", inp)
    loaded = torch.load(pt, weights_only=False)
    vocab = inp.metadata["input"]["vocabulary"]
    ids = torch.tensor([[vocab.index(w) + 1 for w in ("good", "great", "fine")]])
    assert int(loaded(ids).argmax(1)) == 1


def test_check_says_how_many_rows_missing_values_affect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from netstudio.cli import main
    from netstudio.project.io import save_project

    f = _messy_csv(tmp_path / "holes.csv", n=200)
    info = D.describe({"source": "csv", "path": str(f), "task": "regression"})
    dropped = 200 - info.n_train - info.n_val
    for how, expect in (("drop", f"{dropped} of 200 rows have missing feature values"),
                        ("median", f"in {dropped} of 200 rows filled with the column's training median")):
        g = _graph({"source": "csv", "path": str(f), "task": "regression", "missing": how},
                   [("layer.linear", {"out_features": 1})], "loss.mse")
        path = save_project(Project(g, TrainConfig(), "Holes"), tmp_path / f"{how}.nsproj")
        capsys.readouterr()
        assert main(["check", str(path)]) == 0
        out = capsys.readouterr().out
        assert f"note: [{g.find('data').id}] " in out and expect in out, out


def test_token_id_models_export_to_every_format(tmp_path: Path) -> None:
    f = tmp_path / "ids.csv"
    rng = np.random.RandomState(1)
    f.write_text("t0,t1,label\n" + "".join(f"{a},{b},{int(a > b)}\n" for a, b in rng.randint(0, 9, (60, 2))))
    params = {"source": "csv", "path": str(f), "categorical": "ids"}  # integer id columns are used as they are
    g = _graph(params, [("layer.embedding", {"num_embeddings": 10, "embedding_dim": 3}), ("layer.flatten", {}),
                        ("layer.linear", {"out_features": 2})], "loss.cross_entropy")
    plan, data, model = _train(g, epochs=2, batch_size=16)
    x = data.val_x
    with torch.no_grad():
        ref = model(x)
    for pre in (True, False):
        inp = export_input(data, preprocess=pre)
        assert inp.dtype == "int64" and inp.shape == [2]
        for fmt in ["pt2", "py"] + (["onnx"] if HAS_ONNX else []):
            path = ex.export(fmt, model, tmp_path / f"{fmt}{pre}.{fmt}", project=Project(g, TrainConfig(), "ids"),
                             inp=inp)
            if fmt == "pt2":
                assert torch.allclose(torch.export.load(path).module()(x), ref, atol=1e-6)
            elif fmt == "py":
                import runpy

                assert torch.allclose(runpy.run_path(str(path))["load_model"]()(x), ref, atol=1e-6)


@pytest.mark.slow  # subprocess, end to end
def test_regression_exports_answer_in_the_targets_units(tmp_path: Path) -> None:
    """linear_regression (diabetes, standardized targets): every export ends with 'postprocess' and takes raw
    features to disease progression in its own units; the reported MAE is that of the exported model."""
    from netstudio.data.builtin import _raw_sklearn
    from netstudio.project.io import load_project
    from netstudio.training.engine import outcome_metrics
    from conftest import SAMPLES

    project = load_project(SAMPLES / "linear_regression.nsproj")
    plan, data, model = _train(project.graph, epochs=3, batch_size=32)
    mean, std = data.target_mean[0], data.target_std[0]
    assert std > 10  # the source standardized the target
    inp = export_input(data, plan=plan)
    assert inp.metadata["postprocess"] == {"output": 0, "scale": [std], "shift": [mean]}
    assert "target in its own units" in inp.text()
    fmts = _export_all(model, data, tmp_path, project)
    raw_x, raw_y, _, _ = _raw_sklearn("diabetes")
    p = normalize_params(plan.dataset_params)
    _, va = split_indices(len(raw_x), p["val_fraction"], p["seed"])
    raw = torch.tensor(raw_x[va], dtype=torch.float32)
    with torch.no_grad():
        ref = model(data.val_x) * std + mean  # the app's predictions, de-standardized
    results, meta = _check_without_netstudio(tmp_path, raw, ref, "close", fmts)
    assert set(results) == set(fmts) and all(v < 1e-4 for v in results.values()), results
    assert meta["postprocess"]["shift"] == [mean]

    m = torch.load(tmp_path / "m.pt", weights_only=False)
    assert [n for n, _ in m.named_children()] == ["preprocess", "linear", "postprocess"]
    assert "class Postprocess(nn.Module)" in (tmp_path / "m.py").read_text(encoding="utf-8")
    with torch.no_grad():
        out = m(raw).reshape(-1).double()
    truth = torch.tensor(raw_y[va], dtype=torch.float64)
    reported = outcome_metrics(model, plan, data)  # what `netstudio train` prints and --json holds
    assert reported["mae"] == pytest.approx(float((out - truth).abs().mean()), rel=1e-5)
    assert reported["rmse"] == pytest.approx(float(((out - truth) ** 2).mean().sqrt()), rel=1e-5)

    # without the preprocessing the postprocess goes too, and the metadata says the output is standardized
    bare = export_input(data, preprocess=False, plan=plan)
    assert "postprocess" not in bare.metadata and "standardized target" in bare.metadata["outputs"]
    ex.export("pt", model, tmp_path / "bare.pt", inp=bare)
    b = torch.load(tmp_path / "bare.pt", weights_only=False)
    assert [n for n, _ in b.named_children()] == ["linear"]
    with torch.no_grad():
        assert torch.equal(b(data.val_x), model(data.val_x))
