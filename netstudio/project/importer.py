"""Import a PyTorch model as an editable NetStudio graph (flat, or one block per container module).

``import_module`` traces a model with torch.fx under a leaf-module policy: every module whose class a
catalog node type represents (``NodeType.torch_modules``) stays one call, and so does every torch /
torchvision module without children; containers are traced through (their layers appear flattened,
named after their module path: ``layer1.0.conv1`` -> ``layer1_0_conv1``). ShapeProp records every
shape. Each call becomes its catalog node (``params_from_module`` / ``from_call``), and what the catalog
lacks becomes an opaque node (``layer.torch_module`` / ``layer.torch_function``) that names the class or
function from the allow-list and keeps its constructor arguments, weights and shapes. With ``blocks`` the
nodes of each container module (the outermost one that is not a plain Sequential/ModuleList, recorded in
fx's ``nn_module_stack``) are grouped by ``MakeBlock`` into a block named after its path (``layer1_0``).
The result is compiled and run on the traced input and must give the model's outputs.

``import_spec`` reads ``torchvision:NAME`` (random init, seeded; never downloads) or a ``.pt2`` file
written by ``torch.export``. ``load_weights_onto`` puts a local state_dict onto a project's graph.
"""

from __future__ import annotations

import inspect
import json
import math
import operator
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.passes.shape_prop import ShapeProp

from netstudio.errors import NetStudioError
from netstudio.graph.model import Graph, sanitize_name
from netstudio.nodes import CATALOG, LayerType, NodeType
from netstudio.nodes.base import DimOf
from netstudio.nodes.torch_ops import INPUT_KEY, SIZE_KEY, is_allowed, not_allowed_message
from netstudio.project.io import Project
from netstudio.training.checkpoints import WeightsReport, load_weights_onto  # noqa: F401 (re-exported)


class ImportModelError(NetStudioError):
    """A model that cannot be imported; the message names the module or function."""


#: outputs of the imported graph must match the model's within this (absolute, on the traced input)
CHECK_TOLERANCE = 1e-4
#: attributes of a module that say nothing about how it computes
_IGNORED_ATTRS = frozenset({"training", "inplace"})
_SPACING_X, _SPACING_Y = 230.0, 110.0


@dataclass
class ImportResult:
    project: Project
    #: the weights keyed by the project's module names (what ``netstudio export --weights`` loads)
    state_dict: dict[str, torch.Tensor]
    #: one line per opaque node: "name: qualified name"
    opaque: list[str] = field(default_factory=list)
    #: largest absolute difference between the model's and the imported graph's outputs
    max_abs_diff: float = 0.0
    n_layers: int = 0
    #: remarks for the user (a module called twice whose shared weights become copies; a model with several
    #: outputs: the graph's order of them)
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------
# the mapping declared on the node types
# ----------------------------------------------------------------------------


#: where a function's public name is looked up first (a builtin's __module__ says torch._C._nn)
_PUBLIC_NAMESPACES = ("torch", "torch.nn.functional", "torch.special", "torch.linalg", "torch.fft")


def _qualname(obj: Any) -> str:
    name = getattr(obj, "__name__", None)
    if isinstance(name, str) and not isinstance(obj, type):
        for ns in _PUBLIC_NAMESPACES:
            if getattr(_resolve_plain(ns), name, None) is obj:
                return f"{ns}.{name}"
    mod = getattr(obj, "__module__", None) or ""
    mod = {"_operator": "operator", "torch._tensor": "torch"}.get(mod, mod)
    return f"{mod}.{getattr(obj, '__qualname__', getattr(obj, '__name__', repr(obj)))}"


def _public_name(cls: type) -> str:
    """``torch.nn.modules.conv.Conv2d`` -> ``torch.nn.Conv2d`` where that is the same class."""
    full = _qualname(cls)
    for short in (f"torch.nn.{cls.__name__}", f"torchvision.ops.{cls.__name__}"):
        parts = short.split(".")
        obj: Any = __import__(parts[0])
        try:
            for p in parts[1:]:
                obj = getattr(obj, p)
        except AttributeError:
            continue
        if obj is cls:
            return short
    return full


class _Mapping:
    """Torch classes and callables -> the catalog node types that represent them."""

    def __init__(self) -> None:
        self.modules: dict[str, type[NodeType]] = {}
        self.functions: dict[Any, type[NodeType]] = {}
        self.methods: dict[str, type[NodeType]] = {}
        for cls in CATALOG.types():
            # a type's own declarations only: a subclass (AdaptiveMaxPool2d of AdaptiveAvgPool2d) inherits them
            for name in vars(cls).get("torch_modules", ()):
                self.modules[name] = cls
            for name in vars(cls).get("torch_functions", ()):
                if name.startswith("Tensor."):
                    self.methods[name[len("Tensor."):]] = cls
                    continue
                obj = _resolve_plain(name)
                if obj is not None:
                    self.functions[obj] = cls

    def module_type(self, m: nn.Module) -> type[NodeType] | None:
        return self.modules.get(_public_name(type(m)))


