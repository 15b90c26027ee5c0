"""Text-to-face sampling speed: steps/s of the MaskGIT loop with vs without the text-prefix cache and with vs without
batched guidance, side by side in one process on the same model, weights, seeds and steps.

Variants (all use codebook-only logits and the same scheduler):
* `cache+batched`  — what `UniF2acePipeline` does: text prefix K/V once, cond and uncond in one forward per step;
* `nocache+batched` — the whole sequence through the model every step (Show-o's loop), cond+uncond batched;
* `cache+sequential` — prefix cached, but cond and uncond as two forwards per step.
Configs: `tiny` (the default model's size class) and `showo` (Show-o-sized layers: d = 2048, 2 layers, 32 heads,
FFN 8192, 129 text + 256 image tokens, 8192 codes). fp32 and bf16.

    .venv/bin/python benchmarks/bench_t2i.py [--quick] [--configs tiny showo] [--output benchmarks/results_t2i.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from transformers import DynamicCache

from unif2ace_hf import UniF2aceConfig, UniF2aceForConditionalGeneration, UniF2aceMaskGITScheduler, UniF2aceVQConfig
from unif2ace_hf.modeling.configuration_unif2ace import showo_vocabulary_layout

TINY_VQ = dict(
    image_size=32,
    base_channels=32,
    encoder_channel_multipliers=[1, 2],
    decoder_channel_multipliers=[1, 2],
    encoder_num_res_blocks=[1, 1],
    decoder_num_res_blocks=[1, 1],
    attn_resolutions=[],
)


def build_model(name: str) -> tuple[UniF2aceForConditionalGeneration, int]:
    """Model and text-part length for a config name; 256 image tokens in both."""
    if name == "tiny":
        text_vocab, codebook, text_length = 2048, 1024, 64
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
    elif name == "showo":
        text_vocab, codebook, text_length = 50295, 8192, 129
        sizes = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=2, num_attention_heads=32)
    else:
        raise ValueError(f"configs: unknown config {name!r}")
    codebook_dim = codebook.bit_length() - 1
    config = UniF2aceConfig(
        **showo_vocabulary_layout(text_vocab, codebook),
        bos_token_id=0,
        eos_token_id=0,
        vq_config=UniF2aceVQConfig(**TINY_VQ, codebook_dim=codebook_dim),
        **sizes,
    )
    torch.manual_seed(0)
    return UniF2aceForConditionalGeneration(config).eval(), text_length


def prompts(config: UniF2aceConfig, batch: int, text_length: int, num_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cond rows then uncond rows: `[pad]* [t2i][sot] text [eot] [soi] mask×N [eoi]`, text part of fixed length."""
    generator = torch.Generator().manual_seed(0)
    rows = []
    for index in range(2 * batch):
        words = 40 if index < batch else 0
        text = torch.randint(1, config.text_vocab_size, (words,), generator=generator).tolist()
        part = [config.t2i_token_id, config.bos_token_id, *text, config.eos_token_id]
        part = [config.pad_token_id] * (text_length - len(part)) + part
        rows.append(part + [config.soi_token_id] + [config.mask_token_id] * num_tokens + [config.eoi_token_id])
    ids = torch.tensor(rows)
    return ids, (ids != config.pad_token_id).long()


