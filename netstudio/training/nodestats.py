"""Per-node statistics of a training run, sampled every N steps, and the diagnoses drawn from them.

The compiled model is a ``torch.fx.GraphModule`` with one named call per graph node
(:attr:`netstudio.compiler.build.CompiledModel.fx_nodes`). For a *sampled* step only,
:class:`NodeStats` swaps in an instrumented forward: a copy of the fx graph with a probe
after every node's call, sharing the model's submodules (so the weights, the optimizer and
a DDP wrapper see nothing different). Each probe reduces its node's output on the device
to seven numbers (mean, std, fraction of zeros, fraction saturated, min, max, NaN/Inf count);
after the optimizer step the parameterised nodes add weight norm, gradient norm and the
update-to-weight ratio. All of it is read back as one tensor — one synchronisation per
sample — and turned into plain floats (the ``stats`` event crosses threads).

Unsampled steps run the model's own forward: no hook, no probe, no cost. On the CUDA fast
path a sampled step runs eagerly (the captured graph cannot call back into Python).

:func:`diagnose` turns a sample into Problems-style findings (node id, message, fix hint);
:func:`nan_origin` names the first node whose output (or gradient) became NaN/Inf.
Nothing here imports Qt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.fx as fx
import torch.nn as nn

from netstudio.compiler.reorder import sharing_module

if TYPE_CHECKING:  # pragma: no cover
    from netstudio.compiler.build import TrainingPlan

#: default sampling interval in steps: a sampled step costs a few ordinary steps (bench/bench_stats.py)
DEFAULT_EVERY = 200

#: output figures, in the order of the probe's vector
OUT_KEYS = ("mean", "std", "zeros", "saturated", "min", "max", "nonfinite")
#: parameter figures
PARAM_KEYS = ("weight_norm", "grad_norm", "update_ratio")
#: histogram bins of a node's output values and of its parameters' gradients (the inspector's view)
BINS = 24
#: a histogram is drawn from at most this many values of a tensor, evenly strided (bounded cost)
HIST_VALUES = 4096

_SATURATING = {"activation.sigmoid": "sigmoid", "activation.tanh": "tanh"}
_RELUS = ("activation.relu", "activation.relu6")

#: thresholds of the diagnoses
DEAD_RELU_ZEROS = 0.9
VANISHING_RATIO = 1e-4
EXPLODING_GRAD_NORM = 1e3
SATURATED_FRACTION = 0.9
FROZEN_UPDATE_RATIO = 1e-9


@dataclass
class NodeInfo:
    node_id: str
    name: str
    type_id: str


@dataclass
class StatsSample:
    """One sample: per node id its figures (plain floats; ``None`` where a figure does not apply)."""

    step: int
    epoch: int
    nodes: dict[str, dict[str, float | None]] = field(default_factory=dict)
    #: per node id "output" and/or "grad": [lo, hi, count of each of BINS equal bins] (finite values only)
    histograms: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def event(self, diagnoses: list[dict[str, Any]]) -> dict[str, Any]:
        from netstudio.training.events import EventKind

        return {"kind": EventKind.STATS, "epoch": self.epoch, "global_step": self.step, "nodes": self.nodes,
                "diagnoses": diagnoses, "histograms": self.histograms}


def _strided(t: torch.Tensor, n: int = HIST_VALUES) -> torch.Tensor:
    flat = t.detach().reshape(-1)
    return flat[::max(1, -(-flat.numel() // n))]


def _histograms(sources: list[tuple[torch.Tensor, float, float]]) -> list[list[float]]:
    """[lo, hi, BINS counts] of each (values, lo, hi); values outside [lo, hi] (and NaN) are not counted."""
    if not sources:
        return []
    counts = torch.stack([torch.histc(v.float(), bins=BINS, min=lo, max=hi) for v, lo, hi in sources]).cpu()
    return [[lo, hi, *row] for (_, lo, hi), row in zip(sources, counts.tolist())]


def _output_tensor(value: Any) -> torch.Tensor | None:
    """The tensor a node's figures describe (an LSTM's output of its (output, state) pair), or None."""
    if isinstance(value, (tuple, list)):
        value = next((v for v in value if isinstance(v, torch.Tensor)), None)
    if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.numel() == 0:
        return None
    return value


def _output_vector(value: torch.Tensor, saturation: str | None) -> torch.Tensor:
    """The seven output figures of one node as a float32 device tensor."""
    t = value.detach().float()
    n = t.numel()
    bad = n - torch.isfinite(t).sum()
    if saturation == "sigmoid":
        sat = ((t < 0.01) | (t > 0.99)).float().mean()
    elif saturation == "tanh":
        sat = (t.abs() > 0.99).float().mean()
    else:
        sat = torch.full((), math.nan, device=t.device)
    std, mean = torch.std_mean(t, unbiased=False) if n > 1 else (torch.zeros((), device=t.device), t.mean())
    lo, hi = torch.aminmax(t)
    return torch.stack([mean, std, (t == 0).float().mean(), sat, lo, hi, bad.float()])


class _Probe(nn.Module):
    """Called after a node's call in the instrumented forward: records its output figures."""

    def __init__(self, owner: "NodeStats") -> None:
        super().__init__()
        self.owner = [owner]  # a list: not registered as a submodule

    def forward(self, value: Any, slot: int) -> None:
        owner = self.owner[0]
        t = _output_tensor(value)
        if t is None:
            return
        with torch.no_grad():
            owner._outs[slot] = _output_vector(t, owner._saturation[slot])
            owner._hist_values[slot] = _strided(t).clone()  # a few values for its histogram, read after


