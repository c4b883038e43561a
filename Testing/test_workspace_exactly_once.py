"""Decisions are exactly-once: a decisions CSV run again (after a kill, or grown by new rows) records no
row twice; rows streamed through a pipe are applied and acknowledged as they arrive; two simulated
reviewers of one workspace take different items; a workspace of the schema before this opens migrated."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from UltrasoundRefineLib.workspace import Workspace, apply_decisions_csv, schema, simulate_review
from UltrasoundRefineLib.workspace import review as review_mod

REPO = Path(__file__).resolve().parents[1]
SHAPE = (8, 10)


def _rows(i: int) -> np.ndarray:
    """Loop ``i``'s suggestion: its top ``1 + i % 8`` rows, so the loops' masks differ."""
    mask = np.zeros(SHAPE, bool)
    mask[: 1 + i % SHAPE[0]] = True
    return mask


def test_running_a_csv_again_records_nothing_twice(tmp_path, tiny_workspace):
    ws = tiny_workspace(tmp_path / "ws", 3, shape=SHAPE, mask=_rows)
    edited = tmp_path / "l2.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones(SHAPE, np.uint8)), str(edited))
    csv_path = tmp_path / "decisions.csv"
    # l0 accepted, then rejected, then accepted again: three decisions, and the last counts
    csv_path.write_text("item,decision,seconds,mask\nl0,accepted,1\nl0,rejected,2\nl0,accepted,1\nl2,edited,,l2.nrrd\n")
    first = apply_decisions_csv(ws, csv_path, user="ann")
    assert [line for line, _ in first.applied] == [2, 3, 4, 5] and first.already == []
    again = apply_decisions_csv(ws, csv_path, user="ann")
    assert again.applied == [] and again.already == first.applied  # the same rows, the same decision ids
    assert len(ws.decisions()) == 4 and len(list((ws.root / "human").glob("*.nrrd"))) == 1
    assert ws.suggestions(item_id="l0")[0].decision == "accepted"
    # the file grows: only the new row is applied
    with csv_path.open("a") as f:
        f.write("l1,rejected\n")
    grown = apply_decisions_csv(ws, csv_path, user="ann")
    assert [line for line, _ in grown.applied] == [6] and len(grown.already) == 4
    assert len(ws.decisions()) == 5
    # another file that says the same thing is another set of decisions (a second review, say)
    other = tmp_path / "later.csv"
    other.write_text("l1,accepted\n")
    assert len(apply_decisions_csv(ws, other, user="bob").applied) == 1
    ws.close()


def _review_pipe(root: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "UltrasoundRefineLib", "review", str(root), "--decisions", "-",
                             "--ack", "--user", "pipe"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, bufsize=1)


def test_a_streamed_csv_is_applied_row_by_row_and_a_kill_loses_no_acknowledged_row(tmp_path, tiny_workspace,
                                                                                   db_rows):
    n = 12
    tiny_workspace(tmp_path / "ws", n, shape=SHAPE, mask=_rows).close()
    root = tmp_path / "ws"
    rows = ["item,decision"] + [f"l{i},{'accepted' if i % 3 else 'rejected'}" for i in range(n)]
    proc = _review_pipe(root)
    acked = []
    try:
        proc.stdin.write(rows[0] + "\n")
        for row in rows[1:7]:
            proc.stdin.write(row + "\n")
            proc.stdin.flush()
            # the pipe is still open: each row is acknowledged before the next is even written
            ack = proc.stdout.readline().split()
            assert ack[1] == "applied", ack
            acked.append(ack)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [int(a[0]) for a in acked] == [2, 3, 4, 5, 6, 7]
    assert db_rows(root, "decisions") == 6  # every acknowledged row is kept
    # the whole file again, after the kill: the first six are recognised, the rest applied once
    proc = _review_pipe(root)
    out, err = proc.communicate("\n".join(rows) + "\n", timeout=60)
    assert proc.returncode == 0, err
    states = [line.split()[1] for line in out.splitlines()]
    assert states == ["already"] * 6 + ["applied"] * 6
    assert db_rows(root, "decisions") == n
    with Workspace.open(root, readonly=True) as ws:
        assert sorted(d["stem"] for d in ws.decisions()) == sorted(f"l{i}" for i in range(n))


def _truth(tmp_path: Path, ws: Workspace) -> Path:
    truth = tmp_path / "truth"
    truth.mkdir()
    for s in ws.suggestions():
        mask = ws.suggestion_mask(s.id).astype(np.uint8)
        sitk.WriteImage(sitk.GetImageFromArray(mask), str(truth / f"{s.stem}.nrrd"))
    return truth


def test_two_simulated_reviewers_at_once_take_different_items(tmp_path, monkeypatch, tiny_workspace):
    n = 8
    ws = tiny_workspace(tmp_path / "ws", n, shape=SHAPE, mask=_rows)
    truth = _truth(tmp_path, ws)
    ws.close()
    # Reviewer A stops on its first item until reviewer B has been through the whole queue.
    b_done, a_holds = threading.Event(), threading.Event()
    real_dice = review_mod.dice

    def slow_first_dice(pred, truth_mask):
        if threading.current_thread().name == "A" and not a_holds.is_set():
            a_holds.set()
            assert b_done.wait(60)
        return real_dice(pred, truth_mask)

    monkeypatch.setattr(review_mod, "dice", slow_first_dice)
    reports = {}

    def reviewer(name):
        with Workspace.open(tmp_path / "ws") as w:
            reports[name] = simulate_review(w, truth, min_dice=0.5, user=f"sim-{name}")

    a = threading.Thread(target=reviewer, args=("A",), name="A")
    a.start()
    assert a_holds.wait(60)
    reviewer("B")
    b_done.set()
    a.join(60)
    assert reports["A"].reviewed == 1 and reports["B"].reviewed == n - 1
    with Workspace.open(tmp_path / "ws", readonly=True) as w:
        decided = [d["suggestion_id"] for d in w.decisions()]
    assert sorted(decided) == sorted(set(decided)) and len(decided) == n


def test_a_stale_claim_expires(tmp_path, tiny_workspace):
    with tiny_workspace(tmp_path / "ws", 2, shape=SHAPE, mask=_rows) as ws:
        first = ws.review_queue()[0].id
        assert review_mod.claim(ws, first, "A", ttl_s=60, now=1000.0)
        assert not review_mod.claim(ws, first, "B", ttl_s=60, now=1059.0)  # A is still on it
        assert review_mod.claim(ws, first, "A", ttl_s=60, now=1059.0)  # A may renew its own
        assert review_mod.claim(ws, first, "B", ttl_s=60, now=1120.0)  # A went away: B takes it over
        ws.decide(first, "accepted", "B")
        assert not review_mod.claim(ws, first, "C", ttl_s=60, now=5000.0)  # decided: nobody claims it


def _downgrade_to_v1(db: Path) -> None:
    """What a workspace made before exactly-once decisions looks like (schema 1)."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP INDEX decisions_source_key")
    conn.execute("ALTER TABLE decisions DROP COLUMN source_key")
    conn.execute("DROP TABLE claims")
    conn.execute("PRAGMA user_version = 1")
    conn.execute("UPDATE workspace_meta SET value = '1' WHERE key = 'schema_version'")
    conn.close()


def test_a_workspace_of_schema_1_is_migrated_on_open(tmp_path, tiny_workspace):
    root = tmp_path / "ws"
    with tiny_workspace(root, 2, shape=SHAPE, mask=_rows) as ws:
        ws.decide("l0", "accepted", "ann")
    _downgrade_to_v1(root / "workspace.db")
    with Workspace.open(root, readonly=True) as ws:  # read-only: read as it is, not changed
        assert len(ws.decisions()) == 1
    conn = sqlite3.connect(root / "workspace.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("l1,rejected\n")
    with Workspace.open(root) as ws:
        assert len(apply_decisions_csv(ws, csv_path, user="ann").applied) == 1
        assert apply_decisions_csv(ws, csv_path, user="ann").applied == []
        assert [d["stem"] for d in ws.decisions()] == ["l0", "l1"]
    conn = sqlite3.connect(root / "workspace.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION == 2
    assert dict(conn.execute("SELECT key, value FROM workspace_meta").fetchall())["schema_version"] == "2"
    conn.close()
