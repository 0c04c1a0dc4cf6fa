"""Separation weight: the background between touching objects weighs more in the BCE, so a
network learns to keep touching bubbles apart (``TrainConfig.separation``)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from napari_temdefect.errors import TemDefectError
from napari_temdefect.training import TrainConfig, TrainingEntry, finetune
from napari_temdefect.training.dataset import PatchSampler, prepare_entries
from napari_temdefect.training.losses import bce_dice_loss, masked_bce
from napari_temdefect.training.separation import gap_mask, object_ids, separation_weight

FAST = dict(patch_size=64, batch_size=2, eval_every=1, val_fraction=0.25)


def two_disks(gap=2, radius=8, size=64):
    """Two disks side by side on one row, ``gap`` background px between them (0/1 mask)."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx1 = size // 2, size // 2 - radius - (gap + 1) // 2
    cx2 = cx1 + 2 * radius + gap - 1
    # disks of diameter 2·radius − 1 px: columns cx ± (radius − 1)
    a = ((yy - cy) ** 2 + (xx - cx1) ** 2) < radius ** 2
    b = ((yy - cy) ** 2 + (xx - cx2) ** 2) < radius ** 2
    return (a | b).astype(np.uint8), a, b


def test_the_strip_between_two_close_disks_is_marked_and_nothing_else():
    mask, a, b = two_disks(gap=2)
    assert not (a & b).any()
    gap = gap_mask(object_ids(mask))
    assert gap.any() and not (gap & (mask > 0)).any()  # background only
    cols = np.nonzero(gap)[1]
    # between the disks: right of a's last column, left of b's first
    assert cols.min() > np.nonzero(a.any(0))[0].max() - 3
    assert cols.max() < np.nonzero(b.any(0))[0].min() + 3
    centre_row = mask.shape[0] // 2
    between = range(np.nonzero(a[centre_row])[0].max() + 1, np.nonzero(b[centre_row])[0].min())
    assert len(between) == 2 and all(gap[centre_row, c] for c in between)
    # one disk alone, or two far apart, mark nothing
    assert not gap_mask(object_ids(a.astype(np.uint8))).any()
    far, _, _ = two_disks(gap=10)
    assert not gap_mask(object_ids(far)).any()


def test_objects_are_components_of_a_mask_or_the_given_instance_ids():
    mask, a, b = two_disks(gap=2)
    ids = object_ids(mask * 255)  # a mask saved as 0/255 is one id: use its components
    assert len(np.unique(ids[ids > 0])) == 2
    # instance labels whose two objects touch: two ids, kept as given
    touching = np.zeros_like(mask, np.int32)
    touching[a] = 7
    touching[np.roll(b, -2, axis=1)] = 9
    lab = object_ids((touching > 0).astype(np.uint8), instances=touching)
    assert set(np.unique(lab)) == {0, 7, 9}
    # two classes that touch are two objects
    classes = np.zeros_like(mask)
    classes[a] = 1
    classes[np.roll(b, -2, axis=1)] = 2
    assert len(np.unique(object_ids(classes))) == 3


def test_separation_weight_is_off_at_zero_and_one_plus_w_on_the_strip():
    mask, _, _ = two_disks(gap=2)
    assert separation_weight(mask, 0.0) is None
    w = separation_weight(mask, 10.0)
    assert w.dtype == np.float32
    assert set(np.unique(w)) == {1.0, 11.0}
    assert np.array_equal(w == 11.0, gap_mask(object_ids(mask)))
    with pytest.raises(ValueError, match="2D"):
        gap_mask(np.zeros((2, 3, 4), int))


