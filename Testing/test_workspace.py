"""The workspace store: items, suggestions, decisions, human masks, examples, refusals of bad input."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from UltrasoundRefineLib.cli import main as cli_main
from UltrasoundRefineLib.errors import InputError, UltrasoundRefineError
from UltrasoundRefineLib.io import read_mask
from UltrasoundRefineLib.loop import Loop
from UltrasoundRefineLib.workspace import (
    MaskShapeError,
    UnknownItemError,
    Workspace,
    WorkspaceError,
    read_human_mask,
)
from UltrasoundRefineLib.workspace import schema


# ----------------------------------------------------------------------------------------------- helpers
def make_loop(i: int, shape=(24, 32), group: str | None = None, frames: int = 2) -> Loop:
    rng = np.random.default_rng(i)
    return Loop(
        frames=rng.integers(0, 255, (frames, *shape), dtype=np.uint8),
        spacing=(0.5, 0.25),
        source_key=f"{i:016x}",
        group_key=group,
        stem=f"loop_{i:03d}",
        origin=(1.0, 2.0),
    )


def write_nrrd_loop(path: Path, i: int, shape=(24, 32), frames: int = 2) -> Path:
    rng = np.random.default_rng(i)
    image = sitk.GetImageFromArray(rng.integers(0, 255, (frames, *shape), dtype=np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def box(shape, top, left, bottom, right) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[top:bottom, left:right] = True
    return m


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def ws(tmp_path):
    with Workspace.create(tmp_path / "ws") as w:
        yield w


def fill(ws: Workspace, n: int, shape=(24, 32)) -> list[str]:
    ids = []
    for i in range(n):
        item, new = ws.add_item(make_loop(i, shape), ws.root.parent / f"loop_{i:03d}.nrrd")
        assert new
        ids.append(item.id)
    return ids


# ----------------------------------------------------------------------------------------------- create / open
def test_create_makes_folder_layout_and_refuses_second_create(tmp_path):
    root = tmp_path / "a" / "ws"
    with Workspace.create(root) as w:
        assert w.root == root.absolute()
        for sub in ("suggestions", "human", "models", "runs", "reports"):
            assert (root / sub).is_dir()
        assert w.models_dir == root / "models" and w.runs_dir == root / "runs"
        assert w.items() == []
    with pytest.raises(WorkspaceError, match="already a workspace"):
        Workspace.create(root)
    # nothing but the database and the folders: no stray temporary files
    assert sorted(p.name for p in root.iterdir() if p.is_file() and not p.name.startswith("workspace.db")) == []


def test_open_refuses_missing_and_non_workspace_folders(tmp_path):
    with pytest.raises(WorkspaceError, match="no such workspace folder") as e:
        Workspace.open(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorkspaceError, match="not a workspace"):
        Workspace.open(tmp_path / "empty")


def _set_versions(db: Path, user_version: int, meta_version: str) -> None:
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {user_version}")
    conn.execute("UPDATE workspace_meta SET value = ? WHERE key = 'schema_version'", (meta_version,))
    conn.commit()
    conn.close()


def test_newer_schema_is_refused_and_left_untouched(tmp_path):
    Workspace.create(tmp_path / "ws").close()
    db = tmp_path / "ws" / "workspace.db"
    _set_versions(db, schema.SCHEMA_VERSION + 1, str(schema.SCHEMA_VERSION + 1))
    before = sha(db)
    with pytest.raises(WorkspaceError, match="newer UltrasoundRefine") as e:
        Workspace.open(tmp_path / "ws")
    assert str(db) in str(e.value)
    with pytest.raises(WorkspaceError, match="newer"):
        Workspace.open(tmp_path / "ws", readonly=True)
    assert sha(db) == before


def test_older_unknown_and_foreign_schemas_are_refused(tmp_path):
    Workspace.create(tmp_path / "old").close()
    _set_versions(tmp_path / "old" / "workspace.db", 0, "0")
    with pytest.raises(WorkspaceError, match="cannot migrate|unknown workspace schema"):
        Workspace.open(tmp_path / "old")

    Workspace.create(tmp_path / "fmt").close()
    conn = sqlite3.connect(tmp_path / "fmt" / "workspace.db")
    conn.execute("UPDATE workspace_meta SET value = 'something else' WHERE key = 'format'")
    conn.commit()
    conn.close()
    with pytest.raises(WorkspaceError, match="unknown workspace format"):
        Workspace.open(tmp_path / "fmt")

    # another program's SQLite database: refused before anything is changed (not even its journal mode)
    (tmp_path / "foreign").mkdir()
    db = tmp_path / "foreign" / "workspace.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    before = sha(db)
    with pytest.raises(WorkspaceError, match="not an UltrasoundRefine workspace"):
        Workspace.open(tmp_path / "foreign")
    assert sha(db) == before
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "workspace.db").write_bytes(b"")
    with pytest.raises(WorkspaceError, match="is empty"):
        Workspace.open(tmp_path / "empty")


def test_corrupt_database_is_refused_and_left_untouched(tmp_path):
    with Workspace.create(tmp_path / "ws") as w:
        fill(w, 3)
    db = tmp_path / "ws" / "workspace.db"
    data = bytearray(db.read_bytes())
    data[:16] = b"this is garbage!"
    db.write_bytes(bytes(data))
    before = sha(db)
    with pytest.raises(WorkspaceError, match="corrupt") as e:
        Workspace.open(tmp_path / "ws")
    assert str(db) in str(e.value)
    assert sha(db) == before

    # a valid header but damaged pages
    with Workspace.create(tmp_path / "ws2") as w:
        fill(w, 30)
    db2 = tmp_path / "ws2" / "workspace.db"
    data = bytearray(db2.read_bytes())
    page = 4096
    for p in range(1, len(data) // page):
        data[p * page + 8 : p * page + 200] = os.urandom(192)
    db2.write_bytes(bytes(data))
    with pytest.raises(WorkspaceError, match="corrupt"):
        Workspace.open(tmp_path / "ws2")


def test_unwritable_folder_is_refused_for_writing_but_opens_read_only(tmp_path, monkeypatch):
    with Workspace.create(tmp_path / "ws") as w:
        fill(w, 2)
    real_access = os.access

    def no_write(path, mode, *a, **k):
        if mode & os.W_OK and Path(path).absolute().is_relative_to(tmp_path / "ws"):
            return False
        return real_access(path, mode, *a, **k)

    import UltrasoundRefineLib.workspace.store as store

    monkeypatch.setattr(store.os, "access", no_write)
    with pytest.raises(WorkspaceError, match="not writable") as e:
        Workspace.open(tmp_path / "ws")
    assert str(tmp_path / "ws") in str(e.value)
    with Workspace.open(tmp_path / "ws", readonly=True) as r:
        assert len(r.items()) == 2
        with pytest.raises(WorkspaceError, match="read-only"):
            r.assign_splits(test_fraction=0.5, finetune_count=0, seed=0)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_really_read_only_folder(tmp_path):
    with Workspace.create(tmp_path / "ws") as w:
        fill(w, 2)
    root = tmp_path / "ws"
    os.chmod(root, 0o555)
    os.chmod(root / "workspace.db", 0o444)
    try:
        with pytest.raises(WorkspaceError, match="not writable|read-only"):
            Workspace.open(root)
        with Workspace.open(root, readonly=True) as r:
            assert len(r.items()) == 2
    finally:
        os.chmod(root, 0o755)
        os.chmod(root / "workspace.db", 0o644)


def test_open_accepts_the_db_file_and_closed_workspace_refuses_use(tmp_path):
    Workspace.create(tmp_path / "ws").close()
    w = Workspace.open(tmp_path / "ws" / "workspace.db")
    assert w.root == (tmp_path / "ws").absolute()
    w.close()
    with pytest.raises(WorkspaceError, match="closed"):
        w.items()


# ----------------------------------------------------------------------------------------------- items
def test_add_loops_skips_present_and_reports_errors(tmp_path, ws):
    data = tmp_path / "data"
    for i in range(3):
        write_nrrd_loop(data / f"case{i}.nrrd", i)
    (data / "notes.txt").write_text("not a loop")
    (tmp_path / "broken.nrrd").write_bytes(b"NRRD0004\nnot really\n")
    report = ws.add_loops([data, tmp_path / "broken.nrrd", tmp_path / "missing.dcm"])
    assert sorted(i.stem for i in report.added) == ["case0", "case1", "case2"]
    assert len(report.errors) == 2 and all(isinstance(e, InputError) for e in report.errors)
    assert any("broken.nrrd" in str(e) for e in report.errors)
    assert [p.name for p in report.skipped] == ["notes.txt"]
    # the same content under another name is the same item: skipped and reported
    (data / "copy").mkdir()
    (data / "copy" / "case0-again.nrrd").write_bytes((data / "case0.nrrd").read_bytes())
    again = ws.add_loops([data])
    assert again.added == []
    assert len(again.present) == 4
    assert {item_id for _, item_id in again.present} == {i.id for i in report.added}
    items = ws.items()
    assert len(items) == 3
    it = ws.item("case1")
    assert it.shape == (24, 32) and it.n_frames == 2 and it.split is None
    assert it.path == (data / "case1.nrrd").absolute()
    loop = ws.load_loop(it.id)
    assert loop.shape == (24, 32) and loop.source_key == it.id


def test_item_ids_are_content_hashes_and_files_are_named_by_them(ws):
    ids = fill(ws, 2)
    sid = ws.add_suggestion(ids[0], box((24, 32), 2, 2, 20, 30), "threshold", 0.7, 1)
    s = ws.suggestion(sid)
    assert s.mask_path.name == f"{ids[0]}.nrrd"
    assert s.mask_path.is_relative_to(ws.root)
    stored = ws._query("SELECT mask_path FROM suggestions WHERE id = ?", (sid,))[0][0]
    assert not Path(stored).is_absolute()


def test_duplicate_stems_are_reported_and_lookup_by_stem_refuses_to_guess(tmp_path, ws):
    write_nrrd_loop(tmp_path / "a" / "same.nrrd", 1)
    write_nrrd_loop(tmp_path / "b" / "same.nrrd", 2)
    report = ws.add_loops([tmp_path / "a", tmp_path / "b"])
    assert report.duplicate_stems == ["same"]
    with pytest.raises(UnknownItemError, match="2 items have the stem"):
        ws.item("same")


def test_load_loop_refuses_a_changed_file(tmp_path, ws):
    path = write_nrrd_loop(tmp_path / "x.nrrd", 1)
    (item,) = ws.add_loops([path]).added
    write_nrrd_loop(path, 2)
    with pytest.raises(InputError, match="changed since it was added"):
        ws.load_loop(item.id)


# ----------------------------------------------------------------------------------------------- suggestions and decisions
def test_suggestion_mask_roundtrip_on_the_loops_grid(ws):
    (item_id,) = fill(ws, 1)
    mask = box((24, 32), 3, 4, 20, 28)
    sid = ws.add_suggestion(item_id, mask, "fanfit", 0.8, 1, {"apex": [1, 2]}, uncertainty=0.1)
    assert np.array_equal(ws.suggestion_mask(sid), mask)
    image = sitk.ReadImage(str(ws.suggestion(sid).mask_path))
    assert image.GetSpacing() == (0.25, 0.5) and image.GetOrigin() == (1.0, 2.0)
    assert sitk.GetArrayFromImage(image).dtype == np.uint8
    s = ws.suggestion(sid)
    assert (s.producer, s.quality, s.uncertainty, s.details, s.round) == ("fanfit", 0.8, 0.1, {"apex": [1, 2]}, 1)


def test_wrong_shape_masks_are_refused_and_nothing_is_stored(ws):
    (item_id,) = fill(ws, 1)
    with pytest.raises(MaskShapeError, match=r"\(24, 31\).*24x32"):
        ws.add_suggestion(item_id, np.zeros((24, 31), bool), "threshold", 0.5, 1)
    assert ws.suggestions() == []
    assert list((ws.root / "suggestions").rglob("*.nrrd")) == []
    sid = ws.add_suggestion(item_id, np.zeros((24, 32), bool), "threshold", 0.5, 1)
    with pytest.raises(MaskShapeError):
        ws.decide(sid, "edited", "ann", edited_mask=np.ones((32, 24), bool))
    with pytest.raises(MaskShapeError):
        ws.add_human_mask(item_id, np.ones((10, 10), bool))
    assert ws.decisions() == [] and ws.human_mask(item_id) is None
    assert list((ws.root / "human").rglob("*.nrrd")) == []


def test_one_suggestion_per_item_and_round(ws):
    (item_id,) = fill(ws, 1)
    ws.add_suggestion(item_id, box((24, 32), 1, 1, 5, 5), "threshold", 0.5, 1)
    with pytest.raises(WorkspaceError, match="already has a suggestion in round 1"):
        ws.add_suggestion(item_id, box((24, 32), 2, 2, 9, 9), "threshold", 0.5, 1)
    # the first mask was not overwritten
    assert ws.suggestion_mask(ws.suggestions()[0].id).sum() == 16


def test_unknown_items_and_bad_decisions_are_refused(ws):
    ids = fill(ws, 2)
    sid = ws.add_suggestion(ids[0], box((24, 32), 1, 1, 5, 5), "threshold", 0.5, 1)
    with pytest.raises(UnknownItemError, match="no item 'nobody'"):
        ws.decide("nobody", "accepted", "ann")
    with pytest.raises(UnknownItemError, match="no suggestion with id 999"):
        ws.decide(999, "accepted", "ann")
    with pytest.raises(UnknownItemError, match="has no suggestion"):
        ws.decide(ids[1], "accepted", "ann")
    with pytest.raises(UltrasoundRefineError, match="unknown decision"):
        ws.decide(sid, "maybe", "ann")
    with pytest.raises(UltrasoundRefineError, match="needs the edited mask"):
        ws.decide(sid, "edited", "ann")
    with pytest.raises(UltrasoundRefineError, match="user name"):
        ws.decide(sid, "accepted", " ")
    with pytest.raises(UltrasoundRefineError, match="seconds"):
        ws.decide(sid, "accepted", "ann", seconds=-1)
    assert ws.decisions() == []


def test_decide_by_item_id_or_stem_takes_the_latest_round(ws):
    (item_id,) = fill(ws, 1)
    s1 = ws.add_suggestion(item_id, box((24, 32), 1, 1, 5, 5), "threshold", 0.5, 1)
    s2 = ws.add_suggestion(item_id, box((24, 32), 1, 1, 9, 9), "model:a", 0.9, 2)
    ws.decide("loop_000", "rejected", "ann", seconds=1.5)
    ws.decide(item_id, "accepted", "ann", round=1)
    d = {(r["suggestion_id"], r["decision"]) for r in ws.decisions()}
    assert d == {(s2, "rejected"), (s1, "accepted")}
    assert ws.decisions()[0]["seconds"] == 1.5 and ws.decisions()[0]["user"] == "ann"


def test_review_queue_puts_likely_wrong_first_and_skips_decided(ws):
    ids = fill(ws, 5)
    qualities = [0.9, 0.2, 0.5, None, 0.1]
    sids = [ws.add_suggestion(i, box((24, 32), 1, 1, 9, 9), "threshold", q, 1) for i, q in zip(ids, qualities)]
    assert [s.id for s in ws.review_queue()] == [sids[4], sids[1], sids[2], sids[0], sids[3]]
    ws.decide(sids[1], "accepted", "ann")
    assert [s.id for s in ws.review_queue()] == [sids[4], sids[2], sids[0], sids[3]]
    # a model's round: highest uncertainty first, whatever the quality
    unc = [0.05, 0.4, 0.3, 0.0, 0.2]
    r2 = [ws.add_suggestion(i, box((24, 32), 1, 1, 9, 9), "model:m", 0.5, 2, uncertainty=u) for i, u in zip(ids, unc)]
    assert [s.id for s in ws.review_queue()] == [r2[1], r2[2], r2[4], r2[0], r2[3]]
    assert [s.id for s in ws.review_queue(round=1)] == [sids[4], sids[2], sids[0], sids[3]]


def test_resume_after_restart_continues_where_it_stopped(tmp_path):
    root = tmp_path / "ws"
    with Workspace.create(root) as w:
        ids = fill(w, 8)
        for k, i in enumerate(ids):
            w.add_suggestion(i, box((24, 32), 1, 1, 9, 9), "threshold", (k * 37 % 11) / 11, 1)
        full_order = [s.id for s in w.review_queue()]
        for s in w.review_queue()[:3]:
            w.decide(s.id, "accepted", "ann")
    # a new process, later: the queue is what was left, in the same order
    with Workspace.open(root) as w:
        assert [s.id for s in w.review_queue()] == full_order[3:]
        for s in w.review_queue():
            w.decide(s.id, "rejected", "ann")
        assert w.review_queue() == []
        st = w.status()["rounds"][0]
        assert (st["accepted"], st["rejected"], st["pending"]) == (3, 5, 0)


def test_suggest_runs_a_producer_and_resumes_the_round(tmp_path, ws):
    for i in range(4):
        write_nrrd_loop(tmp_path / "data" / f"c{i}.nrrd", i)
    ws.add_loops([tmp_path / "data"])
    calls = []

    class Suggestion:
        def __init__(self, mask, quality, details):
            self.mask, self.quality, self.details = mask, quality, details

    def produce(loop):
        calls.append(loop.stem)
        if loop.stem == "c2":
            raise RuntimeError("producer bug")
        return Suggestion(loop.frames[0] > 128, 0.25, {"uncertainty": 0.5, "note": "x"})

    report = ws.suggest("fake", produce)
    assert report.round == 1 and len(report.added) == 3 and report.errors == [("c2", "RuntimeError: producer bug")]
    assert {s.uncertainty for s in ws.suggestions()} == {0.5}
    # running again fills only what is missing, in the same round
    calls.clear()
    again = ws.suggest("fake", lambda loop: Suggestion(loop.frames[0] > 0, 0.9, {}))
    assert again.round == 1 and again.already == 3 and len(again.added) == 1
    # another producer starts the next round
    third = ws.suggest("other", lambda loop: Suggestion(loop.frames[0] > 0, 0.9, {}))
    assert third.round == 2 and len(third.added) == 4
    assert ws.rounds() == [1, 2]


def test_suggest_with_a_real_auto_mask_method(tmp_path, ws):
    from UltrasoundRefineLib.automask import METHODS
    from UltrasoundRefineLib.workspace import method_producer

    method = next((m for m in ("threshold", "fanfit") if _importable(METHODS[m])), None)
    if method is None:
        pytest.skip("no auto-mask method is importable yet")
    write_nrrd_loop(tmp_path / "data" / "c0.nrrd", 0, shape=(60, 80))
    ws.add_loops([tmp_path / "data"])
    report = ws.suggest(method, method_producer(method))
    assert len(report.added) + len(report.errors) == 1


def _importable(spec: str) -> bool:
    import importlib

    try:
        importlib.import_module(spec.split(":")[0])
        return True
    except ImportError:
        return False


# ----------------------------------------------------------------------------------------------- human masks
def test_edited_decision_stores_a_human_mask_with_provenance(ws):
    (item_id,) = fill(ws, 1)
    sid = ws.add_suggestion(item_id, box((24, 32), 1, 1, 9, 9), "threshold", 0.5, 1)
    edited = box((24, 32), 2, 3, 20, 30)
    did = ws.decide(sid, "edited", "ann", seconds=12.0, edited_mask=edited)
    assert np.array_equal(ws.human_mask(item_id), edited)
    row = ws._query("SELECT * FROM human_masks")[0]
    assert row["source"] == "edited" and json.loads(row["provenance"]) == {"suggestion_id": sid}
    assert Path(row["mask_path"]).name == f"{item_id}-1.nrrd"
    assert ws.decisions()[0]["human_mask_id"] == row["id"] and ws.decisions()[0]["id"] == did


def test_import_masks_matches_by_stem_and_reports_the_rest(tmp_path, ws):
    ids = fill(ws, 3)
    d = tmp_path / "masks"
    d.mkdir()
    m0 = box((24, 32), 1, 1, 10, 10)
    sitk.WriteImage(sitk.GetImageFromArray(m0.astype(np.uint8)), str(d / "loop_000.nrrd"))
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((1, 24, 32), np.uint8)), str(d / "loop_001.nrrd"))  # Slicer 3D
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((20, 32), np.uint8)), str(d / "loop_002.nrrd"))  # wrong shape
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((24, 32), np.uint8)), str(d / "stranger.nrrd"))
    (d / "readme.txt").write_text("hi")
    report = ws.import_masks([d], user="ann")
    assert sorted(ws.item(i).stem for _, i in [(p, i) for p, i in report.imported]) == ["loop_000", "loop_001"]
    assert [p.name for p in report.unmatched] == ["stranger.nrrd"]
    assert len(report.errors) == 1 and "loop_002.nrrd" in str(report.errors[0]) and "(20, 32)" in str(report.errors[0])
    assert [p.name for p in report.skipped] == ["readme.txt"]
    assert np.array_equal(ws.human_mask(ids[0]), m0)
    assert ws.human_mask(ids[2]) is None
    # importing again changes nothing
    again = ws.import_masks([d], user="ann")
    assert again.imported == [] and len(again.unchanged) == 2
    assert len(ws._query("SELECT id FROM human_masks")) == 2


def _write_seg(path: Path, region: np.ndarray, offset=(0, 0), with_offset=True, extra_segment=None):
    import slicerio

    h, w = region.shape
    seg = slicerio.create_segmentation((w, h, 1), np.diag([0.25, 0.5, 1.0, 1.0]))
    slicerio.add_segment(seg, region.T[:, :, None], {"id": "Segment_1", "name": "image region"})
    if extra_segment is not None:
        slicerio.add_segment(seg, extra_segment.T[:, :, None], {"id": "Segment_2", "name": "second view"})
    if with_offset:
        seg["referenceImageExtentOffset"] = [offset[1], offset[0], 0]
    slicerio.write_segmentation(str(path), seg)


def test_import_slicer_segmentation_full_and_cropped(tmp_path, ws):
    ids = fill(ws, 3)
    d = tmp_path / "segs"
    d.mkdir()
    full = box((24, 32), 2, 3, 20, 14)
    right = box((24, 32), 2, 18, 20, 30)
    _write_seg(d / "loop_000.seg.nrrd", full, extra_segment=right)  # dual view: two segments, one region
    crop = box((10, 12), 1, 1, 9, 11)  # Slicer cropped to the content; the offset says where it lies
    _write_seg(d / "loop_001.seg.nrrd", crop, offset=(5, 7))
    _write_seg(d / "loop_002.seg.nrrd", crop, offset=(20, 25))  # reaches outside the grid
    report = ws.import_masks(d)
    assert len(report.imported) == 2, report
    assert np.array_equal(ws.human_mask(ids[0]), full | right)
    expected = np.zeros((24, 32), bool)
    expected[5:15, 7:19] = crop
    assert np.array_equal(ws.human_mask(ids[1]), expected)
    assert len(report.errors) == 1 and "outside the loop's grid" in str(report.errors[0])
    assert read_human_mask(d / "loop_000.seg.nrrd", (24, 32)).sum() == (full | right).sum()
    with pytest.raises(InputError, match="cannot read as a Slicer segmentation"):
        (d / "bad.seg.nrrd").write_bytes(b"garbage")
        read_human_mask(d / "bad.seg.nrrd", (24, 32))


# ----------------------------------------------------------------------------------------------- training API
def test_examples_for_pretrain_finetune_and_test(ws):
    ids = fill(ws, 6)
    shape = (24, 32)
    conn = ws.conn
    # place splits by hand to know them: 0,1 test; 2 finetune; rest pretrain
    for i, s in zip(ids, ["test", "test", "finetune", "pretrain", "pretrain", "pretrain"]):
        conn.execute("UPDATE items SET split = ? WHERE id = ?", (s, i))
    r1 = {i: ws.add_suggestion(i, box(shape, 1, 1, 9, 9), "threshold", 0.5, 1) for i in ids}
    ws.decide(r1[ids[0]], "accepted", "ann")  # test item: never pretrain
    ws.decide(r1[ids[2]], "accepted", "ann")
    ws.decide(r1[ids[3]], "accepted", "ann")
    ws.decide(r1[ids[4]], "rejected", "ann")
    ws.decide(r1[ids[5]], "edited", "ann", edited_mask=box(shape, 0, 0, 12, 12))
    # round 2: item 3 rejected (its round-1 acceptance still stands), item 4 accepted
    r2 = {i: ws.add_suggestion(i, box(shape, 2, 2, 20, 20), "model:m1", 0.9, 2) for i in ids[3:5]}
    ws.decide(r2[ids[3]], "rejected", "ann")
    ws.decide(r2[ids[4]], "accepted", "ann")
    pre = {e.stem: e for e in ws.examples("pretrain")}
    assert sorted(pre) == ["loop_002", "loop_003", "loop_004", "loop_005"]
    assert pre["loop_003"].mask_source == "suggestion:threshold:r1"
    assert pre["loop_004"].mask_source == "suggestion:model:m1:r2" and pre["loop_004"].mask.sum() == 18 * 18
    assert pre["loop_005"].mask_source == "edited:r1" and pre["loop_005"].mask.sum() == 144
    assert pre["loop_002"].mask.dtype == bool and pre["loop_002"].mask.shape == shape
    # human masks: imported for test and finetune items; the edited one of a pretrain item is not finetune
    ws.add_human_mask(ids[0], box(shape, 0, 0, 5, 5), user="expert")
    ws.add_human_mask(ids[1], box(shape, 0, 0, 6, 6), user="expert")
    ws.add_human_mask(ids[2], box(shape, 0, 0, 7, 7), user="expert")
    ws.add_human_mask(ids[2], box(shape, 0, 0, 8, 8), user="expert")  # the latest counts
    test = ws.examples("test")
    assert [e.stem for e in test] == ["loop_000", "loop_001"] and test[0].mask_source == "human:imported"
    fine = ws.examples("finetune")
    assert [e.stem for e in fine] == ["loop_002"] and fine[0].mask.sum() == 64
    with pytest.raises(UltrasoundRefineError, match="unknown stage"):
        ws.examples("train")
    # per producer (pretraining on one auto-mask method's accepted masks only) and per round
    assert sorted(e.stem for e in ws.examples("pretrain", producer="threshold")) == ["loop_002", "loop_003", "loop_005"]
    assert [e.stem for e in ws.examples("pretrain", producer="model:m1")] == ["loop_004"]
    assert [e.stem for e in ws.examples("pretrain", round=2)] == ["loop_004"]
    assert ws.examples("pretrain", producer="fanfit") == []
    with pytest.raises(UltrasoundRefineError, match="apply to 'pretrain'"):
        ws.examples("test", producer="threshold")


def test_example_load_reads_the_loop_without_the_database(tmp_path, ws):
    import pickle

    write_nrrd_loop(tmp_path / "d" / "c0.nrrd", 0)
    (item,) = ws.add_loops([tmp_path / "d"]).added
    sid = ws.add_suggestion(item.id, box(item.shape, 1, 1, 5, 5), "threshold", 0.5, 1)
    ws.decide(sid, "accepted", "ann")
    (ex,) = ws.examples("pretrain")
    load = pickle.loads(pickle.dumps(ex.load))  # DataLoader workers get it pickled
    ws.close()
    assert load().shape == item.shape


def test_register_model_and_read_it_back(ws):
    p = ws.models_dir / "m1.pt"
    p.write_bytes(b"weights")
    model_id = ws.register_model(p, {"id": "m1", "seed": 3, "dice": np.float32(0.95)})
    assert model_id == "m1"
    (m,) = ws.models()
    assert m["path"] == p and m["card"]["seed"] == 3 and abs(m["card"]["dice"] - 0.95) < 1e-6
    assert ws._query("SELECT path FROM models")[0][0] == "models/m1.pt"
    with pytest.raises(InputError, match="no such model file"):
        ws.register_model(ws.models_dir / "missing.pt", {})


def test_models_registered_in_the_same_millisecond_keep_their_order(ws, monkeypatch):
    from UltrasoundRefineLib.workspace import store

    monkeypatch.setattr(store, "_now", lambda: "2026-01-01T00:00:00.000+00:00")
    for name in ("zeta", "alpha"):  # registered in this order, named against it
        (ws.models_dir / name).mkdir(parents=True)
        ws.register_model(ws.models_dir / name, {"id": name})
    assert [m["id"] for m in ws.models()] == ["zeta", "alpha"]


# ----------------------------------------------------------------------------------------------- export, status, CLI
def test_export_masks_writes_the_best_mask_per_loop(tmp_path, ws):
    ids = fill(ws, 3)
    shape = (24, 32)
    s0 = ws.add_suggestion(ids[0], box(shape, 1, 1, 9, 9), "threshold", 0.5, 1)
    s1 = ws.add_suggestion(ids[1], box(shape, 1, 1, 9, 9), "threshold", 0.5, 1)
    ws.decide(s0, "accepted", "ann")
    ws.decide(s1, "rejected", "ann")
    ws.add_human_mask(ids[2], box(shape, 0, 0, 4, 4))
    report = ws.export_masks(tmp_path / "out")
    assert sorted(p.name for p, _, _ in report.written) == ["loop_000.nrrd", "loop_002.nrrd"]
    assert report.without_mask == ["loop_001"]
    assert read_mask(tmp_path / "out" / "loop_002.nrrd").sum() == 16
    manifest = (tmp_path / "out" / "masks.csv").read_text().splitlines()
    assert manifest[0] == "file,item_id,stem,split,source" and len(manifest) == 3
    from UltrasoundRefineLib.errors import OutputError

    with pytest.raises(OutputError, match="outside the workspace"):
        ws.export_masks(ws.root / "exported")


def test_cli_end_to_end(tmp_path, capsys):
    data = tmp_path / "data"
    truth = tmp_path / "truth"
    truth.mkdir()
    for i in range(4):
        write_nrrd_loop(data / f"c{i}.nrrd", i)
        sitk.WriteImage(sitk.GetImageFromArray(box((24, 32), 0, 0, 24, 32).astype(np.uint8)), str(truth / f"c{i}.nrrd"))
    root = str(tmp_path / "ws")
    assert cli_main(["init", root]) == 0
    assert cli_main(["add", root, str(data)]) == 0
    assert cli_main(["add", root, str(data)]) == 0
    assert "already present" in capsys.readouterr().err
    assert cli_main(["split", root, "--test-fraction", "0.25", "--finetune-count", "1", "--seed", "1"]) == 0
    with Workspace.open(root) as w:  # a suggestion round without running an auto-mask method
        for k, item in enumerate(w.items()):
            w.add_suggestion(item.id, box(item.shape, 0, 0, 24, [32, 30, 20, 10][k]), "threshold", 0.1 * k, 1)
    assert cli_main(["review", root, "--simulate", "--truth", str(truth), "--min-dice", "0.9"]) == 0
    err = capsys.readouterr().err
    assert "4 reviewed, 2 accepted, 2 rejected" in err
    assert cli_main(["import-masks", root, str(truth)]) == 0
    assert cli_main(["status", root]) == 0
    out = capsys.readouterr().out
    assert "pretrain" in out and "accepted" in out
    assert cli_main(["status", root, "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["items"] == 4 and st["human_masks"] == 4 and st["rounds"][0]["accepted"] == 2
    assert cli_main(["export-masks", root, "--out", str(tmp_path / "out")]) == 0
    assert len(list((tmp_path / "out").glob("*.nrrd"))) == 4
    # user errors: one line, exit 2
    assert cli_main(["status", str(tmp_path / "nope")]) == 2
    assert "no such workspace folder" in capsys.readouterr().err
    assert cli_main(["init", root]) == 2
    assert cli_main(["review", root, "--simulate"]) == 2
    assert "--truth" in capsys.readouterr().err


def test_cli_suggest_with_a_registered_model_uses_the_training_hook(tmp_path, monkeypatch, capsys):
    import UltrasoundRefineLib.train as train
    from UltrasoundRefineLib.automask import MaskSuggestion

    data = tmp_path / "data"
    for i in range(2):
        write_nrrd_loop(data / f"c{i}.nrrd", i)
    root = tmp_path / "ws"
    with Workspace.create(root) as w:
        w.add_loops([data])
        (w.models_dir / "m7").mkdir()
        w.register_model(w.models_dir / "m7", {"model_id": "m7"})
    seen = {}

    def fake_model_producer(path, device="auto"):
        seen["path"], seen["device"] = Path(path), device
        return "model:m7", lambda loop: MaskSuggestion(loop.frames[0] > 100, 0.5, "model:m7", {"uncertainty": 0.2})

    monkeypatch.setattr(train, "model_producer", fake_model_producer, raising=False)
    assert cli_main(["suggest", str(root), "--model", "m7", "--device", "cpu", "--quiet"]) == 0
    assert seen == {"path": root.absolute() / "models" / "m7", "device": "cpu"}
    with Workspace.open(root) as w:
        assert {(s.producer, s.uncertainty) for s in w.suggestions()} == {("model:m7", 0.2)}
    assert cli_main(["suggest", str(root), "--model", "nope"]) == 2
    assert "neither a model registered" in capsys.readouterr().err


def test_two_processes_filling_the_same_round_do_not_collide(tmp_path):
    for i in range(3):
        write_nrrd_loop(tmp_path / "data" / f"c{i}.nrrd", i)
    root = tmp_path / "ws"
    with Workspace.create(root) as a, Workspace.open(root) as b:
        a.add_loops([tmp_path / "data"])
        items = a.items()

        def produce(loop):
            if loop.stem == "c0":  # meanwhile, another process fills c1
                b.add_suggestion(items[1].id, np.ones(items[1].shape, bool), "threshold", 0.5, 1)
            from UltrasoundRefineLib.automask import MaskSuggestion

            return MaskSuggestion(loop.frames[0] > 100, 0.4, "threshold")

        report = a.suggest("threshold", produce, round=1)
        assert len(report.added) == 2 and report.already == 1 and report.errors == []
        assert len(a.suggestions(round=1)) == 3
