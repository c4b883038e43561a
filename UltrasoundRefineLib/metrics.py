"""Mask agreement metrics, computed by MONAI so that our figures match the field's."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from monai.metrics import (
    compute_confusion_matrix_metric,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
    get_confusion_matrix,
)

METRIC_NAMES = ("dice", "iou", "accuracy", "hd95")


def _as_batch(mask: np.ndarray) -> torch.Tensor:
    """(H, W) bool -> (1, 1, H, W) float, MONAI's (batch, channel, spatial) layout."""
    return torch.as_tensor(np.asarray(mask, dtype=bool), dtype=torch.float32)[None, None]


def mask_metrics(
    pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float] | None = None
) -> dict[str, float]:
    """Dice, IoU, pixel accuracy and 95% Hausdorff distance of one ``(H, W)`` mask against the truth.

    hd95 is in millimetres when ``spacing`` (row_mm, col_mm) is given, else in pixels; it is ``inf``
    when exactly one of the two masks is empty. Two empty masks agree perfectly (Dice 1).
    """
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {truth.shape}")
    p, t = _as_batch(pred), _as_batch(truth)
    if not pred.any() and not truth.any():
        return {"dice": 1.0, "iou": 1.0, "accuracy": 1.0, "hd95": 0.0}
    dice = float(compute_dice(p, t, include_background=True, ignore_empty=False)[0, 0])
    iou = float(compute_iou(p, t, include_background=True, ignore_empty=False)[0, 0])
    confusion = get_confusion_matrix(p, t, include_background=True)
    accuracy = float(compute_confusion_matrix_metric("accuracy", confusion)[0, 0])
    if pred.any() != truth.any():
        hd95 = math.inf
    else:
        with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal argument
            warnings.simplefilter("ignore", FutureWarning)
            hd95 = float(
                compute_hausdorff_distance(
                    p, t, include_background=True, percentile=95, spacing=list(spacing) if spacing else None
                )[0, 0]
            )
    return {"dice": dice, "iou": iou, "accuracy": accuracy, "hd95": hd95}
