"""Optimizers and learning-rate schedulers (parts of the training plan, not of forward)."""

from __future__ import annotations

from typing import Any, ClassVar, Iterable, Mapping

from netstudio.nodes.base import (Category, InferContext, OptimizerType, Param, SchedulerType, TensorInfo,
                                  register)

LR = Param("lr", "float", 0.01, min=1e-8, max=1e6, log_scale=True, label="learning rate")
LR_ADAM = Param("lr", "float", 1e-3, min=1e-8, max=1e6, log_scale=True, label="learning rate")
WEIGHT_DECAY = Param("weight_decay", "float", 0.0, min=0.0, max=1.0)
BETAS = (Param("beta1", "float", 0.9, min=0.0, max=0.99999), Param("beta2", "float", 0.999, min=0.0, max=0.99999))
#: a graph with several optimizers (a GAN) steps them one after another in every batch, lowest phase first;
#: left out of saved files while 0, so single-optimizer projects are written as before
PHASE = Param("phase", "int", 0, min=0, max=99, saved_if_set=True,
              help="with several optimizers (GAN): the order in which they step in every batch, lowest first")


class _Optimizer(OptimizerType):
    category = Category.OPTIMIZER
    summary_params: ClassVar[tuple[str, ...]] = ("lr",)

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "params" in cls.__dict__ and all(p.name != "phase" for p in cls.params):
            cls.params = (*cls.params, PHASE)  # every optimizer can take a place in a multi-phase step

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        return {"optimizer": TensorInfo((), "optimizer")}


@register
class SGD(_Optimizer):
    type_id = "optim.sgd"
    title = "SGD"
    description = "Stochastic gradient descent with (Nesterov) momentum; momentum 0 is plain SGD."
    # momentum 0.9 by default: plain SGD barely moves a fresh conv net (LeNet sat at loss 2.28)
    params = (LR, Param("momentum", "float", 0.9, min=0.0, max=1.0,
                        help="0.9 trains most models; 0 is plain SGD"), Param("nesterov", "bool", False),
              WEIGHT_DECAY)
    summary_params = ("lr", "momentum")

    def state_tensors(self, params: Mapping[str, Any]) -> int:
        """Optimizer state tensors per parameter (the memory estimate): the momentum buffer."""
        return 1 if params.get("momentum", 0.0) > 0 else 0

    def make(self, parameters: Iterable[Any], params: Mapping[str, Any]) -> Any:
        import torch

        # torch rejects nesterov without momentum; treat the checkbox as a no-op then
        return torch.optim.SGD(parameters, lr=params["lr"], momentum=params["momentum"],
                               nesterov=params["nesterov"] and params["momentum"] > 0,
                               weight_decay=params["weight_decay"])


@register
class Adam(_Optimizer):
    type_id = "optim.adam"
    title = "Adam"
    description = "Adaptive moment estimation; a robust default (lr 0.001)."
    params = (LR_ADAM, *BETAS, Param("eps", "float", 1e-8, min=0.0, max=1.0, log_scale=True), WEIGHT_DECAY)

    def state_tensors(self, params: Mapping[str, Any]) -> int:
        return 2  # first and second moments

    def make(self, parameters: Iterable[Any], params: Mapping[str, Any]) -> Any:
        import torch

        return torch.optim.Adam(parameters, lr=params["lr"], betas=(params["beta1"], params["beta2"]),
                                eps=params["eps"], weight_decay=params["weight_decay"])


@register
class AdamW(_Optimizer):
    type_id = "optim.adamw"
    title = "AdamW"
    description = "Adam with decoupled weight decay (better regularization than Adam's L2 term)."
    params = (LR_ADAM, *BETAS, Param("eps", "float", 1e-8, min=0.0, max=1.0, log_scale=True),
              Param("weight_decay", "float", 0.01, min=0.0, max=1.0))
    summary_params = ("lr", "weight_decay")

    def state_tensors(self, params: Mapping[str, Any]) -> int:
        return 2

    def make(self, parameters: Iterable[Any], params: Mapping[str, Any]) -> Any:
        import torch

        return torch.optim.AdamW(parameters, lr=params["lr"], betas=(params["beta1"], params["beta2"]),
                                 eps=params["eps"], weight_decay=params["weight_decay"])


