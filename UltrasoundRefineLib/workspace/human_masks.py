"""Human masks in and out: import (NRRD label images or Slicer ``.seg.nrrd``), matched to items by file
stem, and export of the best mask each loop has.

A mask that matches no item, or more than one, is reported and left alone: a guessed match would put
a person's careful drawing on the wrong loop.
"""

from __future__ import annotations

import csv
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from UltrasoundRefineLib.atomic import atomic_write
from UltrasoundRefineLib.errors import InputError, OutputError
from UltrasoundRefineLib.io.mask import read_label_image, read_mask
from UltrasoundRefineLib.io.naming import strip_extension
from UltrasoundRefineLib.workspace.errors import WorkspaceError

MASK_EXTENSIONS = (".seg.nrrd", ".nrrd", ".nhdr", ".nii.gz", ".nii", ".mha", ".mhd")


@dataclass
class ImportReport:
    imported: list[tuple[Path, str]] = field(default_factory=list)  # (file, item id)
    unchanged: list[tuple[Path, str]] = field(default_factory=list)  # same pixels as the item's latest human mask
    unmatched: list[Path] = field(default_factory=list)  # no item has this stem
    ambiguous: list[tuple[Path, int]] = field(default_factory=list)  # (file, number of items with this stem)
    errors: list[InputError] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # files in folders that are not masks


@dataclass
class ExportReport:
    written: list[tuple[Path, str, str]] = field(default_factory=list)  # (file, item id, mask source)
    without_mask: list[str] = field(default_factory=list)  # stems of items with no accepted or human mask
    missing: list[WorkspaceError] = field(default_factory=list)  # best masks whose file is gone from the workspace
    manifest: Path | None = None


def mask_stem(path: str | Path) -> str:
    """A mask file's name without its mask extension: it names the loop it belongs to."""
    return strip_extension(path, MASK_EXTENSIONS)


def _is_mask_file(path: Path) -> bool:
    return path.name.lower().endswith(MASK_EXTENSIONS) and not path.name.startswith(".")


