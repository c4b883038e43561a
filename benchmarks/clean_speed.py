"""How fast is ``clean``? Loops per second against the floor: plain decode + encode of the same files.

    python benchmarks/clean_speed.py [--n 10] [--seed 0] [--repeats 3] [--devset [DIR]] [--out benchmarks/results/clean_speed.json]

The floor reads each DICOM with pydicom, decodes its pixels and writes them back uncompressed
(Explicit VR Little Endian): what any cleaner that keeps the pixels must do at least. ``clean`` adds
the mask, the masking, de-identification, the manifest and atomic writes; it is timed three ways:
with masks given (``--masks``: the cleaning alone), with ``threshold`` and with ``fanfit`` masks
(each includes finding the region). On ``n`` phantom loops (US multi-frame, 12 frames of 240 x 320);
each timing is the best of ``repeats`` runs (fanfit: one run; the floor and ``--masks`` alternated),
in wall and in CPU seconds, on one CPU thread; then the median milliseconds per phantom loop of each
step ``--masks`` takes (where the time beyond the floor goes). ``--devset``: also the dev set's DICOM
files (eight encodings, most compressed) with their reference masks, floor and clean alternated, best
of ``repeats`` each. Writes JSON with the machine named.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pydicom  # noqa: E402

from UltrasoundRefineLib.atomic import atomic_write_text  # noqa: E402
from UltrasoundRefineLib.clean import Quarantine, clean, folder_source, method_source  # noqa: E402
from UltrasoundRefineLib.io.dicom import _quiet  # noqa: E402
from UltrasoundRefineLib.machine import cpu_model  # noqa: E402
from UltrasoundRefineLib.phantom.dicom import write_phantom_set  # noqa: E402

DEVSET = Path(__file__).resolve().parents[2] / "shared" / "devset"


def floor(files: list[Path], out: Path) -> None:
    """Decode + encode, nothing else: the decoded pixels written back uncompressed, little endian.
    pydicom's warnings are silenced as the readers silence them (logging one per frame costs time)."""
    with _quiet():
        for path in files:
            _decode_encode(path, out)


def _decode_encode(path: Path, out: Path) -> None:
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    colour = ds.SamplesPerPixel == 3
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.set_pixel_data(arr, "RGB" if colour else ds.PhotometricInterpretation, 8 if colour else int(ds.BitsStored),
                      generate_instance_uid=False)
    pydicom.dcmwrite(out / path.name, ds, implicit_vr=False, little_endian=True, force_encoding=True)


def _clean_files(files: list[Path], out: Path, source) -> None:
    with contextlib.redirect_stderr(io.StringIO()):
        clean(files, out, source, progress=False, quarantine=Quarantine(0.0, 0.0, 1.0))


def _megapixels(path: Path) -> float:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return int(ds.get("NumberOfFrames", 1) or 1) * int(ds.Rows) * int(ds.Columns) / 1e6


def _code_version() -> dict:
    """The commit measured, and whether the working tree differed from it (others' edits in progress)."""
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True,
                               text=True).stdout.split("\n")
        return {"commit": head, "modified_files": sorted(line[3:] for line in dirty if line.strip())}
    except OSError:
        return {"commit": None}


