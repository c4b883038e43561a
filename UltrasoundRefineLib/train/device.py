"""Which device to train and predict on (cuda, then mps, then cpu) and in which precision.

A requested accelerator that is not there is not an error: training still works on the CPU, only
slower, so we fall back with a warning (and the warning is recorded in the events and the card).
A device name we do not know at all is an error.

Precision is chosen by measurement, not by rule: mixed precision is not always faster. On an H200 a
small U-Net trained faster in float32 (TF32 convolutions) than under bfloat16 autocast (batch 16:
1,584-2,083 vs 1,311-1,446 images/s; issue 13), so on CUDA :func:`choose_precision` times a few steps
of each and keeps the faster; the card records the choice and the figures. The CPU trains in float32
without probing (autocast there is slower and changes the numbers).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from UltrasoundRefineLib.train.config import TrainError

#: Steps per candidate in the precision probe: the first ones pay for cuDNN's algorithm search and
#: kernel loading, the timed ones measure the steady state.
PROBE_WARMUP_STEPS, PROBE_STEPS = 3, 10

#: (device, mixed-precision dtype, workload) -> (the dtype chosen, the probe's figures), per process.
_CHOSEN: dict[tuple, tuple] = {}


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    amp: bool
    amp_dtype: torch.dtype | None
    requested: str
    warning: str | None = None
    tf32: bool = False  # float32 matmuls and convolutions on TF32 tensor cores (CUDA)
    precision_probe: dict | None = None  # what choose_precision measured, None where it did not probe

    def describe(self) -> dict:
        name = str(self.device)
        if self.device.type == "cuda":
            name += f" ({torch.cuda.get_device_name(self.device)})"
        return {
            "device": name,
            "requested": self.requested,
            "amp": self.amp,
            "amp_dtype": dtype_name(self.amp_dtype) if self.amp_dtype else None,
            "tf32": self.tf32,
            "precision_probe": self.precision_probe,
            "warning": self.warning,
        }

    def with_precision(self, amp_dtype: torch.dtype | None, probe: dict | None = None) -> "DeviceChoice":
        """This device training under autocast to ``amp_dtype``, or in float32 (TF32 on CUDA) for None."""
        return dataclasses.replace(self, amp=amp_dtype is not None, amp_dtype=amp_dtype,
                                   tf32=amp_dtype is None and self.device.type == "cuda", precision_probe=probe)


def dtype_name(dtype: torch.dtype | None) -> str:
    return "float32" if dtype is None else str(dtype).replace("torch.", "")


def choose_precision(
    dev: DeviceChoice,
    run_steps: Callable[[torch.dtype | None, int], None],
    *,
    images_per_step: int,
    timer: Callable[[], float] = time.perf_counter,
    kept: str | None = None,
    kept_from: str = "checkpoint",
    workload: tuple | None = None,
    warmup: int = PROBE_WARMUP_STEPS,
    steps: int = PROBE_STEPS,
) -> DeviceChoice:
    """Float32 or the GPU's mixed precision (``dev.amp_dtype``), whichever trains faster.

    ``run_steps(amp_dtype, n)`` runs ``n`` steps of the work to time (``None``: float32) and waits for the
    device: training steps for training, forward passes for prediction.
    Only on CUDA with mixed precision allowed (``dev.amp``); elsewhere ``dev`` is returned as it is
    (float32). ``kept`` (a dtype name from a checkpoint, or chosen by another process: ``kept_from``)
    skips the probe so that a resumed run goes on as it started, and a prediction's workers all predict
    as the process that started them chose. ``workload`` (what decides a step's cost: network, input, batch) reuses this
    process's earlier choice for the same workload on the same device, so the runs of an experiment do
    not each pay for a probe nor flip between precisions on timing noise. A candidate that fails (a
    kernel missing for the dtype) is recorded and passed over.
    """
    if dev.device.type != "cuda" or not dev.amp:
        return dev
    if kept is not None:
        return dev.with_precision(None if kept == "float32" else getattr(torch, kept), {f"kept_from_{kept_from}": kept})
    memo_key = (str(dev.device), dev.amp_dtype, workload) if workload is not None else None
    if memo_key in _CHOSEN:
        chosen, probe = _CHOSEN[memo_key]
        return dev.with_precision(chosen, {**probe, "reused_in_process": True})
    rates: dict[str, float] = {}
    errors: dict[str, str] = {}
    with tf32_matmuls(dev.with_precision(None)):
        for dtype in (None, dev.amp_dtype):
            try:
                run_steps(dtype, warmup)
                start = timer()
                run_steps(dtype, steps)
                seconds = timer() - start
            except RuntimeError as e:
                if dtype is None:
                    raise
                errors[dtype_name(dtype)] = (str(e).strip().splitlines() or ["failed"])[0][:200]
                continue
            rates[dtype_name(dtype)] = round(images_per_step * steps / max(seconds, 1e-9), 1)
    chosen = max(rates, key=lambda k: (rates[k], k == "float32"))  # a tie keeps float32
    probe = {"images_per_s": rates, "chosen": chosen, "batch_size": images_per_step, "steps": steps}
    if errors:
        probe["errors"] = errors
    dtype = None if chosen == "float32" else getattr(torch, chosen)
    if memo_key is not None:
        _CHOSEN[memo_key] = (dtype, probe)
    return dev.with_precision(dtype, probe)


def autocast(device: torch.device, amp_dtype: torch.dtype | None):
    """Autocast to ``amp_dtype`` on ``device``; float32 (no autocast) for None."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


@contextlib.contextmanager
def tf32_matmuls(dev: DeviceChoice):
    """While training in float32 on CUDA, let matmuls use TF32 too (convolutions do by default)."""
    if not dev.tf32:
        yield
        return
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(requested: str | None = "auto", amp: bool = True) -> DeviceChoice:
    """``auto`` (cuda -> mps -> cpu), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Mixed precision (bfloat16 where the GPU supports it, else float16 with a gradient scaler) is a
    candidate on CUDA only (``amp``), which :func:`choose_precision` then times against float32; MPS
    and CPU train in float32.
    """
    req = (requested or "auto").strip().lower()
    warning = None
    if req == "auto":
        if torch.cuda.is_available():
            dev = torch.device("cuda")
        elif _mps_available():
            dev = torch.device("mps")
        else:
            dev = torch.device("cpu")
    elif req == "cpu":
        dev = torch.device("cpu")
    elif req == "mps":
        dev = torch.device("mps") if _mps_available() else None
        if dev is None:
            warning = "device 'mps' was requested but is not available; using the CPU"
            dev = torch.device("cpu")
    elif req == "cuda" or req.startswith("cuda:"):
        index = 0
        if ":" in req:
            try:
                index = int(req.split(":", 1)[1])
            except ValueError:
                raise TrainError(f"bad device {requested!r}: expected cuda:N") from None
        if torch.cuda.is_available() and index < torch.cuda.device_count():
            dev = torch.device("cuda", index)
        else:
            found = torch.cuda.device_count() if torch.cuda.is_available() else 0
            warning = f"device {requested!r} was requested but {found} CUDA device(s) are available; using the CPU"
            dev = torch.device("cpu")
    else:
        raise TrainError(f"unknown device {requested!r}; use auto, cpu, cuda, cuda:N or mps")
    if warning:
        warnings.warn(warning, RuntimeWarning, stacklevel=2)
    use_amp = bool(amp and dev.type == "cuda")
    amp_dtype = None
    if use_amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return DeviceChoice(device=dev, amp=use_amp, amp_dtype=amp_dtype, requested=requested or "auto", warning=warning)
