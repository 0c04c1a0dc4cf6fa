"""The confidence map: how much to trust the prediction at each pixel, in [0, 1].

Definition (the same in the GUI, the CLI and the Python API)::

    confidence = (1 − Hₙ(p̄)) × A

* ``p̄`` is the blended probability of each class at the pixel (the mean over the eight D4
  test-time augmentations when TTA is on).
* ``Hₙ(p) = −[p·log₂p + (1−p)·log₂(1−p)]`` is the binary entropy in bits, so ``1 − Hₙ`` is 1
  where the network is sure (p = 0 or 1) and 0 where it is undecided (p = 0.5). With several
  classes the least confident class counts (the maximum entropy over classes).
* ``A`` is the agreement between the TTA members, ``A = clip(2·a − 1, 0, 1)``, where ``a`` is the
  fraction of the 8 members whose decision (``p > threshold``) matches the decision of their mean
  (the least agreeing class counts). ``A`` is 1 when all members agree and 0 when they split
  4 : 4. Without TTA, ``A = 1``.

Pixels that were NaN or infinite in the input get confidence 0.

Low confidence marks pixels that are likely wrong: mistakes happen where the probability is
close to 0.5 or where flipping/rotating the image changes the answer.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-7


def entropy_confidence(prob: np.ndarray) -> np.ndarray:
    """``1 − max over classes of the binary entropy (bits)``; ``prob`` is (C, ...) → (...)."""
    p = np.clip(np.asarray(prob, dtype=np.float32), _EPS, 1 - _EPS)
    q = 1 - p
    h = np.log2(p)
    h *= p
    lq = np.log2(q)
    lq *= q
    h += lq                                   # −entropy, in place (few temporaries)
    out = h.min(axis=0) if h.shape[0] > 1 else h[0]
    out += 1.0
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)


def tta_agreement(members: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Fraction ``a`` of members agreeing with their mean's decision; (T, C, ...) → (...).

    The least agreeing class counts.
    """
    members = np.asarray(members, dtype=np.float32)
    votes = members > threshold                       # (T, C, ...)
    mean_decision = members.mean(axis=0) > threshold   # (C, ...)
    agree = (votes == mean_decision[None]).mean(axis=0, dtype=np.float32)
    return agree.min(axis=0)


def combine(entropy_conf: np.ndarray, agreement: np.ndarray | None) -> np.ndarray:
    """``(1 − Hₙ) × clip(2a − 1, 0, 1)`` (or just ``1 − Hₙ`` without TTA)."""
    if agreement is None:
        return entropy_conf.astype(np.float32, copy=False)
    a = np.clip(2.0 * np.asarray(agreement, dtype=np.float32) - 1.0, 0.0, 1.0)
    return (entropy_conf * a).astype(np.float32, copy=False)


def confidence_map(prob: np.ndarray, agreement: np.ndarray | None = None) -> np.ndarray:
    """Confidence of a whole (C, H, W) probability map (see the module docstring)."""
    return combine(entropy_confidence(prob), agreement)
