"""The real-scan benchmark's own logic: folds that keep each source together, and an absent dev set."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "real_devset.py"


def load():
    spec = importlib.util.spec_from_file_location("real_devset", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_folds_keep_each_source_together_and_balance_the_files():
    bench = load()
    stems = [f"big__{i}" for i in range(5)] + [f"mid__{i}" for i in range(3)] + ["one__x", "two__y", "three__z"]
    folds = bench.folds_by_source(stems, 3)
    assert sorted(s for f in folds for s in f) == sorted(stems)
    for fold in folds:
        for other in folds:
            if other is not fold:  # no source on both sides of a split
                assert not {s.split("__")[0] for s in fold} & {s.split("__")[0] for s in other}
    assert sorted(len(f) for f in folds) == [3, 3, 5]


def test_without_the_dev_set_the_benchmark_says_so(tmp_path, capsys):
    assert load().main(["--devset", str(tmp_path / "nowhere")]) == 2
    assert "no dev set" in capsys.readouterr().err
