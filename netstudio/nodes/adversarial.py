"""The building blocks of adversarial (two-player) training, e.g. a GAN.

* **Noise** (``data.noise``): a latent vector of ``size`` values per sample, drawn afresh at every
  step with the batch's size (``torch.randn``/``torch.rand`` inside ``forward``, seeded by the run's
  seed like every other random draw of the run). It feeds the generator.
* **Real | Fake** (``merge.real_fake``): stacks a batch of real samples and a batch of generated
  ones along the batch dimension (``torch.cat(dim=0)``): real first, then fake. One discriminator
  after it judges both halves with the same weights.
* **GAN loss** (``loss.gan``): binary cross-entropy on the discriminator's logits for a Real | Fake
  batch. It makes its own labels from the halves, so the graph needs no target: the discriminator
  role labels the real half 1 and the fake half 0; the generator role labels the fake half 1 (the
  non-saturating generator loss) and ignores the real half.

Which weights each optimizer trains follows from the wiring (:mod:`netstudio.compiler.phases`): an
optimizer trains the layers that feed the losses connected to it; a discriminator-role loss does not
reach through the Real | Fake node's ``fake`` input (the generated samples are detached), and a
generator-role loss trains only what feeds ``fake`` (the discriminator after the Real | Fake node is
passed through, not trained).
"""

from __future__ import annotations

from typing import Any, Mapping

from netstudio.nodes.base import (Category, FunctionType, InferContext, LossType, NodeType, Param, Port, PortKind,
                                  PortRef, TensorInfo, register)

NOISE = "data.noise"
REAL_FAKE = "merge.real_fake"
GAN_LOSS = "loss.gan"
#: GAN loss roles: the discriminator learns real → 1, fake → 0; the generator makes fakes that score 1
ROLES = ("discriminator", "generator")


@register
class Noise(NodeType):
    type_id = NOISE
    title = "Noise"
    category = Category.DATA
    name_prefix = "noise"
    description = ("A latent vector of size values per sample, drawn anew at every step with the batch's size "
                   "(normal: mean 0, std 1; uniform: -1..1), seeded by the training seed. Feeds a GAN's generator.")
    inputs = ()
    outputs = (Port("noise", PortKind.TENSOR, help="batch × size random values, new at every step"),)
    params = (Param("size", "int", 64, min=1, max=65536, help="values per sample (the latent dimension)"),
              Param("distribution", "choice", "normal", choices=("normal", "uniform")))
    summary_params = ("size",)

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        return {"noise": TensorInfo((ctx.batch_size, int(ctx.params["size"])), "float32")}


def noise_call(params: Mapping[str, Any]) -> tuple[Any, float, float]:
    """(torch function, scale, shift) of a Noise node: values = fn(batch, size) * scale + shift."""
    import torch

    if params.get("distribution") == "uniform":
        return torch.rand, 2.0, -1.0
    return torch.randn, 1.0, 0.0


@register
class RealFake(FunctionType):
    type_id = REAL_FAKE
    title = "Real | Fake"
    category = Category.MERGE
    name_prefix = "real_fake"
    description = ("Stacks a batch of real samples and a batch of generated (fake) ones along the batch "
                   "dimension, real first, so one discriminator judges both with the same weights. Feed its "
                   "discriminator's logits to GAN losses.")
    inputs = (Port("real", PortKind.TENSOR, help="real samples (the dataset's features)"),
              Port("fake", PortKind.TENSOR, help="generated samples (the generator's output)"))
    outputs = (Port("output", PortKind.TENSOR, help="2·batch samples: the real half, then the fake half"),)

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        real, fake = ctx.input("real"), ctx.input("fake")
        if real.shape[1:] != fake.shape[1:]:
            raise ctx.error(f"real samples {real.fmt()} and fake samples {fake.fmt()} differ in shape",
                            hint=f"make the generator output {'×'.join(map(str, real.shape[1:]))} per sample "
                                 "(e.g. a Reshape at its end)")
        if real.shape[0] != fake.shape[0]:
            raise ctx.error(f"real batch {real.shape[0]} and fake batch {fake.shape[0]} differ",
                            hint="feed the generator from a Noise node (it draws one vector per sample)")
        return {"output": TensorInfo((real.shape[0] + fake.shape[0], *real.shape[1:]), real.dtype)}

    def function(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        import torch

        return torch.cat, ([PortRef("real"), PortRef("fake")],), {"dim": 0}


class AdversarialBCE:
    """The GAN loss's module factory (kept out of ``torch.nn`` subclasses at import time)."""

    @staticmethod
    def make(role: str, smoothing: float) -> Any:
        import torch
        import torch.nn.functional as F

        class GanBCE(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.role, self.smoothing = role, smoothing

            def forward(self, pred: torch.Tensor, _target: Any = None) -> torch.Tensor:
                logits = pred.reshape(pred.shape[0], -1).mean(dim=1) if pred.dim() > 1 else pred
                half = logits.shape[0] // 2
                if self.role == "generator":  # the fakes should score "real" (non-saturating loss)
                    fake = logits[half:]
                    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
                labels = torch.cat([torch.full_like(logits[:half], 1.0 - self.smoothing),
                                    torch.zeros_like(logits[half:])])
                return F.binary_cross_entropy_with_logits(logits, labels)

            def extra_repr(self) -> str:
                return f"role={self.role!r}"

        return GanBCE()


@register
class GanLoss(LossType):
    type_id = GAN_LOSS
    title = "GAN loss"
    category = Category.LOSS
    name_prefix = "gan_loss"
    description = ("Binary cross-entropy on a discriminator's logits for a Real | Fake batch, with the labels made "
                   "here: role discriminator labels real 1 and fake 0 (trains what judges); role generator labels "
                   "the fakes 1 (trains what feeds the fake input, through the discriminator). Connect each "
                   "role to its own optimizer.")
    inputs = (Port("prediction", PortKind.TENSOR,  # type: ignore[assignment]  # no target: the loss makes its labels
                   help="the discriminator's logits on a Real | Fake batch"),)
    params = (Param("role", "choice", "discriminator", choices=ROLES,
                    help="discriminator: real → 1, fake → 0; generator: fake → 1"),
              Param("weight", "float", 1.0, min=0.0, max=1e6, help="multiplier in the optimizer's weighted sum"),
              Param("real_label", "float", 1.0, min=0.5, max=1.0,
                    help="the real samples' label for the discriminator (0.9: one-sided label smoothing)"))
    summary_params = ("role",)

    def infer(self, ctx: InferContext) -> dict[str, Any]:
        pred = ctx.input("prediction")
        per_sample = 1
        for d in pred.shape[1:]:
            per_sample *= d
        if not pred.shape or pred.shape[0] % 2 or per_sample != 1:
            raise ctx.error(f"needs one logit per sample of a Real | Fake batch but receives {pred.fmt()}",
                            hint="feed a discriminator that starts at a Real | Fake node and ends in a Linear "
                                 "layer with out_features 1")
        return {"loss": TensorInfo((), "loss")}

    def make(self, params: Mapping[str, Any]) -> Any:
        return AdversarialBCE.make(params["role"], 1.0 - float(params.get("real_label", 1.0)))
