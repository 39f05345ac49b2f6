"""Graph → ``torch.fx.GraphModule`` and training plan.

The model part of the graph (layers, activations, merges) becomes an fx graph:
the dataset's features are the single ``placeholder``, each layer a
``call_module`` of a built-in ``torch.nn`` module named after the node, each
merge a ``call_function``. Because only built-in modules are used, the saved
module unpickles with plain PyTorch. Losses, optimizer and scheduler are not
part of ``forward``; they become a :class:`TrainingPlan`.
"""

from __future__ import annotations

import keyword
import operator
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn as nn

from netstudio.compiler.phases import (
    Phase,
    PhasedOptimizer,
    PhasedScheduler,
    losses_of,
    phase_order,
    scheduler_of,
    trained_by,
)
from netstudio.compiler.shapes import NO_LAYERS, NO_LAYERS_HINT, Analysis, analyze
from netstudio.errors import CompileError, Problem, Scope, Severity
from netstudio.graph.model import Graph, Node
from netstudio.nodes.adversarial import NOISE, REAL_FAKE, noise_call
from netstudio.nodes.base import (Call, Category, FunctionType, LayerType, LossType, ParameterType, PortRef,
                                  TensorInfo, apply_output_steps)
from netstudio.nodes.blocks import BLOCK_INPUT, BLOCK_OUTPUT

_PORT_TYPES = (BLOCK_INPUT, BLOCK_OUTPUT)

_MODEL_CATEGORIES = (Category.LAYER, Category.ACTIVATION, Category.MERGE)


@dataclass
class CompiledModel:
    module: fx.GraphModule
    #: (node_id, port) of each forward output, in order
    outputs: list[tuple[str, str]]
    output_infos: list[TensorInfo]
    input_info: TensorInfo | None
    dataset_node: str | None
    analysis: Analysis
    #: node id -> attribute path of its submodule; a node inside a block is keyed "block_id/inner_id" and
    #: its path is dotted ("block1.fc_a"), as in the state_dict keys
    module_names: dict[str, str] = field(default_factory=dict)
    #: fx node name -> node id of each top-level node's call (call_module or call_function; a block's
    #: call counts for the block), for per-node statistics
    fx_nodes: dict[str, str] = field(default_factory=dict)
    #: attribute paths of the frozen submodules (nodes and blocks whose ``trainable`` is False) and of
    #: frozen Parameter nodes' parameters
    frozen: list[str] = field(default_factory=list)
    #: node id (``block_id/inner_id`` inside a block) -> dotted path of a Parameter node's parameter
    #: (``class_token``, ``encoder.pos_embedding``), as in the state_dict keys
    parameter_names: dict[str, str] = field(default_factory=dict)
    #: (node id, port) -> name of the fx node that computes it (e.g. a generator's output, for its export)
    value_names: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def code(self) -> str:
        return self.module.code