def test_weighted_bce_charges_the_weighted_pixels_w_times_and_no_weight_is_unchanged():
    torch.manual_seed(0)
    logits = torch.randn(1, 1, 8, 8, requires_grad=True)
    target = (torch.rand(1, 1, 8, 8) > 0.5).float()
    valid = torch.ones(1, 1, 8, 8, dtype=torch.bool)
    weight = torch.ones(1, 1, 8, 8)
    weight[0, 0, 3, 4] = 11.0
    plain = masked_bce(logits, target, valid)
    assert torch.equal(plain, masked_bce(logits, target, valid, weight=torch.ones(1, 1, 8, 8)))
    g_plain = torch.autograd.grad(plain, logits)[0]
    g_w = torch.autograd.grad(masked_bce(logits, target, valid, weight=weight), logits)[0]
    assert g_w[0, 0, 3, 4] == pytest.approx(11.0 * float(g_plain[0, 0, 3, 4]))
    others = torch.ones_like(weight, dtype=torch.bool)
    others[0, 0, 3, 4] = False
    assert torch.allclose(g_w[others], g_plain[others])
    # ignored pixels stay out whatever their weight
    valid[0, 0, 3, 4] = False
    g_ign = torch.autograd.grad(
        bce_dice_loss(logits, target, valid, dice_weight=0.0, weight=weight), logits)[0]
    assert g_ign[0, 0, 3, 4] == 0


def test_sampler_hands_the_weight_out_with_the_patch_only_when_asked():
    mask, _, _ = two_disks(gap=2, size=64)
    img = mask.astype(np.float32) * 2
    entry = TrainingEntry(img, mask, binary=True)
    rng = np.random.default_rng(0)
    (plain,), _ = prepare_entries([entry], 1, None, 64, 0.0, rng)
    assert plain.loss_weight is None
    assert PatchSampler([plain], 64, rng).sample()[2].dtype == bool
    (weighted,), _ = prepare_entries([entry], 1, None, 64, 0.0, rng, separation=10.0)
    ok = PatchSampler([weighted], 64, rng).sample()[2]
    assert ok.dtype == np.float32
    assert np.array_equal(ok == 11.0, gap_mask(object_ids(mask)))
    assert ok.min() == 1.0
    # a resampled window (scale augmentation) keeps the weights' values
    _, _, ok2 = PatchSampler([weighted], 32, rng, scale_range=(2.0, 2.0)).sample()
    assert ok2.dtype == np.float32 and set(np.unique(ok2)) <= {1.0, 11.0}


def test_held_back_and_ignored_pixels_get_no_weight():
    mask, _, _ = two_disks(gap=2, size=64)
    ignore = np.zeros(mask.shape, bool)
    ignore[:, 32:] = True
    entry = TrainingEntry(mask.astype(np.float32), mask, ignore=ignore, binary=True)
    (p,), _ = prepare_entries([entry], 1, None, 64, 0.0, np.random.default_rng(0),
                              separation=10.0)
    ok = PatchSampler([p], 64, np.random.default_rng(1)).sample()[2]
    assert (ok[:, 32:] == 0).all()


def test_separation_trains_is_recorded_and_is_validated(tiny_model):
    mask, _, _ = two_disks(gap=2, size=128, radius=20)
    img = mask.astype(np.float32) * 2 + np.random.default_rng(0).normal(0, 0.2, mask.shape)
    tset = [TrainingEntry(img, mask, binary=True, name="pair")]
    with pytest.raises(TemDefectError, match="separation must be zero or positive"):
        finetune(tiny_model, tset, TrainConfig(steps=1, separation=-1, **FAST))
    plain = copy.deepcopy(tiny_model)
    finetune(tiny_model, tset, TrainConfig(steps=1, separation=50.0, **FAST))
    finetune(plain, tset, TrainConfig(steps=1, **FAST))
    assert tiny_model.history[-1]["config"]["separation"] == 50.0
    (v0, v1), (p0, p1) = (m.history[-1]["evaluations"] for m in (tiny_model, plain))
    # the validation loss is the plain one; the training loss of the same first batch carries
    # the heavier strip between the disks
    assert v0["val_loss"] == pytest.approx(p0["val_loss"])
    assert v1["train_loss"] > p1["train_loss"]
