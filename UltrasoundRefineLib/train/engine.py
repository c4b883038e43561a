"""The training loop: one function for pretraining, fine-tuning and training from scratch.

- Seeds for everything: each epoch reseeds the data order, the augmentation and torch from
  ``(seed, epoch)``, so a run resumed after a kill continues exactly as if it had not stopped.
- Data lives on the training device; a step indexes it there and augments it there. The loss is
  accumulated on the device and read back once per log line, not every step.
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
import math
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from monai.losses import DiceCELoss, DiceLoss
from monai.metrics import compute_dice

from UltrasoundRefineLib.train.config import TrainConfig, TrainError
from UltrasoundRefineLib.train.data import Prepared, prepare, split_validation
from UltrasoundRefineLib.train.device import DeviceChoice, resolve_device
from UltrasoundRefineLib.train.model import (
    DEFAULT_POSTPROCESS, SHAPE_MIN_AGREEMENT, Model, atomic_torch_save, library_versions, load_model, load_weights, save_model,
)
from UltrasoundRefineLib.train.network import build_network, count_parameters, forward_logits, network_kwargs
from UltrasoundRefineLib.train.strategy import StrategySetup, apply_strategy

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
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


def _event(kind: str, **fields) -> dict:
    e = {"event": kind, "epoch": None, "step": None, "loss": None, "val_dice": None, "elapsed_s": None, "eta_s": None}
    e.update(fields)
    return e


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


def _cosine_lr(base: float, epoch: int, epochs: int) -> float:
    """Cosine decay to 5% over the planned epochs, a function of the epoch alone (resume-safe)."""
    t = min(1.0, max(0.0, (epoch - 1) / max(1, epochs)))
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


@torch.no_grad()
def evaluate_dice(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, device: DeviceChoice, batch_size: int = 64) -> torch.Tensor:
    """Per-example Dice at network resolution (thresholded at 0.5), on the device."""
    net.eval()
    out = []
    for s in range(0, images.shape[0], batch_size):
        x = images[s : s + batch_size]
        with _autocast(device):
            logits = forward_logits(net, x)
        pred = (logits.float() > 0).float()
        truth = (labels[s : s + batch_size] > 0.5).float()
        out.append(compute_dice(pred, truth, include_background=True, ignore_empty=False)[:, 0])
    return torch.cat(out)


def _autocast(device: DeviceChoice):
    if device.amp:
        return torch.autocast(device.device.type, dtype=device.amp_dtype)
    return contextlib.nullcontext()


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


def _cpu_state(net: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}


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
        send(_event("warning", message=dev.warning))
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))

    init = _resolve_init(init_from)
    if init is not None:  # the base model decides what the network is and sees
        config = config.replace(
            size=init.size, inputs=init.inputs, arch=init.arch, net=dict(init.card["architecture"].get("overrides", {}))
        )
        arch_kwargs = dict(init.card["architecture"]["kwargs"])
    else:
        arch_kwargs = network_kwargs(config.arch, len(config.inputs), config.net)

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

    net = build_network(config.arch, arch_kwargs)
    if init is not None:
        net.load_state_dict(init.net.state_dict())
    net.to(dev.device)
    if init is None and strategy != "full":
        raise TrainError(f"strategy {strategy!r} needs a pretrained model to start from (--from MODEL)")
    if init is not None and stage == "scratch":
        raise TrainError("training from scratch cannot start from a pretrained model")
    setup: StrategySetup = apply_strategy(net, config.arch, strategy, config.lr, config.encoder_lr_factor)
    for g in setup.param_groups:
        g["base_lr"] = g["lr"]
    optimizer = torch.optim.AdamW(setup.param_groups, lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=dev.amp and dev.amp_dtype == torch.float16)
    loss_fn = _loss_fn(config.loss)

    from UltrasoundRefineLib.train.augment import build_augmentation

    augment = build_augmentation(config.inputs, config.augment_strength if config.augment else 0.0)

    fingerprint = _fingerprint(config, seed, strategy, stage, train, val, init)
    out_dir = Path(out) if out is not None else None
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else (out_dir / "checkpoint" if out_dir else None)
    ckpt_path = ckpt_dir / CHECKPOINT if ckpt_dir else None

    start_epoch, history, best, bad_epochs, prior_elapsed = 1, [], {"epoch": 0, "val_dice": -1.0, "state": None}, 0, 0.0
    if ckpt_path is not None and ckpt_path.is_file() and resume:
        ck = load_weights(ckpt_path)
        if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
            raise TrainError(f"{ckpt_path}: not a training checkpoint of this version")
        if ck.get("fingerprint") != fingerprint:
            raise TrainError(
                f"{ckpt_path}: the checkpoint is from a different run (other data, settings, seed or base model); "
                "remove it or choose another output folder"
            )
        net.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        if ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        start_epoch = int(ck["epoch"]) + 1
        history = list(ck["history"])
        best = {"epoch": int(ck["best_epoch"]), "val_dice": float(ck["best_val_dice"]), "state": ck.get("best_state")}
        bad_epochs = int(ck["bad_epochs"])
        prior_elapsed = float(ck["elapsed_s"])
        send(_event("resume", epoch=int(ck["epoch"]), elapsed_s=round(prior_elapsed, 2), checkpoint=str(ckpt_path)))

    x_train = train.images.to(dev.device)
    y_train = train.labels.to(dev.device)
    x_val = val.images.to(dev.device) if val is not None else None
    y_val = val.labels.to(dev.device) if val is not None else None
    n = len(train)
    batch = max(1, min(config.batch_size, n))
    steps_per_epoch = max(math.ceil(n / batch), config.min_steps_per_epoch)
    epochs = int(config.epochs)

    send(
        _event(
            "start",
            epoch=start_epoch - 1,
            stage=stage,
            strategy=strategy,
            seed=seed,
            n_train=n,
            n_val=len(val) if val is not None else 0,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            batch_size=batch,
            parameters=count_parameters(net),
            **dev.describe(),
        )
    )

    stop_flag = threading.Event()
    external_stop = _stop_checker(stop)
    t0 = time.perf_counter()
    session_steps, train_seconds, images_seen = 0, 0.0, 0
    stopped = early = False
    last_epoch = start_epoch - 1

    def elapsed() -> float:
        return prior_elapsed + time.perf_counter() - t0

    def eta(epoch: int, step_in_epoch: int) -> float | None:
        if session_steps == 0:
            return None
        remaining = (epochs - epoch) * steps_per_epoch + (steps_per_epoch - step_in_epoch)
        return round((time.perf_counter() - t0) / session_steps * remaining, 1)

    with _sigterm_sets(stop_flag, handle_sigterm):
        for epoch in range(start_epoch, epochs + 1):
            torch.manual_seed(seed * 100_003 + epoch)
            augment.set_random_state(seed=(seed * 1_000_003 + epoch) % (2**31))
            order_gen = torch.Generator().manual_seed(seed * 10_007 + epoch)
            reps = math.ceil(steps_per_epoch * batch / n)
            order = torch.cat([torch.randperm(n, generator=order_gen) for _ in range(reps)]).to(dev.device)
            for g in optimizer.param_groups:
                g["lr"] = _cosine_lr(g["base_lr"], epoch, epochs)
            setup.set_train_mode(net)
            loss_sum = torch.zeros((), device=dev.device)
            loss_window = torch.zeros((), device=dev.device)
            t_epoch = time.perf_counter()
            for step in range(1, steps_per_epoch + 1):
                idx = order[(step - 1) * batch : step * batch]
                data = augment({"image": x_train[idx], "label": y_train[idx]})
                optimizer.zero_grad(set_to_none=True)
                with _autocast(dev):
                    logits = forward_logits(net, data["image"])
                loss = loss_fn(logits.float(), data["label"])
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                loss_sum += loss.detach()
                loss_window += loss.detach()
                session_steps += 1
                images_seen += int(idx.shape[0])
                if config.log_every and step % config.log_every == 0 and step < steps_per_epoch:
                    send(_event("step", epoch=epoch, step=step, loss=round(float(loss_window) / config.log_every, 5),
                                elapsed_s=round(elapsed(), 2), eta_s=eta(epoch, step)))
                    loss_window.zero_()
                if stop_flag.is_set() or external_stop():
                    stopped = True
                    break
            if stopped:
                break
            if dev.device.type == "cuda":
                torch.cuda.synchronize(dev.device)
            train_seconds += time.perf_counter() - t_epoch
            train_loss = float(loss_sum) / steps_per_epoch
            val_dice = float(evaluate_dice(net, x_val, y_val, dev).mean()) if x_val is not None else None
            improved = val_dice is None or val_dice > best["val_dice"] + config.min_delta
            if improved:
                best = {"epoch": epoch, "val_dice": val_dice if val_dice is not None else -1.0, "state": _cpu_state(net)}
                bad_epochs = 0
            else:
                bad_epochs += 1
            record = {
                "epoch": epoch,
                "loss": round(train_loss, 6),
                "val_dice": round(val_dice, 6) if val_dice is not None else None,
                "lr": optimizer.param_groups[-1]["lr"],
                "elapsed_s": round(elapsed(), 2),
            }
            history.append(record)
            last_epoch = epoch
            send(_event("epoch", epoch=epoch, step=steps_per_epoch, loss=record["loss"], val_dice=record["val_dice"],
                        elapsed_s=record["elapsed_s"], eta_s=eta(epoch, steps_per_epoch), best_epoch=best["epoch"]))
            if ckpt_path is not None:
                atomic_torch_save(
                    {
                        "format": CHECKPOINT_FORMAT,
                        "fingerprint": fingerprint,
                        "epoch": epoch,
                        "model": _cpu_state(net),
                        "optimizer": optimizer.state_dict(),
                        "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                        "history": history,
                        "best_epoch": best["epoch"],
                        "best_val_dice": best["val_dice"],
                        "best_state": best["state"],
                        "bad_epochs": bad_epochs,
                        "elapsed_s": elapsed(),
                    },
                    ckpt_path,
                )
                send(_event("checkpoint", epoch=epoch, elapsed_s=round(elapsed(), 2), path=str(ckpt_path)))
            if x_val is not None and bad_epochs >= config.patience:
                early = True
                send(_event("early_stop", epoch=epoch, val_dice=record["val_dice"], best_epoch=best["epoch"],
                            elapsed_s=round(elapsed(), 2), eta_s=0.0))
                break

    if best["state"] is not None:
        net.load_state_dict(best["state"])
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)

    metrics = {
        "epochs_run": last_epoch,
        "best_epoch": best["epoch"],
        "best_val_dice": best["val_dice"] if best["val_dice"] >= 0 else None,
        "early_stopped": early,
        "seconds": round(elapsed(), 2),
        "train_seconds_this_session": round(train_seconds, 2),
        "images_per_s": round(images_seen / train_seconds, 1) if train_seconds > 0 else None,
    }
    card = {
        "format": 1,
        "model_id": "unsaved",
        "architecture": {"name": config.arch, "kwargs": arch_kwargs, "overrides": config.net, "parameters": count_parameters(net)},
        "input": {"size": config.size, "channels": list(config.inputs), "layout": "C,S,S float32"},
        "preprocessing": {
            "render": "per-pixel temporal summaries of luminance (BT.601 for RGB), scaled to [0,1] "
            "(std / 64); MONAI Resize(size_mode='longest', mode='area' when shrinking) + SpatialPad(symmetric)",
            "output": "sigmoid > 0.5 of the mean over test-time augmentation (identity, mirror, gamma 0.8/1.25), "
            "bilinear back to the loop's grid; holes filled, specks dropped; the fitted scanner shape where it "
            "agrees with the mask (IoU >= shape_min_agreement)",
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
            "n_train": n,
            "n_val": len(val) if val is not None else 0,
            "train_data_hash": train.data_hash(),
            "val_data_hash": val.data_hash() if val is not None else None,
            "train_example_keys": sorted(train.keys),
            "device": dev.describe(),
            "fingerprint": fingerprint,
        },
        "metrics": metrics,
        "versions": library_versions(),
    }
    if extra_card:
        card.update(extra_card)
    model = Model(net=net, card=card, device=dev.device)

    if test_examples is not None and not stopped:
        from UltrasoundRefineLib.train.evaluate import evaluate_model

        metrics["test"] = evaluate_model(model, test_examples)["summary"]

    model_dir = None
    if out_dir is not None and not stopped:
        model_dir = save_model(model, out_dir, history)
        if ckpt_dir is not None and ckpt_dir.is_dir() and ckpt_dir.parent == out_dir:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
    if stopped:
        send(_event("stopped", epoch=last_epoch, elapsed_s=round(elapsed(), 2),
                    checkpoint=str(ckpt_path) if ckpt_path is not None and ckpt_path.is_file() else None))
    else:
        send(_event("done", epoch=last_epoch, val_dice=metrics["best_val_dice"], elapsed_s=metrics["seconds"], eta_s=0.0,
                    best_epoch=best["epoch"], model=str(model_dir) if model_dir else None, model_id=model.model_id,
                    test_dice=metrics.get("test", {}).get("dice_mean")))
    return TrainResult(model=model, history=history, metrics=metrics, model_dir=model_dir, stopped=stopped, events=log)
