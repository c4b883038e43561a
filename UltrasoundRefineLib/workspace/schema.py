"""The workspace database: its SQL, its version, and the refusal to touch what we do not understand.

A workspace written by a newer (or unknown) schema is refused, never altered: the person who made it
may still need it with the version that made it. Older schemas are upgraded only by an explicit
migration in :data:`MIGRATIONS`, when the workspace is opened for writing (read-only, it is read as it
is); an older schema with no migration is refused too.

Schema 2 (exactly-once decisions): ``decisions.source_key`` names where a decision came from (a row of
a decisions CSV), unique, so the same row applied twice is recorded once; ``claims`` lets reviewers
working at once take different suggestions.
"""

from __future__ import annotations

import functools
import sqlite3
from pathlib import Path

from UltrasoundRefineLib.workspace.errors import WorkspaceError

DB_NAME = "workspace.db"
FORMAT = "UltrasoundRefine workspace"
SCHEMA_VERSION = 2
# "USRF": lets `open` tell our databases from any other SQLite file before reading a table.
APPLICATION_ID = 0x55535246

SCHEMA_SQL = """
CREATE TABLE workspace_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE items (
    id          TEXT PRIMARY KEY,            -- the loop's content hash: stable and non-identifying
    stem        TEXT NOT NULL,               -- file name without extension; masks are matched by it
    source_path TEXT NOT NULL,
    n_frames    INTEGER NOT NULL,
    height      INTEGER NOT NULL,
    width       INTEGER NOT NULL,
    spacing_row REAL,
    spacing_col REAL,
    group_key   TEXT,                        -- hash of patient/study identifiers (leak-free splits)
    split       TEXT CHECK (split IN ('pretrain', 'finetune', 'test')),
    meta        TEXT NOT NULL DEFAULT '{}',
    added_at    TEXT NOT NULL
);
CREATE INDEX items_stem ON items(stem);
CREATE INDEX items_group ON items(group_key);
CREATE TABLE suggestions (
    id          INTEGER PRIMARY KEY,
    item_id     TEXT NOT NULL REFERENCES items(id),
    round       INTEGER NOT NULL CHECK (round >= 1),
    producer    TEXT NOT NULL,
    quality     REAL,
    uncertainty REAL,
    mask_path   TEXT NOT NULL,               -- relative to the workspace folder
    details     TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    UNIQUE (item_id, round)
);
CREATE INDEX suggestions_round ON suggestions(round);
CREATE TABLE human_masks (
    id          INTEGER PRIMARY KEY,
    item_id     TEXT NOT NULL REFERENCES items(id),
    mask_path   TEXT NOT NULL,               -- relative to the workspace folder
    source      TEXT NOT NULL CHECK (source IN ('imported', 'edited')),
    user        TEXT,
    provenance  TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL
);
CREATE INDEX human_masks_item ON human_masks(item_id);
CREATE TABLE decisions (
    id            INTEGER PRIMARY KEY,
    suggestion_id INTEGER NOT NULL REFERENCES suggestions(id),
    decision      TEXT NOT NULL CHECK (decision IN ('accepted', 'rejected', 'edited')),
    user          TEXT NOT NULL,
    seconds       REAL,
    human_mask_id INTEGER REFERENCES human_masks(id),
    details       TEXT NOT NULL DEFAULT '{}',
    decided_at    TEXT NOT NULL,
    source_key    TEXT                         -- where it came from (a CSV row's key); NULL: interactive
);
CREATE INDEX decisions_suggestion ON decisions(suggestion_id);
CREATE UNIQUE INDEX decisions_source_key ON decisions(source_key);
CREATE TABLE claims (
    suggestion_id INTEGER PRIMARY KEY REFERENCES suggestions(id),
    owner         TEXT NOT NULL,              -- the reviewer (process) working on it
    expires_at    REAL NOT NULL               -- Unix time; a claim past it is stale and may be taken over
);
CREATE TABLE models (
    id         TEXT PRIMARY KEY,
    path       TEXT NOT NULL,
    card       TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""

def _add_exactly_once(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE decisions ADD COLUMN source_key TEXT")
    for statement in _statements(SCHEMA_SQL):
        if statement.startswith(("CREATE UNIQUE INDEX decisions_source_key", "CREATE TABLE claims")):
            conn.execute(statement)


# from_version -> callable(conn) that upgrades to from_version + 1 inside a transaction.
MIGRATIONS: dict = {1: _add_exactly_once}


def connect(db_path: Path, *, readonly: bool, timeout: float = 30.0) -> sqlite3.Connection:
    """A connection in autocommit mode (we open transactions ourselves), full fsync on commit."""
    if readonly:
        uri = f"{db_path.resolve().as_uri()}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
    else:
        conn = sqlite3.connect(str(db_path), timeout=timeout, isolation_level=None)
    conn.row_factory = sqlite3.Row
    # Connection settings only: nothing here changes the file, so a database we are about to refuse
    # stays as it was. (WAL, so a reader never blocks the writer, is set once, at creation.)
    conn.execute("PRAGMA foreign_keys = ON")
    # FULL: a commit is on disk (fsync) before decide() returns, even across a power loss.
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def initialise(conn: sqlite3.Connection, created_by: str, created_at: str) -> None:
    conn.execute("BEGIN IMMEDIATE")  # (not executescript: it would commit statement by statement)
    for statement in _statements(SCHEMA_SQL):
        conn.execute(statement)
    conn.executemany(
        "INSERT INTO workspace_meta(key, value) VALUES (?, ?)",
        [
            ("format", FORMAT),
            ("schema_version", str(SCHEMA_VERSION)),
            ("created_by", created_by),
            ("created_at", created_at),
        ],
    )
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.execute("COMMIT")


def migrate(conn: sqlite3.Connection) -> int:
    """Upgrade an older schema to :data:`SCHEMA_VERSION`, all steps in one transaction (all or nothing;
    another process that opened it at the same time waits, then finds it done). Returns the version."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        while version < SCHEMA_VERSION:
            MIGRATIONS[version](conn)
            version += 1
        conn.execute("UPDATE workspace_meta SET value = ? WHERE key = 'schema_version'", (str(version),))
        conn.execute(f"PRAGMA user_version = {version}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return version


def _statements(script: str) -> list[str]:
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def check(conn: sqlite3.Connection, root: Path, *, deep: bool = True) -> int:
    """Refuse anything but a healthy workspace database of exactly our schema version."""
    db = root / DB_NAME
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if app_id != APPLICATION_ID:
            raise WorkspaceError(db, "is not an UltrasoundRefine workspace database (another program's SQLite file)")
        meta = dict(conn.execute("SELECT key, value FROM workspace_meta").fetchall())
        if deep:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                raise WorkspaceError(
                    db, f"the database is corrupt ({problems[0]}); restore it from a backup, it was not changed"
                )
    except sqlite3.DatabaseError as e:
        raise WorkspaceError(
            db, f"the database is corrupt or not SQLite ({e}); restore it from a backup, it was not changed"
        ) from None
    if meta.get("format") != FORMAT:
        raise WorkspaceError(db, f"unknown workspace format {meta.get('format')!r}; refusing to touch it")
    try:
        meta_version = int(meta.get("schema_version", "-1"))
    except ValueError:
        meta_version = -1
    if meta_version != version:
        raise WorkspaceError(db, f"inconsistent schema version ({meta_version} vs {version}); refusing to touch it")
    if version > SCHEMA_VERSION:
        raise WorkspaceError(
            db,
            f"was written by a newer UltrasoundRefine (workspace schema {version}; this version knows up to "
            f"{SCHEMA_VERSION}); upgrade UltrasoundRefine to open it. It was not changed.",
        )
    if version < SCHEMA_VERSION and version not in MIGRATIONS:
        raise WorkspaceError(
            db, f"uses workspace schema {version}, which this version cannot migrate (needs {SCHEMA_VERSION})"
        )
    if version < 1:
        raise WorkspaceError(db, f"unknown workspace schema version {version}; refusing to touch it")
    if version == SCHEMA_VERSION:
        _check_tables(conn, db)
    return version


#: Columns that hold JSON text: a row that does not parse would fail whatever reads it, long after open.
JSON_COLUMNS = {"items": "meta", "suggestions": "details", "human_masks": "provenance", "decisions": "details",
                "models": "card"}


@functools.cache
def _expected_tables() -> dict[str, tuple[str, ...]]:
    """Each table of :data:`SCHEMA_SQL` and its columns, as SQLite itself reads the script."""
    conn = sqlite3.connect(":memory:")
    try:
        for statement in _statements(SCHEMA_SQL):
            conn.execute(statement)
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {n: tuple(r[1] for r in conn.execute(f"PRAGMA table_info({n})")) for n in names}
    finally:
        conn.close()


def _check_tables(conn: sqlite3.Connection, db: Path) -> None:
    """A database that claims our schema version must have every table and column of it, and JSON where
    JSON belongs: say so at open, rather than fail (or mislead) in the middle of a command."""
    refuse = "the workspace database does not have the schema it claims; refusing to use it (it was not changed)"
    try:
        for table, columns in _expected_tables().items():
            present = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
            if not present:
                raise WorkspaceError(db, f"table {table} is missing: {refuse}")
            missing = [c for c in columns if c not in present]
            if missing:
                raise WorkspaceError(db, f"column {table}.{missing[0]} is missing: {refuse}")
        for table, column in JSON_COLUMNS.items():
            bad = conn.execute(f"SELECT rowid FROM {table} WHERE json_valid({column}) = 0 LIMIT 1").fetchone()
            if bad is not None:
                raise WorkspaceError(
                    db, f"{table}.{column} of row {bad[0]} is not valid JSON: the database was edited or damaged; "
                    "restore it from a backup (it was not changed)"
                )
    except sqlite3.DatabaseError as e:
        raise WorkspaceError(db, f"the database is corrupt ({e}); restore it from a backup, it was not changed") from None
