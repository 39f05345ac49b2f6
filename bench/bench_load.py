"""Benchmark: loading generated projects of 1,000 to 10,000 nodes (issue #17 item 4).

Imported models will be this large, so opening a project must grow linearly
with its size. Each project is a stack of residual blocks
(Linear → ReLU → Linear → Add(skip) → ReLU; the ReLUs unnamed, so loading
numbers them) between a Dataset node and a
loss + optimizer, written to a temporary .nsproj and read back with
``load_project`` (JSON parse, structural checks, every node's parameters
validated, every connection checked, one cycle check).

    .venv/bin/python bench/bench_load.py [--sizes 1000 2000 5000 10000] [--repeat 3]

Goal: 10,000 nodes in under 1 s, and time per node flat across sizes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from netstudio.project.io import load_project

GOAL_S = 1.0


def generated_project(n_nodes: int) -> dict[str, Any]:
    """A valid project of about ``n_nodes`` nodes (residual blocks of five nodes)."""
    nodes: list[dict[str, Any]] = []
    edges: list[list[str]] = []

    def node(type_id: str, name: str, **params: Any) -> str:
        nid = f"n{len(nodes) + 1}"
        nodes.append({"id": nid, "type": type_id, "name": name, "pos": [len(nodes) * 10.0, 0.0], "params": params})
        return nid

    data = node("data.dataset", "data", source="moons", n_samples=200)
    prev = node("layer.linear", "stem", in_features="auto", out_features=16)
    edges.append([data, "features", prev, "input"])
    block = 0
    while len(nodes) + 5 + 3 <= n_nodes:
        block += 1
        fc1 = node("layer.linear", f"b{block}_fc1", out_features=16)
        act = node("activation.relu", "")  # unnamed, like many imported layers: numbered on load
        fc2 = node("layer.linear", f"b{block}_fc2", out_features=16)
        add = node("merge.add", f"b{block}_add")
        out = node("activation.relu", "")
        edges += [[prev, "output", fc1, "input"], [fc1, "output", act, "input"], [act, "output", fc2, "input"],
                  [fc2, "output", add, "a"], [prev, "output", add, "b"], [add, "output", out, "input"]]
        prev = out
    head = node("layer.linear", "head", out_features=2)
    loss = node("loss.cross_entropy", "loss")
    opt = node("optim.adam", "adam")
    edges += [[prev, "output", head, "input"], [head, "output", loss, "prediction"], [data, "target", loss, "target"],
              [loss, "loss", opt, "loss"]]
    return {"format_version": 1, "name": f"generated {len(nodes)} nodes", "training": {},
            "graph": {"nodes": nodes, "edges": edges}}


def time_load(path: Path, repeat: int) -> float:
    best = []
    for _ in range(repeat):
        t = time.perf_counter()
        project = load_project(path)
        best.append(time.perf_counter() - t)
        assert len(project.graph.nodes) > 0
    return min(best)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 2000, 5000, 10000])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            rec = generated_project(n)
            path = Path(tmp) / f"gen{n}.nsproj"
            path.write_text(json.dumps(rec), encoding="utf-8")
            n_real, n_edges = len(rec["graph"]["nodes"]), len(rec["graph"]["edges"])
            secs = time_load(path, args.repeat)
            rows.append((n_real, n_edges, secs))
    print(f"{'nodes':>7} {'edges':>7} {'load s':>8} {'µs/node':>8}")
    for n, e, secs in rows:
        print(f"{n:>7} {e:>7} {secs:>8.3f} {secs / n * 1e6:>8.1f}")
    per_node = [s / n for n, _, s in rows]
    growth = max(per_node) / min(per_node)
    largest = rows[-1]
    print(f"time per node varies {growth:.2f}x across sizes (linear: ~1x; the old quadratic load: "
          f"~{rows[-1][0] / rows[0][0]:.0f}x)")
    print(f"largest: {largest[0]:,} nodes in {largest[2]:.3f} s (goal < {GOAL_S:.0f} s)")
    print(f"median µs/node {statistics.median(per_node) * 1e6:.1f}")
    ok = largest[2] < GOAL_S or largest[0] < 10_000
    return 0 if ok and growth < 3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
