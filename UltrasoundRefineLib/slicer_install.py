"""What the Slicer panel installs on first use, in which order, and what it tells the user.

The panel only carries the plan out (PyTorchUtils, the dialogs, and pip run by Slicer's Python in a
child process, :func:`pip_command`, so that the window keeps responding and shows pip's progress);
every decision is here, without Qt or Slicer, so that it is tested in plain pytest:

- the library needs Python 3.10 or later: Slicer 5.10 and 5.12 (5.8 bundles Python 3.9);
- suggesting and reviewing do not need what only training needs (monai, and torch under it);
- torch comes first, from the PyTorch extension (the build that fits the GPU), and is then held with a
  constraint, so that pip never swaps in a CPU torch from PyPI as monai's dependency;
- a package Slicer has already imported (pydicom 2.4 under Slicer 5.10's DICOM module) is only usable,
  and Slicer's own modules only safe, after a restart once it is upgraded in place.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from UltrasoundRefineLib.errors import UltrasoundRefineError

#: The Python the library needs (Slicer 5.10 and 5.12 have it; Slicer 5.8 bundles 3.9).
MIN_PYTHON = (3, 10)
SUPPORTED_SLICER = "5.10 and 5.12"

#: What each supported Slicer bundles (None: not found in a source, so not pinned). One table: the README
#: quotes it and Testing/test_slicer_versions.py builds an environment of each row. Sources:
#: - Python 3.12 in both: Slicer moved from 3.9 to 3.12 on 2025-06-13 (Slicer issue #8796), before 5.10
#:   (released 2025-11-10);
#: - 5.10: pydicom 2.4.4 (External_python-dicom-requirements.cmake of the 3.12 line; issue #8796: pydicom 3
#:   "after 5.10"); numpy 2.2.6 (the NumPy error a Slicer 5.10.0 user quotes in
#:   R-Vessel-X/SlicerRVXLiverSegmentation issue #17); scipy not found;
#: - 5.12: numpy 2.3.4, scipy 1.16.3, pydicom 3.0.1 (SuperBuild/requirements/python-{numpy,scipy,
#:   dicom-requirements}.txt on Slicer's main after pull request #8844, not checked against the 5.12 tag).
SLICER_BUNDLED = {
    "5.10": {"python": "3.12", "numpy": "2.2.6", "scipy": None, "pydicom": "2.4.4"},
    "5.12": {"python": "3.12", "numpy": "2.3.4", "scipy": "1.16.3", "pydicom": "3.0.1"},
}

#: Packages of requirements.txt that only training needs (suggesting and reviewing do without).
TRAINING_ONLY = {"monai"}

#: requirements.txt names whose import name differs.
IMPORT_NAMES = {
    "pylibjpeg-libjpeg": "libjpeg",
    "pylibjpeg-openjpeg": "openjpeg",
    "pylibjpeg-rle": "rle",
    "Pillow": "PIL",
}

#: The name of the constraints file that holds torch while the rest is installed.
TORCH_CONSTRAINT_FILE = "UltrasoundRefine-torch-constraint.txt"


class UnsupportedPythonError(UltrasoundRefineError):
    """This Slicer's Python is too old for the library."""


class MissingTorchError(UltrasoundRefineError):
    """Training needs torch, and Slicer gets the build that fits its GPU from the PyTorch extension."""


def check_python(version_info=None) -> None:
    """Refuse a Python older than :data:`MIN_PYTHON`, naming the Slicer versions that have one."""
    version_info = sys.version_info if version_info is None else version_info
    if tuple(version_info[:2]) < MIN_PYTHON:
        raise UnsupportedPythonError(
            "Ultrasound Refine needs Python {need} or later (3D Slicer {slicer}); this Slicer has Python {have}.".format(
                need=".".join(map(str, MIN_PYTHON)), slicer=SUPPORTED_SLICER,
                have=".".join(map(str, tuple(version_info[:3]))),
            )
        )


def requirement_name(line: str) -> str:
    """The distribution name of a requirements line (``"pydicom>=3.0"`` -> ``"pydicom"``)."""
    return re.split(r"[<>=!~\[; ]", str(line).strip(), maxsplit=1)[0]


def read_requirements(path) -> list[str]:
    """The requirement lines of a requirements.txt (comments and blank lines left out)."""
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.strip().startswith("#")]


