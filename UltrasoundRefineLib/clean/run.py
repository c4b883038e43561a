"""A clean run over files and folders: safety checks, resume, quarantine, one line per problem, the manifest.

Every input ends in exactly one manifest row: exported, exists (resume), quarantined (its mask looks
wrong: not written, listed for review), failed (one line on stderr naming the file and the reason) or
skipped (a file in a folder that is not a loop). The run goes on past every bad input.
"""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from UltrasoundRefineLib.batch import _display_name, ensure_writable_dir
from UltrasoundRefineLib.clean.export import clean_file, output_suffix, write_loop_nrrd
from UltrasoundRefineLib.clean.manifest import STATUSES, write_manifest
from UltrasoundRefineLib.clean.masks import LoopMask, MaskSource
from UltrasoundRefineLib.clean.names import FolderNames, output_name
from UltrasoundRefineLib.clean.pixels import mask_pixels
from UltrasoundRefineLib.errors import InputError, OutputError, UltrasoundRefineError
from UltrasoundRefineLib.io import find_loops, write_mask
from UltrasoundRefineLib.io.dicom import _scrub
from UltrasoundRefineLib.io.images import file_sha256_key
from UltrasoundRefineLib.progress import Progress

if TYPE_CHECKING:
    from UltrasoundRefineLib.executor import Executor

log = logging.getLogger(__name__)

MANIFEST = "manifest.csv"


@dataclass(frozen=True)
class Quarantine:
    """When a mask looks wrong enough that a person should see it before the loop is exported: a
    model's uncertainty above ``max_uncertainty``, its producer's quality below ``min_quality`` (masks a
    person drew or accepted have neither), or a mask covering less than ``min_fraction`` or more than
    ``max_fraction`` of the frame (an empty mask exports a black loop; a full one removes nothing).

    A model's quality is 1 - its uncertainty, so ``min_quality`` alone would hold a model's loop back
    only when its variants disagree by more than half; wrong masks of a model come with far smaller
    disagreement, hence a bound of its own (its default and the measurement behind it: the README's
    Clean and export). A review costs less than an export whose mask misses the image or keeps text."""

    min_quality: float = 0.5
    min_fraction: float = 0.05
    max_fraction: float = 0.95
    max_uncertainty: float = 0.05

    def __call__(self, m: LoopMask) -> str | None:
        fraction = float(m.mask.mean())
        if m.uncertainty is not None and m.uncertainty > self.max_uncertainty:
            return (f"model uncertainty {m.uncertainty:.3f} above {self.max_uncertainty:.3f} "
                    f"(its mirrored and gamma-changed predictions disagree)")
        if m.quality is not None and m.quality < self.min_quality:
            return f"mask quality {m.quality:.2f} below {self.min_quality:.2f}"
        if not self.min_fraction <= fraction <= self.max_fraction:
            return f"mask covers {fraction:.1%} of the frame (outside {self.min_fraction:.0%}-{self.max_fraction:.0%})"
        return None


@dataclass
class CleanReport:
    rows: list[dict] = field(default_factory=list)
    manifest: Path | None = None

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.rows)

    @property
    def exit_code(self) -> int:
        return 2 if self.count("failed") else 0

    def summary(self) -> str:
        return ", ".join(f"{self.count(s)} {s}" for s in STATUSES)


@dataclass(frozen=True)
class SourceRecipe:
    """A mask source built in each process that uses it, from a module-level ``build(*args)``: sources are
    closures, which the spawned processes of ``--workers`` cannot be sent (plain pickle), and a model
    source loads its model once per process. :meth:`prepare` builds it here first, so a bad model or
    folder is one line before any loop, and this process uses that one."""

    build: Callable[..., MaskSource]
    args: tuple = ()
    #: each run builds its own (a masks folder read by an earlier run in this process may have changed)
    run: str = field(default_factory=lambda: uuid.uuid4().hex)

    def prepare(self) -> "SourceRecipe":
        object.__setattr__(self, "_here", self.build(*self.args))
        return self

    def __call__(self, loop) -> LoopMask:
        return (self.__dict__.get("_here") or _built_in_worker(self))(loop)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_here"}


_WORKER_SOURCE: tuple[str, MaskSource] | None = None  # a worker process's source for the run it serves


def _built_in_worker(recipe: SourceRecipe) -> MaskSource:
    global _WORKER_SOURCE
    if _WORKER_SOURCE is None or _WORKER_SOURCE[0] != recipe.run:
        _WORKER_SOURCE = (recipe.run, recipe.build(*recipe.args))
    return _WORKER_SOURCE[1]


