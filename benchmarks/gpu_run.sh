#!/usr/bin/env bash
# One short, prepared GPU check for a lent accelerator machine (issues 6d and #14).
# It needs no network: the artifact travels in the working tree (ARTIFACT, default the
# newest under artifacts/models) and what the device image lacks as wheels in .whl/
# (pydantic, pydantic-core, pydantic-settings, python-dotenv, annotated-types,
# typing-inspection; /work/.library/device/README.md says how to carry wheels). Prints the
# throughput table for both classifiers on CUDA (bf16) by batch size, the model step of the
# end-to-end path; then the worker's scorer stage by stage (tokenise, forward, sequential,
# overlapped), eager and under torch.compile (CUDA graphs). JSON rows land in $OUT or /tmp.
set -euo pipefail
cd "$(dirname "$0")/.."
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
# The repository's stages are subpackages of `finsentry`: lay them out as pyproject's
# package-dir maps them ("finsentry.models" = "models", ...), so a new stage needs no edit here.
pkg=/tmp/finsentry-src
rm -rf "$pkg" && mkdir -p "$pkg" && cp -r finsentry "$pkg/"
python3 -c 'import tomllib; dirs = tomllib.load(open("pyproject.toml", "rb"))["tool"]["setuptools"]
[print(k.removeprefix("finsentry."), v) for k, v in dirs["package-dir"].items() if "." in k]' |
  while read -r stage folder; do ln -s "$PWD/$folder" "$pkg/finsentry/$stage"; done
export PYTHONPATH="$pkg${PYTHONPATH:+:$PYTHONPATH}"
artifact=${ARTIFACT:-$(ls -d artifacts/models/*/ | sort | tail -n 1)}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 benchmarks/classifier_throughput.py --model "$artifact" --device cuda \
  --items 4096 --per-item 128 --batch-sizes 32,64,128,256,512
out=${OUT:-/tmp}
export PYTHONUNBUFFERED=1
python3 benchmarks/gpu_scoring.py --model "$artifact" --device cuda --items 16384 \
  --batch-sizes 32,64,128,256,512 --json "$out/gpu_scoring.json"
# Compiling can be slow or fail: bounded, and a failure does not hide the figures above.
timeout 300 python3 benchmarks/gpu_scoring.py --model "$artifact" --device cuda --items 16384 \
  --batch-sizes 32,128,512 --compile --json "$out/gpu_scoring_compiled.json" ||
  echo "gpu_scoring.py --compile exited with status $?"
