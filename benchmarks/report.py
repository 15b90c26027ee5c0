"""Collect the benchmark results (`benchmarks/results_*.json`) into `benchmarks/RESULTS.md` (tables, the machine, the
key figures against their targets) and `benchmarks/results.json` (the key figures plus every script's results).

    .venv/bin/python benchmarks/report.py [--folder benchmarks]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

# key -> (source results file, direction, target, what it is)
TARGETS = {
    "t2i_speedup_vs_published_algorithm": (
        "results_t2i.json",
        ">=",
        2.0,
        "text-to-face images/s, UniF2acePipeline / Show-o's algorithm, Show-o-sized layers, fp32 both sides",
    ),
    "mmu_speedup_vs_no_cache_32_tokens": (
        "results_understanding.json",
        ">=",
        5.0,
        "understanding ms/token, Show-o's recompute loop / our KV-cached generate, 32 new tokens",
    ),
    "moe_time_vs_dense_active": (
        "results_moe.json",
        "<=",
        1.3,
        "token-MoE layer / dense FFN of equal active width, bf16, 512 tokens, forward, Show-o-sized layer",
    ),
    "train_mfu_bf16": (
        "results_train.json",
        ">=",
        0.30,
        "training-step FLOP/s / measured bf16 matmul peak, Show-o-sized layers (4), bf16 autocast",
    ),
}


def load(folder: Path, name: str) -> dict | None:
    path = folder / name
    return json.loads(path.read_text()) if path.is_file() else None


def met(value: float | None, direction: str, target: float) -> str:
    if value is None:
        return "not run"
    return "yes" if (value >= target if direction == ">=" else value <= target) else "**no**"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def machine_section(results: dict[str, dict]) -> list[str]:
    machine = next((r["machine"] for r in results.values() if r and "cores" in r.get("machine", {})), None)
    if machine is None:
        return ["Machine: not recorded.", ""]
    lines = [
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, flags "
        f"{' '.join(machine['cpu_flags']) or 'n/a'} (torch capability {machine['cpu_capability']}); "
        f"{machine['platform']}, Python {machine['python']}, torch {machine['torch']}.",
        "",
        "Load average (1/5/15 min) when each script started; the machine is shared, and a load above the core "
        "count means other people's processes took CPU time during the run:",
        "",
    ]
    rows = []
    for name, result in results.items():
        if result and "load_average_1_5_15_min" in result.get("machine", {}):
            m = result["machine"]
            rows.append([name, f"{m['threads']}", " / ".join(f"{v:.2f}" for v in m["load_average_1_5_15_min"])])
    return lines + table(["results", "threads", "load average"], rows)


def t2i_section(result: dict | None) -> list[str]:
    if not result:
        return []
    lines = [
        "## 1. Text-to-face",
        "",
        f"`bench_t2i.py`: images/s at batch 1, guidance {next(iter(result['configs'].values()))['setting']['guidance_scale']},"
        f" {result['steps']} steps, median of {result['repeats']} interleaved runs after a warm-up; every variant "
        "uses the same model, weights, dtype, steps and seed. *Show-o algorithm* = the whole sequence and the "
        "full-vocabulary head every step, multinomial + sort (Show-o's `t2i_generate`); *no prefix cache* = our "
        "pipeline with `use_prefix_cache=False`; *aMUSEd* = diffusers' `AmusedPipeline` at matched width, depth, "
        "heads, FFN, codebook and tokens (random weights).",
        "",
    ]
    rows = []
    for name, config in result["configs"].items():
        s = config["setting"]
        for row in config["rows"]:
            rows.append(
                [
                    f"{name} (d {s['hidden_size']}, {s['layers']} layers, {s['text_tokens']}+{s['image_tokens']} "
                    f"tokens, {s['codebook_size']} codes)",
                    row["dtype"],
                    f"{row['ours_images_per_s']:.3f}",
                    f"{row['show_o_images_per_s']:.3f}",
                    f"**{row['speedup_vs_show_o']:.2f}×**",
                    f"{row['ours_no_prefix_cache_images_per_s']:.3f} ({row['prefix_cache_speedup']:.2f}×)",
                    f"{row['amused_images_per_s']:.3f} ({row['speedup_vs_amused']:.2f}×)",
                ]
            )
        rows.append(
            [
                name,
                "bf16 vs fp32",
                f"{config['bf16_vs_fp32_ours']:.2f}×",
                f"{config['bf16_vs_fp32_show_o']:.2f}×",
                "",
                "",
                "",
            ]
        )
    lines += table(
        [
            "config",
            "dtype",
            "ours (images/s)",
            "Show-o algorithm",
            "ours / Show-o",
            "no prefix cache (cache gain)",
            "aMUSEd (ours / aMUSEd)",
        ],
        rows,
    )
    exact = {name: c["prefix_cached_codes_equal_full_recompute"] for name, c in result["configs"].items()}
    lines += [f"Prefix-cached codes equal the full recompute's exactly: {exact}.", ""]
    return lines


def understanding_section(result: dict | None) -> list[str]:
    if not result:
        return []
    s = result["setting"]
    lines = [
        "## 2. Understanding",
        "",
        f"`bench_understanding.py`: ms per new token (prefill included, amortised), greedy, batch {s['batch']}, "
        f"{result['machine']['threads']} thread(s), median of interleaved runs (repeats per count: "
        f"{result.get('repeats', '?')}); model d "
        f"{s['hidden_size']}, {s['layers']} layers, {s['moe']}; prompt {s['prompt_tokens']} tokens. The dense pair "
        "is our model without MoE against `transformers.PhiForCausalLM.generate` on the same weights.",
        "",
    ]
    rows = [
        [
            str(r["new_tokens"]),
            f"{r['cached_ms_per_token']:.1f}",
            f"{r['show_o_recompute_ms_per_token']:.1f}",
            f"**{r['speedup_vs_recompute']:.1f}×**",
            {True: "yes", False: "**no**", None: "not checked"}[r["identical_tokens"]],
            f"{r['dense_ours_ms_per_token']:.1f} vs {r['phi_generate_ms_per_token']:.1f} ({r['dense_ours_vs_phi']:.2f}×)",
        ]
        for r in result["rows"]
    ]
    return lines + table(
        [
            "new tokens",
            "KV cache (ms/token)",
            "Show-o loop (ms/token)",
            "speed-up",
            "same tokens",
            "dense: ours vs Phi generate (ms/token)",
        ],
        rows,
    )


def moe_section(result: dict | None) -> list[str]:
    if not result:
        return []
    lines = [
        "## 3. Token-level MoE layer",
        "",
        f"`bench_moe.py`: one layer, {result['machine']['threads']} thread(s), median of "
        f"{result['settings']['repeats']} interleaved samples. *dense* = a `UniF2aceMLP` as wide as the active "
        "experts (k routed + shared: equal active parameters and FLOPs). *Qwen3-MoE* = transformers' "
        "`Qwen3MoeSparseMoeBlock` at equal hidden size, experts, top-k and expert width (gated SwiGLU experts: 1.5× "
        "our expert FLOPs; no shared expert), `grouped_mm` and `eager` experts (eager: forward only). forward = inference on a one-task "
        "batch; train = forward + backward on a mixed t2i/mmu batch.",
        "",
    ]
    configs = result["configs"]
    rows = []
    for r in result["results"]:
        c = configs[r["config"]]
        rows.append(
            [
                f"{r['config']} (d {c['hidden_size']}, {c['num_experts_per_tok']} of {c['num_routed_experts']} × "
                f"{c['moe_intermediate_size']} + shared {c['shared_expert_intermediate_size']})",
                str(r["tokens"]),
                r["dtype"],
                r["mode"],
                f"{r['moe_ms']:.2f}",
                f"{r['dense_ms']:.2f}",
                f"**{r['ratio']:.2f}×**",
                f"{r['qwen3_ms']:.2f} / " + ("–" if r["qwen3_eager_ms"] is None else f"{r['qwen3_eager_ms']:.2f}"),
            ]
        )
    lines += table(
        ["config", "T", "dtype", "mode", "ours (ms)", "dense (ms)", "ours / dense", "Qwen3-MoE grouped / eager (ms)"],
        rows,
    )
    checks = [r for r in result["results"] if r.get("reference_max_abs_diff") is not None]
    if checks:
        worst = max(r["reference_max_abs_diff"] for r in checks)
        lines += [f"Grouped dispatch vs a per-token loop: max |Δ| = {worst:.1e}.", ""]
    return lines


def train_section(result: dict | None) -> list[str]:
    if not result:
        return []
    lines = [
        "## 4. Training",
        "",
        "`bench_train.py`: the trainer's step (collator batch, objective, backward, clipping, AdamW), fp32 and bf16 "
        "autocast interleaved on one model, median of the timed steps. FLOPs are counted on one step with "
        "`FlopCounterMode` (matmuls and attention); the peak is this machine's best measured matmul FLOP/s on the "
        "model's own linear shapes at the step's row count, same dtype and threads. Each config runs in its own "
        "process (its peak RSS is its own).",
        "",
    ]
    rows = []
    for name, config in result["configs"].items():
        s = config["setting"]
        for r in config["rows"]:
            rows.append(
                [
                    f"{name} (d {s['hidden_size']}, {s['layers']} layers, batch {s['batch_rows']} × {s['sequence_length']})",
                    r["dtype"],
                    f"{r['tokens_per_s']:.0f}",
                    f"{r['step_s']:.2f}",
                    f"{r['achieved_flops_per_s'] / 1e9:.0f}",
                    f"{r['peak_flops_per_s'] / 1e9:.0f}",
                    f"**{r['mfu']:.2f}**",
                    f"{config['peak_rss_mib']:.0f}",
                ]
            )
    return lines + table(
        ["config", "dtype", "tokens/s", "step (s)", "GFLOP/s", "peak GFLOP/s", "MFU", "peak RSS (MiB)"], rows
    )


def muon_step_section(result: dict | None) -> list[str]:
    if not result:
        return []
    lines = [
        "## 4c. The Muon step",
        "",
        f"`bench_muon_step.py`: one Muon step over the tiny-synthface model's {result['muon_weights']} hidden weights "
        f"({result['distinct_shapes']} shapes) on {result.get('device', 'cpu')}, interleaved, median; tensor ops = "
        "top-level aten calls (on a GPU, kernel launches). The updates agree to "
        f"{result['max_weight_difference']:.1e}.",
        "",
    ]
    rows = [
        [f"`{name}`", f"{result['ms_per_step'][name]:.1f}", f"{result['ops_per_step'][name]}"]
        for name in result["ms_per_step"]
    ]
    return lines + table(["variant", "ms per step", "tensor ops per step"], rows) + [""]


def packed_questions_section(result: dict | None) -> list[str]:
    if not result:
        return []
    lines = [
        "## 4b. Packed understanding rows",
        "",
        "`bench_packed_questions.py`: the same training step with one question per understanding row (the recipe's "
        "default) and with packed rows (`data.questions_per_image`), tiny-synthface model, batch "
        f"{result['batch_size']}, real SynthFace questions; questions = answered questions (segments) per step, "
        "interleaved, median step time.",
        "",
    ]
    rows = [
        [
            f"`{r['variant']}`",
            f"{r['questions_per_image']}",
            f"{r['t2i_fraction']}",
            f"{r['length']:.0f}",
            f"{r['step_s']:.2f}",
            f"{r['questions']:.1f}",
            f"{r['questions_per_s']:.1f}",
            f"**{r['questions_per_s_vs_one_question']:.2f}×**",
            f"{r['t2i_rows_per_s']:.1f}",
        ]
        for r in result["rows"]
    ]
    return lines + table(
        [
            "variant",
            "questions per image",
            "t2i fraction",
            "batch length",
            "step (s)",
            "questions / step",
            "questions / s",
            "vs one question",
            "t2i rows / s",
        ],
        rows,
    )


def scheduler_section(result: dict | None) -> list[str]:
    if not result:
        return []
    lines = [
        "## 5. Sampling step",
        "",
        "`bench_scheduler.py`: one `step` of our MaskGIT scheduler (inverse-CDF sampling, one `kthvalue`) against "
        "diffusers' `AmusedScheduler.step` (multinomial + full sort), batch 1, fp32, median of interleaved runs.",
        "",
    ]
    rows = [
        [
            f"{c['codebook']} × {c['tokens']}",
            f"{c['amused_ms_median']:.2f}",
            f"{c['ours_ms_median']:.2f}",
            f"{c['speedup_median']:.1f}×",
        ]
        for c in result["cells"]
    ]
    return lines + table(["codebook × tokens", "AmusedScheduler (ms)", "ours (ms)", "speed-up"], rows)


def profiles_section(results: dict[str, dict | None], keys: dict[str, float | None]) -> list[str]:
    lines = []
    for key, (source, direction, target, _) in TARGETS.items():
        value = keys.get(key)
        if value is None or met(value, direction, target) == "yes":
            continue
        profile = (results.get(source) or {}).get("profile")
        if profile:
            lines += [f"### Where the time goes: `{key}` ({profile['what']})", "", "```", profile["table"], "```", ""]
    if lines:
        lines = ["## Profiles of the missed targets", "", *lines]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    names = ["results_t2i.json", "results_understanding.json", "results_moe.json", "results_train.json"]
    names += ["results_scheduler.json", "results_packed_questions.json", "results_muon_step.json"]
    results = {name: load(args.folder, name) for name in names}
    keys = {key: (results[source] or {}).get(key) for key, (source, *_) in TARGETS.items()}

    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (`benchmarks/report.py`) on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
        "Every figure is a median over repeats after a warm-up; every ratio comes from variants run interleaved in "
        "one process. `benchmarks/README.md` explains the figures and what would close the gaps.",
        "",
        *machine_section(results),
        "## Key figures",
        "",
    ]
    rows = [
        [
            f"`{key}`",
            "not run" if keys[key] is None else f"{keys[key]:.2f}",
            f"{direction} {target}",
            met(keys[key], direction, target),
            what,
        ]
        for key, (_, direction, target, what) in TARGETS.items()
    ]
    lines += table(["key", "value", "target", "met", "what"], rows)
    lines += t2i_section(results["results_t2i.json"])
    lines += understanding_section(results["results_understanding.json"])
    lines += moe_section(results["results_moe.json"])
    lines += train_section(results["results_train.json"])
    lines += packed_questions_section(results["results_packed_questions.json"])
    lines += muon_step_section(results["results_muon_step.json"])
    lines += scheduler_section(results["results_scheduler.json"])
    lines += profiles_section(results, keys)
    (args.folder / "RESULTS.md").write_text("\n".join(lines).rstrip() + "\n")
    summary = {
        "keys": keys,
        "targets": {
            key: {"direction": d, "target": t, "met": met(keys[key], d, t) == "yes"}
            for key, (_, d, t, _) in TARGETS.items()
        },
        "results": {name.removeprefix("results_").removesuffix(".json"): value for name, value in results.items()},
    }
    (args.folder / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.folder / 'RESULTS.md'} and {args.folder / 'results.json'}")
    for key, value in keys.items():
        print(f"  {key}: {value}")


if __name__ == "__main__":
    main()