@dataclass
class LossTerm:
    node_id: str
    name: str
    type_id: str
    module: nn.Module
    pred_index: int            # index into the model outputs
    target: tuple[str, int]    # ("target", 0) | ("features", 0) | ("output", i) | ("none", 0): the loss makes its own
    weight: float
    metric: str | None
    adapt: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TrainingPlan:
    compiled: CompiledModel
    losses: list[LossTerm]
    optimizer_node: str
    optimizer_type: str
    optimizer_params: dict[str, Any]
    scheduler_node: str | None
    scheduler_type: str | None
    scheduler_params: dict[str, Any] | None
    dataset_params: dict[str, Any]
    graph: Graph
    #: several optimizers (a GAN): one phase per optimizer, in the order they step in every batch
    #: (netstudio.compiler.phases); empty with a single optimizer
    phases: list[Phase] = field(default_factory=list)

    @property
    def model(self) -> fx.GraphModule:
        return self.compiled.module

    @property
    def multi_phase(self) -> bool:
        return len(self.phases) > 1

    @property
    def metric(self) -> str | None:
        """The accuracy rule of the first loss that has one (classification), else None."""
        return next((t.metric for t in self.losses if t.metric), None)

    @property
    def metric_term(self) -> LossTerm | None:
        return next((t for t in self.losses if t.metric), None)

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """The optimizer over the trainable weights; frozen nodes' weights get ``requires_grad=False``."""
        nt = self.graph.catalog.get(self.optimizer_type)
        params = trainable_parameters(model, self.compiled.frozen)
        if not params:
            raise CompileError("Every layer with weights is frozen: there is nothing to train",
                               node_id=self.optimizer_node, hint="make at least one layer trainable")
        if self.multi_phase:
            return self._phased_optimizer(model, params)  # type: ignore[return-value]
        return nt.make(params, self.optimizer_params)  # type: ignore[attr-defined]

    def _phased_optimizer(self, model: nn.Module, trainable: list[nn.Parameter]) -> PhasedOptimizer:
        """One optimizer per phase over the trainable weights of the nodes it owns."""
        free = {id(p) for p in trainable}
        opts = []
        for ph in self.phases:
            held: dict[int, nn.Parameter] = {}
            for mod in frozen_modules(model, ph.module_paths):
                for p in mod.parameters():
                    if id(p) in free:
                        held.setdefault(id(p), p)
            if not held:
                raise CompileError(f"Optimizer '{ph.name}' has no trainable weights (its layers are frozen)",
                                   node_id=ph.optimizer_node, hint="make its layers trainable")
            nt = self.graph.catalog.get(ph.optimizer_type)
            opts.append(nt.make(list(held.values()), ph.optimizer_params))  # type: ignore[attr-defined]
        return PhasedOptimizer(opts, [ph.name for ph in self.phases])

    def train_mode(self, model: nn.Module) -> nn.Module:
        """``model.train()``, with the normalization layers of frozen nodes kept in eval mode (their
        running statistics stay as they are). The training loop calls this instead of ``model.train()``."""
        model.train()
        for mod in frozen_modules(model, self.compiled.frozen):
            for m in mod.modules():
                if isinstance(m, _RUNNING_STATS):
                    m.eval()
        return model

    def make_scheduler(self, optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int
                       ) -> tuple[Any, str, bool] | None:
        """(scheduler, "epoch"|"batch", needs_metric) or None. A multi-phase plan: (a
        :class:`~netstudio.compiler.phases.PhasedScheduler`, "phased", needs_metric) when any phase has a
        scheduler, each driving its own phase's optimizer."""
        if self.multi_phase:
            return self._phased_scheduler(optimizer, epochs, steps_per_epoch)
        if self.scheduler_type is None:
            return None
        nt = self.graph.catalog.get(self.scheduler_type)
        sched = nt.make(optimizer, self.scheduler_params or {}, epochs=epochs,  # type: ignore[attr-defined]
                        steps_per_epoch=steps_per_epoch)
        return sched, nt.step_every, nt.needs_metric  # type: ignore[attr-defined]

    def _phased_scheduler(self, optimizer: Any, epochs: int, steps_per_epoch: int) -> tuple[Any, str, bool] | None:
        entries = []
        for ph, opt in zip(self.phases, optimizer.optimizers):
            if ph.scheduler_type is None:
                continue
            nt = self.graph.catalog.get(ph.scheduler_type)
            sched = nt.make(opt, ph.scheduler_params or {}, epochs=epochs,  # type: ignore[attr-defined]
                            steps_per_epoch=steps_per_epoch)
            entries.append((ph.name, sched, nt.step_every, nt.needs_metric))  # type: ignore[attr-defined]
        if not entries:
            return None
        phased = PhasedScheduler(entries)
        return phased, "phased", phased.needs_metric

    def loss_terms(self, outputs: torch.Tensor | tuple[torch.Tensor, ...], x: torch.Tensor, y: torch.Tensor
                   ) -> list[tuple[LossTerm, torch.Tensor]]:
        """Each loss term with its weighted value (distributed training scales them apart)."""
        outs = outputs if isinstance(outputs, tuple) else (outputs,)
        terms: list[tuple[LossTerm, torch.Tensor]] = []
        for t in self.losses:
            pred = outs[t.pred_index]
            kind, idx = t.target
            tgt = y if kind == "target" else x if kind == "features" else pred if kind == "none" else outs[idx]
            term = t.module(pred, t.adapt(pred, tgt))
            terms.append((t, term * t.weight if t.weight != 1.0 else term))
        return terms

    def loss(self, outputs: torch.Tensor | tuple[torch.Tensor, ...], x: torch.Tensor, y: torch.Tensor
             ) -> torch.Tensor:
        """Weighted sum of all loss terms, kept on the device (no ``.item()``)."""
        terms = self.loss_terms(outputs, x, y)
        total = terms[0][1]
        for _, term in terms[1:]:
            total = total + term
        return total

    def correct(self, outputs: torch.Tensor | tuple[torch.Tensor, ...], y: torch.Tensor) -> torch.Tensor | None:
        """Number of correct predictions in the batch (a device tensor), or None for regression."""
        t = self.metric_term
        if t is None or t.target[0] != "target":
            return None
        outs = outputs if isinstance(outputs, tuple) else (outputs,)
        pred = outs[t.pred_index]
        if t.metric == "argmax":
            return (pred.argmax(dim=1) == y).sum()
        thresh = 0.5 if t.metric == "sigmoid" else 0.0
        return ((pred.reshape(-1) > thresh).to(y.dtype) == y.reshape(-1)).sum()


