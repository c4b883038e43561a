"""Step 2 of the method without the GUI: batch decisions from a CSV file, and a simulated reviewer for
data whose truth is known (the phantom), so the whole loop can run and be measured headless.

Exactly once: each CSV row is applied (committed) as it is read, so a pipe's rows count as they arrive
and a kill loses none that was acknowledged; each row is recorded under a key made from the rows up to
it (plus the suggestion and the user), so running the same file again - after a kill, or grown by new
rows - records no row twice. Reviewers working at once claim each suggestion before deciding it, so
they take different ones; a claim left by a reviewer that went away expires.

The review order itself (most likely wrong first, decided ones skipped) is
:meth:`Workspace.review_queue`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from UltrasoundRefineLib.errors import InputError, UltrasoundRefineError
from UltrasoundRefineLib.metrics import dice
from UltrasoundRefineLib.workspace.errors import UnknownItemError, WorkspaceError

DECISION_WORDS = {
    "accepted": "accepted", "accept": "accepted", "a": "accepted", "yes": "accepted", "y": "accepted",
    "ok": "accepted", "1": "accepted", "true": "accepted",
    "rejected": "rejected", "reject": "rejected", "r": "rejected", "no": "rejected", "n": "rejected",
    "0": "rejected", "false": "rejected",
    "edited": "edited", "edit": "edited", "e": "edited",
}
ITEM_COLUMNS = ("item", "item_id", "stem", "loop")
KNOWN_COLUMNS = (*ITEM_COLUMNS, "suggestion_id", "decision", "user", "seconds", "mask")


# A claim outlives any one decision by far; a reviewer gone this long has left its items to others.
CLAIM_TTL_S = 600.0


@dataclass
class CsvReport:
    applied: list[tuple[int, int]] = field(default_factory=list)  # (line number, decision id)
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, what is wrong)
    already: list[tuple[int, int]] = field(default_factory=list)  # (line number, id recorded by an earlier run)


def parse_decision(word: str) -> str:
    d = DECISION_WORDS.get(str(word).strip().lower())
    if d is None:
        raise UltrasoundRefineError(f"unknown decision {word!r} (use accepted, rejected or edited)")
    return d


def apply_decisions_csv(
    ws,
    path: str | Path,
    *,
    user: str,
    round: int | None = None,
    on_row: Callable[[int, str, object], None] | None = None,
) -> CsvReport:
    """Apply ``item,decision[,seconds[,mask]]`` rows (or a header naming columns among
    item/stem/suggestion_id, decision, user, seconds, mask). Every good row is committed as it is read;
    every bad row is reported with its line number and skipped; a row an earlier run recorded is not
    recorded again. ``mask`` (for "edited") is relative to the CSV. ``path`` ``-`` reads standard input.
    ``on_row(line, state, detail)`` hears of each row once its fate is on disk: ``applied`` (decision
    id), ``already`` (the id recorded before) or ``error`` (what is wrong)."""
    report = CsvReport()

    def tell(line: int, state: str, detail) -> None:
        getattr(report, {"applied": "applied", "already": "already", "error": "errors"}[state]).append((line, detail))
        if on_row is not None:
            on_row(line, state, detail)

    stream = _open_rows(path)
    base = Path.cwd() if str(path) == "-" else Path(path).parent
    reader = csv.reader(stream)
    columns: list[str] | None = None
    saw_row = False
    prefix = hashlib.sha256()  # every row so far: a row's place in its file is part of what it is
    try:
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except UnicodeDecodeError:
                raise InputError(path, f"line {reader.line_num + 1}: is not UTF-8 text (save the decisions as CSV, "
                                       "UTF-8); the rows before it were applied") from None
            except csv.Error as e:
                raise InputError(path, f"line {reader.line_num}: not readable as CSV ({e}); the rows before it "
                                       "were applied") from None
            line = reader.line_num
            cells = [c.strip() for c in row]
            if not any(cells) or cells[0].startswith("#"):
                continue
            prefix.update("\x1f".join(cells).encode() + b"\n")
            if columns is None and not saw_row:
                lowered = [c.lower() for c in cells]
                if "decision" in lowered:
                    unknown = [c for c in lowered if c and c not in KNOWN_COLUMNS]
                    if unknown:
                        raise InputError(path, f"line {line}: unknown column(s) {', '.join(unknown)}; "
                                               f"known: {', '.join(KNOWN_COLUMNS)}")
                    if not any(c in lowered for c in (*ITEM_COLUMNS, "suggestion_id")):
                        raise InputError(path, f"line {line}: no item column (item, stem or suggestion_id)")
                    columns = lowered
                    continue
            saw_row = True
            try:
                _apply_row(ws, cells, columns, user, round, base, prefix.hexdigest(), line, tell)
            except UnknownItemError as e:
                tell(line, "error", str(e))
            except WorkspaceError:
                raise  # the workspace itself failed (read-only, locked, closed): no later row can succeed either
            except UltrasoundRefineError as e:
                tell(line, "error", str(e))
    finally:
        if str(path) == "-":
            stream.detach()  # leave standard input itself open
        else:
            stream.close()
    if not saw_row:
        raise InputError(path, "has no decision rows")
    return report


def _open_rows(path: str | Path):
    """The CSV as a text stream read line by line (a pipe's rows are applied as they come)."""
    if str(path) == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", newline="")
    try:
        return open(path, encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except OSError as e:
        raise InputError(path, f"cannot read the file ({e.strerror or e})") from None


def _apply_row(ws, cells, columns, user, round, base: Path, prefix: str, line: int, tell) -> None:
    fields = _fields(cells, columns)
    target: int | str
    if fields.get("suggestion_id"):
        try:
            target = int(fields["suggestion_id"])
        except ValueError:
            raise UltrasoundRefineError(f"suggestion_id {fields['suggestion_id']!r} is not a number") from None
    else:
        target = next((fields[c] for c in ITEM_COLUMNS if fields.get(c)), "")
        if not target:
            raise UltrasoundRefineError("no item given")
    decision = parse_decision(fields.get("decision", ""))
    seconds = None
    if fields.get("seconds"):
        try:
            seconds = float(fields["seconds"])
        except ValueError:
            raise UltrasoundRefineError(f"seconds {fields['seconds']!r} is not a number") from None
    if fields.get("mask") and decision != "edited":
        raise UltrasoundRefineError(f"a mask was given with decision {decision!r}; use 'edited'")
    who = fields.get("user") or user
    suggestion_id, item_id = ws._resolve_suggestion(target, round)
    key = "csv:" + hashlib.sha256(f"{prefix}\0{suggestion_id}\0{who}".encode()).hexdigest()[:40]
    done = ws.decision_for_key(key)
    if done is not None:
        tell(line, "already", done)
        return
    edited_mask = None
    if fields.get("mask"):
        from UltrasoundRefineLib.workspace.human_masks import read_human_mask

        mask_path = Path(fields["mask"])
        if not mask_path.is_absolute():
            mask_path = base / mask_path
        edited_mask = read_human_mask(mask_path, ws.item(item_id).shape)
    decision_id = ws.decide(suggestion_id, decision, who, seconds, edited_mask, source_key=key)
    tell(line, "applied", decision_id)


def _fields(cells: list[str], columns: list[str] | None) -> dict[str, str]:
    if columns is not None:
        if len(cells) > len(columns):
            raise UltrasoundRefineError(f"{len(cells)} cells, but the header names {len(columns)} columns")
        return {c: v for c, v in zip(columns, cells) if c}
    if len(cells) < 2:
        raise UltrasoundRefineError("expected at least two cells: item, decision")
    if len(cells) > 4:
        raise UltrasoundRefineError(f"{len(cells)} cells; expected item, decision[, seconds[, mask]]")
    names = ["item", "decision", "seconds", "mask"]
    return dict(zip(names, cells))


@dataclass
class SimulationReport:
    round: int | None
    min_dice: float
    mistake_rate: float
    seed: int
    reviewed: int = 0
    accepted: int = 0
    rejected: int = 0
    mistakes: int = 0
    would_accept: int = 0  # suggestions whose Dice reaches the bound (what a perfect reviewer accepts)
    missing_truth: list[str] = field(default_factory=list)  # stems with no DIR/<stem>.nrrd
    errors: list[tuple[str, str]] = field(default_factory=list)  # (stem, what is wrong)
    dice: dict[str, float] = field(default_factory=dict)  # stem -> Dice of its suggestion

    @property
    def accept_rate(self) -> float:
        return self.accepted / self.reviewed if self.reviewed else float("nan")

    @property
    def bound_rate(self) -> float:
        """Share of suggestions at or above the Dice bound."""
        return self.would_accept / self.reviewed if self.reviewed else float("nan")

    @property
    def expected_accept_rate(self) -> float:
        """What the accept rate should be: the bound's share, flipped at the mistake rate."""
        p = self.bound_rate
        return p * (1 - self.mistake_rate) + (1 - p) * self.mistake_rate


def simulate_review(
    ws,
    truth_dir: str | Path,
    *,
    min_dice: float = 0.9,
    mistake_rate: float = 0.0,
    seed: int = 0,
    round: int | None = None,
    user: str = "simulated-reviewer",
) -> SimulationReport:
    """Decide every undecided suggestion of a round as a careful-but-human reviewer would: accept when
    its Dice against ``truth_dir/<stem>.nrrd`` reaches ``min_dice``, and get it wrong (flip the
    decision) with probability ``mistake_rate``, seeded. Decisions are recorded like anyone's."""
    from UltrasoundRefineLib.io.mask import read_mask

    if not 0.0 <= min_dice <= 1.0:
        raise UltrasoundRefineError(f"--min-dice must be in [0, 1], got {min_dice}")
    if not 0.0 <= mistake_rate <= 1.0:
        raise UltrasoundRefineError(f"--mistake-rate must be in [0, 1], got {mistake_rate}")
    truth_dir = Path(truth_dir)
    if not truth_dir.is_dir():
        raise InputError(truth_dir, "no such truth folder")
    queue = ws.review_queue(round)
    report = SimulationReport(round=queue[0].round if queue else round, min_dice=min_dice,
                              mistake_rate=mistake_rate, seed=seed)
    rng = np.random.default_rng(seed)
    owner = f"{user}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # this very reviewer, among others of the same name
    for s in queue:
        if not claim(ws, s.id, owner):
            continue  # another reviewer decided it, or is on it
        truth_path = truth_dir / f"{s.stem}.nrrd"
        if not truth_path.is_file():
            report.missing_truth.append(s.stem)
            release(ws, s.id, owner)
            continue
        try:
            truth = read_mask(truth_path)
            pred = read_mask(s.mask_path)
            if truth.shape != pred.shape:
                raise InputError(truth_path, f"truth shape {truth.shape} does not match the suggestion {pred.shape}")
        except InputError as e:
            report.errors.append((s.stem, str(e)))
            release(ws, s.id, owner)
            continue
        d = dice(pred, truth)
        good = d >= min_dice
        mistake = bool(rng.random() < mistake_rate)
        decision = "accepted" if good != mistake else "rejected"
        ws.decide(s.id, decision, user, None, details={"dice": round_(d), "mistake": mistake, "simulated": True})
        report.reviewed += 1
        report.would_accept += int(good)
        report.mistakes += int(mistake)
        report.accepted += int(decision == "accepted")
        report.rejected += int(decision == "rejected")
        report.dice[s.stem] = d
    return report


def claim(ws, suggestion_id: int, owner: str, *, ttl_s: float = CLAIM_TTL_S, now: float | None = None) -> bool:
    """Take an undecided suggestion for ``owner`` until ``now + ttl_s``, atomically (under the write
    lock); False when it is decided, or claimed by someone else whose claim has not expired."""
    now = time.time() if now is None else float(now)
    with ws._write() as conn:
        if conn.execute("SELECT 1 FROM decisions WHERE suggestion_id = ? LIMIT 1", (suggestion_id,)).fetchone():
            return False
        held = conn.execute("SELECT owner, expires_at FROM claims WHERE suggestion_id = ?", (suggestion_id,)).fetchone()
        if held is not None and held["owner"] != owner and held["expires_at"] > now:
            return False
        conn.execute(
            "INSERT INTO claims (suggestion_id, owner, expires_at) VALUES (?,?,?) ON CONFLICT(suggestion_id)"
            " DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at",
            (suggestion_id, owner, now + ttl_s),
        )
        return True


def release(ws, suggestion_id: int, owner: str) -> None:
    """Give back a claim left undecided (so another reviewer need not wait for it to expire)."""
    with ws._write() as conn:
        conn.execute("DELETE FROM claims WHERE suggestion_id = ? AND owner = ?", (suggestion_id, owner))


def round_(x: float) -> float:
    return float(f"{x:.6f}")
