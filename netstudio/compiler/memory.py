"""Memory needed by a model, estimated from shapes before anything is allocated.

Each layer is built on PyTorch's ``meta`` device (shapes and dtypes, no storage)
to count its parameters and buffers; activations come from the shape analysis.
For training, every trainable parameter also has a gradient and the optimizer
keeps a number of state tensors per parameter (Adam: two). The totals are
compared with the memory of the device (CPU: the RAM available now, within a
container's limit; CUDA: the GPU's memory) so that a model that cannot fit is
refused with the node that makes it too big, instead of failing inside the
allocator (or swapping the machine to a halt).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from netstudio.compiler.keys import freeze
from netstudio.errors import MemoryLimitError
from netstudio.nodes.base import Category, LayerType, ParameterType, TensorInfo
from netstudio.nodes.blocks import BLOCK_INPUT

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from netstudio.compiler.shapes import Analysis
    from netstudio.graph.model import Graph

_MODEL_CATEGORIES = (Category.LAYER, Category.ACTIVATION, Category.MERGE)
_DTYPE_BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2,
                "int8": 1, "uint8": 1, "bool": 1}
#: optimizer state tensors per parameter when a node type does not say (Adam's two moments)
DEFAULT_STATE_TENSORS = 2


@dataclass(frozen=True)
class NodeMemory:
    """Bytes one model node needs: its tensors and, for training, their companions."""

    node_id: str
    params: int  # parameter count (trainable and frozen)
    param_bytes: int
    buffer_bytes: int  # BatchNorm running statistics...
    grad_bytes: int  # one gradient per trainable parameter
    optimizer_bytes: int
    activation_bytes: int  # this node's outputs for one batch (kept for backward)

    @property
    def weights_bytes(self) -> int:
        return self.param_bytes + self.buffer_bytes

    @property
    def training_bytes(self) -> int:
        return self.weights_bytes + self.grad_bytes + self.optimizer_bytes + self.activation_bytes


@dataclass
class MemoryEstimate:
    batch_size: int
    nodes: dict[str, NodeMemory] = field(default_factory=dict)
    input_bytes: int = 0  # one batch of the dataset's features
    optimizer: str | None = None  # the optimizer's title, if the graph has one
    #: model nodes whose layer could not be built on the meta device (counted as 0 bytes)
    unknown: list[str] = field(default_factory=list)

    def _sum(self, attr: str) -> int:
        return sum(getattr(n, attr) for n in self.nodes.values())

    @property
    def params(self) -> int:
        return self._sum("params")

    @property
    def weights_bytes(self) -> int:
        return self._sum("weights_bytes")

    @property
    def grad_bytes(self) -> int:
        return self._sum("grad_bytes")

    @property
    def optimizer_bytes(self) -> int:
        return self._sum("optimizer_bytes")

    @property
    def activation_bytes(self) -> int:
        return self._sum("activation_bytes") + self.input_bytes

    @property
    def training_bytes(self) -> int:
        """Weights, gradients, optimizer state and one batch's activations."""
        return self.weights_bytes + self.grad_bytes + self.optimizer_bytes + self.activation_bytes

    def training_bytes_for(self, processes: int = 1) -> int:
        """Training with ``processes`` copies of the model on one device (CPU ranks of a job); the
        batch, and so the activations, is shared among them."""
        per_copy = self.weights_bytes + self.grad_bytes + self.optimizer_bytes
        return max(processes, 1) * per_copy + self.activation_bytes

    def biggest(self, attr: str = "training_bytes") -> NodeMemory | None:
        return max(self.nodes.values(), key=lambda n: getattr(n, attr), default=None)

    def summary(self) -> str:
        """``weights 3.1 MB, gradients 3.1 MB, optimizer state 6.2 MB (Adam), activations 1.2 MB
        (batch 64); training needs about 13.6 MB``"""
        opt = f" ({self.optimizer})" if self.optimizer else ""
        return (f"weights {fmt_bytes(self.weights_bytes)}, gradients {fmt_bytes(self.grad_bytes)}, "
                f"optimizer state {fmt_bytes(self.optimizer_bytes)}{opt}, activations "
                f"{fmt_bytes(self.activation_bytes)} (batch {self.batch_size}); training needs about "
                f"{fmt_bytes(self.training_bytes)}")


def fmt_bytes(n: float) -> str:
    """1536 → '1.5 KB' (powers of 1024, one decimal)."""
    n = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1024 or unit == "PB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"  # pragma: no cover


