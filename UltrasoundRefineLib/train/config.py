"""What a training run is configured by; small CPU-friendly defaults (see benchmarks/train_phantom.py)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from UltrasoundRefineLib.errors import UltrasoundRefineError

#: The input channels (measured with ``benchmarks/train_phantom.py --compare-inputs``, results in
#: ``benchmarks/results/train_phantom_inputs.json``; test Dice on loops / on the same loops as stills):
#: max,std,frame 0.949 / 0.925; mean,std,frame 0.954 / 0.939; max,std 0.958 / 0.075 (fails on stills);
#: frame 0.918 / 0.918; max 0.921 / 0.915. ``std`` is what matters (the scan moves, burned-in text does
#: not: +0.03 Dice); a real ``frame`` keeps single still frames working (with the still-frame
#: augmentation); ``max`` vs ``mean`` is within single-seed noise.
DEFAULT_INPUTS = ("max", "std", "frame")


class TrainError(UltrasoundRefineError):
    """Training cannot start or continue (bad data, a checkpoint from another run, no device)."""


#: Network input sizes (pixels per side) we train and predict at. The networks halve the image four
#: times, so the size is a multiple of 16, and need 2 x 2 pixels at the bottom (32); above 1024 one
#: rendered loop takes over 12 MB per channel and a batch gigabytes, for regions found well at 128-256.
MIN_SIZE, MAX_SIZE, SIZE_STEP = 32, 1024, 16


def size_problem(size) -> str | None:
    """What is wrong with a network input size, or ``None`` when it is usable."""
    if isinstance(size, bool) or not isinstance(size, int):
        return f"must be a whole number of pixels, got {size!r}"
    if not MIN_SIZE <= size <= MAX_SIZE or size % SIZE_STEP:
        return f"must be a multiple of {SIZE_STEP} between {MIN_SIZE} and {MAX_SIZE}, got {size}"
    return None


@dataclass
class TrainConfig:
    """Everything (besides data, seed and device) that decides what a run learns.

    size: the network sees a ``size x size`` square; the loop is scaled to fit (aspect kept) and padded.
    inputs: channel names, see :data:`UltrasoundRefineLib.train.render.CHANNELS`.
    arch / net: a MONAI network by name and keyword overrides (see :mod:`.network`).
    epochs: the most epochs; early stopping (``patience`` epochs without a better validation Dice)
        usually ends sooner. An epoch is one pass over the training examples, and at least
        ``min_steps_per_epoch`` steps so that ten fine-tuning masks still get a few updates per epoch.
    val_fraction: the share of the training examples held out (by group when groups are known) for
        early stopping; 0 disables validation and early stopping.
    encoder_lr_factor: the encoder's learning rate relative to ``lr`` for ``low-lr-encoder``.
    cuda_graph: on CUDA in float32, replay the network's forward and backward from captured CUDA
        graphs (see :func:`.trainer.capture_network`); ``False`` trains eagerly. How, not what, a run
        learns, so it may change on resume.
    """

    size: int = 128
    inputs: tuple[str, ...] = DEFAULT_INPUTS
    arch: str = "unet"
    net: dict = field(default_factory=dict)
    epochs: int = 40
    batch_size: int = 16
    min_steps_per_epoch: int = 4
    lr: float = 3e-3
    weight_decay: float = 1e-4
    encoder_lr_factor: float = 0.1
    val_fraction: float = 0.15
    patience: int = 8
    min_delta: float = 1e-4
    augment: bool = True
    augment_strength: float = 1.0
    amp: bool = True
    log_every: int = 20
    loss: str = "dicece"
    cuda_graph: bool = True

    def __post_init__(self) -> None:
        problem = size_problem(self.size)
        if problem:
            raise TrainError(f"network input size {problem}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["inputs"] = list(self.inputs)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise TrainError(f"unknown training settings: {', '.join(sorted(unknown))}")
        d = dict(d)
        if "inputs" in d:
            d["inputs"] = tuple(d["inputs"])
        return cls(**d)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    # Settings that may change between a kill and a resume without invalidating the checkpoint.
    RESUMABLE_CHANGES = ("epochs", "patience", "log_every", "cuda_graph")

    def fingerprint_dict(self) -> dict:
        d = self.to_dict()
        for k in self.RESUMABLE_CHANGES:
            d.pop(k, None)
        return d
