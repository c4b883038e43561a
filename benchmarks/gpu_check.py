"""Issue 13's GPU figures in one go, for a session lent a GPU machine (README: "Measuring on a GPU").

    python3 benchmarks/gpu_check.py --out "$OUT"                    # on the device machine
    .venv/bin/python benchmarks/gpu_check.py --device cpu --quick --no-wheels --out /tmp/gc   # a CPU check

Steps, each with its own time limit (a step that fails or runs out of time is recorded and the next
one runs), about 8 minutes at most in all:

1. **wheels**: installs the wheels carried in ``.whl/`` into ``/tmp/site`` (the GPU machine's Python
   has torch, numpy, scipy and matplotlib but not monai, pydicom, SimpleITK or pynrrd, and nothing can
   be downloaded there); every later step runs with ``PYTHONPATH=/tmp/site:<repository>``.
2. **throughput**: ``benchmarks/gpu_throughput.py`` (plain loop against the engine at batch 16 and 64,
   float32 and bfloat16, and the default number of concurrent runs).
3. **demo**: ``demo --device cuda --workers 8`` (``--quick``: the quick demo), timed from outside,
   with its events as JSON lines.
4. **predict**: the demo's refined model over the demo's phantom loops with ``--workers 8``: loops/s
   and the precision predict chose.

Writes ``OUT/gpu_check.json`` (the machine, each step's exit status and seconds, the throughput table,
the demo's wall time and mean Dice per condition, predict's figures), rewritten after every step so a
run cut short still leaves what it measured, beside ``gpu_throughput.json``, ``demo_events.jsonl``,
``demo_runs.csv`` and ``gpu_check.log`` (every step's output): five files, within what the device
tool brings back. Only the standard library here: the steps import the project, this file does not.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from UltrasoundRefineLib.atomic import atomic_write_text  # noqa: E402  (the standard library only)

SITE = Path("/tmp/site")

#: seconds per step: together about 8 minutes, inside the device tool's 10-minute command limit
LIMITS = {"wheels": 60, "throughput": 150, "demo": 240, "predict": 60}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "/tmp/gpu_check"))
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (to check this script without a GPU)")
    ap.add_argument("--workers", type=int, default=8, help="demo and predict worker processes (default 8)")
    ap.add_argument("--quick", action="store_true", help="the quick demo and gpu_throughput.py --quick")
    ap.add_argument("--wheels", type=Path, default=REPO / ".whl", help="folder of wheels to install first")
    ap.add_argument("--no-wheels", action="store_true", help="use this Python's packages as they are")
    ap.add_argument("--work", type=Path, default=Path("/tmp/gpu_check_work"),
                    help="the demo's folder (not brought back; emptied first)")
    return ap.parse_args(argv)


class Check:
    """The steps' record, written to OUT/gpu_check.json after each step."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = args.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = open(self.out / "gpu_check.log", "a", encoding="utf-8")
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.result: dict = {
            "benchmark": "gpu_check",
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "settings": {"device": args.device, "workers": args.workers, "quick": args.quick, "limits_s": LIMITS},
            "machine": {"platform": platform.platform(), "python": platform.python_version(),
                        "cpu_cores": os.cpu_count(), "gpus": _nvidia_smi()},
            "steps": {},
        }

    def run(self, name: str, cmd: list[str], stdout: Path | None = None) -> int:
        """``cmd`` under its step's time limit, its output to the log (stdout to ``stdout`` if given)."""
        self.log.write(f"\n=== {name}: {' '.join(cmd)}\n")
        self.log.flush()
        start = time.perf_counter()
        sink = open(stdout, "w", encoding="utf-8") if stdout else self.log
        try:
            rc = subprocess.run(cmd, cwd=REPO, env=self.env, stdout=sink, stderr=self.log,
                                timeout=LIMITS[name]).returncode
        except subprocess.TimeoutExpired:
            rc = "timed out"
        finally:
            if stdout:
                sink.close()
        seconds = round(time.perf_counter() - start, 1)
        self.result["steps"][name] = {"rc": rc, "seconds": seconds}
        self.log.write(f"=== {name}: exit {rc} after {seconds} s\n")
        self.log.flush()
        self.save()
        return rc if isinstance(rc, int) else 124

    def save(self) -> None:
        atomic_write_text(self.out / "gpu_check.json", json.dumps(self.result, indent=1) + "\n")