def check_out_dir(out_dir: Path, inputs: list[Path]) -> None:
    """Refuse an output folder inside an input folder (a later run would read its own outputs, and a
    kept name could land on an input), the folder of an input file, or one that holds an input."""
    out = out_dir.expanduser().resolve()
    for given in inputs:
        p = given.expanduser().resolve()
        if not p.exists():
            continue
        if p.is_dir() and (out == p or p in out.parents):
            raise OutputError(out_dir, f"is inside the input folder {given}: choose an output folder outside the inputs")
        if out == p.parent or out in p.parents:
            raise OutputError(out_dir, f"holds the input {given}: choose an output folder outside the inputs")


def clean_loop(path: Path, out: Path, source: MaskSource, deidentify, quarantine: Quarantine,
               nrrd_base: tuple[Path, str] | None, source_key: str | None = None) -> dict | UltrasoundRefineError:
    """One loop, in this process or a worker: cleaned into ``out`` (and its NRRD copies into
    ``nrrd_base``'s folder under its name); what the manifest row needs, or the loop's failure as a value
    (a failing loop is not worth another worker's attempt). ``source_key``: the input's hash, already
    computed to name the output."""
    try:
        done = clean_file(path, out, source, deidentify, quarantine, source_key)
    except UltrasoundRefineError as e:
        return e
    except Exception as e:  # a bug or numerical failure on one loop must not lose the others
        log.debug("failure on %s", path, exc_info=True)
        # the message may quote a header value: scrubbed as the DICOM reader scrubs its own
        return InputError(path, f"cleaning failed: {type(e).__name__}: {_scrub(e, None)}")
    m = done.mask
    result = {"mask_source": m.source, "quality": None if m.quality is None else round(m.quality, 4),
              "mask_fraction": round(float(m.mask.mean()), 4), "frames": done.n_frames, "held": done.held,
              "nrrd_error": None}
    if nrrd_base and not done.held:
        try:
            _write_nrrd_copies(done, *nrrd_base)
        except UltrasoundRefineError as e:
            result["nrrd_error"] = e
    return result


def _write_nrrd_copies(done, nrrd_dir: Path, base: str) -> None:
    loop, mask = done.loop, done.mask.mask
    write_loop_nrrd(mask_pixels(loop.frames, mask), loop, nrrd_dir / "loops" / f"{base}.nrrd")
    write_mask(mask, nrrd_dir / "masks" / f"{base}.nrrd", like=loop)


