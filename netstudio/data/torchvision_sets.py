"""The torchvision sets: MNIST, Fashion-MNIST and CIFAR-10 with their official train/test split.

The official test split is the validation set, so ``val_fraction``/``seed`` do not apply.
``describe`` answers from constants (shapes stay available while designing, even before
the files are there); ``load`` reports a missing set.
"""

from __future__ import annotations

import os
from typing import Any

from netstudio.data import registry
from netstudio.data.base import (DIGIT_NAMES, DataSource, DatasetInfo, ExportLoader, PreparedData, SourceSpec,
                                 classification_info, export_literal, resolve_path)
from netstudio.errors import DataError

FASHION_NAMES: tuple[str, ...] = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                  "Sneaker", "Bag", "Ankle boot")
CIFAR10_NAMES: tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                  "ship", "truck")

# (n_train, n_val, channels, side, class names) of the torchvision sets (official splits)
TORCHVISION_FACTS: dict[str, tuple[int, int, int, int, tuple[str, ...]]] = {
    "mnist": (60000, 10000, 1, 28, DIGIT_NAMES),
    "fashion_mnist": (60000, 10000, 1, 28, FASHION_NAMES),
    "cifar10": (50000, 10000, 3, 32, CIFAR10_NAMES),
}

_TV_CLASS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}
_TV_FOLDER = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "cifar-10-batches-py"}
_TV_LABEL = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}


def default_data_root() -> str:
    """Where torchvision sets live when path is empty: $NETSTUDIO_DATA_DIR or ~/.cache/netstudio/datasets."""
    return os.environ.get("NETSTUDIO_DATA_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "netstudio",
                                                                 "datasets")


def torchvision_root(p: dict[str, Any]) -> str:
    """The root torchvision expects; accepts the set's own folder (…/MNIST) as well."""
    root = resolve_path(p["path"]) or default_data_root()
    if os.path.basename(os.path.normpath(root)) == _TV_FOLDER[p["source"]]:
        return os.path.dirname(os.path.normpath(root))
    return root


def load_torchvision(p: dict[str, Any]) -> PreparedData:
    import numpy as np
    import torch
    from torchvision import datasets

    from netstudio.data import prep

    src = p["source"]
    label = _TV_LABEL[src]
    root = torchvision_root(p)
    cls = getattr(datasets, _TV_CLASS[src])
    try:
        if p["download"]:
            os.makedirs(root, exist_ok=True)
        train = cls(root, train=True, download=p["download"])
        test = cls(root, train=False, download=p["download"])
    except (RuntimeError, OSError, ValueError) as e:
        if not p["download"]:
            raise DataError(f"{label} not found in {root}; set path to a folder containing it or enable download",
                            hint=f"expected {os.path.join(root, _TV_FOLDER[src])}") from None
        raise DataError(f"Could not download {label} into {root}: {e}", hint="check the network connection") from None

    names = TORCHVISION_FACTS[src][4]
    if src == "cifar10":
        images = torch.from_numpy(np.concatenate([train.data, test.data]))  # (N, 32, 32, 3) uint8
        channels_last = True
        targets = torch.tensor(list(train.targets) + list(test.targets), dtype=torch.int64)
    else:
        images = torch.cat([train.data, test.data]).unsqueeze(1)  # (N, 1, 28, 28) uint8
        channels_last = False
        targets = torch.cat([train.targets, test.targets]).to(torch.int64)
    n_train = len(train.data)
    tr = torch.arange(n_train)
    va = torch.arange(n_train, len(images))  # the official test split is the validation set
    return prep.finish_images(classification_info(src, names, True), p, images, targets, tr, va, pixel_scale=255.0,
                              channels_last=channels_last, grayscale=src == "cifar10" and p["grayscale"],
                              force_lazy=src == "cifar10")


class TorchvisionSource(DataSource):
    def describe(self, p: dict[str, Any]) -> DatasetInfo:
        src = p["source"]
        n_train, n_val, c, side, names = TORCHVISION_FACTS[src]
        if src == "cifar10" and p["grayscale"]:
            c = 1
        side = p["resize"] or side
        return DatasetInfo(**classification_info(src, names, True), feature_shape=(c, side, side),
                           n_train=n_train, n_val=n_val)

    def load(self, p: dict[str, Any]) -> PreparedData:
        return load_torchvision(p)

    def export_loader(self, p: dict[str, Any]) -> ExportLoader:
        src = p["source"]
        settings = [f"DATA_PATH = {export_literal(torchvision_root(p))}  # torchvision root folder; override with "
                    "--data-path",
                    f"DOWNLOAD = {bool(p['download'])}  # let torchvision download the set into DATA_PATH",
                    f"RESIZE = {export_literal(p['resize'])}  # 0 keeps the original size"]
        if src == "cifar10":
            settings.append(f"GRAYSCALE = {bool(p['grayscale'])}")
            images = ("    images = torch.from_numpy(np.concatenate([train.data, test.data])).permute(0, 3, 1, 2)\n"
                      "    targets = torch.tensor(list(train.targets) + list(test.targets), dtype=torch.int64)\n")
            gray = ", grayscale=GRAYSCALE"
        else:
            images = ("    images = torch.cat([train.data, test.data]).unsqueeze(1)  # N x 1 x 28 x 28 uint8\n"
                      "    targets = torch.cat([train.targets, test.targets]).to(torch.int64)\n")
            gray = ""
        cls = _TV_CLASS[src]
        return ExportLoader(
            settings=tuple(settings), modules=("data_images",),
            body=('\n\ndef load_data(data_path=None, download=DOWNLOAD):\n'
                  '    """(train_x, train_y, val_x, val_y); the official test split is the validation set."""\n'
                  '    from torchvision import datasets\n\n'
                  '    root = data_path or DATA_PATH\n'
                  f'    train = datasets.{cls}(root, train=True, download=download)\n'
                  f'    test = datasets.{cls}(root, train=False, download=download)\n'
                  + images +
                  '    train_idx = torch.arange(len(train.data))\n'
                  '    val_idx = torch.arange(len(train.data), len(images))\n'
                  '    return prepare_images(images, targets, train_idx, val_idx, pixel_scale=255.0,\n'
                  f'                          normalize=NORMALIZE, resize=RESIZE, fitted=FITTED{gray})\n'))


_PARAMS = ("source", "normalize", "path", "download", "resize")
for _name, _label, _text, _extra in (
        ("mnist", "MNIST", "torchvision MNIST: 60000/10000 handwritten digits 28×28", ()),
        ("fashion_mnist", "Fashion-MNIST", "torchvision Fashion-MNIST: 60000/10000 clothing images 28×28", ()),
        ("cifar10", "CIFAR-10", "torchvision CIFAR-10: 50000/10000 colour images 32×32", ("grayscale",))):
    registry.register(TorchvisionSource(_name, SourceSpec(_label, "image", _text, False), _PARAMS + _extra))
