"""How a fine-tuning run treats the pretrained layers.

- ``full``: every layer learns from the human masks at the same learning rate.
- ``frozen-encoder``: the two-stage, coarse-to-fine recipe (van Sonsbeek et al., WACV 2023): the
  lower (encoder) layers learned on the large set of accepted auto masks stay exactly as they are
  (no gradient, not in the optimiser, normalisation statistics not updated) while the decoder learns
  the fine boundary from the few human masks.
- ``low-lr-encoder``: the encoder learns too, at ``encoder_lr_factor`` times the learning rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from UltrasoundRefineLib.train.config import TrainError
from UltrasoundRefineLib.train.network import encoder_modules, encoder_parameter_names

STRATEGIES = ("full", "frozen-encoder", "low-lr-encoder")


@dataclass
class StrategySetup:
    param_groups: list[dict]
    frozen_modules: list[nn.Module] = field(default_factory=list)
    frozen_parameters: list[str] = field(default_factory=list)

    def set_train_mode(self, net: nn.Module) -> None:
        """``net.train()``, but frozen layers stay in eval mode so batch-norm statistics do not drift."""
        net.train()
        for m in self.frozen_modules:
            m.eval()


def apply_strategy(net: nn.Module, arch: str, strategy: str, lr: float, encoder_lr_factor: float = 0.1) -> StrategySetup:
    if strategy not in STRATEGIES:
        raise TrainError(f"unknown fine-tuning strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    for p in net.parameters():
        p.requires_grad_(True)
    if strategy == "full":
        return StrategySetup([{"params": list(net.parameters()), "lr": lr, "name": "all"}])
    enc_names = set(encoder_parameter_names(net, arch))
    encoder = [p for n, p in net.named_parameters() if n in enc_names]
    decoder = [p for n, p in net.named_parameters() if n not in enc_names]
    if strategy == "frozen-encoder":
        for p in encoder:
            p.requires_grad_(False)
        return StrategySetup(
            [{"params": decoder, "lr": lr, "name": "decoder"}],
            frozen_modules=encoder_modules(net, arch),
            frozen_parameters=sorted(enc_names),
        )
    return StrategySetup(
        [
            {"params": encoder, "lr": lr * encoder_lr_factor, "name": "encoder"},
            {"params": decoder, "lr": lr, "name": "decoder"},
        ]
    )
