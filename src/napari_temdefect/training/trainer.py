"""Fine-tuning a loaded model in place, and training from scratch, with one loop.

The default recipe follows the seed paper (Ochoa, Xu & Wang, arXiv:2507.16779): pretrained
encoder, shallow stages and BatchNorm frozen (``depth="deep"``, ``freeze_bn=True``), an L2
penalty of 1e-4 (optionally toward the starting weights: L2-SP), D4 flips/rotations, plus mild
intensity jitter. Validation runs on tiles held back from every image (their labels never enter
the training loss); the weights with the best validation score are kept, also when the user
stops early.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import TemDefectError
from .augment import augment_patch
from .dataset import PatchSampler, TrainingEntry, TrainingSet, prepare_entries
from .freeze import DEPTHS, apply_freeze, set_train_mode, unfreeze

#: Steps when neither ``steps`` nor ``minutes`` is given.
DEFAULT_STEPS = 300
OPTIMIZERS = ("adamw", "adam")
MONITORS = ("val_loss", "val_f1")
SCHEDULES = ("constant", "cosine")
#: share of the budget spent warming the learning rate up under the cosine schedule
WARMUP = 0.03


#: TrainConfig fields that must convert to a number (None: the field's "off"/default)
_NUMERIC = (("steps", int), ("minutes", float), ("lr", float), ("l2", float),
            ("weight_decay", float), ("batch_size", int), ("patch_size", int),
            ("val_fraction", float), ("patience", int), ("eval_every", int), ("seed", int),
            ("invert", float), ("intensity", float), ("blur", float), ("shading", float),
            ("pos_weight", float), ("dice_weight", float), ("cldice_weight", float),
            ("lovasz_weight", float), ("separation", float),
            ("edited_weight", float), ("ema", float))


_MAY_BE_NONE = ("steps", "minutes", "patience", "eval_every", "pos_weight")


@dataclass
class TrainConfig:
    """Settings of one training round (all JSON-serialisable; stored in the model history)."""

    #: which layers train: "decoder", "deep" (decoder + deepest encoder stages) or "all"
    #: which layers train (freeze.DEPTHS); None: "deep" for finetune(), "all" for train()
    depth: str | None = None
    #: budget: a number of optimiser steps, or minutes of wall time (the first reached ends it)
    steps: int | None = None
    minutes: float | None = None
    lr: float = 1e-3
    #: "constant", or "cosine": a short linear warm-up, then cosine decay to 1% of ``lr`` at the
    #: end of the budget (steps or minutes, whichever ends first)
    schedule: str = "constant"
    optimizer: str = "adamw"
    #: coefficient of the L2 penalty l2·Σ‖w − w_ref‖² on conv/linear weights (paper: 1e-4–1e-3)
    l2: float = 1e-4
    #: L2-SP: w_ref = the starting weights instead of zero
    l2_sp: bool = False
    #: decoupled AdamW weight decay on top of the L2 penalty (0: off)
    weight_decay: float = 0.0
    batch_size: int = 8
    patch_size: int = 256
    #: fraction of every image held back (as tiles) for validation
    val_fraction: float = 0.15
    #: early stopping after this many evaluations without improvement (None: never)
    patience: int | None = 10
    #: evaluate every N steps (None: about 20 evaluations per round, at least every 5 steps)
    eval_every: int | None = None
    monitor: str = "val_loss"
    seed: int = 0
    device: str | None = None
    #: keep BatchNorm running statistics fixed; None: True for finetune(), False for train()
    #: (a new network's statistics are its random init's)
    freeze_bn: bool | None = None
    augment: bool = True
    #: scale augmentation: patches cut from windows (lo..hi) × patch_size and resampled, so the
    #: model sees defects (lo..hi)× smaller/larger than in the images (None: off, as the paper)
    scale_range: tuple[float, float] | None = None
    #: probability of inverting a patch's contrast (0: off, as the paper). Bubbles and voids
    #: are bright with a dark fringe under focus and dark with a bright fringe over focus;
    #: 0.5 teaches both from micrographs taken on one side of focus
    invert: float = 0.0
    #: strength of the gamma/contrast/brightness/noise jitter of every patch (1: mild, as the
    #: shipped recipe; 0: off; 2: twice the ranges)
    intensity: float = 1.0
    #: largest Gaussian blur σ (px) given to half the patches, for micrographs that differ in
    #: focus or resolution (0: off, as the paper)
    blur: float = 0.0
    #: largest height of a smooth background ramp added to a patch, as a fraction of its
    #: intensity span, for uneven illumination or foil thickness (0: off, as the paper)
    shading: float = 0.0
    #: weight of positive pixels in the BCE (None: 1)
    pos_weight: float | None = None
    dice_weight: float = 1.0
    #: weight of the soft clDice term (0: off, as the paper). It rewards predictions whose
    #: skeleton follows the true one, so gaps in thin boundaries cost more than their pixels
    cldice_weight: float = 0.0
    #: weight of the Lovász hinge, an IoU surrogate of the mask at probability 0.5 (0: off, as
    #: the paper); training loss only, validation keeps BCE + Dice (+ clDice)
    lovasz_weight: float = 0.0
    #: extra BCE weight of the background between two objects that nearly touch (within
    #: ``separation.GAP_RADIUS_PX`` of both; U-Net's border weight), so touching bubbles are
    #: predicted apart and counted as two (0: off, as the paper; e.g. 10). Training loss only
    separation: float = 0.0
    #: how much more often patches are centred on corrected pixels than elsewhere
    edited_weight: float = 4.0
    #: decay of an exponential moving average of the weights (and BatchNorm statistics),
    #: e.g. 0.99; validation scores the average and the kept weights are the average's
    #: (0: off, as the paper)
    ema: float = 0.0

    def resolved(self, kind: str) -> "TrainConfig":
        """This config with the defaults of ``kind`` ("finetune" or "train") filled in."""
        fresh = kind == "train"
        if self.depth is None:
            self.depth = "all" if fresh else "deep"
        if self.freeze_bn is None:
            self.freeze_bn = not fresh
        return self

    def validate(self) -> "TrainConfig":
        """Check every field (one sentence for the first bad one); returns self. ``depth`` and
        ``freeze_bn`` may stay None, for :meth:`resolved` to fill in."""
        for name, kind in _NUMERIC:
            value = getattr(self, name, None)
            if (value is None and name in _MAY_BE_NONE) or isinstance(value, bool):
                continue
            try:
                kind(value)
            except (TypeError, ValueError, OverflowError):
                raise TemDefectError(f"{name} must be a number (got {value!r}).") from None
        if self.depth is not None:
            if str(self.depth).lower() not in DEPTHS:
                raise TemDefectError(
                    f"Unknown depth {self.depth!r}; use one of {', '.join(DEPTHS)}.")
            self.depth = str(self.depth).lower()
        if str(self.optimizer).lower() not in OPTIMIZERS:
            raise TemDefectError(f"Unknown optimizer {self.optimizer!r}; use adamw or adam.")
        self.optimizer = str(self.optimizer).lower()
        if str(self.schedule).lower() not in SCHEDULES:
            raise TemDefectError(
                f"Unknown schedule {self.schedule!r}; use one of {', '.join(SCHEDULES)}."
            )
        self.schedule = str(self.schedule).lower()
        if self.monitor not in MONITORS:
            raise TemDefectError(f"Unknown monitor {self.monitor!r}; use val_loss or val_f1.")
        if self.steps is not None and int(self.steps) < 1:
            raise TemDefectError(f"steps must be at least 1 (got {self.steps}).")
        if self.minutes is not None and not float(self.minutes) > 0:
            raise TemDefectError(f"minutes must be positive (got {self.minutes}).")
        if not (float(self.lr) > 0 and math.isfinite(float(self.lr))):
            raise TemDefectError(f"The learning rate must be a positive number (got {self.lr}).")
        for name in ("l2", "weight_decay", "dice_weight", "edited_weight", "intensity", "blur",
                     "shading"):
            value = float(getattr(self, name))
            if not (value >= 0 and math.isfinite(value)):
                raise TemDefectError(
                    f"{name} must be zero or a positive number (got {getattr(self, name)}).")
        if self.pos_weight is not None and not (
                float(self.pos_weight) > 0 and math.isfinite(float(self.pos_weight))):
            raise TemDefectError(
                f"pos_weight must be a positive number, or None for 1 (got {self.pos_weight}).")
        if not 0 <= int(self.seed) < 2 ** 63:
            raise TemDefectError(
                f"seed must be an integer from 0 to 2**63 - 1 (got {self.seed}).")
        if int(self.batch_size) < 1:
            raise TemDefectError(f"batch_size must be at least 1 (got {self.batch_size}).")
        if int(self.patch_size) < 32 or int(self.patch_size) % 32:
            raise TemDefectError(
                f"patch_size must be a multiple of 32, at least 32 (got {self.patch_size})."
            )
        if not 0 <= float(self.val_fraction) < 0.9:
            raise TemDefectError(f"val_fraction must be in [0, 0.9) (got {self.val_fraction}).")
        if self.patience is not None and int(self.patience) < 1:
            raise TemDefectError("patience must be at least 1 evaluation (or None for never).")
        if self.eval_every is not None and int(self.eval_every) < 1:
            raise TemDefectError("eval_every must be at least 1 step.")
        for name in ("cldice_weight", "lovasz_weight", "separation"):
            weight = float(getattr(self, name))
            if not (weight >= 0 and math.isfinite(weight)):
                raise TemDefectError(
                    f"{name} must be zero or positive (got {getattr(self, name)}).")
        if not 0.0 <= float(self.ema) < 1.0:
            raise TemDefectError(
                f"ema is the decay of the weight average, from 0 (off) to below 1, e.g. 0.99 "
                f"(got {self.ema}).")
        if not 0.0 <= float(self.invert) <= 1.0:
            raise TemDefectError(f"invert is a probability between 0 and 1 (got {self.invert}).")
        if float(self.blur) > 8:
            raise TemDefectError(
                f"blur is the largest blur σ in pixels; {self.blur} would wipe out the "
                f"defects (use 0–8, e.g. 1).")
        if float(self.intensity) > 4:
            raise TemDefectError(
                f"intensity is the strength of the intensity jitter; above 4 its contrast "
                f"factor can turn negative and invert patches (got {self.intensity}; use 0–4).")
        if float(self.shading) > 2:
            raise TemDefectError(
                f"shading is the largest background ramp as a fraction of the intensity span; "
                f"{self.shading} would bury the defects (use 0–2, e.g. 0.3).")
        if self.scale_range is not None:
            try:
                lo, hi = (float(v) for v in self.scale_range)
            except (TypeError, ValueError):
                raise TemDefectError(
                    f"scale_range must be two numbers (lo, hi), e.g. (0.75, 1.33); got "
                    f"{self.scale_range!r}.") from None
            if not (0.25 <= lo <= hi <= 4.0):
                raise TemDefectError(
                    f"scale_range must satisfy 0.25 <= lo <= hi <= 4 (got {lo}, {hi}).")
            self.scale_range = (lo, hi)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    """What a training round did. ``history``: one dict per evaluation
    ``{step, train_loss, val_loss, val_f1, seconds}`` (step 0 = the starting weights)."""

    history: list = field(default_factory=list)
    best_step: int = 0
    #: True when the user pressed Stop (cancel)
    stopped: bool = False
    seconds: float = 0.0
    steps: int = 0
    #: "budget", "early_stop" or "cancelled"
    reason: str = "budget"
    best_val_loss: float | None = None
    best_val_f1: float | None = None
    start_val_f1: float | None = None
    trainable_params: int = 0
    #: what chose the best weights: the config's monitor, or "val_loss" when it asked for
    #: "val_f1" and the validation tiles hold no defect
    monitor: str = "val_loss"
    model: object = None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("model")
        return d


def _as_training_set(data) -> TrainingSet:
    if isinstance(data, TrainingSet):
        return data
    if isinstance(data, TrainingEntry):
        return TrainingSet([data])
    if data is None:
        return TrainingSet()
    try:
        return TrainingSet(list(data))
    except TypeError as exc:
        raise TemDefectError(
            "Give a TrainingSet (or a list of TrainingEntry) as training data."
        ) from exc


def check_training_inputs(model, training_set, config: TrainConfig) -> TrainingSet:
    """Every check that can fail, done before any weight changes."""
    config.validate()
    # a snapshot: the GUI's shared set may gain or lose entries while this round runs, and the
    # round's record must name the images it actually trained on
    tset = TrainingSet(list(_as_training_set(training_set)))
    if len(tset) == 0:
        raise TemDefectError(
            "The training set is empty; add at least one corrected image before training."
        )
    n_classes = model.spec.num_classes
    top = tset.max_class()
    if top > n_classes:
        bad = next(e for e in tset if e.max_class() == top)
        names = ", ".join(model.spec.classes)
        hint = (" (for a binary mask such as 0/255, use binary=True / --ignore-value)"
                if n_classes == 1 else "")
        raise TemDefectError(
            f"The labels of {bad.name!r} contain class value {top}, but model {model.name!r} "
            f"has {n_classes} class{'es' if n_classes > 1 else ''} ({names}); use labels "
            f"0..{n_classes}{hint}."
        )
    return tset


def _cancelled(cancel) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event) or hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


def finetune(model, training_set, config: TrainConfig | None = None, progress=None,
             cancel=None) -> TrainResult:
    """Fine-tune ``model.module`` in place on ``training_set``; keep the best weights.

    ``progress(event)`` receives dicts with ``event`` "step" or "eval" (see docs/training.md);
    ``cancel`` (a callable or ``threading.Event``) stops at the next step, keeping the best
    weights. A record is appended to ``model.history``. If anything fails, the model's weights
    are exactly what they were before.
    """
    config = (dataclasses.replace(config) if config is not None else TrainConfig()) \
        .resolved("finetune")
    tset = check_training_inputs(model, training_set, config)
    result = _run(model, tset, config, progress, cancel, kind="finetune")
    if result.best_step > 0:
        _learned_scale(model, tset)
    return result


def _learned_scale(model, tset: TrainingSet) -> None:
    """A model that knew no scale learns the calibration of the images it trained on (their
    median), so inference can warn when a micrograph's pixel size is far from it."""
    sizes = [e.pixel_size_nm for e in tset]
    if model.spec.pixel_size_nm is None and sizes and all(s is not None for s in sizes):
        model.spec.pixel_size_nm = float(np.median(sizes))


