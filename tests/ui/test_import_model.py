"""File → Import model…: imports off the GUI thread and opens the project it wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from netstudio.ui.importing import ImportDialog, ImportRequest
from netstudio.ui.main_window import MainWindow


def test_import_model_opens_the_imported_project(window: Any, qtbot: Any, tmp_path: Path, dialogs: Any,
                                                 monkeypatch: Any) -> None:
    out = tmp_path / "resnet"
    monkeypatch.setattr(MainWindow, "ask_import_request",
                        lambda self: ImportRequest("torchvision:resnet18", str(out), "1,3,32,32"))
    assert window.act_import in window.file_menu.actions()
    window.act_import.trigger()
    qtbot.waitUntil(lambda: window.document.project.path is not None, timeout=120_000)
    assert window.document.project.path == tmp_path / "resnet.nsproj"
    assert (tmp_path / "resnet.pt").is_file()
    names = {n.name: n.type_id for n in window.document.graph.nodes.values()}
    assert {"conv1", "layer1_0", "fc"} <= set(names) and names["layer1_0"] == "block.block"  # blocks by default
    assert "weights in resnet.pt" in window.last_status
    assert dialogs.errors == []


def test_import_notes_are_shown(window: Any, qtbot: Any, tmp_path: Path, dialogs: Any, monkeypatch: Any) -> None:
    # a module called twice: its shared weights become copies, which the user must be told about
    import torch

    from tests.test_importer import SharedLayer

    path = tmp_path / "shared.pt2"
    torch.export.save(torch.export.export(SharedLayer().eval(), (torch.randn(2, 6),)), path)
    monkeypatch.setattr(MainWindow, "ask_import_request",
                        lambda self: ImportRequest(str(path), str(tmp_path / "shared.nsproj")))
    window.act_import.trigger()
    qtbot.waitUntil(lambda: window.document.project.path is not None, timeout=120_000)
    assert dialogs.errors == [] and "1 note" in window.last_status
    ((title, text),) = dialogs.notes
    assert title == "Imported with notes" and "module 'enc' (Linear) is called 2 times" in text


def test_import_model_shows_the_error(window: Any, qtbot: Any, tmp_path: Path, dialogs: Any,
                                      monkeypatch: Any) -> None:
    monkeypatch.setattr(MainWindow, "ask_import_request",
                        lambda self: ImportRequest("torchvision:no_such_net", str(tmp_path / "x.nsproj")))
    window.act_import.trigger()
    qtbot.waitUntil(lambda: bool(dialogs.errors), timeout=60_000)
    title, text = dialogs.errors[0]
    assert title == "Cannot import model" and "no classification model named 'no_such_net'" in text
    assert window.document.project.path is None and window.last_status == "Import failed"


def test_import_dialog_request(qtbot: Any) -> None:
    dlg = ImportDialog()
    qtbot.addWidget(dlg)
    assert dlg.request() is None  # nothing entered
    dlg.spec.setText(" torchvision:vgg11_bn ")
    dlg.out.setText("/tmp/vgg")
    dlg.shape.setText("1,3,64,64")
    assert dlg.request() == ImportRequest("torchvision:vgg11_bn", "/tmp/vgg.nsproj", "1,3,64,64", None)
    dlg.flat.setChecked(True)
    assert dlg.request() == ImportRequest("torchvision:vgg11_bn", "/tmp/vgg.nsproj", "1,3,64,64", None, True)
