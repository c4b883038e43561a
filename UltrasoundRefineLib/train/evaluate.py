"""Scoring a model on held-out loops, on each loop's own pixel grid (MONAI metrics via
:func:`UltrasoundRefineLib.metrics.mask_metrics`), the way the paper and the report count Dice."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from UltrasoundRefineLib.metrics import mask_metrics
from UltrasoundRefineLib.train.data import render_examples
from UltrasoundRefineLib.train.model import (
    Model, card_postprocess, mask_from_members, predict_probabilities, tta_uncertainty,
)
from UltrasoundRefineLib.train.postprocess import postprocess_mode


def summarise(values: Sequence[float]) -> dict:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return {"mean": None, "sd": None, "min": None, "median": None}
    return {
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "min": float(v.min()),
        "median": float(np.median(v)),
    }


def evaluate_model(model: Model, examples: Sequence[Any], *, tta: bool = True, postprocess: bool | str | None = None, batch_size: int = 32) -> dict:
    """``examples``: ``(loop, mask)`` pairs, phantoms (``loop``/``truth``) or samples rendered with
    ``keep_masks=True``. Returns per-example metrics (dice, iou, accuracy, hd95, uncertainty) and a
    summary (``dice_mean``, ``dice_sd``, ..., ``n``).

    Two stages, which the experiment runner also runs apart (the device's part of one run beside the
    CPU's part of another): :func:`predict_members` on the model's device, then :func:`score_members`
    on the CPU."""
    samples = render_examples(examples, model.size, model.inputs, keep_masks=True)
    mode, min_agreement = card_postprocess(model.card)
    if postprocess is not None:
        mode = postprocess_mode(postprocess)
    members = predict_members(model, samples, tta=tta, batch_size=batch_size)
    return score_members(members, samples, mode, min_agreement)


def predict_members(model: Model, samples: Sequence[Any], *, tta: bool = True, batch_size: int = 32) -> np.ndarray:
    """The device stage: rendered ``samples`` -> ``(K, N, S, S)`` float32 TTA member probabilities on
    the host (a numpy array: it pickles to another process as it is)."""
    if not samples:
        return np.zeros((1, 0, model.size, model.size), np.float32)
    images = torch.from_numpy(np.stack([s.image for s in samples]))
    return predict_probabilities(model, images, tta=tta, batch_size=batch_size).float().cpu().numpy()


def score_members(members: np.ndarray, samples: Sequence[Any], mode: str, min_agreement: float) -> dict:
    """The CPU stage: members from :func:`predict_members` -> each sample's post-processed mask (the
    shape fit) scored against its original-grid mask; what :func:`evaluate_model` returns."""
    members = torch.from_numpy(np.asarray(members))
    rows = []
    for i, s in enumerate(samples):
        if s.mask is None:
            raise ValueError(f"example {s.key} has no original-grid mask to score against")
        pred = mask_from_members(members[:, i], s.geometry, mode, loop=s.loop, min_agreement=min_agreement)
        m = mask_metrics(pred, s.mask, s.spacing)
        m["uncertainty"] = tta_uncertainty(members[:, i], s.geometry)
        m["key"] = s.key
        rows.append(m)
    summary = {"n": len(rows)}
    for name in ("dice", "iou", "accuracy", "hd95", "uncertainty"):
        stats = summarise([r[name] for r in rows])
        for k, v in stats.items():
            summary[f"{name}_{k}"] = v
    if len(rows) > 2:
        from scipy.stats import spearmanr

        dice = [r["dice"] for r in rows]
        unc = [r["uncertainty"] for r in rows]
        if np.std(dice) > 0 and np.std(unc) > 0:
            summary["spearman_uncertainty_vs_dice"] = float(spearmanr(unc, dice).statistic)
    return {"per_example": rows, "summary": summary}
