"""Tests of the data layer (netstudio.data) and the Dataset node. Offline, fast."""

from __future__ import annotations

import dataclasses
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from netstudio import data
from netstudio.data import DEFAULT_PARAMS, SOURCES, DatasetInfo, PreparedData, describe, load
from netstudio.errors import DataError

OFFLINE_BUILTINS = ("digits", "iris", "wine", "breast_cancer", "diabetes", "mnist_5k", "moons", "circles",
                    "regression")
EXPECTED: dict[str, tuple[tuple[int, ...], tuple[int, ...], str, int | None, int]] = {
    # source: (feature_shape, target_shape, task, num_classes, n samples)
    "digits": ((1, 8, 8), (), "classification", 10, 1797),
    "iris": ((4,), (), "classification", 3, 150),
    "wine": ((13,), (), "classification", 3, 178),
    "breast_cancer": ((30,), (), "classification", 2, 569),
    "diabetes": ((10,), (1,), "regression", None, 442),
    "mnist_5k": ((1, 28, 28), (), "classification", 10, 5000),
    "moons": ((2,), (), "classification", 2, 1000),
    "circles": ((2,), (), "classification", 2, 1000),
    "regression": ((10,), (1,), "regression", None, 1000),
}


def _check_resident(d: PreparedData) -> None:
    info = d.info
    assert d.resident
    for x, y, n in ((d.train_x, d.train_y, info.n_train), (d.val_x, d.val_y, info.n_val)):
        assert x is not None and y is not None
        assert x.dtype == torch.float32 and x.is_contiguous() and x.device.type == "cpu"
        assert tuple(x.shape) == (n, *info.feature_shape)
        assert tuple(y.shape) == (n, *info.target_shape)
        assert str(y.dtype) == f"torch.{info.target_dtype}"
        assert torch.isfinite(x).all()


# ----------------------------------------------------------------------------
# Built-in sources
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("source", OFFLINE_BUILTINS)
def test_describe_matches_load(source: str) -> None:
    info = describe({"source": source})
    feat, target, task, k, n = EXPECTED[source]
    assert info.feature_shape == feat and info.target_shape == target
    assert info.task == task and info.num_classes == k
    assert info.feature_dtype == "float32"
    assert info.target_dtype == ("int64" if task == "classification" else "float32")
    assert info.n_train + info.n_val == n and info.n_val == round(n * 0.2)
    assert SOURCES[source].offline
    d = load({"source": source})
    assert d.info == info  # load derives its info from the real data: the constants must agree
    _check_resident(d)
    if k is not None:
        assert len(info.class_names) == k
        assert int(d.train_y.min()) >= 0 and int(d.train_y.max()) < k


def test_mnist_5k_is_real_mnist() -> None:
    d = load({"source": "mnist_5k", "normalize": "none"})
    assert float(d.train_x.max()) == 255.0 and float(d.train_x.min()) == 0.0  # raw pixels 0–255
    assert sorted(set(d.train_y.tolist())) == list(range(10))


def test_split_is_deterministic_per_seed() -> None:
    a = load({"source": "iris", "seed": 0})
    data.clear_cache()  # a fresh load, not the cached object
    b = load({"source": "iris", "seed": 0})
    assert a is not b
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_y, b.val_y)
    c = load({"source": "iris", "seed": 1})
    assert not torch.equal(a.train_x, c.train_x)
    assert a.info.n_val == c.info.n_val == 30


def test_load_is_cached_by_relevant_params() -> None:
    a = load({"source": "wine", "seed": 3})
    assert load({"source": "wine", "seed": 3, "n_samples": 77, "resize": 9}) is a  # irrelevant params
    assert load({"source": "wine", "seed": 4}) is not a


