"""The report's figures as PNG bytes, drawn with matplotlib's object API on an Agg canvas.

No pyplot and no ``matplotlib.use``: the figures never touch the global backend, so the report can
be drawn inside Slicer (which has its own) or on a headless server alike. matplotlib is imported
inside the functions, never when the library is imported.
"""

from __future__ import annotations

import io
import math
import textwrap
from typing import Sequence

import numpy as np

from .model import HIGHER_IS_BETTER, STAGES, ExperimentResult, is_finite
from .text import fmt_value, metric_label

# Okabe-Ito: distinguishable with the common colour-vision deficiencies; the baseline is grey.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")
BASELINE_COLOUR = "#7f7f7f"
PREDICTION_COLOUR = "#FF8C00"
TRUTH_COLOUR = "#00E5FF"
DPI = 110
MAX_OVERLAYS = 24


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def colours(result: ExperimentResult) -> dict[str, str]:
    out, i = {}, 0
    for name in result.condition_names():
        if name == result.baseline:
            out[name] = BASELINE_COLOUR
        else:
            out[name] = PALETTE[i % len(PALETTE)]
            i += 1
    return out


def _wrap(name: str, width: int = 30) -> str:
    """Wrap at spaces only: a condition's name is never cut inside a word."""
    return "\n".join(textwrap.wrap(name, width, break_on_hyphens=False, break_long_words=False)) or name


def _jitter(n: int, width: float = 0.28) -> np.ndarray:
    """Evenly spread, deterministic offsets so that the points of one condition do not overlap."""
    if n <= 1:
        return np.zeros(n)
    return np.linspace(-width / 2, width / 2, n)


