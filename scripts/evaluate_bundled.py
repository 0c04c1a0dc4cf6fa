"""Cross-validated evaluation of the bundled models on whole held-out micrographs.

    python scripts/evaluate_bundled.py [--arch unet-mobilenet_v2] [--tta] [--only bubble]

For every CV fold checkpoint written by ``train_bundled.py --stage cv`` it runs the product's
own inference (``napari_temdefect.predict``, tiled, optional D4 TTA) on the fold's held-out
images, and measures per image:

* pixel F1 at threshold 0.5 (the seed paper's metric) and boundary-tolerant F1 (3 px);
* grain boundaries: CHAC-style grain count (``quantify(..., "grains")``, default gap bridging)
  of the prediction against the same count on the true mask;
* bubbles: object count, mean equivalent diameter and area fraction (``quantify(..., "blobs")``)
  against the same numbers on the true mask;
* calibration: ECE of the probabilities, and the AUROC of (1 − confidence) as a predictor of
  the pixels the mask gets wrong.

Every metric is also taken at each threshold of ``SWEEP``. The operating threshold that
``train_bundled.py --stage stamp`` records in a shipped model is chosen on the images of
``TUNING_FOLDS`` only (the threshold whose totals, grain count or bubble count and area fraction,
are closest to the truth); the report gives the other folds at that threshold separately, as the
estimate that the choice has not seen.

Every image is held out by exactly one fold, so the summary is over all images of a set.
Writes ``runs/bundled/evaluation[_<arch>][_tta].json``, reliability diagrams
``docs/figures/calibration_<model>.png`` (with ``--figures``) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bundled_data import DEFAULT_SPEC, FOLDS, ROOT, RUNS, Clock, load_set, set_threads, write_json  # noqa: E402
from train_bundled import recipe_for  # noqa: E402

QUANT = {"grain-boundary": "grains", "bubble": "blobs"}
BINS = 10
#: a wider gap bridging than quantify's default (2 px), to see how much gaps cost the count
GAP_WIDE = 5


def _quant(mask, kind):
    from napari_temdefect.quantify import quantify

    s = quantify(mask.astype(bool), QUANT[kind]).summary.iloc[0]
    if kind == "grain-boundary":
        wide = quantify(mask.astype(bool), "grains", gap_px=GAP_WIDE).summary.iloc[0]
        return {"grain_count": float(s["grain_count"]),
                "convex_grain_count": float(s["convex_grain_count"]),
                "grain_count_including_border": float(s["grain_count_including_border"]),
                f"grain_count_gap{GAP_WIDE}": float(wide["grain_count"])}
    # the count of bubbles, touching ones split (as the bubble model counts by default), on both
    # sides: it does not depend on whether the annotator's circles touched
    split = quantify(mask.astype(bool), "blobs", split_touching=True).summary.iloc[0]
    return {"count": float(s["count"]), "mean_diameter_px": float(s["mean_equivalent_diameter_px"]),
            "area_fraction": float(s["area_fraction"]), "count_split": float(split["count"])}


#: Thresholds scanned to choose each model's operating threshold (see choose_threshold).
SWEEP = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)
#: Folds on which the operating threshold is chosen; the other folds stay untouched by the
#: choice, so their numbers at the chosen threshold are a clean estimate.
TUNING_FOLDS = (0,)
#: What the threshold is chosen to get right: the totals the users publish.
TUNED_ON = {"grain-boundary": ("grain_count",), "bubble": ("count", "area_fraction")}


def evaluate_image(model, image, truth, kind, tta=False) -> tuple[dict, np.ndarray]:
    """Metrics of one model on one whole image; also the reliability histogram (BINS × 3).

    The headline metrics are at threshold 0.5 (the seed paper's); ``row["sweep"]`` holds pixel
    F1, boundary F1 and the counts at every threshold of :data:`SWEEP`."""
    from napari_temdefect import predict
    from napari_temdefect.metrics import auroc, boundary_f1, ece, pixel_f1

    clock = Clock()
    res = predict(model, image, tta=tta, threshold=0.5, device="cpu")
    seconds = clock()
    prob, pred = res.probability[0], res.mask > 0
    wrong = pred != truth
    f1 = pixel_f1(pred, truth)
    row = {"pixel_f1": f1.f1, "precision": f1.precision, "recall": f1.recall,
           "boundary_f1_3px": boundary_f1(pred, truth, 3.0).f1,
           # the stricter reading: centrelines within 3 px (a too-wide line is not forgiven)
           "centreline_f1_3px": boundary_f1(pred, truth, 3.0, centreline=True).f1,
           "ece": ece(prob, truth, bins=15),
           "error_auroc": auroc(1.0 - res.confidence, wrong),
           "error_fraction": float(wrong.mean()), "seconds": seconds}
    pq, tq = _quant(pred, kind), _quant(truth, kind)
    for k in pq:
        row[f"pred_{k}"], row[f"true_{k}"] = pq[k], tq[k]
    sweep = {}
    for t in SWEEP:
        if t == 0.5:  # the headline numbers above: the product's own mask at 0.5
            sweep["0.5"] = {"pixel_f1": row["pixel_f1"], "boundary_f1_3px":
                            row["boundary_f1_3px"], "centreline_f1_3px":
                            row["centreline_f1_3px"],
                            **{f"pred_{k}": v for k, v in pq.items()}}
            continue
        m = prob > t
        q = _quant(m, kind)
        sweep[f"{t:g}"] = {"pixel_f1": pixel_f1(m, truth).f1,
                           "boundary_f1_3px": boundary_f1(m, truth, 3.0).f1,
                           "centreline_f1_3px": boundary_f1(m, truth, 3.0, centreline=True).f1,
                           **{f"pred_{k}": v for k, v in q.items()}}
    row["sweep"] = sweep
    idx = np.minimum((prob * BINS).astype(int), BINS - 1).ravel()
    hist = np.stack([np.bincount(idx, minlength=BINS),
                     np.bincount(idx, weights=prob.ravel(), minlength=BINS),
                     np.bincount(idx, weights=truth.ravel().astype(float), minlength=BINS)], 1)
    return row, hist


def at_threshold(rows, t: float) -> list[dict]:
    """The rows with pixel F1, boundary F1 and predicted counts taken at threshold ``t``.

    ECE does not depend on the threshold; the error AUROC is the 0.5 mask's (its "errors" are
    that mask's), so away from 0.5 it is left out rather than mislabelled."""
    out = []
    for r in rows:
        r2 = dict(r)
        r2.update(r["sweep"][f"{t:g}"])
        if t != 0.5:
            r2["error_auroc"] = float("nan")
        out.append(r2)
    return out


def choose_threshold(kind, rows, folds=TUNING_FOLDS) -> float:
    """The threshold of :data:`SWEEP` whose totals (:data:`TUNED_ON`) are closest to the truth
    on the images of ``folds``; ties go to the value nearest 0.5."""
    tune = [r for r in rows if r.get("fold") in folds]
    if not tune:
        return 0.5

    def cost(t):
        errs = []
        for key in TUNED_ON[kind]:
            pred = sum(r["sweep"][f"{t:g}"][f"pred_{key}"] for r in tune)
            true = sum(r[f"true_{key}"] for r in tune)
            errs.append(abs(_rel(pred, true)))
        return (round(float(np.mean(errs)), 3), abs(t - 0.5))

    return float(min(SWEEP, key=cost))


def _code_hash() -> str:
    """Hash of the package code that a cached row depends on, and of this script."""
    import hashlib

    import napari_temdefect

    pkg = Path(napari_temdefect.__file__).parent
    files = sorted([*pkg.glob("inference/*.py"), *pkg.glob("quantify/*.py"),
                    pkg / "metrics.py", pkg / "preprocess.py", Path(__file__)])
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


CODE = _code_hash()

#: Counts, whose error is taken on the totals over the held-out images.
TOTALS = ("grain_count", "convex_grain_count", f"grain_count_gap{GAP_WIDE}", "count",
          "count_split")


def _rel(pred, true):
    return (pred - true) / true if true else float("nan")


def summarize(kind, rows) -> dict:
    out = {"images": len(rows)}
    for key in ("pixel_f1", "boundary_f1_3px", "centreline_f1_3px", "ece", "error_auroc"):
        vals = np.array([r.get(key, np.nan) for r in rows], float)
        if np.isnan(vals).all():  # older cache rows, or the AUROC away from 0.5
            continue
        out[key] = float(np.nanmean(vals))
        out[key + "_min"] = float(np.nanmin(vals))
    if kind == "grain-boundary":
        counts = [("grain_count",), ("convex_grain_count",), (f"grain_count_gap{GAP_WIDE}",)]
    else:
        counts = [("count",), ("count_split",), ("mean_diameter_px",), ("area_fraction",)]
    for (key,) in counts:
        pred = np.array([r.get(f"pred_{key}", np.nan) for r in rows], float)
        true = np.array([r.get(f"true_{key}", np.nan) for r in rows], float)
        rel = np.array([_rel(p, t) for p, t in zip(pred, true)])
        # signed error of the totals (all held-out images together) and mean |error| per image
        if key in TOTALS:
            out[f"{key}_total_error"] = float(_rel(pred.sum(), true.sum()))
        else:  # a size or fraction: its totals mean nothing, the mean signed error per image
            out[f"{key}_mean_error"] = float(np.nanmean(rel))
        out[f"{key}_mean_abs_error"] = float(np.nanmean(np.abs(rel)))
    return out


def reliability_figure(hists: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(hists), figsize=(4 * len(hists), 4), squeeze=False)
    for ax, (kind, h) in zip(axes[0], hists.items()):
        n = np.maximum(h[:, 0], 1)
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.plot(h[:, 1] / n, h[:, 2] / n, "o-", label="held-out pixels")
        ax.set(title=f"{kind}", xlabel="predicted probability", ylabel="observed frequency",
               xlim=(0, 1), ylim=(0, 1))
        ax.legend(loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def evaluate_samples(names=("generic", "bubble", "grain-boundary")) -> dict:
    """Pixel F1 of each shipped model on napari's synthetic sample images (is the default
    model sensible out of the box?). Truth: every defect mask of the sample."""
    from napari_temdefect import predict
    from napari_temdefect.metrics import pixel_f1
    from napari_temdefect.models import load_model
    from napari_temdefect.sample_data import SAMPLES, SEED
    from napari_temdefect.synthetic import make_micrograph

    out = {}
    for key, (kind, size, px, extra) in SAMPLES.items():
        synth = make_micrograph(kind, size=size, pixel_size_nm=px, seed=SEED, **extra)
        truth = np.zeros(synth.image.shape, bool)
        for m in synth.masks.values():
            truth |= m
        for name in names:
            pred = predict(load_model(name, device="cpu"), synth.image, device="cpu").mask > 0
            f1 = pixel_f1(pred, truth)
            out[f"{name} on {key}"] = {"pixel_f1": f1.f1, "precision": f1.precision,
                                       "recall": f1.recall, "predicted_fraction": float(pred.mean()),
                                       "true_fraction": float(truth.mean())}
            print(f"{name:15s} on sample {key:8s}: pixel F1 {f1.f1:.3f} (P {f1.precision:.2f}, "
                  f"R {f1.recall:.2f})", flush=True)
    write_json(RUNS / "samples.json", out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="+", choices=sorted(FOLDS), default=sorted(FOLDS))
    ap.add_argument("--arch", default=None,
                    help="the CV folder (a train_bundled.py variant tag, e.g. unet-mobilenet_v2 "
                         "or unet-resnet18-seed1); default: each model's shipped recipe "
                         "(train_bundled.recipe_for), reported in evaluation.json")
    ap.add_argument("--folds", type=int, nargs="+", default=None)
    ap.add_argument("--tta", action="store_true", help="D4 test-time augmentation (8× slower)")
    ap.add_argument("--inverted", action="store_true",
                    help="score the held-out images with their contrast inverted (how bubbles "
                         "look on the other side of focus)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-cache", action="store_true",
                    help="measure every image again (default: reuse runs/bundled/eval_cache rows "
                         "of the same checkpoint and the same code)")
    ap.add_argument("--figures", action="store_true", help="write docs/figures/calibration.png")
    ap.add_argument("--samples", action="store_true",
                    help="instead: score the shipped models on the napari sample images")
    ap.add_argument("--out", default=None, help="JSON file (default runs/bundled/evaluation*.json)")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    if args.samples:
        evaluate_samples()
        return 0
    from napari_temdefect.models import load_model
    from napari_temdefect.preprocess import invert_image

    flags = ("_tta" if args.tta else "") + ("_inverted" if args.inverted else "")
    suffix = ("" if args.arch in (None, DEFAULT_SPEC) else f"_{args.arch}") + flags
    out_path = Path(args.out) if args.out else RUNS / f"evaluation{suffix}.json"
    report = {"arch": args.arch or DEFAULT_SPEC, "tta": args.tta, "inverted": args.inverted,
              "models": {}}
    if out_path.exists():  # a run with --only keeps the other model's results in the report
        kept = json.loads(out_path.read_text()).get("models", {})
        report["models"].update({k: v for k, v in kept.items() if k not in args.only})
    hists = {}
    for kind in args.only:
        folder = args.arch or recipe_for(kind).tag
        data = {d["name"]: d for d in load_set(kind)}
        rows, hist = [], np.zeros((BINS, 3))
        for k, held in enumerate(FOLDS[kind]):
            if args.folds is not None and k not in args.folds:
                continue
            ckpt = RUNS / "cv" / folder / f"{kind}-fold{k}.safetensors"
            if not ckpt.exists():
                print(f"missing {ckpt}; run train_bundled.py --stage cv first", flush=True)
                continue
            model = None
            for name in held:
                # per-image results are cached against the checkpoint's mtime and the code
                # that makes them (prediction, metrics, counting), so re-runs are cheap and
                # a changed pipeline is measured again
                cache = RUNS / "eval_cache" / f"{folder}{flags}" / f"{kind}-fold{k}-{name}.json"
                stamp = ckpt.stat().st_mtime
                cached = json.loads(cache.read_text()) if cache.exists() and not args.no_cache \
                    else {}
                if (cached.get("mtime") == stamp and cached.get("code") == CODE
                        and "sweep" in cached.get("row", {})):
                    row, h = cached["row"], np.array(cached["hist"])
                else:
                    model = model or load_model(ckpt, device="cpu")
                    image = data[name]["image"]
                    if args.inverted:
                        image = invert_image(image)
                    row, h = evaluate_image(model, image, data[name]["mask"], kind, args.tta)
                    row.update(image=name, fold=k)
                    write_json(cache, {"mtime": stamp, "code": CODE, "row": row, "hist": h})
                rows.append(row)
                hist += h
                print(f"{kind} fold {k} {name}: " + ", ".join(
                    f"{key} {v:.3f}" for key, v in row.items() if isinstance(v, float)), flush=True)
        if not rows:
            continue
        hists[kind] = hist
        thr = choose_threshold(kind, rows)
        clean = [r for r in rows if r.get("fold") not in TUNING_FOLDS]
        report["models"][kind] = {
            "cv_folder": folder,
            "summary": summarize(kind, rows), "threshold": thr,
            "tuning_folds": list(TUNING_FOLDS),
            "summary_at_threshold": summarize(kind, at_threshold(rows, thr)),
            "summary_at_threshold_untuned_folds": (
                summarize(kind, at_threshold(clean, thr)) if clean else None),
            "images": rows, "reliability": hist.tolist()}
        write_json(out_path, report)
    if args.figures and hists:
        reliability_figure(hists, ROOT / "docs" / "figures" / f"calibration{suffix}.png")
    print(f"\nwrote {out_path}\n")
    print("| model | images | pixel F1 | F1 (3 px) | centreline F1 (3 px) | count error (total) "
          "| mean abs count error | ECE | error AUROC |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind, m in report["models"].items():
        key = "grain_count" if kind == "grain-boundary" else "count"
        for label, s in (("0.5", m["summary"]), (f"{m['threshold']:g}", m["summary_at_threshold"]),
                         (f"{m['threshold']:g}, untuned folds",
                          m["summary_at_threshold_untuned_folds"])):
            if s is None:
                continue
            print(f"| {kind} @ {label} | {s['images']} | {s['pixel_f1']:.3f} | "
                  f"{s['boundary_f1_3px']:.3f} | {s.get('centreline_f1_3px', float('nan')):.3f} | "
                  f"{s[key + '_total_error']:+.1%} | {s[key + '_mean_abs_error']:.1%} | "
                  f"{s['ece']:.3f} | {s.get('error_auroc', float('nan')):.3f} |")
    bubble = report["models"].get("bubble")
    if bubble is not None and "count_split_total_error" in bubble["summary"]:
        print("\nbubbles counted with touching ones split on both sides (the bubble model's "
              "default): count error total / mean abs per image")
        for label, s in (("0.5", bubble["summary"]),
                         (f"{bubble['threshold']:g}", bubble["summary_at_threshold"]),
                         (f"{bubble['threshold']:g}, untuned folds",
                          bubble["summary_at_threshold_untuned_folds"])):
            if s is not None:
                print(f"  @ {label}: {s['count_split_total_error']:+.1%} / "
                      f"{s['count_split_mean_abs_error']:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
