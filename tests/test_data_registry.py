"""The data source registry: a new source is one module (here: one class in the test), no edit of core.

Also the import structure the registry exists for: ``core`` imports no source module, the data
modules import each other without a circle, and the exported program's runtime modules
(``netstudio.data.standalone``) import nothing of NetStudio and are the code the library runs.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch

import netstudio.data as ns_data
from netstudio.data import registry
from netstudio.data.base import (DataSource, DatasetInfo, ExportLoader, PreparedData, SourceSpec, classification_info,
                                 split_sizes)
from netstudio.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

DATA_DIR = Path(ns_data.__file__).parent
_CENTRES = [[2.0, 0.0, 0.0, 1.0], [-2.0, 1.0, 0.0, -1.0], [0.0, -2.0, 2.0, 0.0]]


class Blobs(DataSource):
    """Three Gaussian blobs in 4-D, generated in memory from the seed (a source written for this test)."""

    N = 300

    def info_kw(self) -> dict[str, Any]:
        return classification_info(self.name, ("a", "b", "c"), False, ("f0", "f1", "f2", "f3"))

    def describe(self, p: dict[str, Any]) -> DatasetInfo:
        n_train, n_val = split_sizes(self.N, p["val_fraction"], self.name)
        return DatasetInfo(**self.info_kw(), feature_shape=(4,), n_train=n_train, n_val=n_val)

    def load(self, p: dict[str, Any]) -> PreparedData:
        from netstudio.data import prep

        rng = np.random.RandomState(p["seed"])
        y = rng.randint(0, 3, self.N)
        x = np.asarray(_CENTRES)[y] + rng.normal(scale=0.5, size=(self.N, 4))
        return prep.finish_tabular(self.info_kw(), p, x, y)

    def export_loader(self, p: dict[str, Any]) -> ExportLoader:
        return ExportLoader(
            settings=(f"CENTRES = {_CENTRES!r}",), modules=("split", "data_tabular"),
            body=("\n\ndef load_data(data_path=None):\n"
                  "    rng = np.random.RandomState(DATA_SEED)\n"
                  f"    y = rng.randint(0, 3, {self.N})\n"
                  f"    x = np.asarray(CENTRES)[y] + rng.normal(scale=0.5, size=({self.N}, 4))\n"
                  "    train_idx, val_idx = split_indices(len(x), VAL_FRACTION, DATA_SEED)\n"
                  "    return prepare_tabular(x, y, train_idx, val_idx, NORMALIZE, FITTED, regression=False)\n"))


@pytest.fixture
def blobs() -> Iterator[Blobs]:
    import netstudio.nodes.data  # noqa: F401  the Dataset node's choices are the sources registered at its import

    source = Blobs("test_blobs", SourceSpec("Blobs", "synthetic", "three blobs in 4-D (a test source)", True),
                   ("source", "val_fraction", "seed", "normalize"))
    registry.register(source)
    try:
        yield source
    finally:
        registry.unregister(source.name)
        ns_data.clear_cache()


def test_a_source_registered_in_a_test_describes_loads_and_trains(blobs: Blobs) -> None:
    from tests.test_training import classifier_plan

    from netstudio.training import TrainConfig, fit

    params = {"source": "test_blobs", "val_fraction": 0.25, "seed": 3}
    assert "test_blobs" in ns_data.SOURCES and ns_data.SOURCE_PARAMS["test_blobs"][0] == "source"
    info = ns_data.describe(params)
    assert (info.n_train, info.n_val, info.feature_shape, info.num_classes) == (225, 75, (4,), 3)
    data = ns_data.load(params)
    assert data.info == info
    assert ns_data.load(params) is data  # cached like every source, keyed by its params
    assert ns_data.load({**params, "seed": 4}) is not data
    # standardized on the training split by the shared tabular code
    assert torch.allclose(data.train_x.mean(dim=0), torch.zeros(4), atol=1e-5)

    plan = classifier_plan(hidden=16, n_classes=3, lr=0.05)  # an iris-shaped MLP: 4 features -> 3 classes
    result = fit(plan, data, TrainConfig(epochs=30, batch_size=32, device="cpu", seed=0))
    assert result.status == "finished", result.message
    assert result.metrics["val_accuracy"] >= 0.95


def test_the_standalone_program_loads_a_registered_source_like_the_library(blobs: Blobs) -> None:
    from netstudio.project import script_export as se

    for normalize in ("standard", "minmax", "none"):
        params = {"source": "test_blobs", "val_fraction": 0.2, "seed": 5, "normalize": normalize}
        ns: dict[str, Any] = {"np": np, "torch": torch, "nn": torch.nn, "__name__": "exported_data"}
        exec(compile(se.data_section(params), "<data section>", "exec"), ns)
        got = ns["load_data"]()
        ref = ns_data.load(params)
        for a, b in zip(got, (ref.train_x, ref.train_y, ref.val_x, ref.val_y)):
            assert a.dtype == b.dtype and torch.equal(a, b), normalize


def test_registry_refuses_duplicates_and_unknown_params_and_names_the_choices(blobs: Blobs) -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Blobs("iris", blobs.spec, blobs.params))
    with pytest.raises(ValueError, match="unknown: \\['colour'\\]"):
        registry.register(Blobs("other", blobs.spec, ("source", "colour")))
    assert "other" not in registry.names()
    with pytest.raises(DataError, match="unknown source 'nope'") as e:
        ns_data.describe({"source": "nope"})
    assert "test_blobs" in (e.value.hint or "") and "iris" in (e.value.hint or "")


def test_a_source_without_export_loader_gets_a_program_that_says_so(blobs: Blobs) -> None:
    from netstudio.project import script_export as se

    class NoExport(Blobs):
        export_loader = DataSource.export_loader

    registry.register(NoExport("test_blobs", blobs.spec, blobs.params), replace=True)
    ns: dict[str, Any] = {"np": np, "torch": torch, "nn": torch.nn, "__name__": "exported_data"}
    exec(compile(se.data_section({"source": "test_blobs"}), "<data section>", "exec"), ns)
    with pytest.raises(NotImplementedError, match="test_blobs"):
        ns["load_data"]()


def test_every_bundled_source_is_registered_in_the_dataset_node_order() -> None:
    from netstudio.nodes.data import DatasetNode

    assert registry.names() == DatasetNode.param("source").choices == tuple(ns_data.SOURCES)
    assert registry.split_sources() == tuple(s for s in registry.names() if s not in ("mnist", "fashion_mnist",
                                                                                      "cifar10"))
    assert registry.sources_with_param("n_samples") == ("moons", "circles", "regression")


# ----------------------------------------------------------------------------
# import structure
# ----------------------------------------------------------------------------


def _module_level_imports(path: Path) -> set[str]:
    """netstudio modules imported at module level (not inside functions, not under TYPE_CHECKING)."""
    out: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.If):  # TYPE_CHECKING blocks
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("netstudio"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("netstudio"))
    return out


def _all_imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_data_modules_import_each_other_without_a_circle() -> None:
    modules = {f"netstudio.data.{p.stem}": p for p in DATA_DIR.glob("*.py") if p.stem != "__init__"}
    graph = {m: {i for i in _module_level_imports(p) if i in modules and i != m} for m, p in modules.items()}
    sources = {"netstudio.data.builtin", "netstudio.data.synthetic", "netstudio.data.torchvision_sets",
               "netstudio.data.csv_source", "netstudio.data.images"}
    # core finds sources through the registry only, at no time (not even inside a function)
    assert not _all_imports(modules["netstudio.data.core"]) & sources
    # no source reaches into another source (images.py used to import a private helper of builtin.py)
    for s in sources:
        assert not _all_imports(modules[s]) & (sources - {s}), s
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> None:
        if state.get(m) == 1:
            raise AssertionError("import circle: " + " -> ".join(trail + [m]))
        if state.get(m) == 2:
            return
        state[m] = 1
        for n in graph[m]:
            visit(n, trail + [m])
        state[m] = 2

    for m in graph:
        visit(m, [])


def test_standalone_data_modules_import_nothing_of_netstudio_and_are_what_the_library_runs() -> None:
    from netstudio.data import base, images, prep, standalone
    from netstudio.data.standalone import data_folder, data_images, data_tabular, split

    for name in standalone.MODULES:
        path = DATA_DIR / "standalone" / f"{name}.py"
        assert not any(i.startswith("netstudio") for i in _all_imports(path)), name
        code = standalone.module_code(name)
        assert '"""' not in code.splitlines()[0]  # the module docstring is left out of the program
        compile(code, name, "exec")
    # the library delegates to the same functions the exported program runs
    assert "split_indices as split" in inspect.getsource(base.split_indices)
    assert prep._feature_stats is data_tabular.feature_stats and prep._to_gray is data_images.to_gray
    assert "data_folder import decode_image" in inspect.getsource(prep.decode_image)
    assert "folder_stats" in inspect.getsource(images.load_folder)
    tr, va = base.split_indices(10, 0.3, 7)
    assert (tr.tolist(), va.tolist()) == tuple(a.tolist() for a in split.split_indices(10, 0.3, 7))
    assert data_folder.folder_stats.__module__ == "netstudio.data.standalone.data_folder"
