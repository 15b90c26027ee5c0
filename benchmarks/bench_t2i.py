"""Text-to-face speed: images/s of `UniF2acePipeline` against Show-o's sampling algorithm as published, implemented
here on the same model, weights, dtype, steps and seeds, and against diffusers' `AmusedPipeline` at matched width,
depth, tokens and steps (tiny random weights), all interleaved in one process.

Show-o's algorithm (`Showo.t2i_generate` + `mask_by_random_topk`): every step sends the whole `[cond; uncond]`
sequence (text + image) through the model, computes the full-vocabulary head at every position and slices the image
positions' code columns, combines guidance as `(1 + w) * cond - w * uncond`, samples every position with
`torch.multinomial`, and re-masks the least confident with `log p + temperature * Gumbel` found by a full sort, the
temperature annealed (compounding) per step. Ours caches the text prefix, runs `[soi] codes [eoi]` only, computes
codebook-only logits at image positions and samples with inverse-CDF + `kthvalue` (the scheduler).

Variants per config (each in fp32 and bf16): `ours` (the pipeline), `ours_no_prefix_cache` (the pipeline with
`use_prefix_cache=False`: the prefix cache's share), `show_o` (the published algorithm), `amused` (the library peer).
Configs: `default` (the shipped default model: d 256, 4 layers, token MoE in every layer, sequence MoE in two,
128 text + 256 image tokens, 1024 codes) and `showo` (Show-o-sized layers: d 2048, 2 layers, 32 heads, FFN 8192,
Phi's 50 295 text ids + Show-o's specials + 8192 codes, 129 text + 256 image tokens; random weights, dense).

    .venv/bin/python benchmarks/bench_t2i.py [--quick] [--configs default showo] [--output benchmarks/results_t2i.json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import torch
from diffusers import AmusedPipeline, AmusedScheduler, UVit2DModel, VQModel

from bench_common import interleaved_samples, machine_info
from showo_sized import random_words, showo_sized
from unif2ace_hf import DEFAULT_MODEL, UniF2aceConfig, UniF2aceForConditionalGeneration, UniF2acePipeline

PROMPT = "a young woman with wavy red hair, freckles, round glasses and a slight smile"
GUIDANCE = 3.0  # diffusers convention; Show-o's w = GUIDANCE - 1


# --------------------------------------------------------------------------------------------------- set-up


def showo_pipeline() -> tuple[UniF2acePipeline, str]:
    """The Show-o-sized model (2 layers, random weights) as a pipeline, and a 40-word prompt."""
    model, processor, scheduler = showo_sized(num_layers=2)
    prompt = random_words(40, torch.Generator().manual_seed(0))
    return UniF2acePipeline(model=model, processor=processor, scheduler=scheduler), prompt


def build_pipeline(name: str) -> tuple[UniF2acePipeline, str]:
    if name == "default":
        return UniF2acePipeline.from_pretrained(DEFAULT_MODEL), PROMPT
    if name == "showo":
        return showo_pipeline()
    raise ValueError(f"configs: unknown config {name!r} (default, showo)")


def amused_peer(config: UniF2aceConfig, text_length: int, dtype: torch.dtype) -> tuple[AmusedPipeline, dict]:
    """diffusers' aMUSEd at our width, depth, heads, FFN width, codebook and token counts (random weights); the text
    condition is given as embeddings of our text length (aMUSEd's CLIP text encoder is not part of the loop)."""
    side = 16
    torch.manual_seed(0)
    transformer = UVit2DModel(
        hidden_size=config.hidden_size,
        cond_embed_dim=config.hidden_size,
        encoder_hidden_size=config.hidden_size,
        micro_cond_encode_dim=16,
        micro_cond_embed_dim=80,
        vocab_size=config.codebook_size + 1,
        codebook_size=config.codebook_size,
        in_channels=config.hidden_size,
        block_out_channels=config.hidden_size,
        num_res_blocks=0,
        block_num_heads=config.num_attention_heads,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        sample_size=side,
    ).eval()
    vqvae = VQModel(
        block_out_channels=[8, 8],
        layers_per_block=1,
        latent_channels=4,
        num_vq_embeddings=config.codebook_size,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        norm_num_groups=4,
    ).eval()
    pipe = AmusedPipeline(
        vqvae=vqvae,
        tokenizer=None,
        text_encoder=None,
        transformer=transformer.to(dtype),
        scheduler=AmusedScheduler(mask_token_id=config.codebook_size),
    )
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(1)
    pooled = torch.randn(1, config.hidden_size, generator=generator).to(dtype)
    states = torch.randn(1, text_length, config.hidden_size, generator=generator).to(dtype)
    inputs = dict(
        prompt_embeds=pooled,
        encoder_hidden_states=states,
        negative_prompt_embeds=torch.zeros_like(pooled),
        negative_encoder_hidden_states=torch.zeros_like(states),
        height=side * pipe.vae_scale_factor,
        width=side * pipe.vae_scale_factor,
        guidance_scale=GUIDANCE,
        output_type="latent",
    )
    return pipe, inputs


# --------------------------------------------------------------------------------------------------- Show-o


def mask_by_random_topk(
    mask_len: torch.Tensor, probs: torch.Tensor, temperature: float, generator: torch.Generator
) -> torch.Tensor:
    """Show-o's re-masking rule: the `mask_len` positions with the lowest `log p + temperature * Gumbel`, by a sort."""
    uniform = torch.rand(probs.shape, generator=generator, device=probs.device)
    gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-20)).clamp_min(1e-20))
    confidence = torch.log(probs) + temperature * gumbel
    sorted_confidence, _ = torch.sort(confidence, dim=-1)
    cut_off = torch.gather(sorted_confidence, 1, mask_len.long())
    return confidence < cut_off


