"""UltrasoundRefine: the 3D Slicer panel over UltrasoundRefineLib.

Thin glue: the logic is ``UltrasoundRefineLib.slicerlogic.PanelLogic``, the MRML side goes through
``UltrasoundRefineLib.slicerbridge``, the review's rules (a decision only for what is on screen, edits
never stored unchanged) are ``UltrasoundRefineLib.reviewsession``, and long jobs (training, cleaning)
run as ``PythonSlicer -m UltrasoundRefineLib ...`` child processes (``UltrasoundRefineLib.jobs``) whose
output the panel polls. Loading the module imports only the parts of the library that need nothing
beyond numpy, so that missing Python packages can be installed on first use (after asking).

Supported: 3D Slicer 5.10 and 5.12 (the library needs Python 3.10 or later, checked before the panel's
first action, so Slicer 5.8 and older, with Python 3.9, are not supported).
"""

import logging
import os
import pathlib
import sys
from typing import Annotated, Optional, Union


def _putLibraryOnPath(moduleFile: str) -> Optional[str]:
    """Make ``import UltrasoundRefineLib`` work wherever Slicer loads this file from.

    Installed (Extensions Manager, CMake build) the library sits next to this file, whose folder Slicer
    puts on ``sys.path``; from a source checkout added to Application Settings > Modules > Additional
    module paths (the ``UltrasoundRefine/`` folder), it is one folder up, which Slicer does not add.
    Returns the folder that holds the library, or None."""
    here = os.path.dirname(os.path.abspath(moduleFile))
    for folder in (here, os.path.dirname(here)):
        if os.path.isfile(os.path.join(folder, "UltrasoundRefineLib", "__init__.py")):
            if folder not in sys.path:
                sys.path.insert(0, folder)
            return folder
    return None


LIBRARY_ROOT = _putLibraryOnPath(__file__)

import qt  # noqa: E402 (after the library path, which needs nothing of Slicer)
import vtk  # noqa: E402

import slicer  # noqa: E402
from slicer import (  # noqa: E402
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLSequenceNode,
    vtkMRMLVectorVolumeNode,
)
from slicer.i18n import tr as _  # noqa: E402
from slicer.i18n import translate  # noqa: E402
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper  # noqa: E402
from slicer.ScriptedLoadableModule import (  # noqa: E402
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin  # noqa: E402

# the parts of the library that need nothing beyond Python and numpy (argument lists, progress words, the
# review's rules, the install plan, the MRML bridge): Slicer loads every module at start-up
from UltrasoundRefineLib import jobs, reviewsession, slicerbridge  # noqa: E402
from UltrasoundRefineLib.slicerlogic import PanelLogic  # noqa: E402

#: The user's own settings, kept in QSettings (they survive Close Scene and restarts), not in the scene:
#: the key, and the widget, its property and its change signal that show it.
SETTINGS = {
    "UltrasoundRefine/WorkspacePath": ("workspaceDirectoryButton", "directory", "directoryChanged(QString)"),
    "UltrasoundRefine/Reviewer": ("reviewerLineEdit", "text", "textChanged(QString)"),
}
#: A review key's signals: activatedAmbiguously() is what Qt emits instead of activated() when another
#: module's shortcut has the same key (e.g. AnonymizeUltrasound's); this module is the one shown, so the
#: key is ours.
SHORTCUT_SIGNALS = ("activated()", "activatedAmbiguously()")


#
# UltrasoundRefine
#


class UltrasoundRefine(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Ultrasound Refine")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Ultrasound")]
        self.parent.dependencies = ["Sequences", "Segmentations"]
        self.parent.contributors = ["UltrasoundRefine developers"]
        self.parent.helpText = _(
            "Find the ultrasound image region (fan, sector or rectangle) in cine loops, with a person in"
            " the loop: suggest a mask automatically, accept or reject it with one key, fix the wrong ones"
            " in the Segment Editor, pretrain a network on the accepted masks and fine-tune it on the"
            " human ones, compare training recipes over repeated runs, and clean loops (burned-in text"
            " outside the region removed) for export. Keys while reviewing: "
        ) + reviewsession.keys_help() + "."
        self.parent.acknowledgementText = _(
            "Implements the human-in-the-loop method of Zahn and Perrin, 'Efficient human-in-loop deep"
            " learning model training with iterative refinement and statistical result validation'"
            " (arXiv 2304.00990). Built with MONAI, pydicom and 3D Slicer."
        )
        # the phantom in Sample Data (written locally when clicked), once the application has started
        thumbnail = os.path.join(os.path.dirname(__file__), "Resources", "Icons", "UltrasoundRefine.png")
        slicer.app.connect("startupCompleted()", lambda: slicerbridge.register_sample_phantom(thumbnail))


