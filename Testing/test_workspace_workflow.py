"""The workflow as people try it: the README's session on a tiny phantom, without ``split`` (human masks
fine-tune unless their loops are in the test split); ``split --finetune`` / ``--finetune-from`` put named
loops in the fine-tuning split; and every "nothing to train" error names the command that fixes it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from UltrasoundRefineLib.cli import main
from UltrasoundRefineLib.workspace import Workspace

torch.set_num_threads(1)
TINY = ["--epochs", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def phantom(phantom_set):
    return phantom_set(4, 3)


def _hand_drawn(phantom: Path, dest: Path, stems: list[str]) -> Path:
    """Two 'hand-drawn' masks: the phantom's truth for those loops."""
    dest.mkdir(parents=True)
    for stem in stems:
        shutil.copy(phantom / "truth" / f"{stem}.nrrd", dest / f"{stem}.nrrd")
    return dest


def test_readme_workflow_without_split(phantom, tmp_path, capsys):
    ws = str(tmp_path / "study")
    hand = _hand_drawn(phantom, tmp_path / "hand", ["phantom_0001", "phantom_0002"])
    assert main(["init", ws]) == 0
    assert main(["add", ws, str(phantom / "loops")]) == 0
    assert main(["suggest", ws, "--method", "threshold", "--quiet"]) == 0
    assert main(["review", ws, "--simulate", "--truth", str(phantom / "truth"), "--min-dice", "0"]) == 0
    assert main(["import-masks", ws, str(hand)]) == 0
    assert main(["train", ws, "--stage", "pretrain", "--size", "32", *TINY, "--out", f"{ws}/models/base"]) == 0
    capsys.readouterr()
    code = main(["train", ws, "--stage", "finetune", "--from", f"{ws}/models/base", *TINY,
                 "--out", f"{ws}/models/refined"])
    assert code == 0, capsys.readouterr().err
    card = json.loads(Path(ws, "models", "refined", "card.json").read_text())
    assert card["training"]["stage"] == "finetune"
    assert card["training"]["n_train"] + card["training"]["n_val"] == 2  # the two imported masks
    with Workspace.open(ws, readonly=True) as w:
        assert {e.stem for e in w.examples("finetune")} == {"phantom_0001", "phantom_0002"}
        base = json.loads(Path(ws, "models", "base", "card.json").read_text())
        assert [m["id"] for m in w.models()] == [base["model_id"], card["model_id"]]


def test_human_masks_fine_tune_unless_their_loops_are_in_test(tmp_path, tiny_workspace):
    mask = np.ones((8, 10), bool)
    with tiny_workspace(tmp_path / "ws", 6, shape=(8, 10)) as ws:
        ids = {i.stem: i.id for i in ws.items()}
        ws.add_human_mask("l0", mask)  # never split: fine-tunes
        sid = ws.add_suggestion(ids["l1"], mask, "threshold", 0.5, 1)
        for stem, split in (("l2", "test"), ("l3", "pretrain"), ("l4", "pretrain"), ("l5", "finetune")):
            ws.conn.execute("UPDATE items SET split = ? WHERE id = ?", (split, ids[stem]))
        ws.add_human_mask("l2", mask)  # test: scores models, never trains them
        ws.add_human_mask("l3", mask)  # imported onto a pretraining loop: fine-tunes
        ws.add_human_mask("l5", mask)
        sid4 = ws.add_suggestion(ids["l4"], mask, "threshold", 0.5, 1)
        ws.decide(sid4, "edited", "ann", edited_mask=mask)  # a review's correction: pretrains, as before
        ws.decide(sid, "accepted", "ann")
        assert [e.stem for e in ws.examples("finetune")] == ["l0", "l3", "l5"]
        assert [e.stem for e in ws.examples("test")] == ["l2"]
        assert [e.stem for e in ws.examples("pretrain")] == ["l1", "l4"]


