"""Score a folder of masks against a folder of reference masks (ground truth or human masks)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from UltrasoundRefineLib.errors import InputError
from UltrasoundRefineLib.io import read_mask
from UltrasoundRefineLib.io.images import image_format
from UltrasoundRefineLib.io.naming import SEGMENTATION_EXTENSIONS, loop_stem
from UltrasoundRefineLib.metrics import METRIC_NAMES, mask_metrics


@dataclass
class FolderScore:
    per_stem: dict[str, dict[str, float]]
    missing: list[str]  # reference stems with no mask to score

    def mean(self, metric: str = "dice") -> float:
        values = [m[metric] for m in self.per_stem.values() if math.isfinite(m[metric])]
        return float(np.mean(values)) if values else math.nan

    def summary(self) -> dict:
        out = {"n": len(self.per_stem), "missing": len(self.missing)}
        for name in METRIC_NAMES:
            values = np.array([m[name] for m in self.per_stem.values()], dtype=float)
            finite = values[np.isfinite(values)]
            out[f"{name}_mean"] = float(finite.mean()) if finite.size else math.nan
            out[f"{name}_sd"] = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
        return out


def score_folder(pred_dir: str | Path, truth_dir: str | Path) -> FolderScore:
    """Match ``pred_dir/<stem>.nrrd`` to the reference mask of the same stem in ``truth_dir`` (NRRD, or any
    2D image format the readers know: PNG, NIfTI, MHA, TIFF, ...; non-zero is inside) and compute the
    metrics of each pair."""
    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    for d in (pred_dir, truth_dir):
        if not d.is_dir():
            raise InputError(d, "not a folder")
    truths: dict[str, Path] = {}
    for p in sorted(truth_dir.iterdir()):
        if not p.is_file() or image_format(p) is None or p.name.lower().endswith(SEGMENTATION_EXTENSIONS):
            continue
        stem = loop_stem(p)
        if stem in truths:
            raise InputError(p, f"a second reference mask for '{stem}' (also {truths[stem].name})")
        truths[stem] = p
    if not truths:
        raise InputError(truth_dir, "contains no reference masks (NRRD, PNG, NIfTI, MHA, ... images)")
    per_stem, missing = {}, []
    for stem, truth_path in truths.items():
        pred_path = pred_dir / f"{stem}.nrrd"
        if not pred_path.is_file():
            missing.append(stem)
            continue
        truth, pred = read_mask(truth_path), read_mask(pred_path)
        if truth.shape != pred.shape:
            raise InputError(pred_path, f"mask shape {pred.shape} differs from the reference {truth.shape}")
        per_stem[stem] = mask_metrics(pred, truth)
    return FolderScore(per_stem, missing)
