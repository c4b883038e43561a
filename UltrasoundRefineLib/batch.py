"""Run a mask producer over many loops: the shared contract of ``automask`` and ``predict``.

For every input loop it writes ``OUT/<stem>.nrrd`` (one ``(H, W)`` mask on the loop's grid) and, at
the end, ``OUT/summary.json``. A bad input is reported (one line on stderr, an entry in the summary)
and the others are still processed; the exit code is 2 when anything failed, else 0. Each loop is one
task of an executor (:mod:`UltrasoundRefineLib.executor`): this process by default, or a Dask cluster's
workers, which then need a picklable producer and the same paths (a shared filesystem). Progress
shows as :mod:`UltrasoundRefineLib.progress` does (one line in place on a terminal, a line per loop else).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from UltrasoundRefineLib import __version__
from UltrasoundRefineLib.automask import MaskSuggestion
from UltrasoundRefineLib.atomic import atomic_write_text
from UltrasoundRefineLib.errors import InputError, OutputError, UltrasoundRefineError
from UltrasoundRefineLib.io import find_loops, loop_stem, read_loop, write_mask
from UltrasoundRefineLib.loop import Loop
from UltrasoundRefineLib.progress import Progress

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from UltrasoundRefineLib.executor import Executor

Producer = Callable[[Loop], MaskSuggestion]


@dataclass
class BatchResult:
    done: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 2 if self.failed else 0


def ensure_writable_dir(out_dir: Path) -> None:
    """Fail before any work when the output folder cannot be created or written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(out_dir, f"cannot write to this output folder ({e.strerror or e})") from None


def _display_name(path: Path, inputs: list[Path]) -> str:
    """The input's path relative to the folder it was found in (or its file name): enough to find the
    file, without repeating the caller's absolute folder names in what we write."""
    for root in inputs:
        if root.is_dir():
            try:
                return str(path.relative_to(root))
            except ValueError:
                continue
    return path.name


def batch_executor(spec: str | None, workers: int, device: str | None = None) -> "Executor":
    """What runs a batch command's loops: ``--workers`` processes here (1: this process), or a Dask
    cluster, which has its own workers. With a ``device`` (as asked for) that names several GPUs
    (``auto``, ``cuda``), the workers take them in turn (worker i -> GPU i % GPUs), not all the first."""
    from UltrasoundRefineLib.executor import ExecutorError, executor_from_spec, machine_gpus

    if workers < 1:
        raise ExecutorError(f"--workers must be at least 1 (got {workers})")
    if workers > 1 and (spec or "local").strip() != "local":
        raise ExecutorError("--workers is for --executor local (a Dask cluster's workers are its own)")
    # each worker process gets its share of the cores (executor.threads_per_run)
    return executor_from_spec(spec, slots=workers, threads=None, gpus=machine_gpus(device) if device else 0)


def run_batch(
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    producer_name: str,
    produce: Producer,
    *,
    progress: bool = True,
    extra_summary: dict | None = None,
    executor: "Executor | None" = None,
) -> BatchResult:
    from UltrasoundRefineLib.executor import InlineExecutor

    executor = executor or InlineExecutor()
    out_dir = Path(out_dir)
    inputs = [Path(p) for p in inputs]
    ensure_writable_dir(out_dir)
    found = find_loops(inputs)
    result = BatchResult(skipped=[_display_name(p, inputs) for p in found.skipped])
    total = len(found.files)
    shown = Progress(total, enabled=progress)

    def fail(error: UltrasoundRefineError, name: str) -> None:
        shown.message(f"ultrasound-refine: error: {error}")
        result.failed.append({"file": name, "error": getattr(error, "reason", str(error))})

    for error in found.errors:
        fail(error, _display_name(Path(error.path), inputs))

    stems: dict[str, str] = {}
    entries: dict[int, dict] = {}
    running: dict = {}

    def collect(fut) -> None:
        i, path, name = running.pop(fut)
        try:
            entry = fut.result()
        except Exception as e:  # the worker was lost for good (Dask gave up rescheduling the loop)
            entry = InputError(path, f"{producer_name} failed: {type(e).__name__}: {e}")
        if isinstance(entry, UltrasoundRefineError):
            fail(entry, name)
            shown.loop_done()
            return
        entries[i] = entry = {"file": name, **entry}
        shown.loop_done(f"[{i}/{total}] {entry['stem']}: quality {entry['quality']:.2f}, "
                        f"mask {entry['mask_fraction']:.0%} of the image")

    for i, path in enumerate(found.files, 1):
        name = _display_name(path, inputs)
        stem = loop_stem(path)
        if stem in stems:
            fail(InputError(path, f"another input ({stems[stem]}) has the same name stem {stem!r}; "
                                  "outputs are named by stem, rename one"), name)
            shown.loop_done()
            continue
        stems[stem] = name
        # a few loops queued per worker: busy workers, and progress lines as loops finish
        while len(running) >= 2 * executor.slots:
            for fut in wait(list(running), return_when=FIRST_COMPLETED).done:
                collect(fut)
        task_path, mask_path = path, out_dir / f"{stem}.nrrd"
        if executor.remote:  # a worker's working folder is not ours
            task_path, mask_path = task_path.absolute(), mask_path.absolute()
        running[executor.submit(produce_loop, produce, producer_name, str(task_path), str(mask_path))] = (i, path, name)
        for fut in [f for f in running if f.done()]:
            collect(fut)
    for fut in wait(list(running)).done:
        collect(fut)
    shown.close()
    result.done = [entries[i] for i in sorted(entries)]  # input order, however the loops finished

    summary = {
        "tool": "ultrasound-refine",
        "version": __version__,
        "method": producer_name,
        **(extra_summary or {}),
        "n_done": len(result.done),
        "n_failed": len(result.failed),
        "loops": result.done,
        "failed": result.failed,
        "skipped": result.skipped,
    }
    _write_json(out_dir / "summary.json", summary)
    return result


def produce_loop(produce: Producer, producer_name: str, path: str, mask_path: str) -> dict | UltrasoundRefineError:
    """One loop, in this process or a worker: read it, make its mask, write it; the summary entry, or
    the loop's failure as a value (a failing loop is not worth another worker's attempt)."""
    start = time.perf_counter()
    try:
        loop = read_loop(path)
        suggestion = produce(loop)
        write_mask(suggestion.mask, Path(mask_path), like=loop)
    except UltrasoundRefineError as e:
        return e
    except Exception as e:  # a bug or numerical failure on one loop must not lose the others
        log.debug("failure on %s", path, exc_info=True)
        return InputError(path, f"{producer_name} failed: {type(e).__name__}: {e}")
    return {
        "stem": Path(mask_path).name[: -len(".nrrd")],
        "mask": Path(mask_path).name,
        "method": suggestion.method,
        "quality": round(float(suggestion.quality), 4),
        "mask_fraction": round(float(suggestion.mask.mean()), 4),
        "frames": loop.n_frames,
        "shape": list(loop.shape),
        "source_key": loop.source_key,
        "seconds": round(time.perf_counter() - start, 3),
    }


def _write_json(path: Path, data: dict) -> None:
    try:
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    except OSError as e:
        raise OutputError(path, f"cannot write the summary ({e.strerror or e})") from None
