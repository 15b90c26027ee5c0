"""Put trained weights into the package as `unif2ace_hf.DEFAULT_MODEL`, stored in bf16 (run in fp32, see
docs/decisions.md, issue 8).

    python scripts/ship_default_model.py RUN/final                 # a training run's final folder
    python scripts/ship_default_model.py OUT/model-0.safetensors OUT/model-1.safetensors ...   # GPU-script shards
    python scripts/ship_default_model.py --take-config RUN/final   # a run whose config differs (new weights)

Every tensor of the shipped model must be present with the same shape (the strict loader would refuse anything
else); the processor, tokenizer, scheduler and config files of the shipped folder are kept. With `--take-config`
the run's config, processor, tokenizer and scheduler files replace the shipped ones (a new image tokenizer moves the
vocabulary layout they record), and the tensors must be exactly those of a model built from its config. The model
card (README.md) stays: `unif2ace card` rebuilds it from the evaluation.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

TARGET = Path(__file__).resolve().parents[1] / "src" / "unif2ace_hf" / "default_models" / "unif2ace-tiny"
FOLDER_FILES = (
    "config.json",
    "generation_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "scheduler/scheduler_config.json",
)
"""What `--take-config` copies from the run folder besides the weights."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", help="a final/ folder, or safetensors shards")
    parser.add_argument(
        "--take-config",
        action="store_true",
        help="ship the source folder's config, processor, tokenizer and scheduler files too (one folder only)",
    )
    args = parser.parse_args(argv)
    if args.take_config and (
        len(args.sources) != 1 or not all((Path(args.sources[0]) / name).is_file() for name in FOLDER_FILES)
    ):
        print(f"error: --take-config: give one run folder that has {', '.join(FOLDER_FILES)}", file=sys.stderr)
        return 2
    files = []
    for source in map(Path, args.sources):
        files.append(source / "model.safetensors" if source.is_dir() else source)
    weights: dict[str, torch.Tensor] = {}
    for file in files:
        if not file.is_file():
            print(f"error: sources: {str(file)!r} is not a file", file=sys.stderr)
            return 2
        weights.update(load_file(str(file)))
    if args.take_config:
        shipped = expected_tensors(Path(args.sources[0]) / "config.json")
    else:
        shipped = load_file(str(TARGET / "model.safetensors"))
    if set(weights) != set(shipped) or any(weights[k].shape != shipped[k].shape for k in shipped):
        extra, missing = sorted(set(weights) - set(shipped)), sorted(set(shipped) - set(weights))
        print(f"error: sources: tensors do not match the shipped model (extra {extra[:5]}, missing {missing[:5]})")
        return 2
    stored = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous() for k, v in weights.items()}
    save_file(dict(sorted(stored.items())), str(TARGET / "model.safetensors"), metadata={"format": "pt"})
    print(f"wrote {TARGET / 'model.safetensors'} ({(TARGET / 'model.safetensors').stat().st_size / 1e6:.1f} MB)")
    if args.take_config:
        for name in FOLDER_FILES:
            shutil.copyfile(Path(args.sources[0]) / name, TARGET / name)
            print(f"wrote {TARGET / name}")
        # how the training machine loaded the tokenizer (offline or not), meaningless in the shipped folder
        tokenizer_config = json.loads((TARGET / "tokenizer_config.json").read_text())
        tokenizer_config.pop("local_files_only", None)
        (TARGET / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n")
    return 0


def expected_tensors(config_file: Path) -> dict[str, torch.Tensor]:
    """Name -> empty tensor of every weight a model built from `config_file` has (built on the meta device)."""
    from unif2ace_hf import UniF2aceConfig, UniF2aceForConditionalGeneration

    config = UniF2aceConfig.from_json_file(str(config_file))
    with torch.device("meta"):
        model = UniF2aceForConditionalGeneration(config)
    return dict(model.state_dict())


if __name__ == "__main__":
    sys.exit(main())