@register
class RMSprop(_Optimizer):
    type_id = "optim.rmsprop"
    title = "RMSprop"
    description = "Divides the gradient by a running average of its magnitude (good for RNNs)."
    params = (LR, Param("alpha", "float", 0.99, min=0.0, max=1.0, help="smoothing of the squared-gradient average"),
              Param("eps", "float", 1e-8, min=0.0, max=1.0, log_scale=True),
              Param("momentum", "float", 0.0, min=0.0, max=1.0), Param("centered", "bool", False), WEIGHT_DECAY)

    def state_tensors(self, params: Mapping[str, Any]) -> int:
        """square average, + momentum buffer, + gradient average when centered"""
        return 1 + (params.get("momentum", 0.0) > 0) + bool(params.get("centered", False))

    def make(self, parameters: Iterable[Any], params: Mapping[str, Any]) -> Any:
        import torch

        return torch.optim.RMSprop(parameters, lr=params["lr"], alpha=params["alpha"], eps=params["eps"],
                                   momentum=params["momentum"], centered=params["centered"],
                                   weight_decay=params["weight_decay"])


@register
class Adagrad(_Optimizer):
    type_id = "optim.adagrad"
    title = "Adagrad"
    description = "Per-parameter learning rates that shrink with accumulated squared gradients."
    params = (LR, Param("lr_decay", "float", 0.0, min=0.0, max=1.0), WEIGHT_DECAY,
              Param("eps", "float", 1e-10, min=0.0, max=1.0, log_scale=True))

    def state_tensors(self, params: Mapping[str, Any]) -> int:
        return 1  # the sum of squared gradients

    def make(self, parameters: Iterable[Any], params: Mapping[str, Any]) -> Any:
        import torch

        return torch.optim.Adagrad(parameters, lr=params["lr"], lr_decay=params["lr_decay"],
                                   weight_decay=params["weight_decay"], eps=params["eps"])


@register
class NAdam(_Optimizer):
    type_id = "optim.nadam"
    title = "NAdam"
    description = "Adam with Nesterov momentum (looks ahead along the momentum); lr 0.002 by default."
    params = (Param("lr", "float", 2e-3, min=1e-8, max=1e6, log_scale=True, label="learning rate"), *BETAS,
              Param("eps", "float", 1e-8, min=0.0, max=1.0, log_scale=True), WEIGHT_DECAY,
              Param("momentum_decay", "float", 4e-3, min=0.0, max=1.0, log_scale=True))

    def state_tensors(self, params: Mapping[str, Any]) -> int:
        return 2  # first and second moments (plus scalars)

    def make(self, parameters: Iterable[Any], params: Mapping[str, Any]) -> Any:
        import torch

        return torch.optim.NAdam(parameters, lr=params["lr"], betas=(params["beta1"], params["beta2"]),
                                 eps=params["eps"], weight_decay=params["weight_decay"],
                                 momentum_decay=params["momentum_decay"])


@register
class RAdam(_Optimizer):
    type_id = "optim.radam"
    title = "RAdam"
    description = "Rectified Adam: damps Adam's adaptive step while its variance estimate is unreliable (no warm-up needed)."
    params = (LR_ADAM, *BETAS, Param("eps", "float", 1e-8, min=0.0, max=1.0, log_scale=True), WEIGHT_DECAY)

    def state_tensors(self, params: Mapping[str, Any]) -> int:
        return 2

    def make(self, parameters: Iterable[Any], params: Mapping[str, Any]) -> Any:
        import torch

        return torch.optim.RAdam(parameters, lr=params["lr"], betas=(params["beta1"], params["beta2"]),
                                 eps=params["eps"], weight_decay=params["weight_decay"])


# ----------------------------------------------------------------------------
# Schedulers
# ----------------------------------------------------------------------------


#: how an exported script names torch's scheduler module (``emit_ctor``)
SCHED = "torch.optim.lr_scheduler"


class _Scheduler(SchedulerType):
    category = Category.SCHEDULER


@register
class StepLR(_Scheduler):
    type_id = "sched.step"
    title = "StepLR"
    description = "Multiplies the learning rate by gamma every step_size epochs."
    params = (Param("step_size", "int", 10, min=1, max=100000), Param("gamma", "float", 0.1, min=0.0, max=1.0))
    summary_params = ("step_size", "gamma")

    def make(self, optimizer: Any, params: Mapping[str, Any], *, epochs: int, steps_per_epoch: int) -> Any:
        import torch

        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=params["step_size"], gamma=params["gamma"])

    def emit_ctor(self, params: Mapping[str, Any], optimizer: Any) -> str:
        return f"{SCHED}.StepLR(optimizer, step_size={params['step_size']!r}, gamma={params['gamma']!r})"


