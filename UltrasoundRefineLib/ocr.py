"""Reading a screen's burned-in text with tesseract, where it is installed.

Step 1 reads one number off the screen (the imaging depth, :mod:`.automask.depthlabel`) and the tests
check that cleaned frames keep no readable names; both need text read from scanner graphics, which is
light, small and on black. Tesseract is a system program (Debian: ``tesseract-ocr``), not a Python
wheel, so it is optional: where it is missing, :func:`text_lines` says so by returning ``None`` and its
callers go without. What it reads may be a patient's name: callers keep only what they look for and
never log the rest.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess

import numpy as np

TESSERACT = "tesseract"
SCALE = 3  # scanner text is a few pixels high; tesseract reads letters of 20-30 px best
TEXT_LEVEL = 120  # grey level above which a pixel is drawn text (light on black)


def available() -> bool:
    """Whether the tesseract program is on the PATH."""
    return shutil.which(TESSERACT) is not None


def text_lines(image: np.ndarray, *, scale: int = SCALE, level: float = TEXT_LEVEL,
               timeout: float = 120.0) -> list[str] | None:
    """The lines of text tesseract reads in a frame (``(H, W)`` or ``(H, W, 3)``, grey levels 0-255), each
    its words joined by single spaces, top of the page first; ``None`` where tesseract is not installed.

    The frame is scaled up ``scale`` times and binarised at ``level`` to dark text on white, and the page
    segmented as sparse text (scanner screens scatter short labels, not paragraphs). A tesseract that
    fails, or runs past ``timeout`` seconds, reads no lines."""
    from PIL import Image, ImageOps

    if not available():
        return None
    grey = np.asarray(image, dtype=np.float32)
    if grey.ndim == 3:
        grey = grey.mean(axis=-1)
    page = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8))
    page = page.resize((page.width * scale, page.height * scale), Image.LANCZOS)
    page = ImageOps.invert(page.point(lambda v: 255 if v > level else 0))
    encoded = io.BytesIO()
    page.save(encoded, format="PNG")
    # through a pipe, never a file: the screen holds the patient's name
    try:
        done = subprocess.run([TESSERACT, "stdin", "stdout", "--psm", "11", "tsv"], input=encoded.getvalue(),
                              capture_output=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return []  # a tesseract that cannot run or hangs reads nothing; the caller goes on without
    if done.returncode != 0:
        return []
    lines: dict[tuple[str, str, str], list[str]] = {}
    text = done.stdout.decode("utf-8", errors="replace")
    for row in csv.DictReader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE):
        word = (row.get("text") or "").strip()
        if word:
            lines.setdefault((row["block_num"], row["par_num"], row["line_num"]), []).append(word)
    return [" ".join(words) for words in lines.values()]


def words(image: np.ndarray, **kwargs) -> set[str] | None:
    """The words of :func:`text_lines`, upper case, stripped of punctuation; ``None`` without tesseract."""
    lines = text_lines(image, **kwargs)
    if lines is None:
        return None
    return {w.strip(".,:;()[]").upper() for line in lines for w in line.split()}
