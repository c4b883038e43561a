"""The clean run's manifest: one CSV row per input, with nothing in it that identifies a patient.

A row names its loop by ``source_key`` (a hash of the file's bytes, the same key the readers give a
loop) and never by its path or name, which often carry a name or an ID. Columns:
``source_key, output, status, reason, mask_source, quality, mask_fraction, frames``; ``status`` is
``exported``, ``exists`` (resume: written by an earlier run), ``quarantined``, ``failed`` or ``skipped``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from UltrasoundRefineLib.atomic import atomic_write
from UltrasoundRefineLib.errors import OutputError

COLUMNS = ("source_key", "output", "status", "reason", "mask_source", "quality", "mask_fraction", "frames")
STATUSES = ("exported", "exists", "quarantined", "failed", "skipped")


def write_manifest(path: Path, rows: list[dict]) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in COLUMNS})

    try:
        return atomic_write(path, write)
    except OSError as e:
        raise OutputError(path, f"cannot write the manifest ({e.strerror or e})") from None