def _instrumented(gm: fx.GraphModule, fx_nodes: dict[str, str], order: dict[str, int], probe: _Probe
                  ) -> tuple[fx.GraphModule, list[str]]:
    """A GraphModule running ``gm``'s graph with a probe call after every mapped node, and the probed node ids."""
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    probed: list[str] = []
    mapped = sorted((n for n in gm.graph.nodes if n.name in fx_nodes
                     and n.op in ("call_module", "call_function", "placeholder")),
                    key=lambda n: order.get(fx_nodes[n.name], 0))
    slot_of = {n: i for i, n in enumerate(mapped)}
    probed = [fx_nodes[n.name] for n in mapped]
    for node in gm.graph.nodes:
        if node.op == "output":
            g.output(fx.map_arg(node.args[0], lambda a: env[a]))
            continue
        env[node] = g.node_copy(node, lambda a: env[a])
        if node in slot_of:
            g.call_module("_netstudio_probe", (env[node], slot_of[node]))
    return sharing_module(gm, g, "NetStudioProbed", {"_netstudio_probe": probe}), probed


class NodeStats:
    """Samples per-node statistics of ``model`` every ``every`` steps (steps 1, every+1, 2·every+1, ...).

    ``model``: the module being trained (a GraphModule compiled from ``plan``; another module gets
    the parameter figures only). ``reduce``: combines the ranks' output figures under DDP (the
    strategy's :meth:`reduce_node_stats`); the identity in one process.
    """

    def __init__(self, model: nn.Module, plan: "TrainingPlan", every: int,
                 reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.model, self.every = model, every
        self.reduce = reduce
        compiled = plan.compiled
        graph = plan.graph
        order = {nid: i for i, nid in enumerate(compiled.analysis.order)}
        self.info: dict[str, NodeInfo] = {}
        for nid in compiled.analysis.order:
            if nid in graph.nodes:
                node = graph.nodes[nid]
                self.info[nid] = NodeInfo(nid, node.name, node.type_id)
        self._probe = _Probe(self)
        self._forward: Callable[..., Any] | None = None
        self._run_forward: Callable[..., Any] | None = None
        self.probed: list[str] = []
        fx_nodes = dict(getattr(compiled, "fx_nodes", {}) or {})
        inputs = [n for n in model.graph.nodes if n.op == "placeholder"] if isinstance(model, fx.GraphModule) else []
        if compiled.dataset_node is not None and len(inputs) == 1:
            fx_nodes[inputs[0].name] = compiled.dataset_node  # the features: NaN in the data shows here
        if isinstance(model, fx.GraphModule) and fx_nodes:
            try:
                inst, self.probed = _instrumented(model, fx_nodes, order, self._probe)
                self._forward = inst.forward
            except Exception:  # noqa: BLE001 - an unusual graph loses the output figures, not the run
                self._forward, self.probed = None, []
        self._saturation = [_SATURATING.get(self.info[n].type_id) if n in self.info else None for n in self.probed]
        self._outs: list[torch.Tensor | None] = [None] * len(self.probed)
        self._hist_values: list[torch.Tensor | None] = [None] * len(self.probed)
        # parameterised nodes (topological order) and their parameters
        self.param_nodes: list[tuple[str, list[nn.Parameter]]] = []
        for nid in sorted(compiled.module_names, key=lambda n: order.get(n, 0)):
            try:
                sub = model.get_submodule(compiled.module_names[nid])
            except AttributeError:
                continue
            params = [p for p in sub.parameters() if p.requires_grad]
            if params:
                self.param_nodes.append((nid, params))
        self._before: list[list[torch.Tensor]] = []
        self.samples: list[StatsSample] = []   # the last few (diagnoses look back one sample)
        self.first_nonfinite: tuple[StatsSample, str, str] | None = None

    # --- sampling -----------------------------------------------------------------
    def due(self, step: int) -> bool:
        """Is ``step`` (1-based global step) a sampled one?"""
        return self.every > 0 and (step - 1) % self.every == 0

    def begin(self) -> None:
        """Before the sampled step: the instrumented forward in place, the weights remembered."""
        self._outs = [None] * len(self.probed)
        self._hist_values = [None] * len(self.probed)
        self._before = [[p.detach().clone() for p in ps] for _, ps in self.param_nodes]
        if self._forward is not None:
            # a forward installed for the run (netstudio.compiler.reorder) comes back after the step
            self._run_forward = self.model.__dict__.get("forward")
            self.model.forward = self._forward

    def cancel(self) -> None:
        """Back to the forward the run uses (after the step, or when it raised)."""
        if self.model.__dict__.get("forward") is self._forward and self._forward is not None:
            if self._run_forward is not None:
                self.model.forward = self._run_forward
            else:
                del self.model.__dict__["forward"]

    def end(self, step: int, epoch: int) -> StatsSample:
        """After the sampled step (forward, backward, optimizer step): the figures as plain floats."""
        self.cancel()
        rows: list[torch.Tensor] = []
        grad_values: list[torch.Tensor] = []
        devs = [v.device for v in self._outs if v is not None] + [ps[0].device for _, ps in self.param_nodes]
        dev = devs[0] if devs else torch.device("cpu")
        width = len(OUT_KEYS)
        nan_row = torch.full((width,), math.nan, device=dev)
        outs = torch.stack([v if v is not None else nan_row for v in self._outs]) if self._outs else None
        if outs is not None and self.reduce is not None:
            outs = self.reduce(outs)  # the figures over all ranks; the histograms stay this rank's
        if outs is not None:
            rows.append(outs.reshape(-1))
        with torch.no_grad():
            for (_, ps), before in zip(self.param_nodes, self._before):
                w2 = torch.stack([p.detach().float().pow(2).sum() for p in ps]).sum()
                grads = [p.grad.detach().float().pow(2).sum() for p in ps if p.grad is not None]
                g2 = torch.stack(grads).sum() if grads else torch.zeros((), device=dev)
                u2 = torch.stack([(p.detach().float() - b.float()).pow(2).sum() for p, b in zip(ps, before)]).sum()
                b2 = torch.stack([b.float().pow(2).sum() for b in before]).sum()
                gs = [_strided(p.grad, HIST_VALUES // len(ps)) for p in ps if p.grad is not None]
                gvals = torch.cat(gs).float() if gs else torch.full((1,), math.nan, device=dev)
                grad_values.append(gvals)
                glo, ghi = torch.aminmax(gvals)
                rows.append(torch.stack([w2.sqrt(), g2.sqrt(), u2.sqrt() / b2.sqrt(), glo, ghi]).to(dev))
        self._before = []
        flat = torch.cat(rows).cpu().tolist() if rows else []   # the figures: one synchronisation
        hist_values, self._hist_values = self._hist_values, [None] * len(self.probed)
        self._outs = [None] * len(self.probed)
        sample = StatsSample(step, epoch)
        pos = 0
        sources: list[tuple[torch.Tensor, float, float]] = []   # histograms over the figures' ranges
        hist_keys: list[tuple[str, str]] = []
        for i, nid in enumerate(self.probed):
            vals = flat[pos + i * width: pos + (i + 1) * width]
            if all(math.isnan(v) for v in vals):
                continue  # no tensor output
            fig: dict[str, float | None] = {k: float(v) for k, v in zip(OUT_KEYS, vals)}
            if self._saturation[i] is None:
                fig["saturated"] = None
            sample.nodes[nid] = fig
            lo, hi, hv = vals[4], vals[5], hist_values[i]
            if hv is not None and math.isfinite(lo) and math.isfinite(hi):
                sources.append((hv, lo, hi))
                hist_keys.append((nid, "output"))
        pos += len(self.probed) * width
        for j, (nid, _) in enumerate(self.param_nodes):
            row = flat[pos + j * 5: pos + (j + 1) * 5]
            fig = sample.nodes.setdefault(nid, {})
            fig.update({k: float(v) for k, v in zip(PARAM_KEYS, row[:3])})
            if math.isfinite(row[3]) and math.isfinite(row[4]):
                sources.append((grad_values[j], row[3], row[4]))
                hist_keys.append((nid, "grad"))
        for (nid, key), hist in zip(hist_keys, _histograms(sources)):  # a second, smaller read-back
            sample.histograms.setdefault(nid, {})[key] = hist
        self.samples = (self.samples + [sample])[-3:]
        if self.first_nonfinite is None:
            origin = nan_origin(sample, self.probed, [n for n, _ in self.param_nodes])
            if origin is not None:
                self.first_nonfinite = (sample, origin[0], origin[1])
        return sample

    # --- reading ------------------------------------------------------------------
    def name(self, nid: str) -> str:
        info = self.info.get(nid)
        return info.name if info is not None else nid

    def diagnoses(self, sample: StatsSample) -> list[dict[str, Any]]:
        return diagnose(sample, self.info, [n for n, _ in self.param_nodes],
                        self.samples[-2] if len(self.samples) > 1 else None)

    def nan_message(self) -> str | None:
        """The divergence sentence naming the first node that produced NaN/Inf (None: none seen)."""
        if self.first_nonfinite is None:
            return None
        sample, nid, where = self.first_nonfinite
        earlier = [s for s in self.samples if s.step < sample.step]
        before = earlier[-1].nodes.get(nid, {}).get("grad_norm") if earlier else None
        info = self.info.get(nid)
        if info is not None and info.type_id.startswith("data."):
            return (f"NaN/Inf first appears in the features of '{info.name}' at step {sample.step} → check the "
                    "data for invalid values")
        text = f"NaN first appears at '{self.name(nid)}' {where} at step {sample.step}"
        if before is not None and math.isfinite(before):
            step_before = earlier[-1].step
            when = "the step before" if step_before == sample.step - 1 else f"at step {step_before}"
            text += f"; its gradient norm was {before:.3g} {when}"
        return text + " → lower the learning rate or add gradient clipping"


def nan_origin(sample: StatsSample, probed: list[str], param_nodes: list[str]) -> tuple[str, str] | None:
    """(node id, "output" | "gradient") of the first node with NaN/Inf in ``sample``; None if all finite.

    Outputs in the forward's order first; without a bad output, the gradient nearest the loss
    (backward runs from the last node to the first).
    """
    for nid in probed:
        fig = sample.nodes.get(nid, {})
        if (fig.get("nonfinite") or 0) > 0:
            return nid, "output"
    for nid in reversed(param_nodes):
        g = sample.nodes.get(nid, {}).get("grad_norm")
        if g is not None and not math.isfinite(g):
            return nid, "gradient"
    return None


def _problem(code: str, nid: str, message: str, hint: str, severity: str = "warning") -> dict[str, Any]:
    return {"code": code, "node_id": nid, "message": message, "hint": hint, "severity": severity}


def diagnose(sample: StatsSample, info: dict[str, NodeInfo], param_nodes: list[str],
             previous: StatsSample | None = None) -> list[dict[str, Any]]:
    """Findings of one sample, each with the node id and a fix hint (plain dicts; see the module text)."""
    found: list[dict[str, Any]] = []

    def name(nid: str) -> str:
        return info[nid].name if nid in info else nid

    for nid, fig in sample.nodes.items():
        type_id = info[nid].type_id if nid in info else ""
        zeros, sat = fig.get("zeros"), fig.get("saturated")
        if type_id in _RELUS and zeros is not None and zeros > DEAD_RELU_ZEROS:
            found.append(_problem("dead_relu", nid, f"'{name(nid)}' outputs zero for {zeros:.0%} of its values "
                                  "(dead ReLUs)", "lower the learning rate, check the bias of the layer before "
                                  "(a large negative bias kills ReLUs), or use LeakyReLU/GELU"))
        if sat is not None and sat > SATURATED_FRACTION:
            kind = _SATURATING.get(type_id, "activation")
            found.append(_problem("saturated", nid, f"'{name(nid)}' is saturated: {sat:.0%} of its {kind} outputs "
                                  "are at the flat ends", "normalise the inputs (BatchNorm before it), lower the "
                                  "learning rate, or use ReLU/GELU in hidden layers"))
        if (fig.get("nonfinite") or 0) > 0:
            found.append(_problem("nonfinite", nid, f"'{name(nid)}' outputs NaN/Inf "
                                  f"({int(fig['nonfinite'] or 0)} values)",
                                  "lower the learning rate or add gradient clipping", "error"))
    grads = [(nid, sample.nodes.get(nid, {}).get("grad_norm")) for nid in param_nodes]
    grads = [(nid, g) for nid, g in grads if g is not None]
    for nid, g in grads:
        assert g is not None
        if not math.isfinite(g) or g > EXPLODING_GRAD_NORM:
            found.append(_problem("exploding", nid, f"Exploding gradients at '{name(nid)}' (gradient norm {g:.3g})",
                                  "lower the learning rate or add gradient clipping", "error"))
    if len(grads) >= 2:
        (first, g0), (last, g1) = grads[0], grads[-1]
        assert g0 is not None and g1 is not None
        # a gradient of exactly zero is a dead path (dead ReLUs, "frozen"), not a vanishing one
        if math.isfinite(g0) and math.isfinite(g1) and g0 > 0 and g1 > 0 and g0 / g1 < VANISHING_RATIO:
            found.append(_problem("vanishing", first, f"Vanishing gradients: '{name(first)}' gets a gradient "
                                  f"{g0 / g1:.1e} times that of '{name(last)}'",
                                  "use ReLU/GELU instead of sigmoid/tanh, add BatchNorm or residual connections, "
                                  "or make the network shallower"))
    if previous is not None:  # the first sample's update is the first step's: judge from the second on
        for nid in param_nodes:
            r = sample.nodes.get(nid, {}).get("update_ratio")
            if r is not None and math.isfinite(r) and r < FROZEN_UPDATE_RATIO:
                found.append(_problem("frozen", nid, f"The weights of '{name(nid)}' do not change "
                                      f"(update/weight ratio {r:.1e})", "check its gradient (a dead ReLU after it "
                                      "stops it), the learning rate, or whether it is reachable from the loss"))
    return found


def jsonable_figures(nodes: dict[str, dict[str, float | None]]) -> dict[str, dict[str, Any]]:
    """The figures with NaN/Inf as the strings "nan", "inf", "-inf" (strict JSON has no such numbers)."""
    def conv(v: float | None) -> Any:
        if v is None or math.isfinite(v):
            return v
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return {nid: {k: conv(v) for k, v in fig.items()} for nid, fig in nodes.items()}

