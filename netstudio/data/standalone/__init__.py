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
from typing import Callable

#: the runtime modules, in the order a generated program needs them (dependencies first)
MODULES: tuple[str, ...] = ("split", "data_tabular", "data_images", "data_folder", "data_csv")

#: imports every generated program has at its top: :func:`module_code` leaves these lines out of a
#: module so that the pasted code does not import them a second time (any other import stays)
PROGRAM_IMPORTS: frozenset[str] = frozenset({"import numpy as np", "import torch",
                                             "import torch.nn.functional as F"})


def pasteable(package: str, name: str, drop_import: Callable[[str], bool] = lambda source: True) -> str:
    """The text of ``<package>/<name>.py`` to paste into a generated program: read as a package
    resource, without its module docstring and without the top-level imports ``drop_import``
    (given an import statement's source) says the program already has (default: all of them).

    Shared by these data modules and the script export's :mod:`netstudio.project.standalone`."""
    text = resources.files(package).joinpath(f"{name}.py").read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    drop: set[int] = set()
    for k, node in enumerate(ast.parse(text).body):
        span = range(node.lineno - 1, node.end_lineno or node.lineno)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if drop_import("".join(lines[i] for i in span).strip()):
                drop.update(span)
        elif k == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):
            drop.update(span)
    return "".join(line for i, line in enumerate(lines) if i not in drop).strip("\n") + "\n"


def module_code(name: str) -> str:
    """The text of ``name``.py without its module docstring and :data:`PROGRAM_IMPORTS`, ready to paste."""
    if name not in MODULES:
        raise KeyError(f"no standalone data module {name!r}")
    return pasteable(__name__, name, lambda source: source in PROGRAM_IMPORTS)
