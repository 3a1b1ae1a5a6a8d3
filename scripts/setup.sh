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
# Fashion-MNIST (task=fashion_mnist) from Debian's package when this is a root Debian machine; elsewhere the task
# names the four files and where they go. A failure here only means that task lacks its data.
FMNIST=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$FMNIST" ] && [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ] && command -v apt-get >/dev/null; then
  fm_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 dataset-fashion-mnist >/tmp/bench-apt-fashion.log 2>&1; }
  if fm_install || { apt-get update -q -o DPkg::Lock::Timeout=300 >>/tmp/bench-apt-fashion.log 2>&1 && fm_install; }; then
    echo "[setup] Fashion-MNIST installed in /usr/share/datasets/fashion-mnist"
  else
    echo "[setup] apt-get install dataset-fashion-mnist failed (log: /tmp/bench-apt-fashion.log): task=fashion_mnist will need task.data_root"
  fi
fi
