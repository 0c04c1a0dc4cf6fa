"""Where the count errors of the CV models come from: missed, extra, merged and split objects.

    python scripts/count_errors.py --only bubble [--arch TAG] [--threshold 0.6 0.7]

Each held-out image of every CV fold is predicted by the fold model that never saw it (the
product's ``predict``), counted with the product's ``quantify`` (bubbles: ``blobs``; grain
boundaries: ``grains``, grains cut by the edge left out) at each ``--threshold``, and the
count error is split by :func:`napari_temdefect.metrics.count_errors`. The same ``quantify``
runs on the true mask. Rows go to ``runs/bundled/count_errors_<model>[_<arch>].json``.

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


def _counted(mask, kind):
    from napari_temdefect.quantify import quantify
    from napari_temdefect.quantify.compare import counted_labels

    return counted_labels(quantify(mask, KIND[kind]), KIND[kind])


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
            prob = predict(model, d["image"], threshold=0.5, device="cpu").probability
            prob = np.asarray(prob).reshape(d["mask"].shape)
            for thr in thresholds:
                c = count_errors(_counted(prob > thr, kind), truth)
                row = {f: getattr(c, f) for f in FIELDS}
                rows.setdefault(f"{thr:g}", {})[d["name"]] = row
                tot = totals.setdefault(f"{thr:g}", dict.fromkeys(FIELDS, 0))
                for f in FIELDS:
                    tot[f] += row[f]
                print(f"  {d['name']} at {thr:g}: " + " / ".join(str(row[f]) for f in FIELDS)
                      + f"  ({100 * c.error / max(c.truth, 1):+.1f} %)", flush=True)
        for thr, tot in totals.items():
            per_image = [abs(r["pred"] - r["truth"]) / r["truth"] for r in rows[thr].values()]
            print(f"  all at {thr}: " + " / ".join(str(tot[f]) for f in FIELDS)
                  + f"  (total {100 * (tot['pred'] - tot['truth']) / tot['truth']:+.1f} %, "
                  f"mean |error| per image {100 * np.mean(per_image):.1f} %)")
        suffix = "" if args.arch is None else f"_{args.arch}"
        write_json(RUNS / f"count_errors_{kind}{suffix}.json", {"tag": tag, "rows": rows,
                                                                "totals": totals})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
