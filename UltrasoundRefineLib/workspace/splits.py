"""Leak-free splits: whole patient groups go to pretrain, fine-tune or test, never across.

Allocation is incremental: an item keeps the split it has, a new item joins its group's split, and
only groups nobody has placed yet are dealt out (in a seeded order) until the targets are met. So
adding loops later never moves a loop that a model may already have been trained or tested on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

SPLITS = ("pretrain", "finetune", "test")
TRAINING_SPLITS = ("pretrain", "finetune")


def group_of(item_id: str, group_key: str | None) -> str:
    """Items with no group key (no patient/study identifiers) form a group of their own."""
    return f"g:{group_key}" if group_key else f"i:{item_id}"


def test_target(n_items: int, test_fraction: float) -> int:
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if test_fraction == 0 or n_items == 0:
        return 0
    return max(1, int(round(test_fraction * n_items)))


def _order(group: str, seed: int) -> str:
    # A seeded hash, not a shuffled list: the place of a group does not depend on which others exist.
    return hashlib.sha256(f"{seed}\0{group}".encode()).hexdigest()


def allocate(
    items: Iterable[tuple[str, str | None]],
    current: Mapping[str, str | None],
    *,
    test_fraction: float,
    finetune_count: int,
    seed: int,
    pinned: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Return ``item_id -> split`` for every item.

    items: ``(item_id, group_key)``; current: the split each item already has (or ``None``); pinned:
    splits asked for by name (``split --finetune``), which move an item and its whole group there.
    Test gets whole groups until it holds ``round(test_fraction * n)`` items (at least one when the
    fraction is positive), fine-tune whole groups until it holds ``finetune_count`` items, pretrain the
    rest. A group split across splits in ``current`` (which this module never produces) is an error.
    """
    if finetune_count < 0:
        raise ValueError(f"finetune_count must be >= 0, got {finetune_count}")
    items = list(items)
    groups: dict[str, list[str]] = {}
    for item_id, group_key in items:
        groups.setdefault(group_of(item_id, group_key), []).append(item_id)

    pinned = dict(pinned or {})
    unknown = sorted(set(pinned.values()) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; choose from {', '.join(SPLITS)}")
    result: dict[str, str] = {}
    counts = dict.fromkeys(SPLITS, 0)
    unplaced: list[str] = []
    for group, members in groups.items():
        asked = {pinned[m] for m in members if m in pinned}
        if len(asked) > 1:
            raise ValueError(f"group {group} was asked into several splits: {sorted(asked)}")
        # What was asked by name wins over where the group lies (the person moving it knows why).
        placed = asked or {current.get(m) for m in members} - {None}
        if len(placed) > 1:
            raise ValueError(f"group {group} already lies in several splits: {sorted(placed)}")
        if placed:
            split = placed.pop()
            for m in members:
                result[m] = split
            counts[split] += len(members)
        else:
            unplaced.append(group)

    want_test = test_target(len(items), test_fraction)
    for group in sorted(unplaced, key=lambda g: _order(g, seed)):
        members = groups[group]
        if counts["test"] < want_test:
            split = "test"
        elif counts["finetune"] < finetune_count:
            split = "finetune"
        else:
            split = "pretrain"
        for m in members:
            result[m] = split
        counts[split] += len(members)
    return result


def place_new_group(counts: Mapping[str, int], n_items: int, *, test_fraction: float, finetune_count: int) -> str:
    """The split for one new group, given the items per split and the total (the new ones included):
    the same rule :func:`allocate` applies, without reading every item again."""
    if counts.get("test", 0) < test_target(n_items, test_fraction):
        return "test"
    if counts.get("finetune", 0) < finetune_count:
        return "finetune"
    return "pretrain"


def leaks(assignment: Mapping[str, str], groups: Mapping[str, str | None]) -> list[str]:
    """Groups that have items both in a training split and in test (should always be empty)."""
    seen: dict[str, set[str]] = {}
    for item_id, split in assignment.items():
        seen.setdefault(group_of(item_id, groups.get(item_id)), set()).add(split)
    return sorted(g for g, s in seen.items() if "test" in s and s & set(TRAINING_SPLITS))


__all__ = ["SPLITS", "TRAINING_SPLITS", "allocate", "group_of", "leaks", "place_new_group", "test_target"]
