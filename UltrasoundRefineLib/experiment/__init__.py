"""Repeated-run experiments: conditions x seeds, run resumably, compared with significance tests."""

from UltrasoundRefineLib.experiment.spec import (
    BUILTIN_CONDITIONS,
    DEFAULT_COMPARISONS,
    DEFAULT_CONDITIONS,
    REFINED,
    Condition,
    ExperimentSpec,
    load_spec,
    spec_from_dict,
)

__all__ = [
    "BUILTIN_CONDITIONS",
    "DEFAULT_COMPARISONS",
    "DEFAULT_CONDITIONS",
    "REFINED",
    "Condition",
    "ExperimentSpec",
    "load_spec",
    "spec_from_dict",
]
