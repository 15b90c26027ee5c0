"""Does a model know the answer to a presence question it gets wrong? Linear probes against its yes/no answers
(docs/default_model.md, issue 8).

For each presence category, every face of a SynthFace split is asked the category's question ("Is the person
wearing glasses?"). Three readings of "is it present" are compared on the same held-out faces: the model's own answer
(" no" against the other first tokens, which begin "yes"), a logistic probe on the model's last hidden state at the
answer position, and one on the semantic encoder's features. A probe far above the answer means the information
reaches the answer position and the language model's readout ignores it.

    python scripts/presence_readout_probe.py --data SYNTHFACE_DIR [--model default|DIR] [--split validation]
        [--num-examples 480] [--categories glasses moles hat stubble]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from unif2ace_hf import DEFAULT_MODEL
from unif2ace_hf.commands.evaluate import _load_rows
from unif2ace_hf.data.synthface.qa import PRESENCE_QUESTIONS
from unif2ace_hf.data.synthface.taxonomy import hidden_categories
from unif2ace_hf.pipelines.pipeline_unif2ace import UniF2acePipeline


def probe_accuracy(features: torch.Tensor, labels: torch.Tensor, num_train: int) -> float:
    """Held-out accuracy of an L2-regularised logistic regression fitted on the first `num_train` rows."""
    mean, std = features[:num_train].mean(0), features[:num_train].std(0) + 1e-6
    features = (features - mean) / std
    weight = torch.zeros(features.shape[1], requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200)
    targets = labels[:num_train].float()

    def closure():
        optimizer.zero_grad()
        logits = features[:num_train] @ weight + bias
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets) + 1e-2 * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return ((features[num_train:] @ weight + bias > 0) == labels[num_train:]).float().mean().item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="model folder, or 'default' (unif2ace_hf.DEFAULT_MODEL)")
    parser.add_argument("--data", required=True, help="SynthFace folder")
    parser.add_argument("--split", default="validation", help="faces to probe on (default: validation)")
    parser.add_argument("--num-examples", type=int, default=480)
    parser.add_argument("--categories", nargs="+", default=["glasses", "moles", "hat", "stubble"])
    args = parser.parse_args(argv)
    unknown = [c for c in args.categories if c not in PRESENCE_QUESTIONS]
    if unknown:
        parser.error(f"--categories: {unknown} are not presence categories ({', '.join(PRESENCE_QUESTIONS)})")
    path = DEFAULT_MODEL if args.model == "default" else args.model
    if path is None or not Path(path).is_dir():
        parser.error(f"--model: {args.model!r} is not a model folder")
    pipe = UniF2acePipeline.from_pretrained(path)
    model, processor = pipe.model, pipe.processor
    if model.semantic_encoder is None:
        parser.error(f"--model: {args.model!r} has no semantic encoder")
    rows = _load_rows(args.data, args.split, args.num_examples)
    (no_id,) = processor.tokenizer(" no", add_special_tokens=False)["input_ids"]

    print("| category | faces | present | model's answer | probe: last hidden state | probe: semantic features |")
    print("|---|---|---|---|---|---|")
    for category in args.categories:
        visible = [row for row in rows if category not in hidden_categories(row["attributes"])]
        if len(visible) < 20:
            parser.error(f"--num-examples: only {len(visible)} faces show {category}; ask for more")
        answers, hidden, semantic = [], [], []
        for start in range(0, len(visible), 32):
            images = [row["image"] for row in visible[start : start + 32]]
            inputs = processor.build_mmu_inputs(images, [PRESENCE_QUESTIONS[category]] * len(images))
            with torch.no_grad():
                output = model(**inputs, output_hidden_states=True)
                semantic.append(model.semantic_encoder(inputs["pixel_values"])[:, 0].float())
            answers += (output.logits[:, -1].argmax(-1) != no_id).tolist()
            hidden.append(output.hidden_states[-1][:, -1].float())
        labels = torch.tensor([row["attributes"][category] not in ("none", "no") for row in visible])
        num_train = int(0.6 * len(labels))
        said = torch.tensor(answers)[num_train:]
        print(
            f"| {category} | {len(labels) - num_train} held out | {labels[num_train:].float().mean():.2f} | "
            f"{(said == labels[num_train:]).float().mean():.3f} (says yes to {said.float().mean():.2f}) | "
            f"{probe_accuracy(torch.cat(hidden), labels, num_train):.3f} | "
            f"{probe_accuracy(torch.cat(semantic), labels, num_train):.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
