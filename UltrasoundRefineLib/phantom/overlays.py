"""Everything a scanner burns in around (and sometimes into) the image region.

Drawn once per loop with Pillow onto one RGBA layer per category, so tests can ask where the text is
and the ground truth can be checked against it. Only the ECG sweep cursor changes from frame to frame.
All names, IDs and dates are fake (``fake_phi``), but look like the real thing so that PHI hygiene
downstream is exercised.
"""

from __future__ import annotations

import math
from datetime import date, timedelta
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from UltrasoundRefineLib.geometry import Rectangle, Sector
from UltrasoundRefineLib.phantom.layout import Layout

FAKE_NAMES = (
    "Doe^Jane", "Roe^Richard", "Smith^Alex", "Mustermann^Erika", "Tanaka^Yuki", "Dupont^Marie",
    "Rossi^Mario", "Svensson^Anna", "Nowak^Piotr", "Garcia^Lucia", "Okafor^Chidi", "Jansen^Pieter",
)
FAKE_SITES = ("ST. EXAMPLE HOSPITAL", "GENERAL HOSPITAL", "CITY HEART CENTRE", "UNIV. CLINIC ECHO LAB", "MERCY MEDICAL")
LOGOS = ("ACME", "SONO", "ECHOTEC", "VISTA")
CATEGORIES = ("header", "text", "logo", "marker", "greybar", "colourbar", "ticks", "ecg", "calipers", "doppler_box")


@lru_cache(maxsize=16)
def font(size: int) -> ImageFont.FreeTypeFont:
    # Pillow's bundled font (Aileron) needs no file on disk and no download
    return ImageFont.load_default(size=size)


def fake_phi(rng: np.random.Generator) -> dict:
    """Fake identifiers in DICOM formats (PN, LO, DA, TM)."""
    name = str(rng.choice(FAKE_NAMES))
    birth = date(1935, 1, 1) + timedelta(days=int(rng.integers(0, 365 * 70)))
    study = date(2014, 1, 1) + timedelta(days=int(rng.integers(0, 365 * 10)))
    return {
        "PatientName": name,
        "PatientID": f"{int(rng.integers(10**7, 10**8))}",
        "PatientBirthDate": birth.strftime("%Y%m%d"),
        "StudyDate": study.strftime("%Y%m%d"),
        "StudyTime": f"{int(rng.integers(7, 19)):02d}{int(rng.integers(0, 60)):02d}{int(rng.integers(0, 60)):02d}",
        "InstitutionName": str(rng.choice(FAKE_SITES)),
        "AccessionNumber": f"A{int(rng.integers(10**6, 10**7))}",
        "ReferringPhysicianName": str(rng.choice(FAKE_NAMES)),
        "OperatorsName": "Sonographer^Sam",
    }


def _display_name(pn: str) -> str:
    last, first = (pn.split("^") + [""])[:2]
    return f"{last.upper()}, {first.upper()}"


def _display_date(da: str) -> str:
    return f"{da[6:8]}/{da[4:6]}/{da[0:4]}"


