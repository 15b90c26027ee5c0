#!/usr/bin/env bash
# Train the default image tokenizer (unif2ace_hf.DEFAULT_VQ_MODEL) on one GPU, evaluate it on held-out renders, and
# leave under $OUT: unif2ace-vq-tiny/{config.json,model.safetensors}, metrics.jsonl (one row per step),
# training_summary.json, train.log, eval.json, eval.log, tokenizer_recon.png (8 files, each < 16 MiB).
# Needs torch, accelerate, pillow, numpy, pyarrow; no `datasets` (SynthFace faces are rendered in memory). If the
# machine's transformers is older than 5.24, .whl/ carries the newer one: `scripts/pack_device_site.sh`'s
# site.tar.xz (unpacked to /tmp/site) or the 5.24 wheel (installed there).
#
# Through the device tool, from the repository root (carry [".whl"], timeout_s 590):
#   set -o pipefail; OUT=$OUT MINUTES=7 bash scripts/train_default_tokenizer.sh 2>&1 | tail -40
# Train the shipped model longer instead of from scratch (what produced the shipped weights' second stage):
#   OUT=$OUT INIT_FROM=src/unif2ace_hf/default_models/unif2ace-vq-tiny LR=1e-4 MINUTES=2.2 IMAGES=50000 bash ...
# With the perceptual term from the shipped SynthFace feature network (docs/decisions.md, "Perceptual term"):
#   OUT=$OUT PERCEPTUAL=1.0 MINUTES=7 bash scripts/train_default_tokenizer.sh
# Then copy $OUT/unif2ace-vq-tiny/model.safetensors (and config.json without auto_map) into
# src/unif2ace_hf/default_models/unif2ace-vq-tiny/, and on the CPU:
#   unif2ace data synthface --num-images 5120 --size 64 --seed 0 --output-dir /tmp/sf64
#   unif2ace eval-tokenizer --model src/unif2ace_hf/default_models/unif2ace-vq-tiny --data /tmp/sf64 --split test \
#     --grid docs/images/tokenizer_recon.png
set -euo pipefail
OUT=${OUT:-out/default-tokenizer}
PYTHON=${PYTHON:-python3}
IMAGES=${IMAGES:-100000}      # distinct training faces, rendered in memory
MINUTES=${MINUTES:-7}         # training time budget; the learning rate decays over it
STEPS=${STEPS:-40000}         # step budget (whichever runs out first)
BATCH=${BATCH:-128}
LR=${LR:-4e-4}
CONFIG=${CONFIG:-tiny}        # tokenizer preset (tiny; small = the CPU recipe's sizes) or a config.json
PERCEPTUAL=${PERCEPTUAL:-}    # weight of the perceptual loss (shipped feature network); empty = pixel losses only
INIT_FROM=${INIT_FROM:-}      # e.g. src/unif2ace_hf/default_models/unif2ace-vq-tiny to train the shipped model longer
RUN=${RUN:-/tmp/unif2ace-vq-run}
EVAL_IMAGES=${EVAL_IMAGES:-512}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1

if [ -f .whl/site.tar.xz ]; then  # scripts/pack_device_site.sh's tarball, as the model's GPU script uses
  mkdir -p /tmp/site && tar -xJf .whl/site.tar.xz -C /tmp/site
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
elif [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  need=$("$PYTHON" -c "import transformers as t; v=tuple(int(x) for x in t.__version__.split('.')[:2]); print(int(v < (5, 24)))" 2>/dev/null || echo 1)
  if [ "$need" = 1 ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
  fi
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-}
mkdir -p "$OUT/unif2ace-vq-tiny"
"$PYTHON" -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'cuda', torch.cuda.is_available())"
rm -rf "$RUN"

"$PYTHON" -m unif2ace_hf.commands.tokenizer train-tokenizer \
  --data "synthface:$IMAGES" --output-dir "$RUN" --config "$CONFIG" --bf16 \
  --max-steps "$STEPS" --max-minutes "$MINUTES" --batch-size "$BATCH" --learning-rate "$LR" \
  --warmup-steps 500 --log-steps 100 --save-steps 1000000 --no-progress ${INIT_FROM:+--init-from "$INIT_FROM"} \
  ${PERCEPTUAL:+--perceptual-net default --perceptual-weight "$PERCEPTUAL"} \
  2>&1 | tee "$OUT/train.log"

# Held-out faces: the same distribution, another seed stream.
"$PYTHON" -m unif2ace_hf.commands.tokenizer eval-tokenizer --model "$RUN" --data "synthface:$EVAL_IMAGES:7919" \
  --num-images "$EVAL_IMAGES" --grid "$OUT/tokenizer_recon.png" --json "$OUT/eval.json" 2>&1 | tee "$OUT/eval.log"

cp "$RUN/config.json" "$RUN/model.safetensors" "$OUT/unif2ace-vq-tiny/"
cp "$RUN/metrics.jsonl" "$RUN/training_summary.json" "$OUT/"
ls -la "$OUT" "$OUT/unif2ace-vq-tiny"
