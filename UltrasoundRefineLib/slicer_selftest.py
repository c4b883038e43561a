"""The Slicer module's self-test checks, run by its ``UltrasoundRefineTest`` inside Slicer and by pytest
on slicer-core's real MRML (and, without MRML, in the virtual environment pinned to what each supported
Slicer bundles): synthetic data only (no download), light enough for any build machine.

Each check takes the MRML ``scene`` to work in and raises ``AssertionError`` naming what is wrong.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

#: The synthetic loop's truth sector (apex at the top centre) on its ``(120, 160)`` frame.
FRAME_SHAPE = (120, 160)


def synthetic_loop(n_frames: int = 6, rgb: bool = False):
    """A small phased-array loop: speckle in a sector, a dark pool inside, text and an ECG strip
    outside. Returns ``(loop, truth)``."""
    from UltrasoundRefineLib.geometry import Sector
    from UltrasoundRefineLib.loop import Loop

    h, w = FRAME_SHAPE
    truth = Sector(apex_x=w / 2, apex_y=8, half_angle_deg=38, r_max=100).mask((h, w))
    rng = np.random.default_rng(7)
    frames = np.zeros((n_frames, h, w), np.uint8)
    for t in range(n_frames):
        speckle = 30 + rng.gamma(4.0, 30.0, (h, w))
        speckle[40:60, 60:100] *= 0.15  # a dark blood pool inside the region
        frames[t] = np.where(truth, np.clip(speckle, 0, 255), 0).astype(np.uint8)
    frames[:, 2:10, 4:40] = 255  # burned-in text
    frames[:, h - 6:h - 2, 10:150] = 180  # an ECG strip
    if rgb:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    return Loop(frames=frames, spacing=(0.3, 0.3), frame_time_ms=33.0, stem="selftest"), truth


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def check_automask(min_dice: float = 0.95) -> None:
    """Each auto-mask method finds the synthetic sector (no MRML: the part any Python can run)."""
    from UltrasoundRefineLib.automask import suggest_mask
    from UltrasoundRefineLib.jobs import AUTOMASK_METHODS
    from UltrasoundRefineLib.metrics import dice

    loop, truth = synthetic_loop()
    for method in AUTOMASK_METHODS:
        score = dice(suggest_mask(loop, method).mask, truth)
        _check(score > min_dice, f"{method}: Dice {score:.3f} against the synthetic sector, expected > {min_dice}")


def check_suggest_on_sequence(scene) -> None:
    """A mask for a synthetic cine loop (a sequence), by each method, over the sequence's proxy volume."""
    from UltrasoundRefineLib import slicerbridge
    from UltrasoundRefineLib.jobs import AUTOMASK_METHODS
    from UltrasoundRefineLib.metrics import dice

    loop, truth = synthetic_loop()
    sequence, _browser, proxy = slicerbridge.loop_to_sequence(loop, scene=scene)
    for method in AUTOMASK_METHODS:
        segmentation, suggestion = slicerbridge.suggest_mask_for_node(sequence, method, scene=scene)
        mask = slicerbridge.segmentation_to_mask(segmentation, proxy, scene=scene)
        _check(mask.shape == truth.shape, f"{method}: mask shape {mask.shape}, expected {truth.shape}")
        _check(dice(mask, truth) > 0.95, f"{method}: Dice {dice(mask, truth):.3f} on the sequence")
        _check(suggestion.quality >= 0.0, f"{method}: negative quality")


def check_suggest_on_still_frame(scene) -> None:
    """A mask for a single colour frame (a vector volume)."""
    from UltrasoundRefineLib import slicerbridge
    from UltrasoundRefineLib.metrics import dice

    loop, truth = synthetic_loop(n_frames=1, rgb=True)
    volume = slicerbridge.loop_to_volume(loop, scene=scene)
    segmentation, _suggestion = slicerbridge.suggest_mask_for_node(volume, "threshold", scene=scene)
    score = dice(slicerbridge.segmentation_to_mask(segmentation, volume, scene=scene), truth)
    _check(score > 0.95, f"Dice {score:.3f} on a colour frame")


