"""Training data as tensors: from plain ``(loop, mask)`` pairs, pre-rendered samples, or a workspace.

The training core only ever sees :class:`Prepared` (stacked network-space images and soft labels plus
a content hash per example); everything that knows where examples come from is a thin adapter here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from UltrasoundRefineLib.loop import Loop
from UltrasoundRefineLib.train.config import TrainError
from UltrasoundRefineLib.train.render import Geometry, Rendered, render_loop, render_mask


@dataclass
class Sample:
    """One training example in network space. ``mask`` (the original-grid mask) is kept only when
    asked for, to measure Dice on the loop's own grid."""

    image: np.ndarray  # (C, S, S) float32
    label: np.ndarray  # (S, S) float32 in [0, 1]
    key: str
    geometry: Geometry
    inputs: tuple[str, ...]
    group: str | None = None
    mask: np.ndarray | None = None
    spacing: tuple[float, float] | None = None
    loop: Loop | None = None  # with ``mask``: the loop's summary (Loop.summary), for the post-processing


@dataclass
class Prepared:
    images: torch.Tensor  # (N, C, S, S) float32
    labels: torch.Tensor  # (N, 1, S, S) float32
    keys: list[str]
    groups: list[str | None]
    samples: list[Sample] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def data_hash(self) -> str:
        return hashlib.sha256("\n".join(sorted(self.keys)).encode()).hexdigest()[:16]

    def subset(self, index: Sequence[int]) -> "Prepared":
        idx = list(index)
        t = torch.as_tensor(idx, dtype=torch.long)
        return Prepared(
            self.images[t],
            self.labels[t],
            [self.keys[i] for i in idx],
            [self.groups[i] for i in idx],
            [self.samples[i] for i in idx] if self.samples else [],
        )


def _mask_hash(mask: np.ndarray) -> str:
    m = np.ascontiguousarray(np.asarray(mask, dtype=bool))
    return hashlib.sha256(np.packbits(m).tobytes() + str(m.shape).encode()).hexdigest()[:16]


def _unpack(example: Any) -> tuple[Any, Any]:
    """(source, mask) from a pair, a workspace Example (``load``/``mask``) or a phantom (``loop``/``truth``)."""
    if isinstance(example, Sample):
        return example, None
    if isinstance(example, (tuple, list)) and len(example) == 2:
        return example[0], example[1]
    if hasattr(example, "load") and hasattr(example, "mask"):
        return example.load(), example.mask
    if hasattr(example, "loop"):
        mask = getattr(example, "mask", None)
        if mask is None:
            mask = getattr(example, "truth", None)
        return example.loop, mask
    raise TrainError(f"cannot use {type(example).__name__} as a training example: expected (loop, mask)")


def to_sample(example: Any, size: int, inputs: tuple[str, ...], keep_mask: bool = False) -> Sample:
    source, mask = _unpack(example)
    if isinstance(source, Sample):
        if source.image.shape[-1] != size or tuple(source.inputs) != tuple(inputs):
            raise TrainError(
                f"a pre-rendered example is {source.image.shape[-1]} px with channels {list(source.inputs)}; "
                f"this run needs {size} px with {list(inputs)}"
            )
        return source
    if isinstance(source, Loop):
        rendered = render_loop(source, size, inputs)
        group, spacing = source.group_key, source.spacing
        context = source.summary() if keep_mask else None
    elif isinstance(source, Rendered):
        rendered, group, spacing, context = source, None, None, None
        if rendered.image.shape[-1] != size or tuple(rendered.inputs) != tuple(inputs):
            raise TrainError("a pre-rendered loop does not match this run's input size or channels")
    else:
        raise TrainError(f"cannot use {type(source).__name__} as a loop")
    if mask is None:
        raise TrainError(f"example {rendered.key} has no mask")
    mask = np.asarray(mask, dtype=bool)
    g = rendered.geometry
    if mask.shape != (g.height, g.width):
        raise TrainError(f"example {rendered.key}: mask shape {mask.shape} does not match the loop's {(g.height, g.width)}")
    return Sample(
        image=rendered.image.astype(np.float32, copy=False),
        label=render_mask(mask, g),
        key=f"{rendered.key}:{_mask_hash(mask)}",
        geometry=g,
        inputs=tuple(inputs),
        group=group,
        mask=mask if keep_mask else None,
        spacing=spacing,
        loop=context,
    )


def render_examples(examples: Iterable[Any], size: int, inputs: tuple[str, ...], keep_masks: bool = False) -> list[Sample]:
    """Render once, train many times: the benchmark and the experiment runner cache these."""
    return [to_sample(e, size, tuple(inputs), keep_masks) for e in examples]


def prepare(examples: Iterable[Any], size: int, inputs: tuple[str, ...], keep_masks: bool = False) -> Prepared:
    samples = render_examples(examples, size, inputs, keep_masks)
    if not samples:
        raise TrainError("no training examples")
    images = torch.from_numpy(np.stack([s.image for s in samples]))
    labels = torch.from_numpy(np.stack([s.label for s in samples]))[:, None]
    return Prepared(images, labels, [s.key for s in samples], [s.group for s in samples], samples)


def split_validation(data: Prepared, fraction: float, seed: int) -> tuple[Prepared, Prepared | None]:
    """Hold out about ``fraction`` of the examples for early stopping, whole groups at a time (a
    patient's loops are never on both sides). Too few examples: no validation."""
    n = len(data)
    if fraction <= 0 or n < 3:
        return data, None
    groups = [g if g is not None else f"__item{i}" for i, g in enumerate(data.groups)]
    unique = sorted(set(groups))
    if len(unique) < 2:
        return data, None
    rng = np.random.default_rng([seed, 7])
    rng.shuffle(unique)
    want = max(1, int(round(fraction * n)))
    val_groups, count = set(), 0
    for g in unique:
        if count >= want:
            break
        size = groups.count(g)
        if count + size > n - 2:  # keep at least two training examples
            continue
        val_groups.add(g)
        count += size
    if not val_groups:
        return data, None
    val_idx = [i for i, g in enumerate(groups) if g in val_groups]
    train_idx = [i for i, g in enumerate(groups) if g not in val_groups]
    return data.subset(train_idx), data.subset(val_idx)


# ---------------------------------------------------------------------------------------------------
# The workspace adapter

STAGE_SOURCES = {"pretrain": "pretrain", "finetune": "finetune", "scratch": "finetune"}


def workspace_examples(workspace: Any, stage: str, producer: str | None = None) -> list:
    """The workspace's examples for a training stage: accepted suggestions for ``pretrain`` (only
    ``producer``'s, if given), human masks for ``finetune`` and ``scratch``. Each has ``load()`` and
    ``mask``, which :func:`prepare` takes."""
    if stage not in STAGE_SOURCES:
        raise TrainError(f"unknown stage {stage!r}; choose from {', '.join(STAGE_SOURCES)}")
    if producer is not None:
        examples = list(workspace.examples(STAGE_SOURCES[stage], producer=producer))
    else:
        examples = list(workspace.examples(STAGE_SOURCES[stage]))
    if not examples:
        from UltrasoundRefineLib.workspace.advice import nothing_to_train

        raise TrainError(f"nothing to train {stage} on: {nothing_to_train(workspace, stage, producer)}")
    return examples
