"""The Slicer module's logic, less what only the application has: the open review, the command lines of
the child runs the panel starts, and the install plan.

``UltrasoundRefine.py``'s ``UltrasoundRefineLogic`` is this class plus the application: it says where the
module's requirements.txt is and puts a shown suggestion in the views (:meth:`PanelLogic.showInViews`).
Without them it runs in plain Python on any MRML scene (slicer-core's in the tests, Slicer's Python
console), which is how the panel's behaviour is tested without Slicer. No slicer import here: the
Slicer side is ``slicerbridge``.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

from UltrasoundRefineLib import jobs, slicerbridge
from UltrasoundRefineLib import slicer_install as install
from UltrasoundRefineLib.errors import UltrasoundRefineError


class PanelLogic:
    """Everything the panel does, callable without it.

    The open review is ``self.desk`` (``reviewsession.ReviewDesk``: decide, move, edits); its nodes
    (``slicerbridge.ReviewNodes``) watch the scene: a removed review node or a closed scene takes the
    suggestion off screen (no decision can then be recorded for it), and an edit of the mask calls
    ``reviewChangedCallback`` (the panel enables Save).
    """

    def __init__(self, requirements_file: str = "") -> None:
        self.requirementsFile = requirements_file
        self.desk = None  # the open review (UltrasoundRefineLib.reviewsession.ReviewDesk)
        self.reviewChangedCallback: Optional[Callable[[], None]] = None

    # ------------------------------------------------------------------ where Slicer is

    def slicerHome(self) -> str:
        """Slicer's installation folder, whose ``bin`` holds PythonSlicer ("" outside Slicer: look on PATH)."""
        return slicerbridge.application_folders()[0]

    def temporaryFolder(self) -> str:
        """Where the install's torch constraint is written: Slicer's temporary folder, else the system's."""
        return slicerbridge.application_folders()[1]

    def requirementsPath(self) -> str:
        """The module's requirements.txt: what the library needs beyond what Slicer bundles."""
        return self.requirementsFile

    def showInViews(self, volume, segmentation) -> None:
        """Put a suggestion just shown into the application's views (nothing to do without them)."""

    # ------------------------------------------------------------------ dependencies

    def installPlan(self, training: bool = False, askConfirmation: bool = True):
        """What pip must install (``slicer_install.InstallPlan``; torch from the PyTorch extension first),
        or None when the user declined torch."""
        return install.panel_install_plan(self.requirementsPath(), training, askConfirmation)

    def installCommand(self, plan) -> tuple:
        """``(program, arguments, environment additions)`` of the plan's pip run by Slicer's own Python."""
        constraints = install.write_constraint(plan, self.temporaryFolder())
        return install.pip_command(plan, jobs.find_python_slicer([os.path.join(self.slicerHome(), "bin")]), constraints)

    # ------------------------------------------------------------------ workspace and review

    def openWorkspace(self, path, round: Optional[int] = None, scene=None) -> None:
        """Open a workspace's review (``reviewsession.ReviewDesk``) shown in ``scene`` (None: Slicer's);
        the one open before is closed."""
        desk = slicerbridge.open_review(path, round, scene, on_changed=self._changed)
        self.closeWorkspace()
        self.desk = desk

    def closeWorkspace(self) -> None:
        if self.desk is not None:
            self.desk.close()
            self.desk = None

    # the open review's parts, None while no workspace is open
    workspace = property(lambda self: self.desk.workspace if self.desk else None)
    review = property(lambda self: self.desk.session if self.desk else None)
    reviewVolume = property(lambda self: self.desk.display.volume if self.desk else None)
    reviewSegmentation = property(lambda self: self.desk.display.segmentation if self.desk else None)

    def reviewPanel(self):
        """What the review part of the panel shows now (``reviewsession.ReviewPanel``)."""
        from UltrasoundRefineLib.reviewsession import review_panel

        return self.desk.panel() if self.desk is not None else review_panel(None)

    def reviewNodesGone(self) -> None:
        """The review's nodes are gone (scene closed): nothing is on screen."""
        if self.desk is not None:
            self.desk.nodesGone()

    def showCurrentSuggestion(self, showInViews: bool = True):
        """Load the current suggestion's loop and mask into the scene; returns ``(volume, segmentation)``
        (``(None, None)`` with no review open or at the end of its queue)."""
        shown = self.desk.show() if self.desk is not None else None
        if shown is None:
            return None, None
        if showInViews:
            self.showInViews(*shown)
        return shown

    def _changed(self) -> None:
        if self.reviewChangedCallback is not None:
            self.reviewChangedCallback()

    # ------------------------------------------------------------------ child runs (train, suggest, clean)

    def _openWorkspace(self):
        if self.workspace is None:
            raise UltrasoundRefineError("Open a workspace first.")
        return self.workspace

    def _child(self, args) -> tuple:
        return jobs.slicer_child_command(args, self.slicerHome())

    def trainCommand(self, stage: str, epochs: int = 0, device: str = "auto", seed: int = 0, extra: str = "",
                     strategy: str = "full") -> tuple:
        """``(program, arguments, environment additions)`` of a training run in a child process."""
        workspace = self._openWorkspace()
        return self._child(jobs.workspace_train_arguments(workspace, stage, epochs, device, seed, extra, strategy))

    def suggestCommand(self, device: str = "auto") -> tuple:
        """The next round's suggestions by the latest trained model, in a child process."""
        workspace = self._openWorkspace()
        return self._child(jobs.suggest_arguments(workspace.root, jobs.latest_model(workspace, None), device))

    def cleanCommand(self, source: str, inputs, out, **options) -> tuple:
        """``ultrasound-refine clean`` in a child process; ``options``: :func:`jobs.clean_arguments`'s
        (model, workspace, keep_names, keep_folders, postprocess)."""
        return self._child(jobs.clean_arguments(source, inputs, out, **options))
