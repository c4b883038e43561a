"""Cancel from the Slicer panel, outside Slicer: :class:`ChildJob` on real process trees shaped like
PythonSlicer (a launcher that starts the worker and forwards stdin but no signal), and
``train --stop-on-stdin`` stopped by a "stop" line on a tiny phantom workspace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from UltrasoundRefineLib import childjob
from UltrasoundRefineLib.childjob import ChildJob

REPO = Path(__file__).resolve().parents[1]

# A launcher like ctkAppLauncher: starts the real program as its child with stdin inherited, ignores
# SIGTERM (it forwards no signal), and exits with the child's code.
LAUNCHER = textwrap.dedent(
    """
    import signal, subprocess, sys
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen(sys.argv[1:])
    print("worker", child.pid, flush=True)
    sys.exit(child.wait())
    """
)
# A worker that ignores SIGTERM and never reads stdin: only a kill ends it.
STUBBORN = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: time.sleep(0.1)\n"


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead and waiting to be reaped, counts as gone)."""
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    return bool(state) and not state.startswith("Z")


def _wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _worker_pid(job: ChildJob, seconds: float = 20.0) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for line in job.lines():
            if line.startswith("worker "):
                return int(line.split()[1])
        time.sleep(0.02)
    raise AssertionError("the launcher did not start its worker")


pytestmark = pytest.mark.skipif(os.name == "nt", reason="the process-tree checks use ps (POSIX)")


def test_kill_leaves_no_process_of_a_two_level_tree():
    job = ChildJob(sys.executable, ["-c", LAUNCHER, sys.executable, "-c", STUBBORN])
    worker = _worker_pid(job)
    assert _alive(job.pid) and _alive(worker)
    job.kill()
    assert job.wait(10) is not None
    assert _wait_gone(worker), "the worker outlived the kill of its launcher's tree"


def test_the_panels_cancel_of_a_clean_run_kills_its_tree_and_says_stopped():
    """What the panel's Cancel does (jobs.PanelJob): a clean run has no checkpoint to save, so its whole
    tree is killed at once; the run then reads as stopped, not failed."""
    from UltrasoundRefineLib.jobs import PanelJob

    run = PanelJob("clean", sys.executable, ["-c", LAUNCHER, sys.executable, "-c", STUBBORN])
    worker = _worker_pid(run.process)
    run.cancel()
    assert run.monitor.status == "Stopping..."
    deadline, outcome = time.monotonic() + 10, None
    while outcome is None and time.monotonic() < deadline:
        _lines, outcome = run.poll()
        time.sleep(0.02)
    assert outcome is False and run.monitor.status == "Stopped." and not run.monitor.failed
    assert _wait_gone(worker), "the worker outlived the panel's Cancel"


def test_terminating_only_the_launcher_would_leave_the_worker(tmp_path):
    """The fault Cancel had: a signal to PythonSlicer never reaches the worker."""
    job = ChildJob(sys.executable, ["-c", LAUNCHER, sys.executable, "-c", STUBBORN])
    worker = _worker_pid(job)
    try:
        job.process.terminate()  # what QProcess.terminate() did: the launcher ignores it
        time.sleep(0.5)
        assert _alive(worker)
    finally:
        job.kill()
    assert _wait_gone(worker)


def test_stop_kills_the_tree_after_the_grace_period_when_the_run_ignores_it(monkeypatch):
    monkeypatch.setattr(childjob, "STOP_GRACE_S", 0.3)
    job = ChildJob(sys.executable, ["-c", LAUNCHER, sys.executable, "-c", STUBBORN])
    worker = _worker_pid(job)
    job.stop()
    code = job.wait(15)
    assert code is not None and job.killed
    assert _wait_gone(worker)


def test_lines_come_in_order_and_poll_waits_for_the_last_of_them():
    job = ChildJob(sys.executable, ["-c", "import sys\nfor i in range(500): print(i)\nsys.exit(3)"])
    assert job.wait(20) == 3
    assert job.lines() == [str(i) for i in range(500)]


# --------------------------------------------------------------- the training CLI, stopped by stdin


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, phantom_set, reviewed_session):
    return reviewed_session(tmp_path_factory.mktemp("stop_on_stdin") / "ws", phantom_set(6, 5), min_dice=0.5)


def test_train_stops_on_a_stop_line_through_a_launcher_and_keeps_its_checkpoint(workspace, tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "model"
    args = ["train", str(workspace), "--stage", "pretrain", "--json", "--size", "32", "--epochs", "200",
            "--device", "cpu", "--threads", "1", "--stop-on-stdin", "--out", str(out)]
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    job = ChildJob(sys.executable, ["-c", LAUNCHER, sys.executable, "-m", "UltrasoundRefineLib", *args], env=env, cwd=REPO)
    events, deadline = [], time.monotonic() + 120
    try:
        worker = _worker_pid(job)
        while time.monotonic() < deadline and not any(e["event"] == "checkpoint" for e in events):
            events += [json.loads(line) for line in job.lines() if line.startswith("{")]
            assert job.running, "the run ended before its first checkpoint"
            time.sleep(0.05)
        job.stop()
        code = job.wait(60)
    finally:
        if job.running:
            job.kill()
    events += [json.loads(line) for line in job.lines() if line.startswith("{")]
    assert code == 143, events[-3:]
    assert events[-1]["event"] == "stopped"
    assert (out / "checkpoint" / "checkpoint.pt").is_file() and not (out / "card.json").exists()
    assert not job.killed and _wait_gone(worker)

    # the panel's words for these events, as the engine printed them (not copied strings)
    from UltrasoundRefineLib.jobs import describe_progress, parse_progress_line, progress_percent

    start = next(e for e in events if e["event"] == "start")
    assert parse_progress_line(json.dumps(start)) == start
    assert "on cpu" in describe_progress(start) and f"up to {start['epochs']} epochs" in describe_progress(start)
    epoch = next(e for e in events if e["event"] == "epoch")
    text = describe_progress(epoch, start["epochs"])
    assert text.startswith(f"epoch {epoch['epoch']}/{start['epochs']}") and "loss" in text and "left" in text
    assert all(0 <= p <= 100 for p in (progress_percent(e) for e in events) if p is not None)
    assert progress_percent(epoch) is not None
    assert "Train resumes it" in describe_progress(events[-1])


def test_train_stops_when_its_stdin_closes(workspace, tmp_path):
    """The panel that started the run is gone (Slicer closed or crashed): the run stops, not orphaned."""
    pytest.importorskip("torch")
    out = tmp_path / "model"
    args = ["train", str(workspace), "--stage", "pretrain", "--json", "--size", "32", "--epochs", "200",
            "--device", "cpu", "--threads", "1", "--stop-on-stdin", "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "UltrasoundRefineLib", *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1])["event"] == "stopped"
