"""Peak memory (RSS) of a few training steps: full fine-tuning vs LoRA vs QLoRA (4-bit nf4 base + LoRA), on CPU.

Each case runs in its own subprocess, so its peak resident set size (`ru_maxrss`) is its own: it loads a saved
checkpoint (full precision, or 4-bit through `from_pretrained(..., quantization_config=...)`), then takes a few
AdamW steps on a batch of one t2i row and one mmu row. Reported per case: the peak after imports, after loading,
and after training (peaks only grow, so "train" is the whole run's peak), plus trainable parameters.

Configs:
* `tiny`: the default model's size (d = 256, 4 layers, 4 heads, token + sequence MoE in every layer, 8 experts);
  LoRA on the attention projections and the fused experts.
* `showo`: Show-o-sized layers (d = 2048, 2 layers, 32 heads, FFN 8192, vocabulary 58 498 = Phi's 50 295 + 11
  + 8 192 codes), dense; LoRA on the attention projections. With only 2 of Show-o's 24 layers, the full-precision
  embedding and head (kept unquantised: 2 x 120 M parameters) dominate; `showo8` (8 layers, LoRA vs QLoRA only)
  shows how the saving grows with depth.

    .venv/bin/python benchmarks/bench_memory.py [--configs tiny showo] [--steps 3] [--output benchmarks/results_memory.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    "tiny": ["full-ft-fp32", "lora-fp32", "qlora-nf4"],
    "showo": ["full-ft-fp32", "lora-fp32", "qlora-nf4"],
    "showo8": ["lora-fp32", "qlora-nf4"],
}
SEQUENCE_IMAGE_TOKENS = 64
TEXT_TOKENS = 32


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> dict[str, float | None]:
    """Current resident memory split into anonymous pages (heap: cannot be dropped) and file pages (safetensors
    checkpoints are memory-mapped, so untouched-since-load weights are file pages the kernel may reclaim)."""
    fields = {"RssAnon": "rss_anon_mib", "RssFile": "rss_file_mib"}
    values: dict[str, float | None] = dict.fromkeys(fields.values())
    try:
        with open("/proc/self/status") as status:
            for line in status:
                key = line.split(":")[0]
                if key in fields:
                    values[fields[key]] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return values


def build_config(name: str):
    from unif2ace_hf import UniF2aceConfig, UniF2aceVQConfig
    from unif2ace_hf.modeling.configuration_unif2ace import showo_vocabulary_layout

    if name == "tiny":
        text_vocab, codebook = 2048, 1024
        sizes = dict(
            hidden_size=256,
            intermediate_size=1024,
            num_hidden_layers=4,
            num_attention_heads=4,
            token_moe_layers=[0, 1, 2, 3],
            sequence_moe_layers=[0, 1, 2, 3],
            num_routed_experts=8,
            num_experts_per_tok=4,
            moe_intermediate_size=128,
            shared_expert_intermediate_size=128,
        )
    elif name in ("showo", "showo8"):
        text_vocab, codebook = 50295, 8192
        layers = 2 if name == "showo" else 8
        sizes = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=layers, num_attention_heads=32)
    else:
        raise ValueError(f"configs: unknown config {name!r}")
    from showo_sized import SHOWO_VQ

    vq = UniF2aceVQConfig(**{**SHOWO_VQ, "codebook_dim": codebook.bit_length() - 1})
    return UniF2aceConfig(
        **showo_vocabulary_layout(text_vocab, codebook),
        bos_token_id=0,
        eos_token_id=0,
        vq_config=vq,
        **sizes,
    )


def prepare_checkpoint(name: str, folder: Path) -> None:
    """Random weights saved once per config, so every case measures loading and training only."""
    import torch

    from unif2ace_hf import UniF2aceForConditionalGeneration

    torch.manual_seed(0)
    UniF2aceForConditionalGeneration(build_config(name)).save_pretrained(folder)


def batch(config, image_tokens: int):
    """One t2i row `[t2i][sot] text [eot][soi] codes [eoi]` and one mmu row `[mmu][soi] codes [eoi][sot] text`."""
    import torch

    generator = torch.Generator().manual_seed(0)
    text = torch.randint(1, config.text_vocab_size, (2, TEXT_TOKENS), generator=generator).tolist()
    codes = (
        torch.randint(0, config.codebook_size, (2, image_tokens), generator=generator) + config.image_token_offset
    ).tolist()
    t2i = [config.t2i_token_id, 0, *text[0], 0, config.soi_token_id, *codes[0], config.eoi_token_id]
    mmu = [config.mmu_token_id, config.soi_token_id, *codes[1], config.eoi_token_id, 0, *text[1], 0]
    return torch.tensor([t2i, mmu])


def weight_bytes(model) -> int:
    """Bytes held by parameters and buffers as stored (4-bit weights: packed uint8, two weights per byte)."""
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def run_case(config_name: str, case: str, checkpoint: str, steps: int) -> dict:
    """Runs in the child process: load, train `steps` steps, report peaks."""
    import torch

    from unif2ace_hf import UniF2aceForConditionalGeneration
    from unif2ace_hf.training.lora import apply_lora
    from unif2ace_hf.training.quantization import quantization_config

    after_import = peak_rss_mib()
    start = time.perf_counter()
    if case == "qlora-nf4":
        config = UniF2aceForConditionalGeneration.config_class.from_pretrained(checkpoint)
        model = UniF2aceForConditionalGeneration.from_pretrained(
            checkpoint, quantization_config=quantization_config(4, config)
        )
    else:
        model = UniF2aceForConditionalGeneration.from_pretrained(checkpoint)
    after_load = peak_rss_mib()
    load_seconds = time.perf_counter() - start
    has_experts = bool(model.config.token_moe_layers)
    if case == "full-ft-fp32":
        if model.vq_model is not None:
            model.vq_model.requires_grad_(False)  # the image tokenizer is never trained with the transformer
    else:
        model = apply_lora(model, {"r": 16, "alpha": 32, "target_experts": has_experts})
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)
    ids = batch(model.config, SEQUENCE_IMAGE_TOKENS)
    model.train()
    train_start = time.perf_counter()
    losses = []
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 4))
    return {
        "config": config_name,
        "case": case,
        "steps": steps,
        "tokens_per_step": int(ids.numel()),
        "trainable_parameters": sum(p.numel() for p in parameters),
        "weights_mib": round(weight_bytes(model) / 2**20, 1),
        "total_parameters": sum(p.numel() for p in model.parameters()),
        "peak_rss_mib_after_import": round(after_import, 1),
        "peak_rss_mib_after_load": round(after_load, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        **{f"{key}_after_train": value for key, value in current_rss_mib().items()},
        "load_seconds": round(load_seconds, 2),
        "train_seconds": round(time.perf_counter() - train_start, 2),
        "losses": losses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--output", default=str(Path(__file__).with_name("results_memory.json")))
    parser.add_argument("--child", nargs=3, metavar=("CONFIG", "CASE", "CHECKPOINT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(*args.child, steps=args.steps)))
        return

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        for config_name in args.configs:
            checkpoint = Path(tmp) / config_name
            # A separate process, so building the fp32 model does not count against any case.
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    f"import bench_memory as b; b.prepare_checkpoint({config_name!r}, {str(checkpoint)!r})",
                ],
                check=True,
                cwd=Path(__file__).parent,
                env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
            )
            for case in CASES[config_name]:
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--steps",
                        str(args.steps),
                        "--child",
                        config_name,
                        case,
                        str(checkpoint),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(
                    f"{row['config']:6} {row['case']:13} weights {row['weights_mib']:7.0f} MiB, trainable {row['trainable_parameters']:>12,} / "
                    f"{row['total_parameters']:>12,}  peak RSS: import {row['peak_rss_mib_after_import']:8.0f} MiB, "
                    f"load {row['peak_rss_mib_after_load']:6.0f}, train {row['peak_rss_mib']:6.0f} MiB; at end anon "
                    f"{row['rss_anon_mib_after_train']:6.0f} + file {row['rss_file_mib_after_train']:6.0f} MiB "
                    f"(load {row['load_seconds']} s, train {row['train_seconds']} s)",
                    flush=True,
                )
    result = {
        "benchmark": "peak RSS of a few AdamW training steps (batch: one t2i + one mmu row)",
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "rows": rows,
    }
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