_RUNNING_STATS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


def frozen_modules(model: nn.Module, frozen: list[str]) -> list[nn.Module]:
    """The submodules at the ``frozen`` attribute paths (those the model has)."""
    out = []
    for path in frozen:
        try:
            out.append(model.get_submodule(path))
        except AttributeError:
            continue
    return out


def frozen_parameters(model: nn.Module, frozen: list[str]) -> list[nn.Parameter]:
    """The parameters (of frozen Parameter nodes) at the ``frozen`` paths that name one."""
    out = []
    for path in frozen:
        try:
            out.append(model.get_parameter(path))
        except AttributeError:
            continue
    return out


def trainable_parameters(model: nn.Module, frozen: list[str]) -> list[nn.Parameter]:
    """Set ``requires_grad=False`` on the weights under the ``frozen`` paths; the others, in model order."""
    held = {id(p) for mod in frozen_modules(model, frozen) for p in mod.parameters()}
    held |= {id(p) for p in frozen_parameters(model, frozen)}
    for p in model.parameters():
        if id(p) in held:
            p.requires_grad_(False)
    return [p for p in model.parameters() if id(p) not in held]


def frozen_paths(graph: Graph, module_names: dict[str, str], prefix: str = "") -> list[str]:
    """Attribute paths of the frozen nodes' modules; a frozen block covers everything inside it."""
    out: list[str] = []
    for nid, node in graph.nodes.items():
        key = prefix + nid
        if not node.trainable:
            if key in module_names:
                out.append(module_names[key])
        elif node.inner is not None:
            out.extend(frozen_paths(node.inner, module_names, key + "/"))
    return out


def _first_error(problems: list[Problem], scope: Scope | None = None) -> CompileError:
    p = next(p for p in problems if p.severity == Severity.ERROR and (scope is None or p.scope == scope))
    return CompileError(p.message, node_id=p.node_id, hint=p.hint)


