"""The frozen image encoder that feeds the Semantic expert of the understanding group's sequence-level MoE.

UniF²ace's Semantic expert cross-attends to a CLIP embedding of the image: a pretrained encoder that already maps
the picture to what it shows, so the language model does not have to learn vision from image codes alone. CLIP
cannot be downloaded here and knows nothing of SynthFace's cartoon faces, so the embedded default model uses the
domain's analogue: a small convolutional network trained on SynthFace attribute labels (the `AttributeJudgeModel`
backbone, `unif2ace data train-judge`), cut before its classification layer. Its 256-d penultimate embedding is one
feature token per image. The encoder is frozen (as CLIP is in the paper) and always runs in eval mode (BatchNorm
running statistics); `config.semantic_encoder` holds its sizes so the weights load strictly with the model.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def synthface_cnn_backbone(width: int) -> nn.Sequential:
    """The SynthFace attribute network's convolutional backbone (64 -> 4 pixels, `4 * width` channels), shared with
    `AttributeJudgeModel`: the semantic encoder loads what `unif2ace data train-judge` trains. It lives here because
    this file travels with a saved model as remote code, which cannot import the package."""
    w = width
    return nn.Sequential(
        _conv(3, w),
        _conv(w, w + w // 2, 2),
        _conv(w + w // 2, w + w // 2),
        _conv(w + w // 2, 3 * w, 2),
        _conv(3 * w, 3 * w),
        _conv(3 * w, 4 * w, 2),
        _conv(4 * w, 4 * w),
        _conv(4 * w, 4 * w, 2),
    )


class UniF2aceSemanticEncoder(nn.Module):
    """`pixel_values (B, 3, H, W) in [-1, 1] -> (B, 1, hidden)` feature tokens for the Semantic expert.

    The layer names (`features.*`, `projection.1.*`) are those of `AttributeJudgeModel` (`features.*`,
    `classifier.2.*`), so a network trained by `unif2ace data train-judge` loads with a key rename.
    """

    def __init__(self, width: int, hidden: int, image_size: int):
        super().__init__()
        self.image_size = image_size
        self.features = synthface_cnn_backbone(width)
        side = image_size // 16
        self.projection = nn.Sequential(nn.Flatten(), nn.Linear(4 * width * side * side, hidden), nn.ReLU())
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> UniF2aceSemanticEncoder:
        # frozen: BatchNorm keeps its running statistics whatever the trainer asks
        return super().train(False)

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.dim() != 4 or pixel_values.shape[1] != 3:
            raise ValueError(
                f"pixel_values: expected (batch, 3, height, width) images in [-1, 1], got {tuple(pixel_values.shape)}"
            )
        parameter = self.projection[1].weight
        pixel_values = pixel_values.to(device=parameter.device, dtype=parameter.dtype)
        if pixel_values.shape[-2:] != (self.image_size, self.image_size):
            pixel_values = nn.functional.interpolate(
                pixel_values, size=(self.image_size, self.image_size), mode="bilinear", antialias=True
            )
        return self.projection(self.features(pixel_values))[:, None]

    @staticmethod
    def state_dict_from_judge(judge_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rename an `AttributeJudgeModel` state dict to this module's keys (its last linear layer is dropped)."""
        renamed = {}
        for name, tensor in judge_state.items():
            if name.startswith("features."):
                renamed[name] = tensor
            elif name.startswith("classifier.2."):
                renamed["projection.1." + name.removeprefix("classifier.2.")] = tensor
        return renamed


__all__ = ["UniF2aceSemanticEncoder", "synthface_cnn_backbone"]
