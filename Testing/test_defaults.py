"""Defaults stated in two places agree: the shape fit's agreement threshold, and ``--workers``' help
against what the runner does."""

from __future__ import annotations

import argparse
import inspect
import re

from UltrasoundRefineLib.automask.fanfit import fit_shape
from UltrasoundRefineLib.automask.fanfit import shapefit
from UltrasoundRefineLib.cli import experiment as cli_experiment
from UltrasoundRefineLib.executor import concurrent_runs


def test_fit_shape_default_is_the_named_threshold():
    assert inspect.signature(fit_shape).parameters["min_agreement"].default == shapefit.MIN_AGREEMENT


def test_workers_help_says_what_the_runner_does():
    sub = argparse.ArgumentParser().add_subparsers()
    cli_experiment.register(sub)
    for command in ("experiment", "demo"):
        action = next(a for a in sub.choices[command]._actions if "--workers" in a.option_strings)
        cpu_cap = int(re.search(r"one per CPU core, at most (\d+)", action.help).group(1))
        per_gpu = int(re.search(r"(\d+) per GPU", action.help).group(1))
        assert concurrent_runs(0, 1000) == cpu_cap and concurrent_runs(0, 2) == 2, command
        assert concurrent_runs(1, 1000) == per_gpu and concurrent_runs(3, 1000) == 3 * per_gpu, command
        assert concurrent_runs(1, 2) == 2, command  # "at most one per core"
