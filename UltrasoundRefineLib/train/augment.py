"""Augmentation of rendered loops: MONAI dictionary transforms keyed ``"image"`` / ``"label"``.

MONAI's stock random transforms work on one sample at a time; looping over a batch in Python would
starve a GPU on a network this small. So these are MONAI ``MapTransform`` + ``RandomizableTransform``
classes that act on a whole batch ``{"image": (B, C, S, S), "label": (B, 1, S, S)}`` where it lies (on
the training device), drawing a parameter per sample from a ``torch.Generator`` seeded from MONAI's
``self.R``, so ``Compose.set_random_state(seed)`` makes a run reproducible. The geometric transform
uses MONAI's batched ``AffineTransform`` layer.

What they imitate: gain and gamma (scanner settings), speckle-like noise, a small probe/zoom shift
(affine, flip), burned-in text and calipers anywhere on screen (static, so zero temporal std), nearly
black regions inside the fan (fluid, low gain: grey levels of 0-3), and single still frames (std 0).
Labels change only under the geometric transforms.
"""

from __future__ import annotations

import math

import torch
from monai.networks.layers import AffineTransform
from monai.transforms import Compose, MapTransform, RandomizableTransform
from monai.utils import TransformBackends

INTENSITY_CHANNELS = ("max", "mean", "frame", "first")


class _BatchRandomd(RandomizableTransform, MapTransform):
    """A per-sample random transform applied to a whole batch on its own device."""

    backend = [TransformBackends.TORCH]

    def __init__(self, keys, prob: float):
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self._gen: torch.Generator | None = None
        self._gen_device: str | None = None

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self._gen = None
        return self

    def randomize(self, data=None) -> None:  # parameters are drawn per sample in __call__
        pass

    def generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if self._gen is None or self._gen_device != key:
            self._gen = torch.Generator(device=device)
            self._gen.manual_seed(int(self.R.randint(0, 2**31 - 1)))
            self._gen_device = key
        return self._gen

    def uniform(self, n: int, lo: float, hi: float, device) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, device=device, generator=self.generator(device))

    def chosen(self, n: int, device) -> torch.Tensor:
        """(n,) bool: which samples this transform changes."""
        return torch.rand(n, device=device, generator=self.generator(device)) < self.prob


def _channel_index(inputs: tuple[str, ...], names) -> list[int]:
    return [i for i, c in enumerate(inputs) if c in names]


class RandFlipBatchd(_BatchRandomd):
    """Left-right flip (mirror-image probes, dual-view layouts swapped)."""

    def __init__(self, keys=("image", "label"), prob: float = 0.5):
        super().__init__(keys, prob)

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        x = d[self.keys[0]]
        which = self.chosen(x.shape[0], x.device)[:, None, None, None]
        for k in self.key_iterator(d):
            d[k] = torch.where(which, d[k].flip(-1), d[k])
        return d


class RandAffineBatchd(_BatchRandomd):
    """Small rotation, zoom and shift; image and label resampled together (bilinear, zero padding)."""

    def __init__(
        self,
        keys=("image", "label"),
        prob: float = 0.8,
        rotate_deg: float = 8.0,
        scale: tuple[float, float] = (0.85, 1.15),
        translate: float = 0.08,
    ):
        super().__init__(keys, prob)
        self.rotate = math.radians(rotate_deg)
        self.scale = scale
        self.translate = translate
        self._warp = AffineTransform(normalized=True, reverse_indexing=False, align_corners=False, padding_mode="zeros")

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        keys = list(self.key_iterator(d))
        x = d[keys[0]]
        b, dev = x.shape[0], x.device
        which = self.chosen(b, dev).to(x.dtype)
        angle = self.uniform(b, -self.rotate, self.rotate, dev) * which
        zoom = 1.0 + (self.uniform(b, self.scale[0], self.scale[1], dev) - 1.0) * which
        shift = self.uniform(2 * b, -self.translate, self.translate, dev).view(b, 2) * 2.0 * which[:, None]
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
        )  # (B, 2, 3), pulls output pixels from the input in normalised coordinates
        sizes = [d[k].shape[1] for k in keys]
        warped = self._warp(torch.cat([d[k] for k in keys], 1), theta.to(x.dtype))
        for k, part in zip(keys, torch.split(warped, sizes, 1)):
            d[k] = part
        return d


