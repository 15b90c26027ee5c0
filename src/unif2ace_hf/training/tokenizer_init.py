"""How a tokenizer trained from scratch starts: every residual branch at zero.

A pre-activation residual block computes `x + conv2(...)`; with `conv2` zeroed it is the identity (or its 1×1
shortcut), and an attention block with a zeroed `proj_out` likewise. The fresh network is then a short chain of the
convolutions that change resolution and width, which learns a rough reconstruction within the first few hundred
steps; each branch grows in as its last layer gets gradients (the branch's other layers get theirs once that layer is
non-zero, one step later). The idea is Goyal et al.'s zero-initialised last BatchNorm and Fixup's zeroed last layer.

Measured (docs/decisions.md, "The feature network decides the judge gap"): the `small` preset is ahead of the
default initialisation at every step of a 2 000-step pilot, by 0.1–1.3 dB batch PSNR on the same batches, and
the 41-minute recipe reached 28.32 dB held out against 27.92 dB before.
"""

from __future__ import annotations

from torch import nn

from ..modeling.image_tokenizer import UniF2aceVQAttnBlock, UniF2aceVQModel, UniF2aceVQResnetBlock


def zero_residual_branches(model: UniF2aceVQModel) -> int:
    """Zero the last layer of every residual branch (`conv2` of each residual block, `proj_out` of each attention
    block), in place. Returns how many branches were zeroed."""
    zeroed = 0
    for module in model.modules():
        if isinstance(module, UniF2aceVQResnetBlock):
            last = module.conv2
        elif isinstance(module, UniF2aceVQAttnBlock):
            last = module.proj_out
        else:
            continue
        nn.init.zeros_(last.weight)
        if last.bias is not None:
            nn.init.zeros_(last.bias)
        zeroed += 1
    return zeroed


__all__ = ["zero_residual_branches"]
