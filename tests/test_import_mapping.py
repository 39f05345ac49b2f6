"""The import mapping declared on the node types: torch modules and calls -> catalog params."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.nn as nn

from netstudio.errors import CompileError, ParamError
from netstudio.nodes import CATALOG
from netstudio.nodes.torch_ops import is_allowed, resolve
from netstudio.project.importer import same_module


def _type_for(module: nn.Module):
    name = f"torch.nn.{type(module).__name__}"
    return next(c for c in CATALOG.types() if name in c.torch_modules)


@pytest.mark.parametrize("module", [
    nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.Conv2d(8, 8, 3, groups=8),
    nn.BatchNorm2d(8, eps=1e-3, momentum=0.01), nn.Linear(5, 7), nn.Linear(5, 7, bias=False),
    nn.MaxPool2d(3, 2, 1), nn.AdaptiveAvgPool2d((7, 7)), nn.AdaptiveAvgPool2d(1), nn.ReLU(inplace=True),
    nn.Dropout(0.2), nn.Hardswish(), nn.LayerNorm(12, eps=1e-6), nn.GELU(approximate="tanh"),
    nn.Flatten(1), nn.SiLU()])
def test_params_from_module_rebuild_the_module(module: nn.Module) -> None:
    cls = _type_for(module)
    params = cls.params_from_module(module)
    built = CATALOG.get(cls.type_id).build(params, {})
    assert same_module(built, module), (built, module)
    x = torch.randn(2, 3, 8, 8) if "Conv" in str(module) or "Pool" in str(module) else None
    if isinstance(module, nn.Conv2d) and x is not None and module.in_channels == 3:
        built.load_state_dict(module.state_dict())
        assert torch.equal(built(x), module(x))


def test_same_module_sees_a_setting_the_type_cannot_hold() -> None:
    assert not same_module(nn.Conv2d(3, 8, 3, padding_mode="reflect"), nn.Conv2d(3, 8, 3))
    assert not same_module(nn.BatchNorm2d(4, track_running_stats=False), nn.BatchNorm2d(4))
    assert same_module(nn.AdaptiveAvgPool2d(1), nn.AdaptiveAvgPool2d((1, 1)))


def test_params_from_module_refuses_what_the_type_cannot_hold() -> None:
    with pytest.raises(ValueError, match="kernel_size"):
        _type_for(nn.Conv2d(3, 8, (1, 3))).params_from_module(nn.Conv2d(3, 8, (1, 3)))
    bn = nn.BatchNorm2d(4, momentum=None)
    with pytest.raises((ValueError, ParamError)):
        _type_for(bn).params_from_module(bn)


def test_from_call_maps_arguments() -> None:
    t = "T"

    def is_t(v: object) -> bool:
        return v == t

    flatten = CATALOG.get("layer.flatten")
    assert flatten.from_call((t, 1), {}, is_t, (2, 8)) == ({"start_dim": 1, "end_dim": -1}, {"input": t})
    cat = CATALOG.get("merge.concat")
    assert cat.from_call(([t, t],), {"dim": 1}, is_t, (2, 8)) == ({"dim": 1}, {"inputs": [t, t]})
    add = CATALOG.get("merge.add")
    assert add.from_call((t, t), {}, is_t, (2, 8)) == ({}, {"a": t, "b": t})
    with pytest.raises(ValueError):
        add.from_call((t, 1.0), {}, is_t, (2, 8))  # x + 1.0: not two tensors
    pool = CATALOG.get("layer.maxpool2d")  # F.max_pool2d(x, [2, 2], []): lists of one size, stride as the kernel
    assert pool.from_call((t, [2, 2], []), {}, is_t, (2, 3, 4, 4))[0]["kernel_size"] == 2
    assert pool.from_call((t, [2, 2], []), {}, is_t, (2, 3, 4, 4))[0]["stride"] == 0
    with pytest.raises(ValueError, match="differs"):
        pool.from_call((t, [2, 3]), {}, is_t, (2, 3, 4, 4))
    perm = CATALOG.get("layer.permute")
    assert perm.from_call((t, 0, 2, 1), {}, is_t, (2, 3, 4))[0] == {"dims": [0, 2, 1], "moves_batch": False}
    # to a sequence-first layout (L×N×E for MultiheadAttention(batch_first=False)): the node says it means it
    assert perm.from_call((t, (1, 0, 2)), {}, is_t, (3, 2, 4))[0] == {"dims": [1, 0, 2], "moves_batch": True}
    transpose = CATALOG.get("layer.transpose")
    assert transpose.from_call((t, 0, 1), {}, is_t, (3, 2, 4))[0] == {"dim0": 0, "dim1": 1, "moves_batch": True}
    assert transpose.from_call((t, 1, 2), {}, is_t, (2, 4, 3))[0] == {"dim0": 1, "dim1": 2, "moves_batch": False}
    reshape = CATALOG.get("layer.reshape")
    assert reshape.from_call((t, -1, 12), {}, is_t, (2, 3, 4))[0] == {"shape": [3, 4]}
    assert "operator.add" in type(add).torch_functions and "Tensor.flatten" in type(flatten).torch_functions


def test_opaque_references_only_the_allow_list() -> None:
    assert resolve("torch.nn.Hardsigmoid") is nn.Hardsigmoid
    assert resolve("Tensor.mean") is torch.Tensor.mean
    assert resolve("operator.add") is operator.add
    assert is_allowed("torchvision.ops.StochasticDepth") and is_allowed("torch.nn.functional.hardsigmoid")
    for bad in ("os.system", "builtins.eval", "torch.load", "torch.hub.load", "torch.jit.script", "subprocess.run",
                "torch.__builtins__", "torchvision.io.read_file", "torchvision.io.write_png", "numpy.load",
                "torch.ops.load_library", "torch.from_file", "torch._C._nn.linear", "torchvision.models.resnet18",
                "torch.Tensor.tofile", "Tensor.__reduce_ex__", "torch.UntypedStorage.from_file"):
        assert not is_allowed(bad), bad
        with pytest.raises(CompileError, match="allow-list"):
            resolve(bad)


def test_opaque_module_node_builds_from_arguments() -> None:
    nt = CATALOG.get("layer.torch_module")
    m = nt.build({"module": "torch.nn.Hardsigmoid", "arguments": "{}", "input_shape": [], "output_shape": [],
                  "output_dtype": ""}, {})
    assert isinstance(m, nn.Hardsigmoid)
    with pytest.raises(CompileError, match="allow-list"):
        nt.build({"module": "os.system", "arguments": "{}"}, {})
