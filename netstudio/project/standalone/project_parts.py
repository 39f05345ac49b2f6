"""Stand-ins for the parts of train.py that the script export writes for each project.

Never copied into train.py: the export writes the real ones (the training settings
from the project, ``load_data`` for its data source, the loss terms and the optimizer
and scheduler its nodes emit, ``Model`` in model.py). They are here so that the
linter, the type checker and the tests see what :mod:`.train_loop` relies on.
"""

from torch import nn

EPOCHS = 1
BATCH_SIZE = 32  # global batch: split across all processes
SEED = 0
SHUFFLE = True
INIT_WEIGHTS = None  # optional starting weights, relative to train.py
CLIP_NORM = 0.0  # clip the gradients' total L2 norm to this (0 = off)
CLIP_VALUE = 0.0  # clip every gradient element to +-this (0 = off)
WARMUP_EPOCHS = 0  # linear learning-rate warm-up over these epochs, before the scheduler (0 = off)
HAS_ACCURACY = False  # classification on the dataset's target
SCHEDULER_STEP = "epoch"  # epoch | batch | metric
FROZEN: list[str] = []  # attribute paths of the frozen nodes' modules


class Model(nn.Module):
    """The network (model.py)."""


def load_data(data_path=None):
    """(train_x, train_y, val_x, val_y) as CPU tensors."""
    raise NotImplementedError


def loss_terms(outputs, x, y):
    """The project's loss terms as (weighted value, reduction) pairs; the loss is their sum."""
    raise NotImplementedError


def count_correct(outputs, y):
    """Correct predictions in a batch (a tensor), or None when accuracy does not apply."""
    raise NotImplementedError


def make_optimizer(model):
    raise NotImplementedError


def make_scheduler(optimizer, epochs, steps_per_epoch):
    raise NotImplementedError