def _resolve_plain(name: str) -> Any:
    import importlib

    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for p in parts[i:]:
                obj = getattr(obj, p)
        except AttributeError:
            return None
        return obj
    return None


def _norm(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        items = [_norm(x) for x in v]
        return items[0] if items and all(x == items[0] for x in items) else tuple(items)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _config(m: nn.Module) -> dict[str, Any]:
    """What a module computes with besides its weights: its plain attributes (normalized)."""
    out: dict[str, Any] = {}
    for k, v in vars(m).items():
        if k.startswith("_") or k in _IGNORED_ATTRS:
            continue
        if isinstance(v, (bool, int, float, str, type(None), tuple, list)):
            out[k] = _norm(v)
    out["__params__"] = {k: (tuple(p.shape) if p is not None else None) for k, p in m._parameters.items()}
    out["__buffers__"] = {k: (tuple(b.shape) if b is not None else None) for k, b in m._buffers.items()}
    return out


def same_module(a: nn.Module, b: nn.Module) -> bool:
    """True when ``a`` and ``b`` are the same class with the same settings and weight shapes."""
    return type(a) is type(b) and _config(a) == _config(b)


def _ctor_arguments(m: nn.Module) -> dict[str, Any]:
    """Constructor arguments of ``m`` read from same-named attributes (JSON values only)."""
    out: dict[str, Any] = {}
    sig = inspect.signature(type(m).__init__)
    for name, prm in list(sig.parameters.items())[1:]:
        if prm.kind in (prm.VAR_POSITIONAL, prm.VAR_KEYWORD) or name in ("device", "dtype"):
            continue
        if hasattr(m, name):
            v = getattr(m, name)
            if isinstance(v, (torch.Tensor, nn.Module)) or callable(v):
                if name == "bias" and (v is None or isinstance(v, torch.Tensor)):
                    out[name] = v is not None
                    continue
                raise ImportModelError(f"argument {name} is a {type(v).__name__}")
            out[name] = list(v) if isinstance(v, tuple) else v
        elif prm.default is inspect.Parameter.empty:
            raise ImportModelError(f"the required argument {name} is not an attribute of the module")
    try:
        json.dumps(out)
    except (TypeError, ValueError) as e:
        raise ImportModelError(f"an argument is not plain data ({e})") from None
    return out


# ----------------------------------------------------------------------------
# tracing
# ----------------------------------------------------------------------------


class _Tracer(fx.Tracer):
    def __init__(self, mapping: _Mapping, user: Any = None) -> None:
        super().__init__()
        self.mapping = mapping
        self.user = user  # a userfile.UserFile: its leaf classes stay one node each
        self.stack: list[str] = []
        self.failed_in: str | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if self.mapping.module_type(m) is not None:
            return True
        if self.user is not None and self.user.is_leaf(m):
            return True
        if next(m.children(), None) is None and is_allowed(_public_name(type(m))):
            return True  # torchvision's StochasticDepth...: one opaque node
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
        path = self.path_of_module(m)
        self.stack.append(path)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = path
            raise
        finally:
            self.stack.pop()


def trace(model: nn.Module, mapping: _Mapping | None = None, user: Any = None) -> fx.GraphModule:
    """The model as an fx GraphModule under the import's leaf policy; a clear error naming the
    module where symbolic tracing fails (data-dependent control flow)."""
    tracer = _Tracer(mapping or _Mapping(), user)
    try:
        graph = tracer.trace(model)
    except Exception as e:  # fx raises TraceError, TypeError, RuntimeError... from user code
        where = tracer.failed_in
        who = f"module '{where}' ({type(model.get_submodule(where)).__name__})" if where else \
            f"the model's own forward ({type(model).__name__})"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ImportModelError(
            f"{who} cannot be traced by torch.fx: {first}",
            hint="its forward probably branches on tensor values (data-dependent control flow); rewrite "
                 "that branch with torch.where, or export the model with torch.export and import the .pt2") from e
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


# ----------------------------------------------------------------------------
# fx graph -> NetStudio graph
# ----------------------------------------------------------------------------


def _dim_ref(v: Any) -> DimOf | None:
    """``t.shape[d]``, ``t.size(d)`` or ``t.size()[d]`` of a traced tensor ``t`` as ``DimOf(t, d)``."""
    if not isinstance(v, fx.Node):
        return None
    args: list[Any] = list(v.args)
    t: Any = None
    d: Any = None
    if v.op == "call_method" and v.target == "size" and len(args) == 2:
        t, d = args
    elif v.op == "call_function" and v.target is operator.getitem and isinstance(args[0], fx.Node):
        src, d = args
        inner: list[Any] = list(src.args)
        if src.op == "call_function" and src.target is getattr and inner[1:] == ["shape"]:
            t = inner[0]
        elif src.op == "call_method" and src.target == "size" and len(inner) == 1:
            t = inner[0]
    if not isinstance(d, int) or isinstance(d, bool) or not _is_tensor(t):
        return None
    rank = len(_tensor_meta(t).shape)
    return DimOf(t, d % rank) if -rank <= d < rank else None


def _with_dims(v: Any) -> Any:
    """A call's arguments with each size read from a tensor (``x.shape[0]``) as a :class:`DimOf`."""
    def dim(a: Any) -> Any:
        return _dim_ref(a) or a

    return fx.node.map_aggregate(v, dim)


def _tensor_meta(n: Any) -> Any:
    return n.meta.get("tensor_meta") if isinstance(n, fx.Node) else None


def _is_tensor(v: Any) -> bool:
    return isinstance(v, fx.Node) and isinstance(_tensor_meta(v), torch.fx.passes.shape_prop.TensorMetadata)


def _where(n: fx.Node) -> str:
    """" in module 'layer1.0' (BasicBlock)" for a call traced inside a submodule's forward, else ""."""
    stack = n.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path, cls = list(stack.values())[-1]
    return f" in module '{path}' ({getattr(cls, '__name__', cls)})"


def _dtype(meta: Any) -> str:
    return str(meta.dtype).removeprefix("torch.")


class _Builder:
    def __init__(self, gm: fx.GraphModule, mapping: _Mapping, user: Any = None) -> None:
        self.gm = gm
        self.mapping = mapping
        self.user = user
        self.graph = Graph(CATALOG)
        self.values: dict[fx.Node, tuple[str, str]] = {}   # fx value -> (node id, port)
        self.weights: dict[str, nn.Module] = {}            # node id -> the module whose weights it takes
        self.opaque: list[str] = []
        self.input_id: str | None = None
        self.owner: dict[str, tuple[str, ...]] = {}        # node id -> the containers it ran in, outermost first
        self.parameters: dict[str, torch.Tensor] = {}      # Parameter node id -> the tensor it holds
        #: a buffer or constant the forward reads (get_attr): a module call may take it as a constant argument
        #: (a causal attention mask); anything else that uses it fails in _wire with _constant_error
        self.constants: dict[fx.Node, torch.Tensor] = {}
        #: module path -> how often the model calls it (a module called twice shares its weights in the model)
        self.module_calls: dict[str, int] = {}
        #: a module call whose result is a tuple (attention: (output, weights)) -> (node id, {index path: port})
        self.tuples: dict[fx.Node, tuple[str, dict[tuple[int, ...], str]]] = {}

    def _note_owner(self, n: fx.Node) -> None:
        """Remember the containers (not plain Sequential/ModuleList) that ``n`` ran inside, outermost first."""
        stack = list(n.meta.get("nn_module_stack", {}).values())
        if n.op == "call_module" and stack:
            stack = stack[:-1]  # the module itself is the node, not its container
        chain = []
        for entry in stack:
            path, cls = entry if isinstance(entry, tuple) else (entry, None)
            if isinstance(cls, type) and cls not in (nn.Sequential, nn.ModuleList, nn.ModuleDict):
                chain.append(str(path))
        nid = self.values.get(n, (None,))[0]
        if chain and nid is not None:
            self.owner[nid] = tuple(chain)

    # -- helpers --
    def _add(self, type_id: str, params: Mapping[str, Any], name: str) -> str:
        return self.graph.add_node(type_id, params, name=sanitize_name(name)).id

    def _wire(self, nid: str, ports: Mapping[str, Any], what: str) -> None:
        for port, v in ports.items():
            for x in (v if isinstance(v, list) else [v]):
                if x in self.constants:
                    raise self._constant_error(x)
                if x not in self.values:
                    raise ImportModelError(f"{what} uses '{x}', which is not a tensor of the model "
                                           "(a computed size or a parameter used directly)",
                                           hint="such computations cannot be drawn as a graph yet")
                src, sport = self.values[x]
                self.graph.connect(src, sport, nid, port)

    def _shapes(self, n: fx.Node) -> tuple[list[int], str]:
        meta = _tensor_meta(n)
        if not isinstance(meta, torch.fx.passes.shape_prop.TensorMetadata):
            raise ImportModelError(f"'{n.name}' ({n.format_node()}) does not give one tensor",
                                   hint="operations with several or non-tensor results cannot be drawn yet")
        shape = list(meta.shape)
        if len(shape) < 1:
            raise ImportModelError(f"'{n.name}' gives a scalar; only per-sample tensors can be drawn")
        return shape, _dtype(meta)

    def _opaque_shapes(self, n: fx.Node, first: Any) -> dict[str, Any]:
        out, dtype = self._shapes(n)
        if len(out) < 2:
            raise ImportModelError(f"'{n.name}' gives one value per sample ({out}); only tensors with per-sample "
                                   "dimensions can be kept as opaque nodes")
        ins = list(_tensor_meta(first).shape[1:]) if _is_tensor(first) else []
        return {"input_shape": ins, "output_shape": out[1:], "output_dtype": dtype}

    # -- node kinds --
    def parameter(self, n: fx.Node) -> None:
        """A parameter the forward uses directly (a ViT's ``class_token``): a Parameter node named after
        its path, holding its value."""
        target = str(n.target)
        try:
            value = self.gm.get_parameter(target)
        except AttributeError:
            value = None
        if not isinstance(value, torch.Tensor):
            const: Any = self.gm
            for part in target.split("."):
                const = getattr(const, part, None)
            if not isinstance(const, torch.Tensor):
                raise self._constant_error(n)
            self.constants[n] = const.detach()
            return
        if value.dtype != torch.float32 or value.dim() < 1:
            raise ImportModelError(f"the parameter '{target}' is a {value.dtype} tensor of shape "
                                   f"{tuple(value.shape)}; Parameter nodes hold float32 tensors with dimensions")
        nid = self._add("layer.parameter", {"shape": list(value.shape), "init": "zeros"}, target.replace(".", "_"))
        self.graph.set_trainable(nid, value.requires_grad)
        self.parameters[nid] = value.detach()
        self.values[n] = (nid, "output")

    @staticmethod
    def _constant_error(n: fx.Node) -> ImportModelError:
        return ImportModelError(f"the model uses its buffer or constant '{n.target}' directly in its forward "
                                "(outside a layer)",
                                hint="only parameters (nn.Parameter) can be kept as Parameter nodes, and a "
                                     "constant only as a layer's argument the layer's node can express (a causal "
                                     "attention mask)")

    def placeholder(self, n: fx.Node) -> None:
        if self.input_id is not None:
            raise ImportModelError("the model takes more than one input; NetStudio graphs have one input")
        shape, dtype = self._shapes(n)
        if dtype not in ("float32", "float64", "float16", "int64"):
            raise ImportModelError(f"the model input has dtype {dtype}, which an Input node cannot hold")
        self.input_id = self._add("data.input", {"shape": shape[1:], "dtype": dtype}, "input")
        self.values[n] = (self.input_id, "features")

    def call_module(self, n: fx.Node) -> None:
        m = self.gm.get_submodule(str(n.target))
        self.module_calls[str(n.target)] = self.module_calls.get(str(n.target), 0) + 1
        name = str(n.target).replace(".", "_")
        cls = self.mapping.module_type(m)
        nt = CATALOG.get(cls.type_id) if cls is not None else None
        why = ""  # why the catalog node cannot stand for this call
        if cls is not None and isinstance(nt, LayerType):
            try:
                # a buffer passed to the call (an attention mask) arrives as its value
                cargs, ckwargs = fx.node.map_aggregate((n.args, n.kwargs), self._constant_value)
                ports = nt.from_module_call(cargs, ckwargs, _is_tensor)
                params = cls.params_from_module(m)
                built = nt.build(params, {})
                params = cls.validate_params({**params, **nt.module_call_params(cargs, ckwargs)})
            except (ValueError, NetStudioError) as e:
                built, why = None, f"{cls.title} node: {e}"
            if built is not None and same_module(built, m):
                nid = self._add(cls.type_id, params, name)
                self._wire(nid, ports, name)
                self.weights[nid] = m
                self._module_result(n, nid, nt, params)
                return
        self._opaque_module(n, m, name, why)

    def _constant_value(self, v: Any) -> Any:
        return self.constants.get(v, v) if isinstance(v, fx.Node) else v

    def _module_result(self, n: fx.Node, nid: str, nt: LayerType, params: Mapping[str, Any]) -> None:
        """What the call ``n`` of node ``nid`` gives: its output port, or, where the module returns a tuple
        (the node's output ports take items of it: ``output_steps``), the ports by index path, which the
        model's ``result[0]`` then picks (:meth:`_tuple_item`)."""
        paths: dict[tuple[int, ...], str] = {}
        for port, steps in nt.output_steps(params).items():
            if not steps:
                self.values[n] = (nid, port)
                return
            path = []
            for fn, args, kwargs in steps:
                if fn is not operator.getitem or kwargs or len(args) != 2 or not isinstance(args[1], int):
                    break
                path.append(args[1])
            else:
                paths[tuple(path)] = port
        self.tuples[n] = (nid, paths)

    def _tuple_item(self, n: fx.Node) -> bool:
        """``result[i]`` of a module call that returned a tuple: the node's port that gives it (or a shorter
        tuple, an LSTM's (h_n, c_n)). False when ``n`` is no such item."""
        src = n.args[0] if n.op == "call_function" and n.target is operator.getitem and len(n.args) == 2 else None
        if not isinstance(src, fx.Node) or src not in self.tuples or not isinstance(n.args[1], int):
            return False
        nid, paths = self.tuples[src]
        i = n.args[1]
        sub = {p[1:]: port for p, port in paths.items() if p[0] == i}
        if () in sub:
            self.values[n] = (nid, sub[()])
        elif sub:
            self.tuples[n] = (nid, sub)
        elif n.users:
            raise ImportModelError(f"'{n.name}'{_where(n)} uses item {i} of the result of "
                                   f"'{self.graph.nodes[nid].name}', which its node does not give",
                                   hint="such a result cannot be drawn as a graph yet")
        return True

    def _opaque_module(self, n: fx.Node, m: nn.Module, name: str, why: str = "") -> None:
        user = self.user.reference(m) if self.user is not None else None  # a class of the user's file (userfile.py)
        qual = _public_name(type(m)) if user is None else user["qualname"]
        if user is None and not is_allowed(qual):
            raise ImportModelError(f"module '{n.target}' ({qual}): {not_allowed_message(qual)}",
                                   hint="only torch and torchvision modules can be kept as opaque nodes")
        if len(n.args) != 1 or n.kwargs or not _is_tensor(n.args[0]):
            raise ImportModelError(f"module '{n.target}' ({qual}) is called with {len(n.args)} arguments"
                                   f"{' and keywords' if n.kwargs else ''}; opaque modules take one tensor"
                                   f"{f' (the catalog {why})' if why else ''}",
                                   hint="a catalog node for this module is needed")
        try:
            args = _ctor_arguments(m)
            rebuilt = type(m)(**args)
        except Exception as e:  # noqa: BLE001 - any constructor failure means: cannot be rebuilt
            raise ImportModelError(f"module '{n.target}' ({qual}) cannot be rebuilt from its constructor "
                                   f"arguments: {e}", hint="a catalog node for this module is needed") from None
        if not same_module(rebuilt, m):
            raise ImportModelError(f"module '{n.target}' ({qual}) differs from one rebuilt from its constructor "
                                   "arguments (it was changed after construction)",
                                   hint="a catalog node for this module is needed")
        params = {"module": qual, "arguments": json.dumps(args, sort_keys=True), **self._opaque_shapes(n, n.args[0])}
        if user is not None:  # file, sha256, qualname instead of an allow-listed name
            params = {**user, **{k: v for k, v in params.items() if k != "module"}}
        nid = self._add("layer.torch_module" if user is None else "layer.user_module", params, name)
        self._wire(nid, {"input": n.args[0]}, name)
        self.weights[nid] = m
        self.opaque.append(f"{self.graph.nodes[nid].name}: {qual if user is None else self.user.label(m)}")
        self.values[n] = (nid, "output")

    def call_function(self, n: fx.Node) -> None:
        if self._tuple_item(n):
            return
        if n.op == "call_method":
            qual = f"Tensor.{n.target}"
            cls = self.mapping.methods.get(str(n.target))
        else:
            qual = _qualname(n.target)
            cls = self.mapping.functions.get(n.target)
        if not _is_tensor(n):
            return  # a size or a tuple: a Reshape uses its traced shape instead; any other use fails when wired
        out_shape, _ = self._shapes(n)
        if cls is not None:
            try:
                args, kwargs = _with_dims(n.args), _with_dims(n.kwargs)
                params, ports = cls.from_call(args, kwargs, _is_tensor, out_shape)
            except (ValueError, NetStudioError):
                ports = None
            if ports is not None:
                nid = self._add(cls.type_id, params, n.name)
                self._wire(nid, ports, n.name)
                self.values[n] = (nid, CATALOG.get(cls.type_id).outputs[0].name)
                return
        self._opaque_function(n, qual)

    def _opaque_function(self, n: fx.Node, qual: str) -> None:
        if not is_allowed(qual):
            raise ImportModelError(f"'{n.name}'{_where(n)} calls {qual}: {not_allowed_message(qual)}",
                                   hint="only torch and torchvision functions can be kept as opaque nodes")
        tensors: list[fx.Node] = []

        def enc(v: Any) -> Any:
            ref = _dim_ref(v)
            if ref is not None:  # x.shape[0]: read when the model runs (any batch size)
                if ref.value not in tensors:
                    tensors.append(ref.value)
                return {SIZE_KEY: [tensors.index(ref.value), ref.dim]}
            if isinstance(v, fx.Node):
                if not _is_tensor(v):
                    raise ImportModelError(f"'{n.name}' ({qual}) computes with '{v.name}', a value derived from "
                                           "tensor sizes or a tensor tuple",
                                           hint="such computations cannot be drawn as a graph yet")
                if v not in tensors:
                    tensors.append(v)
                return {INPUT_KEY: tensors.index(v)}
            if isinstance(v, (list, tuple)):
                return [enc(x) for x in v]
            if isinstance(v, dict):
                return {str(k): enc(x) for k, x in v.items()}
            if isinstance(v, (bool, int, str)) or v is None or (isinstance(v, float) and math.isfinite(v)):
                return v
            raise ImportModelError(f"'{n.name}' ({qual}) has an argument of type {type(v).__name__} "
                                   "that a project cannot store")

        rec = {"args": enc(list(n.args)), "kwargs": enc(dict(n.kwargs))}
        if not tensors:
            raise ImportModelError(f"'{n.name}' ({qual}) has no tensor input (a constant)")
        params = {"function": qual, "arguments": json.dumps(rec), **self._opaque_shapes(n, tensors[0])}
        nid = self._add("layer.torch_function", params, n.name)
        self._wire(nid, {"inputs": tensors}, n.name)
        self.opaque.append(f"{self.graph.nodes[nid].name}: {qual}")
        self.values[n] = (nid, "output")

    def shared_modules(self) -> list[str]:
        """One remark per module with weights (or buffers) that the model calls more than once: each call is a
        node of its own with a copy of them, trained separately."""
        notes = []
        for path, calls in self.module_calls.items():
            m = self.gm.get_submodule(path)
            if calls > 1 and next(iter([*m.parameters(), *m.buffers()]), None) is not None:
                notes.append(f"module '{path}' ({type(m).__name__}) is called {calls} times and shares its weights "
                             f"between the calls; the graph has {calls} nodes with a copy of them each, which training "
                             "updates separately (the weight sharing is not kept)")
        return notes

    def build(self) -> list[tuple[str, str]]:
        """Add every node; returns the (node id, port) of each of the model's outputs, in its order."""
        outs: list[tuple[str, str]] = []
        for n in self.gm.graph.nodes:
            if n.op == "placeholder":
                self.placeholder(n)
            elif n.op == "get_attr":
                if any(True for _ in n.users):
                    self.parameter(n)
                    self._note_owner(n)
            elif n.op == "call_module":
                self.call_module(n)
                self._note_owner(n)
            elif n.op in ("call_function", "call_method"):
                self.call_function(n)
                self._note_owner(n)
            elif n.op == "output":
                res = n.args[0]
                items = list(res) if isinstance(res, (tuple, list)) else [res]
                if not items or any(not isinstance(r, fx.Node) or r not in self.values for r in items):
                    raise ImportModelError("the model returns something other than tensors (a dict, a nested "
                                           "tuple or a value that is not a tensor)",
                                           hint="NetStudio graphs give one tensor or a tuple of tensors")
                outs = [self.values[r] for r in items]
        assert outs
        return outs


def _output_nodes(graph: Graph, outs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A model with several outputs: one Identity node ``output_i`` after each, so each is a node that feeds
    nothing (what a graph's outputs are) even where the model also computes on with it or returns it twice."""
    ids = []
    for i, (nid, port) in enumerate(outs):
        out = graph.add_node("layer.identity", {}, name=f"output_{i}").id
        graph.connect(nid, port, out, "input")
        ids.append((out, "output"))
    return ids


def _compare_outputs(want: Any, got: Any, order: list[int]) -> float:
    """Largest difference between the model's outputs ``want`` and the compiled graph's ``got``, where the
    graph's j-th output is the model's ``order[j]``-th; inf where a shape differs."""
    wants = list(want) if isinstance(want, (tuple, list)) else [want]
    gots = list(got) if isinstance(got, (tuple, list)) else [got]
    if len(gots) != len(order) or sorted(order) != list(range(len(wants))):
        return math.inf
    diff = 0.0
    for j, i in enumerate(order):
        w, g = wants[i], gots[j]
        if w.shape != g.shape:
            return math.inf
        diff = max(diff, float((w - g).abs().max()) if w.numel() else 0.0)
    return diff


def _layout(graph: Graph) -> None:
    """Layered left to right by longest path; parallel branches stacked."""
    order = graph.topological_order()
    level: dict[str, int] = {}
    for nid in order:
        level[nid] = max((level[e.src] + 1 for e in graph.in_edges(nid)), default=0)
    rows: dict[int, int] = {}
    for nid in order:
        lv = level[nid]
        row = rows.get(lv, 0)
        rows[lv] = row + 1
        graph.move_node(nid, (lv * _SPACING_X, row * _SPACING_Y))


def _make_blocks(graph: Graph, owner: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    """Group the nodes of each container module into one block named after its path (``layer1.0`` ->
    ``layer1_0``, its layers renamed ``conv1``...), the innermost containers first, so a container inside
    another is a block inside its block (a ViT's ``encoder`` holds ``layers_encoder_layer_0``...); a group
    MakeBlock refuses stays flat. Returns node id -> the compiled module key of every grouped node
    (``block id/node id``, ``outer id/inner id/node id`` for nested blocks)."""
    from netstudio.errors import GraphError
    from netstudio.graph.commands import MakeBlock

    groups: dict[str, list[str]] = {}
    depth: dict[str, int] = {}
    for nid, chain in owner.items():
        for d, path in enumerate(chain):
            groups.setdefault(path, []).append(nid)
            depth[path] = d
    top = {nid: nid for nid in owner}   # each grouped node -> the node standing for it in the outer graph now
    keys: dict[str, str] = {}
    for path in sorted(groups, key=lambda p: -depth[p]):  # stable: same depth in first-use order
        members = list(dict.fromkeys(top[nid] for nid in groups[path]))
        bname = sanitize_name(path.replace(".", "_"))
        cmd = MakeBlock(node_ids=members, name=bname)
        try:
            cmd.redo(graph)
        except GraphError:
            continue
        assert cmd.block_id is not None
        inner = graph.nodes[cmd.block_id].inner
        assert inner is not None
        prefix = bname + "_"
        last = sanitize_name(path.rsplit(".", 1)[-1])
        for inid, node in list(inner.nodes.items()):
            short = node.name.removeprefix(prefix)
            if short and short[0].isdigit():  # a Sequential's item: mlp_0 rather than 0
                short = f"{last}_{short}"
            if short != node.name and short and not short[0].isdigit() \
                    and all(o.name != short for o in inner.nodes.values()):
                inner.rename_node(inid, short)
        _layout(inner)
        for nid in groups[path]:
            keys[nid] = f"{cmd.block_id}/{keys.get(nid, nid)}"
            top[nid] = cmd.block_id
    return keys


def import_module(model: nn.Module, example: torch.Tensor, *, name: str = "Imported model",
                  training_head: bool = True, blocks: bool = False, user: Any = None) -> ImportResult:
    """Import ``model`` (in eval mode) traced on ``example`` (with batch dimension). ``blocks``: each
    container module (a ResNet's ``layer1.0``) becomes one block node instead of flattened layers.
    ``user``: the ``userfile.UserFile`` a model from the user's Python file was loaded from."""
    from netstudio.compiler.build import compile_model

    model.eval()
    mapping = _Mapping()
    gm = trace(model, mapping, user)
    with torch.no_grad():
        ShapeProp(gm).propagate(example)
    b = _Builder(gm, mapping, user)
    outs = b.build()
    graph = b.graph
    if len(outs) > 1:
        outs = _output_nodes(graph, outs)
    out_id = outs[0][0]
    out_info = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    out_info = out_info.meta.get("tensor_meta") if isinstance(out_info, fx.Node) else None
    if training_head and len(outs) == 1 and isinstance(out_info, torch.fx.passes.shape_prop.TensorMetadata) \
            and len(out_info.shape) == 2 and out_info.dtype.is_floating_point and b.input_id:
        # a classifier: a loss and an optimizer make it a project ready to fine-tune
        loss = graph.add_node("loss.cross_entropy", {}, name="loss").id
        graph.connect(out_id, outs[0][1], loss, "prediction")
        graph.connect(b.input_id, "target", loss, "target")
        opt = graph.add_node("optim.adam", {}, name="optimizer").id
        graph.connect(loss, "loss", opt, "loss")
    keys = _make_blocks(graph, b.owner) if blocks else {}
    _layout(graph)
    project = Project(graph=graph, name=name)
    compiled = compile_model(graph, project.training.batch_size)
    for nid, m in b.weights.items():
        target = compiled.module.get_submodule(compiled.module_names[keys.get(nid, nid)])
        target.load_state_dict(m.state_dict(), strict=True)
    with torch.no_grad():
        for nid, value in b.parameters.items():
            compiled.module.get_parameter(compiled.parameter_names[keys.get(nid, nid)]).copy_(value)
    compiled.module.eval()
    with torch.no_grad():
        want = model(example)
        got = compiled.module(example)
    position = {key: i for i, key in enumerate(outs)}
    # one output: the graph's only output (also where a block now gives it)
    order = [0] if len(outs) == len(compiled.outputs) == 1 else [position.get(key, -1) for key in compiled.outputs]
    diff = _compare_outputs(want, got, order)
    scale = max([1.0] + [float(w.abs().max()) for w in (want if isinstance(want, (tuple, list)) else [want])
                         if w.numel()])
    if not diff <= CHECK_TOLERANCE * scale:
        raise ImportModelError(f"the imported graph does not reproduce the model's outputs (largest difference "
                               f"{diff:.3g})", hint="please report this model: an operation was mapped wrongly")
    notes = b.shared_modules()
    if order != sorted(order):
        names = ", ".join(graph.nodes[compiled.outputs[j][0]].name for j in range(len(order)))
        notes.append(f"the graph gives the model's outputs in the order {names} (its nodes feed nothing; the "
                     "model returns them as output_0, output_1...)")
    state = {k: v.detach().clone() for k, v in compiled.module.state_dict().items()}
    return ImportResult(project, state, b.opaque, diff, len(b.weights), notes)


# ----------------------------------------------------------------------------
# SPEC: torchvision:NAME, model.pt2
# ----------------------------------------------------------------------------

_TORCHVISION_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def torchvision_model(name: str, *, seed: int = 0, weights: str | Path | None = None) -> nn.Module:
    """A torchvision classification architecture, randomly initialised (seeded) or with a local state_dict;
    never downloads."""
    import torchvision.models as tvm  # type: ignore[import-untyped]

    if not _TORCHVISION_RE.match(name) or name not in tvm.list_models(module=tvm):
        known = ", ".join(sorted(tvm.list_models(module=tvm))[:12])
        raise ImportModelError(f"torchvision has no classification model named {name!r}",
                               hint=f"use one of torchvision.models.list_models(), e.g. {known}")
    torch.manual_seed(seed)
    model = tvm.get_model(name, weights=None)
    if weights is not None:
        state = read_state_dict(weights)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise ImportModelError(f"{Path(weights).name} does not fit torchvision's {name}: "
                                   f"{str(e).splitlines()[0]}") from None
    return model.eval()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from a local file, read with ``weights_only=True`` (a NetStudio weights file too)."""
    from netstudio.project.export import read_weights

    _, state = read_weights(path)
    return state


def _parse_shape(text: str | Sequence[int] | None) -> list[int] | None:
    if text is None:
        return None
    if isinstance(text, str):
        try:
            shape = [int(p) for p in text.replace("x", ",").split(",") if p.strip()]
        except ValueError:
            raise ImportModelError(f"input shape {text!r} is not a list of whole numbers like 1,3,224,224") from None
    else:
        shape = [int(v) for v in text]
    if len(shape) < 2 or min(shape) < 1:
        raise ImportModelError(f"input shape {text!r} needs a batch and at least one more positive size")
    return shape


def import_spec(spec: str, *, input_shape: str | Sequence[int] | None = None, weights: str | Path | None = None,
                seed: int = 0, blocks: bool = False, trust: bool = False, args: str | None = None) -> ImportResult:
    """Import ``torchvision:NAME``, a ``.pt2`` file (see module docstring) or ``path/model.py:ClassName``
    (netstudio/project/userfile.py: runs the file, so only with ``trust``; ``args``: its JSON kwargs)."""
    shape = _parse_shape(input_shape)
    from netstudio.project import userfile

    if userfile.is_user_spec(spec):
        user_model, user, example = userfile.prepare(spec, input_shape=shape, seed=seed, trust=trust, args=args)
        if weights is not None:
            try:
                user_model.load_state_dict(read_state_dict(weights))
            except RuntimeError as e:
                raise ImportModelError(f"{Path(weights).name} does not fit {spec}: {str(e).splitlines()[0]}") from None
        return import_module(user_model, example, name=type(user_model).__name__, blocks=blocks, user=user)
    if spec.startswith("torchvision:"):
        name = spec.split(":", 1)[1]
        model = torchvision_model(name, seed=seed, weights=weights)
        shape = shape or [1, 3, 224, 224]
        gen = torch.Generator().manual_seed(seed)
        example = torch.randn(*shape, generator=gen)
        return import_module(model, example, name=name, blocks=blocks)
    path = Path(spec)
    if path.suffix == ".pt2":
        module, example = _pt2_module(path, shape)
        if weights is not None:
            module.load_state_dict(read_state_dict(weights))
        return import_module(module, example, name=path.stem, blocks=blocks)
    raise ImportModelError(f"{spec!r} is not an import source NetStudio knows",
                           hint="use torchvision:NAME (e.g. torchvision:resnet18), a .pt2 file from torch.export "
                                "or path/model.py:ClassName")


def _pt2_module(path: Path, shape: list[int] | None) -> tuple[nn.Module, torch.Tensor]:
    """The module saved by ``torch.export.save``, with its layers as torch modules again."""
    if not path.is_file():
        raise ImportModelError(f"No such file: {path}")
    try:
        ep = torch.export.load(path)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a file that is not a .pt2
        raise ImportModelError(f"{path.name} is not a torch.export program NetStudio can read: {e}") from None
    from netstudio.project.pt2 import module_from_program

    module = module_from_program(ep)
    if shape is None:
        placeholders = [s for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
        metas = [n.meta.get("val") for n in ep.graph.nodes if n.op == "placeholder"
                 and n.name in {s.arg.name for s in placeholders}]
        if len(metas) != 1 or metas[0] is None:
            raise ImportModelError(f"{path.name} takes {len(metas)} inputs; NetStudio graphs have one")
        dims = list(metas[0].shape)
        if any(not isinstance(d, int) for d in dims[1:]):
            raise ImportModelError(f"{path.name} has a dynamic size beyond the batch dimension",
                                   hint="pass --input-shape with the sizes to trace it with")
        shape = [d if isinstance(d, int) else 2 for d in dims]  # a dynamic batch: traced with 2
    return module, torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def import_to_files(spec: str, out: str | Path, *, weights_out: str | Path | None = None,
                    input_shape: str | Sequence[int] | None = None, weights: str | Path | None = None,
                    seed: int = 0, blocks: bool = False, trust: bool = False,
                    args: str | None = None) -> tuple[ImportResult, Path, Path]:
    """Import ``spec`` and write the project to ``out`` and its weights (a NetStudio weights file, safe to
    load, for ``netstudio export --weights``) to ``weights_out`` (default: ``out`` with ``.pt``).
    Returns (result, project path, weights path). Refuses to overwrite an input file."""
    from netstudio.compiler.build import compile_model
    from netstudio.project.export import export_weights
    from netstudio.project.io import save_project

    out = Path(out)
    if not out.suffix:
        out = out.with_suffix(".nsproj")
    w_out = Path(weights_out) if weights_out is not None else out.with_suffix(".pt")
    from netstudio.project.userfile import spec_file

    inputs = [Path(p).resolve() for p in (spec_file(spec) or spec, weights) if p and Path(p).exists()]
    for t in (out, w_out):
        if t.resolve() in inputs:
            raise ImportModelError(f"refusing to overwrite the input file {t}", hint="choose another output name")
    if out.resolve() == w_out.resolve():
        raise ImportModelError("the project and its weights would be the same file", hint="choose another name")
    result = import_spec(spec, input_shape=input_shape, weights=weights, seed=seed, blocks=blocks, trust=trust,
                         args=args)
    project = result.project
    compiled = compile_model(project.graph, project.training.batch_size)
    compiled.module.load_state_dict(result.state_dict)
    if w_out.parent.resolve() == out.parent.resolve():
        project.weights = w_out.name  # beside the project: the app loads them when it opens the project
    save_project(project, out)
    export_weights(compiled, project, w_out)
    return result, out, w_out


# ----------------------------------------------------------------------------
# weights onto an existing graph
# ----------------------------------------------------------------------------


