"""How a network's answer becomes a loop's mask: the post-processing modes a model card names.

Kept apart from :mod:`.model` so that the command line can offer the modes without loading torch.
"""

from __future__ import annotations

import numpy as np

from UltrasoundRefineLib.loop import Loop


def postprocess_mask(mask: np.ndarray) -> np.ndarray:
    """Fill holes and drop specks: a region is solid, and anything under 5% of the largest part (or
    0.2% of the image) is noise. Several large parts survive (dual-view layouts)."""
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    if not mask.any():
        return mask
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(labels.ravel())[1:]
        keep = np.flatnonzero((sizes >= 0.05 * sizes.max()) & (sizes >= 0.002 * mask.size)) + 1
        if keep.size == 0:
            keep = np.array([int(np.argmax(sizes)) + 1])
        mask = np.isin(labels, keep)
    return ndimage.binary_fill_holes(mask)


#: How a prediction is cleaned up, as a model card's ``postprocess`` says (figures: the README's "What we
#: measured"):
#:
#: - ``"none"``; ``"basic"`` (:func:`postprocess_mask`; what ``true`` means on cards written before
#:   ``"shape"`` existed).
#: - ``"shape"``: basic, then :func:`UltrasoundRefineLib.automask.fanfit.fit_shape`: the mask clipped to
#:   the loop's DICOM region boxes, the exact scanner shape fitted to it and completed where the image has
#:   faded to black; the shape replaces the mask where the two agree (IoU >= ``shape_min_agreement``
#:   over the pixels where the image shows something). A network draws edges at its input resolution.
#: - ``"evidence"`` (needs the loop; what an experiment scores its conditions with,
#:   :data:`EXPERIMENT_POSTPROCESS`): basic, then the loop's own evidence of its region read the way the
#:   mask points to (:func:`UltrasoundRefineLib.automask.fanfit.match_evidence`). Below
#:   :data:`EVIDENCE_AGREEMENT` the network is guessing on a screen unlike its training data, and the
#:   reading is taken; from :data:`EVIDENCE_SAME` both see the same region, and the reading's exact edges
#:   are taken; in between they differ in a part, and the network, trained on the human masks, decides
#:   ("shape"). Recipes that train different networks thus give different masks, which is what an
#:   experiment compares.
#: - ``"reading"`` (needs the loop; the default for new models, so what ``predict`` and ``clean`` give):
#:   the network only points; the reading it points to is the mask whatever their agreement (the shape
#:   fit where the loop offers no reading). On real scans from scanners a model never saw, a network
#:   trained on a few masks draws the region less exactly than the loop's own evidence, also where the
#:   two agree to 0.85-0.95 (the README's real-scan table), so the network's job there is to choose among
#:   the readings and to say, by its uncertainty, where a person should look.
POSTPROCESS_MODES = ("none", "basic", "shape", "evidence", "reading")
DEFAULT_POSTPROCESS = "reading"
EXPERIMENT_POSTPROCESS = "evidence"
# Not fit_shape's MIN_AGREEMENT (0.97, for hulls of evidence): chosen on networks' masks, whose edges
# the low resolution blurs (0.93-0.97 scored within 0.001 of each other; 0.85-0.9 let wrong fits through).
SHAPE_MIN_AGREEMENT = 0.95
EVIDENCE_AGREEMENT = 0.85
EVIDENCE_SAME = 0.95


def postprocess_mode(value) -> str:
    """A card's (or caller's) ``postprocess`` value -> one of :data:`POSTPROCESS_MODES`. ``True`` /
    missing is ``"basic"`` (old cards keep predicting what they predicted), ``False`` is ``"none"``."""
    if value is None or value is True:
        return "basic"
    if value is False:
        return "none"
    if isinstance(value, str) and value in POSTPROCESS_MODES:
        return value
    raise ValueError(f"unknown postprocess {value!r}; choose from {', '.join(POSTPROCESS_MODES)} (or true/false)")


def refine_mask(mask: np.ndarray, postprocess="basic", *, loop: Loop | None = None,
                min_agreement: float = SHAPE_MIN_AGREEMENT) -> tuple[np.ndarray, dict]:
    """Apply a :data:`POSTPROCESS_MODES` clean-up to a thresholded ``(H, W)`` mask; ``loop`` (optional)
    lends its DICOM region boxes to the shape fit and its evidence to ``"evidence"``. Returns ``(mask,
    info)``; ``info`` says which shape was fitted, its agreement with the mask and whether it was used,
    and for ``"evidence"`` and ``"reading"`` the readings matched, their agreement with the mask and whether
    they were used."""
    mode = postprocess_mode(postprocess)
    mask = np.asarray(mask, bool)
    if mode == "none":
        return mask, {}
    mask = postprocess_mask(mask)
    if mode == "basic":
        return mask, {}
    from UltrasoundRefineLib.automask.fanfit import fit_shape, match_evidence

    info = {}
    if mode in ("evidence", "reading") and loop is not None and mask.any():
        matched, agreement, info = match_evidence(mask, loop)
        network_decides = mode == "evidence" and EVIDENCE_AGREEMENT <= agreement < EVIDENCE_SAME
        info["evidence_used"] = bool(matched.any() and not network_decides)
        if info["evidence_used"]:
            return matched, info
    fit = fit_shape(mask, loop=loop, min_agreement=min_agreement)
    return fit.mask, {**info, "shape_model": fit.model, "shape_agreement": round(fit.agreement, 4),
                      "shape_used": fit.used, "shape_fitted_to": fit.fitted_to, **fit.box}
