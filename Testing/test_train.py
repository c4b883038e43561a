"""Training core (steps 3 and 4): rendering round trip, loss goes down, resume after a kill,
SIGTERM, weights-only loading, frozen-encoder fine-tuning, CPU fallback of the GPU paths.

Everything is tiny (32 px inputs, a 3-level U-Net with 4-16 channels, a handful of small phantom
loops) so the whole file runs in well under two minutes on two shared CPU cores.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from UltrasoundRefineLib.errors import InputError
from UltrasoundRefineLib.metrics import mask_metrics
from UltrasoundRefineLib.train import TrainConfig, TrainError, load_model, predict_loop, save_model, train_model
from conftest import TINY
from UltrasoundRefineLib.train.device import resolve_device
from UltrasoundRefineLib.train.finetune import finetune, pretrain, scratch
from UltrasoundRefineLib.train.network import encoder_parameter_names
from UltrasoundRefineLib.train.progress import ProgressBar, json_lines
from UltrasoundRefineLib.train.render import Geometry, render_loop, render_mask, unrender

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


def fan_mask(h: int, w: int, apex=(0.05, 0.5), radius=0.9, half_angle=0.6) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = apex[0] * h, apex[1] * w
    r = np.hypot(yy - cy, xx - cx)
    a = np.arctan2(xx - cx, yy - cy)
    return (r < radius * h) & (np.abs(a) < half_angle) & (r > 0.04 * h)


@pytest.fixture(scope="module")
def phantoms():
    phantom = pytest.importorskip("UltrasoundRefineLib.phantom")
    return [phantom.make_phantom_loop(100 + i, n_frames=3, size=(96, 128)) for i in range(8)]


@pytest.fixture(scope="module")
def pairs(phantoms):
    return [(p.loop, p.truth) for p in phantoms]


@pytest.fixture(scope="module")
def base_model(pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("base") / "model"
    result = pretrain(pairs[:6], config=TINY, seed=1, device="cpu", out=out)
    return result.model_dir


# ---------------------------------------------------------------------------------------------------
# rendering


@pytest.mark.parametrize("shape", [(240, 320), (300, 80), (101, 257), (480, 640)])
@pytest.mark.parametrize("size", [96, 128])
def test_render_round_trip_keeps_the_mask(shape, size):
    mask = fan_mask(*shape)
    g = Geometry.for_shape(shape, size)
    assert max(g.inner_h, g.inner_w) == size and g.top >= 0 and g.left >= 0
    net_space = render_mask(mask, g)
    assert net_space.shape == (size, size)
    # nothing is drawn in the padding
    assert net_space[: g.top].sum() == 0 and net_space[:, : g.left].sum() == 0
    back = unrender(net_space, g) > 0.5
    assert back.shape == shape
    assert mask_metrics(back, mask)["dice"] > 0.98


def test_render_loop_channels_and_aspect(phantoms):
    loop = phantoms[0].loop
    r = render_loop(loop, 32, ("max", "std", "frame", "colour"))
    assert r.image.shape == (4, 32, 32) and r.image.dtype == np.float32
    assert r.geometry.inner_w == 32 and r.geometry.inner_h == 24  # 96 x 128 keeps its 3:4 aspect
    assert 0 <= r.image.min() and r.image[[0, 2]].max() <= 1.0
    still = type(loop)(frames=loop.frames[:1])
    assert np.all(render_loop(still, 32, ("std",)).image == 0)  # one frame: no motion
    with pytest.raises(ValueError, match="unknown input channel"):
        render_loop(loop, 32, ("bogus",))


# ---------------------------------------------------------------------------------------------------
# training


def test_a_few_steps_lower_the_loss(pairs):
    config = TINY.replace(epochs=4, augment=False, val_fraction=0, min_steps_per_epoch=3)
    result = train_model(pairs, None, config, seed=0, device="cpu")
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 4
    assert losses[-1] < losses[0]
    assert result.model.card["training"]["n_train"] == len(pairs)
    assert result.metrics["epochs_run"] == 4


def test_events_carry_the_progress_fields(pairs):
    events = []
    train_model(pairs, None, TINY.replace(log_every=1), seed=0, device="cpu", events=events.append)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and "epoch" in kinds and "step" in kinds
    for e in events:
        assert {"event", "epoch", "step", "loss", "val_dice", "elapsed_s", "eta_s"} <= set(e)
    epoch_events = [e for e in events if e["event"] == "epoch"]
    assert all(e["val_dice"] is not None and 0 <= e["val_dice"] <= 1 for e in epoch_events)
    assert epoch_events[-1]["eta_s"] == 0
    # the JSON-lines printer and the progress bar both take them
    buf = io.StringIO()
    printer = json_lines(buf)
    for e in events:
        printer(e)
    assert [json.loads(line)["event"] for line in buf.getvalue().splitlines()] == kinds
    bar_out = io.StringIO()
    bar = ProgressBar(bar_out)
    for e in events:
        bar(e)
    text = bar_out.getvalue()
    assert "epoch 2/2" in text and "val Dice" in text and "done" in text


def test_early_stopping_ends_the_run(pairs):
    config = TINY.replace(epochs=30, patience=1, min_delta=0.5)  # no epoch can improve by 0.5
    result = train_model(pairs, None, config, seed=0, device="cpu")
    assert result.metrics["early_stopped"] and result.metrics["epochs_run"] == 2
    assert result.metrics["best_epoch"] == 1


_RUNNER = textwrap.dedent(
    """
    import json, sys, torch
    torch.set_num_threads(1)
    from UltrasoundRefineLib.phantom import make_phantom_loop
    from UltrasoundRefineLib.train import TrainConfig, train_model
    from UltrasoundRefineLib.train.progress import json_lines
    cfg = TrainConfig(**json.loads(sys.argv[2]))
    pairs = [(p.loop, p.truth) for p in (make_phantom_loop(100 + i, n_frames=3, size=(96, 128)) for i in range(8))]
    r = train_model(pairs, None, cfg, seed=3, device="cpu", events=json_lines(sys.stdout),
                    checkpoint_dir=sys.argv[1], handle_sigterm=True)
    sys.exit(3 if r.stopped else 0)
    """
)


def _start_runner(ckpt_dir: Path, config: TrainConfig) -> subprocess.Popen:
    cfg = config.to_dict()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-c", _RUNNER, str(ckpt_dir), json.dumps(cfg)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )


def _wait_for_checkpoint(proc: subprocess.Popen, timeout: float = 90) -> list[dict]:
    events, deadline = [], time.monotonic() + timeout
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == "checkpoint":
            return events
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise AssertionError(f"no checkpoint event; stderr: {proc.stderr.read()[-2000:]}")


RESUME_CONFIG = TINY.replace(epochs=200, patience=1000)


def test_resume_after_kill_continues_from_the_checkpoint(pairs, tmp_path):
    proc = _start_runner(tmp_path, RESUME_CONFIG)
    try:
        _wait_for_checkpoint(proc)
        time.sleep(0.5)  # let it get into the next epoch; a kill must never leave a torn checkpoint
    finally:
        proc.kill()
        proc.wait(30)
    ckpt = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=True)
    saved = int(ckpt["epoch"])
    assert saved >= 1 and len(ckpt["history"]) == saved

    events = []
    result = train_model(pairs, None, RESUME_CONFIG.replace(epochs=saved + 1), seed=3, device="cpu",
                         events=events.append, checkpoint_dir=tmp_path)
    resumed = [e for e in events if e["event"] == "resume"]
    assert resumed and resumed[0]["epoch"] == saved
    epochs_run_now = [e["epoch"] for e in events if e["event"] == "epoch"]
    assert epochs_run_now == [saved + 1]  # not from scratch
    assert [h["epoch"] for h in result.history] == list(range(1, saved + 2))
    assert result.history[:saved] == ckpt["history"]

    # a checkpoint from another run (other seed) is refused, not silently mixed in
    with pytest.raises(TrainError, match="different run"):
        train_model(pairs, None, RESUME_CONFIG.replace(epochs=saved + 2), seed=4, device="cpu", checkpoint_dir=tmp_path)


def test_a_resumed_run_equals_an_uninterrupted_one(pairs, tmp_path):
    """Data order, augmentation and torch are reseeded from (seed, epoch): resuming changes nothing."""
    config = TINY.replace(epochs=2, patience=100)
    straight = train_model(pairs, None, config, seed=5, device="cpu", checkpoint_dir=tmp_path / "a")
    train_model(pairs, None, config.replace(epochs=1), seed=5, device="cpu", checkpoint_dir=tmp_path / "b")
    resumed = train_model(pairs, None, config, seed=5, device="cpu", checkpoint_dir=tmp_path / "b")
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    a, b = straight.model.net.state_dict(), resumed.model.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigterm_stops_cleanly_with_the_checkpoint_saved(tmp_path):
    proc = _start_runner(tmp_path, RESUME_CONFIG)
    try:
        _wait_for_checkpoint(proc)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, err[-2000:]
    last = json.loads(out.strip().splitlines()[-1])
    assert last["event"] == "stopped" and last["checkpoint"]
    ckpt = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == last["epoch"] >= 1


# ---------------------------------------------------------------------------------------------------
# the model folder


class NotATensor:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_weights_load_with_weights_only_and_pickles_are_refused(base_model, pairs, monkeypatch, tmp_path):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    model = load_model(base_model, device="cpu")
    assert calls == [True]
    card = json.loads((base_model / "card.json").read_text())
    for key in ("architecture", "input", "preprocessing", "training", "metrics", "versions", "model_id"):
        assert key in card
    assert card["training"]["seed"] == 1 and card["training"]["train_data_hash"]
    assert card["versions"]["monai"] and card["versions"]["torch"]
    suggestion = predict_loop(model, pairs[0][0])
    assert suggestion.mask.shape == pairs[0][0].shape and suggestion.mask.dtype == bool
    assert 0 <= suggestion.quality <= 1 and suggestion.method == f"model:{card['model_id']}"

    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "card.json").write_text(json.dumps(card))
    state = dict(model.net.state_dict())
    state["payload"] = NotATensor()
    torch.save(state, evil / "weights.pt")
    with pytest.raises(InputError, match="refusing to load"):
        load_model(evil, device="cpu")


def test_a_saved_model_predicts_the_same_after_loading(pairs, base_model, tmp_path):
    model = load_model(base_model, device="cpu")
    again = save_model(model, tmp_path / "copy")
    reloaded = load_model(again, device="cpu")
    a = predict_loop(model, pairs[1][0])
    b = predict_loop(reloaded, pairs[1][0])
    assert np.array_equal(a.mask, b.mask) and a.quality == pytest.approx(b.quality)


# ---------------------------------------------------------------------------------------------------
# fine-tuning strategies


def test_frozen_encoder_leaves_encoder_weights_bit_identical(base_model, pairs):
    base = load_model(base_model, device="cpu")
    before = {k: v.clone() for k, v in base.net.state_dict().items()}
    result = finetune(base_model, pairs[5:], strategy="frozen-encoder", config=TINY.replace(epochs=2), seed=0, device="cpu")
    after = result.model.net.state_dict()
    encoder = set(encoder_parameter_names(result.model.net, "unet"))
    assert encoder
    for name in encoder:
        assert torch.equal(before[name], after[name]), name
    changed = [k for k in before if k not in encoder and not torch.equal(before[k], after[k])]
    assert changed, "the decoder should have learned"
    assert result.model.card["training"]["strategy"] == "frozen-encoder"
    assert result.model.card["training"]["from_model"] == base.model_id


def test_low_lr_encoder_and_full_and_scratch(base_model, pairs):
    low = finetune(base_model, pairs[5:], strategy="low-lr-encoder", config=TINY.replace(epochs=1), seed=0, device="cpu")
    assert low.model.card["training"]["strategy"] == "low-lr-encoder"
    full = finetune(base_model, pairs[5:], strategy="full", config=TINY.replace(epochs=1), seed=0, device="cpu")
    assert full.model.card["training"]["stage"] == "finetune"
    # the base model fixes size and channels, whatever the fine-tuning config says
    assert full.model.size == 32
    s = scratch(pairs[5:], config=TINY.replace(epochs=1), seed=0, device="cpu")
    assert s.model.card["training"]["from_model"] is None and s.model.card["training"]["stage"] == "scratch"
    with pytest.raises(TrainError, match="unknown fine-tuning strategy"):
        finetune(base_model, pairs[5:], strategy="bogus", config=TINY, device="cpu")
    with pytest.raises(TrainError, match="needs a pretrained model"):
        train_model(pairs, None, TINY, strategy="frozen-encoder", device="cpu")


# ---------------------------------------------------------------------------------------------------
# devices


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on a machine without CUDA")
def test_cuda_requested_on_a_cpu_machine_falls_back_with_a_warning(pairs):
    with pytest.warns(RuntimeWarning, match="using the CPU"):
        choice = resolve_device("cuda")
    assert choice.device.type == "cpu" and choice.amp is False and choice.amp_dtype is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert resolve_device("cuda:3").device.type == "cpu"
        events = []
        result = train_model(pairs, None, TINY.replace(epochs=1), device="cuda", events=events.append)
    assert any(e["event"] == "warning" for e in events)
    start = next(e for e in events if e["event"] == "start")
    assert start["device"] == "cpu" and start["amp"] is False
    assert result.model.card["training"]["device"]["warning"]
    auto = resolve_device("auto")
    assert auto.amp is False or auto.device.type == "cuda"
    with pytest.raises(TrainError, match="unknown device"):
        resolve_device("tpu")
