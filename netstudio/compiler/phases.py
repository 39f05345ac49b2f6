"""Multi-phase training: which weights each optimizer of a graph trains, and in which order they step.

A graph with one optimizer trains every (unfrozen) weight with it, as always. A graph with several
optimizers (a GAN: a discriminator and a generator) trains in *phases*: every batch runs one phase per
optimizer, in order, and each phase computes the losses wired to its optimizer, back-propagates them and
steps only that optimizer, with every other optimizer's weights held still (no gradient reaches them).

**Which weights an optimizer owns** follows from the wiring, like the single optimizer's losses do:
an optimizer trains the layers that feed the losses connected to it, found by walking the edges
upstream from each loss (stopping at the Dataset and Noise nodes), with one rule at a
Real | Fake node (:mod:`netstudio.nodes.adversarial`):

* a GAN loss of role *discriminator* walks into ``real`` only: the generated samples reach it
  detached, so the discriminator's phase never trains the generator;
* a GAN loss of role *generator* owns nothing between itself and the Real | Fake node (the
  discriminator is passed through: its gradient flows, its weights stay) and owns what feeds ``fake``;
* any other loss owns everything upstream of it.

The optimizers' sets must be disjoint: a layer owned by two optimizers is a validation problem on the
second optimizer, naming the layer. **Schedulers**: a scheduler drives the optimizer wired to its
``optimizer`` input, as with a single optimizer, and changes only that phase's learning rate; a phase has
one scheduler at most (a second is a validation problem on it) or none (its lr stays as set). **Order**: each optimizer's ``phase`` param (lowest first), then
optimizers whose losses have the discriminator role, then the order the nodes were added in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from netstudio.compiler.memory import inputs_from_results, layer_tensors
from netstudio.errors import Problem, Scope, Severity
from netstudio.nodes.adversarial import GAN_LOSS, REAL_FAKE
from netstudio.nodes.base import Category, LayerType

if TYPE_CHECKING:  # pragma: no cover
    from netstudio.graph.model import Graph

_MODEL_CATEGORIES = (Category.LAYER, Category.ACTIVATION, Category.MERGE)


@dataclass
class Phase:
    """One optimizer's part of every training step."""

    name: str                      # the optimizer node's name
    optimizer_node: str
    optimizer_type: str
    optimizer_params: dict[str, Any]
    #: indices into ``TrainingPlan.losses`` of the losses this phase minimises
    losses: list[int] = field(default_factory=list)
    #: the model nodes whose weights this phase trains (ids, in graph order)
    nodes: list[str] = field(default_factory=list)
    #: attribute paths of those nodes' modules in the compiled model
    module_paths: list[str] = field(default_factory=list)
    #: the scheduler node wired to this phase's optimizer (at most one), its type and params
    scheduler_node: str | None = None
    scheduler_type: str | None = None
    scheduler_params: dict[str, Any] | None = None


def optimizers(graph: "Graph", order: list[str]) -> list[str]:
    return [nid for nid in order if graph.node_type(nid).category == Category.OPTIMIZER]


def losses_of(graph: "Graph", optimizer: str) -> list[str]:
    """The loss nodes wired to ``optimizer``, in edge order."""
    return [e.src for e in graph.in_edges(optimizer) if e.dst_port == "loss"]


def role(graph: "Graph", loss: str) -> str | None:
    node = graph.nodes[loss]
    return str(node.params.get("role", "discriminator")) if node.type_id == GAN_LOSS else None


def scheduler_of(graph: "Graph", optimizer: str, order: list[str]) -> str | None:
    """The scheduler wired to ``optimizer`` (its ``optimizer`` input), or None; the first in ``order`` if
    several are (a validation problem, :func:`phase_problems`)."""
    return next((nid for nid in order if graph.node_type(nid).category == Category.SCHEDULER
                 and [e.src for e in graph.in_edges(nid) if e.dst_port == "optimizer"] == [optimizer]), None)


