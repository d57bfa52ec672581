#!/bin/sh
# Which TensorFlow build this machine's virtual environment gets: prints "cpu" or "cuda" on stdout
# and one line saying why on stderr. Called by the Makefile; tests/test_tf_variant.py runs it with a fake nvidia-smi.
#
#   TF_VARIANT=cpu|cuda   forces the choice
#   otherwise             "cuda" when `nvidia-smi -L` lists at least one GPU, else "cpu"
#
# tensorflow-cpu (requirements.lock) cannot use a GPU at all; tensorflow[and-cuda]
# (requirements-cuda.lock) brings its CUDA and cuDNN libraries as PyPI wheels, so the NVIDIA
# driver is the only thing the machine itself must provide. Exit status 2 on a bad TF_VARIANT.
set -u

case "${TF_VARIANT:-}" in
  cpu|cuda)
    echo "TensorFlow variant: $TF_VARIANT (TF_VARIANT=$TF_VARIANT)" >&2
    echo "$TF_VARIANT"
    exit 0
    ;;
  "") ;;
  *)
    echo "tf_variant.sh: TF_VARIANT must be 'cpu' or 'cuda', got '$TF_VARIANT'" >&2
    exit 2
    ;;
esac

# `nvidia-smi -L` prints one "GPU <n>: <name> (UUID: ...)" line per GPU; a driver without a usable
# GPU prints an error and exits non-zero, and no nvidia-smi at all means no NVIDIA driver.
if gpus=$(nvidia-smi -L 2>/dev/null) && first=$(printf '%s\n' "$gpus" | grep -m1 '^GPU [0-9]'); then
  echo "TensorFlow variant: cuda (nvidia-smi lists $first; TF_VARIANT=cpu overrides)" >&2
  echo cuda
else
  echo "TensorFlow variant: cpu (no NVIDIA GPU listed by nvidia-smi -L; TF_VARIANT=cuda overrides)" >&2
  echo cpu
fi
