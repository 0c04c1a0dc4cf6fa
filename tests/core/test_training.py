"""Training core: freezing, BN, ignore mask, augmentation, early stopping, cancel, files,
bad input. Tiny models, 64 px patches, a handful of steps (the machine is shared)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_temdefect.constants import IGNORE_LABEL
from napari_temdefect.errors import TemDefectError
from napari_temdefect.models import create_model
from napari_temdefect.training import (
    TrainConfig, TrainingEntry, TrainingSet, apply_freeze, finetune, train,
    trainable_parameter_count,
)
from napari_temdefect.training.augment import augment_patch, d4, d4_inverse
from napari_temdefect.training.dataset import PatchSampler, prepare_entries
from napari_temdefect.training.freeze import encoder_stages
from napari_temdefect.training.losses import bce_dice_loss

FAST = dict(patch_size=64, batch_size=2, eval_every=2, val_fraction=0.25)


def disks(seed, size=128, n=8):
    r = np.random.default_rng(seed)
    img = r.normal(0, 1, (size, size)).astype(np.float32)
    lab = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(n):
        cy, cx = r.integers(8, size - 8, 2)
        rad = r.integers(4, 9)
        d = (yy - cy) ** 2 + (xx - cx) ** 2 < rad ** 2
        lab[d] = 1
        img[d] += 2.0
    return img, lab


@pytest.fixture
def tset():
    return TrainingSet([TrainingEntry(*disks(s), name=f"disks{s}") for s in range(2)])


def weights(model):
    return {k: v.clone() for k, v in model.module.state_dict().items()}


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


# ---- freezing -------------------------------------------------------------------------------

def test_depth_policies_freeze_the_right_layers(tiny_model):
    m = tiny_model.module
    counts = {}
    for depth in ("decoder", "deep", "all"):
        apply_freeze(m, depth)
        counts[depth] = trainable_parameter_count(m)
        assert all(p.requires_grad for p in m.decoder.parameters())
        assert all(p.requires_grad for p in m.segmentation_head.parameters())
        stem = m.encoder.conv1.weight.requires_grad
        deepest = m.encoder.layer2[0].conv1.weight.requires_grad  # encoder_depth=3: layer2 is last
        assert (stem, deepest) == {"decoder": (False, False), "deep": (False, True),
                                   "all": (True, True)}[depth]
        # layers the forward pass never uses (if the model carries any) never train
        _, unused = encoder_stages(m)
        assert not any(p.requires_grad for u in unused for p in u.parameters())
    assert counts["decoder"] < counts["deep"] < counts["all"]


def test_stages_found_for_other_encoders_and_defectsegnet():
    unet5 = create_model(arch="unet", encoder="resnet18", device="cpu")
    stages, unused = encoder_stages(unet5.module)
    assert len(stages) == 5 and not unused
    apply_freeze(unet5.module, "deep")
    enc = unet5.module.encoder
    assert not enc.layer2[0].conv1.weight.requires_grad and enc.layer3[0].conv1.weight.requires_grad
    dsn = create_model(arch="defectsegnet", device="cpu",
                       options={"depth": 2, "growth_rate": 4, "layers_per_block": 1,
                                "stem_channels": 4})
    apply_freeze(dsn.module, "deep")
    mod = dsn.module
    assert not any(p.requires_grad for p in mod.stem.parameters())
    assert all(p.requires_grad for p in mod.bottleneck.parameters())
    assert all(p.requires_grad for p in mod.head.parameters())


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_batchnorm_stats_of_frozen_parts_never_change(tiny_model, tset, freeze_bn):
    enc = tiny_model.module.encoder
    before = weights(tiny_model)
    cfg = dict(FAST, val_fraction=0.0)  # nothing held back: the last weights are kept
    finetune(tiny_model, tset, TrainConfig(steps=3, depth="deep", freeze_bn=freeze_bn, **cfg))
    after = weights(tiny_model)
    frozen_bn = [k for k in before if k.startswith(("encoder.bn1.", "encoder.layer1."))
                 and "running" in k]
    assert frozen_bn and all(torch.equal(before[k], after[k]) for k in frozen_bn)
    deep_bn = [k for k in before if k.startswith("encoder.layer2.") and "running_mean" in k]
    changed = any(not torch.equal(before[k], after[k]) for k in deep_bn)
    assert changed == (not freeze_bn)  # trainable BN learns statistics only when not frozen
    assert not torch.equal(before["encoder.layer2.0.conv1.weight"],
                           after["encoder.layer2.0.conv1.weight"])
    assert torch.equal(before["encoder.conv1.weight"], after["encoder.conv1.weight"])
    assert all(p.requires_grad for p in tiny_model.module.parameters())  # unfrozen afterwards
    assert not tiny_model.module.training and enc is tiny_model.module.encoder


# ---- loss and augmentation -----------------------------------------------------------------

def test_ignored_pixels_have_no_gradient_and_no_effect():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 16, 16, requires_grad=True)
    target = (torch.rand(2, 1, 16, 16) > 0.5).float()
    valid = torch.ones(2, 1, 16, 16)
    valid[:, :, :8] = 0
    loss = bce_dice_loss(logits, target, valid)
    loss.backward()
    assert torch.all(logits.grad[:, :, :8] == 0)
    assert torch.any(logits.grad[:, :, 8:] != 0)
    flipped = target.clone()
    flipped[:, :, :8] = 1 - flipped[:, :, :8]
    assert torch.isclose(bce_dice_loss(logits, flipped, valid), loss)


def test_ignore_value_and_mask_are_left_out_of_training(tiny_model):
    img, lab = disks(3)
    lab = lab.astype(np.uint16)
    lab[:, :40] = IGNORE_LABEL
    ignore = np.zeros(lab.shape, bool)
    ignore[100:, :] = True
    e = TrainingEntry(img, lab, ignore=ignore)
    prepared, _ = prepare_entries([e], 1, None, 64, 0.0, np.random.default_rng(0))
    assert not prepared[0].train_ok[:, :40].any() and not prepared[0].train_ok[100:].any()
    assert prepared[0].train_ok[:100, 40:].all()
    assert prepared[0].target.max() == 1  # IGNORE_LABEL is not a class


def test_d4_moves_image_and_labels_together():
    img = np.arange(36, dtype=np.float32).reshape(6, 6)
    seen = set()
    rng = np.random.default_rng(0)
    for _ in range(64):
        out, (lab, two), k = augment_patch(img, [img.astype(np.int32), np.stack([img, img])],
                                           rng, intensity=0.0)
        assert np.array_equal(lab, d4(img, k)) and np.array_equal(out, lab)
        assert np.array_equal(two[1], lab)
        assert np.array_equal(d4_inverse(lab, k), img)
        assert np.array_equal(d4(torch.from_numpy(img), k).numpy(), lab)
        seen.add(k)
    assert seen == set(range(8))
    assert len({d4(img, k).tobytes() for k in range(8)}) == 8
    jittered, _, _ = augment_patch(img, [], rng)
    assert not np.array_equal(np.sort(jittered.ravel()), np.sort(img.ravel()))


def test_contrast_inversion_gives_the_input_of_the_inverted_micrograph():
    from napari_temdefect.preprocess import normalize_image
    from napari_temdefect.training.augment import invert_contrast

    raw = np.random.default_rng(1).gamma(2.0, 40.0, (64, 64)).astype(np.float32)
    for norm in (None, {"method": "zscore"}):
        np.testing.assert_allclose(invert_contrast(normalize_image(raw, norm), norm),
                                   normalize_image(-raw, norm), atol=1e-5)
    img = normalize_image(raw)
    labels = (raw > 100).astype(np.uint8)
    flipped = kept = 0
    rng = np.random.default_rng(0)
    for _ in range(200):
        out, (lab,), k = augment_patch(img, [labels], rng, intensity=0.0, invert=0.5)
        assert np.array_equal(lab, d4(labels, k))  # the labels never invert
        if np.allclose(out, d4(1.0 - img, k)):
            flipped += 1
        elif np.array_equal(out, d4(img, k)):
            kept += 1
    assert flipped + kept == 200 and 70 < flipped < 130
    # off (the default) draws nothing extra, so recipes without it give the same patches
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(20):
        out_a, _, _ = augment_patch(img, [], a)
        out_b, _, _ = augment_patch(img, [], b, invert=0.0)
        assert np.array_equal(out_a, out_b)


def test_invert_probability_is_validated(tiny_model, tset):
    for bad in (-0.1, 1.5):
        with pytest.raises(TemDefectError, match="invert is a probability"):
            finetune(tiny_model, tset, TrainConfig(steps=1, invert=bad, **FAST))
    finetune(tiny_model, tset, TrainConfig(steps=2, invert=0.5, **FAST))
    assert tiny_model.history[-1]["config"]["invert"] == 0.5


def test_blur_and_shading_change_the_image_only():
    from scipy.ndimage import gaussian_filter

    from napari_temdefect.training.augment import blur_and_shade

    rng = np.random.default_rng(0)
    img = rng.normal(0.5, 0.1, (64, 64)).astype(np.float32)
    labels = (img > 0.55).astype(np.uint8)
    blurred = shaded = 0
    for _ in range(100):
        out, (lab,), k = augment_patch(img, [labels], rng, intensity=0.0, blur=2.0)
        assert np.array_equal(lab, d4(labels, k)) and out.dtype == np.float32
        if not np.array_equal(out, d4(img, k)):
            blurred += 1
            assert out.std() < img.std()  # smoothing removes pixel noise
    assert 30 < blurred < 70  # half the patches
    # a ramp of at most 0.5 of the 1-99 % span: smooth (it survives a blur), bounded
    span = float(np.subtract(*np.percentile(img, [99, 1])))
    for _ in range(50):
        out = blur_and_shade(img, rng, shading=0.5)
        ramp = out - img
        assert np.ptp(ramp) <= 0.5 * span + 1e-5
        if np.ptp(ramp) > 0.05 * span:
            shaded += 1
            assert np.abs(gaussian_filter(ramp, 2) - ramp)[4:-4, 4:-4].max() < 0.01 * np.ptp(ramp)
    assert shaded > 30
    # off (the default) draws nothing extra, so recipes without them give the same patches
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(20):
        assert np.array_equal(augment_patch(img, [], a)[0],
                              augment_patch(img, [], b, blur=0.0, shading=0.0)[0])


def test_appearance_options_are_validated_and_recorded(tiny_model, tset):
    for field, bad, match in (("blur", -1, "blur must be zero or a positive"),
                              ("blur", 20, "largest blur"),
                              ("shading", float("nan"), "shading must be zero"),
                              ("intensity", -0.5, "intensity must be zero"),
                              ("intensity", 8, "intensity is the strength"),
                              ("shading", 5, "shading is the largest")):
        with pytest.raises(TemDefectError, match=match):
            finetune(tiny_model, tset, TrainConfig(steps=1, **{field: bad}, **FAST))
    finetune(tiny_model, tset, TrainConfig(steps=2, intensity=2.0, blur=1.0, shading=0.2,
                                           **FAST))
    cfg = tiny_model.history[-1]["config"]
    assert (cfg["intensity"], cfg["blur"], cfg["shading"]) == (2.0, 1.0, 0.2)


def test_every_numeric_option_is_validated_in_one_line(tiny_model, tset):
    for field, bad, match in (("l2", float("nan"), "l2 must be zero"),
                              ("l2", float("inf"), "l2 must be zero"),
                              ("weight_decay", -1, "weight_decay must be zero"),
                              ("dice_weight", float("nan"), "dice_weight must be zero"),
                              ("edited_weight", -10, "edited_weight must be zero"),
                              ("pos_weight", -5, "pos_weight must be a positive"),
                              ("seed", -1, "seed must be an integer from 0")):
        with pytest.raises(TemDefectError, match=match):
            finetune(tiny_model, tset, TrainConfig(steps=1, **{field: bad}, **FAST))


def test_the_record_names_the_images_the_round_trained_on(tiny_model, tset):
    """The GUI's shared training set can change while a round runs (Add to training set)."""
    names = list(tset.names)
    extra = tset[0]

    def meddle(event):
        if event.get("event") == "step" and event["step"] == 1:
            tset.remove(names[0])
            tset.add(TrainingEntry(extra.image, extra.labels, name="added-later.tif"))

    finetune(tiny_model, tset, TrainConfig(steps=2, **FAST), progress=meddle)
    assert "added-later.tif" in tset.names  # the caller's set did change
    assert tiny_model.history[-1]["data"] == names


