"""Regenerate the widget screenshots in docs/images/ (real napari windows, no mock-ups).

    xvfb-run -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshot_widgets.py \
        [--model NAME_OR_PATH] [--out docs/images] [--only corrections quantify finetune]

The micrograph is a 512² crop of a real He-bubble image from ../shared/data when present
(else a synthetic one). Without --model, a small U-Net is first trained for a few seconds on
a *different* bubble image, so its prediction is plausible but imperfect — the situation the
annotate-and-refine loop is for. Screenshots are written as PNG (checked to stay < 400 kB).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "he_bubbles"
MAX_BYTES = 400_000


def _crop(path, size=512):
    from napari_temdefect.io import read_image

    img = np.asarray(read_image(path).data)
    return img[:size, :size]


def load_data():
    """(image to correct, its true mask, a different image + mask to pre-train on)."""
    if (SHARED / "images" / "bubble2.jpg").exists():
        img = _crop(SHARED / "images" / "bubble2.jpg")
        mask = _crop(SHARED / "masks" / "bubble2.png") > 0  # masks are 0/1 or 0/255
        other = _crop(SHARED / "images" / "bubble5.jpg")
        other_mask = _crop(SHARED / "masks" / "bubble5.png") > 0
        return img, mask, other, other_mask
    rng = np.random.default_rng(0)

    def scene(seed):
        r = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:512, 0:512]
        m = np.zeros((512, 512), bool)
        for _ in range(60):
            cy, cx = r.integers(0, 512, 2)
            m |= (yy - cy) ** 2 + (xx - cx) ** 2 < r.integers(9, 80)
        im = np.where(m, 150, 110) + r.normal(0, 12, m.shape)
        return im.clip(0, 255).astype(np.uint8), m

    del rng
    a, am = scene(1)
    b, bm = scene(2)
    return a, am, b, bm


def get_model(name_or_path):
    from napari_temdefect.models import create_model, load_model
    from napari_temdefect.training import TrainConfig, TrainingEntry, TrainingSet, train

    if name_or_path:
        return load_model(name_or_path, device="cpu")
    _, _, other, other_mask = load_data()
    model = create_model(arch="unet", encoder="resnet18", device="cpu", name="bubbles (demo)",
                         options={"encoder_depth": 3, "decoder_channels": [32, 16, 8]})
    ts = TrainingSet([TrainingEntry(other, other_mask.astype(np.uint8), name="bubble5")])
    train(model, ts, TrainConfig(depth="all", freeze_bn=False, steps=60, batch_size=4,
                                 patch_size=128, seed=0))
    return model


def settle(viewer, seconds=0.5):
    from qtpy.QtWidgets import QApplication

    end = time.time() + seconds
    while time.time() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def wait_worker(worker, timeout=600):
    from qtpy.QtWidgets import QApplication

    done = []
    worker.finished.connect(lambda: done.append(1))
    end = time.time() + timeout
    while not done and time.time() < end:
        QApplication.processEvents()
        time.sleep(0.05)


def run_to_end(worker, what: str) -> bool:
    """Wait for a widget's worker; False (and a message) when the widget did not start one."""
    if worker is None:
        print(f"{what} did not start", file=sys.stderr)
        return False
    wait_worker(worker)
    return True


def show_only(viewer, title: str) -> None:
    """Show one of our dock widgets, hide the others (a screenshot per widget)."""
    for name, dock in viewer.window._wrapped_dock_widgets.items():
        if "temdefect" in name.lower() or "TEM Defects" in name:
            dock.setVisible(title in name)