def compile_model(graph: Graph, batch_size: int = 64, analysis: Analysis | None = None) -> CompiledModel:
    """Build the forward module. Raises CompileError (with node id) if the model part is invalid."""
    an = analysis or analyze(graph, batch_size)
    if not an.model_ok:
        raise _first_error(an.problems, Scope.MODEL)
    kinds = {nid: graph.node_type(nid).category for nid in an.order}
    dataset = next((nid for nid in an.order if kinds[nid] == Category.DATA and graph.nodes[nid].type_id != NOISE),
                   None)
    incoming: dict[str, list] = {}
    for e in graph.edges:
        incoming.setdefault(e.dst, []).append(e)

    # Which (node, port) values the forward must return: loss predictions and
    # loss targets that come from the model; with no loss, the main output of every node that feeds nothing.
    wanted: list[tuple[str, str]] = []
    for nid in an.order:
        if kinds[nid] == Category.LOSS:
            for e in incoming.get(nid, []):
                if kinds[e.src] in _MODEL_CATEGORIES and (e.src, e.src_port) not in wanted:
                    wanted.append((e.src, e.src_port))
    if not wanted:
        # a node that feeds nothing gives its main output (an LSTM's sequence, not also its h_n), in the
        # order the nodes were added (as a block's outputs): an imported model's output_0, output_1...
        feeding = {e.src for e in graph.edges}
        for nid in graph.nodes:
            if nid in kinds and kinds[nid] in _MODEL_CATEGORIES and nid not in feeding:
                nt = graph.node_type(nid)
                wanted.extend((nid, p.name) for p in nt.outputs[:1])
    if not wanted:
        raise CompileError(NO_LAYERS, node_id=dataset, hint=NO_LAYERS_HINT)

    # Only ancestors of the wanted outputs become part of the model.
    needed: set[str] = set()
    stack = [nid for nid, _ in wanted]
    while stack:
        n = stack.pop()
        if n in needed:
            continue
        needed.add(n)
        stack.extend(e.src for e in incoming.get(n, []))

    if torch.get_default_device().type != "meta":  # refuse before allocating what cannot fit
        from netstudio.compiler.memory import check_weights_fit

        check_weights_fit(graph, an, needed)

    used_ports = {(e.src, e.src_port) for e in graph.edges} | set(wanted)
    fxg = fx.Graph()
    root = nn.Module()
    values: dict[tuple[str, str], fx.Node] = {}
    module_names: dict[str, str] = {}
    parameter_names: dict[str, str] = {}
    fx_nodes: dict[str, str] = {}
    input_info = None
    noises = [nid for nid in an.order if nid in needed and graph.nodes[nid].type_id == NOISE]
    if dataset is not None and (dataset in needed or noises):
        values[(dataset, "features")] = fxg.placeholder("x")
        input_info = an.results[dataset].outputs.get("features")
    for nid in noises:  # drawn in forward with the batch's size, on the batch's device
        if dataset is None:
            raise CompileError("A Noise node needs a Dataset to take the batch size from", node_id=nid,
                               hint="add a Dataset node")
        values[(nid, "noise")] = _emit_noise(fxg, values[(dataset, "features")], graph.nodes[nid])

    _emit_nodes(graph, an, needed, values, fxg, root, module_names, used_ports, fx_nodes=fx_nodes,
                parameter_names=parameter_names)

    outs = []
    for key in wanted:
        if key not in values:
            if key[0] == dataset:
                continue
            raise CompileError("An output is not reachable from the dataset", node_id=key[0])
        outs.append(values[key])
    fxg.output(outs[0] if len(outs) == 1 else tuple(outs))
    gm = fx.GraphModule(root, fxg, class_name="NetStudioModel")
    _mark_generator(graph, gm, values, needed, incoming)
    wanted = [k for k in wanted if k in values]
    return CompiledModel(gm, wanted, [an.results[n].outputs[p] for n, p in wanted], input_info, dataset, an,
                         module_names, fx_nodes, frozen_paths(graph, {**module_names, **parameter_names}),
                         parameter_names, {k: v.name for k, v in values.items()})


#: the key in a compiled GraphModule's ``meta`` that says where its generator is (see :func:`generator_of`)
GENERATOR_ATTR = "netstudio_generator"