def test_soft_skeleton_thins_a_bar_to_its_centre_line():
    from napari_temdefect.training.losses import soft_skeleton

    bar = torch.zeros(1, 1, 32, 32)
    bar[..., 10:17, 2:30] = 1
    skel = soft_skeleton(bar)
    assert skel[0, 0, :, 16].nonzero().flatten().tolist() == [13]  # the middle row of 10..16
    assert float(skel[0, 0, :, 16].sum()) == pytest.approx(1.0)
    assert float(skel.max()) <= 1.0 and float(skel[..., :10, :].sum()) == 0


def test_cldice_charges_a_gap_in_a_line_more_than_a_thicker_line_unlike_dice():
    from napari_temdefect.training.losses import masked_cldice, masked_dice

    truth = torch.zeros(1, 1, 64, 64)
    truth[..., 30:33, 4:60] = 1  # a boundary 3 px wide
    gap = truth.clone()
    gap[..., 30:33] = 0  # cut: two grains merge
    thick = torch.zeros_like(truth)
    thick[..., 28:35, 4:60] = 1  # drawn 7 px wide: same topology
    valid = torch.ones_like(truth)

    def logit(p):
        return torch.logit(p.clamp(1e-4, 1 - 1e-4))

    cl = {n: float(masked_cldice(logit(p), truth, valid)) for n, p in
          (("gap", gap), ("thick", thick), ("exact", truth))}
    dice = {n: float(masked_dice(logit(p), truth, valid)) for n, p in
            (("gap", gap), ("thick", thick))}
    assert cl["exact"] < 1e-3 and cl["thick"] < 1e-3 < cl["gap"]
    assert dice["gap"] < dice["thick"]  # Dice prefers the cut line: why clDice is added
    # ignored pixels do not count: the same gap under an ignore mask costs nothing
    valid[..., 28:35, 28:36] = 0
    assert float(masked_cldice(logit(gap), truth, valid)) < 1e-3


