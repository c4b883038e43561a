"""The workspace: one folder that the Slicer panel, the CLI and training all share.

``workspace.db`` (SQLite, WAL) records items, suggestions, decisions, human masks, splits and models;
masks live beside it as NRRD files named by item id (never by anything that could identify a patient),
with paths relative to the folder so the folder can be moved. Every mask file is written (atomically)
before the row that points to it, so a crash leaves at worst an orphan file, never a dangling row.
Every write is its own committed transaction: what a call has returned is on disk.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from UltrasoundRefineLib import __version__
from UltrasoundRefineLib.atomic import atomic_write
from UltrasoundRefineLib.errors import InputError, UltrasoundRefineError
from UltrasoundRefineLib.io.mask import read_mask, write_mask
from UltrasoundRefineLib.loop import Loop
from UltrasoundRefineLib.workspace import schema, splits
from UltrasoundRefineLib.workspace.errors import (
    DuplicateSuggestionError,
    MaskShapeError,
    UnknownItemError,
    WorkspaceError,
)

DECISIONS = ("accepted", "rejected", "edited")
STAGES = ("pretrain", "finetune", "test")
SUBDIRS = ("suggestions", "human", "models", "runs", "reports")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Item:
    """One loop in the workspace. ``id`` is the loop's content hash: stable, non-identifying."""

    id: str
    stem: str
    path: Path
    n_frames: int
    shape: tuple[int, int]
    spacing: tuple[float, float] | None
    group_key: str | None
    split: str | None


@dataclass(frozen=True)
class Suggestion:
    """A suggested mask for one item in one round, with its latest decision (``None``: undecided)."""

    id: int
    item_id: str
    stem: str
    round: int
    producer: str
    quality: float | None
    uncertainty: float | None
    mask_path: Path
    details: dict
    decision: str | None = None


@dataclass
class Example:
    """A training/test example: the mask now, the loop on demand (``load`` is picklable, needs no DB)."""

    item_id: str
    stem: str
    mask: np.ndarray = field(repr=False)
    mask_source: str = ""
    load: Callable[[], Loop] = field(default=None, repr=False)
    group_key: str | None = None
    split: str | None = None


@dataclass
class AddReport:
    added: list[Item] = field(default_factory=list)
    present: list[tuple[Path, str]] = field(default_factory=list)  # (file, id of the item it already is)
    errors: list[InputError] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # files in folders that are not loops
    duplicate_stems: list[str] = field(default_factory=list)  # stems now held by several items


@dataclass
class SuggestReport:
    round: int
    producer: str
    added: list[int] = field(default_factory=list)  # suggestion ids
    already: int = 0  # items that had a suggestion in this round (resume)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (item stem, reason)


def _load_item_loop(path: str, item_id: str) -> Loop:
    """Read an item's loop and make sure it is still the file that was added."""
    from UltrasoundRefineLib.io import read_loop

    loop = read_loop(path)
    if loop.source_key and loop.source_key != item_id:
        raise InputError(path, f"the file changed since it was added to the workspace (was item {item_id})")
    return loop