def trained_by_loss(graph: "Graph", loss: str) -> list[str]:
    """The model nodes whose weights ``loss`` trains (see the module's text), in graph order."""
    r = role(graph, loss)
    owned: set[str] = set()
    seen: set[tuple[str, bool]] = set()
    stack = [(e.src, r != "generator") for e in graph.in_edges(loss)]
    while stack:
        nid, owning = stack.pop()
        if (nid, owning) in seen:
            continue
        seen.add((nid, owning))
        node = graph.nodes[nid]
        if graph.node_type(node).category not in _MODEL_CATEGORIES:
            continue  # the dataset, a noise source
        if owning:
            owned.add(nid)
        for e in graph.in_edges(nid):
            if node.type_id == REAL_FAKE and r == "generator":
                if e.dst_port == "fake":
                    stack.append((e.src, True))
            elif node.type_id == REAL_FAKE and r == "discriminator":
                if e.dst_port == "real":
                    stack.append((e.src, owning))
            else:
                stack.append((e.src, owning))
    return [nid for nid in graph.nodes if nid in owned]


def trained_by(graph: "Graph", optimizer: str) -> list[str]:
    """The model nodes whose weights ``optimizer`` trains, in graph order."""
    found: set[str] = set()
    for loss in losses_of(graph, optimizer):
        found.update(trained_by_loss(graph, loss))
    return [nid for nid in graph.nodes if nid in found]


def phase_order(graph: "Graph", order: list[str]) -> list[str]:
    """The optimizers in the order they step in every batch."""
    opts = optimizers(graph, order)
    placed = list(graph.nodes)

    def key(nid: str) -> tuple[int, int, int]:
        critic = any(role(graph, loss) == "discriminator" for loss in losses_of(graph, nid))
        return int(graph.nodes[nid].params.get("phase", 0) or 0), 0 if critic else 1, placed.index(nid)

    return sorted(opts, key=key)


def explain(graph: "Graph", optimizer: str, order: list[str]) -> str:
    """The inspector's sentence on an optimizer of a multi-phase graph ('' with a single optimizer)."""
    opts = phase_order(graph, order)
    if len(opts) < 2 or optimizer not in opts:
        return ""
    names = [graph.nodes[o].name for o in opts]
    i = opts.index(optimizer)
    mine = [graph.nodes[n].name for n in trained_by(graph, optimizer)  # its layers (not merges or reshapes)
            if graph.nodes[n].inner is not None or isinstance(graph.node_type(n), LayerType)]
    losses = [graph.nodes[x].name for x in losses_of(graph, optimizer)]
    steps = " → ".join(f"{k + 1}. {n}" for k, n in enumerate(names))
    return (f"Multi-phase training: every batch runs {steps}. This is phase {i + 1}: it computes "
            f"{', '.join(losses) or 'no loss'}, back-propagates and steps only its own weights "
            f"({', '.join(mine) or 'none'}); the other phases' weights are held still (a generator's samples "
            "reach a discriminator phase detached). Change the order with the phase param.")


def _has_weights(graph: "Graph", nid: str, results: dict[str, Any]) -> bool:
    """Does node ``nid`` hold weights? Blocks count as yes; so does a layer that cannot be told (built on the
    meta device by the memory estimate's cached :func:`layer_tensors`)."""
    node = graph.nodes[nid]
    if node.inner is not None:
        return True
    nt = graph.node_type(node)
    if not isinstance(nt, LayerType):
        return False
    res = results.get(nid)
    inputs = None if res is None else inputs_from_results(graph, results, nid, nt)
    if res is None or inputs is None:
        return True
    counts = layer_tensors(nt, res.params, inputs)
    return counts is None or counts[0] > 0


def phase_problems(graph: "Graph", order: list[str], results: dict[str, Any]) -> list[Problem]:
    """Two schedulers on one optimizer; with several optimizers also a layer trained by two of them and an
    optimizer that trains nothing."""
    opts = phase_order(graph, order)
    if len(opts) < 2:
        return _scheduler_problems(graph, order)
    out: list[Problem] = []
    owner: dict[str, str] = {}
    for opt in opts:
        name = graph.nodes[opt].name
        mine = [n for n in trained_by(graph, opt) if _has_weights(graph, n, results)]
        if not mine and losses_of(graph, opt):
            out.append(Problem(f"Optimizer '{name}' trains no layer: nothing with weights feeds its losses", opt,
                               "connect a loss that layers with weights feed (a GAN's generator loss needs a "
                               "Real | Fake node whose fake input the generator feeds)", Severity.ERROR,
                               Scope.TRAINING))
        for nid in mine:
            first = owner.get(nid)
            if first is None:
                owner[nid] = opt
                continue
            layer = graph.nodes[nid]
            out.append(Problem(
                f"{graph.node_type(layer).title} '{layer.name}' would be trained by two optimizers, "
                f"'{graph.nodes[first].name}' and '{name}': each optimizer must own its own layers", opt,
                f"wire '{name}' to losses that '{layer.name}' does not feed, use GAN losses with the roles "
                "discriminator/generator around a Real | Fake node, or connect all losses to one optimizer",
                Severity.ERROR, Scope.TRAINING))
    return out + _scheduler_problems(graph, order)


