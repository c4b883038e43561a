"""Fixtures that several test files share. (Dice for tests is the library's own,
``UltrasoundRefineLib.metrics.dice``, which Testing/test_metrics.py checks against MONAI.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from UltrasoundRefineLib.train.config import TrainConfig

#: The smallest training the tests run: 32 px, a 3-level U-Net with 4-16 channels, two short epochs.
TINY = TrainConfig(
    size=32,
    net={"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1},
    epochs=2,
    batch_size=4,
    min_steps_per_epoch=2,
    val_fraction=0.25,
    log_every=0,
    lr=1e-2,
)


@pytest.fixture(scope="session")
def phantom_set(tmp_path_factory):
    """``phantom_set(n, seed)``: the folder ``ultrasound-refine phantom --n N --seed S`` writes (``loops/``,
    ``truth/``), made once per ``(n, seed)`` for the whole run, so read it and never write into it."""
    made: dict[tuple[int, int], Path] = {}

    def make(n: int, seed: int) -> Path:
        if (n, seed) not in made:
            from UltrasoundRefineLib.cli import main

            out = tmp_path_factory.mktemp(f"phantom-n{n}-s{seed}")
            assert main(["phantom", "--n", str(n), "--seed", str(seed), "--out", str(out)]) == 0
            made[n, seed] = out
        return made[n, seed]

    return make


@pytest.fixture(scope="session")
def reviewed_session():
    """``reviewed_session(ws, phantom, split=None, min_dice=0.0, import_masks=False)``: the README's first
    steps through the command line on a :func:`phantom_set` folder: ``init``, ``add`` its loops,
    ``split`` with the arguments ``split`` (none: never split), ``suggest --method threshold``,
    ``review --simulate`` against its truth at ``min_dice``, and ``import-masks`` of its truth. Returns
    the workspace's path."""
    from UltrasoundRefineLib.cli import main

    def make(ws: Path, phantom: Path, *, split: list[str] | None = None, min_dice: float = 0.0,
             import_masks: bool = False) -> Path:
        assert main(["init", str(ws)]) == 0
        assert main(["add", str(ws), str(phantom / "loops")]) == 0
        if split is not None:
            assert main(["split", str(ws), *split]) == 0
        assert main(["suggest", str(ws), "--method", "threshold", "--quiet"]) == 0
        assert main(["review", str(ws), "--simulate", "--truth", str(phantom / "truth"),
                     "--min-dice", str(min_dice)]) == 0
        if import_masks:
            assert main(["import-masks", str(ws), str(phantom / "truth")]) == 0
        return ws

    return make


@pytest.fixture(scope="session")
def db_rows():
    """``db_rows(root, table)``: how many rows ``table`` of the workspace at ``root`` holds, read by plain
    sqlite (not through the library under test, and whatever state the library would refuse to open)."""
    import sqlite3

    def count(root: Path, table: str) -> int:
        conn = sqlite3.connect(Path(root) / "workspace.db")
        try:
            return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        finally:
            conn.close()

    return count


@pytest.fixture
def tiny_workspace():
    """``tiny_workspace(root, n, shape=, mask=, group=)``: a new workspace at ``root`` holding ``n`` blank
    one-frame loops ``l0``, ``l1``, ... (source keys ``0...0``, ``0...1``, ...). ``mask`` (an ``(H, W)``
    array, or a function of the loop's number) gives each loop one suggestion (threshold, quality 0.5,
    round 1); ``group`` (a function of the number) its patient group. The caller closes it."""
    from UltrasoundRefineLib.loop import Loop
    from UltrasoundRefineLib.workspace import Workspace

    def make(root: Path, n: int, *, shape=(16, 20), mask=None, group=None) -> Workspace:
        ws = Workspace.create(root)
        for i in range(n):
            loop = Loop(frames=np.zeros((1, *shape), np.uint8), source_key=f"{i:016x}", stem=f"l{i}",
                        group_key=group(i) if group else None)
            item, _ = ws.add_item(loop, root.parent / f"l{i}.nrrd")
            if mask is not None:
                ws.add_suggestion(item.id, mask(i) if callable(mask) else mask, "threshold", 0.5, 1)
        return ws

    return make


@pytest.fixture
def held_suggest(monkeypatch):
    """``automask.suggest_mask`` held until ``release`` is set, recording the threads it ran in
    (``ran_in``): proves that whoever asked for a mask was not held up while it was made. ``real`` is
    the unheld function."""
    import threading
    import types

    from UltrasoundRefineLib import automask

    release, ran_in, real = threading.Event(), [], automask.suggest_mask

    def held(loop, method):
        ran_in.append(threading.current_thread())
        release.wait(30)
        return real(loop, method)

    monkeypatch.setattr(automask, "suggest_mask", held)
    return types.SimpleNamespace(release=release, ran_in=ran_in, real=real)


@pytest.fixture
def ocr_words():
    """``ocr_words(image)``: the words tesseract reads in a frame (``(H, W)`` or ``(H, W, 3)`` uint8), upper
    case, stripped of punctuation (:func:`UltrasoundRefineLib.ocr.words`). Skips the test where tesseract
    is not installed (Debian: ``tesseract-ocr``; ``.ci/run`` installs it)."""
    from UltrasoundRefineLib import ocr

    if not ocr.available():
        pytest.skip("tesseract is not installed (Debian: tesseract-ocr)")
    return ocr.words


@pytest.fixture(scope="session")
def burned_words():
    """``burned_words(phantom, stem)``: what the phantom burned into loop ``stem`` of a :func:`phantom_set`
    folder (its truth JSON's fake PHI): the patient's names and ID, the institution's name, upper case,
    words of four letters or more (shorter ones OCR reads by chance in any picture)."""

    def words(phantom: Path, stem: str) -> set[str]:
        phi = json.loads((phantom / "truth" / f"{stem}.json").read_text())["fake_phi"]
        found = {phi["PatientID"], *phi["PatientName"].upper().split("^"), *phi["InstitutionName"].upper().split()}
        return {w for w in found if len(w) >= 4}

    return words


@pytest.fixture
def review_workspace():
    """``make(root, frame_counts)``: a workspace at ``root / "ws"`` of synthetic loops (one per frame
    count, as NRRD at 0.3 mm, each a little different so each is its own item) with a threshold
    suggestion each: what the Slicer module's review opens."""
    import SimpleITK as sitk

    from UltrasoundRefineLib import slicer_selftest
    from UltrasoundRefineLib.workspace import Workspace, method_producer

    def make(root: Path, frame_counts=(3, 1)) -> Path:
        loops = root / "loops"
        loops.mkdir()
        for i, n_frames in enumerate(frame_counts):
            loop, _truth = slicer_selftest.synthetic_loop(n_frames=n_frames)
            frames = loop.frames.copy()
            frames[:, 20 + 5 * i, 10] = 200  # different content -> different items
            image = sitk.GetImageFromArray(frames)  # (T, H, W): k = time, as the readers expect
            image.SetSpacing((0.3, 0.3, 1.0))
            sitk.WriteImage(image, str(loops / f"loop{i}.nrrd"))
        with Workspace.create(root / "ws") as ws:
            assert len(ws.add_loops([loops]).added) == len(frame_counts)
            ws.suggest("threshold", method_producer("threshold"))
        return root / "ws"

    return make
