"""Durability: a decision acknowledged is a decision kept, through SIGKILL and beside other processes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from UltrasoundRefineLib.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]

# Decides over and over (every 7th an edit, which writes a mask file first) and prints each decision
# id only after decide() has returned: those are the acknowledged ones.
WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from UltrasoundRefineLib.workspace import Workspace

    root, n = sys.argv[1], int(sys.argv[2])
    with Workspace.open(root) as ws:
        sids = [s.id for s in ws.suggestions()]
        shape = ws.items()[0].shape
        print("ready", flush=True)
        for k in range(n):
            sid = sids[k % len(sids)]
            if k % 7 == 3:
                mask = np.zeros(shape, bool)
                mask[: 1 + k % shape[0]] = True
                did = ws.decide(sid, "edited", "writer", seconds=0.5, edited_mask=mask)
            else:
                did = ws.decide(sid, "accepted" if k % 2 else "rejected", "writer", seconds=0.1)
            sys.stdout.write(f"{did}\\n")
            sys.stdout.flush()
    print("done", flush=True)
    """
)


def _start_writer(root: Path, n: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(REPO),
    )


def _wait_ready(proc: subprocess.Popen) -> None:
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise AssertionError(f"writer did not start: {line!r} {proc.stderr.read()}")


@pytest.mark.parametrize("kill_after", [5, 23, 61])
def test_sigkill_mid_stream_loses_no_acknowledged_decision(tmp_path, kill_after, tiny_workspace):
    root = tmp_path / "ws"
    tiny_workspace(root, 4, mask=np.ones((16, 20), bool)).close()
    proc = _start_writer(root, 100_000)
    try:
        _wait_ready(proc)
        acknowledged = []
        while len(acknowledged) < kill_after:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            acknowledged.append(int(line))
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: the writer is inside its next decide()
        # whatever it printed before it died was acknowledged too
        rest = proc.stdout.read()
        acknowledged += [int(x) for x in rest.split() if x.isdigit()]
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with Workspace.open(root) as ws:
        stored = {d["id"] for d in ws.decisions()}
        assert set(acknowledged) <= stored
        assert len(stored) - len(acknowledged) <= 1  # at most the one in flight was committed unprinted
        # no row points to a missing mask file
        for row in ws._query("SELECT mask_path FROM human_masks"):
            assert (root / row[0]).is_file()
        for d in ws.decisions():
            if d["decision"] == "edited":
                assert d["human_mask_id"] is not None
        assert ws._query("PRAGMA integrity_check")[0][0] == "ok"
        # and it goes on working
        ws.decide(ws.suggestions()[0].id, "accepted", "after")


def test_reader_and_writer_at_the_same_time(tmp_path, tiny_workspace):
    root = tmp_path / "ws"
    tiny_workspace(root, 4, mask=np.ones((16, 20), bool)).close()
    n = 150
    proc = _start_writer(root, n)
    try:
        _wait_ready(proc)
        reader = Workspace.open(root, readonly=True)  # the Slicer panel
        other_writer = Workspace.open(root)  # e.g. training registering a model meanwhile
        seen = []
        mine = 0
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            seen.append(len(reader.decisions()))
            reader.status()
            reader.review_queue()
            if mine < 20:
                other_writer.decide(other_writer.suggestions()[mine % 4].id, "accepted", "panel")
                mine += 1
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert out.strip().endswith("done")
        assert seen == sorted(seen), "a reader never sees decisions disappear"
        assert len(reader.decisions()) == n + mine
        reader.close()
        other_writer.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_reader_does_not_block_a_decision(tmp_path, tiny_workspace):
    """Even a reader holding a long read transaction does not stop decide() (WAL)."""
    root = tmp_path / "ws"
    ws = tiny_workspace(root, 4, mask=np.ones((16, 20), bool))
    raw = sqlite3.connect(root / "workspace.db", isolation_level=None)
    raw.execute("BEGIN")
    before = raw.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
    t0 = time.perf_counter()
    ws.decide(ws.suggestions()[0].id, "accepted", "ann")
    assert time.perf_counter() - t0 < 2.0
    # the reader's snapshot is stable; a new read sees the decision
    assert raw.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == before
    raw.execute("COMMIT")
    assert raw.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == before + 1
    raw.close()
    ws.close()