def _horizontal() -> dict:
    """``orientation=`` since matplotlib 3.10, ``vert=`` before (deprecated from 3.11)."""
    import matplotlib

    major, minor = (int(x) for x in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


def _strip(ax, result: ExperimentResult, metric: str, names: Sequence[str], colour: dict, *, labels: bool) -> None:
    """Box (quartiles) with every run as a point and the mean as a bar, one row per condition."""
    y = np.arange(len(names))[::-1]
    hidden = []
    for yi, name in zip(y, names):
        vals = np.asarray(result.values(name, metric), dtype=float)
        finite = vals[np.isfinite(vals)]
        if len(finite) < len(vals):
            hidden.append((name, len(vals) - len(finite)))
        if finite.size == 0:
            continue
        c = colour[name]
        if finite.size >= 3:
            ax.boxplot(
                finite, positions=[yi], **_horizontal(), manage_ticks=False, widths=0.55, showfliers=False, patch_artist=True,
                boxprops=dict(facecolor=c, alpha=0.18, edgecolor=c), medianprops=dict(color=c, lw=1.2),
                whiskerprops=dict(color=c), capprops=dict(color=c),
            )
        ax.scatter(finite, yi + _jitter(finite.size), s=26, color=c, edgecolor="white", linewidth=0.6, zorder=3)
        ax.plot([finite.mean()] * 2, [yi - 0.32, yi + 0.32], color="black", lw=2, zorder=4)
    if result.baseline in names:
        base = np.asarray(result.values(result.baseline, metric), dtype=float)
        base = base[np.isfinite(base)]
        if base.size:
            ax.axvline(base.mean(), color=BASELINE_COLOUR, ls=":", lw=1, zorder=1)
    if labels:  # axes sharing y share their tick labels: only the first sets them
        ax.set_yticks(y)
        ax.set_yticklabels([_wrap(n) for n in names])
    ax.set_ylim(-0.6, len(names) - 0.4)
    better = "higher is better" if HIGHER_IS_BETTER.get(metric, True) else "lower is better"
    ax.set_xlabel(f"{metric_label(metric)} per run ({better})")
    ax.grid(axis="x", color="#dddddd", lw=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if hidden:
        text = "; ".join(f"{n}: {k} run(s) not finite, not drawn" for n, k in hidden)
        ax.text(0, -0.02, _wrap(text, 60), transform=ax.transAxes, va="top", fontsize=7, color="#a00000")


def metric_plot(result: ExperimentResult, metric: str | None = None) -> bytes | None:
    """Every run of every condition on the primary metric (Dice): strip + box, mean as a bar."""
    metric = metric or result.metric
    names = [n for n in result.condition_names() if result.runs_of(n)]
    if not names:
        return None
    fig = _figure(8.0, 0.62 * len(names) + 1.5)
    ax = fig.add_subplot()
    _strip(ax, result, metric, names, colours(result), labels=True)
    ax.set_title(
        f"{metric_label(metric)} of every run (dots), mean (black bar), quartiles (box); "
        f"dotted line: baseline mean",
        fontsize=9, loc="left",
    )
    return _png(fig)


def small_multiples(result: ExperimentResult, metrics: Sequence[str] = ("iou", "accuracy", "hd95")) -> bytes | None:
    """The other metrics side by side, same layout as :func:`metric_plot`."""
    names = [n for n in result.condition_names() if result.runs_of(n)]
    metrics = [m for m in metrics if m != result.metric]
    if not names or not metrics:
        return None
    fig = _figure(3.0 * len(metrics) + 1.6, 0.5 * len(names) + 1.4)
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    col = colours(result)
    for i, (ax, m) in enumerate(zip(axes, metrics)):
        _strip(ax, result, m, names, col, labels=i == 0)
        ax.set_title(metric_label(m), fontsize=10)
    return _png(fig)


def _curve(run_history: list[dict]) -> dict[str, list[tuple[float, float, float]]]:
    """Per stage, (x, loss, val_dice) with fine-tuning epochs placed after the pretraining ones."""
    by_stage: dict[str, list[dict]] = {}
    for h in run_history:
        by_stage.setdefault(str(h.get("stage", "scratch")), []).append(h)
    out: dict[str, list[tuple[float, float, float]]] = {}
    offset = 0.0
    for stage in [s for s in STAGES if s in by_stage] + [s for s in by_stage if s not in STAGES]:
        rows = sorted(by_stage[stage], key=lambda h: float(h.get("epoch", 0)))
        pts = []
        for h in rows:
            loss = h.get("loss")
            vd = h.get("val_dice")
            pts.append(
                (
                    offset + float(h.get("epoch", 0)),
                    float(loss) if is_finite(loss) else math.nan,
                    float(vd) if is_finite(vd) else math.nan,
                )
            )
        out[stage] = pts
        if pts:
            offset = max(p[0] for p in pts)
    return out


def training_curves(result: ExperimentResult, columns: int = 4) -> bytes | None:
    """Loss (top row) and validation Dice (bottom row) per epoch, one panel per condition, one line
    per repeat; a dashed line marks where fine-tuning starts."""
    names = [n for n in result.condition_names() if any(r.history for r in result.runs_of(n))]
    if not names:
        return None
    from matplotlib.ticker import MaxNLocator

    col = colours(result)
    chunks = [names[i : i + columns] for i in range(0, len(names), columns)]
    ncols = min(columns, len(names))
    fig = _figure(2.9 * ncols + 0.6, 4.4 * len(chunks))
    grid = fig.subplots(2 * len(chunks), ncols, squeeze=False)
    for ci, chunk in enumerate(chunks):
        for j in range(ncols):
            ax_loss, ax_val = grid[2 * ci, j], grid[2 * ci + 1, j]
            if j >= len(chunk):
                ax_loss.set_visible(False)
                ax_val.set_visible(False)
                continue
            name = chunk[j]
            starts = []
            for run in result.runs_of(name):
                curve = _curve(run.history)
                for stage, pts in curve.items():
                    if not pts:
                        continue
                    x, loss, val = (np.asarray(v) for v in zip(*pts))
                    style = dict(color=col[name], lw=1.1, alpha=0.75)
                    if stage == "pretrain":
                        style.update(ls=(0, (4, 1.5)))
                    ax_loss.plot(x, loss, **style)
                    if np.isfinite(val).any():
                        ax_val.plot(x[np.isfinite(val)], val[np.isfinite(val)], **style)
                if "pretrain" in curve and "finetune" in curve and curve["pretrain"]:
                    starts.append(max(p[0] for p in curve["pretrain"]))
            for ax in (ax_loss, ax_val):
                if starts:
                    ax.axvline(float(np.median(starts)), color="black", ls="--", lw=0.8)
                ax.grid(color="#e5e5e5", lw=0.5)
                for side in ("top", "right"):
                    ax.spines[side].set_visible(False)
            if starts:
                ax_loss.text(float(np.median(starts)), 0.98, " fine-tuning →", transform=ax_loss.get_xaxis_transform(),
                             fontsize=7, va="top")
            ax_loss.set_title(_wrap(name, 30), fontsize=9)
            for ax in (ax_loss, ax_val):
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax_val.set_xlabel("epoch")
            if j == 0:
                ax_loss.set_ylabel("training loss")
                ax_val.set_ylabel("validation Dice")
    fig.suptitle(
        "Training curves: one line per repeat; dashed: pretraining on the auto masks, solid: training on human masks",
        fontsize=10, x=0.01, ha="left",
    )
    return _png(fig)


def _contour(ax, mask: np.ndarray, colour: str, style) -> None:
    """The outline of a mask; padded so that a mask touching the frame edge is closed too."""
    m = np.pad(np.asarray(mask, dtype=float), 1)
    if not (m > 0.5).any():
        return
    h, w = m.shape
    ax.contour(np.arange(-1, w - 1), np.arange(-1, h - 1), m, levels=[0.5], colors=[colour],
               linewidths=1.6, linestyles=style)


def region_view(o) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """What an example panel may show: the frame inside the image region only (the true region, else
    the predicted one), black elsewhere, cropped to the region and the predicted mask with a small
    margin; and the masks cropped alike. Burned-in names, IDs and dates lie outside the region, so
    they never reach a picture."""
    frame, mask = np.asarray(o.frame), np.asarray(o.mask, bool)
    truth = None if o.truth is None else np.asarray(o.truth, bool)
    region = truth if truth is not None and truth.any() else mask
    keep = region[..., None] if frame.ndim == 3 else region
    frame = np.where(keep, frame, 0).astype(frame.dtype)
    both = region | mask
    if not both.any():
        return frame[:1, :1] * 0, mask[:1, :1], None if truth is None else truth[:1, :1]
    rows, cols = np.nonzero(both.any(axis=1))[0], np.nonzero(both.any(axis=0))[0]
    pad = 3
    sl = (slice(max(rows[0] - pad, 0), rows[-1] + pad + 1), slice(max(cols[0] - pad, 0), cols[-1] + pad + 1))
    return frame[sl], mask[sl], None if truth is None else truth[sl]


def overlays(result: ExperimentResult, columns: int = 4) -> bytes | None:
    """Example frames (their image region only, :func:`region_view`) with the predicted region's
    outline (orange) over the true one (cyan, dashed)."""
    items = result.overlays[:MAX_OVERLAYS]
    if not items:
        return None
    from matplotlib.lines import Line2D

    ncols = min(columns, len(items))
    nrows = math.ceil(len(items) / ncols)
    views = [region_view(o) for o in items]
    aspect = max(v[0].shape[0] / max(v[0].shape[1], 1) for v in views)
    fig = _figure(3.1 * ncols, (3.0 * aspect + 0.55) * nrows + 0.35)
    grid = fig.subplots(nrows, ncols, squeeze=False)
    for k, ax in enumerate(grid.flat):
        ax.set_axis_off()
        if k >= len(items):
            continue
        o = items[k]
        frame, mask, truth = views[k]
        if frame.ndim == 2:
            ax.imshow(frame, cmap="gray", vmin=0, vmax=255 if frame.dtype == np.uint8 else None,
                      interpolation="nearest")
        else:
            ax.imshow(frame[..., :3], interpolation="nearest")
        _contour(ax, mask, PREDICTION_COLOUR, "solid")
        if truth is not None:  # on top, dashed: where the two agree, both colours show
            _contour(ax, truth, TRUTH_COLOUR, "dashed")
        dice = f"Dice {fmt_value(o.dice)}" if o.dice is not None and is_finite(o.dice) else "Dice n/a"
        ax.set_title(f"{_wrap(o.condition, 32)}\n{o.stem} · {dice}", fontsize=8)
    handles = [Line2D([], [], color=PREDICTION_COLOUR, lw=2, label="predicted region")]
    if any(o.truth is not None for o in items):
        handles.append(Line2D([], [], color=TRUTH_COLOUR, lw=2, ls="--", label="true region"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False, fontsize=9)
    return _png(fig)
