"""`unif2ace convert-magvit`, `unif2ace train-tokenizer` and `unif2ace eval-tokenizer`: the image tokenizer.

Also runnable alone, `python -m unif2ace_hf.commands.tokenizer COMMAND ...`, where the other commands' dependencies
(`datasets`) are not installed, e.g. on a GPU machine.
"""

from __future__ import annotations

import argparse
import json
import sys

DTYPES = ("float32", "bfloat16", "float16")


def register(subparsers: argparse._SubParsersAction) -> None:
    convert = subparsers.add_parser(
        "convert-magvit",
        help="convert a MAGVIT-v2 tokenizer folder (showlab/magvitv2 layout) to a UniF2aceVQModel folder",
        description="Reads config.json + pytorch_model.safetensors (or .bin, loaded with weights_only=True), infers "
        "every size from the weights and writes a transformers folder.",
    )
    convert.add_argument("--src", required=True, help="MAGVIT-v2 folder")
    convert.add_argument("--output-dir", required=True, help="where to write the converted tokenizer")
    convert.add_argument("--image-size", type=int, default=None, help="training resolution (default 256)")
    convert.add_argument("--dtype", choices=DTYPES, default="float32", help="dtype of the saved weights")
    convert.set_defaults(func=run_convert)

    train = subparsers.add_parser(
        "train-tokenizer",
        help="train an image tokenizer with accelerate (resumable, metrics JSONL)",
        description="DATA is a datasets parquet folder (its train split), a folder of images, a .npy uint8 array "
        "(N, H, W, 3), or synthface:N[:SEED] to render N SynthFace faces in memory.",
    )
    train.add_argument("--data", required=True, help="parquet folder, image folder, .npy, or synthface:N[:SEED]")
    train.add_argument("--output-dir", required=True, help="model folder; also holds metrics.jsonl and checkpoints/")
    train.add_argument(
        "--config", default="tiny", help="preset (tiny, small, micro, magvit) or a tokenizer config.json"
    )
    train.add_argument(
        "--init-from", default=None, help="start from this tokenizer folder's weights and config (a warm start)"
    )
    train.add_argument(
        "--perceptual-net",
        default=None,
        help="feature network for the perceptual loss: `default` (shipped) or a folder from `unif2ace data "
        "train-judge` (docs/decisions.md)",
    )
    train.add_argument("--perceptual-weight", type=float, default=None, help="weight of the perceptual loss (1.0)")
    train.add_argument(
        "--gradient-weight", type=float, default=None, help="weight of the L1 loss on pixel differences (0.5)"
    )
    train.add_argument("--mse-weight", type=float, default=None, help="weight of a squared-error term besides L1 (0)")
    train.add_argument(
        "--attribute-weight",
        type=float,
        default=0.0,
        help="weight of the feature network's attribute-prediction disagreement (KL, original -> reconstruction)",
    )
    train.add_argument("--max-steps", type=int, default=20000)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--learning-rate", type=float, default=4e-4)
    train.add_argument("--warmup-steps", type=int, default=500)
    train.add_argument("--bf16", action="store_true", help="bf16 autocast (CPU with AVX512-BF16, or CUDA)")
    train.add_argument("--device", choices=("auto", "cpu"), default="auto", help="cpu forces the CPU")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--max-images", type=int, default=None, help="use at most this many training images")
    train.add_argument("--save-steps", type=int, default=1000, help="checkpoint every N steps (and at the end)")
    train.add_argument("--log-steps", type=int, default=25, help="write metrics every N steps (one row per step)")
    train.add_argument("--max-minutes", type=float, default=None, help="stop, checkpoint and save after this long")
    train.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --output-dir")
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    train.add_argument("--compile", action="store_true", help="torch.compile the tokenizer and the feature network")
    train.add_argument(
        "--ema-decay", type=float, default=None, help="save an exponential moving average of the weights (e.g. 0.999)"
    )
    train.add_argument(
        "--no-zero-init-residual",
        action="store_true",
        help="start a fresh tokenizer from the default initialisation instead of zeroed residual branches",
    )
    train.add_argument(
        "--optimizer",
        choices=("adamw", "muon"),  # training.tokenizer_trainer.OPTIMIZERS (imported lazily, with torch)
        default="adamw",
        help="muon: Muon for the hidden convolution kernels, AdamW for the rest, at one learning rate",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=run_train)

    evaluate = subparsers.add_parser(
        "eval-tokenizer",
        help="PSNR, codebook usage and attribute-judge accuracy of a tokenizer on held-out images",
    )
    evaluate.add_argument("--model", required=True, help="tokenizer folder (or a UniF2ace folder with a vq_model)")
    evaluate.add_argument("--data", required=True, help="parquet folder, image folder, .npy, or synthface:N[:SEED]")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--num-images", type=int, default=256)
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--no-judge", action="store_true", help="skip the attribute judge")
    evaluate.add_argument(
        "--judge",
        default="default",
        help="the attribute judge: `default` (the shipped one) or a `unif2ace data train-judge` folder, e.g. to "
        "cross-check a tokenizer with a network it was not trained against",
    )
    evaluate.add_argument("--grid", default=None, help="write originals above reconstructions to this PNG")
    evaluate.add_argument("--json", default=None, help="also write the results to this JSON file")
    evaluate.set_defaults(func=run_eval)


