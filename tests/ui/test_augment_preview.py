"""The Dataset node's augmentation preview in the inspector (issue #15 item 4)."""

from __future__ import annotations

from typing import Any

from netstudio.graph.commands import SetParam
from .helpers import add


def test_preview_strip_shows_images_and_their_augmentations(window: Any, qtbot: Any) -> None:
    ds = add(window, "data.dataset", (0, 0), source="mnist_5k")
    lin = add(window, "layer.linear", (300, 0))
    window.inspector.show_node(lin)
    assert window.inspector.augment_preview.isHidden()  # only for a Dataset node
    window.inspector.show_node(ds)
    preview = window.inspector.augment_preview
    assert not preview.isHidden()
    assert window.document.push(SetParam(ds, "augment_crop", 3))
    assert preview.params is not None and preview.params["augment_crop"] == 3  # follows the edit
    preview.button.click()
    qtbot.waitUntil(lambda: preview.button.isEnabled() and not preview.image.isHidden(), timeout=60000)
    pix = preview.image.pixmap()
    # 8 images of 28 px with 2 px gaps, two rows
    assert (pix.width(), pix.height()) == (8 * 28 + 7 * 2, 2 * 28 + 2)
    img = pix.toImage()
    top = [img.pixelColor(x, y).red() for x in range(28) for y in range(28)]
    bottom = [img.pixelColor(x, 30 + y).red() for x in range(28) for y in range(28)]
    assert top != bottom and max(top) > 200  # real digit pixels, augmented below
