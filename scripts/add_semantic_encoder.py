"""Give a trained checkpoint a frozen semantic image encoder for its Semantic experts (docs/decisions.md, issue 8).

The encoder is a network written by `unif2ace data train-judge` (default: the SynthFace feature network shipped for
the tokenizer's perceptual loss), cut before its classification layer. Every other weight is copied. The Semantic
experts' resamplers start afresh (the model's own initialisation), because their old input (the image's own
embeddings) is not what they now read. By default the features also reach the input: `semantic_input_embedding`
adds a learned map of them to the image slots of understanding rows, starting at zero (so the copy computes what
the source does, apart from the fresh resamplers). That is the route that trains: a new Semantic expert is worse than
a Copy at first, and the routers learn to avoid it before it has learned anything (measured: with the Semantic
router bias raised by 2, then by 8, the routers had dropped it within 1 000 and 500 steps, and the answers did not
depend on the features; docs/decisions.md, issue 8). `--router-bias` adds to that bias (default 0).

    python scripts/add_semantic_encoder.py SRC_MODEL_DIR DST_DIR [--encoder default|JUDGE_DIR] [--router-bias B]
        [--no-input-embedding]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

from unif2ace_hf import UniF2aceConfig, UniF2aceForConditionalGeneration, UniF2aceProcessor
from unif2ace_hf.training.model_setup import semantic_encoder_from_judge


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a saved UniF2ace model folder")
    parser.add_argument("output", help="where to save the copy with the semantic encoder")
    parser.add_argument("--encoder", default="default", help="a `unif2ace data train-judge` folder, or 'default'")
    parser.add_argument("--router-bias", type=float, default=0.0, help="added to the Semantic experts' router bias")
    parser.add_argument(
        "--no-input-embedding",
        dest="input_embedding",
        action="store_false",
        help="leave semantic_input_embedding off (features reach the Semantic experts only)",
    )
    args = parser.parse_args(argv)
    try:
        encoder_config, encoder_state = semantic_encoder_from_judge(args.encoder)
    except ValueError as error:
        print(f"error: --encoder: {error}", file=sys.stderr)
        return 2

    source = UniF2aceForConditionalGeneration.from_pretrained(args.source, dtype=torch.float32)
    processor = UniF2aceProcessor.from_pretrained(args.source)
    if "semantic" not in source.config.sequence_moe_experts.get("mmu", []) or not source.config.sequence_moe_layers:
        print("error: source: the model has no Semantic expert in a sequence-level MoE layer", file=sys.stderr)
        return 2
    settings = source.config.to_dict()
    settings.update(
        semantic_encoder=encoder_config,
        semantic_feature_dim=encoder_config["hidden"],
        semantic_input_embedding=args.input_embedding,
        num_image_tokens=processor.num_image_tokens,
    )
    model = UniF2aceForConditionalGeneration(UniF2aceConfig.from_dict(settings))

    semantic_index = model.config.sequence_moe_experts["mmu"].index("semantic")
    fresh = f"sequence_moe.groups.mmu.experts.{semantic_index}.resampler."
    kept = {name: tensor for name, tensor in source.state_dict().items() if fresh not in name}
    kept |= encoder_state
    report = model.load_state_dict(kept, strict=False)
    new_input = "model.image_input_embedding."
    unexpected_missing = [
        name
        for name in report.missing_keys
        if fresh not in name and not (name.startswith(new_input) and name not in source.state_dict())
    ]
    if report.unexpected_keys or unexpected_missing:
        print(f"error: weights do not match (missing {unexpected_missing}, extra {report.unexpected_keys})")
        return 2
    with torch.no_grad():
        for layer in model.config.sequence_moe_layers:
            model.model.layers[layer].sequence_moe.groups["mmu"].router.bias[semantic_index] += args.router_bias
    model.save_pretrained(args.output)
    processor.save_pretrained(args.output)
    scheduler = Path(args.source) / "scheduler"
    if scheduler.is_dir():
        shutil.copytree(scheduler, Path(args.output) / "scheduler", dirs_exist_ok=True)
    print(
        f"wrote {args.output}: semantic encoder from {args.encoder} ({model.config.semantic_encoder}), "
        f"fresh Semantic resamplers in layers {model.config.sequence_moe_layers}, router bias +{args.router_bias}, "
        f"semantic_input_embedding={model.config.semantic_input_embedding} (zero at start)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