def check_suggest_in_background(scene) -> None:
    """The mask is made off the calling thread and shown on it; a loop removed meanwhile is refused."""
    import threading

    from UltrasoundRefineLib import slicerbridge
    from UltrasoundRefineLib.metrics import dice

    loop, truth = synthetic_loop(n_frames=3)
    sequence, _browser, proxy = slicerbridge.loop_to_sequence(loop, scene=scene)
    call = slicerbridge.start_suggest_mask(sequence, "fanfit", scene=scene)
    _check(call.thread is not threading.current_thread(), "the auto-mask ran on the calling thread")
    segmentation = slicerbridge.apply_suggestion(sequence, call.result(timeout=60), scene=scene)
    score = dice(slicerbridge.segmentation_to_mask(segmentation, proxy, scene=scene), truth)
    _check(score > 0.95, f"Dice {score:.3f} of the background suggestion")
    _check(segmentation.GetAttribute(slicerbridge.ATTR_METHOD) == "fanfit", "the method attribute is missing")
    scene.RemoveNode(sequence)  # the loop went away while the mask was being made
    try:
        slicerbridge.apply_suggestion(sequence, call.result(), scene=scene)
    except ValueError:
        return
    raise AssertionError("a suggestion was shown for a loop no longer in the scene")


def check_review_decides_only_what_is_shown(scene) -> None:
    """After Close Scene nothing is on screen: no decision is recorded until N shows the suggestion again."""
    import SimpleITK as sitk

    from UltrasoundRefineLib import slicerbridge
    from UltrasoundRefineLib.reviewsession import ReviewError
    from UltrasoundRefineLib.workspace import Workspace, method_producer

    with tempfile.TemporaryDirectory() as folder:
        os.mkdir(os.path.join(folder, "loops"))
        frames = synthetic_loop(n_frames=2)[0].frames
        sitk.WriteImage(sitk.GetImageFromArray(frames), os.path.join(folder, "loops", "a.nrrd"))
        with Workspace.create(os.path.join(folder, "ws")) as ws:
            ws.add_loops([os.path.join(folder, "loops")])
            ws.suggest("threshold", method_producer("threshold"))
        desk = slicerbridge.open_review(os.path.join(folder, "ws"), scene=scene)
        try:
            desk.show()
            _check(desk.session.onScreen is not None, "the first suggestion is not on screen after show()")
            scene.Clear(False)  # File > Close Scene: nothing is on screen any more
            _check(desk.session.onScreen is None, "a suggestion is still on screen after Close Scene")
            try:
                desk.decide("accepted", "selftest")
                raise AssertionError("a decision was recorded for a suggestion not on screen")
            except ReviewError:
                pass
            _check(desk.move("next", lambda: "stay", lambda: "selftest"), "N did not show the suggestion again")
            desk.show()
            desk.decide("accepted", "selftest")
            _check(desk.session.counts()["accepted"] == 1, "the decision was not recorded")
        finally:
            desk.close()


def check_progress_parsing() -> None:
    """The panel's reading of ``train --json`` progress lines."""
    from UltrasoundRefineLib.jobs import JobMonitor

    monitor = JobMonitor("train")
    logged = monitor.line('{"event": "epoch", "epoch": 2, "loss": 0.25, "val_dice": 0.9, "elapsed_s": 30, "eta_s": 90}')
    _check(monitor.percent == 25, f"percent {monitor.percent}, expected 25")
    _check("val Dice 0.9000" in logged, f"the epoch line reads {logged!r}")
    _check(monitor.line("plain log line") == "plain log line", "a plain line was not logged as it is")
    _check(monitor.finished(0, stopped=False) and monitor.percent == 100, "a finished run is not at 100%")


#: The checks that need a scene, in the order the self-test runs them (each on a cleared scene).
SCENE_CHECKS = (
    check_suggest_on_sequence,
    check_suggest_on_still_frame,
    check_suggest_in_background,
    check_review_decides_only_what_is_shown,
)