def _mark_generator(graph: Graph, gm: fx.GraphModule, values: dict[tuple[str, str], fx.Node], needed: set[str],
                    incoming: dict[str, list]) -> None:
    """A model with a Real | Fake node fed by Noise: record the fx names of the generator's output (what
    feeds ``fake``) and of its noise inputs on the module, so the generator can be cut out of it."""
    for nid in needed:
        if graph.nodes[nid].type_id != REAL_FAKE:
            continue
        fake = next((e for e in incoming.get(nid, []) if e.dst_port == "fake"), None)
        if fake is None or (fake.src, fake.src_port) not in values:
            continue
        seen, stack, noises = set(), [fake.src], []
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            if graph.nodes[n].type_id == NOISE:
                noises.append(n)
            stack.extend(e.src for e in incoming.get(n, []))
        if not noises:
            continue
        gm.meta[GENERATOR_ATTR] = {
            "output": values[(fake.src, fake.src_port)].name, "node": fake.src,
            "inputs": [[values[(n, "noise")].name, graph.nodes[n].name, int(graph.nodes[n].params.get("size", 64)),
                        str(graph.nodes[n].params.get("distribution", "normal"))] for n in sorted(noises)]}
        return


def _generator_info(model: nn.Module) -> dict[str, Any] | None:
    info = getattr(model, "meta", {}).get(GENERATOR_ATTR) if isinstance(getattr(model, "meta", None), dict) else None
    return info if isinstance(info, dict) else None


def generator_of(model: nn.Module) -> fx.GraphModule | None:
    """The generator inside a GAN's compiled model: a GraphModule that takes the noise (one argument per Noise
    node, named after it: batch × size) and returns the generated samples, sharing the model's weights.
    None for a model without a Real | Fake node fed by Noise (or whose generator also reads the data)."""
    info = _generator_info(model)
    if info is None or not isinstance(model, fx.GraphModule):
        return None
    nodes = {n.name: n for n in model.graph.nodes}
    out = nodes.get(info["output"])
    stops = {str(i[0]) for i in info["inputs"]}
    if out is None or not stops <= set(nodes):
        return None
    keep: set[str] = set()
    stack = [out]
    while stack:
        n = stack.pop()
        if n.name in keep:
            continue
        keep.add(n.name)
        if n.name not in stops:
            stack.extend(n.all_input_nodes)
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for name, label, _, _ in info["inputs"]:
        env[nodes[name]] = g.placeholder(_code_name(str(label)))
    for n in model.graph.nodes:
        if n.name not in keep or n in env:
            continue
        if n.op == "placeholder":
            return None  # the generator reads the dataset too: not a noise-only generator
        env[n] = g.node_copy(n, lambda a: env[a])
    g.output(env[out])
    gm = fx.GraphModule(model, g, class_name="Generator")
    gm.meta["node"] = info.get("node", "")  # the node whose output the samples are
    return gm


def generator_noise(model: nn.Module, n: int, seed: int = 0, device: torch.device | str = "cpu"
                    ) -> list[torch.Tensor]:
    """Fixed noise for :func:`generator_of` (one tensor per Noise node, drawn from ``seed``)."""
    info = _generator_info(model) or {"inputs": []}
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _, _, size, dist in info["inputs"]:
        z = torch.rand((n, size), generator=gen) * 2 - 1 if dist == "uniform" else torch.randn((n, size), generator=gen)
        out.append(z.to(device))
    return out


def _emit_noise(fxg: fx.Graph, x: fx.Node, node: Node) -> fx.Node:
    """``torch.randn(x.size(0), size, device=x.device)`` (uniform: ``rand * 2 - 1``), named after the node."""
    fn, scale, shift = noise_call(node.params)
    n = fxg.call_method("size", (x, 0))
    dev = fxg.call_function(getattr, (x, "device"))
    z = fxg.call_function(fn, (n, int(node.params.get("size", 64))), {"device": dev})
    if scale != 1.0:
        z = fxg.call_function(operator.mul, (z, scale))
    if shift != 0.0:
        z = fxg.call_function(operator.add, (z, shift))
    z.name = _unique(fxg, _code_name(node.name), z)
    return z


