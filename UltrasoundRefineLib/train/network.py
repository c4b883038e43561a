"""The segmentation network: a MONAI 2D U-Net by default, other MONAI networks by name.

Networks are configured by arguments (never subclassed); the card records the name and the final
keyword arguments, so :func:`build_network` can rebuild exactly the same module to load weights into.
Each architecture also says which of its parameters form the encoder, for the frozen-encoder and
low-lr-encoder fine-tuning strategies.
"""

from __future__ import annotations

import torch
from torch import nn

from UltrasoundRefineLib.train.config import TrainError

# name -> (MONAI class path, default keyword arguments). Small defaults: this must train on 2 CPU cores.
ARCHITECTURES: dict[str, tuple[str, dict]] = {
    "unet": (
        "monai.networks.nets.UNet",
        {"channels": [16, 32, 64, 128, 128], "strides": [2, 2, 2, 2], "num_res_units": 1, "norm": "instance"},
    ),
    "basicunet": ("monai.networks.nets.BasicUNet", {"features": [16, 16, 32, 64, 128, 16]}),
    "attentionunet": ("monai.networks.nets.AttentionUnet", {"channels": [16, 32, 64, 128], "strides": [2, 2, 2]}),
    "segresnet": ("monai.networks.nets.SegResNet", {"init_filters": 8, "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1]}),
}


def network_kwargs(arch: str, in_channels: int, overrides: dict | None = None) -> dict:
    if arch not in ARCHITECTURES:
        raise TrainError(f"unknown network {arch!r}; choose from {sorted(ARCHITECTURES)}")
    kwargs = dict(ARCHITECTURES[arch][1])
    kwargs.update(overrides or {})
    kwargs["spatial_dims"] = 2
    kwargs["in_channels"] = int(in_channels)
    kwargs["out_channels"] = 1
    return kwargs


def build_network(arch: str, kwargs: dict) -> nn.Module:
    """Build ``arch`` with the complete keyword arguments from :func:`network_kwargs` (or a card)."""
    import importlib

    if arch not in ARCHITECTURES:
        raise TrainError(f"unknown network {arch!r}; choose from {sorted(ARCHITECTURES)}")
    module_name, class_name = ARCHITECTURES[arch][0].rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), class_name)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise TrainError(f"bad settings for network {arch!r}: {e}") from None


def _unet_is_encoder(name: str) -> bool:
    """MONAI UNet nests ``Sequential(down, SkipConnection(submodule=...), up)``; index 0 is the
    encoder block of a level, 1 descends, 2 is the decoder; the innermost ``submodule`` is the
    bottleneck, which belongs to the encoder."""
    parts = name.split(".")
    i = 0
    while i < len(parts):
        if parts[i] in ("model", "submodule"):
            nxt = parts[i + 1] if i + 1 < len(parts) else ""
            if nxt == "0":
                return True
            if nxt == "2":
                return False
            if nxt == "1":
                i += 2
                continue
            return True  # the bottleneck
        i += 1
    return False


def _attention_unet_is_encoder(name: str) -> bool:
    # AttentionUnet: model = Sequential(ConvBlock head, AttentionLayer(submodule=...), final conv);
    # in each AttentionLayer, ``submodule`` is Sequential(down ConvBlock, deeper layer); ``merge`` and
    # ``upconv``/``attention`` are the decoder.
    parts = name.split(".")
    if parts[:2] == ["model", "0"]:
        return True
    if parts[:2] == ["model", "2"] or any(p in ("upconv", "merge", "attention") for p in parts):
        return False
    return "submodule" in parts


_ENCODER_RULES = {
    "unet": _unet_is_encoder,
    "basicunet": lambda n: n.split(".")[0] in ("conv_0", "down_1", "down_2", "down_3", "down_4"),
    "attentionunet": _attention_unet_is_encoder,
    "segresnet": lambda n: n.split(".")[0] in ("convInit", "down_layers"),
}


def encoder_parameter_names(net: nn.Module, arch: str) -> list[str]:
    """Names of the parameters that form the encoder (the lower, more generic layers)."""
    rule = _ENCODER_RULES.get(arch)
    if rule is None:
        raise TrainError(f"no encoder/decoder split is known for network {arch!r}")
    names = [n for n, _ in net.named_parameters() if rule(n)]
    if not names or len(names) == len(list(net.parameters())):
        raise TrainError(f"could not split network {arch!r} into encoder and decoder")
    return names


def encoder_modules(net: nn.Module, arch: str) -> list[nn.Module]:
    """The leaf modules whose parameters are all in the encoder (put in eval mode when frozen)."""
    names = set(encoder_parameter_names(net, arch))
    mods = []
    for mname, m in net.named_modules():
        params = [f"{mname}.{p}" if mname else p for p, _ in m.named_parameters(recurse=False)]
        if params and all(p in names for p in params):
            mods.append(m)
    return mods


def count_parameters(net: nn.Module) -> int:
    return int(sum(p.numel() for p in net.parameters()))


def forward_logits(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Some MONAI networks return lists (deep supervision); we always want one logit map."""
    y = net(x)
    if isinstance(y, (list, tuple)):
        y = y[0]
    return y
