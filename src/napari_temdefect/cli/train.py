"""`temdefect train`: train a new model from scratch (or from an ImageNet/local encoder).

    temdefect train --images a.tif b.tif --labels a_mask.png b_mask.png --out new.safetensors \\
        --arch unet --encoder resnet18 --encoder-depth 4 --classes bubble --minutes 30

Same loop and options as `temdefect finetune`, but every layer trains (``--depth all``) and
BatchNorm statistics are learned.
"""

from __future__ import annotations

from pathlib import Path

from .finetune import (
    add_training_args, load_training_set, make_config, progress_printer, report, stop_on_interrupt,
)

DEFAULT_TRAIN_STEPS = 1200


def add_parser(sub):
    p = sub.add_parser(
        "train", help="train a new model from scratch on labelled micrographs",
        description="Train a new segmentation model on micrographs with labels (> 0 = defect).",
    )
    add_training_args(p, default_depth="all",
                      default_steps_note=f"default {DEFAULT_TRAIN_STEPS}")
    p.add_argument("--arch", default="unet",
                   help="unet, unetplusplus, deeplabv3plus or defectsegnet (default unet)")
    p.add_argument("--encoder", default="resnet18", help="smp encoder name (default resnet18)")
    p.add_argument("--encoder-depth", type=int, default=None, metavar="D",
                   help="encoder stages, 3–5 (smp architectures; default 5; U-Net decoder widths "
                        "follow it unless --decoder-channels gives them)")
    p.add_argument("--decoder-channels", type=int, nargs="+", default=None, metavar="C",
                   help="decoder widths, one per encoder stage (U-Net family)")
    p.add_argument("--full-resolution-skip", type=int, default=None, metavar="W",
                   help="add a W-channel branch at the input's resolution to the U-Net decoder "
                        "(U-Net family; measured in docs/models.md, off by default)")
    p.add_argument("--encoder-weights", default=None, metavar="imagenet|PATH",
                   help="start the encoder from ImageNet or a local weights file (default: random)")
    p.add_argument("--classes", nargs="+", default=["defect"], metavar="NAME",
                   help="class names, one output channel each (default: defect)")
    p.add_argument("--name", default=None, help="model name stored in the checkpoint")
    p.add_argument("--description", default="", help="one line stored in the checkpoint")
    p.add_argument("--freeze-bn", action="store_true",
                   help="keep BatchNorm statistics fixed (only with a pretrained encoder)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ..errors import TemDefectError
    from ..files import check_writable
    from ..models import ModelSpec
    from ..training import train

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise TemDefectError(f"Save checkpoints as .safetensors (got {out.name!r}).")
    check_writable(out, args.overwrite)
    options = {}
    if args.encoder_depth is not None:
        options["encoder_depth"] = args.encoder_depth
    if args.decoder_channels:
        options["decoder_channels"] = list(args.decoder_channels)
    if args.full_resolution_skip:
        options["full_resolution_skip"] = args.full_resolution_skip
    steps = args.steps if (args.steps or args.minutes) else DEFAULT_TRAIN_STEPS
    config = make_config(args, steps=steps, freeze_bn=args.freeze_bn)
    spec = ModelSpec(arch=args.arch, encoder=args.encoder, classes=args.classes, options=options)
    tset = load_training_set(args, spec.num_classes, spec.classes)
    weights = None if args.encoder_weights in (None, "", "none") else args.encoder_weights
    # train() builds the network under --seed, so the same seed gives the same weights
    with stop_on_interrupt() as stop:
        result = train(spec, tset, config, encoder_weights=weights,
                       name=args.name or out.stem, progress=progress_printer(not args.quiet),
                       cancel=stop)
    model = result.model
    model.save(out, overwrite=args.overwrite, description=args.description)
    report(result, out, args.quiet)
    return 0
