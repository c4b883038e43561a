"""``phantom``: the built-in data set, synthetic echo loops with exact ground truth."""

from __future__ import annotations

import argparse
import sys


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "phantom",
        help="write synthetic echo loops (DICOM) and their ground-truth masks",
        description="Writes OUT/loops/<stem>.dcm (US Multi-frame DICOM) and OUT/truth/<stem>.nrrd "
        "(+ <stem>.json with the exact geometry).",
    )
    p.add_argument("--n", type=positive_int, default=20, help="number of loops (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from UltrasoundRefineLib.batch import ensure_writable_dir
    from UltrasoundRefineLib.phantom import write_phantom

    ensure_writable_dir(Path(args.out))
    paths = write_phantom(args.out, args.n, args.seed)
    print(f"{len(paths)} phantom loops written to {Path(args.out) / 'loops'}, truth in {Path(args.out) / 'truth'}",
          file=sys.stderr)
    return 0
