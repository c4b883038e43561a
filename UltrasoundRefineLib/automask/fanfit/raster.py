"""Drawing candidate regions fast on a cached pixel grid, exactly as ``geometry`` draws them."""

from __future__ import annotations

import numpy as np

from UltrasoundRefineLib.geometry import Region, Sector


class _Raster:
    """Pixel masks of regions on one grid, exactly as ``Region.mask`` draws them (the same float
    operations), with what candidates share computed once: the polar grid around an apex, the
    distances from a far-arc centre, and each region's mask (model selection draws the chosen ones
    again)."""

    def __init__(self, shape: tuple[int, int]):
        h, w = shape
        self.shape = (int(h), int(w))
        self.y, self.x = np.mgrid[0:h, 0:w].astype(np.float64)
        self._polar: dict = {}
        self._dist: dict = {}
        self._masks: dict = {}

    def _distance(self, cx: float, cy: float) -> np.ndarray:
        d = self._dist.get((cx, cy))
        if d is None:
            d = self._dist[(cx, cy)] = np.hypot(self.x - cx, self.y - cy)
        return d

    def _sector(self, s: Sector) -> np.ndarray:
        p = self._polar.get((s.apex_x, s.apex_y))
        if p is None:
            dx, dy = self.x - s.apex_x, self.y - s.apex_y
            p = self._polar[(s.apex_x, s.apex_y)] = (dy > 0, np.degrees(np.arctan2(dx, dy)))
        below, theta = p
        r = self._distance(s.apex_x, s.apex_y)
        m = (np.abs(theta - s.tilt_deg) <= s.half_angle_deg) & below & (r >= s.r_min)
        fx, fy = s.far_center if s.far_center is not None else (s.apex_x, s.apex_y)
        m &= self._distance(fx, fy) <= s.r_max
        if s.flat_top_y is not None:
            m &= self.y >= s.flat_top_y
        if s.clip is not None:
            x0, y0, x1, y1 = s.clip
            m &= (self.x >= x0) & (self.x <= x1) & (self.y >= y0) & (self.y <= y1)
        return m

    def mask(self, region: Region) -> np.ndarray:
        m = self._masks.get(region)
        if m is None:
            plain = isinstance(region, Sector) and not region.apex_below
            m = self._sector(region) if plain else region.mask(self.shape)
            self._masks[region] = m
        return m

    def union(self, regions: list[Region]) -> np.ndarray:
        m = np.zeros(self.shape, dtype=bool)
        for region in regions:
            m |= self.mask(region)
        return m
