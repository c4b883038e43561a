"""Training runs: one entry point for pretraining, fine-tuning and training from scratch.

:func:`train_model` sets a run up (device, data, network, strategy), hands the loop to a
:class:`~UltrasoundRefineLib.train.trainer.Trainer` (seeding, epochs, validation, checkpoints, early
stopping, precision) and turns the result into a model with its card.

- A checkpoint after every epoch (written atomically) and resume from it; early stopping on a
  validation split; SIGTERM (or ``stop``) ends the run after the current step, the last checkpoint
  kept, so the same command resumes it.
- Progress as events (dicts) to a callback: always ``event, epoch, step, loss, val_dice, elapsed_s,
  eta_s``, ``None`` where not applicable, plus extras per event.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from monai.losses import DiceCELoss, DiceLoss

from UltrasoundRefineLib.train.config import TrainConfig, TrainError
from UltrasoundRefineLib.train.data import Prepared, prepare, split_validation
from UltrasoundRefineLib.train.device import DeviceChoice, resolve_device, tf32_matmuls
from UltrasoundRefineLib.train.model import Model, library_versions, load_model, save_model
from UltrasoundRefineLib.train.network import build_network, count_parameters, network_kwargs
from UltrasoundRefineLib.train.postprocess import DEFAULT_POSTPROCESS, EVIDENCE_AGREEMENT, EVIDENCE_SAME, SHAPE_MIN_AGREEMENT
from UltrasoundRefineLib.train.strategy import StrategySetup, apply_strategy
from UltrasoundRefineLib.train.trainer import CHECKPOINT, DeviceData, Trainer, event

STAGES = ("pretrain", "finetune", "scratch")

Events = Callable[[dict], None]


@dataclass
class TrainResult:
    """model: the best model (by validation Dice) in memory; model_dir: where it was saved (if asked);
    history: one dict per epoch; metrics: summary figures; stopped: ended early by SIGTERM / stop."""

    model: Model
    history: list[dict]
    metrics: dict
    model_dir: Path | None = None
    stopped: bool = False
    events: list[dict] = field(default_factory=list)


def _stop_checker(stop) -> Callable[[], bool]:
    if stop is None:
        return lambda: False
    if hasattr(stop, "is_set"):
        return stop.is_set
    return stop


@contextlib.contextmanager
def _sigterm_sets(flag: threading.Event, enabled: bool):
    """While training, SIGTERM asks the loop to stop after the current step instead of killing it."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda signum, frame: flag.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _loss_fn(name: str):
    if name == "dicece":
        return DiceCELoss(sigmoid=True)
    if name == "dice":
        return DiceLoss(sigmoid=True)
    raise TrainError(f"unknown loss {name!r}; choose dicece or dice")


def _resolve_init(init_from) -> Model | None:
    if init_from is None:
        return None
    if isinstance(init_from, Model):
        return init_from
    return load_model(init_from, device=torch.device("cpu"))


