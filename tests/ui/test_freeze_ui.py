"""Freezing in the editor: the inspector's Trainable box, the canvas menu's Freeze/Unfreeze, the frozen card."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QRectF
from PySide6.QtGui import QImage, QPainter

from .helpers import build_mlp, mlp_with_block


def _card_image(window: Any, nid: str) -> QImage:
    item = window.scene.node_items[nid]
    rect = item.sceneBoundingRect()
    img = QImage(int(rect.width()), int(rect.height()), QImage.Format.Format_ARGB32)
    img.fill(0)
    p = QPainter(img)
    window.scene.render(p, QRectF(0, 0, rect.width(), rect.height()), rect)
    p.end()
    return img


def test_trainable_box_freezes_one_node_in_one_undo_step(window: Any, qtbot: Any) -> None:
    doc = window.document
    ids = build_mlp(window)
    fc1 = ids["fc1"]
    window.scene.select_nodes([fc1])
    box = window.inspector.trainable_box
    assert box is not None and box.isChecked() and box.text() == "Trainable"
    plain = _card_image(window, fc1)
    base = doc.undo_stack.count()
    box.click()
    assert not doc.graph.nodes[fc1].trainable and doc.undo_stack.count() == base + 1
    item = window.scene.node_items[fc1]
    assert item.frozen and "frozen" in item.toolTip()
    assert _card_image(window, fc1) != plain  # drawn differently
    assert '"trainable": false' in doc.project.dumps()
    doc.undo_stack.undo()
    assert doc.graph.nodes[fc1].trainable and not item.frozen and box.isChecked()
    assert _card_image(window, fc1) == plain
    doc.undo_stack.redo()
    assert not box.isChecked() and item.frozen
    # nodes without weights of their own have no box
    window.scene.select_nodes([ids["loss"]])
    assert window.inspector.trainable_box is None


def test_context_menu_freezes_and_unfreezes_the_selection(window: Any, qtbot: Any) -> None:
    doc = window.document
    ids = build_mlp(window)
    sel = [ids["fc1"], ids["fc2"]]
    window.scene.select_nodes(sel)
    base = doc.undo_stack.count()
    menu = window._context_menu(window.scene.node_items[ids["fc1"]].pos(), window.scene.node_items[ids["fc1"]])
    (freeze,) = [a for a in menu.actions() if a.text() == "Freeze"]
    freeze.trigger()
    assert [doc.graph.nodes[n].trainable for n in sel] == [False, False]
    assert doc.undo_stack.count() == base + 1
    assert all(window.scene.node_items[n].frozen for n in sel)
    menu = window._context_menu(window.scene.node_items[ids["fc1"]].pos(), window.scene.node_items[ids["fc1"]])
    texts = [a.text() for a in menu.actions()]
    assert "Unfreeze" in texts and "Freeze" not in texts
    doc.undo_stack.undo()
    assert all(doc.graph.nodes[n].trainable for n in sel)
    assert not any(window.scene.node_items[n].frozen for n in sel)


def test_a_frozen_block_is_drawn_frozen_and_its_box_follows(window: Any, qtbot: Any) -> None:
    doc = window.document
    ids, bid = mlp_with_block(window)
    window.scene.select_nodes([bid])
    window.set_trainable(False)
    assert not doc.graph.nodes[bid].trainable and window.scene.node_items[bid].frozen
    box = window.inspector.trainable_box
    assert box is not None and not box.isChecked()


def test_opening_an_imported_project_holds_its_weights(make_window: Any, qtbot: Any, tmp_path: Any) -> None:
    import torch

    from netstudio.project.importer import import_to_files, read_state_dict

    _, out, w_out = import_to_files("torchvision:resnet18", tmp_path / "net.nsproj", input_shape="1,3,32,32")
    window = make_window(training=True)
    assert window.training_session.trained is None
    assert window.open_file(out)
    trained = window.training_session.trained
    assert trained is not None and "net.pt" in trained.label
    state = read_state_dict(w_out)
    held = trained.model.state_dict()
    assert held.keys() == state.keys() and all(torch.equal(held[k], v) for k, v in state.items())
    assert "with its weights net.pt" in window.statusBar().currentMessage()
    # a weights file that is gone: the project still opens, and the status line says why
    w_out.unlink()
    assert window.open_file(out)
    assert window.training_session.trained is None
    assert "net.pt were not loaded" in window.statusBar().currentMessage()


def test_train_in_the_app_starts_from_the_weights_beside_the_project(make_window: Any, qtbot: Any,
                                                                     tmp_path: Any) -> None:
    import torch

    from netstudio.compiler.build import build_plan
    from netstudio.project.io import Project, save_project
    from netstudio.training.config import TrainConfig

    from .test_training_dock import TRAIN_TIMEOUT_MS, digits_graph

    graph = digits_graph(lr=1e-8)  # training then barely moves the weights it started from
    fc1 = next(nid for nid, n in graph.nodes.items() if n.name == "fc1")
    state = build_plan(graph, 64).model.state_dict()
    state = {k: torch.full_like(v, 0.25) if k.startswith("fc1.") else v for k, v in state.items()}
    torch.save(state, tmp_path / "start.pt")
    project = Project(graph, TrainConfig(epochs=1, device="cpu"), name="start")
    project.weights = "start.pt"
    path = save_project(project, tmp_path / "start.nsproj")
    window = make_window(training=True)
    assert window.open_file(path)
    # the held weights come from the file beside the project: closing would lose nothing
    assert window.training_session.trained is not None
    assert window.training_session.unexported_weights() is None
    dock = window.training_dock
    phases: list[str] = []
    window.training_session.phase.connect(lambda p: phases.append(str(p.get("phase"))))
    with qtbot.waitSignal(dock.training_finished, timeout=TRAIN_TIMEOUT_MS):
        dock.train_action.trigger()
    assert dock.outcome["status"] == "finished"
    assert any("starting from the weights beside the project: loaded" in p for p in phases), phases
    trained = dock.trained.model.get_submodule(window.document.graph.nodes[fc1].name)
    assert torch.allclose(trained.weight, torch.full_like(trained.weight, 0.25), atol=1e-4)
    assert window.training_session.unexported_weights() is not None  # trained in the app: these are new


def test_nodes_inside_an_open_frozen_block_are_drawn_frozen(window: Any, qtbot: Any) -> None:
    doc = window.document
    ids, bid = mlp_with_block(window)
    fc1 = ids["fc1"]
    doc.enter_block(bid)
    plain = _card_image(window, fc1)
    assert not window.scene.node_items[fc1].frozen
    doc.leave_to(0)
    window.scene.select_nodes([bid])
    window.set_trainable(False)
    doc.enter_block(bid)  # double-click: the frozen block's inside
    inner = [window.scene.node_items[n] for n in (fc1, ids["relu"])]
    assert all(item.frozen for item in inner)
    assert "frozen" in inner[0].toolTip()
    assert _card_image(window, fc1) != plain  # the hatched ❄ card
    assert doc.graph.nodes[bid].inner.nodes[fc1].trainable  # the inner node's own flag is unchanged
    doc.undo_stack.undo()  # unfreezing the block while it is open redraws its nodes
    assert doc.path == [bid] and not any(item.frozen for item in inner)
    assert _card_image(window, fc1) == plain
    doc.undo_stack.redo()
    assert all(item.frozen for item in inner)
