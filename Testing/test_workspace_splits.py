"""Splits: no loop and no patient group is ever in both a training split and the test split."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from UltrasoundRefineLib.errors import UltrasoundRefineError
from UltrasoundRefineLib.loop import Loop
from UltrasoundRefineLib.workspace import Workspace
from UltrasoundRefineLib.workspace import splits

# items as (item_id, group_key or None); a batch of items arrives, splits are assigned, more arrive ...
group_keys = st.one_of(st.none(), st.sampled_from([f"patient{k}" for k in range(12)]))
batches = st.lists(st.lists(group_keys, min_size=0, max_size=15), min_size=1, max_size=4)


def _check(assignment: dict, items: list, test_fraction: float, finetune_count: int) -> None:
    group = dict(items)
    assert set(assignment) == set(group)
    assert set(assignment.values()) <= set(splits.SPLITS)
    assert splits.leaks(assignment, group) == []
    # every group lies in exactly one split
    where: dict = {}
    for item_id, s in assignment.items():
        where.setdefault(splits.group_of(item_id, group[item_id]), set()).add(s)
    assert all(len(s) == 1 for s in where.values())


@settings(max_examples=150, deadline=None)
@given(
    batches=batches,
    test_fraction=st.floats(0.0, 0.9),
    finetune_count=st.integers(0, 10),
    seed=st.integers(0, 2**31),
)
def test_incremental_allocation_never_leaks(batches, test_fraction, finetune_count, seed):
    items: list = []
    current: dict = {}
    for b, batch in enumerate(batches):
        items += [(f"b{b}i{k}", g) for k, g in enumerate(batch)]
        assignment = splits.allocate(items, current, test_fraction=test_fraction,
                                     finetune_count=finetune_count, seed=seed)
        _check(assignment, items, test_fraction, finetune_count)
        # nothing placed before ever moves
        assert all(assignment[i] == s for i, s in current.items())
        current = assignment
    # from scratch: deterministic, the test target is met when the groups allow it
    fresh = splits.allocate(items, {}, test_fraction=test_fraction, finetune_count=finetune_count, seed=seed)
    assert fresh == splits.allocate(list(reversed(items)), {}, test_fraction=test_fraction,
                                    finetune_count=finetune_count, seed=seed)
    n_test = sum(s == "test" for s in fresh.values())
    assert n_test >= min(splits.test_target(len(items), test_fraction), len(items)) or n_test == len(items)


@settings(max_examples=25, deadline=None)
@given(groups=st.lists(group_keys, min_size=1, max_size=12), seed=st.integers(0, 1000),
       test_fraction=st.floats(0.05, 0.8), more=st.lists(group_keys, max_size=6))
def test_workspace_splits_never_leak(tmp_path_factory, groups, seed, test_fraction, more):
    root = tmp_path_factory.mktemp("ws") / "ws"
    with Workspace.create(root) as ws:
        def add(k, g):
            loop = Loop(frames=np.zeros((1, 4, 4), np.uint8), source_key=f"{k:016x}", group_key=g, stem=f"l{k}")
            ws.add_item(loop, root.parent / f"l{k}.nrrd")

        for k, g in enumerate(groups):
            add(k, g)
        ws.assign_splits(test_fraction=test_fraction, finetune_count=2, seed=seed)
        before = {i.id: i.split for i in ws.items()}
        for k, g in enumerate(more, start=len(groups)):
            add(k, g)  # loops added later are placed at once, with their group
        items = ws.items()
        assert all(i.split is not None for i in items)
        assert all(ws.split_of(i) == s for i, s in before.items())
        assignment = {i.id: i.split for i in items}
        assert splits.leaks(assignment, {i.id: i.group_key for i in items}) == []
        test_ids = {i.id for i in items if i.split == "test"}
        # the training API agrees: no test loop ever appears among the training examples
        for i in items:
            sid = ws.add_suggestion(i.id, np.ones((4, 4), bool), "threshold", 0.5, 1)
            ws.decide(sid, "accepted", "ann")
            ws.add_human_mask(i.id, np.ones((4, 4), bool))
        assert not test_ids & {e.item_id for e in ws.examples("pretrain")}
        assert not test_ids & {e.item_id for e in ws.examples("finetune")}
        assert {e.item_id for e in ws.examples("test")} == test_ids


def test_assign_splits_keeps_placed_items_unless_reassigned(tmp_path, tiny_workspace):
    with tiny_workspace(tmp_path / "ws", 20, shape=(4, 4), group=lambda k: f"p{k // 2}") as ws:
        counts = ws.assign_splits(test_fraction=0.2, finetune_count=4, seed=7)
        assert counts == {"pretrain": 12, "finetune": 4, "test": 4}
        first = {i.id: i.split for i in ws.items()}
        assert ws.assign_splits(test_fraction=0.5, finetune_count=0, seed=8) == counts
        assert {i.id: i.split for i in ws.items()} == first
        other = ws.assign_splits(test_fraction=0.5, finetune_count=0, seed=8, reassign=True)
        assert other["test"] == 10 and other["finetune"] == 0
        assert ws.status()["split_params"] == {"test_fraction": 0.5, "finetune_count": 0, "seed": 8}
        with pytest.raises(UltrasoundRefineError, match="test_fraction"):
            ws.assign_splits(test_fraction=1.5, finetune_count=0, seed=0)
        with pytest.raises(UltrasoundRefineError, match="finetune_count"):
            ws.assign_splits(test_fraction=0.2, finetune_count=-1, seed=0)


def test_splits_are_reproducible_from_the_seed(tmp_path, tiny_workspace):
    result = []
    for n in range(2):
        with tiny_workspace(tmp_path / f"ws{n}", 15, shape=(4, 4)) as ws:
            ws.assign_splits(test_fraction=0.3, finetune_count=3, seed=42)
            result.append({i.id: i.split for i in ws.items()})
    assert result[0] == result[1]