def test_standardization_uses_train_split_only() -> None:
    from sklearn.datasets import load_iris

    raw = load_iris().data
    d = load({"source": "iris", "normalize": "standard", "seed": 0})
    assert torch.allclose(d.train_x.mean(0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(d.train_x.std(0, unbiased=False), torch.ones(4), atol=1e-4)
    assert d.val_x.mean(0).abs().max() > 1e-3  # val is transformed with train stats, not its own
    assert d.mean is not None and d.std is not None
    # the recorded stats undo the transform
    restored = d.val_x.double() * torch.tensor(d.std) + torch.tensor(d.mean)
    rows = {tuple(np.round(r, 6)) for r in raw}
    assert all(tuple(np.round(r, 6)) in rows for r in restored.numpy())
    # and they are not the full-data stats
    assert not np.allclose(d.mean, raw.mean(0))


def test_minmax_and_none() -> None:
    mm = load({"source": "wine", "normalize": "minmax"})
    assert torch.allclose(mm.train_x.min(0).values, torch.zeros(13))
    assert torch.allclose(mm.train_x.max(0).values, torch.ones(13))
    raw = load({"source": "wine", "normalize": "none"})
    assert raw.mean is None and raw.std is None
    assert float(raw.train_x[:, 12].max()) > 100  # proline is in the hundreds


def test_regression_targets_scaled_for_diabetes_and_regression() -> None:
    d = load({"source": "diabetes"})
    assert abs(float(d.train_y.mean())) < 1e-4 and abs(float(d.train_y.std(unbiased=False)) - 1) < 1e-3
    assert d.target_mean is not None and 100 < d.target_mean[0] < 200
    raw = load({"source": "diabetes", "normalize": "none"})
    assert raw.target_mean is None and float(raw.train_y.max()) > 300
    r = load({"source": "regression", "n_features": 3, "n_samples": 50, "noise": 0.0})
    assert r.info.feature_shape == (3,) and r.info.n_train == 40
    assert abs(float(r.train_y.mean())) < 1e-4


def test_val_fraction_edges() -> None:
    d = load({"source": "moons", "n_samples": 10, "val_fraction": 0.01})
    assert (d.info.n_train, d.info.n_val) == (9, 1)  # at least one validation sample
    z = load({"source": "iris", "val_fraction": 0.0})
    assert (z.info.n_train, z.info.n_val) == (150, 0)
    assert tuple(z.val_x.shape) == (0, 4) and tuple(z.val_y.shape) == (0,)


def test_digits_resize_for_lenet() -> None:
    info = describe({"source": "digits", "resize": 28})
    assert info.feature_shape == (1, 28, 28)
    d = load({"source": "digits", "resize": 28})
    assert d.info == info
    _check_resident(d)


def test_synthetic_depends_on_params() -> None:
    a = load({"source": "circles", "n_samples": 200, "noise": 0.0})
    assert a.info.n_train + a.info.n_val == 200
    b = load({"source": "circles", "n_samples": 200, "noise": 0.3})
    assert not torch.equal(a.train_x, b.train_x)


def test_param_errors() -> None:
    with pytest.raises(DataError, match="unknown source"):
        describe({"source": "nope"})
    with pytest.raises(DataError, match="val_fraction"):
        describe({"source": "iris", "val_fraction": 0.95})
    with pytest.raises(DataError, match="too large"):
        describe({"source": "regression", "n_samples": 1_000_000, "n_features": 10_000})
    # values typed as text are accepted
    assert describe({"source": "iris", "val_fraction": "0.5"}).n_val == 75


def test_datasets_view() -> None:
    d = load({"source": "iris"})
    tr, va = d.datasets()
    assert len(tr) == 120 and len(va) == 30
    x, y = tr[0]
    assert x.shape == (4,) and y.dtype == torch.int64


# ----------------------------------------------------------------------------
# CSV
# ----------------------------------------------------------------------------


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_csv_with_header_and_string_labels(tmp_path: Path) -> None:
    rows = ["height,weight,species"] + [f"{i},{2 * i + 0.5},{'cat' if i % 2 else 'dog'}" for i in range(10)]
    f = _write(tmp_path / "pets.csv", "\n".join(rows) + "\n")
    info = describe({"source": "csv", "path": f})
    assert info.feature_names == ("height", "weight")
    assert info.class_names == ("cat", "dog") and info.num_classes == 2
    assert info.task == "classification" and info.target_shape == () and info.target_dtype == "int64"
    assert info.feature_shape == (2,) and (info.n_train, info.n_val) == (8, 2)
    d = load({"source": "csv", "path": f, "normalize": "none"})
    assert d.info == info
    _check_resident(d)
    # every row keeps its label: odd heights are cats (index 0)
    for x, y in zip(torch.cat([d.train_x, d.val_x]), torch.cat([d.train_y, d.val_y])):
        assert int(y) == (0 if int(x[0]) % 2 else 1)


def test_csv_without_header(tmp_path: Path) -> None:
    rows = [f"{i},{i * 0.1},{i % 3}" for i in range(30)]
    f = _write(tmp_path / "plain.csv", "\n".join(rows))
    info = describe({"source": "csv", "path": f})
    assert info.feature_names == ("col0", "col1")
    assert info.n_train + info.n_val == 30  # the first row is data
    assert info.task == "classification" and info.class_names == ("0", "1", "2")


def test_csv_header_with_empty_index_cell(tmp_path: Path) -> None:
    f = _write(tmp_path / "pandas.csv", ",x,label\n0,1.5,yes\n1,2.5,no\n2,0.5,yes\n")
    info = describe({"source": "csv", "path": f, "val_fraction": 0, "feature_columns": "x"})
    assert info.feature_names == ("x",) and info.class_names == ("no", "yes") and info.n_train == 3


def test_csv_columns_and_task(tmp_path: Path) -> None:
    rows = ["a;b;c;y"] + [f"{i};{i * 2};{i * 3};{i * 0.37 + 0.01}" for i in range(40)]
    f = _write(tmp_path / "semi.csv", "\n".join(rows))  # ';' separated, float target
    info = describe({"source": "csv", "path": f})
    assert info.task == "regression" and info.target_shape == (1,) and info.num_classes is None
    sel = describe({"source": "csv", "path": f, "target_column": "a", "feature_columns": "c, 1"})
    assert sel.feature_names == ("c", "b") and sel.task == "regression"  # 40 distinct integers > 20
    cls = describe({"source": "csv", "path": f, "target_column": "a", "task": "classification"})
    assert cls.num_classes == 40 and cls.class_names[:3] == ("0", "1", "2")
    reg = describe({"source": "csv", "path": f, "target_column": "0", "task": "regression"})
    assert reg.task == "regression" and reg.feature_names == ("b", "c", "y")
    d = load({"source": "csv", "path": f, "target_column": "a", "feature_columns": "c,b", "normalize": "none",
              "task": "classification"})
    # the target column a is recovered from feature c = 3a
    assert torch.equal((d.train_x[:, 0] / 3).round().long(), d.train_y)
    # CSV regression targets stay raw
    r = load({"source": "csv", "path": f, "normalize": "none", "val_fraction": 0})
    assert r.target_mean is None and float(r.train_y.max()) > 14


def test_csv_bad_value_names_line_and_column(tmp_path: Path) -> None:
    text = "age,income,label\n30,1000,a\n41,2000,b\n\n52,lots,a\n"
    f = _write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError) as e:
        describe({"source": "csv", "path": f})
    msg = str(e.value)
    assert "bad.csv" in msg and "line 5" in msg and "income" in msg and "lots" in msg
    # an empty cell is a missing value: by default its row is dropped, and the dataset says so
    empty_cell = _write(tmp_path / "hole.csv", "x,y\n1,0\n,1\n")
    info = describe({"source": "csv", "path": empty_cell, "val_fraction": 0})
    assert info.n_train == 1 and any("1 of 2 rows have missing feature values" in n for n in info.notes)


def test_csv_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        describe({"source": "csv", "path": str(tmp_path / "missing.csv")})
    with pytest.raises(DataError, match="no file selected"):
        describe({"source": "csv", "path": ""})
    with pytest.raises(DataError, match="empty"):
        describe({"source": "csv", "path": _write(tmp_path / "empty.csv", "")})
    with pytest.raises(DataError, match="empty"):
        describe({"source": "csv", "path": _write(tmp_path / "blank.csv", "\n\n  \n")})
    f = _write(tmp_path / "ok.csv", "a,b,c\n1,2,0\n3,4,1\n5,6,0\n")
    with pytest.raises(DataError) as e:
        describe({"source": "csv", "path": f, "target_column": "zzz"})
    assert "zzz" in str(e.value) and "a, b, c" in str(e.value)
    with pytest.raises(DataError, match="unknown feature column 'q'"):
        describe({"source": "csv", "path": f, "feature_columns": "a,q"})
    with pytest.raises(DataError, match="both the target and a feature"):
        describe({"source": "csv", "path": f, "feature_columns": "a,c"})
    with pytest.raises(DataError, match="must be numeric"):
        describe({"source": "csv", "path": _write(tmp_path / "s.csv", "a,t\n1,x\n2,y\n"), "task": "regression"})


def test_csv_describe_sees_file_changes(tmp_path: Path) -> None:
    p = tmp_path / "grow.csv"
    _write(p, "a,b,y\n1,2,0\n3,4,1\n")
    assert describe({"source": "csv", "path": str(p), "val_fraction": 0}).feature_shape == (2,)
    _write(p, "a,b,c,y\n1,2,3,0\n3,4,5,1\n6,7,8,1\n")
    info = describe({"source": "csv", "path": str(p), "val_fraction": 0})
    assert info.feature_shape == (3,) and info.n_train == 3


# ----------------------------------------------------------------------------
# Image folders
# ----------------------------------------------------------------------------


def _make_folder(root: Path, mode: str = "RGB", size: tuple[int, int] = (10, 12), per_class: int = 3,
                 classes: tuple[str, ...] = ("cat", "dog")) -> str:
    from PIL import Image

    rng = np.random.RandomState(0)
    for ci, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            arr = (rng.rand(*shape) * 100 + ci * 100).astype(np.uint8)
            Image.fromarray(arr, mode=mode).save(root / cls / f"img{i}.png")
    (root / "dog" / "notes.txt").write_text("not an image")
    return str(root)


def test_image_folder(tmp_path: Path) -> None:
    root = _make_folder(tmp_path / "pets")
    info = describe({"source": "image_folder", "path": root})
    assert info.feature_shape == (3, 12, 10)  # (C, H, W) of a 10 wide, 12 high image
    assert info.class_names == ("cat", "dog") and info.num_classes == 2 and info.is_image
    assert info.n_train + info.n_val == 6 and info.n_val == 1
    d = load({"source": "image_folder", "path": root})
    assert d.info == info and not d.resident
    assert d.train_set is not None and d.val_set is not None
    assert len(d.train_set) == info.n_train and len(d.val_set) == info.n_val
    x, y = d.train_set[0]
    assert x.dtype == torch.float32 and tuple(x.shape) == (3, 12, 10) and y.dtype == torch.int64
    assert d.mean is not None and len(d.mean) == 3 and d.pixel_scale == 255.0
    batch = next(iter(torch.utils.data.DataLoader(d.train_set, batch_size=4)))
    assert tuple(batch[0].shape) == (4, 3, 12, 10) and tuple(batch[1].shape) == (4,)


def test_image_folder_resize_and_grayscale(tmp_path: Path) -> None:
    root = _make_folder(tmp_path / "pets")
    p: dict[str, Any] = {"source": "image_folder", "path": root, "resize": 8, "grayscale": True}
    info = describe(p)
    assert info.feature_shape == (1, 8, 8)
    x, _ = load(p).train_set[0]
    assert tuple(x.shape) == (1, 8, 8)
    gray_root = _make_folder(tmp_path / "gray", mode="L", size=(6, 6))
    assert describe({"source": "image_folder", "path": gray_root}).feature_shape == (1, 6, 6)
    raw = load({"source": "image_folder", "path": gray_root, "normalize": "none", "val_fraction": 0})
    values = torch.stack([raw.train_set[i][0] for i in range(len(raw.train_set))])
    assert float(values.max()) > 1.0  # none keeps raw pixel values


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        describe({"source": "image_folder", "path": str(tmp_path / "nowhere")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        describe({"source": "image_folder", "path": str(tmp_path / "empty")})
    (tmp_path / "empty" / "cls").mkdir()
    with pytest.raises(DataError, match="'cls' contains no images"):
        describe({"source": "image_folder", "path": str(tmp_path / "empty")})


# ----------------------------------------------------------------------------
# torchvision sets (never downloaded here)
# ----------------------------------------------------------------------------


def test_torchvision_describe_is_static() -> None:
    info = describe({"source": "mnist"})
    assert info.feature_shape == (1, 28, 28) and (info.n_train, info.n_val) == (60000, 10000)
    c = describe({"source": "cifar10", "grayscale": True, "resize": 64})
    assert c.feature_shape == (1, 64, 64) and c.class_names[0] == "airplane"
    assert not SOURCES["cifar10"].offline


def test_torchvision_missing_without_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETSTUDIO_DATA_DIR", str(tmp_path / "default"))
    with pytest.raises(DataError) as e:
        load({"source": "mnist", "path": ""})
    msg = str(e.value)
    assert msg.startswith("MNIST not found in") and "enable download" in msg
    assert str(tmp_path / "default") in msg
    with pytest.raises(DataError, match="Fashion-MNIST not found in"):
        load({"source": "fashion_mnist", "path": str(tmp_path)})


def _fake_mnist(root: Path, n_train: int, n_test: int) -> None:
    """Tiny files in torchvision's MNIST raw format (idx), so loading runs offline."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.RandomState(1)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.randint(0, 256, size=(n, 28, 28)).astype(np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + imgs.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())


def test_torchvision_mnist_from_local_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_mnist(tmp_path, 40, 20)
    d = load({"source": "mnist", "path": str(tmp_path)})
    assert (d.info.n_train, d.info.n_val) == (40, 20)  # official test split = validation
    _check_resident(d)
    assert d.val_y.tolist() == [i % 10 for i in range(20)]
    # the set's own folder works as path too
    assert load({"source": "mnist", "path": str(tmp_path / "MNIST"), "normalize": "minmax"}).info.n_train == 40
    # too big to keep resident once resized: served per sample, same values
    from netstudio.data import prep

    resident = load({"source": "mnist", "path": str(tmp_path), "resize": 14})
    monkeypatch.setattr(prep, "RESIDENT_LIMIT_BYTES", 1000)
    data.clear_cache()
    lazy = load({"source": "mnist", "path": str(tmp_path), "resize": 14})
    assert not lazy.resident and lazy.info == resident.info
    x, y = lazy.train_set[3]
    assert torch.allclose(x, resident.train_x[3], atol=1e-5) and int(y) == int(resident.train_y[3])


def _fake_cifar(root: Path, per_batch: int, n_test: int) -> None:
    """Tiny CIFAR-10 pickles (md5 checks are patched out by the test)."""
    import pickle

    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.RandomState(2)
    files = [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]
    for name, n in files:
        entry = {"data": rng.randint(0, 256, size=(n, 3072)).astype(np.uint8),
                 "labels": [int(v) for v in np.arange(n) % 10]}
        (base / name).write_bytes(pickle.dumps(entry))
    (base / "batches.meta").write_bytes(pickle.dumps({"label_names": ["airplane"] * 10}))


def test_torchvision_cifar10_is_lazy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)
    _fake_cifar(tmp_path, 4, 5)
    p = {"source": "cifar10", "path": str(tmp_path)}
    d = load(p)
    assert not d.resident and d.info == dataclasses.replace(describe(p), n_train=20, n_val=5)
    assert d.train_set is not None and d.val_set is not None
    assert len(d.train_set) == 20 and len(d.val_set) == 5
    x, y = d.train_set[0]
    assert tuple(x.shape) == (3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    # standardized with train statistics: the train set is centred per channel
    xs = torch.stack([d.train_set[i][0] for i in range(20)])
    assert torch.allclose(xs.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    g = load({**p, "grayscale": True, "resize": 16})
    x, _ = g.val_set[1]
    assert tuple(x.shape) == (1, 16, 16) and g.info.feature_shape == (1, 16, 16)
    assert g.mean is not None and len(g.mean) == 1


# ----------------------------------------------------------------------------
# Packaging and the node
# ----------------------------------------------------------------------------


def test_import_is_light() -> None:
    code = ("import sys, netstudio.data\n"
            "heavy = [m for m in ('torch', 'PySide6', 'numpy', 'pandas', 'sklearn', 'torchvision') "
            "if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).resolve().parents[1]))
    assert out.stdout.strip() == ""


def test_dataset_node_infers_shapes() -> None:
    from netstudio.nodes.base import CATALOG, InferContext, TensorInfo
    from netstudio.nodes.data import DatasetNode

    assert CATALOG.get("data.dataset").__class__ is DatasetNode
    # every data param, plus the training-only augmentation settings (netstudio.training.augment)
    defaults = DatasetNode.default_params()
    assert {k: v for k, v in defaults.items() if not k.startswith("augment_")} == DEFAULT_PARAMS
    assert {k for k in defaults if k.startswith("augment_")} == {"augment_crop", "augment_flip", "augment_rotate",
                                                                "augment_scale", "augment_jitter", "augment_erase"}
    assert DatasetNode.param("source").choices == tuple(SOURCES)
    node = DatasetNode()
    ctx = InferContext("n1", "data", "Dataset", DatasetNode.default_params(), {}, batch_size=64)
    out = node.infer(ctx)
    assert out["features"] == TensorInfo((64, 1, 28, 28), "float32")
    assert out["target"] == TensorInfo((64,), "int64")
    assert isinstance(ctx.extra["dataset"], DatasetInfo) and ctx.extra["dataset"].source == "mnist_5k"
    reg = InferContext("n1", "data", "Dataset", {**DatasetNode.default_params(), "source": "diabetes"}, {}, 8)
    assert node.infer(reg)["target"] == TensorInfo((8, 1), "float32")
    bad = InferContext("n1", "data", "Dataset", {**DatasetNode.default_params(), "source": "csv",
                                                 "path": os.path.join("no", "such.csv")}, {}, 8)
    with pytest.raises(DataError, match="not found"):
        node.infer(bad)


@pytest.mark.skipif(not hasattr(os, "symlink") or sys.platform.startswith("win"), reason="needs symbolic links")
def test_image_folder_symlink_loop_is_scanned_once(tmp_path: Path) -> None:
    """cat/loop -> . (and a link back to the root): each real folder is entered once, each image counted once."""
    from netstudio.data.images import scan_folder

    root = Path(_make_folder(tmp_path / "pets"))
    os.symlink(".", root / "cat" / "loop")
    os.symlink("..", root / "dog" / "up")  # leads back to dog itself and to cat, both already scanned
    scan = scan_folder(str(root))
    names = [(os.path.relpath(p, root), c) for p, c in scan.samples]
    assert names == [(f"cat/img{i}.png", 0) for i in range(3)] + [(f"dog/img{i}.png", 1) for i in range(3)]
    assert describe({"source": "image_folder", "path": str(root), "val_fraction": 0}).n_train == 6


@pytest.mark.skipif(not hasattr(os, "symlink") or sys.platform.startswith("win"), reason="needs symbolic links")
def test_image_folder_duplicate_links_count_each_image_once(tmp_path: Path) -> None:
    from netstudio.data.images import scan_folder

    root = Path(_make_folder(tmp_path / "pets", per_class=2))
    sub = root / "cat" / "more"
    sub.mkdir()
    (root / "cat" / "img0.png").rename(sub / "img9.png")
    os.symlink("more", root / "cat" / "again")  # a second way into cat/more
    os.symlink(str(sub), root / "cat" / "zz_abs")  # and a third, absolute
    os.symlink("img1.png", root / "cat" / "zz_copy.png")  # a link to an image already counted
    os.symlink("missing.png", root / "cat" / "dangling.png")  # skipped, not a failure later
    scan = scan_folder(str(root))
    cat = [os.path.relpath(p, root) for p, c in scan.samples if c == 0]
    # os.walk order (sorted, depth first); 'again' comes before 'more', so the images are found through it
    assert cat == ["cat/img1.png", os.path.join("cat", "again", "img9.png")]
    assert describe({"source": "image_folder", "path": str(root), "val_fraction": 0}).n_train == 4
