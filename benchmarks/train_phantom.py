"""Issue 4's target: pretrain on accepted threshold masks + fine-tune on a few human masks, on the phantom.

    python benchmarks/train_phantom.py                 # 200 accepted + 10 human, 50 test loops
    python benchmarks/train_phantom.py --quick         # a smaller smoke run
    python benchmarks/train_phantom.py --compare-inputs  # which input channels represent a loop best

Setting: phantom loops (240 x 320, 12 frames) are auto-masked by ``threshold``; a simulated reviewer
accepts a suggestion when its Dice against the truth is at least 0.9 (the paper's quick check) until
200 are accepted. Ten further loops get their true mask as the "human" mask; fifty held-out loops are
the test set. Measured on the test set (Dice on each loop's own grid, MONAI): the threshold masks as
they are, human-only training from scratch, the pretrained model, and pretrain + fine-tune (full, and
the other strategies with --strategies). A model's masks are what ``predict`` writes (test-time
augmentation, then the card's post-processing: the shape fit with the loops' region boxes); each
condition also records ``dice_network_only``, the network's masks before the shape fit. Writes
``benchmarks/results/train_phantom.json`` with the machine named.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

# Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine, spinning threads of two
# processes starve each other (measured: 7 s per step instead of 0.5 s). Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def machine() -> dict:
    import torch

    from UltrasoundRefineLib.machine import cpu_model

    info = {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _make(args):
    """One phantom loop with its threshold suggestion and that suggestion's Dice (worker process)."""
    index, seed = args
    import torch

    torch.set_num_threads(1)
    from UltrasoundRefineLib.automask import suggest_mask
    from UltrasoundRefineLib.metrics import mask_metrics
    from UltrasoundRefineLib.phantom import loop_seed, make_phantom_loop

    p = make_phantom_loop(loop_seed(seed, index))
    suggestion = suggest_mask(p.loop, "threshold")
    dice = mask_metrics(suggestion.mask, p.truth)["dice"]
    return index, p.loop, p.truth, suggestion.mask, dice, p.layout.get("kind")


def build_data(n_accept: int, n_human: int, n_test: int, seed: int, min_dice: float, workers: int) -> dict:
    """Test and human loops first (fixed indices), then the pretraining pool until enough are accepted."""
    t0 = time.perf_counter()
    ctx = mp.get_context("fork")
    with ctx.Pool(workers) as pool:
        fixed = pool.map(_make, [(i, seed) for i in range(n_test + n_human)], chunksize=4)
        test, human = fixed[:n_test], fixed[n_test:]
        accepted, seen, reviewed, next_index = [], [], 0, n_test + n_human
        while len(accepted) < n_accept:
            need = max(8, int((n_accept - len(accepted)) * 1.6))
            batch = pool.map(_make, [(i, seed) for i in range(next_index, next_index + need)], chunksize=4)
            next_index += need
            for item in batch:
                if len(accepted) >= n_accept:
                    break
                reviewed += 1
                seen.append(item)
                if item[4] >= min_dice:
                    accepted.append(item)
    accepted_dice = [a[4] for a in accepted]
    return {
        "test": test,
        "human": human,
        "accepted": accepted,
        "pool": seen,  # every loop the reviewer saw (accepted or not), for the next round
        "reviewed": reviewed,
        "seconds": time.perf_counter() - t0,
        "accepted_label_dice_mean": float(np.mean(accepted_dice)),
        "threshold_test_dice": [t[4] for t in test],
    }


def summary(values) -> dict:
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0, "min": float(v.min()), "n": int(v.size)}


