"""Issue 13: training throughput (images/s) of a plain loop, of the engine, and of concurrent engine runs.

    python benchmarks/gpu_throughput.py                   # on whatever device is here (cuda, mps, cpu)
    python benchmarks/gpu_throughput.py --device cpu --size 64 --steps 4
    python benchmarks/gpu_throughput.py --quick --device cpu --out /tmp/t.json   # a smoke run

Three figures per batch size (default 16 and 64), all on synthetic examples already rendered to the
network's input (random channels, a disc as the label; what the network sees, not what it learns):

- **plain**: the engine's MONAI U-Net (``TrainConfig()``'s network, ``build_network``), its loss and
  its AdamW (``make_optimizer``: fused on CUDA, foreach elsewhere), one fixed batch already on the
  device, nothing else in the loop; float32 (TF32 on CUDA), and bfloat16 autocast where the GPU
  supports it (not on the CPU, where the engine never uses it).
- **engine**: ``train_model`` itself (its augmentation, seeding, per-epoch bookkeeping, CUDA graph and
  precision choice included): one warm-up epoch, then ``--engine-epochs`` timed epochs of ``--steps``
  steps each, timed from the end of one epoch event to the end of the last (each follows a device
  synchronisation). In float32, and on CUDA also as the engine picks the precision by itself.
- **concurrent**: ``--concurrent N`` engine runs (float32) at once in the local executor's worker
  processes (each with its share of the cores); they start timing together after their warm-up epoch
  and the aggregate is all their timed images over the span from the first start to the last end.

Warm-up steps are never timed; CUDA is synchronised before each clock read. Writes
``benchmarks/results/gpu_throughput_<machine-tag>.json`` (``--out`` elsewhere) with the machine named.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning (see train_phantom.py); before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from train_phantom import machine  # noqa: E402  (the benchmarks' one description of the machine)

QUICK = {"size": 32, "batches": "2,4", "steps": 2, "warmup": 1, "engine_epochs": 1}


def synthetic_examples(n: int, size: int, channels: int, seed: int = 0):
    """``n`` rendered examples: random channels and a disc label (a ``Prepared``, as the engine takes)."""
    import torch

    from UltrasoundRefineLib.train.data import Prepared

    gen = torch.Generator().manual_seed(seed)
    images = torch.rand((n, channels, size, size), generator=gen)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 3) ** 2).float()
    labels = disc.expand(n, 1, size, size).clone()
    return Prepared(images, labels, [f"synthetic-{seed}-{i}" for i in range(n)], [None] * n)


def config_for(size: int, batch: int, steps: int, epochs: int):
    """The engine's defaults, at this size and batch, with fixed-length epochs and no validation."""
    from UltrasoundRefineLib.train.config import TrainConfig

    return TrainConfig(size=size, batch_size=batch, min_steps_per_epoch=steps, epochs=epochs, val_fraction=0.0,
                       log_every=0)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(dev, size: int, batch: int, steps: int, warmup: int, amp_dtype) -> dict:
    """A bare training loop over the engine's network, loss and optimiser; one batch on the device."""
    import torch

    from UltrasoundRefineLib.train.device import tf32_matmuls
    from UltrasoundRefineLib.train.engine import _loss_fn
    from UltrasoundRefineLib.train.network import build_network, network_kwargs
    from UltrasoundRefineLib.train.strategy import apply_strategy
    from UltrasoundRefineLib.train.trainer import make_optimizer, train_step

    config = config_for(size, batch, steps, 1)
    torch.manual_seed(0)
    net = build_network(config.arch, network_kwargs(config.arch, len(config.inputs), config.net)).to(dev.device)
    setup = apply_strategy(net, config.arch, "full", config.lr, config.encoder_lr_factor)
    setup.set_train_mode(net)
    optimizer = make_optimizer(setup.param_groups, config, dev.device)
    loss_fn = _loss_fn(config.loss)
    data = synthetic_examples(batch, size, len(config.inputs))
    x, y = data.images.to(dev.device), data.labels.to(dev.device)
    with tf32_matmuls(dev.with_precision(amp_dtype)):
        for _ in range(warmup):
            train_step(net, optimizer, None, loss_fn, x, y, amp_dtype)
        sync(dev.device)
        start = time.perf_counter()
        for _ in range(steps):
            train_step(net, optimizer, None, loss_fn, x, y, amp_dtype)
        sync(dev.device)
        seconds = time.perf_counter() - start
    return {"images": batch * steps, "seconds": round(seconds, 4), "images_per_s": round(batch * steps / seconds, 1)}


