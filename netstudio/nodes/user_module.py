"""An opaque node whose module class comes from the user's own Python file (``layer.user_module``).

Made by importing ``path/model.py:ClassName``: a module class of that file the catalog lacks (a custom
activation) stays one node that names the file, its sha256 and the class's qualified name, and keeps its
constructor arguments (JSON), weights (the weights file beside the project) and imported shapes. The
file's code runs only when :mod:`netstudio.nodes.usercode` allows that exact (file, sha256); otherwise
shape checking reports the node as unavailable (a Problem with a fix hint) and compiling refuses it —
without running anything.
"""

from __future__ import annotations

from typing import Any, Mapping

from netstudio.errors import CompileError
from netstudio.nodes import usercode
from netstudio.nodes.base import Category, InferContext, LayerType, Param, register
from netstudio.nodes.torch_ops import _SHAPE_PARAMS, _arguments, _Opaque

TYPE_ID = "layer.user_module"


def references(graph: Any) -> list[tuple[str, str]]:
    """The distinct (file, sha256) pairs the user-module nodes of ``graph`` (blocks included) record."""
    out: list[tuple[str, str]] = []

    def walk(g: Any) -> None:
        for node in g.nodes.values():
            if node.type_id == TYPE_ID:
                ref = (str(node.params["file"]), str(node.params["sha256"]))
                if ref not in out:
                    out.append(ref)
            if node.inner is not None:
                walk(node.inner)

    walk(graph)
    return out


def repin(graph: Any, file: str, old: str, new: str) -> list[tuple[Any, str]]:
    """(graph, node id) of every user-module node (blocks included) that records ``file`` with ``old``;
    the caller sets their ``sha256`` to ``new`` (as one edit)."""
    out: list[tuple[Any, str]] = []

    def walk(g: Any) -> None:
        for nid, node in g.nodes.items():
            if node.type_id == TYPE_ID and node.params["file"] == file and node.params["sha256"] == old:
                out.append((g, nid))
            if node.inner is not None:
                walk(node.inner)

    walk(graph)
    return out


@register
class UserModule(_Opaque, LayerType):
    type_id = TYPE_ID
    title = "User module"
    category = Category.LAYER
    name_prefix = "module"
    hidden = True  # made by importing a Python file, not from the palette
    #: shape checks are not memoised: they depend on the file's content and on whether it is trusted
    reads_files = True
    description = ("A module class from your own Python file, kept from an imported model with its weights. "
                   "Its code runs only after you trust the file (checked by its sha256).")
    params = (
        Param("file", "str", "", help="the Python file that defines the class (absolute path)"),
        Param("sha256", "str", "", help="the file's sha256 when it was imported or last trusted"),
        Param("qualname", "str", "", help="the class's qualified name in the file"),
        Param("arguments", "str", "{}", help="constructor arguments as JSON"),
        *_SHAPE_PARAMS,
    )
    summary_params = ("qualname",)

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        why = usercode.problem(str(ctx.params["file"]), str(ctx.params["sha256"]))
        if why is not None:
            raise ctx.error(why[0], hint=why[1])
        return self._opaque_infer(ctx, ctx.inputs.get("input"))

    def build(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        cls = usercode.load_attr(str(params["file"]), str(params["sha256"]), str(params["qualname"]))
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)) or usercode.origin_of(cls) is None:
            raise CompileError(f"{params['qualname']} is not a torch module class defined in {params['file']}",
                               hint="re-import the model")
        kwargs = _arguments(params)
        if not isinstance(kwargs, dict):
            raise CompileError("the stored constructor arguments are not a mapping")
        return cls(**kwargs)
