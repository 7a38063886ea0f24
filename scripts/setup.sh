#!/usr/bin/env bash
# Set up ssmkit on a fresh machine: the pinned CPU build of torch first (a plain `torch` would
# pull several GB of CUDA packages), then ssmkit itself with its test, plot, progress, train and peers
# extras (the test extra brings the interop peers: transformers, flash-linear-attention and triton,
# whose interpreter runs fla's kernels on the CPU; and onnx, onnxscript and onnxruntime, which the
# ONNX export test runs the decode step with), then the packages that ship the real datasets
# (scripts/setup_data.sh; apt-get as root).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_ROOT_USER_ACTION=ignore  # CI and these machines run as root, on purpose
python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -e ".[test,plot,progress,train,peers]"
bash scripts/setup_data.sh
python -c "import ssmkit, torch; print(f'ssmkit {ssmkit.__version__} ready (torch {torch.__version__})')"
