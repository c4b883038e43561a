"""Work that must not block the GUI thread and touches neither Qt nor MRML (an auto-mask of a loop
already read into numpy): one call in a daemon thread, which the GUI polls with a timer and whose result
it applies on its own thread. Daemon, so that closing Slicer does not wait for a result nobody needs.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Callable, Optional


class BackgroundCall:
    """``func(*args, **kwargs)`` in a daemon thread; :meth:`done` never blocks, :meth:`result` re-raises
    what the call raised."""

    def __init__(self, func: Callable, *args, name: str = "background-call", **kwargs):
        self._future: Future = Future()

        def run() -> None:
            if not self._future.set_running_or_notify_cancel():
                return
            try:
                self._future.set_result(func(*args, **kwargs))
            except BaseException as error:  # handed to whoever asks for the result
                self._future.set_exception(error)

        self.thread = threading.Thread(target=run, name=name, daemon=True)
        self.thread.start()

    def done(self) -> bool:
        return self._future.done()

    def result(self, timeout: Optional[float] = None):
        """The call's return value (waits up to ``timeout`` seconds; None: until it is there)."""
        return self._future.result(timeout)
