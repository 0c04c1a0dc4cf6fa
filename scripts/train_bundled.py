"""Train the bundled models (and their cross-validation folds) with the project's training code.

    python scripts/train_bundled.py                       # everything: CV folds, then finals
    python scripts/train_bundled.py --only grain-boundary --stage cv
    python scripts/train_bundled.py --only grain-boundary bubble generic --stage final

Stages:

* ``cv``: for ``grain-boundary`` and ``bubble``, one model per fold of ``bundled_data.FOLDS``
  (whole images held out), with exactly the recipe and step budget of the final model;
  checkpoints go to ``runs/bundled/cv/<arch>/<model>-fold<k>.safetensors`` and are scored by
  ``evaluate_bundled.py``.
* ``final``: the shipped models, trained on every image, written (fp16) to
  ``src/napari_temdefect/models/weights/<model>.safetensors`` with metadata: description,
  classes, provenance, CV metrics (read from ``runs/bundled/evaluation.json`` when present),
  and the training history. ``generic`` continues the shipped grain-boundary model on the
  real boundaries and bubbles plus synthetic grains, bubbles and dislocations (never loops:
  they are the held-out transfer type, see ``transfer_loops.py``), so train it last.
* ``stamp``: copy the CV metrics into the shipped models' metadata (after evaluation).

The shipped models are U-Net / resnet18 (depth 4), the default ``--arch``. They were trained
into ``runs/bundled/final-resnet18`` (``--weights-dir``) and copied into the package once the
CV, the loops transfer and the sample check had been read.

The real data is read from ``../shared/data`` (or ``$TEMDEFECT_DATA``). Seeds are fixed and
the budget is a number of optimiser steps, so a rerun on the same software gives the same
training run however busy the machine is. JSON results go to
``runs/bundled/train_<stage>_<model>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bundled_data import (  # noqa: E402
    DEFAULT_SPEC, FOLDS, PRETRAINED, PROVENANCE, RUNS, SPECS, WEIGHTS, Clock, encoder_weights,
    load_set, set_threads, write_json,
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
#: Optimiser steps per model (batch 4 × 256²). A step budget, not a wall-clock one, so the
#: weights do not depend on how busy the machine is. CV folds get exactly the final recipe.
STEPS = {"grain-boundary": 1200, "bubble": 1200, "generic": 800}
#: Scale augmentation of the shipped recipe (``TrainConfig.scale_range``; None: off).
SCALE = None
#: Probability of a contrast-inverted training patch (``TrainConfig.invert``; 0: off).
INVERT = 0.0
#: Weight of the soft clDice term (``TrainConfig.cldice_weight``; 0: off).
CLDICE = 0.0
#: Weight of the Lovász hinge (``TrainConfig.lovasz_weight``; 0: off).
LOVASZ = 0.0
#: Extra BCE weight of the background between touching objects (``TrainConfig.separation``;
#: 0: off).
SEPARATION = 0.0
#: Decay of the weight average that validation scores and training keeps (``TrainConfig.ema``;
#: 0: off).
EMA = 0.0
#: Coefficient of the L2 penalty on conv/linear weights (``TrainConfig.l2``, a sum of squares).
L2 = 1e-5
#: Appearance augmentation of the shipped recipe (``TrainConfig.intensity/blur/shading``):
#: the mild intensity jitter, no blur, no background ramp.
INTENSITY, BLUR, SHADING = 1.0, 0.0, 0.0
#: Models whose counts split touching blobs by default (``metadata["split_touching"]``; the
#: Quantification panel, ``analyze`` and ``quantify`` follow it): the bubble labels draw
#: touching bubbles now joined, now apart, and counted as bubbles on both sides the CV count
#: error is a third of the connected-component one (docs/evaluation.md).
SPLIT_TOUCHING = {"bubble": True}
#: Synthetic images added to ``generic`` (kind, count); seeds 1000+ (tests use small seeds).
SYNTHETIC = (("grains", 4), ("bubbles", 4), ("dislocations", 4))


#: Training patches of the shipped recipe: ``BATCH`` patches of ``PATCH``² pixels per step.
PATCH, BATCH = 256, 4


@dataclass(frozen=True)
class Variant:
    """One recipe variant: the shipped recipe when every field has its default.

    ``tag`` names its CV folder, so the folds of two variants never overwrite each other; a
    new option is one field here, one term in ``tag``, one argument to ``TrainConfig`` in
    :meth:`config` and one ``--flag`` in :func:`main`."""

    arch: str = DEFAULT_SPEC
    seed: int = 0
    scale: tuple | None = SCALE
    invert: float = INVERT
    cldice: float = CLDICE
    lovasz: float = LOVASZ
    separation: float = SEPARATION
    ema: float = EMA
    l2: float = L2
    random_init: bool = False  # an ImageNet spec (``PRETRAINED``) from random weights
    xinit: bool = False  # start from the other real set's shipped model (``CROSS``)
    cont: bool = False  # continue the recipe's checkpoints (``CONTINUE_LR``)
    patch: int = PATCH
    batch: int = BATCH
    intensity: float = INTENSITY
    blur: float = BLUR
    shading: float = SHADING
    #: learning curve: train on ``images`` of the fold's training images (None: all of them),
    #: the ``subset``-th disjoint group of that size in the set's order
    images: int | None = None
    subset: int = 0
    #: the validation score that picks the kept weights (``TrainConfig.monitor``)
    monitor: str = "val_loss"

    @property
    def tag(self) -> str:
        """``<arch>[-random][-scale][-cont][-xinit][-invert<P>][-cldice<W>][-lovasz<W>]
        [-separation<W>][-ema<D>][-l2<C>][-patch<N>][-batch<N>][-intensity<S>][-blur<S>]
        [-shading<A>][-valf1][-n<N>s<K>][-seed<N>]``."""
        scale = None if self.scale is None else tuple(self.scale)
        parts = [self.arch]
        if self.random_init and self.arch in PRETRAINED:
            parts.append("random")
        if scale != SCALE:
            parts.append("scale" if scale is not None else "noscale")
        parts += ["cont"] * self.cont + ["xinit"] * self.xinit
        for name, default in (("invert", INVERT), ("cldice", CLDICE), ("lovasz", LOVASZ),
                              ("separation", SEPARATION), ("ema", EMA),
                              ("l2", L2), ("patch", PATCH),
                              ("batch", BATCH), ("intensity", INTENSITY), ("blur", BLUR),
                              ("shading", SHADING)):
            value = getattr(self, name)
            if value != default:
                parts.append(f"{name}{value:g}")
        if self.monitor != "val_loss":
            parts.append(self.monitor.replace("_", ""))
        if self.images is not None:
            parts.append(f"n{self.images}s{self.subset}")
        if self.seed:
            parts.append(f"seed{self.seed}")
        return "-".join(parts)

    def config(self, steps: int, lr: float = 2e-3):
        """The recipe of every bundled model (project training code): all layers, BCE + Dice,
        D4 + intensity augmentation, AdamW with a cosine schedule, a small L2 penalty; the
        weights with the best validation loss (tiles held back from every image) are kept."""
        from napari_temdefect.training import TrainConfig

        return TrainConfig(depth="all", freeze_bn=False, steps=steps, lr=lr, schedule="cosine",
                           l2=self.l2, batch_size=self.batch, patch_size=self.patch,
                           val_fraction=0.1, patience=None, eval_every=100,
                           monitor=self.monitor, seed=self.seed, device="cpu",
                           scale_range=self.scale, invert=self.invert,
                           cldice_weight=self.cldice, lovasz_weight=self.lovasz,
                           separation=self.separation, ema=self.ema,
                           intensity=self.intensity,
                           blur=self.blur, shading=self.shading)

    def training_names(self, names: list[str]) -> list[str]:
        """The fold's training images this variant trains on: all of ``names``, or its
        ``subset``-th disjoint group of ``images`` (the learning-curve runs)."""
        if self.images is None:
            return list(names)
        lo, hi = self.subset * self.images, (self.subset + 1) * self.images
        if hi > len(names):
            raise SystemExit(f"--images {self.images} --subset {self.subset} needs "
                             f"{hi} training images; this fold has {len(names)}")
        return list(names[lo:hi])

    def encoder_weights(self) -> str | None:
        """The ImageNet encoder file a new network of this variant starts from (or None)."""
        return encoder_weights(self.arch, self.random_init)

    def to_dict(self) -> dict:
        return asdict(self)


RECIPE = Variant()

#: Options of one model's recipe beyond the common one. The bubble model also learns the
#: appearance changes between micrographs (stronger intensity jitter, defocus blur, an
#: uneven-illumination ramp): +0.010 held-out pixel F1 on bubbles, nothing measurable on grain
#: boundaries (models.md, "Appearance augmentation"). ``generic`` keeps the common recipe.
RECIPE_OPTIONS = {"bubble": {"intensity": 2.0, "blur": 1.5, "shading": 0.3}}
APPEARANCE = ("intensity", "blur", "shading")


def recipe_for(kind: str, variant: Variant = RECIPE, given: bool = False) -> Variant:
    """``variant`` with ``kind``'s recipe options (:data:`RECIPE_OPTIONS`), unless appearance
    options were given on the command line (``given``): those then replace them all."""
    if given:
        return variant
    return replace(variant, **RECIPE_OPTIONS.get(kind, {}))


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


#: ``generic`` starts from the shipped grain-boundary model (run that final first); the other
#: two train from random weights, exactly as their CV folds do.
INIT = {"generic": "grain-boundary"}


def train_one(kind: str, train_entries, steps: int, name: str, variant: Variant = RECIPE,
              init: Path | None = None, lr: float = 2e-3):
    from napari_temdefect.models import ModelSpec, load_model
    from napari_temdefect.training import TrainingSet, train

    start = ModelSpec(classes=CLASSES[kind], **SPECS[variant.arch])
    if init is not None:  # continue training another model
        start = load_model(init, device="cpu")
        start.name, start.spec.classes, start.parent = name, CLASSES[kind], str(init.name)
        # the source's operating threshold and CV figures belong to it, not to this model
        # (``--stage stamp`` writes this model's own); 0.5 until then
        for key in ("threshold", "cv_metrics"):
            start.metadata.pop(key, None)
    clock = Clock()

    def progress(ev):
        if ev.get("event") == "eval":
            print(f"  [{name}] step {ev['step']:5d}  {clock():6.0f} s  train {ev['train_loss']}  "
                  f"val_loss {ev['val_loss']:.4f}  val_f1 {ev['val_f1']:.3f}", flush=True)

    # a new network starts from its spec's ImageNet encoder file, if it has one
    weights = None if init is not None else variant.encoder_weights()
    if weights:
        print(f"  [{name}] encoder from {weights}", flush=True)
    result = train(start, TrainingSet(train_entries), variant.config(steps, lr), name=name,
                   encoder_weights=weights, progress=progress)
    print(f"  [{name}] done: {result.steps} steps in {result.seconds:.0f} s, best step "
          f"{result.best_step} (val F1 {result.best_val_f1})", flush=True)
    return result


#: ``--cross-init``: start each real-data model from the shipped model of the OTHER real set
#: (a TEM-pretrained encoder and decoder in place of ImageNet, which is offline here). The
#: source never saw an image of the target set, so the cross-validation stays clean.
CROSS = {"grain-boundary": "bubble", "bubble": "grain-boundary"}


def cross_source(kind: str) -> Path:
    path = WEIGHTS / f"{CROSS[kind]}.safetensors"
    if not path.exists():
        raise SystemExit(f"{path} is missing; --cross-init needs the shipped {CROSS[kind]} model")
    return path


#: Learning rate of a continuation round (``--continue``): a second, lower cosine cycle.
CONTINUE_LR = 5e-4


def run_cv(kind: str, steps: int, variant: Variant = RECIPE, folds=None) -> dict:
    """One model per fold (whole images held out), trained exactly like the final model.

    ``variant.cont``: continue each fold's checkpoint of the recipe for ``steps`` more steps at
    :data:`CONTINUE_LR` (written to ``cv/<arch>-cont/``), as ``--stage final --continue`` does
    for a shipped model.
    """
    tag = variant.tag
    if steps != STEPS[kind] and not variant.cont:  # never overwrite the recipe's folds
        tag += f"-{steps}steps"
    out_dir = RUNS / "cv" / tag
    out_dir.mkdir(parents=True, exist_ok=True)
    all_names = [d["name"] for d in load_set(kind)]
    out = []
    for k, held in enumerate(FOLDS[kind]):
        if folds is not None and k not in folds:
            continue
        train_names = variant.training_names([n for n in all_names if n not in held])
        init, lr = None, 2e-3
        if variant.cont:
            init, lr = RUNS / "cv" / variant.arch / f"{kind}-fold{k}.safetensors", CONTINUE_LR
            if not init.exists():
                raise SystemExit(f"{init} is missing; run the cv stage first")
        elif variant.xinit:
            init = cross_source(kind)
        result = train_one(kind, entries(kind, train_names), steps, f"{kind}-fold{k}", variant,
                           init, lr=lr)
        path = out_dir / f"{kind}-fold{k}.safetensors"
        result.model.save(path, overwrite=True, half=False, held_out=held, train=train_names)
        out.append({"fold": k, "held_out": held, "train": train_names, "path": str(path),
                    **result.to_dict()})
        write_json(RUNS / f"train_cv_{kind}_{tag}_fold{k}.json",
                   {"model": kind, "steps": steps, **variant.to_dict(),
                    "encoder_weights": variant.encoder_weights(), **out[-1]})
    return {"folds": out}


def _cv_metrics(kind: str, path: Path | None = None) -> dict | None:
    """The cross-validation summary of ``kind`` from ``evaluate_bundled.py``'s report."""
    path = path or RUNS / "evaluation.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text()).get("models", {}).get(kind)
    if not data:
        return None
    return {"evaluation": data.get("evaluation", "3-fold CV over whole images"),
            "threshold": data.get("threshold", 0.5),
            "tuning_folds": data.get("tuning_folds"),
            "at_0.5": data.get("summary"),
            "at_threshold": data.get("summary_at_threshold"),
            "at_threshold_untuned_folds": data.get("summary_at_threshold_untuned_folds")}


