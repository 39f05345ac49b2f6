"""Opaque nodes: a torch/torchvision module or function the catalog has no node type for.

An imported model keeps what the catalog lacks (torchvision's StochasticDepth, ``nn.Hardsigmoid``,
``x.mean((2, 3))``) as one of these nodes. The node references the class or function by its
qualified name from an allow-list and rebuilds it from JSON constructor arguments: a project
never holds pickled code. The shapes it was imported with are its declared shapes, so the editor
checks its neighbours without running it.
"""

from __future__ import annotations

import importlib
import json
from typing import Any, Mapping

from netstudio.errors import CompileError
from netstudio.nodes.base import (Category, FunctionType, InferContext, LayerType, Param, Port, PortKind, PortRef,
                                  TensorInfo, register, size_of)

#: packages whose modules and functions a project may reference by name
ALLOWED_PREFIXES = ("torch.", "torchvision.", "operator.", "Tensor.")
#: name parts that are never referenced: files and downloads, code compilation, process and device control
_DENIED_PARTS = frozenset({"hub", "jit", "serialization", "compile", "package", "utils", "distributed",
                           "multiprocessing", "cuda", "backends", "library", "set_default_device",
                           "set_default_dtype", "manual_seed", "export", "onnx", "fx", "classes", "ops_load",
                           "os", "sys", "io", "datasets", "models", "storage", "set_num_threads"})
#: words that no part of a referenced name may contain (torch.load, torch.ops.load_library, write_file...)
_DENIED_WORDS = ("load", "save", "file", "write", "read", "open", "download", "url", "exec", "eval", "import")

#: a tensor input inside an opaque function's stored arguments: {"input": index}
INPUT_KEY = "input"
#: a size read from a tensor input when the model runs (``x.shape[0]``): {"size": [input index, dim]}
SIZE_KEY = "size"


def is_allowed(qualname: str) -> bool:
    """True when ``qualname`` may be referenced by a project (see :data:`ALLOWED_PREFIXES`)."""
    parts = qualname.split(".")
    return (qualname.startswith(ALLOWED_PREFIXES) and all(p.isidentifier() for p in parts)
            and not any(p in _DENIED_PARTS or p.startswith("_") or any(w in p.lower() for w in _DENIED_WORDS)
                        for p in parts))


def not_allowed_message(qualname: str) -> str:
    return (f"{qualname} is not on NetStudio's allow-list (torch.*, torchvision.* modules and functions): a "
            "project references code only from there")


def resolve(qualname: str, node_id: str | None = None) -> Any:
    """The object named ``qualname`` ("torch.nn.Hardsigmoid", "Tensor.mean"), from the allow-list only."""
    if not is_allowed(qualname):
        raise CompileError(not_allowed_message(qualname), node_id=node_id,
                           hint="replace this node by catalog nodes")
    import torch

    parts = qualname.split(".")
    if parts[0] == "Tensor":
        obj: Any = torch.Tensor
        rest = parts[1:]
    else:
        obj, rest = None, []
        for i in range(len(parts), 0, -1):  # the longest importable module prefix
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            rest = parts[i:]
            break
        if obj is None:
            raise CompileError(f"{qualname} cannot be imported", node_id=node_id,
                               hint="install the package that provides it")
    for p in rest:
        try:
            obj = getattr(obj, p)
        except AttributeError:
            raise CompileError(f"{qualname} does not exist in this version of PyTorch", node_id=node_id,
                               hint="re-import the model with this version") from None
    return obj


def _arguments(ctx_or_params: Mapping[str, Any], node_id: str | None = None) -> Any:
    try:
        return json.loads(ctx_or_params["arguments"] or "{}")
    except ValueError as e:
        raise CompileError(f"the stored arguments are not valid JSON: {e}", node_id=node_id) from None


