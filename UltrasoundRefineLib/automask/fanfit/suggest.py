"""Step 1: ``suggest_fanfit``, the scanner's region from the evidence a loop offers."""

from __future__ import annotations

import time

import numpy as np

from UltrasoundRefineLib.automask import MaskSuggestion
from UltrasoundRefineLib.automask import evidence
from UltrasoundRefineLib.automask.evidence import convex_hull
from UltrasoundRefineLib.automask.fanfit.shapefit import fit_shape
from UltrasoundRefineLib.loop import Loop

METHOD = "fanfit"
# choosing among the readings of the evidence
SPARSE_FALLBACK = 0.5  # sparse speckle is read only when no other reading agreed this well with a shape
SCORE_TIE = 0.02  # readings whose shapes agree within this of the best are as good as it ...
LARGER = 1.2  # ... and one at least this much larger than the best found a part the best missed
UNFITTED = 0.8  # quality factor of a view whose hull no scanner shape fits


def suggest_fanfit(loop: Loop, *, max_frames: int = 64, min_agreement: float = 0.97, seed: int = 0) -> MaskSuggestion:
    """The scanner's image region (sector, flat-top sector, curvilinear fan, rectangle, dual view, an
    M-mode strip with its reference sector), from the evidence real scans offer (:mod:`.evidence`).

    Per area (each image region box, or the whole frame without boxes), for each candidate reading
    of the evidence (:func:`.evidence.candidates`): the views side by side, each one's convex hull
    (the dark parts of the region along its edge come back), the geometric shape fitted to that hull
    (:func:`fit_shape`) where the two agree, else the hull. The reading whose shape agrees best with
    its hull wins, unless one that agrees about as well finds much more (the region is all the scanner
    draws: a reading that finds less has lost a dark part of it).

    Quality: the winner's agreement, lowered where the evidence fills little of its hull (a region
    with much black inside is a guess there) and, for the whole mask, for implausible sizes.
    """
    t0 = time.perf_counter()
    ev = evidence.gather(loop, max_frames=max_frames)
    mask = np.zeros(loop.shape, bool)
    parts, scores = [], []
    for area in ev.areas:
        tried = []
        for reading, found in evidence.candidates(ev, area):
            if reading.get("sparse") and tried and max(t[0] for t in tried) >= SPARSE_FALLBACK:
                break  # sparse speckle is the last resort, for a region nothing else found
            fitted = [_fit_part(part, min_agreement, seed) for part in evidence.side_by_side_parts(found)]
            size = sum(int(np.count_nonzero(f[0])) for f in fitted)
            tried.append((min(f[2] for f in fitted), size, reading, fitted))
        if not tried:
            continue
        # a few per cent more is compression noise along the edge, not a missed part
        best = max(tried, key=lambda t: t[0])
        larger = [t for t in tried if t[0] >= best[0] - SCORE_TIE and t[1] >= LARGER * best[1]]
        _, _, reading, fitted = max(larger, key=lambda t: t[1]) if larger else best
        scores.append(min(f[3] for f in fitted))
        for part_mask, info, _, _ in fitted:
            mask |= part_mask
            parts.append({**info, "reading": reading})
    frac = float(mask.mean())
    details = {"evidence": ev.info, "box_prior": not ev.areas[0].all() or len(ev.areas) > 1, "parts": parts,
               "fraction": round(frac, 4), "model": "+".join(p["model"] for p in parts) or "none",
               "regions": [r for p in parts for r in p["regions"]]}
    details["seconds"] = round(time.perf_counter() - t0, 4)
    if not parts:
        return MaskSuggestion(mask, 0.0, METHOD, details)
    plausible = 1.0 if 0.05 < frac < 0.9 else 0.5
    return MaskSuggestion(mask, float(np.clip(min(scores) * plausible, 0.0, 1.0)), METHOD, details)


def _fit_part(found: np.ndarray, min_agreement: float, seed: int) -> tuple[np.ndarray, dict, float, float]:
    """One view's mask (the fitted shape, or the hull where no shape agrees), what was fitted, the
    shape's agreement with the hull (a hull no scanner shape fits is wrong somewhere) and the view's
    quality: that agreement, lowered where the evidence fills little of the hull (a guess across
    much black) and where no shape was fitted."""
    hull = convex_hull(found)
    fit = fit_shape(hull, min_agreement=min_agreement, seed=seed)
    fill = float(np.count_nonzero(found) / max(np.count_nonzero(hull), 1))
    info = {"model": fit.model if fit.used else "hull", "agreement": round(fit.agreement, 4),
            "regions": [r.to_dict() for r in fit.regions] if fit.used else [], "fill": round(fill, 4)}
    # a hull that no scanner shape fits is less to be trusted than a fitted shape
    quality = fit.agreement * (0.6 + 0.4 * fill) * (1.0 if fit.used else UNFITTED)
    return (fit.mask if fit.used else hull), info, fit.agreement, quality
