"""What moved out of the Slicer module into the library, run for real: ``slicerlogic.PanelLogic`` (the
module's logic less the application) on slicer-core's MRML and a real workspace, the review buttons'
table, the reviewer's name, a mask suggested in the background (``slicerbridge.MaskInProgress``), the
loop the panel offers first, and a child run's follow-up (``jobs.PanelJob.then``).

No Slicer application and no stand-in for what is tested: a bare ``vtkMRMLScene`` per test, which is
what the library's ``scene=`` parameters are for. Skipped, with the reason, without slicer-core.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from UltrasoundRefineLib import jobs, reviewsession, slicer_selftest
from UltrasoundRefineLib import slicer_install as install
from UltrasoundRefineLib.errors import UltrasoundRefineError
from UltrasoundRefineLib.metrics import dice

slicer = pytest.importorskip("slicer", reason="slicer-core (PyPI) is not installed: pip install slicer-core")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the 'slicer' package has no MRML classes (slicer-core missing or broken)", allow_module_level=True)

from UltrasoundRefineLib import slicerbridge  # noqa: E402
from UltrasoundRefineLib.slicerlogic import PanelLogic  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
UI_FILE = ROOT / "UltrasoundRefine" / "Resources" / "UI" / "UltrasoundRefine.ui"


@pytest.fixture
def scene():
    s = slicer.vtkMRMLScene()
    yield s
    s.Clear(True)


@pytest.fixture
def workspace_dir(tmp_path, review_workspace):
    """A workspace of two loops (a 3-frame sequence and a still), each with a threshold suggestion."""
    return review_workspace(tmp_path, (3, 1))


class _Logic(PanelLogic):
    """PanelLogic with views, as the module's logic has them: it records what they were given."""

    def __init__(self, requirements=""):
        super().__init__(requirements)
        self.inViews = []

    def showInViews(self, volume, segmentation):
        self.inViews.append((volume, segmentation))


@pytest.fixture
def slicer_home(tmp_path, monkeypatch):
    """A Slicer installation whose bin holds a PythonSlicer (and none on PATH), and the application object
    that says where it is (``slicer.app``: the one part of Slicer slicer-core lacks, its two folders only)."""
    import types

    bin_dir = tmp_path / "Slicer" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "PythonSlicer").write_text("#!/bin/sh\n")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(jobs.shutil, "which", lambda name: None)
    monkeypatch.setattr(jobs.sys, "executable", str(tmp_path / "elsewhere" / "python"))
    app = types.SimpleNamespace(slicerHome=str(tmp_path / "Slicer"), temporaryPath=str(tmp_path / "tmp"))
    monkeypatch.setattr(slicer, "app", app, raising=False)
    return tmp_path / "Slicer"


def test_the_panel_logic_reviews_on_real_mrml_and_the_panel_follows(scene, workspace_dir, slicer_home, tmp_path):
    logic = _Logic()
    changes = []
    logic.reviewChangedCallback = lambda: changes.append(logic.reviewPanel())
    assert logic.reviewPanel().status == "No workspace open." and logic.showCurrentSuggestion() == (None, None)

    logic.openWorkspace(workspace_dir, scene=scene)
    panel = logic.reviewPanel()
    assert not panel.decide_enabled and panel.next_enabled and panel.status.startswith("Nothing on screen")

    volume, segmentation = logic.showCurrentSuggestion()
    assert logic.inViews == [(volume, segmentation)]  # the application's hook gets what was shown
    assert (logic.reviewVolume, logic.reviewSegmentation) == (volume, segmentation)
    shown = logic.review.onScreen
    panel = logic.reviewPanel()
    assert panel.decide_enabled and not panel.save_enabled and shown.stem in panel.status
    assert panel.buttons()["acceptButton"] and not panel.buttons()["saveEditedButton"]

    # a Segment Editor stroke: the panel is told, and Save works only now
    edited = logic.desk.editedMask().copy()
    edited[:5, :] = ~edited[:5, :]
    slicerbridge.mask_to_segmentation(edited, volume, segmentation_node=segmentation, scene=scene)
    assert changes and changes[-1].save_enabled and logic.reviewPanel().buttons()["saveEditedButton"]

    # Close Scene: nothing on screen, nothing to decide on, and the panel says so
    scene.Clear(False)
    logic.reviewNodesGone()
    assert logic.reviewSegmentation is None and not logic.reviewPanel().decide_enabled
    assert logic.reviewPanel().status.startswith("Nothing on screen (the scene was closed")
    with pytest.raises(reviewsession.ReviewError, match="on screen"):
        logic.desk.decide("accepted", "tst")

    # shown again without the views (the Python console's way)
    logic.showCurrentSuggestion(showInViews=False)
    assert len(logic.inViews) == 1 and logic.review.onScreen is not None
    logic.closeWorkspace()
    assert logic.desk is None and logic.reviewPanel().status == "No workspace open."
    nodes = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
    left = [n.GetClassName() for n in nodes if not n.GetSingletonTag() and not n.IsA("vtkMRMLSubjectHierarchyNode")]
    assert left == [], f"the review left nodes in the scene: {left}"


