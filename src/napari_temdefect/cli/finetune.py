"""`temdefect finetune`: retrain a model's deep layers on corrected labels, headless.

    temdefect finetune --model generic --images a.tif b.tif --labels a_mask.png b_mask.png \\
        --out tuned.safetensors --minutes 5

Labels are masks where > 0 is a defect (``--class-map`` for models with several classes:
value k = class k) and ``--ignore-value`` (default 65535) marks pixels left out of the loss.
The output checkpoint keeps the fine-tune history and the parent model, and loads with
``temdefect predict --model tuned.safetensors``.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path


#: Float options of the augmentation and the loss: (flag, default, metavar, help).
AUGMENT_AND_LOSS_OPTIONS = (
    ("--invert", 0.0, "P", "probability of a contrast-inverted patch (default 0; 0.5 teaches "
                           "both sides of focus from images taken on one)"),
    ("--intensity", 1.0, "S", "strength of the gamma/contrast/brightness/noise jitter (default "
                              "1: mild; 2 doubles the ranges; at most 4)"),
    ("--blur", 0.0, "S", "largest Gaussian blur σ in px given to half the patches, for "
                         "micrographs that differ in focus or resolution (default 0: off)"),
    ("--shading", 0.0, "A", "largest smooth background ramp added to a patch, as a fraction of "
                            "its intensity span, for uneven illumination (default 0: off)"),
    ("--cldice", 0.0, "W", "weight of a soft clDice (topology) loss term for line networks "
                           "(default 0: BCE + Dice only)"),
    ("--lovasz", 0.0, "W", "weight of a Lovász hinge loss term, an IoU surrogate of the mask "
                           "at probability 0.5 (default 0: BCE + Dice only)"),
    ("--separation", 0.0, "W", "extra loss weight of the background between two labelled "
                               "objects that nearly touch, so touching bubbles or precipitates "
                               "are predicted apart and counted as two (default 0: off; e.g. "
                               "10)"),
)


def add_training_args(p, *, default_depth: str, default_steps_note: str) -> None:
    """Arguments shared by `finetune` and `train`."""
    from ..constants import IGNORE_LABEL

    p.add_argument("--images", nargs="+", required=True, metavar="IMAGE",
                   help="micrographs to train on (tif, png, dm3, mrc…)")
    p.add_argument("--labels", nargs="+", required=True, metavar="LABELS",
                   help="one label image per micrograph, same size: > 0 is a defect")
    p.add_argument("--out", "-o", required=True, metavar="CKPT",
                   help="output checkpoint (.safetensors)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=None, metavar="N",
                        help=f"optimiser steps ({default_steps_note})")
    budget.add_argument("--minutes", type=float, default=None, metavar="M",
                        help="wall-time budget in minutes instead of steps")
    p.add_argument("--depth", choices=("decoder", "deep", "all"), default=default_depth,
                   help=f"layers that train (default {default_depth}; see docs/training.md)")
    p.add_argument("--lr", type=float, default=1e-3, metavar="X", help="learning rate (1e-3)")
    p.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                   help="learning rate: constant, or a short warm-up then cosine decay over "
                        "the budget (default constant)")
    p.add_argument("--l2", type=float, default=1e-4, metavar="X",
                   help="L2 penalty on the weights (default 1e-4; the paper used 1e-4–1e-3)")
    p.add_argument("--l2-sp", action="store_true",
                   help="pull the weights toward the starting model instead of toward zero")
    p.add_argument("--optimizer", choices=("adamw", "adam"), default="adamw")
    p.add_argument("--batch-size", type=int, default=8, metavar="B", help="patches per step (8)")
    p.add_argument("--patch-size", type=int, default=256, metavar="P",
                   help="patch side in px, a multiple of 32 (256)")
    p.add_argument("--val-fraction", type=float, default=0.15, metavar="F",
                   help="fraction of every image held back for validation (0.15)")
    p.add_argument("--patience", type=int, default=10, metavar="E",
                   help="stop after E evaluations without improvement (10; 0 = never)")
    p.add_argument("--no-augment", action="store_true", help="no flips/rotations or jitter")
    for flag, default, metavar, text in AUGMENT_AND_LOSS_OPTIONS:
        p.add_argument(flag, type=float, default=default, metavar=metavar, help=text)
    p.add_argument("--ignore-value", type=int, default=IGNORE_LABEL, metavar="V",
                   help=f"label value of pixels to leave out of the loss (default {IGNORE_LABEL}; "
                        "use e.g. 128 for 8-bit masks)")
    p.add_argument("--class-map", action="store_true",
                   help="labels are class maps (k = class k) for a model with several classes")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                   help="compute device (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")


def add_parser(sub):
    from ..training.trainer import DEFAULT_STEPS

    p = sub.add_parser(
        "finetune", help="fine-tune a model on corrected labels and save a new checkpoint",
        description="Fine-tune a model on micrographs with corrected labels (> 0 = defect) "
                    "and save the result as a new checkpoint.",
    )
    p.add_argument("--model", "-m", default=None, metavar="NAME_OR_PATH",
                   help="bundled model name or .safetensors checkpoint (default: the default "
                        "bundled model)")
    add_training_args(p, default_depth="deep", default_steps_note=f"default {DEFAULT_STEPS}")
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="operating threshold to record in the new checkpoint, used by predict "
                        "when none is given (default: the parent model's; set 0.5 when you "
                        "fine-tune a model for another defect type)")
    p.set_defaults(func=run)
    return p


def load_training_set(args, num_classes: int, class_names):
    """Read --images/--labels pairs into a TrainingSet (labels binarised unless --class-map)."""
    import numpy as np

    from ..errors import TemDefectError
    from ..io import read_image
    from ..training import TrainingEntry, TrainingSet

    if len(args.images) != len(args.labels):
        raise TemDefectError(
            f"{len(args.images)} images but {len(args.labels)} label files were given; "
            "give one label file per image, in the same order."
        )
    if num_classes > 1 and not args.class_map:
        raise TemDefectError(
            f"The model has {num_classes} classes ({', '.join(class_names)}); give class-map "
            "labels (k = class k) and pass --class-map."
        )
    tset = TrainingSet()
    for image_path, label_path in zip(args.images, args.labels):
        image = read_image(image_path)
        labels = read_image(label_path).data
        if labels.ndim != 2:
            raise TemDefectError(
                f"{Path(label_path).name} has shape {labels.shape}; give a 2D label image."
            )
        if np.issubdtype(labels.dtype, np.floating):
            labels = np.rint(labels)
        labels = np.asarray(labels).astype(np.int64)
        ignore = labels == int(args.ignore_value)
        labels = np.where(ignore, 0, labels)
        if not args.class_map:
            labels = (labels > 0).astype(np.uint8)
        tset.add(TrainingEntry(image.data, labels, ignore=ignore, name=Path(image_path).name,
                               pixel_size_nm=image.pixel_size_nm))
    return tset


def make_config(args, **overrides):
    from ..training import TrainConfig

    kwargs = dict(
        depth=args.depth, steps=args.steps, minutes=args.minutes, lr=args.lr,
        schedule=args.schedule, l2=args.l2,
        l2_sp=args.l2_sp, optimizer=args.optimizer, batch_size=args.batch_size,
        patch_size=args.patch_size, val_fraction=args.val_fraction,
        patience=args.patience or None, augment=not args.no_augment, seed=args.seed,
        invert=args.invert, cldice_weight=args.cldice,
        lovasz_weight=args.lovasz, separation=args.separation, intensity=args.intensity,
        blur=args.blur, shading=args.shading,
        device=None if args.device == "auto" else args.device,
    )
    kwargs.update(overrides)
    return TrainConfig(**kwargs).validate()


def progress_printer(enabled: bool):
    if not enabled:
        return None

    def show(ev):
        if ev["event"] == "eval":
            vl = "—" if ev["val_loss"] is None else f"{ev['val_loss']:.4f}"
            vf = "—" if ev["val_f1"] is None else f"{ev['val_f1']:.3f}"
            tl = "—" if ev["train_loss"] is None else f"{ev['train_loss']:.4f}"
            mark = " *" if ev["best_step"] == ev["step"] else ""
            print(f"step {ev['step']:>5}  train loss {tl}  val loss {vl}  val F1 {vf}  "
                  f"{ev['seconds']:7.1f} s{mark}", file=sys.stderr, flush=True)
    return show


@contextlib.contextmanager
def stop_on_interrupt():
    """An Event that the first Ctrl-C sets, so a training run stops after its current step
    and the best weights so far are saved; a second Ctrl-C aborts as usual. Off the main
    thread (no signal handler can be set there) the event is simply never set."""
    import signal

    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("temdefect: stopping after this step and saving the best weights so far "
              "(Ctrl-C again to abort without saving)", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def report(result, out, quiet: bool) -> None:
    if quiet:
        return
    first = result.history[0] if result.history else {}
    why = {"budget": "budget used", "early_stop": "stopped early (no improvement)",
           "cancelled": "stopped by Ctrl-C"}[result.reason]
    line = (f"{result.steps} steps in {result.seconds / 60:.1f} min ({why}); "
            f"kept the weights of step {result.best_step}")
    if result.best_val_f1 is not None and first.get("val_f1") is not None:
        line += f"; validation F1 {first['val_f1']:.3f} → {result.best_val_f1:.3f}"
    print(line)
    if result.best_step == 0 and result.start_val_f1 is not None:
        print("note: validation never improved, so the saved weights equal the starting model's")
    print(f"wrote {out}")


def run(args) -> int:
    from ..constants import as_threshold
    from ..errors import TemDefectError
    from ..files import check_writable
    from ..models import default_model_name, load_model
    from ..training import finetune

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise TemDefectError(f"Save checkpoints as .safetensors (got {out.name!r}).")
    check_writable(out, args.overwrite)  # fail now, not after minutes of training
    threshold = None
    if args.threshold is not None:
        threshold = as_threshold(args.threshold)
        if threshold is None:
            raise TemDefectError(f"--threshold must be between 0 and 1 (got {args.threshold}).")
    config = make_config(args)  # a bad value is a usage error before anything loads
    name = args.model or default_model_name()
    if name is None:
        raise TemDefectError("No bundled model is installed; give --model PATH.safetensors.")
    model = load_model(name, device=args.device)
    tset = load_training_set(args, model.spec.num_classes, model.spec.classes)
    parent = str(name)
    with stop_on_interrupt() as stop:
        result = finetune(model, tset, config, progress=progress_printer(not args.quiet),
                          cancel=stop)
    model.parent = parent
    model.name = out.stem
    if threshold is not None:
        model.metadata["threshold"] = threshold
    model.save(out, overwrite=args.overwrite)
    report(result, out, args.quiet)
    if not args.quiet:
        how = "as --threshold gave" if threshold is not None else \
            "the parent's; --threshold changes it"
        print(f"operating threshold {model.threshold:g} ({how})")
    return 0
