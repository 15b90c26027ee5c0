"""Time the grouped token-level MoE against a dense FFN that does the same work per token.

Why: a token-level MoE layer spends, per token, the FLOPs of its top-k routed experts plus its shared expert(s).
A dense `UniF2aceMLP` of width `k * moe_intermediate_size + num_shared_experts * shared_expert_intermediate_size`
spends exactly as many, so the ratio `moe / dense` printed here is the MoE's overhead at equal *active* FLOPs:
routing, sorting tokens by expert, gathering/scattering them, the bias gathers and the grouped matmuls (which are
less efficient than one large GEMM, the more so the smaller the experts). 1.0 means the MoE is free; reference
figures from the scouting notes for transformers' `grouped_mm` path at large T are 1.0-1.2x for coarse experts and
1.6-2.0x for fine-grained ones. Small T is dominated by per-op overhead, so expect larger ratios there.

Each cell (config, tokens T, dtype, mode) runs the MoE, the dense FFN and transformers' Qwen3-MoE sparse block
(`grouped_mm` and `eager` experts, equal hidden size, experts, top-k and expert width) interleaved, after a warm-up,
and reports the median over the repeats; all samples are kept in the JSON output. Mode "forward" runs under
`torch.inference_mode()` on a one-task batch (all rows t2i, as in a generation or an understanding batch); mode
"train" is forward plus backward (into the inputs and all parameters; the MoE's balance terms join the loss with
weight 0.01) on a mixed batch (half t2i rows, half mmu rows, so both groups run).

    .venv/bin/python benchmarks/bench_moe.py            # full run, a few minutes at most on 2 cores
    .venv/bin/python benchmarks/bench_moe.py --quick    # smoke run
    .venv/bin/python benchmarks/bench_moe.py --profile  # also profile the MoE in the key cell (stored in the JSON)
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from bench_common import machine_info
from unif2ace_hf import UniF2aceConfig
from unif2ace_hf.modeling.moe import UniF2aceMLP, UniF2aceTokenMoE, _grouped_mm_supported

CONFIGS: dict[str, dict[str, int]] = {
    # Default-model-like: fine-grained experts (narrow, top-4 of 8).
    "tiny": {
        "hidden_size": 256,
        "num_routed_experts": 8,
        "num_experts_per_tok": 4,
        "moe_intermediate_size": 128,
        "num_shared_experts": 1,
        "shared_expert_intermediate_size": 128,
    },
    # Wider, coarser experts (top-2 of 8).
    "wide": {
        "hidden_size": 1024,
        "num_routed_experts": 8,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 512,
        "num_shared_experts": 1,
        "shared_expert_intermediate_size": 512,
    },
    # Show-o-sized layer (d = 2048) with UniF²ace's expert counts (1 shared + 8 routed, top-4); Phi's 8192-wide FFN
    # split into experts of 1024 (the paper does not give the width).
    "showo": {
        "hidden_size": 2048,
        "num_routed_experts": 8,
        "num_experts_per_tok": 4,
        "moe_intermediate_size": 1024,
        "num_shared_experts": 1,
        "shared_expert_intermediate_size": 1024,
    },
}
DEFAULT_CONFIGS = ("tiny", "showo")
DEFAULT_TOKENS = (512,)
# Inference batches hold one task (a generation or an understanding batch); training batches mix both groups.
ROWS_FOR_MODE = {"forward": "one-task", "train": "mixed"}
BATCH_ROWS = 8
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MODES = ("forward", "train")
BALANCE_WEIGHT = 0.01
REFERENCE_MAX_TOKENS = 256


@dataclass
class Settings:
    repeats: int
    warmup: int
    min_sample_s: float
    reference: bool


@dataclass
class CellResult:
    config: str
    tokens: int
    batch: int
    length: int
    dtype: str
    mode: str
    rows: str
    moe_ms: float
    dense_ms: float
    ratio: float
    moe_median_ms: float
    dense_median_ms: float
    qwen3_ms: float | None = None
    qwen3_eager_ms: float | None = None
    reference_ms: float | None = None
    reference_max_abs_diff: float | None = None
    moe_calls_per_sample: int = 1
    dense_calls_per_sample: int = 1
    grouped_mm: bool = False
    samples_ms: dict[str, list[float]] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------- set-up


def make_config(name: str) -> UniF2aceConfig:
    """A config with a token MoE on layer 0, so the MoE settings are validated."""
    return UniF2aceConfig(**CONFIGS[name], token_moe_layers=[0], hidden_act="gelu_new")


def dense_width(config: UniF2aceConfig) -> int:
    """Width of the dense FFN that spends, per token, the FLOPs of the MoE's active experts."""
    routed = config.num_experts_per_tok * config.moe_intermediate_size
    return routed + config.num_shared_experts * config.shared_expert_intermediate_size


