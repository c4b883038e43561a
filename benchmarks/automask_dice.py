"""How good are the auto-mask methods on phantom loops? Dice, IoU, hd95, time, and quality-vs-Dice.

    python benchmarks/automask_dice.py [--n 20] [--seed 0] [--out benchmarks/results/automask_dice.json]

Runs every registered method that imports (a method still being written is skipped with a note),
on ``n`` phantom loops from ``seed`` (loop i uses ``loop_seed(seed, i)``, the same loops as
``write_phantom(out, n, seed)``). Prints a table and writes JSON with the machine named.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from UltrasoundRefineLib.atomic import atomic_write_text  # noqa: E402
from UltrasoundRefineLib.automask import METHODS, suggest_mask  # noqa: E402
from UltrasoundRefineLib.metrics import mask_metrics  # noqa: E402
from UltrasoundRefineLib.phantom import loop_seed, make_phantom_loop  # noqa: E402


def _stats(values) -> dict:
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    n_inf = len(values) - v.size
    out = {"mean": float(v.mean()) if v.size else None, "sd": float(v.std(ddof=1)) if v.size > 1 else None,
           "median": float(np.median(v)) if v.size else None, "min": float(v.min()) if v.size else None}
    if n_inf:
        out["n_infinite"] = n_inf
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "automask_dice.json")
    args = ap.parse_args(argv)

    methods, skipped = {}, {}
    for name, target in METHODS.items():
        module_name, func_name = target.split(":")
        try:
            getattr(importlib.import_module(module_name), func_name)
            methods[name] = target
        except (ImportError, AttributeError) as e:
            skipped[name] = f"not importable yet ({type(e).__name__}: {e})"
            print(f"skipping {name}: {skipped[name]}")

    t0 = time.perf_counter()
    phantoms = [make_phantom_loop(loop_seed(args.seed, i)) for i in range(args.n)]
    phantom_s = (time.perf_counter() - t0) / max(args.n, 1)

    results = {}
    for name in methods:
        per_loop = []
        for i, p in enumerate(phantoms):
            t = time.perf_counter()
            s = suggest_mask(p.loop, name)
            dt = time.perf_counter() - t
            m = mask_metrics(s.mask, p.truth, p.loop.spacing)
            per_loop.append({"index": i, "layout": p.layout["kind"], "quality": s.quality, "seconds": dt, **m})
        dice = [r["dice"] for r in per_loop]
        quality = [r["quality"] for r in per_loop]
        rho, pval = spearmanr(quality, dice) if len(set(quality)) > 1 else (float("nan"), float("nan"))
        results[name] = {
            "dice": _stats(dice),
            "iou": _stats([r["iou"] for r in per_loop]),
            "hd95_mm": _stats([r["hd95"] for r in per_loop]),
            "seconds_per_loop": float(np.mean([r["seconds"] for r in per_loop])),
            "spearman_quality_dice": {"rho": float(rho), "pvalue": float(pval)},
            "by_layout": {
                k: {"n": len(v), "dice_mean": float(np.mean(v))}
                for k in sorted({r["layout"] for r in per_loop})
                for v in [[r["dice"] for r in per_loop if r["layout"] == k]]
            },
            "per_loop": per_loop,
        }

    report = {
        "benchmark": "automask_dice",
        "n_loops": args.n,
        "seed": args.seed,
        "phantom_seconds_per_loop": phantom_s,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
        "methods": results,
        "skipped": skipped,
    }
    atomic_write_text(args.out, json.dumps(report, indent=1, default=float))

    print(f"{args.n} phantom loops (seed {args.seed}) on {platform.platform()}, {os.cpu_count()} CPUs")
    print(f"{'method':10s} {'Dice mean':>9s} {'sd':>6s} {'IoU mean':>8s} {'hd95 mm':>8s} {'s/loop':>7s} {'rho(q,Dice)':>11s}")
    for name, r in results.items():
        hd = r["hd95_mm"]["mean"]
        print(f"{name:10s} {r['dice']['mean']:9.4f} {r['dice']['sd']:6.3f} {r['iou']['mean']:8.4f} "
              f"{hd if hd is not None else float('nan'):8.2f} {r['seconds_per_loop']:7.3f} {r['spearman_quality_dice']['rho']:11.3f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
