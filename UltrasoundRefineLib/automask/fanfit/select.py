"""Model selection: the candidate with the fewest disagreeing pixels plus a penalty per parameter."""

from __future__ import annotations

import numpy as np

from UltrasoundRefineLib.automask.fanfit.candidates import (
    _below_zone,
    _box_tuple,
    _extend_down,
    _fit_one,
    _side_by_side,
    _split_dual,
)
from UltrasoundRefineLib.automask.fanfit.raster import _Raster


ZONE_GAIN = 0.3


def _select(ev: np.ndarray, comps: list[np.ndarray], prior: np.ndarray | None, rng, *, gap_px: int, penalty_px: float):
    """Fit one region per part for every hypothesis (one region, dual view side by side, two parts of
    one region, one part split at a valley) and keep the one with the least criterion.

    Returns ``(fits, mask, err, target)`` (``fits``: ``(name, region, info, crit)`` per region; ``mask``:
    the chosen regions' union; ``target``: the evidence it was scored against; ``err``: disagreeing
    pixels) or None when no hypothesis gave a shape."""
    shape = ev.shape
    raster = _Raster(shape)
    # hypotheses: one region from the largest component; two regions (dual view) from two components
    # or from one component split at a valley
    raw = ev > 0
    if prior is not None:
        raw &= prior
    ext = (lambda c: _extend_down(c, raw, gap=gap_px)) if gap_px > 0 else (lambda c: c)  # noqa: E731
    parts0 = ext(comps[0])
    hyps: list[list[np.ndarray]] = [[parts0]]
    # every hypothesis is scored against the same target: all components, their columns filled
    target = parts0.copy()
    for c in comps[1:]:
        target |= ext(c)
    if len(comps) >= 2:
        if _side_by_side(comps[0], comps[1]):
            hyps.append([parts0, ext(comps[1])])
        else:  # one above the other: a dark pool across the whole fan cut it in two
            joined = ext(comps[0] | comps[1])
            target |= joined
            hyps.append([joined])
    split = _split_dual(comps[0], ev)
    if split is not None:
        hyps.append([ext(p) for p in split])

    # gain of covering a pixel: +1 evidence, -1 none, a little for the dark deep field inside the box
    gain = np.where(target, 1.0, -1.0).astype(np.float32)
    if prior is not None:
        for c in comps:
            zone = _below_zone(ext(c), _box_tuple(prior, c), raw)
            if zone is not None:
                gain[zone & ~target] = ZONE_GAIN
    pos_total = float(np.clip(gain, 0, None).sum())
    best = None
    done: dict[int, tuple | None] = {}  # a part in several hypotheses (the largest component) is fitted once
    for parts in hyps:
        for p in parts:
            if id(p) not in done:
                done[id(p)] = _fit_one(p, gain, raw, rng, prior, penalty_px, raster)
        fits = [done[id(p)] for p in parts]
        if any(f is None for f in fits):
            continue
        regions = [f[1] for f in fits]
        m = raster.union(regions)
        score = float(gain[m].sum())
        err = int(np.count_nonzero(m ^ target))
        n_par = sum(f[2]["n_params"] for f in fits)
        crit = pos_total - score + penalty_px * n_par
        if best is None or crit < best[0]:
            best = (crit, fits, m, err, target)
    return None if best is None else best[1:]


def _model_name(fits) -> str:
    names = [f[0] for f in fits]
    return names[0] if len(fits) == 1 else "dual:" + "+".join(names)

