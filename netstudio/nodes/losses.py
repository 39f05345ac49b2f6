"""Loss nodes: they compare a prediction with a target and feed an optimizer."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

from netstudio.nodes.base import Category, InferContext, LossType, Param, TensorInfo, register

WEIGHT = Param("weight", "float", 1.0, min=0.0, max=1e6, help="multiplier in the optimizer's weighted sum")
REDUCTION = Param("reduction", "choice", "mean", choices=("mean", "sum"))


def _scalar() -> dict[str, Any]:
    return {"loss": TensorInfo((), "loss")}


# ----------------------------------------------------------------------------
# Classification over class indices
# ----------------------------------------------------------------------------


class _ClassIndexLoss(LossType):
    """Losses over N×C scores and N class indices; accuracy is the argmax."""

    category = Category.LOSS
    metric = "argmax"
    #: whether probability targets of the prediction's shape are accepted
    allows_soft_targets = False

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
        elif not self.allows_soft_targets:
            raise ctx.error(f"needs integer class labels but the target is {tgt.dtype} {tgt.fmt()}",
                            hint="use MSE or L1 for regression targets")
        elif tgt.shape != pred.shape:
            raise ctx.error(f"probability targets {tgt.fmt()} must match predictions {pred.fmt()}",
                            hint="use MSE or L1 for regression targets")
        return _scalar()


@register
class CrossEntropy(_ClassIndexLoss):
    type_id = "loss.cross_entropy"
    title = "CrossEntropy"
    description = "Softmax cross-entropy between logits (N×C) and class indices (N); no Softmax before it."
    name_prefix = "ce_loss"
    allows_soft_targets = True
    params = (WEIGHT, Param("label_smoothing", "float", 0.0, min=0.0, max=1.0), REDUCTION)
    summary_params = ("weight",)

    def make(self, params: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.CrossEntropyLoss(label_smoothing=params["label_smoothing"], reduction=params["reduction"])


@register
class NLL(_ClassIndexLoss):
    type_id = "loss.nll"
    title = "NLL"
    description = "Negative log-likelihood of class indices given log-probabilities (after LogSoftmax)."
    name_prefix = "nll_loss"
    params = (WEIGHT, REDUCTION)
    summary_params = ("weight",)

    def make(self, params: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.NLLLoss(reduction=params["reduction"])


# ----------------------------------------------------------------------------
# Element-wise losses (regression, reconstruction, binary classification)
# ----------------------------------------------------------------------------


class _ElementwiseLoss(LossType):
    """Losses comparing same-sized tensors; integer targets are cast to float."""

    category = Category.LOSS
    summary_params: ClassVar[tuple[str, ...]] = ("weight",)

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        pred, tgt = ctx.input("prediction"), ctx.input("target")
        if pred.shape != tgt.shape and math.prod(pred.shape) != math.prod(tgt.shape):
            per_sample = math.prod(tgt.shape[1:]) if tgt.shape else 1
            raise ctx.error(f"prediction {pred.fmt()} and target {tgt.fmt()} differ in size",
                            hint=f"make the last layer output {per_sample} value(s) per sample")
        return _scalar()

    def adapt_target(self, pred: Any, target: Any) -> Any:
        if target.dtype != pred.dtype:
            target = target.to(pred.dtype)
        return target.reshape(pred.shape) if target.shape != pred.shape else target

    def emit_target(self, target: str, pred: str) -> str:
        return f"{target}.to({pred}.dtype).reshape({pred}.shape)"  # same-shaped float tensors


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
class L1(_ElementwiseLoss):
    type_id = "loss.l1"
    title = "L1"
    description = "Mean absolute error; less sensitive to outliers than MSE."
    name_prefix = "l1_loss"
    params = (WEIGHT, REDUCTION)

    def make(self, params: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.L1Loss(reduction=params["reduction"])


@register
class SmoothL1(_ElementwiseLoss):
    type_id = "loss.smooth_l1"
    title = "SmoothL1"
    description = "Squared error below beta, absolute error above it (robust regression)."
    name_prefix = "smooth_l1_loss"
    params = (WEIGHT, Param("beta", "float", 1.0, min=0.0, max=1e6), REDUCTION)
    summary_params = ("weight", "beta")

    def make(self, params: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.SmoothL1Loss(reduction=params["reduction"], beta=params["beta"])


@register
class Huber(_ElementwiseLoss):
    type_id = "loss.huber"
    title = "Huber"
    description = "Squared error below delta, delta-scaled absolute error above it."
    name_prefix = "huber_loss"
    params = (WEIGHT, Param("delta", "float", 1.0, min=1e-6, max=1e6), REDUCTION)
    summary_params = ("weight", "delta")

    def make(self, params: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.HuberLoss(reduction=params["reduction"], delta=params["delta"])


class _BinaryLoss(_ElementwiseLoss):
    """Binary cross-entropy variants: 0/1 targets, one output per sample."""

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        n_classes = ctx.extra.get("num_classes")
        tgt = ctx.input("target")
        if n_classes and n_classes > 2 and tgt.dtype.startswith("int"):
            raise ctx.error(f"needs 0/1 targets but the dataset has {n_classes} classes",
                            hint=f"use CrossEntropy with out_features {n_classes}")
        return super().infer(ctx)


@register
class BCE(_BinaryLoss):
    type_id = "loss.bce"
    title = "BCE"
    description = "Binary cross-entropy on probabilities in [0, 1] (after a Sigmoid)."
    name_prefix = "bce_loss"
    metric = "sigmoid"
    params = (WEIGHT, REDUCTION)

    def make(self, params: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.BCELoss(reduction=params["reduction"])


@register
class BCEWithLogits(_BinaryLoss):
    type_id = "loss.bce_with_logits"
    title = "BCEWithLogits"
    description = "Sigmoid + binary cross-entropy in one numerically stable step (feed raw logits)."
    name_prefix = "bce_loss"
    metric = "logits"
    params = (WEIGHT, REDUCTION)

    def make(self, params: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.BCEWithLogitsLoss(reduction=params["reduction"])


# ----------------------------------------------------------------------------
# Distributions
# ----------------------------------------------------------------------------


@register
class KLDiv(_ClassIndexLoss):
    type_id = "loss.kl_div"
    title = "KLDiv"
    description = ("Kullback-Leibler divergence of the target distribution from the prediction. The prediction "
                   "must be log-probabilities N×C (put a LogSoftmax before it); the target is probabilities of "
                   "the same shape (e.g. a teacher's Softmax, for distillation) or class indices, taken as "
                   "one-hot distributions.")
    name_prefix = "kl_loss"
    allows_soft_targets = True
    params = (WEIGHT, Param("reduction", "choice", "batchmean", choices=("batchmean", "sum", "mean"),
                            help="batchmean: sum over classes, mean over samples (the true KL divergence)"))
    summary_params = ("weight",)

    def make(self, params: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.KLDivLoss(reduction=params["reduction"])

    def adapt_target(self, pred: Any, target: Any) -> Any:
        if not target.dtype.is_floating_point:  # class indices -> one-hot distributions
            import torch.nn.functional as F

            return F.one_hot(target.long(), pred.shape[1]).movedim(-1, 1).to(pred.dtype)
        return target.to(pred.dtype) if target.dtype != pred.dtype else target

    def emit_target(self, target: str, pred: str) -> str:
        return (f"(torch.nn.functional.one_hot({target}.long(), {pred}.shape[1]).movedim(-1, 1).to({pred}.dtype) "
                f"if not {target}.dtype.is_floating_point else {target}.to({pred}.dtype))")
