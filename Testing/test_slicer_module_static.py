"""The Slicer module, checked without Slicer.

The Qt panel cannot run outside Slicer, so most of this is static: the .ui parses, every widget the
code reaches through ``self.ui.<name>`` exists in it, every ``SlicerParameterName`` is a field of the
parameter node with a widget that the parameter node wrapper can bind to that field's type, the
module's CMake ships every library file, and the library never imports slicer/qt/ctk/vtk at module
level. The last section runs the module's real Logic, ReviewSession and self-test against
slicer-core's MRML classes and a real workspace, with only Slicer's application framework
(qt, ScriptedLoadableModule, parameterNodeWrapper, i18n) replaced by minimal stand-ins.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from UltrasoundRefineLib import jobs, reviewsession, slicer_selftest
from UltrasoundRefineLib import slicer_install as install
from UltrasoundRefineLib.errors import UltrasoundRefineError
from UltrasoundRefineLib.metrics import dice
from UltrasoundRefineLib.report.reader import read_report_table

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "UltrasoundRefine"
MODULE_PY = MODULE_DIR / "UltrasoundRefine.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "UltrasoundRefine.ui"
LIBRARY = ROOT / "UltrasoundRefineLib"
FORBIDDEN_AT_MODULE_LEVEL = {"slicer", "qt", "ctk", "vtk", "vtkmodules", "slicer_core", "PythonQt", "__main__"}


# --------------------------------------------------------------------------------------- parsing


def _ui_widgets() -> dict[str, ET.Element]:
    tree = ET.parse(UI_FILE)
    return {w.get("name"): w for w in tree.iter("widget")}


def _parameter_names(widgets) -> dict[str, str]:
    """widget name -> SlicerParameterName, for widgets that have one."""
    out = {}
    for name, w in widgets.items():
        for p in w.findall("property"):
            if p.get("name") == "SlicerParameterName":
                out[name] = p.findtext("string")
    return out


def _module_tree() -> ast.Module:
    return ast.parse(MODULE_PY.read_text(encoding="utf-8"), filename=str(MODULE_PY))


def _class(tree, name) -> ast.ClassDef:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise AssertionError(f"class {name} not found in {MODULE_PY.name}")


def _parameter_node_fields(tree) -> dict[str, str]:
    """field -> annotation source of the class decorated with @parameterNodeWrapper."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
            (isinstance(d, ast.Name) and d.id == "parameterNodeWrapper")
            or (isinstance(d, ast.Attribute) and d.attr == "parameterNodeWrapper")
            for d in node.decorator_list
        ):
            return {
                stmt.target.id: ast.unparse(stmt.annotation)
                for stmt in node.body
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
            }
    raise AssertionError("no @parameterNodeWrapper class in the module")


def _ui_references(tree) -> set[str]:
    """Every ``self.ui.<name>`` in the module."""
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui"
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "self"
        ):
            names.add(node.attr)
    return names


# ------------------------------------------------------------------------------------------ the .ui


def test_ui_parses_and_is_a_qmrmlwidget():
    tree = ET.parse(UI_FILE)
    root = tree.getroot()
    assert root.tag == "ui"
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == "UltrasoundRefine"
    names = [w.get("name") for w in root.iter("widget")]
    assert len(names) == len(set(names)), "widget names must be unique"
    # every custom widget class used is declared
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    assert {c for c in used if c.startswith(("ctk", "qMRML"))} <= declared


def test_every_ui_reference_in_the_module_exists_in_the_ui():
    widgets = _ui_widgets()
    missing = sorted(_ui_references(_module_tree()) - set(widgets))
    assert not missing, f"self.ui.<name> with no such widget in {UI_FILE.name}: {missing}"
    # the buttons the library's panel rules name (the module sets them with getattr(self.ui, name))
    named = set(jobs.job_buttons(True, True, None)) | set(reviewsession.review_panel(None).buttons())
    assert not named - set(widgets), sorted(named - set(widgets))


def test_node_selector_gets_the_scene():
    root = ET.parse(UI_FILE).getroot()
    receivers = {
        c.findtext("receiver")
        for c in root.iter("connection")
        if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)" and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    selectors = {name for name, w in _ui_widgets().items() if w.get("class") == "qMRMLNodeComboBox"}
    assert selectors and selectors <= receivers


# Which widget classes the parameter node wrapper's GUI connectors bind to which field types
# (Slicer's Base/Python/slicer/parameterNodeWrapper/guiConnectors.py).
def _connector_accepts(widget_class: str, annotation: str) -> bool:
    base = annotation
    m = re.match(r"Annotated\[(.*?),\s*(.*)\]$", annotation)
    extras = ""
    if m:
        base, extras = m.group(1), m.group(2)
    node_types = re.findall(r"vtkMRML\w+", base)
    if widget_class == "qMRMLNodeComboBox":
        return bool(node_types) and (base.startswith("Union[") or base.startswith("vtkMRML"))
    if widget_class == "QComboBox":
        return base in ("str", "int", "float", "bool") and "Choice(" in extras
    if widget_class in ("QSpinBox", "QSlider"):
        return base == "int" and (widget_class == "QSpinBox" or "WithinRange(" in extras)
    if widget_class in ("QDoubleSpinBox", "ctkSliderWidget"):
        return base == "float" and (widget_class == "QDoubleSpinBox" or "WithinRange(" in extras)
    if widget_class in ("QCheckBox", "QPushButton"):
        return base == "bool"
    if widget_class in ("QLineEdit", "QTextEdit"):
        return base == "str"
    if widget_class in ("ctkPathLineEdit", "ctkDirectoryButton"):
        return base in ("pathlib.Path", "Path")
    return False


def test_every_slicer_parameter_name_is_a_field_with_a_bindable_widget():
    widgets = _ui_widgets()
    bound = _parameter_names(widgets)
    fields = _parameter_node_fields(_module_tree())
    assert bound, "no widget carries a SlicerParameterName"
    unknown = {w: p for w, p in bound.items() if p not in fields}
    assert not unknown, f"SlicerParameterName not in the parameter node: {unknown}"
    assert len(set(bound.values())) == len(bound), "two widgets bound to one parameter"
    mismatched = {
        w: (widgets[w].get("class"), fields[p]) for w, p in bound.items() if not _connector_accepts(widgets[w].get("class"), fields[p])
    }
    assert not mismatched, f"no GUI connector binds these widgets to these field types: {mismatched}"


def test_parameter_node_attributes_used_in_the_module_are_fields():
    tree = _module_tree()
    fields = set(_parameter_node_fields(tree))
    wrapper_api = {"connectGui", "disconnectGui", "parameterNode", "default", "isCached", "StartModify", "EndModify"}
    used = set()
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef):
            continue
        aliases = set()
        for node in ast.walk(func):
            if isinstance(node, ast.Assign) and ast.unparse(node.value) == "self._parameterNode":
                aliases |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        for node in ast.walk(func):
            if isinstance(node, ast.Attribute) and (
                ast.unparse(node.value) == "self._parameterNode"
                or (isinstance(node.value, ast.Name) and node.value.id in aliases)
            ):
                used.add(node.attr)
    assert used, "the widget never reads its parameter node?"
    assert not (used - fields - wrapper_api), f"parameter node attributes that are not fields: {used - fields - wrapper_api}"


# ---------------------------------------------------------------------------------- the module file


def test_module_compiles_and_has_the_four_classes():
    source = MODULE_PY.read_text(encoding="utf-8")
    compile(source, str(MODULE_PY), "exec")
    tree = ast.parse(source)
    bases = {n.name: [ast.unparse(b) for b in n.bases] for n in tree.body if isinstance(n, ast.ClassDef)}
    assert bases["UltrasoundRefine"] == ["ScriptedLoadableModule"]
    assert bases["UltrasoundRefineWidget"] == ["ScriptedLoadableModuleWidget", "VTKObservationMixin"]
    assert bases["UltrasoundRefineLogic"] == ["ScriptedLoadableModuleLogic", "PanelLogic"]  # the library's logic
    assert bases["UltrasoundRefineTest"] == ["ScriptedLoadableModuleTest"]


def _methods(cls: ast.ClassDef) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}


def _self_calls(func: ast.FunctionDef) -> set[str]:
    return {
        n.func.attr
        for n in ast.walk(func)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and ast.unparse(n.func.value) == "self"
    }