def test_lovasz_hinge_scores_the_mask_at_0_5_and_skips_ignored_pixels():
    from napari_temdefect.training.losses import masked_lovasz

    truth = torch.zeros(2, 1, 32, 32)
    truth[0, :, 8:20, 8:20] = 1
    truth[1, :, 2:6, 2:30] = 1
    valid = torch.ones_like(truth)
    sign = 2 * truth - 1
    # every pixel on the right side of 0.5 by a margin of 1 in logit: no loss at all
    assert float(masked_lovasz(2 * sign, truth, valid)) == 0.0
    # all logits 0 (probability 0.5 everywhere): every hinge is 1, the loss is exactly 1
    assert float(masked_lovasz(torch.zeros_like(truth), truth, valid)) == pytest.approx(1.0)
    # wrong pixels cost: flipping a block of the first mask raises the loss, more for more
    small, large = 2 * sign.clone(), 2 * sign.clone()
    small[0, :, 8:10, 8:20] *= -1
    large[0, :, 8:14, 8:20] *= -1
    ls, ll = (float(masked_lovasz(x, truth, valid)) for x in (small, large))
    assert 0 < ls < ll
    # the same wrong pixels under an ignore mask cost nothing and get no gradient
    valid[0, :, 8:14, 8:20] = 0
    x = large.clone().requires_grad_(True)
    loss = masked_lovasz(x, truth, valid)
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(x.grad[0, :, 8:14, 8:20].abs().sum()) == 0.0
    # an image with no valid pixel is skipped, and an all-ignored batch gives 0, not NaN
    assert float(masked_lovasz(large, truth, torch.zeros_like(truth))) == 0.0


