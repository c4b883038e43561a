"""The experiment on a Dask cluster of two worker processes: the same runs as the local executor, a
killed worker's run redone, finished runs not redone."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

pytest.importorskip("distributed", reason='the Dask executor needs dask[distributed] (pip install ".[dask]")')

from distributed import Client, LocalCluster  # noqa: E402

from UltrasoundRefineLib.executor import DaskExecutor  # noqa: E402
from UltrasoundRefineLib.experiment.analysis import analyse  # noqa: E402
from UltrasoundRefineLib.experiment.runner import run_experiment  # noqa: E402

# The tiny phantom workspace and spec of the runner's own tests (a fixture imported is a fixture here).
from test_experiment_runner import _spec, workspace  # noqa: E402,F401

CONDITIONS = ["threshold", "threshold-pretrained+finetuned"]  # a shared pretrained model, fine-tuned
FIGURES = ("condition", "repeat", "seed", "dice", "iou", "accuracy", "hd95")


@pytest.fixture(scope="module")
def client():
    # The workers import this file (for _die_once) as the test run does: Testing/ on their path.
    here = str(Path(__file__).parent)
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                      env={"PYTHONPATH": path}) as cluster, Client(cluster) as c:
        yield c


def _die_once(marker: str, fn, *args):
    """The first task to get here kills its worker process (as a lost machine would), later ones run."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return fn(*args)
    os._exit(1)


class _Killing(DaskExecutor):
    """Counts what is submitted; with ``marker``, the first task's worker dies. One torch thread per
    worker whatever the machine, as in the local reference run (the same arithmetic, the same figures)."""

    def __init__(self, client, marker: Path | None = None):
        super().__init__(client, threads=1)
        self.marker, self.submitted = marker, 0

    def submit(self, fn, *args):
        self.submitted += 1
        if self.marker is None:
            return super().submit(fn, *args)
        return super().submit(_die_once, str(self.marker), fn, *args)


def _figures(result, out: Path) -> list[tuple]:
    rows = csv.DictReader(open(analyse(result, result.root.parents[1], out)["runs"]))
    return sorted(tuple(r[k] for k in FIGURES) for r in rows)


def test_dask_gives_the_local_runs_and_redoes_a_killed_workers_run(workspace, client, tmp_path):  # noqa: F811
    import torch

    from UltrasoundRefineLib.executor import InlineExecutor

    local_spec = _spec(CONDITIONS)
    local_spec.name = "on-local"
    threads = torch.get_num_threads()
    try:  # in this process (no workers to start), with a worker's one thread (the same arithmetic)
        local = run_experiment(workspace, local_spec, device="cpu", executor=InlineExecutor(threads=1))
    finally:
        torch.set_num_threads(threads)

    marker = tmp_path / "killed"
    dask_spec = _spec(CONDITIONS)
    dask_spec.name = "on-dask"
    executor = _Killing(client, marker)
    assert executor.slots == 2 and client.run(torch.get_num_threads) == {w: 1 for w in client.nthreads()}
    on_dask = run_experiment(workspace, dask_spec, device="cpu", executor=executor)
    assert marker.is_file()  # a worker did die mid-experiment ...
    assert len(on_dask.runs) == 4 and on_dask.skipped == 0  # ... and every run is there
    assert on_dask.machine["device"] == "cpu (resolved by each worker)"
    # the same figures as on local processes, run.json by run.json and in runs.csv
    assert _figures(on_dask, tmp_path / "dask") == _figures(local, tmp_path / "local")
    for run in on_dask.runs:
        assert (on_dask.root / "runs" / run["condition"] / f"seed-{run['seed']}" / "run.json").is_file()
    assert all((on_dask.root / r["model_dir"] / "card.json").is_file() for r in on_dask.runs if "model_dir" in r)

    # run again: every run is finished, nothing reaches the cluster
    again = _Killing(client)
    second = run_experiment(workspace, dask_spec, device="cpu", executor=again)
    assert again.submitted == 0 and second.skipped == 4
    assert _figures(second, tmp_path / "again") == _figures(on_dask, tmp_path / "dask")


def test_dask_runs_the_cpu_stages_as_tasks_of_their_own(workspace, client, tmp_path):  # noqa: F811
    """``--cpu-stages 1`` on the cluster: device and CPU stages are separate tasks, the figures as local."""
    import torch

    from UltrasoundRefineLib.executor import InlineExecutor

    local_spec, staged_spec = _spec(CONDITIONS), _spec(CONDITIONS)
    local_spec.name, staged_spec.name = "on-local", "on-dask-staged"
    threads = torch.get_num_threads()
    try:
        local = run_experiment(workspace, local_spec, device="cpu", executor=InlineExecutor(threads=1))
    finally:
        torch.set_num_threads(threads)
    executor = _Killing(client)
    tasks = []
    submit = executor.submit
    executor.submit = lambda fn, *args: tasks.append(fn.__name__) or submit(fn, *args)
    staged = run_experiment(workspace, staged_spec, device="cpu", executor=executor, cpu_stages=1)
    assert _figures(staged, tmp_path / "staged") == _figures(local, tmp_path / "local")
    # two threads: one for device stages, one for CPU stages; every non-copied run went through both
    assert sorted(set(tasks)) == ["run_cpu_stage", "run_device_stage"]
    assert tasks.count("run_cpu_stage") == tasks.count("run_device_stage") == 3  # threshold once, 2 fine-tuned


