"""Where the count errors of the CV models come from: missed, extra, merged and split objects.

    python scripts/count_errors.py --only bubble [--arch TAG] [--threshold 0.6 0.7]

Each held-out image of every CV fold is predicted by the fold model that never saw it (the
product's ``predict``), counted with the product's ``quantify`` (bubbles: ``blobs``; grain
boundaries: ``grains``, grains cut by the edge left out) at each ``--threshold``, and the
count error is split by :func:`napari_temdefect.metrics.count_errors`. The same ``quantify``
runs on the true mask. It also splits what pixel F1 at 0.5 loses: wrong pixels on the rims of
objects that both masks have, and whole objects that only one has (:func:`pixel_loss`). Rows go
to ``runs/bundled/count_errors_<model>[_<arch>].json``.

``--split-h H [H ...]`` (bubbles) also counts both the prediction and the true mask with
touching bubbles split (``quantify(..., split_touching=True, split_h_px=H)``): the count of
bubbles, which does not depend on whether the annotator's circles touched.

``--shapes`` (bubbles) also scores pixel F1 at 0.5 with every predicted bubble redrawn as the
disc, or the ellipse, of its own area and moments (the labels are drawn as circles); blobs
under 20 px or of solidity under 0.9 (merged bubbles) stay as predicted.

``--labels`` (bubbles) asks instead how the labels themselves treat touching bubbles: per
image, the pairs of labelled bubbles drawn apart by a strip of background at most
``2 × separation.GAP_RADIUS_PX`` px wide, and the bubbles drawn joined to another in one
component (the pieces ``quantify``'s watershed split, h = 2 px, finds inside the labelled
components beyond one per component). No model is needed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bundled_data import RUNS, held_out, parse_cv_args, write_json  # noqa: E402
from train_bundled import recipe_for  # noqa: E402

KIND = {"grain-boundary": "grains", "bubble": "blobs"}
FIELDS = ("truth", "pred", "missed", "extra", "merged", "split")


def _split_count(mask, h: float) -> int:
    """Bubbles counted with touching ones split (``quantify``'s watershed, h in px)."""
    from napari_temdefect.quantify import quantify

    return int(quantify(mask, "blobs", split_touching=True, split_h_px=h).summary["count"].iloc[0])


def _counted(mask, kind):
    from napari_temdefect.quantify import quantify
    from napari_temdefect.quantify.compare import counted_labels

    return counted_labels(quantify(mask, KIND[kind]), KIND[kind])


def pixel_loss(pred, truth) -> dict:
    """What pixel F1 loses, as shares of its denominator 2·TP + FP + FN (so that F1 plus the
    four shares is 1): false pixels on the rims of objects both masks have (``rim_fp``,
    ``rim_fn``), and the pixels of whole predicted objects that touch no true one (``extra``)
    and of whole true objects that no prediction touches (``missed``)."""
    from scipy import ndimage as ndi

    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    eight = np.ones((3, 3), bool)
    pl, _ = ndi.label(pred, eight)
    tl, _ = ndi.label(truth, eight)
    hit_p = np.zeros(pl.max() + 1, bool)
    hit_p[np.unique(pl[truth])] = True
    hit_t = np.zeros(tl.max() + 1, bool)
    hit_t[np.unique(tl[pred])] = True
    extra = np.count_nonzero(pred & ~hit_p[pl])
    missed = np.count_nonzero(truth & ~hit_t[tl])
    tp = np.count_nonzero(pred & truth)
    fp = np.count_nonzero(pred & ~truth) - extra
    fn = np.count_nonzero(truth & ~pred) - missed
    total = max(2 * tp + fp + fn + extra + missed, 1)
    return {"pixel_f1": 2 * tp / total, "rim_fp": fp / total, "rim_fn": fn / total,
            "extra": extra / total, "missed": missed / total}


def as_shapes(mask, shape: str) -> np.ndarray:
    """``mask`` with each bubble redrawn as a ``"disc"`` or ``"ellipse"`` (see ``--shapes``)."""
    from skimage.draw import disk, ellipse
    from skimage.measure import label, regionprops

    lab = label(mask, connectivity=2)
    out = np.zeros(lab.shape, bool)
    for r in regionprops(lab):
        if r.area < 20 or r.solidity < 0.9:
            out[lab == r.label] = True
            continue
        cy, cx = r.centroid
        if shape == "disc":
            rr, cc = disk((cy, cx), np.sqrt(r.area / np.pi), shape=out.shape)
        else:
            rr, cc = ellipse(cy, cx, r.axis_major_length / 2, r.axis_minor_length / 2,
                             shape=out.shape, rotation=r.orientation)
        out[rr, cc] = True
    return out


def label_habits() -> dict:
    """How the bubble labels treat touching bubbles: apart (a thin strip) or joined."""
    from scipy import ndimage as ndi

    from bundled_data import load_set
    from napari_temdefect.quantify.blobs import split_touching_blobs
    from napari_temdefect.training.separation import GAP_RADIUS_PX, gap_mask, object_ids

    out = {}
    for d in load_set("bubble"):
        ids = object_ids(d["mask"].astype(np.uint8))
        strips, _ = ndi.label(gap_mask(ids), structure=np.ones((3, 3), bool))
        pairs = set()
        r = GAP_RADIUS_PX
        for sl in ndi.find_objects(strips):
            rows = slice(max(sl[0].start - r, 0), sl[0].stop + r)
            box = ids[rows, max(sl[1].start - r, 0):sl[1].stop + r]
            near = np.unique(box[box > 0])
            if len(near) >= 2:
                pairs.add(tuple(near[:2]))
        pieces = int(split_touching_blobs(d["mask"], 2.0).max())
        out[d["name"]] = {"objects": int(ids.max()), "pairs_apart": len(pairs),
                          "joined": max(0, pieces - int(ids.max()))}
        print(f"  {d['name']}: {out[d['name']]['objects']} labelled bubbles, "
              f"{len(pairs)} close pairs drawn apart, {out[d['name']]['joined']} more bubbles "
              "drawn joined to another in one component", flush=True)
    return out


def _options(ap) -> None:
    ap.add_argument("--threshold", type=float, nargs="+", default=None,
                    help="probability thresholds (default: the shipped model's operating one, "
                         "which the CV folds do not record)")
    ap.add_argument("--labels", action="store_true",
                    help="how the bubble labels draw touching bubbles (no model)")
    ap.add_argument("--shapes", action="store_true",
                    help="bubbles: also pixel F1 with predicted bubbles redrawn as discs/ellipses")
    ap.add_argument("--split-h", type=float, nargs="+", default=(), metavar="H",
                    help="bubbles: also count with touching bubbles split (watershed h in px) "
                         "on both the prediction and the truth")


def main(argv=None) -> int:
    args = parse_cv_args(__doc__.splitlines()[0], argv, _options)
    if args.labels:
        write_json(RUNS / "label_habits_bubble.json", label_habits())
        return 0

    from napari_temdefect import load_model, predict
    from napari_temdefect.metrics import count_errors

    for kind in args.only:
        tag = args.arch or recipe_for(kind).tag
        rows, totals = {}, {}
        thresholds = args.threshold or [load_model(kind, device="cpu").threshold]
        print(f"== {kind} ({tag}): " + " / ".join(FIELDS))
        for _fold, d, model in held_out(kind, tag, args.folds):
            truth = _counted(d["mask"], kind)
            # the true mask's split counts do not depend on the threshold: once per image
            true_split = {h: _split_count(d["mask"], h)
                          for h in (args.split_h if kind == "bubble" else ())}
            prob = predict(model, d["image"], threshold=0.5, device="cpu").probability
            prob = np.asarray(prob).reshape(d["mask"].shape)
            loss = pixel_loss(prob > 0.5, d["mask"])
            rows.setdefault("pixel_loss_at_0.5", {})[d["name"]] = loss
            print(f"  {d['name']}: pixel F1 at 0.5 {loss['pixel_f1']:.3f}, lost on rims "
                  f"{loss['rim_fp']:.3f} (too much) + {loss['rim_fn']:.3f} (too little), on whole "
                  f"objects {loss['extra']:.3f} (extra) + {loss['missed']:.3f} (missed)")
            if args.shapes and kind == "bubble":
                from napari_temdefect.metrics import pixel_f1

                for shape in ("disc", "ellipse"):
                    loss[f"pixel_f1_{shape}"] = pixel_f1(as_shapes(prob > 0.5, shape),
                                                         d["mask"]).f1
                print(f"  {d['name']}: pixel F1 at 0.5 with bubbles redrawn as discs "
                      f"{loss['pixel_f1_disc']:.3f}, as ellipses {loss['pixel_f1_ellipse']:.3f}")
            for thr in thresholds:
                c = count_errors(_counted(prob > thr, kind), truth)
                row = {f: getattr(c, f) for f in FIELDS}
                rows.setdefault(f"{thr:g}", {})[d["name"]] = row
                tot = totals.setdefault(f"{thr:g}", dict.fromkeys(FIELDS, 0))
                for f in FIELDS:
                    tot[f] += row[f]
                print(f"  {d['name']} at {thr:g}: " + " / ".join(str(row[f]) for f in FIELDS)
                      + f"  ({100 * c.error / max(c.truth, 1):+.1f} %)", flush=True)
                for h, n_true in true_split.items():
                    key = f"{thr:g} split h{h:g}"
                    n_pred = _split_count(prob > thr, h)
                    rows.setdefault(key, {})[d["name"]] = {"pred": n_pred, "truth": n_true}
                    tot = totals.setdefault(key, {"pred": 0, "truth": 0})
                    tot["pred"] += n_pred
                    tot["truth"] += n_true
                    print(f"  {d['name']} at {thr:g}, touching bubbles split (h {h:g}): "
                          f"{n_true} / {n_pred}  ({100 * (n_pred - n_true) / n_true:+.1f} %)",
                          flush=True)
        losses = list(rows["pixel_loss_at_0.5"].values())
        print("  mean pixel F1 at 0.5 " + ", ".join(
            f"{k} {np.mean([r[k] for r in losses]):.3f}" for k in losses[0]))
        for thr, tot in totals.items():
            per_image = [abs(r["pred"] - r["truth"]) / r["truth"] for r in rows[thr].values()]
            print(f"  all at {thr}: " + " / ".join(str(tot[f]) for f in FIELDS if f in tot)
                  + f"  (total {100 * (tot['pred'] - tot['truth']) / tot['truth']:+.1f} %, "
                  f"mean |error| per image {100 * np.mean(per_image):.1f} %)")
        suffix = "" if args.arch is None else f"_{args.arch}"
        write_json(RUNS / f"count_errors_{kind}{suffix}.json", {"tag": tag, "rows": rows,
                                                                "totals": totals})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