def test_lovasz_weight_trains_and_is_validated(tiny_model, tset):
    with pytest.raises(TemDefectError, match="lovasz_weight must be zero or positive"):
        finetune(tiny_model, tset, TrainConfig(steps=1, lovasz_weight=-1, **FAST))
    import copy

    plain = copy.deepcopy(tiny_model)
    fast = dict(FAST, eval_every=1)
    finetune(tiny_model, tset, TrainConfig(steps=1, lovasz_weight=1.0, **fast))
    finetune(plain, tset, TrainConfig(steps=1, **fast))
    assert tiny_model.history[-1]["config"]["lovasz_weight"] == 1.0
    # same init, seed and batch: the first step's training loss carries the extra term,
    # and the validation loss (BCE + Dice only) of the untrained weights is the same
    (v0, v1), (p0, p1) = (m.history[-1]["evaluations"] for m in (tiny_model, plain))
    assert v0["val_loss"] == pytest.approx(p0["val_loss"])
    assert v1["train_loss"] > p1["train_loss"] + 0.05


def test_cldice_weight_trains_and_is_validated(tiny_model, tset):
    with pytest.raises(TemDefectError, match="cldice_weight must be zero or positive"):
        finetune(tiny_model, tset, TrainConfig(steps=1, cldice_weight=-1, **FAST))
    import copy

    plain = copy.deepcopy(tiny_model)
    before = [p.detach().clone() for p in tiny_model.module.parameters()]
    finetune(tiny_model, tset, TrainConfig(steps=2, cldice_weight=0.5, **FAST))
    finetune(plain, tset, TrainConfig(steps=2, **FAST))
    assert tiny_model.history[-1]["config"]["cldice_weight"] == 0.5
    assert any(not torch.equal(a, b) for a, b in zip(before, tiny_model.module.parameters()))
    # the validation loss that picks the kept weights carries the clDice term too
    with_cl, without = (m.history[-1]["evaluations"][0] for m in (tiny_model, plain))
    assert with_cl["step"] == without["step"] == 0
    assert with_cl["val_loss"] > without["val_loss"]


def test_sampler_prefers_corrected_regions():
    img, lab = disks(4, size=256, n=4)
    edited = np.zeros(lab.shape, bool)
    edited[:64, :64] = True

    def corner_share(entry):
        prepared, _ = prepare_entries([entry], 1, None, 32, 0.0, np.random.default_rng(0),
                                      edited_weight=8.0)
        sampler = PatchSampler(prepared, 32, np.random.default_rng(1))
        pos = [sampler.position() for _ in range(600)]
        return np.mean([y + 16 < 64 and x + 16 < 64 for _, y, x in pos])

    edited_share = corner_share(TrainingEntry(img, lab, edited=edited))
    plain_share = corner_share(TrainingEntry(img, lab))
    assert edited_share > 2 * plain_share
    assert edited_share < 0.9  # the rest of the image is still sampled


