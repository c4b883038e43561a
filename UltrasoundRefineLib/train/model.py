"""A trained model on disk, and predicting a loop's mask with it.

A model is a folder: ``weights.pt`` (a plain ``state_dict`` of tensors, loaded with
``torch.load(..., weights_only=True)``, so a file with pickled objects in it is refused rather than
executed) and ``card.json`` (architecture and its arguments, input size and channels, preprocessing,
training data hashes, seeds, metrics, library versions). ``history.json`` holds the training curve.
``predict`` needs nothing else: no workspace, no training code paths.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from UltrasoundRefineLib.atomic import atomic_write
from UltrasoundRefineLib.automask import MaskSuggestion
from UltrasoundRefineLib.errors import InputError, OutputError
from UltrasoundRefineLib.metrics import dice
from UltrasoundRefineLib.loop import Loop
from UltrasoundRefineLib.train.device import (
    DeviceChoice, autocast, choose_precision, dtype_name, resolve_device, tf32_matmuls,
)
from UltrasoundRefineLib.train.network import build_network, forward_logits
from UltrasoundRefineLib.train.postprocess import SHAPE_MIN_AGREEMENT, postprocess_mode, refine_mask
from UltrasoundRefineLib.train.render import Geometry, render_loop, unrender

CARD_FORMAT = 1
WEIGHTS = "weights.pt"
CARD = "card.json"
HISTORY = "history.json"


@dataclass
class Model:
    """A network ready to predict, with its card."""

    net: nn.Module
    card: dict
    device: torch.device
    #: how it predicts (float32 or mixed precision): :func:`inference_precision`, chosen on first use
    precision: "DeviceChoice | None" = None

    @property
    def model_id(self) -> str:
        return str(self.card.get("model_id", "unsaved"))

    @property
    def size(self) -> int:
        return int(self.card["input"]["size"])

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(self.card["input"]["channels"])

    @property
    def arch(self) -> str:
        return str(self.card["architecture"]["name"])

    @property
    def producer_name(self) -> str:
        return f"model:{self.model_id}"

    def to(self, device: torch.device) -> "Model":
        self.net.to(device)
        self.device = torch.device(device)
        self.precision = None  # chosen again for the new device
        return self


def library_versions() -> dict:
    import monai
    import scipy

    from UltrasoundRefineLib import __version__

    return {
        "UltrasoundRefine": __version__,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
    }


def atomic_torch_save(obj, path: str | Path) -> None:
    atomic_write(Path(path), lambda tmp: torch.save(obj, tmp))


def atomic_json(obj, path: str | Path) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=False, default=_json_default)
            f.write("\n")

    atomic_write(Path(path), write)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (tuple, set)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def save_model(model: Model, out_dir: str | Path, history: list | None = None) -> Path:
    """Write ``weights.pt`` + ``card.json`` (+ ``history.json``); the card gets the weights' hash as id."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(out, f"cannot create the model folder ({e.strerror or e})") from None
    state = {k: v.detach().to("cpu").clone() for k, v in model.net.state_dict().items()}
    try:
        atomic_torch_save(state, out / WEIGHTS)
        digest = file_sha256(out / WEIGHTS)
        model.card["model_id"] = digest[:12]
        model.card["weights_sha256"] = digest
        model.card.setdefault("format", CARD_FORMAT)
        if history is not None:
            atomic_json(history, out / HISTORY)
        atomic_json(model.card, out / CARD)
    except OSError as e:
        raise OutputError(out, f"cannot write the model ({e.strerror or e})") from None
    return out


