"""Run every (condition, repeat) of an experiment on a workspace, resumably, several at once.

Each repeat has a seed; every condition of a repeat uses that same seed, so a repeat shares its network
initialisation, data order, augmentation draws and the human masks drawn for it across conditions (a
paired design). What stays fixed: the workspace's test loops, its accepted suggestions and its pool of
human masks. A finished run is a JSON file under ``<workspace>/runs/<experiment>/``, written atomically: running again
skips it, and a run started twice (a Dask worker lost after saving it) returns it instead of running
again. Pretrained models are shared by the fine-tuning conditions of the same repeat. What runs the runs
is an executor (:mod:`UltrasoundRefineLib.executor`): processes here, or a Dask cluster.
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from UltrasoundRefineLib.atomic import atomic_write_text
from UltrasoundRefineLib.errors import UltrasoundRefineError
from UltrasoundRefineLib.executor import (
    Executor, concurrent_runs, cpu_stage_slots, executor_from_spec, machine_gpus, threads_per_run,
)
from UltrasoundRefineLib.experiment.spec import Condition, ExperimentSpec

log = logging.getLogger(__name__)

Events = Callable[[dict], None]

def variance_sources(spec: ExperimentSpec) -> tuple[list[str], list[str]]:
    """What a repeat varies and what it holds fixed, in words for the report."""
    varied = [
        "training data order and augmentation draws (seed)",
        "which human masks are drawn from the fine-tuning pool (seed; the same draw for every condition "
        "of a repeat)",
        "the validation hold-out used for early stopping (seed)",
    ]
    fixed = [
        "the test loops and their reference masks",
        "the accepted suggestions used for pretraining",
        "the pool of human masks the draws come from",
    ]
    if spec.shared_pretrain:
        varied.insert(0, "network initialisation of the human-only runs (seed)")
        fixed.append(f"pretraining: one model per auto-mask method (seed {spec.base_seed}) serves every repeat, "
                     "so the pretrained-only conditions give identical figures and the fine-tuned ones vary "
                     "only in what comes after pretraining")
    else:
        varied.insert(0, "network initialisation, pretraining included (seed)")
    fixed.append("threshold and fanfit are deterministic: their repeats give identical figures")
    return varied, fixed


class ExperimentError(UltrasoundRefineError):
    pass


@dataclass
class RunJob:
    condition: Condition
    repeat: int
    seed: int

    @property
    def key(self) -> str:
        return f"{self.condition.name}/seed-{self.seed}"


@dataclass
class ExperimentRun:
    """What :func:`run_experiment` returns: the runs as dicts (one per condition and repeat)."""

    spec: ExperimentSpec
    runs: list[dict]
    root: Path
    seconds: float
    skipped: int = 0
    machine: dict = field(default_factory=dict)

    def values(self, metric: str = "dice") -> dict[str, list[float]]:
        """Per condition, the metric of each repeat in seed order (the pairing the paired tests rely on)."""
        out: dict[str, list[float]] = {}
        for c in self.spec.conditions:
            runs = sorted((r for r in self.runs if r["condition"] == c.name), key=lambda r: r["seed"])
            out[c.name] = [float(r[metric]) for r in runs]
        return out

    def run_dir(self, condition: str, seed: int) -> Path:
        return self.root / "runs" / condition / f"seed-{seed}"


# --------------------------------------------------------------------------- data, cached per process
#: (workspace, size, inputs, part) -> what that part rendered: "test" (its samples and examples),
#: "pretrain:<method>", "human". Per part, so that runs needing other parts reuse what they share.
_RENDERED: dict[tuple, object] = {}


@dataclass
class ExperimentData:
    pretrain: dict[str, list]  # auto-mask method -> rendered samples of its accepted suggestions
    human: list  # rendered samples of the fine-tuning pool (human masks)
    test: list  # rendered samples of the test loops, original-grid masks kept
    test_examples: list  # workspace examples of the test loops (for the auto-mask conditions)


def load_data(workspace_path: Path, spec: ExperimentSpec, needs: set[str]) -> ExperimentData:
    """Render the workspace's examples once per process (rendering is the slow part of small runs): the
    test loops always, the pretraining examples of the auto-mask methods in ``needs`` and the human
    masks' pool if ``"human"`` is in it."""
    from UltrasoundRefineLib.train.config import TrainConfig
    from UltrasoundRefineLib.train.data import render_examples
    from UltrasoundRefineLib.workspace import Workspace
    from UltrasoundRefineLib.workspace.advice import nothing_to_score, nothing_to_train

    config = TrainConfig.from_dict({**TrainConfig().to_dict(), **spec.train})
    prefix = (str(workspace_path), config.size, tuple(config.inputs))
    parts = ["test", *(f"pretrain:{m}" for m in sorted(needs) if m in ("threshold", "fanfit"))]
    parts += ["human"] if "human" in needs else []
    missing = [part for part in parts if (*prefix, part) not in _RENDERED]
    if missing:
        with Workspace.open(workspace_path, readonly=True) as ws:
            for part in missing:
                if part == "test":
                    examples = ws.examples("test")
                    if not examples:
                        raise ExperimentError(f"{workspace_path}: {nothing_to_score(ws)}")
                    rendered = (render_examples(examples, config.size, config.inputs, keep_masks=True), examples)
                elif part == "human":
                    pool = ws.examples("finetune")
                    if not pool:
                        raise ExperimentError(f"{workspace_path}: {nothing_to_train(ws, 'finetune')}")
                    rendered = render_examples(pool, config.size, config.inputs)
                else:
                    method = part.split(":", 1)[1]
                    examples = ws.examples("pretrain", producer=method)
                    if not examples:
                        # The built-in comparison pretrains on both auto-mask methods; a session that
                        # suggested with one of them is better told it may leave the other out.
                        users = [c.name for c in spec.conditions if c.pretrain_on == method]
                        raise ExperimentError(
                            f"{workspace_path}: {nothing_to_train(ws, 'pretrain', method)}; or leave out the "
                            f"conditions that pretrain on {method} masks ({', '.join(users)}) with --spec "
                            f"(a TOML file whose `conditions` lists the others)")
                    rendered = render_examples(examples, config.size, config.inputs)
                _RENDERED[(*prefix, part)] = rendered
    test, test_examples = _RENDERED[(*prefix, "test")]
    pretrain = {part.split(":", 1)[1]: _RENDERED[(*prefix, part)] for part in parts if part.startswith("pretrain:")}
    return ExperimentData(pretrain, _RENDERED[(*prefix, "human")] if "human" in needs else [], test, test_examples)


