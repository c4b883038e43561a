"""``train`` and ``predict`` end to end through the command line, on a small phantom workspace:
SIGTERM then resume through the same command, fine-tuning from the pretrained model, and ``predict``
following exactly the output contract of ``automask`` on phantom loops and on pydicom's own files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from UltrasoundRefineLib.cli import main
from UltrasoundRefineLib.io import read_mask

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
SMALL = ["--size", "32"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, phantom_set, reviewed_session):
    pytest.importorskip("UltrasoundRefineLib.workspace")
    root = tmp_path_factory.mktemp("train_cli")
    phantom = phantom_set(8, 11)
    split = ["--test-fraction", "0.25", "--finetune-count", "2", "--seed", "0"]
    ws = reviewed_session(root / "ws", phantom, split=split, min_dice=0.5, import_masks=True)
    return {"root": root, "phantom": phantom, "ws": ws}


def _cli(*args: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "UltrasoundRefineLib", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


@pytest.fixture(scope="module")
def pretrained(workspace):
    """Pretrain through the CLI: SIGTERM after the first checkpoint, then the same command resumes."""
    out = workspace["root"] / "base"
    args = ["train", str(workspace["ws"]), "--stage", "pretrain", "--json", *SMALL, "--out", str(out)]
    proc = _cli(*args, "--epochs", "200")
    events = []
    try:
        deadline = time.monotonic() + 90
        for line in proc.stdout:
            events.append(json.loads(line))
            if events[-1]["event"] == "checkpoint" or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    events += [json.loads(line) for line in rest.splitlines()]
    assert proc.returncode == 143, err[-2000:]
    stopped = events[-1]
    assert stopped["event"] == "stopped" and (out / "checkpoint" / "checkpoint.pt").is_file()
    assert not (out / "card.json").exists()

    saved = stopped["epoch"]
    proc = _cli(*args, "--epochs", str(saved + 1))
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    events = [json.loads(line) for line in rest.splitlines()]
    assert [e["event"] for e in events if e["event"] == "resume"] == ["resume"]
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [saved + 1]
    assert events[-1]["event"] == "done"
    assert (out / "weights.pt").is_file() and (out / "card.json").is_file()
    assert not (out / "checkpoint").exists()
    return out


def test_pretrain_registers_the_model_with_test_metrics(workspace, pretrained):
    from UltrasoundRefineLib.workspace import Workspace

    card = json.loads((pretrained / "card.json").read_text())
    assert card["training"]["stage"] == "pretrain"
    assert card["metrics"]["test"]["n"] >= 1 and 0 <= card["metrics"]["test"]["dice_mean"] <= 1
    with Workspace.open(workspace["ws"], readonly=True) as ws:
        assert card["model_id"] in {m["id"] for m in ws.models()}


def test_suggest_with_the_model_makes_the_next_round(workspace, pretrained):
    """Iterative refinement: the model's predictions become suggestions, each with an uncertainty."""
    from UltrasoundRefineLib.workspace import Workspace

    model_id = json.loads((pretrained / "card.json").read_text())["model_id"]
    assert main(["suggest", str(workspace["ws"]), "--model", model_id, "--device", "cpu", "--quiet"]) == 0
    with Workspace.open(workspace["ws"], readonly=True) as ws:
        latest = ws.suggestions(round=ws.latest_round())
    assert latest and all(s.producer == f"model:{model_id}" for s in latest)
    assert all(s.uncertainty is not None and 0 <= s.uncertainty <= 1 for s in latest)
    assert all(s.quality == pytest.approx(1 - s.uncertainty, abs=1e-6) for s in latest)


def test_finetune_then_predict_follows_the_automask_contract(workspace, pretrained, tmp_path, capsys):
    refined = tmp_path / "refined"
    code = main(["train", str(workspace["ws"]), "--stage", "finetune", "--from", str(pretrained),
                 "--strategy", "frozen-encoder", "--epochs", "1", "--out", str(refined)])
    assert code == 0
    assert "done" in capsys.readouterr().err  # the progress bar went to stderr
    card = json.loads((refined / "card.json").read_text())
    assert card["training"]["strategy"] == "frozen-encoder" and card["training"]["from_model"]

    loops = workspace["phantom"] / "loops"
    out, ref = tmp_path / "pred", tmp_path / "auto"
    assert main(["predict", "--model", str(refined), str(loops), "--out", str(out), "--quiet"]) == 0
    assert main(["automask", str(loops), "--out", str(ref), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    reference = json.loads((ref / "summary.json").read_text())
    assert summary["method"] == f"model:{card['model_id']}" and summary["n_failed"] == 0
    assert set(reference) <= set(summary)
    assert set(summary["loops"][0]) == set(reference["loops"][0])
    assert sorted(e["stem"] for e in summary["loops"]) == sorted(p.stem for p in loops.glob("*.dcm"))
    for entry in summary["loops"]:
        image = sitk.ReadImage(str(out / entry["mask"]))
        mask = sitk.GetArrayFromImage(image)
        truth = read_mask(workspace["phantom"] / "truth" / f"{entry['stem']}.nrrd")
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1} and mask.shape == truth.shape
        assert 0 <= entry["quality"] <= 1
        assert image.GetSpacing() == sitk.ReadImage(str(ref / entry["mask"])).GetSpacing()
    assert summary["model"]["postprocess"] == card["postprocess"] == "reading"

    # --postprocess evidence: the loop's evidence where the network disagrees with it; the summary says so
    chosen = tmp_path / "pred-evidence"
    assert main(["predict", "--model", str(refined), str(loops), "--out", str(chosen), "--quiet",
                 "--postprocess", "evidence"]) == 0
    assert json.loads((chosen / "summary.json").read_text())["model"]["postprocess"] == "evidence"


@pytest.mark.parametrize("name", ["SC_rgb_jpeg_gdcm.dcm", "MR_small.dcm"])
def test_predict_on_pydicom_example_files(pretrained, tmp_path, name):
    from dicom_examples import bundled

    path = bundled(name)
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(pretrained), path, "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_done"] == 1
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / summary["loops"][0]["mask"])))
    assert mask.shape[-2:] == (int(ds.Rows), int(ds.Columns))


def test_user_errors_are_one_line_exit_2(workspace, pretrained, tmp_path, capsys):
    ws = str(workspace["ws"])
    assert main(["train", ws, "--stage", "finetune", "--out", str(tmp_path / "m")]) == 2
    assert "needs --from" in capsys.readouterr().err
    assert main(["train", ws, "--stage", "pretrain", "--out", str(pretrained)]) == 2
    assert "already holds a trained model" in capsys.readouterr().err
    assert main(["train", ws, "--stage", "scratch", "--from", str(pretrained), "--out", str(tmp_path / "m")]) == 2
    capsys.readouterr()
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    assert main(["predict", "--model", str(not_a_model), str(workspace["phantom"] / "loops"), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a model" in err and len(err.splitlines()) == 1