class _Opaque:
    """Shapes of an opaque node: the ones recorded at import, checked against what arrives."""

    def _opaque_infer(self, ctx: InferContext, x: TensorInfo | None) -> dict[str, Any]:
        p = ctx.params
        want = list(p["input_shape"])
        if x is not None and want and list(x.shape[1:]) != want:
            raise ctx.error(f"was imported for {'×'.join(map(str, want))} input but receives {x.fmt()}",
                            hint="an imported opaque node keeps its imported shapes: restore the input shape "
                                 "or re-import the model")
        if x is not None and not p["output_shape"]:
            return {"output": x.with_shape(*x.shape) if not p["output_dtype"] else TensorInfo(x.shape, p["output_dtype"])}
        batch = x.shape[0] if x is not None else ctx.batch_size
        return {"output": TensorInfo((batch, *p["output_shape"]), p["output_dtype"] or "float32")}


_SHAPE_PARAMS = (
    Param("input_shape", "ints", [], help="per-sample shape of the (first) input it was imported with"),
    Param("output_shape", "ints", [], help="per-sample shape of its output, recorded when imported; empty: "
                                            "the input's shape"),
    Param("output_dtype", "str", "", help="dtype of its output (float32, ...); empty: the input's"),
)


@register
class TorchModule(_Opaque, LayerType):
    type_id = "layer.torch_module"
    title = "Torch module"
    category = Category.LAYER
    name_prefix = "module"
    description = ("A torch or torchvision module the catalog has no node for, kept from an imported model: "
                   "rebuilt from its class name and constructor arguments, with its weights.")
    params = (
        Param("module", "str", "torch.nn.Identity", help="qualified class name (torch.*, torchvision.*)"),
        Param("arguments", "str", "{}", help="constructor arguments as JSON"),
        *_SHAPE_PARAMS,
    )
    summary_params = ("module",)

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        return self._opaque_infer(ctx, ctx.inputs.get("input"))

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        cls = resolve(params["module"])
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise CompileError(f"{params['module']} is not a torch module class")
        kwargs = _arguments(params)
        if not isinstance(kwargs, dict):
            raise CompileError("the stored constructor arguments are not a mapping")
        return cls(**kwargs)


@register
class TorchFunction(_Opaque, FunctionType):
    type_id = "layer.torch_function"
    title = "Torch function"
    category = Category.LAYER
    name_prefix = "function"
    description = ("A torch function or Tensor method the catalog has no node for, kept from an imported model "
                   "with its constant arguments.")
    inputs = (Port("inputs", PortKind.TENSOR, multi=True),)
    outputs = (Port("output", PortKind.TENSOR),)
    params = (
        Param("function", "str", "torch.clone", help="qualified name (torch.*, Tensor.method)"),
        Param("arguments", "str", '{"args": [{"input": 0}], "kwargs": {}}',
              help='arguments as JSON; {"input": i} is the i-th connected tensor'),
        *_SHAPE_PARAMS,
    )
    summary_params = ("function",)

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        xs = ctx.inputs.get("inputs") or []
        return self._opaque_infer(ctx, xs[0] if xs else None)

    def function(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        fn = resolve(params["function"])
        if isinstance(fn, type) or not callable(fn):
            raise CompileError(f"{params['function']} is not a function")
        rec = _arguments(params)

        def refs(v: Any) -> Any:
            if isinstance(v, dict) and set(v) == {INPUT_KEY}:
                return PortRef("inputs", int(v[INPUT_KEY]))
            if isinstance(v, dict) and set(v) == {SIZE_KEY}:
                i, d = (int(x) for x in v[SIZE_KEY])
                return size_of("inputs", d, i)
            if isinstance(v, list):
                return [refs(x) for x in v]
            if isinstance(v, dict):
                return {k: refs(x) for k, x in v.items()}
            return v

        args = rec.get("args", []) if isinstance(rec, dict) else []
        kwargs = rec.get("kwargs", {}) if isinstance(rec, dict) else {}
        return fn, tuple(refs(a) for a in args), refs(kwargs)
