"""Which bubbles the bubble model finds, by their contrast: bright, dark and faint.

    python scripts/bubble_polarity.py [--arch unet-resnet18] [--inverted] [--threshold 0.5]

Under focus a bubble is a bright disc with a dark Fresnel fringe; over focus it is a dark disc
with a bright fringe; near focus it almost vanishes. For each bubble image its cross-validation
fold model (``runs/bundled/cv/<arch>/``, trained without it) predicts a mask, and every labelled
bubble is put in a class by its contrast, the mean of the image inside it minus the mean of a
ring 2–4 px outside it, in units of the image's standard deviation: bright (> 0.3), dark
(< −0.3) or faint. A bubble counts as found when a predicted pixel touches it. ``--inverted``
scores the same images with their contrast inverted (the classes swap), which is how a set of
over-focus micrographs looks to a model trained on under-focus ones.
"""

from __future__ import annotations

import argparse

import numpy as np

from bundled_data import FOLDS, RUNS, load_set, set_threads

CLASSES = ("bright", "dark", "faint")


def contrast_classes(image: np.ndarray, mask: np.ndarray):
    """(labels, class index per bubble 0..n-1) for the bubbles of ``mask``."""
    from scipy import ndimage as ndi

    im = image.astype(np.float64)
    im = (im - im.mean()) / (im.std() or 1.0)
    labels, n = ndi.label(mask)
    idx = np.arange(1, n + 1)
    ring = ndi.binary_dilation(mask, iterations=4) & ~ndi.binary_dilation(mask, iterations=1)
    ring_labels = ndi.grey_dilation(labels, size=9) * ring
    c = np.asarray(ndi.mean(im, labels, idx)) - np.asarray(ndi.mean(im, ring_labels, idx))
    cls = np.where(c > 0.3, 0, np.where(c < -0.3, 1, 2))
    return labels, idx, cls


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default=None,
                    help="the CV folder (default: the bubble model's shipped recipe)")
    ap.add_argument("--inverted", action="store_true")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.arch is None:
        from train_bundled import recipe_for

        args.arch = recipe_for("bubble").tag
    set_threads(args.threads)

    from scipy import ndimage as ndi

    from napari_temdefect import load_model, predict
    from napari_temdefect.metrics import pixel_f1

    from napari_temdefect.preprocess import invert_image

    data = {d["name"]: d for d in load_set("bubble")}
    print(f"{args.arch}{', inverted images' if args.inverted else ''}: found / labelled")
    print("| image | pixel F1 | " + " | ".join(CLASSES) + " |")
    print("| --- | ---: |" + " ---: |" * len(CLASSES))
    found = np.zeros(3, int)
    total = np.zeros(3, int)
    f1s = []
    for fold, names in enumerate(FOLDS["bubble"]):
        ckpt = RUNS / "cv" / args.arch / f"bubble-fold{fold}.safetensors"
        if not ckpt.exists():
            print(f"| (fold {fold}: no {ckpt.name}; run train_bundled.py --stage cv) | | | | |")
            continue
        model = load_model(ckpt, device="cpu")
        for name in names:
            image, truth = data[name]["image"], data[name]["mask"] > 0
            labels, idx, cls = contrast_classes(image, truth)  # classes of the original image
            if args.inverted:
                image = invert_image(image)
                cls = np.array([1, 0, 2])[cls]
            pred = predict(model, image, threshold=args.threshold, device="cpu").mask > 0
            hit = np.asarray(ndi.maximum(pred, labels, idx)) > 0
            f1s.append(pixel_f1(pred, truth).f1)
            cells = []
            for c in range(3):
                sel = cls == c
                found[c] += int(hit[sel].sum())
                total[c] += int(sel.sum())
                cells.append(f"{int(hit[sel].sum())} / {int(sel.sum())}")
            print(f"| {name} | {f1s[-1]:.3f} | " + " | ".join(cells) + " |", flush=True)
    print(f"| **all** | **{np.mean(f1s):.3f}** | " + " | ".join(
        f"**{f} / {t}** ({f / max(t, 1):.0%})" for f, t in zip(found, total)) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
