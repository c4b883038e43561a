"""A run in two stages (device: training and the forward pass; CPU: shape fit, scoring, saving) gives
what one task running both gives, while the device slot goes to the next run before the CPU stage ends;
a CPU stage that fails is reported for its run and redone on resume, finished runs are not."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from UltrasoundRefineLib.executor import InlineExecutor, cpu_stage_slots
from UltrasoundRefineLib.experiment import runner
from UltrasoundRefineLib.experiment.analysis import analyse
from UltrasoundRefineLib.experiment.runner import run_experiment

# The tiny phantom workspace and spec of the runner's own tests (a fixture imported is a fixture here).
from test_experiment_runner import _spec, workspace  # noqa: F401

# an auto mask (CPU stage only), a run from scratch, a shared pretrained model fine-tuned
CONDITIONS = ["threshold", "human-only", "threshold-pretrained+finetuned"]
FIGURES = ("condition", "repeat", "seed", "dice", "iou", "accuracy", "hd95")


def _without_time(value):
    """A run record without its wall times (``seconds``, the history's ``elapsed_s``)."""
    if isinstance(value, dict):
        return {k: _without_time(v) for k, v in value.items() if k not in ("seconds", "elapsed_s")}
    if isinstance(value, list):
        return [_without_time(v) for v in value]
    return value


def _saved(result) -> dict:
    runs = {}
    for path in sorted((result.root / "runs").glob("*/seed-*/run.json")):
        runs[str(path.relative_to(result.root))] = _without_time(json.loads(path.read_text()))
    return runs


def _weights(result) -> dict:
    """Each saved model's tensors (not the file's hash: torch's archive names the temporary file)."""
    from UltrasoundRefineLib.train.model import load_weights

    return {str(p.parent.relative_to(result.root)): load_weights(p) for p in sorted(result.root.rglob("weights.pt"))}


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[m].keys() == b[m].keys() and all(torch.equal(a[m][k], b[m][k]) for k in a[m]) for m in a)


def test_staged_runs_give_the_sequential_runs_models_and_runs_csv(workspace, tmp_path):  # noqa: F811
    sequential_spec, staged_spec = _spec(CONDITIONS), _spec(CONDITIONS)
    sequential_spec.name, staged_spec.name = "sequential", "staged"
    threads = torch.get_num_threads()
    try:  # in this process, with a worker's one thread (the same arithmetic as the staged workers)
        sequential = run_experiment(workspace, sequential_spec, device="cpu", executor=InlineExecutor(threads=1),
                                    cpu_stages=0)
    finally:
        torch.set_num_threads(threads)
    events: list[dict] = []
    # one device worker and one CPU-stage worker: two spawned processes, one thread each
    staged = run_experiment(workspace, staged_spec, device="cpu", workers=1, cpu_stages=1, events=events.append)
    assert staged.machine["cpu_stages"] == 1 and "2 processes" in staged.machine["executor"]
    start = next(e for e in events if e["event"] == "experiment_start")
    assert (start["workers"], start["cpu_stages"]) == (1, 1)

    # the same records (figures, per-loop figures, training history, drawn masks, model folders) ...
    assert _saved(staged) == _saved(sequential) and len(_saved(staged)) == 6
    # ... the same weights ...
    weights = _weights(staged)
    assert len(weights) == 6 and _same_weights(weights, _weights(sequential))  # 2 pretrained, 4 refined

    # ... and the same runs.csv
    def figures(result, out):
        rows = csv.DictReader(open(analyse(result, workspace, out)["runs"]))
        return sorted(tuple(r[k] for k in FIGURES) for r in rows)

    assert figures(staged, tmp_path / "staged") == figures(sequential, tmp_path / "sequential")

    # the single device slot started the next run before the previous run's CPU stage was done: a
    # trained run's run_done comes after the next run's run_start (one task per run never does that)
    order = [(e["event"], e["condition"], e["seed"]) for e in events if e["event"] in ("run_start", "run_done")]
    overtaken = [key for i, (kind, *key) in enumerate(order) if kind == "run_done" and key[0] != "threshold"
                 and any(k == "run_start" for k, *_ in order[order.index(("run_start", *key)) + 1 : i])]
    assert overtaken


