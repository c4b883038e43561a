"""What real scans add that the tidy phantom lacks, applied to a rendered loop (``realism=True``).

Seen on real exports from many scanners (``../shared/devset``) and absent from the base phantom:

- **A probe held in air**: the whole fan is the scanner's noise floor, a grey level or a few above a
  background of exact zero, with sparse faint speckle and the bright ring-down bands of the probe
  face at its top; only those bands and the floor tell where the fan is.
- **A black far field** (fluid, low gain, deep field) reaching the region's edge, down to exact zero.
- **Lossy compression** (JPEG, video): ringing of a few grey levels around text and edges, on a
  background that was exact zero.
- **Region boxes** that are absent (PNG, video, many DICOM) or cover the whole screen.

Each is drawn with its own probability from a generator of its own, so the base phantom (and every
figure measured on it) is the same with ``realism`` off. The truth never changes: the region is
geometric, black parts included.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

P_AIR = 0.25
P_DARK_FAR_FIELD = 0.3
P_LOSSY = 0.35
P_NO_BOXES = 0.3
P_SCREEN_BOX = 0.2


def realism_rng(seed: int) -> np.random.Generator:
    """A generator independent of the base phantom's draws."""
    return np.random.default_rng([int(seed), 0x5EA1])


def _air(rng, frames: np.ndarray, truth: np.ndarray, keep: np.ndarray) -> None:
    """The fan as its noise floor, faint sparse speckle and ring-down bands under the probe face."""
    t = frames.shape[0]
    floor = int(rng.integers(1, 4))
    rows = np.arange(truth.shape[0])[:, None]
    top = np.where(truth.any(axis=0), truth.argmax(axis=0), truth.shape[0])[None, :]
    depth = rows - top
    band_rows = int(rng.integers(6, 14))
    face = top <= np.nonzero(truth.any(axis=1))[0][0] + band_rows  # under the probe face, not along the sides
    bands = truth & face & (depth >= 0) & (depth < band_rows) & ((depth // 2) % 2 == 0)
    paint = truth & ~keep
    for k in range(t):
        level = np.full(truth.shape, floor, np.int32)
        dots = rng.random(truth.shape) < rng.uniform(0.01, 0.05)
        level[dots] += rng.integers(1, 14, int(dots.sum()))
        level[bands] = rng.integers(120, 230)
        img = np.clip(level, 0, 255).astype(np.uint8)
        if frames.ndim == 4:
            frames[k][paint] = img[paint][:, None]
        else:
            frames[k][paint] = img[paint]


def _dark_far_field(rng, frames: np.ndarray, truth: np.ndarray, keep: np.ndarray) -> None:
    """The deepest part of the region fades to exact black."""
    rows = np.nonzero(truth.any(axis=1))[0]
    start = rows[0] + rng.uniform(0.45, 0.75) * (rows[-1] - rows[0])
    end = start + rng.uniform(0.05, 0.2) * (rows[-1] - rows[0])
    y = np.arange(truth.shape[0], dtype=np.float32)
    gain = np.clip((end - y) / max(end - start, 1.0), 0.0, 1.0)[:, None] * np.ones(truth.shape[1], np.float32)
    gain = np.where(truth & ~keep, gain, 1.0)
    if frames.ndim == 4:
        gain = gain[..., None]
    frames[:] = np.rint(frames * gain).astype(np.uint8)


def _lossy(rng, frames: np.ndarray) -> None:
    quality = int(rng.integers(35, 85))
    for k in range(frames.shape[0]):
        buf = io.BytesIO()
        Image.fromarray(frames[k]).save(buf, format="JPEG", quality=quality)
        frames[k] = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB" if frames.ndim == 4 else "L"))


def apply_realism(seed: int, frames: np.ndarray, truth: np.ndarray, keep: np.ndarray, us_regions: list[dict]):
    """Real-scan effects on ``frames`` (changed in place); returns the region boxes the loop carries
    and what was applied. ``keep``: pixels drawn over the region (calipers, markers) that stay."""
    rng = realism_rng(seed)
    applied = []
    if rng.random() < P_AIR:
        _air(rng, frames, truth, keep)
        applied.append("air")
    elif rng.random() < P_DARK_FAR_FIELD:
        _dark_far_field(rng, frames, truth, keep)
        applied.append("dark_far_field")
    if rng.random() < P_LOSSY:
        _lossy(rng, frames)
        applied.append("lossy")
    draw = rng.random()
    if draw < P_NO_BOXES:
        us_regions = []
        applied.append("no_boxes")
    elif draw < P_NO_BOXES + P_SCREEN_BOX and us_regions:
        h, w = truth.shape
        us_regions = [{**us_regions[0], "x0": 0, "y0": 0, "x1": w - 1, "y1": h - 1}]
        applied.append("screen_box")
    return us_regions, applied