def test_split_puts_named_loops_in_finetune(tmp_path, capsys, tiny_workspace):
    root = tmp_path / "ws"
    tiny_workspace(root, 10, shape=(8, 10)).close()
    hand = tmp_path / "hand"
    hand.mkdir()
    for stem in ("l7", "l8"):
        (hand / f"{stem}.nrrd").write_bytes(b"")  # only the names count here
    (hand / "l9.seg.nrrd").write_bytes(b"")
    (hand / "notes.txt").write_text("not a mask")
    code = main(["split", str(root), "--test-fraction", "0.5", "--finetune-count", "0", "--seed", "0",
                 "--finetune", "l1", "l2", "--finetune-from", str(hand)])
    assert code == 0, capsys.readouterr().err
    with Workspace.open(root, readonly=True) as ws:
        split = {i.stem: i.split for i in ws.items()}
    assert sorted(s for s, v in split.items() if v == "finetune") == ["l1", "l2", "l7", "l8", "l9"]
    assert sum(v == "test" for v in split.values()) == 5  # the test target still holds, from the rest
    # a name that is no loop is an error, and nothing was changed
    code = main(["split", str(root), "--reassign", "--finetune", "l1", "nobody"])
    assert code == 2 and "nobody" in capsys.readouterr().err
    with Workspace.open(root, readonly=True) as ws:
        assert {i.stem: i.split for i in ws.items()} == split


def test_named_loops_bring_their_patient_group(tmp_path, tiny_workspace):
    with tiny_workspace(tmp_path / "ws", 6, shape=(8, 10), group=lambda i: "patient-a" if i < 2 else None) as ws:
        ws.assign_splits(test_fraction=0.5, finetune_count=0, seed=1, finetune=["l1"])
        split = {i.stem: i.split for i in ws.items()}
    assert split["l0"] == split["l1"] == "finetune"  # never one patient in training and test


def _err(capsys) -> str:
    return capsys.readouterr().err


def test_nothing_to_train_says_which_command_fixes_it(tmp_path, capsys, tiny_workspace):
    root = tmp_path / "ws"
    mask = np.ones((8, 10), bool)
    with tiny_workspace(root, 4, shape=(8, 10)) as ws:
        ids = [i.id for i in ws.items()]
    args = ["--size", "32", "--epochs", "1", "--out", str(tmp_path / "m")]
    # no suggestions at all
    assert main(["train", str(root), "--stage", "pretrain", *args]) == 2
    assert "ultrasound-refine suggest" in _err(capsys)
    # suggestions, none decided
    with Workspace.open(root) as ws:
        sids = [ws.add_suggestion(i, mask, "threshold", 0.5, 1) for i in ids]
    assert main(["train", str(root), "--stage", "pretrain", *args]) == 2
    assert "ultrasound-refine review" in _err(capsys)
    # no human masks
    assert main(["train", str(root), "--stage", "scratch", *args]) == 2
    assert "ultrasound-refine import-masks" in _err(capsys)
    # human masks, but all on test loops
    with Workspace.open(root) as ws:
        ws.decide(sids[0], "accepted", "ann")
        for i in ids[:2]:
            ws.conn.execute("UPDATE items SET split = 'test' WHERE id = ?", (i,))
            ws.add_human_mask(i, mask)
    assert main(["train", str(root), "--stage", "scratch", *args]) == 2
    err = _err(capsys)
    assert "test split" in err and "ultrasound-refine split" in err and "--finetune" in err


def test_naming_a_test_loop_moves_it_and_says_the_test_split_shrank(tmp_path, capsys, tiny_workspace):
    root = tmp_path / "ws"
    tiny_workspace(root, 6, shape=(8, 10)).close()
    assert main(["split", str(root), "--test-fraction", "0.34", "--finetune-count", "0"]) == 0
    with Workspace.open(root, readonly=True) as ws:
        in_test = sorted(i.stem for i in ws.items(split="test"))
    assert len(in_test) == 2
    capsys.readouterr()
    assert main(["split", str(root), "--finetune", in_test[0]]) == 0
    err = _err(capsys)
    assert f"1 loop left the test split for fine-tuning ({in_test[0]}); it holds 1 now" in err
    assert "--reassign" in err
    with Workspace.open(root, readonly=True) as ws:
        assert ws.split_of(in_test[0]) == "finetune"
    # naming a loop that was not in test says nothing of the kind
    assert main(["split", str(root), "--finetune", in_test[0]]) == 0
    assert "warning" not in _err(capsys)


