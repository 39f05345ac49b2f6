"""Element-wise activations (shape-preserving), compiled to ``torch.nn`` modules."""

from __future__ import annotations

from typing import Any, Mapping

from netstudio.nodes.base import Category, LayerType, register


@register
class ReLU(LayerType):
    type_id = "activation.relu"
    title = "ReLU"
    category = Category.ACTIVATION
    description = "max(0, x)"

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.ReLU()


@register
class Sigmoid(LayerType):
    type_id = "activation.sigmoid"
    title = "Sigmoid"
    category = Category.ACTIVATION
    description = "1 / (1 + exp(-x)); pair with BCE for binary classification."

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        return nn.Sigmoid()
