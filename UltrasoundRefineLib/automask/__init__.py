"""Step 1 of the method: a mask suggestion for every loop, cheaply, each with a quality score.

Every method is a function ``(loop, **params) -> MaskSuggestion`` registered in :data:`METHODS`.
The quality score in [0, 1] should fall as the mask gets worse, so the review can put the likely
wrong suggestions first.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import numpy as np

from UltrasoundRefineLib.loop import Loop


@dataclass
class MaskSuggestion:
    """mask: bool ``(H, W)`` on the loop's grid; quality in [0, 1]; details: JSON-able extras
    (fitted geometry, thresholds used) that never identify a patient."""

    mask: np.ndarray
    quality: float
    method: str
    details: dict = field(default_factory=dict)


# name -> "module:function"; imported lazily so a method's heavy imports cost nothing until used.
METHODS = {
    "threshold": "UltrasoundRefineLib.automask.threshold:suggest_threshold",
    "fanfit": "UltrasoundRefineLib.automask.fanfit:suggest_fanfit",
}


def suggest_mask(loop: Loop, method: str = "threshold", **params) -> MaskSuggestion:
    """Run one auto-mask method on a loop."""
    if method not in METHODS:
        raise ValueError(f"unknown auto-mask method {method!r}; choose from {sorted(METHODS)}")
    module_name, func_name = METHODS[method].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    suggestion = func(loop, **params)
    if suggestion.mask.shape != loop.shape:
        raise AssertionError(f"{method} returned a mask of shape {suggestion.mask.shape} for {loop.shape}")
    suggestion.quality = float(np.clip(suggestion.quality, 0.0, 1.0))
    return suggestion