class RandGainGammad(_BatchRandomd):
    """Scanner gain and gamma on the intensity channels."""

    def __init__(self, inputs, keys="image", prob: float = 0.6, gain=(0.7, 1.3), gamma=(0.6, 1.6)):
        super().__init__(keys, prob)
        self.idx = _channel_index(tuple(inputs), INTENSITY_CHANNELS)
        self.gain, self.gamma = gain, gamma

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        if not self.idx:
            return d
        for k in self.key_iterator(d):
            x = d[k]
            b, dev = x.shape[0], x.device
            which = self.chosen(b, dev).to(x.dtype)
            gain = (1 + (self.uniform(b, *self.gain, dev) - 1) * which)[:, None, None, None]
            gamma = (1 + (self.uniform(b, *self.gamma, dev) - 1) * which)[:, None, None, None]
            sel = x[:, self.idx]
            x = x.clone()
            x[:, self.idx] = (sel.clamp(0, 1.5) ** gamma) * gain
            d[k] = x
        return d


class RandNoiseBatchd(_BatchRandomd):
    """Gaussian noise of a random strength per sample."""

    def __init__(self, keys="image", prob: float = 0.3, std: float = 0.04):
        super().__init__(keys, prob)
        self.std = std

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for k in self.key_iterator(d):
            x = d[k]
            b, dev = x.shape[0], x.device
            sigma = self.uniform(b, 0, self.std, dev) * self.chosen(b, dev).to(x.dtype)
            noise = torch.randn(x.shape, device=dev, generator=self.generator(dev), dtype=x.dtype)
            d[k] = (x + noise * sigma[:, None, None, None]).clamp_min(0)
        return d


def _hash01(a: torch.Tensor) -> torch.Tensor:
    """A cheap deterministic pseudo-random value in [0, 1) per element (for glyph patterns)."""
    return torch.frac(torch.sin(a) * 43758.5453).abs()


class RandTextOverlayd(_BatchRandomd):
    """Burned-in text, calipers and tick marks: short rows of blocky bright glyphs anywhere on screen.

    They are static, so they are bright in the max/frame channels and have zero temporal std; the
    label does not change (text outside the region stays outside, calipers inside stay inside).
    """

    def __init__(self, inputs, keys="image", prob: float = 0.5, max_items: int = 4, height=(2, 6), length=(6, 40)):
        super().__init__(keys, prob)
        inputs = tuple(inputs)
        self.bright_idx = _channel_index(inputs, INTENSITY_CHANNELS)
        self.std_idx = _channel_index(inputs, ("std",))
        self.colour_idx = _channel_index(inputs, ("colour",))
        self.max_items, self.height, self.length = max_items, height, length

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for k in self.key_iterator(d):
            x = d[k]
            b, _, s, _ = x.shape
            dev, n = x.device, self.max_items
            scale = s / 128.0
            which = self.chosen(b, dev)
            present = (self.uniform(b * n, 0, 1, dev).view(b, n) < 0.7) & which[:, None]
            h = (self.uniform(b * n, *self.height, dev) * scale).clamp_min(1).view(b, n, 1, 1)
            w = (self.uniform(b * n, *self.length, dev) * scale).clamp_min(2).view(b, n, 1, 1)
            y0 = self.uniform(b * n, 0, 1, dev).view(b, n, 1, 1) * (s - h)
            x0 = self.uniform(b * n, 0, 1, dev).view(b, n, 1, 1) * (s - w)
            seed = self.uniform(b * n, 0, 1000, dev).view(b, n, 1, 1)
            value = self.uniform(b * n, 0.4, 1.0, dev).view(b, n, 1, 1)
            yy = torch.arange(s, device=dev, dtype=x.dtype).view(1, 1, s, 1)
            xx = torch.arange(s, device=dev, dtype=x.dtype).view(1, 1, 1, s)
            inside = (yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w) & present[:, :, None, None]
            cell_w = (h * 0.6).clamp_min(1)
            cx = torch.floor((xx - x0) / cell_w)
            cy = torch.floor((yy - y0) / (h / 3).clamp_min(1))
            on = _hash01(cx * 12.9898 + cy * 4.1414 + seed * 78.233) > 0.45
            stroke = (inside & on).to(x.dtype) * value  # (B, n, S, S)
            overlay = stroke.amax(1, keepdim=True)  # (B, 1, S, S)
            x = x.clone()
            if self.bright_idx:
                x[:, self.bright_idx] = torch.maximum(x[:, self.bright_idx], overlay)
            if self.std_idx:
                x[:, self.std_idx] = x[:, self.std_idx] * (overlay == 0)
            if self.colour_idx:
                tint = self.uniform(b, 0, 1, dev).view(b, 1, 1, 1) < 0.3
                x[:, self.colour_idx] = torch.where(tint & (overlay > 0), overlay, x[:, self.colour_idx])
            d[k] = x
        return d