def draw_human(n_pool: int, k: int, seed: int) -> list[int]:
    """Which human masks a repeat gets: the same for every condition of that repeat."""
    rng = np.random.default_rng([seed, 7919])
    return sorted(rng.choice(n_pool, size=min(k, n_pool), replace=False).tolist())


def _stage_config(spec: ExperimentSpec, stage: str):
    from UltrasoundRefineLib.train import finetune as ft
    from UltrasoundRefineLib.train.config import TrainConfig

    base = {"pretrain": ft.PRETRAIN_DEFAULTS, "finetune": ft.FINETUNE_DEFAULTS, "scratch": ft.SCRATCH_DEFAULTS}[stage]
    return TrainConfig.from_dict({**base.to_dict(), **spec.train, **getattr(spec, stage)})


# --------------------------------------------------------------------------- one job
def _record(job_condition: str, seed: int, repeat: int, metrics: dict, seconds: float, **extra) -> dict:
    return {
        "condition": job_condition,
        "repeat": repeat,
        "seed": seed,
        "dice": float(metrics["dice_mean"]),
        "iou": float(metrics["iou_mean"]),
        "accuracy": float(metrics["accuracy_mean"]),
        "hd95": float(metrics["hd95_mean"]),
        "seconds": round(float(seconds), 3),
        **extra,
    }


def _per_loop_summary(rows: list[dict]) -> dict:
    out = {"n": len(rows)}
    for name in ("dice", "iou", "accuracy", "hd95"):
        v = np.array([r[name] for r in rows], dtype=float)
        v = v[np.isfinite(v)]
        out[f"{name}_mean"] = float(v.mean()) if v.size else float("nan")
    return out


