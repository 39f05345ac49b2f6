"""The GAN sample in the app: the worker's events, the dock's per-phase loss curves and generated-sample grid,
the optimizer's inspector text."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch

from conftest import SAMPLES
from netstudio.project.io import load_project

pytest.importorskip("pytestqt")

from tests.ui.test_training_dock import TRAIN_TIMEOUT_MS, make_dock, stop_all, train  # noqa: E402,F401

GAN = SAMPLES / "gan_mnist.nsproj"


def _plain(v: Any) -> bool:
    """Only Python numbers, strings, lists and dicts (what may cross threads)."""
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain(x) for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return all(_plain(x) for x in v)
    return v is None or isinstance(v, (bool, int, float, str))


def test_worker_trains_the_gan_and_sends_plain_phase_and_sample_events(qtbot: Any) -> None:
    from netstudio.ui.training.worker import TrainingWorker, TrainJob, WorkerThread

    project = load_project(GAN)
    worker = TrainingWorker(TrainJob(project.graph.to_dict(), replace(project.training, epochs=2, device="cpu"),
                                     run_index=1))
    events: list[dict[str, Any]] = []
    worker.progress.connect(events.extend)
    thread = WorkerThread(worker, "test-gan-worker")
    with qtbot.waitSignal(worker.done, timeout=120_000) as blocker:
        thread.start()
    assert thread.join(30_000)
    outcome = blocker.args[0]
    assert outcome["status"] == "finished", outcome
    kinds = [e["kind"] for e in events]
    assert kinds.count("samples") == 2 and kinds.count("epoch") == 2
    epoch_phases = [e for e in events if e["kind"] == "phases" and e["scope"] == "epoch"]
    assert [list(e["losses"]) for e in epoch_phases] == [["opt_d", "opt_g"]] * 2
    for e in events:
        assert not any(isinstance(v, torch.Tensor) for v in e.values())
        assert _plain({k: v for k, v in e.items() if k != "kind"}), e["kind"]
    samples = [e for e in events if e["kind"] == "samples"]
    assert samples[-1]["shape"] == [1, 28, 28] and len(samples[-1]["images"]) == 16


def test_dock_plots_one_curve_per_phase_and_shows_generated_samples(qtbot: Any, stop_all: Any) -> None:  # noqa: F811
    project = load_project(GAN)
    win, dock = make_dock(qtbot, project.graph, epochs=2, keep_best=False)
    stop_all(dock)
    outcome = train(qtbot, dock)
    assert outcome["status"] == "finished", outcome
    qtbot.waitUntil(lambda: not dock.results.generated_box.isHidden(), timeout=10_000)
    box = dock.results.generated_box
    assert box.title() == "Generated samples (epoch 2)"
    tiles = dock.results.generated.tiles
    assert len(tiles) == 16
    pix = tiles[0][0].pixmap()
    assert pix.width() == pix.height() == 56
    img = pix.toImage()
    values = {img.pixelColor(x, y).red() for x in range(56) for y in range(56)}
    assert len(values) > 10  # a real picture, not a blank tile
    # no accuracy, no best epoch: those rows are left out rather than shown empty
    for key in ("train_accuracy", "val_accuracy", "best_epoch"):
        assert dock.results.metric_text(key) is None, key
    assert dock.results.metric_text("train_loss") not in (None, "—")
    run = dock.plots.current
    assert run is not None
    assert sorted(k for k in run.phase_series if k.startswith("phase_epoch:")) == ["phase_epoch:opt_d",
                                                                                  "phase_epoch:opt_g"]
    assert all(run.phase_series[f"phase_epoch:{n}"].n == 2 for n in ("opt_d", "opt_g"))
    assert run.phase_series["phase_batch:opt_g"].n > 2
    dock.plots.redraw()
    legend = [label.text for _, label in dock.plots.loss_plot.getPlotItem().legend.items]
    assert "run 1 opt_d" in legend and "run 1 opt_g" in legend
    curve = run.curves["phase_epoch:opt_g"]
    xs, ys = curve.getData()
    assert list(xs) == [1.0, 2.0] and all(y > 0 for y in ys)
    assert "phases opt_d → opt_g" in dock._running_text
    assert dock.last_error is None


def test_optimizer_inspector_explains_the_phase_order(make_window: Any) -> None:
    window = make_window(load_project(GAN))
    ids = {n.name: n.id for n in window.document.graph.nodes.values()}
    window.inspector.show_node(ids["opt_d"])
    text = window.inspector.description.text()
    assert "every batch runs 1. opt_d → 2. opt_g. This is phase 1: it computes d_loss" in text
    assert "(d_flatten, d_hidden, d_leaky_relu, d_dropout, d_logit)" in text
    window.inspector.show_node(ids["g_hidden"])
    assert "phase" not in window.inspector.description.text()


def test_single_optimizer_runs_show_no_phase_curves_or_samples(qtbot: Any, stop_all: Any) -> None:  # noqa: F811
    win, dock = make_dock(qtbot, epochs=1)
    stop_all(dock)
    assert train(qtbot, dock)["status"] == "finished"
    assert dock.plots.current is not None and dock.plots.current.phase_series == {}
    assert dock.results.generated_box.isHidden()


@pytest.mark.slow  # the exported generator is loaded in a fresh interpreter without NetStudio
def test_export_dialog_writes_the_generator_and_refuses_other_formats(qtbot: Any, tmp_path: Any,
                                                                      stop_all: Any) -> None:  # noqa: F811
    from netstudio.compiler.build import generator_of
    from netstudio.errors import ExportError
    from tests.ui.test_training_export import run_snippet

    project = load_project(GAN)
    win, dock = make_dock(qtbot, project.graph, epochs=1, keep_best=False)
    stop_all(dock)
    assert train(qtbot, dock)["status"] == "finished"
    dialog = dock.make_export_dialog()
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.input_note.text().startswith("The export is the GAN's generator: it takes noise (batch × 64")
    path = dialog.export_to("pt", tmp_path / "generator.pt")
    z = torch.randn(5, 64)
    stdout, outside = run_snippet(dialog.snippet_text, z, tmp_path)
    assert stdout == "torch.fx.graph_module True"
    gen = generator_of(dock.trained.model)
    assert gen is not None
    with torch.no_grad():
        assert torch.equal(outside, gen.eval()(z))
    assert outside.shape == (5, 1, 28, 28) and path.is_file()
    with pytest.raises(ExportError):
        dialog.export_to("pt2", tmp_path / "model.pt2")
    assert "A GAN project cannot be exported as torch.export (.pt2)" in dialog.status.text()
