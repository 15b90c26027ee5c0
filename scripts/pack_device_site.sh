#!/usr/bin/env bash
# Prepare what scripts/train_default_model_gpu.sh needs to carry to the device machine, whose Python lacks datasets
# and diffusers and has an older transformers, and whose working-tree limit (64 MiB) the checkout already fills to
# about 53 MB: the pure-Python packages unpacked and packed as one xz tarball (about 7 MB, where their wheels take
# 20 MB), plus the test and novel splits of the evaluation faces (about 4 MB).
#
#   bash scripts/pack_device_site.sh      # writes .whl/site.tar.xz and .evaldata/synthface-seed101/
#
# The versions are the ones installed here (PYTHON), downloaded for the device's CPython 3.12. Both folders must
# be ignored by git (.git/info/exclude) so that they travel only when a device call carries them.
set -euo pipefail
PYTHON=${PYTHON:-.venv/bin/python}
PACKAGES=${PACKAGES:-"transformers diffusers datasets dill multiprocess importlib_metadata"}
EVAL_DATA=${EVAL_DATA:-runs/synthface-seed101}
DEST=${DEST:-.whl}
EVAL_DEST=${EVAL_DEST:-.evaldata/$(basename "$EVAL_DATA")}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pins=()
for package in $PACKAGES; do
  pins+=("$package==$("$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$package")")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d "$stage/wheels" "${pins[@]}"
mkdir -p "$stage/site" "$DEST"
for wheel in "$stage"/wheels/*.whl; do
  (cd "$stage/site" && python3 -m zipfile -e "$wheel" .)
done
tar -C "$stage/site" -cf - . | xz -6 -T2 > "$DEST/site.tar.xz"
echo "$DEST/site.tar.xz: ${pins[*]} ($(du -h "$DEST/site.tar.xz" | cut -f1))"

if [ -d "$EVAL_DATA" ]; then
  rm -rf "$EVAL_DEST" && mkdir -p "$EVAL_DEST/data"
  cp "$EVAL_DATA"/data/{test,novel}-*.parquet "$EVAL_DEST/data/"
  # a card naming the two splits that travel, so that load_dataset does not look for the others
  printf -- '---\nconfigs:\n- config_name: default\n  data_files:\n' > "$EVAL_DEST/README.md"
  for split in test novel; do
    printf -- '  - split: %s\n    path: data/%s-*.parquet\n' "$split" "$split" >> "$EVAL_DEST/README.md"
  done
  printf -- '---\n' >> "$EVAL_DEST/README.md"
  echo "$EVAL_DEST: the test and novel splits of $EVAL_DATA ($(du -sh "$EVAL_DEST" | cut -f1))"
fi
