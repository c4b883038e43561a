"""Step 1: ``suggest_fanfit``, the scanner's region from the evidence a loop offers; and
``match_evidence``, the evidence's region that a given mask (a network's) points to."""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, replace

import numpy as np

from UltrasoundRefineLib.automask import MaskSuggestion
from UltrasoundRefineLib.automask import evidence
from UltrasoundRefineLib.automask.evidence import convex_hull
from UltrasoundRefineLib.automask.fanfit.complete import changed, complete_shape, grew
from UltrasoundRefineLib.automask.fanfit.shapefit import MIN_AGREEMENT, fit_shape
from UltrasoundRefineLib.geometry import Rectangle, Sector, regions_mask
from UltrasoundRefineLib.loop import Loop
from UltrasoundRefineLib.metrics import iou

METHOD = "fanfit"
# choosing among the readings of the evidence
SPARSE_FALLBACK = 0.5  # sparse speckle is read only when no other reading agreed this well with a shape
SCORE_TIE = 0.02  # readings whose shapes agree within this of the best are as good as it ...
LARGER = 1.2  # ... and one at least this much larger than the best found a part the best missed
UNFITTED = 0.8  # quality factor of a view whose hull no scanner shape fits
HOLDS_HULL = 0.99  # a completed shape holds all of a hull no shape fitted, but for its ragged edge
MATCH_TIE = 0.05  # readings within this IoU of the one closest to a given mask are as close to it


@dataclass
class Reading:
    """One reading of one area's evidence (:func:`.evidence.candidates`), its views fitted.

    label: how the evidence was read (margin and static reading, or sparse); views: per view side by
    side, ``(mask, info, agreement, quality)`` from :func:`_fit_part`."""

    label: dict
    views: list[tuple[np.ndarray, dict, float, float]]

    @property
    def agreement(self) -> float:
        """The worst view's agreement of its shape with its hull."""
        return min(v[2] for v in self.views)

    @property
    def quality(self) -> float:
        """The views' qualities weighted by their size: how right the whole mask is, to which a small
        reference sector beside a strip contributes little."""
        sizes = [max(1, int(np.count_nonzero(v[0]))) for v in self.views]
        return float(np.average([v[3] for v in self.views], weights=sizes))

    @property
    def size(self) -> int:
        return sum(int(np.count_nonzero(v[0])) for v in self.views)

    @property
    def mask(self) -> np.ndarray:
        return np.logical_or.reduce([v[0] for v in self.views])


def area_readings(ev: evidence.Evidence, area: np.ndarray, *, strip=None, min_agreement: float = MIN_AGREEMENT,
                  seed: int = 0) -> list[Reading]:
    """Every reading of one area's evidence worth fitting, fitted (sparse speckle only where no other
    reading agreed well with a shape: it is the last resort). An M-mode or spectral strip's region is
    its box ``strip`` (:attr:`.UltrasoundRegion.is_strip`): its one reading, where it shows any data."""
    if strip is not None:
        return _strip_reading(ev, area, strip)
    readings: list[Reading] = []
    for label, found in evidence.candidates(ev, area):
        if label.get("sparse") and readings and max(r.agreement for r in readings) >= SPARSE_FALLBACK:
            break
        views = [_fit_part(part, ev, min_agreement, seed) for part in evidence.side_by_side_parts(found)]
        readings.append(Reading(label, views))
    return readings


def choose_reading(readings: list[Reading]) -> Reading:
    """The reading whose shapes agree best with their hulls, unless one that agrees about as well finds
    much more (the region is all the scanner draws: a reading that finds less has lost a dark part of
    it; a few per cent more is compression noise along the edge, not a missed part)."""
    best = max(readings, key=lambda r: r.agreement)
    larger = [r for r in readings if r.agreement >= best.agreement - SCORE_TIE and r.size >= LARGER * best.size]
    return max(larger, key=lambda r: r.size) if larger else best