def _nvidia_smi() -> list[str]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def install_wheels(check: Check) -> bool:
    args = check.args
    paths = [str(REPO)]
    wheels = sorted(args.wheels.glob("*.whl")) if args.wheels.is_dir() else []
    if not args.no_wheels:
        if not wheels:
            check.result["steps"]["wheels"] = {"rc": f"no wheels in {args.wheels}", "seconds": 0}
            check.save()
            return False
        rc = check.run("wheels", [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                                  "--no-compile", "--no-cache-dir", "--upgrade", "--target", str(SITE),
                                  *map(str, wheels)])
        check.result["steps"]["wheels"]["installed"] = [w.name for w in wheels]
        if rc != 0:
            return False
        paths.insert(0, str(SITE))
    check.env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return True


def throughput(check: Check) -> None:
    args = check.args
    out = check.out / "gpu_throughput.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_throughput.py"), "--device", args.device, "--out", str(out),
           "--note", "benchmarks/gpu_check.py"]
    if check.run("throughput", cmd + (["--quick"] if args.quick else [])) == 0 and out.is_file():
        check.result["throughput"] = json.loads(out.read_text())
        check.save()


def demo(check: Check) -> Path | None:
    """The demo, timed; returns its folder when it finished."""
    args = check.args
    shutil.rmtree(args.work, ignore_errors=True)
    events_path = check.out / "demo_events.jsonl"
    cmd = [sys.executable, "-m", "UltrasoundRefineLib", "demo", "--out", str(args.work / "demo"),
           "--device", args.device, "--workers", str(args.workers), "--json"]
    rc = check.run("demo", cmd + (["--quick"] if args.quick else []), stdout=events_path)
    events = [json.loads(line) for line in events_path.read_text().splitlines() if line.startswith("{")]
    figures: dict = {"wall_s": check.result["steps"]["demo"]["seconds"],
                     "runs_done": sum(e.get("event") == "run_done" for e in events)}
    start = next((e for e in events if e.get("event") == "experiment_start"), None)
    if start:
        figures["experiment"] = {k: start.get(k) for k in ("runs", "workers", "cpu_stages", "executor", "device")}
    runs_csv = args.work / "demo" / "runs.csv"
    if rc == 0 and runs_csv.is_file():
        shutil.copyfile(runs_csv, check.out / "demo_runs.csv")
        by: dict[str, list[float]] = {}
        for row in csv.DictReader(open(runs_csv, encoding="utf-8")):
            by.setdefault(row["condition"], []).append(float(row["dice"]))
        figures["mean_dice"] = {c: round(sum(v) / len(v), 4) for c, v in by.items()}
        figures["run_seconds_sum"] = round(sum(float(r["seconds"]) for r in csv.DictReader(open(runs_csv))), 1)
    check.result["demo"] = figures
    check.save()
    return args.work / "demo" if rc == 0 else None


def predict(check: Check, demo_dir: Path) -> None:
    args = check.args
    loops = demo_dir / "phantom" / "loops"
    out = args.work / "predict"
    cmd = [sys.executable, "-m", "UltrasoundRefineLib", "predict", "--model", str(demo_dir / "model"), str(loops),
           "--out", str(out), "--device", args.device, "--workers", str(args.workers), "--quiet"]
    rc = check.run("predict", cmd)
    summary = out / "summary.json"
    if rc == 0 and summary.is_file():
        s = json.loads(summary.read_text())
        seconds = check.result["steps"]["predict"]["seconds"]
        check.result["predict"] = {
            "loops": s.get("n_done"), "failed": s.get("n_failed"), "wall_s": seconds,
            "loops_per_s": round(s.get("n_done", 0) / max(seconds, 1e-9), 2),
            "device": s["model"].get("device"), "precision": s["model"].get("precision"),
        }
        check.save()


def main(argv=None) -> int:
    args = parse_args(argv)
    check = Check(args)
    check.save()
    if not install_wheels(check):
        print(f"gpu_check: the wheels did not install; see {check.out / 'gpu_check.log'}", file=sys.stderr)
        return 2
    throughput(check)
    demo_dir = demo(check)
    if demo_dir is not None and (demo_dir / "model").is_dir():
        predict(check, demo_dir)
    check.result["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    check.save()
    failed = [k for k, v in check.result["steps"].items() if v["rc"] != 0]
    print(json.dumps({k: check.result.get(k) for k in ("steps", "demo", "predict")}, indent=1))
    print(f"gpu_check: {check.out / 'gpu_check.json'}" + (f"; failed: {', '.join(failed)}" if failed else ""),
          file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
