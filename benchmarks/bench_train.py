"""Training throughput: tokens/s and model FLOP utilisation (MFU) of a full training step, fp32 and bf16 autocast.

A step is what `UniF2aceTrainer.train_step` does on one process: the mixed t2i/mmu collator's batch, the training
objective (mmu CE + D3Diff + balance), backward, gradient clipping and an AdamW step. MFU = the FLOPs the step's
matmuls and attention really execute (counted with `torch.utils.flop_counter.FlopCounterMode` on one step) per
second of step time, over this machine's measured matmul peak at the same dtype, on the model's own linear-layer
shapes at the step's token count (the best of them). Each config runs in its own process, so its peak RSS is its own.

Configs: `tiny` (the tiny-synthface recipe: the default model's architecture, batch 16) and `showo` (Show-o-sized
layers: d 2048, 32 heads, FFN 8192, 4 layers, Show-o's vocabulary; dense; batch 12 rows, Show-o's smallest
per-GPU batch).

    .venv/bin/python benchmarks/bench_train.py [--quick] [--configs tiny showo] [--output benchmarks/results_train.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench_common import machine_info
from showo_sized import random_words, showo_sized
from unif2ace_hf.training.codes_cache import SEMANTIC_COLUMN
from unif2ace_hf.training.collator import TrainingCollator
from unif2ace_hf.training.model_setup import build_model
from unif2ace_hf.training.objective import TrainingObjective
from unif2ace_hf.training.recipes import load_recipe

# tiny: the recipe's batch; showo: Show-o's smallest per-GPU batch (instruction tuning: 5 t2i + 2 lm + 5 mmu rows)
CONFIGS = {"tiny": {"batch": 16}, "showo": {"batch": 12, "layers": 4}}
TINY_WORDS = (
    "woman man young old red brown black blond hair wavy straight curly eyes glasses beard smile freckles".split()
)


def build(name: str):
    """Model, processor and scheduler: the recipe's own builder for `tiny`, the Show-o-sized one for `showo`."""
    if name == "tiny":
        model, processor, scheduler = build_model(load_recipe("tiny-synthface"))
        return (
            model,
            processor,
            scheduler,
            lambda count, g: " ".join(
                TINY_WORDS[i] for i in torch.randint(0, len(TINY_WORDS), (count,), generator=g).tolist()
            ),
        )
    if name == "showo":
        return (*showo_sized(num_layers=CONFIGS["showo"]["layers"]), random_words)
    raise ValueError(f"configs: unknown config {name!r} (tiny, showo)")


def synthetic_rows(processor, count: int, words, seed: int = 0) -> list[dict]:
    """Dataset-like rows (codes, caption, one QA pair) as the trainer hands them to the collator."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for index in range(count):
        codes = torch.randint(0, processor.codebook_size, (processor.num_image_tokens,), generator=generator)
        rows.append(
            {
                "codes": codes.tolist(),
                "caption": words(30, generator),
                "qa": [{"question": words(8, generator), "answer": words(12, generator)}],
                "_epoch": 0,
                "_index": index,
            }
        )
    return rows


def with_semantic_features(model, rows: list[dict], seed: int = 0) -> list[dict]:
    """`rows` with random semantic-encoder features of the right shape, for models that read them (the trainer
    caches the frozen encoder's real features; their values do not change a step's cost)."""
    if getattr(model, "semantic_encoder", None) is None:
        return rows
    size = model.vq_model.config.image_size
    with torch.no_grad():
        shape = model.semantic_encoder(torch.zeros(1, 3, size, size)).shape[1:]
    generator = torch.Generator().manual_seed(seed)
    return [{**row, SEMANTIC_COLUMN: torch.randn(shape, generator=generator)} for row in rows]


def step_loss(objective, batch: dict) -> torch.Tensor:
    """The trainer's loss on one process: mean answer CE + mean masked-token CE + the MoE balance terms."""
    parts = objective(**batch)
    return (
        parts["mmu_sum"] / batch["num_mmu_tokens"].clamp_min(1)
        + parts["t2i_sum"] / batch["num_image_tokens"].clamp_min(1)
        + parts["aux"]
    )


def train_step(objective, optimizer, batch: dict, dtype: torch.dtype) -> None:
    """The trainer's step on one process: weighted loss parts, backward, clipping, AdamW."""
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == torch.bfloat16 else nullcontext()
    with autocast:
        loss = step_loss(objective, batch)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in objective.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def step_flops(objective, optimizer, batch: dict, dtype: torch.dtype) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        train_step(objective, optimizer, batch, dtype)
    return counter.get_total_flops()


def linear_shapes(model) -> set[tuple[int, int]]:
    """(in, out) of the backbone's linear layers and fused experts: the matmul shapes a step runs."""
    shapes = set()
    for module in model.model.modules():
        if isinstance(module, torch.nn.Linear) and min(module.in_features, module.out_features) >= 64:
            shapes.add((module.in_features, module.out_features))
    for param in model.model.parameters():
        if param.dim() == 3:
            shapes.add((param.shape[1], param.shape[2]))
    return shapes