def suggest_fanfit(loop: Loop, *, max_frames: int = 64, min_agreement: float = MIN_AGREEMENT, seed: int = 0) -> MaskSuggestion:
    """The scanner's image region (sector, flat-top sector, curvilinear fan, rectangle, dual view, an
    M-mode strip with its reference sector), from the evidence real scans offer (:mod:`.evidence`).

    Per area (each image region box, or the whole frame without boxes), for each candidate reading
    of the evidence (:func:`area_readings`): the views side by side, each one's convex hull (the dark
    parts of the region along its edge come back), the geometric shape fitted to that hull
    (:func:`fit_shape`) where the two agree, else the hull; then :func:`choose_reading`.

    Quality: the winner's agreement, lowered where the evidence fills little of its hull (a region
    with much black inside is a guess there), times how much the other readings agree with it (where
    the ways of reading the evidence disagree on the region, choosing among them is a guess); views and
    areas weighted by their size (a small reference sector beside a strip is a small part of the mask's
    worth) and, for the whole mask, lowered for implausible sizes.
    """
    t0 = time.perf_counter()
    ev = evidence.gather(loop, max_frames=max_frames)
    mask = np.zeros(loop.shape, bool)
    parts, scores = [], []
    for area, strip in zip(ev.areas, ev.strips):
        readings = area_readings(ev, area, strip=strip, min_agreement=min_agreement, seed=seed)
        if not readings:
            continue
        chosen = choose_reading(readings)
        others = [iou(r.mask, chosen.mask) for r in readings if r is not chosen]
        consensus = float(np.mean(others)) if others else 1.0
        scores.append((chosen.quality * consensus, chosen.size))
        mask |= chosen.mask
        parts += [{**info, "reading": chosen.label, "consensus": round(consensus, 4)} for _, info, _, _ in chosen.views]
    frac = float(mask.mean())
    details = {"evidence": ev.info, "box_prior": not ev.areas[0].all() or len(ev.areas) > 1, "parts": parts,
               "fraction": round(frac, 4), "model": "+".join(p["model"] for p in parts) or "none",
               "regions": [r for p in parts for r in p["regions"]]}
    details["seconds"] = round(time.perf_counter() - t0, 4)
    if not parts:
        return MaskSuggestion(mask, 0.0, METHOD, details)
    plausible = 1.0 if 0.05 < frac < 0.9 else 0.5
    quality = float(np.average([q for q, _ in scores], weights=[max(1, n) for _, n in scores]))
    return MaskSuggestion(mask, float(np.clip(quality * plausible, 0.0, 1.0)), METHOD, details)


def match_evidence(mask: np.ndarray, loop: Loop, *, max_frames: int = 64, min_agreement: float = MIN_AGREEMENT,
                   seed: int = 0) -> tuple[np.ndarray, float, dict]:
    """The loop's own evidence of its region, read the way ``mask`` points to: per area, among the
    fitted readings (:func:`area_readings`) that agree best with the mask there (within MATCH_TIE),
    the one :func:`choose_reading` prefers.

    A network trained on a few masks knows which part of a screen is the region, but draws its edges
    at its low input resolution and guesses across black; the evidence has the exact edges but may be
    read several ways (a header band, a faint far field). Returns ``(matched mask, its IoU with
    mask, details)``; the caller decides whether that agreement is enough to prefer it. The readings
    are kept while the loop lives: every model evaluated on a loop reuses them."""
    mask = np.asarray(mask, bool)
    matched = np.zeros(loop.shape, bool)
    labels = []
    for area, readings in _loop_readings(loop, max_frames, min_agreement, seed):
        target = mask & area
        if not target.any() or not readings:
            continue
        agree = [iou(r.mask & area, target) for r in readings]
        # among the readings the mask points to about equally, the evidence's own rule decides
        close = [r for r, v in zip(readings, agree) if v >= max(agree) - MATCH_TIE]
        best = choose_reading(close)
        matched |= best.mask & area
        labels.append(best.label)
    agreement = iou(matched, mask) if mask.any() else 0.0
    return matched, agreement, {"evidence_readings": labels, "evidence_agreement": round(agreement, 4)}


_READINGS: dict[tuple, list] = {}


def _loop_readings(loop: Loop, max_frames: int, min_agreement: float, seed: int) -> list:
    """``[(area, readings)]`` of a loop, computed once per loop object and parameters (dropped with
    the loop)."""
    key = (id(loop), max_frames, min_agreement, seed)
    if key not in _READINGS:
        ev = evidence.gather(loop, max_frames=max_frames)
        _READINGS[key] = [(area, area_readings(ev, area, strip=strip, min_agreement=min_agreement, seed=seed))
                          for area, strip in zip(ev.areas, ev.strips)]
        weakref.finalize(loop, _READINGS.pop, key, None)
    return _READINGS[key]


