"""Image folders (root/<class>/<image>): your own images, one sub-folder per class.

Folder scans are cached by the mtimes of the root and its class folders, so
``describe`` only walks the tree after something changed. Images are decoded
lazily by :class:`netstudio.data.prep.ImageFileDataset`; nothing big is held in memory.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from netstudio.data import registry
from netstudio.data.base import (DataSource, DatasetInfo, ExportLoader, PreparedData, SourceSpec, export_literal,
                                 resolve_path, split_indices, split_sizes)
from netstudio.errors import DataError

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


def load_folder(p: dict[str, Any]) -> PreparedData:
    from netstudio.data import prep
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
        from netstudio.data.standalone.data_folder import folder_stats

        scale = 255.0
        mean, std = folder_stats([f for f, _ in scan.samples], tr, p["seed"], mode, size, c, STATS_SAMPLE,
                                 decode=prep.decode_image)
    info = DatasetInfo(**_folder_info_kw(scan), feature_shape=(c, *size), n_train=len(tr), n_val=len(va))
    return PreparedData(
        info=info, resident=False,
        train_set=ImageFileDataset([scan.samples[int(i)] for i in tr], mode, size, scale, mean, std),
        val_set=ImageFileDataset([scan.samples[int(i)] for i in va], mode, size, scale, mean, std),
        mean=mean, std=std, pixel_scale=scale, preprocess=prep.image_spec((c, *size), scale, False, None, mean, std))


# ----------------------------------------------------------------------------
# The source
# ----------------------------------------------------------------------------


class ImageFolderSource(DataSource):
    def describe(self, p: dict[str, Any]) -> DatasetInfo:
        return describe_folder(p)

    def load(self, p: dict[str, Any]) -> PreparedData:
        return load_folder(p)

    def stamp(self, p: dict[str, Any]) -> Any:
        return folder_stamp(p["path"])

    def clear_cache(self) -> None:
        with _scan_lock:
            _scan_cache.clear()

    def export_loader(self, p: dict[str, Any]) -> ExportLoader:
        lit = export_literal
        scan = scan_folder(p["path"])
        return ExportLoader(
            settings=(f"DATA_PATH = {lit(scan.root)}  # one sub-folder per class; override with --data-path",
                      f"CLASS_NAMES = {lit(list(scan.classes))}",
                      f"RESIZE = {lit(p['resize'])}  # 0: every image takes the first image's size",
                      f"GRAYSCALE = {bool(p['grayscale'])}",
                      f"IMG_EXTENSIONS = {lit(tuple(IMG_EXTENSIONS))}",
                      f"GRAY_MODES = {lit(tuple(_GRAY_MODES))}  # PIL modes read as one channel",
                      f"STATS_SAMPLE = {STATS_SAMPLE}  # training images the normalisation statistics come from"),
            modules=("split", "data_folder"),
            body=('\n\ndef load_data(data_path=None):\n'
                  '    """(train_x, train_y, val_x, val_y): every image decoded into memory (N x C x H x W)."""\n'
                  '    return load_folder(data_path or DATA_PATH, CLASS_NAMES,\n'
                  '                       lambda n: split_indices(n, VAL_FRACTION, DATA_SEED), NORMALIZE, RESIZE,\n'
                  '                       GRAYSCALE, GRAY_MODES, DATA_SEED, STATS_SAMPLE, IMG_EXTENSIONS, FITTED)\n'))


registry.register(ImageFolderSource("image_folder", SourceSpec(
    "Image folder", "image", "your own images in root/<class name>/<image>, one folder per class", True),
    ("source", "val_fraction", "seed", "normalize", "path", "resize", "grayscale")))