def _one_disk(size=512, radius=40):
    yy, xx = np.mgrid[:size, :size]
    lab = (((yy - size // 2) ** 2 + (xx - size // 2) ** 2) < radius ** 2).astype(np.uint8)
    img = lab.astype(np.float32) * 2.0 + np.random.default_rng(0).normal(0, 0.1, lab.shape)
    return img.astype(np.float32), lab


@pytest.mark.parametrize("scale, size, radius, area_ratio", [
    (None, 512, 40, 1.0), ((2.0, 2.0), 512, 40, 0.25), ((0.5, 0.5), 160, 12, 4.0)])
def test_scale_augmentation_resizes_image_and_labels_together(scale, size, radius, area_ratio):
    img, lab = _one_disk(size, radius)
    prepared, _ = prepare_entries([TrainingEntry(img, lab)], 1, None, 128, 0.0,
                                  np.random.default_rng(0))
    sampler = PatchSampler(prepared, 128, np.random.default_rng(1), scale_range=scale)
    areas = []
    for _ in range(400):
        im, tg, ok = sampler.sample()
        assert im.shape == (128, 128) and tg.shape == (1, 128, 128) and ok.shape == (128, 128)
        assert tg.dtype == prepared[0].target.dtype and ok.dtype == bool and ok.all()
        # without scale augmentation the patch is a crop (a view) of the image, never resampled
        assert np.shares_memory(im, prepared[0].image) == (scale is None)
        m = tg[0] > 0
        if not m.any() or m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any():
            continue  # only patches holding the whole disk
        assert im[m].mean() > im[~m].mean() + 0.5  # the image moved with the mask (normalised)
        areas.append(int(m.sum()))
    assert len(areas) >= 5
    expected = np.pi * radius ** 2 * area_ratio
    assert abs(np.median(areas) - expected) < 0.08 * expected


def test_scale_range_is_validated(tiny_model, tset):
    for bad in [(2.0, 1.0), (0.1, 1.0), ("a", "b"), (1.0,)]:
        with pytest.raises(TemDefectError, match="scale_range"):
            finetune(tiny_model, tset, TrainConfig(steps=1, scale_range=bad, **FAST))
    result = finetune(tiny_model, tset, TrainConfig(steps=2, scale_range=(0.75, 1.33), **FAST))
    assert result.steps == 2 and result.history
    assert tiny_model.history[-1]["config"]["scale_range"] == (0.75, 1.33)


# ---- the loop --------------------------------------------------------------------------------

def test_early_stopping_keeps_the_best_weights(tiny_model, tset):
    snapshots = {}
    def progress(ev):
        if ev["event"] == "eval":
            snapshots[ev["step"]] = weights(tiny_model)
    res = finetune(tiny_model, tset, TrainConfig(steps=8, lr=3e-2, patience=2, **FAST),
                   progress=progress)
    losses = {h["step"]: h["val_loss"] for h in res.history}
    assert res.best_step == min(losses, key=losses.get)
    assert same(weights(tiny_model), snapshots[res.best_step])
    if res.reason == "early_stop":
        assert res.steps < 8
    rec = tiny_model.history[-1]
    assert rec["kind"] == "finetune" and rec["best_step"] == res.best_step
    assert rec["data"] == ["disks0", "disks1"] and rec["config"]["depth"] == "deep"


def test_validation_f1_is_scored_at_the_models_operating_threshold(tset):
    """The panel's validation F1 must be the number the re-run shows: predict() cuts the map
    at the model's recorded threshold, so the trainer does too (and records it)."""
    starts = {}
    for thr in (0.02, 0.98):
        torch.manual_seed(0)
        model = create_model(arch="unet", encoder="resnet18", device="cpu", name="tiny",
                             options={"encoder_depth": 3, "decoder_channels": (32, 16, 8)})
        model.metadata["threshold"] = thr
        assert model.threshold == thr
        res = finetune(model, tset, TrainConfig(steps=1, seed=0, **FAST))
        starts[thr] = res.start_val_f1
        assert model.history[-1]["val_f1_threshold"] == thr
    # same weights, same tiles: only the cut differs (near 0: everything is a defect)
    assert starts[0.02] != starts[0.98]
    assert starts[0.02] > 0.05


def test_cancel_stops_at_the_next_step(tiny_model, tset):
    stop = threading.Event()
    steps = []
    def progress(ev):
        if ev["event"] == "step":
            steps.append(ev["step"])
            if ev["step"] == 3:
                stop.set()
    res = finetune(tiny_model, tset, TrainConfig(steps=50, **FAST), progress=progress,
                   cancel=stop)
    assert res.stopped and res.reason == "cancelled" and res.steps == 3 and steps == [1, 2, 3]
    assert res.history[-1]["step"] == 3  # a last evaluation, then the best weights are kept


def test_cosine_schedule_warms_up_then_decays_to_one_percent(tiny_model, tset):
    lrs = []
    finetune(tiny_model, tset, TrainConfig(steps=40, lr=1e-2, schedule="cosine", **FAST),
             progress=lambda ev: ev["event"] == "step" and lrs.append(ev["lr"]))
    assert len(lrs) == 40
    assert lrs[0] < 1e-3  # warm-up starts low
    assert max(lrs) == pytest.approx(1e-2, rel=0.02)
    peak = int(np.argmax(lrs))
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:]))  # then only decays
    assert lrs[-1] < 0.05 * 1e-2
    const = []
    finetune(tiny_model, tset, TrainConfig(steps=3, lr=1e-2, **FAST),
             progress=lambda ev: ev["event"] == "step" and const.append(ev["lr"]))
    assert const == [1e-2] * 3
    with pytest.raises(TemDefectError, match="Unknown schedule 'step'"):
        TrainConfig(schedule="step").validate()


def test_same_seed_same_weights(tset):
    def run():
        torch.manual_seed(0)
        m = create_model(arch="unet", encoder="resnet18", device="cpu",
                         options={"encoder_depth": 3, "decoder_channels": (16, 8, 4)})
        finetune(m, tset, TrainConfig(steps=2, seed=7, **FAST))
        return weights(m)
    assert same(run(), run())


def test_training_from_scratch_is_reproducible_from_the_seed(tset):
    """train() builds the network itself, so its random init must come from config.seed too:
    whatever the global torch RNG did before, the same seed gives the same weights."""
    spec = dict(arch="unet", encoder="resnet18",
                options={"encoder_depth": 3, "decoder_channels": (16, 8, 4)})

    def run(seed, noise):
        torch.manual_seed(noise)  # a caller's unrelated use of the global RNG
        torch.rand(17)
        res = train(spec, tset, TrainConfig(depth="all", freeze_bn=False, steps=2, seed=seed,
                                            **FAST))
        return weights(res.model)

    assert same(run(3, noise=1), run(3, noise=2))
    assert not same(run(3, noise=1), run(4, noise=1))


