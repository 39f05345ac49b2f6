"""Automatic layered layout, left to right (pure Python, no Qt).

A small Sugiyama-style pipeline:

1. layers by longest path from the sources (sources are then pulled right,
   next to their first consumer, so a Dataset does not sit far from its use);
2. edges spanning several layers get dummy points, one per crossed layer, so
   they reserve a lane and take part in crossing reduction;
3. barycenter sweeps order each layer (port positions break ties, so a node's
   first output stays above its second);
4. each node is placed at the height that lines its input port up with the
   output port feeding it, pushed down just enough to avoid overlaps.

y is not snapped to the grid: snapping would break the port alignment that
makes chains come out as straight lines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

#: (src, src_port, dst, dst_port)
EdgeRec = tuple[str, str, str, str]
#: (node id, port name, is_output) -> y offset of the port from the node's top
PortOffset = Callable[[str, str, bool], float]


@dataclass
class _Seg:
    """One layer-to-adjacent-layer piece of an edge."""

    src: str
    src_port: str | None  # None for dummies (their single point)
    dst: str
    dst_port: str | None


def assign_layers(nodes: Sequence[str], edges: Sequence[EdgeRec]) -> dict[str, int]:
    preds: dict[str, list[str]] = {n: [] for n in nodes}
    succs: dict[str, list[str]] = {n: [] for n in nodes}
    for s, _, d, _ in edges:
        if s in preds and d in preds:
            preds[d].append(s)
            succs[s].append(d)
    order = _topo(nodes, preds, succs)
    layer: dict[str, int] = {}
    for n in order:
        layer[n] = max((layer[p] + 1 for p in preds[n]), default=0)
    # A source feeding only late nodes would otherwise sit alone at the far left.
    for n in reversed(order):
        if not preds[n] and succs[n]:
            layer[n] = max(0, min(layer[s] for s in succs[n]) - 1)
    return layer


def _topo(nodes: Sequence[str], preds: Mapping[str, list[str]], succs: Mapping[str, list[str]]) -> list[str]:
    indeg = {n: len(preds[n]) for n in nodes}
    ready = [n for n in nodes if indeg[n] == 0]
    out: list[str] = []
    while ready:
        n = ready.pop(0)
        out.append(n)
        for s in succs[n]:
            indeg[s] -= 1
            if indeg[s] == 0:
                ready.append(s)
    # a cycle cannot be built through the model, but never loop forever on one
    out.extend(n for n in nodes if n not in set(out))
    return out


def layered_layout(nodes: Sequence[str], edges: Sequence[EdgeRec], sizes: Mapping[str, tuple[float, float]],
                   port_offset: PortOffset, *, order_hint: Mapping[str, float] | None = None,
                   x_gap: float = 52.0, y_gap: float = 34.0, lane_h: float = 20.0,
                   origin: tuple[float, float] = (0.0, 0.0), grid: float = 20.0,
                   edge_gap: Callable[[EdgeRec], float] | None = None,
                   fit: tuple[float, float] | None = None, row_gap: float = 72.0,
                   margin: float = 36.0) -> dict[str, tuple[float, float]]:
    """Return a top-left position for every node.

    ``edge_gap(edge)`` may ask for more room between two adjacent layers (the
    shape label drawn on that edge must fit between the cards).

    ``fit`` is the size of the view (pixels at 100 % zoom): the layers are then
    wrapped into rows, read top to bottom and each left to right, so that the
    whole graph framed in that view is as large as possible (see :func:`wrap_layers`).
    """
    if not nodes:
        return {}
    layer = assign_layers(nodes, edges)
    n_layers = max(layer.values()) + 1

    # --- segments with dummies ------------------------------------------------
    members: list[list[str]] = [[] for _ in range(n_layers)]
    is_dummy: dict[str, bool] = {}
    for n in nodes:
        members[layer[n]].append(n)
        is_dummy[n] = False
    segs: list[_Seg] = []
    dummy_count = 0
    hint = dict(order_hint or {})
    for s, sp, d, dp in edges:
        if s not in layer or d not in layer:
            continue
        ls, ld = layer[s], layer[d]
        prev: str = s
        prev_port: str | None = sp
        for li in range(ls + 1, ld):
            dummy_count += 1
            dummy = f"\0dummy{dummy_count}"
            is_dummy[dummy] = True
            hint[dummy] = hint.get(s, 0.0)  # start next to where its source is
            members[li].append(dummy)
            segs.append(_Seg(prev, prev_port, dummy, None))
            prev, prev_port = dummy, None
        segs.append(_Seg(prev, prev_port, d, dp))

    def height(n: str) -> float:
        return lane_h if is_dummy[n] else sizes[n][1]

    def out_off(n: str, port: str | None) -> float:
        return lane_h / 2 if port is None else port_offset(n, port, True)

    def in_off(n: str, port: str | None) -> float:
        return lane_h / 2 if port is None else port_offset(n, port, False)

    seg_in: dict[str, list[_Seg]] = {}
    seg_out: dict[str, list[_Seg]] = {}
    for sg in segs:
        seg_in.setdefault(sg.dst, []).append(sg)
        seg_out.setdefault(sg.src, []).append(sg)

    # --- ordering ------------------------------------------------------------------
    rank_in_input = {n: i for i, n in enumerate(nodes)}
    for lay in members:
        # real nodes before dummies on ties, so long edges take the outer lanes
        lay.sort(key=lambda n: (hint.get(n, 0.0), is_dummy[n], rank_in_input.get(n, 0)))
    pos: dict[str, float] = {}

    def reindex(lay: list[str]) -> None:
        for i, n in enumerate(lay):
            pos[n] = float(i)

    for lay in members:
        reindex(lay)

    def frac(n: str, off: float) -> float:
        return off / max(height(n), 1.0)

    for _ in range(4):
        for li in range(1, n_layers):  # downward sweep: follow predecessors
            lay = members[li]
            key = {}
            for n in lay:
                ins = seg_in.get(n, [])
                key[n] = (sum(pos[sg.src] + frac(sg.src, out_off(sg.src, sg.src_port)) for sg in ins) / len(ins)
                          if ins else pos[n])
            lay.sort(key=lambda n: key[n])
            reindex(lay)
        for li in range(n_layers - 2, -1, -1):  # upward sweep: follow successors
            lay = members[li]
            key = {}
            for n in lay:
                outs = seg_out.get(n, [])
                key[n] = (sum(pos[sg.dst] + frac(sg.dst, in_off(sg.dst, sg.dst_port)) for sg in outs) / len(outs)
                          if outs else pos[n])
            lay.sort(key=lambda n: key[n])
            reindex(lay)

    # --- coordinates --------------------------------------------------------------------
    gaps = [x_gap] * n_layers
    if edge_gap is not None:
        for e in edges:
            s, d = e[0], e[2]
            if s in layer and d in layer and layer[d] == layer[s] + 1:
                gaps[layer[s]] = max(gaps[layer[s]], edge_gap(e))
    xs: list[float] = []
    x = origin[0]
    for li, lay in enumerate(members):
        xs.append(x)
        width = max((sizes[n][0] for n in lay if not is_dummy[n]), default=40.0)
        x += width + gaps[li]
    ys: dict[str, float] = {}
    for lay in members:
        bottom: float | None = None
        prev_dummy = False
        for n in lay:
            ins = seg_in.get(n, [])
            wanted = None
            if ins and all(sg.src in ys for sg in ins):
                # line the topmost input port up with the output port feeding it, so the
                # main flow is a straight line and side inputs (targets) bend instead
                first = min(ins, key=lambda sg: in_off(n, sg.dst_port))
                wanted = ys[first.src] + out_off(first.src, first.src_port) - in_off(n, first.dst_port)
            gap = 8.0 if (is_dummy[n] or prev_dummy) else y_gap
            if bottom is None:
                y = origin[1] if wanted is None else wanted
            else:
                y = bottom + gap if wanted is None else max(wanted, bottom + gap)
            ys[n] = y
            bottom = y + height(n)
            prev_dummy = is_dummy[n]

    widths = [max((sizes[n][0] for n in lay if not is_dummy[n]), default=40.0) for lay in members]
    extents: list[tuple[float, float] | None] = []
    for lay in members:
        real = [n for n in lay if not is_dummy[n]]
        extents.append((min(ys[n] for n in real), max(ys[n] + sizes[n][1] for n in real)) if real else None)
    rows = [list(range(n_layers))]
    if fit is not None and n_layers > 1:
        rows = wrap_layers(xs, widths, extents, fit, row_gap=row_gap, margin=margin)
    out: dict[str, tuple[float, float]] = {}
    row_y = origin[1]
    for row in rows:
        spans = [ext for li in row if (ext := extents[li]) is not None]
        if not spans:
            continue
        top = min(a for a, _ in spans)
        bottom = max(b for _, b in spans)
        x_shift = xs[row[0]] - origin[0]
        for li in row:
            for n in members[li]:
                if is_dummy[n]:
                    continue
                xx = round((xs[li] - x_shift) / grid) * grid
                out[n] = (float(xx), round((ys[n] - top + row_y) * 2) / 2)
        row_y += math.ceil((bottom - top + row_gap) / grid) * grid
    return out


def wrap_layers(xs: Sequence[float], widths: Sequence[float], extents: Sequence[tuple[float, float] | None],
                fit: tuple[float, float], *, row_gap: float = 72.0, margin: float = 36.0) -> list[list[int]]:
    """Split consecutive layers into rows so the wrapped graph fits ``fit`` (w, h) at the largest zoom.

    For each row count k the layers are cut into k rows of balanced width (the narrowest
    widest-row that greedy filling allows); each split is scored by the zoom that frames it
    in ``fit`` (capped at 100 %). The fewest rows within 8 % of the best zoom win, so a
    short graph is not broken up for a few percent: one long row of a 15-layer LeNet at
    31 % becomes three or four rows at ~80 % in a 16:10 window.
    """
    n = len(xs)
    fw, fh = max(fit[0], 1.0), max(fit[1], 1.0)

    def row_width(r: list[int]) -> float:
        return xs[r[-1]] + widths[r[-1]] - xs[r[0]]

    def fill(limit: float) -> list[list[int]]:
        rows: list[list[int]] = [[0]]
        for li in range(1, n):
            if xs[li] + widths[li] - xs[rows[-1][0]] > limit + 1e-6:
                rows.append([li])
            else:
                rows[-1].append(li)
        return rows

    def zoom_of(rows: list[list[int]]) -> float:
        height = 0.0
        for r in rows:
            spans = [ext for li in r if (ext := extents[li]) is not None]
            if spans:
                height += max(b for _, b in spans) - min(a for a, _ in spans)
        height += row_gap * (len(rows) - 1)
        width = max(row_width(r) for r in rows)
        return min(1.0, fw / (width + 2 * margin), fh / (height + 2 * margin))

    total = xs[-1] + widths[-1] - xs[0]
    candidates: list[tuple[float, list[list[int]]]] = []
    seen: set[int] = set()
    best = 0.0
    for k in range(1, n + 1):
        lo, hi = max(widths), total
        for _ in range(30):  # the narrowest row width that still needs at most k rows
            mid = (lo + hi) / 2
            if len(fill(mid)) <= k:
                hi = mid
            else:
                lo = mid
        rows = fill(hi)
        if len(rows) in seen:
            continue
        seen.add(len(rows))
        z = zoom_of(rows)
        candidates.append((z, rows))
        if z < best * 0.9:
            break  # past the best split: more rows only shrink it further
        best = max(best, z)
        if len(rows) == n:
            break
    return next(rows for z, rows in candidates if z >= best * 0.92)
