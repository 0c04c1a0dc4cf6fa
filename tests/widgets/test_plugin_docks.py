"""The whole loop with the four widgets docked the way a user docks them: Plugins menu.

napari hands a plugin widget a ``PublicOnlyProxy`` of the viewer, whose layers are proxies too,
so a widget that works when built by hand (the other tests) can still fail in the real app
(``type(layer)`` names the proxy, private attributes raise). This test goes through
``add_plugin_dock_widget``: sample data, Inference, Corrections, Fine-tune, Quantification.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_loop_through_plugin_docks(make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch,
                                   finetune_and_repredict):
    from napari_temdefect.widgets._session import get_session

    viewer = make_napari_viewer()
    viewer.open_sample("napari-temdefect", "bubbles")
    image = viewer.layers["synthetic bubbles"]
    truth = viewer.layers["synthetic bubbles truth"]
    docks = {}
    for title in ("Inference", "Corrections", "Fine-tune", "Quantification"):
        _, docks[title] = viewer.window.add_plugin_dock_widget("napari-temdefect", title)
    inf, corr, fine, quant = (docks[t] for t in
                              ("Inference", "Corrections", "Fine-tune", "Quantification"))
    assert type(inf.viewer) is not type(viewer)  # really the proxy, else this test proves nothing

    # Inference on the sample image
    inf.set_model_path(tiny_checkpoint)
    inf.image_combo.setCurrentText(image.name)
    worker = inf.run_inference()
    assert worker is not None
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    qtbot.waitUntil(lambda: "synthetic bubbles defects" in viewer.layers, timeout=10_000)
    for suffix in (" probability", " confidence", " defects"):
        layer = viewer.layers["synthetic bubbles" + suffix]
        assert tuple(layer.units) == tuple(image.units)
        assert tuple(layer.scale) == tuple(image.scale)[-2:]
    defects = viewer.layers["synthetic bubbles defects"]

    # Corrections: the user replaces the prediction by the truth and adds it to the training set
    corr._refresh_layers()
    corr.layer_combo.setCurrentText(defects.name)
    defects.data = np.asarray(truth.data).astype(defects.data.dtype)
    assert corr.add_to_training_set() is not None
    qtbot.waitUntil(lambda: "1 image" in fine.set_label.text(), timeout=10_000)

    # Fine-tune a few steps; the re-run asks before replacing the edited labels (answer: keep)
    asked = []
    monkeypatch.setattr(inf, "ask_replace_edited", lambda name: asked.append(name) or False)
    monkeypatch.setattr(fine, "ask_replace_edited", lambda name: asked.append(name) or False)
    fine.budget_steps.setValue(2)
    fine.batch.setValue(2)
    fine.patch.setCurrentText("128")
    finetune_and_repredict(fine)
    qtbot.waitUntil(lambda: "synthetic bubbles defects (2)" in viewer.layers, timeout=10_000)
    assert asked == ["synthetic bubbles defects"]
    assert np.array_equal(defects.data, truth.data)  # the user's labels are untouched
    assert get_session(viewer).model.history[-1]["kind"] == "finetune"

    # Quantification of the corrected labels, in nm
    quant.layer_combo.setCurrentText(defects.name)
    quant.kind_combo.setCurrentText("blobs")
    worker = quant.run()
    assert worker is not None
    qtbot.waitUntil(lambda: quant.worker is None, timeout=30_000)
    n_true = len(np.unique(np.asarray(truth.data))) - 1
    assert len(quant.result.objects) == n_true
    assert "area_nm2" in quant.result.objects.columns
