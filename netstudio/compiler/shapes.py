"""Whole-graph validation and shape inference.

``analyze`` never raises for user mistakes: it walks the graph in topological
order, runs each node's ``resolve`` + ``infer`` and collects :class:`Problem`s
that carry the node id and a fix hint. Nodes downstream of a failing node are
skipped silently, so one mistake yields one message.

:class:`ShapeChecker` memoises per-node results keyed on the node's type,
params and input shapes, so re-checking after one edit only recomputes the
nodes whose inputs actually changed (the editor runs it on every edit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from netstudio.errors import CompileError, CycleError, NetStudioError, Problem, Scope, Severity
from netstudio.graph.model import Edge, Graph
from netstudio.nodes.base import Category, InferContext, TensorInfo
from netstudio.nodes.blocks import BLOCK_INPUT, BLOCK_OUTPUT
from netstudio.compiler.keys import freeze  # noqa: F401 - also imported from here (ui/paramcount)
from netstudio.compiler.phases import phase_problems
from netstudio.nodes.adversarial import NOISE


@dataclass
class NodeResult:
    outputs: dict[str, Any]
    params: dict[str, Any]  # with 'auto' resolved
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Analysis:
    order: list[str]
    results: dict[str, NodeResult]
    problems: list[Problem]
    batch_size: int
    dataset_info: Any = None  # netstudio.data.DatasetInfo of the dataset node, if any
    #: block node id -> the analysis of its inner graph (also when the block has errors)
    blocks: dict[str, "Analysis"] = field(default_factory=dict)

    def inner(self, path: Any) -> "Analysis | None":
        """The analysis of the inner graph reached by ``path`` (block ids), None where none was made."""
        an: Analysis | None = self
        for bid in path:
            an = None if an is None else an.blocks.get(bid)
        return an

    @property
    def ok(self) -> bool:
        """No error at all (model and training)."""
        return not any(p.severity == Severity.ERROR for p in self.problems)

    @property
    def model_ok(self) -> bool:
        return not any(p.severity == Severity.ERROR and p.scope == Scope.MODEL for p in self.problems)

    def errors(self, scope: Scope | None = None) -> list[Problem]:
        return [p for p in self.problems if p.severity == Severity.ERROR and (scope is None or p.scope == scope)]

    def problems_for(self, node_id: str) -> list[Problem]:
        return [p for p in self.problems if p.node_id == node_id]

    def edge_info(self, edge: Edge) -> TensorInfo | None:
        r = self.results.get(edge.src)
        return None if r is None else r.outputs.get(edge.src_port)

    def output_info(self, node_id: str, port: str = "output") -> TensorInfo | None:
        r = self.results.get(node_id)
        return None if r is None else r.outputs.get(port)


class ShapeChecker:
    """Incremental analyzer: keep one per open document."""

    def __init__(self, max_cache: int = 20000) -> None:
        self._cache: dict[Any, tuple[NodeResult | None, NetStudioError | None]] = {}
        self._max = max_cache
        self.hits = 0
        self.misses = 0

    def analyze(self, graph: Graph, batch_size: int = 64, *, seeds: dict[str, Any] | None = None) -> Analysis:
        """``seeds``: for a block's inner graph, the value of each input port node (by id); the
        training checks (dataset, loss, optimizer) then do not apply."""
        problems: list[Problem] = []
        try:
            order = graph.topological_order()
        except CycleError as e:
            return Analysis([], {}, [Problem.from_error(e)], batch_size)

        incoming: dict[str, list[Edge]] = {}
        for edge in graph.edges:
            incoming.setdefault(edge.dst, []).append(edge)

        results: dict[str, NodeResult] = {}
        blocks: dict[str, Analysis] = {}
        dataset_info = None
        num_classes = None
        # datasets first so every loss can check class counts whatever the order
        for nid in order:
            node = graph.nodes[nid]
            nt = graph.catalog.get(node.type_id)
            if seeds is not None and node.type_id == BLOCK_INPUT:
                info = seeds.get(nid)
                if info is not None:
                    results[nid] = NodeResult({"output": info}, {})
                continue
            if nt.category != Category.DATA:
                continue
            res = self._run(graph, nid, {}, batch_size, problems, {})
            if res is not None:
                results[nid] = res
                info = res.extra.get("dataset")
                if info is not None and dataset_info is None:
                    dataset_info = info
                    num_classes = getattr(info, "num_classes", None)

        for nid in order:
            node = graph.nodes[nid]
            nt = graph.node_type(node)
            if nt.category == Category.DATA or node.type_id == BLOCK_INPUT:
                continue
            inputs: dict[str, Any] = {}
            blocked = False
            for port in nt.inputs:
                edges = [e for e in incoming.get(nid, ()) if e.dst_port == port.name]
                if not edges:
                    if not port.optional:
                        problems.append(Problem(
                            f"{nt.title} '{node.name}' has no input connected to '{port.display}'",
                            nid, _missing_hint(port.kind.value), Severity.ERROR,
                            Scope.TRAINING if nt.category in _TRAINING_CATEGORIES else Scope.MODEL))
                        blocked = True
                    continue
                infos = [results[e.src].outputs.get(e.src_port) if e.src in results else None for e in edges]
                if any(i is None for i in infos):
                    blocked = True  # upstream failed; its own problem is already reported
                    continue
                inputs[port.name] = infos if port.multi else infos[0]
            if blocked:
                continue
            if nt.category == Category.LOSS:
                straight = _loss_fed_by_dataset(graph, nid, incoming.get(nid, ()))
                if straight is not None:  # its shapes say nothing useful: say what is missing
                    problems.append(Problem.from_error(straight, scope=Scope.TRAINING))
                    continue
            if node.inner is not None:
                res = self._run_block(graph, nid, inputs, batch_size, problems, blocks)
                if res is not None:
                    results[nid] = res
                continue
            extra = {"num_classes": num_classes} if nt.category == Category.LOSS else {}
            res = self._run(graph, nid, inputs, batch_size, problems, extra)
            if res is not None:
                results[nid] = res

        if seeds is not None:
            return Analysis(order, results, problems, batch_size, blocks=blocks)
        problems.extend(_training_problems(graph, order))
        problems.extend(phase_problems(graph, order, results))  # several optimizers (netstudio.compiler.phases)
        problems.extend(_last_batch_problems(graph, order, results, dataset_info, batch_size))
        if len(self._cache) > self._max:
            self._cache.clear()
        return Analysis(order, results, problems, batch_size, dataset_info, blocks)

    def _run_block(self, graph: Graph, nid: str, inputs: dict[str, Any], batch_size: int,
                   problems: list[Problem], blocks: dict[str, Analysis]) -> NodeResult | None:
        """A block: its inner graph analysed with the block's inputs; the inner problems are reported on
        the block, naming the block and the inner node ("Block 'b1' › Linear 'fc1' expects ...")."""
        node = graph.nodes[nid]
        inner = node.inner
        assert inner is not None
        an = blocks[nid] = self.analyze(inner, batch_size, seeds=inputs)
        for p in an.problems:
            problems.append(Problem(f"Block '{node.name}' › {p.message}", nid, p.hint, p.severity, p.scope))
        if not an.model_ok:
            return None
        outs: dict[str, Any] = {}
        for pid, port in inner.nodes.items():
            if port.type_id != BLOCK_OUTPUT:
                continue
            info = next((an.edge_info(e) for e in inner.in_edges(pid)), None)
            if info is None:
                return None
            outs[pid] = info
        return NodeResult(outs, {}, {"inner": an})

    def _run(self, graph: Graph, nid: str, inputs: dict[str, Any], batch_size: int,
             problems: list[Problem], extra: dict[str, Any]) -> NodeResult | None:
        node = graph.nodes[nid]
        nt = graph.catalog.get(node.type_id)
        scope = Scope.TRAINING if nt.category in _TRAINING_CATEGORIES else Scope.MODEL
        key = (nid, node.name, node.type_id, freeze(node.params), _freeze_inputs(inputs), batch_size,
               freeze(extra))
        # Dataset nodes are not memoised here: their shapes depend on files on disk
        # (CSV, image folders); netstudio.data.describe caches by file stamp itself. Nor are nodes whose
        # validity depends on a file's content and the user's trust (``reads_files``: a user module).
        uncached = nt.category == Category.DATA or getattr(nt, "reads_files", False)
        hit = None if uncached else self._cache.get(key)
        if hit is not None:
            self.hits += 1
            res, err = hit
        else:
            if not uncached:
                self.misses += 1
            ctx = InferContext(nid, node.name, nt.title, dict(node.params), inputs, batch_size, dict(extra))
            res, err = None, None
            try:
                ctx.params = nt.resolve(ctx)
                outs = nt.infer(ctx)
                res = NodeResult(outs, ctx.params, ctx.extra)
            except NetStudioError as e:
                err = e
            except Exception as e:  # a node bug must not take the editor down
                err = NetStudioError(f"{nt.title} '{node.name}': internal error during shape inference: {e!r}",
                                     node_id=nid)
            self._cache[key] = (res, err)
        if err is not None:
            problems.append(Problem.from_error(err, scope=scope, node_id=nid))
        return res


def _freeze_inputs(inputs: dict[str, Any]) -> Any:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in inputs.items()))


_TRAINING_CATEGORIES = (Category.LOSS, Category.OPTIMIZER, Category.SCHEDULER)


def _missing_hint(kind: str) -> str:
    return {
        "tensor": "connect the output of a layer or the dataset's features",
        "target": "connect the dataset's target (or the features, for reconstruction)",
        "loss": "connect a loss node's output",
        "optimizer": "connect an optimizer's output",
    }.get(kind, "connect this input")


#: node categories that become part of the forward model (mirrors netstudio.compiler.build)
_MODEL_CATEGORIES = (Category.LAYER, Category.ACTIVATION, Category.MERGE)
#: the compiler's own words when there is nothing to compile; Problems shows the same text
NO_LAYERS = "The graph has no layers to compile"
NO_LAYERS_HINT = "add at least one layer (e.g. Flatten → Linear) between the Dataset and the loss"


def _loss_fed_by_dataset(graph: Graph, nid: str, edges: Any) -> CompileError | None:
    """A loss whose prediction comes straight from the dataset: no layer is there to train."""
    for e in edges:
        if e.dst_port != "prediction":
            continue
        src = graph.nodes[e.src]
        if graph.catalog.get(src.type_id).category == Category.DATA:
            node = graph.nodes[nid]
            return CompileError(
                f"Loss '{node.name}' is wired straight to the dataset: there is no layer between them",
                node_id=nid,
                hint=f"connect the last layer's output to '{node.name}' prediction instead of "
                     f"'{src.name}' {e.src_port}")
    return None


def _training_problems(graph: Graph, order: list[str]) -> list[Problem]:
    """What training needs beyond valid shapes: one dataset, a loss, one optimizer."""
    cats: dict[Category, list[str]] = {}
    for nid in order:
        cats.setdefault(graph.catalog.get(graph.nodes[nid].type_id).category, []).append(nid)
    out: list[Problem] = []
    # a Noise node is a source of random values, not of samples: it is no second dataset
    datasets = [nid for nid in cats.get(Category.DATA, []) if graph.nodes[nid].type_id != NOISE]
    if not datasets:
        out.append(Problem("The graph has no Dataset node", None,
                           "drag a Dataset from the palette and connect its features to the first layer",
                           Severity.ERROR, Scope.MODEL))
    elif len(datasets) > 1:
        for nid in datasets[1:]:
            out.append(Problem(f"Only one Dataset node is supported; '{graph.nodes[nid].name}' is extra", nid,
                               "delete the extra Dataset node", Severity.ERROR, Scope.MODEL))
    if datasets and not any(cats.get(c) for c in _MODEL_CATEGORIES):
        out.append(Problem.from_error(CompileError(NO_LAYERS, node_id=datasets[0], hint=NO_LAYERS_HINT)))
    losses = cats.get(Category.LOSS, [])
    optims = cats.get(Category.OPTIMIZER, [])
    if not losses:
        out.append(Problem("The graph has no loss node", None,
                           "add a loss (e.g. CrossEntropy) fed by the model output and the dataset target",
                           Severity.ERROR, Scope.TRAINING))
    if not optims:
        out.append(Problem("The graph has no optimizer", None,
                           "add an optimizer (e.g. Adam) and connect the loss to it", Severity.ERROR, Scope.TRAINING))
    fed = {e.src for e in graph.edges if e.src in losses}
    for nid in losses:
        if nid not in fed and optims:
            out.append(Problem(f"Loss '{graph.nodes[nid].name}' is not connected to an optimizer", nid,
                               "connect its loss output to the optimizer", Severity.ERROR, Scope.TRAINING))
    return out


def _last_batch_problems(graph: Graph, order: list[str], results: dict[str, NodeResult], dataset_info: Any,
                         batch_size: int) -> list[Problem]:
    """A last training batch of one sample fails in layers that need more than one value per
    channel (BatchNorm on N×C): found here rather than by torch at the end of the first epoch."""
    n_train = getattr(dataset_info, "n_train", None)
    if not isinstance(n_train, int) or n_train < 1 or batch_size < 2 or n_train % batch_size != 1:
        return []
    out: list[Problem] = []
    for nid in order:
        node = graph.nodes[nid]
        nt = graph.catalog.get(node.type_id)
        fails = getattr(nt, "single_sample_fails", None)
        if fails is None or nid not in results:
            continue
        x = next((results[e.src].outputs.get(e.src_port) for e in graph.in_edges(nid) if e.src in results), None)
        if isinstance(x, TensorInfo) and fails(x):
            fits = [b for b in range(batch_size - 1, 1, -1) if n_train % b != 1][:1] + \
                   [b for b in range(batch_size + 1, batch_size + 64) if n_train % b != 1][:1]
            out.append(Problem(
                f"{nt.title} '{node.name}' would receive a last training batch of 1 sample ({n_train} training "
                f"samples in batches of {batch_size}) and needs more than one value per channel", nid,
                f"use a batch size of {' or '.join(map(str, fits))}, or change the validation fraction",
                Severity.ERROR, Scope.TRAINING))
    return out


_DEFAULT = ShapeChecker()


def analyze(graph: Graph, batch_size: int = 64, checker: ShapeChecker | None = None) -> Analysis:
    """Validate the whole graph; see module docstring."""
    return (checker or _DEFAULT).analyze(graph, batch_size)
