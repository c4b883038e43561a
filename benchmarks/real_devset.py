"""How good are the auto masks on real scans? Dice per file and overall on ../shared/devset.

    python benchmarks/real_devset.py [--devset ../shared/devset] [--out benchmarks/results/real_devset.json]

Scores, against the dev set's masks of the image region: the naive peer baseline of the dev set's
README (grey maximum over frames > 10, largest component, holes filled), ``threshold`` and
``fanfit``, each file read with ``read_loop`` as a user's would be; and Spearman's rho between each
method's quality score and its Dice (a review that puts likely-wrong masks first needs it positive).
Writes JSON with the machine named. The dev set is never copied into the repository: without it the
benchmark says so and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from UltrasoundRefineLib.automask import suggest_mask  # noqa: E402
from UltrasoundRefineLib.errors import InputError  # noqa: E402
from UltrasoundRefineLib.io import loop_stem, read_loop  # noqa: E402
from UltrasoundRefineLib.metrics import mask_metrics  # noqa: E402

METHODS = ("threshold", "fanfit")
DEFAULT_DEVSET = ROOT.parent / "shared" / "devset"


def naive_mask(loop) -> np.ndarray:
    """The dev set's peer baseline: grey maximum over frames > 10, largest component, holes filled."""
    m = loop.grey().max(axis=0) > 10
    labels, n = ndimage.label(m)
    if n:
        m = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    return ndimage.binary_fill_holes(m)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devset", type=Path, default=DEFAULT_DEVSET)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "real_devset.json")
    args = ap.parse_args(argv)
    files_dir, masks_dir = args.devset / "files", args.devset / "masks"
    if not files_dir.is_dir() or not masks_dir.is_dir():
        print(f"no dev set at {args.devset} (needs files/ and masks/): nothing to score", file=sys.stderr)
        return 2

    rows, failures = [], {}
    for path in sorted(files_dir.iterdir()):
        stem = loop_stem(path)
        truth = np.asarray(Image.open(masks_dir / f"{stem}.png")) > 0
        t = time.perf_counter()
        try:
            loop = read_loop(path)
        except InputError as e:
            failures[stem] = e.reason
            rows.append({"file": stem, "read": False, **{m: {"dice": 0.0} for m in ("naive", *METHODS)}})
            print(f"{stem[:52]:52s} unreadable: {e.reason}", flush=True)
            continue
        row = {"file": stem, "read": True, "frames": loop.n_frames, "read_seconds": round(time.perf_counter() - t, 3)}
        row["naive"] = {"dice": mask_metrics(naive_mask(loop), truth)["dice"]}
        for method in METHODS:
            t = time.perf_counter()
            s = suggest_mask(loop, method)
            row[method] = {"dice": mask_metrics(s.mask, truth)["dice"], "quality": s.quality,
                           "seconds": round(time.perf_counter() - t, 3), "model": s.details.get("model")}
        rows.append(row)
        print(f"{stem[:52]:52s} naive {row['naive']['dice']:.3f}  "
              + "  ".join(f"{m} {row[m]['dice']:.3f} (q {row[m]['quality']:.2f})" for m in METHODS), flush=True)

    summary = {}
    for method in ("naive", *METHODS):
        d = np.array([r[method]["dice"] for r in rows])
        entry = {"mean": float(d.mean()), "median": float(np.median(d)), "min": float(d.min()),
                 "n_below_0.80": int((d < 0.80).sum()), "n_at_least_0.95": int((d >= 0.95).sum())}
        q = [r[method].get("quality") for r in rows if r["read"]]
        if method != "naive" and len(set(q)) > 1:
            rho, p = spearmanr(q, [r[method]["dice"] for r in rows if r["read"]])
            entry["spearman_quality_dice"] = {"rho": float(rho), "pvalue": float(p)}
        summary[method] = entry
    report = {
        "benchmark": "real_devset",
        "n_files": len(rows),
        "unreadable": failures,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "summary": summary,
        "per_file": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(args.out)

    print(f"\n{len(rows)} dev-set files on {platform.platform()}, {os.cpu_count()} CPUs")
    print(f"{'method':10s} {'mean':>6s} {'median':>6s} {'min':>6s} {'<0.80':>5s} {'>=0.95':>6s} {'rho(q,Dice)':>11s}")
    for method, e in summary.items():
        rho = e.get("spearman_quality_dice", {}).get("rho", float("nan"))
        print(f"{method:10s} {e['mean']:6.3f} {e['median']:6.3f} {e['min']:6.3f} {e['n_below_0.80']:5d} "
              f"{e['n_at_least_0.95']:6d} {rho:11.3f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