def _emit_nodes(graph: Graph, an: Analysis, needed: set[str], values: dict[tuple[str, str], fx.Node],
                fxg: fx.Graph, root: nn.Module, module_names: dict[str, str],
                used_ports: set[tuple[str, str]], prefix: str = "", fx_nodes: dict[str, str] | None = None,
                parameter_names: dict[str, str] | None = None) -> None:
    """Record the model nodes of ``graph`` in ``needed`` into ``fxg`` (their modules into ``root``), in
    the analysis' order; ``values`` holds the fx value of each (node, port) already there; ``fx_nodes``
    (when given) gets the fx name of each node's call, ``parameter_names`` the path of each Parameter
    node's parameter."""
    calls: dict[str, str] = {} if fx_nodes is None else fx_nodes
    param_names: dict[str, str] = {} if parameter_names is None else parameter_names
    incoming: dict[str, list] = {}
    for e in graph.edges:
        incoming.setdefault(e.dst, []).append(e)
    for nid in an.order:
        node = graph.nodes[nid]
        nt = graph.node_type(node)
        if nid not in needed or nt.category not in _MODEL_CATEGORIES or node.type_id in _PORT_TYPES:
            continue
        res = an.results[nid]
        ins = {p.name: [e for e in incoming.get(nid, []) if e.dst_port == p.name] for p in nt.inputs}
        args: dict[str, Any] = {}
        for pname, edges in ins.items():
            vals = []
            for e in edges:
                key = (e.src, e.src_port)
                if key not in values:
                    raise CompileError(f"'{node.name}' is fed by '{graph.nodes[e.src].name}', which is not part "
                                       "of the model", node_id=nid,
                                       hint="layers must be fed by the dataset's features or other layers")
                vals.append(values[key])
            in_port = nt.input_port(pname)
            if vals:
                args[pname] = vals if in_port is not None and in_port.multi else vals[0]
        in_infos = {p: (an.results[e[0].src].outputs[e[0].src_port] if len(e) == 1 else
                        [an.results[x.src].outputs[x.src_port] for x in e]) for p, e in ins.items() if e}
        try:
            if node.inner is not None:
                sub, sub_names, sub_params = _block_module(node, res.extra["inner"])
                attr = _module_attr(root, node.name)
                root.add_module(attr, sub)
                module_names[prefix + nid] = attr
                for inner_id, inner_attr in sub_names.items():
                    module_names[f"{prefix}{nid}/{inner_id}"] = f"{attr}.{inner_attr}"
                for inner_id, inner_attr in sub_params.items():
                    param_names[f"{prefix}{nid}/{inner_id}"] = f"{attr}.{inner_attr}"
                out = fxg.call_module(attr, tuple(args[p.name] for p in nt.inputs))
                calls[out.name] = nid
                for i, p in enumerate(nt.outputs):
                    if (nid, p.name) in used_ports:
                        values[(nid, p.name)] = out if len(nt.outputs) == 1 else fxg.call_function(
                            operator.getitem, (out, i))
            elif isinstance(nt, LayerType):
                mod = nt.build(res.params, in_infos)
                attr = _module_attr(root, node.name)
                root.add_module(attr, mod)
                module_names[prefix + nid] = attr
                cargs, ckwargs = nt.call_args(res.params)
                # fx names the call after the attribute
                out = fxg.call_module(attr, _subst(cargs, args, fxg), _subst(ckwargs, args, fxg))
                calls[out.name] = nid
                # each used output port's value from the result (LSTM/GRU: (output, state) -> output, h_n)
                for port, steps in nt.output_steps(res.params).items():
                    if (nid, port) in used_ports:
                        values[(nid, port)] = apply_output_steps(steps, out, fxg.call_function)
            elif isinstance(nt, ParameterType):
                attr = _module_attr(root, node.name)
                root.register_parameter(attr, nt.make(res.params))
                param_names[prefix + nid] = attr
                out = fxg.get_attr(attr)
                values[(nid, nt.outputs[0].name)] = out
            elif isinstance(nt, FunctionType):
                fn, fargs, fkwargs = nt.function(res.params, in_infos)
                fargs, fkwargs = _subst(fargs, args, fxg), _subst(fkwargs, args, fxg)
                # a method name: x.expand(...); else a torch/operator function
                out = fxg.call_method(fn, fargs, fkwargs) if isinstance(fn, str) else fxg.call_function(fn, fargs, fkwargs)
                out.name = _unique(fxg, _code_name(node.name), out)
                calls[out.name] = nid
                values[(nid, nt.outputs[0].name)] = out
            else:  # pragma: no cover - catalog guarantees one of the two
                raise CompileError(f"{nt.title} cannot be compiled", node_id=nid)
        except CompileError:
            raise
        except Exception as exc:
            raise CompileError(f"{nt.title} '{node.name}' could not be built: {exc}", node_id=nid) from exc



