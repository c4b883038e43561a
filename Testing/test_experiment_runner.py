"""The experiment runner end to end on a tiny phantom workspace: runs, resume, statistics, report files."""

from __future__ import annotations

import csv
import json

import pytest

from UltrasoundRefineLib.experiment import spec_from_dict
from UltrasoundRefineLib.experiment.analysis import analyse
from UltrasoundRefineLib.experiment.runner import run_experiment

TINY = {"size": 32, "epochs": 1, "batch_size": 4, "min_steps_per_epoch": 1, "val_fraction": 0.0, "augment": False}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from UltrasoundRefineLib.phantom import write_phantom
    from UltrasoundRefineLib.workspace import Workspace, method_producer, simulate_review
    from UltrasoundRefineLib.io import read_mask

    root = tmp_path_factory.mktemp("exp")
    write_phantom(root / "phantom", 10, 5, n_frames=3, size=(96, 128))
    ws = Workspace.create(root / "ws")
    with ws:
        ws.add_loops([root / "phantom" / "loops"])
        ws.assign_splits(test_fraction=0.3, finetune_count=3, seed=0)
        report = ws.suggest("threshold", method_producer("threshold"))
        simulate_review(ws, root / "phantom" / "truth", min_dice=0.0, round=report.round)  # accept all
        for split in ("finetune", "test"):
            for item in ws.items(split=split):
                ws.add_human_mask(item.id, read_mask(root / "phantom" / "truth" / f"{item.stem}.nrrd"))
    return root / "ws"


def _spec(conditions):
    return spec_from_dict({
        "name": "tiny", "repeats": 2, "human_masks": 2, "conditions": conditions,
        "comparisons": [["threshold-pretrained+finetuned", "human-only"]],
        "train": TINY, "pretrain": {"epochs": 1}, "finetune": {"epochs": 1}, "scratch": {"epochs": 1},
    })


def test_runs_resume_and_report(workspace, tmp_path):
    events = []
    first = run_experiment(workspace, _spec(["threshold", "human-only"]), device="cpu", workers=1,
                           events=events.append)
    assert len(first.runs) == 4 and first.skipped == 0
    # threshold is deterministic: every repeat gives the same figure
    assert len(set(first.values()["threshold"])) == 1
    spec = _spec(["threshold", "human-only", "threshold-pretrained+finetuned"])
    second = run_experiment(workspace, spec, device="cpu", workers=1, events=events.append)
    assert second.skipped == 4 and len(second.runs) == 6  # the finished runs were not run again
    done = [e for e in events if e["event"] == "run_done"]
    assert len(done) == 6
    for run in second.runs:
        assert 0.0 <= run["dice"] <= 1.0 and run["seed"] in (0, 1)
        assert (second.root / "runs" / run["condition"] / f"seed-{run['seed']}" / "run.json").is_file()
    # both repeats of the fine-tuned condition drew the same human masks as human-only did
    by = {(r["condition"], r["seed"]): r for r in second.runs}
    for seed in (0, 1):
        assert by[("threshold-pretrained+finetuned", seed)]["human_masks"] == by[("human-only", seed)]["human_masks"]
    # the pretrained model is shared, saved once per seed
    assert sorted(p.name for p in (second.root / "pretrained" / "threshold").iterdir()) == ["seed-0", "seed-1"]

    paths = analyse(second, workspace, tmp_path / "report")
    rows = list(csv.DictReader(open(paths["runs"])))
    assert len(rows) == 6 and list(rows[0]) == ["condition", "repeat", "seed", "dice", "iou", "accuracy", "hd95",
                                                "seconds"]
    comps = list(csv.DictReader(open(paths["comparisons"])))
    pairs = {(c["a"], c["b"]) for c in comps}
    assert ("human-only", "threshold") in pairs and ("threshold-pretrained+finetuned", "human-only") in pairs
    # the p-values recompute from runs.csv with scipy (paired, in seed order)
    from scipy import stats

    values = {}
    for r in sorted(rows, key=lambda r: int(r["seed"])):
        values.setdefault(r["condition"], []).append(float(r["dice"]))
    c = next(c for c in comps if (c["a"], c["b"]) == ("threshold-pretrained+finetuned", "human-only"))
    expected = stats.ttest_rel(values["threshold-pretrained+finetuned"], values["human-only"]).pvalue
    if c["p"] not in ("", "nan"):
        assert float(c["p"]) == pytest.approx(expected, rel=1e-9)
    assert json.loads(paths["json"].read_text())
    assert "<table" in paths["html"].read_text()


