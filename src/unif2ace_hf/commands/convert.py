"""`unif2ace convert-showo`: a Show-o checkpoint folder -> a UniF²ace checkpoint folder."""

from __future__ import annotations

import argparse

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert-showo",
        help="convert a Show-o checkpoint (config.json + pytorch_model.safetensors) to UniF²ace",
        description="Convert a Show-o folder. --moe dense keeps Phi's FFN; --moe upcycle builds the token MoE from "
        "the dense FFN and the sequence MoE as identity, so the result computes the dense model exactly.",
    )
    parser.add_argument(
        "--showo-dir", required=True, help="Show-o folder: config.json + pytorch_model.safetensors (or .bin)"
    )
    parser.add_argument("--output-dir", required=True, help="where to write the UniF²ace checkpoint")
    parser.add_argument(
        "--llm-config", default=None, help="Phi config.json or folder (default: Show-o's llm_model_path)"
    )
    parser.add_argument("--moe", choices=("dense", "upcycle"), default="dense")
    parser.add_argument(
        "--tokenizer-dir", default=None, help="Phi tokenizer folder; saved with Show-o's special tokens"
    )
    parser.add_argument("--num-routed-experts", type=int, default=8)
    parser.add_argument("--experts-per-token", type=int, default=4)
    parser.add_argument(
        "--moe-intermediate-size",
        type=int,
        default=None,
        help="width of one routed expert (default: FFN width / experts)",
    )
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="dtype of the saved weights")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for the weights that do not come from Show-o (routers, resamplers)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from unif2ace_hf.modeling.convert_showo import convert_showo_checkpoint

    model = convert_showo_checkpoint(
        args.showo_dir,
        args.output_dir,
        llm_config=args.llm_config,
        moe=args.moe,
        tokenizer_dir=args.tokenizer_dir,
        num_routed_experts=args.num_routed_experts,
        num_experts_per_tok=args.experts_per_token,
        moe_intermediate_size=args.moe_intermediate_size,
        seed=args.seed,
        dtype=getattr(torch, DTYPES[args.dtype]),
    )
    parameters = sum(p.numel() for p in model.parameters())
    print(f"converted {args.showo_dir} -> {args.output_dir} (moe={args.moe}, {parameters / 1e6:.1f}M parameters)")
    return 0