def init_params(module: nn.Module, std: float) -> None:
    """Normal weights, zero biases (the fused expert weights are created with `torch.empty`)."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            else:
                param.normal_(0.0, std)


def build_modules(config: UniF2aceConfig, dtype: torch.dtype, seed: int) -> tuple[UniF2aceTokenMoE, UniF2aceMLP]:
    torch.manual_seed(seed)
    moe = UniF2aceTokenMoE(config)
    dense = UniF2aceMLP(config.hidden_size, dense_width(config), config.hidden_act)
    for module in (moe, dense):
        init_params(module, config.initializer_range)
    return moe.to(dtype), dense.to(dtype)


def make_inputs(
    config: UniF2aceConfig, tokens: int, dtype: torch.dtype, seed: int, rows: str = "mixed"
) -> tuple[torch.Tensor, torch.LongTensor, torch.Tensor]:
    """`(B, L, H)` hidden states (unit scale, like a normed residual stream); rows alternate t2i/mmu ("mixed") or
    are all t2i ("one-task")."""
    if tokens % BATCH_ROWS:
        raise ValueError(f"token count {tokens} must be a multiple of {BATCH_ROWS} rows")
    generator = torch.Generator().manual_seed(seed)
    length = tokens // BATCH_ROWS
    hidden = torch.randn(BATCH_ROWS, length, config.hidden_size, generator=generator).to(dtype)
    row_group = (torch.arange(BATCH_ROWS) % len(config.token_moe_groups)).long()
    if rows == "one-task":
        row_group = torch.zeros_like(row_group)
    token_valid = torch.ones(BATCH_ROWS, length, dtype=torch.bool)
    return hidden, row_group, token_valid


def build_qwen3_block(config: UniF2aceConfig, dtype: torch.dtype, seed: int, implementation: str) -> nn.Module:
    """transformers' Qwen3-MoE sparse block at equal hidden size, experts, top-k and expert width. Its experts are
    gated (SwiGLU: `gate_up_proj` is `2 x` wide), so each expert does 1.5x our GELU expert's FLOPs; it has no
    shared expert."""
    from transformers import Qwen3MoeConfig
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

    qwen_config = Qwen3MoeConfig(
        hidden_size=config.hidden_size,
        moe_intermediate_size=config.moe_intermediate_size,
        num_experts=config.num_routed_experts,
        num_experts_per_tok=config.num_experts_per_tok,
        norm_topk_prob=config.norm_topk_prob,
    )
    qwen_config._experts_implementation = implementation
    torch.manual_seed(seed)
    block = Qwen3MoeSparseMoeBlock(qwen_config)
    init_params(block, config.initializer_range)
    return block.to(dtype)


# --------------------------------------------------------------------------------------------------- workloads


def moe_forward_fn(
    moe: UniF2aceTokenMoE, hidden: torch.Tensor, row_group: torch.Tensor, valid: torch.Tensor
) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            moe(hidden, row_group, valid)

    return run


def dense_forward_fn(dense: UniF2aceMLP, hidden: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            dense(hidden)

    return run


def moe_train_fn(
    moe: UniF2aceTokenMoE, hidden: torch.Tensor, row_group: torch.Tensor, valid: torch.Tensor, grad_out: torch.Tensor
) -> Callable[[], None]:
    leaf = hidden.detach().requires_grad_(True)

    def run() -> None:
        leaf.grad = None
        out, balances = moe(leaf, row_group, valid)
        extra = list(balances.values())
        torch.autograd.backward([out, *extra], [grad_out, *[torch.full_like(b, BALANCE_WEIGHT) for b in extra]])

    return run


def dense_train_fn(dense: nn.Module, hidden: torch.Tensor, grad_out: torch.Tensor) -> Callable[[], None]:
    """Forward + backward of a module mapping `(B, L, H)` to `(B, L, H)` (the dense FFN, the Qwen3 block)."""
    leaf = hidden.detach().requires_grad_(True)

    def run() -> None:
        leaf.grad = None
        dense(leaf).backward(grad_out)

    return run


def naive_token_moe(moe: UniF2aceTokenMoE, hidden: torch.Tensor, row_group: torch.Tensor) -> torch.Tensor:
    """Reference semantics: each token's routed experts applied one token at a time (shared expert batched)."""
    batch, length, size = hidden.shape
    out = torch.zeros_like(hidden)
    for row in range(batch):
        group = moe.groups[moe.group_names[int(row_group[row])]]
        tokens = hidden[row]
        _, top_index, top_weight = group.route(tokens)
        experts = group.experts
        routed = []
        for t in range(length):
            acc = torch.zeros(size, dtype=hidden.dtype)
            for e, w in zip(top_index[t].tolist(), top_weight[t].to(hidden.dtype)):
                h = experts.activation_fn(tokens[t] @ experts.up_proj[e] + experts.up_bias[e])
                acc = acc + w * (h @ experts.down_proj[e] + experts.down_bias[e])
            routed.append(acc)
        row_out = torch.stack(routed)
        if group.shared_expert is not None:
            row_out = row_out + group.shared_expert(tokens)
        out[row] = row_out
    return out


