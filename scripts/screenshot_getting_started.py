"""Regenerate docs/images/getting_started.png: what `make demo` shows after one click on Run.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshot_getting_started.py \
        [--model NAME] [--out PNG]

A real napari window: `temdefect gui`'s set-up (four docked widgets, the bubble sample, the
default bundled model), then the Inference widget's Run, then a full-window screenshot.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "getting_started.png"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="bundled model name or checkpoint "
                    "(default: the widget's default model)")
    ap.add_argument("--out", type=Path, default=OUT, help=f"PNG to write (default {OUT.name} "
                    "in docs/images; give another path to look without touching the docs)")
    args = ap.parse_args(argv)
    out = args.out
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_temdefect.cli.gui import setup_viewer

    viewer = napari.Viewer(title="napari-temdefect")
    viewer.window._qt_window.resize(1600, 1000)
    widgets = setup_viewer(viewer, sample="bubbles", model=args.model)
    inference = widgets["Inference"]
    image = viewer.layers["synthetic bubbles"]
    truth = [ly for ly in viewer.layers if ly.name.endswith("truth")]
    for ly in truth:
        ly.visible = False
    worker = inference.run_inference(image)
    if worker is None:
        print("inference did not start", file=sys.stderr)
        return 1
    t0 = time.time()
    while inference.worker is not None and time.time() - t0 < 600:
        QApplication.processEvents()
        time.sleep(0.05)
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)
    viewer.layers.selection.active = viewer.layers["synthetic bubbles defects"]
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False)
    print(f"wrote {out} ({out.stat().st_size // 1000} kB) after {time.time() - t0:.0f} s")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