def _fingerprint(config: TrainConfig, seed: int, strategy: str, stage: str, train: Prepared, val: Prepared | None, init: Model | None) -> str:
    payload = {
        "config": config.fingerprint_dict(),
        "seed": seed,
        "strategy": strategy,
        "stage": stage,
        "train": train.data_hash(),
        "val": val.data_hash() if val is not None else None,
        "init": init.card.get("weights_sha256") if init is not None else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _architecture(config: TrainConfig, init: Model | None) -> tuple[TrainConfig, dict]:
    """The base model, when there is one, decides what the network is and sees."""
    if init is None:
        return config, network_kwargs(config.arch, len(config.inputs), config.net)
    config = config.replace(size=init.size, inputs=init.inputs, arch=init.arch, net=dict(init.card["architecture"].get("overrides", {})))
    return config, dict(init.card["architecture"]["kwargs"])


def _datasets(train_examples, val_examples, config: TrainConfig, seed: int) -> tuple[Prepared, Prepared | None]:
    train = train_examples if isinstance(train_examples, Prepared) else prepare(train_examples, config.size, config.inputs)
    if val_examples is None:
        train, val = split_validation(train, config.val_fraction, seed)
    else:
        val = val_examples if isinstance(val_examples, Prepared) else prepare(val_examples, config.size, config.inputs)
    if train.images.shape[1] != len(config.inputs) or train.images.shape[-1] != config.size:
        raise TrainError(
            f"training data are {train.images.shape[-1]} px x {train.images.shape[1]} channels; "
            f"the network needs {config.size} px x {len(config.inputs)}"
        )
    return train, val


def _network(config: TrainConfig, arch_kwargs: dict, init: Model | None, strategy: str, stage: str,
             device: torch.device) -> tuple[torch.nn.Module, StrategySetup]:
    net = build_network(config.arch, arch_kwargs)
    if init is not None:
        net.load_state_dict(init.net.state_dict())
    net.to(device)
    if init is None and strategy != "full":
        raise TrainError(f"strategy {strategy!r} needs a pretrained model to start from (--from MODEL)")
    if init is not None and stage == "scratch":
        raise TrainError("training from scratch cannot start from a pretrained model")
    return net, apply_strategy(net, config.arch, strategy, config.lr, config.encoder_lr_factor)


def _card(config: TrainConfig, arch_kwargs: dict, net: torch.nn.Module, *, stage: str, strategy: str, seed: int,
          init: Model | None, train: Prepared, val: Prepared | None, dev: DeviceChoice, cuda_graph: str, fingerprint: str,
          metrics: dict) -> dict:
    return {
        "format": 1,
        "model_id": "unsaved",
        "architecture": {"name": config.arch, "kwargs": arch_kwargs, "overrides": config.net, "parameters": count_parameters(net)},
        "input": {"size": config.size, "channels": list(config.inputs), "layout": "C,S,S float32"},
        "preprocessing": {
            "render": "per-pixel temporal summaries of luminance (BT.601 for RGB), scaled to [0,1] "
            "(std / 64); MONAI Resize(size_mode='longest', mode='area' when shrinking) + SpatialPad(symmetric)",
            "output": "sigmoid > 0.5 of the mean over test-time augmentation (identity, mirror, gamma 0.8/1.25), "
            "bilinear back to the loop's grid; holes filled, specks dropped; then (postprocess 'reading') the "
            "loop's own evidence of its region read the way the mask points (postprocess 'evidence', as an "
            f"experiment scores: the same, except where the two agree to IoU {EVIDENCE_AGREEMENT}-{EVIDENCE_SAME}, "
            "where the fitted scanner shape is taken where it agrees with the mask, IoU >= shape_min_agreement); "
            "the fitted scanner shape where the loop offers no reading",
        },
        "postprocess": DEFAULT_POSTPROCESS,
        "shape_min_agreement": SHAPE_MIN_AGREEMENT,
        "training": {
            "stage": stage,
            "strategy": strategy if init is not None else ("scratch" if stage == "scratch" else "full"),
            "from_model": init.model_id if init is not None else None,
            "from_weights_sha256": init.card.get("weights_sha256") if init is not None else None,
            "seed": seed,
            "config": config.to_dict(),
            "n_train": len(train),
            "n_val": len(val) if val is not None else 0,
            "train_data_hash": train.data_hash(),
            "val_data_hash": val.data_hash() if val is not None else None,
            "train_example_keys": sorted(train.keys),
            "device": dev.describe(),  # with the precision chosen and the probe's figures
            "cuda_graph": cuda_graph,
            "fingerprint": fingerprint,
        },
        "metrics": metrics,
        "versions": library_versions(),
    }


def train_model(
    train_examples: Sequence[Any] | Prepared,
    val_examples: Sequence[Any] | Prepared | None = None,
    config: TrainConfig | None = None,
    *,
    init_from: Model | str | Path | None = None,
    strategy: str = "full",
    stage: str = "pretrain",
    seed: int = 0,
    device: str | DeviceChoice = "auto",
    events: Events | None = None,
    out: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    stop: Any = None,
    handle_sigterm: bool = False,
    test_examples: Sequence[Any] | None = None,
    extra_card: dict | None = None,
) -> TrainResult:
    """Train a segmentation model on ``(loop or rendered sample, mask)`` examples.

    ``init_from`` (a :class:`Model` or model folder) starts from pretrained weights, and its card fixes
    the architecture, input size and channels; ``strategy`` says which of them learn (see
    :mod:`.strategy`). Without ``val_examples``, ``config.val_fraction`` of the training examples are
    held out for early stopping. ``out`` saves the best model there (``weights.pt``, ``card.json``,
    ``history.json``) and keeps the resumable checkpoint in ``out/checkpoint/`` until the run is done;
    ``checkpoint_dir`` puts it elsewhere. ``test_examples`` are scored on the loops' own grids after
    training and their metrics go into the card.
    """
    config = config or TrainConfig()
    if stage not in STAGES:
        raise TrainError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    emit = events or (lambda e: None)
    log: list[dict] = []

    def send(e: dict) -> None:
        log.append(e)
        emit(e)

    dev = device if isinstance(device, DeviceChoice) else resolve_device(device, config.amp)
    if dev.warning:
        send(event("warning", message=dev.warning))
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))

    init = _resolve_init(init_from)
    config, arch_kwargs = _architecture(config, init)
    train, val = _datasets(train_examples, val_examples, config, seed)
    net, setup = _network(config, arch_kwargs, init, strategy, stage, dev.device)

    from UltrasoundRefineLib.train.augment import build_augmentation

    augment = build_augmentation(config.inputs, config.augment_strength if config.augment else 0.0)
    fingerprint = _fingerprint(config, seed, strategy, stage, train, val, init)
    out_dir = Path(out) if out is not None else None
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else (out_dir / "checkpoint" if out_dir else None)

    trainer = Trainer(net, setup, config, dev, DeviceData.place(train, val, dev.device), _loss_fn(config.loss), augment,
                      seed=seed, send=send, checkpoint=ckpt_dir / CHECKPOINT if ckpt_dir else None, fingerprint=fingerprint)
    if resume:
        trainer.resume()
    trainer.select_precision()
    dev = trainer.dev
    stop_flag = threading.Event()
    external_stop = _stop_checker(stop)
    with _sigterm_sets(stop_flag, handle_sigterm), tf32_matmuls(dev):
        trainer.capture_graph()
        send(trainer.start_event(stage=stage, strategy=strategy, seed=seed, parameters=count_parameters(net),
                                 cuda_graph=trainer.cuda_graph))
        trainer.fit(lambda: stop_flag.is_set() or external_stop())
    trainer.finish()

    metrics = trainer.metrics()
    card = _card(config, arch_kwargs, net, stage=stage, strategy=strategy, seed=seed, init=init, train=train, val=val,
                 dev=dev, cuda_graph=trainer.cuda_graph, fingerprint=fingerprint, metrics=metrics)
    if extra_card:
        card.update(extra_card)
    model = Model(net=net, card=card, device=dev.device)
    stopped, history = trainer.stopped, trainer.history

    if test_examples is not None and not stopped:
        from UltrasoundRefineLib.train.evaluate import evaluate_model

        metrics["test"] = evaluate_model(model, test_examples)["summary"]

    model_dir = None
    if out_dir is not None and not stopped:
        model_dir = save_model(model, out_dir, history)
        if ckpt_dir is not None and ckpt_dir.is_dir() and ckpt_dir.parent == out_dir:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
    last_epoch = trainer.last_epoch
    if stopped:
        ckpt = trainer.checkpoint
        send(event("stopped", epoch=last_epoch, elapsed_s=round(trainer.elapsed(), 2),
                   checkpoint=str(ckpt) if ckpt is not None and ckpt.is_file() else None))
    else:
        send(event("done", epoch=last_epoch, val_dice=metrics["best_val_dice"], elapsed_s=metrics["seconds"], eta_s=0.0,
                   best_epoch=metrics["best_epoch"], model=str(model_dir) if model_dir else None, model_id=model.model_id,
                   test_dice=metrics.get("test", {}).get("dice_mean")))
    return TrainResult(model=model, history=history, metrics=metrics, model_dir=model_dir, stopped=stopped, events=log)
