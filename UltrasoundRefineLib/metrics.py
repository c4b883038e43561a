"""Mask agreement metrics: Dice and IoU here (numpy, for the hot paths that must not load torch), the
95% Hausdorff distance by MONAI so that our figures match the field's (tests check the rest against MONAI).

One convention for empty masks everywhere: two empty masks agree perfectly (Dice and IoU 1), an empty
mask against a non-empty one not at all (0), as MONAI's ``ignore_empty=False`` has it.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

METRIC_NAMES = ("dice", "iou", "accuracy", "hd95")


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice overlap ``2|A and B| / (|A| + |B|)`` of two boolean masks of one shape; 1.0 when both are empty."""
    a, b = _pair(pred, truth)
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return 2.0 * np.count_nonzero(a & b) / total if total else 1.0


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union (Jaccard) of two boolean masks of one shape; 1.0 when both are empty."""
    a, b = _pair(pred, truth)
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def _pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    return a, b


def mask_metrics(
    pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float] | None = None
) -> dict[str, float]:
    """Dice, IoU, pixel accuracy and 95% Hausdorff distance of one ``(H, W)`` mask against the truth.

    hd95 is in millimetres when ``spacing`` (row_mm, col_mm) is given, else in pixels; it is ``inf``
    when exactly one of the two masks is empty, 0 when both are (they agree perfectly: Dice 1).
    """
    pred, truth = _pair(pred, truth)
    scores = {"dice": dice(pred, truth), "iou": iou(pred, truth), "accuracy": float(np.mean(pred == truth))}
    if not pred.any() and not truth.any():
        return {**scores, "hd95": 0.0}
    if pred.any() != truth.any():
        return {**scores, "hd95": math.inf}
    import torch
    from monai.metrics import compute_hausdorff_distance

    def as_batch(mask: np.ndarray) -> torch.Tensor:  # MONAI's (batch, channel, H, W)
        return torch.as_tensor(mask, dtype=torch.float32)[None, None]

    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal argument
        warnings.simplefilter("ignore", FutureWarning)
        hd95 = float(compute_hausdorff_distance(as_batch(pred), as_batch(truth), include_background=True,
                                                percentile=95, spacing=list(spacing) if spacing else None)[0, 0])
    return {**scores, "hd95": hd95}
