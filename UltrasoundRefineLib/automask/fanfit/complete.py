"""Completing a fitted shape where its edge fades to black, from what the screen says beside it.

Two sources, in this order: the depth scale (:mod:`..depthscale`) speaks for the depth, so where the
screen shows one the region box is used only for the sides; elsewhere the region box
(:mod:`..boxfit`) completes the bottom too. A box is a rectangle around the region, often loose at the
bottom (drawn to the screen's edge, or to the deepest depth the probe could image), while a scale ends
where the scanner stops imaging.
"""

from __future__ import annotations

import numpy as np

from UltrasoundRefineLib.automask.boxfit import complete_to_given_boxes
from UltrasoundRefineLib.automask.depthscale import complete_to_depth_scale
from UltrasoundRefineLib.geometry import Region


def complete_shape(regions: list[Region], image: np.ndarray, boxes, background: float) -> tuple[list[Region], dict]:
    """``regions`` completed to the depth scale, then to the region ``boxes`` (on the sides only where a
    scale was found), on the brightest-over-the-loop ``image``. Returns ``(regions, info)`` with what was
    done (``depth_scale``, ``box_completed``); :func:`grew` says whether anything was."""
    regions, info = complete_to_depth_scale(regions, image, background)
    sides = ("left", "right") if info.get("depth_scale") else ("bottom", "left", "right")
    regions, boxed = complete_to_given_boxes(regions, image, boxes, sides=sides)
    return regions, {**boxed, **info}


def grew(info: dict) -> bool:
    """Whether :func:`complete_shape` extended any region."""
    return bool(info.get("box_completed")) or any(s["extended"] for s in info.get("depth_scale", []))
