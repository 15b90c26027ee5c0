"""Image-tokenizer training step on the CPU: memory format (contiguous vs channels_last), precision (fp32 vs bf16
autocast), and what the perceptual term costs.

A step is what `train_tokenizer` does: forward, `tokenizer_loss` (optionally with the shipped SynthFace feature
network), backward, gradient clipping, AdamW. The `tiny` preset (the default tokenizer's sizes) at batch 16, the batch
of the CPU runs in docs/decisions.md, and the `small` preset (the same grid, 12-bit codes, the width moved off the
64×64 level) in the precision the CPU runs use, eager and under `torch.compile` (the trainer's `--compile`; compiled
during the warm-up call, before timing), and `small` with a lean decoder (no conv after each upsampling, one residual
block per level), a wide encoder (64 channels at 64×64), 2×2 patches folded into channels (no 64×64 level), or Muon
for its hidden kernels (the trainer's `--optimizer muon`). The optimizers are the trainer's own. Variants run
interleaved in one process on copies of one initialisation per architecture.

    .venv/bin/python benchmarks/bench_tokenizer_train.py [--repeats 8] [--threads 1] [--output benchmarks/results_tokenizer_train.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from contextlib import nullcontext
from pathlib import Path

import torch

from bench_common import interleaved_samples, machine_info
from unif2ace_hf.modeling.image_tokenizer import UniF2aceVQModel
from unif2ace_hf.modeling.tokenizer_losses import TokenizerLossWeights, tokenizer_loss
from unif2ace_hf.training.perceptual_loss import PerceptualFeatureLoss
from unif2ace_hf.training.tokenizer_data import render_synthface, to_pixel_values
from unif2ace_hf.training.tokenizer_trainer import TokenizerTrainingArguments, build_vq_config, make_optimizers

# name: (preset, config overrides)
ARCHITECTURES = {
    "tiny": ("tiny", {}),
    "small": ("small", {}),
    # without the decoder's upsampling convs and its second 16×16 block (docs/decisions.md, "A lean decoder")
    "small_lean_decoder": ("small", {"upsample_with_conv": False, "decoder_num_res_blocks": [1, 1, 1]}),
    # twice the encoder's width at 64×64 and 32×32 (docs/decisions.md, "The encoder's width at 64×64")
    "small_wide_encoder": ("small", {"encoder_channel_multipliers": [2, 2, 4]}),
    # 2×2 patches folded into channels, no 64×64 level, 96 encoder channels at 32×32 (docs/decisions.md, "Folding")
    "small_patch2_wide_encoder": (
        "small",
        {
            "patch_size": 2,
            "encoder_channel_multipliers": [3, 4],
            "encoder_num_res_blocks": [1, 1],
            "decoder_channel_multipliers": [2, 4],
            "decoder_num_res_blocks": [1, 2],
        },
    ),
}

VARIANTS = {
    # name: (architecture, autocast dtype or None, memory format, perceptual weight, torch.compile, optimizer)
    "fp32": ("tiny", None, torch.contiguous_format, 0.0, False, "adamw"),
    "bf16": ("tiny", torch.bfloat16, torch.contiguous_format, 0.0, False, "adamw"),
    "bf16_channels_last": ("tiny", torch.bfloat16, torch.channels_last, 0.0, False, "adamw"),
    "fp32_channels_last": ("tiny", None, torch.channels_last, 0.0, False, "adamw"),
    "bf16_perceptual": ("tiny", torch.bfloat16, torch.contiguous_format, 1.0, False, "adamw"),
    "small_bf16": ("small", torch.bfloat16, torch.contiguous_format, 0.0, False, "adamw"),
    "small_bf16_perceptual": ("small", torch.bfloat16, torch.contiguous_format, 1.0, False, "adamw"),
    "small_bf16_perceptual_compiled": ("small", torch.bfloat16, torch.contiguous_format, 1.0, True, "adamw"),
    "small_lean_decoder_bf16_perceptual_compiled": (
        "small_lean_decoder",
        torch.bfloat16,
        torch.contiguous_format,
        1.0,
        True,
        "adamw",
    ),
    "small_wide_encoder_bf16_perceptual_compiled": (
        "small_wide_encoder",
        torch.bfloat16,
        torch.contiguous_format,
        1.0,
        True,
        "adamw",
    ),
    "small_patch2_wide_encoder_bf16_perceptual_compiled": (
        "small_patch2_wide_encoder",
        torch.bfloat16,
        torch.contiguous_format,
        1.0,
        True,
        "adamw",
    ),
    # Muon for the hidden kernels, AdamW for the rest (the trainer's --optimizer muon)
    "small_bf16_perceptual_compiled_muon": ("small", torch.bfloat16, torch.contiguous_format, 1.0, True, "muon"),
}


def make_step(model, pixel_values, dtype, memory_format, perceptual_weight, compiled, optimizer_name, perceptual):
    model = model.to(memory_format=memory_format)
    forward = torch.compile(model) if compiled else model
    features = torch.compile(perceptual) if compiled else perceptual
    pixel_values = pixel_values.contiguous(memory_format=memory_format)
    arguments = TokenizerTrainingArguments(data="", output_dir="", optimizer=optimizer_name, learning_rate=1e-4)
    optimizers = make_optimizers(model, arguments, torch.device("cpu"))
    weights = TokenizerLossWeights(perceptual=perceptual_weight)

    def loss_fn(reconstruction, target):
        with torch.autocast("cpu", dtype=dtype) if dtype else nullcontext():
            return features(reconstruction, target)

    def step() -> None:
        with torch.autocast("cpu", dtype=dtype) if dtype else nullcontext():
            output = forward(pixel_values)
        terms = tokenizer_loss(
            output.reconstruction, pixel_values, output.latents, weights, loss_fn if perceptual_weight else None
        )
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results_tokenizer_train.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    used = dict.fromkeys(architecture for architecture, *_ in VARIANTS.values())
    bases = {name: UniF2aceVQModel(build_vq_config(*ARCHITECTURES[name])).train() for name in used}
    pixel_values = to_pixel_values(render_synthface(args.batch_size, size=64, seed=0, workers=1))
    perceptual = PerceptualFeatureLoss.from_pretrained("default")
    steps = {
        name: make_step(
            copy.deepcopy(bases[architecture]), pixel_values, dtype, memory_format, weight, compiled, optim, perceptual
        )
        for name, (architecture, dtype, memory_format, weight, compiled, optim) in VARIANTS.items()
    }
    samples = interleaved_samples(steps, args.repeats)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    rows = [
        {
            "variant": name,
            "step_s": medians[name],
            "images_per_s": args.batch_size / medians[name],
            "speedup_vs_bf16": medians["bf16"] / medians[name],
        }
        for name in VARIANTS
    ]
    result = {"machine": machine_info(args.threads), "batch_size": args.batch_size, "rows": rows, "samples_s": samples}
    Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'variant':32s} {'step (s)':>9s} {'images/s':>9s} {'vs bf16':>8s}")
    for row in rows:
        print(f"{row['variant']:32s} {row['step_s']:9.3f} {row['images_per_s']:9.1f} {row['speedup_vs_bf16']:8.2f}")


if __name__ == "__main__":
    main()
