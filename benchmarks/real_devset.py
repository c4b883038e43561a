"""How good are the auto masks on real scans? Dice per file and overall on ../shared/devset.

    python benchmarks/real_devset.py [--devset ../shared/devset] [--out benchmarks/results/real_devset.json]
    python benchmarks/real_devset.py --train     # also the trained models (about 20 min on 2 cores)
    python benchmarks/real_devset.py --train --save-models DIR    # and keep them
    python benchmarks/real_devset.py --models DIR    # score kept models again (another post-processing)

Scores, against the dev set's masks of the image region: the naive peer baseline of the dev set's
README (grey maximum over frames > 10, largest component, holes filled), ``threshold`` and
``fanfit``, each file read with ``read_loop`` as a user's would be; and Spearman's rho between each
method's quality score and its Dice (a review that puts likely-wrong masks first needs it positive).
With ``--train`` it also scores the trained models, each file's mask being what ``predict`` writes
(test-time augmentation, then the card's post-processing; new models' cards say ``reading``: the
loop's own evidence read the way the network points), and beside it the network's own mask
(``dice_network_only``), what ``predict --postprocess shape`` writes (the shape fit alone,
``dice_shape``), ``--postprocess evidence`` (the network's shape where it and the reading differ in a
part, as an experiment scores its conditions, ``dice_evidence``) and ``--postprocess reading``
(``dice_reading``):

- **phantom-only**: pretrained on the phantom's accepted ``fanfit`` suggestions alone (a simulated
  reviewer accepts a suggestion whose Dice against the phantom's truth is at least 0.9); the phantom
  has what real scans add (``phantom.realism``) unless ``--plain-phantom``;
- **the method, k-fold**: the files are split into folds by source repository (files of one source
  often share a scanner, so no scanner is on both sides); per fold, pretrained on the phantom's
  accepted suggestions plus the training folds' accepted ``fanfit`` suggestions (the reviewer decides
  with the dev-set masks), fine-tuned on the training folds' dev-set masks as the human masks (at most
  16), and scored on the held-out fold.

Writes JSON with the machine named. The dev set is never copied into the repository: without it the
benchmark says so and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

# idle OpenMP threads sleep rather than spin (2 shared cores); set before torch loads
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from PIL import Image
from scipy import ndimage  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from UltrasoundRefineLib.atomic import atomic_write_text  # noqa: E402
from UltrasoundRefineLib.automask import suggest_mask  # noqa: E402
from UltrasoundRefineLib.errors import InputError  # noqa: E402
from UltrasoundRefineLib.io import loop_stem, read_loop  # noqa: E402
from UltrasoundRefineLib.machine import describe  # noqa: E402
from UltrasoundRefineLib.metrics import mask_metrics  # noqa: E402

METHODS = ("threshold", "fanfit")
MIN_DICE = 0.9  # the simulated reviewer accepts a suggestion at least this close to the truth
MAX_HUMAN = 16  # human masks per fold at most
N_FOLDS = 4
DEFAULT_DEVSET = ROOT.parent / "shared" / "devset"


def naive_mask(loop) -> np.ndarray:
    """The dev set's peer baseline: grey maximum over frames > 10, largest component, holes filled."""
    m = loop.grey().max(axis=0) > 10
    labels, n = ndimage.label(m)
    if n:
        m = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    return ndimage.binary_fill_holes(m)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devset", type=Path, default=DEFAULT_DEVSET)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "real_devset.json")
    ap.add_argument("--train", action="store_true", help="also the phantom-only model and the method by k-fold")
    ap.add_argument("--phantom", type=int, default=160, help="phantom loops the reviewer sees (--train)")
    ap.add_argument("--plain-phantom", action="store_true",
                    help="the base phantom, without what real scans add (phantom.realism) (--train)")
    ap.add_argument("--pretrain-epochs", type=int, default=None, help="override the pretraining default (--train)")
    ap.add_argument("--size", type=int, default=None, help="override the network's input size (--train)")
    ap.add_argument("--finetune-epochs", type=int, default=None, help="override the fine-tuning default (--train)")
    ap.add_argument("--save-models", type=Path, default=None, help="keep the trained models in this folder (--train)")
    ap.add_argument("--models", type=Path, default=None,
                    help="score the models a --train --save-models run kept in this folder instead of training "
                         "(the same folds; to measure another post-processing without training again)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    files_dir, masks_dir = args.devset / "files", args.devset / "masks"
    if not files_dir.is_dir() or not masks_dir.is_dir():
        print(f"no dev set at {args.devset} (needs files/ and masks/): nothing to score", file=sys.stderr)
        return 2

    rows, failures, loops, truths, suggestions = [], {}, {}, {}, {}
    for path in sorted(files_dir.iterdir()):
        stem = loop_stem(path)
        truth = np.asarray(Image.open(masks_dir / f"{stem}.png")) > 0
        t = time.perf_counter()
        try:
            loop = read_loop(path)
        except InputError as e:
            failures[stem] = e.reason
            rows.append({"file": stem, "read": False, **{m: {"dice": 0.0} for m in ("naive", *METHODS)}})
            print(f"{stem[:52]:52s} unreadable: {e.reason}", flush=True)
            continue
        row = {"file": stem, "read": True, "frames": loop.n_frames, "read_seconds": round(time.perf_counter() - t, 3)}
        loops[stem], truths[stem] = loop, truth
        row["naive"] = {"dice": mask_metrics(naive_mask(loop), truth)["dice"]}
        for method in METHODS:
            t = time.perf_counter()
            s = suggest_mask(loop, method)
            row[method] = {"dice": mask_metrics(s.mask, truth)["dice"], "quality": s.quality,
                           "seconds": round(time.perf_counter() - t, 3), "model": s.details.get("model")}
            if method == "fanfit":
                suggestions[stem] = s.mask  # what the simulated reviewer sees (--train)
        rows.append(row)
        print(f"{stem[:52]:52s} naive {row['naive']['dice']:.3f}  "
              + "  ".join(f"{m} {row[m]['dice']:.3f} (q {row[m]['quality']:.2f})" for m in METHODS), flush=True)

    if args.models:
        trained = score_saved(args.models, loops, truths)
    else:
        trained = train_and_score(args, loops, truths, suggestions) if args.train else {}
    for r in rows:
        for name, per_file in trained.get("per_file", {}).items():
            if r["file"] in per_file:
                r[name] = per_file[r["file"]]
            elif name not in r:
                r[name] = {"dice": 0.0}  # unreadable: scored 0, as for the other methods

    summary = {}
    for method in ("naive", *METHODS, *trained.get("per_file", {})):
        d = np.array([r[method]["dice"] for r in rows])
        entry = {"mean": float(d.mean()), "median": float(np.median(d)), "min": float(d.min()),
                 "n_below_0.80": int((d < 0.80).sum()), "n_at_least_0.95": int((d >= 0.95).sum())}
        for part in ("network_only", "shape", "evidence", "reading"):
            if any(f"dice_{part}" in r[method] for r in rows):
                entry[f"{part}_mean"] = float(np.mean([r[method].get(f"dice_{part}", 0.0) for r in rows]))
        q = [r[method].get("quality") for r in rows if r["read"]]
        if method in METHODS and len(set(q)) > 1:
            rho, p = spearmanr(q, [r[method]["dice"] for r in rows if r["read"]])
            entry["spearman_quality_dice"] = {"rho": float(rho), "pvalue": float(p)}
        summary[method] = entry
    report = {
        "benchmark": "real_devset",
        "n_files": len(rows),
        "unreadable": failures,
        "machine": describe(),
        "summary": summary,
        "training": trained.get("info"),
        "per_file": rows,
    }
    atomic_write_text(args.out, json.dumps(report, indent=1))

    print(f"\n{len(rows)} dev-set files on {platform.platform()}, {os.cpu_count()} CPUs ({describe()['processor']})")
    print(f"{'method':12s} {'mean':>6s} {'median':>6s} {'min':>6s} {'<0.80':>5s} {'>=0.95':>6s} {'rho(q,Dice)':>11s}")
    for method, e in summary.items():
        rho = e.get("spearman_quality_dice", {}).get("rho", float("nan"))
        print(f"{method:12s} {e['mean']:6.3f} {e['median']:6.3f} {e['min']:6.3f} {e['n_below_0.80']:5d} "
              f"{e['n_at_least_0.95']:6d} {rho:11.3f}")
        if "shape_mean" in e:
            print(f"{'':12s} network alone {e['network_only_mean']:.3f}; --postprocess shape {e['shape_mean']:.3f}; "
                  f"--postprocess evidence {e.get('evidence_mean', float('nan')):.3f}; --postprocess reading {e['reading_mean']:.3f}")
    print(f"wrote {args.out}")
    return 0


def folds_by_source(stems: list[str], k: int) -> list[list[str]]:
    """Files grouped by source repository (the part of the name before ``__``), groups dealt to k
    folds, largest first, each to the fold with the fewest files so far."""
    groups: dict[str, list[str]] = {}
    for stem in stems:
        groups.setdefault(stem.split("__", 1)[0], []).append(stem)
    folds: list[list[str]] = [[] for _ in range(k)]
    for _, members in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        min(folds, key=len).extend(members)
    return [sorted(f) for f in folds if f]


def score_model(model, stems: list[str], loops: dict, truths: dict) -> dict:
    """Per file: what ``predict`` writes with the model card's post-processing (``dice``), the network's
    own mask, the shape fit alone, ``--postprocess evidence`` and the evidence's reading the network
    points to (``--postprocess reading``)."""
    from UltrasoundRefineLib.train.evaluate import evaluate_model

    examples = [(loops[s], truths[s]) for s in stems]
    full = evaluate_model(model, examples)["per_example"]
    parts = {part: evaluate_model(model, examples, postprocess=mode)["per_example"]
             for part, mode in (("network_only", "basic"), ("shape", "shape"), ("evidence", "evidence"),
                                ("reading", "reading"))}
    return {s: {"dice": full[i]["dice"], **{f"dice_{part}": rows[i]["dice"] for part, rows in parts.items()}}
            for i, s in enumerate(stems)}


def score_saved(folder: Path, loops: dict, truths: dict) -> dict:
    """The phantom-only model and the method's fold models a ``--train --save-models`` run kept in
    ``folder``, scored on the same folds (:func:`folds_by_source`) without training."""
    from UltrasoundRefineLib.train.model import load_model

    stems = sorted(loops)
    per_file = {"phantom-only": score_model(load_model(folder / "phantom-only", "cpu"), stems, loops, truths),
                "method": {}}
    for k, held_out in enumerate(folds_by_source(stems, N_FOLDS)):
        per_file["method"].update(score_model(load_model(folder / f"fold{k}", "cpu"), held_out, loops, truths))
    return {"per_file": per_file, "info": {"models": str(folder), "scored_without_training": True}}


def train_and_score(args, loops: dict, truths: dict, suggestions: dict) -> dict:
    """The phantom-only model and the method by k-fold (see the module docstring)."""
    import torch

    from UltrasoundRefineLib.phantom import loop_seed, make_phantom_loop
    from UltrasoundRefineLib.train.finetune import FINETUNE_DEFAULTS, PRETRAIN_DEFAULTS, finetune, pretrain
    from UltrasoundRefineLib.train.model import save_model

    t0 = time.perf_counter()
    config = PRETRAIN_DEFAULTS.replace(**({"epochs": args.pretrain_epochs} if args.pretrain_epochs else {}),
                                       **({"size": args.size} if args.size else {}))
    ft_config = FINETUNE_DEFAULTS.replace(**({"epochs": args.finetune_epochs} if args.finetune_epochs else {}))
    phantom, seen = [], 0
    for i in range(args.phantom):
        p = make_phantom_loop(loop_seed(args.seed, i), realism=not args.plain_phantom)
        s = suggest_mask(p.loop, "fanfit")
        seen += 1
        if mask_metrics(s.mask, p.truth)["dice"] >= MIN_DICE:
            phantom.append((p.loop, s.mask))
    print(f"phantom: {len(phantom)}/{seen} fanfit suggestions accepted ({time.perf_counter() - t0:.0f} s)", flush=True)

    def score(model, stems) -> dict:
        return score_model(model, stems, loops, truths)

    per_file: dict[str, dict] = {}
    stems = sorted(loops)
    res = pretrain(phantom, config=config, seed=args.seed)
    per_file["phantom-only"] = score(res.model, stems)
    if args.save_models:
        save_model(res.model, args.save_models / "phantom-only", res.history)
    info = {"phantom_accepted": len(phantom), "phantom_seen": seen, "phantom_realism": not args.plain_phantom,
            "pretrain_config": config.to_dict(), "finetune_config": ft_config.to_dict(),
            "phantom_only_train_seconds": res.metrics["seconds"], "folds": []}
    print(f"phantom-only model: {np.mean([v['dice'] for v in per_file['phantom-only'].values()]):.3f}", flush=True)

    per_file["method"] = {}
    for k, held_out in enumerate(folds_by_source(stems, N_FOLDS)):
        train = [s for s in stems if s not in held_out]
        accepted = [(loops[s], suggestions[s]) for s in train
                    if mask_metrics(suggestions[s], truths[s])["dice"] >= MIN_DICE]
        human = [(loops[s], truths[s]) for s in train[:MAX_HUMAN]]
        base = pretrain(phantom + accepted, config=config, seed=args.seed)
        tuned = finetune(base.model, human, config=ft_config, seed=args.seed)
        per_file["method"].update(score(tuned.model, held_out))
        if args.save_models:
            save_model(tuned.model, args.save_models / f"fold{k}", tuned.history)
        info["folds"].append({"held_out": held_out, "accepted_auto_masks": len(accepted), "human_masks": len(human),
                              "pretrain_seconds": base.metrics["seconds"], "finetune_seconds": tuned.metrics["seconds"]})
        print(f"fold {k}: {np.mean([per_file['method'][s]['dice'] for s in held_out]):.3f} on {len(held_out)} files "
              f"({len(accepted)} accepted auto masks, {len(human)} human)", flush=True)
    info["seconds"] = round(time.perf_counter() - t0, 1)
    info["torch_threads"] = torch.get_num_threads()
    return {"per_file": per_file, "info": info}


if __name__ == "__main__":
    raise SystemExit(main())
