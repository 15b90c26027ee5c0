"""A perceptual loss for the image tokenizer from a feature network trained here on SynthFace.

LPIPS compares images in the feature space of an ImageNet classifier; its weights cannot be downloaded here, and
ImageNet features are not where SynthFace's labels live. The analogue for this domain is a small classifier trained
on SynthFace attributes (the `AttributeJudgeModel` architecture, trained by `unif2ace data train-judge` with its own
seed, data stream and width, so it is a different network from the judge that scores the tokenizer). Its
activations respond to exactly the 1-2 pixel lines and dots (nose line, wrinkles, earrings) that a pixel loss lets
the tokenizer smear, because dropping them costs few pixels.

The distance is LPIPS's unweighted form: at five depths (the output of the layer before each of the four stride-2
convolutions, and of the last layer: strides 1, 2, 4, 8 and 16), the features of the reconstruction and
of the original are normalised to unit length over channels at every position, and the mean squared difference is
averaged over positions and stages.

The same pass also yields the network's attribute predictions, and `attribute` is their mean KL divergence per
category (original -> reconstruction). Distilling the predictions targets what a reader of the face would lose
(a moustache's presence, an eyebrow's shape) rather than feature similarity in general; it is weighted separately
(`TokenizerLossWeights.attribute`) and costs one small linear head.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..evaluation.attribute_judge import INPUT_SIZE, AttributeJudge, AttributeJudgeModel

DEFAULT_PERCEPTUAL_NET = str(Path(__file__).resolve().parent / "weights" / "synthface-features")
"""The shipped feature network (`perceptual_net="default"`), trained once with
`unif2ace data train-judge --output-dir DIR --num-train 48000 --num-eval 2000 --epochs 8 --width 32 --seed 7
--threads 2` in 17 minutes on the 2-core CPU: 98.7 % mean held-out accuracy over 32 categories. It has the judge's
architecture but its own seed and faces (the judge: seed 0, 60 000 faces, 12 epochs); docs/decisions.md,
"Accounting for the feature network"."""


class PerceptualFeatureLoss(nn.Module):
    """Frozen feature network; `forward(reconstruction, target)` returns the scalar terms `perceptual` (feature
    distance) and `attribute` (disagreement of the attribute predictions)."""

    def __init__(self, network: AttributeJudgeModel):
        super().__init__()
        # channels_last: the network's convolutions run 1.4x faster in that layout on a CPU (bf16, compiled), while
        # the tokenizer's own are faster contiguous, so only the loss's input is converted.
        self.network = network.eval().to(memory_format=torch.channels_last)
        for parameter in self.network.parameters():
            parameter.requires_grad_(False)
        self.input_size = INPUT_SIZE
        # compared outputs: the layer before each stride-2 conv and the last layer (strides 1, 2, 4, 8, 16)
        strided = [i for i, layer in enumerate(network.features) if layer[0].stride == (2, 2)]
        self.stage_indices = tuple(i - 1 for i in strided) + (len(network.features) - 1,)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> PerceptualFeatureLoss:
        """Load a network saved by `AttributeJudge.save_pretrained` / `unif2ace data train-judge --output-dir`, or
        the shipped one for `"default"`."""
        path = DEFAULT_PERCEPTUAL_NET if str(path) == "default" else path
        if not Path(path).is_dir():
            raise ValueError(f"`perceptual_net`: {str(path)!r} is not a folder written by `unif2ace data train-judge`.")
        return cls(AttributeJudge.from_pretrained(path).model)

    def train(self, mode: bool = True) -> PerceptualFeatureLoss:
        # The network stays in eval mode (BatchNorm running statistics) whatever the trainer asks.
        super().train(mode)
        self.network.eval()
        return self

    def _features(self, pixel_values: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The compared feature maps and the attribute logits (all categories, concatenated)."""
        if pixel_values.shape[-1] != self.input_size or pixel_values.shape[-2] != self.input_size:
            pixel_values = nn.functional.interpolate(
                pixel_values, size=(self.input_size, self.input_size), mode="bilinear", antialias=True
            )
        features, hidden = [], pixel_values.contiguous(memory_format=torch.channels_last)
        for index, layer in enumerate(self.network.features):
            hidden = layer(hidden)
            if index in self.stage_indices:
                features.append(hidden)
        return features, self.network.classifier(hidden)

    def _attribute_divergence(self, produced: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
        """Mean over categories of KL(p(original) || p(reconstruction)), averaged over the batch."""
        pairs = zip(
            produced.float().split(self.network.num_values, 1), wanted.float().split(self.network.num_values, 1)
        )
        divergences = [
            nn.functional.kl_div(q.log_softmax(1), p.log_softmax(1), log_target=True, reduction="batchmean")
            for q, p in pairs
        ]
        return torch.stack(divergences).mean()

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            target_features, target_logits = self._features(target)
        produced_features, logits = self._features(reconstruction)
        distance = reconstruction.new_zeros((), dtype=torch.float32)
        for produced, wanted in zip(produced_features, target_features):
            produced = nn.functional.normalize(produced.float(), dim=1, eps=1e-6)
            wanted = nn.functional.normalize(wanted.float(), dim=1, eps=1e-6)
            distance = distance + (produced - wanted).pow(2).sum(1).mean()
        return {
            "perceptual": distance / len(target_features),
            "attribute": self._attribute_divergence(logits, target_logits),
        }


__all__ = ["PerceptualFeatureLoss", "DEFAULT_PERCEPTUAL_NET"]
