"""benchmarks/gpu_throughput.py --quick on the CPU: the JSON it writes has every figure, each positive and
consistent with the steps it says it timed (CI has no GPU, so this is the path that must always work)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_throughput.py"


def test_quick_cpu_run_writes_positive_consistent_figures(tmp_path):
    out = tmp_path / "throughput.json"
    res = subprocess.run([sys.executable, str(BENCH), "--quick", "--device", "cpu", "--concurrent", "2",
                          "--note", "test", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "engine/plain" in res.stdout  # the table was printed
    r = json.loads(out.read_text())
    machine = r["machine"]
    assert machine["gpu"] == "none" and machine["device"] == "cpu"
    assert machine["cpu_cores"] >= 1 and machine["platform"] and machine["torch"]
    assert re.fullmatch(r"[a-z0-9.-]+", r["machine_tag"]) and f"{machine['cpu_cores']}cpu" in r["machine_tag"]
    s = r["settings"]
    assert s["quick"] and r["note"] == "test"

    # plain: float32 at each batch (no bfloat16 on the CPU, and it says so)
    assert [(p["batch"], p["precision"]) for p in r["plain"]] == [(b, "float32") for b in s["batches"]]
    assert any("bfloat16" in why for why in r["skipped"])
    for p in r["plain"]:
        assert p["images"] == p["batch"] * s["steps"]
    # engine: float32 at each batch, the timed epochs only (the warm-up epoch excluded)
    assert [(e["batch"], e["mode"]) for e in r["engine"]] == [(b, "float32") for b in s["batches"]]
    for e in r["engine"]:
        assert e["images"] == e["batch"] * s["steps"] * s["engine_epochs"]
        plain = next(p for p in r["plain"] if p["batch"] == e["batch"])
        assert abs(e["ratio_to_plain_float32"] - e["images_per_s"] / plain["images_per_s"]) < 0.01
    c = r["concurrent"]
    assert c["runs"] == 2 and len(c["per_run_images_per_s"]) == 2
    assert c["images"] == 2 * c["batch"] * s["steps"] * s["engine_epochs"]

    for row in r["plain"] + r["engine"] + [c]:
        assert row["images"] > 0 and row["seconds"] > 0 and row["images_per_s"] > 0
        assert abs(row["images_per_s"] - row["images"] / row["seconds"]) <= 0.02 * row["images_per_s"] + 0.1
    assert all(v > 0 for v in c["per_run_images_per_s"])
