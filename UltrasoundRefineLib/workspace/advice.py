"""Why a workspace has nothing to train on (or to score on), and which command fixes it.

A bare "nothing to train" leaves people guessing which of the earlier steps they missed; these
sentences look at what the workspace holds and name the next command to run.
"""

from __future__ import annotations

import shlex


def _cli(command: str, root: str, *rest: str) -> str:
    """A command line to copy, the workspace path quoted for the shell."""
    return "`" + " ".join(["ultrasound-refine", command, shlex.quote(root), *rest]) + "`"


def nothing_to_train(ws, stage: str, producer: str | None = None) -> str:
    """Why ``ws.examples`` is empty for a training stage (``pretrain``; ``finetune``/``scratch``: human
    masks), ending with the command that fixes it."""
    root = str(ws.root)
    if stage == "pretrain":
        return _no_accepted_suggestions(ws, root, producer)
    return _no_finetune_masks(ws, root)


def _no_accepted_suggestions(ws, root: str, producer: str | None) -> str:
    split = {i.id: i.split for i in ws.items()}
    of = f" by {producer}" if producer else ""
    suggestions = [s for s in ws.suggestions() if producer is None or s.producer == producer]
    usable = [s for s in suggestions if split.get(s.item_id) != "test"]
    if not usable:
        where = " outside the test split" if suggestions else ""
        return (f"no suggestions{of}{where} to pretrain on: make them with "
                f"{_cli('suggest', root, '--method', producer if producer in ('threshold', 'fanfit') else 'fanfit')}, "
                f"then decide them (Slicer, or {_cli('review', root, '--decisions', 'FILE.csv')})")
    pending = sum(s.decision is None for s in usable)
    if pending:
        return (f"none of the suggestions{of} is accepted yet ({pending} wait for a decision): decide them in "
                f"Slicer or with {_cli('review', root, '--decisions', 'FILE.csv')}")
    return (f"every decided suggestion{of} was rejected: make a new round "
            f"({_cli('suggest', root, '--method', 'fanfit')} or --model MODEL) and review it")


def _no_finetune_masks(ws, root: str) -> str:
    items = {i.id: i for i in ws.items()}
    human = ws._latest_human_rows()
    fix = (f"put loops in the fine-tuning split with {_cli('split', root, '--finetune', 'STEM...')} "
           f"(or --finetune-from DIR, the folder of the hand-drawn masks)")
    if not human:
        return (f"the workspace has no human masks: import hand-drawn ones with "
                f"{_cli('import-masks', root, 'DIR')} (DIR/<stem>.nrrd or .seg.nrrd)")
    in_test = sum(items[i].split == "test" for i in human)
    if in_test == len(human):
        return f"all {in_test} loops with human masks are in the test split, which only scores models: {fix}"
    return (f"the {len(human)} loops with human masks are in the test split ({in_test}) or are pretraining loops "
            f"whose suggestion was edited in review ({len(human) - in_test}), which pretrain: {fix}")


def nothing_to_score(ws) -> str:
    """Why ``ws.examples("test")`` is empty (an experiment scores on it), ending with the command that
    fixes it."""
    root = str(ws.root)
    in_test = sorted(i.stem for i in ws.items(split="test"))
    if not in_test:
        return (f"no loops in the test split, which experiments score on: hold some out with "
                f"{_cli('split', root, '--test-fraction', '0.2')}, then import hand-drawn masks for them with "
                f"{_cli('import-masks', root, 'DIR')}")
    shown = ", ".join(in_test[:5]) + (", ..." if len(in_test) > 5 else "")
    return (f"none of the {len(in_test)} loops in the test split ({shown}) has a human mask to score on: "
            f"import hand-drawn masks for them with {_cli('import-masks', root, 'DIR')}")


def no_loops(ws) -> str:
    """Why ``suggest`` has nothing to work on."""
    return f"the workspace has no loops: add them with {_cli('add', str(ws.root), 'DIR')}"


def no_suggestions(ws) -> str:
    """Why a review has nothing to decide."""
    root = str(ws.root)
    if not ws.items():
        return no_loops(ws)
    return f"no suggestions to review: make them with {_cli('suggest', root, '--method', 'fanfit')}"


def nothing_to_export(ws) -> str:
    """Why ``export-masks`` wrote no mask."""
    root = str(ws.root)
    if not ws.items():
        return no_loops(ws)
    return (f"no loop has an accepted suggestion or a human mask: decide suggestions in Slicer or with "
            f"{_cli('review', root, '--decisions', 'FILE.csv')}, or import hand-drawn masks with "
            f"{_cli('import-masks', root, 'DIR')}")


__all__ = ["no_loops", "no_suggestions", "nothing_to_export", "nothing_to_score", "nothing_to_train"]