def test_shortcuts_are_connected_on_enter_and_disconnected_on_exit():
    widget = _methods(_class(_module_tree(), "UltrasoundRefineWidget"))
    assert "_installShortcuts" in _self_calls(widget["enter"])
    assert "_removeShortcuts" in _self_calls(widget["exit"])
    assert "_removeShortcuts" in _self_calls(widget["cleanup"])
    assert "QShortcut" in ast.unparse(widget["_installShortcuts"])
    assert "disconnect" in ast.unparse(widget["_removeShortcuts"])


class _Recorder:
    """A widget of the panel as far as the wiring sees it: what is connected to it, and its properties."""

    def __init__(self):
        self.connections = []

    def connect(self, signal, slot):
        self.connections.append((signal, slot))


def _wired_widget(module):
    """The module's widget with every widget of the .ui as a :class:`_Recorder`, its buttons and settings
    connected by the module's own ``_connectButtons`` and ``_connectSettings``."""
    widget = module.UltrasoundRefineWidget.__new__(module.UltrasoundRefineWidget)
    widget.ui = types.SimpleNamespace(**{name: _Recorder() for name in _ui_widgets()})
    widget._connectButtons()
    return widget


def test_every_button_is_connected_once_and_every_handler_reports_errors(module):
    widget = _wired_widget(module)
    buttons = {name for name, w in _ui_widgets().items() if w.get("class") == "QPushButton"}
    for name in buttons:  # every button does something, once, and gets no argument (clicked())
        assert [signal for signal, _slot in getattr(widget.ui, name).connections] == ["clicked()"], name
    connected = {name: getattr(widget.ui, name).connections[0][1] for name in buttons}

    # a review button does what its key does
    actions = []
    widget._onAction = actions.append
    for action, button in reviewsession.REVIEW_BUTTONS.items():
        connected.pop(button)()
        assert actions[-1] == action, button
    assert set(reviewsession.REVIEW_BUTTONS) == set(reviewsession.REVIEW_ACTIONS) | {"edit"}

    # every other button runs a handler that shows what failed (slicer.util.tryWithErrorDisplay), as does
    # every review action (``_review`` for ReviewDesk.act, ``onEdit``)
    methods = _methods(_class(_module_tree(), "UltrasoundRefineWidget"))

    def guarded(name, seen=()):
        if "tryWithErrorDisplay" in ast.unparse(methods[name]):
            return True
        return any(guarded(c, seen + (name,)) for c in _self_calls(methods[name]) if c in methods and c not in seen)

    handlers = {slot.__name__ for slot in connected.values()} | {"_review", "onEdit"}
    assert {"onSuggestMask", "onOpenWorkspace", "onTrain", "onLoadReport", "onCancelJob"} <= handlers
    unguarded = sorted(h for h in handlers if not guarded(h))
    assert not unguarded, f"GUI actions without slicer.util.tryWithErrorDisplay: {unguarded}"


def test_dependencies_are_installed_only_on_first_use_and_pip_never_on_the_gui_thread():
    tree = _module_tree()
    # slicer.util.pip_install and pip_ensure hold the GUI thread while pip downloads: not used; pip runs
    # as a child process (slicer_install.pip_command), torch through the PyTorch extension
    installers = {"pip_install", "installTorch", "pip_ensure", "pip_command"}

    def callers(tree):
        found = set()
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            for name, func in _methods(cls).items():
                if any(isinstance(n, ast.Attribute) and n.attr in installers for n in ast.walk(func)):
                    found.add(f"{cls.name}.{name}")
        return found

    # the module's logic is the library's PanelLogic: pip is started there, and nowhere in the module
    assert callers(tree) == set()
    logic_tree = ast.parse((LIBRARY / "slicerlogic.py").read_text(encoding="utf-8"))
    assert callers(logic_tree) == {"PanelLogic.installCommand"}  # torch: slicer_install.torch_from_pytorch_extension
    # ... and never at import: no installer call outside functions
    for node in (*tree.body, *logic_tree.body):
        if not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            assert not any(isinstance(n, ast.Attribute) and n.attr in installers for n in ast.walk(node))


