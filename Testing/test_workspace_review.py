"""Headless review: decisions from CSV (bad rows reported by line, good rows applied) and the simulated
reviewer (its accept rate is what its Dice bound and mistake rate say)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from UltrasoundRefineLib.errors import InputError
from UltrasoundRefineLib.metrics import dice
from UltrasoundRefineLib.workspace import Workspace, apply_decisions_csv, simulate_review

SHAPE = (16, 20)


def box(top, left, bottom, right, shape=SHAPE) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[top:bottom, left:right] = True
    return m


def test_csv_bad_rows_are_reported_by_line_and_good_rows_applied(tmp_path, tiny_workspace):
    ws = tiny_workspace(tmp_path / "ws", 6, shape=SHAPE, mask=box(0, 0, 16, 20))
    edited = tmp_path / "edits" / "l4.nrrd"
    edited.parent.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(box(2, 2, 10, 10).astype(np.uint8)), str(edited))
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((5, 5), np.uint8)), str(tmp_path / "edits" / "small.nrrd"))
    csv_path = tmp_path / "decisions.csv"
    csv_path.write_text(
        "\n".join(
            [
                "item,decision,seconds,mask",  # 1: header
                "l0,accepted,1.5,",  # 2
                "l1,REJECT",  # 3: word forms and case are forgiven
                "nobody,accepted",  # 4: unknown item
                "l2,perhaps",  # 5: unknown decision
                "",  # 6: blank: ignored
                "# a comment",  # 7
                f"{ws.item('l3').id},accepted,soon",  # 8: seconds not a number
                "l4,edited,,edits/l4.nrrd",  # 9: edited with its mask (relative to the CSV)
                "l5,edited",  # 10: edited without a mask
                "l5,edited,,edits/small.nrrd",  # 11: mask of the wrong shape
                "l5,accepted,,edits/l4.nrrd",  # 12: a mask with 'accepted'
                "l2,rejected,2,x,extra",  # 13: too many cells
                "l2,rejected",  # 14
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    report = apply_decisions_csv(ws, csv_path, user="ann")
    assert [line for line, _ in report.applied] == [2, 3, 9, 14]
    errors = dict(report.errors)
    assert sorted(errors) == [4, 5, 8, 10, 11, 12, 13]
    assert "nobody" in errors[4] and "perhaps" in errors[5] and "soon" in errors[8]
    assert "needs the edited mask" in errors[10] and "(5, 5)" in errors[11] and "'accepted'" in errors[12]
    decided = {d["stem"]: d["decision"] for d in ws.decisions()}
    assert decided == {"l0": "accepted", "l1": "rejected", "l4": "edited", "l2": "rejected"}
    assert ws.decisions()[0]["seconds"] == 1.5 and ws.decisions()[0]["user"] == "ann"
    assert np.array_equal(ws.human_mask("l4"), box(2, 2, 10, 10))
    assert [s.stem for s in ws.review_queue()] == ["l3", "l5"]
    ws.close()


def test_csv_without_header_and_with_suggestion_ids(tmp_path, tiny_workspace):
    ws = tiny_workspace(tmp_path / "ws", 3, shape=SHAPE, mask=box(0, 0, 16, 20))
    p = tmp_path / "d.csv"
    p.write_text("l0,a\nl1,r\n", encoding="utf-8")
    assert len(apply_decisions_csv(ws, p, user="bob").applied) == 2
    l2 = ws.suggestions(item_id=ws.item("l2").id)[0].id
    p.write_text(f"suggestion_id,decision,user\n{l2},accepted,carol\nx,accepted,carol\n", encoding="utf-8")
    report = apply_decisions_csv(ws, p, user="bob")
    assert [line for line, _ in report.applied] == [2] and [line for line, _ in report.errors] == [3]
    assert ws.decisions()[-1]["user"] == "carol"
    ws.close()


def test_unusable_csv_files_are_refused_whole(tmp_path, tiny_workspace):
    ws = tiny_workspace(tmp_path / "ws", 1, shape=SHAPE, mask=box(0, 0, 16, 20))
    with pytest.raises(InputError, match="no such file"):
        apply_decisions_csv(ws, tmp_path / "missing.csv", user="ann")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00l0,\x00")
    with pytest.raises(InputError, match="not UTF-8"):
        apply_decisions_csv(ws, tmp_path / "bin.csv", user="ann")
    (tmp_path / "empty.csv").write_text("item,decision\n")
    with pytest.raises(InputError, match="no decision rows"):
        apply_decisions_csv(ws, tmp_path / "empty.csv", user="ann")
    (tmp_path / "cols.csv").write_text("item,decision,colour\nl0,accepted,red\n")
    with pytest.raises(InputError, match="unknown column"):
        apply_decisions_csv(ws, tmp_path / "cols.csv", user="ann")
    assert ws.decisions() == []
    ws.close()


def _truth_dir(tmp_path: Path, n: int) -> Path:
    d = tmp_path / "truth"
    d.mkdir()
    for i in range(n):
        sitk.WriteImage(sitk.GetImageFromArray(box(0, 0, 16, 20).astype(np.uint8)), str(d / f"l{i}.nrrd"))
    return d


def test_simulated_reviewer_follows_its_bound_and_mistake_rate(tmp_path, tiny_workspace):
    n = 160
    rng = np.random.default_rng(5)
    widths = [int(rng.integers(8, 21)) for _ in range(n)]  # Dice against the full truth: 2w / (w + 20)
    ws = tiny_workspace(tmp_path / "ws", n, shape=SHAPE, mask=lambda i: box(0, 0, 16, widths[i]))
    truth = _truth_dir(tmp_path, n)
    # no mistakes: the accept rate is exactly the share at or above the bound
    exact = simulate_review(ws, truth, min_dice=0.9, mistake_rate=0.0, seed=1)
    expected = sum(2 * w / (w + 20) >= 0.9 for w in widths) / n
    assert exact.reviewed == n and exact.mistakes == 0
    assert exact.accept_rate == exact.bound_rate == pytest.approx(expected)
    for d in ws.decisions():
        assert (d["decision"] == "accepted") == (exact.dice[d["stem"]] >= 0.9)
    # with mistakes: a fresh round, the same masks; each flip is recorded, the rate is as expected
    for s in ws.suggestions(round=1):
        ws.add_suggestion(s.item_id, ws.suggestion_mask(s.id), "threshold", s.quality, 2)
    sim = simulate_review(ws, truth, min_dice=0.9, mistake_rate=0.25, seed=3)
    assert sim.round == 2 and sim.reviewed == n
    sd = math.sqrt(0.25 * 0.75 / n)
    assert abs(sim.mistakes / n - 0.25) < 4 * sd
    assert abs(sim.accept_rate - sim.expected_accept_rate) < 4 * sd
    import json

    for d in ws.decisions(round=2):
        details = json.loads(d["details"])
        good = details["dice"] >= 0.9
        assert (d["decision"] == "accepted") == (good != details["mistake"])
    # deterministic given the seed; and everything decided: a second run has nothing to do
    assert simulate_review(ws, truth, min_dice=0.9, seed=3).reviewed == 0
    ws.close()


def test_simulated_reviewer_reports_missing_truth_and_bad_arguments(tmp_path, tiny_workspace):
    ws = tiny_workspace(tmp_path / "ws", 3, shape=SHAPE, mask=box(0, 0, 16, 20))
    truth = _truth_dir(tmp_path, 2)
    sim = simulate_review(ws, truth)
    assert sim.reviewed == 2 and sim.missing_truth == ["l2"]
    assert [s.stem for s in ws.review_queue()] == ["l2"]
    from UltrasoundRefineLib.errors import UltrasoundRefineError

    with pytest.raises(UltrasoundRefineError, match="min-dice"):
        simulate_review(ws, truth, min_dice=1.5)
    with pytest.raises(UltrasoundRefineError, match="mistake-rate"):
        simulate_review(ws, truth, mistake_rate=-0.1)
    with pytest.raises(InputError, match="no such truth folder"):
        simulate_review(ws, tmp_path / "nope")
    ws.close()


def test_simulated_reviewer_on_phantom_data(tmp_path):
    phantom = pytest.importorskip("UltrasoundRefineLib.phantom", reason="the phantom package has not landed")
    from UltrasoundRefineLib.automask import METHODS
    from UltrasoundRefineLib.workspace import method_producer

    try:
        import importlib

        method = "threshold"
        importlib.import_module(METHODS[method].split(":")[0])
    except ImportError:
        pytest.skip("the threshold auto-mask method has not landed")
    n = 10
    phantom.write_phantom(tmp_path / "ph", n, 11, n_frames=2, size=(120, 160))
    with Workspace.create(tmp_path / "ws") as ws:
        report = ws.add_loops([tmp_path / "ph" / "loops"])
        assert len(report.added) == n, report.errors
        assert len(ws.suggest(method, method_producer(method)).added) == n
        sim = simulate_review(ws, tmp_path / "ph" / "truth", min_dice=0.9, mistake_rate=0.0, seed=0)
        assert sim.reviewed == n and sim.missing_truth == [] and sim.errors == []
        # the reviewer accepted exactly the suggestions whose Dice (by the project's metric) reaches 0.9
        truth_dir = tmp_path / "ph" / "truth"
        from UltrasoundRefineLib.io import read_mask

        bound = 0
        for s in ws.suggestions():
            d = dice(ws.suggestion_mask(s.id), read_mask(truth_dir / f"{s.stem}.nrrd"))
            assert d == pytest.approx(sim.dice[s.stem], abs=1e-6)
            assert (s.decision == "accepted") == (d >= 0.9)
            bound += d >= 0.9
        assert sim.accept_rate == pytest.approx(bound / n)
        # accepted suggestions of items outside the test split are the pretraining set
        assert len(ws.examples("pretrain")) == sim.accepted
