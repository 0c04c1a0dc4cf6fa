"""Losses: per-class sigmoid BCE plus soft Dice, both restricted to valid (not ignored) pixels,
and optionally soft clDice (a topology term for thin line networks).

The models emit one logit per class; several classes are a one-hot of the class map, each with
its own sigmoid. Ignored pixels contribute nothing, not even a gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_bce(logits, target, valid, pos_weight=None):
    """Mean BCE-with-logits over valid pixels and classes. ``valid``: (B,1,H,W) or (B,C,H,W)."""
    valid = valid.to(logits.dtype).expand_as(logits)
    pw = None
    if pos_weight is not None:
        pw = torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
        pw = pw.reshape(-1, 1, 1) if pw.ndim else pw
    per_px = F.binary_cross_entropy_with_logits(
        logits, target.to(logits.dtype), reduction="none", pos_weight=pw
    )
    return (per_px * valid).sum() / valid.sum().clamp_min(1.0)


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
                  cldice_weight: float = 0.0):
    """BCE + ``dice_weight`` × Dice (+ ``cldice_weight`` × clDice), ignoring pixels where
    ``valid`` is 0."""
    loss = masked_bce(logits, target, valid, pos_weight)
    if dice_weight:
        loss = loss + dice_weight * masked_dice(logits, target, valid)
    if cldice_weight:
        loss = loss + cldice_weight * masked_cldice(logits, target, valid)
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
