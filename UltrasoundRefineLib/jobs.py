"""The command-line runs the Slicer panel starts as child processes (``train``, ``suggest``,
``clean``): their argument lists and command lines, the JSON-lines progress ``train --json`` prints,
parsed and put in words, and what the panel shows while a run goes and when it ends (:class:`JobMonitor`).

Shared by the panel and its tests; no Qt, no Slicer. The train options here are the CLI's own
(``cli/train.py``), so a run the panel starts is one anybody can repeat on the command line.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from UltrasoundRefineLib.errors import UltrasoundRefineError
from UltrasoundRefineLib.train.postprocess import POSTPROCESS_MODES

TRAIN_STAGES = ["pretrain", "finetune", "scratch"]
TRAIN_STRATEGIES = ["full", "frozen-encoder", "low-lr-encoder"]
AUTOMASK_METHODS = ["fanfit", "threshold"]
#: Where ``ultrasound-refine clean`` takes its masks from: an auto-mask method, a trained model, or a
#: workspace's decided masks.
CLEAN_SOURCES = [*AUTOMASK_METHODS, "model", "workspace"]
#: How a model's masks are cleaned up in a clean run: what its card says (no ``--postprocess``), or one
#: of ``clean --postprocess``'s modes for this run (new models' cards say "reading", the most accurate on
#: real scans from scanners the model never saw; older cards "evidence" or "shape").
CLEAN_POSTPROCESS_CARD = "model card's"
CLEAN_POSTPROCESS_CHOICES = [CLEAN_POSTPROCESS_CARD, *POSTPROCESS_MODES]
TRAIN_DEVICES = ["auto", "cuda", "cpu"]
#: Exit code of ``ultrasound-refine train`` stopped on request: checkpoint kept, the same command resumes.
TRAIN_STOPPED_EXIT = 143
#: Job kinds: "train" and "suggest" report in the panel's training section, "clean" and "install" (pip
#: installing what the library needs) in their own.
JOB_KINDS = ("train", "suggest", "clean", "install")


def parse_progress_line(line: str) -> Optional[dict]:
    """One line of a child process's stdout: a progress event (a JSON object with "event"), or None."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


