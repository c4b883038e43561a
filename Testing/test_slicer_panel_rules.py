"""The Slicer panel's decisions, which live in the library: what to install in which order, what a
child run's progress says, which review buttons work and what the review status says, which key
presses count. Plain Python: no Slicer, no Qt."""

from __future__ import annotations

import os
import shlex
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from UltrasoundRefineLib import jobs
from UltrasoundRefineLib import slicer_install as install
from UltrasoundRefineLib.errors import UltrasoundRefineError
from UltrasoundRefineLib.reviewsession import SETTLE_S, ReviewSession, review_panel

# ------------------------------------------------------------------------------ install plan


def test_plan_installs_only_what_is_missing_and_holds_torch_for_training(tmp_path):
    versions = {"pydicom": "2.4.4", "monai": "1.3.0", "av": "12.1"}

    def version_of(name):
        if name not in versions:
            import importlib.metadata

            raise importlib.metadata.PackageNotFoundError(name)
        return versions[name]

    lines = ["monai>=1.4", "pydicom>=3.0", "av>=12", "slicerio>=1.1"]
    plan = install.plan_install(lines, training=False, modules={"pydicom": object()}, version_of=version_of)
    assert plan.missing == ["pydicom>=3.0", "slicerio>=1.1"]  # monai only for training; av is new enough
    assert plan.need_restart == ["pydicom>=3.0"] and plan.torch_constraint is None
    assert "restart" in plan.confirmation() and "slicerio>=1.1" in plan.confirmation()
    assert "pydicom, slicerio" in plan.progress()
    assert install.write_constraint(plan, tmp_path) is None
    assert plan.pip_arguments() == ["pydicom>=3.0", "slicerio>=1.1"]

    plan = install.plan_install(lines, training=True, torch_version="2.5.1+cu121", modules={}, version_of=version_of)
    assert plan.missing[0] == "monai>=1.4" and plan.need_restart == []
    constraint = install.write_constraint(plan, tmp_path)
    assert constraint.read_text() == "torch==2.5.1+cu121\n"
    assert plan.pip_arguments(constraint)[-2:] == ["-c", str(constraint)]
    # nothing missing: nothing to do
    assert not install.plan_install(["av>=12"], version_of=version_of).needed


