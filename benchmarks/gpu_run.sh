#!/usr/bin/env bash
# One short, prepared GPU check for a lent accelerator machine (issue 6d).
# It needs no network: the artifact travels in the working tree (ARTIFACT, default the
# newest under artifacts/models) and pydantic-settings as a wheel in .whl/ (see
# /work/.library/device/README.md for carrying wheels). Prints the throughput table for
# both classifiers on CUDA (bf16) by batch size: the model step of the end-to-end path.
set -euo pipefail
cd "$(dirname "$0")/.."
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
# The repository's stages are subpackages of `finsentry` (pyproject package-dir): lay them out.
pkg=/tmp/finsentry-src
rm -rf "$pkg" && mkdir -p "$pkg" && cp -r finsentry "$pkg/"
for stage in services feeds streams models index alerts queries dashboards training; do
  ln -s "$PWD/$stage" "$pkg/finsentry/$stage"
done
export PYTHONPATH="$pkg${PYTHONPATH:+:$PYTHONPATH}"
artifact=${ARTIFACT:-$(ls -d artifacts/models/*/ | sort | tail -n 1)}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 benchmarks/classifier_throughput.py --model "$artifact" --device cuda \
  --items 4096 --per-item 128 --batch-sizes 32,64,128,256,512