def test_requirements_use_minimum_versions_not_pins():
    lines = [
        line.strip()
        for line in (MODULE_DIR / "Resources" / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines
    assert all(">=" in line and "==" not in line for line in lines), lines
    assert not any(line.lower().startswith("torch") for line in lines), "torch comes from the PyTorch extension"


def test_icons_are_128_pixel_pngs():
    from PIL import Image

    for path in (MODULE_DIR / "Resources" / "Icons" / "UltrasoundRefine.png", ROOT / "Resources" / "Icons" / "UltrasoundRefine.png"):
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size == (128, 128), path


# ---------------------------------------------------------------------------------------- CMake


def _library_files() -> set[str]:
    return {p.relative_to(ROOT).as_posix() for p in LIBRARY.rglob("*.py") if "__pycache__" not in p.parts}


def test_extension_cmake_metadata():
    text = (ROOT / "CMakeLists.txt").read_text()
    for var in (
        "EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS",
    ):
        assert re.search(rf"set\({var}\s", text), var
    assert re.search(r'set\(EXTENSION_DEPENDS\s+"?PyTorch"?\)', text)
    assert "project(UltrasoundRefine)" in text
    order = ["find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})", "add_subdirectory(UltrasoundRefine)",
             "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"]
    positions = [text.index(s) for s in order]
    assert positions == sorted(positions)


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_module_cmake_ships_the_module_file_and_every_library_file(tmp_path):
    """Configure the module's CMakeLists.txt for real, with Slicer's build macro replaced by one that
    records what it is given."""
    driver = tmp_path / "driver"
    driver.mkdir()
    (driver / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16)\n"
        "project(Driver NONE)\n"
        "set(BUILD_TESTING OFF)\n"
        "macro(slicerMacroBuildScriptedModule)\n"
        '  cmake_parse_arguments(MY "WITH_GENERIC_TESTS" "NAME" "SCRIPTS;RESOURCES" ${ARGN})\n'
        '  file(WRITE ${CMAKE_BINARY_DIR}/name.txt "${MY_NAME}")\n'
        '  file(WRITE ${CMAKE_BINARY_DIR}/scripts.txt "${MY_SCRIPTS}")\n'
        '  file(WRITE ${CMAKE_BINARY_DIR}/resources.txt "${MY_RESOURCES}")\n'
        '  file(WRITE ${CMAKE_BINARY_DIR}/module_binary_dir.txt "${CMAKE_CURRENT_BINARY_DIR}")\n'
        "endmacro()\n"
        f'add_subdirectory("{MODULE_DIR.as_posix()}" module)\n'
    )
    build = tmp_path / "build"
    run = subprocess.run(["cmake", "-S", str(driver), "-B", str(build)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert (build / "name.txt").read_text() == "UltrasoundRefine"
    module_binary_dir = Path((build / "module_binary_dir.txt").read_text())
    scripts = (build / "scripts.txt").read_text().split(";")
    assert scripts[0] == "UltrasoundRefine.py"
    shipped = set()
    for script in scripts[1:]:
        path = Path(script)
        assert path.is_absolute() and path.is_file(), script
        # ctkMacroCompilePythonScript installs an absolute script at its path relative to the
        # module's binary dir: UltrasoundRefineLib/... next to UltrasoundRefine.py
        shipped.add(path.relative_to(module_binary_dir).as_posix())
    assert shipped == _library_files()
    for rel in shipped:
        assert (module_binary_dir / rel).read_bytes() == (ROOT / rel).read_bytes()
    for resource in (build / "resources.txt").read_text().split(";"):
        assert (MODULE_DIR / resource).is_file(), resource


def test_module_cmake_globs_the_library_and_registers_the_self_test():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    assert re.search(r"file\(GLOB_RECURSE\s+\w+\s+RELATIVE\s+\$\{\w+\}\s+CONFIGURE_DEPENDS\s+\$\{\w+\}/UltrasoundRefineLib/\*\.py", text)
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    assert "WITH_GENERIC_TESTS" in text


# ------------------------------------------------------------------------------------- the library


def _module_level_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """Imports that run when the module is imported: everything but function bodies."""
    found = []

    def visit(node):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_library_imports_no_slicer_qt_ctk_vtk_at_module_level():
    offenders = []
    for path in sorted(LIBRARY.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, name in _module_level_imports(tree):
            if name.split(".")[0] in FORBIDDEN_AT_MODULE_LEVEL:
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_only_the_bridge_imports_slicer_at_all():
    users = set()
    for path in sorted(LIBRARY.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            )
            if any(n.split(".")[0] in {"slicer", "qt", "ctk"} for n in names):
                users.add(path.relative_to(LIBRARY).as_posix())
    assert users <= {"slicerbridge.py"}, users


# ------------------------------------------------- the module's Logic outside Slicer (slicer-core)


@pytest.fixture
def module(monkeypatch):
    """UltrasoundRefine.py imported with slicer-core's MRML and minimal stand-ins for what only the
    Slicer application has; the stand-ins are removed again after the test."""
    slicer = pytest.importorskip("slicer", reason="slicer-core (PyPI) is not installed")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("slicer-core has no MRML classes")
    import unittest

    qt = types.ModuleType("qt")
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    slm = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            pass

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, msec=None):
            pass

    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest):
        setattr(slm, cls.__name__, cls)
    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    pnw.parameterNodeWrapper = lambda cls: cls
    pnw.Choice = lambda choices: ("Choice", tuple(choices))
    pnw.WithinRange = lambda lo, hi: ("WithinRange", lo, hi)

    scene = slicer.vtkMRMLScene()
    monkeypatch.setitem(sys.modules, "qt", qt)
    monkeypatch.setitem(sys.modules, "slicer.i18n", i18n)
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", slm)
    monkeypatch.setitem(sys.modules, "slicer.parameterNodeWrapper", pnw)
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    spec = importlib.util.spec_from_file_location("UltrasoundRefine", MODULE_PY)
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "UltrasoundRefine", mod)
    spec.loader.exec_module(mod)
    mod.scene = scene
    yield mod
    scene.Clear(True)


def test_self_test_runs_on_slicer_core(module):
    """The module's own self-test (slicer_selftest's checks), on real MRML."""
    result = unittest_run(module.UltrasoundRefineTest("runTest"))
    assert result.wasSuccessful(), [str(e[1]) for e in result.errors + result.failures]


def unittest_run(case):
    import unittest

    result = unittest.TestResult()
    case.run(result)
    return result


@pytest.fixture
def workspace_dir(tmp_path, module, review_workspace):
    return review_workspace(tmp_path, (4, 1))


def test_review_through_the_logic(module, workspace_dir):
    from UltrasoundRefineLib import slicerbridge
    from UltrasoundRefineLib.workspace import Workspace

    scene = module.scene
    logic = module.UltrasoundRefineLogic()
    with pytest.raises(UltrasoundRefineError, match="workspace.db"):
        logic.openWorkspace(workspace_dir.parent)
    logic.openWorkspace(workspace_dir)
    review = logic.review
    assert len(review.queue) == 2 and review.counts()["pending"] == 2

    # first suggestion: shown as volume/sequence + segmentation, accepted
    volume, segmentation = logic.showCurrentSuggestion(showInViews=False)
    first = review.current()
    assert np.array_equal(logic.desk.editedMask(), logic.workspace.suggestion_mask(first.id))
    logic.desk.decide("accepted", "tst")
    review.next()

    # second: the previous nodes leave the scene, an edited mask is saved as a human mask
    logic.showCurrentSuggestion(showInViews=False)
    assert not scene.IsNodePresent(segmentation) and not scene.IsNodePresent(volume)
    second = review.current()
    edited = logic.workspace.suggestion_mask(second.id).copy()
    edited[:10, :] = True
    slicerbridge.mask_to_segmentation(edited, logic.reviewVolume, segmentation_node=logic.reviewSegmentation, scene=scene)
    logic.desk.decide("edited", "tst", editedMask=logic.desk.editedMask())
    assert review.counts() == {"suggestions": 2, "pending": 0, "accepted": 1, "rejected": 0, "edited": 1}
    assert review.next() is None and review.atEnd

    # back: change the first decision; the latest one counts
    assert review.back().id == second.id
    assert review.back().id == first.id
    logic.showCurrentSuggestion(showInViews=False)
    logic.desk.decide("rejected", "tst")
    assert review.counts()["rejected"] == 1 and review.counts()["accepted"] == 0
    logic.closeWorkspace()
    nodes = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
    left = [n.GetClassName() for n in nodes if not n.GetSingletonTag() and not n.IsA("vtkMRMLSubjectHierarchyNode")]
    assert left == [], f"the review left nodes in the scene: {left}"

    with Workspace.open(workspace_dir, readonly=True) as ws:
        assert np.array_equal(ws.human_mask(second.item_id), edited)
        assert ws.review_queue() == []  # a reopened review resumes after what is done


def test_suggest_mask_reuses_the_segmentation_of_the_same_loop_only(module):
    from UltrasoundRefineLib import slicerbridge

    scene = module.scene
    loop, truth = slicer_selftest.synthetic_loop(n_frames=3)
    sequence, _browser, proxy = slicerbridge.loop_to_sequence(loop, scene=scene)
    first, suggestion = slicerbridge.suggest_mask_for_node(sequence, "threshold", scene=scene)
    assert first.GetAttribute("UltrasoundRefine.Method") == "threshold"
    assert float(first.GetAttribute("UltrasoundRefine.Quality")) == pytest.approx(suggestion.quality, abs=1e-4)
    again, _ = slicerbridge.suggest_mask_for_node(proxy, "fanfit", first, scene=scene)  # the proxy is the same loop
    assert again is first and first.GetSegmentation().GetNumberOfSegments() == 1
    still = slicerbridge.loop_to_volume(loop, scene=scene)
    other, _ = slicerbridge.suggest_mask_for_node(still, "threshold", first, scene=scene)
    assert other is not first
    assert dice(slicerbridge.segmentation_to_mask(other, still, scene=scene), truth) > 0.95
    with pytest.raises(ValueError, match="Select a volume"):
        slicerbridge.suggest_mask_for_node(None, scene=scene)


def test_train_command_is_what_the_library_cli_accepts(module, workspace_dir, monkeypatch):
    from UltrasoundRefineLib.cli import build_parser
    from UltrasoundRefineLib.workspace import Workspace

    logic = module.UltrasoundRefineLogic()
    logic.openWorkspace(workspace_dir)
    monkeypatch.setattr(jobs, "find_python_slicer", lambda extra_dirs=(): "/opt/Slicer/bin/PythonSlicer")
    program, args, env = logic.trainCommand("pretrain", 12, "cpu", 3, "--size 64")
    assert program.endswith("PythonSlicer") and args[:2] == ["-m", "UltrasoundRefineLib"]
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)  # the library is importable in the child
    parsed = build_parser().parse_args(args[2:])
    assert (parsed.command, parsed.stage, parsed.epochs, parsed.device, parsed.seed, parsed.size, parsed.json) == (
        "train", "pretrain", 12, "cpu", 3, 64, True
    )
    assert Path(parsed.workspace) == workspace_dir
    assert parsed.stop_on_stdin  # Cancel's "stop" line reaches the run through PythonSlicer
    assert Path(parsed.out) == logic.workspace.models_dir / "pretrain-seed3"

    # 0 epochs = the stage's default: no --epochs at all
    assert build_parser().parse_args(logic.trainCommand("pretrain", 0, "auto", 0)[1][2:]).epochs is None

    # finetune starts from the latest pretrained model unless --from is given
    with pytest.raises(UltrasoundRefineError, match="pretrain first"):
        logic.trainCommand("finetune")
    with pytest.raises(UltrasoundRefineError, match="train first"):  # no model for the next round yet
        logic.suggestCommand()
    logic.closeWorkspace()
    with Workspace.open(workspace_dir) as ws:
        for model_id in ("old", "new"):
            folder = ws.models_dir / f"pretrain-{model_id}"
            folder.mkdir(parents=True)
            ws.register_model(folder, {"model_id": model_id, "training": {"stage": "pretrain"}})
    logic.openWorkspace(workspace_dir)
    parsed = build_parser().parse_args(logic.trainCommand("finetune", 0, "cuda", 1, strategy="frozen-encoder")[1][2:])
    assert (parsed.stage, parsed.from_model, parsed.strategy) == ("finetune", "new", "frozen-encoder")
    assert Path(parsed.out).name == "finetune-frozen-encoder-seed1"
    parsed = build_parser().parse_args(logic.trainCommand("finetune", extra="--from old")[1][2:])
    assert parsed.from_model == "old"
    # the next round's suggestions come from the latest model, through the CLI's suggest
    parsed = build_parser().parse_args(logic.suggestCommand("cpu")[1][2:])
    assert (parsed.command, parsed.model, parsed.device, Path(parsed.workspace)) == ("suggest", "new", "cpu", workspace_dir)

    # an interrupted run (no card.json yet) is resumed in its folder; a finished one is kept
    out = jobs.train_output_dir(logic.workspace.models_dir, "pretrain", 5)
    (out / "checkpoint").mkdir(parents=True)
    assert jobs.train_output_dir(logic.workspace.models_dir, "pretrain", 5) == out
    (out / "card.json").write_text("{}")
    assert jobs.train_output_dir(logic.workspace.models_dir, "pretrain", 5) == out.with_name("pretrain-seed5-2")
    logic.closeWorkspace()


