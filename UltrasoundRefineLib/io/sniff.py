"""What a file's first bytes say it is: content beats the name, so a DICOM named ``.jpg`` or a clip
without an extension still reaches the right reader. Byte checks only, no reader imported."""

from __future__ import annotations

from pathlib import Path

#: Enough for every check here: DICOM's 128-byte preamble and ``DICM``.
HEAD_BYTES = 132

#: ISO base media boxes a QuickTime/MP4 file starts with (MP4, M4V, MOV; old QuickTime files lack ``ftyp``).
_ISO_BOXES = (b"ftyp", b"moov", b"mdat", b"wide")
_EBML = b"\x1a\x45\xdf\xa3"  # Matroska and WebM


def read_head(path: str | Path, n: int = HEAD_BYTES) -> bytes:
    """The first ``n`` bytes of the file; empty when it cannot be read (the reader says why)."""
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def is_dicom_head(head: bytes) -> bool:
    """The standard 128-byte preamble followed by ``DICM``."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def is_video_head(head: bytes) -> bool:
    """An MP4/MOV, Matroska/WebM or AVI container."""
    if len(head) >= 8 and head[4:8] in _ISO_BOXES:
        return True
    if head[:4] == _EBML:
        return True
    return len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"AVI "


def has_dicom_preamble(path: str | Path) -> bool:
    """True when the file has the standard 128-byte preamble followed by ``DICM``."""
    return is_dicom_head(read_head(path))