def test_parallel_workers_with_shared_pretraining(workspace):
    spec = _spec(["threshold", "threshold-pretrained", "threshold-pretrained+finetuned"])
    spec.name, spec.shared_pretrain = "tiny-shared", True
    result = run_experiment(workspace, spec, device="cpu", workers=2)
    assert len(result.runs) == 6
    # one pretraining serves every repeat ...
    assert sorted(p.name for p in (result.root / "pretrained" / "threshold").iterdir()) == ["seed-0"]
    # ... so the pretrained-only condition is scored once and copied, like the auto masks
    pre = [r for r in result.runs if r["condition"] == "threshold-pretrained"]
    assert pre[0]["dice"] == pre[1]["dice"] and pre[1].get("copied_from_seed") == 0
    # the fine-tuned runs are real, separate runs with their own models
    fine = {r["seed"]: r for r in result.runs if r["condition"] == "threshold-pretrained+finetuned"}
    assert fine[0]["model_dir"] != fine[1]["model_dir"]
    assert all((result.root / r["model_dir"] / "card.json").is_file() for r in fine.values())

    # the two deterministic conditions are compared loop by loop instead, against scipy
    from scipy import stats

    from UltrasoundRefineLib.experiment.analysis import comparisons, per_loop_notes

    notes = per_loop_notes(result, comparisons(result))
    assert len(notes) == 1 and notes[0].startswith("threshold-pretrained against threshold loop by loop")
    a = next(r for r in result.runs if r["condition"] == "threshold-pretrained")["per_loop"]
    b = next(r for r in result.runs if r["condition"] == "threshold")["per_loop"]
    stems = sorted(a)
    p = stats.ttest_rel([a[k]["dice"] for k in stems], [b[k]["dice"] for k in stems]).pvalue
    assert f"paired t-test p = {p:.3g}" in notes[0]



def test_experiment_command_with_a_spec_file(workspace, tmp_path, capsys):
    from UltrasoundRefineLib.cli import main

    spec = tmp_path / "spec.toml"
    spec.write_text(
        'name = "cli"\nrepeats = 2\nhuman_masks = 2\nconditions = ["threshold", "human-only"]\n'
        "[train]\nsize = 32\nepochs = 1\nbatch_size = 4\nmin_steps_per_epoch = 1\nval_fraction = 0.0\n"
        "augment = false\n[scratch]\nepochs = 1\n"
    )
    out = tmp_path / "report"
    assert main(["experiment", str(workspace), "--spec", str(spec), "--out", str(out), "--workers", "1",
                 "--device", "cpu", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [e["event"] for e in lines].count("run_done") == 4
    assert {p.name for p in out.iterdir()} >= {"report.html", "report.json", "runs.csv", "comparisons.csv"}
    # a bad spec is a one-line error naming the file, exit 2
    spec.write_text("repeats = 1\n")
    assert main(["experiment", str(workspace), "--spec", str(spec), "--out", str(out)]) == 2
    assert str(spec) in capsys.readouterr().err


def test_worker_processes_get_one_library_thread_each(monkeypatch):
    """Workers sharing few cores: numpy's and scipy's BLAS pools sized to the worker's share, unless the
    user chose; the parent's environment is left as it was."""
    import os
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from UltrasoundRefineLib.executor import worker_thread_environment as _worker_threads

    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    with _worker_threads(1), ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        child = pool.submit(os.getenv, "OPENBLAS_NUM_THREADS").result()
        user = pool.submit(os.getenv, "MKL_NUM_THREADS").result()
    assert child == "1" and user == "3"
    assert "OPENBLAS_NUM_THREADS" not in os.environ and os.environ["MKL_NUM_THREADS"] == "3"


def test_conditions_are_scored_with_the_specs_postprocessing_not_the_cards(workspace):
    """``predict`` gives new models' readings (the card's ``reading``); an experiment scores each network
    as its spec says (``evidence`` by default), else every recipe would score alike wherever step 1 is
    right. The run's Dice is what the saved model gives with that mode."""
    from UltrasoundRefineLib.experiment.runner import load_data
    from UltrasoundRefineLib.train.evaluate import evaluate_model
    from UltrasoundRefineLib.train.model import load_model

    assert _spec(["threshold"]).postprocess == "evidence"
    spec = _spec(["threshold", "human-only"])
    spec.name, spec.postprocess = "tiny-basic", "basic"
    result = run_experiment(workspace, spec, device="cpu", workers=1)
    run = next(r for r in result.runs if r["condition"] == "human-only" and r["seed"] == 0)
    assert run["postprocess"] == "basic"
    model = load_model(result.root / run["model_dir"], device="cpu")
    assert model.card["postprocess"] == "reading"
    data = load_data(workspace, spec, set())
    pairs = [(e.load(), e.mask) for e in data.test_examples]
    assert run["dice"] == pytest.approx(evaluate_model(model, pairs, postprocess="basic")["summary"]["dice_mean"], abs=1e-6)
    with pytest.raises(ValueError, match="postprocess"):
        spec_from_dict({"postprocess": "sideways"})
