"""One Dice and one IoU for the whole library (UltrasoundRefineLib.metrics), with one answer for empty
masks, checked against MONAI's."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.metrics import compute_confusion_matrix_metric, compute_dice, compute_iou, get_confusion_matrix

from UltrasoundRefineLib.metrics import dice, iou, mask_metrics

REPO = Path(__file__).resolve().parents[1]

EMPTY = np.zeros((6, 7), bool)
SOME = np.zeros((6, 7), bool)
SOME[1:4, 2:6] = True  # 12 pixels


def _monai(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    p = torch.as_tensor(pred, dtype=torch.float32)[None, None]
    t = torch.as_tensor(truth, dtype=torch.float32)[None, None]
    return {"dice": float(compute_dice(p, t, include_background=True, ignore_empty=False)[0, 0]),
            "iou": float(compute_iou(p, t, include_background=True, ignore_empty=False)[0, 0]),
            "accuracy": float(compute_confusion_matrix_metric(
                "accuracy", get_confusion_matrix(p, t, include_background=True))[0, 0])}


@pytest.mark.parametrize("pred, truth, expected", [
    (EMPTY, EMPTY, 1.0),  # two empty masks agree perfectly
    (EMPTY, SOME, 0.0),
    (SOME, EMPTY, 0.0),
    (SOME, SOME, 1.0),
])
def test_empty_masks_one_answer_everywhere(pred, truth, expected):
    m = mask_metrics(pred, truth)
    assert dice(pred, truth) == iou(pred, truth) == m["dice"] == m["iou"] == expected
    assert _monai(pred, truth)["dice"] == expected  # the field's convention (ignore_empty=False)
    assert m["hd95"] == (math.inf if pred.any() != truth.any() else 0.0)


def test_partial_overlap_by_hand():
    other = np.zeros_like(SOME)
    other[2:5, 4:7] = True  # 9 pixels, 4 shared with SOME
    assert dice(SOME, other) == pytest.approx(2 * 4 / (12 + 9))
    assert iou(SOME, other) == pytest.approx(4 / (12 + 9 - 4))


def test_agrees_with_monai_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.random((2, 24, 31)) < rng.random(2)[:, None, None]
        ours, theirs = mask_metrics(a, b), _monai(a, b)
        for name in ("dice", "iou", "accuracy"):
            assert ours[name] == pytest.approx(theirs[name], abs=1e-6), name


def test_shapes_must_match():
    with pytest.raises(ValueError, match="shapes differ"):
        dice(SOME, SOME[:-1])


def test_dice_and_iou_do_not_load_torch():
    code = "import sys; from UltrasoundRefineLib.metrics import dice; print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert res.stdout.split() == ["False"]


def test_tta_disagreement_is_one_minus_the_mean_dice_with_the_consensus():
    """The model's uncertainty is this Dice too, with its empty-mask answer: members that all see nothing
    agree (0), a member that sees nothing where the consensus sees something disagrees fully."""
    from UltrasoundRefineLib.train.model import tta_uncertainty

    members = torch.zeros(3, 4, 5)
    members[:2, :2] = 0.9  # two members: the top two rows
    members[2, :1] = 0.9  # the third: the top row only -> consensus is the top two rows
    expected = 1 - (1 + 1 + 2 * 5 / (5 + 10)) / 3
    assert tta_uncertainty(members) == pytest.approx(expected, abs=1e-12)
    assert tta_uncertainty(torch.zeros(3, 4, 5)) == 0.0
    members[2] = 0.0
    assert tta_uncertainty(members) == pytest.approx(1 - 2 / 3, abs=1e-12)
