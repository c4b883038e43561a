"""A read-only workspace (an archive on a read-only share) opens for ``status``, ``export-masks`` and
``predict``: SQLite cannot create the WAL's ``-shm`` file beside a database it may not write, and then
refuses even to read it ("attempt to write a readonly database") unless opened immutable.

Permissions do not bind root, which the tests usually run as: the CLI then runs as user ``nobody``
(``setpriv``) on a copy whose files and folders are ``chmod -R a-w`` - the real case, not a simulation.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from UltrasoundRefineLib.cli import main

REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534


def _as_unprivileged() -> list[str] | None:
    """The command prefix that runs without write permission on the read-only copy, or None."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def _chmod_tree(root: Path, *, writable: bool) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        if writable:
            mode |= stat.S_IWUSR
        else:
            mode &= ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
        mode |= stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
        if path.is_dir():
            mode |= stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
        os.chmod(path, mode)


@pytest.fixture(scope="module")
def archive():
    prefix = _as_unprivileged()
    if prefix is None:
        pytest.skip("running as root without setpriv: cannot take write permission away")
    # Not pytest's tmp_path: its parent is private to root, and user nobody must reach the archive.
    base = Path(tempfile.mkdtemp(prefix="usrf-readonly-"))
    os.chmod(base, 0o755)
    try:
        phantom, ws = base / "phantom", base / "ws"
        assert main(["phantom", "--n", "3", "--seed", "5", "--out", str(phantom)]) == 0
        assert main(["init", str(ws)]) == 0
        assert main(["add", str(ws), str(phantom / "loops")]) == 0
        assert main(["suggest", str(ws), "--method", "threshold", "--quiet"]) == 0
        assert main(["review", str(ws), "--simulate", "--truth", str(phantom / "truth"), "--min-dice", "0"]) == 0
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
        done = subprocess.run([sys.executable, "-m", "UltrasoundRefineLib", "train", str(ws), "--stage", "pretrain",
                               "--epochs", "1", "--size", "32", "--threads", "1", "--out", str(ws / "models" / "base")],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        # Closed cleanly, the WAL is checkpointed and its -wal/-shm files are gone: what an archive holds.
        assert not (ws / "workspace.db-shm").exists()
        out = base / "out"
        out.mkdir()
        os.chmod(out, 0o777)
        _chmod_tree(ws, writable=False)
        _chmod_tree(phantom, writable=False)
        yield {"base": base, "ws": ws, "phantom": phantom, "out": out, "prefix": prefix}
    finally:
        _chmod_tree(base, writable=True)
        shutil.rmtree(base, ignore_errors=True)


def _run_unprivileged(archive, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), HOME=str(archive["out"]),
               MPLCONFIGDIR=str(archive["out"] / ".mpl"))
    return subprocess.run([*archive["prefix"], sys.executable, "-m", "UltrasoundRefineLib", *args],
                          capture_output=True, text=True, env=env, cwd=archive["out"], timeout=120)


def test_the_copy_is_really_read_only_for_the_user(archive):
    probe = _run_unprivileged(archive, "review", str(archive["ws"]), "--simulate", "--truth",
                              str(archive["phantom"] / "truth"))
    assert probe.returncode != 0 and "not writable" in probe.stderr, probe.stderr


def test_status_of_a_read_only_workspace(archive):
    done = _run_unprivileged(archive, "status", str(archive["ws"]), "--json")
    assert done.returncode == 0, done.stderr
    assert "readonly database" not in done.stderr
    import json

    st = json.loads(done.stdout)
    assert st["items"] == 3 and st["rounds"][0]["accepted"] == 3


def test_export_masks_of_a_read_only_workspace(archive):
    from UltrasoundRefineLib.io import read_mask
    from UltrasoundRefineLib.workspace import Workspace

    dest = archive["out"] / "exported"
    done = _run_unprivileged(archive, "export-masks", str(archive["ws"]), "--out", str(dest))
    assert done.returncode == 0, done.stderr
    written = sorted(p.name for p in dest.glob("*.nrrd"))
    assert written == ["phantom_0000.nrrd", "phantom_0001.nrrd", "phantom_0002.nrrd"]
    with Workspace.open(archive["ws"], readonly=True) as ws:  # (as root here: the masks it holds)
        for s in ws.suggestions():
            assert np.array_equal(read_mask(dest / f"{s.stem}.nrrd"), read_mask(s.mask_path))


def test_predict_with_a_model_in_a_read_only_workspace(archive):
    dest = archive["out"] / "predicted"
    done = _run_unprivileged(archive, "predict", "--model", str(archive["ws"] / "models" / "base"),
                             str(archive["phantom"] / "loops"), "--out", str(dest), "--quiet", "--no-tta")
    assert done.returncode == 0, done.stderr
    assert len(list(dest.glob("*.nrrd"))) == 3