def test_the_panel_logic_builds_its_runs_with_slicers_python(workspace_dir, slicer_home, tmp_path):
    from UltrasoundRefineLib.cli import build_parser

    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy>=1.0\n")
    logic = _Logic(requirements)
    assert (logic.slicerHome(), logic.temporaryFolder()) == (str(slicer_home), str(tmp_path / "tmp"))
    python_slicer = str(slicer_home / "bin" / "PythonSlicer")
    with pytest.raises(UltrasoundRefineError, match="Open a workspace first"):
        logic.trainCommand("pretrain")

    logic.openWorkspace(workspace_dir, scene=slicer.vtkMRMLScene())
    program, args, env = logic.trainCommand("pretrain", 2, "cpu", 4)
    assert program == python_slicer and args[:2] == ["-m", "UltrasoundRefineLib"]  # Slicer's own Python
    parsed = build_parser().parse_args(args[2:])
    assert (parsed.command, parsed.stage, parsed.epochs, parsed.seed, parsed.json, parsed.stop_on_stdin) == (
        "train", "pretrain", 2, 4, True, True)
    assert Path(parsed.out) == logic.workspace.models_dir / "pretrain-seed4"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)
    with pytest.raises(UltrasoundRefineError, match="train first"):
        logic.suggestCommand()
    program, args, _env = logic.cleanCommand("fanfit", [tmp_path / "in"], tmp_path / "out")
    assert program == python_slicer and build_parser().parse_args(args[2:]).command == "clean"
    _program, args, _env = logic.cleanCommand("model", [tmp_path / "in"], tmp_path / "out", model=tmp_path / "m",
                                              keep_folders=True, postprocess="reading")
    parsed = build_parser().parse_args(args[2:])  # the panel's choices reach the run
    assert (parsed.model, parsed.keep_names, parsed.keep_folders, parsed.postprocess) == (
        str(tmp_path / "m"), False, True, "reading")
    logic.closeWorkspace()

    # the install plan reads the requirements file it was given; pip runs in Slicer's Python, torch held
    assert logic.requirementsPath() == requirements and logic.installPlan().missing == []
    plan = install.InstallPlan(missing=["monai>=999"], torch_constraint="torch==2.5.1")
    program, args, _env = logic.installCommand(plan)
    assert program == python_slicer and args[:3] == ["-m", "pip", "install"] and "monai>=999" in args
    constraint = Path(args[args.index("-c") + 1])
    assert constraint.parent == tmp_path / "tmp" and constraint.read_text() == "torch==2.5.1\n"


def test_outside_slicer_runs_are_found_on_path_and_written_to_the_system_temporary_folder(monkeypatch):
    import tempfile

    monkeypatch.delattr(slicer, "app", raising=False)  # slicer-core, plain Python: no application
    assert slicerbridge.application_folders() == ("", tempfile.gettempdir())
    assert (PanelLogic().slicerHome(), PanelLogic().temporaryFolder()) == ("", tempfile.gettempdir())


def test_review_buttons_name_every_action_and_buttons_of_the_ui():
    import xml.etree.ElementTree as ET

    buttons = {w.get("name") for w in ET.parse(UI_FILE).iter("widget") if w.get("class") == "QPushButton"}
    assert set(reviewsession.REVIEW_BUTTONS) == set(reviewsession.REVIEW_ACTIONS) | {"edit"}
    assert set(reviewsession.REVIEW_SHORTCUTS) <= set(reviewsession.REVIEW_BUTTONS)  # every key has its button
    assert set(reviewsession.REVIEW_BUTTONS.values()) <= buttons
    # the panel's enabled states name the same buttons
    assert set(reviewsession.review_panel(None).buttons()) == set(reviewsession.REVIEW_BUTTONS.values())


