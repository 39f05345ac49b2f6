"""Benchmark: shape analysis of a 200-node graph, full and incremental.

The editor re-runs the analysis on every edit, so both numbers should stay
well under the 50 ms budget of one interactive frame-ish response.

    .venv/bin/python bench/bench_shapes.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

from netstudio.compiler.shapes import ShapeChecker
from netstudio.graph.model import Graph
from netstudio.nodes import CATALOG, Catalog, Category, InferContext, NodeType, Port, PortKind, TensorInfo

TARGET_MS = 50.0
N_NODES = 200


class _StandInSource(NodeType):
    """Used only when the real Dataset node is not registered: 2 features, 2 classes like 'moons'."""

    type_id = "bench.source"
    title = "Source"
    category = Category.DATA
    outputs = (Port("features", PortKind.TENSOR), Port("target", PortKind.TARGET))

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        return {"features": TensorInfo((ctx.batch_size, 2)), "target": TensorInfo((ctx.batch_size,), "int64")}


def build_graph() -> tuple[Graph, str, str]:
    """data → fc → 39 × [fc → bn → relu → dropout → +residual] → fc → loss → optimizer.

    Returns the graph, a Dropout id in the middle and the head Linear id (edit targets).
    """
    if "data.dataset" in CATALOG:
        g = Graph()
        data = g.add_node("data.dataset", {"source": "moons"}, name="data")
    else:
        cat = Catalog()
        for cls in CATALOG.types():
            cat.register(cls)
        cat.register(_StandInSource)
        g = Graph(cat)
        data = g.add_node("bench.source", name="data")
    stem = g.add_node("layer.linear", {"out_features": 64})
    g.connect(data.id, "features", stem.id, "input")
    h = stem.id
    blocks = (N_NODES - 5) // 5
    mid_dropout = ""
    for i in range(blocks):
        fc = g.add_node("layer.linear", {"out_features": 64})
        bn = g.add_node("layer.batchnorm1d")
        act = g.add_node("activation.relu")
        drop = g.add_node("layer.dropout", {"p": 0.1})
        add = g.add_node("merge.add")
        g.connect(h, "output", fc.id, "input")
        g.connect(fc.id, "output", bn.id, "input")
        g.connect(bn.id, "output", act.id, "input")
        g.connect(act.id, "output", drop.id, "input")
        g.connect(h, "output", add.id, "a")
        g.connect(drop.id, "output", add.id, "b")
        h = add.id
        if i == blocks // 2:
            mid_dropout = drop.id
    head = g.add_node("layer.linear", {"out_features": 2})
    loss = g.add_node("loss.cross_entropy")
    opt = g.add_node("optim.adam")
    g.connect(h, "output", head.id, "input")
    g.connect(head.id, "output", loss.id, "prediction")
    g.connect(data.id, "target", loss.id, "target")
    g.connect(loss.id, "loss", opt.id, "loss")
    return g, mid_dropout, head.id


def _time_ms(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()

    g, mid_dropout, head = build_graph()
    assert len(g.nodes) == N_NODES, len(g.nodes)
    first = _time_ms(lambda: ShapeChecker().analyze(g))  # includes one-off import/describe work
    an = ShapeChecker().analyze(g)
    assert an.ok, an.problems[:3]

    full = [_time_ms(lambda: ShapeChecker().analyze(g)) for _ in range(args.repeat)]

    checker = ShapeChecker()
    checker.analyze(g)
    neutral, reshaping = [], []
    for i in range(args.repeat):
        # distinct values, so every edit is a real cache miss for the edited node
        g.set_param(mid_dropout, "p", 0.2 + i * 0.01)
        neutral.append(_time_ms(lambda: checker.analyze(g)))
        g.set_param(head, "out_features", 3 + i)  # changes the shape the loss sees (and flags it)
        reshaping.append(_time_ms(lambda: checker.analyze(g)))
    g.set_param(head, "out_features", 2)

    rows = [
        ("first analyze (cold process)", first),
        ("full analyze, fresh ShapeChecker (median)", statistics.median(full)),
        ("incremental: Dropout p edit mid-graph (median)", statistics.median(neutral)),
        ("incremental: head out_features edit (median)", statistics.median(reshaping)),
    ]
    print(f"graph: {len(g.nodes)} nodes, {len(g.edges)} edges; target {TARGET_MS:.0f} ms")
    for label, ms in rows:
        print(f"{label:<48} {ms:8.2f} ms   {ms / TARGET_MS:6.3f} × target")


if __name__ == "__main__":
    main()
