"""Train the AttributeJudge on freshly rendered SynthFace faces and report held-out accuracy.

    python -m unif2ace_hf.evaluation.train_judge --output-dir src/unif2ace_hf/evaluation/weights

(also `unif2ace data train-judge`). Training and held-out faces come from disjoint random streams; the
held-out set mixes ordinary faces with `novel` attribute combinations and renders at 64 and 128 pixels.
The command prints per-category accuracy and exits non-zero when the mean is below `--min-accuracy`.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time

import torch
from torch.nn import functional as F

from ..data.synthface.render import render
from ..data.synthface.sampler import sample_attributes
from ..data.synthface.taxonomy import TAXONOMY, hidden_categories
from .attribute_judge import AttributeJudge, AttributeJudgeModel, images_to_tensor

_INDEX = {c: {v: i for i, v in enumerate(values)} for c, values in TAXONOMY.items()}


def render_labeled(
    num: int,
    seed: int,
    stream: str,
    large_fraction: float = 0.2,
    novel_fraction: float = 0.2,
    return_visible: bool = False,
):
    """`num` rendered faces as a uint8 `[N, 3, 64, 64]` tensor and their labels `[N, num_categories]`.

    A `large_fraction` is rendered at 128 pixels and resized like the judge resizes any input. With
    `return_visible`, also a bool `[N, num_categories]` mask of the labels the image shows (not hidden).
    """
    pixels = torch.empty(num, 3, 64, 64, dtype=torch.uint8)
    labels = torch.empty(num, len(TAXONOMY), dtype=torch.long)
    visible = torch.ones(num, len(TAXONOMY), dtype=torch.bool)
    for i in range(num):
        rng = random.Random(f"judge/{stream}/{seed}/{i}")
        attributes = sample_attributes(rng, novel=rng.random() < novel_fraction)
        size = 128 if rng.random() < large_fraction else 64
        image = render(attributes, size=size, seed=rng.getrandbits(31))
        pixels[i] = images_to_tensor([image])[0].add(1.0).mul(127.5).round().to(torch.uint8)
        labels[i] = torch.tensor([_INDEX[c][attributes[c]] for c in TAXONOMY])
        hidden = hidden_categories(attributes)
        visible[i] = torch.tensor([c not in hidden for c in TAXONOMY])
    return (pixels, labels, visible) if return_visible else (pixels, labels)


def _to_input(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.float().div_(127.5).sub_(1.0).contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def per_category_accuracy(
    model: AttributeJudgeModel,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 512,
    visible: torch.Tensor | None = None,
) -> dict[str, float]:
    """Fraction of images whose value is predicted correctly, per category (only visible labels if `visible`)."""
    model.eval()
    correct = torch.zeros(len(TAXONOMY))
    mask = visible if visible is not None else torch.ones(labels.shape, dtype=torch.bool)
    for start in range(0, len(pixels), batch_size):
        x = _to_input(pixels[start : start + batch_size])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
        y = labels[start : start + batch_size]
        m = mask[start : start + batch_size]
        correct += torch.stack([((out.argmax(1) == y[:, c]) & m[:, c]).sum() for c, out in enumerate(logits)]).float()
    counts = mask.sum(0).clamp(min=1).float()
    return {c: float(correct[i] / counts[i]) for i, c in enumerate(TAXONOMY)}


def train(args: argparse.Namespace) -> tuple[AttributeJudge, dict[str, float], dict[str, float]]:
    """Render the data, train, and return the judge with its held-out accuracy (all faces, visible labels)."""
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    train_x, train_y = render_labeled(args.num_train, args.seed, "train")
    eval_x, eval_y, eval_visible = render_labeled(args.num_eval, args.seed, "heldout", return_visible=True)
    print(
        f"rendered {args.num_train} training and {args.num_eval} held-out faces in {time.perf_counter() - t0:.0f}s",
        flush=True,
    )

    model = AttributeJudgeModel([len(v) for v in TAXONOMY.values()], width=args.width).to(
        memory_format=torch.channels_last
    )
    steps_per_epoch = math.ceil(args.num_train / args.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.15
    )
    generator = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(args.num_train, generator=generator)
        total = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * args.batch_size : (step + 1) * args.batch_size]
            x = _to_input(train_x[idx])
            if args.noise > 0:
                # Mild pixel noise: generated faces are noisier than renders.
                x = x + torch.randn(x.shape, generator=generator) * (
                    args.noise * torch.rand(len(x), 1, 1, 1, generator=generator)
                )
            y = train_y[idx]
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(x)
            loss = sum(F.cross_entropy(out.float(), y[:, c]) for c, out in enumerate(logits)) / len(logits)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item()
        accuracy = per_category_accuracy(model, eval_x, eval_y)
        mean = sum(accuracy.values()) / len(accuracy)
        print(
            f"epoch {epoch + 1}/{args.epochs}  loss {total / steps_per_epoch:.4f}  held-out mean accuracy {mean:.4f}  ({time.perf_counter() - t0:.0f}s)",
            flush=True,
        )
    visible_accuracy = per_category_accuracy(model, eval_x, eval_y, visible=eval_visible)
    judge = AttributeJudge(model.to(memory_format=torch.contiguous_format).eval())
    return judge, accuracy, visible_accuracy


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="python -m unif2ace_hf.evaluation.train_judge", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--output-dir", required=True, help="folder for attribute_judge.safetensors + .json")
    parser.add_argument("--num-train", type=int, default=60000)
    parser.add_argument("--num-eval", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--noise", type=float, default=0.04, help="max std of the pixel-noise augmentation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 leaves the machine usable)")
    parser.add_argument("--min-accuracy", type=float, default=0.97, help="exit with 1 when the held-out mean is lower")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    for name in ("num_train", "num_eval", "epochs", "batch_size", "threads", "width"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        judge, accuracy, visible_accuracy = train(args)
    finally:
        torch.set_num_threads(previous_threads)
    judge.save_pretrained(args.output_dir)
    print("held-out accuracy per category (all faces | faces where the category is visible):")
    for category, value in sorted(accuracy.items(), key=lambda kv: kv[1]):
        print(f"  {category:18s} {value:.4f} | {visible_accuracy[category]:.4f}")
    mean = sum(accuracy.values()) / len(accuracy)
    visible_mean = sum(visible_accuracy.values()) / len(visible_accuracy)
    print(f"mean held-out accuracy over visible labels: {visible_mean:.4f}")
    print(f"mean held-out accuracy over {len(accuracy)} categories: {mean:.4f} (min {min(accuracy.values()):.4f})")
    print(f"saved to {args.output_dir}")
    return 0 if mean >= args.min_accuracy else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