def _run_automask(data: ExperimentData, method: str) -> tuple[dict, dict]:
    from UltrasoundRefineLib.automask import suggest_mask
    from UltrasoundRefineLib.metrics import mask_metrics

    per_loop = {}
    for example in data.test_examples:
        loop = example.load()
        m = mask_metrics(suggest_mask(loop, method).mask, example.mask, loop.spacing)
        per_loop[example.stem] = m
    return _per_loop_summary(list(per_loop.values())), per_loop


def _score(members, data: ExperimentData, mode: str, min_agreement: float) -> tuple[dict, dict]:
    from UltrasoundRefineLib.train.evaluate import score_members

    result = score_members(members, data.test, mode, min_agreement)
    stems = [e.stem for e in data.test_examples]
    per_loop = {stem: {k: row[k] for k in ("dice", "iou", "accuracy", "hd95")}
                for stem, row in zip(stems, result["per_example"])}
    return result["summary"], per_loop


@dataclass
class Pending:
    """A run between its two stages: what the device stage (training, the network's forward pass over
    the test loops) hands the CPU stage (shape fit, scoring, saving). It pickles, so the CPU stage can
    run in another process while the device stage of the next run uses the GPU. An auto-mask run has
    no device stage: ``members`` is None and the CPU stage runs the method."""

    workspace_path: str
    spec_dict: dict
    condition: dict
    repeat: int
    seed: int
    root: str
    seconds: float  # the device stage's
    members: object = None  # (K, N, S, S) float32 numpy TTA probabilities of data.test
    postprocess: tuple[str, float] | None = None  # the spec's mode and the card's shape-fit agreement
    history: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def run_job(workspace_path: str, spec_dict: dict, condition: dict, repeat: int, seed: int, root: str,
            device: str) -> dict:
    """One (condition, repeat), both stages in turn, in this process or a worker. Returns the run record
    (also saved); a run saved already (by an earlier attempt of this task) is returned as it is."""
    stage = run_device_stage(workspace_path, spec_dict, condition, repeat, seed, root, device)
    return stage if isinstance(stage, dict) else run_cpu_stage(stage)


def run_device_stage(workspace_path: str, spec_dict: dict, condition: dict, repeat: int, seed: int, root: str,
                     device: str) -> dict | Pending:
    """A run's device stage: train (or load the shared pretrained model) and predict the test loops.
    Returns the saved record where the run is finished already, else a :class:`Pending` for
    :func:`run_cpu_stage`."""
    from UltrasoundRefineLib.experiment.spec import Condition, spec_from_dict
    from UltrasoundRefineLib.train import finetune as ft
    from UltrasoundRefineLib.train.evaluate import predict_members
    from UltrasoundRefineLib.train.model import card_postprocess, load_model

    spec = spec_from_dict(spec_dict)
    cond = Condition(**condition)
    root_path = Path(root)
    run_dir = root_path / "runs" / cond.name / f"seed-{seed}"
    if (run_dir / "run.json").is_file():
        return json.loads((run_dir / "run.json").read_text())
    pending = Pending(workspace_path, spec_dict, condition, repeat, seed, root, 0.0)
    if cond.automask:
        return pending
    needs = {cond.pretrain_on or "", "human" if cond.uses_human_masks else ""} - {""}
    data = load_data(Path(workspace_path), spec, needs)
    start = time.perf_counter()
    history: list[dict] = []
    extra: dict = {}
    human_idx = draw_human(len(data.human), spec.human_masks, seed) if cond.uses_human_masks else []
    human = [data.human[i] for i in human_idx]
    if human_idx:
        extra["human_masks"] = [data.human[i].key.split(":")[0] for i in human_idx]
    if cond.scratch:
        result = ft.scratch(human, config=_stage_config(spec, "scratch"), seed=seed, device=device,
                            out=run_dir / "model")
        model, history = result.model, [dict(h, stage="scratch") for h in result.history]
    else:
        pre_seed = spec.pretrain_seed(seed)
        pre_dir = root_path / "pretrained" / cond.pretrain_on / f"seed-{pre_seed}"
        if (pre_dir / "card.json").is_file():
            base = load_model(pre_dir, device=device)
            pre_history = json.loads((pre_dir / "history.json").read_text()) if (pre_dir / "history.json").is_file() else []
        else:
            result = ft.pretrain(data.pretrain[cond.pretrain_on], config=_stage_config(spec, "pretrain"),
                                 seed=pre_seed, device=device, out=pre_dir)
            base, pre_history = result.model, result.history
        history = [dict(h, stage="pretrain") for h in pre_history]
        if cond.finetune:
            result = ft.finetune(base, human, strategy=cond.finetune, config=_stage_config(spec, "finetune"),
                                 seed=seed, device=device, out=run_dir / "model")
            model = result.model
            history += [dict(h, stage="finetune") for h in result.history]
        else:
            model = base
            extra["model_dir"] = str(pre_dir.relative_to(root_path))
    pending.members = predict_members(model, data.test)
    pending.postprocess = (spec.postprocess, card_postprocess(model.card)[1])
    extra["postprocess"] = spec.postprocess
    extra.setdefault("model_dir", str((run_dir / "model").relative_to(root_path)))
    pending.history, pending.extra = history, extra
    pending.seconds = time.perf_counter() - start
    return pending


