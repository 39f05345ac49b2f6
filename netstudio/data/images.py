"""Image folders (root/<class>/<image>) and the torchvision sets (MNIST, Fashion-MNIST, CIFAR-10).

Folder scans are cached by the mtimes of the root and its class folders, so
``describe`` only walks the tree after something changed. Images are decoded
lazily by :class:`netstudio.data.prep.ImageFileDataset`; nothing big is held in memory.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from netstudio.data.core import DatasetInfo, PreparedData, resolve_path, split_sizes
from netstudio.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: same extensions torchvision's ImageFolder accepts
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
#: normalization statistics of a folder come from at most this many train images (seeded sample)
STATS_SAMPLE = 512


# ----------------------------------------------------------------------------
# Image folders
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FolderScan:
    root: str
    classes: tuple[str, ...]
    samples: tuple[tuple[str, int], ...]  # (file path, class index), ImageFolder order
    width: int
    height: int
    mode: str  # PIL mode of the first image


def _folder_missing(path: str) -> DataError:
    if not path:
        return DataError("Image folder dataset: no folder selected",
                         hint="set path to a folder with one sub-folder of images per class")
    return DataError(f"Image folder not found: {path}", hint="check the path")


def folder_stamp(path: str) -> Any:
    root = resolve_path(path)
    if not root or not os.path.isdir(root):
        raise _folder_missing(root)
    subs = []
    with os.scandir(root) as it:
        for e in it:
            if e.is_dir():
                subs.append((e.name, e.stat().st_mtime_ns))
    return (root, os.stat(root).st_mtime_ns, tuple(sorted(subs)))


_scan_lock = threading.Lock()
_scan_cache: "OrderedDict[Any, FolderScan]" = OrderedDict()


def scan_folder(path: str) -> FolderScan:
    stamp = folder_stamp(path)
    with _scan_lock:
        hit = _scan_cache.get(stamp)
        if hit is not None:
            return hit
    scan = _scan(stamp[0])
    with _scan_lock:
        _scan_cache[stamp] = scan
        while len(_scan_cache) > 4:
            _scan_cache.popitem(last=False)
    return scan


def _scan(root: str) -> FolderScan:
    """Walk root like ImageFolder does: sorted class folders, recursive, by extension."""
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataError(f"Image folder {root} has no class sub-folders",
                        hint="put images in root/<class name>/, one folder per class")
    samples: list[tuple[str, int]] = []
    seen_dirs: set[tuple[int, int]] = set()  # shared by the classes: a file belongs to one class only
    seen_files: set[tuple[int, int]] = set()
    for ci, cls in enumerate(classes):
        found = _class_images(os.path.join(root, cls), seen_dirs, seen_files)
        if not found:
            raise DataError(f"Image folder {root}: class folder '{cls}' contains no images",
                            hint=f"supported files: {', '.join(IMG_EXTENSIONS)}; remove empty folders")
        samples.extend((f, ci) for f in found)
    first = samples[0][0]
    try:
        from PIL import Image

        with Image.open(first) as im:  # lazy: reads only the header
            width, height, mode = im.width, im.height, im.mode
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds
        raise DataError(f"Image folder {root}: cannot read {first}: {e}") from None
    return FolderScan(root, tuple(classes), tuple(samples), width, height, mode)


def _class_images(top: str, seen_dirs: set[tuple[int, int]], seen_files: set[tuple[int, int]]) -> list[str]:
    """The image files under one class folder, in os.walk order (sorted, depth first).

    Symbolic links are followed, but every real directory is entered once and every
    real file counted once (by device and inode; ``seen_dirs``/``seen_files`` are shared
    by all classes): a link loop such as ``cls/l1 -> .`` or two links to the same folder
    cannot make the scan endless or count an image twice.
    """
    found: list[str] = []
    try:
        st = os.stat(top)
    except OSError:
        return found
    if (st.st_dev, st.st_ino) in seen_dirs:
        return found
    seen_dirs.add((st.st_dev, st.st_ino))
    stack = [(top, st.st_dev)]
    while stack:
        path, dev = stack.pop()
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:  # unreadable folder: skipped, like os.walk does
            continue
        subdirs: list[tuple[str, int]] = []
        for e in entries:
            try:
                if e.is_dir():
                    s = e.stat()  # follows a link: the directory it points to
                    key = (s.st_dev, s.st_ino)
                    if key not in seen_dirs:
                        seen_dirs.add(key)
                        subdirs.append((e.path, s.st_dev))
                elif e.name.lower().endswith(IMG_EXTENSIONS):
                    if e.is_symlink():
                        s = e.stat()  # a dangling link raises and is skipped
                        key = (s.st_dev, s.st_ino)
                    else:
                        key = (dev, e.inode())
                    if key not in seen_files:
                        seen_files.add(key)
                        found.append(e.path)
            except OSError:
                continue
        stack.extend(reversed(subdirs))
    return found


def _folder_geometry(scan: FolderScan, p: dict[str, Any]) -> tuple[str, int, tuple[int, int]]:
    """(PIL mode to convert to, channels, (H, W)). Without resize every image is brought to
    the first image's size so batches stack."""
    gray = p["grayscale"] or scan.mode in _GRAY_MODES
    size = (p["resize"], p["resize"]) if p["resize"] else (scan.height, scan.width)
    return ("L" if gray else "RGB"), (1 if gray else 3), size


