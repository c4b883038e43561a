"""Step 2 of the method without the GUI: batch decisions from a CSV file, and a simulated reviewer for
data whose truth is known (the phantom), so the whole loop can run and be measured headless.

The review order itself (most likely wrong first, decided ones skipped) is
:meth:`Workspace.review_queue`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from UltrasoundRefineLib.errors import InputError, UltrasoundRefineError
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


@dataclass
class CsvReport:
    applied: list[tuple[int, int]] = field(default_factory=list)  # (line number, decision id)
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, what is wrong)


def parse_decision(word: str) -> str:
    d = DECISION_WORDS.get(str(word).strip().lower())
    if d is None:
        raise UltrasoundRefineError(f"unknown decision {word!r} (use accepted, rejected or edited)")
    return d


def apply_decisions_csv(ws, path: str | Path, *, user: str, round: int | None = None) -> CsvReport:
    """Apply ``item,decision[,seconds[,mask]]`` rows (or a header naming columns among
    item/stem/suggestion_id, decision, user, seconds, mask). Every good row is committed; every bad
    row is reported with its line number and skipped. ``mask`` (for "edited") is relative to the CSV."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except UnicodeDecodeError:
        raise InputError(path, "is not UTF-8 text (save the decisions as CSV, UTF-8)") from None
    except OSError as e:
        raise InputError(path, f"cannot read the file ({e.strerror or e})") from None
    report = CsvReport()
    reader = csv.reader(text.splitlines())
    columns: list[str] | None = None
    saw_row = False
    for row in reader:
        line = reader.line_num
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
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
            edited_mask = None
            if fields.get("mask"):
                if decision != "edited":
                    raise UltrasoundRefineError(f"a mask was given with decision {decision!r}; use 'edited'")
                mask_path = Path(fields["mask"])
                if not mask_path.is_absolute():
                    mask_path = path.parent / mask_path
                from UltrasoundRefineLib.workspace.human_masks import read_human_mask

                item = ws.suggestion(target).item_id if isinstance(target, int) else ws.item(target).id
                edited_mask = read_human_mask(mask_path, ws.item(item).shape)
            decision_id = ws.decide(target, decision, fields.get("user") or user, seconds, edited_mask, round=round)
            report.applied.append((line, decision_id))
        except UnknownItemError as e:
            report.errors.append((line, str(e)))
        except WorkspaceError:
            raise  # the workspace itself failed (read-only, locked, closed): no later row can succeed either
        except UltrasoundRefineError as e:
            report.errors.append((line, str(e)))
    if not saw_row:
        raise InputError(path, "has no decision rows")
    return report


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


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice through MONAI, as everywhere else; two empty masks agree perfectly."""
    import torch
    from monai.metrics import compute_dice

    if not pred.any() and not truth.any():
        return 1.0
    p = torch.as_tensor(pred, dtype=torch.float32)[None, None]
    t = torch.as_tensor(truth, dtype=torch.float32)[None, None]
    return float(compute_dice(p, t, include_background=True, ignore_empty=False)[0, 0])


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
    for s in queue:
        truth_path = truth_dir / f"{s.stem}.nrrd"
        if not truth_path.is_file():
            report.missing_truth.append(s.stem)
            continue
        try:
            truth = read_mask(truth_path)
            pred = read_mask(s.mask_path)
            if truth.shape != pred.shape:
                raise InputError(truth_path, f"truth shape {truth.shape} does not match the suggestion {pred.shape}")
        except InputError as e:
            report.errors.append((s.stem, str(e)))
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


def round_(x: float) -> float:
    return float(f"{x:.6f}")