def load_weights(path: str | Path) -> dict:
    """``torch.load(weights_only=True)``: tensors and plain containers only; anything else is refused.

    Two different refusals: "unsafe" for a file that holds pickled objects besides tensors (what a
    planted payload looks like; never unpickled), "corrupt" for one that cannot be read at all.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsafe content"
        raise InputError(path, f"refusing to load an unsafe weights file: it holds more than plain tensors "
                               f"({first[:160]})") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise InputError(path, f"corrupt weights file, cannot be read ({first})") from None
    return state


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def check_card(card, path: str | Path) -> dict:
    """A model card as :func:`load_model` uses it, checked before anything is built or allocated: its
    types, the input size (bounded like training's), known architecture and channels, the channel count
    the network takes, and the weights' hash. Every error names the card and the key."""
    from UltrasoundRefineLib.train.config import size_problem
    from UltrasoundRefineLib.train.network import ARCHITECTURES
    from UltrasoundRefineLib.train.render import CHANNELS

    def bad(key: str, why: str):
        raise InputError(path, f"model card: {key} {why}")

    def whole(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not isinstance(card, dict):
        raise InputError(path, "not a model card (a JSON object with architecture and input)")
    fmt = card.get("format", 0)
    if not whole(fmt):
        bad("format", f"must be a whole number, got {fmt!r}")
    if fmt > CARD_FORMAT:
        bad("format", f"{fmt} is newer than this version understands (up to {CARD_FORMAT}); upgrade UltrasoundRefine")
    arch = card.get("architecture")
    if not isinstance(arch, dict):
        bad("architecture", "is missing or not an object (name, kwargs)")
    name = arch.get("name")
    if not isinstance(name, str):
        bad("architecture.name", f"must be a network name, got {name!r}")
    if name not in ARCHITECTURES:
        bad("architecture.name", f"{name!r} is not a known network ({', '.join(sorted(ARCHITECTURES))})")
    kwargs = arch.get("kwargs")
    if not isinstance(kwargs, dict):
        bad("architecture.kwargs", f"must be an object of {name}'s arguments, got {type(kwargs).__name__}")
    inputs = card.get("input")
    if not isinstance(inputs, dict):
        bad("input", "is missing or not an object (size, channels)")
    problem = size_problem(inputs.get("size"))
    if problem:
        bad("input.size", problem)
    channels = inputs.get("channels")
    if not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels):
        bad("input.channels", f"must be a list of channel names, got {channels!r}")
    unknown = [c for c in channels if c not in CHANNELS]
    if unknown:
        bad("input.channels", f"names unknown channel(s) {', '.join(map(repr, unknown))} (known: {', '.join(CHANNELS)})")
    if len(set(channels)) != len(channels):
        bad("input.channels", f"repeats a channel ({channels})")
    if kwargs.get("in_channels") != len(channels):
        bad("architecture.kwargs.in_channels", f"is {kwargs.get('in_channels')!r}, but input.channels lists {len(channels)}")
    if kwargs.get("out_channels") != 1 or kwargs.get("spatial_dims") != 2:
        bad("architecture.kwargs", "must describe a 2D network with one output channel (spatial_dims 2, out_channels 1)")
    try:
        postprocess_mode(card.get("postprocess", True))
    except ValueError as e:
        bad("postprocess", str(e))
    agreement = card.get("shape_min_agreement", SHAPE_MIN_AGREEMENT)
    if isinstance(agreement, bool) or not isinstance(agreement, (int, float)) or not 0.0 <= agreement <= 1.0:
        bad("shape_min_agreement", f"must be a number from 0 to 1, got {agreement!r}")
    digest = card.get("weights_sha256")
    if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        bad("weights_sha256", f"must be the SHA-256 of weights.pt (64 hex digits), got {digest!r}: "
                              "the weights cannot be verified")
    return card


def _resolve_model_paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    if p.is_dir():
        return p / WEIGHTS, p / CARD
    if p.suffix == ".json":
        return p.with_name(WEIGHTS), p
    if p.suffix in (".pt", ".pth"):
        return p, p.with_name(CARD)
    raise InputError(p, "no such model (expected a folder with weights.pt and card.json)")


def load_model(path: str | Path, device: str | torch.device | None = "auto") -> Model:
    """A model folder (or its ``weights.pt`` / ``card.json``) -> :class:`Model` in eval mode."""
    from UltrasoundRefineLib.train.device import resolve_device

    weights_path, card_path = _resolve_model_paths(path)
    if not card_path.is_file() or not weights_path.is_file():
        raise InputError(path, f"not a model: needs {WEIGHTS} and {CARD}")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(card_path, f"unreadable model card ({e})") from None
    check_card(card, card_path)
    state = load_weights(weights_path)  # before the hash: an unsafe or unreadable file is called that
    digest = file_sha256(weights_path)
    if digest != card["weights_sha256"]:
        raise InputError(weights_path, f"does not match the card's weights_sha256 ({digest[:12]}... instead of "
                                       f"{card['weights_sha256'][:12]}...): changed or damaged after training; refusing to use it")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(weights_path, "not a state_dict of tensors")
    arch = card["architecture"]
    try:
        net = build_network(arch["name"], arch["kwargs"])
    except Exception as e:  # noqa: BLE001 - MONAI rejects bad arguments with assorted types
        raise InputError(card_path, f"model card: architecture.kwargs do not build network {arch['name']!r} "
                                    f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})") from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise InputError(weights_path, f"weights do not fit the card's architecture ({str(e).splitlines()[0]})") from None
    dev = device if isinstance(device, torch.device) else resolve_device(device or "auto").device
    net.to(dev).eval()
    return Model(net=net, card=card, device=dev)