def run_cpu_stage(pending: Pending) -> dict:
    """A run's CPU stage: the shape fit and scoring of the device stage's predictions (or the auto-mask
    method itself), then the run record, saved. A run saved already is returned as it is."""
    from UltrasoundRefineLib.experiment.spec import Condition, spec_from_dict

    cond = Condition(**pending.condition)
    run_dir = Path(pending.root) / "runs" / cond.name / f"seed-{pending.seed}"
    if (run_dir / "run.json").is_file():  # an earlier attempt of this task saved it
        return json.loads((run_dir / "run.json").read_text())
    spec = spec_from_dict(pending.spec_dict)
    data = load_data(Path(pending.workspace_path), spec, set())  # the test loops
    start = time.perf_counter()
    if cond.automask:
        metrics, per_loop = _run_automask(data, cond.automask)
    else:
        metrics, per_loop = _score(pending.members, data, *pending.postprocess)
    record = _record(cond.name, pending.seed, pending.repeat, metrics,
                     pending.seconds + time.perf_counter() - start,
                     history=pending.history, per_loop=per_loop, **pending.extra)
    _save_run(run_dir, record)
    return record


# --------------------------------------------------------------------------- the runner
def default_workers(device: str) -> int:
    """Runs at once on this machine for ``device`` (as asked for: ``auto``, ``cuda``, ``cuda:1``, ``cpu``):
    :func:`~UltrasoundRefineLib.executor.concurrent_runs` of its GPUs and cores."""
    return concurrent_runs(machine_gpus(device), os.cpu_count() or 1)


def run_experiment(
    workspace_path: str | Path,
    spec: ExperimentSpec,
    *,
    device: str = "auto",
    workers: int | None = None,
    events: Events | None = None,
    executor: str | Executor | None = None,
    cpu_stages: int | None = None,
) -> ExperimentRun:
    """Run what is not done yet; returns every run of the spec (finished earlier or now).

    ``executor``: ``"local"`` (default: ``workers`` processes here, see :func:`default_workers`),
    ``"dask://HOST:PORT"``, or an :class:`~UltrasoundRefineLib.executor.Executor` the caller owns.
    On a Dask cluster ``device`` is resolved by each worker (``auto``: its GPU if it has one), and
    ``workspace_path`` must be the same path on every worker (a shared filesystem).

    ``cpu_stages``: how many runs' CPU stages (shape fit, scoring, saving) run beside the device stages
    (training, the forward pass) as tasks of their own, so that one run's shape fit does not keep the GPU
    from the next run's training. ``None``: on this machine's GPUs :func:`~UltrasoundRefineLib.executor.
    cpu_stage_slots` (more processes beside the ``workers``), else 0: each run's stages follow each other
    in one task. With an executor the caller owns, ``cpu_stages`` of its slots. The figures are the
    same either way."""
    from UltrasoundRefineLib.train.device import resolve_device

    emit = events or (lambda e: None)
    workspace_path = Path(workspace_path)
    spec.validate()
    if cpu_stages is not None and cpu_stages < 0:
        raise ExperimentError(f"cpu_stages {cpu_stages}: expected 0 or more")
    owned = executor is None or isinstance(executor, str)
    local = executor is None or (executor.strip() == "local" if isinstance(executor, str) else not executor.remote)
    device_name = device
    if local:  # this machine's device sizes the workers; a cluster's workers resolve their own
        choice = resolve_device(device)
        if choice.warning:
            log.warning(choice.warning)
        device_name = str(choice.device)
    cores = os.cpu_count() or 1
    if owned:
        # the GPUs as asked for (``cuda``: all of them, ``cuda:1``: that one), not as resolved (cuda:0)
        gpus = machine_gpus(device) if local else 0
        workers = max(1, workers or default_workers(device)) if local else 1  # a cluster: its workers
        if cpu_stages is None:
            cpu_stages = cpu_stage_slots(gpus, cores, workers) if local else 0
        slots = workers + cpu_stages
        executor = executor_from_spec(executor, slots=slots, threads=threads_per_run(cores, slots), gpus=gpus)
    try:
        root = workspace_path / "runs" / spec.name
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(root / "spec.json", json.dumps(spec.to_dict(), indent=1))
        return _run(workspace_path, spec, root, executor, device_name, emit, cpu_stages or 0)
    finally:
        if owned:
            executor.close()