def _block_module(block: Node, an: Analysis) -> tuple[fx.GraphModule, dict[str, str], dict[str, str]]:
    """A block's own GraphModule: one argument per input port, its outputs (a tuple when several) in
    port order, its layers as submodules; the class is named after the block. Also returns the
    attribute paths of its modules and of its Parameter nodes' parameters."""
    inner = block.inner
    assert inner is not None
    fxg = fx.Graph()
    root = nn.Module()
    values: dict[tuple[str, str], fx.Node] = {}
    module_names: dict[str, str] = {}
    ports_in = [n for n in inner.nodes.values() if n.type_id == BLOCK_INPUT]
    ports_out = [n for n in inner.nodes.values() if n.type_id == BLOCK_OUTPUT]
    for p in ports_in:
        values[(p.id, "output")] = fxg.placeholder(_unique(fxg, _code_name(p.name)))
    feeding = {p.id: next(e for e in inner.in_edges(p.id)) for p in ports_out}
    needed: set[str] = set()
    stack = [e.src for e in feeding.values()]
    while stack:
        n = stack.pop()
        if n not in needed:
            needed.add(n)
            stack.extend(e.src for e in inner.in_edges(n))
    used_ports = {(e.src, e.src_port) for e in inner.edges}
    param_names: dict[str, str] = {}
    _emit_nodes(inner, an, needed, values, fxg, root, module_names, used_ports, parameter_names=param_names)
    outs = [values[(e.src, e.src_port)] for e in feeding.values()]
    fxg.output(outs[0] if len(outs) == 1 else tuple(outs))
    return fx.GraphModule(root, fxg, class_name=block_class_name(block.name)), module_names, param_names


def block_class_name(name: str) -> str:
    """The class of a block's module in generated code: its name in CamelCase ('layer1_0' -> 'Layer1_0')."""
    parts = [p for p in name.split("_") if p]
    cls = "".join(p[:1].upper() + p[1:] for p in parts) or "Block"
    if not cls[0].isalpha():
        cls = "Block" + cls
    return cls if cls.isidentifier() and not keyword.iskeyword(cls) else "Block"


#: names a submodule or fx value cannot take: forward's ``self`` and GraphModule's own attributes
_RESERVED = frozenset({"self", "code", "graph", "meta"})


def _code_name(name: str) -> str:
    """The node's name as a name in generated code: a Python keyword ('class', 'if') or a reserved
    name gets a trailing '_'. The node keeps its own name for display."""
    return name + "_" if keyword.iskeyword(name) or name in _RESERVED else name


def _module_attr(root: nn.Module, name: str) -> str:
    """``name``, or ``name_`` if it would shadow a Module/GraphModule attribute (a node named 'training')
    or is a Python keyword (``self.class`` cannot be written in the forward code)."""
    attr = _code_name(name)
    while attr in _RESERVED or hasattr(fx.GraphModule, attr) or hasattr(root, attr):
        attr += "_"
    return attr


def _unique(g: fx.Graph, name: str, self_node: fx.Node | None = None) -> str:
    taken = {n.name for n in g.nodes if n is not self_node}
    if name not in taken:
        return name
    i = 1
    while f"{name}_{i}" in taken:
        i += 1
    return f"{name}_{i}"


