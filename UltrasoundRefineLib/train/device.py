"""Which device to train and predict on: cuda, then mps, then cpu; mixed precision on CUDA only.

A requested accelerator that is not there is not an error: training still works on the CPU, only
slower, so we fall back with a warning (and the warning is recorded in the events and the card).
A device name we do not know at all is an error.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from UltrasoundRefineLib.train.config import TrainError


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    amp: bool
    amp_dtype: torch.dtype | None
    requested: str
    warning: str | None = None

    def describe(self) -> dict:
        name = str(self.device)
        if self.device.type == "cuda":
            name += f" ({torch.cuda.get_device_name(self.device)})"
        return {
            "device": name,
            "requested": self.requested,
            "amp": self.amp,
            "amp_dtype": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else None,
            "warning": self.warning,
        }


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(requested: str | None = "auto", amp: bool = True) -> DeviceChoice:
    """``auto`` (cuda -> mps -> cpu), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Mixed precision (bfloat16 where the GPU supports it, else float16 with a gradient scaler) is used
    on CUDA only; MPS and CPU train in float32.
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
