"""Losses: per-class sigmoid BCE plus soft Dice, both restricted to valid (not ignored) pixels.

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


def bce_dice_loss(logits, target, valid, pos_weight=None, dice_weight: float = 1.0):
    """BCE + ``dice_weight`` × Dice, ignoring pixels where ``valid`` is 0."""
    loss = masked_bce(logits, target, valid, pos_weight)
    if dice_weight:
        loss = loss + dice_weight * masked_dice(logits, target, valid)
    return loss