# ---------------------------------------------------------------------------------------------------
# Prediction


def _tta_members(image: torch.Tensor, inputs: tuple[str, ...]) -> list[tuple[torch.Tensor, bool]]:
    """Test-time variants of a ``(B, C, S, S)`` batch: identity, mirror, darker and brighter gamma."""
    from UltrasoundRefineLib.train.augment import INTENSITY_CHANNELS

    idx = [i for i, c in enumerate(inputs) if c in INTENSITY_CHANNELS]
    members = [(image, False), (image.flip(-1), True)]
    for gamma in (0.8, 1.25):
        x = image.clone()
        if idx:
            x[:, idx] = x[:, idx].clamp_min(0) ** gamma
        members.append((x, False))
    return members


@torch.no_grad()
def predict_probabilities(model: Model, images: torch.Tensor, *, tta: bool = True, batch_size: int = 32) -> torch.Tensor:
    """``(N, C, S, S)`` rendered inputs -> ``(K, N, S, S)`` foreground probabilities, one per TTA member
    (``K`` = 1 without TTA). Stays on the model's device. In the model's :func:`inference_precision`."""
    model.net.eval()
    out = []
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(model.device, non_blocking=True)
        choice = inference_precision(model, x)
        members = _tta_members(x, model.inputs) if tta else [(x, False)]
        probs = []
        with tf32_matmuls(choice):
            for xm, flipped in members:
                with autocast(model.device, choice.amp_dtype if choice.amp else None):
                    p = torch.sigmoid(forward_logits(model.net, xm).float())[:, 0]
                probs.append(p.flip(-1) if flipped else p)
        out.append(torch.stack(probs))
    return torch.cat(out, 1)


def inference_precision(model: Model, batch: torch.Tensor | None = None, *, kept: str | None = None) -> DeviceChoice:
    """How ``model`` predicts, chosen once per model: on CUDA float32 (TF32) or the GPU's mixed precision,
    whichever runs its forward pass on ``batch`` faster, timed by the probe training uses
    (:func:`~UltrasoundRefineLib.train.device.choose_precision`; once per process for the same network
    and batch shape); ``kept`` (a dtype name) takes the choice of the process that started this one
    without probing, so that every worker predicts alike. Float32 elsewhere (no probe)."""
    if model.precision is not None:
        return model.precision
    dev = resolve_device(str(model.device))
    if batch is None:  # one loop at a time, as predict_loop runs
        batch = torch.zeros((1, len(model.inputs), model.size, model.size), device=model.device)

    def forward_passes(amp_dtype: torch.dtype | None, n: int) -> None:
        with torch.no_grad():
            for _ in range(n):
                with autocast(dev.device, amp_dtype):
                    forward_logits(model.net, batch)
        if dev.device.type == "cuda":
            torch.cuda.synchronize(dev.device)

    model.precision = choose_precision(dev, forward_passes, images_per_step=int(batch.shape[0]), kept=kept,
                                       kept_from="parent_process",
                                       workload=("predict", repr(model.net), tuple(batch.shape)))
    return model.precision


def precision_record(choice: DeviceChoice) -> dict:
    """The chosen precision, for a summary or log: dtype, TF32, and what the probe measured."""
    return {"dtype": dtype_name(choice.amp_dtype if choice.amp else None), "tf32": choice.tf32,
            "probe": choice.precision_probe}


def tta_uncertainty(members: torch.Tensor, geometry: Geometry | None = None) -> float:
    """``(K, S, S)`` member probabilities -> 1 - mean Dice of each member's mask with the consensus.

    0 when all variants agree; grows where the prediction flips under a mirror or a gamma change,
    which is where a reviewer should look first.
    """
    if members.shape[0] < 2:
        return 0.0
    if geometry is not None:
        g = geometry
        members = members[:, g.top : g.top + g.inner_h, g.left : g.left + g.inner_w]
    members = members.float().cpu()
    consensus = (members.mean(0) > 0.5).numpy()
    return float(1.0 - np.mean([dice(member, consensus) for member in (members > 0.5).numpy()]))


