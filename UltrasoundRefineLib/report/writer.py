"""Write the report's five files, all or nothing.

Everything is rendered in memory first; then each file goes to a temporary file in the output
folder, and only when all five are complete are they renamed over the old ones. A failure at any
point (bad input, a full disk, a folder we may not write) leaves an existing report as it was.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import sys
from pathlib import Path

from UltrasoundRefineLib.atomic import atomic_write_all
from UltrasoundRefineLib.errors import OutputError

from . import html as _html
from . import plots
from .model import ExperimentResult, validate
from .tables import comparisons_csv, per_loop_csv, report_document, runs_csv

FILES = {"html": "report.html", "json": "report.json", "runs": "runs.csv", "comparisons": "comparisons.csv",
         "per_loop": "per_loop.csv"}


def versions(extra: dict | None = None) -> dict:
    """Versions of what made the figures; torch/MONAI only when already loaded (the report never
    imports them)."""
    import matplotlib
    import numpy
    import scipy

    from UltrasoundRefineLib import __version__

    out = {
        "UltrasoundRefine": __version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "matplotlib": matplotlib.__version__,
    }
    for mod in ("torch", "monai"):
        if mod in sys.modules:
            out[mod] = getattr(sys.modules[mod], "__version__", "?")
    out.update(extra or {})
    return out


def render(result: ExperimentResult, created: str | None = None) -> dict[str, bytes]:
    """The five files' contents, keyed as :data:`FILES`; nothing is written."""
    validate(result)
    created = created or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    vers = versions(result.versions)
    figures = {
        "metric": plots.metric_plot(result),
        "others": plots.small_multiples(result),
        "curves": plots.training_curves(result),
        "overlays": plots.overlays(result),
    }
    data_files = {k: v for k, v in FILES.items() if k != "html"}
    headline = " ".join(_html.headline_sentences(result))
    doc = report_document(result, headline, vers, created, dict(FILES))
    return {
        "html": _html.render(result, figures, vers, created, data_files).encode("utf-8"),
        "json": (json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8"),
        "runs": runs_csv(result).encode("utf-8"),
        "comparisons": comparisons_csv(result).encode("utf-8"),
        "per_loop": per_loop_csv(result).encode("utf-8"),
    }


def write_report(result: ExperimentResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.html``, ``report.json``, ``runs.csv`` and ``comparisons.csv`` into ``out_dir``.

    Returns the paths keyed ``html``, ``json``, ``runs``, ``comparisons``. Raises
    :class:`~UltrasoundRefineLib.errors.OutputError` naming the path when the folder cannot be
    written; an older report there is then left untouched.
    """
    out = Path(out_dir)
    try:  # fail before the minutes of drawing, not after
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(out, f"cannot create the report folder ({exc.strerror or exc})") from None
    if not out.is_dir():
        raise OutputError(out, "is not a folder")
    contents = render(result)

    try:
        atomic_write_all({out / FILES[key]: _writer(data) for key, data in contents.items()})
    except OSError as exc:
        raise OutputError(out, f"cannot write the report ({exc.strerror or exc})") from None
    return {key: out / name for key, name in FILES.items()}


def _writer(data: bytes):
    return lambda tmp: Path(tmp).write_bytes(data)
