"""The node catalog: importing this package registers every built-in node type."""

from netstudio.nodes.base import (AUTO, CATALOG, Catalog, Category, FunctionType, InferContext, LayerType,
                                  LossType, NodeType, OptimizerType, Param, Port, PortKind, PortRef,
                                  SchedulerType, TensorInfo, can_connect, register)
from netstudio.nodes import (activations, adversarial, blocks, data, layers, layers_extra, losses, merge,  # noqa: F401
                             optim, sequence, tensors, torch_ops)  # (registration)
from netstudio.nodes import user_module  # noqa: F401,E402 (registration: a model's code from a user's file)

__all__ = ["AUTO", "CATALOG", "Catalog", "Category", "FunctionType", "InferContext", "LayerType", "LossType",
           "NodeType", "OptimizerType", "Param", "Port", "PortKind", "PortRef", "SchedulerType", "TensorInfo",
           "can_connect", "register"]
