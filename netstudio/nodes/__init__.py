"""The node catalog: importing this package registers every built-in node type."""

from netstudio.nodes.base import (AUTO, CATALOG, Catalog, Category, FunctionType, InferContext, LayerType,
                                  LossType, NodeType, OptimizerType, Param, Port, PortKind, PortRef,
                                  SchedulerType, TensorInfo, can_connect, register)
from netstudio.nodes import (activations, adversarial, blocks, data, layers, layers_extra, losses, merge, optim,  # noqa: F401
                             sequence, torch_ops)  # (registration)

__all__ = ["AUTO", "CATALOG", "Catalog", "Category", "FunctionType", "InferContext", "LayerType", "LossType",
           "NodeType", "OptimizerType", "Param", "Port", "PortKind", "PortRef", "SchedulerType", "TensorInfo",
           "can_connect", "register"]
