"""How long recording one review decision takes (target: under 10 ms median).

A decision is a committed, fsynced SQLite transaction (WAL, synchronous=FULL): this is the time a
reviewer waits after pressing "accept" before the next loop can come up. Measured on a workspace with
a realistic number of items; "edited" decisions (which also write the mask file) are timed separately.

    python benchmarks/decision_latency.py [--items 500] [--decisions 1000] [--dir TMPDIR]

Writes benchmarks/results/decision_latency.json, naming the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from UltrasoundRefineLib import __version__  # noqa: E402
from UltrasoundRefineLib.atomic import atomic_write_text  # noqa: E402
from UltrasoundRefineLib.loop import Loop  # noqa: E402
from UltrasoundRefineLib.machine import cpu_model  # noqa: E402
from UltrasoundRefineLib.workspace import Workspace  # noqa: E402


def _filesystem(path: Path) -> str:
    """The file system type holding ``path`` (fsync cost depends on it)."""
    best, fstype = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            mount = parts[1]
            if str(path.resolve()).startswith(mount) and len(mount) > len(best):
                best, fstype = mount, parts[2]
    except OSError:
        pass
    return fstype


def _summary(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000.0
    return {
        "n": int(ms.size),
        "median_ms": round(float(np.median(ms)), 3),
        "p90_ms": round(float(np.percentile(ms, 90)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "max_ms": round(float(ms.max()), 3),
    }


def run(n_items: int, n_decisions: int, n_edits: int, base: Path, shape=(240, 320)) -> dict:
    root = Path(tempfile.mkdtemp(prefix="decision-latency-", dir=base)) / "ws"
    try:
        ws = Workspace.create(root)
        rng = np.random.default_rng(0)
        mask = np.zeros(shape, bool)
        mask[20:200, 40:280] = True
        t0 = time.perf_counter()
        sids = []
        for i in range(n_items):
            loop = Loop(frames=np.zeros((1, *shape), np.uint8), source_key=f"{i:016x}", stem=f"loop_{i:05d}",
                        group_key=f"patient{i // 3}")
            item, _ = ws.add_item(loop, root.parent / f"loop_{i:05d}.dcm")
            sids.append(ws.add_suggestion(item.id, mask, "threshold", float(rng.random()), 1))
        setup_s = time.perf_counter() - t0

        t = time.perf_counter()
        queue_len = len(ws.review_queue())  # what the panel asks for the next loop to show
        queue_s = time.perf_counter() - t

        # accept / reject, as a reviewer clicks through the queue (some suggestions decided twice:
        # the back button), each timed from the call to its return
        accept = []
        for k in range(n_decisions):
            sid = sids[k % len(sids)]
            t = time.perf_counter()
            ws.decide(sid, "accepted" if k % 4 else "rejected", "bench", seconds=1.0)
            accept.append(time.perf_counter() - t)

        edit = []
        for k in range(n_edits):
            t = time.perf_counter()
            ws.decide(sids[k % len(sids)], "edited", "bench", seconds=30.0, edited_mask=mask)
            edit.append(time.perf_counter() - t)

        ws.close()
        return {
            "decide_accept_reject": _summary(accept),
            "decide_edited_with_mask": _summary(edit),
            "review_queue_ms": round(queue_s * 1000, 3),
            "review_queue_length": queue_len,
            "setup_s": round(setup_s, 2),
        }
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=500)
    ap.add_argument("--decisions", type=int, default=1000)
    ap.add_argument("--edits", type=int, default=100)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                    help="where the throw-away workspace goes (its disk's fsync is what is measured)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "decision_latency.json")
    args = ap.parse_args(argv)

    load_before = os.getloadavg()
    result = run(args.items, args.decisions, args.edits, args.dir)
    out = {
        "benchmark": "decision_latency",
        "target": "median decide() under 10 ms",
        "command": " ".join(["python benchmarks/decision_latency.py", *(argv if argv is not None else sys.argv[1:])]),
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "host": platform.node(),
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "filesystem": _filesystem(args.dir),
            "workspace_dir": str(args.dir),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "settings": {"journal_mode": "wal", "synchronous": "FULL", "items": args.items,
                     "decisions": args.decisions, "edits": args.edits, "mask_shape": [240, 320]},
        "ultrasound_refine": __version__,
        "results": result,
        "meets_target": result["decide_accept_reject"]["median_ms"] < 10.0,
    }
    atomic_write_text(args.out, json.dumps(out, indent=2) + "\n")
    a = result["decide_accept_reject"]
    e = result["decide_edited_with_mask"]
    print(f"decide (accept/reject): median {a['median_ms']} ms, p99 {a['p99_ms']} ms over {a['n']}; "
          f"edited (with mask file): median {e['median_ms']} ms, p99 {e['p99_ms']} ms over {e['n']}; "
          f"review_queue of {result['review_queue_length']}: {result['review_queue_ms']} ms -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