def mask_from_members(members: torch.Tensor, geometry: Geometry, postprocess=True, *, loop: Loop | None = None,
                      min_agreement: float = SHAPE_MIN_AGREEMENT) -> np.ndarray:
    """``(K, S, S)`` TTA member probabilities -> the loop's ``(H, W)`` mask (mean probability > 0.5,
    then ``postprocess``: a mode of :data:`POSTPROCESS_MODES`, or ``True`` = ``"basic"``)."""
    prob = unrender(members.mean(0).float().cpu(), geometry)
    return refine_mask(prob > 0.5, postprocess, loop=loop, min_agreement=min_agreement)[0]


def card_postprocess(card: dict) -> tuple[str, float]:
    """The model card's post-processing mode and shape-fit agreement threshold."""
    return postprocess_mode(card.get("postprocess", True)), float(card.get("shape_min_agreement", SHAPE_MIN_AGREEMENT))


def predict_loop(model: Model, loop: Loop, *, tta: bool = True, postprocess: bool | str | None = None) -> MaskSuggestion:
    """The model's mask for one loop on the loop's own grid, with quality = 1 - TTA disagreement.
    ``postprocess``: a mode of :data:`POSTPROCESS_MODES` (or a bool); ``None`` follows the model card."""
    rendered = render_loop(loop, model.size, model.inputs)
    members = predict_probabilities(model, torch.as_tensor(rendered.image)[None], tta=tta)[:, 0]
    mode, min_agreement = card_postprocess(model.card)
    if postprocess is not None:
        mode = postprocess_mode(postprocess)
    prob = unrender(members.mean(0).float().cpu(), rendered.geometry)
    # refined with the loop's summary, exactly as evaluate_model scores a test example
    mask, info = refine_mask(prob > 0.5, mode, loop=loop.summary(), min_agreement=min_agreement)
    uncertainty = tta_uncertainty(members, rendered.geometry)
    return MaskSuggestion(
        mask=mask,
        quality=float(np.clip(1.0 - uncertainty, 0.0, 1.0)),
        method=model.producer_name,
        details={"model_id": model.model_id, "uncertainty": uncertainty, "tta_members": int(members.shape[0]),
                 "postprocess": mode, **info},
    )


def model_producer(model: Model | str | Path, device: str | None = "auto") -> tuple[str, Callable[[Loop], MaskSuggestion]]:
    """``(producer_name, produce)`` for ``Workspace.suggest`` and the batch runner."""
    m = model if isinstance(model, Model) else load_model(model, device)
    return m.producer_name, lambda loop: predict_loop(m, loop)


class ModelPredictor:
    """``loop -> MaskSuggestion`` (:func:`predict_loop`) with the model in ``model_dir``, loaded on first
    use in each process that calls it. It pickles as its folder, not its weights: what a task sends to
    another process or a Dask worker, each loading the model once on its own ``device``."""

    def __init__(self, model_dir: str | Path, device: str | None = "auto", *, tta: bool = True,
                 model: Model | None = None, postprocess: str | None = None, precision: str | None = None):
        self.model_dir, self.device, self.tta, self.postprocess = str(model_dir), device, tta, postprocess
        self.precision = precision  # a dtype name chosen by the process that made this (see inference_precision)
        self._model = model  # already loaded here (saves loading it twice in this process)

    @property
    def model(self) -> Model:
        if self._model is None:
            self._model = load_model(self.model_dir, self.device)
            if self.precision is not None:
                inference_precision(self._model, kept=self.precision)
        return self._model

    def choose_precision(self) -> DeviceChoice:
        """Load the model in this process and choose how it predicts (:func:`inference_precision`): the
        copies of this predictor sent to worker processes then predict alike, without a probe each."""
        choice = inference_precision(self.model, kept=self.precision)
        self.precision = dtype_name(choice.amp_dtype if choice.amp else None)
        return choice

    def __call__(self, loop: Loop) -> MaskSuggestion:
        return predict_loop(self.model, loop, tta=self.tta, postprocess=self.postprocess)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_model": None}