def _duration(seconds) -> str:
    seconds = int(round(float(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def describe_progress(event: dict, epochs: Optional[int] = None) -> str:
    """A progress event of ``ultrasound-refine train --json`` as one short line for the panel.

    ``epochs``: the run's most epochs (from its "start" event), shown as "epoch 3/40".
    """
    kind = event.get("event", "")
    epochs = event.get("epochs") or epochs
    if kind == "start":
        return "{stage} ({strategy}) on {device}: {n_train} training, {n_val} validation examples, up to {epochs} epochs".format(
            stage=event.get("stage"), strategy=event.get("strategy"), device=event.get("device"),
            n_train=event.get("n_train"), n_val=event.get("n_val"), epochs=epochs,
        )
    if kind == "warning":
        return "warning: {message}".format(message=event.get("message"))
    if kind == "resume":
        return "resuming after epoch {epoch} from the checkpoint".format(epoch=event.get("epoch"))
    if kind == "early_stop":
        return "early stop at epoch {epoch}: best validation Dice at epoch {best}".format(
            epoch=event.get("epoch"), best=event.get("best_epoch")
        )
    if kind == "stopped":
        return "stopped after epoch {epoch}; the checkpoint is kept, Train resumes it".format(epoch=event.get("epoch"))
    parts = [] if kind in ("step", "epoch") else [str(kind)]
    if event.get("epoch") is not None:
        parts.append(f"epoch {event['epoch']}" + (f"/{epochs}" if epochs else ""))
    if event.get("step") is not None:
        parts.append(f"step {event['step']}")
    if event.get("loss") is not None:
        parts.append(f"loss {float(event['loss']):.4f}")
    if event.get("val_dice") is not None:
        parts.append(f"val Dice {float(event['val_dice']):.4f}")
    if event.get("test_dice") is not None:
        parts.append(f"test Dice {float(event['test_dice']):.4f}")
    if event.get("elapsed_s") is not None:
        parts.append(f"{_duration(event['elapsed_s'])} elapsed")
    if event.get("eta_s") is not None:
        parts.append(f"about {_duration(event['eta_s'])} left")
    if event.get("model_id"):
        parts.append("model {model_id}".format(model_id=event["model_id"]))
    if event.get("message"):
        parts.append(str(event["message"]))
    return " · ".join(p for p in parts if p)


def progress_percent(event: dict) -> Optional[int]:
    """0-100 from elapsed and remaining time, else from epoch/epochs; None when the event cannot say."""
    elapsed, eta = event.get("elapsed_s"), event.get("eta_s")
    if elapsed is not None and eta is not None and float(elapsed) + float(eta) > 0:
        return int(round(100.0 * float(elapsed) / (float(elapsed) + float(eta))))
    if event.get("epoch") is not None and event.get("epochs"):
        return int(round(100.0 * float(event["epoch"]) / float(event["epochs"])))
    return None


def train_arguments(
    workspace,
    stage: str,
    out,
    *,
    epochs: int = 0,
    device: str = "auto",
    seed: int = 0,
    from_model: Optional[str] = None,
    strategy: str = "full",
    extra: str = "",
) -> list:
    """Arguments after ``-m UltrasoundRefineLib`` for one ``train`` run of a workspace.

    Progress comes as JSON lines (``--json``); a "stop" line on stdin stops the run with its checkpoint
    kept (``--stop-on-stdin``: PythonSlicer forwards stdin, not signals). ``epochs`` 0 leaves the most
    epochs to the stage's defaults. ``extra`` is split like a shell would and appended; an ``--from`` there wins over ours.
    """
    if stage not in TRAIN_STAGES:
        raise UltrasoundRefineError(f"unknown training stage {stage!r}; choose from {TRAIN_STAGES}")
    if strategy not in TRAIN_STRATEGIES:
        raise UltrasoundRefineError(f"unknown fine-tuning strategy {strategy!r}; choose from {TRAIN_STRATEGIES}")
    extra_args = shlex.split(extra or "")
    args = ["train", str(workspace), "--stage", stage, "--device", device, "--seed", str(int(seed)), "--json",
            "--stop-on-stdin", "--out", str(out)]
    if int(epochs) > 0:
        args += ["--epochs", str(int(epochs))]
    if stage == "finetune":
        if from_model and "--from" not in extra_args:
            args += ["--from", str(from_model)]
        args += ["--strategy", strategy]
    return args + extra_args


def clean_arguments(source: str, inputs, out, *, model=None, workspace=None, keep_names: bool = False,
                    keep_folders: bool = False, postprocess: Optional[str] = None) -> list:
    """Arguments after ``-m UltrasoundRefineLib`` for ``ultrasound-refine clean``:
    ``clean (--method {threshold,fanfit} | --model DIR | --workspace WS) INPUT... --out DIR
    [--keep-names | --keep-folders] [--postprocess MODE]``
    (with ``--workspace`` and no input, the workspace's own loops).

    ``keep_names`` keeps names and folders as they are, so ``keep_folders`` (folders kept under hashed
    names) only counts without it. ``postprocess``: one of :data:`CLEAN_POSTPROCESS_CHOICES`, used with a
    model only (None or :data:`CLEAN_POSTPROCESS_CARD`: what the model's card says)."""
    if postprocess not in (None, *CLEAN_POSTPROCESS_CHOICES):
        raise UltrasoundRefineError(f"unknown post-processing {postprocess!r}; choose from {CLEAN_POSTPROCESS_CHOICES}")
    if source in AUTOMASK_METHODS:
        origin = ["--method", source]
    elif source == "model":
        if not model or str(model) in ("", "."):
            raise UltrasoundRefineError("Choose the model folder to clean with.")
        origin = ["--model", str(model)]
    elif source == "workspace":
        if not workspace or str(workspace) in ("", "."):
            raise UltrasoundRefineError("Choose the workspace whose decided masks clean its loops.")
        origin = ["--workspace", str(workspace)]
    else:
        raise UltrasoundRefineError(f"unknown mask source {source!r}; choose from {CLEAN_SOURCES}")
    inputs = [str(i) for i in inputs if str(i) not in ("", ".")]
    if not inputs and source != "workspace":  # a workspace without inputs cleans its own loops
        raise UltrasoundRefineError("Choose the folder (or file) of loops to clean.")
    if not out or str(out) in ("", "."):
        raise UltrasoundRefineError("Choose the output folder for the cleaned loops.")
    naming = ["--keep-names"] if keep_names else ["--keep-folders"] if keep_folders else []
    if source == "model" and postprocess not in (None, CLEAN_POSTPROCESS_CARD):
        naming += ["--postprocess", postprocess]
    return ["clean", *origin, *inputs, "--out", str(out), *naming]


def suggest_arguments(workspace, model: str, device: str = "auto") -> list:
    """Arguments after ``-m UltrasoundRefineLib`` for the next round's suggestions by a trained model
    (``suggest WS --model MODEL``): the method's iterative refinement, the model's masks reviewed next."""
    if not model:
        raise UltrasoundRefineError("there is no trained model in this workspace yet: train first")
    return ["suggest", str(workspace), "--model", str(model), "--device", device]


# ---------------------------------------------------------------------- the child process's command


def library_parent_dir() -> str:
    """The folder that holds the UltrasoundRefineLib package (next to the Slicer module once installed)."""
    return str(Path(__file__).resolve().parent.parent)


def find_python_slicer(extra_dirs: Sequence[str] = ()) -> str:
    """Slicer's own Python launcher (PythonSlicer), which runs the library's command line in a child
    process: on PATH, next to this Python, or in ``extra_dirs`` (Slicer's ``bin`` folder)."""
    found = shutil.which("PythonSlicer")
    if found:
        return found
    for folder in (os.path.dirname(sys.executable), *extra_dirs):
        for name in ("PythonSlicer", "PythonSlicer.exe"):
            candidate = os.path.join(folder, name)
            if os.path.isfile(candidate):
                return candidate
    raise UltrasoundRefineError("PythonSlicer was not found: training needs Slicer's own Python executable.")


def child_command(args: Sequence[str], python: str) -> tuple[str, list, dict]:
    """``(program, arguments, environment additions)`` of ``python -m UltrasoundRefineLib args...``,
    with the library importable in the child (PYTHONPATH) and its output unbuffered (progress arrives
    as it happens)."""
    python_path = os.pathsep.join(p for p in (library_parent_dir(), os.environ.get("PYTHONPATH", "")) if p)
    return python, ["-m", "UltrasoundRefineLib", *map(str, args)], {"PYTHONPATH": python_path, "PYTHONUNBUFFERED": "1"}


def slicer_child_command(args: Sequence[str], slicer_home: str = "") -> tuple[str, list, dict]:
    """:func:`child_command` with Slicer's own PythonSlicer (found next to this Python, on PATH or in
    ``slicer_home``'s ``bin`` folder)."""
    return child_command(args, find_python_slicer([os.path.join(slicer_home or "", "bin")]))


def command_line(program: str, args: Sequence[str]) -> str:
    """The command as one line a user can paste into a shell (logged, and shown at the top of the log)."""
    return " ".join([str(program)] + [shlex.quote(str(a)) for a in args])


def latest_model(workspace, stage: Optional[str] = "pretrain") -> Optional[str]:
    """The id of the most recent registered model of a training stage (any stage: None), or None."""
    models = [
        m for m in workspace.models()
        if stage is None or (m.get("card") or {}).get("training", {}).get("stage") == stage
    ]
    return models[-1]["id"] if models else None


def train_output_dir(models_dir, stage: str, seed: int, strategy: str = "full") -> Path:
    """Where a run writes its model: an interrupted run of the same recipe (a folder without a
    card.json) is resumed; a finished one is kept and the new run gets the next free name."""
    name = f"{stage}-{strategy}-seed{int(seed)}" if stage == "finetune" else f"{stage}-seed{int(seed)}"
    base = Path(models_dir)
    candidate, n = base / name, 1
    while (candidate / "card.json").exists():
        n += 1
        candidate = base / f"{name}-{n}"
    return candidate


def workspace_train_arguments(workspace, stage: str, epochs: int = 0, device: str = "auto", seed: int = 0,
                              extra: str = "", strategy: str = "full") -> list:
    """:func:`train_arguments` for an open workspace: the output folder of the recipe, and for a
    fine-tune the latest pretrained model unless ``extra`` names one with ``--from``."""
    from_model = None
    if stage == "finetune" and "--from" not in shlex.split(extra or ""):
        from_model = latest_model(workspace, "pretrain")
        if from_model is None:
            raise UltrasoundRefineError(
                "Fine-tuning starts from a pretrained model, and this workspace has none yet: pretrain first."
            )
    return train_arguments(
        workspace.root, stage, train_output_dir(workspace.models_dir, stage, seed, strategy), epochs=epochs,
        device=device, seed=seed, from_model=from_model, strategy=strategy, extra=extra,
    )


# ---------------------------------------------------------------------- what the panel shows of a run


def job_buttons(panel_ready: bool, workspace_open: bool, running_section: Optional[str], clean_source: str = "",
                clean_keep_names: bool = False) -> dict:
    """Which of the panel's run buttons work: one child run at a time, training and the next round's
    suggestions only with a workspace open, Cancel only in the section of the run that goes, a model
    folder and its post-processing only for cleaning with a model, hashed folder names only while file
    names are not kept (kept names keep their folders). ``running_section``: the running job's
    :attr:`JobMonitor.section`, or None."""
    idle = running_section is None
    return {
        "trainButton": panel_ready and workspace_open and idle,
        "suggestNextRoundButton": panel_ready and workspace_open and idle,
        "cancelTrainButton": running_section == "train",
        "cleanButton": panel_ready and idle,
        "cancelCleanButton": running_section == "clean",
        "cleanModelPathLineEdit": panel_ready and clean_source == "model",
        "cleanPostprocessComboBox": panel_ready and clean_source == "model",
        "cleanKeepFoldersCheckBox": panel_ready and not clean_keep_names,
    }



class JobMonitor:
    """One child run as the panel shows it: its output lines in, status text, percent and log lines out.

    ``kind`` is one of :data:`JOB_KINDS`. No Qt: the panel polls :class:`~UltrasoundRefineLib.childjob.ChildJob`
    and puts what this returns into its widgets.
    """

    #: What the status says when a run starts, by kind.
    START_TEXT = {"train": "Starting...", "suggest": "Suggesting with the latest model...", "clean": "Cleaning...",
                  "install": "Installing Python packages (pip, in a separate process)..."}
    TAIL_LINES = 20

    def __init__(self, kind: str):
        if kind not in JOB_KINDS:
            raise UltrasoundRefineError(f"unknown job kind {kind!r}; choose from {list(JOB_KINDS)}")
        self.kind = kind
        self.status = self.START_TEXT[kind]
        self.percent: Optional[int] = 0 if kind == "train" else None
        self.epochs: Optional[int] = None
        self.tail: list[str] = []  # the last plain output lines, shown when the run fails
        self.failed = False  # it ended with an error, not on request: the panel shows the tail

    @property
    def section(self) -> str:
        """The panel section whose status label, log and Cancel button belong to this run."""
        return self.kind if self.kind in ("clean", "install") else "train"

    @property
    def stops_gracefully(self) -> bool:
        """Cancel asks a training run to stop (it saves a checkpoint first); other runs are killed at
        once (clean --resume skips what is written; suggest keeps what it has recorded)."""
        return self.kind == "train"

    def stopping_text(self) -> str:
        return "Stopping after saving a checkpoint..." if self.stops_gracefully else "Stopping..."

    def line(self, line: str) -> Optional[str]:
        """Take one output line; returns the line to append to the log, or None (steps only update
        the status). :attr:`status` and :attr:`percent` follow the run's progress events."""
        event = parse_progress_line(line)
        if event is None or self.kind != "train":
            if not line.strip():
                return None
            self.tail = (self.tail + [line])[-self.TAIL_LINES:]
            return line
        if event.get("event") == "start":
            self.epochs = event.get("epochs")
        self.status = describe_progress(event, self.epochs)
        percent = progress_percent(event)
        if percent is not None:
            self.percent = percent
        return None if event.get("event") == "step" else self.status

    def finished(self, exit_code: int, stopped: bool) -> bool:
        """The run ended with ``exit_code`` (``stopped``: Cancel was pressed); sets :attr:`status`.
        Returns True when it succeeded."""
        if stopped:
            if self.kind == "train" and exit_code == TRAIN_STOPPED_EXIT:
                self.status = "Stopped. The checkpoint is kept: Train with the same settings resumes it."
            else:
                self.status = "Stopped."
            return False
        if exit_code != 0:
            self.status = f"Failed (exit code {exit_code}); see the log."
            self.failed = True
            return False
        if self.kind == "train":
            self.percent = 100
            self.status = "Training finished. " + self.status
        elif self.kind == "suggest":
            self.status = "The model's suggestions are the new round: its review queue is open."
        elif self.kind == "install":
            self.status = "Python packages installed."
        else:
            self.status = "Cleaning finished: see the output folder."
        return True

    def failure_details(self) -> str:
        return "\n".join(self.tail)


class PanelJob:
    """A child run as the panel drives it: the process (:class:`~UltrasoundRefineLib.childjob.ChildJob`)
    and what is shown of it (:class:`JobMonitor`); the panel's timer calls :meth:`poll` and puts what it
    returns into widgets, Cancel calls :meth:`cancel`. ``then`` is what the panel does once the run has
    succeeded (open the round a model suggested, retry the action an install was for), kept with the run
    so that it cannot belong to another one. ``status``: what the panel says first, where the kind's
    :attr:`JobMonitor.START_TEXT` is not enough (which packages pip installs)."""

    def __init__(self, kind: str, program: str, args: Sequence[str], env: Optional[dict] = None, cwd=None,
                 then: Optional[Callable[[], None]] = None, status: Optional[str] = None):
        from UltrasoundRefineLib.childjob import ChildJob

        self.monitor = JobMonitor(kind)  # first: an unknown kind starts no process
        self.monitor.status = status or self.monitor.status
        self.command_line = command_line(program, args)
        self.then = then
        self.process = ChildJob(program, args, env=env, cwd=cwd)

    def poll(self) -> tuple[list, Optional[bool]]:
        """``(log lines, outcome)``: the lines to append since the last poll, and None while the run
        goes, True once it succeeded, False once it failed or was stopped (:attr:`monitor` says which)."""
        logged = [shown for shown in map(self.monitor.line, self.process.lines()) if shown is not None]
        code = self.process.poll()
        if code is None:
            return logged, None
        stopped = self.process.stopRequestedAt is not None or self.process.killed
        return logged, self.monitor.finished(code, stopped=stopped)

    def cancel(self) -> None:
        """Training is asked to stop (a "stop" line reaches the worker through PythonSlicer, signals do
        not; the tree is killed after a grace period); other runs are killed with their whole tree."""
        self.monitor.status = self.monitor.stopping_text()
        if self.monitor.stops_gracefully:
            self.process.stop()
        else:
            self.process.kill()