class RandDarkRegiond(_BatchRandomd):
    """A nearly black blob (fluid, deep field, low gain): the region is still region without signal."""

    def __init__(self, keys="image", prob: float = 0.3, radius=(0.08, 0.3), residual=(0.0, 0.05)):
        super().__init__(keys, prob)
        self.radius, self.residual = radius, residual

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for k in self.key_iterator(d):
            x = d[k]
            b, _, s, _ = x.shape
            dev = x.device
            which = self.chosen(b, dev).view(b, 1, 1, 1)
            cy, cx = (self.uniform(b, 0.2, 0.9, dev).view(b, 1, 1, 1), self.uniform(b, 0.2, 0.8, dev).view(b, 1, 1, 1))
            ry, rx = (self.uniform(b, *self.radius, dev).view(b, 1, 1, 1), self.uniform(b, *self.radius, dev).view(b, 1, 1, 1))
            yy = torch.linspace(0, 1, s, device=dev, dtype=x.dtype).view(1, 1, s, 1)
            xx = torch.linspace(0, 1, s, device=dev, dtype=x.dtype).view(1, 1, 1, s)
            blob = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1) & which
            factor = self.uniform(b, *self.residual, dev).view(b, 1, 1, 1).to(x.dtype)
            d[k] = torch.where(blob, x * factor, x)
        return d


class RandStillFramed(_BatchRandomd):
    """Make a loop look like a single still frame: no motion (std 0), max and mean equal the frame."""

    def __init__(self, inputs, keys="image", prob: float = 0.15):
        super().__init__(keys, prob)
        inputs = tuple(inputs)
        self.frame = inputs.index("frame") if "frame" in inputs else None
        self.copy_idx = _channel_index(inputs, ("max", "mean", "first"))
        self.std_idx = _channel_index(inputs, ("std",))

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        if self.frame is None:
            return d
        for k in self.key_iterator(d):
            x = d[k]
            which = self.chosen(x.shape[0], x.device).view(-1, 1, 1, 1)
            still = x.clone()
            for i in self.copy_idx:
                still[:, i] = x[:, self.frame]
            for i in self.std_idx:
                still[:, i] = 0
            d[k] = torch.where(which, still, x)
        return d


def build_augmentation(inputs: tuple[str, ...], strength: float = 1.0) -> Compose:
    """The training augmentation for a batch dict; ``strength`` 0 turns it off."""
    if strength <= 0:
        return Compose([])
    p = lambda v: min(1.0, v * strength)  # noqa: E731
    return Compose(
        [
            RandFlipBatchd(prob=p(0.5)),
            RandAffineBatchd(prob=p(0.8)),
            RandStillFramed(inputs, prob=p(0.15)),
            RandDarkRegiond(prob=p(0.25)),
            RandTextOverlayd(inputs, prob=p(0.5)),
            RandGainGammad(inputs, prob=p(0.6)),
            RandNoiseBatchd(prob=p(0.3)),
        ]
    )