def run_final(kind: str, steps: int, variant: Variant = RECIPE,
              weights_dir: Path = WEIGHTS) -> dict:
    train_entries = entries(kind, synthetic=(kind == "generic"))
    start, lr = None, 2e-3
    if variant.cont:  # a second round on the shipped model itself
        start, lr = weights_dir / f"{kind}.safetensors", CONTINUE_LR
    elif variant.xinit and kind in CROSS:
        start = cross_source(kind)
    elif kind in INIT:
        start, lr = weights_dir / f"{INIT[kind]}.safetensors", 1e-3
        if not start.exists():
            raise SystemExit(f"{start} is missing; train the {INIT[kind]} final model first")
    result = train_one(kind, train_entries, steps, kind, variant, start, lr=lr)
    Path(weights_dir).mkdir(parents=True, exist_ok=True)
    model = result.model
    model.name = kind
    path = model.save(
        weights_dir / f"{kind}.safetensors", overwrite=True, half=True,
        description=DESCRIPTIONS[kind],
        provenance=PROVENANCE,
        training_data=[e.name for e in train_entries],
        training_pixel_size_nm=None,
        cv_metrics=_cv_metrics(kind),
        split_touching=SPLIT_TOUCHING.get(kind, False),
        recipe="scripts/train_bundled.py --stage final --only " + kind
               + (" --cross-init" if variant.xinit and kind in CROSS else "")
               + (" (then --continue)" if variant.cont else ""),
    )
    size = path.stat().st_size / 1e6
    print(f"  wrote {path} ({size:.1f} MB)", flush=True)
    summary = {"model": kind, "steps": steps, "path": str(path), "size_mb": size,
               **result.to_dict()}
    tag = "" if Path(weights_dir) == WEIGHTS else f"_{Path(weights_dir).name}"
    write_json(RUNS / f"train_final_{kind}{tag}.json", summary)
    return summary


