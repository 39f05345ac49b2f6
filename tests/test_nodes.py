"""Node catalog: declarations, error texts, losses, optimizers, schedulers, lazy imports."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from netstudio.errors import ParamError, ShapeError
from netstudio.graph.model import Graph
from netstudio.nodes import (AUTO, CATALOG, Category, InferContext, LayerType, LossType, OptimizerType,
                             SchedulerType, TensorInfo)


def T(*shape: int, dtype: str = "float32") -> TensorInfo:
    return TensorInfo(tuple(shape), dtype)


def infer(type_id: str, params: dict[str, Any], inputs: dict[str, Any], name: str = "node",
          extra: dict[str, Any] | None = None) -> dict[str, Any]:
    nt = CATALOG.get(type_id)
    ctx = InferContext("n7", name, nt.title, nt.validate_params(params), inputs, 64, dict(extra or {}))
    ctx.params = nt.resolve(ctx)
    return nt.infer(ctx)


def shape_error(type_id: str, params: dict[str, Any], inputs: dict[str, Any], name: str,
                extra: dict[str, Any] | None = None) -> ShapeError:
    with pytest.raises(ShapeError) as exc:
        infer(type_id, params, inputs, name, extra)
    assert exc.value.node_id == "n7"
    return exc.value


# ----------------------------------------------------------------------------
# Declarations
# ----------------------------------------------------------------------------

REQUIRED = {
    "layer.linear", "layer.conv1d", "layer.conv2d", "layer.conv_transpose2d", "layer.maxpool2d",
    "layer.avgpool2d", "layer.adaptive_avgpool2d", "layer.batchnorm1d", "layer.batchnorm2d", "layer.layernorm",
    "layer.dropout", "layer.flatten", "layer.reshape", "layer.embedding", "layer.lstm", "layer.gru",
    "activation.relu", "activation.leaky_relu", "activation.gelu", "activation.silu", "activation.sigmoid",
    "activation.tanh", "activation.softmax", "activation.log_softmax",
    "merge.add", "merge.multiply", "merge.concat",
    "loss.cross_entropy", "loss.nll", "loss.mse", "loss.l1", "loss.smooth_l1", "loss.huber", "loss.bce",
    "loss.bce_with_logits",
    "optim.sgd", "optim.adam", "optim.adamw", "optim.rmsprop", "optim.adagrad",
    "sched.step", "sched.exponential", "sched.cosine", "sched.plateau", "sched.onecycle",
}


def test_catalog_has_every_required_type() -> None:
    assert REQUIRED <= {cls.type_id for cls in CATALOG.types()}


@pytest.mark.parametrize("cls", CATALOG.types(), ids=lambda c: c.type_id)
def test_declarations_are_complete(cls: Any) -> None:
    assert cls.title and cls.description, "palette tooltips need a title and a description"
    assert cls.type_id.split(".")[0] in {"data", "layer", "activation", "merge", "loss", "optim", "sched"}
    names = [p.name for p in cls.params]
    assert len(names) == len(set(names))
    for name in cls.summary_params:
        cls.param(name)  # raises KeyError for a summary of an unknown param
    # defaults must survive their own validation (a saved default project reloads)
    assert cls.validate_params(cls.default_params()) == cls.default_params()
    cls.summary(cls.default_params())


def test_existing_ids_and_param_names_are_kept() -> None:
    expected = {
        "layer.linear": ["in_features", "out_features", "bias"],
        # "phase" (multi-optimizer order) was appended later; it is saved only when set
        "optim.sgd": ["lr", "momentum", "nesterov", "weight_decay", "phase"],
        "optim.adam": ["lr", "beta1", "beta2", "eps", "weight_decay", "phase"],
        "merge.concat": ["dim"],
    }
    for tid, names in expected.items():
        assert [p.name for p in CATALOG.get(tid).params] == names
    assert [p.name for p in CATALOG.get("merge.add").inputs] == ["a", "b"]
    assert CATALOG.get("merge.concat").inputs[0].multi


def test_summary_shows_key_params() -> None:
    conv = CATALOG.get("layer.conv2d")
    assert conv.summary(conv.validate_params({"out_channels": 32, "kernel_size": 5})) == "out channels 32, kernel size 5"
    gap = CATALOG.get("layer.adaptive_avgpool2d")
    assert gap.summary(gap.default_params()) == "output size 1×1"


def test_import_of_catalog_does_not_import_torch_or_qt() -> None:
    code = ("import sys, netstudio.nodes; from netstudio.nodes import CATALOG; "
            "assert len(CATALOG.types()) >= 45; "
            "print(sorted(m for m in ('torch', 'PySide6', 'pyqtgraph') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------
# Param validation
# ----------------------------------------------------------------------------


def test_param_coerce_rejects_out_of_range_values() -> None:
    p = CATALOG.get("layer.dropout").param("p")
    with pytest.raises(ParamError) as exc:
        p.coerce(1.5, node_id="n3")
    assert exc.value.message == "p: 1.5 is above the maximum 1"
    assert exc.value.hint == "use a value ≤ 1"
    assert exc.value.param == "p" and exc.value.node_id == "n3"
    k = CATALOG.get("layer.conv2d").param("kernel_size")
    with pytest.raises(ParamError, match=r"^kernel size: 0 is below the minimum 1 \(use a value ≥ 1\)$"):
        k.coerce(0)
    with pytest.raises(ParamError, match=r"^kernel size: 'abc' is not a whole number$"):
        k.coerce("abc")
    assert k.coerce("5") == 5
    ch = CATALOG.get("layer.conv2d").param("in_channels")
    assert ch.coerce("auto") == AUTO
    with pytest.raises(ParamError, match=r"^in channels: 'x' is not a whole number or 'auto'$"):
        ch.coerce("x")
    with pytest.raises(ParamError, match=r"^shape: 'a' is not a list of whole numbers like 4, 4$"):
        CATALOG.get("layer.reshape").param("shape").coerce("a")
    assert CATALOG.get("layer.reshape").param("shape").coerce("1×28×28") == [1, 28, 28]


def test_graph_refuses_invalid_param_and_keeps_old_value() -> None:
    g = Graph()
    n = g.add_node("layer.lstm")
    with pytest.raises(ParamError, match="num layers: 0 is below the minimum 1"):
        g.set_param(n.id, "num_layers", 0)
    assert g.nodes[n.id].params["num_layers"] == 1


# ----------------------------------------------------------------------------
# Error texts
# ----------------------------------------------------------------------------


def test_linear_mismatch_message() -> None:
    e = shape_error("layer.linear", {"in_features": 400}, {"input": T(64, 256)}, "fc1")
    assert str(e) == "Linear 'fc1' expects 400 input features but receives 256 (set in_features to 256 or 'auto')"


def test_linear_on_image_suggests_flatten_with_size() -> None:
    e = shape_error("layer.linear", {"in_features": 100}, {"input": T(64, 16, 4, 4)}, "fc1")
    assert e.message == "Linear 'fc1' expects 100 input features but receives 64×16×4×4"
    assert e.hint == "add a Flatten before it and set in_features to 256"


def test_conv2d_in_channels_mismatch() -> None:
    e = shape_error("layer.conv2d", {"in_channels": 3}, {"input": T(64, 1, 28, 28)}, "conv1")
    assert e.message == "Conv2d 'conv1' expects 3 input channels but receives 1 (64×1×28×28)"
    assert e.hint == "set in_channels to 1 or 'auto'"


def test_conv2d_on_flat_input() -> None:
    e = shape_error("layer.conv2d", {}, {"input": T(64, 784)}, "conv1")
    assert e.message == "Conv2d 'conv1' expects N×C×H×W input but receives 64×784"
    assert e.hint == "remove the Flatten before it or use Linear"
    e = shape_error("layer.conv1d", {}, {"input": T(64, 1, 28, 28)}, "c")
    assert e.message == "Conv1d 'c' expects N×C×L input but receives 64×1×28×28"
    assert e.hint == "use the 2-d variant for N×C×H×W input, or add a Reshape to C×L before it"


def test_conv_kernel_and_groups_errors() -> None:
    e = shape_error("layer.conv2d", {"kernel_size": 3, "dilation": 2}, {"input": T(8, 3, 4, 6)}, "c")
    assert e.message == "Conv2d 'c' has a 3×3 kernel (dilated to 5×5) larger than its 4×6 input"
    assert e.hint == "use kernel_size ≤ 2 or padding ≥ 1"
    e = shape_error("layer.conv2d", {"out_channels": 8, "groups": 4}, {"input": T(8, 6, 8, 8)}, "c")
    assert e.message == "Conv2d 'c' in_channels 6 is not divisible by groups 4"
    assert e.hint == "set groups to a divisor of both 6 and 8, e.g. 2"


def test_pooling_errors() -> None:
    e = shape_error("layer.maxpool2d", {}, {"input": T(64, 16, 1, 1)}, "pool3")
    assert e.message == "MaxPool2d 'pool3' would shrink its 1×1 input to 0×0"
    assert e.hint == "use kernel_size ≤ 1 or remove this pooling layer"
    e = shape_error("layer.avgpool2d", {"kernel_size": 3, "padding": 2}, {"input": T(4, 1, 9, 9)}, "p")
    assert e.message == "AvgPool2d 'p' has padding 2, more than half of its 3×3 kernel"
    assert e.hint == "use padding ≤ 1"


def test_conv_transpose_output_padding_error() -> None:
    e = shape_error("layer.conv_transpose2d", {"stride": 2, "output_padding": 2}, {"input": T(4, 3, 5, 5)}, "up")
    assert e.message == ("ConvTranspose2d 'up' has output_padding 2, but it must be smaller than stride 2 "
                         "or dilation 1")
    assert e.hint == "use output_padding ≤ 1"


def test_add_and_multiply_shape_mismatch() -> None:
    e = shape_error("merge.add", {}, {"a": T(64, 10), "b": T(64, 20)}, "add1")
    assert str(e) == "Add 'add1' needs equal shapes but gets 64×10 and 64×20 (make both branches produce the same shape)"
    e = shape_error("merge.multiply", {}, {"a": T(64, 8, 4, 4), "b": T(64, 8)}, "gate")
    assert e.message == "Multiply 'gate' cannot multiply 64×8×4×4 by 64×8"
    assert infer("merge.multiply", {}, {"a": T(64, 8, 4, 4), "b": T(64, 8, 1, 1)})["output"].shape == (64, 8, 4, 4)


def test_reshape_count_mismatch() -> None:
    e = shape_error("layer.reshape", {"shape": [3, 32, 32]}, {"input": T(64, 784)}, "r")
    assert e.message == "Reshape 'r' cannot reshape 64×784 (784 values per sample) to 3×32×32 (3072 values)"
    assert e.hint == "set shape to 784"
    e = shape_error("layer.reshape", {"shape": [2, 28, 28]}, {"input": T(64, 784)}, "r")
    assert e.hint == "set shape to 1, 28, 28"


def test_embedding_needs_integer_ids() -> None:
    e = shape_error("layer.embedding", {}, {"input": T(64, 20)}, "emb")
    assert e.message == "Embedding 'emb' expects integer token ids but receives float32 values (64×20)"
    out = infer("layer.embedding", {"embedding_dim": 8}, {"input": T(64, 20, dtype="int64")})["output"]
    assert out == T(64, 20, 8)


def test_recurrent_needs_sequences() -> None:
    e = shape_error("layer.lstm", {}, {"input": T(64, 784)}, "lstm1")
    assert e.message == "LSTM 'lstm1' expects N×L×F sequence input but receives 64×784"
    assert e.hint == "add a Reshape before it, e.g. shape 28, 28"
    e = shape_error("layer.gru", {"input_size": 10}, {"input": T(64, 28, 28)}, "gru1")
    assert e.message == "GRU 'gru1' expects 10 features per time step but receives 28 (64×28×28)"
    assert e.hint == "set input_size to 28 or 'auto'"


def test_batchnorm_and_layernorm_errors() -> None:
    e = shape_error("layer.batchnorm1d", {}, {"input": T(64, 3, 8, 8)}, "bn")
    assert e.message == "BatchNorm1d 'bn' expects N×C or N×C×L input but receives 64×3×8×8"
    assert e.hint == "use BatchNorm2d for 64×3×8×8 input"
    e = shape_error("layer.batchnorm2d", {"num_features": 16}, {"input": T(64, 8, 4, 4)}, "bn")
    assert e.hint == "set num_features to 8 or 'auto'"
    e = shape_error("layer.batchnorm1d", {}, {"input": T(1, 10)}, "bn")
    assert e.hint == "use a batch size of at least 2"
    e = shape_error("layer.layernorm", {"normalized_shape": 32}, {"input": T(64, 10, 16)}, "ln")
    assert e.message == "LayerNorm 'ln' normalizes over 32 values but the last dimension of 64×10×16 is 16"


def test_softmax_dim_errors() -> None:
    e = shape_error("activation.softmax", {"dim": 0}, {"input": T(64, 10)}, "sm")
    assert e.message == "Softmax 'sm' dim 0 is the batch dimension of 64×10"
    e = shape_error("activation.log_softmax", {"dim": 3}, {"input": T(64, 10)}, "ls")
    assert e.message == "LogSoftmax 'ls' dim 3 does not exist in a 64×10 tensor"
    assert e.hint == "use a dimension between 1 and 1"


def test_loss_shape_errors() -> None:
    e = shape_error("loss.cross_entropy", {}, {"prediction": T(64, 10), "target": T(64, dtype="int64")}, "ce",
                    extra={"num_classes": 3})
    assert e.message == "CrossEntropy 'ce' receives 10 class scores but the dataset has 3 classes"
    assert e.hint == "set out_features of the last Linear to 3"
    e = shape_error("loss.nll", {}, {"prediction": T(64, 10), "target": T(64, 1)}, "nll")
    assert e.message == "NLL 'nll' needs integer class labels but the target is float32 64×1"
    e = shape_error("loss.bce", {}, {"prediction": T(64, 1), "target": T(64, dtype="int64")}, "bce",
                    extra={"num_classes": 10})
    assert e.message == "BCE 'bce' needs 0/1 targets but the dataset has 10 classes"
    assert e.hint == "use CrossEntropy with out_features 10"
    e = shape_error("loss.mse", {}, {"prediction": T(64, 10), "target": T(64, 1)}, "mse")
    assert e.message == "MSE 'mse' prediction 64×10 and target 64×1 differ in size"
    assert e.hint == "make the last layer output 1 value(s) per sample"
    assert infer("loss.bce_with_logits", {}, {"prediction": T(64, 1), "target": T(64, dtype="int64")},
                 extra={"num_classes": 2})["loss"].shape == ()


# ----------------------------------------------------------------------------
# Losses compute what torch computes
# ----------------------------------------------------------------------------


def _loss(type_id: str, params: dict[str, Any], pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    nt = CATALOG.get(type_id)
    assert isinstance(nt, LossType)
    module = nt.make(nt.validate_params(params))
    return module(pred, nt.adapt_target(pred, target))


def test_losses_equal_torch_functions() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(16, 5, generator=g)
    labels = torch.randint(0, 5, (16,), generator=g)
    reg_pred = torch.randn(16, 1, generator=g)
    reg_tgt = torch.randn(16, generator=g) * 3  # flat targets: adapt_target reshapes them to N×1
    bits = torch.randint(0, 2, (16,), generator=g)  # integer 0/1 labels: adapt_target casts them
    probs = torch.sigmoid(reg_pred)
    cases = [
        ("loss.cross_entropy", {"label_smoothing": 0.1}, logits, labels,
         F.cross_entropy(logits, labels, label_smoothing=0.1)),
        ("loss.cross_entropy", {"reduction": "sum"}, logits, labels, F.cross_entropy(logits, labels, reduction="sum")),
        ("loss.nll", {}, F.log_softmax(logits, 1), labels, F.nll_loss(F.log_softmax(logits, 1), labels)),
        ("loss.mse", {}, reg_pred, reg_tgt, F.mse_loss(reg_pred, reg_tgt.view(16, 1))),
        ("loss.l1", {"reduction": "sum"}, reg_pred, reg_tgt, F.l1_loss(reg_pred, reg_tgt.view(16, 1), reduction="sum")),
        ("loss.smooth_l1", {"beta": 0.5}, reg_pred, reg_tgt, F.smooth_l1_loss(reg_pred, reg_tgt.view(16, 1), beta=0.5)),
        ("loss.huber", {"delta": 2.0}, reg_pred, reg_tgt, F.huber_loss(reg_pred, reg_tgt.view(16, 1), delta=2.0)),
        ("loss.bce", {}, probs, bits, F.binary_cross_entropy(probs, bits.float().view(16, 1))),
        ("loss.bce_with_logits", {}, reg_pred, bits,
         F.binary_cross_entropy_with_logits(reg_pred, bits.float().view(16, 1))),
    ]
    for type_id, params, pred, tgt, expected in cases:
        got = _loss(type_id, params, pred, tgt)
        assert got.shape == ()
        assert torch.allclose(got, expected), (type_id, got, expected)


def test_loss_metrics() -> None:
    metrics = {t: CATALOG.get(t).metric for t in ("loss.cross_entropy", "loss.nll", "loss.mse", "loss.l1",
                                                  "loss.smooth_l1", "loss.huber", "loss.bce", "loss.bce_with_logits")}
    assert metrics == {"loss.cross_entropy": "argmax", "loss.nll": "argmax", "loss.mse": None, "loss.l1": None,
                       "loss.smooth_l1": None, "loss.huber": None, "loss.bce": "sigmoid",
                       "loss.bce_with_logits": "logits"}
    for tid in metrics:
        assert CATALOG.get(tid).param("weight").default == 1.0


# ----------------------------------------------------------------------------
# Optimizers and schedulers
# ----------------------------------------------------------------------------


def _optimizer(type_id: str, params: dict[str, Any]) -> torch.optim.Optimizer:
    nt = CATALOG.get(type_id)
    assert isinstance(nt, OptimizerType)
    return nt.make(torch.nn.Linear(3, 2).parameters(), nt.validate_params(params))


@pytest.mark.parametrize("type_id,params,cls,expected", [
    ("optim.sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}, torch.optim.SGD,
     {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}),
    ("optim.sgd", {}, torch.optim.SGD, {"lr": 0.01, "momentum": 0.9, "nesterov": False}),  # defaults that train
    ("optim.sgd", {"momentum": 0.0, "nesterov": True}, torch.optim.SGD, {"lr": 0.01, "momentum": 0.0, "nesterov": False}),
    ("optim.adam", {"lr": 0.002, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6}, torch.optim.Adam,
     {"lr": 0.002, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.0}),
    ("optim.adamw", {}, torch.optim.AdamW, {"lr": 1e-3, "betas": (0.9, 0.999), "weight_decay": 0.01}),
    ("optim.rmsprop", {"alpha": 0.9, "momentum": 0.5, "centered": True}, torch.optim.RMSprop,
     {"lr": 0.01, "alpha": 0.9, "momentum": 0.5, "centered": True}),
    ("optim.adagrad", {"lr": 0.05, "lr_decay": 0.01, "eps": 1e-9}, torch.optim.Adagrad,
     {"lr": 0.05, "lr_decay": 0.01, "eps": 1e-9}),
])
def test_optimizers_make_torch_classes(type_id: str, params: dict[str, Any], cls: type, expected: dict[str, Any]) -> None:
    opt = _optimizer(type_id, params)
    assert type(opt) is cls
    group = opt.param_groups[0]
    for k, v in expected.items():
        assert group[k] == pytest.approx(v) if isinstance(v, float) else group[k] == v, k


def _scheduler(type_id: str, params: dict[str, Any], opt: torch.optim.Optimizer, epochs: int = 5,
               steps: int = 7) -> Any:
    nt = CATALOG.get(type_id)
    assert isinstance(nt, SchedulerType)
    return nt.make(opt, nt.validate_params(params), epochs=epochs, steps_per_epoch=steps)


def test_schedulers_make_torch_classes() -> None:
    sched = torch.optim.lr_scheduler
    s = _scheduler("sched.step", {"step_size": 3, "gamma": 0.5}, _optimizer("optim.sgd", {}))
    assert type(s) is sched.StepLR and s.step_size == 3 and s.gamma == 0.5
    s = _scheduler("sched.exponential", {"gamma": 0.9}, _optimizer("optim.sgd", {}))
    assert type(s) is sched.ExponentialLR and s.gamma == 0.9
    s = _scheduler("sched.cosine", {}, _optimizer("optim.sgd", {}), epochs=12)
    assert type(s) is sched.CosineAnnealingLR and s.T_max == 12 and s.eta_min == 0.0
    s = _scheduler("sched.cosine", {"T_max": 4, "eta_min": 1e-4}, _optimizer("optim.sgd", {}), epochs=12)
    assert s.T_max == 4 and s.eta_min == 1e-4
    s = _scheduler("sched.plateau", {"factor": 0.5, "patience": 2, "mode": "max"}, _optimizer("optim.adam", {}))
    assert type(s) is sched.ReduceLROnPlateau and s.factor == 0.5 and s.patience == 2 and s.mode == "max"
    opt = _optimizer("optim.adam", {})
    s = _scheduler("sched.onecycle", {"max_lr": 0.2, "div_factor": 10}, opt, epochs=3, steps=4)
    assert type(s) is sched.OneCycleLR and s.total_steps == 12
    assert opt.param_groups[0]["lr"] == pytest.approx(0.02)  # starts at max_lr / div_factor


def test_scheduler_timing_flags() -> None:
    flags = {t: (CATALOG.get(t).step_every, CATALOG.get(t).needs_metric)
             for t in ("sched.step", "sched.exponential", "sched.cosine", "sched.plateau", "sched.onecycle")}
    assert flags == {"sched.step": ("epoch", False), "sched.exponential": ("epoch", False),
                     "sched.cosine": ("epoch", False), "sched.plateau": ("epoch", True),
                     "sched.onecycle": ("batch", False)}


def test_onecycle_works_with_an_optimizer_without_momentum() -> None:
    opt = _optimizer("optim.adagrad", {})
    s = _scheduler("sched.onecycle", {"max_lr": 0.1}, opt, epochs=2, steps=3)
    lrs = []  # the learning rate each of the 2×3 batches trains with
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        s.step()
    assert lrs[0] == pytest.approx(0.1 / 25)
    assert max(lrs) == pytest.approx(0.1, rel=0.01)
    assert lrs[-1] == pytest.approx(0.1 / 25 / 1e4)


def test_onecycle_keeps_momentum_free_sgd_momentum_free() -> None:
    # torch's default would turn SGD(momentum=0) into SGD with momentum 0.95..0.85
    opt = _optimizer("optim.sgd", {"lr": 0.1, "momentum": 0.0})
    s = _scheduler("sched.onecycle", {"max_lr": 0.1}, opt, epochs=1, steps=4)
    for _ in range(3):
        assert opt.param_groups[0]["momentum"] == 0.0
        opt.step()
        s.step()
    # with momentum the optimizer's momentum is cycled inversely to the learning rate
    opt = _optimizer("optim.sgd", {"lr": 0.1, "momentum": 0.9})
    _scheduler("sched.onecycle", {"max_lr": 0.1}, opt, epochs=1, steps=4)
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.95)


def test_categories_match_base_classes() -> None:
    for cls in CATALOG.types():
        inst = CATALOG.get(cls.type_id)
        if cls.category == Category.LOSS:
            assert isinstance(inst, LossType)
        elif cls.category == Category.OPTIMIZER:
            assert isinstance(inst, OptimizerType)
        elif cls.category == Category.SCHEDULER:
            assert isinstance(inst, SchedulerType)
        elif cls.category == Category.ACTIVATION:
            assert isinstance(inst, LayerType)
