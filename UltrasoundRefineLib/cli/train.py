"""``train`` (pretrain / fine-tune / from scratch on a workspace) and ``predict`` (a model over files)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Idle OpenMP threads sleep rather than spin: on a shared CPU machine, spinning threads of several
# processes starve each other (measured 7 s instead of 0.5 s per step). Only effective before torch
# is first imported, which the CLI does lazily.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from UltrasoundRefineLib.cli.experiment import add_executor_option

STOPPED_EXIT = 143  # 128 + SIGTERM: stopped on request, checkpoint kept, the same command resumes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="pretrain on accepted suggestions, fine-tune on human masks, or train on human masks from scratch",
        description="Trains a MONAI U-Net on the workspace's examples and writes a model folder "
        "(weights.pt, card.json, history.json) that predict and suggest --model use. A checkpoint is "
        "saved every epoch in MODEL_DIR/checkpoint/; after a kill or SIGTERM, the same command resumes. "
        f"Exit code {STOPPED_EXIT} when stopped by SIGTERM.",
    )
    p.add_argument("workspace", metavar="WORKSPACE")
    p.add_argument("--stage", required=True, choices=("pretrain", "finetune", "scratch"),
                   help="pretrain: accepted suggestions; finetune: human masks, from --from; scratch: human masks, random start")
    p.add_argument("--from", dest="from_model", metavar="MODEL",
                   help="the model to start from (a folder, or a model id registered in the workspace); needed for finetune")
    p.add_argument("--strategy", choices=("full", "frozen-encoder", "low-lr-encoder"), default="full",
                   help="for finetune: which pretrained layers learn (default: full)")
    p.add_argument("--epochs", type=int, help="the most epochs (early stopping usually ends sooner)")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, help="network input size in pixels, a multiple of 16 from 32 to 1024 (default 128; "
                   "not for finetune: the base model decides)")
    p.add_argument("--arch", help="MONAI network: unet (default), basicunet, attentionunet, segresnet")
    p.add_argument("--producer", help="for pretrain: only suggestions by this producer (e.g. threshold, fanfit)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print progress as JSON lines on stdout instead of a progress bar")
    p.add_argument("--no-register", action="store_true", help="do not record the model in the workspace")
    p.add_argument("--stop-on-stdin", action="store_true",
                   help="a line 'stop' on stdin, or stdin closing, stops the run as SIGTERM does (for parents "
                   "that cannot signal the process, such as Slicer's PythonSlicer launcher)")
    p.add_argument("--out", required=True, metavar="MODEL_DIR", help="the model folder to write")
    p.set_defaults(func=run_train)

    q = sub.add_parser(
        "predict",
        help="predict the image-region mask of every loop with a trained model",
        description="Writes OUT/<stem>.nrrd (one H x W mask per loop) and OUT/summary.json, like automask; "
        "quality = 1 - disagreement under test-time augmentation. Exit code 2 when any input failed.",
    )
    q.add_argument("--model", required=True, metavar="MODEL", help="a model folder (weights.pt + card.json)")
    q.add_argument("inputs", nargs="+", metavar="INPUT", help="loop files or folders (searched recursively)")
    q.add_argument("--out", required=True, help="output folder")
    q.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    q.add_argument("--no-tta", action="store_true", help="one forward pass per loop (faster; quality is then 1)")
    add_postprocess_option(q)
    q.add_argument("--quiet", action="store_true", help="no progress (errors still print)")
    add_executor_option(q, "each loop's prediction")
    add_workers_option(q)
    q.set_defaults(func=run_predict)


def _resolve_model(ws, ref: str) -> Path:
    from UltrasoundRefineLib.errors import InputError

    path = Path(ref)
    if path.exists():
        return path
    registered = {m["id"]: m for m in ws.models()}
    if ref in registered:
        return Path(registered[ref]["path"])
    known = ", ".join(sorted(registered)) or "none registered"
    raise InputError(ref, f"neither a model folder nor a model registered in this workspace ({known})")


def _stop_on_stdin(stream=None):
    """An Event set when ``stream`` (default stdin) gives a line "stop" or closes.

    Slicer starts the CLI through PythonSlicer, a launcher that does not forward signals to the Python
    it starts but does forward stdin; a closed stdin means the parent is gone, so nobody is left to
    read the run's progress."""
    import threading

    stream = stream if stream is not None else sys.stdin
    flag = threading.Event()

    def watch() -> None:
        try:
            for line in stream:
                if line.strip().lower() == "stop":
                    break
        except (OSError, ValueError):  # closed under us
            pass
        flag.set()

    threading.Thread(target=watch, name="stop-on-stdin", daemon=True).start()
    return flag


