"""Build the sample projects with the Graph API and save them with save_project.

Run ``python sample_projects/make_samples.py`` after changing the node catalog or
the file format: the samples are always produced by the same code the app uses,
so they are valid by construction (tests/test_samples.py checks and trains them).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from netstudio.graph.model import Graph, Node
from netstudio.project.io import Project, save_project
from netstudio.training.config import TrainConfig

HERE = Path(__file__).resolve().parent
# Grid spacing: the editor's node cards are 116 or 172 px wide. A sample must open readable in a
# 1600x1000 window (node text >= 9 px, i.e. zoom >= ~75 %, tests/ui/test_readable_canvas.py), so
# long graphs wrap into rows read top to bottom, each left to right, like Auto Layout does; the
# columns leave room for the widest shape label between two cards (``64×1×28×28``).
DX, DY = 230.0, 150.0
WIDE_DX, ROW_DY = 270.0, 170.0


class Builder:
    """Small helper: place nodes on a left→right grid and wire them by name."""

    def __init__(self, dx: float = DX, dy: float = DY) -> None:
        self.g = Graph()
        self.dx, self.dy = dx, dy

    def node(self, type_id: str, name: str, col: float, row: float = 0.0, **params: Any) -> Node:
        return self.g.add_node(type_id, params, (col * self.dx, row * self.dy), name=name)

    def chain(self, *nodes: Node) -> None:
        """Connect each node's main output to the next node's main input."""
        for a, b in zip(nodes, nodes[1:]):
            self.link(a, b)

    def link(self, a: Node, b: Node, src_port: str | None = None, dst_port: str | None = None) -> None:
        src_port = src_port or ("features" if a.type_id == "data.dataset" else "output")
        dst_port = dst_port or "input"
        self.g.connect(a.id, src_port, b.id, dst_port)

    def loss(self, pred: Node, target: Node, loss: Node, target_port: str = "target") -> None:
        self.link(pred, loss, dst_port="prediction")
        self.link(target, loss, src_port=target_port, dst_port="target")

    def optimize(self, optimizer: Node, *losses: Node) -> None:
        for loss in losses:
            self.g.connect(loss.id, "loss", optimizer.id, "loss")


def net_10_20_1() -> Project:
    b = Builder()
    data = b.node("data.dataset", "data", 0, source="regression", n_features=10, n_samples=1000, noise=0.1)
    fc1 = b.node("layer.linear", "hidden", 1, out_features=20)
    act = b.node("activation.sigmoid", "sigmoid", 2)
    fc2 = b.node("layer.linear", "output", 3, out_features=1)
    mse = b.node("loss.mse", "mse", 4, 1)
    sgd = b.node("optim.sgd", "sgd", 5, 1, lr=0.1, momentum=0.0)
    b.chain(data, fc1, act, fc2)
    b.loss(fc2, data, mse)
    b.optimize(sgd, mse)
    return Project(b.g, TrainConfig(epochs=20, batch_size=32), "10-20-1 network",
                   "The classic 10→20→1 network: 10 input features, one hidden layer of 20 sigmoid units and a "
                   "single linear output, trained with mean squared error and plain SGD on a synthetic linear "
                   "regression problem. Watch the loss fall; try more hidden units or a ReLU.")


def linear_regression() -> Project:
    b = Builder()
    data = b.node("data.dataset", "data", 0, source="diabetes")
    fc = b.node("layer.linear", "linear", 1, out_features=1)
    mse = b.node("loss.mse", "mse", 2, 1)
    sgd = b.node("optim.sgd", "sgd", 3, 1, lr=0.01, momentum=0.0)
    b.chain(data, fc)
    b.loss(fc, data, mse)
    b.optimize(sgd, mse)
    return Project(b.g, TrainConfig(epochs=20, batch_size=32), "Linear regression",
                   "Linear regression is a single Linear layer (10 → 1) fitted with mean squared error: predict "
                   "diabetes progression one year ahead from 10 standardized patient measurements. SGD with "
                   "learning rate 0.01 minimizes the loss; the validation loss shows how well it generalizes.")


def logistic_regression() -> Project:
    b = Builder()
    data = b.node("data.dataset", "data", 0, source="breast_cancer")
    fc = b.node("layer.linear", "linear", 1, out_features=1)
    act = b.node("activation.sigmoid", "sigmoid", 2)
    bce = b.node("loss.bce", "bce", 3, 1)
    opt = b.node("optim.adam", "adam", 4, 1, lr=0.01)
    b.chain(data, fc, act)
    b.loss(act, data, bce)
    b.optimize(opt, bce)
    return Project(b.g, TrainConfig(epochs=20, batch_size=32), "Logistic regression",
                   "Logistic regression = Linear (30 → 1) + Sigmoid, trained with binary cross-entropy: classify "
                   "breast tumours as malignant or benign from 30 measurements. The accuracy counts outputs above "
                   "0.5 as class 1.")


def _mnist_mlp(optimizer: Callable[[Builder], Node], title: str, description: str) -> Project:
    b = Builder(WIDE_DX, ROW_DY)
    # two rows: the network, then its output layer, the loss and the optimizer
    data = b.node("data.dataset", "data", 0, source="mnist_5k")
    flat = b.node("layer.flatten", "flatten", 1)
    fc1 = b.node("layer.linear", "fc1", 2, out_features=128)
    relu = b.node("activation.relu", "relu", 3)
    fc2 = b.node("layer.linear", "fc2", 0, 1, out_features=10)
    ce = b.node("loss.cross_entropy", "cross_entropy", 1, 1)
    opt = optimizer(b)
    b.chain(data, flat, fc1, relu, fc2)
    b.loss(fc2, data, ce)
    b.optimize(opt, ce)
    return Project(b.g, TrainConfig(epochs=5, batch_size=64), title, description)


def mnist_mlp_sgd() -> Project:
    return _mnist_mlp(lambda b: b.node("optim.sgd", "sgd", 2, 1, lr=0.01, momentum=0.9), "MNIST MLP (SGD)",
                      "A multilayer perceptron on 5,000 real MNIST digits: Flatten the 28×28 image to 784 values, "
                      "a hidden Linear layer of 128 ReLU units, and 10 class scores trained with cross-entropy. "
                      "SGD with momentum 0.9 reaches about 90% validation accuracy within a few epochs. Compare "
                      "with the Adam version.")


def mnist_mlp_adam() -> Project:
    return _mnist_mlp(lambda b: b.node("optim.adam", "adam", 2, 1, lr=1e-3), "MNIST MLP (Adam)",
                      "The same 784 → 128 → 10 MLP as the SGD sample, trained with Adam (learning rate 0.001): "
                      "adaptive step sizes usually converge faster without tuning momentum.")


def lenet() -> Project:
    b = Builder(WIDE_DX, ROW_DY)
    # three rows of five (features, then the classifier), read like text: the framed graph
    # stays large enough to read the shapes on the edges
    data = b.node("data.dataset", "data", 0, source="digits", resize=28)
    c1 = b.node("layer.conv2d", "conv1", 1, out_channels=6, kernel_size=5)
    r1 = b.node("activation.relu", "relu1", 2)
    p1 = b.node("layer.maxpool2d", "pool1", 3, kernel_size=2)
    c2 = b.node("layer.conv2d", "conv2", 4, out_channels=16, kernel_size=5)
    r2 = b.node("activation.relu", "relu2", 0, 1)
    p2 = b.node("layer.maxpool2d", "pool2", 1, 1, kernel_size=2)
    flat = b.node("layer.flatten", "flatten", 2, 1)
    f1 = b.node("layer.linear", "fc1", 3, 1, in_features=256, out_features=120)  # 16 channels × 4 × 4
    r3 = b.node("activation.relu", "relu3", 4, 1)
    f2 = b.node("layer.linear", "fc2", 0, 2, out_features=84)
    r4 = b.node("activation.relu", "relu4", 1, 2)
    f3 = b.node("layer.linear", "fc3", 2, 2, out_features=10)
    ce = b.node("loss.cross_entropy", "cross_entropy", 3, 2)
    opt = b.node("optim.adam", "adam", 4, 2, lr=2e-3)
    b.chain(data, c1, r1, p1, c2, r2, p2, flat, f1, r3, f2, r4, f3)
    b.loss(f3, data, ce)
    b.optimize(opt, ce)
    return Project(b.g, TrainConfig(epochs=6, batch_size=32), "LeNet-5",
                   "LeNet-5, the classic convolutional network: two Conv(5×5) → ReLU → MaxPool(2) stages turn a "
                   "28×28 digit (the 8×8 scikit-learn digits, resized) into 16×4×4 feature maps, then three "
                   "Linear layers (256 → 120 → 84 → 10) classify it. Follow the shapes on the edges.")


def resnet_block() -> Project:
    b = Builder(WIDE_DX, ROW_DY)
    # three rows: the stem, the residual block (its skip comes down from the stem), the head
    data = b.node("data.dataset", "data", 0, source="digits")
    flat = b.node("layer.flatten", "flatten", 1)
    stem = b.node("layer.linear", "stem", 2, out_features=64)
    stem_act = b.node("activation.relu", "stem_relu", 3)
    fc1 = b.node("layer.linear", "block_fc1", 0, 1, out_features=64)
    act1 = b.node("activation.relu", "block_relu", 1, 1)
    fc2 = b.node("layer.linear", "block_fc2", 2, 1, out_features=64)
    add = b.node("merge.add", "residual_add", 3, 1)
    act2 = b.node("activation.relu", "relu", 0, 2)
    head = b.node("layer.linear", "head", 1, 2, out_features=10)
    ce = b.node("loss.cross_entropy", "cross_entropy", 2, 2)
    opt = b.node("optim.adam", "adam", 3, 2, lr=1e-3)
    b.chain(data, flat, stem, stem_act, fc1, act1, fc2)
    b.link(fc2, add, dst_port="a")
    b.link(stem_act, add, dst_port="b")  # the skip connection
    b.chain(add, act2, head)
    b.loss(head, data, ce)
    b.optimize(opt, ce)
    return Project(b.g, TrainConfig(epochs=10, batch_size=32), "Residual block",
                   "A residual block: the input of two Linear/ReLU layers is added back to their output (Add "
                   "node), so the block only has to learn a correction. This skip connection is what lets "
                   "ResNets train very deep. Trained on the 8×8 digits.")


def autoencoder() -> Project:
    b = Builder(WIDE_DX, ROW_DY)
    # rows: the encoder, the decoder and its loss, the classifier head and the optimizer
    data = b.node("data.dataset", "data", 0, source="mnist_5k")
    flat = b.node("layer.flatten", "flatten", 1)
    e1 = b.node("layer.linear", "encoder", 2, out_features=128)
    e1a = b.node("activation.relu", "encoder_relu", 3)
    z = b.node("layer.linear", "bottleneck", 4, out_features=32)
    za = b.node("activation.relu", "code_relu", 0, 1)
    d1 = b.node("layer.linear", "decoder", 1, 1, out_features=128)
    d1a = b.node("activation.relu", "decoder_relu", 2, 1)
    d2 = b.node("layer.linear", "reconstruction", 3, 1, out_features=784)
    mse = b.node("loss.mse", "reconstruction_loss", 4, 1)
    cls = b.node("layer.linear", "classifier", 1, 2, out_features=10)
    ce = b.node("loss.cross_entropy", "classifier_loss", 2, 2, weight=0.5)
    opt = b.node("optim.adam", "adam", 3, 2, lr=1e-3)
    b.chain(data, flat, e1, e1a, z, za, d1, d1a, d2)
    b.loss(d2, data, mse, target_port="features")  # reconstruct the input itself
    b.link(za, cls)
    b.loss(cls, data, ce)
    b.optimize(opt, mse, ce)
    return Project(b.g, TrainConfig(epochs=5, batch_size=64), "Autoencoder + classifier",
                   "An autoencoder squeezes each 784-pixel MNIST digit through a 32-value bottleneck and "
                   "reconstructs it; its MSE loss compares the output with the dataset features themselves "
                   "(features → loss target). A small classifier head reads the bottleneck code, and both "
                   "losses feed one optimizer, so the code learns to both reconstruct and separate digits.")


def sequence_classifier() -> Project:
    b = Builder()
    data = b.node("data.dataset", "data", 0, source="digits")
    seq = b.node("layer.reshape", "rows", 1, shape=[8, 8])
    lstm = b.node("layer.lstm", "lstm", 2, hidden_size=64)
    last = b.node("layer.select", "last_step", 3, dim=1, index=-1)
    fc = b.node("layer.linear", "classifier", 0, 1, out_features=10)
    ce = b.node("loss.cross_entropy", "cross_entropy", 1, 1)
    opt = b.node("optim.adam", "adam", 2, 1, lr=0.005)
    b.chain(data, seq, lstm, last, fc)
    b.loss(fc, data, ce)
    b.optimize(opt, ce)
    return Project(b.g, TrainConfig(epochs=15, batch_size=32), "Sequence classifier (LSTM)",
                   "Reads each 8×8 digit as a sequence: a Reshape turns the image into 8 time steps of 8 pixels "
                   "(one row per step), an LSTM with 64 hidden units runs over the rows, Select keeps the hidden "
                   "state after the last row (dim 1, index -1) and a Linear layer turns it into 10 class scores. "
                   "The LSTM's h_n port carries the same final state; try a GRU, bidirectional=true or Mean over "
                   "the steps instead of the last step.")


def gan_mnist() -> Project:
    b = Builder(WIDE_DX, ROW_DY)
    # rows, read left to right: the data and the generator; the Real | Fake batch into the discriminator;
    # its end with the discriminator's loss and optimizer; the generator's loss and optimizer
    data = b.node("data.dataset", "data", 0, source="mnist_5k", normalize="minmax")
    noise = b.node("data.noise", "noise", 1, size=64)
    g1 = b.node("layer.linear", "g_hidden", 2, out_features=256)
    g1a = b.node("activation.leaky_relu", "g_leaky_relu", 3, negative_slope=0.2)
    g2 = b.node("layer.linear", "g_pixels", 4, out_features=784)
    g2a = b.node("activation.sigmoid", "g_sigmoid", 0, 1)
    img = b.node("layer.reshape", "g_image", 1, 1, shape=[1, 28, 28])
    pair = b.node("merge.real_fake", "real_fake", 2, 1)
    flat = b.node("layer.flatten", "d_flatten", 3, 1)
    d1 = b.node("layer.linear", "d_hidden", 4, 1, out_features=256)
    d1a = b.node("activation.leaky_relu", "d_leaky_relu", 0, 2, negative_slope=0.2)
    d1d = b.node("layer.dropout", "d_dropout", 1, 2, p=0.3)  # keeps the discriminator from winning too fast
    d2 = b.node("layer.linear", "d_logit", 2, 2, out_features=1)
    d_loss = b.node("loss.gan", "d_loss", 3, 2, role="discriminator")
    opt_d = b.node("optim.adam", "opt_d", 4, 2, lr=2e-4, beta1=0.5, phase=1)
    g_loss = b.node("loss.gan", "g_loss", 3, 3, role="generator")
    opt_g = b.node("optim.adam", "opt_g", 4, 3, lr=2e-4, beta1=0.5, phase=2)
    b.g.connect(noise.id, "noise", g1.id, "input")
    b.chain(g1, g1a, g2, g2a, img)
    b.link(data, pair, dst_port="real")
    b.link(img, pair, dst_port="fake")
    b.chain(pair, flat, d1, d1a, d1d, d2)
    b.link(d2, d_loss, dst_port="prediction")
    b.link(d2, g_loss, dst_port="prediction")
    b.optimize(opt_d, d_loss)
    b.optimize(opt_g, g_loss)
    return Project(b.g, TrainConfig(epochs=20, batch_size=64, keep_best=False), "GAN (MNIST)",
                   "A generative adversarial network: the generator turns 64 random numbers (Noise) into a "
                   "28×28 image; the discriminator judges a Real | Fake batch (real digits, then generated ones). "
                   "Two optimizers train in two phases every batch: opt_d (phase 1) steps the discriminator on "
                   "d_loss (real → 1, fake → 0, the fakes detached), then opt_g (phase 2) steps the generator on "
                   "g_loss (fakes → 1) through the unchanged discriminator. Results shows generated digits "
                   "after every epoch; the .pt export is the generator (noise in, image out).")


SAMPLES: dict[str, Callable[[], Project]] = {
    "net_10_20_1": net_10_20_1,
    "linear_regression": linear_regression,
    "logistic_regression": logistic_regression,
    "mnist_mlp_sgd": mnist_mlp_sgd,
    "mnist_mlp_adam": mnist_mlp_adam,
    "lenet": lenet,
    "resnet_block": resnet_block,
    "autoencoder": autoencoder,
    "sequence_classifier": sequence_classifier,
    "gan_mnist": gan_mnist,
}


def main(out_dir: Path = HERE) -> list[Path]:
    written = []
    for name, make in SAMPLES.items():
        written.append(save_project(make(), out_dir / f"{name}.nsproj"))
    return written


if __name__ == "__main__":
    for path in main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(path)