class Workspace:
    """Open with :meth:`create` or :meth:`open`; use as a context manager or call :meth:`close`."""

    def __init__(self, root: Path, conn: sqlite3.Connection, readonly: bool):
        self.root = root
        self._conn = conn
        self._readonly = readonly

    # ------------------------------------------------------------------ opening and closing
    @classmethod
    def create(cls, path: str | Path) -> "Workspace":
        """Make a new workspace in ``path`` (a new or empty folder, or one without a workspace)."""
        root = Path(path).expanduser().absolute()
        db = root / schema.DB_NAME
        if db.exists():
            raise WorkspaceError(root, "is already a workspace (open it instead)")
        if root.exists() and not root.is_dir():
            raise WorkspaceError(root, "exists and is not a folder")
        try:
            root.mkdir(parents=True, exist_ok=True)
            for sub in SUBDIRS:
                (root / sub).mkdir(exist_ok=True)
        except OSError as e:
            raise WorkspaceError(root, f"cannot create the workspace folder ({e.strerror or e})") from None
        _require_writable_dir(root)
        # Build the database under a temporary name and rename it into place: a crash during create
        # never leaves a half-made workspace.db that open() would then have to call corrupt.
        def build(tmp: str) -> None:
            try:
                conn = sqlite3.connect(tmp, isolation_level=None)
                try:
                    schema.initialise(conn, created_by=f"UltrasoundRefine {__version__}", created_at=_now())
                    conn.execute("PRAGMA journal_mode = WAL")
                finally:
                    conn.close()
            finally:  # a clean close folds the log into the file; these are left only by a failure
                for suffix in ("-wal", "-shm", "-journal"):
                    Path(f"{tmp}{suffix}").unlink(missing_ok=True)

        try:
            atomic_write(db, build)
        except (OSError, sqlite3.Error) as e:
            raise WorkspaceError(root, f"cannot create the workspace database ({e})") from None
        return cls.open(root)

    @classmethod
    def open(cls, path: str | Path, *, readonly: bool = False) -> "Workspace":
        """Open an existing workspace; refuse (never alter) one that is corrupt or from a newer schema."""
        root = Path(path).expanduser().absolute()
        if root.name == schema.DB_NAME and root.is_file():
            root = root.parent
        if not root.exists():
            raise WorkspaceError(root, "no such workspace folder (create one with `ultrasound-refine init`)")
        if not root.is_dir():
            raise WorkspaceError(root, "is not a folder (a workspace is a folder with a workspace.db)")
        db = root / schema.DB_NAME
        if not db.is_file():
            raise WorkspaceError(root, "is not a workspace (no workspace.db); create one with `ultrasound-refine init`")
        if not os.access(db, os.R_OK):
            raise WorkspaceError(db, "cannot be read (permission denied)")
        if db.stat().st_size == 0:
            raise WorkspaceError(db, "is empty, not a workspace database; restore it from a backup")
        if not readonly:
            _require_writable_dir(root)
            if not os.access(db, os.W_OK):
                raise WorkspaceError(db, "is read-only; open the workspace read-only or fix its permissions")
        conn = None
        try:
            conn = _connect(db, readonly=readonly)
            if schema.check(conn, root) < schema.SCHEMA_VERSION and not readonly:
                schema.migrate(conn)
        except sqlite3.DatabaseError as e:
            if conn is not None:
                conn.close()
            raise WorkspaceError(db, f"the database is corrupt or not SQLite ({e}); it was not changed") from None
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        return cls(root, conn, readonly)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r}{', readonly' if self._readonly else ''})"

    @property
    def readonly(self) -> bool:
        return self._readonly

    @property
    def db_path(self) -> Path:
        return self.root / schema.DB_NAME

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    # ------------------------------------------------------------------ internals
    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise WorkspaceError(self.root, "the workspace is closed")
        return self._conn

    def _query(self, sql: str, params: Iterable = ()) -> list[sqlite3.Row]:
        try:
            return self.conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.OperationalError as e:
            raise WorkspaceError(self.db_path, f"cannot read the database ({e})") from None
        except sqlite3.DatabaseError as e:
            raise WorkspaceError(self.db_path, f"the database is corrupt ({e})") from None

    @contextmanager
    def _write(self):
        """One committed transaction; BEGIN IMMEDIATE takes the write lock up front (waits for others)."""
        if self._readonly:
            raise WorkspaceError(self.root, "the workspace was opened read-only")
        # SQLite keeps writing into a database file deleted under it (the open handle survives), so
        # every "recorded" after that would be lost: look for the file before each write.
        if not self.db_path.is_file():
            raise WorkspaceError(self.root, "the workspace was deleted or moved while in use; nothing more is recorded")
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise WorkspaceError(self.db_path, f"cannot write ({e})") from None
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise WorkspaceError(self.db_path, f"cannot commit ({e}); nothing was changed") from None

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _abs(self, rel: str) -> Path:
        return self.root / rel

    @staticmethod
    def _item_from_row(row: sqlite3.Row) -> Item:
        spacing = None
        if row["spacing_row"] is not None and row["spacing_col"] is not None:
            spacing = (float(row["spacing_row"]), float(row["spacing_col"]))
        return Item(
            id=row["id"],
            stem=row["stem"],
            path=Path(row["source_path"]),
            n_frames=int(row["n_frames"]),
            shape=(int(row["height"]), int(row["width"])),
            spacing=spacing,
            group_key=row["group_key"],
            split=row["split"],
        )

    def _suggestion_from_row(self, row: sqlite3.Row) -> Suggestion:
        return Suggestion(
            id=int(row["id"]),
            item_id=row["item_id"],
            stem=row["stem"],
            round=int(row["round"]),
            producer=row["producer"],
            quality=row["quality"],
            uncertainty=row["uncertainty"],
            mask_path=self._abs(row["mask_path"]),
            details=json.loads(row["details"] or "{}"),
            decision=row["decision"],
        )

    def _grid(self, item_id: str) -> tuple[Item, Loop]:
        """A one-frame blank loop on the item's grid: what write_mask needs to place a mask right."""
        rows = self._query("SELECT * FROM items WHERE id = ?", (item_id,))
        if not rows:
            raise UnknownItemError(self.root, f"no item {item_id!r} in this workspace")
        item = self._item_from_row(rows[0])
        meta = json.loads(rows[0]["meta"] or "{}")
        like = Loop(
            frames=np.zeros((1, *item.shape), np.uint8),
            spacing=item.spacing,
            origin=tuple(meta.get("origin", (0.0, 0.0))),
            direction=tuple(meta.get("direction", (1.0, 0.0, 0.0, 1.0))),
        )
        return item, like

    @staticmethod
    def _check_mask(mask, item: Item, what: str) -> np.ndarray:
        mask = np.asarray(mask)
        if mask.ndim == 3 and mask.shape[0] == 1:
            mask = mask[0]
        if mask.shape != item.shape:
            raise MaskShapeError(
                what, f"mask shape {tuple(mask.shape)} does not match loop {item.stem!r} ({item.shape[0]}x{item.shape[1]})"
            )
        return mask.astype(bool)

    @classmethod
    def _check_human_mask(cls, mask, item: Item, what: str) -> np.ndarray:
        """A human mask is on the loop's grid and marks something: an empty one would teach that the
        loop has no image region (a reviewer who finds the suggestion wrong rejects it instead)."""
        mask = cls._check_mask(mask, item, what)
        if not mask.any():
            raise InputError(what, "is empty (no pixel inside the region): not stored as a human mask; "
                                   "reject the suggestion instead")
        return mask

    # ------------------------------------------------------------------ items
    def add_loops(self, inputs) -> AddReport:
        """Add loop files and folders; a loop already present (same content hash) is skipped and reported."""
        from UltrasoundRefineLib.io import find_loops, read_loop

        found = find_loops(inputs)
        report = AddReport(errors=list(found.errors), skipped=list(found.skipped))
        for path in found.files:
            try:
                loop = read_loop(path)
            except InputError as e:
                report.errors.append(e)
                continue
            item, new = self.add_item(loop, path)
            if new:
                report.added.append(item)
            else:
                report.present.append((Path(path), item.id))
        if report.added:
            added_stems = {i.stem for i in report.added}
            rows = self._query("SELECT stem FROM items GROUP BY stem HAVING COUNT(*) > 1")
            report.duplicate_stems = sorted(r["stem"] for r in rows if r["stem"] in added_stems)
        return report

    def add_item(self, loop: Loop, path: str | Path | None = None) -> tuple[Item, bool]:
        """Register a loop already read; returns ``(item, newly_added)``. New items join their group's split."""
        path = Path(path if path is not None else loop.path or "").absolute()
        item_id = loop.source_key
        if not item_id:
            raise InputError(path, "the loop has no content key (source_key); read it with read_loop")
        meta = {
            "origin": list(loop.origin),
            "direction": list(loop.direction),
            "frame_time_ms": loop.frame_time_ms,
            "format": loop.meta.get("format"),
            "rgb": loop.is_rgb,
        }
        with self._write() as conn:
            row = conn.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
            if row is not None:
                return self._item_from_row(row), False
            split = None
            params = self._split_params(conn)
            if params is not None:
                split = self._split_for_new(conn, item_id, loop.group_key, params)
            conn.execute(
                "INSERT INTO items (id, stem, source_path, n_frames, height, width, spacing_row, spacing_col,"
                " group_key, split, meta, added_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    item_id,
                    loop.stem,
                    str(path),
                    loop.n_frames,
                    loop.shape[0],
                    loop.shape[1],
                    None if loop.spacing is None else float(loop.spacing[0]),
                    None if loop.spacing is None else float(loop.spacing[1]),
                    loop.group_key,
                    split,
                    json.dumps(meta),
                    _now(),
                ),
            )
            row = conn.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
        return self._item_from_row(row), True

    def items(self, split: str | None = None) -> list[Item]:
        if split is None:
            rows = self._query("SELECT * FROM items ORDER BY stem, id")
        else:
            rows = self._query("SELECT * FROM items WHERE split = ? ORDER BY stem, id", (split,))
        return [self._item_from_row(r) for r in rows]

    def item(self, key: str) -> Item:
        """An item by id, or by stem when exactly one item has that stem."""
        rows = self._query("SELECT * FROM items WHERE id = ?", (key,))
        if not rows:
            rows = self._query("SELECT * FROM items WHERE stem = ?", (key,))
            if len(rows) > 1:
                raise UnknownItemError(
                    self.root, f"{len(rows)} items have the stem {key!r}; name the item by its id instead"
                )
        if not rows:
            raise UnknownItemError(self.root, f"no item {key!r} in this workspace (neither an item id nor a stem)")
        return self._item_from_row(rows[0])

    def load_loop(self, item_id: str) -> Loop:
        item = self.item(item_id)
        return _load_item_loop(str(item.path), item.id)

    # ------------------------------------------------------------------ splits
    @staticmethod
    def _split_params(conn: sqlite3.Connection) -> dict | None:
        row = conn.execute("SELECT value FROM workspace_meta WHERE key = 'splits'").fetchone()
        return None if row is None else json.loads(row[0])

    @staticmethod
    def _split_for_new(conn: sqlite3.Connection, item_id: str, group_key: str | None, params: dict) -> str:
        """A loop added after splits were assigned joins its group's split, or opens a new group."""
        if group_key:
            row = conn.execute(
                "SELECT split FROM items WHERE group_key = ? AND split IS NOT NULL LIMIT 1", (group_key,)
            ).fetchone()
            if row is not None:
                return row[0]
        counts = {r[0]: int(r[1]) for r in conn.execute(
            "SELECT split, COUNT(*) FROM items WHERE split IS NOT NULL GROUP BY split")}
        n_items = int(conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]) + 1
        return splits.place_new_group(
            counts, n_items, test_fraction=params["test_fraction"], finetune_count=params["finetune_count"]
        )

    def assign_splits(
        self, *, test_fraction: float, finetune_count: int, seed: int, reassign: bool = False,
        finetune: Iterable[str] = (),
    ) -> dict[str, int]:
        """Place items in pretrain / finetune / test by patient group; returns the count per split.

        Items already placed keep their split (a model may have used them) unless ``reassign``; the
        parameters are remembered so loops added later are placed the same way. ``finetune``: items
        (ids or stems) to put in the fine-tuning split by name, each with its patient group.
        """
        pinned = {self.item(key).id: "finetune" for key in finetune}  # an unknown name: refused, nothing changed
        params = {"test_fraction": float(test_fraction), "finetune_count": int(finetune_count), "seed": int(seed)}
        try:
            splits.test_target(1, params["test_fraction"])
            if params["finetune_count"] < 0:
                raise ValueError(f"finetune_count must be >= 0, got {finetune_count}")
        except ValueError as e:
            raise UltrasoundRefineError(str(e)) from None
        with self._write() as conn:
            rows = conn.execute("SELECT id, group_key, split FROM items").fetchall()
            current = {} if reassign else {r["id"]: r["split"] for r in rows}
            try:
                assignment = splits.allocate(
                    [(r["id"], r["group_key"]) for r in rows], current, pinned=pinned, **params
                )
            except ValueError as e:
                raise UltrasoundRefineError(str(e)) from None
            conn.executemany("UPDATE items SET split = ? WHERE id = ?", [(s, i) for i, s in assignment.items()])
            conn.execute(
                "INSERT INTO workspace_meta(key, value) VALUES ('splits', ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (json.dumps(params),),
            )
        counts = dict.fromkeys(splits.SPLITS, 0)
        for s in assignment.values():
            counts[s] += 1
        return counts

    def split_of(self, item_id: str) -> str | None:
        return self.item(item_id).split

    # ------------------------------------------------------------------ suggestions
    def rounds(self) -> list[int]:
        return [int(r[0]) for r in self._query("SELECT DISTINCT round FROM suggestions ORDER BY round")]

    def latest_round(self) -> int | None:
        rounds = self.rounds()
        return rounds[-1] if rounds else None

    def add_suggestion(
        self,
        item_id: str,
        mask: np.ndarray,
        producer: str,
        quality: float | None,
        round: int,
        details: dict | None = None,
        *,
        uncertainty: float | None = None,
    ) -> int:
        """Store one suggested mask (file first, then row); returns the suggestion id."""
        item, like = self._grid(item_id)
        mask = self._check_mask(mask, item, f"suggestion for {item.stem}")
        round = int(round)
        if round < 1:
            raise UltrasoundRefineError(f"round must be >= 1, got {round}")
        details_json = json.dumps(details or {}, default=_json_default)
        path = self.root / "suggestions" / f"r{round:03d}" / f"{item.id}.nrrd"
        with self._write() as conn:
            # The write lock is held from here: no one else can claim (item, round) while the file is written.
            existing = conn.execute(
                "SELECT id FROM suggestions WHERE item_id = ? AND round = ?", (item.id, round)
            ).fetchone()
            if existing is not None:
                raise DuplicateSuggestionError(
                    self.root, f"item {item.stem!r} already has a suggestion in round {round} (id {existing[0]})"
                )
            write_mask(mask, path, like=like)
            _fsync(path)
            cur = conn.execute(
                "INSERT INTO suggestions (item_id, round, producer, quality, uncertainty, mask_path, details,"
                " created_at) VALUES (?,?,?,?,?,?,?,?)",
                (
                    item.id,
                    round,
                    str(producer),
                    None if quality is None else float(quality),
                    None if uncertainty is None else float(uncertainty),
                    self._rel(path),
                    details_json,
                    _now(),
                ),
            )
            return int(cur.lastrowid)

    def suggest(
        self,
        producer_name: str,
        produce: Callable[[Loop], object],
        round: int | None = None,
        *,
        items: Iterable[str] | None = None,
        progress: Callable[[int, int, str], None] | None = None,
    ) -> SuggestReport:
        """Run a producer ``(loop) -> MaskSuggestion`` over the items that lack a suggestion in ``round``.

        ``round=None`` continues the latest round when it was made by this same producer (so an
        interrupted or extended run resumes), otherwise starts the next round. A producer may give an
        ``uncertainty`` (attribute or ``details["uncertainty"]``); the review shows the most uncertain,
        then the lowest quality, first. One loop that fails is reported, the rest go on.
        """
        if round is None:
            latest = self.latest_round()
            if latest is None:
                round = 1
            else:
                producers = {r[0] for r in self._query("SELECT DISTINCT producer FROM suggestions WHERE round = ?", (latest,))}
                round = latest if producers == {producer_name} else latest + 1
        report = SuggestReport(round=int(round), producer=producer_name)
        done = {r[0] for r in self._query("SELECT item_id FROM suggestions WHERE round = ?", (round,))}
        todo = self.items() if items is None else [self.item(k) for k in items]
        report.already = sum(1 for i in todo if i.id in done)
        todo = [i for i in todo if i.id not in done]
        for n, item in enumerate(todo):
            if progress is not None:
                progress(n, len(todo), item.stem)
            try:
                loop = _load_item_loop(str(item.path), item.id)
                s = produce(loop)
                details = dict(getattr(s, "details", {}) or {})
                uncertainty = getattr(s, "uncertainty", None)
                if uncertainty is None:
                    uncertainty = details.get("uncertainty")
                sid = self.add_suggestion(
                    item.id,
                    s.mask,
                    producer_name,
                    getattr(s, "quality", None),
                    round,
                    details,
                    uncertainty=uncertainty,
                )
                report.added.append(sid)
            except DuplicateSuggestionError:
                report.already += 1  # another process filled it meanwhile
            except WorkspaceError:
                raise
            except UltrasoundRefineError as e:
                report.errors.append((item.stem, str(e)))
            except Exception as e:  # a producer bug on one loop must not cost the whole batch
                report.errors.append((item.stem, f"{type(e).__name__}: {e}"))
        if progress is not None:
            progress(len(todo), len(todo), "")
        return report

    _SUGGESTION_SQL = (
        "SELECT s.*, i.stem AS stem,"
        " (SELECT d.decision FROM decisions d WHERE d.suggestion_id = s.id ORDER BY d.id DESC LIMIT 1) AS decision"
        " FROM suggestions s JOIN items i ON i.id = s.item_id"
    )

    def suggestions(self, round: int | None = None, item_id: str | None = None) -> list[Suggestion]:
        """Suggestions (of one round, of one item, or all), each with its latest decision."""
        where, params = [], []
        if round is not None:
            where.append("s.round = ?")
            params.append(int(round))
        if item_id is not None:
            where.append("s.item_id = ?")
            params.append(self.item(item_id).id)
        sql = self._SUGGESTION_SQL + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY s.round, i.stem, s.id"
        return [self._suggestion_from_row(r) for r in self._query(sql, params)]

    def suggestion(self, suggestion_id: int) -> Suggestion:
        rows = self._query(self._SUGGESTION_SQL + " WHERE s.id = ?", (int(suggestion_id),))
        if not rows:
            raise UnknownItemError(self.root, f"no suggestion with id {suggestion_id} in this workspace")
        return self._suggestion_from_row(rows[0])

    def suggestion_mask(self, suggestion_id: int) -> np.ndarray:
        return read_mask(self.suggestion(suggestion_id).mask_path)

    def review_queue(self, round: int | None = None) -> list[Suggestion]:
        """Undecided suggestions of a round (default: the latest), most likely wrong first.

        Most likely wrong = highest uncertainty where the producer gives one, else lowest quality;
        decided suggestions are left out, so a review that stopped resumes where it was.
        """
        if round is None:
            round = self.latest_round()
            if round is None:
                return []
        rows = self._query(
            self._SUGGESTION_SQL
            + " WHERE s.round = ? AND NOT EXISTS (SELECT 1 FROM decisions d WHERE d.suggestion_id = s.id)"
            " ORDER BY CASE WHEN s.uncertainty IS NOT NULL THEN -s.uncertainty"
            " WHEN s.quality IS NOT NULL THEN s.quality ELSE 1e300 END ASC, i.stem, s.id",
            (int(round),),
        )
        return [self._suggestion_from_row(r) for r in rows]

    # ------------------------------------------------------------------ decisions
    def _resolve_suggestion(self, target: int | str, round: int | None = None) -> tuple[int, str]:
        """A suggestion id (int) or an item id / stem (str: its suggestion in ``round``, default latest)."""
        if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
            rows = self._query("SELECT id, item_id FROM suggestions WHERE id = ?", (int(target),))
            if not rows:
                raise UnknownItemError(self.root, f"no suggestion with id {target} in this workspace")
            return int(rows[0][0]), rows[0][1]
        item = self.item(str(target))
        if round is None:
            rows = self._query(
                "SELECT id FROM suggestions WHERE item_id = ? ORDER BY round DESC LIMIT 1", (item.id,)
            )
        else:
            rows = self._query("SELECT id FROM suggestions WHERE item_id = ? AND round = ?", (item.id, int(round)))
        if not rows:
            where = "" if round is None else f" in round {round}"
            raise UnknownItemError(self.root, f"item {item.stem!r} has no suggestion{where} to decide on")
        return int(rows[0][0]), item.id

    def decide(
        self,
        target: int | str,
        decision: str,
        user: str,
        seconds: float | None = None,
        edited_mask: np.ndarray | None = None,
        *,
        round: int | None = None,
        details: dict | None = None,
        source_key: str | None = None,
    ) -> int:
        """Record a decision on a suggestion (by suggestion id, or by item id/stem: its latest round).

        "edited" needs ``edited_mask`` (stored as a human mask). The decision is committed before this
        returns; deciding again on the same suggestion records a new decision, and the latest counts.
        ``source_key`` names where the decision comes from (a CSV row): a key already recorded is not
        recorded again, and the id of the decision it recorded is returned. Returns the decision id.
        """
        if decision not in DECISIONS:
            raise UltrasoundRefineError(f"unknown decision {decision!r}; choose from {', '.join(DECISIONS)}")
        if not user or not str(user).strip():
            raise UltrasoundRefineError("a decision needs a user name")
        if decision == "edited" and edited_mask is None:
            raise UltrasoundRefineError("an 'edited' decision needs the edited mask")
        if decision != "edited" and edited_mask is not None:
            raise UltrasoundRefineError(f"a mask was given with decision {decision!r}; use 'edited'")
        if seconds is not None and (not np.isfinite(seconds) or seconds < 0):
            raise UltrasoundRefineError(f"seconds must be a non-negative number, got {seconds}")
        suggestion_id, item_id = self._resolve_suggestion(target, round)
        details_json = json.dumps(details or {}, default=_json_default)
        if decision == "edited":
            item, like = self._grid(item_id)
            mask = self._check_human_mask(edited_mask, item, f"edited mask for {item.stem}")
        with self._write() as conn:
            if source_key is not None:  # under the write lock: no one can record the same key meanwhile
                done = conn.execute("SELECT id FROM decisions WHERE source_key = ?", (source_key,)).fetchone()
                if done is not None:
                    return int(done[0])
            hm_id = None
            if decision == "edited":
                hm_id = self._insert_human_mask(
                    conn, item, like, mask, "edited", str(user), {"suggestion_id": suggestion_id}
                )
            cur = conn.execute(
                "INSERT INTO decisions (suggestion_id, decision, user, seconds, human_mask_id, details, decided_at,"
                " source_key) VALUES (?,?,?,?,?,?,?,?)",
                (suggestion_id, decision, str(user), seconds, hm_id, details_json, _now(), source_key),
            )
            return int(cur.lastrowid)

    def decision_for_key(self, source_key: str) -> int | None:
        """The id of the decision recorded from ``source_key`` (see :meth:`decide`), if any."""
        rows = self._query("SELECT id FROM decisions WHERE source_key = ?", (source_key,))
        return int(rows[0][0]) if rows else None

    def decisions(self, round: int | None = None) -> list[dict]:
        sql = (
            "SELECT d.*, s.item_id, s.round, i.stem FROM decisions d JOIN suggestions s ON s.id = d.suggestion_id"
            " JOIN items i ON i.id = s.item_id"
        )
        rows = self._query(sql + (" WHERE s.round = ?" if round is not None else "") + " ORDER BY d.id",
                           () if round is None else (int(round),))
        return [dict(r) for r in rows]

    # ------------------------------------------------------------------ human masks
    def _insert_human_mask(
        self, conn, item: Item, like: Loop, mask: np.ndarray, source: str, user: str | None, provenance: dict
    ) -> int:
        """Inside a write transaction: claim the next id, write the file, then the row."""
        hm_id = int(conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM human_masks").fetchone()[0])
        path = self.root / "human" / f"{item.id}-{hm_id}.nrrd"
        write_mask(mask, path, like=like)
        _fsync(path)
        conn.execute(
            "INSERT INTO human_masks (id, item_id, mask_path, source, user, provenance, created_at)"
            " VALUES (?,?,?,?,?,?,?)",
            (hm_id, item.id, self._rel(path), source, user, json.dumps(provenance, default=_json_default), _now()),
        )
        return hm_id

    def add_human_mask(
        self,
        item_id: str,
        mask: np.ndarray,
        *,
        source: str = "imported",
        user: str | None = None,
        provenance: dict | None = None,
    ) -> int:
        """Store a human-drawn (or imported) mask for an item; the latest one per item counts."""
        if source not in ("imported", "edited"):
            raise UltrasoundRefineError(f"unknown human mask source {source!r}")
        item, like = self._grid(self.item(item_id).id)
        mask = self._check_human_mask(mask, item, (provenance or {}).get("file") or f"human mask for {item.stem}")
        with self._write() as conn:
            return self._insert_human_mask(conn, item, like, mask, source, user, provenance or {})

    def _latest_human_rows(self) -> dict[str, sqlite3.Row]:
        rows = self._query(
            "SELECT h.* FROM human_masks h WHERE h.id = (SELECT MAX(id) FROM human_masks h2 WHERE h2.item_id = h.item_id)"
        )
        return {r["item_id"]: r for r in rows}

    def human_mask(self, item_id: str) -> np.ndarray | None:
        row = self._latest_human_rows().get(self.item(item_id).id)
        return None if row is None else read_mask(self._abs(row["mask_path"]))

    def import_masks(self, inputs, user: str | None = None):
        from UltrasoundRefineLib.workspace.human_masks import import_masks

        return import_masks(self, inputs, user=user)

    # ------------------------------------------------------------------ training
    def _accepted_per_item(self, producer: str | None = None, round: int | None = None) -> dict[str, sqlite3.Row]:
        """Per item, the suggestion of the latest round whose latest decision is accepted or edited
        (only rounds of ``producer`` / only ``round`` when given)."""
        where, params = "", []
        if producer is not None:
            where += " AND s.producer = ?"
            params.append(str(producer))
        if round is not None:
            where += " AND s.round = ?"
            params.append(int(round))
        rows = self._query(
            "WITH last AS (SELECT d.* FROM decisions d WHERE d.id = "
            "  (SELECT MAX(id) FROM decisions d2 WHERE d2.suggestion_id = d.suggestion_id)) "
            "SELECT s.*, last.decision AS decision, last.human_mask_id AS human_mask_id, h.mask_path AS human_path "
            "FROM suggestions s JOIN last ON last.suggestion_id = s.id "
            "LEFT JOIN human_masks h ON h.id = last.human_mask_id "
            "WHERE last.decision IN ('accepted', 'edited')" + where + " ORDER BY s.round",
            params,
        )
        best: dict[str, sqlite3.Row] = {}
        for r in rows:
            best[r["item_id"]] = r  # ordered by round: the latest round wins
        return best

    def examples(self, stage: str, *, producer: str | None = None, round: int | None = None) -> list[Example]:
        """Masks for training and testing.

        pretrain: per item not in the test split, the suggestion of its latest round that was accepted
            (or its edited mask); ``producer`` / ``round`` restrict which rounds count (to compare
            pretraining on threshold against fanfit suggestions, say).
        finetune / test: the latest human mask of each item for that stage (:func:`_human_mask_stage`).
        """
        if stage not in STAGES:
            raise UltrasoundRefineError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
        if stage != "pretrain" and (producer is not None or round is not None):
            raise UltrasoundRefineError(f"producer/round select suggestions: they apply to 'pretrain', not {stage!r}")
        items = {i.id: i for i in self.items()}
        out: list[Example] = []
        if stage == "pretrain":
            accepted = self._accepted_per_item(producer, round)
            for item_id, r in sorted(accepted.items(), key=lambda kv: (items[kv[0]].stem, kv[0])):
                item = items[item_id]
                if item.split == "test":
                    continue
                if r["decision"] == "edited" and r["human_path"]:
                    path, source = r["human_path"], f"edited:r{r['round']}"
                else:
                    path, source = r["mask_path"], f"suggestion:{r['producer']}:r{r['round']}"
                out.append(self._example(item, path, source))
        else:
            for item_id, r in self._latest_human_rows().items():
                item = items[item_id]
                if _human_mask_stage(item.split, r["source"]) == stage:
                    out.append(self._example(item, r["mask_path"], f"human:{r['source']}"))
            out.sort(key=lambda e: (e.stem, e.item_id))
        return out

    def _example(self, item: Item, rel_path: str, source: str) -> Example:
        return Example(
            item_id=item.id,
            stem=item.stem,
            mask=read_mask(self._abs(rel_path)),
            mask_source=source,
            load=functools.partial(_load_item_loop, str(item.path), item.id),
            group_key=item.group_key,
            split=item.split,
        )

    def register_model(self, path: str | Path, card: dict) -> str:
        """Record a trained model; returns its id (``card["id"]`` if given, else the file's stem)."""
        path = Path(path).absolute()
        if not path.exists():
            raise InputError(path, "no such model file")
        model_id = str(card.get("id") or card.get("model_id") or path.stem)
        try:
            stored = self._rel(path)
        except ValueError:
            stored = str(path)
        card_json = json.dumps(card, default=_json_default, sort_keys=True)
        with self._write() as conn:
            conn.execute(
                "INSERT INTO models (id, path, card, created_at) VALUES (?,?,?,?)"
                " ON CONFLICT(id) DO UPDATE SET path = excluded.path, card = excluded.card",
                (model_id, stored, card_json, _now()),
            )
        return model_id

    def models(self) -> list[dict]:
        out = []
        # rowid breaks ties in the order of registration: two models registered within one
        # millisecond must not come back sorted by name.
        for r in self._query("SELECT * FROM models ORDER BY created_at, rowid"):
            p = Path(r["path"])
            out.append({"id": r["id"], "path": p if p.is_absolute() else self.root / p,
                        "card": json.loads(r["card"]), "created_at": r["created_at"]})
        return out

    def model(self, model_id: str) -> dict:
        for m in self.models():
            if m["id"] == model_id:
                return m
        raise UnknownItemError(self.root, f"no model {model_id!r} registered in this workspace")

    # ------------------------------------------------------------------ reporting
    def status(self) -> dict:
        """Counts for the status table: items per split, suggestions per round and state, human masks."""
        items = {i.id: i for i in self.items()}
        by_split: dict[str, int] = {}
        for i in items.values():
            by_split[i.split or "unassigned"] = by_split.get(i.split or "unassigned", 0) + 1
        rounds = []
        for rnd in self.rounds():
            states = dict.fromkeys(("pending", *DECISIONS), 0)
            per_split: dict[str, dict[str, int]] = {}
            producers = set()
            for s in self.suggestions(round=rnd):
                state = s.decision or "pending"
                states[state] += 1
                producers.add(s.producer)
                sp = per_split.setdefault(items[s.item_id].split or "unassigned", dict.fromkeys(states, 0))
                sp[state] += 1
            rounds.append({"round": rnd, "producers": sorted(producers), "suggestions": sum(states.values()),
                           **states, "by_split": per_split})
        human = self._latest_human_rows()
        human_by_split: dict[str, int] = {}
        for item_id in human:
            key = items[item_id].split or "unassigned"
            human_by_split[key] = human_by_split.get(key, 0) + 1
        params = self._split_params(self.conn)
        return {
            "workspace": str(self.root),
            "items": len(items),
            "items_by_split": by_split,
            "split_params": params,
            "rounds": rounds,
            "human_masks": len(human),
            "human_masks_by_split": human_by_split,
            "models": len(self._query("SELECT id FROM models")),
        }

    def export_masks(self, out_dir: str | Path):
        from UltrasoundRefineLib.workspace.human_masks import export_masks

        return export_masks(self, out_dir)


def _human_mask_stage(split: str | None, source: str) -> str | None:
    """What a loop's latest human mask is for: scoring in the test split, fine-tuning anywhere else (a
    workspace never split included: import-masks then train --stage finetune just works), except a
    review's correction of a pretraining loop's suggestion, which pretrains (see :meth:`examples`)."""
    if split == "test":
        return "test"
    if split == "pretrain" and source == "edited":
        return None
    return "finetune"


def _fsync(path: Path) -> None:
    """Put the mask file (and its name) on disk before the row that points to it is committed, so not
    even a power loss can leave a row whose file is empty or missing."""
    for target, flags in ((path, os.O_RDONLY), (path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))):
        try:
            fd = os.open(target, flags)
        except OSError:
            continue  # (directories cannot be opened on some platforms; the file's fsync still holds)
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def _require_writable_dir(root: Path) -> None:
    if not os.access(root, os.W_OK | os.X_OK):
        raise WorkspaceError(root, "the workspace folder is not writable (open it read-only, or fix its permissions)")


def _connect(db: Path, *, readonly: bool) -> sqlite3.Connection:
    try:
        return schema.connect(db, readonly=readonly)
    except sqlite3.OperationalError as e:
        if readonly and ("unable to open" in str(e) or "readonly" in str(e)):
            # A WAL database in a folder we may not write: SQLite cannot create the -shm file, and says
            # "unable to open" or, with no -wal/-shm left (closed cleanly: an archive), "attempt to write
            # a readonly database" at the first statement. immutable=1 reads it as it is; nobody can be
            # writing it there.
            conn = sqlite3.connect(f"{db.resolve().as_uri()}?immutable=1", uri=True, isolation_level=None)
            conn.row_factory = sqlite3.Row
            return conn
        raise WorkspaceError(db, f"cannot open the database ({e})") from None


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return repr(value)