def reference_fn(moe: UniF2aceTokenMoE, hidden: torch.Tensor, row_group: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            naive_token_moe(moe, hidden, row_group)

    return run


# --------------------------------------------------------------------------------------------------- timing


def clear_grads(*modules: nn.Module) -> None:
    for module in modules:
        module.zero_grad(set_to_none=True)


def calls_per_sample(fn: Callable[[], None], min_sample_s: float) -> int:
    """How many calls make one timed sample last at least `min_sample_s` (fast cells are timed in batches)."""
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-6)
    return max(1, min(100, int(min_sample_s / once) + 1))


def time_sample(fn: Callable[[], None], calls: int, reset: Callable[[], None]) -> float:
    """Seconds per call over `calls` back-to-back calls."""
    reset()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def time_interleaved(
    variants: dict[str, Callable[[], None]], settings: Settings, reset: Callable[[], None]
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Warm every variant up, then take `repeats` samples of each, round-robin; per-call milliseconds."""
    for fn in variants.values():
        for _ in range(settings.warmup):
            reset()
            fn()
    calls = {name: calls_per_sample(fn, settings.min_sample_s) for name, fn in variants.items()}
    samples: dict[str, list[float]] = {name: [] for name in variants}
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(settings.repeats):
            for name, fn in variants.items():
                samples[name].append(1e3 * time_sample(fn, calls[name], reset))
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples, calls


# --------------------------------------------------------------------------------------------------- cells


def reference_check(moe: UniF2aceTokenMoE, hidden: torch.Tensor, row_group: torch.Tensor, valid: torch.Tensor) -> float:
    """Max |grouped MoE - per-token reference|, a sanity check that the timed layer computes what it should."""
    with torch.inference_mode():
        fast, _ = moe(hidden, row_group, valid)
        slow = naive_token_moe(moe, hidden, row_group)
    return (fast.float() - slow.float()).abs().max().item()


def run_cell(config_name: str, tokens: int, dtype_name: str, mode: str, settings: Settings, seed: int) -> CellResult:
    config = make_config(config_name)
    dtype = DTYPES[dtype_name]
    moe, dense = build_modules(config, dtype, seed)
    rows = ROWS_FOR_MODE[mode]
    hidden, row_group, valid = make_inputs(config, tokens, dtype, seed + 1, rows)
    qwen3 = {name: build_qwen3_block(config, dtype, seed, name) for name in ("grouped_mm", "eager")}
    grad_out = torch.randn(hidden.shape, generator=torch.Generator().manual_seed(seed + 2)).to(dtype)
    moe.train(mode == "train")
    dense.train(mode == "train")

    if mode == "forward":
        variants = {"moe": moe_forward_fn(moe, hidden, row_group, valid), "dense": dense_forward_fn(dense, hidden)}
        variants.update({f"qwen3_{name}": dense_forward_fn(block, hidden) for name, block in qwen3.items()})
    else:
        variants = {
            "moe": moe_train_fn(moe, hidden, row_group, valid, grad_out),
            "dense": dense_train_fn(dense, hidden, grad_out),
        }
        # transformers' eager experts are not meant for training (each expert's weight slice zero-fills a full
        # gradient in backward): timed for inference only
        variants["qwen3_grouped_mm"] = dense_train_fn(qwen3["grouped_mm"], hidden, grad_out)
    with_reference = settings.reference and mode == "forward" and tokens <= REFERENCE_MAX_TOKENS
    if with_reference:
        variants["reference"] = reference_fn(moe, hidden, row_group)

    samples, calls = time_interleaved(variants, settings, reset=lambda: clear_grads(moe, dense, *qwen3.values()))
    expert = next(iter(moe.groups.values())).experts
    median = {name: statistics.median(values) for name, values in samples.items()}
    result = CellResult(
        config=config_name,
        tokens=tokens,
        batch=hidden.shape[0],
        length=hidden.shape[1],
        dtype=dtype_name,
        mode=mode,
        rows=rows,
        moe_ms=median["moe"],
        dense_ms=median["dense"],
        ratio=median["moe"] / median["dense"],
        qwen3_ms=median["qwen3_grouped_mm"],
        qwen3_eager_ms=median.get("qwen3_eager"),
        moe_median_ms=median["moe"],
        dense_median_ms=median["dense"],
        moe_calls_per_sample=calls["moe"],
        dense_calls_per_sample=calls["dense"],
        grouped_mm=_grouped_mm_supported(hidden, expert.up_proj.to(dtype)),
        samples_ms=samples,
    )
    if with_reference:
        result.reference_ms = median["reference"]
        result.reference_max_abs_diff = reference_check(moe, hidden, row_group, valid)
    return result


# --------------------------------------------------------------------------------------------------- reporting


def describe_configs() -> dict[str, dict[str, int]]:
    described = {}
    for name, fields in CONFIGS.items():
        described[name] = {**fields, "dense_intermediate_size": dense_width(make_config(name))}
    return described


def format_table(results: list[CellResult]) -> str:
    header = (
        f"{'config':<6} {'T':>5} {'dtype':<5} {'mode':<7} {'rows':<8} {'moe ms':>9} {'dense ms':>9} {'moe/dense':>9} "
        f"{'qwen3 ms':>9} {'eager ms':>9} {'ref ms':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        ref = f"{r.reference_ms:8.2f}" if r.reference_ms is not None else f"{'':>8}"
        lines.append(
            f"{r.config:<6} {r.tokens:>5} {r.dtype:<5} {r.mode:<7} {r.rows:<8} {r.moe_ms:9.3f} {r.dense_ms:9.3f} "
            f"{r.ratio:8.2f}x {r.qwen3_ms:9.3f} {r.qwen3_eager_ms or float('nan'):9.3f} {ref}"
        )
    return "\n".join(lines)


def profile_cell(result: CellResult, seed: int, rows: int = 15) -> str:
    """Top ops (self CPU time) of the MoE in one cell, as a hint where its overhead goes."""
    config = make_config(result.config)
    dtype = DTYPES[result.dtype]
    moe, _ = build_modules(config, dtype, seed)
    hidden, row_group, valid = make_inputs(config, result.tokens, dtype, seed + 1, result.rows)
    grad_out = torch.randn(hidden.shape).to(dtype)
    if result.mode == "forward":
        fn = moe_forward_fn(moe, hidden, row_group, valid)
    else:
        fn = moe_train_fn(moe, hidden, row_group, valid, grad_out)
    for _ in range(2):
        fn()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            clear_grads(moe)
            fn()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and shorter samples, for smoke runs")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (torch.set_num_threads); default 1")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results_moe.json"), help="JSON results path")
    parser.add_argument("--tokens", type=int, nargs="+", default=list(DEFAULT_TOKENS), help="token counts T = B x L")
    parser.add_argument(
        "--configs", nargs="+", choices=sorted(CONFIGS), default=list(DEFAULT_CONFIGS), help="configs to run"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed samples per variant (default 7, quick 2)")
    parser.add_argument("--no-reference", action="store_true", help="skip the per-token-loop reference")
    parser.add_argument("--profile", action="store_true", help="profile the MoE in the key cell (showo bf16 forward)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = Settings(
        repeats=args.repeats or (2 if args.quick else 7),
        warmup=1 if args.quick else 2,
        min_sample_s=0.01 if args.quick else 0.05,
        reference=not args.no_reference,
    )
    machine = machine_info(torch.get_num_threads())
    print(
        f"machine: {machine['cpu']} ({machine['cpu_capability']}), {machine['platform']}, "
        f"torch {machine['torch']}, threads {machine['threads']}, python {machine['python']}"
    )
    for name, fields in describe_configs().items():
        if name in args.configs:
            print(f"config {name}: {fields}")
    print(f"settings: {asdict(settings)}", flush=True)

    start = time.perf_counter()
    results = []
    for config_name in args.configs:
        for tokens in args.tokens:
            for dtype_name in DTYPES:
                for mode in MODES:
                    result = run_cell(config_name, tokens, dtype_name, mode, settings, args.seed)
                    results.append(result)
                    print(
                        f"  {config_name} T={tokens} {dtype_name} {mode}: moe {result.moe_ms:.3f} ms, "
                        f"dense {result.dense_ms:.3f} ms ({result.ratio:.2f}x)",
                        flush=True,
                    )
    elapsed = time.perf_counter() - start

    print()
    print(format_table(results))
    checks = [r for r in results if r.reference_max_abs_diff is not None]
    for r in checks:
        print(
            f"reference check {r.config} T={r.tokens} {r.dtype}: max |moe - per-token loop| = {r.reference_max_abs_diff:.2e}"
        )
    print(f"total {elapsed:.1f} s")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    key = next((r for r in results if (r.config, r.tokens, r.dtype, r.mode) == ("showo", 512, "bf16", "forward")), None)
    payload = {
        "moe_time_vs_dense_active": None if key is None else key.ratio,
        "machine": machine,
        "settings": {**asdict(settings), "quick": args.quick, "seed": args.seed, "batch_rows": BATCH_ROWS},
        "configs": describe_configs(),
        "results": [asdict(r) for r in results],
        "elapsed_s": elapsed,
    }
    args.output.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.output}")

    if args.profile and key is not None:
        table = profile_cell(key, args.seed)
        payload["profile"] = {
            "what": f"the MoE layer, {key.config} T={key.tokens} {key.dtype} {key.mode}, self CPU time",
            "table": table,
        }
        args.output.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nprofile of the MoE in the key cell: {key.config} T={key.tokens} {key.dtype} {key.mode}")
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
