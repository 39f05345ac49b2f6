"""Loss nodes: they compare a prediction with a target and feed an optimizer."""

from __future__ import annotations

from typing import Any, Mapping

from netstudio.nodes.base import Category, InferContext, LossType, Param, TensorInfo, register

WEIGHT = Param("weight", "float", 1.0, min=0.0, max=1e6, help="multiplier in the optimizer's weighted sum")
REDUCTION = Param("reduction", "choice", "mean", choices=("mean", "sum"))


def _scalar() -> dict[str, Any]:
    return {"loss": TensorInfo((), "loss")}


@register
class CrossEntropy(LossType):
    type_id = "loss.cross_entropy"
    title = "CrossEntropy"
    description = "Softmax cross-entropy between logits (N×C) and class indices (N)."
    name_prefix = "ce_loss"
    metric = "argmax"
    params = (WEIGHT, Param("label_smoothing", "float", 0.0, min=0.0, max=1.0), REDUCTION)

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        pred, tgt = ctx.input("prediction"), ctx.input("target")
        if len(pred.shape) < 2:
            raise ctx.error(f"needs class scores N×C but receives {pred.fmt()}",
                            hint="feed the logits of a Linear layer with out_features = number of classes")
        if tgt.dtype.startswith("int"):
            if tgt.shape != (pred.shape[0], *pred.shape[2:]):
                raise ctx.error(f"target {tgt.fmt()} does not match predictions {pred.fmt()}",
                                hint="targets must be class indices, one per sample")
            n_classes = ctx.extra.get("num_classes")
            if n_classes and pred.shape[1] != n_classes:
                raise ctx.error(f"receives {pred.shape[1]} class scores but the dataset has {n_classes} classes",
                                hint=f"set out_features of the last Linear to {n_classes}")
        elif tgt.shape != pred.shape:
            raise ctx.error(f"probability targets {tgt.fmt()} must match predictions {pred.fmt()}")
        return _scalar()

    def make(self, params: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.CrossEntropyLoss(label_smoothing=params["label_smoothing"], reduction=params["reduction"])


def _check_same_numel(ctx: InferContext) -> None:
    pred, tgt = ctx.input("prediction"), ctx.input("target")
    if pred.shape != tgt.shape and _numel(pred) != _numel(tgt):
        raise ctx.error(f"prediction {pred.fmt()} and target {tgt.fmt()} differ in size",
                        hint="make the last layer output one value per target value")


def _numel(t: TensorInfo) -> int:
    n = 1
    for d in t.shape:
        n *= d
    return n


class _ElementwiseLoss(LossType):
    """Losses comparing same-sized tensors; integer targets are cast to float."""

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        _check_same_numel(ctx)
        return _scalar()

    def adapt_target(self, pred: Any, target: Any) -> Any:
        if target.dtype != pred.dtype:
            target = target.to(pred.dtype)
        return target.reshape(pred.shape) if target.shape != pred.shape else target


@register
class MSE(_ElementwiseLoss):
    type_id = "loss.mse"
    title = "MSE"
    description = "Mean squared error (regression, reconstruction)."
    name_prefix = "mse_loss"
    params = (WEIGHT, REDUCTION)

    def make(self, params: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.MSELoss(reduction=params["reduction"])


@register
class BCE(_ElementwiseLoss):
    type_id = "loss.bce"
    title = "BCE"
    description = "Binary cross-entropy on probabilities in [0, 1] (after a Sigmoid)."
    name_prefix = "bce_loss"
    metric = "sigmoid"
    params = (WEIGHT, REDUCTION)

    def make(self, params: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.BCELoss(reduction=params["reduction"])
