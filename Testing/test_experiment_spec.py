"""Experiment specs: defaults, TOML parsing, and clear errors for bad specs."""

from __future__ import annotations

import pytest

from UltrasoundRefineLib.errors import InputError
from UltrasoundRefineLib.experiment import BUILTIN_CONDITIONS, DEFAULT_CONDITIONS, load_spec
from UltrasoundRefineLib.experiment.runner import draw_human


def test_defaults_cover_the_methods_comparisons():
    spec = load_spec(None)
    names = [c.name for c in spec.conditions]
    assert names == list(DEFAULT_CONDITIONS)
    kinds = {c.kind for c in spec.conditions}
    assert kinds == {"automask", "scratch", "pretrain", "pretrain+finetune"}
    assert ("threshold-pretrained+finetuned", "fanfit-pretrained+finetuned") in spec.comparisons
    assert spec.seeds() == [0, 1, 2, 3, 4]


def test_toml_spec_with_a_custom_condition(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text(
        'name = "mine"\nrepeats = 3\nbase_seed = 10\nconditions = ["threshold", "mine-low-lr"]\n'
        'comparisons = [["mine-low-lr", "threshold"], ["mine-low-lr", "nope"]]\n'
        "[train]\nsize = 64\n"
        '[[condition]]\nname = "mine-low-lr"\npretrain_on = "fanfit"\nfinetune = "low-lr-encoder"\n'
    )
    spec = load_spec(path)
    assert spec.name == "mine" and spec.seeds() == [10, 11, 12]
    assert spec.condition("mine-low-lr").kind == "pretrain+finetune"
    assert spec.train == {"size": 64}
    assert spec.comparisons == [("mine-low-lr", "threshold")]  # pairs naming absent conditions are dropped


@pytest.mark.parametrize(
    "text, words",
    [
        ("repeats = 1\n", "repeats"),
        ('conditions = ["threshold", "bogus"]\n', "bogus"),
        ('baseline = "fanfit"\nconditions = ["threshold"]\n', "baseline"),
        ('[[condition]]\nname = "x"\nfinetune = "full"\n', "exactly one"),
        ('[[condition]]\nname = "x"\npretrain_on = "threshold"\nfinetune = "sideways"\n', "strategy"),
        ("colour = 3\n", "unknown key"),
        ("repeats = = 2\n", "TOML"),
    ],
)
def test_bad_specs_name_the_file_and_the_problem(tmp_path, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_spec(path)
    assert str(path) in str(info.value) and words in str(info.value)


def test_builtin_conditions_are_valid():
    for c in BUILTIN_CONDITIONS.values():
        c.validate()


def test_human_mask_draw_depends_on_the_seed_only():
    a, b = draw_human(30, 10, seed=3), draw_human(30, 10, seed=3)
    assert a == b and len(set(a)) == 10 and all(0 <= i < 30 for i in a)
    assert draw_human(30, 10, seed=4) != a
    assert draw_human(5, 10, seed=0) == [0, 1, 2, 3, 4]


def test_spec_round_trips_through_its_dict():
    from UltrasoundRefineLib.experiment import spec_from_dict

    spec = load_spec(None)
    again = spec_from_dict(spec.to_dict())
    assert again == spec