def run_convert(args: argparse.Namespace) -> int:
    import torch

    from unif2ace_hf.modeling.convert_magvit import convert_magvit_checkpoint

    try:
        model = convert_magvit_checkpoint(
            args.src, args.output_dir, image_size=args.image_size, dtype=getattr(torch, args.dtype)
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    config = model.config
    print(
        f"converted {args.src} -> {args.output_dir}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M "
        f"parameters, {config.codebook_size} codes, {config.image_size}px -> {config.latent_size}x{config.latent_size}"
    )
    return 0


def run_train(args: argparse.Namespace) -> int:
    import torch

    from unif2ace_hf.modeling.tokenizer_losses import TokenizerLossWeights
    from unif2ace_hf.training.tokenizer_trainer import TokenizerTrainingArguments, train_tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    # unset flags keep TokenizerLossWeights' defaults
    given = {"gradient": args.gradient_weight, "mse": args.mse_weight}
    pixel_weights = {name: value for name, value in given.items() if value is not None}
    try:
        loss_weights = TokenizerLossWeights(
            perceptual=args.perceptual_weight
            if args.perceptual_weight is not None
            else float(bool(args.perceptual_net)),
            attribute=args.attribute_weight,
            **pixel_weights,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    training_args = TokenizerTrainingArguments(
        data=args.data,
        output_dir=args.output_dir,
        config=args.config,
        init_from=args.init_from,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        warmup_steps=min(args.warmup_steps, max(1, args.max_steps // 10)),
        bf16=args.bf16,
        device="cpu" if args.device == "cpu" else None,
        seed=args.seed,
        max_images=args.max_images,
        save_steps=args.save_steps,
        log_steps=args.log_steps,
        max_minutes=args.max_minutes,
        resume=args.resume,
        progress=not args.no_progress,
        perceptual_net=args.perceptual_net,
        compile=args.compile,
        ema_decay=args.ema_decay,
        zero_init_residual=not args.no_zero_init_residual,
        optimizer=args.optimizer,
        loss_weights=loss_weights,
    )
    try:
        summary = train_tokenizer(training_args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    last = summary["last_metrics"]
    print(
        f"trained {summary['steps']} steps in {summary['train_seconds']:.0f}s on {summary['device']}: "
        f"loss {last.get('loss', float('nan')):.4f}, batch PSNR {last.get('psnr', float('nan')):.2f} dB -> {args.output_dir}"
    )
    return 0


def _load_tokenizer(path: str):
    from transformers import AutoConfig

    from unif2ace_hf import UniF2aceForConditionalGeneration, UniF2aceVQModel

    config = AutoConfig.from_pretrained(path)
    if getattr(config, "model_type", None) == "unif2ace":
        if config.vq_config is None:
            raise ValueError(f"`model`: {path} is a UniF2ace checkpoint without an image tokenizer (vq_config).")
        return UniF2aceForConditionalGeneration.from_pretrained(path).vq_model
    return UniF2aceVQModel.from_pretrained(path)


def run_eval(args: argparse.Namespace) -> int:
    from unif2ace_hf.training.tokenizer_data import load_attributes, load_images
    from unif2ace_hf.training.tokenizer_eval import evaluate_tokenizer

    try:
        model = _load_tokenizer(args.model).eval()
        images = load_images(args.data, split=args.split, image_size=model.config.image_size, limit=args.num_images)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    attributes = load_attributes(args.data, split=args.split, limit=args.num_images)
    judge = None
    if not args.no_judge and args.judge != "default":
        from unif2ace_hf.evaluation import AttributeJudge

        try:  # asked for by name: a folder that does not hold a judge is an error, not a quiet fallback
            judge = AttributeJudge.from_pretrained(args.judge)
        except (FileNotFoundError, ValueError) as error:
            print(f"error: `--judge`: {error}", file=sys.stderr)
            return 2
    elif not args.no_judge:
        try:
            from unif2ace_hf.evaluation import AttributeJudge

            judge = AttributeJudge.load_default()
        except (ImportError, FileNotFoundError, ValueError) as error:
            print(f"note: attribute judge unavailable ({error}); reporting PSNR and usage only", file=sys.stderr)
    result = evaluate_tokenizer(
        model, images, attributes=attributes, judge=judge, batch_size=args.batch_size, grid_path=args.grid
    )
    print(f"images: {result['num_images']} at {result['image_size']}px, {result['codes_per_image']} codes each")
    print(f"PSNR: {result['psnr']:.2f} dB (worst image {result['psnr_min']:.2f} dB)")
    print(
        f"codebook usage: {100 * result['codebook_usage']:.1f}% ({result['codes_used']} of {result['codebook_size']} "
        f"codes over {result['usage_images']} images)"
    )
    if "judge_accuracy_originals" in result:
        gap = result["judge_accuracy_originals"] - result["judge_accuracy_reconstructions"]
        print(
            f"judge accuracy: originals {100 * result['judge_accuracy_originals']:.2f}%, reconstructions "
            f"{100 * result['judge_accuracy_reconstructions']:.2f}% (gap {100 * gap:.2f} points)"
        )
        losses = {
            category: accuracy["originals"] - accuracy["reconstructions"]
            for category, accuracy in result["judge_accuracy_by_category"].items()
        }
        worst = sorted((category for category in losses if losses[category] > 0), key=lambda c: -losses[c])[:5]
        if worst:
            print("most lost: " + ", ".join(f"{category} {100 * losses[category]:.1f}" for category in worst))
    if "judge_agreement" in result:
        print(f"judge agreement (reconstruction vs original): {100 * result['judge_agreement']:.2f}%")
    if args.grid:
        print(f"wrote {args.grid}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unif2ace_hf.commands.tokenizer")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