def test_a_failed_cpu_stage_is_reported_for_its_run_and_redone_on_resume(workspace, monkeypatch):  # noqa: F811
    spec = _spec(["threshold", "human-only"])
    spec.name = "cpu-stage-fails"
    real_score, calls = runner._score, []

    def second_fails(*args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("shape fit broke")
        return real_score(*args)

    monkeypatch.setattr(runner, "_score", second_fails)
    events: list[dict] = []
    with pytest.raises(RuntimeError, match="shape fit broke"):
        run_experiment(workspace, spec, device="cpu", executor=InlineExecutor(), cpu_stages=1, events=events.append)
    failed = [e for e in events if e["event"] == "run_failed"]
    assert len(failed) == 1 and failed[0]["stage"] == "cpu" and "shape fit broke" in failed[0]["error"]
    root = workspace / "runs" / spec.name / "runs"
    done = [e for e in events if e["event"] == "run_done"]
    assert [(e["condition"], e["seed"]) for e in done] == [("human-only", 0)]
    assert (root / "human-only" / "seed-0" / "run.json").is_file()
    bad = root / failed[0]["condition"] / f"seed-{failed[0]['seed']}"
    assert not (bad / "run.json").exists()  # no half-finished record of the failed run
    stamp = (root / "human-only" / "seed-0" / "run.json").stat().st_mtime_ns

    monkeypatch.setattr(runner, "_score", real_score)
    again = run_experiment(workspace, spec, device="cpu", executor=InlineExecutor(), cpu_stages=1)
    assert again.skipped == 1 and len(again.runs) == 4  # only the finished run was kept ...
    assert (root / "human-only" / "seed-0" / "run.json").stat().st_mtime_ns == stamp  # ... untouched
    assert (bad / "run.json").is_file()


def test_cpu_stage_slots():
    """Only beside GPUs; the cores the device runs leave, at least one, at most one per device run."""
    assert cpu_stage_slots(0, 16, 8) == 0
    assert cpu_stage_slots(1, 16, 8) == 8
    assert cpu_stage_slots(1, 12, 8) == 4
    assert cpu_stage_slots(1, 8, 8) == 1
    assert cpu_stage_slots(2, 64, 16) == 16


def test_experiment_command_takes_cpu_stages(workspace, tmp_path, capsys):  # noqa: F811
    """``--cpu-stages`` reaches the runner (in the experiment_start event); a negative count is one line."""
    from UltrasoundRefineLib.cli import main

    spec = tmp_path / "spec.toml"
    spec.write_text('name = "cli-stages"\nrepeats = 2\nconditions = ["threshold", "fanfit"]\n[train]\nsize = 32\n')
    assert main(["experiment", str(workspace), "--spec", str(spec), "--out", str(tmp_path / "r"), "--workers", "1",
                 "--cpu-stages", "1", "--device", "cpu", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert next(e for e in lines if e["event"] == "experiment_start")["cpu_stages"] == 1
    assert main(["experiment", str(workspace), "--spec", str(spec), "--cpu-stages", "-1", "--device", "cpu"]) == 2
    assert "cpu_stages -1: expected 0 or more" in capsys.readouterr().err


def test_each_part_of_the_data_is_rendered_once_per_process(workspace, monkeypatch):  # noqa: F811
    """Runs of different conditions share the parts they both need (the test loops above all, which
    every CPU stage reads) instead of rendering them again per combination."""
    from UltrasoundRefineLib.train import data as data_module

    monkeypatch.setattr(runner, "_RENDERED", {})
    rendered = []
    real = data_module.render_examples

    def counting(examples, size, inputs, keep_masks=False):
        rendered.append((len(examples), keep_masks))
        return real(examples, size, inputs, keep_masks)

    monkeypatch.setattr(data_module, "render_examples", counting)
    spec = _spec(CONDITIONS)
    pretrained = runner.load_data(workspace, spec, {"threshold"})
    assert len(rendered) == 2 and rendered[0][1]  # the test loops (masks kept), the pretraining set
    finetuned = runner.load_data(workspace, spec, {"threshold", "human"})
    assert len(rendered) == 3  # only the human masks' pool is new
    scoring = runner.load_data(workspace, spec, set())
    assert len(rendered) == 3 and scoring.test is pretrained.test is finetuned.test
    assert finetuned.pretrain["threshold"] is pretrained.pretrain["threshold"] and not scoring.human