def _scheduler_problems(graph: "Graph", order: list[str]) -> list[Problem]:
    out: list[Problem] = []
    driven: dict[str, str] = {}  # optimizer -> its scheduler
    for nid in order:
        if graph.node_type(nid).category != Category.SCHEDULER:
            continue
        sname = graph.nodes[nid].name
        # one edge at most (the graph refuses a second one into the port); none is the missing input's problem
        tied = [e.src for e in graph.in_edges(nid) if e.dst_port == "optimizer"]
        if not tied:
            continue
        first = driven.get(tied[0])
        if first is None:
            driven[tied[0]] = nid
            continue
        oname = graph.nodes[tied[0]].name
        out.append(Problem(f"Optimizer '{oname}' has two schedulers, '{graph.nodes[first].name}' and '{sname}': "
                           "an optimizer's learning rate follows one schedule", nid,
                           f"delete '{sname}', or connect it to another optimizer", Severity.ERROR, Scope.TRAINING))
    return out


class PhasedOptimizer:
    """The optimizers of a multi-phase plan, one per phase, behind the interface the training loop uses
    for its one optimizer: ``param_groups`` (all phases' groups, so the reported lr is the first
    phase's and a warm-up scales every group), ``zero_grad``, ``state_dict``/``load_state_dict`` (one
    entry per phase, for checkpoints). Each phase steps its own optimizer (:attr:`optimizers`)."""

    def __init__(self, optimizers: list[Any], names: list[str]) -> None:
        self.optimizers = optimizers
        self.names = names

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for o in self.optimizers for g in o.param_groups]

    @property
    def defaults(self) -> dict[str, Any]:
        return dict(self.optimizers[0].defaults)

    @property
    def state(self) -> dict[Any, Any]:
        return {k: v for o in self.optimizers for k, v in o.state.items()}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def state_dict(self) -> dict[str, Any]:
        return {"phases": [o.state_dict() for o in self.optimizers], "names": list(self.names)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("phases") if isinstance(state, dict) else None
        if not isinstance(saved, list) or len(saved) != len(self.optimizers):
            raise ValueError(f"expected the state of {len(self.optimizers)} optimizers")
        for o, s in zip(self.optimizers, saved):
            o.load_state_dict(s)


class PhasedScheduler:
    """The schedulers of a multi-phase plan, each driving its own phase's optimizer (a phase may have none).

    The training loop steps it like one scheduler: :meth:`step` after every epoch (the per-epoch schedulers;
    ``metric`` goes to those that need one, ReduceLROnPlateau) and :attr:`batch` after every batch (the
    per-batch schedulers; None when there are none). ``state_dict`` holds every scheduler's state by its
    optimizer's name (checkpoints)."""

    def __init__(self, entries: list[tuple[str, Any, str, bool]]) -> None:
        #: (optimizer name, scheduler, "epoch"|"batch", needs_metric) in phase order
        self.entries = entries
        per_batch = [s for _, s, every, _ in entries if every == "batch"]
        self.batch: _BatchSchedulers | None = _BatchSchedulers(per_batch) if per_batch else None

    @property
    def needs_metric(self) -> bool:
        return any(m for *_, m in self.entries)

    def step(self, metric: float | None = None) -> None:
        for _, sched, every, needs in self.entries:
            if every == "batch":
                continue
            if needs:
                sched.step(metric)
            else:
                sched.step()

    def state_dict(self) -> dict[str, Any]:
        return {"schedulers": {name: s.state_dict() for name, s, _, _ in self.entries}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("schedulers") if isinstance(state, dict) else None
        if not isinstance(saved, dict) or set(saved) != {name for name, *_ in self.entries}:
            raise ValueError("expected the state of the schedulers of "
                             + ", ".join(name for name, *_ in self.entries))
        for name, sched, _, _ in self.entries:
            sched.load_state_dict(saved[name])


class _BatchSchedulers:
    def __init__(self, schedulers: list[Any]) -> None:
        self.schedulers = schedulers

    def step(self) -> None:
        for s in self.schedulers:
            s.step()
