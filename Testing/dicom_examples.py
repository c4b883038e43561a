"""pydicom's bundled example files, for tests: never downloaded, skipped when absent."""

from __future__ import annotations

import pytest


def bundled(name: str) -> str:
    """The path of a pydicom test file that ships with the package; skip the test when absent."""
    from pydicom.data import get_testdata_file

    try:
        path = get_testdata_file(name, download=False)
    except Exception:  # noqa: BLE001 - pydicom raises several kinds for a missing file
        path = None
    if not path:
        pytest.skip(f"pydicom test file {name} not available offline")
    return path
