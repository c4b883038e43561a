"""Regenerate ``Resources/phantom_frames.png``: phantom frames of each layout, with the truth outlined.

    python benchmarks/make_phantom_figure.py [--out Resources/phantom_frames.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from scipy import ndimage  # noqa: E402

from UltrasoundRefineLib.atomic import atomic_write  # noqa: E402
from UltrasoundRefineLib.phantom import make_phantom_loop  # noqa: E402

# (title, make_phantom_loop kwargs): one of each layout, grey and colour, with and without Doppler
PANELS = [
    ("phased, pointed apex", dict(seed=7, layout="phased", rgb=False)),
    ("phased, colour Doppler", dict(seed=12, layout="phased", rgb=True, doppler=True)),
    ("phased, low gain", dict(seed=28, layout="phased", rgb=False)),
    ("curvilinear", dict(seed=5, layout="curvilinear", rgb=False)),
    ("linear", dict(seed=33, layout="linear", rgb=True, doppler=False)),
    ("dual view", dict(seed=1, layout="dual", rgb=False)),
]


def _low_gain_seed(start: int) -> int:
    for s in range(start, start + 200):
        if make_phantom_loop(s, layout="phased", n_frames=1, rgb=False).layout["low_gain"]:
            return s
    return start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "Resources" / "phantom_frames.png")
    args = ap.parse_args(argv)
    fig, axes = plt.subplots(3, 4, figsize=(16, 9.6), dpi=80)
    for k, (title, kw) in enumerate(PANELS):
        kw = dict(kw)
        if "low gain" in title:
            kw["seed"] = _low_gain_seed(kw["seed"])
        seed = kw.pop("seed")
        p = make_phantom_loop(seed, n_frames=6, **kw)
        frame = p.loop.frames[3]
        rgb = frame if frame.ndim == 3 else np.repeat(frame[..., None], 3, -1)
        outlined = rgb.copy()
        edge = p.truth & ~ndimage.binary_erosion(p.truth)
        outlined[edge] = (255, 0, 255)
        ax0, ax1 = axes[k // 2, (k % 2) * 2], axes[k // 2, (k % 2) * 2 + 1]
        ax0.imshow(rgb)
        ax1.imshow(outlined)
        ax0.set_title(f"{title} (seed {seed})", fontsize=10)
        ax1.set_title("ground truth outlined", fontsize=10)
        for ax in (ax0, ax1):
            ax.set_axis_off()
    fig.suptitle("UltrasoundRefine phantom: synthetic echo loops with exact ground truth (all names, IDs and dates are fake)", fontsize=12)
    fig.tight_layout()
    atomic_write(args.out, lambda tmp: fig.savefig(tmp, format="png"))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