@register
class ExponentialLR(_Scheduler):
    type_id = "sched.exponential"
    title = "ExponentialLR"
    description = "Multiplies the learning rate by gamma after every epoch."
    params = (Param("gamma", "float", 0.95, min=0.0, max=1.0),)
    summary_params = ("gamma",)

    def make(self, optimizer: Any, params: Mapping[str, Any], *, epochs: int, steps_per_epoch: int) -> Any:
        import torch

        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=params["gamma"])

    def emit_ctor(self, params: Mapping[str, Any], optimizer: Any) -> str:
        return f"{SCHED}.ExponentialLR(optimizer, gamma={params['gamma']!r})"


@register
class CosineAnnealingLR(_Scheduler):
    type_id = "sched.cosine"
    title = "CosineAnnealingLR"
    name_prefix = "cosine"
    description = "Lowers the learning rate along a half cosine to eta_min over T_max epochs."
    params = (Param("T_max", "int", 0, min=0, max=1_000_000, help="epochs of the half cosine; 0 = all epochs"),
              Param("eta_min", "float", 0.0, min=0.0, max=1e6, label="minimum lr"))
    summary_params = ("T_max",)

    def make(self, optimizer: Any, params: Mapping[str, Any], *, epochs: int, steps_per_epoch: int) -> Any:
        import torch

        t_max = params["T_max"] or max(1, epochs)
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=params["eta_min"])

    def emit_ctor(self, params: Mapping[str, Any], optimizer: Any) -> str:
        t_max = repr(int(params["T_max"])) if params["T_max"] else "max(1, epochs)"
        return f"{SCHED}.CosineAnnealingLR(optimizer, T_max={t_max}, eta_min={params['eta_min']!r})"


@register
class ReduceLROnPlateau(_Scheduler):
    type_id = "sched.plateau"
    title = "ReduceLROnPlateau"
    name_prefix = "plateau"
    description = "Multiplies the learning rate by factor when the validation loss stops improving."
    needs_metric = True
    params = (
        Param("mode", "choice", "min", choices=("min", "max")),
        Param("factor", "float", 0.1, min=0.0, max=0.999),
        Param("patience", "int", 10, min=0, max=100000, help="epochs without improvement before reducing"),
        Param("threshold", "float", 1e-4, min=0.0, max=1.0, log_scale=True),
        Param("cooldown", "int", 0, min=0, max=100000),
        Param("min_lr", "float", 0.0, min=0.0, max=1e6),
    )
    summary_params = ("factor", "patience")

    def make(self, optimizer: Any, params: Mapping[str, Any], *, epochs: int, steps_per_epoch: int) -> Any:
        import torch

        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=params["mode"], factor=params["factor"], patience=params["patience"],
            threshold=params["threshold"], cooldown=params["cooldown"], min_lr=params["min_lr"])

    def emit_ctor(self, params: Mapping[str, Any], optimizer: Any) -> str:
        # threshold_mode and eps are torch's defaults, written out so the reader sees every setting
        return (f"{SCHED}.ReduceLROnPlateau(\n"
                f"        optimizer, mode={params['mode']!r}, factor={params['factor']!r}, "
                f"patience={params['patience']!r},\n"
                f"        threshold={params['threshold']!r}, threshold_mode='rel', cooldown={params['cooldown']!r}, "
                f"min_lr={params['min_lr']!r}, eps=1e-08)")