def _folder_info_kw(scan: FolderScan) -> dict[str, Any]:
    return dict(source="image_folder", feature_dtype="float32", target_shape=(), target_dtype="int64",
                task="classification", num_classes=len(scan.classes), class_names=scan.classes, is_image=True)


def describe_folder(p: dict[str, Any]) -> DatasetInfo:
    scan = scan_folder(p["path"])
    _, c, size = _folder_geometry(scan, p)
    n_train, n_val = split_sizes(len(scan.samples), p["val_fraction"], f"image folder {scan.root}")
    return DatasetInfo(**_folder_info_kw(scan), feature_shape=(c, *size), n_train=n_train, n_val=n_val)


def decode_image(path: str, mode: str, size: tuple[int, int]) -> "torch.Tensor":
    """One image → float32 (C, H, W) with raw 0–255 values."""
    import numpy as np
    import torch
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert(mode)
            if (im.height, im.width) != size:
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.float32)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"Cannot read image {path}: {e}") from None
    t = torch.from_numpy(arr.copy())
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()


def load_folder(p: dict[str, Any]) -> PreparedData:
    import numpy as np
    import torch

    from netstudio.data import prep
    from netstudio.data.core import split_indices
    from netstudio.data.prep import ImageFileDataset

    scan = scan_folder(p["path"])
    mode, c, size = _folder_geometry(scan, p)
    split_sizes(len(scan.samples), p["val_fraction"], f"image folder {scan.root}")
    tr, va = split_indices(len(scan.samples), p["val_fraction"], p["seed"])
    how = p["normalize"]
    mean = std = None
    scale = 1.0
    if how == "minmax":
        scale, mean, std = 255.0, [0.0] * c, [1.0] * c
    elif how == "standard":
        scale = 255.0
        # decoding every image would make "Train" wait on big folders; a seeded sample is plenty
        pick = tr[np.random.RandomState(p["seed"]).permutation(len(tr))[:STATS_SAMPLE]]
        s = torch.zeros(c, dtype=torch.float64)
        s2 = torch.zeros(c, dtype=torch.float64)
        for j in pick:
            x = decode_image(scan.samples[int(j)][0], mode, size).to(torch.float64) / scale
            s += x.sum(dim=(1, 2))
            s2 += (x * x).sum(dim=(1, 2))
        count = len(pick) * size[0] * size[1]
        m = s / count
        sd = (s2 / count - m * m).clamp_min(0).sqrt()
        sd = torch.where(sd > 1e-12, sd, torch.ones_like(sd))
        mean, std = [float(v) for v in m], [float(v) for v in sd]
    info = DatasetInfo(**_folder_info_kw(scan), feature_shape=(c, *size), n_train=len(tr), n_val=len(va))
    return PreparedData(
        info=info, resident=False,
        train_set=ImageFileDataset([scan.samples[int(i)] for i in tr], mode, size, scale, mean, std),
        val_set=ImageFileDataset([scan.samples[int(i)] for i in va], mode, size, scale, mean, std),
        mean=mean, std=std, pixel_scale=scale, preprocess=prep.image_spec((c, *size), scale, False, None, mean, std))


# ----------------------------------------------------------------------------
# torchvision sets
# ----------------------------------------------------------------------------

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
    from netstudio.data.builtin import _classification, describe_builtin

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

    names = describe_builtin(p).class_names
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
    return prep.finish_images(_classification(src, names, True), p, images, targets, tr, va, pixel_scale=255.0,
                              channels_last=channels_last, grayscale=src == "cifar10" and p["grayscale"],
                              force_lazy=src == "cifar10")