def engine_run(device: str, size: int, batch: int, steps: int, engine_epochs: int, probe: bool, barrier=None) -> dict:
    """``train_model`` for 1 + ``engine_epochs`` epochs of ``steps`` steps; the epochs after the first
    are timed. ``probe``: let the engine choose the precision (CUDA), else float32. ``barrier``: wait
    there after the warm-up epoch, so that concurrent runs time the same span (wall clock)."""
    import torch

    from UltrasoundRefineLib.train.device import resolve_device
    from UltrasoundRefineLib.train.engine import train_model

    dev = resolve_device(device)
    if not probe:
        dev = dev.with_precision(None)
    marks: list[float] = []

    def on_event(e: dict) -> None:
        if e["event"] != "epoch":
            return
        if len(marks) == 0 and barrier is not None:
            barrier.wait()
        marks.append(time.time())

    config = config_for(size, batch, steps, 1 + engine_epochs)
    result = train_model(synthetic_examples(2 * batch, size, len(config.inputs)), config=config, device=dev,
                         events=on_event, seed=0)
    images = batch * steps * (len(marks) - 1)
    seconds = marks[-1] - marks[0]
    described = result.model.card["training"]
    return {
        "images": images,
        "seconds": round(seconds, 4),
        "images_per_s": round(images / seconds, 1),
        "start": marks[0],
        "end": marks[-1],
        "precision": described["device"]["amp_dtype"] or "float32",
        "precision_probe": described["device"]["precision_probe"],
        "cuda_graph": described["cuda_graph"],
        "torch_threads": torch.get_num_threads(),
    }


def concurrent_engine_runs(runs: int, device: str, size: int, batch: int, steps: int, engine_epochs: int) -> dict:
    """``runs`` float32 engine runs at once in the local executor's worker processes."""
    from multiprocessing import get_context

    from UltrasoundRefineLib.executor import LocalExecutor, machine_gpus

    with get_context("spawn").Manager() as manager:
        barrier = manager.Barrier(runs, timeout=900)
        with LocalExecutor(runs, gpus=machine_gpus(device)) as pool:
            futures = [pool.submit(engine_run, device, size, batch, steps, engine_epochs, False, barrier)
                       for _ in range(runs)]
            each = [f.result() for f in futures]
            name = pool.name
    images = sum(r["images"] for r in each)
    span = max(r["end"] for r in each) - min(r["start"] for r in each)
    return {
        "runs": runs,
        "executor": name,
        "batch": batch,
        "images": images,
        "seconds": round(span, 4),
        "images_per_s": round(images / span, 1),
        "per_run_images_per_s": [r["images_per_s"] for r in each],
    }


def machine_tag(info: dict) -> str:
    gpu = info["gpu"] if info["gpu"] != "none" else "nogpu"
    tag = f"{sys.platform}-{info['cpu_cores']}cpu-{gpu}"
    return re.sub(r"[^a-z0-9.]+", "-", tag.lower()).strip("-")


