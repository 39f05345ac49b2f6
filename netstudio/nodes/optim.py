"""Optimizers and learning-rate schedulers (parts of the training plan, not of forward)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from netstudio.nodes.base import (Category, InferContext, OptimizerType, Param, SchedulerType, TensorInfo,
                                  register)

LR = Param("lr", "float", 0.01, min=1e-8, max=1e6, log_scale=True, label="learning rate")
WEIGHT_DECAY = Param("weight_decay", "float", 0.0, min=0.0, max=1.0)


class _Optimizer(OptimizerType):
    def infer(self, ctx: InferContext) -> dict[str, Any]:
        return {"optimizer": TensorInfo((), "optimizer")}


@register
class SGD(_Optimizer):
    type_id = "optim.sgd"
    title = "SGD"
    description = "Stochastic gradient descent with optional (Nesterov) momentum."
    params = (LR, Param("momentum", "float", 0.0, min=0.0, max=1.0), Param("nesterov", "bool", False),
              WEIGHT_DECAY)
    summary_params = ("lr", "momentum")

    def make(self, parameters: Iterable[Any], params: Mapping[str, Any]) -> Any:
        import torch

        return torch.optim.SGD(parameters, lr=params["lr"], momentum=params["momentum"],
                               nesterov=params["nesterov"] and params["momentum"] > 0,
                               weight_decay=params["weight_decay"])


@register
class Adam(_Optimizer):
    type_id = "optim.adam"
    title = "Adam"
    description = "Adaptive moment estimation."
    params = (Param("lr", "float", 1e-3, min=1e-8, max=1e6, log_scale=True, label="learning rate"),
              Param("beta1", "float", 0.9, min=0.0, max=0.99999), Param("beta2", "float", 0.999, min=0.0, max=0.99999),
              Param("eps", "float", 1e-8, min=0.0, max=1.0), WEIGHT_DECAY)
    summary_params = ("lr",)

    def make(self, parameters: Iterable[Any], params: Mapping[str, Any]) -> Any:
        import torch

        return torch.optim.Adam(parameters, lr=params["lr"], betas=(params["beta1"], params["beta2"]),
                                eps=params["eps"], weight_decay=params["weight_decay"])


@register
class StepLR(SchedulerType):
    type_id = "sched.step"
    title = "StepLR"
    description = "Multiplies the learning rate by gamma every step_size epochs."
    params = (Param("step_size", "int", 10, min=1, max=100000), Param("gamma", "float", 0.1, min=0.0, max=1.0))
    summary_params = ("step_size", "gamma")

    def make(self, optimizer: Any, params: Mapping[str, Any], *, epochs: int, steps_per_epoch: int) -> Any:
        import torch

        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=params["step_size"], gamma=params["gamma"])
