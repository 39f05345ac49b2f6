"""Save a PNG of an imported torchvision model in the editor (for the README).

    xvfb-run -s "-screen 0 1600x1000x24" python .ci/screenshots/importing.py \\
        resources/screenshots/import.png [--model torchvision:resnet18] [--block layer1_0]
        [--theme dark|light] [--size 1600x1000]

Runs ``netstudio import MODEL --out P.nsproj`` into a temporary folder (random
weights, seeded; nothing is downloaded), opens the project in the editor window,
lays it out and frames it, so the canvas shows the model's blocks (``layer1_0``…).
With ``--block NAME`` the block of that name is opened instead (double-click): the
canvas shows its inner graph and the breadcrumb above it the way back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import Qt

from editor import grab_when_settled, pump_events, screenshot_parser, start_app  # the sibling script (this folder is on sys.path when run)


def main(argv: list[str] | None = None) -> int:
    ap = screenshot_parser(__doc__, project=False)
    ap.add_argument("--model", default="torchvision:resnet18", help="what to import (netstudio import's MODEL)")
    ap.add_argument("--block", default="", help="open the block of this name (its inner graph and the breadcrumb)")
    ap.add_argument("--select", default="", help="node name to select (default: the block, or its first conv)")
    args = ap.parse_args(argv)

    from netstudio.ui.main_window import MainWindow

    app, w, h = start_app(args)
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as rec:
        project = Path(tmp) / f"{args.model.split(':')[-1]}.nsproj"
        # the real command line, as a newcomer runs it
        cmd = [sys.executable, "-m", "netstudio", "import", args.model, "--out", str(project)]
        run = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), timeout=600)
        if run.returncode != 0:
            print(f"import failed: {run.stdout}{run.stderr}", file=sys.stderr)
            return 1
        window = MainWindow(str(project), recovery_dir=rec, check_recovery=False)
        window.set_theme(args.theme, persist=False)
        window.resize(w, h)
        window.show()
        pump_events(300)
        # the canvas gets the room: the (empty) Problems panel stays short
        window.resizeDocks([window.problems_dock], [int(h * 0.12)], Qt.Orientation.Vertical)
        doc = window.document
        if args.block:
            block = doc.graph.find(args.block)
            if block is None:
                print(f"no block named {args.block!r}", file=sys.stderr)
                return 1
            doc.enter_block(block.id)
            pump_events(200)
        window.scene.auto_layout()
        doc.undo_stack.clear()  # a fresh-looking session: nothing to undo, no '*'
        doc.set_modified(False)
        window.scene.update_param_counts()
        window.summary.refresh()
        select = args.select or ("conv1" if args.block else "layer1_0")
        node = next((n for n in doc.current.nodes.values() if n.name == select), None)
        if node is not None:
            window.scene.select_nodes([node.id])
        window.view.frame_all()
        window.status("Ready", 0)
        return grab_when_settled(app, window, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