def test_requirements_file_and_names(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("# a comment\n\nmonai>=1.4\n  pylibjpeg-libjpeg>=2.1  \nPillow[extra]>=9 ; python_version>'3'\n")
    assert install.read_requirements(path) == ["monai>=1.4", "pylibjpeg-libjpeg>=2.1", "Pillow[extra]>=9 ; python_version>'3'"]
    assert [install.requirement_name(x) for x in install.read_requirements(path)] == ["monai", "pylibjpeg-libjpeg", "Pillow"]
    # the import name is what Slicer has loaded
    assert install.needing_restart(install.read_requirements(path), {"libjpeg": 1, "PIL": 1}) == [
        "pylibjpeg-libjpeg>=2.1", "Pillow[extra]>=9 ; python_version>'3'"
    ]


def test_python_check_names_the_supported_slicer_versions():
    install.check_python(sys.version_info)
    with pytest.raises(install.UnsupportedPythonError, match=r"3\.10 or later \(3D Slicer 5\.10 and 5\.12\).*3\.9\.13"):
        install.check_python((3, 9, 13, "final", 0))
    assert issubclass(install.UnsupportedPythonError, UltrasoundRefineError)


# ------------------------------------------------------------------------------ child runs


def test_child_command_runs_the_library_with_slicers_python(tmp_path, monkeypatch):
    program, args, env = jobs.child_command(["train", "ws dir"], "/opt/Slicer/bin/PythonSlicer")
    assert program == "/opt/Slicer/bin/PythonSlicer"
    assert args == ["-m", "UltrasoundRefineLib", "train", "ws dir"]
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(Path(__file__).resolve().parents[1])
    assert env["PYTHONUNBUFFERED"] == "1"
    assert shlex.split(jobs.command_line(program, args)) == [program, *args]  # the log's line pastes into a shell
    # PythonSlicer: on PATH, next to this Python, or in Slicer's bin folder
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(UltrasoundRefineError, match="PythonSlicer was not found"):
        jobs.find_python_slicer([str(tmp_path)])
    launcher = tmp_path / "PythonSlicer"
    launcher.write_text("")
    assert jobs.find_python_slicer([str(tmp_path)]) == str(launcher)


def test_fine_tune_starts_from_the_latest_pretrained_model(tmp_path):
    models = []
    workspace = types.SimpleNamespace(root=tmp_path, models_dir=tmp_path / "models", models=lambda: models)
    with pytest.raises(UltrasoundRefineError, match="pretrain first"):
        jobs.workspace_train_arguments(workspace, "finetune")
    args = jobs.workspace_train_arguments(workspace, "finetune", extra="--from given")  # named by the user
    assert args[args.index("--from") + 1] == "given" and args.count("--from") == 1
    models += [{"id": "p1", "card": {"training": {"stage": "pretrain"}}},
               {"id": "f1", "card": {"training": {"stage": "finetune"}}}, {"id": "bare", "card": None}]
    args = jobs.workspace_train_arguments(workspace, "finetune", 5, "cpu", 2, strategy="low-lr-encoder")
    assert args[args.index("--from") + 1] == "p1"
    assert Path(args[args.index("--out") + 1]) == tmp_path / "models" / "finetune-low-lr-encoder-seed2"
    assert jobs.latest_model(workspace, None) == "bare"


def test_job_monitor_follows_a_training_run():
    monitor = jobs.JobMonitor("train")
    assert (monitor.section, monitor.status, monitor.percent, monitor.stops_gracefully) == ("train", "Starting...", 0, True)
    start = monitor.line('{"event":"start","stage":"pretrain","strategy":"full","device":"cuda","n_train":8,"n_val":2,"epochs":40}')
    assert "on cuda" in start and monitor.epochs == 40
    assert monitor.line('{"event":"step","epoch":1,"step":3,"loss":0.5,"elapsed_s":5,"eta_s":95}') is None  # status only
    assert monitor.status.startswith("epoch 1/40 · step 3") and monitor.percent == 5
    assert monitor.line('{"event":"epoch","epoch":1,"loss":0.4,"val_dice":0.8,"elapsed_s":10,"eta_s":390}') == monitor.status
    assert monitor.line("   ") is None
    for i in range(25):
        assert monitor.line(f"warning {i}") == f"warning {i}"
    assert monitor.failure_details().splitlines() == [f"warning {i}" for i in range(5, 25)]
    assert monitor.finished(0, stopped=False) and monitor.percent == 100
    assert monitor.status.startswith("Training finished. epoch 1/40")

    stopped = jobs.JobMonitor("train")
    assert not stopped.finished(jobs.TRAIN_STOPPED_EXIT, stopped=True) and "checkpoint is kept" in stopped.status
    assert not stopped.failed  # stopped on request: no error dialog
    failed = jobs.JobMonitor("train")
    assert not failed.finished(1, stopped=False) and failed.status == "Failed (exit code 1); see the log."
    assert failed.failed


def test_job_monitor_for_suggest_and_clean_runs():
    clean = jobs.JobMonitor("clean")
    assert (clean.section, clean.status, clean.percent, clean.stops_gracefully) == ("clean", "Cleaning...", None, False)
    # JSON lines of a clean run are just log lines
    assert clean.line('{"event":"epoch","epoch":1}') == '{"event":"epoch","epoch":1}' and clean.status == "Cleaning..."
    assert not clean.finished(-9, stopped=True) and clean.status == "Stopped."
    suggest = jobs.JobMonitor("suggest")
    assert suggest.section == "train" and not suggest.stops_gracefully
    assert suggest.finished(0, stopped=False) and "new round" in suggest.status
    with pytest.raises(UltrasoundRefineError, match="unknown job kind"):
        jobs.JobMonitor("export")


# ------------------------------------------------------------------------------ review panel


class _Suggestion(types.SimpleNamespace):
    pass


class _FakeWorkspace:
    """What ReviewSession asks of a workspace, in memory."""

    def __init__(self, n=2):
        self.queue = [_Suggestion(id=10 + i, item_id=f"i{i}", round=1, stem=f"loop{i}", producer="threshold",
                                  quality=None if i else 0.42) for i in range(n)]
        self.decided = {}

    def review_queue(self, round=None):
        return list(self.queue)

    def latest_round(self):
        return 1

    def decide(self, suggestion_id, decision, user, seconds=0.0, edited_mask=None):
        self.decided[suggestion_id] = decision
        return len(self.decided)

    def status(self):
        counts = {d: sum(v == d for v in self.decided.values()) for d in ("accepted", "rejected", "edited")}
        return {"rounds": [{"round": 1, "suggestions": len(self.queue), "pending": len(self.queue) - len(self.decided), **counts}]}


def test_review_panel_says_what_is_on_screen_and_what_works():
    assert review_panel(None) == review_panel(None, True, True)
    closed = review_panel(None)
    assert closed.status == "No workspace open." and not (closed.decide_enabled or closed.next_enabled or closed.save_enabled)

    now = [0.0]
    review = ReviewSession(_FakeWorkspace(), clock=lambda: now[0])
    panel = review_panel(review)  # opened, nothing shown yet
    assert not panel.decide_enabled and panel.next_enabled and not panel.back_enabled
    assert panel.status.startswith("Nothing on screen (the scene was closed")
    assert review_panel(review, loadFailed=True).status.startswith("Nothing on screen (its loop could not be loaded")

    review.shown(np.zeros((4, 4), bool))
    panel = review_panel(review)
    assert panel.decide_enabled and not panel.save_enabled and review_panel(review, editPending=True).save_enabled
    assert panel.buttons() == {"acceptButton": True, "acceptNextButton": True, "rejectButton": True, "editButton": True,
                               "nextButton": True, "backButton": False, "saveEditedButton": False}
    assert panel.status == "1 of 2 in this session: loop0 (threshold, quality 0.42)\nround 1: 0 accepted, 0 edited, 0 rejected, 2 to go"
    now[0] += SETTLE_S
    review.decide("accepted", "tst")
    panel = review_panel(review)
    assert "you decided: accepted" in panel.status and (panel.progress_value, panel.progress_maximum) == (1, 2)
    review.next()
    review.shown(np.zeros((4, 4), bool))
    assert review_panel(review).back_enabled and "loop1 (threshold)\n" in review_panel(review).status
    review.next()
    done = review_panel(review)
    assert done.status.startswith("Review queue done (round 1: 1 accepted") and not done.next_enabled


def test_keys_next_and_edits_follow_what_is_on_screen():
    now = [0.0]
    review = ReviewSession(_FakeWorkspace(), clock=lambda: now[0])
    # nothing on screen: every key goes through (N shows the suggestion; A and X then do nothing)
    assert not any(review.ignoresKey(a) for a in ("acceptNext", "next", "back", "edit"))
    assert review.nextShowsAgain(loadFailed=False) and not review.nextShowsAgain(loadFailed=True)
    review.shown(np.zeros((4, 4), bool))
    assert not review.nextShowsAgain(loadFailed=False)
    # just appeared: deciding and moving keys are ignored (a held or bounced key), Back and Edit are not
    assert review.ignoresKey("acceptNext") and review.ignoresKey("next") and not review.ignoresKey("back")
    now[0] += SETTLE_S
    assert not review.ignoresKey("acceptNext")

    assert not review.editPending(lambda: np.zeros((4, 4), bool))
    changed = np.zeros((4, 4), bool)
    changed[0, 0] = True
    assert review.editPending(lambda: changed)

    def unreadable():
        raise ValueError("the segment was deleted")

    assert review.editPending(unreadable)  # never dropped silently
    review.hidden()
    assert not review.editPending(unreadable)


# ------------------------------------------------------------------------------ the review desk


class _Display:
    """ReviewNodes' part that the desk uses, in memory: what is shown and its mask."""

    def __init__(self):
        self.loop = self.current = self.name = None
        self.on_gone = None

    @property
    def shown(self):
        return self.current is not None

    def show(self, loop, mask, name=None):
        self.loop, self.current, self.name = loop, np.array(mask, bool), name
        return ("volume", "segmentation")

    def mask(self):
        return self.current.copy()

    def set_mask(self, mask):
        self.current = np.array(mask, bool)

    def clear(self):
        self.forget()

    def forget(self):
        self.loop = self.current = self.name = None


@pytest.fixture
def desk(tmp_path):
    import SimpleITK as sitk

    from UltrasoundRefineLib.reviewsession import ReviewDesk
    from UltrasoundRefineLib.workspace import Workspace

    (tmp_path / "loops").mkdir()
    for i in range(3):
        sitk.WriteImage(sitk.GetImageFromArray(np.full((1, 16, 20), i, np.uint8)), str(tmp_path / "loops" / f"l{i}.nrrd"))
    suggested = np.zeros((16, 20), bool)
    suggested[4:12, 5:15] = True
    with Workspace.create(tmp_path / "ws") as ws:
        ws.add_loops([tmp_path / "loops"])
        for item in ws.items():
            ws.add_suggestion(item.id, suggested, "threshold", 0.5, 1)
    now = [0.0]
    opened = ReviewDesk(tmp_path / "ws", display=_Display(), clock=lambda: now[0])
    opened.now = now
    yield opened
    opened.close()


def test_desk_records_only_what_is_on_screen_and_never_loses_an_edit(desk):
    from UltrasoundRefineLib.reviewsession import ReviewError

    asked = []

    def ask(answer):
        return lambda: asked.append(answer) or answer

    assert not desk.decideAndMove("accepted", True, ask("save"), lambda: "tst")  # nothing on screen: nothing done
    assert desk.show() == ("volume", "segmentation") and desk.session.onScreen is not None
    first = desk.session.onScreen
    assert desk.display.name == first.stem and desk.prefetcher._futures  # the next loop is read ahead
    with pytest.raises(ReviewError, match="not changed"):
        desk.saveEdit(lambda: "tst")

    edited = desk.display.mask()
    edited[0, :] = True
    desk.display.set_mask(edited)  # a Segment Editor stroke
    assert desk.editPending()
    assert not desk.move("next", ask("stay"), lambda: "tst")  # stay: nothing moves, the edit is kept
    assert desk.session.onScreen is first and desk.editPending()
    assert desk.move("next", ask("discard"), lambda: "tst")  # discard: the suggestion's mask is back
    assert desk.session.position == 1 and asked == ["stay", "discard"]
    assert desk.workspace.status()["rounds"][0]["edited"] == 0

    desk.show()
    second = desk.session.onScreen
    desk.display.set_mask(edited)
    # accept-and-next after an edit, saved: the edit is this suggestion's decision, not an accept
    assert desk.decideAndMove("accepted", True, ask("save"), lambda: "tst")
    counts = desk.workspace.status()["rounds"][0]
    assert (counts["edited"], counts["accepted"]) == (1, 0)
    np.testing.assert_array_equal(desk.workspace.human_mask(second.item_id), edited)
    desk.show()

    def nobody():
        raise ValueError("enter your initials")

    with pytest.raises(ValueError, match="initials"):  # no reviewer: nothing recorded
        desk.decideAndMove("rejected", False, ask("save"), nobody)
    assert desk.workspace.status()["rounds"][0]["rejected"] == 0


def test_desk_shows_again_what_left_the_screen_and_moves_past_a_failed_load(desk, monkeypatch):
    from UltrasoundRefineLib.reviewsession import ReviewError

    desk.show()
    first = desk.session.onScreen
    desk.nodesGone()  # Close Scene
    assert desk.session.onScreen is None and not desk.display.shown
    with pytest.raises(ReviewError, match="on screen"):
        desk.decide("accepted", "tst")
    assert desk.move("next", lambda: "stay", lambda: "tst") and desk.session.current() is first  # N shows it again
    desk.show()
    desk.session.next()

    def broken(item_id):
        raise OSError("the loop's file is gone")

    monkeypatch.setattr(desk.prefetcher, "load", broken)
    with pytest.raises(OSError):
        desk.show()
    assert desk.loadFailed and desk.session.onScreen is None and not desk.display.shown
    assert desk.move("next", lambda: "stay", lambda: "tst") and desk.session.position == 2  # N moves past it
    monkeypatch.undo()
    desk.show()
    assert not desk.loadFailed and desk.session.onScreen.stem == "l2"


# ------------------------------------------------------------------------------ off the GUI thread


def test_background_call_runs_off_the_calling_thread_and_hands_back_result_or_error():
    import threading

    from UltrasoundRefineLib.background import BackgroundCall

    release = threading.Event()
    ran_in = []

    def work(x, *, y):
        ran_in.append(threading.current_thread())
        release.wait(10)
        return x + y

    call = BackgroundCall(work, 2, y=3, name="test-call")
    assert not call.done()  # the caller is not held up: the work is still waiting
    release.set()
    assert call.result(timeout=10) == 5 and call.done()
    assert ran_in == [call.thread] and call.thread is not threading.current_thread() and call.thread.daemon

    def broken():
        raise UltrasoundRefineError("loop.dcm: no image region found")

    failing = BackgroundCall(broken)
    with pytest.raises(UltrasoundRefineError, match="loop.dcm"):
        failing.result(timeout=10)


def test_each_review_action_does_what_its_key_says(desk):
    from UltrasoundRefineLib.reviewsession import REVIEW_ACTIONS, REVIEW_SHORTCUTS, ReviewError

    assert set(REVIEW_SHORTCUTS) - {"edit"} <= set(REVIEW_ACTIONS)  # every key but E is a desk action
    keep = lambda: "stay"  # noqa: E731 - no edit is pending in this test
    assert not desk.act("accept", keep, lambda: "tst")  # nothing on screen: nothing recorded
    desk.show()
    first = desk.session.onScreen
    assert not desk.act("accept", keep, lambda: "tst")  # Shift+A: decided, still on screen
    assert desk.session.onScreen is first and desk.session.decisions == {first.id: "accepted"}
    assert desk.act("reject", keep, lambda: "tst") is False and desk.session.decisions[first.id] == "rejected"
    with pytest.raises(ReviewError, match="not changed"):
        desk.act("save", keep, lambda: "tst")  # an unchanged mask is not a human mask
    assert desk.act("acceptNext", keep, lambda: "tst") and desk.session.position == 1  # A: decided, next
    assert desk.act("back", keep, lambda: "tst") and desk.session.position == 0
    assert desk.act("next", keep, lambda: "tst") and desk.session.position == 0  # not shown yet: N shows it
    desk.show()
    assert desk.act("next", keep, lambda: "tst") and desk.session.position == 1
    with pytest.raises(ReviewError, match="unknown review action"):
        desk.act("approve", keep, lambda: "tst")
    assert desk.workspace.status()["rounds"][0]["accepted"] == 1  # the latest decision on the first counts


def test_the_next_loop_is_decoded_off_the_gui_thread_while_the_current_one_is_shown(desk, monkeypatch):
    """After show(), the next item's loop is being read by the prefetcher's thread; showing it then
    takes that decoded loop and does not read the file on the calling (GUI) thread."""
    import threading

    from UltrasoundRefineLib.workspace import store

    read_in = []
    real_read = store._load_item_loop

    def recording_read(path, item_id):
        read_in.append(threading.current_thread())
        return real_read(path, item_id)

    monkeypatch.setattr(store, "_load_item_loop", recording_read)
    desk.show()
    upcoming = desk.session.queue[1]
    ahead = desk.prefetcher._futures[upcoming.item_id].result(timeout=30)
    assert read_in and read_in[-1] is not threading.current_thread()
    np.testing.assert_array_equal(ahead.frames, desk.workspace.load_loop(upcoming.item_id).frames)

    def no_read_here(item_id):
        raise AssertionError("the next loop was read again on the GUI thread")

    monkeypatch.setattr(desk.workspace, "load_loop", no_read_here)
    desk.session.next()
    desk.show()
    assert desk.display.loop is ahead and desk.session.onScreen.item_id == upcoming.item_id


def test_training_without_the_pytorch_extension_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # `import PyTorchUtils` raises ImportError
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("monai>=1.3\n")
    with pytest.raises(install.MissingTorchError, match="PyTorch extension"):
        install.panel_install_plan(requirements, training=True)
    assert install.panel_install_plan(requirements, training=False).missing == []  # monai: training only


def test_the_module_help_lists_every_review_key_with_what_it_does():
    from UltrasoundRefineLib.reviewsession import REVIEW_KEY_WORDS, REVIEW_SHORTCUTS, keys_help

    assert set(REVIEW_KEY_WORDS) == set(REVIEW_SHORTCUTS)
    assert keys_help().startswith("A accept and next, Shift+A accept, X reject, N next, P previous")
    assert keys_help().count(",") == len(REVIEW_SHORTCUTS) - 1


def test_one_child_run_at_a_time_and_cancel_only_where_it_runs():
    idle = jobs.job_buttons(panel_ready=True, workspace_open=True, running_section=None, clean_source="fanfit")
    assert idle == {"trainButton": True, "suggestNextRoundButton": True, "cancelTrainButton": False,
                    "cleanButton": True, "cancelCleanButton": False, "cleanModelPathLineEdit": False,
                    "cleanPostprocessComboBox": False, "cleanKeepFoldersCheckBox": True}
    training = jobs.job_buttons(True, True, jobs.JobMonitor("train").section, "model")
    assert not training["trainButton"] and not training["cleanButton"] and training["cancelTrainButton"]
    assert not training["cancelCleanButton"] and training["cleanModelPathLineEdit"]
    assert training["cleanPostprocessComboBox"]  # a model's post-processing, for a model only
    # kept file names keep their folders as they are: hashed folder names would not apply
    assert not jobs.job_buttons(True, True, None, "fanfit", clean_keep_names=True)["cleanKeepFoldersCheckBox"]
    installing = jobs.job_buttons(True, True, jobs.JobMonitor("install").section)
    assert not any(installing[b] for b in ("trainButton", "cleanButton", "cancelTrainButton", "cancelCleanButton"))
    no_workspace = jobs.job_buttons(True, False, None)
    assert not no_workspace["trainButton"] and no_workspace["cleanButton"]


def test_report_cells_that_are_numbers_sort_as_numbers():
    from UltrasoundRefineLib.report.reader import cell_value

    assert sorted(map(cell_value, ["10", "9.5", "1e-3"])) == [0.001, 9.5, 10.0]
    assert cell_value("fanfit") == "fanfit" and cell_value("") == ""
