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
    summary (``dice_mean``, ``dice_sd``, ..., ``n``)."""
    samples = render_examples(examples, model.size, model.inputs, keep_masks=True)
    mode, min_agreement = card_postprocess(model.card)
    if postprocess is not None:
        mode = postprocess_mode(postprocess)
    rows = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        images = torch.from_numpy(np.stack([s.image for s in chunk]))
        members = predict_probabilities(model, images, tta=tta, batch_size=batch_size).float().cpu()
        for i, s in enumerate(chunk):
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