def read_segmentation_mask(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """A Slicer ``.seg.nrrd`` as one ``(H, W)`` region mask: the union of its segments.

    Slicer may crop a segmentation to where it has content; ``Segmentation_ReferenceImageExtentOffset``
    then says where the crop lies on the reference image, and we paste it back onto the loop's grid.
    """
    import slicerio

    path = Path(path)
    try:
        seg = slicerio.read_segmentation(str(path))
    except Exception as e:  # slicerio raises IOError, ValueError, KeyError, nrrd errors ...
        raise InputError(path, f"cannot read as a Slicer segmentation ({type(e).__name__}: {e})") from None
    voxels = seg.get("voxels")
    segments = seg.get("segments") or []
    if voxels is None or not segments:
        raise InputError(path, "the segmentation has no segments")
    spatial = voxels.shape[-3:]
    union = np.zeros(spatial, dtype=bool)
    for s in segments:
        label = s.get("labelValue", 1)
        layer = voxels[s.get("layer", 0)] if voxels.ndim == 4 else voxels
        union |= layer == label
    if spatial[2] != 1:
        raise InputError(path, f"the segmentation has {spatial[2]} slices; a region mask is a single slice")
    region = union[:, :, 0].T  # slicerio gives (i, j, k) = (column, row, slice)
    offset = seg.get("referenceImageExtentOffset")
    h, w = shape
    if offset is None:
        if region.shape != (h, w):
            raise InputError(path, f"mask shape {region.shape} does not match the loop ({h}x{w})")
        return region
    oi, oj = int(offset[0]), int(offset[1])
    out = np.zeros((h, w), dtype=bool)
    rows = np.arange(region.shape[0]) + oj
    cols = np.arange(region.shape[1]) + oi
    r_ok = (rows >= 0) & (rows < h)
    c_ok = (cols >= 0) & (cols < w)
    if region[~r_ok, :].any() or region[:, ~c_ok].any():
        raise InputError(path, f"the segmentation reaches outside the loop's grid ({h}x{w})")
    out[np.ix_(rows[r_ok], cols[c_ok])] = region[np.ix_(r_ok, c_ok)]
    return out


def drawn_mask(values: np.ndarray, path: str | Path) -> np.ndarray:
    """A label image as a drawn region mask: 0 outside and one value inside (1, 255, a label number),
    not empty. Anything else is refused, not thresholded: fractional values are a model's probability
    map (0.1 / 0.9 read as ``> 0`` became a 100% mask), more values are an image or a multi-label map,
    and a human mask is the ground truth the method trusts most, so it must be what someone drew."""
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        raise InputError(path, "holds NaN or infinite values: not a drawn mask")
    levels = np.unique(values)
    if np.issubdtype(values.dtype, np.floating) and (levels != np.round(levels)).any():
        raise InputError(path, f"holds fractional values ({levels.min():g} to {levels.max():g}): a probability map, "
                               "not a drawn mask; threshold it (e.g. > 0.5) and import the result")
    if levels.size > 2 or (levels.size == 2 and levels[0] != 0):
        shown = ", ".join(f"{v:g}" for v in levels[:4]) + (", ..." if levels.size > 4 else "")
        raise InputError(path, f"holds {levels.size} values ({shown}); a drawn mask is 0 outside and one value inside")
    mask = values != 0
    if not mask.any():
        raise InputError(path, "is empty (no pixel inside the region): not a mask; nothing imported from it")
    return mask


def read_human_mask(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """Any supported mask file as bool ``(H, W)`` on a loop of ``shape`` (else an InputError naming it)."""
    path = Path(path)
    if path.name.lower().endswith(".seg.nrrd"):
        mask = read_segmentation_mask(path, shape)
        if not mask.any():
            raise InputError(path, "is empty (its segments cover no pixel): not a mask; nothing imported from it")
        return mask
    mask = drawn_mask(read_label_image(path), path)
    if mask.shape != tuple(shape):
        raise InputError(path, f"mask shape {mask.shape} does not match the loop ({shape[0]}x{shape[1]})")
    return mask


def _find_mask_files(inputs) -> tuple[list[Path], list[Path], list[InputError]]:
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files, skipped, errors = [], [], []
    for given in inputs:
        p = Path(given)
        if p.is_dir():
            for root, dirs, names in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    f = Path(root) / name
                    (files if _is_mask_file(f) else skipped).append(f)
        elif p.is_file():
            if _is_mask_file(p):
                files.append(p)
            else:
                errors.append(InputError(p, f"not a mask file (expected one of {', '.join(MASK_EXTENSIONS)})"))
        else:
            errors.append(InputError(p, "no such file or folder"))
    return files, skipped, errors


def import_masks(ws, inputs, user: str | None = None) -> ImportReport:
    """Import human masks, each matched to its item by stem; report what does not match."""
    files, skipped, errors = _find_mask_files(inputs)
    report = ImportReport(errors=errors, skipped=skipped)
    by_stem: dict[str, list] = {}
    for item in ws.items():
        by_stem.setdefault(item.stem, []).append(item)
    per_stem: dict[str, list[Path]] = {}
    for f in files:
        per_stem.setdefault(mask_stem(f), []).append(f)
    latest = ws._latest_human_rows()
    for stem, stem_files in sorted(per_stem.items()):
        if len(stem_files) > 1:
            for f in stem_files:
                report.errors.append(
                    InputError(f, f"{len(stem_files)} mask files name the loop {stem!r}; keep one and import again")
                )
            continue
        f = stem_files[0]
        matches = by_stem.get(stem, [])
        if not matches:
            report.unmatched.append(f)
            continue
        if len(matches) > 1:
            report.ambiguous.append((f, len(matches)))
            continue
        item = matches[0]
        try:
            mask = read_human_mask(f, item.shape)
        except InputError as e:
            report.errors.append(e)
            continue
        row = latest.get(item.id)
        if row is not None:
            try:
                if np.array_equal(read_mask(ws.root / row["mask_path"]), mask):
                    report.unchanged.append((f, item.id))
                    continue
            except InputError:
                pass  # the stored file is unreadable: store this one anew
        # The provenance keeps the file's name only: its folder may name a patient or a person.
        ws.add_human_mask(item.id, mask, source="imported", user=user, provenance={"file": f.name})
        report.imported.append((f, item.id))
    return report


def best_masks(ws) -> dict[str, tuple[str, str]]:
    """Per item id, its best mask (path relative to the workspace) and where it came from: the latest
    human mask, else the accepted suggestion of the latest round (its edited mask where it was edited).
    Items with neither are absent."""
    human = ws._latest_human_rows()
    best: dict[str, tuple[str, str]] = {}
    for item_id, r in ws._accepted_per_item().items():
        if r["decision"] == "edited" and r["human_path"]:
            best[item_id] = (r["human_path"], f"edited:r{r['round']}")
        else:
            best[item_id] = (r["mask_path"], f"suggestion:{r['producer']}:r{r['round']}")
    for item_id, r in human.items():
        best[item_id] = (r["mask_path"], f"human:{r['source']}")
    return best


def export_masks(ws, out_dir: str | Path) -> ExportReport:
    """Write each item's best mask as ``OUT/<stem>.nrrd``: its latest human mask, else its accepted
    suggestion of the latest round; plus ``masks.csv`` saying which was used. Items sharing a stem get
    ``<stem>.<item id>.nrrd``."""
    out = Path(out_dir).expanduser().absolute()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(out, f"cannot create the folder ({e.strerror or e})") from None
    if out == ws.root or ws.root in out.parents:
        raise OutputError(out, "export outside the workspace folder")
    items = ws.items()
    stem_count: dict[str, int] = {}
    for i in items:
        stem_count[i.stem] = stem_count.get(i.stem, 0) + 1
    best = best_masks(ws)
    report = ExportReport()
    rows = []
    for item in items:
        if item.id not in best:
            report.without_mask.append(item.stem)
            continue
        rel, source = best[item.id]
        name = f"{item.stem}.nrrd" if stem_count[item.stem] == 1 else f"{item.stem}.{item.id}.nrrd"
        dst = out / name
        if not (ws.root / rel).is_file():  # the workspace's own file, not the destination, is at fault
            report.missing.append(WorkspaceError(ws.root / rel, f"missing: the mask of loop {item.stem!r} ({source}) "
                                                 "was deleted or moved out of the workspace; not exported"))
            continue
        try:
            atomic_write(dst, lambda tmp: shutil.copyfile(ws.root / rel, tmp))
        except OSError as e:
            raise OutputError(dst, f"cannot write the mask ({e.strerror or e})") from None
        report.written.append((dst, item.id, source))
        rows.append({"file": name, "item_id": item.id, "stem": item.stem, "split": item.split or "", "source": source})
    manifest = out / "masks.csv"

    def write_manifest(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=["file", "item_id", "stem", "split", "source"])
            writer.writeheader()
            writer.writerows(rows)

    try:
        atomic_write(manifest, write_manifest)
    except OSError as e:
        raise OutputError(manifest, f"cannot write the manifest ({e.strerror or e})") from None
    report.manifest = manifest
    return report


__all__ = [
    "ExportReport",
    "best_masks",
    "ImportReport",
    "export_masks",
    "import_masks",
    "mask_stem",
    "read_human_mask",
    "read_segmentation_mask",
]