@register
class OneCycleLR(_Scheduler):
    type_id = "sched.onecycle"
    title = "OneCycleLR"
    name_prefix = "onecycle"
    description = "Warms the learning rate up to max_lr, then anneals it far below; stepped every batch."
    step_every = "batch"
    params = (
        Param("max_lr", "float", 0.1, min=1e-8, max=1e6, log_scale=True),
        Param("pct_start", "float", 0.3, min=0.0, max=1.0, help="fraction of steps spent warming up"),
        Param("anneal_strategy", "choice", "cos", choices=("cos", "linear")),
        Param("div_factor", "float", 25.0, min=1e-6, max=1e9, help="initial lr = max_lr / div_factor"),
        Param("final_div_factor", "float", 1e4, min=1e-6, max=1e12, help="final lr = initial lr / final_div_factor"),
        Param("three_phase", "bool", False),
        Param("cycle_momentum", "bool", True,
              help="cycle momentum/beta1 inversely to the learning rate (only if the optimizer uses momentum)"),
    )
    summary_params = ("max_lr",)

    def make(self, optimizer: Any, params: Mapping[str, Any], *, epochs: int, steps_per_epoch: int) -> Any:
        import torch

        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=params["max_lr"], epochs=max(1, epochs), steps_per_epoch=max(1, steps_per_epoch),
            pct_start=params["pct_start"], anneal_strategy=params["anneal_strategy"],
            div_factor=params["div_factor"], final_div_factor=params["final_div_factor"],
            three_phase=params["three_phase"], cycle_momentum=self.cycle_momentum(params, optimizer))

    @staticmethod
    def cycle_momentum(params: Mapping[str, Any], optimizer: Any) -> bool:
        """Whether momentum/beta1 cycles: the user's choice, where the optimizer has momentum at all.

        Adagrad has neither momentum nor betas, and torch refuses to cycle what does not exist.
        SGD/RMSprop with momentum 0 would silently get momentum 0.85-0.95, overriding the optimizer node.
        """
        can_cycle = "betas" in optimizer.defaults or optimizer.defaults.get("momentum", 0) > 0
        return bool(params["cycle_momentum"] and can_cycle)

    def emit_ctor(self, params: Mapping[str, Any], optimizer: Any) -> str:
        return (f"{SCHED}.OneCycleLR(\n"
                f"        optimizer, max_lr={float(params['max_lr'])!r}, epochs=max(1, epochs), "
                f"steps_per_epoch=max(1, steps_per_epoch),\n"
                f"        pct_start={float(params['pct_start'])!r}, anneal_strategy={params['anneal_strategy']!r}, "
                f"div_factor={float(params['div_factor'])!r},\n"
                f"        final_div_factor={float(params['final_div_factor'])!r}, "
                f"three_phase={bool(params['three_phase'])}, "
                f"cycle_momentum={self.cycle_momentum(params, optimizer)})")


@register
class MultiStepLR(_Scheduler):
    type_id = "sched.multistep"
    title = "MultiStepLR"
    name_prefix = "multistep"
    description = "Multiplies the learning rate by gamma at each milestone epoch (e.g. 30, 80)."
    params = (Param("milestones", "ints", [30, 80], help="epochs at which the learning rate drops, increasing"),
              Param("gamma", "float", 0.1, min=0.0, max=1.0))
    summary_params = ("milestones", "gamma")

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        from netstudio.errors import ParamError

        m = list(ctx.params["milestones"])
        if not m or min(m) < 1 or any(b <= a for a, b in zip(m, m[1:])):
            raise ParamError(f"{ctx.title} '{ctx.name}': milestones {', '.join(map(str, m)) or '(none)'} must be "
                             "increasing epoch numbers of at least 1", node_id=ctx.node_id,
                             hint="use e.g. 30, 80", param="milestones")
        return {}

    def make(self, optimizer: Any, params: Mapping[str, Any], *, epochs: int, steps_per_epoch: int) -> Any:
        import torch

        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[int(v) for v in params["milestones"]],
                                                    gamma=params["gamma"])

    def emit_ctor(self, params: Mapping[str, Any], optimizer: Any) -> str:
        milestones = [int(v) for v in params["milestones"]]
        return f"{SCHED}.MultiStepLR(optimizer, milestones={milestones!r}, gamma={params['gamma']!r})"


@register
class LinearWarmup(_Scheduler):
    type_id = "sched.linear_warmup"
    title = "LinearWarmup"
    name_prefix = "warmup"
    description = ("Raises the learning rate linearly from start_factor × lr to lr over the first warmup_epochs "
                   "epochs, then keeps it (torch's LinearLR).")
    params = (Param("start_factor", "float", 0.1, min=1e-6, max=1.0, log_scale=True,
                    help="fraction of the learning rate in the first epoch"),
              Param("warmup_epochs", "int", 5, min=1, max=1_000_000))
    summary_params = ("warmup_epochs",)

    def make(self, optimizer: Any, params: Mapping[str, Any], *, epochs: int, steps_per_epoch: int) -> Any:
        import torch

        return torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=params["start_factor"], end_factor=1.0,
                                                 total_iters=params["warmup_epochs"])

    def emit_ctor(self, params: Mapping[str, Any], optimizer: Any) -> str:
        return (f"{SCHED}.LinearLR(optimizer, start_factor={params['start_factor']!r}, end_factor=1.0, "
                f"total_iters={params['warmup_epochs']!r})")
