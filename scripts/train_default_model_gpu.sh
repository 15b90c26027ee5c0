#!/usr/bin/env bash
# Train the embedded default model (unif2ace_hf.DEFAULT_MODEL) with the `tiny-synthface` recipe on one GPU, inside a
# wall-clock budget, and leave under $OUT: model-<i>.safetensors (the final weights in bf16, split into
# files of at most 12 MB for the device tool's 16 MiB file limit; merge them with scripts/ship_default_model.py), config.json,
# metrics.jsonl (one row per step), train.log (data rendering, then training) and, with EVAL_DATA, eval_<split>.json.
#
# SynthFace is rendered on the spot by PROCS parallel processes (seeds 1..PROCS); their train shards are pooled and
# the first process's validation split is the eval split. The image tokenizer is the shipped DEFAULT_VQ_MODEL. The
# question mix and row layout are the CPU script's: the balanced yes/no mix (BALANCE) with YES_NO yes/no questions and
# VALUE_PAIRS value pairs per face, QUESTIONS questions packed into each understanding row.
#
# Through the device tool, from the repository root: first, here, pack the libraries that machine lacks (it has an
# older transformers and no datasets/diffusers) into .whl/site.tar.xz, small enough to travel beside the checkout:
#   bash scripts/pack_device_site.sh
# then (carry [".whl"], timeout_s 560; the defaults are the shipped default model's run, 473 s on an H200):
#   OUT=$OUT bash scripts/train_default_model_gpu.sh
#   python scripts/ship_default_model.py OUT/model-*.safetensors          (here, on the files that came back)
# With EVAL_DATA (a SynthFace folder with test and novel splits, e.g. `scripts/pack_device_site.sh`'s copy of
# runs/synthface-seed101 without its train shards) the run also scores its model there on DEVICE (eval_<split>.json;
# at most EVAL_SECONDS each), so the files that come back stay within the device tool's eight.
# To run exactly a commit while the checkout has edits in progress, carry a .py-only snapshot as well:
#   mkdir -p .gpusrc && git archive HEAD src | tar -x -C .gpusrc --exclude='*.safetensors'   (here; carry ".gpusrc")
#   (cd src && find . -name '*.safetensors' -exec cp --parents {} ../.gpusrc/src/ \;); SRC=$PWD/.gpusrc/src OUT=...
# On a CPU the same script runs a smoke test, e.g.:
#   PYTHON=.venv/bin/python OUT=/tmp/out IMAGES=160 PROCS=2 MINUTES=0.2 BATCH=8 WORKERS=2 DEVICE=cpu bash scripts/train_default_model_gpu.sh
set -euo pipefail
# Bash reads a script while running it; the braces make it parse the whole body first, so editing this file
# during a run cannot change what the run does next.
{
OUT=${OUT:-out/default-model}
PYTHON=${PYTHON:-python3}
IMAGES=${IMAGES:-64000}      # rows over all four splits and all processes (80 % of them train)
PROCS=${PROCS:-16}           # parallel SynthFace renderers
MINUTES=${MINUTES:-5.9}      # training budget; the learning rate decays over it
BATCH=${BATCH:-128}
LR=${LR:-8e-4}
WARMUP=${WARMUP:-200}
YES_NO=${YES_NO:-3}
VALUE_PAIRS=${VALUE_PAIRS:-2}
QUESTIONS=${QUESTIONS:-5}
T2I=${T2I:-0.5}              # share of generation rows (`data.t2i_fraction`)
BALANCE=${BALANCE:-per-question}   # `--balanced-yes-no` mode: pooled or per-question (see the CPU script)
WORKERS=${WORKERS:-6}        # processes collating the next batches while the GPU steps (`training.dataloader_workers`)
EVAL_DATA=${EVAL_DATA:-}     # score the model on this SynthFace folder's test and novel splits (empty: skip)
EVAL_EXAMPLES=${EVAL_EXAMPLES:-64}
EVAL_SECONDS=${EVAL_SECONDS:-60}
DEVICE=${DEVICE:-cuda}       # where the evaluation runs
WORK=${WORK:-/tmp/unif2ace-default-run}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

# The GPU machine lacks datasets/diffusers and has an older transformers: unpack the carried ones
# (scripts/pack_device_site.sh; their wheels no longer fit beside the checkout in a device call).
if [ -f .whl/site.tar.xz ]; then
  mkdir -p /tmp/site && tar -xJf .whl/site.tar.xz -C /tmp/site
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
# SRC: the package source to run (default: this checkout's src/), e.g. a snapshot of a commit
export PYTHONPATH=${SRC:-$PWD/src}:${PYTHONPATH:-}
mkdir -p "$OUT"
rm -rf "$WORK" && mkdir -p "$WORK"
"$PYTHON" -c "import torch, transformers, datasets, diffusers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"

start=$(date +%s)
per=$((IMAGES / PROCS))
for k in $(seq 1 "$PROCS"); do
  "$PYTHON" -m unif2ace_hf.cli data synthface --num-images "$per" --size 64 --seed "$k" --balanced-yes-no "$BALANCE" \
    --yes-no-questions "$YES_NO" --value-pairs "$VALUE_PAIRS" --output-dir "$WORK/sf-$k" \
    > "$WORK/data-$k.log" 2>&1 &
done
wait
cat "$WORK"/data-*.log | grep -v kernels > "$OUT/train.log" || true
mkdir -p "$WORK/synthface/data"
# a card with the split patterns only: the per-process cards' recorded split sizes do not hold for the pool
printf -- '---\nconfigs:\n- config_name: default\n  data_files:\n' > "$WORK/synthface/README.md"
for split in train validation test novel; do
  printf -- '  - split: %s\n    path: data/%s-*.parquet\n' "$split" "$split" >> "$WORK/synthface/README.md"
done
printf -- '---\n' >> "$WORK/synthface/README.md"
cp "$WORK"/sf-1/data/{validation,test,novel}-*.parquet "$WORK/synthface/data/"
for k in $(seq 1 "$PROCS"); do
  for f in "$WORK/sf-$k"/data/train-*.parquet; do cp "$f" "$WORK/synthface/data/train-s$k-$(basename "$f" | cut -d- -f2-)"; done
done
echo "data: $(( $(date +%s) - start )) s, $(ls "$WORK"/synthface/data/train-* | wc -l) train shards" | tee -a "$OUT/train.log"

set +e
"$PYTHON" -m unif2ace_hf.cli train --recipe tiny-synthface --data "$WORK/synthface" --output-dir "$WORK/run" \
  --max-steps 1000000 --no-progress \
  --set training.max_minutes="$MINUTES" --set training.batch_size="$BATCH" --set training.learning_rate="$LR" \
  --set training.warmup_steps="$WARMUP" --set training.save_steps=1000000000 --set training.eval_steps=500 \
  --set training.eval_rows=256 --set data.codes_batch_size=256 \
  --set data.questions_per_image="$QUESTIONS" --set data.t2i_fraction="$T2I" \
  --set training.dataloader_workers="$WORKERS" 2>&1 | grep -v kernels >> "$OUT/train.log"
status=${PIPESTATUS[0]}
set -e
tail -5 "$OUT/train.log"
cp "$WORK/run/metrics.jsonl" "$OUT/" 2>/dev/null || true
[ "$status" = 0 ] || { echo "training failed ($status)"; exit "$status"; }

"$PYTHON" - "$WORK/run/final" "$OUT" <<'EOF'
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

final, out = Path(sys.argv[1]), Path(sys.argv[2])
weights = load_file(str(final / "model.safetensors"))
weights = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in weights.items()}
shards, size = [[]], 0
for name in sorted(weights):  # at most 12 MB a file
    nbytes = weights[name].numel() * weights[name].element_size()
    if shards[-1] and size + nbytes > 12_000_000:
        shards, size = shards + [[]], 0
    shards[-1].append(name)
    size += nbytes
for index, part in enumerate(shards):
    save_file({k: weights[k].contiguous() for k in part}, str(out / f"model-{index}.safetensors"), metadata={"format": "pt"})
names = sorted(weights)
shutil.copy(final / "config.json", out / "config.json")
print("saved", len(names), "tensors:", [p.stat().st_size for p in sorted(out.glob("model-*.safetensors"))])
EOF
echo "trained and saved: $(( $(date +%s) - start )) s"

if [ -n "$EVAL_DATA" ]; then
  for split in test novel; do
    timeout "$EVAL_SECONDS" "$PYTHON" -m unif2ace_hf.cli eval --model "$WORK/run/final" --data "$EVAL_DATA" \
      --split "$split" --num-examples "$EVAL_EXAMPLES" --device "$DEVICE" --output "$WORK/eval_$split.json" \
      2>&1 | grep -v kernels | tail -4 || true
    cp "$WORK/eval_$split.json" "$OUT/" 2>/dev/null || echo "eval on $split: no result"
  done
fi
echo "total: $(( $(date +%s) - start )) s"
exit
}