class OverlayCanvas:
    def __init__(self, shape: tuple[int, int]):
        self.h, self.w = shape
        self.layers = {c: Image.new("RGBA", (self.w, self.h), (0, 0, 0, 0)) for c in CATEGORIES}
        self.draws = {c: ImageDraw.Draw(im) for c, im in self.layers.items()}

    def __getitem__(self, category: str) -> ImageDraw.ImageDraw:
        return self.draws[category]

    def compose(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """RGBA (H, W, 4) in drawing order, and a bool mask per category."""
        out = np.zeros((self.h, self.w, 4), np.uint8)
        masks = {}
        for c in CATEGORIES:
            a = np.asarray(self.layers[c])
            m = a[..., 3] > 0
            masks[c] = m
            out[m] = a[m]
        return out, masks


def _region_extent_x(region, y0: float, y1: float, sign: int, truth: np.ndarray) -> float:
    """Outermost truth column on one side over rows [y0, y1]."""
    rows = truth[int(max(y0, 0)) : int(min(y1, truth.shape[0] - 1)) + 1]
    cols = np.nonzero(rows.any(axis=0))[0]
    if cols.size == 0:
        return float(region.x1 if sign > 0 else region.x0) if isinstance(region, Rectangle) else 0.0
    return float(cols.max() if sign > 0 else cols.min())


def draw_overlays(
    rng: np.random.Generator, lay: Layout, truth: np.ndarray, phi: dict
) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """Static overlay (RGBA) and category masks; plus what the per-frame parts need (ECG)."""
    h, w = lay.shape
    cv = OverlayCanvas((h, w))
    fs = max(8, int(round(h / 22)))
    f_small, f_big = font(fs), font(int(fs * 1.25))
    keep_out = ndimage.binary_dilation(truth, iterations=2)
    occupied = np.zeros((h, w), bool)
    text_col = tuple(int(c) for c in rng.choice([[255, 255, 255], [230, 230, 120], [200, 220, 255], [210, 210, 210]]))

    def text(category, xy, s, fnt=f_small, fill=text_col, anchor="la", allow_inside=False) -> bool:
        """Draw text where it does not touch the region (unless it is in-region annotation)."""
        x, y = xy
        bbox = cv[category].textbbox((x, y), s, font=fnt, anchor=anchor)
        x0, y0, x1, y1 = (int(math.floor(bbox[0])), int(math.floor(bbox[1])), int(math.ceil(bbox[2])), int(math.ceil(bbox[3])))
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            return False
        if not allow_inside and keep_out[y0:y1 + 1, x0:x1 + 1].any():
            return False
        if occupied[max(y0 - 1, 0):y1 + 1, max(x0 - 1, 0):x1 + 2].any():
            return False
        cv[category].text((x, y), s, font=fnt, fill=fill, anchor=anchor)
        occupied[y0:y1 + 1, x0:x1 + 1] = True
        return True

    def claim(x0, y0, x1, y1) -> bool:
        """Reserve a box for a non-text item unless something is there already."""
        x0, y0, x1, y1 = int(max(x0, 0)), int(max(y0, 0)), int(min(x1, w - 1)), int(min(y1, h - 1))
        if occupied[y0:y1 + 1, x0:x1 + 1].any():
            return False
        occupied[y0:y1 + 1, x0:x1 + 1] = True
        return True

    # header bar with the patient line
    hb = lay.header_h
    if hb:
        col = tuple(int(c) for c in rng.choice([[24, 44, 96], [70, 70, 76], [10, 90, 100], [110, 30, 40], [40, 40, 40]]))
        cv["header"].rectangle((0, 0, w - 1, hb - 1), fill=col)
        if rng.random() < 0.5:
            cv["header"].line((0, hb - 1, w - 1, hb - 1), fill=(180, 180, 180))
    name = _display_name(phi["PatientName"]) if rng.random() < 0.7 else phi["PatientName"]
    line1 = f"{name}  ID:{phi['PatientID']}"
    line2 = f"{_display_date(phi['StudyDate'])} {phi['StudyTime'][:2]}:{phi['StudyTime'][2:4]}"
    hy = max(1, (hb - fs) // 2 - 1) if hb else 2
    text("text", (3, hy), line1)
    text("text", (w - 3, hy), line2, anchor="ra")
    # hospital and probe/preset under the header, left; acquisition settings right
    y = hb + 2 if hb else fs + 5
    left_lines = [phi["InstitutionName"][:18], {"heart": "Adult Echo", "abdomen": "Abdomen", "superficial": "Vascular"}[lay.anatomy]]
    probe = {"phased": "S5-1", "curvilinear": "C5-2", "linear": "L12-5", "dual": "L12-5" if lay.anatomy == "superficial" else "C5-2"}[lay.kind]
    left_lines.append(f"{probe}  {1000 / lay.frame_time_ms:.0f}Hz")
    left_lines.append(f"{lay.depth_cm:.1f}cm")
    settings = [f"MI {rng.uniform(0.6, 1.5):.1f}", f"TIS {rng.uniform(0.2, 1.2):.1f}", "2D", f"Gn {int(50 + lay.gain_db * 2)}", f"C {int(rng.integers(40, 70))}", "P Low", "HGen"]
    if lay.doppler:
        settings += ["CF", f"{int(rng.integers(40, 80))}%", "WF Med"]
    for s in left_lines:
        if text("text", (3, y), s):
            y += fs + 1
    y = hb + 2 + (fs + 1) * 2
    for s in settings:
        if text("text", (w - 3, y), s, anchor="ra"):
            y += fs + 1
        if y > h * 0.6:
            break

    # logo
    if lay.flags.get("logo"):
        s = str(rng.choice(LOGOS))
        lx, ly = (3, h - fs * 2 - 4) if rng.random() < 0.5 else (w - 3 - fs * len(s), hb + 2 + (fs + 1) * 4)
        bb = cv["logo"].textbbox((lx, ly), s, font=f_big)
        if not keep_out[max(bb[1] - 2, 0):bb[3] + 3, max(bb[0] - 2, 0):bb[2] + 3].any() and claim(bb[0] - 3, bb[1] - 3, bb[2] + 3, bb[3] + 3):
            cv["logo"].rectangle((bb[0] - 2, bb[1] - 2, bb[2] + 2, bb[3] + 2), outline=(90, 160, 230))
            cv["logo"].text((lx, ly), s, font=f_big, fill=(120, 190, 255))

    main = lay.regions[0]
    top_y = float(np.nonzero(truth.any(axis=1))[0].min())
    bot_y = float(np.nonzero(truth.any(axis=1))[0].max())
    # orientation marker beside the top of the (first) image
    if lay.flags.get("orientation_marker"):
        side = -1 if rng.random() < 0.5 else 1
        xe = _region_extent_x(main, top_y, top_y + 6, side, truth)
        mx = xe + side * rng.uniform(8, 16)
        my = top_y + 3
        if isinstance(main, Sector) and main.r_min == 0:
            mx = main.apex_x + side * rng.uniform(12, 22)
        if 4 < mx < w - 4:
            kind = rng.choice(["dot", "v", "logo"])
            d = cv["marker"]
            if kind == "dot":
                d.ellipse((mx - 3, my - 3, mx + 3, my + 3), fill=(90, 170, 255))
            elif kind == "v":
                d.polygon([(mx - 4, my - 3), (mx + 4, my - 3), (mx, my + 4)], fill=(230, 230, 230))
            else:
                text("marker", (mx, my), "P", fnt=f_small, fill=(90, 200, 255), anchor="mm")
            m = np.asarray(cv.layers["marker"])[..., 3] > 0
            if (m & keep_out).any():  # never into the region
                cv.layers["marker"] = Image.new("RGBA", (w, h), (0, 0, 0, 0))
                cv.draws["marker"] = ImageDraw.Draw(cv.layers["marker"])

    # grey bar (and colour bar for Doppler) beside the region, sometimes touching or over its edge
    bar_side = 1 if rng.random() < 0.7 else -1
    bar_w = max(4, int(round(w / 55)))
    bar_h = int(rng.uniform(0.25, 0.4) * h)
    by0 = int(top_y + rng.uniform(0.05, 0.3) * (bot_y - top_y))
    by1 = min(by0 + bar_h, int(bot_y))
    gap = int(lay.flags.get("greybar_gap", 4))
    region_for_bar = lay.regions[-1] if bar_side > 0 else lay.regions[0]
    edge = _region_extent_x(region_for_bar, by0, by1, bar_side, truth)
    bx0 = int(edge + gap + 1) if bar_side > 0 else int(edge - gap - 1 - bar_w)
    bars = []
    if lay.flags.get("greybar"):
        bars.append("greybar")
    if lay.doppler:
        bars.append("colourbar")
    for k, name_ in enumerate(bars):
        x0 = bx0 + k * (bar_w + 3) * bar_side
        if x0 < 1 or x0 + bar_w >= w - 1 or not claim(x0 - 1, by0 - 1, x0 + bar_w + 1, by1 + 1):
            continue
        n = by1 - by0
        for i in range(n):
            t = i / max(n - 1, 1)
            if name_ == "greybar":
                g = int(255 * (1 - t))
                col = (g, g, g)
            else:  # red (towards) above, blue (away) below, through black
                col = (int(255 * max(0, 1 - 2 * t) ** 0.7), int(180 * max(0, 1 - 2 * t) ** 2), 0) if t < 0.5 else (0, int(150 * max(0, 2 * t - 1) ** 2), int(255 * max(0, 2 * t - 1) ** 0.7))
                if abs(t - 0.5) < 0.01:
                    col = (60, 60, 60)
            cv[name_].line((x0, by0 + i, x0 + bar_w - 1, by0 + i), fill=col)
        cv[name_].rectangle((x0 - 1, by0 - 1, x0 + bar_w, by1), outline=(150, 150, 150))
        if name_ == "colourbar":
            v = rng.uniform(0.4, 0.9)
            tx = x0 + bar_w + 3 if bar_side > 0 else x0 - 3
            text("text", (tx, by0), f"+{v:.2f}", anchor="la" if bar_side > 0 else "ra")
            text("text", (tx, by1 - fs), f"-{v:.2f}", anchor="la" if bar_side > 0 else "ra")

    # depth scale: dots every cm hugging the region's side, larger ticks every 5 cm, numbers
    px_per_cm = 10.0 / lay.spacing_mm
    if lay.flags.get("depth_dots") or lay.flags.get("edge_ticks"):
        side = -bar_side
        for reg in (lay.regions if lay.kind == "dual" else [main]):
            dist = float(rng.uniform(2.5, 5.0))
            n_cm = int(lay.depth_cm)  # a scale ends at the imaged depth: its last mark says how deep the region goes
            for k in range(0, n_cm + 1):
                if isinstance(reg, Sector):
                    rr = reg.r_min + k * px_per_cm
                    a = math.radians(reg.tilt_deg + side * reg.half_angle_deg)
                    px = reg.apex_x + rr * math.sin(a) + side * dist * math.cos(a)
                    py = reg.apex_y + rr * math.cos(a) - side * dist * math.sin(a) * 0
                else:
                    px = (reg.x0 - dist) if side < 0 else (reg.x1 + dist)
                    py = reg.y0 + k * px_per_cm
                xi, yi = int(round(px)), int(round(py))
                if not (1 <= xi < w - 1 and 1 <= yi < h - 1):
                    continue
                big = k % 5 == 0
                if lay.flags.get("edge_ticks"):
                    ln = 4 if big else 2
                    x_end = xi + side * ln
                    if not keep_out[yi, min(xi, x_end):max(xi, x_end) + 1].any() and 0 <= x_end < w:
                        cv["ticks"].line((xi, yi, x_end, yi), fill=(200, 200, 200))
                elif not keep_out[yi - 1:yi + 2, xi - 1:xi + 2].any():
                    r = 1 if big else 0
                    cv["ticks"].rectangle((xi - r, yi - r, xi + r, yi + r), fill=(220, 220, 220) if big else (170, 170, 170))
                if big and k > 0:
                    text("text", (xi + side * 5, yi), str(k), anchor="rm" if side < 0 else "lm")
        m = np.asarray(cv.layers["ticks"])[..., 3] > 0
        if (m & truth).any():  # a tick that fell on the region: drop the whole scale
            cv.layers["ticks"] = Image.new("RGBA", (w, h), (0, 0, 0, 0))
            cv.draws["ticks"] = ImageDraw.Draw(cv.layers["ticks"])

    # calipers and measurement text inside the region
    ys, xs = np.nonzero(ndimage.binary_erosion(truth, iterations=6))
    if lay.flags.get("calipers") and ys.size > 50:
        i, j = rng.integers(0, ys.size, 2)
        p0, p1 = (int(xs[i]), int(ys[i])), (int(xs[j]), int(ys[j]))
        col = (int(rng.choice([255, 230])), 230, int(rng.choice([0, 255])))
        for px, py in (p0, p1):
            cv["calipers"].line((px - 3, py, px + 3, py), fill=col)
            cv["calipers"].line((px, py - 3, px, py + 3), fill=col)
        n = max(int(math.hypot(p1[0] - p0[0], p1[1] - p0[1]) / 4), 1)
        for k in range(n + 1):
            t = k / n
            x, y = p0[0] + t * (p1[0] - p0[0]), p0[1] + t * (p1[1] - p0[1])
            cv["calipers"].point((x, y), fill=col)
        dist_cm = math.hypot(p1[0] - p0[0], p1[1] - p0[1]) / px_per_cm
        k = int(rng.integers(0, ys.size))
        text("calipers", (int(xs[k]), int(ys[k])), f"D {dist_cm:.2f} cm", fill=col, allow_inside=True)
        m = np.asarray(cv.layers["calipers"])[..., 3] > 0
        cv.layers["calipers"].putalpha(Image.fromarray((m & truth).astype(np.uint8) * 255))

    # ECG trace (green) with heart-rate text along the bottom
    ecg = {}
    if lay.flags.get("ecg"):
        base = lay.bottom_y + (h - lay.bottom_y) * rng.uniform(0.45, 0.7)
        if lay.flags.get("ecg_crosses_fan"):
            base = bot_y - rng.uniform(0.02, 0.08) * h
        amp = (h - lay.bottom_y) * rng.uniform(0.35, 0.55)
        hr_text = f"HR {lay.heart_rate} bpm"
        hr_w = int(cv["text"].textlength(hr_text, font=f_small))
        x_start, x_end = int(rng.uniform(0.05, 0.2) * w), int(min(rng.uniform(0.8, 0.95) * w, w - hr_w - 10))
        rr_px = rng.uniform(0.2, 0.35) * w * 72 / lay.heart_rate
        xs_ = np.arange(x_start, x_end)
        ph = ((xs_ - x_start) / rr_px + rng.uniform(0, 1)) % 1.0
        yv = base - amp * _ecg_wave(ph)
        pts = list(zip(xs_.tolist(), yv.tolist()))
        cv["ecg"].line(pts, fill=(40, 230, 60), width=1)
        ecg = {"x0": x_start, "x1": x_end, "base": float(base), "amp": float(amp)}
        text("text", (w - 3, h - 2), hr_text, fill=(40, 230, 60), anchor="rd")

    rgba, masks = cv.compose()
    return rgba, masks, {"ecg": ecg}


def _ecg_wave(ph: np.ndarray) -> np.ndarray:
    """A P-QRS-T complex over one beat (phase 0..1), unit R amplitude."""
    g = lambda c, s, a: a * np.exp(-0.5 * ((ph - c) / s) ** 2)  # noqa: E731
    return g(0.1, 0.025, 0.12) - g(0.2, 0.008, 0.12) + g(0.22, 0.01, 1.0) - g(0.24, 0.008, 0.25) + g(0.45, 0.05, 0.3)
