"""The app and code from a user's Python file: Import asks before running it; opening a project that uses
it asks once per (file, sha256), remembered; declined or changed files leave the node unavailable."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from netstudio.nodes import usercode
from netstudio.project.importer import import_to_files
from netstudio.ui.importing import ImportRequest
from netstudio.ui.main_window import MainWindow

from tests.test_userfile import MODEL_PY, write_model


@pytest.fixture(autouse=True)
def fresh_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Nothing allowed or remembered: a new process with its own config folder."""
    monkeypatch.setenv("NETSTUDIO_CONFIG_DIR", str(tmp_path / "config"))
    usercode.revoke_all()
    yield
    usercode.revoke_all()
    for name, mod in list(sys.modules.items()):  # the user files this test loaded
        if getattr(mod, "__netstudio_user_file__", None):
            del sys.modules[name]


class Asked:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.texts: list[str] = []
        self.answer = False
        monkeypatch.setattr(MainWindow, "ask_trust_code", lambda _w, title, text: self._ask(text))

    def _ask(self, text: str) -> bool:
        self.texts.append(text)
        return self.answer


def user_node(window: Any) -> str:
    (nid,) = [nid for nid, n in window.document.graph.nodes.items() if n.type_id == "layer.user_module"]
    return nid


def problems_of(window: Any, nid: str) -> list[str]:
    return [p.message for p in window.scene.node_items[nid].problems if p.severity == "error"]


def test_import_dialog_asks_before_running_the_file(window: Any, qtbot: Any, tmp_path: Path, dialogs: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_model(tmp_path)
    sha = usercode.sha256_bytes(src.read_bytes())
    asked = Asked(monkeypatch)
    monkeypatch.setattr(MainWindow, "ask_import_request",
                        lambda self: ImportRequest(f"{src}:Net", str(tmp_path / "net"), "2,8"))
    window.act_import.trigger()  # answered "Don't Run"
    assert len(asked.texts) == 1 and str(src.resolve()) in asked.texts[0] and sha in asked.texts[0]
    assert "runs the Python code" in asked.texts[0]
    assert window._import_thread is None and "not run" in window.last_status
    assert not (tmp_path / "ran.marker").exists()
    asked.answer = True
    window.act_import.trigger()
    qtbot.waitUntil(lambda: window.document.project.path is not None, timeout=120_000)
    assert len(asked.texts) == 2  # opening the imported project does not ask again: the import trusted it
    nid = user_node(window)
    assert problems_of(window, nid) == [] and (tmp_path / "ran.marker").exists()
    assert dialogs.errors == []


def test_opening_asks_once_per_file_and_hash(make_window: Any, qtbot: Any, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_model(tmp_path)
    _, out, _ = import_to_files(f"{src}:Net", tmp_path / "net.nsproj", input_shape="2,8", trust=True)
    marker = tmp_path / "ran.marker"
    marker.unlink()
    usercode.revoke_all()  # the import ran in "another process"
    sha = usercode.sha256_bytes(src.read_bytes())
    asked = Asked(monkeypatch)
    window = make_window(training=True)

    # declined: the project opens, the node is unavailable, nothing ran
    assert window.open_file(out)
    assert len(asked.texts) == 1 and str(src.resolve()) in asked.texts[0] and sha in asked.texts[0]
    nid = user_node(window)
    (msg,) = problems_of(window, nid)
    assert "not trusted, so it is not run" in msg
    assert "not trusted, so not run: model.py" in window.last_status
    assert window.training_session.trained is None  # its weights need the model: not loaded, no crash
    assert not marker.exists()

    # trusted: runs; remembered for the next process
    asked.answer = True
    assert window.open_file(out)
    assert len(asked.texts) == 2 and problems_of(window, user_node(window)) == []
    assert window.training_session.trained is not None and marker.exists()
    usercode.revoke_all()
    assert window.open_file(out)
    assert len(asked.texts) == 2  # not asked again
    assert not window.document.modified

    # the file changed: another hash, asked again; trusting it records the new hash in the project
    src.write_text(MODEL_PY + "\n# edited\n")
    new_sha = usercode.sha256_bytes(src.read_bytes())
    usercode.revoke_all()
    asked.answer = False
    assert window.open_file(out)
    assert len(asked.texts) == 3 and "has changed" in asked.texts[2] and new_sha in asked.texts[2]
    (msg,) = problems_of(window, user_node(window))
    assert "changed after the project recorded it" in msg
    asked.answer = True
    assert window.open_file(out)
    assert len(asked.texts) == 4
    nid = user_node(window)
    assert window.document.graph.nodes[nid].params["sha256"] == new_sha and window.document.modified
    assert problems_of(window, nid) == []