def _subst(v: Any, args: dict[str, Any], fxg: fx.Graph | None = None) -> Any:
    """``v`` with each PortRef replaced by its fx value and each :class:`Call` recorded into ``fxg``."""
    if isinstance(v, PortRef):
        val = args[v.port]
        return val[v.index] if v.index is not None and isinstance(val, list) else val
    if isinstance(v, Call):
        if fxg is None:  # pragma: no cover - the compiler always passes its graph
            raise CompileError("a computed argument needs the graph it is recorded in")
        cargs, ckwargs = _subst(v.args, args, fxg), _subst(v.kwargs, args, fxg)
        return fxg.call_method(v.fn, cargs, ckwargs) if isinstance(v.fn, str) else \
            fxg.call_function(v.fn, cargs, ckwargs)
    if isinstance(v, tuple):
        return tuple(_subst(x, args, fxg) for x in v)
    if isinstance(v, list):
        return [_subst(x, args, fxg) for x in v]
    if isinstance(v, dict):
        return {k: _subst(x, args, fxg) for k, x in v.items()}
    return v


def build_plan(graph: Graph, batch_size: int = 64, analysis: Analysis | None = None, *,
               compiled: CompiledModel | None = None) -> TrainingPlan:
    """Compile the model and collect losses/optimizer/scheduler. Raises CompileError on any error.

    ``compiled``: the model already compiled from ``graph`` with ``analysis`` (see netstudio.compiler.held).
    """
    an = analysis or analyze(graph, batch_size)
    if not an.ok:
        raise _first_error(an.problems)
    if compiled is None:
        compiled = compile_model(graph, batch_size, an)
    cat = graph.catalog
    out_index = {key: i for i, key in enumerate(compiled.outputs)}
    losses: list[LossTerm] = []
    optim_node = sched_node = None
    for nid in an.order:
        node = graph.nodes[nid]
        nt = cat.get(node.type_id)
        if isinstance(nt, LossType):
            pe = next(e for e in graph.in_edges(nid) if e.dst_port == "prediction")
            te = next((e for e in graph.in_edges(nid) if e.dst_port == "target"), None)
            if (pe.src, pe.src_port) not in out_index:
                raise CompileError(f"Loss '{node.name}' must be fed by a layer output", node_id=nid,
                                   hint="connect the model's last layer to 'prediction'")
            if te is None:  # a loss without a target input makes its own (a GAN loss's real/fake labels)
                target = ("none", 0)
            elif te.src == compiled.dataset_node:
                target = ("target", 0) if te.src_port == "target" else ("features", 0)
            else:
                target = ("output", out_index[(te.src, te.src_port)])
            p = an.results[nid].params
            losses.append(LossTerm(nid, node.name, node.type_id, nt.make(p), out_index[(pe.src, pe.src_port)],
                                   target, float(p.get("weight", 1.0)), nt.metric, nt.adapt_target))
        elif nt.category == Category.OPTIMIZER:
            optim_node = nid
        elif nt.category == Category.SCHEDULER:
            sched_node = nid
    assert optim_node is not None
    phases = _phases(graph, an, compiled, losses)
    if phases:
        optim_node = phases[0].optimizer_node
    ds = graph.nodes[compiled.dataset_node] if compiled.dataset_node else None
    return TrainingPlan(
        compiled, losses, optim_node, graph.nodes[optim_node].type_id, dict(an.results[optim_node].params),
        sched_node, graph.nodes[sched_node].type_id if sched_node else None,
        dict(an.results[sched_node].params) if sched_node else None,
        dict(ds.params) if ds else {}, graph, phases)


def _phases(graph: Graph, an: Analysis, compiled: CompiledModel, losses: list[LossTerm]) -> list[Phase]:
    """One phase per optimizer when the graph has several (netstudio.compiler.phases), else none."""
    order = phase_order(graph, an.order)
    if len(order) < 2:
        return []
    index = {t.node_id: i for i, t in enumerate(losses)}
    out = []
    for opt in order:
        nodes = trained_by(graph, opt)
        sched = scheduler_of(graph, opt, an.order)
        out.append(Phase(graph.nodes[opt].name, opt, graph.nodes[opt].type_id, dict(an.results[opt].params),
                         [index[x] for x in losses_of(graph, opt) if x in index], nodes,
                         [compiled.module_names[n] for n in nodes if n in compiled.module_names],
                         sched, graph.nodes[sched].type_id if sched else None,
                         dict(an.results[sched].params) if sched else None))
    return out