def _run(workspace_path: Path, spec: ExperimentSpec, root: Path, executor: Executor, device: str,
         emit: Events, cpu_stages: int = 0) -> ExperimentRun:
    if executor.remote:  # a worker has its own working folder
        workspace_path, root = workspace_path.absolute(), root.absolute()

    jobs = [RunJob(c, r, s) for c in spec.conditions for r, s in enumerate(spec.seeds())]
    done: dict[str, dict] = {}
    for job in jobs:
        path = _run_dir(root, job) / "run.json"
        if path.is_file():
            done[job.key] = json.loads(path.read_text())
    skipped = len(done)
    todo = [j for j in jobs if j.key not in done]
    device_slots = max(1, executor.slots - cpu_stages)
    emit({"event": "experiment_start", "runs": len(jobs), "to_run": len(todo), "skipped": skipped,
          "workers": device_slots, "cpu_stages": cpu_stages, "executor": executor.name, "device": device})
    start = time.perf_counter()
    spec_dict = spec.to_dict()

    def finished(job: RunJob, record: dict) -> None:
        done[job.key] = record
        emit({"event": "run_done", "condition": job.condition.name, "repeat": job.repeat, "seed": job.seed,
              "dice": record["dice"], "seconds": record["seconds"], "done": len(done), "runs": len(jobs),
              "elapsed_s": round(time.perf_counter() - start, 1)})

    def failed(job: RunJob, stage: str, error: BaseException) -> None:
        emit({"event": "run_failed", "condition": job.condition.name, "repeat": job.repeat, "seed": job.seed,
              "stage": stage, "error": f"{type(error).__name__}: {error}"})

    def submit(pool, job: RunJob) -> Future:
        emit({"event": "run_start", "condition": job.condition.name, "repeat": job.repeat, "seed": job.seed})
        # staged: the device stage alone, its CPU stage a task of its own once it is done
        task = run_device_stage if cpu_stages else run_job
        return pool.submit(task, str(workspace_path), spec_dict, _condition_dict(job.condition), job.repeat,
                           job.seed, str(root), device)

    _schedule(spec, todo, done, root, executor, device_slots, submit, finished,
              cpu_stages=cpu_stages, submit_cpu=lambda pool, pending: pool.submit(run_cpu_stage, pending),
              failed=failed)
    runs = [done[j.key] for j in jobs]
    if executor.remote:  # this machine only scheduled the runs
        machine = {"executor": executor.name, "device": f"{device} (resolved by each worker)"}
    else:
        machine = {**_machine(device), "executor": executor.name}
    if cpu_stages:
        machine["cpu_stages"] = cpu_stages
    return ExperimentRun(spec, runs, root, time.perf_counter() - start, skipped, machine=machine)


def _run_dir(root: Path, job: RunJob) -> Path:
    return root / "runs" / job.condition.name / f"seed-{job.seed}"


def _condition_dict(c: Condition) -> dict:
    return {"name": c.name, "description": c.description, "automask": c.automask, "pretrain_on": c.pretrain_on,
            "finetune": c.finetune, "scratch": c.scratch}


