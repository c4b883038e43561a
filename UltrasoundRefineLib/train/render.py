"""A loop as the network sees it, and the network's answer back on the loop's own pixel grid.

A loop of any shape and length becomes a fixed ``(C, S, S)`` float32 image: a few per-pixel summaries
over time (the channels), scaled so the longest side is ``S`` (aspect ratio kept, MONAI ``Resize`` with
``size_mode="longest"``) and padded symmetrically to a square (MONAI ``SpatialPad``). The
:class:`Geometry` records the scale and padding so a prediction can be cropped and resized back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from monai.transforms import Resize, SpatialPad

from UltrasoundRefineLib.loop import Loop

# Each channel: per-pixel summary over the loop's frames, scaled to about [0, 1].
CHANNELS = {
    "max": "temporal maximum of luminance / 255 (the fan lights up somewhere over a cycle)",
    "mean": "temporal mean of luminance / 255",
    "std": "temporal standard deviation of luminance / 64 (image content moves, burned-in text does not)",
    "frame": "the middle frame's luminance / 255",
    "first": "the first frame's luminance / 255",
    "colour": "temporal maximum of colour saturation (max(RGB) - min(RGB)) / 255; 0 for grey loops",
}

STD_SCALE = 64.0


@dataclass(frozen=True)
class Geometry:
    """Where a loop's ``(height, width)`` grid lies inside the ``size x size`` network square."""

    height: int
    width: int
    size: int
    inner_h: int
    inner_w: int
    top: int
    left: int

    @classmethod
    def for_shape(cls, shape: tuple[int, int], size: int) -> "Geometry":
        h, w = int(shape[0]), int(shape[1])
        scale = size / max(h, w)
        # Same rounding as MONAI Resize(size_mode="longest"), so the two always agree.
        ih, iw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
        return cls(h, w, size, ih, iw, (size - ih) // 2, (size - iw) // 2)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Rendered:
    """A loop rendered for the network: ``image`` float32 ``(C, S, S)``; ``key`` a content hash."""

    image: np.ndarray
    geometry: Geometry
    inputs: tuple[str, ...]
    key: str = ""


@dataclass(frozen=True)
class RenderSpec:
    size: int = 128
    inputs: tuple[str, ...] = ("max", "std", "frame")


def loop_channels(loop: Loop, inputs: tuple[str, ...]) -> np.ndarray:
    """``(C, H, W)`` float32 summaries of the loop, one per requested channel name."""
    unknown = [c for c in inputs if c not in CHANNELS]
    if unknown:
        raise ValueError(f"unknown input channel(s) {unknown}; choose from {sorted(CHANNELS)}")
    grey = loop.grey()  # (T, H, W) float32 in [0, 255]
    out = []
    for name in inputs:
        if name == "max":
            c = grey.max(axis=0) / 255.0
        elif name == "mean":
            c = grey.mean(axis=0) / 255.0
        elif name == "std":
            c = np.minimum(grey.std(axis=0) / STD_SCALE, 2.0)
        elif name == "frame":
            c = grey[grey.shape[0] // 2] / 255.0
        elif name == "first":
            c = grey[0] / 255.0
        else:  # colour
            if loop.is_rgb:
                f = loop.frames
                c = (f.max(axis=-1).astype(np.float32) - f.min(axis=-1)).max(axis=0) / 255.0
            else:
                c = np.zeros(loop.shape, np.float32)
        out.append(c.astype(np.float32, copy=False))
    return np.stack(out)


def _resize_pad(array: np.ndarray | torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """``(C, H, W)`` -> ``(C, S, S)``: area-average when shrinking, bilinear when enlarging."""
    t = torch.as_tensor(array, dtype=torch.float32)
    shrinking = geometry.inner_h <= geometry.height
    resize = Resize(spatial_size=geometry.size, size_mode="longest", mode="area" if shrinking else "bilinear")
    t = resize(t)
    if tuple(t.shape[1:]) != (geometry.inner_h, geometry.inner_w):  # pragma: no cover - guard on MONAI changes
        raise AssertionError(f"MONAI resized to {tuple(t.shape[1:])}, expected {(geometry.inner_h, geometry.inner_w)}")
    t = SpatialPad(spatial_size=(geometry.size, geometry.size), method="symmetric")(t)
    return torch.as_tensor(t).as_subclass(torch.Tensor)


def render_loop(loop: Loop, size: int = 128, inputs: tuple[str, ...] = ("max", "std", "frame")) -> Rendered:
    geometry = Geometry.for_shape(loop.shape, size)
    image = _resize_pad(loop_channels(loop, tuple(inputs)), geometry).numpy()
    key = loop.source_key or hashlib.sha256(np.ascontiguousarray(loop.frames).tobytes()).hexdigest()[:16]
    return Rendered(image=image, geometry=geometry, inputs=tuple(inputs), key=key)


def render_mask(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """``(H, W)`` bool -> ``(S, S)`` float32 soft label (edge pixels keep their covered fraction)."""
    mask = np.asarray(mask)
    if mask.shape != (geometry.height, geometry.width):
        raise ValueError(f"mask shape {mask.shape} does not match the loop's grid {(geometry.height, geometry.width)}")
    return _resize_pad(mask.astype(np.float32)[None], geometry).numpy()[0]


def unrender(prob: np.ndarray | torch.Tensor, geometry: Geometry) -> np.ndarray:
    """``(S, S)`` (or ``(C, S, S)``) network-space map -> the loop's ``(H, W)`` grid, bilinear.

    Interpolating the probability (not a thresholded mask) keeps sub-pixel edge positions, so a mask
    survives the round trip with Dice well above 0.98 even at a network size of 96.
    """
    t = torch.as_tensor(prob, dtype=torch.float32)
    squeeze = t.ndim == 2
    if squeeze:
        t = t[None]
    g = geometry
    t = t[:, g.top : g.top + g.inner_h, g.left : g.left + g.inner_w]
    t = Resize(spatial_size=(g.height, g.width), mode="bilinear", align_corners=False)(t)
    out = torch.as_tensor(t).as_subclass(torch.Tensor).numpy()
    return out[0] if squeeze else out
