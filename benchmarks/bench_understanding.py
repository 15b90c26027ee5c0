"""Understanding speed: milliseconds per generated token with the KV cache (our `generate`) against Show-o's loop,
which sends the whole sequence through the model for every new token, on the same model and weights, side by side in
one process. Also transformers' `PhiForCausalLM.generate` at equal dimensions (dense, no MoE) as the library peer.

    .venv/bin/python benchmarks/bench_understanding.py [--quick] [--output benchmarks/results_understanding.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from transformers import PhiConfig, PhiForCausalLM

from bench_common import interleaved_samples, machine_info
from unif2ace_hf import UniF2aceConfig, UniF2aceForConditionalGeneration

TEXT_VOCAB, CODEBOOK = 2048, 1024


def build_config(moe: bool) -> UniF2aceConfig:
    layout = dict(
        text_vocab_size=TEXT_VOCAB,
        pad_token_id=TEXT_VOCAB,
        soi_token_id=TEXT_VOCAB + 1,
        eoi_token_id=TEXT_VOCAB + 2,
        t2i_token_id=TEXT_VOCAB + 5,
        mmu_token_id=TEXT_VOCAB + 6,
        image_token_offset=TEXT_VOCAB + 10,
        codebook_size=CODEBOOK,
        mask_token_id=TEXT_VOCAB + 10 + CODEBOOK,
        vocab_size=TEXT_VOCAB + 11 + CODEBOOK,
        bos_token_id=0,
        eos_token_id=0,
    )
    sizes = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=6, num_attention_heads=8)
    moe_settings = dict(
        token_moe_layers=list(range(6)),
        sequence_moe_layers=list(range(6)),
        num_routed_experts=8,
        num_experts_per_tok=4,
        moe_intermediate_size=256,
        shared_expert_intermediate_size=256,
    )
    return UniF2aceConfig(**layout, **sizes, **(moe_settings if moe else {}))


def mmu_prompt(config: UniF2aceConfig, batch: int, image_tokens: int = 256, text_tokens: int = 32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    image = (
        torch.randint(0, config.codebook_size, (batch, image_tokens), generator=generator) + config.image_token_offset
    )
    text = torch.randint(1, config.text_vocab_size, (batch, text_tokens), generator=generator)
    head = torch.tensor([[config.mmu_token_id, config.soi_token_id]] * batch)
    middle = torch.tensor([[config.eoi_token_id, config.bos_token_id]] * batch)
    return torch.cat([head, image, middle, text], dim=1)


@torch.inference_mode()
def show_o_loop(model, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Show-o's `mmu_generate`: no cache, the whole sequence through the model for every token (greedy)."""
    sequence = prompt
    for _ in range(new_tokens):
        logits = model(input_ids=sequence, use_cache=False).logits[:, -1]
        sequence = torch.cat([sequence, logits.argmax(-1, keepdim=True)], dim=1)
    return sequence


@torch.inference_mode()
def cached_generate(model, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    # explicit mask: with a pad id inside the prompt's vocabulary, generate would mask those tokens out
    return model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=model.config.vocab_size - 1,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and only 8/32 tokens")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--output", default="benchmarks/results_understanding.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    token_counts = (8, 32) if args.quick else (8, 32, 128)
    # Show-o's loop costs O(n^2): at 128 new tokens one call is ~40 s on one core, so that count runs twice and its
    # token-for-token check is left to the shorter counts (the cache is exact or it is not).
    repeats_for = {8: 1, 32: 1} if args.quick else {8: 3, 32: 3, 128: 2}

    model = UniF2aceForConditionalGeneration(build_config(moe=True)).eval()
    dense_config = build_config(moe=False)
    phi = PhiForCausalLM(
        PhiConfig(
            vocab_size=dense_config.vocab_size,
            hidden_size=dense_config.hidden_size,
            intermediate_size=dense_config.intermediate_size,
            num_hidden_layers=dense_config.num_hidden_layers,
            num_attention_heads=dense_config.num_attention_heads,
            qk_layernorm=True,
            partial_rotary_factor=0.5,
        )
    ).eval()
    dense = UniF2aceForConditionalGeneration(dense_config).eval()
    dense.load_state_dict(phi.state_dict(), strict=False)
    prompt = mmu_prompt(model.config, args.batch)

    rows = []
    for index, new_tokens in enumerate(token_counts):
        same = (
            torch.equal(cached_generate(model, prompt, new_tokens), show_o_loop(model, prompt, new_tokens))
            if new_tokens <= 32
            else None
        )
        samples = interleaved_samples(
            {
                "cached": lambda n=new_tokens: cached_generate(model, prompt, n),
                "recompute": lambda n=new_tokens: show_o_loop(model, prompt, n),
                "ours_dense": lambda n=new_tokens: cached_generate(dense, prompt, n),
                "phi": lambda n=new_tokens: cached_generate(phi, prompt, n),
            },
            repeats_for[new_tokens],
            warmup=index == 0,  # the first (shortest) count warms every variant up; the output check also runs
        )
        medians = {name: statistics.median(values) for name, values in samples.items()}
        cached, recompute, ours_dense, phi_time = (
            medians[name] for name in ("cached", "recompute", "ours_dense", "phi")
        )
        row = {
            "new_tokens": new_tokens,
            "cached_ms_per_token": cached / new_tokens * 1000,
            "show_o_recompute_ms_per_token": recompute / new_tokens * 1000,
            "speedup_vs_recompute": recompute / cached,
            "dense_ours_ms_per_token": ours_dense / new_tokens * 1000,
            "phi_generate_ms_per_token": phi_time / new_tokens * 1000,
            "dense_ours_vs_phi": phi_time / ours_dense,
            "identical_tokens": same,
        }
        rows.append(row)
        print(
            f"{new_tokens:4d} new tokens: cached {row['cached_ms_per_token']:7.2f} ms/token, Show-o loop "
            f"{row['show_o_recompute_ms_per_token']:7.2f} ms/token ({row['speedup_vs_recompute']:.1f}x), identical: {same} | "
            f"dense: ours {row['dense_ours_ms_per_token']:.2f} vs Phi generate {row['phi_generate_ms_per_token']:.2f} ms/token"
        )
    results = {
        "machine": machine_info(args.threads),
        "repeats": repeats_for,
        "setting": {
            "prompt_tokens": prompt.shape[1],
            "batch": args.batch,
            "hidden_size": 512,
            "layers": 6,
            "moe": "8 experts top-4 + shared, sequence MoE",
        },
        "rows": rows,
        "mmu_speedup_vs_no_cache_32_tokens": next(r["speedup_vs_recompute"] for r in rows if r["new_tokens"] == 32),
    }
    Path(args.output).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