def table(result: dict) -> str:
    lines = [f"{'what':<34}{'batch':>6}{'images/s':>12}{'engine/plain':>14}"]
    for row in result["plain"]:
        lines.append(f"{'plain ' + row['precision']:<34}{row['batch']:>6}{row['images_per_s']:>12,.1f}{'':>14}")
    for row in result["engine"]:
        ratio = f"{row['ratio_to_plain_float32']:.2f}x"
        label = f"engine {row['mode']} ({row['precision']})"
        lines.append(f"{label:<34}{row['batch']:>6}{row['images_per_s']:>12,.1f}{ratio:>14}")
    c = result["concurrent"]
    if c:
        lines.append(f"{'engine x' + str(c['runs']) + ' processes (aggregate)':<34}{c['batch']:>6}{c['images_per_s']:>12,.1f}")
    for s in result["skipped"]:
        lines.append(f"skipped: {s}")
    return "\n".join(lines)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    ap.add_argument("--size", type=int, default=None, help="network input (default: TrainConfig().size)")
    ap.add_argument("--batches", default="16,64", help="comma-separated batch sizes (default 16,64)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps (plain) and steps per engine epoch")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps before the plain loop's timing")
    ap.add_argument("--engine-epochs", type=int, default=2, help="timed engine epochs after one warm-up epoch")
    ap.add_argument("--concurrent", type=int, default=None,
                    help="engine runs at once (default: executor.concurrent_runs for this machine; 0: skip)")
    ap.add_argument("--quick", action="store_true", help=f"a smoke run: {QUICK}")
    ap.add_argument("--note", default="", help="recorded with the figures (e.g. what else ran on the machine)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            if k != "size" or args.size is None:
                setattr(args, k, v)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from UltrasoundRefineLib.atomic import atomic_write_text
    from UltrasoundRefineLib.executor import concurrent_runs, machine_gpus
    from UltrasoundRefineLib.train.config import TrainConfig
    from UltrasoundRefineLib.train.device import resolve_device

    size = args.size or TrainConfig().size
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    dev = resolve_device(args.device)
    device = str(dev.device)
    if args.concurrent is None:
        args.concurrent = concurrent_runs(machine_gpus(device), os.cpu_count() or 1)
    info = machine()
    info.setdefault("gpu", "none")
    info["device"] = device
    result = {
        "benchmark": "gpu_throughput",
        "machine": info,
        "machine_tag": machine_tag(info),
        "settings": {"size": size, "batches": batches, "steps": args.steps, "warmup": args.warmup,
                     "engine_epochs": args.engine_epochs, "concurrent": args.concurrent, "quick": args.quick,
                     "inputs": list(TrainConfig().inputs), "arch": TrainConfig().arch},
        "note": args.note,
        "plain": [],
        "engine": [],
        "concurrent": None,
        "skipped": [],
    }
    bf16 = dev.device.type == "cuda" and torch.cuda.is_bf16_supported()
    if not bf16:
        result["skipped"].append(f"bfloat16: not measured on {dev.device.type} (the engine trains there in float32)")
    t0 = time.perf_counter()
    for batch in batches:
        for dtype in (None, torch.bfloat16) if bf16 else (None,):
            row = plain_loop(dev, size, batch, args.steps, args.warmup, dtype)
            result["plain"].append({"batch": batch, "precision": "bfloat16" if dtype else "float32", **row})
            print(f"plain batch {batch} {result['plain'][-1]['precision']}: {row['images_per_s']:,.1f} images/s", flush=True)
        plain32 = next(r for r in result["plain"] if r["batch"] == batch and r["precision"] == "float32")
        for mode, probe in (("float32", False), ("default", True)) if dev.device.type == "cuda" else (("float32", False),):
            row = engine_run(device, size, batch, args.steps, args.engine_epochs, probe)
            for k in ("start", "end"):
                row.pop(k)
            row["ratio_to_plain_float32"] = round(row["images_per_s"] / plain32["images_per_s"], 3)
            result["engine"].append({"batch": batch, "mode": mode, **row})
            print(f"engine batch {batch} {mode}: {row['images_per_s']:,.1f} images/s", flush=True)
    if args.concurrent > 0:
        batch = min(batches, key=lambda b: abs(b - TrainConfig().batch_size))  # the engine's own batch
        result["concurrent"] = concurrent_engine_runs(args.concurrent, device, size, batch, args.steps, args.engine_epochs)
    else:
        result["skipped"].append("concurrent runs: --concurrent 0")
    result["seconds"] = round(time.perf_counter() - t0, 1)
    out = args.out or HERE / "results" / f"gpu_throughput_{result['machine_tag']}.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"written: {out}")
    return 0 if all(math.isfinite(r["images_per_s"]) for r in result["plain"] + result["engine"]) else 1


if __name__ == "__main__":
    sys.exit(main())
