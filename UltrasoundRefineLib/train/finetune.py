"""The method's training stages as library functions (what the CLI and the experiment runner call).

- :func:`pretrain`: many cheap, imperfect masks (accepted auto-mask suggestions), from random weights.
- :func:`finetune`: a few expensive human masks, from a pretrained model, with a strategy
  (``full``, ``frozen-encoder``, ``low-lr-encoder``; see :mod:`.strategy`).
- :func:`scratch`: the same few human masks from random weights: the comparison the method must beat.

Each returns a :class:`~UltrasoundRefineLib.train.engine.TrainResult` (model in memory, per-epoch
history, metrics); give ``out=`` to also save the model folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from UltrasoundRefineLib.train.config import TrainConfig
from UltrasoundRefineLib.train.engine import TrainResult, train_model
from UltrasoundRefineLib.train.model import Model
from UltrasoundRefineLib.train.strategy import STRATEGIES

__all__ = ["pretrain", "finetune", "scratch", "STRATEGIES", "FINETUNE_DEFAULTS", "PRETRAIN_DEFAULTS"]

#: Defaults per stage, measured on the phantom (benchmarks/train_phantom.py) on 2 CPU cores.
PRETRAIN_DEFAULTS = TrainConfig(epochs=80, batch_size=16, lr=3e-3, patience=12)
#: Fine-tuning trains on all the human masks for the full 30 epochs (``val_fraction=0``): holding 2 of
#: 10 masks out for early stopping stopped runs at epoch 2-5, barely changed from the pretrained model.
#: Phantom demo workspace, threshold-pretrained, 10 human masks, 50 test loops, seeds 0-3: test Dice
#: 0.9629/0.9637/0.9648/0.9545 with a 0.2 hold-out, 0.9661/0.9697/0.9655/0.9604 without (+0.004).
FINETUNE_DEFAULTS = TrainConfig(epochs=30, batch_size=8, lr=1e-3, patience=10, min_steps_per_epoch=4, val_fraction=0.0)
SCRATCH_DEFAULTS = TrainConfig(epochs=60, batch_size=8, lr=3e-3, patience=15, min_steps_per_epoch=4, val_fraction=0.2)


def pretrain(
    examples: Sequence[Any],
    *,
    config: TrainConfig | None = None,
    seed: int = 0,
    device: str = "auto",
    val_examples: Sequence[Any] | None = None,
    **kwargs,
) -> TrainResult:
    """Learn the region from many accepted auto masks (step 3)."""
    return train_model(examples, val_examples, config or PRETRAIN_DEFAULTS, stage="pretrain", seed=seed, device=device, **kwargs)


def finetune(
    base: Model | str | Path,
    examples: Sequence[Any],
    *,
    strategy: str = "full",
    config: TrainConfig | None = None,
    seed: int = 0,
    device: str = "auto",
    val_examples: Sequence[Any] | None = None,
    **kwargs,
) -> TrainResult:
    """Refine a pretrained model on a few human masks (step 4). The base model's architecture, input
    size and channels are kept; ``config`` sets the rest (epochs, learning rate, ...)."""
    return train_model(
        examples, val_examples, config or FINETUNE_DEFAULTS, init_from=base, strategy=strategy, stage="finetune",
        seed=seed, device=device, **kwargs,
    )


def scratch(
    examples: Sequence[Any],
    *,
    config: TrainConfig | None = None,
    seed: int = 0,
    device: str = "auto",
    val_examples: Sequence[Any] | None = None,
    **kwargs,
) -> TrainResult:
    """Human masks only, from random weights: the baseline that pretraining must beat."""
    return train_model(examples, val_examples, config or SCRATCH_DEFAULTS, stage="scratch", seed=seed, device=device, **kwargs)
