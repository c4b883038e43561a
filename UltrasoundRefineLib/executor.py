"""Where independent tasks run: in this process, in worker processes on this machine, or on a Dask cluster.

An experiment's (condition, repeat) runs and a batch's loops are independent tasks whose results land
in files; what runs them is an :class:`Executor`, chosen by ``--executor``:

- ``local`` (the default): worker processes on this machine (spawned, so CUDA works in them), as many
  as :func:`concurrent_runs` says the GPUs and cores carry; one worker means this process, no pool.
- ``dask://HOST:PORT``: the workers of a ``dask.distributed`` cluster (``pip install
  "UltrasoundRefine[dask]"``). A task whose worker is lost is run again on another worker (Dask
  reschedules it; ``retries`` more attempts after an error), so tasks must be safe to run twice: they
  check their own "finished" marker first. Every worker must see the same paths (a shared filesystem).

Every executor hands out :class:`concurrent.futures.Future` objects, so a caller schedules the same way
whatever runs the tasks.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from typing import Callable, Protocol

from UltrasoundRefineLib.errors import UltrasoundRefineError

#: Small training runs sharing one GPU: a step is launch-bound (about 10 ms whatever the batch), so
#: several processes fill the device better than one (H200: 1 process 862 images/s, 4 together 6,600,
#: 8 together 9,000; issue 13). Each run also needs a core for its CPU work (data, shape fit, scoring).
RUNS_PER_GPU = 8
#: CPU training: one run per core, each with one torch thread (small models scale badly across threads:
#: benchmarks/train_phantom.py); more than 8 runs at once only multiplies the memory of rendered data.
MAX_CPU_RUNS = 8

#: The numerical libraries' own thread pools (numpy's and scipy's OpenBLAS, OpenMP): a worker that
#: fits shapes with 2 BLAS threads on a 2-core machine takes the core of the worker training beside it.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class ExecutorError(UltrasoundRefineError):
    pass


def concurrent_runs(gpus: int, cores: int) -> int:
    """How many runs at once on a machine with ``gpus`` GPUs and ``cores`` CPU cores."""
    cores = max(1, cores)
    if gpus > 0:
        return max(1, min(gpus * RUNS_PER_GPU, cores))
    return min(cores, MAX_CPU_RUNS)


def cpu_stage_slots(gpus: int, cores: int, device_runs: int) -> int:
    """Processes for the runs' CPU stages (shape fit, scoring) beside ``device_runs`` device stages
    (training, the forward pass): on GPUs the cores the device runs leave free, at least one and at most
    one per device run, so the GPU is fed while shapes are fitted; without a GPU none (training already
    works the cores: a run's stages simply follow each other)."""
    if gpus <= 0:
        return 0
    return max(1, min(max(1, cores) - device_runs, device_runs))


def threads_per_run(cores: int, runs: int) -> int:
    """Each run's share of the cores (at least one thread)."""
    return max(1, max(1, cores) // max(1, runs))


def machine_gpus(device: str) -> int:
    """The CUDA devices work on ``device`` (as the user asked for it) spreads its workers over: every GPU
    for ``cuda`` and ``auto``, the one named by ``cuda:N``, none for the CPU and MPS."""
    device = (device or "").strip().lower()
    if device not in ("auto", "cuda") and not device.startswith("cuda:"):
        return 0
    import torch

    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return found if device in ("auto", "cuda") else min(found, 1)


def worker_gpu(index: int, gpus: int, visible: str | None = None) -> str:
    """The GPU of worker ``index`` (its ``CUDA_VISIBLE_DEVICES``): the workers take the ``gpus`` GPUs in
    turn, worker i -> GPU i % gpus, counted among the GPUs this process sees (``visible``: its own
    ``CUDA_VISIBLE_DEVICES``, where the user set one)."""
    ids = [v.strip() for v in (visible or "").split(",") if v.strip()] or [str(i) for i in range(gpus)]
    return ids[index % max(1, min(gpus, len(ids)))]


def init_worker(threads: int, gpus: int = 0, started=None) -> None:
    """In each worker process, before any task: torch uses the worker's share of the cores; with
    ``gpus`` > 1, the workers take the GPUs in turn (:func:`worker_gpu`; ``started`` counts the workers
    started so far), each seeing one as ``cuda``, so 8 runs per GPU land 8 on each GPU, not all on the
    first."""
    if gpus > 1 and started is not None:
        with started.get_lock():
            index = started.value
            started.value += 1
        # before torch first touches CUDA
        os.environ["CUDA_VISIBLE_DEVICES"] = worker_gpu(index, gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))
    import torch

    torch.set_num_threads(max(1, threads))


class Executor(Protocol):
    """Runs ``fn(*args)`` somewhere; ``fn`` and its arguments must pickle (module-level functions)."""

    #: how many tasks run at once (a scheduler keeps this many submitted)
    slots: int
    #: in words, for logs and the run's record of the machine
    name: str
    #: tasks run on other machines: paths must be shared, each worker resolves ``auto`` devices itself
    remote: bool

    def submit(self, fn: Callable, *args) -> Future: ...

    def close(self) -> None: ...


class _Closing:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class InlineExecutor(_Closing):
    """One task at a time in this process: no pool to start, tracebacks where they happen."""

    name = "local (this process)"
    slots = 1
    remote = False

    def __init__(self, threads: int | None = None):
        if threads:
            init_worker(threads)

    def submit(self, fn: Callable, *args) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as e:  # re-raised by fut.result() where the caller collects it
            fut.set_exception(e)
        return fut

    def close(self) -> None:
        pass


class LocalExecutor(_Closing):
    """``workers`` spawned processes on this machine, each with ``threads`` threads for torch and the
    numerical libraries (unless the user set those variables), spread over ``gpus`` GPUs (0 or 1: as
    the tasks' device says)."""

    remote = False

    def __init__(self, workers: int, threads: int | None = None, gpus: int = 0):
        self.slots = max(1, workers)
        self.threads = threads or threads_per_run(os.cpu_count() or 1, self.slots)
        self.name = f"local ({self.slots} processes x {self.threads} threads" + (f", {gpus} GPUs)" if gpus > 1 else ")")
        context = get_context("spawn")
        # Idle OpenMP threads sleep rather than spin, or workers sharing few cores starve each other.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        # The pool starts its processes as tasks come, and they inherit the environment then: it stays
        # set while the pool lives.
        self._environment = worker_thread_environment(self.threads)
        self._environment.__enter__()
        self._pool = ProcessPoolExecutor(max_workers=self.slots, mp_context=context, initializer=init_worker,
                                         initargs=(self.threads, gpus, context.Value("i", 0)))

    def submit(self, fn: Callable, *args) -> Future:
        return self._pool.submit(fn, *args)

    def close(self) -> None:
        try:
            self._pool.shutdown(wait=True, cancel_futures=True)
        finally:
            self._environment.__exit__(None, None, None)


@contextmanager
def worker_thread_environment(threads: int | None):
    """While worker processes start (they inherit the environment), their libraries' thread pools get
    ``threads`` threads each, unless the user set these variables; the environment is restored after."""
    if not threads:
        yield
        return
    added = [k for k in THREAD_VARIABLES if k not in os.environ]
    for k in added:
        os.environ[k] = str(threads)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


class DaskExecutor(_Closing):
    """Tasks on a ``dask.distributed`` cluster, given by its scheduler address or an existing ``Client``.

    ``slots`` is the cluster's worker threads when connecting (a scheduler keeps that many tasks queued;
    workers that join later are used as the queue allows). Each worker's torch threads are its host's
    cores divided among the task threads on that host (``threads`` to choose), set by a worker plugin so
    workers that join later get it too. A lost worker's task is rescheduled by Dask (up to its
    ``distributed.scheduler.allowed-failures``); a task that raises is tried ``retries`` more times.
    """

    remote = True

    def __init__(self, address_or_client, *, retries: int = 2, threads: int | None = None):
        try:
            from distributed import Client
        except ImportError:
            raise ExecutorError('--executor dask://... needs Dask: pip install "dask[distributed]" '
                                '(or the package\'s [dask] extra)') from None
        if isinstance(address_or_client, Client):
            self.client, self._owns_client = address_or_client, False
        else:
            try:
                self.client = Client(address_or_client, timeout="30s")
            except OSError as e:
                raise ExecutorError(f"cannot reach the Dask scheduler at {address_or_client} ({e})") from None
            self._owns_client = True
        nthreads = self.client.nthreads()
        if not nthreads:
            self.close()
            raise ExecutorError(f"the Dask cluster at {self.client.scheduler.address} has no workers")
        self.slots = sum(nthreads.values())
        self.threads = threads or _cluster_thread_share(self.client, nthreads)
        self.client.register_plugin(_torch_threads_plugin(self.threads), name="ultrasound-refine-torch-threads")
        self._executor = self.client.get_executor(retries=retries, pure=False)
        self.name = f"dask {self.client.scheduler.address} ({len(nthreads)} workers, {self.slots} threads)"

    def submit(self, fn: Callable, *args) -> Future:
        return self._executor.submit(fn, *args)

    def close(self) -> None:
        if self._owns_client:
            self.client.close()


def _cluster_thread_share(client, nthreads: dict[str, int]) -> int:
    """The smallest per-task share of cores over the cluster's hosts (workers on one host share it)."""
    from distributed.comm import get_address_host

    cores = client.run(os.cpu_count)
    by_host: dict[str, list[str]] = {}
    for address in nthreads:
        by_host.setdefault(get_address_host(address), []).append(address)
    shares = [threads_per_run(cores[addrs[0]] or 1, sum(nthreads[a] for a in addrs)) for addrs in by_host.values()]
    return min(shares)


def _torch_threads_plugin(threads: int):
    """A worker plugin setting torch's CPU threads on every Dask worker, present and future (made here,
    not at import, so that the local executor never imports Dask)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class TorchThreads(WorkerPlugin):
        def setup(self, worker) -> None:
            init_worker(threads)

    return TorchThreads()


def executor_from_spec(spec: str | None, *, slots: int, threads: int | None, gpus: int = 0) -> Executor:
    """``local`` (or nothing): ``slots`` processes here (over ``gpus`` GPUs), or this process when
    ``slots`` is 1; ``dask://HOST:PORT`` (or ``tcp://``, ``tls://``): a Dask cluster's scheduler."""
    spec = (spec or "local").strip()
    if spec == "local":
        return InlineExecutor(threads) if slots <= 1 else LocalExecutor(slots, threads, gpus)
    scheme, sep, rest = spec.partition("://")
    if sep and rest and scheme == "dask":
        return DaskExecutor(f"tcp://{rest}")
    if sep and rest and scheme in ("tcp", "tls", "ucx", "inproc"):
        return DaskExecutor(spec)
    raise ExecutorError(f"unknown executor {spec!r}: use local or dask://HOST:PORT (a Dask scheduler)")