def _info_bytes(info: Any) -> int:
    if isinstance(info, TensorInfo) and info.dtype in _DTYPE_BYTES:
        n = 1
        for d in info.shape:
            n *= max(int(d), 0)
        return n * _DTYPE_BYTES[info.dtype]
    return 0


_layer_cache: dict[Any, tuple[int, int, int, int] | None] = {}


def layer_tensors(nt: LayerType, params: dict[str, Any], inputs: dict[str, Any]
                  ) -> tuple[int, int, int, int] | None:
    """(parameter count, parameter bytes, trainable parameter bytes, buffer bytes) of a layer,
    built on the meta device (nothing is allocated); None if it cannot be built there."""
    key = (nt.type_id, freeze(params), freeze(inputs))
    if key in _layer_cache:
        return _layer_cache[key]
    import torch

    try:
        with torch.device("meta"):
            module = nt.build(params, inputs)
        ps = list(module.parameters())
        out: tuple[int, int, int, int] | None = (
            sum(int(p.numel()) for p in ps),
            sum(int(p.numel()) * p.element_size() for p in ps),
            sum(int(p.numel()) * p.element_size() for p in ps if p.requires_grad),
            sum(int(b.numel()) * b.element_size() for b in module.buffers()))
    except Exception:  # noqa: BLE001 - a layer that cannot be built on meta: unknown, not a crash
        out = None
    if len(_layer_cache) > 5000:
        _layer_cache.clear()
    _layer_cache[key] = out
    return out


def layer_inputs(graph: "Graph", analysis: "Analysis", nid: str, nt: Any) -> dict[str, Any] | None:
    """What node ``nid`` of type ``nt`` receives, by input port (a list on multi ports); None if unknown."""
    return inputs_from_results(graph, analysis.results, nid, nt)


def inputs_from_results(graph: "Graph", results: dict[str, Any], nid: str, nt: Any) -> dict[str, Any] | None:
    """:func:`layer_inputs` from the analysis's per-node results (while the analysis is being made)."""
    inputs: dict[str, Any] = {}
    for e in graph.in_edges(nid):
        r = results.get(e.src)
        info = None if r is None else r.outputs.get(e.src_port)
        if info is None:
            return None
        port = nt.input_port(e.dst_port)
        if port is not None and port.multi:
            inputs.setdefault(e.dst_port, []).append(info)
        else:
            inputs[e.dst_port] = info
    return inputs


def optimizer_state_tensors(graph: "Graph", analysis: "Analysis") -> tuple[int, str | None]:
    """(state tensors per parameter, optimizer title) of the graph's optimizer; Adam's 2 without one."""
    for nid in analysis.order:
        node = graph.nodes[nid]
        nt = graph.catalog.get(node.type_id)
        if nt.category == Category.OPTIMIZER:
            res = analysis.results.get(nid)
            params = res.params if res is not None else dict(node.params)
            count = getattr(nt, "state_tensors", None)
            try:
                n = int(count(params)) if callable(count) else DEFAULT_STATE_TENSORS
            except (KeyError, TypeError, ValueError):
                n = DEFAULT_STATE_TENSORS
            return n, nt.title
    return DEFAULT_STATE_TENSORS, None


def estimate(graph: "Graph", analysis: "Analysis", node_ids: Iterable[str] | None = None) -> MemoryEstimate:
    """Memory of the model nodes of ``analysis`` (or of ``node_ids``) at its batch size."""
    state_n, opt_title = optimizer_state_tensors(graph, analysis)
    est = MemoryEstimate(analysis.batch_size, optimizer=opt_title)
    wanted = set(node_ids) if node_ids is not None else None
    for nid in analysis.order:
        if wanted is not None and nid not in wanted:
            continue
        node = graph.nodes[nid]
        nt = graph.catalog.get(node.type_id)
        res = analysis.results.get(nid)
        if nt.category == Category.DATA:
            if res is not None and "features" in res.outputs:  # (a Noise node's values are made in forward)
                est.input_bytes = _info_bytes(res.outputs.get("features"))
            continue
        if nt.category not in _MODEL_CATEGORIES or res is None or node.type_id == BLOCK_INPUT:
            continue  # (a block's input is the value that feeds it, counted where it is made)
        acts = sum(_info_bytes(v) for v in res.outputs.values())
        count = p_bytes = trainable = buffers = 0
        inner_an = res.extra.get("inner")
        if node.inner is not None and inner_an is not None:  # a block: the sum of its inner nodes
            sub = estimate(node.inner, inner_an)
            if sub.unknown:
                est.unknown.append(nid)
            count, p_bytes, buffers = sub.params, sub._sum("param_bytes"), sub._sum("buffer_bytes")
            trainable = sub._sum("grad_bytes")
            acts = sub._sum("activation_bytes")
        elif isinstance(nt, ParameterType):  # one float32 tensor of its output's shape
            count = int(math.prod(res.outputs["output"].shape)) if "output" in res.outputs else 0
            p_bytes = count * 4
            trainable = p_bytes
        elif isinstance(nt, LayerType):
            inputs = layer_inputs(graph, analysis, nid, nt)
            tensors = layer_tensors(nt, res.params, inputs) if inputs is not None else None
            if tensors is None:
                est.unknown.append(nid)
            else:
                count, p_bytes, trainable, buffers = tensors
        est.nodes[nid] = NodeMemory(nid, count, p_bytes, buffers, trainable, trainable * state_n, acts)
    return est


