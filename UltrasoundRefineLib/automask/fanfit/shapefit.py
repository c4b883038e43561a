"""``fit_shape``: the exact scanner shape for a given mask (a network's, a hull of evidence)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from UltrasoundRefineLib.automask.evidence import background_level, convex_hull
from UltrasoundRefineLib.automask.fanfit.candidates import _box_prior, _components
from UltrasoundRefineLib.automask.fanfit.polish import _refine
from UltrasoundRefineLib.automask.fanfit.raster import _Raster
from UltrasoundRefineLib.automask.fanfit.select import _model_name, _select
from UltrasoundRefineLib.geometry import Region
from UltrasoundRefineLib.loop import Loop
from UltrasoundRefineLib.metrics import iou
from UltrasoundRefineLib.regions import mm_per_row


#: IoU at which the fitted shape replaces the mask it was fitted to; below it the shape is likely the
#: wrong one. fit_shape's default (suggest.py's 0.97 for the evidence hulls is the same value); a trained
#: network's masks have their own, train/model.SHAPE_MIN_AGREEMENT.
MIN_AGREEMENT = 0.97

# fit_shape: a predicted mask is clean evidence
FIT_MIN_FRAC = 0.02  # components smaller than this share of the image are specks, not regions
FIT_GAP_PX = 0  # no extending the components down: a clean mask has no dark far field to bridge
FIT_PENALTY_PX = 15.0  # criterion penalty per shape parameter, in disagreeing pixels
SEEN_PART_MIN = 0.01  # visible parts of a mask smaller than this share of the largest are specks


@dataclass
class ShapeFit:
    """The result of :func:`fit_shape`.

    mask: bool ``(H, W)``: the fitted shape's mask when ``used``, else the input mask (clipped to the
        loop's region boxes when it has any).
    regions: the fitted geometry (one region, two for a dual view; empty when nothing could be fitted),
        completed to the region boxes where the image had faded.
    model: the fitted model's name (``sector_pointed``, ``rectangle``, ``dual:...``; ``none``).
    agreement: IoU of the fitted shape with the input mask (0 when nothing was fitted); with a loop,
        over the pixels where the image shows something (see :func:`fit_shape`).
    used: whether the fitted shape replaced the input (``agreement >= min_agreement``).
    box: what the region boxes did (``box_clip``, ``box_completed``; empty without boxes) and the depth
        scale beside the region, where the screen shows one (``depth_scale``, :mod:`..depthscale`).
    fitted_to: what the shape was fitted to: ``"visible"`` (the part of the mask the image shows) or
        ``"mask"`` (all of it); see :func:`fit_shape`.
    """

    mask: np.ndarray
    regions: list[Region]
    model: str
    agreement: float
    used: bool
    box: dict = field(default_factory=dict)
    fitted_to: str = "mask"


def fit_shape(mask: np.ndarray, *, loop: Loop | None = None, min_agreement: float = MIN_AGREEMENT,
              seed: int = 0) -> ShapeFit:
    """Shape-constrained refinement of a predicted region mask (e.g. a network's, upsampled from a
    low resolution): fit the geometric model to the mask as clean evidence and, where the fitted
    shape agrees with the mask (IoU >= ``min_agreement``), return the exact shape instead of the
    blurry mask.

    The mask takes the place of the evidence (no motion or texture step); candidates and model
    selection are those of :func:`suggest_fanfit`. ``loop``, when given, lends two things:

    - its DICOM region boxes (:mod:`.boxfit`): the mask is clipped to them, and the fitted shape is
      completed to them on a side where the image has faded to black before the box (and, boxes or
      not, down to the screen's depth scale where the far field is black: :mod:`..depthscale`);
    - its image. Where the image is black (temporal maximum below :data:`.boxfit.DARK_RATIO` of the
      mask's mean) the mask is a guess: a network cannot see an edge there, and one fine-tuned on a
      few masks with dark deep fields guesses a region reaching into the black beyond a bright edge.
      So where the loop has region boxes, the shape is first fitted to the part of the mask the image
      shows (holes filled), and only the boxes decide how far it goes into the black; when that fit
      does not agree, or without boxes (then the mask's guess is the only word on the black), the
      whole mask is fitted. The agreement is measured only where the image shows something (when
      most of the mask is black, a blank or synthetic loop, over all pixels). Measured on the phantom
      demo's 50 test loops with its five fine-tuned models: the visible part first 0.985 mean Dice
      (0.981 without the dark edge bands of :func:`_seen_part`), the whole mask only 0.976, the fit
      with the better agreement of the two 0.976.

    Deterministic for a given ``seed``."""
    from UltrasoundRefineLib.automask.boxfit import clip_to_boxes, tight_boxes

    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"fit_shape needs a 2-D (H, W) mask, got shape {m.shape}")
    m = m.astype(bool)
    shape = m.shape
    if loop is not None and tuple(loop.shape) != shape:
        raise ValueError(f"mask shape {shape} does not match the loop's {tuple(loop.shape)}")
    m, box_info = clip_to_boxes(m, loop)
    if box_info.get("box_clip") == "used":
        m = ndi.binary_fill_holes(m)
    unchanged = ShapeFit(m.copy(), [], "none", 0.0, False, box_info)
    if m.sum() < 64:
        return unchanged
    visible = _visible(m, loop)
    # only where boxes that bound the region closely can carry the shape into the black: without them,
    # the mask's guess is all there is
    seen = _seen_part(m, visible) if tight_boxes(m, loop) else None
    fit = None
    if seen is not None:
        fit = _fit_mask(seen, m, visible, loop, seed, box_info)
        if fit is not None and fit.agreement < min_agreement:
            fit = None
        elif fit is not None:
            fit.fitted_to = "visible"
    if fit is None:
        fit = _fit_mask(m, m, visible, loop, seed, box_info)
    if fit is None:
        return unchanged
    fit.used = fit.agreement >= min_agreement
    if not fit.used:
        fit.mask = m.copy()
    return fit


def _visible(m: np.ndarray, loop: Loop | None) -> np.ndarray | None:
    """Where the loop's image shows something (temporal maximum above DARK_RATIO of the mask's mean);
    None without a loop, or when the mask is mostly black (a blank or synthetic loop: no image to go by)."""
    from UltrasoundRefineLib.automask.boxfit import DARK_RATIO

    if loop is None:
        return None
    image = loop.grey().max(axis=0)
    visible = image > DARK_RATIO * float(image[m].mean())
    if np.count_nonzero(visible & m) < 0.5 * np.count_nonzero(m):
        return None
    return visible


def _seen_part(m: np.ndarray, visible: np.ndarray | None) -> np.ndarray | None:
    """The mask where the image shows something, holes (dark cysts, vessels) filled, specks dropped;
    None when that is the whole mask anyway."""
    if visible is None:
        return None
    seen = ndi.binary_fill_holes(m & visible)
    if seen.sum() < 64:
        return None
    labels, n = ndi.label(seen)
    if n > 1:
        sizes = np.bincount(labels.ravel())[1:]
        # a small visible part is no speck when it is the probe face's ring-down above a black near
        # field: it says where the region starts, and the hull below carries the dark band back in
        seen = np.isin(labels, np.flatnonzero(sizes >= SEEN_PART_MIN * sizes.max()) + 1)
    # a dark band along an edge (a shadow, a faded side) is open to the outside, so no hole: where the
    # mask covers it and it lies within the visible part's convex hull, it is the region's
    seen |= m & convex_hull(seen)
    seen = ndi.binary_fill_holes(seen)
    if np.array_equal(seen, m):
        return None
    return seen


def _fit_mask(target_mask: np.ndarray, m: np.ndarray, visible: np.ndarray | None, loop: Loop | None, seed: int,
              box_info: dict) -> ShapeFit | None:
    """Fit the shape to ``target_mask``, complete it to the boxes, and measure its agreement with ``m``
    (over the visible pixels when there are any)."""
    from UltrasoundRefineLib.automask.boxfit import region_boxes
    from UltrasoundRefineLib.automask.fanfit.complete import complete_shape

    shape = m.shape
    prior = _box_prior(loop, shape) if loop is not None else None
    ev = target_mask.astype(np.float32)
    # the mask is already clean: no density window and no opening, only the large components
    _, comps = _components(ev, prior, density_win=1, min_frac=FIT_MIN_FRAC, open_iter=0)
    if not comps:
        return None
    best = _select(ev, comps, prior, np.random.default_rng(seed), gap_px=FIT_GAP_PX, penalty_px=FIT_PENALTY_PX)
    if best is None:
        return None
    fits, _, _, target = best
    raster = _Raster(shape)
    regions = _refine([f[1] for f in fits], target, raster)
    completed = {}
    if loop is not None:
        image = loop.grey().max(axis=0)  # the brightest each pixel gets over the loop
        regions, completed = complete_shape(regions, image, region_boxes(loop), background_level(image)[0],
                                            mm_per_row(loop))
    fitted = raster.union(regions)
    a, b = (fitted & visible, m & visible) if visible is not None else (fitted, m)
    # neither in sight (both in the dark) is no evidence that the shape is right: it is not used
    agreement = iou(a, b) if (a | b).any() else 0.0
    return ShapeFit(fitted, regions, _model_name(fits), agreement, False, {**box_info, **completed})