def test_a_decision_names_its_reviewer():
    assert reviewsession.reviewer_name("  AB ") == "AB"
    for nobody in ("", "   ", None):
        with pytest.raises(reviewsession.ReviewError, match="initials"):
            reviewsession.reviewer_name(nobody)
    assert issubclass(reviewsession.ReviewError, UltrasoundRefineError)  # one line in the panel and the CLI


def test_a_mask_in_progress_is_made_off_the_calling_thread_and_shown_over_its_loop(scene, monkeypatch, held_suggest):
    import threading

    from UltrasoundRefineLib import automask

    loop, truth = slicer_selftest.synthetic_loop(n_frames=3)
    sequence, _browser, proxy = slicerbridge.loop_to_sequence(loop, scene=scene)
    release, ran_in, real = held_suggest.release, held_suggest.ran_in, held_suggest.real
    making = slicerbridge.MaskInProgress(sequence, "threshold", scene=scene)
    assert not making.done() and making.status == "Suggesting a mask with threshold in the background..."
    release.set()  # the caller was not held up: the mask is made only now
    segmentation, suggestion = making.show()
    assert making.done() and ran_in[0] is not threading.current_thread()
    assert making.status == f"threshold: quality {suggestion.quality:.2f} (1 = trust it, 0 = check it)"
    assert suggestion.method == "threshold" and segmentation.GetAttribute("UltrasoundRefine.Method") == "threshold"
    assert dice(slicerbridge.segmentation_to_mask(segmentation, proxy, scene=scene), truth) > 0.95
    again, _ = slicerbridge.MaskInProgress(proxy, "threshold", scene=scene).show(segmentation)
    assert again is segmentation  # the same loop reuses its segmentation

    def failing(loop, method):
        raise UltrasoundRefineError("loop: no image region found")

    monkeypatch.setattr(automask, "suggest_mask", failing)
    nodes = scene.GetNumberOfNodes()
    with pytest.raises(UltrasoundRefineError, match="no image region"):
        slicerbridge.MaskInProgress(sequence, "threshold", scene=scene).show()
    assert scene.GetNumberOfNodes() == nodes  # nothing half-made is left

    monkeypatch.setattr(automask, "suggest_mask", real)
    still = slicerbridge.loop_to_volume(loop, scene=scene)
    making = slicerbridge.MaskInProgress(still, "threshold", scene=scene)
    scene.RemoveNode(still)  # the loop left the scene while its mask was being made
    with pytest.raises(ValueError, match="removed from the scene"):
        making.show()


def test_the_panel_offers_a_sequence_first_then_a_volume(scene):
    assert slicerbridge.first_loop_node(scene) is None
    loop, _truth = slicer_selftest.synthetic_loop(n_frames=2)
    volume = slicerbridge.loop_to_volume(loop, scene=scene)
    assert slicerbridge.first_loop_node(scene) is volume
    sequence, _browser, _proxy = slicerbridge.loop_to_sequence(loop, scene=scene)
    assert slicerbridge.first_loop_node(scene) is sequence


def test_a_child_run_keeps_what_follows_it():
    followed = []
    run = jobs.PanelJob("clean", sys.executable, ["-c", "print('done')"], then=lambda: followed.append(True))
    deadline = time.monotonic() + 30
    lines, succeeded = run.poll()
    while succeeded is None:
        assert time.monotonic() < deadline, "the run did not end"
        time.sleep(0.02)
        more, succeeded = run.poll()
        lines += more
    assert succeeded and lines == ["done"] and followed == []  # the panel calls it, not the run
    run.then()
    assert followed == [True]
    assert jobs.PanelJob("clean", sys.executable, ["-c", "pass"]).then is None


def test_what_the_module_imports_when_slicer_starts_needs_nothing_heavy():
    """Slicer imports every module at start-up: the library's parts that the module imports at its top
    (read from the module file itself) pull in no scipy, torch, monai, pydicom or SimpleITK."""
    import ast
    import json
    import subprocess

    tree = ast.parse((ROOT / "UltrasoundRefine" / "UltrasoundRefine.py").read_text(encoding="utf-8"))
    imported = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("UltrasoundRefineLib"):
            imported |= {node.module} if node.module != "UltrasoundRefineLib" else {
                f"UltrasoundRefineLib.{a.name}" for a in node.names}
    assert {"UltrasoundRefineLib.slicerlogic", "UltrasoundRefineLib.slicerbridge"} <= imported
    heavy = ["scipy", "torch", "monai", "pydicom", "SimpleITK"]
    code = f"import sys, json\nimport {', '.join(sorted(imported))}\nprint(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == [], f"imported when Slicer starts: {run.stdout}"