# Lines as ``ultrasound-refine train --json`` prints them (captured from a one-epoch CPU run).
TRAIN_EVENTS = [
    '{"event":"start","epoch":0,"step":null,"loss":null,"val_dice":null,"elapsed_s":null,"eta_s":null,"stage":"pretrain",'
    '"strategy":"full","seed":0,"n_train":2,"n_val":1,"epochs":40,"steps_per_epoch":4,"batch_size":2,"device":"cpu"}',
    '{"event":"step","epoch":3,"step":2,"loss":0.51,"val_dice":null,"elapsed_s":20.0,"eta_s":300.0}',
    '{"event":"epoch","epoch":3,"step":4,"loss":0.4123,"val_dice":0.9412,"elapsed_s":26.0,"eta_s":320.0,"best_epoch":3}',
    '{"event":"checkpoint","epoch":3,"step":null,"loss":null,"val_dice":null,"elapsed_s":26.1,"eta_s":null,"path":"/ws/models/x/checkpoint/checkpoint.pt"}',
    '{"event":"done","epoch":9,"step":null,"loss":null,"val_dice":0.97,"elapsed_s":80.0,"eta_s":0.0,"best_epoch":7,"model":"/ws/models/x","model_id":"d981e3654e8a","test_dice":null}',
]


def test_train_events_are_parsed_and_described(module):
    events = [jobs.parse_progress_line(line) for line in TRAIN_EVENTS]
    assert all(e is not None for e in events)
    start, step, epoch, checkpoint, done = events
    assert "2 training, 1 validation examples, up to 40 epochs" in jobs.describe_progress(start)
    assert jobs.describe_progress(epoch, 40).startswith("epoch 3/40 · step 4 · loss 0.4123 · val Dice 0.9412")
    assert jobs.progress_percent(epoch) == 8  # 26 s of 346 s
    assert "model d981e3654e8a" in jobs.describe_progress(done) and jobs.progress_percent(done) == 100
    assert jobs.describe_progress(checkpoint).startswith("checkpoint · epoch 3")
    assert jobs.progress_percent(step) is not None
    assert "resum" in jobs.describe_progress({"event": "stopped", "epoch": 4})


def test_progress_events_are_parsed_and_described(module):
    event = jobs.parse_progress_line(
        '{"event": "epoch", "epoch": 3, "step": 120, "loss": 0.2134, "val_dice": 0.9621, "elapsed_s": 80, "eta_s": 240}'
    )
    assert jobs.progress_percent(event) == 25
    text = jobs.describe_progress(event)
    assert "epoch 3" in text and "loss 0.2134" in text and "val Dice 0.9621" in text and "4m00s left" in text
    assert jobs.parse_progress_line("Epoch 3 done") is None
    assert jobs.parse_progress_line('{"no_event": 1}') is None
    assert jobs.parse_progress_line("{broken") is None
    assert jobs.progress_percent({"event": "epoch", "epoch": 5, "epochs": 20}) == 25
    assert jobs.progress_percent({"event": "start"}) is None


def test_report_tables(module, tmp_path):
    csv_path = tmp_path / "comparisons.csv"
    csv_path.write_text("a,b,test,pvalue\nfinetune,scratch,welch,0.003\nfinetune,pretrain,welch,0.2\n")
    headers, rows, summary = read_report_table(csv_path)
    assert headers == ["a", "b", "test", "pvalue"] and len(rows) == 2 and "2" in summary
    json_path = tmp_path / "report.json"
    json_path.write_text('{"experiment": "demo", "comparisons": [{"a": "x", "pvalue": 0.01234567}, {"a": "y", "d": [1, 2]}]}')
    headers, rows, summary = read_report_table(json_path)
    assert headers == ["a", "pvalue", "d"]
    assert rows == [["x", "0.01235", ""], ["y", "", "[1, 2]"]]
    assert "experiment: demo" in summary
    with pytest.raises(UltrasoundRefineError, match="missing.json.*not found"):
        read_report_table(tmp_path / "missing.json")


def test_report_table_of_a_real_experiment_report(module, tmp_path):
    """report.json and comparisons.csv as UltrasoundRefineLib.report writes them."""
    import json

    tables = pytest.importorskip("UltrasoundRefineLib.report.tables")
    doc = {
        "format": "UltrasoundRefine experiment report 1",
        "headline": "finetune beats scratch: Dice +0.012 (p_holm = 0.004)",
        "comparisons": [
            {"a": "finetune", "b": "scratch", "test": "student", "p": 0.001, "p_holm": 0.004,
             "checks": {"welch": {"p": 0.002}, "mannwhitney": {"p": 0.01}}},
        ],
    }
    path = tmp_path / "report.json"
    path.write_text(json.dumps(doc))
    headers, rows, summary = read_report_table(path)
    assert summary == doc["headline"]
    assert headers == ["a", "b", "test", "p", "p_holm"] and rows == [["finetune", "scratch", "student", "0.001", "0.004"]]
    csv_path = tmp_path / "comparisons.csv"
    csv_path.write_text(",".join(tables.COMPARISON_COLUMNS) + "\n")
    headers, rows, _summary = read_report_table(csv_path)
    assert headers == list(tables.COMPARISON_COLUMNS) and rows == []


def test_missing_requirements_are_found_from_requirements_txt(module):
    requirements = install.read_requirements(module.UltrasoundRefineLogic().requirementsPath())
    assert any(r.startswith("monai") for r in requirements)
    # this environment has what the library's own tests need
    assert not [m for m in install.missing_requirements(requirements, training=True) if m.startswith(("monai", "pydicom"))]
    # a package that is not installed, or too old, is reported; monai only when training
    lines = ["no-such-package-xyz>=1.0", "numpy>=999", "monai>=1.4"]
    assert install.missing_requirements(lines) == ["no-such-package-xyz>=1.0", "numpy>=999"]
    assert "monai>=1.4" not in install.missing_requirements(lines, training=True)


# ------------------------------------- review semantics on real MRML: nothing lost, nothing unseen


def _review_nodes_in(scene) -> list[str]:
    nodes = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
    return [n.GetClassName() for n in nodes if not n.GetSingletonTag() and not n.IsA("vtkMRMLSubjectHierarchyNode")]


def test_no_decision_for_a_suggestion_not_on_screen(module, workspace_dir):
    from UltrasoundRefineLib.reviewsession import ReviewError
    from UltrasoundRefineLib.workspace import Workspace

    scene = module.scene
    logic = module.UltrasoundRefineLogic()
    logic.openWorkspace(workspace_dir)
    with pytest.raises(ReviewError, match="on screen"):  # opened, nothing shown yet
        logic.desk.decide("accepted", "tst")
    logic.showCurrentSuggestion(showInViews=False)
    first = logic.review.onScreen
    assert first is not None

    scene.Clear(False)  # File > Close Scene
    assert logic.review.onScreen is None and logic.reviewSegmentation is None
    with pytest.raises(ReviewError, match="on screen"):
        logic.desk.decide("accepted", "tst")
    with pytest.raises(ReviewError):
        logic.desk.editedMask()
    with Workspace.open(workspace_dir, readonly=True) as ws:
        assert len(ws.review_queue()) == 2  # nothing was recorded

    # reopening resumes: shown again, decided, and a new session starts after it
    logic.showCurrentSuggestion(showInViews=False)
    logic.desk.decide("accepted", "tst")
    logic.openWorkspace(workspace_dir)
    assert [s.id for s in logic.review.queue] != [] and first.id not in [s.id for s in logic.review.queue]
    logic.closeWorkspace()


