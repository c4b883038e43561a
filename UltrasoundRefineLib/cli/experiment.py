"""``experiment`` (repeated-run comparison on a workspace) and ``demo`` (the whole method on the phantom)."""

from __future__ import annotations

import argparse
import json
import sys


def _events(as_json: bool):
    def emit(e: dict) -> None:
        if as_json:
            print(json.dumps(e), flush=True)
        elif e.get("event") == "run_done":
            print(f"run {e['done']}/{e['runs']}: {e['condition']} seed {e['seed']}: Dice {e['dice']:.4f} "
                  f"({e['seconds']:.0f} s)", file=sys.stderr, flush=True)
    return emit


def add_executor_option(parser: argparse.ArgumentParser, task: str, local: str = "this process") -> None:
    """``--executor``, shared by the commands whose work splits into independent tasks."""
    parser.add_argument(
        "--executor", default="local", metavar="local|dask://HOST:PORT",
        help=f"where {task} runs: local (default: {local}) or dask://HOST:PORT (the workers of a Dask cluster; "
        "every worker must see the same paths, e.g. a shared filesystem)")


def workers_help() -> str:
    """``--workers``' help, from the numbers :func:`~UltrasoundRefineLib.executor.concurrent_runs` uses,
    so the two cannot disagree."""
    from UltrasoundRefineLib.executor import MAX_CPU_RUNS, RUNS_PER_GPU

    return (f"runs at once on this machine (default: one per CPU core, at most {MAX_CPU_RUNS}; on GPUs "
            f"{RUNS_PER_GPU} per GPU, at most one per core)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "experiment",
        help="run every condition x repeat of a spec on a workspace; statistics and report",
        description="Runs resume: finished runs (in WORKSPACE/runs/<name>/) are not run again. Writes "
        "report.html, report.json, runs.csv, per_loop.csv and comparisons.csv to --out "
        "(default WORKSPACE/reports/<name>).",
    )
    p.add_argument("workspace", metavar="WORKSPACE")
    p.add_argument("--spec", help="experiment spec (TOML); default: the built-in comparison")
    p.add_argument("--out", help="report folder")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps")
    p.add_argument("--workers", type=int, help=workers_help())
    add_executor_option(p, "each (condition, repeat) run", local="worker processes on this machine, see --workers")
    p.add_argument("--cpu-stages", type=int, metavar="N",
                   help="runs whose CPU stage (shape fit, scoring) runs as a task of its own beside the device "
                   "stages (training, the forward pass), so the GPU is not idle meanwhile (default: with GPUs on "
                   "this machine, the cores the --workers leave free; else 0, each run's stages in one task; on "
                   "a Dask cluster, N of its worker threads)")
    p.add_argument("--json", action="store_true", help="progress as JSON lines on stdout")
    p.set_defaults(func=run_experiment_cmd)

    d = sub.add_parser(
        "demo",
        help="the whole method on the built-in phantom: suggestions, review, pretrain, fine-tune, statistics",
        description="Writes OUT/report.html, report.json, runs.csv, per_loop.csv, comparisons.csv and the best refined "
        "model in OUT/model (usable by predict). Resumes when run again over the same OUT.",
    )
    d.add_argument("--out", default="demo-output")
    d.add_argument("--quick", action="store_true", help="a small version (a minute or two on 2 CPU cores)")
    d.add_argument("--device", default="auto")
    d.add_argument("--workers", type=int, help=workers_help())
    d.add_argument("--json", action="store_true", help="progress as JSON lines on stdout")
    d.set_defaults(func=run_demo_cmd)


def run_experiment_cmd(args: argparse.Namespace) -> int:
    from pathlib import Path

    from UltrasoundRefineLib.experiment import load_spec
    from UltrasoundRefineLib.experiment.analysis import analyse
    from UltrasoundRefineLib.experiment.runner import run_experiment
    from UltrasoundRefineLib.workspace import Workspace

    from UltrasoundRefineLib.batch import ensure_writable_dir

    spec = load_spec(args.spec)
    with Workspace.open(args.workspace, readonly=True):  # a clear error for a missing or bad workspace
        pass
    if args.out:  # before hours of runs, not after them
        ensure_writable_dir(Path(args.out))
    result = run_experiment(args.workspace, spec, device=args.device, workers=args.workers,
                            events=_events(args.json), executor=args.executor, cpu_stages=args.cpu_stages)
    out = Path(args.out) if args.out else Path(args.workspace) / "reports" / spec.name
    paths = analyse(result, args.workspace, out)
    print(f"report: {paths['html']}", file=sys.stderr)
    return 0


def run_demo_cmd(args: argparse.Namespace) -> int:
    from UltrasoundRefineLib.demo import run_demo

    # the demo prints its own progress lines; --json adds the events on stdout
    paths = run_demo(args.out, quick=args.quick, device=args.device, workers=args.workers,
                     events=_events(True) if args.json else None)
    print(f"report: {paths['html']}", file=sys.stderr)
    if "model" in paths:
        print(f"refined model: {paths['model']} (use: ultrasound-refine predict --model {paths['model']} ...)",
              file=sys.stderr)
    return 0
