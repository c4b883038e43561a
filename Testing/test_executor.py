"""How many runs at once, with how many threads, and which executor a spec names (no Dask needed)."""

from __future__ import annotations

import pytest

from UltrasoundRefineLib.executor import (
    ExecutorError,
    InlineExecutor,
    LocalExecutor,
    concurrent_runs,
    executor_from_spec,
    threads_per_run,
)


@pytest.mark.parametrize("gpus, cores, runs", [
    (0, 1, 1), (0, 2, 2), (0, 6, 6), (0, 16, 8), (0, 0, 1),  # CPU: a core each, at most 8
    (1, 1, 1), (1, 2, 2), (1, 16, 8), (1, 64, 8),  # one GPU: 8 runs share it, but never more than the cores
    (2, 16, 16), (4, 16, 16), (2, 64, 16),
])
def test_concurrent_runs(gpus, cores, runs):
    assert concurrent_runs(gpus, cores) == runs


@pytest.mark.parametrize("cores, runs, threads", [(2, 2, 1), (16, 8, 2), (16, 6, 2), (1, 4, 1), (8, 1, 8)])
def test_each_run_gets_its_share_of_the_cores(cores, runs, threads):
    assert threads_per_run(cores, runs) == threads


@pytest.mark.parametrize("gpus, cores, expected", [(0, 2, 2), (0, 32, 8), (1, 16, 8), (1, 2, 2), (2, 32, 16)])
def test_default_workers_reads_the_machine(monkeypatch, gpus, cores, expected):
    """The runner's default from the GPUs torch reports and the core count, both faked."""
    import torch

    from UltrasoundRefineLib.experiment import runner

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(runner.os, "cpu_count", lambda: cores)
    assert runner.default_workers("cuda") == expected
    assert runner.default_workers("cuda:0") == concurrent_runs(min(gpus, 1), cores)  # one GPU named
    assert runner.default_workers("cpu") == min(cores, 8)  # a GPU that is there but not asked for


def test_workers_take_the_gpus_in_turn(monkeypatch):
    """Workers over 2 GPUs: each sees one GPU as ``cuda``, the first worker GPU 0, the next GPU 1, ..."""
    import os
    from multiprocessing import get_context

    from UltrasoundRefineLib.executor import init_worker

    import torch

    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # this process is not a worker
    started = get_context("spawn").Value("i", 0)
    seen = []
    for _ in range(5):
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        init_worker(1, 2, started)
        seen.append(os.environ["CUDA_VISIBLE_DEVICES"])
    assert seen == ["0", "1", "0", "1", "0"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    init_worker(1, 1, started)  # one GPU (or a named one): the device the tasks name, untouched
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_executor_from_spec():
    with executor_from_spec("local", slots=1, threads=1) as one:
        assert isinstance(one, InlineExecutor) and one.submit(pow, 2, 5).result() == 32
    with pytest.raises(ExecutorError, match="unknown executor 'ray://x'"):
        executor_from_spec("ray://x", slots=2, threads=1)
    with pytest.raises(ExecutorError, match="unknown executor 'dask://'"):
        executor_from_spec("dask://", slots=2, threads=1)


def test_local_workers_get_their_share_of_threads():
    """Each worker process starts with torch (and OpenBLAS) sized to its share, the parent is untouched."""
    import os

    import torch

    before = torch.get_num_threads()
    user_set = "OPENBLAS_NUM_THREADS" in os.environ
    with executor_from_spec("local", slots=2, threads=1) as pool:
        assert isinstance(pool, LocalExecutor) and pool.slots == 2
        assert pool.submit(torch.get_num_threads).result() == 1
        if not user_set:
            assert pool.submit(os.getenv, "OPENBLAS_NUM_THREADS").result() == "1"
    assert torch.get_num_threads() == before
    assert ("OPENBLAS_NUM_THREADS" in os.environ) == user_set