def _strip_reading(ev: evidence.Evidence, area: np.ndarray, strip: tuple[int, int, int, int]) -> list[Reading]:
    """An M-mode or spectral strip: its box, where the evidence shows data in it (a declared strip
    with nothing drawn is no region). Its edges are the scanner's own, not fitted; its quality says
    how much of the box shows data (a strip still being swept is dark where the sweep has not been)."""
    box = Rectangle(*(float(v) for v in strip))
    mask = box.mask(area.shape)
    shown = ev.signal & mask
    if np.count_nonzero(shown) < evidence.MIN_AREA_FRAC * np.count_nonzero(mask):
        return []
    fill = float(np.count_nonzero(shown) / np.count_nonzero(mask))
    info = {"model": "strip", "agreement": 1.0, "regions": [box.to_dict()],
            "fill": round(fill, 4)}
    return [Reading({"strip": True}, [(mask, info, 1.0, 0.6 + 0.4 * fill)])]


def _opening_upwards(hull: np.ndarray, fit, min_agreement: float, seed: int):
    """``fit``, or where the hull turned upside down fits a shape (a fan that opens upwards: an
    endocavity probe shown apex down) and agrees better, that shape turned back."""
    turned = fit_shape(hull[::-1], min_agreement=min_agreement, seed=seed)
    if not turned.used or turned.agreement <= fit.agreement:
        return fit
    if not all(isinstance(r, Sector) for r in turned.regions):
        return fit  # a rectangle is the same either way up: it was not what the hull missed
    regions = [r.upside_down(hull.shape[0]) for r in turned.regions]
    return replace(turned, mask=turned.mask[::-1].copy(), regions=regions, model=turned.model + "_up")


def _fit_part(found: np.ndarray, ev: evidence.Evidence, min_agreement: float, seed: int) -> tuple[np.ndarray, dict, float, float]:
    """One view's mask (the fitted shape, completed to its region box and deepened to the screen's
    depth scale where its edge fades to black, or the hull where no shape agrees), what was fitted, the shape's agreement with the
    hull (a hull no scanner shape fits is wrong somewhere) and the view's quality: that agreement,
    lowered where the evidence fills little of the hull (a guess across much black) and where no
    shape was fitted."""
    hull = convex_hull(found)
    fit = fit_shape(hull, min_agreement=min_agreement, seed=seed)
    if not fit.used:
        fit = _opening_upwards(hull, fit, min_agreement, seed)
    used, agreement, mask, completed = fit.used, fit.agreement, (fit.mask if fit.used else hull), {}
    regions = fit.regions
    if regions:
        regions, completed = complete_shape(regions, ev.brightest, ev.boxes, ev.background, ev.mm_per_row)
        if changed(completed):
            completed_mask = regions_mask(regions, hull.shape)
            # a curved top takes off the cap that the convex hull fills in by construction
            held = hull & ~(regions_mask(fit.regions, hull.shape) & ~completed_mask)
            inside = float(np.count_nonzero(completed_mask & held) / max(np.count_nonzero(held), 1))
            # a hull that fades out into black, or is missing a side, fits no shape; one that symmetry,
            # the region box or the depth scale completes to where the scanner images does, when it
            # holds all of the hull
            if used or (grew(completed) and inside >= HOLDS_HULL):
                mask, used = completed_mask, True
                if grew(completed):
                    agreement = max(agreement, inside)
    # the fill of the evidence's own hull: what the box or the scale completed is read off the screen,
    # not guessed across black
    fill = float(np.count_nonzero(found) / max(np.count_nonzero(hull), 1))
    info = {"model": fit.model if used else "hull", "agreement": round(agreement, 4),
            "regions": [r.to_dict() for r in regions] if used else [], "fill": round(fill, 4), **completed}
    # a hull that no scanner shape fits is less to be trusted than a fitted shape
    quality = agreement * (0.6 + 0.4 * fill) * (1.0 if used else UNFITTED)
    return mask, info, agreement, quality