@pytest.fixture(scope="module")
def saved_run(workspace):  # noqa: F811
    """A human-only run trained and saved in this process: its task's arguments, its record, its model."""
    from UltrasoundRefineLib.experiment.runner import _condition_dict, run_job

    spec = _spec(["threshold", "human-only"])
    root = workspace / "runs" / "saved"
    args = (str(workspace), spec.to_dict(), _condition_dict(spec.conditions[1]), 0, 0, str(root), "cpu")
    record = run_job(*args)
    return args, record, root / record["model_dir"]


def test_workers_share_their_hosts_cores(client):
    """Two one-thread workers on this machine: each gets half its cores for torch (or what is asked),
    set on every worker."""
    import torch

    assert DaskExecutor(client).threads == max(1, (os.cpu_count() or 1) // 2)
    DaskExecutor(client, threads=3)
    assert client.run(torch.get_num_threads) == {w: 3 for w in client.nthreads()}
    DaskExecutor(client, threads=1)  # as the other tests expect


def test_a_task_started_twice_returns_the_saved_run(saved_run, client):
    """A worker lost after saving its run: the rescheduled task returns the saved run, not a new one."""
    from UltrasoundRefineLib.experiment.runner import run_job

    args, first, model_dir = saved_run
    saved = model_dir.parent / "run.json"
    stamp = saved.stat().st_mtime_ns
    again = client.submit(run_job, *args, pure=False).result()
    assert again == first and again["condition"] == "human-only" and saved.stat().st_mtime_ns == stamp


def test_predict_on_dask_writes_what_local_predict_writes(workspace, saved_run, client, tmp_path, capsys):  # noqa: F811
    """Each loop a task on the cluster: the same masks and summary entries as in this process."""
    import json

    import numpy as np

    from UltrasoundRefineLib.cli import main
    from UltrasoundRefineLib.io import read_mask

    model_dir = saved_run[2]
    loops = [str(p) for p in sorted((workspace.parent / "phantom" / "loops").iterdir())[:4]]
    address = client.scheduler.address.replace("tcp://", "dask://")
    outs = {}
    for where in ("local", address):
        out = tmp_path / ("local" if where == "local" else "dask")
        assert main(["predict", "--model", str(model_dir), *loops, "--out", str(out), "--quiet",
                     "--device", "cpu", "--executor", where]) == 0
        outs[where] = out
    local, dask = (json.loads((outs[w] / "summary.json").read_text()) for w in ("local", address))
    assert local["n_done"] == dask["n_done"] == len(loops) and dask["n_failed"] == 0

    def without_time(loops):
        return [{k: v for k, v in e.items() if k != "seconds"} for e in loops]

    assert without_time(dask["loops"]) == without_time(local["loops"])  # input order, same figures
    for e in local["loops"]:
        assert np.array_equal(read_mask(outs[address] / e["mask"]), read_mask(outs["local"] / e["mask"]))
    assert dask["model"]["device"] == "cpu (on each worker)"
    # a scheduler that is not there: one line naming it
    assert main(["predict", "--model", str(model_dir), *loops, "--out", str(tmp_path / "x"),
                 "--executor", "ftp://nowhere"]) == 2
    assert "unknown executor 'ftp://nowhere'" in capsys.readouterr().err


def test_clean_on_dask_writes_what_local_clean_writes(workspace, saved_run, client, tmp_path):  # noqa: F811
    """Each loop a task on the cluster, the model's masks (the source travels, the model loads on the
    worker): the same manifest and byte-identical cleaned DICOMs and NRRD copies (one de-identifier,
    copied to the workers, gives the same replacements)."""
    from UltrasoundRefineLib.cli import main

    loops = [str(p) for p in sorted((workspace.parent / "phantom" / "loops").iterdir())[:4]]
    address = client.scheduler.address.replace("tcp://", "dask://")
    outs = {where: tmp_path / where.split(":")[0] for where in ("local", address)}
    for where, out in outs.items():
        assert main(["clean", *loops, "--model", str(saved_run[2]), "--device", "cpu", "--out", str(out),
                     "--seed", "test-secret", "--nrrd", "--min-quality", "0", "--max-uncertainty", "1", "--quiet",
                     "--executor", where]) == 0

    local, dask = (list(csv.DictReader(open(out / "manifest.csv"))) for out in outs.values())
    assert dask == local and len(local) == len(loops)  # rows in input order, however the loops finished
    assert {r["status"] for r in local} == {"exported"}
    files = sorted(p.relative_to(outs["local"]) for p in outs["local"].rglob("*") if p.is_file())
    assert len(files) == 3 * len(local) + 1  # each loop, its NRRD loop and mask; the manifest
    assert files == sorted(p.relative_to(outs[address]) for p in outs[address].rglob("*") if p.is_file())
    for rel in files:
        assert (outs[address] / rel).read_bytes() == (outs["local"] / rel).read_bytes(), rel