# ----------------------------------------------------------------------------
# What the device has
# ----------------------------------------------------------------------------


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_ram() -> int | None:
    """Bytes of RAM this process could still use: MemAvailable, within a cgroup (container) limit."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        avail = None
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = None
    for limit_f, usage_f in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                             ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                              "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_f), _read_int(usage_f)
        if limit is not None and usage is not None and limit < (1 << 60):
            room = max(limit - usage, 0)
            avail = room if avail is None else min(avail, room)
            break
    return avail


def device_memory(device: "torch.device | str") -> tuple[int | None, str]:
    """(bytes the device offers, how they were measured): CUDA: the GPU's total memory; CPU and
    others: the available RAM. None when it cannot be told (then nothing is refused)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        try:
            index = dev.index if dev.index is not None else torch.cuda.current_device()
            return int(torch.cuda.get_device_properties(index).total_memory), f"memory of cuda:{index}"
        except Exception:  # noqa: BLE001 - no driver, bad index: the device check reports it
            return None, "GPU memory"
    return available_ram(), "RAM available"


# ----------------------------------------------------------------------------
# Refusing what cannot fit
# ----------------------------------------------------------------------------


def _refuse(graph: "Graph", est: MemoryEstimate, attr: str, need: int, have: int, where: str,
            what: str) -> MemoryLimitError:
    worst = est.biggest(attr)
    node = graph.nodes.get(worst.node_id) if worst is not None else None
    if worst is None or node is None:
        return MemoryLimitError(f"{what} needs about {fmt_bytes(need)}, more than the {fmt_bytes(have)} of {where}",
                                hint="make the model smaller or reduce the batch size")
    title = graph.catalog.get(node.type_id).title
    share = getattr(worst, attr)
    alone = (f"{title} '{node.name}' alone needs {fmt_bytes(share)}"
             + (f" ({worst.params:,} parameters)" if worst.params else ""))
    if attr == "training_bytes" and worst.activation_bytes * 2 > share:
        hint = f"reduce the batch size ({est.batch_size}) or the size of '{node.name}''s output"
    else:  # its weights (and their gradients and optimizer state) are what is too big
        hint = f"make '{node.name}' smaller (fewer features, channels or units), or reduce its input first"
    return MemoryLimitError(f"{what} needs about {fmt_bytes(need)}, more than the {fmt_bytes(have)} of {where}: "
                            f"{alone}", node_id=worst.node_id, hint=hint)


def check_weights_fit(graph: "Graph", analysis: "Analysis", node_ids: Iterable[str] | None = None) -> None:
    """Raise MemoryLimitError when the model's weights alone cannot be allocated in RAM."""
    est = estimate(graph, analysis, node_ids)
    have = available_ram()
    if have is not None and est.weights_bytes > have:
        raise _refuse(graph, est, "weights_bytes", est.weights_bytes, have, "RAM available",
                      "Building the model")


def check_training_fits(graph: "Graph", analysis: "Analysis", device: "torch.device | str",
                        est: MemoryEstimate | None = None, processes: int = 1) -> MemoryEstimate:
    """The estimate; MemoryLimitError when training cannot fit on ``device`` (``processes``:
    ranks of a distributed job sharing it, each with its own copy of the model)."""
    est = est or estimate(graph, analysis)
    have, where = device_memory(device)
    need = est.training_bytes_for(processes)
    if have is not None and need > have:
        what = f"Training (batch {est.batch_size}" + (f", {processes} processes)" if processes > 1 else ")")
        raise _refuse(graph, est, "training_bytes", need, have,
                      f"{where} ({device})" if where == "RAM available" else where, what)
    return est
