"""Where a cleaned loop goes under the output folder: nothing of the input's file or folder names
unless the user keeps them (``--keep-names``), since archives name files and folders after patients,
IDs and dates.

A file is named by the hash of its own bytes (its source key): unguessable without the file, and the
same loop gets the same name in every run. A folder has no content of its own to hash, and a plain
hash of its name is undone by hashing every candidate (a list of names, every 8-digit ID, every date
of a decade), so ``--keep-folders`` names each folder by a *keyed* hash (HMAC-SHA256) of its path below
the input folder. The key comes from the run's ``--seed`` secret (the same secret that keeps replaced
UIDs and IDs stable; without it each run draws its own), so the same folder gets the same name within
a run and in any run with the same secret, and no one without the secret can test a guess.

The path, not the folder's name alone, is hashed: two patients' folders ``2014-01-20`` would otherwise
get one name, showing that they were scanned on the same day.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import PurePath, PurePosixPath

from UltrasoundRefineLib.io import loop_stem

#: Keeps this key apart from anything else derived from the same secret (dicognito's replacements).
_DOMAIN = b"UltrasoundRefine clean: folder names\0"


class FolderNames:
    """``names(PurePath("Smith^John/2014-01-20"))`` -> ``"<16 hex>/<16 hex>"``: each level's name, a
    keyed hash of the path down to it. One per run; ``seed``: the run's secret (``None``: drawn here)."""

    def __init__(self, seed: str | None):
        self._key = os.urandom(32) if seed is None else hashlib.sha256(_DOMAIN + seed.encode()).digest()

    def __call__(self, folder: PurePath) -> PurePosixPath:
        parts = PurePosixPath(*folder.parts).parts  # one spelling of the path on every system
        return PurePosixPath(*(self._level("/".join(parts[: i + 1])) for i in range(len(parts))))

    def _level(self, path: str) -> str:
        return hmac.new(self._key, path.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()[:16]


def output_name(name: str, source_key: str, suffix: str, *, keep_names: bool = False,
                folders: FolderNames | None = None) -> str:
    """The output's path relative to the output folder, for an input found as ``name`` (its path below the
    input folder, or its file name): ``<source_key><suffix>`` at the top (default), below the hashed
    folders (``folders``), or the input's own path (``keep_names``, which keeps folders as they are)."""
    given = PurePath(name)
    if keep_names:
        # kept names lose only a known extension: UID-named DICOM files (1.2.840.1234) keep their dots
        return (PurePosixPath(*given.parent.parts) / loop_stem(name)).as_posix() + suffix
    if folders is not None and given.parent.parts:
        return (folders(given.parent) / f"{source_key}{suffix}").as_posix()
    return f"{source_key}{suffix}"
