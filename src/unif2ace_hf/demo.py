"""`make demo` / `unif2ace demo`: the embedded default model end to end, then the Show-o conversion path.

Part 1 (`demo_showcase.run_showcase`, when `unif2ace_hf.DEFAULT_MODEL` is shipped): faces from detailed captions,
a hair-colour edit, answers about them and about a real photograph, PNGs and index.html in the output folder. Part 2: build a small random Phi (the architecture Show-o wraps), save it the way
Show-o saves itself, convert it with `unif2ace convert-showo --moe upcycle`, check that the two-level MoE model computes
exactly what Phi computes, and time KV-cached answers against Show-o's recompute-everything loop. No downloads.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch


def build_showo_folder(root: Path, text_vocab: int = 1000, codebook: int = 256) -> tuple[torch.nn.Module, Path, Path]:
    from safetensors.torch import save_file
    from transformers import PhiConfig, PhiForCausalLM

    vocab = text_vocab + 10 + codebook + 1
    phi_config = PhiConfig(
        vocab_size=vocab,
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=8,
        qk_layernorm=True,
        partial_rotary_factor=0.5,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    phi = PhiForCausalLM(phi_config).eval()
    showo = root / "showo"
    showo.mkdir()
    save_file(
        {f"showo.{k}": v.contiguous() for k, v in phi.state_dict().items()}, str(showo / "pytorch_model.safetensors")
    )
    (showo / "config.json").write_text(
        json.dumps(
            {
                "_class_name": "Showo",
                "codebook_size": codebook,
                "llm_vocab_size": text_vocab,
                "vocab_size": vocab,
                "mask_token_id": vocab - 1,
                "num_vq_tokens": 64,
                "llm_model_path": str(root / "phi"),
                "w_clip_vit": False,
            }
        )
    )
    phi_config.save_pretrained(root / "phi")
    return phi, showo, root / "phi"


def show_o_style_answer(model, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Show-o's understanding loop: the whole sequence through the model for every new token, no cache."""
    sequence = prompt
    for _ in range(new_tokens):
        logits = model(input_ids=sequence, use_cache=False).logits[:, -1]
        sequence = torch.cat([sequence, logits.argmax(-1, keepdim=True)], dim=1)
    return sequence


def main(output_dir: str | Path = "demo_outputs", model: str = "default", conversion: bool = True) -> None:
    """The showcase on `model` (`default`: the shipped model), then the Show-o conversion check."""
    import unif2ace_hf
    from unif2ace_hf.demo_showcase import run_showcase

    path = unif2ace_hf.DEFAULT_MODEL if model == "default" else model
    if path is not None:
        run_showcase(str(path), Path(output_dir))
    else:
        print("(the default model is not shipped in this checkout; showing the conversion path only)")
    if conversion:
        conversion_demo()


def conversion_demo() -> None:
    """A random Phi saved the way Show-o saves itself, converted, checked for parity and timed against Show-o's
    recompute-everything understanding loop."""
    from unif2ace_hf import UniF2aceForConditionalGeneration
    from unif2ace_hf.cli import main as cli

    print("D. the Show-o conversion path")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        phi, showo, phi_config = build_showo_folder(root)
        print("1. built a Show-o-style folder around a random Phi (4 layers, d=256)")
        cli(
            [
                "convert-showo",
                "--showo-dir",
                str(showo),
                "--llm-config",
                str(phi_config),
                "--output-dir",
                str(root / "unif2ace"),
                "--moe",
                "upcycle",
            ]
        )
        model = UniF2aceForConditionalGeneration.from_pretrained(root / "unif2ace").eval()
        config = model.config
        print(
            f"2. converted with --moe upcycle: token MoE in layers {config.token_moe_layers} "
            f"({config.num_routed_experts} routed experts top-{config.num_experts_per_tok} + shared, per task group), "
            f"sequence MoE {config.sequence_moe_experts}"
        )

        text = torch.randint(0, config.text_vocab_size, (2, 48))
        with torch.no_grad():
            gap = (model(input_ids=text).logits - phi(input_ids=text).logits).abs().max().item()
        print(f"3. parity with transformers' PhiForCausalLM on the same weights: max |Δlogit| = {gap:.2e}")

        image = torch.randint(0, config.codebook_size, (2, 64)) + config.image_token_offset
        prompt = torch.cat(
            [
                torch.tensor([[config.mmu_token_id, config.soi_token_id]] * 2),
                image,
                torch.tensor([[config.eoi_token_id, config.bos_token_id]] * 2),
                torch.randint(0, config.text_vocab_size, (2, 16)),
            ],
            dim=1,
        )
        with torch.no_grad():
            out = model(input_ids=prompt)
            print(
                f"4. understanding prompt [mmu][soi] 64 codes [eoi][sot] 16 tokens: logits {tuple(out.logits.shape)}, "
                f"balance { ({k: round(v.item(), 3) for k, v in out.balance_losses.items()}) }"
            )
            new_tokens = 32
            start = time.perf_counter()
            cached = model.generate(prompt, max_new_tokens=new_tokens, do_sample=False, eos_token_id=None)
            cached_s = time.perf_counter() - start
            start = time.perf_counter()
            recomputed = show_o_style_answer(model, prompt, new_tokens)
            recompute_s = time.perf_counter() - start
        same = torch.equal(cached, recomputed)
        print(
            f"5. {new_tokens} greedy tokens, batch 2: KV cache {cached_s * 1000:.0f} ms vs full recompute "
            f"{recompute_s * 1000:.0f} ms ({recompute_s / cached_s:.1f}x), identical tokens: {same}"
        )
        if gap > 1e-4 or not same:
            raise SystemExit("demo check failed")


if __name__ == "__main__":
    main()
