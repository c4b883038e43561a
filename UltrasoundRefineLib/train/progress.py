"""Training progress for people and for programs.

:func:`json_lines` writes each event as one JSON line (what Slicer's QTimer and the experiment
runner read from a child process); :class:`ProgressBar` draws the same events as a one-line bar on a
terminal (a plain line per epoch when the stream is not a terminal).
"""

from __future__ import annotations

import json
import sys
from typing import IO, Callable


def json_lines(stream: IO[str] | None = None) -> Callable[[dict], None]:
    """An events callback printing one JSON object per line, flushed at once."""
    out = stream or sys.stdout

    def emit(event: dict) -> None:
        out.write(json.dumps(event, separators=(",", ":"), default=str) + "\n")
        out.flush()

    return emit


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class ProgressBar:
    """``epoch 7/40 [#######.............] loss 0.081  val Dice 0.962  03:12 elapsed, ETA 05:40``"""

    def __init__(self, stream: IO[str] | None = None, width: int = 24):
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.epochs = None
        self.steps = None
        self._open_line = False

    def _write_line(self, text: str, final: bool) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + text + ("\n" if final else ""))
            self._open_line = not final
        else:
            if final:
                self.stream.write(text + "\n")
        self.stream.flush()

    def _bar(self, epoch: int, step: int) -> str:
        if not self.epochs or not self.steps:
            return ""
        frac = min(1.0, ((epoch - 1) * self.steps + step) / (self.epochs * self.steps))
        filled = int(round(frac * self.width))
        return "[" + "#" * filled + "." * (self.width - filled) + "]"

    def __call__(self, e: dict) -> None:
        kind = e.get("event")
        if kind == "start":
            self.epochs, self.steps = e.get("epochs"), e.get("steps_per_epoch")
            self._write_line(
                f"{e.get('stage')} ({e.get('strategy')}) on {e.get('device')}{' with AMP' if e.get('amp') else ''}: "
                f"{e.get('n_train')} training, {e.get('n_val')} validation examples, up to {self.epochs} epochs",
                True,
            )
        elif kind in ("step", "epoch"):
            epoch, step = int(e.get("epoch") or 0), int(e.get("step") or 0)
            text = f"epoch {epoch}/{self.epochs} {self._bar(epoch, step)} loss {e.get('loss'):.4f}"
            if e.get("val_dice") is not None:
                text += f"  val Dice {e['val_dice']:.4f}"
            text += f"  {_duration(e.get('elapsed_s'))} elapsed, ETA {_duration(e.get('eta_s'))}"
            self._write_line(text, final=(kind == "epoch" and not self.tty))
        elif kind == "resume":
            self._write_line(f"resuming after epoch {e.get('epoch')} from the checkpoint", True)
        elif kind == "warning":
            self._write_line(f"warning: {e.get('message')}", True)
        elif kind == "early_stop":
            self._write_line(f"early stop at epoch {e.get('epoch')}: best validation Dice at epoch {e.get('best_epoch')}", True)
        elif kind == "stopped":
            self._write_line(f"stopped after epoch {e.get('epoch')}; the checkpoint is kept, run the same command to resume", True)
        elif kind == "done":
            vd = e.get("val_dice")
            msg = f"done in {_duration(e.get('elapsed_s'))}: best epoch {e.get('best_epoch')}"
            if vd is not None:
                msg += f", validation Dice {vd:.4f}"
            if e.get("test_dice") is not None:
                msg += f", test Dice {e['test_dice']:.4f}"
            if e.get("model"):
                msg += f"; model {e.get('model_id')} saved to {e['model']}"
            self._write_line(msg, True)