def train(spec_or_model, training_set, config: TrainConfig | None = None, *,
          encoder_weights=None, name: str = "new model", progress=None,
          cancel=None) -> TrainResult:
    """Train a model from scratch (or from an ImageNet/local encoder) with the same loop.

    ``spec_or_model``: a ``ModelSpec``, a spec dict, or a ``Model``. The default config trains
    every layer (``depth="all"``) with BatchNorm statistics learning (``freeze_bn=False``).
    The trained model is ``result.model``.
    """
    from ..models import Model, create_model

    if config is None:
        config = TrainConfig(steps=DEFAULT_STEPS * 4)
    # every layer and learning BatchNorm statistics unless the config says otherwise
    config = dataclasses.replace(config).resolved("train")
    if isinstance(spec_or_model, Model):
        model = spec_or_model
    else:
        import torch

        config.validate()
        # the random init is part of the run: seeded, so the same seed gives the same model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(config.seed))
            model = create_model(spec_or_model, encoder_weights=encoder_weights, device="cpu",
                                 name=name)
        if config.device is None:
            config.device = "auto"  # a new network trains on the best device there is
    tset = check_training_inputs(model, training_set, config)
    _learned_scale(model, tset)
    return _run(model, tset, config, progress, cancel, kind="train")


def _state_copy(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _run(model, tset: TrainingSet, config: TrainConfig, progress, cancel, kind: str):
    import torch

    from ..device import resolve_device

    module = model.module
    orig_device = model.device
    device = resolve_device(config.device) if config.device is not None else orig_device
    before = {k: v.detach().to("cpu").clone() for k, v in module.state_dict().items()}
    try:
        cuda = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(int(config.seed))
            module.to(device)
            result = _loop(model, tset, config, progress, cancel, device, kind)
    except BaseException:
        module.load_state_dict(before)  # a failed round changes nothing
        raise
    finally:
        unfreeze(module)
        module.eval()
        module.to(orig_device)
    result.model = model
    return result


def _loop(model, tset, config, progress, cancel, device, kind):
    import torch

    from ..metrics import pixel_f1
    from .losses import bce_dice_loss, cldice_from_terms, cldice_terms

    module = model.module
    spec = model.spec
    n_classes = spec.num_classes
    rng = np.random.default_rng(int(config.seed))
    largest = max(max(e.shape) for e in tset)
    patch = min(int(config.patch_size), max(32, -(-largest // 32) * 32))
    prepared, val = prepare_entries(
        tset, n_classes, spec.normalization, patch, float(config.val_fraction), rng,
        edited_weight=float(config.edited_weight), separation=float(config.separation),
    )
    sampler = PatchSampler(prepared, patch, rng, scale_range=config.scale_range)
    state = apply_freeze(module, config.depth, freeze_bn=config.freeze_bn)
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:  # pragma: no cover - every policy trains the head
        raise TemDefectError("Nothing to train with this depth; choose depth='all'.")
    penalised = [p for p in params if p.ndim > 1]
    refs = [p.detach().clone() for p in penalised] if config.l2_sp else None
    opt_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(params, lr=float(config.lr), weight_decay=float(config.weight_decay))
    in_ch = spec.in_channels
    total_steps = int(config.steps) if config.steps is not None else (
        None if config.minutes is not None else DEFAULT_STEPS)
    deadline = None if config.minutes is None else float(config.minutes) * 60.0
    eval_every = int(config.eval_every) if config.eval_every else (
        max(5, total_steps // 20) if total_steps else 25)
    monitor = config.monitor
    if monitor == "val_f1" and val is not None and not (
            val[1].astype(bool) & val[2].astype(bool)).any():
        # the held-back tiles hold no defect: their F1 would reward predicting nothing
        monitor = "val_loss"
    higher_better = monitor == "val_f1"
    # validation F1 is scored where predict() will cut the map (the model's operating
    # threshold, 0.5 unless its checkpoint records one), so the number matches the re-run
    f1_threshold = float(model.threshold)

    pos_weight = None if config.pos_weight is None else torch.tensor(float(config.pos_weight),
                                                                     device=device)
    cl_weight = float(config.cldice_weight)
    lovasz_weight = float(config.lovasz_weight)
    ema_decay = float(config.ema)
    # the running average: every float tensor of the state (weights and BatchNorm statistics)
    ema_state = ({k: v.detach().clone() for k, v in module.state_dict().items()
                  if v.is_floating_point()} if ema_decay else None)

    def update_ema(step):
        # the usual warm-up, (1 + n) / (10 + n), so the start does not dominate a short round
        d = min(ema_decay, (1.0 + step) / (10.0 + step))
        with torch.no_grad():
            for k, v in module.state_dict().items():
                if k in ema_state:
                    ema_state[k].mul_(d).add_(v.detach(), alpha=1.0 - d)

    def to_input(images):
        x = torch.from_numpy(np.stack(images)[:, None].astype(np.float32))
        return (x.repeat(1, in_ch, 1, 1) if in_ch > 1 else x).to(device)

    def evaluate():
        imgs, tgts, vals = val
        module.eval()
        probs, bce_sum, n_valid, cl_terms = [], 0.0, 0.0, None
        with torch.no_grad():
            for i in range(0, len(imgs), int(config.batch_size)):
                x = to_input(list(imgs[i:i + config.batch_size, 0]))
                t = torch.from_numpy(tgts[i:i + config.batch_size]).to(device)
                v = torch.from_numpy(vals[i:i + config.batch_size]).to(device)
                logits = module(x)
                bce = torch.nn.functional.binary_cross_entropy_with_logits(
                    logits, t.float(), reduction="none", pos_weight=pos_weight)
                vv = v.float().expand_as(logits)
                bce_sum += float((bce * vv).sum())
                n_valid += float(vv.sum())
                if cl_weight:  # summed over the whole validation set, like the Dice below
                    terms = cldice_terms(logits.float(), t, v)
                    cl_terms = terms if cl_terms is None else [
                        a + b for a, b in zip(cl_terms, terms)]
                probs.append(torch.sigmoid(logits).float().cpu().numpy())
        prob = np.concatenate(probs)
        keep = np.broadcast_to(vals, prob.shape)
        loss = bce_sum / max(n_valid, 1.0)
        f1s = []
        for c in range(n_classes):
            p, t, k = prob[:, c] * keep[:, c], tgts[:, c] * keep[:, c], keep[:, c]
            dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
            loss += float(config.dice_weight) * dice / n_classes
            f1s.append(pixel_f1(prob[:, c] > f1_threshold, tgts[:, c] > 0, ignore=~k).f1)
        if cl_terms is not None:
            loss += cl_weight * float(cldice_from_terms(*cl_terms))
        return float(loss), float(np.mean(f1s))

    t0 = time.perf_counter()
    history: list[dict] = []
    best = {"score": None, "step": 0, "state": None, "val_loss": None, "val_f1": None}
    result = TrainResult(trainable_params=state.trainable, monitor=monitor)

    def record(step, train_loss):
        live = None
        if ema_state is not None and step > 0:  # score (and keep) the average
            live = _state_copy(module)
            module.load_state_dict(ema_state, strict=False)
        val_loss, val_f1 = evaluate() if val is not None else (None, None)
        entry = {"step": step, "train_loss": train_loss, "val_loss": val_loss,
                 "val_f1": val_f1, "seconds": round(time.perf_counter() - t0, 3)}
        history.append(entry)
        improved = False
        if val is not None:
            score = val_f1 if higher_better else val_loss
            if best["score"] is None or (score > best["score"] if higher_better
                                         else score < best["score"]):
                improved = True
                best.update(score=score, step=step, state=_state_copy(module),
                            val_loss=val_loss, val_f1=val_f1)
        if live is not None:
            module.load_state_dict(live)
        if progress is not None:
            progress(dict(entry, event="eval", best_step=best["step"],
                          total_steps=total_steps, fraction=_fraction(step)))
        return improved

    def _fraction(step):
        parts = []
        if total_steps:
            parts.append(step / total_steps)
        if deadline:
            parts.append((time.perf_counter() - t0) / deadline)
        return float(min(1.0, max(parts))) if parts else 0.0

    base_lr = float(config.lr)

    def lr_at(step):
        if config.schedule == "constant":
            return base_lr
        frac = _fraction(step)
        if frac < WARMUP:
            return base_lr * max(frac / WARMUP, 0.05)
        cos = 0.5 * (1.0 + math.cos(math.pi * min(1.0, (frac - WARMUP) / (1.0 - WARMUP))))
        return base_lr * (0.01 + 0.99 * cos)

    if val is not None:
        record(0, None)
        result.start_val_f1 = history[0]["val_f1"]
    step, since_best, running = 0, 0, []
    reason = "budget"
    set_train_mode(module, state)
    while True:
        if total_steps is not None and step >= total_steps:
            break
        if deadline is not None and time.perf_counter() - t0 >= deadline:
            break
        if _cancelled(cancel):
            reason = "cancelled"
            break
        images, targets, oks = sampler.batch(int(config.batch_size))
        if config.augment:
            aug = [augment_patch(im, [tg, ok], rng, intensity=float(config.intensity),
                                 invert=float(config.invert),
                                 normalization=spec.normalization,
                                 blur=float(config.blur), shading=float(config.shading))
                   for im, tg, ok in zip(images, targets, oks)]
            images = [a[0] for a in aug]
            targets = [a[1][0] for a in aug]
            oks = [a[1][1] for a in aug]
        x = to_input(images)
        t = torch.from_numpy(np.stack(targets)).to(device)
        ok = np.stack(oks)[:, None]
        v = torch.from_numpy(ok > 0).to(device)
        # a loss weight (separation) rides in ``ok`` as float; the BCE takes it per pixel
        w = None if ok.dtype == bool else torch.from_numpy(ok.astype(np.float32)).to(device)
        optimizer.zero_grad(set_to_none=True)
        lr = lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits = module(x)
        loss = bce_dice_loss(logits, t, v, pos_weight=pos_weight,
                             dice_weight=float(config.dice_weight), cldice_weight=cl_weight,
                             lovasz_weight=lovasz_weight, weight=w)
        total = loss
        if float(config.l2) > 0:
            if refs is None:
                reg = sum((p * p).sum() for p in penalised)
            else:
                reg = sum(((p - r) ** 2).sum() for p, r in zip(penalised, refs))
            total = loss + float(config.l2) * reg
        if not torch.isfinite(total):
            raise TemDefectError(
                f"Training diverged at step {step + 1} (loss is not finite); lower the "
                "learning rate."
            )
        total.backward()
        optimizer.step()
        if ema_state is not None:
            update_ema(step)
        step += 1
        train_loss = float(loss.detach())
        running.append(train_loss)
        if progress is not None:
            progress({"event": "step", "step": step, "train_loss": train_loss, "lr": lr,
                      "total_steps": total_steps, "fraction": _fraction(step),
                      "seconds": round(time.perf_counter() - t0, 3)})
        if step % eval_every == 0 and val is not None:
            improved = record(step, float(np.mean(running)))
            running = []
            set_train_mode(module, state)
            since_best = 0 if improved else since_best + 1
            if config.patience is not None and since_best >= int(config.patience):
                reason = "early_stop"
                break
    if val is not None and (not history or history[-1]["step"] != step):
        record(step, float(np.mean(running)) if running else None)
    if val is None:  # nothing held back: the last weights are the result
        history.append({"step": step, "train_loss": float(np.mean(running)) if running else None,
                        "val_loss": None, "val_f1": None,
                        "seconds": round(time.perf_counter() - t0, 3)})
        best["step"] = step
        if ema_state is not None and step > 0:
            module.load_state_dict(ema_state, strict=False)
    elif best["state"] is not None:
        module.load_state_dict(best["state"])
    result.history = history
    result.best_step = int(best["step"])
    result.stopped = reason == "cancelled"
    result.reason = reason
    result.steps = step
    result.seconds = round(time.perf_counter() - t0, 3)
    result.best_val_loss = best["val_loss"]
    result.best_val_f1 = best["val_f1"]
    model.history.append({
        "kind": kind,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": config.to_dict(),
        "data": tset.names,
        "parent": model.parent if kind == "train" else (model.source or model.name),
        "steps": step,
        "best_step": result.best_step,
        "reason": reason,
        "start_val_f1": result.start_val_f1,
        "best_val_loss": result.best_val_loss,
        "best_val_f1": result.best_val_f1,
        "val_f1_threshold": f1_threshold,
        "seconds": result.seconds,
        "trainable_params": state.trainable,
        "evaluations": history,
    })
    if result.best_step > 0 and "cv_metrics" in model.metadata:
        # the cross-validation figures describe the weights before this round, not these (the
        # history keeps the parent's name; Revert in the panel restores the metadata)
        model.metadata["parent_cv_metrics"] = model.metadata.pop("cv_metrics")
    if progress is not None:
        progress({"event": "end", "step": step, "best_step": result.best_step,
                  "reason": reason, "seconds": result.seconds, "fraction": 1.0})
    return result