def best_of(repeats: int, run) -> tuple[float, float]:
    """``(wall, cpu)`` seconds, the least of each over ``repeats`` runs. CPU time (user + system, this
    process) is what a run costs when other work shares the machine; wall time also counts waiting,
    for the disk among others (clean's fsync)."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), _cpu_seconds()
        run()
        wall.append(time.perf_counter() - start)
        cpu.append(_cpu_seconds() - start_cpu)
    return min(wall), min(cpu)


def _cpu_seconds() -> float:
    return time.process_time()  # user + system of this process, finer than os.times' clock ticks


def stage_milliseconds(files: list[Path], masks: Path, out: Path, repeats: int) -> dict:
    """Median milliseconds per loop of each step ``clean --masks`` takes on one DICOM, beside the floor's
    decode + encode of the same file: where the time beyond the floor goes."""
    from UltrasoundRefineLib.atomic import atomic_write
    from UltrasoundRefineLib.clean.deid import Deidentifier
    from UltrasoundRefineLib.clean.export import _complete_file_meta
    from UltrasoundRefineLib.clean.pixels import mask_pixels, store_pixels
    from UltrasoundRefineLib.io.dicom import read_dicom_source
    from UltrasoundRefineLib.io.images import file_sha256_key

    source, deidentify, taken = folder_source(masks), Deidentifier(), {}

    def timed(step: str, run):
        start = time.perf_counter()
        result = run()
        taken.setdefault(step, []).append(time.perf_counter() - start)
        return result

    def write(ds, name, atomic):
        save = lambda target: pydicom.dcmwrite(target, ds, implicit_vr=False, little_endian=True, force_encoding=True)  # noqa: E731
        atomic_write(out / name, save) if atomic else save(out / name)

    with _quiet():
        for _ in range(repeats):
            for path in files:
                timed("floor: decode + encode", lambda: _decode_encode(path, out))
                key = timed("hash (names the output)", lambda: file_sha256_key(path))
                loop, ds, pixels = timed("read + decode", lambda: read_dicom_source(path, key))
                mask = timed("read the mask file", lambda: source(loop)).mask
                masked = timed("mask multiply", lambda: mask_pixels(pixels, mask))
                timed("store pixels", lambda: store_pixels(ds, masked, loop.meta, path))
                timed("de-identify", lambda: deidentify(ds))
                _complete_file_meta(ds)
                # one file per input, as the floor writes them (rewriting one file would wait on its pages)
                timed("write, atomic + fsync", lambda: write(ds, f"atomic-{path.name}", True))
                timed("(the same write, plain)", lambda: write(ds, f"plain-{path.name}", False))
    return {step: round(1000 * sorted(t)[len(t) // 2], 2) for step, t in taken.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--devset", type=Path, nargs="?", const=DEVSET, default=None,
                    help=f"also time the dev set's DICOM files with their masks (default folder: {DEVSET})")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "clean_speed.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_phantom_set(root / "phantom", n=args.n, seed=args.seed)
        files = sorted((root / "phantom" / "loops").glob("*.dcm"))

        def fresh(name: str) -> Path:
            out = root / name
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            return out

        def run_clean(source, name):
            with contextlib.redirect_stderr(io.StringIO()):
                clean([root / "phantom" / "loops"], fresh(name), source, progress=False)

        # alternated, best of each: on a shared machine a slow spell then costs both sides alike
        masks = folder_source(root / "phantom" / "truth")
        seconds = {"floor (decode + encode)": (float("inf"),) * 2, "clean --masks": (float("inf"),) * 2}
        for _ in range(args.repeats):
            for label, run in (("floor (decode + encode)", lambda: floor(files, fresh("floor"))),
                               ("clean --masks", lambda: run_clean(masks, "clean"))):
                seconds[label] = tuple(map(min, seconds[label], best_of(1, run)))
        for label, method in (("clean --method threshold", "threshold"), ("clean --method fanfit", "fanfit")):
            # fanfit's seconds per loop dwarf everything else: once is enough to read its ratio
            repeats = 1 if method == "fanfit" else args.repeats
            seconds[label] = best_of(repeats, lambda: run_clean(method_source(method), "clean"))
        exported = sum(1 for _ in (root / "clean").glob("*.dcm"))
        stages = stage_milliseconds(files, root / "phantom" / "truth", fresh("stages"), args.repeats)
        devset = None
        if args.devset is not None:
            real = sorted((args.devset / "files").glob("*.dcm"))
            # the first pass reads 90 MB from disk and loads the decoders (RLE, JPEG, JPEG 2000): not measured
            floor(real, fresh("floor"))
            pairs = []  # (floor, clean) of each round, each (wall, cpu)
            for _ in range(args.repeats):
                masks = folder_source(args.devset / "masks")
                pairs.append((best_of(1, lambda: floor(real, fresh("floor"))),
                              best_of(1, lambda: _clean_files(real, fresh("clean"), masks))))
            real_floor = tuple(min(f[i] for f, _ in pairs) for i in (0, 1))
            real_clean = tuple(min(c[i] for _, c in pairs) for i in (0, 1))
            devset = {"n_files": len(real), "megapixel_frames": round(sum(_megapixels(p) for p in real), 1),
                      "floor_seconds": round(real_floor[0], 2), "clean_masks_seconds": round(real_clean[0], 2),
                      "ratio_to_floor": round(real_clean[0] / real_floor[0], 2),
                      "floor_cpu_seconds": round(real_floor[1], 2), "clean_masks_cpu_seconds": round(real_clean[1], 2),
                      "cpu_ratio_to_floor": round(real_clean[1] / real_floor[1], 2),
                      # one lucky round of the floor moves a ratio of bests; the median round's ratio less so
                      "round_ratios_wall": [round(c[0] / f[0], 2) for f, c in pairs],
                      "median_round_ratio_wall": round(statistics.median(c[0] / f[0] for f, c in pairs), 2),
                      "median_round_ratio_cpu": round(statistics.median(c[1] / f[1] for f, c in pairs), 2)}

    base, base_cpu = seconds["floor (decode + encode)"]
    results = {label: {"seconds": round(s, 3), "loops_per_s": round(args.n / s, 2), "ratio_to_floor": round(s / base, 2),
                       "cpu_seconds": round(c, 3), "cpu_ratio_to_floor": round(c / base_cpu, 2)}
               for label, (s, c) in seconds.items()}
    report = {
        "benchmark": "clean_speed",
        "command": "python benchmarks/clean_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "n_loops": args.n, "seed": args.seed, "repeats": args.repeats, "frames_per_loop": 12, "frame_size": [240, 320],
        "exported_by_the_last_clean": exported,
        "code": _code_version(),
        "results": results,
        "phantom_ms_per_loop_by_step": stages,
        "devset_dicom": devset,
        "machine": {"platform": platform.platform(), "processor": cpu_model(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version(), "pydicom": pydicom.__version__},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"{args.n} phantom loops, best of {args.repeats}, on {cpu_model()}, {os.cpu_count()} CPUs")
    for label, r in results.items():
        print(f"  {label:28s} {r['seconds']:7.2f} s  {r['loops_per_s']:6.1f} loops/s  x{r['ratio_to_floor']:.2f} the floor"
              f"  (CPU time x{r['cpu_ratio_to_floor']:.2f})")
    print("  ms per phantom loop: " + ", ".join(f"{step} {ms}" for step, ms in stages.items()))
    if devset:
        print(f"  dev set, {devset['n_files']} DICOM files: floor {devset['floor_seconds']} s, clean --masks "
              f"{devset['clean_masks_seconds']} s, x{devset['ratio_to_floor']} the floor "
              f"(CPU time x{devset['cpu_ratio_to_floor']}; median round x{devset['median_round_ratio_wall']}, "
              f"CPU x{devset['median_round_ratio_cpu']})")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
