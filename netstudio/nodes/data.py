"""The Dataset node: the graph's source of features and targets.

Shapes come from :func:`netstudio.data.describe` (fast, cached, no torch), so the
editor shows real dataset shapes on every edge while the user edits.
"""

from __future__ import annotations

from typing import Any

from netstudio.data import describe, registry
from netstudio.nodes.base import Category, InferContext, NodeType, Param, Port, PortKind, TensorInfo, register

# the registered data sources (netstudio.data.registry) and which of them each param concerns
SOURCE_CHOICES: tuple[str, ...] = registry.names()
_TORCHVISION = registry.sources_with_param("download")
_IMAGES = registry.sources_with_param("resize")
_SYNTHETIC = registry.sources_with_param("n_samples")
# the torchvision sets use their official test split, so the split params do not apply to them
_SPLIT = registry.split_sources()


@register
class DatasetNode(NodeType):
    type_id = "data.dataset"
    title = "Dataset"
    category = Category.DATA
    description = ("Loads a dataset and feeds its features (and targets, for the loss). Built-in sets work "
                   "offline; CSV files and image folders are your own data.")
    name_prefix = "data"
    inputs = ()
    outputs = (Port("features", PortKind.TENSOR), Port("target", PortKind.TARGET))
    summary_params = ("source",)
    params = (
        Param("source", "choice", "mnist_5k", choices=SOURCE_CHOICES,
              help="which data; mnist/fashion_mnist/cifar10 need a local copy or download"),
        Param("path", "path", "", visible_if=("source", ("csv", "image_folder") + _TORCHVISION),
              help="CSV file, image folder root (root/<class>/<image>), or torchvision data folder"),
        Param("target_column", "str", "", visible_if=("source", ("csv",)),
              help="name or 0-based index of the target column; empty = last column"),
        Param("feature_columns", "str", "", visible_if=("source", ("csv",)),
              help="comma-separated names or indices; empty = every column but the target"),
        Param("task", "choice", "auto", choices=("auto", "classification", "regression"),
              visible_if=("source", ("csv",)),
              help="auto: classification if the target is text or has ≤ 20 distinct whole numbers"),
        Param("missing", "choice", "drop", choices=("drop", "mean", "median", "constant"),
              visible_if=("source", ("csv",)),
              help="rows with an empty or NA feature cell: drop them, or fill the cell with the column's "
                   "training mean/median or with fill value (check shows how many rows this affects)"),
        Param("fill_value", "float", 0.0, visible_if=("source", ("csv",)),
              help="the value missing cells get when missing is 'constant'"),
        Param("categorical", "choice", "onehot", choices=("onehot", "ordinal", "ids"),
              visible_if=("source", ("csv",)),
              help="text feature columns: onehot (one 0/1 feature per category), ordinal (the category's "
                   "index), ids (every feature an integer token id for an Embedding; text vocabulary from the "
                   "training split, 0 = unknown)"),
        Param("val_fraction", "float", 0.2, min=0.0, max=0.9, step=0.05, visible_if=("source", _SPLIT),
              help="share of samples held out for validation"),
        Param("seed", "int", 0, min=0, max=2**32 - 1, visible_if=("source", _SPLIT),
              help="seeds the train/validation split (and synthetic data)"),
        Param("normalize", "choice", "standard", choices=("standard", "minmax", "none"),
              help="standard: z-score fitted on the train split (images: per channel after scaling to "
                   "[0,1]); minmax: to [0,1]; none: raw values"),
        Param("resize", "int", 0, min=0, max=512, visible_if=("source", _IMAGES),
              help="resize images to N×N; 0 keeps the size (e.g. 28 turns 8×8 digits into LeNet input)"),
        Param("grayscale", "bool", False, visible_if=("source", ("image_folder", "cifar10")),
              help="convert colour images to one channel"),
        Param("n_samples", "int", 1000, min=10, max=1_000_000, visible_if=("source", _SYNTHETIC),
              help="number of generated samples"),
        Param("noise", "float", 0.1, min=0.0, max=10.0, step=0.05, visible_if=("source", _SYNTHETIC),
              help="standard deviation of the added noise"),
        Param("n_features", "int", 10, min=1, max=10000, visible_if=("source", ("regression",)),
              help="number of input features of the synthetic regression"),
        Param("download", "bool", False, visible_if=("source", _TORCHVISION),
              help="allow downloading the torchvision set into path"),
        # image augmentation: training batches only, on the training device (netstudio.training.augment);
        # off by default and left out of saved files while off
        Param("augment_crop", "int", 0, min=0, max=32, visible_if=("source", _IMAGES), saved_if_set=True,
              label="augment: crop padding",
              help="random crop with padding: shift each training image by up to N pixels (0 = off)"),
        Param("augment_flip", "bool", False, visible_if=("source", _IMAGES), saved_if_set=True,
              label="augment: flip", help="flip half the training images left-right (not for digits or text)"),
        Param("augment_rotate", "float", 0.0, min=0.0, max=45.0, step=1.0, visible_if=("source", _IMAGES),
              saved_if_set=True, label="augment: rotate",
              help="rotate each training image by a random angle of up to ± this many degrees (0 = off)"),
        Param("augment_scale", "float", 0.0, min=0.0, max=0.5, step=0.05, visible_if=("source", _IMAGES),
              saved_if_set=True, label="augment: scale",
              help="zoom each training image by a random factor in 1 ± this (0 = off)"),
        Param("augment_jitter", "float", 0.0, min=0.0, max=1.0, step=0.05, visible_if=("source", _IMAGES),
              saved_if_set=True, label="augment: colour jitter",
              help="colour images: random brightness, contrast and saturation in 1 ± this (0 = off)"),
        Param("augment_erase", "float", 0.0, min=0.0, max=1.0, step=0.05, visible_if=("source", _IMAGES),
              saved_if_set=True, label="augment: erase",
              help="probability of blanking a random rectangle (2–33% of the image) of a training image"),
    )

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        # DataError propagates unchanged: the analysis attaches this node's id
        info = describe(ctx.params)
        ctx.extra["dataset"] = info
        b = ctx.batch_size
        return {"features": TensorInfo((b, *info.feature_shape), info.feature_dtype),
                "target": TensorInfo((b, *info.target_shape), info.target_dtype)}


@register
class InputNode(NodeType):
    """The input of an imported model: a tensor shape, no data behind it.

    Shapes flow from it as from a Dataset, so an imported model checks, compiles and exports; to
    train it, replace it by a Dataset whose features have this shape."""

    type_id = "data.input"
    title = "Input"
    category = Category.DATA
    description = ("The model input as a shape only (an imported model's input). Replace it by a Dataset to "
                   "train; export works as it is.")
    name_prefix = "input"
    inputs = ()
    outputs = (Port("features", PortKind.TENSOR),
               Port("target", PortKind.TARGET, help="class indices, one per sample (for a loss)"))
    summary_params = ("shape",)
    params = (
        Param("shape", "ints", [3, 224, 224], help="per-sample input shape, without the batch dimension"),
        Param("dtype", "choice", "float32", choices=("float32", "float64", "float16", "int64")),
    )

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        shape = list(ctx.params["shape"])
        if not shape or min(shape) < 1:
            raise ctx.error("shape must list positive sizes", hint="e.g. 3, 224, 224")
        b = ctx.batch_size
        return {"features": TensorInfo((b, *shape), ctx.params["dtype"]),
                "target": TensorInfo((b,), "int64")}