def test_experiment_without_suggestions_of_a_method_names_the_conditions_to_leave_out(phantom, tmp_path, capsys,
                                                                                        reviewed_session):
    """The README's session suggests with fanfit only; the built-in comparison also pretrains on
    threshold masks. The error says both fixes: make those suggestions, or a spec without those conditions."""
    ws = str(reviewed_session(tmp_path / "study", phantom, split=["--test-fraction", "0.25", "--finetune-count", "1"],
                              import_masks=True))
    spec = tmp_path / "spec.toml"
    spec.write_text('repeats = 2\nhuman_masks = 1\nconditions = ["threshold", "fanfit-pretrained+finetuned"]\n'
                    "[train]\nsize = 32\nepochs = 1\n")
    capsys.readouterr()
    code = main(["experiment", ws, "--spec", str(spec), "--out", str(tmp_path / "r"), "--workers", "1",
                 "--device", "cpu"])
    err = _err(capsys)
    assert code == 2 and "Traceback" not in err, err
    assert "ultrasound-refine suggest" in err and "--method fanfit" in err
    assert "leave out the conditions that pretrain on fanfit masks (fanfit-pretrained+finetuned) with --spec" in err


def test_nothing_to_score_says_which_command_fixes_it(tmp_path, capsys, tiny_workspace):
    """An experiment scores on the test loops' human masks: without test loops it says how to hold some
    out; with test loops but no masks for them, it names them and says how to import masks."""
    root = tmp_path / "ws"
    tiny_workspace(root, 4, shape=(8, 10)).close()
    args = ["--out", str(tmp_path / "r"), "--workers", "1", "--device", "cpu"]
    assert main(["experiment", str(root), *args]) == 2
    err = _err(capsys)
    assert "no loops in the test split" in err and "ultrasound-refine split" in err and "import-masks" in err
    assert main(["split", str(root), "--test-fraction", "0.5", "--finetune-count", "0"]) == 0
    with Workspace.open(root, readonly=True) as ws:
        in_test = sorted(i.stem for i in ws.items(split="test"))
    _err(capsys)
    assert main(["experiment", str(root), *args]) == 2
    err = _err(capsys)
    assert f"none of the 2 loops in the test split ({', '.join(in_test)}) has a human mask" in err
    assert "ultrasound-refine import-masks" in err and "ultrasound-refine split" not in err


def test_commands_with_nothing_to_work_on_say_what_comes_first(phantom, tmp_path, capsys):
    """A step run too early does nothing: it says so, names the step before it, and exits 2 (it said
    '0 suggestions added', '0 reviewed', '0 masks written' and exited 0)."""
    ws = str(tmp_path / "study")
    assert main(["init", ws]) == 0
    assert main(["suggest", ws, "--method", "fanfit", "--quiet"]) == 2
    assert "ultrasound-refine add" in _err(capsys)
    assert main(["export-masks", ws, "--out", str(tmp_path / "out")]) == 2
    assert "nothing to export" in (err := _err(capsys)) and "ultrasound-refine add" in err
    assert main(["import-masks", ws, str(phantom / "truth" / "phantom_0001.nrrd")]) == 2
    err = _err(capsys)
    assert "no loop has the stem 'phantom_0001')" in err and "ultrasound-refine add" in err
    assert main(["add", ws, str(phantom / "loops")]) == 0
    _err(capsys)
    assert main(["review", ws, "--simulate", "--truth", str(phantom / "truth")]) == 2
    assert "no suggestions to review" in (err := _err(capsys)) and "ultrasound-refine suggest" in err
    assert main(["export-masks", ws, "--out", str(tmp_path / "out")]) == 2
    err = _err(capsys)
    assert "ultrasound-refine review" in err and "ultrasound-refine import-masks" in err
    # once there is something, the same commands work
    assert main(["suggest", ws, "--method", "threshold", "--quiet"]) == 0
    assert main(["review", ws, "--simulate", "--truth", str(phantom / "truth"), "--min-dice", "0"]) == 0
    assert main(["export-masks", ws, "--out", str(tmp_path / "out")]) == 0
