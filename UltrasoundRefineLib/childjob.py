"""A command-line run in a child process that a GUI polls, and that Cancel really stops.

The Slicer panel starts ``ultrasound-refine`` through ``PythonSlicer``: a launcher that starts the real
Python as its own child and does not forward signals, so terminating the launcher leaves the worker
running (and holding the GPU). :class:`ChildJob` therefore stops a run in two steps: a ``stop`` line on
stdin, which the launcher does forward and ``train --stop-on-stdin`` honours (checkpoint kept), then,
if the run has not ended after a grace period, the whole process tree is killed. Output is read by a
thread into a queue, so the GUI thread only polls and never blocks. No Qt here: the panel polls with a
``qt.QTimer``; the tests drive the same class with real processes.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from typing import Optional, Sequence

#: How long a run may take to save its checkpoint and exit after "stop" before its tree is killed.
STOP_GRACE_S = 30.0


class ChildJob:
    """``program args...`` with stdout and stderr merged, read line by line off the calling thread."""

    def __init__(self, program: str, args: Sequence[str], *, env: Optional[dict] = None, cwd=None):
        self.command = [str(program), *map(str, args)]
        environment = dict(os.environ)
        environment.update(env or {})
        self.process = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=environment, cwd=None if cwd is None else str(cwd), bufsize=1, text=True,
            encoding="utf-8", errors="replace",
            # no console window popping up on Windows
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
        )
        self.pid = self.process.pid
        self.stopRequestedAt: Optional[float] = None
        self.killed = False
        self._lines: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"childjob-{self.pid}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\r\n"))
        self.process.stdout.close()

    def lines(self) -> list[str]:
        """The output lines that came since the last call (never blocks)."""
        out = []
        while True:
            try:
                out.append(self._lines.get_nowait())
            except queue.Empty:
                return out

    def poll(self) -> Optional[int]:
        """The exit code once the process has ended and all of its output has been read, else None.

        Past the grace period after :meth:`stop`, the process tree is killed here."""
        if self.stopRequestedAt is not None and not self.killed and self.process.poll() is None:
            if time.monotonic() - self.stopRequestedAt > STOP_GRACE_S:
                self.kill()
        code = self.process.poll()
        if code is None or self._reader.is_alive():
            return None
        return code

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Ask the run to stop: a "stop" line on its stdin, then stdin closed (both reach the worker
        through PythonSlicer); :meth:`poll` kills the tree if it is still there after the grace period."""
        if self.stopRequestedAt is None:
            self.stopRequestedAt = time.monotonic()
        try:
            self.process.stdin.write("stop\n")
            self.process.stdin.flush()
            self.process.stdin.close()
        except (OSError, ValueError):  # already gone, or stdin already closed
            pass

    def kill(self) -> None:
        """Kill the process and every process it started, at once."""
        self.killed = True
        kill_tree(self.pid)

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """Block until :meth:`poll` has an exit code (tests and scripts; the GUI polls instead)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            code = self.poll()
            if code is not None:
                return code
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(0.05)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...), deepest last."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            return [p.pid for p in psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
    if os.name == "nt":  # taskkill /T walks the tree itself
        return []
    # POSIX without psutil: one `ps` listing of (pid, parent pid), walked from pid down
    listing = subprocess.run(["ps", "-A", "-o", "pid=,ppid="], capture_output=True, text=True, check=False).stdout
    children: dict[int, list[int]] = {}
    for row in listing.splitlines():
        parts = row.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            children.setdefault(int(parts[1]), []).append(int(parts[0]))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(0), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid: int) -> None:
    """Kill ``pid`` and all its descendants (listed first, so none is re-parented away unseen)."""
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(pid)], capture_output=True, check=False)
        return
    for target in [*descendants(pid), pid]:
        try:
            os.kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
