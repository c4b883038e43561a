"""``automask``: step 1 of the method over files and folders, outside any workspace."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from UltrasoundRefineLib.automask import METHODS, suggest_mask
from UltrasoundRefineLib.cli.experiment import add_executor_option
from UltrasoundRefineLib.cli.train import add_workers_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "automask",
        help="suggest an image-region mask for every loop (threshold or geometric fan fit)",
        description="Writes OUT/<stem>.nrrd (one H x W mask per loop) and OUT/summary.json. "
        "Exit code 2 when any input failed.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="loop files or folders (searched recursively)")
    p.add_argument("--method", choices=sorted(METHODS), default="fanfit",
                   help="fanfit (default: the better on real scans) or threshold (the method's simple baseline)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--quiet", action="store_true", help="no per-loop progress lines")
    add_executor_option(p, "each loop's auto mask")
    add_workers_option(p)
    p.set_defaults(func=run)
    register_evaluate(sub)


def run(args: argparse.Namespace) -> int:
    from functools import partial

    from UltrasoundRefineLib.batch import batch_executor, run_batch

    with batch_executor(args.executor, args.workers) as executor:
        # a partial of a module-level function: it pickles, to worker processes or a cluster
        result = run_batch(args.inputs, args.out, args.method, partial(suggest_mask, method=args.method),
                           progress=not args.quiet, executor=executor)
    print(f"{len(result.done)} masks written to {args.out}, {len(result.failed)} failed", file=sys.stderr)
    return result.exit_code


def register_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a folder of masks against reference masks (Dice, IoU, accuracy, hd95)",
        description="Matches MASKS/<stem>.nrrd to TRUTH/<stem>.nrrd; prints the means and writes JSON.",
    )
    p.add_argument("masks", metavar="MASKS", help="folder of masks, e.g. the --out of automask or predict")
    p.add_argument("--truth", required=True, help="folder of reference masks <stem>.nrrd, .png, .nii.gz, ... (non-zero inside), e.g. the phantom's truth/")
    p.add_argument("--json", dest="json_out", help="write per-loop and mean metrics to this JSON file")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    import json

    from UltrasoundRefineLib.evaluate import score_folder

    score = score_folder(args.masks, args.truth)
    summary = score.summary()
    print(f"{summary['n']} masks scored ({summary['missing']} reference masks had no mask): "
          f"Dice {summary['dice_mean']:.4f} (sd {summary['dice_sd']:.4f}), IoU {summary['iou_mean']:.4f}, "
          f"accuracy {summary['accuracy_mean']:.4f}, hd95 {summary['hd95_mean']:.2f} px")
    if args.json_out:
        from UltrasoundRefineLib.atomic import atomic_write
        from UltrasoundRefineLib.errors import OutputError

        def write(tmp: str) -> None:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"summary": summary, "per_loop": score.per_stem, "missing": score.missing}, f, indent=2)

        if Path(args.json_out).is_dir():
            raise OutputError(args.json_out, "is a folder; --json takes a file name (e.g. scores.json)")
        try:
            atomic_write(args.json_out, write)
        except OSError as e:
            raise OutputError(args.json_out, f"cannot write the scores ({e.strerror or e})") from None
    return 0
