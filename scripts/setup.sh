#!/usr/bin/env bash
# Create .venv and install warmup-bench with everything it needs (idempotent; ~3-5 minutes the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch and torchvision first, as a matching pair (torchvision must match torch's build);
# on a machine with a pip constraint file (as here) pip resolves them to the allowed versions.
.venv/bin/python -m pip install -q "torch>=2.4" "torchvision>=0.19"
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/python -c "import torch, torchvision, timm, transformers, hydra, wandb; print('[setup] torch', torch.__version__, '| torchvision', torchvision.__version__, '| timm', timm.__version__, '| transformers', transformers.__version__)"