def _schedule(spec: ExperimentSpec, todo: list[RunJob], done: dict[str, dict], root: Path, pool, workers: int,
              submit, finished, *, cpu_stages: int = 0, submit_cpu=None, failed=None) -> None:
    """Start jobs as their inputs allow: a deterministic condition runs once and its other repeats copy
    it; a pretrained model is trained by one job only, the jobs that need it wait for it. At most
    ``workers`` device stages (or whole runs) at once; with ``cpu_stages``, a device stage's result (a
    :class:`Pending`) goes to ``submit_cpu``, at most ``cpu_stages`` of those at once, and the freed
    device slot takes the next run meanwhile. A stage that raises is ``failed`` and the error raised."""
    running: dict[Future, RunJob] = {}  # device stages, or whole runs
    scoring: dict[Future, RunJob] = {}  # CPU stages
    waiting: list[tuple[RunJob, Pending]] = []  # device stage done, CPU stage not started yet

    def model_key(job: RunJob) -> tuple[str, int] | None:
        c = job.condition
        return (c.pretrain_on, spec.pretrain_seed(job.seed)) if c.pretrain_on else None

    def model_exists(key) -> bool:
        return (root / "pretrained" / key[0] / f"seed-{key[1]}" / "card.json").is_file()

    def unfinished() -> list[RunJob]:
        return [*running.values(), *scoring.values(), *(job for job, _ in waiting)]

    def state(job: RunJob) -> str:
        c = job.condition
        if spec.is_deterministic(c):
            if any(r["condition"] == c.name for r in done.values()):
                return "copy"
            if any(j.condition.name == c.name for j in unfinished()):
                return "wait"
        key = model_key(job)
        if key and not model_exists(key) and any(model_key(j) == key for j in running.values()):
            return "wait"  # another job is training the shared pretrained model
        return "ready"

    def priority(job: RunJob) -> int:
        key = model_key(job)
        trains_model = key is not None and not model_exists(key)
        return 0 if trains_model else {"scratch": 1, "automask": 2}.get(job.condition.kind, 3)

    def collect(fut: Future, job: RunJob, stage: str) -> None:
        try:
            result = fut.result()
        except BaseException as e:
            if failed is not None:
                failed(job, stage, e)
            raise
        if isinstance(result, Pending):
            waiting.append((job, result))
        else:
            finished(job, result)

    def collect_done() -> bool:
        found = False
        for tasks, stage in ((running, "device"), (scoring, "cpu")):
            for fut in [f for f in tasks if f.done()]:
                collect(fut, tasks.pop(fut), stage)
                found = True
        return found

    while todo or running or scoring or waiting:
        progressed = True
        while progressed:
            progressed = False
            while waiting and len(scoring) < max(1, cpu_stages):
                job, pending = waiting.pop(0)
                scoring[submit_cpu(pool, pending)] = job
                progressed = True
            for job in sorted(todo, key=priority):
                st = state(job)
                if st == "copy":
                    todo.remove(job)
                    finished(job, _copy_deterministic(job, done, root))
                    progressed = True
                elif st == "ready" and len(running) < workers:
                    todo.remove(job)
                    running[submit(pool, job)] = job
                    progressed = True
                    break  # states change once a job runs: look again
            progressed = collect_done() or progressed
        if running or scoring:
            wait([*running, *scoring], return_when=FIRST_COMPLETED)
            collect_done()
        elif todo and not waiting:
            raise ExperimentError(f"{len(todo)} runs could not be scheduled: {[j.key for j in todo]}")


def _copy_deterministic(job: RunJob, done: dict[str, dict], root: Path) -> dict:
    source = next(r for r in done.values() if r["condition"] == job.condition.name)
    record = dict(source, repeat=job.repeat, seed=job.seed, copied_from_seed=source["seed"])
    _save_run(_run_dir(root, job), record)
    return record


def _save_run(run_dir: Path, record: dict) -> None:
    # Atomic: a run killed while saving is run again on resume, never read back half-written.
    atomic_write_text(run_dir / "run.json", json.dumps(record, indent=1, default=float))


def _machine(device: str) -> dict:
    import torch

    from UltrasoundRefineLib.machine import describe

    info = {**describe(), "torch": torch.__version__, "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
