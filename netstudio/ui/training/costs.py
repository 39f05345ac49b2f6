"""Measure each layer's share of a training step's time on a worker thread (the layer table's Time column).

A thin QObject around :func:`netstudio.training.nodecost.node_costs`: the graph is
snapshotted on the GUI thread, compiled with fresh weights and profiled on the
worker's thread; ``done`` carries ``{"costs": {node id: (macs per sample, share)}}``
or an error record.
"""

from __future__ import annotations

from typing import Any

from netstudio.ui.training.worker import _ThreadedWorker


class CostWorker(_ThreadedWorker):
    def __init__(self, graph_dict: dict[str, Any], batch_size: int) -> None:
        super().__init__()
        self.graph_dict, self.batch_size = graph_dict, batch_size

    def _work(self) -> dict[str, Any]:
        import torch

        from netstudio.compiler.build import compile_model
        from netstudio.graph.model import Graph
        from netstudio.training.nodecost import node_costs

        graph = Graph.from_dict(self.graph_dict)
        torch.manual_seed(0)
        compiled = compile_model(graph, self.batch_size)
        costs = node_costs(compiled, self.batch_size, stop=self.stop_event.is_set)
        return {"costs": {nid: (c.macs_per_sample, c.time_share) for nid, c in costs.items()}}


class CountWorker(_ThreadedWorker):
    """Multiply-adds per node of a model compiled on the meta device (the layer table's MACs column).

    The GUI thread compiles (it shows the code) and hands the module over; counting it with PyTorch's FLOP
    counter is the slow part on a big model (a ViT-B/16: ~0.2–0.3 s), so it runs here. ``done`` carries
    ``{"macs": {node id: multiply-adds per sample}, "key": the count key it was asked for}``.
    """

    def __init__(self, compiled: Any, key: Any) -> None:
        super().__init__()
        self.compiled, self.key = compiled, key

    def _work(self) -> dict[str, Any]:
        from netstudio.training.nodecost import node_costs

        compiled, self.compiled = self.compiled, None  # the module is this thread's now, and dropped after
        costs = node_costs(compiled, 1, measure=False, device="meta", in_place=True)
        return {"macs": {nid: c.macs_per_sample for nid, c in costs.items()}, "key": self.key}
