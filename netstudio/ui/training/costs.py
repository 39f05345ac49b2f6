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
