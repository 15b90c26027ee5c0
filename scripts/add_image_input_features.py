"""Switch on the image-token input features (`image_bit_embedding`, `image_position_embedding`) for a trained
checkpoint: the same weights plus the new, zero-initialised ones, so the copy computes exactly what the source does
until training moves them (docs/decisions.md, issue 8).

    python scripts/add_image_input_features.py SRC_MODEL_DIR DST_DIR [--no-bits] [--no-positions]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

from unif2ace_hf import UniF2aceConfig, UniF2aceForConditionalGeneration, UniF2aceProcessor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a saved UniF2ace model folder")
    parser.add_argument("output", help="where to save the copy with the input features")
    parser.add_argument("--no-bits", dest="bits", action="store_false", help="leave image_bit_embedding off")
    parser.add_argument("--no-positions", dest="positions", action="store_false", help="no image_position_embedding")
    args = parser.parse_args(argv)
    if not (args.bits or args.positions):
        print("error: --no-bits and --no-positions leave nothing to add", file=sys.stderr)
        return 2
    source = UniF2aceForConditionalGeneration.from_pretrained(args.source, dtype=torch.float32)
    processor = UniF2aceProcessor.from_pretrained(args.source)
    settings = source.config.to_dict()
    settings.update(
        image_bit_embedding=args.bits or source.config.image_bit_embedding,
        image_position_embedding=args.positions or source.config.image_position_embedding,
        num_image_tokens=processor.num_image_tokens,
    )
    config = UniF2aceConfig.from_dict(settings)
    model = UniF2aceForConditionalGeneration(config)
    report = model.load_state_dict(source.state_dict(), strict=False)
    new = sorted(name for name in model.state_dict() if name.startswith("model.image_input_embedding."))
    if report.unexpected_keys or sorted(report.missing_keys) != new:
        print(f"error: source: weights do not match (missing {report.missing_keys}, extra {report.unexpected_keys})")
        return 2
    model.save_pretrained(args.output)
    processor.save_pretrained(args.output)
    scheduler = Path(args.source) / "scheduler"
    if scheduler.is_dir():
        shutil.copytree(scheduler, Path(args.output) / "scheduler", dirs_exist_ok=True)
    print(f"wrote {args.output} (new zero-initialised weights: {', '.join(new)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