def clean(
    inputs,
    out_dir: str | Path,
    source: MaskSource,
    *,
    keep_names: bool = False,
    keep_folders: bool = False,
    resume: bool = False,
    quarantine: Quarantine = Quarantine(),
    seed: str | None = None,
    nrrd: bool = False,
    progress: bool = True,
    executor: "Executor | None" = None,
) -> CleanReport:
    """Clean every loop in ``inputs`` into ``out_dir`` and write ``out_dir/manifest.csv``.

    Output names are the hash of the input's bytes (``<source_key>.dcm``) unless ``keep_names``, which
    keeps each input's path relative to the folder it was found in (the folder structure).
    ``keep_folders``: hashed names below that folder structure, each folder named by a keyed hash of its
    path (:mod:`.names`; the key from ``seed``, so resuming it needs the same ``seed``). ``nrrd``: also
    each exported loop (8-bit frames, masked) and its mask as NRRD for Slicer, ``out_dir/nrrd/loops/``
    and ``out_dir/nrrd/masks/`` (a folder ``--masks`` and ``evaluate`` read), named as the output.
    ``executor`` cleans each loop as a task (default: in this process, one after the other); on a Dask
    cluster the source and the de-identifier travel to the workers (copies of one de-identifier give
    the same replacements), which read and write the same paths (a shared filesystem); to worker
    processes here (``--workers``) the source must pickle: a :class:`SourceRecipe`.
    """
    from UltrasoundRefineLib.clean.deid import Deidentifier
    from UltrasoundRefineLib.executor import InlineExecutor

    executor = executor or InlineExecutor()
    if keep_folders and resume and seed is None and not keep_names:
        raise UltrasoundRefineError("clean: --resume with --keep-folders needs the first run's --seed: the folder "
                                    "names are keyed by that secret (without one, each run draws its own)")

    inputs = [Path(p) for p in inputs]
    out_dir = Path(out_dir)
    check_out_dir(out_dir, inputs)
    ensure_writable_dir(out_dir)
    deidentify = Deidentifier(seed)
    folders = FolderNames(seed) if keep_folders else None
    report = CleanReport()
    found = find_loops(inputs)
    total = len(found.files)
    shown = Progress(total, enabled=progress)

    def row(status: str, key: str = "", **fields) -> dict:
        r = {"source_key": key, "status": status, **fields}
        report.rows.append(r)
        return r

    def fail(error: UltrasoundRefineError, key: str = "") -> None:
        shown.message(f"ultrasound-refine: error: {error}")
        row("failed", key, reason=getattr(error, "reason", str(error)))

    for error in found.errors:
        fail(error)
    for path in found.skipped:
        shown.message(f"ultrasound-refine: skipped {_display_name(path, inputs)}: not a loop")
        row("skipped", reason="not a loop (not DICOM with images, a video or an image format)")
    input_files = {p.resolve() for p in found.files}

    written: dict[Path, str] = {}
    running: dict = {}

    def finish(fut) -> None:
        i, path, name, key, rel, slot = running.pop(fut)
        try:
            done = fut.result()
        except Exception as e:  # the worker was lost for good (Dask gave up rescheduling the loop)
            done = InputError(path, f"cleaning failed: {type(e).__name__}: {_scrub(e, None)}")
        if isinstance(done, UltrasoundRefineError):
            fail(done, key)
            report.rows[slot] = report.rows.pop()  # in the input's place, however the loops finished
            shown.loop_done()
            return
        fields = {k: done[k] for k in ("mask_source", "quality", "mask_fraction", "frames")}
        if done["held"]:
            shown.message(f"ultrasound-refine: quarantined {name}: {done['held']}")
            r = row("quarantined", key, reason=done["held"], **fields)
        else:
            r = row("exported", key, output=rel, **fields)
            if done["nrrd_error"]:
                shown.message(f"ultrasound-refine: error: {done['nrrd_error']}")
                r.update(status="failed", reason=f"exported, but not its NRRD copies: {done['nrrd_error'].reason}")
        report.rows[slot] = report.rows.pop()
        q = "" if fields["quality"] is None else f", quality {fields['quality']:.2f}"
        shown.loop_done(f"[{i}/{total}] {name}: {r['status']} ({fields['mask_source']}{q}, "
                        f"mask {fields['mask_fraction']:.0%})")

    try:
        for i, path in enumerate(found.files, 1):
            name = _display_name(path, inputs)
            try:
                key = file_sha256_key(path)
            except OSError as e:
                fail(InputError(path, f"cannot read the file ({e.strerror or e})"))
                shown.loop_done()
                continue
            suffix = output_suffix(path)
            rel = output_name(name, key, suffix, keep_names=keep_names, folders=folders)
            out = out_dir / rel
            if out.resolve() in input_files:  # belt and braces: check_out_dir already keeps outputs apart
                fail(OutputError(out, "would overwrite an input"), key)
                shown.loop_done()
                continue
            if out in written:
                what = "the same content as" if written[out] == key else "the same output name as"
                shown.message(f"ultrasound-refine: skipped {name}: {what} an earlier input")
                row("skipped", key, output=rel, reason=f"{what} an earlier input")
                shown.loop_done()
                continue
            written[out] = key
            if resume and out.exists():
                row("exists", key, output=rel)
                shown.loop_done()
                continue
            task_path, task_out, nrrd_dir = path, out, out_dir / "nrrd"
            if executor.remote:  # a worker's working folder is not ours
                task_path, task_out, nrrd_dir = path.absolute(), out.absolute(), nrrd_dir.absolute()
            nrrd_base = (nrrd_dir, rel[: -len(suffix)]) if nrrd else None
            # a few loops queued per worker: busy workers, and progress lines as loops finish
            while len(running) >= 2 * executor.slots:
                for fut in wait(list(running), return_when=FIRST_COMPLETED).done:
                    finish(fut)
            report.rows.append(None)  # this loop's row, when it is done
            running[executor.submit(clean_loop, task_path, task_out, source, deidentify, quarantine, nrrd_base, key)] = \
                (i, path, name, key, rel, len(report.rows) - 1)
            for fut in [f for f in running if f.done()]:
                finish(fut)
        for fut in wait(list(running)).done:
            finish(fut)
    finally:
        shown.close()
        # also when interrupted: the rows so far say what was written (a --resume run rebuilds the rest)
        report.rows = [r for r in report.rows if r is not None]  # interrupted: the loops still running
        report.manifest = write_manifest(out_dir / MANIFEST, report.rows)
    return report