def test_a_deleted_segmentation_takes_the_suggestion_off_screen(module, workspace_dir):
    from UltrasoundRefineLib.reviewsession import ReviewError

    scene = module.scene
    logic = module.UltrasoundRefineLogic()
    told = []
    logic.reviewChangedCallback = lambda: told.append(logic.review.onScreen)
    logic.openWorkspace(workspace_dir)
    volume, segmentation = logic.showCurrentSuggestion(showInViews=False)
    from UltrasoundRefineLib import slicerbridge

    slicerbridge.remove_node(segmentation, scene=scene)  # the user deletes it (and its display) in the Data module
    assert told and told[-1] is None
    assert logic.reviewSegmentation is None and logic.review.onScreen is None
    with pytest.raises(ReviewError):
        logic.desk.decide("rejected", "tst")
    assert not logic.desk.editPending()
    # showing again replaces what is left (the volume) instead of leaving it behind
    logic.showCurrentSuggestion(showInViews=False)
    assert not scene.IsNodePresent(volume) and logic.review.onScreen is not None
    logic.closeWorkspace()
    assert _review_nodes_in(scene) == []


def test_a_failed_load_leaves_nothing_on_screen_to_decide_on(module, workspace_dir, monkeypatch):
    from UltrasoundRefineLib.reviewsession import ReviewError

    scene = module.scene
    logic = module.UltrasoundRefineLogic()
    logic.openWorkspace(workspace_dir)
    logic.showCurrentSuggestion(showInViews=False)
    logic.desk.decide("accepted", "tst")
    logic.review.next()

    def broken(item_id):
        raise OSError("the loop's file is gone")

    monkeypatch.setattr(logic.workspace, "load_loop", broken)
    monkeypatch.setattr(logic.desk.prefetcher, "load", broken)  # read ahead, or read now: it fails
    with pytest.raises(OSError):
        logic.showCurrentSuggestion(showInViews=False)
    assert logic.review.current() is not None and logic.review.onScreen is None
    with pytest.raises(ReviewError):
        logic.desk.decide("accepted", "tst")  # A after the failed load: not about the previous loop
    assert _review_nodes_in(scene) == []
    logic.closeWorkspace()


def test_edits_are_seen_saved_only_when_changed_and_can_be_discarded(module, workspace_dir):
    from UltrasoundRefineLib import slicerbridge
    from UltrasoundRefineLib.reviewsession import ReviewError
    from UltrasoundRefineLib.workspace import Workspace

    scene = module.scene
    logic = module.UltrasoundRefineLogic()
    edits = []
    logic.reviewChangedCallback = lambda: edits.append(logic.desk.editPending())
    logic.openWorkspace(workspace_dir)
    volume, segmentation = logic.showCurrentSuggestion(showInViews=False)
    shown = logic.review.onScreen
    display = segmentation.GetDisplayNode()  # an outline over the image, not a fill hiding the fan's edge
    assert display.GetVisibility2DOutline() and not display.GetVisibility2DFill()
    assert not logic.desk.editPending()
    with pytest.raises(ReviewError, match="not changed"):  # "Save edited mask" on an unchanged mask
        logic.desk.decide("edited", "tst", editedMask=logic.desk.editedMask())

    edited = logic.desk.editedMask().copy()
    edited[:6, :] = ~edited[:6, :]
    slicerbridge.mask_to_segmentation(edited, volume, segmentation_node=segmentation, scene=scene)  # an edit
    assert edits and edits[-1] is True and logic.desk.editPending()

    logic.desk.discardEdit()
    assert not logic.desk.editPending()
    np.testing.assert_array_equal(logic.desk.editedMask(), logic.workspace.suggestion_mask(shown.id))

    slicerbridge.mask_to_segmentation(edited, volume, segmentation_node=segmentation, scene=scene)
    logic.desk.decide("edited", "tst", editedMask=logic.desk.editedMask())
    logic.closeWorkspace()
    with Workspace.open(workspace_dir, readonly=True) as ws:
        assert np.array_equal(ws.human_mask(shown.item_id), edited)


def test_keys_wait_until_a_suggestion_has_been_on_screen_a_moment(workspace_dir):
    from UltrasoundRefineLib.reviewsession import SETTLE_S, ReviewSession
    from UltrasoundRefineLib.workspace import Workspace

    now = [100.0]
    with Workspace.open(workspace_dir) as ws:
        review = ReviewSession(ws, clock=lambda: now[0])
        assert not review.acceptsKeys()
        review.shown(ws.suggestion_mask(review.current().id))
        assert not review.acceptsKeys()  # the press that brought it up, or a held key
        now[0] += SETTLE_S + 1e-6
        assert review.acceptsKeys()
        review.decide("accepted", "tst")
        now[0] += 2.0
        review.next()
        assert not review.acceptsKeys() and review.onScreen is None


class _FakeShortcut:
    made: list = []

    def __init__(self, key, parent):
        self.key, self.autoRepeat, self.slots = key, True, {}
        _FakeShortcut.made.append(self)

    def setAutoRepeat(self, on):
        self.autoRepeat = on

    def connect(self, signal, slot):
        self.slots[signal] = slot

    def disconnect(self, signal):
        self.slots.pop(signal, None)

    def setParent(self, parent):
        pass

    def deleteLater(self):
        pass


def test_shortcuts_do_not_repeat_take_ambiguous_presses_and_avoid_the_slice_view_keys(module, monkeypatch):
    import slicer

    shortcuts = reviewsession.REVIEW_SHORTCUTS
    assert not {k.split("+")[-1].upper() for k in shortcuts.values()} & {k.upper() for k in reviewsession.SLICE_VIEW_KEYS}
    widgets = _ui_widgets()
    for action, key in shortcuts.items():  # each key is shown on its button
        text = widgets[reviewsession.REVIEW_BUTTONS[action]].find("property[@name='text']/string").text
        assert f"({key})" in text, (action, text)

    _FakeShortcut.made = []
    monkeypatch.setattr(module.qt, "QShortcut", _FakeShortcut, raising=False)
    monkeypatch.setattr(module.qt, "QKeySequence", str, raising=False)
    monkeypatch.setattr(slicer.util, "mainWindow", lambda: object(), raising=False)
    widget = module.UltrasoundRefineWidget.__new__(module.UltrasoundRefineWidget)
    widget._shortcuts = []
    pressed = []
    review = types.SimpleNamespace(acceptsKeys=lambda: ready[0], onScreen=object())
    review.ignoresKey = lambda action: reviewsession.ReviewSession.ignoresKey(review, action)  # the real rule
    widget.logic = types.SimpleNamespace(review=review)
    ready = [False]
    widget._review = pressed.append  # the action a key runs (ReviewDesk.act's names)
    widget.onEdit = lambda: pressed.append("edit")
    widget._installShortcuts()
    assert {s.key for s in _FakeShortcut.made} == set(shortcuts.values())
    assert all(s.autoRepeat is False for s in _FakeShortcut.made)
    assert all({"activated()", "activatedAmbiguously()"} <= set(s.slots) for s in _FakeShortcut.made)
    accept = next(s for s in _FakeShortcut.made if s.key == shortcuts["acceptNext"])
    accept.slots["activatedAmbiguously()"]()  # just shown: ignored
    assert pressed == []
    ready[0] = True
    accept.slots["activatedAmbiguously()"]()
    assert pressed == ["acceptNext"]
    # nothing on screen (scene closed): N still reaches its handler, which shows the suggestion again
    ready[0] = False
    widget.logic.review.onScreen = None
    next(s for s in _FakeShortcut.made if s.key == shortcuts["next"]).slots["activated()"]()
    assert pressed == ["acceptNext", "next"]
    next(s for s in _FakeShortcut.made if s.key == shortcuts["edit"]).slots["activated()"]()
    assert pressed == ["acceptNext", "next", "edit"]
    widget._removeShortcuts()
    assert widget._shortcuts == [] and all(not s.slots for s in _FakeShortcut.made)