@torch.inference_mode()
def show_o_generate(
    pipe: UniF2acePipeline, prompt: str, steps: int, generator: torch.Generator, temperature: float = 1.0
) -> torch.Tensor:
    """Show-o's `t2i_generate` on our model: the whole sequence, full-vocabulary logits, multinomial, sort."""
    model, config = pipe.model, pipe.model.config
    num_tokens = pipe.processor.num_image_tokens
    encoded = pipe.processor.build_t2i_inputs([prompt, ""])
    input_ids, attention_mask = encoded["input_ids"], encoded["attention_mask"]
    start, stop = config.image_token_range
    w = GUIDANCE - 1.0
    for step in range(steps):
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        cond, uncond = logits[:1], logits[1:]
        logits = (1 + w) * cond - w * uncond
        logits = logits[:, -(num_tokens + 1) : -1, start:stop]
        image_ids = input_ids[:1, -(num_tokens + 1) : -1]
        unknown = image_ids == config.mask_token_id
        probs = logits.softmax(dim=-1)
        sampled = torch.multinomial(probs.view(-1, probs.shape[-1]).float(), 1, generator=generator)[:, 0]
        sampled = sampled.view(*probs.shape[:-1])
        sampled = torch.where(unknown, sampled, image_ids - start)
        ratio = (step + 1) / steps
        mask_ratio = math.cos(math.pi / 2 * ratio)
        selected = torch.gather(probs, -1, sampled[..., None].long())[..., 0]
        selected = torch.where(unknown, selected, torch.finfo(selected.dtype).max)
        mask_len = torch.tensor([math.floor(num_tokens * mask_ratio)])
        mask_len = torch.maximum(torch.ones_like(mask_len), torch.minimum(unknown.sum(-1, keepdim=True) - 1, mask_len))
        temperature = temperature * (1.0 - ratio)
        masking = mask_by_random_topk(mask_len, selected, temperature, generator)
        new_image = torch.where(masking, config.mask_token_id, sampled + start)
        input_ids = input_ids.clone()
        input_ids[:, -(num_tokens + 1) : -1] = new_image
    return input_ids[:1, -(num_tokens + 1) : -1] - start


# --------------------------------------------------------------------------------------------------- timing


