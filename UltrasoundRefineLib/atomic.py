"""Write a file so that a crash never leaves half of it: a temporary file beside it, fsync, rename.

Every file the library writes whole (masks, JSON, CSV, reports, weights, the workspace database) goes
through here, so there is one place that gets the temporary name, the fsync, the permissions and the
clean-up right.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Mapping


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file in ``path``'s folder, then move it onto ``path``.

    The temporary file keeps ``path``'s suffix (writers such as ``torch.save`` and pydicom look at the
    name) and does not start with a dot (``torch.save`` names its zip archive after the file). On any
    failure the temporary file is removed and ``path`` is left as it was.
    """
    return atomic_write_all({path: write})[0]


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write` of a UTF-8 text (JSON, CSV) held in memory."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """:func:`atomic_write` of bytes held in memory."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_all(writes: Mapping[str | Path, Callable[[str], None]]) -> list[Path]:
    """:func:`atomic_write` for files that belong together (a report's files): every temporary file
    is filled and synced before the first rename, so a failure while writing leaves all the old files
    as they were. Returns the paths in the order given."""
    temps: list[tuple[str, Path]] = []
    try:
        for path, write in writes.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f"{path.stem}-tmp-", suffix=path.suffix, dir=path.parent)
            os.close(fd)
            temps.append((tmp, path))
            write(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            # mkstemp makes 0600; the file gets what a plain open() would give it (or the old file's).
            os.chmod(tmp, _mode_for(path))
        for tmp, path in temps:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in temps:
            Path(tmp).unlink(missing_ok=True)
        raise
    return [path for _, path in temps]


def atomic_copy_folder(source: str | Path, destination: str | Path, *, ignore=None) -> Path:
    """Copy a folder (a model) onto ``destination`` so that a crash at any moment leaves a whole folder
    there, old or new: copied beside it first, then swapped in (for the instant between the two
    renames the old one is only at ``.<name>.old`` beside it, and is removed after)."""
    import shutil

    destination = Path(destination)
    fresh = destination.with_name(f".{destination.name}.new")
    stale = destination.with_name(f".{destination.name}.old")
    for leftover in (fresh, stale):
        shutil.rmtree(leftover, ignore_errors=True)
    shutil.copytree(source, fresh, ignore=ignore)
    if destination.exists():
        destination.rename(stale)
    fresh.rename(destination)
    shutil.rmtree(stale, ignore_errors=True)
    return destination


def _mode_for(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    # Linux shows the umask without changing it; os.umask can only read it by setting it, which
    # another thread creating a file at that moment would see.
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