def test_workspace_and_reviewer_are_settings_not_scene_parameters(module, monkeypatch):
    fields = _parameter_node_fields(_module_tree())
    assert "workspacePath" not in fields and "reviewer" not in fields
    bound = _parameter_names(_ui_widgets())
    assert {name for name, _prop, _signal in module.SETTINGS.values()} == {"workspaceDirectoryButton", "reviewerLineEdit"}
    assert not {name for name, _prop, _signal in module.SETTINGS.values()} & set(bound)
    assert "_connectSettings" in _self_calls(_methods(_class(_module_tree(), "UltrasoundRefineWidget"))["setup"])

    stored = {"UltrasoundRefine/WorkspacePath": "/data/ws"}  # QSettings: what the user chose last time

    class QSettings:
        def value(self, key, default=None):
            return stored.get(key, default)

        def setValue(self, key, value):
            stored[key] = value

    monkeypatch.setattr(module.qt, "QSettings", QSettings, raising=False)
    widget = _wired_widget(module)
    widget._connectSettings()
    assert widget.ui.workspaceDirectoryButton.directory == "/data/ws"  # shown again
    assert not hasattr(widget.ui.reviewerLineEdit, "text")  # nothing stored: the widget is left as it is
    for key, (name, _prop, signal) in module.SETTINGS.items():
        (connected_signal, slot), = getattr(widget.ui, name).connections
        assert connected_signal == signal
        slot(f"typed into {name}")
        assert stored[key] == f"typed into {name}"  # every change is kept for the next session


def test_the_module_puts_the_library_on_sys_path_from_a_source_checkout(module, tmp_path, monkeypatch):
    checkout = tmp_path / "checkout"
    (checkout / "UltrasoundRefine").mkdir(parents=True)
    (checkout / "UltrasoundRefineLib").mkdir()
    (checkout / "UltrasoundRefineLib" / "__init__.py").write_text("")
    installed = tmp_path / "qt-scripted-modules"
    (installed / "UltrasoundRefineLib").mkdir(parents=True)
    (installed / "UltrasoundRefineLib" / "__init__.py").write_text("")
    monkeypatch.setattr(sys, "path", list(sys.path))
    # Additional module paths = checkout/UltrasoundRefine: the library is one folder up
    assert module._putLibraryOnPath(str(checkout / "UltrasoundRefine" / "UltrasoundRefine.py")) == str(checkout)
    assert sys.path[0] == str(checkout)
    # installed: next to the module file
    assert module._putLibraryOnPath(str(installed / "UltrasoundRefine.py")) == str(installed)
    assert module._putLibraryOnPath(str(tmp_path / "elsewhere" / "UltrasoundRefine.py")) is None
    # and this repository's own module file finds this repository's library
    assert module.LIBRARY_ROOT == str(ROOT)


def test_packages_slicer_already_loaded_need_a_restart(module):
    loaded = {"pydicom": object(), "PIL": object(), "libjpeg": object()}
    need = install.needing_restart(
        ["pydicom>=3.0", "Pillow>=9.0", "pylibjpeg-libjpeg>=2.1", "monai>=1.4", "av>=12"], loaded
    )
    assert need == ["pydicom>=3.0", "Pillow>=9.0", "pylibjpeg-libjpeg>=2.1"]
    assert install.needing_restart(["monai>=1.4"], {}) == []


def test_clean_arguments_follow_the_clean_command_line(module, tmp_path):
    args = jobs.clean_arguments("fanfit", [tmp_path / "in"], tmp_path / "out")
    assert args == ["clean", "--method", "fanfit", str(tmp_path / "in"), "--out", str(tmp_path / "out")]
    assert jobs.clean_arguments("model", ["a.dcm", "b.dcm"], "o", model="m")[:4] == ["clean", "--model", "m", "a.dcm"]
    assert jobs.clean_arguments("workspace", ["x"], "o", workspace="ws")[1:3] == ["--workspace", "ws"]
    assert jobs.clean_arguments("workspace", [], "o", workspace="ws") == ["clean", "--workspace", "ws", "--out", "o"]
    for bad in (dict(source="model", inputs=["x"], out="o"), dict(source="fanfit", inputs=[], out="o"),
                dict(source="fanfit", inputs=["x"], out="."), dict(source="nope", inputs=["x"], out="o")):
        with pytest.raises(UltrasoundRefineError):
            jobs.clean_arguments(bad.pop("source"), bad.pop("inputs"), bad.pop("out"))
    from UltrasoundRefineLib.cli import build_parser

    parser = build_parser()
    if "clean" not in parser._subparsers._group_actions[0].choices:
        pytest.skip("ultrasound-refine clean has not landed yet: checked against its documented command line only")
    for source, extra in (("fanfit", {}), ("threshold", {}), ("model", {"model": "m"}), ("workspace", {"workspace": "ws"})):
        parser.parse_args(jobs.clean_arguments(source, ["in1", "in2"], "out", **extra))
    # every choice the panel offers is one clean accepts, and reaches it as chosen
    clean_parser = parser._subparsers._group_actions[0].choices["clean"]
    offered = {a.dest: a for a in clean_parser._actions}
    assert set(jobs.CLEAN_POSTPROCESS_CHOICES) - {jobs.CLEAN_POSTPROCESS_CARD} == set(offered["postprocess"].choices)
    for keep_names in (False, True):
        for keep_folders in (False, True):
            for postprocess in jobs.CLEAN_POSTPROCESS_CHOICES:
                args = jobs.clean_arguments("model", ["in"], "out", model="m", keep_names=keep_names,
                                            keep_folders=keep_folders, postprocess=postprocess)
                parsed = parser.parse_args(args)
                assert (parsed.keep_names, parsed.keep_folders) == (keep_names, keep_folders and not keep_names)
                card = postprocess == jobs.CLEAN_POSTPROCESS_CARD
                assert parsed.postprocess == (None if card else postprocess)  # the card's: nothing passed
    # post-processing is the model's: an auto-mask run's command line does not carry it
    assert "--postprocess" not in jobs.clean_arguments("fanfit", ["in"], "out", postprocess="reading")
    with pytest.raises(UltrasoundRefineError, match="unknown post-processing"):
        jobs.clean_arguments("model", ["in"], "out", model="m", postprocess="smooth")


def test_clean_and_export_passes_the_panels_naming_and_post_processing_choices(module, monkeypatch):
    import contextlib

    import slicer

    monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", lambda *a, **k: contextlib.nullcontext(), raising=False)
    widget = module.UltrasoundRefineWidget.__new__(module.UltrasoundRefineWidget)
    widget.ui = types.SimpleNamespace(workspaceDirectoryButton=types.SimpleNamespace(directory="ws"))
    widget._parameterNode = types.SimpleNamespace(
        cleanSource="model", cleanInputPath="in", cleanOutputPath="out", cleanModelPath="m",
        cleanKeepNames=False, cleanKeepFolders=True, cleanPostprocess="reading")
    widget._dependenciesReady = lambda training, retry: True
    widget.logic = types.SimpleNamespace(cleanCommand=lambda source, inputs, out, **options: (
        "PythonSlicer", jobs.clean_arguments(source, inputs, out, **options), {}))
    started = []
    widget._startJob = lambda kind, command: started.append(command[1])
    widget.onClean()
    assert started == [["clean", "--model", "m", "in", "--out", "out", "--keep-folders", "--postprocess", "reading"]]


