"""``clean``: every loop masked to its image region and de-identified, ready to leave the hospital."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from UltrasoundRefineLib.automask import METHODS
from UltrasoundRefineLib.cli.experiment import add_executor_option
from UltrasoundRefineLib.cli.train import add_postprocess_option, add_workers_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "clean",
        help="mask every loop to its image region (0 outside, every frame) and de-identify DICOM headers",
        description="Writes one cleaned file per loop into OUT (DICOM stays DICOM, uncompressed; images stay in "
        "their format; video and JPEG become NRRD) and OUT/manifest.csv. Loops whose mask looks wrong are "
        "quarantined (listed, not written). Exit code 2 when any input failed.",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="loop files or folders (searched recursively); with --workspace, default: the workspace's loops")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--method", choices=sorted(METHODS), help="suggest each loop's mask with this auto-mask method")
    where.add_argument("--model", metavar="MODEL", help="predict each loop's mask with this trained model folder")
    where.add_argument("--masks", metavar="DIR", help="a folder of masks named by loop stem (<stem>.nrrd, .png, .seg.nrrd, ...)")
    where.add_argument("--workspace", metavar="WS", help="each loop's reviewed mask in this workspace (human, else accepted)")
    p.add_argument("--out", required=True, help="output folder (not inside an input folder)")
    p.add_argument("--keep-names", action="store_true",
                   help="keep input names and folder structure (default: outputs named by a hash of the input, "
                        "since names often carry patient names or IDs)")
    p.add_argument("--keep-folders", action="store_true",
                   help="keep the folder structure below each input folder with hashed names: each folder named "
                        "by a keyed hash of its path (key from --seed; give the same --seed to --resume), so a "
                        "study's loops stay together without a name or ID in any path")
    p.add_argument("--resume", action="store_true", help="skip inputs whose output already exists")
    p.add_argument("--nrrd", action="store_true",
                   help="also write each exported loop (masked) and its mask as NRRD for Slicer: OUT/nrrd/loops, OUT/nrrd/masks")
    p.add_argument("--min-quality", type=float, default=0.5,
                   help="quarantine masks whose quality score is below this (default 0.5; reviewed masks have none)")
    p.add_argument("--min-fraction", type=float, default=0.05,
                   help="quarantine masks covering less of the frame than this (default 0.05)")
    p.add_argument("--max-fraction", type=float, default=0.95,
                   help="quarantine masks covering more of the frame than this (default 0.95)")
    p.add_argument("--max-uncertainty", type=float, default=0.05,
                   help="with --model: quarantine masks whose test-time-augmented predictions disagree more "
                        "than this (1 - their mean Dice with the consensus; default 0.05)")
    p.add_argument("--seed", metavar="SECRET",
                   help="de-identification seed: the same secret gives the same replacement UIDs, IDs and date "
                        "shift in a later run (to resume or add loops of the same studies); keep it secret")
    p.add_argument("--device", default="auto", help="with --model: cuda, mps, cpu or auto (default)")
    add_postprocess_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress (errors and quarantined loops still print)")
    add_executor_option(p, "each loop's cleaning")
    add_workers_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from UltrasoundRefineLib.batch import batch_executor
    from UltrasoundRefineLib.clean import Quarantine, clean, folder_source, method_source, workspace_source
    from UltrasoundRefineLib.clean.masks import predictor_source
    from UltrasoundRefineLib.clean.run import SourceRecipe
    from UltrasoundRefineLib.errors import UltrasoundRefineError

    if not 0.0 <= args.min_fraction <= args.max_fraction <= 1.0:
        raise UltrasoundRefineError(f"clean: need 0 <= --min-fraction <= --max-fraction <= 1 "
                                    f"(got {args.min_fraction} and {args.max_fraction})")
    if not 0.0 <= args.max_uncertainty <= 1.0:
        raise UltrasoundRefineError(f"clean: --max-uncertainty must be from 0 to 1 (got {args.max_uncertainty})")
    with batch_executor(args.executor, args.workers, device=args.device if args.model else None) as executor:
        inputs = list(args.inputs)
        # sources that find masks by path: a worker's working folder may not be ours
        where = (lambda folder: str(Path(folder).absolute())) if executor.remote or executor.slots > 1 else str
        if args.method:
            recipe = SourceRecipe(method_source, (args.method,))
        elif args.model:
            from UltrasoundRefineLib.train.model import ModelPredictor

            predict = ModelPredictor(Path(args.model).absolute(), args.device, postprocess=args.postprocess)
            if not executor.remote:  # workers here predict as this process chose; a cluster's choose their own
                predict.choose_precision()
            recipe = SourceRecipe(predictor_source, (predict,))
        elif args.masks:
            recipe = SourceRecipe(folder_source, (where(args.masks),))
        else:
            recipe = SourceRecipe(workspace_mask_source, (where(args.workspace),))
            inputs = inputs or [str(p) for p in workspace_source(args.workspace)[1]]
        source = recipe.prepare()
        if not inputs:
            raise UltrasoundRefineError("clean: no inputs (give files or folders; with --workspace, reviewed loops)")
        report = clean(
            inputs, args.out, source, keep_names=args.keep_names, keep_folders=args.keep_folders,
            resume=args.resume, seed=args.seed, nrrd=args.nrrd,
            quarantine=Quarantine(args.min_quality, args.min_fraction, args.max_fraction, args.max_uncertainty),
            progress=not args.quiet,
            executor=executor,
        )
    print(f"clean: {report.summary()} -> {report.manifest}", file=sys.stderr)
    return report.exit_code


def workspace_mask_source(workspace: str):
    """The workspace source without its list of loops (what a worker process builds)."""
    from UltrasoundRefineLib.clean import workspace_source

    return workspace_source(workspace)[0]
