"""The training loop's parts, one purpose each; :func:`.engine.train_model` assembles them into a run.

- :class:`DeviceData`: the prepared tensors, on the training device when they fit there.
- :func:`train_step`: one optimiser step, with no host synchronisation (the loss stays on the device).
- :class:`EarlyStopping`: patience on the validation Dice, as MONAI's ``EarlyStopHandler``.
- :func:`capture_network`: the network's forward and backward replayed from CUDA graphs, where it can.
- :class:`Trainer`: seeding per epoch, one epoch, validation, checkpoint and resume, and the epoch
  loop that reports progress as events.

Reproducibility: each epoch reseeds the data order, the augmentation and torch from ``(seed, epoch)``,
so a run resumed after a kill continues exactly as if it had not stopped.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from monai.metrics import compute_dice

from UltrasoundRefineLib.train.config import TrainConfig, TrainError
from UltrasoundRefineLib.train.data import Prepared
from UltrasoundRefineLib.train.device import DeviceChoice, autocast, choose_precision, dtype_name
from UltrasoundRefineLib.train.model import atomic_torch_save, load_weights
from UltrasoundRefineLib.train.network import forward_logits
from UltrasoundRefineLib.train.strategy import StrategySetup

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 1

#: Share of the free GPU memory the training and validation tensors may take; above it they stay in
#: host memory and each batch is copied over, leaving room for activations and the optimiser.
DEVICE_DATA_SHARE = 0.5


def event(kind: str, **fields) -> dict:
    """A progress event: always these keys (``None`` where not applicable), plus extras per kind."""
    e = {"event": kind, "epoch": None, "step": None, "loss": None, "val_dice": None, "elapsed_s": None, "eta_s": None}
    e.update(fields)
    return e


def fits_on_device(nbytes: int, device: torch.device, mem_get_info: Callable | None = None) -> bool:
    """Whether ``nbytes`` of data may live on ``device`` (always on the CPU and MPS' unified memory)."""
    if device.type != "cuda":
        return True
    free, _total = (mem_get_info or torch.cuda.mem_get_info)(device)
    return nbytes <= DEVICE_DATA_SHARE * free


@dataclass
class DeviceData:
    """Training (and validation) images and labels, on the device when they fit there (a step then
    indexes them without a host copy); otherwise in host memory, each batch copied over."""

    x: torch.Tensor
    y: torch.Tensor
    x_val: torch.Tensor | None
    y_val: torch.Tensor | None
    device: torch.device

    @classmethod
    def place(cls, train: Prepared, val: Prepared | None, device: torch.device, mem_get_info: Callable | None = None) -> "DeviceData":
        tensors = [train.images, train.labels] + ([val.images, val.labels] if val is not None else [])
        nbytes = sum(t.numel() * t.element_size() for t in tensors)
        moved = [t.to(device) for t in tensors] if fits_on_device(nbytes, device, mem_get_info) else tensors
        return cls(moved[0], moved[1], moved[2] if val is not None else None, moved[3] if val is not None else None, device)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``idx`` (on the data's device) on the training device."""
        return self.x[idx].to(self.device, non_blocking=True), self.y[idx].to(self.device, non_blocking=True)


def make_optimizer(param_groups: list[dict], config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW with one fused kernel on CUDA, else the multi-tensor (``foreach``) loop: the same numbers as
    the per-parameter loop (bit for bit on the CPU) with one call per step instead of one per tensor."""
    return torch.optim.AdamW(param_groups, lr=config.lr, weight_decay=config.weight_decay, **optimizer_flags(device))


def optimizer_flags(device: torch.device) -> dict:
    return {"fused": True} if device.type == "cuda" else {"foreach": True}


def train_step(net, optimizer, scaler, loss_fn, x, y, amp_dtype: torch.dtype | None) -> torch.Tensor:
    """One optimiser step; returns the loss, detached and still on the device (reading it would wait
    for the GPU, so the caller sums losses there and reads them once per epoch)."""
    optimizer.zero_grad(set_to_none=True)
    with autocast(x.device, amp_dtype):
        logits = forward_logits(net, x)
    loss = loss_fn(logits.float(), y)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:  # float16 only: bfloat16 and float32 need no loss scaling
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss.detach()


@torch.no_grad()
def evaluate_dice(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device,
                  amp_dtype: torch.dtype | None = None, batch_size: int = 64) -> torch.Tensor:
    """Per-example Dice at network resolution (thresholded at 0.5), on the device."""
    net.eval()
    out = []
    for s in range(0, images.shape[0], batch_size):
        x = images[s : s + batch_size].to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits = forward_logits(net, x)
        pred = (logits.float() > 0).float()
        truth = (labels[s : s + batch_size].to(device, non_blocking=True) > 0.5).float()
        out.append(compute_dice(pred, truth, include_background=True, ignore_empty=False)[:, 0])
    return torch.cat(out)


def capture_network(net: torch.nn.Module, setup: StrategySetup, sample: torch.Tensor, dev: DeviceChoice,
                    enabled: bool = True) -> str:
    """Replay the network's training forward and backward from CUDA graphs; ``"captured"`` or why not.

    A step of a network this small is launch-bound on a GPU (about 10 ms whatever the batch up to 64 on
    an H200, issue 13); a graph launches a whole pass's kernels at once. The shapes are static: every
    batch is full (see :meth:`Trainer.epoch_order`). float32 only (autocast inside a graph needs its
    cache off); the augmentation, the loss and the optimiser stay eager, and evaluation (``net.eval()``)
    runs the network's own forward. The capture's warm-up passes do not touch the weights (gradients
    go to ``autograd.grad``, not ``.grad``), though they would update batch-norm running statistics.
    Capture is best effort: whatever fails, the network is left as it was and trains eagerly.
    """
    if not enabled:
        return "off: turned off (cuda_graph=False)"
    if dev.device.type != "cuda" or not torch.cuda.is_available():
        return "off: not a CUDA device"
    if dev.amp:
        return f"off: {dtype_name(dev.amp_dtype)} autocast (graphs are captured in float32 only)"
    setup.set_train_mode(net)
    try:
        torch.cuda.make_graphed_callables(net, (sample,))
    except Exception as e:  # noqa: BLE001 - any capture failure means eager training, not a failed run
        release_network(net)
        return "off: capture failed: " + (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    return "captured"


def release_network(net: torch.nn.Module) -> None:
    """Back to the module's own forward (a graphed forward is an attribute set on the instance)."""
    net.__dict__.pop("forward", None)


def cosine_lr(base: float, epoch: int, epochs: int) -> float:
    """Cosine decay to 5% over the planned epochs, a function of the epoch alone (resume-safe)."""
    t = min(1.0, max(0.0, (epoch - 1) / max(1, epochs)))
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


class EarlyStopping:
    """Stop after ``patience`` epochs in a row whose score does not beat the best by more than
    ``min_delta``: MONAI's ``EarlyStopHandler`` (ignite's ``EarlyStopping``) with ``cumulative_delta=True``,
    so the bar is the last best that counted and slow gains count once they add up to ``min_delta``;
    the weights kept are those of that best epoch. The first score is the first best. Without a score
    (no validation) every epoch is the best so far and the run never stops early."""

    def __init__(self, patience: int, min_delta: float, best_score: float | None = None, best_epoch: int = 0, bad_epochs: int = 0):
        self.patience, self.min_delta = patience, min_delta
        self.best_score, self.best_epoch, self.bad_epochs = best_score, best_epoch, bad_epochs
        self.scored = best_score is not None

    def update(self, score: float | None, epoch: int) -> bool:
        """Record one epoch's score; ``True`` when it is the new best."""
        if score is None:
            self.best_epoch = epoch
            return True
        self.scored = True
        if self.best_score is None or score > self.best_score + self.min_delta:
            self.best_score, self.best_epoch, self.bad_epochs = score, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.scored and self.bad_epochs >= self.patience


def cpu_state(net: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}


class Trainer:
    """Trains ``net`` on ``data``: :meth:`resume`, :meth:`select_precision`, :meth:`capture_graph`,
    then :meth:`fit`, and :meth:`finish` for the best weights.

    Events go to ``send``; ``checkpoint`` (a file path) is written atomically after every epoch.
    """

    def __init__(self, net: torch.nn.Module, setup: StrategySetup, config: TrainConfig, dev: DeviceChoice,
                 data: DeviceData, loss_fn, augment, *, seed: int, send: Callable[[dict], None],
                 checkpoint: Path | None = None, fingerprint: str = ""):
        self.net, self.setup, self.config, self.dev, self.data = net, setup, config, dev, data
        self.loss_fn, self.augment, self.seed, self.send = loss_fn, augment, seed, send
        self.checkpoint, self.fingerprint = checkpoint, fingerprint
        for g in setup.param_groups:
            g.setdefault("base_lr", g["lr"])
        self.optimizer = make_optimizer(setup.param_groups, config, dev.device)
        self.scaler = None
        self.n = len(data)
        self.batch = max(1, min(config.batch_size, self.n))
        self.steps_per_epoch = max(math.ceil(self.n / self.batch), config.min_steps_per_epoch)
        self.epochs = int(config.epochs)
        self.start_epoch, self.last_epoch = 1, 0
        self.history: list[dict] = []
        self.stopper = EarlyStopping(config.patience, config.min_delta)
        self.best_state: dict | None = None
        self.prior_elapsed = 0.0
        self.stopped = self.early = False
        self.session_steps, self.train_seconds, self.images_seen = 0, 0.0, 0
        self._t0 = time.perf_counter()
        self._resumed_amp: str | None = None
        self._resumed_scaler: dict | None = None
        self.cuda_graph = "off: not captured"

    # -- precision ---------------------------------------------------------------------------------

    def select_precision(self, timer: Callable[[], float] = time.perf_counter) -> None:
        """Pick float32 or the GPU's mixed precision by timing a few steps of each (CUDA only; the
        CPU trains in float32 without probing). A resumed run keeps the precision it started with."""
        # what a step costs: the network's structure, what of it learns, the input and the batch
        trainable = sum(p.numel() for p in self.net.parameters() if p.requires_grad)
        workload = (repr(self.net), trainable, tuple(self.data.x.shape[1:]), self.batch)
        self.dev = choose_precision(self.dev, self._probe_steps, images_per_step=self.batch, timer=timer,
                                    kept=self._resumed_amp, workload=workload)
        if self.dev.amp and self.dev.amp_dtype == torch.float16:
            self.scaler = torch.amp.GradScaler("cuda")
            if self._resumed_scaler:
                self.scaler.load_state_dict(self._resumed_scaler)

    def _probe_steps(self, amp_dtype: torch.dtype | None, steps: int) -> None:
        """``steps`` training steps on a throwaway copy of the network and optimiser (the run itself
        and its random streams are untouched), waiting for the device at the end."""
        net = copy.deepcopy(self.net)
        self.setup.set_train_mode(net)
        params = [p for p in net.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.config.lr, **optimizer_flags(self.dev.device))
        scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
        x, y = self.data.batch(torch.arange(self.batch, device=self.data.x.device))
        for _ in range(steps):
            train_step(net, optimizer, scaler, self.loss_fn, x, y, amp_dtype)
        if self.dev.device.type == "cuda":
            torch.cuda.synchronize(self.dev.device)

    def capture_graph(self) -> None:
        """After :meth:`select_precision`: graph the network's step where the device allows it."""
        x, _ = self.data.batch(torch.arange(self.batch, device=self.data.x.device))
        self.cuda_graph = capture_network(self.net, self.setup, x, self.dev, enabled=self.config.cuda_graph)

    # -- checkpoint --------------------------------------------------------------------------------

    def resume(self) -> None:
        """Continue from the checkpoint when there is one from this same run."""
        path = self.checkpoint
        if path is None or not path.is_file():
            return
        ck = load_weights(path)
        if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
            raise TrainError(f"{path}: not a training checkpoint of this version")
        if ck.get("fingerprint") != self.fingerprint:
            raise TrainError(
                f"{path}: the checkpoint is from a different run (other data, settings, seed or base model); "
                "remove it or choose another output folder"
            )
        self.net.load_state_dict(ck["model"])
        state = ck["optimizer"]
        for g in state["param_groups"]:  # a run may resume on another device than it started on; the
            # flags are set before loading because they decide where the optimiser's step counts go
            g.update({"foreach": None, "fused": None, **optimizer_flags(self.dev.device)})
        self.optimizer.load_state_dict(state)
        self._resumed_amp = ck.get("amp_dtype")
        self._resumed_scaler = ck.get("scaler") or None
        self.last_epoch = int(ck["epoch"])
        self.start_epoch = self.last_epoch + 1
        self.history = list(ck["history"])
        best = float(ck["best_val_dice"])
        self.stopper = EarlyStopping(self.config.patience, self.config.min_delta, best if best >= 0 else None,
                                     int(ck["best_epoch"]), int(ck["bad_epochs"]))
        self.best_state = ck.get("best_state")
        self.prior_elapsed = float(ck["elapsed_s"])
        self.send(event("resume", epoch=int(ck["epoch"]), elapsed_s=round(self.prior_elapsed, 2), checkpoint=str(path)))

    def save_checkpoint(self, epoch: int) -> None:
        if self.checkpoint is None:
            return
        scaler = self.scaler.state_dict() if self.scaler is not None else {}
        best = self.stopper.best_score
        atomic_torch_save(
            {
                "format": CHECKPOINT_FORMAT,
                "fingerprint": self.fingerprint,
                "epoch": epoch,
                "model": cpu_state(self.net),
                "optimizer": self.optimizer.state_dict(),
                "scaler": scaler,
                "amp_dtype": dtype_name(self.dev.amp_dtype) if self.dev.amp else "float32",
                "history": self.history,
                "best_epoch": self.stopper.best_epoch,
                "best_val_dice": best if best is not None else -1.0,
                "best_state": self.best_state,
                "bad_epochs": self.stopper.bad_epochs,
                "elapsed_s": self.elapsed(),
            },
            self.checkpoint,
        )
        self.send(event("checkpoint", epoch=epoch, elapsed_s=round(self.elapsed(), 2), path=str(self.checkpoint)))

    # -- the loop ----------------------------------------------------------------------------------

    def elapsed(self) -> float:
        return self.prior_elapsed + time.perf_counter() - self._t0

    def eta(self, epoch: int, step_in_epoch: int) -> float | None:
        if self.session_steps == 0:
            return None
        remaining = (self.epochs - epoch) * self.steps_per_epoch + (self.steps_per_epoch - step_in_epoch)
        return round((time.perf_counter() - self._t0) / self.session_steps * remaining, 1)

    def start_event(self, **extra) -> dict:
        return event("start", epoch=self.start_epoch - 1, n_train=self.n,
                     n_val=len(self.data.x_val) if self.data.x_val is not None else 0, epochs=self.epochs,
                     steps_per_epoch=self.steps_per_epoch, batch_size=self.batch, **extra, **self.dev.describe())

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """Reseed torch and the augmentation from ``(seed, epoch)``; the epoch's example order."""
        seed = self.seed
        torch.manual_seed(seed * 100_003 + epoch)
        self.augment.set_random_state(seed=(seed * 1_000_003 + epoch) % (2**31))
        order_gen = torch.Generator().manual_seed(seed * 10_007 + epoch)
        reps = math.ceil(self.steps_per_epoch * self.batch / self.n)
        return torch.cat([torch.randperm(self.n, generator=order_gen) for _ in range(reps)]).to(self.data.x.device)

    def run_epoch(self, epoch: int, should_stop: Callable[[], bool]) -> torch.Tensor | None:
        """Train one epoch; the summed loss (on the device), or ``None`` when asked to stop mid-way."""
        order = self.epoch_order(epoch)
        for g in self.optimizer.param_groups:
            g["lr"] = cosine_lr(g["base_lr"], epoch, self.epochs)
        self.setup.set_train_mode(self.net)
        amp_dtype = self.dev.amp_dtype if self.dev.amp else None
        log_every = self.config.log_every
        loss_sum = torch.zeros((), device=self.dev.device)
        window = torch.zeros((), device=self.dev.device) if log_every else None
        for step in range(1, self.steps_per_epoch + 1):
            idx = order[(step - 1) * self.batch : step * self.batch]
            x, y = self.data.batch(idx)
            batch = self.augment({"image": x, "label": y})  # one call for the whole batch, on the device
            loss = train_step(self.net, self.optimizer, self.scaler, self.loss_fn, batch["image"], batch["label"], amp_dtype)
            loss_sum += loss
            self.session_steps += 1
            self.images_seen += int(idx.shape[0])
            if window is not None:
                window += loss
                if step % log_every == 0 and step < self.steps_per_epoch:
                    # the one read inside an epoch, and only when step lines were asked for
                    self.send(event("step", epoch=epoch, step=step, loss=round(float(window) / log_every, 5),
                                    elapsed_s=round(self.elapsed(), 2), eta_s=self.eta(epoch, step)))
                    window.zero_()
            if should_stop():
                return None
        return loss_sum

    def validate(self) -> float | None:
        if self.data.x_val is None:
            return None
        amp_dtype = self.dev.amp_dtype if self.dev.amp else None
        return float(evaluate_dice(self.net, self.data.x_val, self.data.y_val, self.dev.device, amp_dtype).mean())

    def fit(self, should_stop: Callable[[], bool]) -> None:
        """Epochs from :attr:`start_epoch` until the planned end, early stopping, or ``should_stop``."""
        self._t0 = time.perf_counter()
        for epoch in range(self.start_epoch, self.epochs + 1):
            t_epoch = time.perf_counter()
            loss_sum = self.run_epoch(epoch, should_stop)
            if loss_sum is None:
                self.stopped = True
                return
            if self.dev.device.type == "cuda":
                torch.cuda.synchronize(self.dev.device)
            self.train_seconds += time.perf_counter() - t_epoch
            train_loss = float(loss_sum) / self.steps_per_epoch  # the epoch's one read of the loss
            val_dice = self.validate()
            if self.stopper.update(val_dice, epoch):
                self.best_state = cpu_state(self.net)
            record = {
                "epoch": epoch,
                "loss": round(train_loss, 6),
                "val_dice": round(val_dice, 6) if val_dice is not None else None,
                "lr": self.optimizer.param_groups[-1]["lr"],
                "elapsed_s": round(self.elapsed(), 2),
            }
            self.history.append(record)
            self.last_epoch = epoch
            self.send(event("epoch", epoch=epoch, step=self.steps_per_epoch, loss=record["loss"], val_dice=record["val_dice"],
                            elapsed_s=record["elapsed_s"], eta_s=self.eta(epoch, self.steps_per_epoch),
                            best_epoch=self.stopper.best_epoch))
            self.save_checkpoint(epoch)
            if self.stopper.should_stop:
                self.early = True
                self.send(event("early_stop", epoch=epoch, val_dice=record["val_dice"], best_epoch=self.stopper.best_epoch,
                                elapsed_s=round(self.elapsed(), 2), eta_s=0.0))
                return

    def finish(self) -> None:
        """Keep the best weights, frozen, for inference, in a plain module (no graphs)."""
        release_network(self.net)
        if self.best_state is not None:
            self.net.load_state_dict(self.best_state)
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def metrics(self) -> dict:
        best = self.stopper.best_score
        return {
            "epochs_run": self.last_epoch,
            "best_epoch": self.stopper.best_epoch,
            "best_val_dice": best,
            "early_stopped": self.early,
            "seconds": round(self.elapsed(), 2),
            "train_seconds_this_session": round(self.train_seconds, 2),
            "images_per_s": round(self.images_seen / self.train_seconds, 1) if self.train_seconds > 0 else None,
        }
