"""An experiment: which training recipes (conditions) to compare, how often, and how to test them.

Specs are TOML files; everything has a default, so an empty file is the method's standard comparison.
Example::

    name = "my-archive"
    repeats = 5                  # runs per condition, seeds base_seed + 0 .. repeats - 1
    shared_pretrain = false      # true: one pretraining per method serves every repeat (cheaper)
    human_masks = 10             # human masks drawn (per repeat) from the fine-tuning split
    postprocess = "evidence"     # how networks' masks are scored (see ExperimentSpec.postprocess)
    baseline = "threshold"
    conditions = ["threshold", "fanfit", "human-only", "threshold-pretrained+finetuned"]
    comparisons = [["threshold-pretrained+finetuned", "fanfit-pretrained+finetuned"]]

    [train]                      # TrainConfig fields for every stage (size, inputs, arch, ...)
    size = 96
    [pretrain]                   # and per stage: pretrain / finetune / scratch
    epochs = 20

    [[condition]]                # a recipe of your own
    name = "threshold-pretrained+low-lr"
    pretrain_on = "threshold"
    finetune = "low-lr-encoder"
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from UltrasoundRefineLib.errors import InputError
from UltrasoundRefineLib.train.postprocess import EXPERIMENT_POSTPROCESS, POSTPROCESS_MODES

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

AUTOMASK_METHODS = ("threshold", "fanfit")
STRATEGIES = ("full", "frozen-encoder", "low-lr-encoder")


@dataclass(frozen=True)
class Condition:
    """One recipe. Exactly one of: ``automask`` (the method's masks as they are); ``pretrain_on`` (a
    network pretrained on the accepted suggestions of that method, optionally fine-tuned on human
    masks with the ``finetune`` strategy); ``scratch`` (human masks only, from random weights)."""

    name: str
    description: str = ""
    automask: str | None = None
    pretrain_on: str | None = None
    finetune: str | None = None
    scratch: bool = False

    @property
    def kind(self) -> str:
        if self.automask:
            return "automask"
        if self.scratch:
            return "scratch"
        return "pretrain+finetune" if self.finetune else "pretrain"

    @property
    def uses_human_masks(self) -> bool:
        return self.scratch or self.finetune is not None

    def validate(self) -> None:
        chosen = [self.automask is not None, self.pretrain_on is not None, self.scratch]
        if sum(chosen) != 1:
            raise ValueError(f"condition {self.name!r}: give exactly one of automask, pretrain_on, scratch")
        for method in (self.automask, self.pretrain_on):
            if method is not None and method not in AUTOMASK_METHODS:
                raise ValueError(f"condition {self.name!r}: unknown auto-mask method {method!r}")
        if self.finetune is not None and self.finetune not in STRATEGIES:
            raise ValueError(f"condition {self.name!r}: unknown fine-tuning strategy {self.finetune!r}; "
                             f"choose from {', '.join(STRATEGIES)}")
        if self.finetune is not None and self.pretrain_on is None:
            raise ValueError(f"condition {self.name!r}: fine-tuning needs pretrain_on")


def _builtin() -> dict[str, Condition]:
    c = [
        Condition("threshold", "Threshold masks as they are (step 1 alone): the method's baseline.",
                  automask="threshold"),
        Condition("fanfit", "Geometric fan-fit masks as they are: the more complicated algorithm.",
                  automask="fanfit"),
        Condition("human-only", "Network trained from scratch on the human masks only (no pretraining).",
                  scratch=True),
        Condition("threshold-pretrained", "Network pretrained on the accepted threshold masks, "
                  "not fine-tuned.", pretrain_on="threshold"),
        Condition("threshold-pretrained+finetuned", "Network pretrained on the accepted threshold masks, "
                  "then fine-tuned (all layers) on the human masks: the method's recipe.",
                  pretrain_on="threshold", finetune="full"),
        Condition("fanfit-pretrained+finetuned", "Network pretrained on the accepted fan-fit masks, "
                  "then fine-tuned (all layers) on the human masks.", pretrain_on="fanfit", finetune="full"),
        Condition("threshold-pretrained+frozen-encoder", "Pretrained on threshold masks; fine-tuned on "
                  "the human masks with the encoder frozen (two-stage, coarse-to-fine).",
                  pretrain_on="threshold", finetune="frozen-encoder"),
        Condition("threshold-pretrained+low-lr-encoder", "Pretrained on threshold masks; fine-tuned on "
                  "the human masks with a 10x lower learning rate for the encoder.",
                  pretrain_on="threshold", finetune="low-lr-encoder"),
    ]
    return {x.name: x for x in c}


BUILTIN_CONDITIONS: dict[str, Condition] = _builtin()

DEFAULT_CONDITIONS = (
    "threshold",
    "fanfit",
    "human-only",
    "threshold-pretrained",
    "threshold-pretrained+finetuned",
    "fanfit-pretrained+finetuned",
    "threshold-pretrained+frozen-encoder",
)
DEFAULT_COMPARISONS = (
    ("threshold-pretrained+finetuned", "fanfit-pretrained+finetuned"),
    ("threshold-pretrained+frozen-encoder", "threshold-pretrained+finetuned"),
    ("threshold-pretrained+finetuned", "human-only"),
    ("threshold-pretrained+finetuned", "threshold-pretrained"),
)
#: The recipe whose best run becomes "the refined model" of a demo.
REFINED = "threshold-pretrained+finetuned"


@dataclass
class ExperimentSpec:
    name: str = "experiment"
    repeats: int = 5
    base_seed: int = 0
    human_masks: int = 10
    #: True: one pretraining per auto-mask method (seed ``base_seed``) serves every repeat, and the
    #: repeats vary only what comes after it. Much cheaper; the report says so.
    shared_pretrain: bool = False
    baseline: str = "threshold"
    alpha: float = 0.05
    metric: str = "dice"
    #: How each condition's network becomes masks before they are scored: "evidence" lets the network
    #: decide where it and the loop's reading differ in a part, so recipes that train different networks
    #: score differently (``predict``'s default, "reading", would give every recipe the same mask
    #: wherever step 1 reads the region right). Any of ``POSTPROCESS_MODES``.
    postprocess: str = EXPERIMENT_POSTPROCESS
    conditions: list[Condition] = field(default_factory=lambda: [BUILTIN_CONDITIONS[n] for n in DEFAULT_CONDITIONS])
    comparisons: list[tuple[str, str]] = field(default_factory=lambda: list(DEFAULT_COMPARISONS))
    train: dict = field(default_factory=dict)
    pretrain: dict = field(default_factory=dict)
    finetune: dict = field(default_factory=dict)
    scratch: dict = field(default_factory=dict)

    def seeds(self) -> list[int]:
        return [self.base_seed + r for r in range(self.repeats)]

    def pretrain_seed(self, seed: int) -> int:
        """The seed of the pretraining that the runs of repeat ``seed`` start from."""
        return self.base_seed if self.shared_pretrain else seed

    def is_deterministic(self, condition: Condition) -> bool:
        """Conditions whose repeats all give the same result, so they are scored once."""
        return condition.kind == "automask" or (condition.kind == "pretrain" and self.shared_pretrain)

    def condition(self, name: str) -> Condition:
        for c in self.conditions:
            if c.name == name:
                return c
        raise KeyError(name)

    def validate(self) -> None:
        if self.repeats < 2:
            raise ValueError("repeats must be at least 2: a t-test needs a spread")
        if self.human_masks < 1:
            raise ValueError("human_masks must be at least 1")
        names = [c.name for c in self.conditions]
        if len(set(names)) != len(names):
            raise ValueError(f"condition names repeat: {names}")
        for c in self.conditions:
            c.validate()
        if self.baseline not in names:
            raise ValueError(f"baseline {self.baseline!r} is not among the conditions {names}")
        self.comparisons = [(a, b) for a, b in self.comparisons if a in names and b in names]
        if self.postprocess not in POSTPROCESS_MODES:
            raise ValueError(f"unknown postprocess {self.postprocess!r}; choose from {', '.join(POSTPROCESS_MODES)}")
        if self.metric not in ("dice", "iou", "accuracy", "hd95"):
            raise ValueError(f"unknown metric {self.metric!r}")

    def to_dict(self) -> dict:
        """The spec in the form :func:`spec_from_dict` (and a TOML file) takes, conditions spelled out."""
        d = dataclasses.asdict(self)
        d["condition"] = d.pop("conditions")
        d["conditions"] = [c.name for c in self.conditions]
        d["comparisons"] = [list(p) for p in self.comparisons]
        return d


def spec_from_dict(data: dict, *, source: str = "spec") -> ExperimentSpec:
    data = dict(data)
    custom = {c["name"]: Condition(**c) for c in data.pop("condition", [])} if "condition" in data else {}
    known = {**BUILTIN_CONDITIONS, **custom}
    names = data.pop("conditions", None)
    if names is None:
        names = list(DEFAULT_CONDITIONS) + [n for n in custom if n not in DEFAULT_CONDITIONS]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown condition(s) {unknown}; built in: {sorted(BUILTIN_CONDITIONS)}")
    comparisons = [tuple(p) for p in data.pop("comparisons", DEFAULT_COMPARISONS)]
    if any(len(p) != 2 for p in comparisons):
        raise ValueError("each comparison is a pair [a, b]")
    fields = {f.name for f in dataclasses.fields(ExperimentSpec)}
    extra = set(data) - fields
    if extra:
        raise ValueError(f"unknown key(s) {sorted(extra)}")
    spec = ExperimentSpec(conditions=[known[n] for n in names], comparisons=comparisons, **data)
    spec.validate()
    return spec


def load_spec(path: str | Path | None) -> ExperimentSpec:
    """Read a TOML spec (``None``: all defaults). Errors name the file and what is wrong."""
    if path is None:
        spec = ExperimentSpec()
        spec.validate()
        return spec
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise InputError(path, f"cannot read the experiment spec ({e.strerror or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(path, f"not valid TOML ({e})") from None
    try:
        return spec_from_dict(data, source=str(path))
    except (TypeError, ValueError) as e:
        raise InputError(path, f"bad experiment spec: {e}") from None
