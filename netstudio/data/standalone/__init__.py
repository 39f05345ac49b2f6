"""The data code of the exported training program, as real modules shared with :mod:`netstudio.data`.

Every module here runs on plain numpy/PyTorch (plus PIL or pandas where its source needs them)
and never imports ``netstudio``: :func:`module_code` reads a module's text as a package resource
and the script export writes it into ``train.py``, while the library imports the same functions
(``split_indices``, ``feature_stats``, ``channel_stats``, ``decode_image``, ``folder_stats``), so
the split and the normalization the exported program computes are NetStudio's by construction.

They live under ``netstudio.data`` rather than ``netstudio.project.standalone`` because the data
layer sits below ``project`` and must not import from it; ``project`` reads them from here.
"""

from __future__ import annotations

import ast
from importlib import resources

#: the runtime modules, in the order a generated program needs them (dependencies first)
MODULES: tuple[str, ...] = ("split", "data_tabular", "data_images", "data_folder", "data_csv")

#: imports every generated program has at its top: :func:`module_code` leaves these lines out of a
#: module so that the pasted code does not import them a second time (any other import stays)
PROGRAM_IMPORTS: frozenset[str] = frozenset({"import numpy as np", "import torch",
                                             "import torch.nn.functional as F"})


def module_code(name: str) -> str:
    """The text of ``name``.py without its module docstring and :data:`PROGRAM_IMPORTS`, ready to paste."""
    if name not in MODULES:
        raise KeyError(f"no standalone data module {name!r}")
    text = resources.files(__name__).joinpath(f"{name}.py").read_text(encoding="utf-8")
    tree = ast.parse(text)
    first = tree.body[0] if tree.body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        assert first.end_lineno is not None
        text = "".join(text.splitlines(keepends=True)[first.end_lineno:])
    text = "".join(line for line in text.splitlines(keepends=True) if line.rstrip() not in PROGRAM_IMPORTS)
    return text.strip("\n") + "\n"