@pytest.fixture
def installer(module, monkeypatch, tmp_path):
    """The panel's install flow outside Slicer: PyTorchUtils as the PyTorch extension has it, Slicer's
    dialogs as recorders, and a PythonSlicer (a script in ``<slicerHome>/bin``) that records the
    command line it was started with and exits, as pip would after installing."""
    import contextlib

    import slicer

    log = []
    torch_installed = [False]

    class PyTorchUtilsLogic:
        def torchInstalled(self):
            return torch_installed[0]

        def installTorch(self, askConfirmation=False, torchVersionRequirement=None):
            log.append(("installTorch", torchVersionRequirement))
            torch_installed[0] = True
            return object()

    if os.name == "nt":
        pytest.skip("the stand-in PythonSlicer is a POSIX shell script")
    bin_dir = tmp_path / "Slicer" / "bin"
    bin_dir.mkdir(parents=True)
    python_slicer = bin_dir / "PythonSlicer"
    python_slicer.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{tmp_path}/pip-args.txt"\necho "Successfully installed"\n')
    python_slicer.chmod(0o755)
    monkeypatch.setattr(jobs.shutil, "which", lambda name: None)  # no real PythonSlicer on PATH is used
    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=PyTorchUtilsLogic))
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(temporaryPath=str(tmp_path), slicerHome=str(tmp_path / "Slicer")),
                        raising=False)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, *a, **k: log.append(("ask", text)) or True, raising=False)
    monkeypatch.setattr(slicer.util, "confirmYesNoDisplay", lambda text, *a, **k: log.append(("restart?", text)) or False, raising=False)
    monkeypatch.setattr(slicer.util, "restart", lambda: log.append(("restart",)), raising=False)
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, *a, **k: log.append(("error", text)), raising=False)

    @contextlib.contextmanager
    def try_with_error_display(message, waitCursor=False):
        try:
            yield
        except Exception as error:  # noqa: BLE001 - what Slicer would show in a dialog
            log.append(("error", message, error))

    monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", try_with_error_display, raising=False)
    widget = module.UltrasoundRefineWidget.__new__(module.UltrasoundRefineWidget)
    widget.logic = module.UltrasoundRefineLogic()
    widget.ui = types.SimpleNamespace(**{name: types.SimpleNamespace(enabled=True, text="") for name in (
        "installStatusLabel", "cleanStatusLabel", "trainStatusLabel", "suggestMaskButton",
        *jobs.job_buttons(True, True, None))})  # the panel's run buttons, as the library names them
    widget._parameterNode, widget._job = None, None
    widget._jobTimer, widget._suggesting, widget._suggestButtonText = _FakeTimer(), None, "Suggest mask"
    return types.SimpleNamespace(log=log, widget=widget, pip_args=tmp_path / "pip-args.txt", tmp_path=tmp_path)


def _requirements(monkeypatch, logic, installer, lines) -> None:
    """The module's requirements.txt replaced by one holding ``lines``."""
    path = installer.tmp_path / "requirements.txt"
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(logic, "requirementsPath", staticmethod(lambda: str(path)))


def _until_job_ends(widget, timeout=30.0):
    import time

    deadline = time.monotonic() + timeout
    while widget._job is not None:
        assert time.monotonic() < deadline, "the install job did not end"
        widget.onPollJob()
        time.sleep(0.02)


def test_torch_comes_from_pytorchutils_then_pip_runs_in_a_child_process(module, installer, monkeypatch):
    """Training's packages: torch from the PyTorch extension first, then pip as a child process of
    Slicer's own Python, torch held by a constraint; the panel shows it and retries the action after."""
    import importlib.metadata

    logic, widget, log = module.UltrasoundRefineLogic, installer.widget, installer.log
    _requirements(monkeypatch, logic, installer, ["monai>=999", "no-such-package-xyz>=1"])
    # as in a fresh Slicer, where monai is not imported yet (here an earlier test file may have)
    monkeypatch.setattr(install, "needing_restart", functools.partial(install.needing_restart, modules={}))
    retried = []
    assert widget._dependenciesReady(True, lambda: retried.append(True)) is False  # not yet: pip runs
    assert [e[0] for e in log] == ["installTorch", "ask"] and "monai>=999" in log[1][1]
    assert widget._job is not None and widget._jobTimer.running  # the GUI thread is free meanwhile
    # the line at the top of the panel says what pip installs
    assert widget.ui.installStatusLabel.text.startswith("Installing Python packages for Ultrasound Refine (monai, no-such")
    with pytest.raises(ValueError, match="Wait until the install run"):  # one child run at a time
        widget._startJob("clean", (sys.executable, ["-c", "pass"], {}))
    _until_job_ends(widget)
    args = installer.pip_args.read_text().splitlines()
    constraint = args.index("-c")
    assert args[:constraint] == ["-m", "pip", "install", "--disable-pip-version-check", "monai>=999", "no-such-package-xyz>=1"]
    held = Path(args[constraint + 1]).read_text().strip()
    assert held == f"torch=={importlib.metadata.version('torch')}"  # pip may not swap the GPU build
    assert retried == [True] and widget.ui.installStatusLabel.text == "Python packages installed."
    assert widget._job is None and not widget._jobTimer.running
    # suggesting and reviewing need neither torch nor monai
    log.clear()
    assert widget._dependenciesReady(False, lambda: None) is False
    _until_job_ends(widget)
    assert [e[0] for e in log] == ["ask"]
    assert installer.pip_args.read_text().splitlines()[4:] == ["no-such-package-xyz>=1"]


def test_a_package_slicer_has_loaded_is_not_used_after_an_upgrade_in_place(module, installer, monkeypatch):
    logic, widget, log = module.UltrasoundRefineLogic, installer.widget, installer.log
    _requirements(monkeypatch, logic, installer, ["pydicom>=999"])
    assert "pydicom" in sys.modules  # as Slicer's DICOM module has it
    retried = []
    assert widget._dependenciesReady(False, lambda: retried.append(True)) is False
    _until_job_ends(widget)
    assert "restart" in next(e for e in log if e[0] == "ask")[1]
    # installed, but usable only after a restart: the action is not retried, a restart is offered
    assert retried == [] and any(e[0] == "restart?" for e in log) and not any(e[0] == "restart" for e in log)


def test_a_failed_install_says_so_and_does_not_retry(module, installer, monkeypatch):
    logic, widget, log = module.UltrasoundRefineLogic, installer.widget, installer.log
    _requirements(monkeypatch, logic, installer, ["no-such-package-xyz>=1"])
    script = Path(installer.tmp_path / "Slicer" / "bin" / "PythonSlicer")
    script.write_text("#!/bin/sh\necho 'ERROR: No matching distribution found for no-such-package-xyz'\nexit 1\n")
    retried = []
    widget._dependenciesReady(False, lambda: retried.append(True))
    _until_job_ends(widget)
    assert retried == [] and widget.ui.installStatusLabel.text.startswith("Failed (exit code 1)")
    assert any(e[0] == "error" and "install" in e[1] for e in log)


def test_an_old_python_is_refused_with_the_supported_slicer_versions(module, monkeypatch):
    monkeypatch.setattr(install, "MIN_PYTHON", (sys.version_info[0], sys.version_info[1] + 1))
    with pytest.raises(install.UnsupportedPythonError, match="5.10 and 5.12"):
        module.UltrasoundRefineLogic().installPlan()


class _PanelWidget:
    """A widget of the .ui as the panel's code sets it: enabled, text, value, a log's lines."""

    def __init__(self):
        self.enabled, self.text, self.value, self.maximum, self.lines = True, "", 0, 1, []

    def clear(self):
        self.lines = []

    def appendPlainText(self, text):
        self.lines.append(text)


def test_the_next_rounds_suggestions_open_for_review_once_their_run_has_succeeded(module, workspace_dir, monkeypatch):
    """The panel's "Suggest next round": the child run carries what follows it (jobs.PanelJob.then), and
    once it succeeds the workspace's review is opened anew and its first suggestion shown; a failed run
    opens nothing and says so."""
    import contextlib

    import slicer

    shown = []

    @contextlib.contextmanager
    def try_with_error_display(message, waitCursor=False):
        yield  # a failure fails the test

    monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", try_with_error_display, raising=False)
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, **kw: shown.append(text), raising=False)
    widget = module.UltrasoundRefineWidget.__new__(module.UltrasoundRefineWidget)
    widget.ui = types.SimpleNamespace(**{name: _PanelWidget() for name in _ui_widgets()})
    widget.logic = module.UltrasoundRefineLogic()
    widget._parameterNode, widget._job, widget._jobTimer = None, None, _FakeTimer()
    widget._suggesting, widget._suggestButtonText = None, "Suggest mask"
    widget.logic.openWorkspace(workspace_dir)
    before = widget.logic.desk
    assert widget.logic.review.onScreen is None

    widget._startJob("suggest", (sys.executable, ["-c", "print('suggested')"], {}), then=widget._showNewRound)
    assert widget.ui.trainLogTextEdit.lines[0].startswith(sys.executable)  # the command line heads the log
    _until_job_ends(widget)
    assert widget.logic.desk is not before and widget.logic.review.onScreen is not None  # reopened and shown
    assert widget.ui.trainLogTextEdit.lines[-1] == "suggested" and shown == []
    assert widget.ui.acceptButton.enabled and "1 of 2" in widget.ui.reviewStatusLabel.text
    assert widget.ui.trainStatusLabel.text.startswith("The model's suggestions are the new round")

    desk = widget.logic.desk
    widget._startJob("suggest", (sys.executable, ["-c", "raise SystemExit(3)"], {}), then=widget._showNewRound)
    _until_job_ends(widget)
    assert widget.logic.desk is desk and shown == ["The suggest run failed."]
    widget.logic.closeWorkspace()


