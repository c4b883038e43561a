"""Where each loop's mask comes from: an auto-mask method, a trained model, a folder of masks, or a
workspace's reviewed masks. Every source is a function ``loop -> LoopMask``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from UltrasoundRefineLib.errors import InputError
from UltrasoundRefineLib.loop import Loop


@dataclass(frozen=True)
class LoopMask:
    """mask: bool ``(H, W)`` on the loop's grid; source: what made it (``fanfit``, ``model:<id>``,
    ``masks``, ``human:imported``, ...); quality: the producer's score in [0, 1], ``None`` for masks a
    person drew or accepted; uncertainty: a model's, how much its test-time-augmented predictions
    (mirrored, darker, brighter) disagree (1 - their mean Dice with the consensus), ``None`` for others."""

    mask: np.ndarray
    source: str
    quality: float | None
    uncertainty: float | None = None


MaskSource = Callable[[Loop], LoopMask]


def method_source(method: str) -> MaskSource:
    from UltrasoundRefineLib.automask import suggest_mask

    def produce(loop: Loop) -> LoopMask:
        s = suggest_mask(loop, method)
        return LoopMask(s.mask, s.method, float(s.quality))

    return produce


def model_source(model_dir: str | Path, device: str | None = "auto", postprocess: str | None = None) -> MaskSource:
    """The model's mask exactly as ``predict`` writes it (quality = 1 - test-time-augmentation disagreement).
    The model is loaded here (a bad one is one line before any loop); a copy of the source sent to a
    Dask worker loads it there."""
    from UltrasoundRefineLib.train.model import ModelPredictor

    return predictor_source(ModelPredictor(Path(model_dir).absolute(), device, postprocess=postprocess))


def predictor_source(predict) -> MaskSource:
    """:func:`model_source` with a :class:`~UltrasoundRefineLib.train.model.ModelPredictor` made by the
    caller: one whose precision the starting process chose, so that its workers all predict alike."""
    name = predict.model.producer_name

    def produce(loop: Loop) -> LoopMask:
        s = predict(loop)
        uncertainty = s.details.get("uncertainty")
        return LoopMask(s.mask, name, float(s.quality), None if uncertainty is None else float(uncertainty))

    return produce


def folder_source(masks_dir: str | Path) -> MaskSource:
    """Masks matched to loops by stem: ``<stem>.nrrd``, ``.png`` (non-zero inside), ``.nii.gz``, Slicer
    ``.seg.nrrd``, ... as ``evaluate`` and ``import-masks`` read them."""
    from UltrasoundRefineLib.io.images import image_format
    from UltrasoundRefineLib.io.naming import is_segmentation, loop_stem
    from UltrasoundRefineLib.workspace.human_masks import mask_stem, read_human_mask

    root = Path(masks_dir)
    if not root.is_dir():
        raise InputError(root, "not a folder of masks")
    by_stem: dict[str, Path] = {}
    for p in sorted(root.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        if is_segmentation(p):
            stem = mask_stem(p)
        elif image_format(p) is not None:
            stem = loop_stem(p)
        else:
            continue
        if stem in by_stem:
            raise InputError(p, f"a second mask for '{stem}' (also {by_stem[stem].name})")
        by_stem[stem] = p
    if not by_stem:
        raise InputError(root, "contains no masks (NRRD, PNG, NIfTI, MHA, .seg.nrrd, ...)")

    def produce(loop: Loop) -> LoopMask:
        path = by_stem.get(loop.stem)
        if path is None:
            raise InputError(loop.path or loop.stem, f"no mask named '{loop.stem}' in the masks folder")
        return LoopMask(read_human_mask(path, loop.shape), "masks", None)

    return produce


def workspace_source(workspace: str | Path) -> tuple[MaskSource, list[Path]]:
    """Each loop's reviewed mask in a workspace (its latest human mask, else its accepted suggestion),
    found by the loop's content hash; and the workspace's loop files (the inputs when none are given)."""
    from UltrasoundRefineLib.io import read_mask
    from UltrasoundRefineLib.workspace import Workspace
    from UltrasoundRefineLib.workspace.human_masks import best_masks

    with Workspace.open(workspace, readonly=True) as ws:
        root = ws.root
        best = best_masks(ws)
        paths = [item.path for item in ws.items() if item.id in best]

    def produce(loop: Loop) -> LoopMask:
        found = best.get(loop.source_key)
        if found is None:
            raise InputError(loop.path or loop.stem, "no accepted or human mask for this loop in the workspace")
        rel, source = found
        mask = read_mask(root / rel)
        if mask.shape != loop.shape:
            raise InputError(root / rel, f"mask shape {mask.shape} does not match the loop {loop.shape}")
        return LoopMask(mask, source, None)

    return produce, paths