def save_png(viewer, path: Path):
    from PIL import Image

    viewer.screenshot(str(path), canvas_only=False, flash=False)
    img = Image.open(path).convert("RGB")
    img.save(path, optimize=True)
    if path.stat().st_size > MAX_BYTES:  # quantise: UI + micrograph survive 256 colours well
        img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size / 1000:.0f} kB)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default=str(ROOT / "docs" / "images"))
    ap.add_argument("--only", nargs="*", default=["corrections", "quantify", "finetune"],
                    choices=["corrections", "quantify", "finetune"])
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import napari

    from napari_temdefect.constants import IGNORE_LABEL
    from napari_temdefect.inference import predict
    from napari_temdefect.widgets._session import get_session

    image, true_mask, _, _ = load_data()
    model = get_model(args.model)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    viewer.add_image(image, name="bubble2")
    session = get_session(viewer)
    session.model, session.model_key = model, args.model or "bubbles (demo)"
    session.inference_settings.update(threshold=0.5, device="cpu")

    # the prediction layers, exactly as inference makes them
    _, corr = viewer.window.add_plugin_dock_widget("napari-temdefect", "Corrections")
    _, fine = viewer.window.add_plugin_dock_widget("napari-temdefect", "Fine-tune")
    _, quant = viewer.window.add_plugin_dock_widget("napari-temdefect", "Quantification")
    result = predict(model, image, threshold=0.5, device="cpu")
    from napari_temdefect.widgets._results import prepare_labels, show_prediction
    from napari_temdefect.widgets.quantify import viewer_camera

    show_prediction(viewer, viewer.layers["bubble2"], result, model.name,
                    *prepare_labels(result, None, model.split_touching),
                    ask_replace=lambda name: True,
                    split_touching=model.split_touching)
    session.predictions["bubble2"] = result  # as Inference records it: Fine-tune re-predicts
    corr._refresh_layers()
    layer = viewer.layers["bubble2 defects"]
    viewer.layers["bubble2 confidence"].visible = False
    viewer.layers["bubble2 probability"].visible = False
    camera = viewer_camera(viewer)  # napari 0.9 moved it to viewer.scene.camera
    camera.center = (256, 256)
    camera.zoom = 1.5

    # the user's pass over the image: add the missed bubbles, erase the false ones (here from
    # the true mask), mark a doubtful strip as ignore; then the clean-up buttons
    from napari_temdefect import corrections as core

    labels = np.asarray(layer.data).copy()
    missed = true_mask & (labels == 0)
    labels[missed] = labels.max() + 1
    labels = core.instances_from_mask((labels > 0) & true_mask).astype(np.int32)
    labels[470:500, 300:470] = IGNORE_LABEL
    layer.data = labels
    corr.min_size.setValue(15)
    corr.remove_small()
    corr.fill_holes()
    corr.add_to_training_set()
    viewer.layers.selection.active = layer
    layer.mode = "paint"
    corr.layer_combo.setCurrentText(layer.name)
    show_only(viewer, "Corrections")
    settle(viewer, 1.0)
    if "corrections" in args.only:
        save_png(viewer, out / "corrections.png")

    if "quantify" in args.only:
        # the corrected labels measured as blobs; the images carry no calibration, so the
        # pixel size stays empty and the results are in px
        show_only(viewer, "Quantification")
        quant._refresh_layers()
        quant.layer_combo.setCurrentText(layer.name)
        quant.kind_combo.setCurrentText("blobs")
        if not run_to_end(quant.run(), "quantification"):
            return 1
        quant.tabs.setCurrentIndex(2)  # the size histogram
        viewer.layers.selection.active = quant.result_layer
        layer.mode = "pan_zoom"
        settle(viewer, 1.0)
        save_png(viewer, out / "quantify.png")
        layer.mode = "paint"

    if "finetune" in args.only:
        show_only(viewer, "Fine-tune")
        fine.budget_steps.setValue(80)
        fine.ask_replace_edited = lambda name: True  # the dialog's Yes: replace, Ctrl-Z undoes
        fine.batch.setValue(4)
        fine.patch.setCurrentText("128")
        if not run_to_end(fine.start(), "fine-tuning"):
            return 1
        if fine.inference_worker is not None:
            wait_worker(fine.inference_worker)
        settle(viewer, 1.5)
        save_png(viewer, out / "finetune.png")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