def missing_requirements(requirements, training: bool = False,
                         version_of: Callable[[str], str] = importlib.metadata.version) -> list[str]:
    """The lines whose package is not installed (or too old); without ``training``, only what
    suggesting and reviewing need."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # no packaging: check presence only
        Requirement = None
    missing = []
    for line in requirements:
        name = requirement_name(line)
        if name in TRAINING_ONLY and not training:
            continue
        if Requirement is None:
            if importlib.util.find_spec(IMPORT_NAMES.get(name, name)) is None:
                missing.append(line)
            continue
        req = Requirement(line)
        try:
            if req.specifier.contains(version_of(req.name), prereleases=True):
                continue
        except importlib.metadata.PackageNotFoundError:
            pass
        missing.append(line)
    return missing


def needing_restart(requirements, modules=None) -> list[str]:
    """The requirement lines whose package is already imported in this Python (e.g. pydicom 2.4,
    loaded by Slicer 5.10's DICOM module): installing them changes files under a running import, so
    the new version is only usable, and Slicer's own modules only safe, after a restart."""
    modules = sys.modules if modules is None else modules
    return [str(line) for line in requirements
            if IMPORT_NAMES.get(requirement_name(line), requirement_name(line)).replace("-", "_") in modules]


@dataclass
class InstallPlan:
    """What to pip-install (after torch, if ``torch_constraint``) and what that means for the user."""

    missing: list[str] = field(default_factory=list)
    need_restart: list[str] = field(default_factory=list)
    #: ``torch==X`` to hold the installed torch while monai is installed, or None.
    torch_constraint: Optional[str] = None

    @property
    def needed(self) -> bool:
        return bool(self.missing)

    def pip_arguments(self, constraints_file=None) -> list[str]:
        """What follows ``pip install`` (the constraints file holds torch)."""
        return list(self.missing) + (["-c", str(constraints_file)] if constraints_file else [])

    def confirmation(self) -> str:
        """The question asked before installing."""
        text = "Ultrasound Refine needs these Python packages, which will be downloaded and installed now:"
        text += "\n\n" + "\n".join(self.missing)
        if self.need_restart:
            text += "\n\n" + "{names} is already loaded by Slicer: Slicer must restart afterwards.".format(
                names=", ".join(self.need_restart)
            )
        return text

    def progress(self) -> str:
        """What the panel says while pip runs."""
        return "Installing Python packages for Ultrasound Refine ({names}); this can take minutes...".format(
            names=", ".join(requirement_name(line) for line in self.missing)
        )

    def restart_question(self) -> str:
        return "{names} was updated while Slicer had it loaded: restart Slicer now to use it?".format(
            names=", ".join(self.need_restart)
        )


def plan_install(requirements, training: bool = False, torch_version: Optional[str] = None, modules=None,
                 version_of: Callable[[str], str] = importlib.metadata.version) -> InstallPlan:
    """The install plan for ``requirements`` (lines of requirements.txt) in this Python.

    ``torch_version``: the torch that training will use, installed by the PyTorch extension before
    this is called; it is held fixed while the rest is installed."""
    missing = missing_requirements(requirements, training, version_of=version_of)
    return InstallPlan(
        missing=missing,
        need_restart=needing_restart(missing) if modules is None else needing_restart(missing, modules),
        torch_constraint=f"torch=={torch_version}" if training and torch_version else None,
    )


def write_constraint(plan: InstallPlan, folder) -> Optional[Path]:
    """Write the plan's torch constraint to ``folder`` (a temporary folder); its path, or None."""
    if not plan.torch_constraint:
        return None
    from UltrasoundRefineLib.atomic import atomic_write_text

    return atomic_write_text(Path(folder) / TORCH_CONSTRAINT_FILE, plan.torch_constraint + "\n")


def pip_command(plan: InstallPlan, python: str, constraints_file=None) -> tuple[str, list, dict]:
    """``(program, arguments, environment additions)`` of ``python -m pip install ...`` for ``plan``: run
    as a child process (``UltrasoundRefineLib.jobs.PanelJob``) by Slicer's own Python (PythonSlicer),
    as ``slicer.util.pip_install`` runs it, but without holding the GUI thread while it downloads."""
    args = ["-m", "pip", "install", "--disable-pip-version-check", *plan.pip_arguments(constraints_file)]
    return str(python), args, {"PYTHONUNBUFFERED": "1"}


#: The torch the library needs, asked of the PyTorch extension.
TORCH_REQUIREMENT = ">=2.2"


def torch_from_pytorch_extension(ask: bool = True, version_of: Callable[[str], str] = importlib.metadata.version):
    """The installed torch version, installed first through Slicer's PyTorch extension (PyTorchUtils,
    which picks the build that fits the GPU) when missing; None when the user declined.

    The extension's own install holds the GUI thread while it runs (it is the extension's call); what
    comes after it, monai and the rest, is pip in a child process (:func:`pip_command`)."""
    try:
        import PyTorchUtils
    except ImportError:
        raise MissingTorchError("Training needs the PyTorch extension: install it from the Extensions Manager.") from None
    torch_logic = PyTorchUtils.PyTorchUtilsLogic()
    if not torch_logic.torchInstalled():
        if torch_logic.installTorch(askConfirmation=ask, torchVersionRequirement=TORCH_REQUIREMENT) is None:
            return None
    return version_of("torch")


def panel_install_plan(requirements_file, training: bool = False, ask: bool = True) -> Optional[InstallPlan]:
    """What the panel must pip-install before an action (``training``: train, suggest with a model, clean
    with a model), torch from the PyTorch extension FIRST and then held fixed; None when the user
    declined torch. Refuses a Python older than :data:`MIN_PYTHON`."""
    check_python()
    importlib.invalidate_caches()  # see what a pip in a child process installed since the last look
    torch_version = None
    if training:
        torch_version = torch_from_pytorch_extension(ask)
        if torch_version is None:
            return None
    return plan_install(read_requirements(requirements_file), training, torch_version=torch_version)
