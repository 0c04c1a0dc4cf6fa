"""Train the bundled models (and their cross-validation folds) with the project's training code.

    python scripts/train_bundled.py                       # everything: CV folds, then finals
    python scripts/train_bundled.py --only grain-boundary --stage cv
    python scripts/train_bundled.py --only bubble generic --stage final --minutes 6

Stages:

* ``cv``: for ``grain-boundary`` and ``bubble``, one model per fold of ``bundled_data.FOLDS``
  (whole images held out), same recipe and budget as the final model; checkpoints go to
  ``runs/bundled/cv/<model>-fold<k>.safetensors`` and are scored by ``evaluate_bundled.py``.
* ``final``: the shipped models: the fold-0 CV model (``generic``: the grain-boundary one)
  trained further on every image (``--scratch``: from random weights), written (fp16) to
  ``src/napari_temdefect/models/weights/<model>.safetensors`` with metadata: description,
  classes, provenance, CV metrics (read from ``runs/bundled/evaluation.json`` when present),
  and the training history. ``generic`` also sees synthetic grains, bubbles and dislocations
  (never loops: they are the held-out transfer type, see ``transfer_loops.py``).

The real data is read from ``../shared/data`` (or ``$TEMDEFECT_DATA``). Seeds are fixed; a
wall-clock budget (``--minutes``) makes the step count depend on the machine, so the exact
weights depend on it too (the step count is stored in the history). JSON results go to
``runs/bundled/train_<stage>_<model>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bundled_data import (  # noqa: E402
    DEFAULT_SPEC, FOLDS, PROVENANCE, RUNS, SPECS, WEIGHTS, Clock, load_set, set_threads, write_json,
)

MODELS = ("grain-boundary", "bubble", "generic")
CLASSES = {"grain-boundary": ["boundary"], "bubble": ["bubble"], "generic": ["defect"]}
DESCRIPTIONS = {
    "grain-boundary": "Grain-boundary network (UO2 bright-field TEM); count grains with "
                      "quantify 'grains'",
    "bubble": "Bubbles, cavities and voids (He bubbles in TEM); count with quantify 'blobs'",
    "generic": "Any defect vs matrix (real boundaries + bubbles, synthetic dislocations); "
               "the starting point for fine-tuning on new defect types",
}
#: Wall-clock minutes per model (CV folds use the same budget as the final model).
MINUTES = {"grain-boundary": 8.0, "bubble": 8.0, "generic": 12.0}
#: The final models get more (they see every image; CV is therefore a conservative estimate).
FINAL_MINUTES = {"grain-boundary": 12.0, "bubble": 12.0, "generic": 12.0}
#: Synthetic images added to ``generic`` (kind, count); seeds 1000+ (tests use small seeds).
SYNTHETIC = (("grains", 4), ("bubbles", 4), ("dislocations", 4))


def recipe(minutes: float, seed: int = 0):
    """The from-scratch recipe of every bundled model (project training code, BCE + Dice)."""
    from napari_temdefect.training import TrainConfig

    return TrainConfig(depth="all", freeze_bn=False, minutes=minutes, lr=1e-3, l2=1e-5,
                       batch_size=4, patch_size=256, val_fraction=0.1, patience=None,
                       eval_every=40, monitor="val_loss", seed=seed, device="cpu")


def entries(kind: str, names=None, synthetic: bool = False):
    from napari_temdefect.training import TrainingEntry

    out = []
    sets = ("grain-boundary", "bubble") if kind == "generic" else (kind,)
    for s in sets:
        for d in load_set(s):
            if names is None or d["name"] in names:
                out.append(TrainingEntry(d["image"], d["mask"].astype(np.uint8),
                                         name=d["name"], binary=True))
    if synthetic:
        from napari_temdefect.synthetic import make_micrograph

        for i, (sk, n) in enumerate(SYNTHETIC):
            for j in range(n):
                m = make_micrograph(sk, size=512, seed=1000 + 10 * i + j)
                mask = np.zeros(m.image.shape, bool)
                for v in m.masks.values():
                    mask |= v
                out.append(TrainingEntry(m.image, mask.astype(np.uint8),
                                         name=f"synthetic-{sk}-{j}", binary=True))
    return out


#: Warm start of each final model: the fold-0 CV model of this set (generic: of grain-boundary).
INIT = {"grain-boundary": "grain-boundary", "bubble": "bubble", "generic": "grain-boundary"}


def train_one(kind: str, train_entries, minutes: float, name: str, arch: str = DEFAULT_SPEC,
              init: Path | None = None):
    from napari_temdefect.models import ModelSpec, load_model
    from napari_temdefect.training import TrainingSet, train

    start = ModelSpec(classes=CLASSES[kind], **SPECS[arch])
    if init is not None:  # continue training a CV model on every image
        start = load_model(init, device="cpu")
        start.name, start.spec.classes, start.parent = name, CLASSES[kind], str(init.name)
    clock = Clock()

    def progress(ev):
        if ev.get("event") == "eval":
            print(f"  [{name}] step {ev['step']:5d}  {clock():6.0f} s  train {ev['train_loss']}  "
                  f"val_loss {ev['val_loss']:.4f}  val_f1 {ev['val_f1']:.3f}", flush=True)

    result = train(start, TrainingSet(train_entries), recipe(minutes), name=name,
                   progress=progress)
    print(f"  [{name}] done: {result.steps} steps in {result.seconds:.0f} s, best step "
          f"{result.best_step} (val F1 {result.best_val_f1})", flush=True)
    return result


def run_cv(kind: str, minutes: float, arch: str = DEFAULT_SPEC, folds=None,
           cont: bool = False) -> dict:
    """``cont``: continue each fold model on its own training images, as the final model
    continues fold 0 on every image (written to ``cv/<arch>-cont/``)."""
    out_dir = RUNS / "cv" / (arch + ("-cont" if cont else ""))
    out_dir.mkdir(parents=True, exist_ok=True)
    all_names = [d["name"] for d in load_set(kind)]
    out = []
    for k, held in enumerate(FOLDS[kind]):
        if folds is not None and k not in folds:
            continue
        train_names = [n for n in all_names if n not in held]
        init = RUNS / "cv" / arch / f"{kind}-fold{k}.safetensors" if cont else None
        result = train_one(kind, entries(kind, train_names), minutes, f"{kind}-fold{k}", arch, init)
        path = out_dir / f"{kind}-fold{k}.safetensors"
        result.model.save(path, overwrite=True, half=False, held_out=held, train=train_names)
        out.append({"fold": k, "held_out": held, "train": train_names, "path": str(path),
                    **result.to_dict()})
        write_json(RUNS / f"train_cv_{kind}_{out_dir.name}_fold{k}.json",
                   {"model": kind, "arch": arch, "minutes": minutes, **out[-1]})
    return {"folds": out}


def _cv_metrics(kind: str) -> dict | None:
    path = RUNS / "evaluation.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return data.get("models", {}).get(kind, {}).get("summary")


def run_final(kind: str, minutes: float, arch: str = DEFAULT_SPEC,
              weights_dir: Path = WEIGHTS, init: bool = True) -> dict:
    train_entries = entries(kind, synthetic=(kind == "generic"))
    start = RUNS / "cv" / arch / f"{INIT[kind]}-fold0.safetensors"
    if init and not start.exists():
        raise SystemExit(f"{start} is missing; run the cv stage first (or pass --scratch)")
    result = train_one(kind, train_entries, minutes, kind, arch, start if init else None)
    model = result.model
    model.name = kind
    path = model.save(
        weights_dir / f"{kind}.safetensors", overwrite=True, half=True,
        description=DESCRIPTIONS[kind],
        provenance=PROVENANCE,
        training_data=[e.name for e in train_entries],
        training_pixel_size_nm=None,
        cv_metrics=_cv_metrics(kind),
        recipe="scripts/train_bundled.py --only " + kind,
    )
    size = path.stat().st_size / 1e6
    print(f"  wrote {path} ({size:.1f} MB)", flush=True)
    summary = {"model": kind, "minutes": minutes, "path": str(path), "size_mb": size,
               **result.to_dict()}
    write_json(RUNS / f"train_final_{kind}.json", summary)
    return summary


def stamp(kind: str, weights_dir: Path = WEIGHTS) -> None:
    """Write the CV metrics (runs/bundled/evaluation.json) into a shipped model's metadata.

    The weights are untouched: fp16 → fp32 → fp16 is exact."""
    from napari_temdefect.models import load_model

    path = weights_dir / f"{kind}.safetensors"
    model = load_model(path, device="cpu")
    model.metadata["cv_metrics"] = _cv_metrics(kind)
    model.save(path, overwrite=True, half=True)
    print(f"  {kind}: cv_metrics = {model.metadata['cv_metrics']}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="+", choices=MODELS, default=list(MODELS))
    ap.add_argument("--stage", choices=("cv", "final", "stamp", "all"), default="all",
                    help="stamp: copy CV metrics from runs/bundled/evaluation.json into the "
                         "shipped models' metadata (run after evaluate_bundled.py)")
    ap.add_argument("--minutes", type=float, default=None,
                    help="override the per-model budget (default: MINUTES in this script)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default 2)")
    ap.add_argument("--arch", choices=sorted(SPECS), default=DEFAULT_SPEC)
    ap.add_argument("--folds", type=int, nargs="+", default=None, help="CV folds to run (default all)")
    ap.add_argument("--continue-cv", action="store_true",
                    help="cv stage: continue the fold models for FINAL_MINUTES on their own "
                         "training images, mirroring how the final models are made")
    ap.add_argument("--scratch", action="store_true",
                    help="train final models from random weights instead of the fold-0 CV model")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    for kind in args.only:
        if args.stage in ("cv", "all") and kind in FOLDS:
            minutes = args.minutes or (FINAL_MINUTES if args.continue_cv else MINUTES)[kind]
            print(f"== {kind}: cross-validation, {len(FOLDS[kind])} folds × {minutes} min", flush=True)
            run_cv(kind, minutes, args.arch, args.folds, cont=args.continue_cv)
        if args.stage in ("final", "all"):
            minutes = args.minutes or FINAL_MINUTES[kind]
            print(f"== {kind}: final model, {minutes} min", flush=True)
            run_final(kind, minutes, args.arch, init=not args.scratch)
        if args.stage == "stamp":
            stamp(kind)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