@torch.inference_mode()
def sample(
    model, scheduler, ids, mask, steps: int, prefix_cache: bool, batched_guidance: bool, guidance: float = 3.0
) -> torch.Tensor:
    config = model.config
    rows, num_tokens = ids.shape[0], 256
    batch = rows // 2
    prefix = ids.shape[1] - num_tokens - 2
    codes = torch.full((batch, num_tokens), scheduler.config.mask_token_id, dtype=torch.long)
    generator = torch.Generator().manual_seed(0)
    caches = []
    if prefix_cache:
        groups = [slice(0, rows)] if batched_guidance else [slice(0, batch), slice(batch, rows)]
        for group in groups:
            cache = DynamicCache(config=config)
            model.model(input_ids=ids[group, :prefix], attention_mask=mask[group, :prefix], cache=cache, use_cache=True)
            caches.append((group, cache))
    scheduler.set_timesteps(steps)
    for timestep in scheduler.timesteps:
        image = torch.where(
            codes == scheduler.config.mask_token_id, config.mask_token_id, codes + config.image_token_offset
        )
        image = image.repeat(2, 1)
        groups = [slice(0, rows)] if batched_guidance else [slice(0, batch), slice(batch, rows)]
        outputs = []
        for index, group in enumerate(groups):
            if prefix_cache:
                cache = caches[index][1]
                extra = cache.get_seq_length() - prefix
                if extra > 0:
                    cache.crop(-extra)
                chunk = torch.cat([ids[group, prefix : prefix + 1], image[group], ids[group, -1:]], dim=1)
                hidden = model.model(
                    input_ids=chunk, attention_mask=mask[group], cache=cache, use_cache=True
                ).last_hidden_state
            else:
                full = torch.cat([ids[group, : prefix + 1], image[group], ids[group, -1:]], dim=1)
                hidden = model.model(input_ids=full, attention_mask=mask[group], use_cache=False).last_hidden_state
            outputs.append(model.codebook_logits(hidden[:, -(num_tokens + 1) : -1]))
        logits = torch.cat(outputs)
        logits = logits[batch:] + guidance * (logits[:batch] - logits[batch:])
        codes = scheduler.step(logits, timestep, codes, generator=generator).prev_sample
    return codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--configs", nargs="+", default=["tiny", "showo"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--output", default="benchmarks/results_t2i.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else 2
    variants = {"cache+batched": (True, True), "nocache+batched": (False, True), "cache+sequential": (True, False)}
    results = {
        "machine": {"processor": platform.processor(), "torch": torch.__version__, "threads": args.threads},
        "steps": args.steps,
        "rows": [],
    }
    for name in args.configs:
        model, text_length = build_model(name)
        scheduler = UniF2aceMaskGITScheduler(
            mask_token_id=model.config.codebook_size, codebook_size=model.config.codebook_size
        )
        ids, mask = prompts(model.config, 1, text_length, 256)
        for dtype in (torch.float32, torch.bfloat16):
            model.to(dtype)
            reference = sample(model, scheduler, ids, mask, args.steps, True, True)
            for cache, batched in variants.values():  # warm-up: first calls pay for allocator and kernel set-up
                sample(model, scheduler, ids, mask, 1, cache, batched)
            timings = {}
            for _ in range(repeats):
                for variant, (cache, batched) in variants.items():
                    start = time.perf_counter()
                    codes = sample(model, scheduler, ids, mask, args.steps, cache, batched)
                    elapsed = time.perf_counter() - start
                    timings[variant] = min(timings.get(variant, float("inf")), elapsed)
                    if dtype == torch.float32 and variant == "nocache+batched":
                        results.setdefault("exact_prefix_cache", {})[name] = bool(torch.equal(codes, reference))
            row = {
                "config": name,
                "dtype": str(dtype).split(".")[-1],
                **{f"{v}_steps_per_s": args.steps / t for v, t in timings.items()},
            }
            row["prefix_cache_speedup"] = timings["nocache+batched"] / timings["cache+batched"]
            row["batched_guidance_speedup"] = timings["cache+sequential"] / timings["cache+batched"]
            results["rows"].append(row)
            print(
                f"{name:6s} {row['dtype']:9s} steps/s: cache+batched {row['cache+batched_steps_per_s']:.2f}, "
                f"nocache {row['nocache+batched_steps_per_s']:.2f} (prefix cache {row['prefix_cache_speedup']:.2f}x), "
                f"sequential guidance {row['cache+sequential_steps_per_s']:.2f} (batching {row['batched_guidance_speedup']:.2f}x)"
            )
        del model
    print("prefix-cached codes equal full recompute (fp32):", results.get("exact_prefix_cache"))
    Path(args.output).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
