"""Losses: per-class sigmoid BCE plus soft Dice, both restricted to valid (not ignored) pixels,
optionally soft clDice (a topology term for thin line networks) and the Lovász hinge (an IoU
surrogate at the 0.5 threshold).

The models emit one logit per class; several classes are a one-hot of the class map, each with
its own sigmoid. Ignored pixels contribute nothing, not even a gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_bce(logits, target, valid, pos_weight=None, weight=None):
    """Mean BCE-with-logits over valid pixels and classes. ``valid``: (B,1,H,W) or (B,C,H,W).

    ``weight`` (same shape as ``valid``): per-pixel weights of the BCE, e.g. the separation
    weight of the background between touching objects; the sum is still divided by the number
    of valid pixels, so weights above 1 add to the loss instead of diluting the rest."""
    valid = valid.to(logits.dtype).expand_as(logits)
    pw = None
    if pos_weight is not None:
        pw = torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
        pw = pw.reshape(-1, 1, 1) if pw.ndim else pw
    per_px = F.binary_cross_entropy_with_logits(
        logits, target.to(logits.dtype), reduction="none", pos_weight=pw
    )
    scale = valid if weight is None else weight.to(logits.dtype).expand_as(logits) * valid
    return (per_px * scale).sum() / valid.sum().clamp_min(1.0)


def masked_dice(logits, target, valid, smooth: float = 1.0):
    """1 − soft Dice per class (over the whole batch), averaged over classes."""
    valid = valid.to(logits.dtype).expand_as(logits)
    prob = torch.sigmoid(logits) * valid
    tgt = target.to(logits.dtype) * valid
    dims = (0, 2, 3)
    inter = (prob * tgt).sum(dims)
    denom = prob.sum(dims) + tgt.sum(dims)
    return (1.0 - (2.0 * inter + smooth) / (denom + smooth)).mean()


def bce_dice_loss(logits, target, valid, pos_weight=None, dice_weight: float = 1.0,
                  cldice_weight: float = 0.0, lovasz_weight: float = 0.0, weight=None):
    """BCE + ``dice_weight`` × Dice (+ ``cldice_weight`` × clDice + ``lovasz_weight`` × Lovász
    hinge), ignoring pixels where ``valid`` is 0; ``weight`` weights the BCE per pixel."""
    loss = masked_bce(logits, target, valid, pos_weight, weight)
    if dice_weight:
        loss = loss + dice_weight * masked_dice(logits, target, valid)
    if cldice_weight:
        loss = loss + cldice_weight * masked_cldice(logits, target, valid)
    if lovasz_weight:
        loss = loss + lovasz_weight * masked_lovasz(logits, target, valid)
    return loss


def soft_skeleton(prob, iterations: int = 5):
    """Differentiable skeleton of a (B,C,H,W) probability map (Shit et al., CVPR 2021).

    Repeated soft opening (min-pool then max-pool) peels the structure; what each opening
    removes is ridge, and the union of the ridges is the skeleton. ``iterations`` bounds the
    half-width of the structures that are thinned completely (about ``iterations`` px).
    """
    def erode(x):
        return -F.max_pool2d(-x, 3, 1, 1)

    def dilate(x):
        return F.max_pool2d(x, 3, 1, 1)

    skel = F.relu(prob - dilate(erode(prob)))
    for _ in range(int(iterations)):
        prob = erode(prob)
        delta = F.relu(prob - dilate(erode(prob)))
        skel = skel + F.relu(delta - skel * delta)
    return skel


def cldice_terms(logits, target, valid, iterations: int = 5):
    """The four sums of soft clDice per class: (skel(P)·G, skel(P), skel(G)·P, skel(G))."""
    valid = valid.to(logits.dtype).expand_as(logits)
    prob = torch.sigmoid(logits) * valid
    tgt = target.to(logits.dtype) * valid
    sp, sg = soft_skeleton(prob, iterations) * valid, soft_skeleton(tgt, iterations) * valid
    dims = (0, 2, 3)
    return (sp * tgt).sum(dims), sp.sum(dims), (sg * prob).sum(dims), sg.sum(dims)


def cldice_from_terms(sp_g, sp, sg_p, sg, smooth: float = 1.0):
    """1 − clDice, averaged over classes: the harmonic mean of topology precision (how much of
    the predicted skeleton lies in the truth) and sensitivity (how much of the true skeleton
    the prediction covers: a gap in a boundary costs here even when it is 1 px long)."""
    t_prec = (sp_g + smooth) / (sp + smooth)
    t_sens = (sg_p + smooth) / (sg + smooth)
    return (1.0 - 2.0 * t_prec * t_sens / (t_prec + t_sens)).mean()


def masked_cldice(logits, target, valid, iterations: int = 5, smooth: float = 1.0):
    """1 − soft clDice over the batch, ignoring pixels where ``valid`` is 0."""
    return cldice_from_terms(*cldice_terms(logits, target, valid, iterations), smooth=smooth)


def _lovasz_grad(gt_sorted):
    """Gradient of the Lovász extension of the Jaccard loss at pixels sorted by error."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1.0 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


def masked_lovasz(logits, target, valid):
    """Lovász hinge (Berman et al., CVPR 2018), per image and class, averaged: a convex
    surrogate of 1 − IoU of the mask thresholded at logit 0 (probability 0.5, the threshold
    pixel F1 is scored at), which BCE and soft Dice only approximate. Ignored pixels take no
    part, not even in the sort."""
    valid = valid.expand_as(logits) > 0
    losses = []
    for b in range(logits.shape[0]):
        for c in range(logits.shape[1]):
            keep = valid[b, c]
            lg = logits[b, c][keep]
            if lg.numel() == 0:
                continue
            gt = target[b, c][keep].to(logits.dtype)
            errors = 1.0 - lg * (2.0 * gt - 1.0)
            errors_sorted, perm = torch.sort(errors, descending=True)
            losses.append(torch.dot(F.relu(errors_sorted), _lovasz_grad(gt[perm])))
    if not losses:
        return logits.sum() * 0.0
    return torch.stack(losses).mean()
