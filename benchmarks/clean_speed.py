"""How fast is ``clean``? Loops per second against the floor: plain decode + encode of the same files.

    python benchmarks/clean_speed.py [--n 10] [--seed 0] [--repeats 3] [--devset [DIR]] [--out benchmarks/results/clean_speed.json]

The floor reads each DICOM with pydicom, decodes its pixels and writes them back uncompressed
(Explicit VR Little Endian): what any cleaner that keeps the pixels must do at least. ``clean`` adds
the mask, the masking, de-identification, the manifest and atomic writes; it is timed three ways:
with masks given (``--masks``: the cleaning alone), with ``threshold`` and with ``fanfit`` masks
(each includes finding the region). On ``n`` phantom loops (US multi-frame, 12 frames of 240 x 320);
each timing is the best of ``repeats`` runs (fanfit: one run), on one CPU thread. ``--devset``: also
the dev set's DICOM files (eight encodings, most compressed) with their reference masks, best of two.
Writes JSON with the machine named.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pydicom  # noqa: E402

from UltrasoundRefineLib.atomic import atomic_write_text  # noqa: E402
from UltrasoundRefineLib.clean import Quarantine, clean, folder_source, method_source  # noqa: E402
from UltrasoundRefineLib.io.dicom import _quiet  # noqa: E402
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


def best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


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

        seconds = {"floor (decode + encode)": best_of(args.repeats, lambda: floor(files, fresh("floor")))}
        sources = {"clean --masks": folder_source(root / "phantom" / "truth"),
                   "clean --method threshold": method_source("threshold"),
                   "clean --method fanfit": method_source("fanfit")}
        for label, source in sources.items():
            # fanfit's seconds per loop dwarf everything else: once is enough to read its ratio
            repeats = 1 if label.endswith("fanfit") else args.repeats
            seconds[label] = best_of(repeats, lambda: run_clean(source, "clean"))
        exported = sum(1 for _ in (root / "clean").glob("*.dcm"))
        devset = None
        if args.devset is not None:
            real = sorted((args.devset / "files").glob("*.dcm"))
            for path in real:  # the first pass over 90 MB reads them from disk: not what is measured
                path.read_bytes()
            real_floor = best_of(2, lambda: floor(real, fresh("floor")))
            real_clean = best_of(2, lambda: _clean_files(real, fresh("clean"), folder_source(args.devset / "masks")))
            devset = {"n_files": len(real), "megapixel_frames": round(sum(_megapixels(p) for p in real), 1),
                      "floor_seconds": round(real_floor, 2), "clean_masks_seconds": round(real_clean, 2),
                      "ratio_to_floor": round(real_clean / real_floor, 2)}

    base = seconds["floor (decode + encode)"]
    results = {label: {"seconds": round(s, 3), "loops_per_s": round(args.n / s, 2), "ratio_to_floor": round(s / base, 2)}
               for label, s in seconds.items()}
    report = {
        "benchmark": "clean_speed",
        "command": "python benchmarks/clean_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "n_loops": args.n, "seed": args.seed, "repeats": args.repeats, "frames_per_loop": 12, "frame_size": [240, 320],
        "exported_by_the_last_clean": exported,
        "code": _code_version(),
        "results": results,
        "devset_dicom": devset,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version(), "pydicom": pydicom.__version__},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"{args.n} phantom loops, best of {args.repeats}, on {platform.platform()}, {os.cpu_count()} CPUs")
    for label, r in results.items():
        print(f"  {label:28s} {r['seconds']:7.2f} s  {r['loops_per_s']:6.1f} loops/s  x{r['ratio_to_floor']:.2f} the floor")
    if devset:
        print(f"  dev set, {devset['n_files']} DICOM files: floor {devset['floor_seconds']} s, clean --masks "
              f"{devset['clean_masks_seconds']} s, x{devset['ratio_to_floor']} the floor")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