#
# Parameter node
#


@parameterNodeWrapper
class UltrasoundRefineParameterNode:
    """What the panel shows, kept in the scene.

    The workspace folder and the reviewer's name are the user's, not the scene's: they live in
    QSettings (:data:`SETTINGS`) and survive Close Scene.

    inputNode: the loop to suggest a mask for (a volume is one frame; a sequence is a cine loop).
    automaskMethod: the auto-mask method.
    regionSegmentation: where the last suggested mask was put.
    trainStage, trainStrategy, trainEpochs (0: the stage's default), trainDevice, trainSeed,
    trainExtraArgs: the training run to start.
    reportPath: an experiment's report (JSON) or comparisons.csv to show.
    cleanSource, cleanModelPath, cleanPostprocess, cleanInputPath, cleanOutputPath, cleanKeepNames,
    cleanKeepFolders: a clean-and-export run. Kept with the scene like the rest, not in QSettings: kept
    file names may carry patient names, so that choice must not outlive the scene it was made in.
    """

    inputNode: Union[vtkMRMLScalarVolumeNode, vtkMRMLVectorVolumeNode, vtkMRMLSequenceNode]
    automaskMethod: Annotated[str, Choice(jobs.AUTOMASK_METHODS)] = "fanfit"
    regionSegmentation: vtkMRMLSegmentationNode
    trainStage: Annotated[str, Choice(jobs.TRAIN_STAGES)] = "pretrain"
    trainStrategy: Annotated[str, Choice(jobs.TRAIN_STRATEGIES)] = "full"
    trainEpochs: Annotated[int, WithinRange(0, 1000)] = 0
    trainDevice: Annotated[str, Choice(jobs.TRAIN_DEVICES)] = "auto"
    trainSeed: Annotated[int, WithinRange(0, 2**31 - 1)] = 0
    trainExtraArgs: str = ""
    reportPath: pathlib.Path
    cleanSource: Annotated[str, Choice(jobs.CLEAN_SOURCES)] = "fanfit"
    cleanModelPath: pathlib.Path
    cleanPostprocess: Annotated[str, Choice(jobs.CLEAN_POSTPROCESS_CHOICES)] = jobs.CLEAN_POSTPROCESS_CARD
    cleanInputPath: pathlib.Path
    cleanOutputPath: pathlib.Path
    cleanKeepNames: bool = False
    cleanKeepFolders: bool = False


#
# UltrasoundRefineWidget
#


class UltrasoundRefineWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._shortcuts = []
        self._job = None  # the running child process and what is shown of it (UltrasoundRefineLib.jobs.PanelJob)
        self._jobTimer = None
        self._suggesting = None  # the mask being suggested off the GUI thread (slicerbridge.MaskInProgress)
        self._suggestTimer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/UltrasoundRefine.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = UltrasoundRefineLogic()
        # the panel follows the review's nodes: an edit enables Save, a deleted node ends the display
        self.logic.reviewChangedCallback = self._updateReviewGUI

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self._connectSettings()
        self._connectButtons()

        self._jobTimer = qt.QTimer()
        self._jobTimer.setInterval(200)
        self._jobTimer.connect("timeout()", self.onPollJob)
        self._suggestTimer = qt.QTimer()
        self._suggestTimer.setInterval(100)
        self._suggestTimer.connect("timeout()", self.onPollSuggestion)
        self._suggestButtonText = self.ui.suggestMaskButton.text

        self.initializeParameterNode()
        self._updateReviewGUI()

    def cleanup(self) -> None:
        self.removeObservers()
        self._removeShortcuts()
        if self._jobTimer is not None:
            self._jobTimer.stop()
        self._dropSuggestion()
        if self._job is not None:
            self._job.process.kill()  # Slicer is closing: nobody is left to read the run's output
            self._job = None
        self.logic.closeWorkspace()

    def enter(self) -> None:
        self.initializeParameterNode()
        self._installShortcuts()

    def exit(self) -> None:
        self._removeShortcuts()
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtonStates)

    def onSceneStartClose(self, caller, event) -> None:
        self._dropSuggestion()  # its loop is leaving the scene
        self.setParameterNode(None)
        self.logic.reviewNodesGone()
        self._updateReviewGUI()

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        first = slicerbridge.first_loop_node()
        if not self._parameterNode.inputNode and first:
            self._parameterNode.inputNode = first

    def setParameterNode(self, inputParameterNode: Optional[UltrasoundRefineParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtonStates)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtonStates)
            self._updateButtonStates()

    def _updateButtonStates(self, caller=None, event=None) -> None:
        p = self._parameterNode
        self.ui.suggestMaskButton.enabled = bool(p and p.inputNode) and self._suggesting is None
        self.ui.suggestMaskButton.text = self._suggestButtonText if self._suggesting is None else _("Suggesting...")
        section = self._job.monitor.section if self._job is not None else None
        buttons = jobs.job_buttons(bool(p), self.logic.workspace is not None, section, p.cleanSource if p else "",
                                   bool(p and p.cleanKeepNames))
        for name, enabled in buttons.items():
            getattr(self.ui, name).enabled = enabled

    # ------------------------------------------------------------------ settings and buttons

    def _connectSettings(self) -> None:
        """Show each of :data:`SETTINGS` in its widget and store every change of it."""
        settings = qt.QSettings()
        for key, (name, prop, signal) in SETTINGS.items():
            widget = getattr(self.ui, name)
            if settings.value(key, ""):
                setattr(widget, prop, settings.value(key))
            widget.connect(signal, lambda value, key=key: qt.QSettings().setValue(key, str(value)))

    def _connectButtons(self) -> None:
        """Each button to what it does; a review button does what its key does (``REVIEW_BUTTONS``)."""
        handlers = {
            "suggestMaskButton": self.onSuggestMask,
            "openWorkspaceButton": self.onOpenWorkspace,
            "trainButton": self.onTrain,
            "cancelTrainButton": self.onCancelJob,
            "suggestNextRoundButton": self.onSuggestNextRound,
            "loadReportButton": self.onLoadReport,
            "cleanButton": self.onClean,
            "cancelCleanButton": self.onCancelJob,
        }
        for action, button in reviewsession.REVIEW_BUTTONS.items():
            handlers[button] = lambda action=action: self._onAction(action)
        for button, handler in handlers.items():
            getattr(self.ui, button).connect("clicked()", handler)  # clicked(): no argument reaches a handler

    # ------------------------------------------------------------------ keyboard shortcuts

    def _installShortcuts(self) -> None:
        self._removeShortcuts()
        mainWindow = slicer.util.mainWindow()
        if mainWindow is None:  # --no-main-window: nothing to press keys in
            return
        for action, key in reviewsession.REVIEW_SHORTCUTS.items():
            shortcut = qt.QShortcut(qt.QKeySequence(key), mainWindow)
            shortcut.setAutoRepeat(False)  # a held key is one press, not a run through the queue
            for signal in SHORTCUT_SIGNALS:
                shortcut.connect(signal, lambda action=action: self._onKey(action))
            self._shortcuts.append(shortcut)

    def _removeShortcuts(self) -> None:
        for shortcut in self._shortcuts:
            for signal in SHORTCUT_SIGNALS:
                shortcut.disconnect(signal)
            shortcut.setParent(None)
            shortcut.deleteLater()
        self._shortcuts = []

    def _onKey(self, action: str) -> None:
        if self.logic.review is None or not self.logic.review.ignoresKey(action):
            self._onAction(action)

    def _onAction(self, action: str) -> None:
        """A review key or button: E hands the mask to the Segment Editor, the rest are ``ReviewDesk.act``."""
        self.onEdit() if action == "edit" else self._review(action)

    # ------------------------------------------------------------------ suggest

    def onSuggestMask(self) -> None:
        """The loop is read here; the auto-mask (fanfit: seconds on a long loop) runs in a background
        thread and onPollSuggestion shows its mask when it is done, while the reviewer keeps working."""
        if self._suggesting is not None:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to suggest a mask."), waitCursor=True):
            if not self._dependenciesReady(False, self.onSuggestMask):
                return
            p = self._parameterNode
            self._suggesting = slicerbridge.MaskInProgress(p.inputNode, p.automaskMethod)
            self.ui.suggestionInfoLabel.text = self._suggesting.status
            self._suggestTimer.start()
            self._updateButtonStates()

    def onPollSuggestion(self) -> None:
        suggesting = self._suggesting
        if suggesting is not None and not suggesting.done():
            return
        self._dropSuggestion()
        if self._parameterNode is not None:
            self._updateButtonStates()
        if suggesting is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to suggest a mask."), waitCursor=True):
            p = self._parameterNode
            p.regionSegmentation, _suggestion = suggesting.show(p.regionSegmentation)
            self.ui.suggestionInfoLabel.text = suggesting.status

    def _dropSuggestion(self) -> None:
        """Stop waiting for a suggested mask (shown, failed, or its scene closed: then nobody needs it)."""
        if self._suggestTimer is not None:
            self._suggestTimer.stop()
        self._suggesting = None

    # ------------------------------------------------------------------ review

    def onOpenWorkspace(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to open the workspace."), waitCursor=True):
            if not self._dependenciesReady(False, self.onOpenWorkspace):
                return
            self.logic.openWorkspace(self.ui.workspaceDirectoryButton.directory)
            if str(self._parameterNode.reportPath) in ("", "."):  # no report chosen yet: the workspace's
                self._parameterNode.reportPath = self.logic.workspace.reports_dir
            self._showCurrent()
        self._updateReviewGUI()
        self._updateButtonStates()

    def _reviewer(self) -> str:
        return reviewsession.reviewer_name(self.ui.reviewerLineEdit.text)

    def _askAboutEdit(self) -> str:
        """The mask on screen was edited: "save", "discard" or "stay" (keep working on it)?"""
        box = qt.QMessageBox(slicer.util.mainWindow())
        box.setIcon(qt.QMessageBox.Question)
        box.setWindowTitle(_("Ultrasound Refine"))
        box.setText(_("The mask on screen was edited. Save the edit as the human mask?"))
        box.setStandardButtons(qt.QMessageBox.Save | qt.QMessageBox.Discard | qt.QMessageBox.Cancel)
        box.setDefaultButton(qt.QMessageBox.Save)
        answer = box.exec_()
        return {qt.QMessageBox.Save: "save", qt.QMessageBox.Discard: "discard"}.get(answer, "stay")

    def _review(self, action: str) -> None:
        """Run a review action (``ReviewDesk.act``); show the current suggestion if it says so."""
        if self.logic.desk is None:
            return
        with slicer.util.tryWithErrorDisplay(_(reviewsession.REVIEW_ACTIONS[action]), waitCursor=True):
            if self.logic.desk.act(action, self._askAboutEdit, self._reviewer):
                self._showCurrent()
        self._updateReviewGUI()

    def onEdit(self) -> None:
        if self.logic.reviewSegmentation is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to open the Segment Editor."), waitCursor=True):
            slicer.util.selectModule("SegmentEditor")
            editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
            editor.setSegmentationNode(self.logic.reviewSegmentation)
            editor.setSourceVolumeNode(self.logic.reviewVolume)  # "source" since Slicer 5.4
            slicer.util.showStatusMessage(
                _("Edit the mask, then come back to Ultrasound Refine and press 'Save edited mask'."), 8000
            )
        self._updateReviewGUI()

    def _showCurrent(self) -> None:
        try:
            self.logic.showCurrentSuggestion()
        finally:  # a failed load leaves nothing on screen, and the panel says so
            self._updateReviewGUI()

    def _updateReviewGUI(self) -> None:
        panel = self.logic.reviewPanel()
        for name, enabled in panel.buttons().items():
            getattr(self.ui, name).enabled = enabled
        self.ui.reviewStatusLabel.text = panel.status
        self.ui.reviewProgressBar.maximum = panel.progress_maximum
        self.ui.reviewProgressBar.value = panel.progress_value

    # ------------------------------------------------------------------ child processes (train, suggest, clean, pip)

    def _startJob(self, kind: str, command: tuple, cwd=None, then=None, status=None) -> None:
        """Run ``command`` (``(program, arguments, environment additions)``) as the panel's one child run;
        ``then()`` once it has succeeded (``jobs.PanelJob``)."""
        if self._job is not None:
            raise ValueError(_("Wait until the {kind} run has ended, or cancel it.").format(kind=self._job.monitor.kind))
        self._job = jobs.PanelJob(kind, *command, cwd=cwd, then=then, status=status)
        logging.info(f"UltrasoundRefine: {self._job.command_line}")
        self._log(self._job, self._job.command_line, clear=True)
        self._showJob(self._job)
        self._jobTimer.start()
        self._updateButtonStates()

    def _log(self, job, text: str, clear: bool = False) -> None:
        section = job.monitor.section
        if section == "install":  # pip's lines go to the Python console; the panel shows the status
            logging.info(text)
            return
        log = self.ui.cleanLogTextEdit if section == "clean" else self.ui.trainLogTextEdit
        if clear:
            log.clear()
        log.appendPlainText(text)

    def _showJob(self, job) -> None:
        ui = self.ui
        labels = {"train": ui.trainStatusLabel, "clean": ui.cleanStatusLabel, "install": ui.installStatusLabel}
        labels[job.monitor.section].text = job.monitor.status
        if job.monitor.kind == "train" and job.monitor.percent is not None:
            self.ui.trainProgressBar.value = job.monitor.percent

    def onPollJob(self) -> None:
        job = self._job
        if job is None:
            self._jobTimer.stop()
            return
        lines, succeeded = job.poll()
        for line in lines:
            self._log(job, line)
        self._showJob(job)
        if succeeded is None:
            return
        self._jobTimer.stop()
        self._job = None
        if succeeded and job.then is not None:
            job.then()
        elif job.monitor.failed:
            slicer.util.errorDisplay(_("The {kind} run failed.").format(kind=job.monitor.kind), detailedText=job.monitor.failure_details())
        self._updateButtonStates()

    def onCancelJob(self) -> None:
        if self._job is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to stop the process.")):
            self._job.cancel()
            self._showJob(self._job)

    # ------------------------------------------------------------------ installing what the library needs

    def _dependenciesReady(self, training: bool, retry) -> bool:
        """True when what an action needs is installed. Otherwise, after asking, pip installs it in a child
        process (the window keeps responding; the panel shows the progress) and ``retry()`` runs once it is
        there; a package Slicer had loaded asks for a restart instead."""
        plan = self.logic.installPlan(training)  # torch from the PyTorch extension first, if training
        if plan is None or not plan.needed:
            return plan is not None
        if not slicer.util.confirmOkCancelDisplay(plan.confirmation()):
            return False
        self._startJob("install", self.logic.installCommand(plan), status=plan.progress(),
                       then=lambda: self._installed(plan, retry))
        return False

    def _installed(self, plan, retry) -> None:
        if not plan.need_restart:
            retry()
        elif slicer.util.confirmYesNoDisplay(plan.restart_question()):
            slicer.util.restart()

    # ------------------------------------------------------------------ train

    def onTrain(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to start training."), waitCursor=True):
            if not self._dependenciesReady(True, self.onTrain):
                return
            p = self._parameterNode
            command = self.logic.trainCommand(
                p.trainStage, p.trainEpochs, p.trainDevice, p.trainSeed, p.trainExtraArgs, p.trainStrategy
            )
            self._startJob("train", command, cwd=self.logic.workspace.root)

    def onSuggestNextRound(self) -> None:
        """The method's next round: the latest trained model suggests, the reviewer reviews its masks."""
        with slicer.util.tryWithErrorDisplay(_("Failed to start the suggestions."), waitCursor=True):
            if not self._dependenciesReady(True, self.onSuggestNextRound):
                return
            if self.logic.desk is not None and self.logic.desk.resolveEdit(self._askAboutEdit, self._reviewer) == "stay":
                return
            command = self.logic.suggestCommand(self._parameterNode.trainDevice)
            self._startJob("suggest", command, cwd=self.logic.workspace.root, then=self._showNewRound)

    def _showNewRound(self) -> None:
        """The model's suggestions are the workspace's new round: review them."""
        with slicer.util.tryWithErrorDisplay(_("Failed to open the new round."), waitCursor=True):
            self.logic.openWorkspace(self.logic.workspace.root)
            self._showCurrent()

    # ------------------------------------------------------------------ clean and export

    def onClean(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to start cleaning."), waitCursor=True):
            if not self._dependenciesReady(self._parameterNode.cleanSource == "model", self.onClean):
                return
            p = self._parameterNode
            command = self.logic.cleanCommand(
                p.cleanSource, [p.cleanInputPath], p.cleanOutputPath, model=p.cleanModelPath,
                workspace=self.ui.workspaceDirectoryButton.directory, keep_names=p.cleanKeepNames,
                keep_folders=p.cleanKeepFolders, postprocess=p.cleanPostprocess,
            )
            self._startJob("clean", command)

    # ------------------------------------------------------------------ statistics

    def onLoadReport(self) -> None:
        from UltrasoundRefineLib.report.reader import cell_value, read_report_table  # scipy, via the report package

        with slicer.util.tryWithErrorDisplay(_("Failed to load the report."), waitCursor=True):
            headers, rows, summary = read_report_table(self._parameterNode.reportPath)
            table = self.ui.statsTableWidget
            table.setSortingEnabled(False)
            table.clear()
            table.setColumnCount(len(headers))
            table.setRowCount(len(rows))
            table.setHorizontalHeaderLabels(headers)
            for r, row in enumerate(rows):
                for c, value in enumerate(row):
                    item = qt.QTableWidgetItem()
                    item.setData(qt.Qt.DisplayRole, cell_value(value))  # a number sorts as a number
                    table.setItem(r, c, item)
            table.resizeColumnsToContents()
            table.setSortingEnabled(True)
            self.ui.statsSummaryLabel.text = summary


#
# UltrasoundRefineLogic
#


class UltrasoundRefineLogic(ScriptedLoadableModuleLogic, PanelLogic):
    """Everything the panel does, callable without it (Python console, self-test): the library's
    ``slicerlogic.PanelLogic`` (the open review, the child runs' commands, the install plan), told where
    the module's requirements are and what its views show."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        requirements = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Resources", "requirements.txt")
        PanelLogic.__init__(self, requirements)
        self._viewsSetUp = False  # layout and zoom set for the first suggestion shown, then left alone

    def getParameterNode(self):
        return UltrasoundRefineParameterNode(super().getParameterNode())

    def showInViews(self, volume, segmentation) -> None:
        if getattr(slicer, "app", None) is None or slicer.util.mainWindow() is None:  # no views to show it in
            return
        if not self._viewsSetUp:  # one big 2D view, fitted once: the reviewer's zoom is kept after
            slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutOneUpRedSliceView)
        slicer.util.setSliceViewerLayers(background=volume, fit=not self._viewsSetUp)
        self._viewsSetUp = True
        browser = self.desk.display.browser
        if browser is not None and hasattr(slicer.modules, "sequences"):
            slicer.modules.sequences.setToolBarActiveBrowserNode(browser)
            slicer.modules.sequences.showSequenceBrowser(browser)


#
# UltrasoundRefineTest
#


class UltrasoundRefineTest(ScriptedLoadableModuleTest):
    """Self-test: the checks of ``UltrasoundRefineLib.slicer_selftest`` (synthetic data only, no
    download, light enough for any build machine) on the application's scene, each on a cleared one."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        from UltrasoundRefineLib import slicer_selftest

        for check in slicer_selftest.SCENE_CHECKS:
            self.setUp()
            self.delayDisplay(check.__doc__.splitlines()[0])
            check(slicer.mrmlScene)
        slicer_selftest.check_progress_parsing()
        self.delayDisplay("Test passed")
