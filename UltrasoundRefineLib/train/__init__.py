"""Steps 3 and 4 of the method: pretrain a MONAI network on many accepted auto masks, fine-tune it on a
few human masks, and predict masks for new loops.

The core takes plain data (``(loop, mask)`` pairs or pre-rendered arrays); the workspace is a thin
adapter on top (:mod:`.data`). Library entry points::

    from UltrasoundRefineLib.train import TrainConfig, pretrain, finetune, scratch, train_model
    from UltrasoundRefineLib.train import load_model, predict_loop

Names are imported lazily so that ``import UltrasoundRefineLib.train`` costs nothing until used
(the CLI imports every command module at start-up).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "TrainConfig": "config",
    "TrainError": "config",
    "train_model": "engine",
    "TrainResult": "engine",
    "pretrain": "finetune",
    "finetune": "finetune",
    "scratch": "finetune",
    "STRATEGIES": "finetune",
    "Model": "model",
    "load_model": "model",
    "save_model": "model",
    "predict_loop": "model",
    "model_producer": "model",
    "render_loop": "render",
    "RenderSpec": "render",
    "resolve_device": "device",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
