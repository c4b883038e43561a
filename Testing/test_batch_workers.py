"""Batch commands on several local worker processes (``--workers N``) and their progress display."""

from __future__ import annotations

import csv
import io
import json
from functools import partial
from pathlib import Path

import numpy as np

from UltrasoundRefineLib.automask import suggest_mask
from UltrasoundRefineLib.batch import run_batch
from UltrasoundRefineLib.cli import main
from UltrasoundRefineLib.executor import LocalExecutor
from UltrasoundRefineLib.io import read_mask
from UltrasoundRefineLib.progress import Progress, format_duration, format_progress


def _loops(phantom_set) -> list[str]:
    return [str(p) for p in sorted((phantom_set(4, 11) / "loops").iterdir())]


def test_clean_on_two_workers_writes_what_one_process_writes(phantom_set, tmp_path, capsys, monkeypatch):
    """The same manifest (rows in input order) and byte-identical cleaned DICOMs and NRRD copies."""
    import UltrasoundRefineLib.executor as executor_module

    made = []
    real = executor_module.executor_from_spec
    monkeypatch.setattr(executor_module, "executor_from_spec", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    loops = _loops(phantom_set)
    outs = {workers: tmp_path / f"w{workers}" for workers in (1, 2)}
    for workers, out in outs.items():
        assert main(["clean", *loops, "--method", "threshold", "--out", str(out), "--seed", "test-secret",
                     "--nrrd", "--min-quality", "0", "--workers", str(workers)]) == 0
    assert [type(e).__name__ for e in made] == ["InlineExecutor", "LocalExecutor"] and made[1].slots == 2
    err = capsys.readouterr().err
    # not a terminal: the per-loop lines as before, no in-place updates
    assert "\r" not in err and err.count("[1/4] phantom_0000.dcm: exported (threshold") == 2

    one, two = (list(csv.DictReader(open(out / "manifest.csv"))) for out in outs.values())
    assert two == one and len(one) == len(loops) and {r["status"] for r in one} == {"exported"}
    files = sorted(p.relative_to(outs[1]) for p in outs[1].rglob("*") if p.is_file())
    assert len(files) == 3 * len(loops) + 1  # each loop, its NRRD loop and mask; the manifest
    assert files == sorted(p.relative_to(outs[2]) for p in outs[2].rglob("*") if p.is_file())
    for rel in files:
        assert (outs[2] / rel).read_bytes() == (outs[1] / rel).read_bytes(), rel


def test_kept_folders_on_two_workers_are_what_one_process_writes(phantom_set, tmp_path):
    """--keep-folders names folders in the main process, from the seed: two workers write the same tree."""
    import shutil

    archive = tmp_path / "archive"
    for i, loop in enumerate(_loops(phantom_set)):
        (archive / f"patient{i % 2}" / "study").mkdir(parents=True, exist_ok=True)
        shutil.copy(loop, archive / f"patient{i % 2}" / "study" / Path(loop).name)
    outs = {workers: tmp_path / f"w{workers}" for workers in (1, 2)}
    for workers, out in outs.items():
        assert main(["clean", str(archive), "--method", "threshold", "--out", str(out), "--seed", "test-secret",
                     "--keep-folders", "--min-quality", "0", "--quiet", "--workers", str(workers)]) == 0
    one, two = (list(csv.DictReader(open(out / "manifest.csv"))) for out in outs.values())
    assert two == one and {r["status"] for r in one} == {"exported"}
    assert len({r["output"].rsplit("/", 1)[0] for r in one}) == 2  # two patients, two hashed folder paths
    files = sorted(p.relative_to(outs[1]) for p in outs[1].rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(outs[2]) for p in outs[2].rglob("*") if p.is_file())
    for rel in files:
        assert (outs[2] / rel).read_bytes() == (outs[1] / rel).read_bytes(), rel


def test_run_batch_on_two_workers_keeps_input_order_and_masks(phantom_set, tmp_path):
    """``predict``'s and ``automask``'s runner: the same summary entries and masks on two processes."""
    loops = _loops(phantom_set)
    produce = partial(suggest_mask, method="threshold")  # picklable, as ModelPredictor is
    one = run_batch(loops, tmp_path / "one", "threshold", produce, progress=False)
    with LocalExecutor(2) as executor:
        two = run_batch(loops, tmp_path / "two", "threshold", produce, progress=False, executor=executor)

    def without_time(entries):
        return [{k: v for k, v in e.items() if k != "seconds"} for e in entries]

    assert len(one.done) == len(loops) and without_time(two.done) == without_time(one.done)
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert [e["stem"] for e in summary["loops"]] == [Path(p).stem for p in loops]
    for e in one.done:
        assert np.array_equal(read_mask(tmp_path / "two" / e["mask"]), read_mask(tmp_path / "one" / e["mask"]))


def test_automask_on_two_workers_writes_what_one_process_writes(phantom_set, tmp_path):
    loops = _loops(phantom_set)
    for workers in (1, 2):
        assert main(["automask", *loops, "--method", "threshold", "--out", str(tmp_path / f"w{workers}"),
                     "--quiet", "--workers", str(workers)]) == 0
    one, two = (json.loads((tmp_path / f"w{w}" / "summary.json").read_text())["loops"] for w in (1, 2))
    assert [e["stem"] for e in two] == [e["stem"] for e in one] == [Path(p).stem for p in loops]
    for e in one:
        assert np.array_equal(read_mask(tmp_path / "w2" / e["mask"]), read_mask(tmp_path / "w1" / e["mask"]))


def test_workers_with_a_cluster_or_below_one_is_one_line(phantom_set, tmp_path, capsys):
    loops = _loops(phantom_set)[:1]
    assert main(["clean", *loops, "--method", "threshold", "--out", str(tmp_path / "a"), "--workers", "2",
                 "--executor", "dask://nowhere:8786"]) == 2
    assert "--workers is for --executor local" in capsys.readouterr().err
    assert main(["predict", "--model", str(tmp_path), *loops, "--out", str(tmp_path / "b"), "--workers", "0"]) == 2
    assert "--workers must be at least 1 (got 0)" in capsys.readouterr().err


def test_progress_line_formatting():
    assert format_duration(9) == "0:09" and format_duration(754) == "12:34" and format_duration(3725) == "1:02:05"
    assert format_progress(0, 20, 0.0) == "0/20 loops (0%)"
    assert format_progress(7, 20, 5.0) == "7/20 loops (35%), 1.40 loops/s, 0:09 left"
    assert format_progress(20, 20, 8.0) == "20/20 loops (100%), 2.50 loops/s, 0:00 left"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_updates_in_place_on_a_terminal_only():
    ticks = iter([0.0, 2.0, 4.0])
    tty = _Terminal()
    shown = Progress(2, stream=tty, clock=lambda: next(ticks))
    shown.loop_done("[1/2] a: exported")
    shown.message("ultrasound-refine: error: b: broken")
    shown.loop_done("[2/2] c: exported")
    shown.close()
    assert tty.getvalue() == ("\r\x1b[K1/2 loops (50%), 0.50 loops/s, 0:02 left"
                              "\r\x1b[Kultrasound-refine: error: b: broken\n"
                              "\r\x1b[K1/2 loops (50%), 0.50 loops/s, 0:02 left"
                              "\r\x1b[K2/2 loops (100%), 0.50 loops/s, 0:00 left\n")

    log = io.StringIO()  # a log file or pipe: the per-loop lines exactly, nothing rewritten
    shown = Progress(2, stream=log)
    shown.loop_done("[1/2] a: exported")
    shown.message("ultrasound-refine: error: b: broken")
    shown.loop_done()  # a failed loop: its message said it
    shown.close()
    assert log.getvalue() == "[1/2] a: exported\nultrasound-refine: error: b: broken\n"

    quiet = _Terminal()  # --quiet: messages only
    shown = Progress(2, enabled=False, stream=quiet)
    shown.loop_done("[1/2] a: exported")
    shown.message("ultrasound-refine: quarantined c: mask quality 0.10 below 0.50")
    shown.close()
    assert quiet.getvalue() == "ultrasound-refine: quarantined c: mask quality 0.10 below 0.50\n"
