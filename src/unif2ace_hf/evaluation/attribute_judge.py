"""AttributeJudge: a small CNN that reads every SynthFace attribute from a face image.

Later issues use it to score generated faces: generate from a prompt built from attributes, then check
how many attributes the judge reads back. Weights ship with the package (`weights/`, fp16 safetensors).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from ..data.synthface.taxonomy import TAXONOMY
from ..modeling.semantic_encoder import synthface_cnn_backbone

WEIGHTS_NAME = "attribute_judge.safetensors"
CONFIG_NAME = "attribute_judge.json"
INPUT_SIZE = 64


class AttributeJudgeModel(nn.Module):
    """Conv backbone (64 -> 4 pixels) with one linear head whose logits are split per category.

    Spatial features are flattened, not pooled: where a mark sits (a mole on the cheek or above the lip)
    is part of the label.
    """

    def __init__(self, num_values: Sequence[int], width: int = 32, hidden: int = 256):
        super().__init__()
        w = width
        self.num_values = list(num_values)
        self.features = synthface_cnn_backbone(width)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.1),
            nn.Linear(4 * w * 16, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, sum(num_values)),
        )

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """Per-category logits for a batch of `[B, 3, 64, 64]` images in [-1, 1]."""
        logits = self.classifier(self.features(pixel_values))
        return list(logits.split(self.num_values, dim=1))


def images_to_tensor(images: Sequence[Image.Image], argument: str = "images") -> torch.Tensor:
    """Any-size, any-mode PIL images -> `[B, 3, 64, 64]` float tensor in [-1, 1]."""
    if isinstance(images, Image.Image):
        images = [images]
    if not isinstance(images, Sequence) or len(images) == 0:
        raise ValueError(f"`{argument}` must be a non-empty list of PIL images.")
    arrays = []
    for index, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise TypeError(f"`{argument}[{index}]` must be a PIL.Image.Image, got {type(image).__name__}.")
        if image.width < 8 or image.height < 8:
            raise ValueError(
                f"`{argument}[{index}]` is {image.width}x{image.height}; the judge needs at least 8x8 pixels."
            )
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            # Transparent pixels become white rather than black (what a viewer shows).
            rgba = image.convert("RGBA")
            canvas = Image.new("RGB", rgba.size, (255, 255, 255))
            canvas.paste(rgba, mask=rgba.getchannel("A"))
            image = canvas
        image = image.convert("RGB")
        if image.size != (INPUT_SIZE, INPUT_SIZE):
            image = image.resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR)
        arrays.append(torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(INPUT_SIZE, INPUT_SIZE, 3))
    batch = torch.stack(arrays).permute(0, 3, 1, 2)
    return batch.float().div_(127.5).sub_(1.0)


class AttributeJudge:
    """Predicts the SynthFace attributes of face images: `judge(images) -> [{category: value}, ...]`."""

    def __init__(self, model: AttributeJudgeModel, taxonomy: dict[str, Sequence[str]] | None = None):
        self.taxonomy = {c: tuple(v) for c, v in (taxonomy or TAXONOMY).items()}
        if [len(v) for v in self.taxonomy.values()] != model.num_values:
            raise ValueError("The judge model's heads do not match `taxonomy` (number of values per category).")
        self.model = model.eval()

    @classmethod
    def from_pretrained(cls, path: str | Path) -> AttributeJudge:
        """Load a judge saved with `save_pretrained` (a folder with the safetensors weights and a json config)."""
        path = Path(path)
        config_file, weights_file = path / CONFIG_NAME, path / WEIGHTS_NAME
        for file in (config_file, weights_file):
            if not file.is_file():
                raise FileNotFoundError(f"No {file.name} in {path}; expected a folder written by `save_pretrained`.")
        config = json.loads(config_file.read_text())
        taxonomy = {c: tuple(v) for c, v in config["taxonomy"].items()}
        if taxonomy != dict(TAXONOMY):
            changed = sorted(set(taxonomy.items()) ^ set(TAXONOMY.items()))
            raise ValueError(
                f"The judge in {path} was trained on a different taxonomy (differs at {[c for c, _ in changed][:5]}); "
                "retrain it with `python -m unif2ace_hf.evaluation.train_judge`."
            )
        model = AttributeJudgeModel([len(v) for v in taxonomy.values()], width=config["width"], hidden=config["hidden"])
        state = {k: v.float() for k, v in load_file(str(weights_file)).items()}
        model.load_state_dict(state, strict=True)
        return cls(model, taxonomy)

    @classmethod
    def load_default(cls) -> AttributeJudge:
        """The judge shipped with the package (trained on SynthFace renders; see docs/synthface.md)."""
        folder = resources.files("unif2ace_hf.evaluation").joinpath("weights")
        return cls.from_pretrained(Path(str(folder)))

    def save_pretrained(self, path: str | Path) -> None:
        """Write fp16 safetensors weights and a json config (taxonomy and sizes) to the folder `path`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(path / WEIGHTS_NAME))
        linear = self.model.classifier[2]
        config = {
            "width": self.model.features[0][0].out_channels,
            "hidden": linear.out_features,
            "input_size": INPUT_SIZE,
            "taxonomy": {c: list(v) for c, v in self.taxonomy.items()},
        }
        (path / CONFIG_NAME).write_text(json.dumps(config, indent=1) + "\n")

    @torch.inference_mode()
    def logits(self, images: Sequence[Image.Image], batch_size: int = 256) -> list[torch.Tensor]:
        """Per-category logits `[N, num_values]` for a list of images."""
        pixels = images_to_tensor(images)
        chunks = [self.model(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)]
        return [torch.cat([chunk[c] for chunk in chunks]) for c in range(len(self.taxonomy))]

    def __call__(self, images: Sequence[Image.Image] | Image.Image, batch_size: int = 256) -> list[dict[str, str]]:
        logits = self.logits(images, batch_size)
        indices = [scores.argmax(dim=1).tolist() for scores in logits]
        names = list(self.taxonomy)
        return [
            {name: self.taxonomy[name][indices[c][i]] for c, name in enumerate(names)} for i in range(len(indices[0]))
        ]
