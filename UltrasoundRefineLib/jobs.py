"""The command-line runs the Slicer panel starts as child processes (``train``, ``clean``): their
argument lists, and the JSON-lines progress ``train --json`` prints, parsed and put in words.

Shared by the panel and its tests; no Qt, no Slicer. The train options here are the CLI's own
(``cli/train.py``), so a run the panel starts is one anybody can repeat on the command line.
"""

from __future__ import annotations

import json
import shlex
from typing import Optional

from UltrasoundRefineLib.errors import UltrasoundRefineError

TRAIN_STAGES = ["pretrain", "finetune", "scratch"]
TRAIN_STRATEGIES = ["full", "frozen-encoder", "low-lr-encoder"]
AUTOMASK_METHODS = ["fanfit", "threshold"]
#: Where ``ultrasound-refine clean`` takes its masks from: an auto-mask method, a trained model, or a
#: workspace's decided masks.
CLEAN_SOURCES = [*AUTOMASK_METHODS, "model", "workspace"]


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


def clean_arguments(source: str, inputs, out, *, model=None, workspace=None) -> list:
    """Arguments after ``-m UltrasoundRefineLib`` for ``ultrasound-refine clean``:
    ``clean (--method {threshold,fanfit} | --model DIR | --workspace WS) INPUT... --out DIR``
    (with ``--workspace`` and no input, the workspace's own loops)."""
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
    return ["clean", *origin, *inputs, "--out", str(out)]


def suggest_arguments(workspace, model: str, device: str = "auto") -> list:
    """Arguments after ``-m UltrasoundRefineLib`` for the next round's suggestions by a trained model
    (``suggest WS --model MODEL``): the method's iterative refinement, the model's masks reviewed next."""
    if not model:
        raise UltrasoundRefineError("there is no trained model in this workspace yet: train first")
    return ["suggest", str(workspace), "--model", str(model), "--device", device]
