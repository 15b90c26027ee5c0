"""The optimizers of `UniF2aceTrainer`: AdamW for everything, or Muon for the transformer's hidden matrices.

Muon (`training/muon.py`) takes the matrices that map hidden states to hidden states: attention projections, the
shared and routed experts' weights (each expert of a fused `(E, in, out)` stack on its own, in one batched call) and
the resamplers' projections. The layers at the ends (token embeddings, the image-input features, the LM head), the
routers (a few rows each, one per expert: equalising their directions is not the point of a router), biases and
norms stay with AdamW, as the first and last layers do in the Muon papers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .muon import ConvMuon
from .recipes import TRAINING_OPTIMIZERS

_ADAMW_ONLY = ("embed", "lm_head", "router", "image_input_embedding")
"""Name parts of 2-D weights that stay with AdamW under `optimizer: muon`."""


def muon_parameter_names(model: nn.Module) -> tuple[list[str], list[str]]:
    """(matrices, stacks): trainable 2-D weights and `(E, in, out)` expert stacks that Muon takes."""
    matrices, stacks = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad or "bias" in name.rsplit(".", 1)[-1] or any(k in name for k in _ADAMW_ONLY):
            continue
        if parameter.ndim == 2 and min(parameter.shape) > 1:
            matrices.append(name)
        elif parameter.ndim == 3 and min(parameter.shape[1:]) > 1:
            stacks.append(name)
    return matrices, stacks


def make_training_optimizers(model: nn.Module, training: dict[str, Any]) -> list[torch.optim.Optimizer]:
    """AdamW over every trainable parameter (`optimizer: adamw`), or Muon over the hidden matrices and AdamW over
    the rest (`optimizer: muon`), both at `training.learning_rate` (Muon's update is scaled to AdamW's RMS)."""
    choice = training["optimizer"]
    if choice not in TRAINING_OPTIMIZERS:
        raise ValueError(f"training.optimizer: {choice!r} is not one of {TRAINING_OPTIMIZERS}")
    named = {name: p for name, p in model.named_parameters() if p.requires_grad}
    matrices, stacks = muon_parameter_names(model) if choice == "muon" else ([], [])
    taken = set(matrices) | set(stacks)
    optimizers: list[torch.optim.Optimizer] = [
        torch.optim.AdamW(
            [p for name, p in named.items() if name not in taken],
            lr=training["learning_rate"],
            betas=tuple(training["adam_betas"]),
            weight_decay=training["weight_decay"],
            fused=True,  # one pass per tensor: 4-5x faster than the default loop on CPU (benchmarks/bench_train.py)
        )
    ]
    if taken:
        groups = [{"params": [named[n] for n in matrices]}, {"params": [named[n] for n in stacks], "stacked": True}]
        optimizers.append(
            ConvMuon(
                [group for group in groups if group["params"]],
                lr=training["learning_rate"],
                weight_decay=training["weight_decay"],
                momentum=training["muon_momentum"],
            )
        )
    return optimizers


__all__ = ["make_training_optimizers", "muon_parameter_names"]