def test_user_labels_are_never_modified(tiny_model):
    img, lab = disks(5)
    lab[0, :10] = 255
    lab = lab.astype(np.uint16)
    lab[1, :10] = IGNORE_LABEL
    img0, lab0 = img.copy(), lab.copy()
    entry = TrainingEntry(img, lab, binary=True)
    assert entry.labels is not lab and entry.image is not img
    finetune(tiny_model, [entry], TrainConfig(steps=1, **FAST))
    assert np.array_equal(lab, lab0) and np.array_equal(img, img0)
    assert np.array_equal(entry.labels, lab0)


def test_train_from_scratch_returns_a_trained_model(tset):
    spec = dict(arch="defectsegnet", options={"depth": 2, "growth_rate": 4,
                                              "layers_per_block": 1, "stem_channels": 4})
    res = train(spec, tset, TrainConfig(depth="all", freeze_bn=False, steps=4, **FAST))
    assert res.model is not None and res.model.history[-1]["kind"] == "train"
    assert res.steps == 4 and res.history[0]["step"] == 0


def test_l2_sp_pulls_toward_start_weights(tiny_model, tset):
    far = tiny_model.clone()
    start = weights(tiny_model)
    cfg = dict(steps=4, lr=1e-2, val_fraction=0.0, patch_size=64, batch_size=2, augment=False)
    finetune(tiny_model, tset, TrainConfig(l2=1.0, l2_sp=True, **cfg))
    finetune(far, tset, TrainConfig(l2=0.0, **cfg))
    key = "decoder.blocks.0.conv1.0.weight"
    d_sp = (weights(tiny_model)[key] - start[key]).norm()
    d_free = (weights(far)[key] - start[key]).norm()
    assert d_sp < d_free


# ---- files -----------------------------------------------------------------------------------

def test_training_set_save_load_round_trip(tmp_path):
    img, lab = disks(6)
    ign = np.zeros(lab.shape, bool)
    ign[:5] = True
    ed = np.zeros(lab.shape, bool)
    ed[50:60, 50:60] = True
    ts = TrainingSet([TrainingEntry(img, lab, ignore=ign, edited=ed, name="a/b c",
                                    pixel_size_nm=0.5),
                      TrainingEntry(img.astype(np.uint16), lab * 255, binary=True)])
    ts.save(tmp_path / "set")
    back = TrainingSet.load(tmp_path / "set")
    assert back.names == ["a/b c", "image 2"] and back[0].pixel_size_nm == 0.5
    for a, b in zip(ts, back):
        assert np.array_equal(a.image, b.image) and a.image.dtype == b.image.dtype
        assert np.array_equal(a.labels, b.labels) and a.binary == b.binary
        assert (a.ignore is None) == (b.ignore is None) and (a.edited is None) == (b.edited is None)
    assert np.array_equal(back[0].ignore, ign) and np.array_equal(back[0].edited, ed)
    with pytest.raises(TemDefectError, match="already holds"):
        ts.save(tmp_path / "set")
    ts.remove("image 2")
    ts.save(tmp_path / "set", overwrite=True)
    assert len(TrainingSet.load(tmp_path / "set")) == 1
    assert len(list((tmp_path / "set").glob("001_*"))) == 0  # stale files of entry 2 are gone
    with pytest.raises(TemDefectError, match="holds no training set"):
        TrainingSet.load(tmp_path)