def matmul_peak(shapes: set[tuple[int, int]], rows: int, dtype: torch.dtype, repeats: int = 5) -> dict:
    """Best achieved FLOP/s of `(rows, in) @ (in, out)` over the given shapes (median of `repeats` per shape)."""
    best, per_shape = 0.0, {}
    for fan_in, fan_out in sorted(shapes):
        a, b = torch.randn(rows, fan_in, dtype=dtype), torch.randn(fan_in, fan_out, dtype=dtype)
        for _ in range(2):
            a @ b
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        rate = 2 * rows * fan_in * fan_out / statistics.median(times)
        per_shape[f"{rows}x{fan_in}x{fan_out}"] = rate
        best = max(best, rate)
    return {"peak_flops_per_s": best, "per_shape": per_shape}


def run_config(name: str, steps: int) -> dict:
    """Runs in the child process."""
    model, processor, scheduler, words = build(name)
    if model.vq_model is not None:
        model.vq_model.requires_grad_(False)  # the trainer never trains the image tokenizer with the transformer
    batch_size = CONFIGS[name]["batch"]
    collator = TrainingCollator(processor, scheduler, seed=0)
    batch = collator(with_semantic_features(model, synthetic_rows(processor, batch_size, words)))
    objective = TrainingObjective(model)
    objective.train()
    optimizer = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=1e-4, fused=True)
    tokens = int(batch["attention_mask"].sum())
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    flops = {key: step_flops(objective, optimizer, batch, dtype) for key, dtype in dtypes.items()}  # also warm-up
    samples: dict[str, list[float]] = {key: [] for key in dtypes}
    for _ in range(steps):  # fp32 and bf16 steps interleaved on the same model and optimizer
        for key, dtype in dtypes.items():
            start = time.perf_counter()
            train_step(objective, optimizer, batch, dtype)
            samples[key].append(time.perf_counter() - start)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        train_step(objective, optimizer, batch, torch.bfloat16)
    profile = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    shapes = linear_shapes(model)
    rows = []
    for key, dtype in dtypes.items():
        step_s = statistics.median(samples[key])
        peak = matmul_peak(shapes, batch["input_ids"].numel(), dtype)
        achieved = flops[key] / step_s
        rows.append(
            {
                "config": name,
                "dtype": key,
                "step_s": step_s,
                "tokens_per_s": tokens / step_s,
                "flops_per_step": flops[key],
                "achieved_flops_per_s": achieved,
                "peak_flops_per_s": peak["peak_flops_per_s"],
                "peak_per_shape": peak["per_shape"],
                "mfu": achieved / peak["peak_flops_per_s"],
            }
        )
    config = model.config
    return {
        "config": name,
        "setting": {
            "hidden_size": config.hidden_size,
            "layers": config.num_hidden_layers,
            "intermediate_size": config.intermediate_size,
            "token_moe_layers": list(config.token_moe_layers),
            "sequence_moe_layers": list(config.sequence_moe_layers),
            "vocab_size": config.vocab_size,
            "batch_rows": batch_size,
            "sequence_length": batch["input_ids"].shape[1],
            "tokens_per_step": tokens,
            "trainable_parameters": sum(p.numel() for p in objective.parameters() if p.requires_grad),
            "timed_steps": steps,
        },
        "rows": rows,
        "samples_s": samples,
        "profile_bf16_step": profile,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one timed step per dtype")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--threads", type=int, default=1, help="1: a shared machine's load hurts 2 threads more")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per dtype (median)")
    parser.add_argument("--output", default="benchmarks/results_train.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = 1 if args.quick else args.steps
    if args.child:
        print(json.dumps(run_config(args.child, steps)))
        return
    results = {"machine": machine_info(args.threads), "configs": {}}
    for name in args.configs:
        command = [sys.executable, __file__, "--child", name, "--steps", str(steps), "--threads", str(args.threads)]
        out = subprocess.run(command, check=True, capture_output=True, text=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        results["configs"][name] = result
        for row in result["rows"]:
            print(
                f"{name:6s} {row['dtype']}: {row['tokens_per_s']:8.0f} tokens/s, step {row['step_s']:.2f} s, "
                f"{row['achieved_flops_per_s'] / 1e9:6.0f} GFLOP/s of {row['peak_flops_per_s'] / 1e9:5.0f} peak, "
                f"MFU {row['mfu']:.2f}; peak RSS {result['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
    if "showo" in results["configs"]:
        bf16 = next(r for r in results["configs"]["showo"]["rows"] if r["dtype"] == "bf16")
        results["train_mfu_bf16"] = bf16["mfu"]
        results["profile"] = {
            "what": "one bf16 training step of the showo config, self CPU time",
            "table": results["configs"]["showo"]["profile_bf16_step"],
        }
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
