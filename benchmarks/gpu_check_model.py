"""GPU checks that CPU CI cannot make: the CUDA bf16 grouped_mm expert path, cached generation on CUDA, and the
MoE layer's time against a dense FFN of equal active width on the GPU. Run on a machine with CUDA:

    python benchmarks/gpu_check_model.py [--output results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from tiny_models import tiny_config  # noqa: E402
from unif2ace_hf import UniF2aceConfig, UniF2aceForConditionalGeneration  # noqa: E402
from unif2ace_hf.modeling import moe as moe_module  # noqa: E402
from unif2ace_hf.modeling.moe import UniF2aceMLP, UniF2aceTokenMoE  # noqa: E402


def cuda_time(fn, repeats: int = 20) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1000


def time_moe_against_dense(moe: UniF2aceTokenMoE, groups: torch.Tensor, tokens: int, device: torch.device) -> dict:
    """bf16 forward and forward+backward of the MoE against a dense FFN of equal active width."""
    x = torch.randn(8, tokens // 8, 1024, device=device, dtype=torch.bfloat16, requires_grad=True)
    valid = torch.ones(8, tokens // 8, dtype=torch.bool, device=device)
    dense = UniF2aceMLP(1024, 4 * 512 + 512, "gelu_new").to(device, torch.bfloat16)
    with torch.no_grad():
        moe_ms = cuda_time(lambda: moe(x, groups, valid))
        dense_ms = cuda_time(lambda: dense(x))
    moe_train = cuda_time(lambda: moe(x, groups, valid)[0].float().sum().backward())
    dense_train = cuda_time(lambda: dense(x).float().sum().backward())
    return {
        "moe_forward_ms": moe_ms,
        "dense_forward_ms": dense_ms,
        "moe_train_ms": moe_train,
        "dense_train_ms": dense_train,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    device = torch.device("cuda")
    results: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}

    # 1. grouped_mm (bf16, CUDA) vs the per-expert fallback on the same weights and tokens
    config = UniF2aceConfig(
        hidden_size=1024,
        num_attention_heads=8,
        token_moe_layers=[0],
        num_routed_experts=8,
        num_experts_per_tok=4,
        moe_intermediate_size=512,
        shared_expert_intermediate_size=512,
    )
    moe = UniF2aceTokenMoE(config).to(device, torch.bfloat16)
    hidden = torch.randn(8, 256, 1024, device=device, dtype=torch.bfloat16)
    groups = torch.tensor([0, 1] * 4, device=device)
    valid = torch.ones(8, 256, dtype=torch.bool, device=device)
    fast, _ = moe(hidden, groups, valid)
    original = moe_module._grouped_mm_supported
    moe_module._grouped_mm_supported = lambda *a: False
    slow, _ = moe(hidden, groups, valid)
    moe_module._grouped_mm_supported = original
    results["grouped_mm_vs_fallback_max_abs"] = (fast.float() - slow.float()).abs().max().item()
    results["grouped_mm_used"] = bool(original(hidden.reshape(-1, 1024), moe.groups["t2i"].experts.up_proj))

    # 2. cached vs uncached greedy generation, and a cached image chunk, on CUDA (fp32)
    torch.manual_seed(0)
    model = UniF2aceForConditionalGeneration(tiny_config()).to(device).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" not in name:
                p.normal_(std=0.2)
    c = model.config
    ids = torch.tensor([[c.mmu_token_id, c.soi_token_id, *range(110, 118), c.eoi_token_id, 0, 5, 6, 7]], device=device)
    kw = dict(max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=c.pad_token_id)
    results["generate_cache_equals_no_cache"] = bool(
        torch.equal(model.generate(ids, **kw), model.generate(ids, use_cache=False, **kw))
    )

    # 3. speed: MoE layer vs dense FFN of equal active width, bf16, forward and forward+backward
    timings = {}
    for tokens in (2048, 16384):
        timings[tokens] = time_moe_against_dense(moe, groups, tokens, device)
    results["moe_vs_dense_bf16"] = timings
    print(json.dumps(results, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