def test_a_save_that_fails_part_way_leaves_the_old_set_whole(tmp_path, monkeypatch):
    import tifffile

    img, lab = disks(6)
    old = TrainingSet([TrainingEntry(img, lab, name="a"), TrainingEntry(img + 1, lab, name="b")])
    old.save(tmp_path / "set")
    new = TrainingSet([TrainingEntry(img + 9, lab, name="a"),
                       TrainingEntry(img + 7, lab, name="b")])
    real, calls = tifffile.imwrite, []

    def full_disk(path, *args, **kwargs):
        calls.append(path)
        if len(calls) > 3:  # the second entry's files: the disk is full
            raise OSError(28, "No space left on device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(tifffile, "imwrite", full_disk)
    with pytest.raises(OSError):
        new.save(tmp_path / "set", overwrite=True)
    monkeypatch.setattr(tifffile, "imwrite", real)
    back = TrainingSet.load(tmp_path / "set")  # the old index, and the old images under it
    for a, b in zip(old, back):
        assert np.array_equal(a.image, b.image)
    new.save(tmp_path / "set", overwrite=True)  # a save that completes replaces it
    assert [int(e.image[0, 0] - img[0, 0]) for e in TrainingSet.load(tmp_path / "set")] == [9, 7]
    listed = {p.name for p in (tmp_path / "set").glob("*.tif")}
    assert len(listed) == 4  # the old generation's files are gone


# ---- bad input ---------------------------------------------------------------------------------

def test_bad_inputs_give_one_clear_error_and_change_nothing(tiny_model, tset):
    before = weights(tiny_model)
    img, lab = disks(7)
    with pytest.raises(TemDefectError, match="empty"):
        finetune(tiny_model, TrainingSet(), TrainConfig(steps=1, **FAST))
    with pytest.raises(TemDefectError, match="no defects"):
        TrainingEntry(img, np.zeros_like(lab))
    with pytest.raises(TemDefectError, match="no defects"):
        TrainingEntry(img, np.full(lab.shape, IGNORE_LABEL, np.uint16))
    with pytest.raises(TemDefectError, match="128×100 px but the image is 128×128"):
        TrainingEntry(img, lab[:, :100])
    bad = TrainingEntry(img, lab * 3, name="three")
    with pytest.raises(TemDefectError, match="class value 3.*1 class"):
        finetune(tiny_model, [bad], TrainConfig(steps=1, **FAST))
    with pytest.raises(TemDefectError, match="depth"):
        finetune(tiny_model, tset, TrainConfig(depth="shallow"))
    with pytest.raises(TemDefectError, match="multiple of 32"):
        finetune(tiny_model, tset, TrainConfig(patch_size=50))
    assert same(weights(tiny_model), before) and tiny_model.history == []


def test_changed_weights_no_longer_claim_the_parents_cross_validation(tiny_model, tset):
    tiny_model.metadata["cv_metrics"] = {"at_0.5": {"pixel_f1": 0.9}}
    result = finetune(tiny_model, tset, TrainConfig(steps=4, eval_every=2, **{
        k: v for k, v in FAST.items() if k != "eval_every"}))
    assert result.best_step > 0  # the weights did change
    assert "cv_metrics" not in tiny_model.metadata
    assert tiny_model.metadata["parent_cv_metrics"]["at_0.5"]["pixel_f1"] == 0.9


@pytest.mark.parametrize("shape, patch", [((150, 150), 160), ((200, 200), 224), ((60, 300), 256),
                                          ((9, 70), 64)])
def test_validation_tiles_lie_on_real_pixels_for_awkward_sizes(shape, patch):
    """Images of 129-160 or 193-224 px got no validation at all, and a strip padded up to the
    patch could get tiles made only of padding (loss 0, F1 1 at every step: early stopping
    then restored the untrained weights)."""
    from napari_temdefect.training.dataset import _val_tiles

    rng = np.random.default_rng(0)
    h, w = max(shape[0], patch), max(shape[1], patch)
    valid = np.zeros((h, w), bool)
    valid[:shape[0], :shape[1]] = True  # the rest is padding
    fg = np.zeros((h, w), bool)
    fg[2:6, 2:6] = fg[shape[0] - 6:shape[0] - 2, shape[1] - 6:shape[1] - 2] = True
    tiles = _val_tiles(fg, valid, patch, 0.15, rng)
    if min(shape) < 32:
        assert tiles == []  # too small to hold a tile back: no validation, said so
        return
    assert tiles, "no validation"
    for y, x, t in tiles:
        assert t % 32 == 0 and valid[y:y + t, x:x + t].mean() >= 0.5


def test_a_strip_image_trains_instead_of_restoring_the_start(tiny_model):
    rng = np.random.default_rng(0)
    img = rng.normal(0.5, 0.05, (60, 300)).astype(np.float32)
    lab = np.zeros((60, 300), np.uint8)
    for x in range(20, 280, 40):
        lab[20:32, x:x + 12] = 1
        img[20:32, x:x + 12] -= 0.3
    before = {k: v.clone() for k, v in tiny_model.module.state_dict().items()}
    result = finetune(tiny_model, [TrainingEntry(img, lab)],
                      TrainConfig(steps=12, batch_size=2, eval_every=2, seed=0, device="cpu"))
    assert {h["val_f1"] for h in result.history if h["val_f1"] is not None} != {1.0}
    after = tiny_model.module.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_train_with_a_config_trains_every_layer_and_batchnorm_unless_told(tset):
    """TrainConfig(steps=...) passed to train() used to inherit the fine-tune defaults: the
    random stem and first stage frozen, BatchNorm statistics kept at their init."""
    from napari_temdefect.training import train

    spec = dict(arch="unet", encoder="resnet18",
                options={"encoder_depth": 3, "decoder_channels": [32, 16, 8]})
    last = dict(FAST, val_fraction=0.0)  # no validation: the last weights are kept
    result = train(spec, tset, TrainConfig(steps=2, device="cpu", **last))
    config = result.model.history[-1]["config"]
    assert config["depth"] == "all" and config["freeze_bn"] is False
    bn = result.model.module.encoder.bn1.running_var
    assert not torch.allclose(bn, torch.ones_like(bn))  # statistics learned
    told = train(spec, tset, TrainConfig(steps=2, depth="deep", freeze_bn=True, device="cpu",
                                         **FAST))
    assert told.model.history[-1]["config"]["depth"] == "deep"
    tuned = finetune(result.model, tset, TrainConfig(steps=2, device="cpu", **FAST))
    assert tuned.model.history[-1]["config"]["depth"] == "deep"  # fine-tuning's defaults
    assert tuned.model.history[-1]["config"]["freeze_bn"] is True


@pytest.mark.parametrize("field, value, message", [
    ("steps", "x", "steps must be a number"), ("lr", "abc", "lr must be a number"),
    ("seed", 2 ** 70, "seed must be an integer from 0"),
    ("blur", None, "blur must be a number")])
def test_config_values_that_are_not_numbers_are_one_sentence(field, value, message):
    with pytest.raises(TemDefectError, match=message):
        TrainConfig(**{field: value}).validate()


def test_val_f1_on_tiles_without_defects_falls_back_to_the_loss(tiny_model):
    """With a single defect tile (kept for training), validation holds background only; its
    F1 is 1 for predicting nothing, so monitoring it would keep the emptiest weights."""
    rng = np.random.default_rng(0)
    img = rng.normal(0.5, 0.05, (256, 256)).astype(np.float32)
    lab = np.zeros((256, 256), np.uint8)
    lab[20:40, 20:40] = 1  # one defect, in one tile
    img[20:40, 20:40] -= 0.3
    config = TrainConfig(steps=4, batch_size=2, patch_size=64, eval_every=2, seed=0,
                         device="cpu", monitor="val_f1", val_fraction=0.25)
    result = finetune(tiny_model, [TrainingEntry(img, lab)], config)
    assert result.monitor == "val_loss"
    two = lab.copy()
    two[200:220, 200:220] = 1  # a second defect tile: one can be held back
    assert finetune(tiny_model, [TrainingEntry(img, two)], config).monitor == "val_f1"


def test_ema_keeps_the_moving_average_of_the_weights(tiny_model, tset):
    """With ``ema`` the result is the running average of every step's weights (and BatchNorm
    statistics), with the usual (1 + n) / (10 + n) warm-up, not the last step's weights."""
    decay = 0.8
    start = weights(tiny_model)
    live = []
    cfg = TrainConfig(steps=6, lr=3e-2, ema=decay, **dict(FAST, val_fraction=0.0))
    finetune(tiny_model, tset, cfg,
             progress=lambda ev: ev["event"] == "step" and live.append(weights(tiny_model)))
    assert len(live) == 6
    expected = {k: v.clone() for k, v in start.items() if v.is_floating_point()}
    for n, w in enumerate(live):
        d = min(decay, (1.0 + n) / (10.0 + n))
        for k in expected:
            expected[k] = d * expected[k] + (1 - d) * w[k]
    kept = weights(tiny_model)
    changed = [k for k in expected if not torch.equal(start[k], live[-1][k])]
    assert changed  # the round trained something
    for k in expected:
        assert torch.allclose(kept[k], expected[k], atol=1e-6), k
    assert not all(torch.equal(kept[k], live[-1][k]) for k in changed)
    assert tiny_model.history[-1]["config"]["ema"] == decay


def test_ema_weights_are_what_validation_scores_and_keeps(tiny_model, tset):
    with pytest.raises(TemDefectError, match="ema is the decay"):
        finetune(tiny_model, tset, TrainConfig(steps=1, ema=1.0, **FAST))
    decay = 0.5
    start = weights(tiny_model)
    live = []
    res = finetune(tiny_model, tset, TrainConfig(steps=6, lr=3e-3, ema=decay, **FAST),
                   progress=lambda ev: ev["event"] == "step" and live.append(weights(tiny_model)))
    averages = {0: {k: v.clone() for k, v in start.items() if v.is_floating_point()}}
    for n, w in enumerate(live):
        d = min(decay, (1.0 + n) / (10.0 + n))
        averages[n + 1] = {k: d * averages[n][k] + (1 - d) * w[k] for k in averages[n]}
    kept = weights(tiny_model)
    assert res.best_step > 0  # a step that trained, so average and live weights differ
    best = averages[res.best_step]
    assert all(torch.allclose(kept[k], best[k], atol=1e-6) for k in best)
    # and a later evaluation scores the average, not the live weights it overwrote
    assert res.best_step == min((h["step"] for h in res.history),
                                key=lambda s: [h["val_loss"] for h in res.history
                                               if h["step"] == s][0])


def test_finetune_teaches_an_unscaled_model_the_scale_of_its_images(tiny_model):
    """The scale check at inference needs the pixel size a model was refined at: a model that
    knew none takes the median calibration of the images of a round that changed it."""
    def entries(*sizes):
        return TrainingSet([TrainingEntry(*disks(k), name=f"d{k}", pixel_size_nm=px)
                            for k, px in enumerate(sizes)])
    assert tiny_model.spec.pixel_size_nm is None
    cfg = TrainConfig(steps=2, lr=3e-3, **dict(FAST, val_fraction=0.0))  # keeps the last step
    res = finetune(tiny_model, entries(0.4, None), cfg)
    assert res.best_step > 0 and tiny_model.spec.pixel_size_nm is None  # one uncalibrated
    res = finetune(tiny_model, entries(0.4, 0.8, 0.5), cfg)
    assert res.best_step > 0 and tiny_model.spec.pixel_size_nm == pytest.approx(0.5)
    finetune(tiny_model, entries(2.0, 2.0), cfg)
    assert tiny_model.spec.pixel_size_nm == pytest.approx(0.5)  # a known scale is kept
