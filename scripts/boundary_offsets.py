"""Where the grain-boundary pixel F1 goes: F1 at several tolerances and centreline offsets.

    python scripts/boundary_offsets.py [--arch unet-resnet18] [--threshold 0.5]

For each grain-boundary image, its cross-validation fold model (``runs/bundled/cv/<arch>/``,
trained without it) predicts the boundaries; the script prints pixel F1, boundary F1 at 1, 2,
3 and 5 px, and the distance from every pixel of the predicted centreline (skeleton) to the
nearest labelled centreline. The labels are lines of constant width (about 5.4 px), so an
offset of 1-2 px of the centreline alone costs a fifth to a third of the overlap.
"""

from __future__ import annotations

import argparse

import numpy as np

from bundled_data import DEFAULT_SPEC, FOLDS, RUNS, load_set, set_threads


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default=DEFAULT_SPEC)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    set_threads(args.threads)

    from scipy import ndimage as ndi
    from skimage.morphology import skeletonize

    from napari_temdefect import load_model, predict
    from napari_temdefect.metrics import boundary_f1, pixel_f1

    data = {d["name"]: d for d in load_set("grain-boundary")}
    tolerances = (1, 2, 3, 5)
    print("| image | pixel F1 | " + " | ".join(f"F1 {t} px" for t in tolerances)
          + " | centreline within 1 / 2 px | beyond 5 px |")
    print("| --- |" + " ---: |" * (len(tolerances) + 3))
    rows, offsets = [], []
    for fold, names in enumerate(FOLDS["grain-boundary"]):
        model = load_model(RUNS / "cv" / args.arch / f"grain-boundary-fold{fold}.safetensors",
                           device="cpu")
        for name in names:
            truth = data[name]["mask"]
            pred = predict(model, data[name]["image"], threshold=args.threshold,
                           device="cpu").mask > 0
            row = [pixel_f1(pred, truth).f1] + [boundary_f1(pred, truth, tolerance_px=t).f1
                                                 for t in tolerances]
            d = ndi.distance_transform_edt(~skeletonize(truth))[skeletonize(pred)]
            rows.append(row)
            offsets.append(d)
            print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in row)
                  + f" | {np.mean(d <= 1):.2f} / {np.mean(d <= 2):.2f} | {np.mean(d > 5):.2f} |",
                  flush=True)
    d = np.concatenate(offsets)
    print("| **mean** | " + " | ".join(f"**{v:.3f}**" for v in np.mean(rows, axis=0))
          + f" | {np.mean(d <= 1):.2f} / {np.mean(d <= 2):.2f} (all pixels) | {np.mean(d > 5):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
