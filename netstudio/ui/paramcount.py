"""Parameter counts per node, for the node cards and the model summary.

Each layer is built on PyTorch's ``meta`` device from its resolved params and
input shapes, so counting a 100M-parameter layer allocates nothing, and a
count is available even while another part of the graph is invalid. Results
are cached on (type, resolved params, input shapes); torch is imported on the
first count, never at module import.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from netstudio.compiler.memory import layer_inputs
from netstudio.compiler.shapes import Analysis, freeze
from netstudio.graph.model import Graph
from netstudio.nodes.base import LayerType, ParameterType

log = logging.getLogger(__name__)


class ParamCounter:
    def __init__(self) -> None:
        self._cache: dict[Any, int | None] = {}

    def count(self, graph: Graph, analysis: Analysis, node_id: str) -> int | None:
        """Trainable + buffer-free parameter count of a layer node; None if unknown (invalid input)."""
        node = graph.nodes.get(node_id)
        if node is None:
            return None
        if node.inner is not None:  # a block: the sum of its layers
            inner_an = analysis.blocks.get(node_id)
            if inner_an is None:
                return None
            counts = [self.count(node.inner, inner_an, nid) for nid in node.inner.nodes]
            return None if any(c is None for c in counts) else sum(c or 0 for c in counts)
        nt = graph.catalog.get(node.type_id)
        if isinstance(nt, ParameterType):  # its tensor: the product of its shape
            out = analysis.output_info(node_id)
            return None if out is None else math.prod(out.shape)
        if not isinstance(nt, LayerType):
            return 0
        res = analysis.results.get(node_id)
        if res is None:
            return None
        inputs = layer_inputs(graph, analysis, node_id, nt)
        if inputs is None:
            return None
        key = (node.type_id, freeze(res.params), freeze(inputs))
        if key in self._cache:
            return self._cache[key]
        n = self._build_and_count(nt, res.params, inputs)
        if len(self._cache) > 5000:
            self._cache.clear()
        self._cache[key] = n
        return n

    @staticmethod
    def _build_and_count(nt: LayerType, params: dict[str, Any], inputs: dict[str, Any]) -> int | None:
        import torch

        try:
            with torch.device("meta"):
                module = nt.build(params, inputs)
            return int(sum(p.numel() for p in module.parameters()))
        except Exception:  # a layer that cannot be built on meta: no count rather than a crash
            log.debug("parameter count failed for %s", nt.type_id, exc_info=True)
            return None
