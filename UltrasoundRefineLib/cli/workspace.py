"""Workspace commands: ``init``, ``add``, ``split``, ``suggest``, ``review``, ``import-masks``, ``status``,
``export-masks``. Exit code 0 when everything worked, 2 when anything failed (the good part is kept)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys


def _default_user() -> str:
    return os.environ.get("ULTRASOUND_REFINE_USER") or os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _say(*parts) -> None:
    print(*parts, file=sys.stderr)


def register(sub: argparse._SubParsersAction) -> None:
    from UltrasoundRefineLib.automask import METHODS

    p = sub.add_parser("init", help="create a workspace folder",
                       description="Creates WORKSPACE/workspace.db and the folders for masks, models, runs.")
    p.add_argument("workspace", metavar="WORKSPACE")
    p.set_defaults(func=run_init)

    p = sub.add_parser("add", help="add loops (files or folders) to a workspace",
                       description="Loops already in the workspace (same content) are skipped and reported.")
    p.add_argument("workspace", metavar="WORKSPACE")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="loop files or folders (searched recursively)")
    p.set_defaults(func=run_add)

    p = sub.add_parser("split", help="assign loops to pretrain / finetune / test by patient group",
                       description="Whole patient groups go to one split, so no patient is in training and test. "
                       "Loops already placed keep their split unless --reassign. Without split, human masks "
                       "fine-tune and nothing is held out for testing.")
    p.add_argument("workspace", metavar="WORKSPACE")
    p.add_argument("--test-fraction", type=_fraction, default=None,
                   help="share of the loops for testing (default: as last time, else 0.2)")
    p.add_argument("--finetune-count", type=int, default=None,
                   help="loops for fine-tuning (default: as last time, else 10)")
    p.add_argument("--seed", type=int, default=None, help="default: as last time, else 0")
    p.add_argument("--reassign", action="store_true", help="recompute every split from scratch")
    p.add_argument("--finetune", nargs="+", default=[], metavar="STEM",
                   help="put these loops (stems or item ids) in the fine-tuning split, each with its patient group")
    p.add_argument("--finetune-from", action="append", default=[], metavar="DIR",
                   help="put the loops named by the mask files in DIR (e.g. the hand-drawn masks) in the "
                   "fine-tuning split")
    p.set_defaults(func=run_split)

    p = sub.add_parser("suggest", help="suggest a mask for every loop in the workspace (one round)",
                       description="Fills a round with suggestions; re-running continues the same round.")
    p.add_argument("workspace", metavar="WORKSPACE")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--method", choices=sorted(METHODS), help="auto-mask method")
    g.add_argument("--model", help="a registered model id (or checkpoint path): its predictions become suggestions")
    p.add_argument("--round", type=int, help="round number (default: continue the latest round of this "
                   "producer, else the next round)")
    p.add_argument("--device", default="auto", help="for --model: cpu, cuda or auto (default)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_suggest)

    p = sub.add_parser("review", help="record accept/reject decisions headless (CSV or simulated reviewer)",
                       description="--decisions FILE.csv: rows 'item,decision[,seconds[,mask]]' (item: id or stem; "
                       "decision: accepted/rejected/edited), or a header naming item/stem/suggestion_id, decision, "
                       "user, seconds, mask. Bad rows are reported by line number; good rows are applied as they "
                       "are read (FILE '-': standard input, a pipe), and a row an earlier run recorded is not "
                       "recorded again, so the same file can be run again after a kill or after rows were added. "
                       "Reviewers working at once take different suggestions. "
                       "--simulate: accept a suggestion when its Dice against TRUTH/<stem>.nrrd is at least "
                       "--min-dice, erring at --mistake-rate.")
    p.add_argument("workspace", metavar="WORKSPACE")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--decisions", metavar="FILE.csv", help="the decisions ('-': read them from standard input)")
    g.add_argument("--simulate", action="store_true")
    p.add_argument("--ack", action="store_true",
                   help="with --decisions: print 'LINE applied|already|error DETAIL' on stdout for each row "
                   "once it is on disk")
    p.add_argument("--truth", metavar="DIR", help="ground-truth masks (DIR/<stem>.nrrd), for --simulate")
    p.add_argument("--min-dice", type=_fraction, default=0.9)
    p.add_argument("--mistake-rate", type=_fraction, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--round", type=int, help="round to review (default: the latest)")
    p.add_argument("--user", default=None, help="who decides (default: $USER; 'simulated-reviewer' for --simulate)")
    p.set_defaults(func=run_review)

    p = sub.add_parser("import-masks", help="import human masks (NRRD or Slicer .seg.nrrd), matched by file stem",
                       description="DIR/<stem>.nrrd or <stem>.seg.nrrd goes to the loop with that stem; a mask "
                       "that matches no loop (or several) is reported, not guessed.")
    p.add_argument("workspace", metavar="WORKSPACE")
    p.add_argument("inputs", nargs="+", metavar="DIR", help="folders or mask files")
    p.add_argument("--user", default=None, help="who drew them (default: $USER)")
    p.set_defaults(func=run_import)

    p = sub.add_parser("status", help="items per split, suggestions per round and state, human masks")
    p.add_argument("workspace", metavar="WORKSPACE")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_status)

    p = sub.add_parser("export-masks", help="write each loop's best mask as OUT/<stem>.nrrd (+ masks.csv)",
                       description="Best = the latest human mask, else the accepted suggestion of the latest round.")
    p.add_argument("workspace", metavar="WORKSPACE")
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(func=run_export)


def _open(path, readonly=False):
    from UltrasoundRefineLib.workspace import Workspace

    return Workspace.open(path, readonly=readonly)


def run_init(args) -> int:
    from UltrasoundRefineLib.workspace import Workspace

    with Workspace.create(args.workspace) as ws:
        _say(f"workspace created: {ws.root}")
    return 0


def run_add(args) -> int:
    with _open(args.workspace) as ws:
        report = ws.add_loops(args.inputs)
        for e in report.errors:
            _say(f"ultrasound-refine: error: {e}")
        for path, item_id in report.present:
            _say(f"already present: {path} (item {item_id})")
        for stem in report.duplicate_stems:
            _say(f"warning: several loops have the stem {stem!r}; masks cannot be matched to them by name")
        _say(f"{len(report.added)} loops added, {len(report.present)} already present, "
             f"{len(report.errors)} failed, {len(report.skipped)} other files skipped; {len(ws.items())} in the workspace")
    return 2 if report.errors else 0


SPLIT_DEFAULTS = {"test_fraction": 0.2, "finetune_count": 10, "seed": 0}


def _stems_from(folders: list[str]) -> list[str]:
    """The loops a folder of masks names (``<stem>.nrrd``, ``<stem>.seg.nrrd``)."""
    from UltrasoundRefineLib.errors import InputError
    from UltrasoundRefineLib.workspace.human_masks import _find_mask_files, mask_stem

    stems = []
    for folder in folders:
        files, _, errors = _find_mask_files([folder])
        if errors:
            raise errors[0]
        if not files:
            raise InputError(folder, "holds no mask files (.nrrd, .seg.nrrd) to name loops by")
        stems += [mask_stem(f) for f in files]
    return stems


def run_split(args) -> int:
    named = [*args.finetune, *_stems_from(args.finetune_from)]
    with _open(args.workspace) as ws:
        # Options not given keep what the workspace last used (so `split --finetune X` moves X, nothing else).
        params = {**SPLIT_DEFAULTS, **(ws.status()["split_params"] or {})}
        for key in SPLIT_DEFAULTS:
            if getattr(args, key) is not None:
                params[key] = getattr(args, key)
        was = {i.id: (i.stem, i.split) for i in ws.items()}
        counts = ws.assign_splits(**params, reassign=args.reassign, finetune=named)
        left_test = sorted(stem for i, (stem, split) in was.items() if split == "test" and ws.split_of(i) != "test")
    _say(", ".join(f"{k}: {v}" for k, v in counts.items()))
    if left_test and not args.reassign:
        # Named loops move even out of test (the person naming them knows why), but a test split that
        # shrank unnoticed would score models on fewer loops than asked for.
        loops = f"{len(left_test)} loop{'s' if len(left_test) != 1 else ''}"
        _say(f"warning: {loops} left the test split for fine-tuning ({', '.join(left_test[:5])}"
             f"{', ...' if len(left_test) > 5 else ''}); it holds {counts['test']} now (asked: "
             f"{params['test_fraction']:.0%} of the loops); `ultrasound-refine split {shlex.quote(args.workspace)} "
             f"--reassign` places every loop again")
    return 0


def _model_producer(ws, model: str, device: str):
    """Model-based suggestions: ``model`` is a model id registered in the workspace, or a checkpoint
    path; ``UltrasoundRefineLib.train.model_producer(path, device)`` gives ``(producer_name, produce)``."""
    from pathlib import Path

    from UltrasoundRefineLib.errors import InputError, UltrasoundRefineError

    try:
        from UltrasoundRefineLib.train import model_producer
    except ImportError as e:
        raise UltrasoundRefineError(f"suggest --model needs the training package, which cannot be loaded ({e})") from None
    registered = {m["id"]: m for m in ws.models()}
    if model in registered:
        path = Path(registered[model]["path"])
    else:
        path = Path(model)
        if not path.exists():
            known = ", ".join(sorted(registered)) or "none registered"
            raise InputError(model, f"neither a model registered in this workspace ({known}) nor a file")
    return model_producer(path, device)


def run_suggest(args) -> int:
    from UltrasoundRefineLib.errors import UltrasoundRefineError
    from UltrasoundRefineLib.workspace import advice, method_producer

    with _open(args.workspace) as ws:
        if not ws.items():
            raise UltrasoundRefineError(f"{args.workspace}: {advice.no_loops(ws)}")
        if args.method:
            name, produce = args.method, method_producer(args.method)
        else:
            name, produce = _model_producer(ws, args.model, args.device)

        def progress(n, total, stem):
            if not args.quiet and stem:
                _say(f"[{n + 1}/{total}] {stem}")

        report = ws.suggest(name, produce, round=args.round, progress=progress)
        for stem, reason in report.errors:
            _say(f"ultrasound-refine: error: {stem}: {reason}")
        _say(f"round {report.round} ({name}): {len(report.added)} suggestions added, "
             f"{report.already} already there, {len(report.errors)} failed")
    return 2 if report.errors else 0


def run_review(args) -> int:
    from UltrasoundRefineLib.errors import UltrasoundRefineError
    from UltrasoundRefineLib.workspace import advice, apply_decisions_csv, simulate_review

    with _open(args.workspace) as ws:
        if args.decisions:
            def ack(line, state, detail):
                print(f"{line} {state} {detail}", flush=True)

            report = apply_decisions_csv(ws, args.decisions, user=args.user or _default_user(), round=args.round,
                                         on_row=ack if args.ack else None)
            for line, reason in report.errors:
                _say(f"{args.decisions}:{line}: {reason}")
            _say(f"{len(report.applied)} decisions recorded, {len(report.already)} recorded by an earlier run "
                 f"(not again), {len(report.errors)} bad rows skipped")
            return 2 if report.errors else 0
        if not args.truth:
            raise UltrasoundRefineError("review --simulate needs --truth DIR (ground-truth masks named <stem>.nrrd)")
        if ws.latest_round() is None:
            raise UltrasoundRefineError(f"{args.workspace}: {advice.no_suggestions(ws)}")
        sim = simulate_review(ws, args.truth, min_dice=args.min_dice, mistake_rate=args.mistake_rate,
                              seed=args.seed, round=args.round, user=args.user or "simulated-reviewer")
        for stem, reason in sim.errors:
            _say(f"ultrasound-refine: error: {stem}: {reason}")
        if sim.missing_truth:
            _say(f"{len(sim.missing_truth)} suggestions have no truth mask in {args.truth} (left undecided)")
        rate = f"{sim.accept_rate:.3f}" if sim.reviewed else "n/a"
        bound = f"{sim.bound_rate:.3f}" if sim.reviewed else "n/a"
        _say(f"round {sim.round}: {sim.reviewed} reviewed, {sim.accepted} accepted, {sim.rejected} rejected "
             f"({sim.mistakes} deliberate mistakes); accept rate {rate}, share with Dice >= {sim.min_dice}: {bound}")
    return 2 if sim.errors else 0


def run_import(args) -> int:
    from UltrasoundRefineLib.errors import InputError
    from UltrasoundRefineLib.workspace import advice
    from UltrasoundRefineLib.workspace.human_masks import MASK_EXTENSIONS, mask_stem

    with _open(args.workspace) as ws:
        report = ws.import_masks(args.inputs, user=args.user or _default_user())
        if not (report.imported or report.unchanged or report.unmatched or report.ambiguous or report.errors):
            raise InputError(", ".join(args.inputs), f"no mask files found (looked for {', '.join(MASK_EXTENSIONS)}); "
                                                     "nothing imported")
        for e in report.errors:
            _say(f"ultrasound-refine: error: {e}")
        for f in report.unmatched:
            _say(f"unmatched: {f} (no loop has the stem '{mask_stem(f)}')")
        if report.unmatched and not ws.items():
            _say(f"ultrasound-refine: error: {args.workspace}: {advice.no_loops(ws)}")
        for f, n in report.ambiguous:
            _say(f"ambiguous: {f} ({n} loops have this stem; not imported)")
        _say(f"{len(report.imported)} masks imported, {len(report.unchanged)} unchanged, "
             f"{len(report.unmatched)} unmatched, {len(report.ambiguous)} ambiguous, {len(report.errors)} failed")
    return 2 if (report.errors or report.unmatched or report.ambiguous) else 0


def format_status(st: dict) -> str:
    lines = [f"workspace {st['workspace']}: {st['items']} loops, {st['human_masks']} with a human mask, "
             f"{st['models']} models"]
    splits = ["pretrain", "finetune", "test", "unassigned"]
    lines.append("")
    lines.append(f"{'split':<12}{'loops':>8}{'human masks':>13}")
    for s in splits:
        if s in st["items_by_split"] or s in st["human_masks_by_split"]:
            lines.append(f"{s:<12}{st['items_by_split'].get(s, 0):>8}{st['human_masks_by_split'].get(s, 0):>13}")
    if st["rounds"]:
        lines.append("")
        head = f"{'round':<7}{'split':<12}{'suggested':>10}{'pending':>9}{'accepted':>10}{'rejected':>10}{'edited':>8}  producer"
        lines.append(head)
        for r in st["rounds"]:
            prod = ",".join(r["producers"])
            lines.append(f"{r['round']:<7}{'all':<12}{r['suggestions']:>10}{r['pending']:>9}{r['accepted']:>10}"
                         f"{r['rejected']:>10}{r['edited']:>8}  {prod}")
            for s in splits:
                if s in r["by_split"]:
                    c = r["by_split"][s]
                    lines.append(f"{'':<7}{s:<12}{sum(c.values()):>10}{c['pending']:>9}{c['accepted']:>10}"
                                 f"{c['rejected']:>10}{c['edited']:>8}")
    else:
        lines.append("")
        lines.append("no suggestions yet (run `ultrasound-refine suggest`)")
    return "\n".join(lines)


def run_status(args) -> int:
    with _open(args.workspace, readonly=True) as ws:
        st = ws.status()
    print(json.dumps(st, indent=2) if args.json else format_status(st))
    return 0


def run_export(args) -> int:
    from UltrasoundRefineLib.errors import UltrasoundRefineError
    from UltrasoundRefineLib.workspace import advice

    with _open(args.workspace, readonly=True) as ws:
        report = ws.export_masks(args.out)
        if not report.written and not report.missing:
            raise UltrasoundRefineError(f"{args.workspace}: nothing to export: {advice.nothing_to_export(ws)}")
    for e in report.missing:
        _say(f"ultrasound-refine: error: {e}")
    if report.without_mask:
        _say(f"{len(report.without_mask)} loops have no accepted or human mask (not exported)")
    _say(f"{len(report.written)} masks written to {args.out} (list in {report.manifest})")
    return 2 if report.missing else 0