def run(args) -> dict:
    import torch

    from UltrasoundRefineLib.train.data import render_examples
    from UltrasoundRefineLib.train.device import resolve_device
    from UltrasoundRefineLib.train.evaluate import evaluate_model
    from UltrasoundRefineLib.train.model import card_postprocess
    from UltrasoundRefineLib.train.engine import train_model
    from UltrasoundRefineLib.train.finetune import FINETUNE_DEFAULTS, PRETRAIN_DEFAULTS, SCRATCH_DEFAULTS, finetune, pretrain, scratch

    t_start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"benchmark": "train_phantom", "machine": machine(), "args": vars(args)}
    data = build_data(args.n_accept, args.n_human, args.n_test, args.seed, args.min_dice, args.workers)
    result["data"] = {
        "n_accepted": len(data["accepted"]),
        "n_reviewed": data["reviewed"],
        "accept_rate": len(data["accepted"]) / max(1, data["reviewed"]),
        "accepted_label_dice_mean": data["accepted_label_dice_mean"],
        "n_human": len(data["human"]),
        "n_test": len(data["test"]),
        "seconds": round(data["seconds"], 1),
    }
    result["threshold"] = summary(data["threshold_test_dice"])
    print(f"data: {len(data['accepted'])}/{data['reviewed']} accepted, threshold test Dice "
          f"{result['threshold']['mean']:.4f} ({data['seconds']:.0f} s)", file=sys.stderr)

    device = resolve_device(args.device)
    pre_cfg = PRETRAIN_DEFAULTS.replace(**({"epochs": args.pretrain_epochs} if args.pretrain_epochs else {}),
                                        **({"size": args.size} if args.size else {}))
    ft_cfg = FINETUNE_DEFAULTS.replace(**({"epochs": args.finetune_epochs} if args.finetune_epochs else {}))
    if args.finetune_val_fraction is not None:
        ft_cfg = ft_cfg.replace(val_fraction=args.finetune_val_fraction)
    if args.finetune_lr is not None:
        ft_cfg = ft_cfg.replace(lr=args.finetune_lr)
    sc_cfg = SCRATCH_DEFAULTS.replace(**({"epochs": args.scratch_epochs} if args.scratch_epochs else {}))

    t = time.perf_counter()
    size, inputs = pre_cfg.size, pre_cfg.inputs
    pre_samples = render_examples([(a[1], a[3]) for a in data["accepted"]], size, inputs)
    human_samples = render_examples([(h[1], h[2]) for h in data["human"]], size, inputs)
    test_samples = render_examples([(x[1], x[2]) for x in data["test"]], size, inputs, keep_masks=True)
    result["render_seconds"] = round(time.perf_counter() - t, 1)

    def log(e):
        if e["event"] in ("epoch", "early_stop", "done", "warning"):
            print(json.dumps({k: v for k, v in e.items() if v is not None}), file=sys.stderr)

    def score(name, res):
        t = time.perf_counter()
        ev = evaluate_model(res.model, test_samples)
        s = ev["summary"]
        # the network's own masks (holes filled, specks dropped), before the shape fit and the region boxes
        net_only = evaluate_model(res.model, test_samples, postprocess="basic")["summary"]
        entry = {
            "postprocess": card_postprocess(res.model.card)[0],  # what "dice" was scored with (predict's)
            "dice": {"mean": s["dice_mean"], "sd": s["dice_sd"], "min": s["dice_min"], "median": s["dice_median"]},
            "dice_network_only": {"mean": net_only["dice_mean"], "sd": net_only["dice_sd"], "min": net_only["dice_min"]},
            "iou_mean": s["iou_mean"],
            "hd95_mean_px": s["hd95_mean"],
            "uncertainty_vs_dice_spearman": s.get("spearman_uncertainty_vs_dice"),
            "train_seconds": res.metrics["seconds"],
            "eval_seconds": round(time.perf_counter() - t, 1),
            "epochs_run": res.metrics["epochs_run"],
            "best_epoch": res.metrics["best_epoch"],
            "best_val_dice": res.metrics["best_val_dice"],
            "images_per_s": res.metrics["images_per_s"],
            "history": res.history,
        }
        kinds = [x[5] for x in data["test"]]
        entry["dice_by_layout"] = {
            k: round(float(np.mean([r["dice"] for r, kk in zip(ev["per_example"], kinds) if kk == k])), 4)
            for k in sorted(set(kinds))
        }
        entry["n_by_layout"] = {k: kinds.count(k) for k in sorted(set(kinds))}
        result.setdefault("conditions", {})[name] = entry
        print(f"{name}: test Dice {s['dice_mean']:.4f} (sd {s['dice_sd']:.4f}, min {s['dice_min']:.4f}; "
              f"network alone {net_only['dice_mean']:.4f}); "
              f"train {res.metrics['seconds']:.0f} s, {res.metrics['epochs_run']} epochs", file=sys.stderr)

    if args.load_pretrained:  # for experiments on fine-tuning only; the reported run pretrains
        from UltrasoundRefineLib.train.engine import TrainResult
        from UltrasoundRefineLib.train.model import load_model

        base = load_model(args.load_pretrained, device.device)
        pre = TrainResult(model=base, history=[], metrics={"seconds": 0, "epochs_run": 0, "best_epoch": 0,
                                                           "best_val_dice": None, "images_per_s": None})
    else:
        pre = pretrain(pre_samples, config=pre_cfg, seed=args.seed, device=device, events=log,
                       out=args.save_pretrained)
    score("pretrain", pre)
    ft = None
    for strategy in reversed(args.strategies):  # the first strategy last, so `ft` is its model
        ft = finetune(pre.model, human_samples, strategy=strategy, config=ft_cfg, seed=args.seed, device=device, events=log)
        score(f"pretrain+finetune:{strategy}", ft)
    if args.rounds > 1 and args.strategies:
        # Iterative refinement (step 4 -> step 2 -> step 3): the refined model's predictions on the same
        # pool become the next round's suggestions, the simulated reviewer accepts those with Dice >= the
        # bound, the model is trained further on them, then fine-tuned on the human masks again.
        import torch as _torch

        from UltrasoundRefineLib.train.model import mask_from_members, predict_probabilities

        refined = ft
        for rnd in range(2, args.rounds + 1):
            t = time.perf_counter()
            pool = render_examples([(x[1], x[2]) for x in data["pool"]], size, inputs, keep_masks=True)
            accepted = []
            for start in range(0, len(pool), 32):
                chunk = pool[start : start + 32]
                members = predict_probabilities(refined.model, _torch.from_numpy(np.stack([c.image for c in chunk]))).float().cpu()
                for i, c in enumerate(chunk):
                    mask = mask_from_members(members[:, i], c.geometry)
                    from UltrasoundRefineLib.metrics import mask_metrics

                    d = mask_metrics(mask, c.mask)["dice"]
                    if d >= args.min_dice and len(accepted) < args.n_accept:
                        accepted.append((c, mask, d))
            suggest_s = time.perf_counter() - t
            from UltrasoundRefineLib.train.data import Sample
            from UltrasoundRefineLib.train.render import render_mask

            samples = [Sample(c.image, render_mask(m, c.geometry), c.key + f":r{rnd}", c.geometry, c.inputs) for c, m, _ in accepted]
            result.setdefault("rounds", []).append({
                "round": rnd, "n_accepted": len(accepted), "n_reviewed": len(pool),
                "accepted_label_dice_mean": float(np.mean([d for _, _, d in accepted])), "suggest_seconds": round(suggest_s, 1),
            })
            print(f"round {rnd}: {len(accepted)}/{len(pool)} model suggestions accepted, label Dice "
                  f"{result['rounds'][-1]['accepted_label_dice_mean']:.4f}", file=sys.stderr)
            re_cfg = pre_cfg.replace(epochs=args.round_epochs, lr=1e-3)
            pre2 = train_model(samples, None, re_cfg, init_from=refined.model, strategy="full", stage="pretrain",
                               seed=args.seed + rnd, device=device, events=log)
            score(f"round{rnd}:pretrain", pre2)
            refined = finetune(pre2.model, human_samples, strategy=args.strategies[0], config=ft_cfg, seed=args.seed + rnd,
                               device=device, events=log)
            score(f"round{rnd}:pretrain+finetune:{args.strategies[0]}", refined)
    if not args.no_scratch:
        sc = scratch(human_samples, config=sc_cfg, seed=args.seed, device=device, events=log)
        score("scratch (human only)", sc)

    result["device"] = device.describe()
    result["total_seconds"] = round(time.perf_counter() - t_start, 1)
    best = result["conditions"].get(f"pretrain+finetune:{args.strategies[0]}") if args.strategies else None
    if best:
        result["target"] = {
            "refined_dice_mean": best["dice"]["mean"],
            "reaches_0.98": best["dice"]["mean"] >= 0.98,
            "above_threshold": best["dice"]["mean"] > result["threshold"]["mean"],
            "above_scratch": ("scratch (human only)" in result["conditions"]
                              and best["dice"]["mean"] > result["conditions"]["scratch (human only)"]["dice"]["mean"]),
        }
    result["machine"]["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    return result


def compare_inputs(args) -> dict:
    """Same data, same budget, different input channels: which summary of a loop works best."""
    import torch

    from UltrasoundRefineLib.train.data import render_examples
    from UltrasoundRefineLib.train.evaluate import evaluate_model
    from UltrasoundRefineLib.train.finetune import PRETRAIN_DEFAULTS, pretrain

    if args.threads:
        torch.set_num_threads(args.threads)
    data = build_data(args.n_accept, 0, args.n_test, args.seed, 0.0, args.workers)
    train = [(a[1], a[2]) for a in data["accepted"]]  # true masks: isolate the effect of the input
    test = [(x[1], x[2]) for x in data["test"]]
    out = {"benchmark": "train_phantom --compare-inputs", "machine": machine(), "args": vars(args), "results": {}}
    for channels in args.channel_sets:
        inputs = tuple(channels.split(","))
        cfg = PRETRAIN_DEFAULTS.replace(inputs=inputs, epochs=args.pretrain_epochs or 20, **({"size": args.size} if args.size else {}),
                                        augment_strength=args.augment_strength)
        dice = []
        for seed in range(args.repeats):
            res = pretrain(render_examples(train, cfg.size, inputs), config=cfg, seed=seed, device=args.device)
            s = evaluate_model(res.model, render_examples(test, cfg.size, inputs, keep_masks=True))["summary"]
            still = evaluate_model(res.model, [(type(l)(frames=l.frames[:1]), m) for l, m in test])["summary"]
            dice.append((s["dice_mean"], still["dice_mean"], s["dice_min"], res.metrics["seconds"]))
            kinds = [x[5] for x in data["test"]]
            per = evaluate_model(res.model, render_examples(test, cfg.size, inputs, keep_masks=True))["per_example"]
            print({k: round(float(np.mean([r["dice"] for r, kk in zip(per, kinds) if kk == k])), 4) for k in sorted(set(kinds))}, file=sys.stderr)
            print(f"{channels} seed {seed}: test Dice {s['dice_mean']:.4f} (min {s['dice_min']:.4f}), "
                  f"as still frames {still['dice_mean']:.4f}", file=sys.stderr)
        out["results"][channels] = {
            "dice_mean": [d[0] for d in dice],
            "still_frame_dice_mean": [d[1] for d in dice],
            "dice_min": [d[2] for d in dice],
            "train_seconds": [d[3] for d in dice],
        }
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-accept", type=int, default=200)
    p.add_argument("--n-human", type=int, default=10)
    p.add_argument("--n-test", type=int, default=50)
    p.add_argument("--min-dice", type=float, default=0.9, help="the simulated reviewer's bound")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--workers", type=int, default=2, help="processes generating the phantom")
    p.add_argument("--strategies", nargs="*", default=["full"], help="fine-tuning strategies to run")
    p.add_argument("--no-scratch", action="store_true")
    p.add_argument("--pretrain-epochs", type=int)
    p.add_argument("--finetune-epochs", type=int)
    p.add_argument("--scratch-epochs", type=int)
    p.add_argument("--quick", action="store_true", help="60 accepted, 10 human, 20 test, few epochs")
    p.add_argument("--compare-inputs", action="store_true")
    p.add_argument("--channel-sets", nargs="*", default=["max,std,frame", "frame", "max", "max,std", "mean,std,frame"])
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--augment-strength", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=1, help="iterative refinement rounds (1: pretrain + fine-tune once)")
    p.add_argument("--round-epochs", type=int, default=30, help="epochs of further training per extra round")
    p.add_argument("--save-pretrained", type=Path, help="also save the pretrained model folder here")
    p.add_argument("--load-pretrained", type=Path, help="skip pretraining: fine-tune this model (experiments only)")
    p.add_argument("--finetune-val-fraction", type=float, help="override the fine-tuning validation share")
    p.add_argument("--finetune-lr", type=float)
    p.add_argument("--size", type=int, help="network input size (default: the library default)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.quick:
        args.n_accept, args.n_test = 60, 20
        args.pretrain_epochs = args.pretrain_epochs or 10
        args.finetune_epochs = args.finetune_epochs or 10
        args.scratch_epochs = args.scratch_epochs or 10
    if args.compare_inputs:
        result = compare_inputs(args)
        default_out = REPO / "benchmarks" / "results" / "train_phantom_inputs.json"
    else:
        result = run(args)
        default_out = REPO / "benchmarks" / "results" / ("train_phantom_quick.json" if args.quick else "train_phantom.json")
    out = args.out or default_out
    result["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in result["args"].items()}
    from UltrasoundRefineLib.atomic import atomic_write_text

    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