def run_config(name: str, steps: int, repeats: int) -> dict:
    pipe, prompt = build_pipeline(name)
    pipe.set_progress_bar_config(disable=True)
    config = pipe.model.config
    text_length = pipe.processor.max_text_length
    pipes = {"fp32": pipe}
    bf16 = UniF2acePipeline(
        model=UniF2aceForConditionalGeneration(config).to(torch.bfloat16).eval(),
        processor=pipe.processor,
        scheduler=pipe.scheduler,
    )
    bf16.model.load_state_dict(pipe.model.state_dict())
    bf16.set_progress_bar_config(disable=True)
    pipes["bf16"] = bf16
    amused = {
        key: amused_peer(config, text_length, dtype)
        for key, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
    }

    def ours(key: str, cache: bool = True, count: int = steps):
        return lambda: (
            pipes[key](
                prompt,
                num_inference_steps=count,
                guidance_scale=GUIDANCE,
                generator=torch.Generator().manual_seed(0),
                output_type="codes",
                use_prefix_cache=cache,
            ).images
        )

    def show_o(key: str, count: int = steps):
        return lambda: show_o_generate(pipes[key], prompt, count, torch.Generator().manual_seed(0))

    def peer(key: str, count: int = steps):
        amused_pipe, inputs = amused[key]
        return lambda: (
            amused_pipe(**inputs, num_inference_steps=count, generator=torch.Generator().manual_seed(0)).images
        )

    variants = {}
    for key in ("fp32", "bf16"):
        variants[f"ours_{key}"] = ours(key)
        variants[f"ours_no_prefix_cache_{key}"] = ours(key, cache=False)
        variants[f"show_o_{key}"] = show_o(key)
        variants[f"amused_{key}"] = peer(key)
    exact = bool(torch.equal(ours("fp32")(), ours("fp32", cache=False)()))
    samples = interleaved_samples(variants, repeats)
    median = {key: statistics.median(values) for key, values in samples.items()}
    rows = []
    for key in ("fp32", "bf16"):
        rows.append(
            {
                "config": name,
                "dtype": key,
                "ours_images_per_s": 1 / median[f"ours_{key}"],
                "ours_no_prefix_cache_images_per_s": 1 / median[f"ours_no_prefix_cache_{key}"],
                "show_o_images_per_s": 1 / median[f"show_o_{key}"],
                "amused_images_per_s": 1 / median[f"amused_{key}"],
                "speedup_vs_show_o": median[f"show_o_{key}"] / median[f"ours_{key}"],
                "prefix_cache_speedup": median[f"ours_no_prefix_cache_{key}"] / median[f"ours_{key}"],
                "speedup_vs_amused": median[f"amused_{key}"] / median[f"ours_{key}"],
            }
        )
    return {
        "config": name,
        "setting": {
            "hidden_size": config.hidden_size,
            "layers": config.num_hidden_layers,
            "heads": config.num_attention_heads,
            "intermediate_size": config.intermediate_size,
            "token_moe_layers": list(config.token_moe_layers),
            "vocab_size": config.vocab_size,
            "codebook_size": config.codebook_size,
            "text_tokens": text_length,
            "image_tokens": pipe.processor.num_image_tokens,
            "steps": steps,
            "guidance_scale": GUIDANCE,
            "batch": 1,
        },
        "rows": rows,
        "bf16_vs_fp32_ours": median["ours_fp32"] / median["ours_bf16"],
        "bf16_vs_fp32_show_o": median["show_o_fp32"] / median["show_o_bf16"],
        "prefix_cached_codes_equal_full_recompute": exact,
        "samples_s": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, 2 steps")
    parser.add_argument("--configs", nargs="+", default=["default", "showo"])
    parser.add_argument("--threads", type=int, default=1, help="1: a shared machine's load hurts 2 threads more")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default="benchmarks/results_t2i.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps, repeats = (2, 1) if args.quick else (args.steps, args.repeats)
    results = {"machine": machine_info(), "steps": steps, "repeats": repeats, "configs": {}}
    for name in args.configs:
        result = run_config(name, steps, repeats)
        results["configs"][name] = result
        for row in result["rows"]:
            print(
                f"{name:8s} {row['dtype']}: ours {row['ours_images_per_s']:.3f} images/s, Show-o algorithm "
                f"{row['show_o_images_per_s']:.3f} ({row['speedup_vs_show_o']:.2f}x), no prefix cache "
                f"{row['ours_no_prefix_cache_images_per_s']:.3f} (cache {row['prefix_cache_speedup']:.2f}x), "
                f"aMUSEd {row['amused_images_per_s']:.3f} ({row['speedup_vs_amused']:.2f}x)",
                flush=True,
            )
        print(
            f"{name:8s} bf16 vs fp32 (ours): {result['bf16_vs_fp32_ours']:.2f}x; prefix-cached codes equal full "
            f"recompute: {result['prefix_cached_codes_equal_full_recompute']}",
            flush=True,
        )
    if "showo" in results["configs"]:
        fp32 = next(r for r in results["configs"]["showo"]["rows"] if r["dtype"] == "fp32")
        results["t2i_speedup_vs_published_algorithm"] = fp32["speedup_vs_show_o"]
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