def run_train(args: argparse.Namespace) -> int:
    from UltrasoundRefineLib.errors import OutputError
    from UltrasoundRefineLib.train.config import TrainError
    from UltrasoundRefineLib.train.data import workspace_examples
    from UltrasoundRefineLib.train.finetune import FINETUNE_DEFAULTS, PRETRAIN_DEFAULTS, SCRATCH_DEFAULTS
    from UltrasoundRefineLib.train.engine import train_model
    from UltrasoundRefineLib.train.progress import ProgressBar, json_lines
    from UltrasoundRefineLib.workspace import Workspace

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise OutputError(out, "is a file, not a folder; --out names the model folder to write")
    if (out / "card.json").exists():
        raise OutputError(out, "already holds a trained model; choose another --out or remove it")
    if args.stage == "finetune" and not args.from_model:
        raise TrainError("--stage finetune needs --from MODEL (the pretrained model)")
    if args.stage == "scratch" and args.from_model:
        raise TrainError("--stage scratch trains from random weights; drop --from (or use --stage finetune)")
    if args.producer and args.stage != "pretrain":
        raise TrainError("--producer selects suggestions: it applies to --stage pretrain")
    if args.strategy != "full" and args.stage != "finetune":
        raise TrainError(f"--strategy {args.strategy} is for --stage finetune")

    config = {"pretrain": PRETRAIN_DEFAULTS, "finetune": FINETUNE_DEFAULTS, "scratch": SCRATCH_DEFAULTS}[args.stage]
    changes = {}
    if args.epochs is not None:
        if args.epochs < 1:
            raise TrainError("--epochs must be at least 1")
        changes["epochs"] = args.epochs
    if args.size is not None:
        from UltrasoundRefineLib.train.config import size_problem

        if size_problem(args.size):
            raise TrainError(f"--size {size_problem(args.size)}")
        changes["size"] = args.size
    if args.arch is not None:
        changes["arch"] = args.arch
    config = config.replace(**changes)

    with Workspace.open(args.workspace, readonly=True) as ws:
        examples = workspace_examples(ws, args.stage, producer=args.producer)
        test_examples = ws.examples("test")
        init = _resolve_model(ws, args.from_model) if args.from_model else None

    if args.threads:
        import torch

        torch.set_num_threads(max(1, args.threads))
    events = json_lines(sys.stdout) if args.json else ProgressBar(sys.stderr)
    result = train_model(
        examples, None, config, init_from=init, strategy=args.strategy, stage=args.stage, seed=args.seed,
        device=args.device, events=events, out=out, handle_sigterm=True, test_examples=test_examples or None,
        stop=_stop_on_stdin() if args.stop_on_stdin else None,
    )
    if result.stopped:
        return STOPPED_EXIT
    if not args.no_register:
        with Workspace.open(args.workspace) as ws:
            ws.register_model(result.model_dir, result.model.card)
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from UltrasoundRefineLib.batch import batch_executor, run_batch
    from UltrasoundRefineLib.train.model import ModelPredictor, card_postprocess, load_model, precision_record

    with batch_executor(args.executor, args.workers, device=args.device) as executor:
        # Loaded here also for a cluster: a bad model is one line before any loop, and the summary gets its card.
        model = load_model(args.model, "cpu" if executor.remote else args.device)
        # a worker loads the model itself, from the shared folder, on its own device
        produce = ModelPredictor(Path(args.model).absolute(), args.device, tta=not args.no_tta,
                                 model=None if executor.remote else model, postprocess=args.postprocess)
        # float32 or mixed precision, timed here once on CUDA (as training chooses); workers on this
        # machine take this choice, a cluster's workers (other GPUs perhaps) each choose their own
        precision = None if executor.remote else produce.choose_precision()
        extra = {
            "model": {
                "model_id": model.model_id,
                "architecture": model.arch,
                "input_size": model.size,
                "channels": list(model.inputs),
                "device": f"{args.device} (on each worker)" if executor.remote else str(model.device),
                "precision": "chosen by each worker" if precision is None else precision_record(precision),
                "tta": not args.no_tta,
                "postprocess": args.postprocess or card_postprocess(model.card)[0],
            }
        }
        if precision is not None and precision.device.type == "cuda" and not args.quiet:
            print(f"predicting on {model.device} in {extra['model']['precision']['dtype']}"
                  f"{' (TF32 matmuls)' if precision.tf32 else ''}", file=sys.stderr)
        result = run_batch(
            args.inputs, args.out, model.producer_name, produce, progress=not args.quiet, extra_summary=extra,
            executor=executor,
        )
    print(f"{len(result.done)} masks written to {args.out}, {len(result.failed)} failed", file=sys.stderr)
    return result.exit_code


def add_workers_option(parser: argparse.ArgumentParser) -> None:
    """``--workers``, shared by the batch commands (``automask``, ``predict``, ``clean``)."""
    parser.add_argument(
        "--workers", type=int, default=1, metavar="N",
        help="with --executor local: N processes on this machine, each with its share of the CPU cores "
        "and, with several GPUs, the GPUs in turn (default 1: this process); results are the same as with one")


def add_postprocess_option(parser: argparse.ArgumentParser) -> None:
    """``--postprocess``: how a model's answer is cleaned up, for this run (default: what its card says)."""
    from UltrasoundRefineLib.train.postprocess import POSTPROCESS_MODES

    parser.add_argument(
        "--postprocess", choices=POSTPROCESS_MODES, default=None,
        help="how the network's answer is cleaned up (default: the model card's, 'reading' for new models): "
        "'reading' takes the loop's own evidence of its region that the network points to, whatever their "
        "agreement (the most accurate on real scans from scanners the model never saw); 'evidence' takes it "
        "too, except where the two differ only in a part, where the network's own shape decides (how an "
        "experiment scores its conditions); 'shape' snaps the answer to the fitted scanner shape; "
        "'basic' fills holes and drops specks; 'none' leaves it")