def test_the_next_loop_is_read_ahead_and_a_failed_read_still_fails(workspace_dir, monkeypatch):
    from UltrasoundRefineLib.reviewsession import LoopPrefetcher
    from UltrasoundRefineLib.workspace import Workspace

    with Workspace.open(workspace_dir) as ws:
        queue = ws.review_queue()
        prefetcher = LoopPrefetcher(ws)
        try:
            prefetcher.prefetch(queue)
            assert list(prefetcher._futures) == [queue[0].item_id]  # one ahead
            prefetcher._futures[queue[0].item_id].result(timeout=30)  # read off this thread
            direct = ws.load_loop(queue[0].item_id)
            np.testing.assert_array_equal(prefetcher.load(queue[0].item_id).frames, direct.frames)
            assert prefetcher._futures == {}
            # the window moves on: a read no longer wanted is dropped
            prefetcher.prefetch(queue[1:])
            assert list(prefetcher._futures) == [queue[1].item_id]
            # a loop whose file is gone fails as a direct read would
            Path(ws.item(queue[0].item_id).path).unlink()
            prefetcher.prefetch(queue)
            with pytest.raises(Exception) as prefetched:
                prefetcher.load(queue[0].item_id)
            with pytest.raises(Exception) as read_now:
                ws.load_loop(queue[0].item_id)
            assert type(prefetched.value) is type(read_now.value)
        finally:
            prefetcher.close()


class _FakeTimer:
    def __init__(self):
        self.running = False

    def start(self):
        self.running = True

    def stop(self):
        self.running = False


def test_suggest_mask_runs_in_the_background_and_the_panel_shows_it_is_busy(module, monkeypatch, held_suggest):
    """The panel's Suggest mask: the button is busy and the GUI thread free while fanfit runs; the
    mask is put in the scene when the poll finds it done."""
    import contextlib
    import threading

    import slicer

    from UltrasoundRefineLib import slicerbridge

    scene = module.scene
    loop, truth = slicer_selftest.synthetic_loop(n_frames=3)
    sequence, _browser, proxy = slicerbridge.loop_to_sequence(loop, scene=scene)
    release, ran_in = held_suggest.release, held_suggest.ran_in
    errors = []

    @contextlib.contextmanager
    def try_with_error_display(message, waitCursor=False):
        try:
            yield
        except Exception as error:  # noqa: BLE001 - what Slicer would show in a dialog
            errors.append((message, error))

    monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", try_with_error_display, raising=False)
    widget = module.UltrasoundRefineWidget.__new__(module.UltrasoundRefineWidget)
    widget.logic = module.UltrasoundRefineLogic()
    monkeypatch.setattr(widget.logic, "installPlan", lambda training=False: install.InstallPlan())  # nothing missing
    widget.ui = types.SimpleNamespace(**{name: types.SimpleNamespace(enabled=True, text="") for name in (
        "suggestMaskButton", "suggestionInfoLabel", *jobs.job_buttons(True, True, None))})
    widget._parameterNode = types.SimpleNamespace(inputNode=sequence, automaskMethod="fanfit", regionSegmentation=None,
                                                  cleanSource="fanfit", cleanKeepNames=False)
    widget._job = None
    widget._suggesting, widget._suggestTimer, widget._suggestButtonText = None, _FakeTimer(), "Suggest mask"

    widget.onSuggestMask()
    assert errors == [] and widget._suggestTimer.running
    assert not widget.ui.suggestMaskButton.enabled and widget.ui.suggestMaskButton.text == "Suggesting..."
    assert "background" in widget.ui.suggestionInfoLabel.text
    widget.onSuggestMask()  # a second press while busy starts nothing
    widget.onPollSuggestion()  # not done yet: nothing changes, the reviewer keeps working
    assert widget._parameterNode.regionSegmentation is None and widget._suggestTimer.running
    release.set()
    widget._suggesting.call.result(timeout=60)
    widget.onPollSuggestion()
    assert errors == [] and not widget._suggestTimer.running and len(ran_in) == 1
    assert ran_in[0] is not threading.current_thread()
    segmentation = widget._parameterNode.regionSegmentation
    assert dice(slicerbridge.segmentation_to_mask(segmentation, proxy, scene=scene), truth) > 0.95
    assert widget.ui.suggestMaskButton.enabled and widget.ui.suggestMaskButton.text == "Suggest mask"
    assert widget.ui.suggestionInfoLabel.text.startswith("fanfit: quality")

    # the scene closes while a mask is being made: it is dropped, not put in a new scene
    widget.onSuggestMask()
    widget._dropSuggestion()
    assert widget._suggesting is None and not widget._suggestTimer.running


# ----------------------------------------------------------------------- Sample Data registration


def _sample_data_module(calls: list) -> types.ModuleType:
    """Slicer's SampleData module is not on PyPI: this one has its registration function with the
    parameters of Slicer's own (Modules/Scripted/SampleData/SampleData.py, 5.10 to main), so a keyword
    Slicer does not know fails here as it would there; the call itself is recorded, not acted on."""

    def registerCustomSampleDataSource(category="Custom", sampleName=None, uris=None, fileNames=None,
                                       nodeNames=None, customDownloader=None, thumbnailFileName=None,
                                       loadFileTypes=None, loadFiles=None, loadFileProperties={},  # noqa: B006
                                       checksums=None, loadFileType=None):
        calls.append(dict(category=category, sampleName=sampleName, uris=uris, fileNames=fileNames,
                          nodeNames=nodeNames, customDownloader=customDownloader,
                          thumbnailFileName=thumbnailFileName, checksums=checksums))

    sample_data = types.ModuleType("SampleData")
    sample_data.SampleDataLogic = type("SampleDataLogic", (), {
        "registerCustomSampleDataSource": staticmethod(registerCustomSampleDataSource)})
    return sample_data


def test_the_phantom_is_registered_with_sample_data_after_startup_and_loads_offline(module, monkeypatch, tmp_path):
    import slicer

    from UltrasoundRefineLib import slicerbridge

    connected = []
    # the Slicer application object: the one stand-in; it records what the module connects
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(connect=lambda signal, slot: connected.append((signal, slot))),
                        raising=False)
    calls = []
    monkeypatch.setitem(sys.modules, "SampleData", _sample_data_module(calls))
    monkeypatch.setattr(slicerbridge, "sample_phantom_folder", lambda: tmp_path)

    module.UltrasoundRefine(types.SimpleNamespace())
    assert [signal for signal, _ in connected] == ["startupCompleted()"]
    assert calls == []  # nothing registered before Slicer has started
    connected[0][1]()  # Slicer has started

    (kw,) = calls
    assert kw["category"] == "Ultrasound" and kw["sampleName"] == "UltrasoundRefinePhantom"
    assert kw["uris"] is None and kw["checksums"] is None  # nothing to download
    assert Path(kw["thumbnailFileName"]) == MODULE_DIR / "Resources" / "Icons" / "UltrasoundRefine.png"
    assert Path(kw["thumbnailFileName"]).is_file()
    # Sample Data's button calls customDownloader(source): the phantom is written and loaded into the scene
    proxy = kw["customDownloader"](types.SimpleNamespace(sampleName=kw["sampleName"]))
    seq = module.scene.GetFirstNodeByName("UltrasoundRefinePhantom")
    assert seq is not None and seq.IsA("vtkMRMLSequenceNode") and seq.GetNumberOfDataNodes() > 1
    assert proxy is not None and list((tmp_path / "loops").glob("*.dcm"))