def stamp(kind: str, weights_dir: Path = WEIGHTS, evaluation: Path | None = None) -> None:
    """Write the CV metrics and the operating threshold chosen by the CV
    (``evaluate_bundled.py``'s report) and the counting default (:data:`SPLIT_TOUCHING`) into
    a shipped model's metadata. Without a report the recorded CV metrics and threshold stay.

    The weights are untouched: fp16 → fp32 → fp16 is exact."""
    from napari_temdefect.models import load_model

    path = weights_dir / f"{kind}.safetensors"
    model = load_model(path, device="cpu")
    metrics = _cv_metrics(kind, evaluation)
    if metrics is not None:
        model.metadata["cv_metrics"] = metrics
        model.metadata["threshold"] = float(metrics["threshold"])
    else:
        print(f"  {kind}: no evaluation report; its CV metrics and threshold stay", flush=True)
    model.metadata["split_touching"] = SPLIT_TOUCHING.get(kind, False)
    model.save(path, overwrite=True, half=True)
    print(f"  {kind}: threshold {model.threshold}, split_touching "
          f"{model.metadata['split_touching']}, cv_metrics = {model.metadata.get('cv_metrics')}",
          flush=True)


def main(argv=None) -> int:
    from napari_temdefect.training.trainer import MONITORS

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="+", choices=MODELS, default=list(MODELS))
    ap.add_argument("--stage", choices=("cv", "final", "stamp", "all"), default="all",
                    help="stamp: copy CV metrics from runs/bundled/evaluation.json into the "
                         "shipped models' metadata (run after evaluate_bundled.py)")
    ap.add_argument("--steps", type=int, default=None,
                    help="override the per-model step budget (default: STEPS in this script)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default 2)")
    ap.add_argument("--arch", choices=sorted(SPECS), default=DEFAULT_SPEC)
    ap.add_argument("--evaluation", type=Path, default=None,
                    help="stamp: the evaluate_bundled.py report to read (default "
                         "runs/bundled/evaluation.json)")
    ap.add_argument("--folds", type=int, nargs="+", default=None, help="CV folds to run (default all)")
    ap.add_argument("--continue", dest="cont", action="store_true",
                    help=f"continue the existing fold / shipped checkpoints for --steps more "
                         f"steps at lr {CONTINUE_LR:g} (a second cosine cycle)")
    ap.add_argument("--scale", type=float, nargs=2, metavar=("LO", "HI"), default=SCALE,
                    help="scale augmentation: patches from windows LO..HI × the patch size "
                         f"(default {SCALE}); CV folds go to cv/<arch>-scale when it differs")
    ap.add_argument("--cross-init", dest="xinit", action="store_true",
                    help="start grain-boundary from the shipped bubble model and bubble from the "
                         "shipped grain-boundary model (CV folder cv/<arch>-xinit)")
    ap.add_argument("--invert", type=float, default=INVERT, metavar="P",
                    help=f"probability of a contrast-inverted training patch (default {INVERT:g}); "
                         "CV folds go to cv/<arch>-invert<P> when it differs")
    ap.add_argument("--seed", type=int, default=0,
                    help="seed of the random init, patch sampling and augmentation (default 0, "
                         "the recipe's); CV folds of another seed go to cv/<arch>-seed<N>, to "
                         "measure how much the held-out figures move from one init to another")
    ap.add_argument("--cldice", type=float, default=CLDICE, metavar="W",
                    help=f"weight of the soft clDice (topology) loss term (default {CLDICE:g}); "
                         "CV folds go to cv/<arch>-cldice<W> when it differs")
    ap.add_argument("--lovasz", type=float, default=LOVASZ, metavar="W",
                    help=f"weight of the Lovász hinge (an IoU surrogate at 0.5) added to BCE + "
                         f"Dice (default {LOVASZ:g}); CV folds go to cv/<arch>-lovasz<W> when it "
                         "differs")
    ap.add_argument("--separation", type=float, default=SEPARATION, metavar="W",
                    help=f"extra BCE weight of the background between touching objects, so "
                         f"touching bubbles are predicted apart (default {SEPARATION:g}); CV "
                         "folds go to cv/<arch>-separation<W> when it differs")
    ap.add_argument("--ema", type=float, default=EMA, metavar="D",
                    help=f"decay of the weight average that validation scores and the run keeps "
                         f"(default {EMA:g}: off); CV folds go to cv/<arch>-ema<D> when it "
                         "differs")
    ap.add_argument("--random-init", action="store_true",
                    help="start an --arch that has ImageNet encoder weights (PRETRAINED in "
                         "bundled_data.py) from random weights instead (CV folder "
                         "cv/<arch>-random): the control that measures what ImageNet adds")
    ap.add_argument("--weights-dir", type=Path, default=WEIGHTS,
                    help="final/stamp: where the models are written and read (default: the "
                         "package's weights folder; give another folder to train candidates "
                         "without touching the shipped models)")
    ap.add_argument("--patch", type=int, default=PATCH, metavar="N",
                    help=f"training patch size in px (default {PATCH}); CV folds go to "
                         "cv/<arch>-patch<N> when it differs")
    ap.add_argument("--batch", type=int, default=BATCH, metavar="N",
                    help=f"patches per step (default {BATCH}); CV folds go to "
                         "cv/<arch>-batch<N> when it differs")
    recipe_note = "; ".join(f"{k}: " + ", ".join(f"--{o} {v:g}" for o, v in opts.items())
                            for k, opts in RECIPE_OPTIONS.items())
    ap.add_argument("--intensity", type=float, default=None, metavar="S",
                    help=f"strength of the gamma/contrast/brightness/noise jitter (common recipe "
                         f"{INTENSITY:g}); CV folds go to cv/<arch>-intensity<S> when it differs. "
                         f"Any of --intensity/--blur/--shading replaces the per-model recipe "
                         f"options ({recipe_note})")
    ap.add_argument("--blur", type=float, default=None, metavar="S",
                    help=f"largest Gaussian blur σ in px, on half the patches (common recipe "
                         f"{BLUR:g}); CV folds go to cv/<arch>-blur<S> when it differs")
    ap.add_argument("--shading", type=float, default=None, metavar="A",
                    help=f"largest background ramp, as a fraction of the intensity span "
                         f"(common recipe {SHADING:g}); CV folds go to cv/<arch>-shading<A> when "
                         "it differs")
    ap.add_argument("--l2", type=float, default=L2, metavar="C",
                    help=f"coefficient of the L2 weight penalty (default {L2:g}); CV folds go to "
                         "cv/<arch>-l2<C> when it differs")
    ap.add_argument("--images", type=int, default=None, metavar="N",
                    help="cv: train each fold on N of its training images (learning curve; "
                         "default all); CV folds go to cv/<arch>-n<N>s<K>")
    ap.add_argument("--subset", type=int, default=0, metavar="K",
                    help="with --images: which disjoint group of N training images, in the "
                         "set's order (default 0)")
    ap.add_argument("--monitor", choices=MONITORS, default="val_loss",
                    help="validation score that picks the kept weights (default val_loss, the "
                         "recipe's); CV folds go to cv/<arch>-valf1 for val_f1")
    args = ap.parse_args(argv)
    if args.images is not None and args.stage != "cv":
        ap.error("--images only applies to --stage cv (the shipped models train on every image)")
    if args.monitor != "val_loss" and args.stage != "cv":
        ap.error("--monitor only applies to --stage cv (the shipped models keep the recipe's "
                 "best validation loss)")
    if args.images is not None and args.images < 1:
        ap.error(f"--images {args.images} is not a number of images; give 1 or more")
    if args.subset < 0 or (args.subset and args.images is None):
        ap.error("--subset K needs --images N and K ≥ 0 (the K-th group of N training images)")
    common = Variant(arch=args.arch, seed=args.seed,
                     scale=None if args.scale is None else tuple(args.scale),
                     invert=args.invert, cldice=args.cldice, lovasz=args.lovasz,
                     separation=args.separation, ema=args.ema,
                     l2=args.l2, random_init=args.random_init,
                     xinit=args.xinit, cont=args.cont, patch=args.patch, batch=args.batch,
                     intensity=INTENSITY if args.intensity is None else args.intensity,
                     blur=BLUR if args.blur is None else args.blur,
                     shading=SHADING if args.shading is None else args.shading,
                     images=args.images, subset=args.subset, monitor=args.monitor)
    given = any(getattr(args, name) is not None for name in APPEARANCE)
    set_threads(args.threads)
    for kind in args.only:
        variant = recipe_for(kind, common, given)
        steps = args.steps or STEPS[kind]
        if args.stage in ("cv", "all") and kind in FOLDS:
            print(f"== {kind}: cross-validation, {len(FOLDS[kind])} folds × {steps} steps "
                  f"({variant.tag})", flush=True)
            run_cv(kind, steps, variant, args.folds)
        if args.stage in ("final", "all"):
            print(f"== {kind}: final model, {steps} steps", flush=True)
            run_final(kind, steps, variant, weights_dir=args.weights_dir)
        if args.stage == "stamp":
            stamp(kind, weights_dir=args.weights_dir, evaluation=args.evaluation)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
