#!/bin/sh
# GPU checks, for a machine with an NVIDIA GPU: build with TensorFlow's CUDA variant, run the
# GPU-marked tests, and measure tf_dense at the Amazon-670K width (670,091 labels, hidden 128,
# the full output layer) on the GPU at batch 128 and 1,024: a fixed number of steps (throughput,
# no evaluation) and a run to the workloads' P@1 target. Records and a report go to
# $GPU_CHECK_RESULTS (default results/gpu-check) and, when $OUT is set, are copied to $OUT/gpu-check.
#
#   sh benchmarks/gpu_check.sh
#
# Settings (environment):
#   GPU_CHECK_STEPS=50      steps of the fixed-step runs
#   GPU_CHECK_CPU_RUNS=1    also slide and tf_dense on the CPU (the seed claim's plot and samples/s
#                           per device; about 2 more minutes); 0 runs the GPU only
#   GPU_CHECK_THREADS=N     CPU threads of every run (default: all usable cores)
#   GPU_CHECK_TIMEOUT=300   wall seconds before a run is killed (it then leaves an error record)
#   GPU_CHECK_DRY_RUN=1     check the machine and the generated workloads, print the commands,
#                           run none of them (what tests/test_gpu_check.py does, GPU faked)
# Without network access to PyPI, point pip at a folder holding the wheels of
# requirements-cuda.lock (PIP_FIND_LINKS=/path PIP_NO_INDEX=1): pip reads both from the environment.
#
# Time: set-up aside (`make install` downloads ~3 GB of CUDA wheels once), about 2 minutes of
# GPU runs and 1 of tests; the CPU runs add about 2 minutes (their budget is 60 s of train clock each).
set -eu

cd "$(dirname "$0")/.."
ROOT=$(pwd)
STEPS=${GPU_CHECK_STEPS:-50}
CPU_RUNS=${GPU_CHECK_CPU_RUNS:-1}
THREADS=${GPU_CHECK_THREADS:-$(nproc)}
TIMEOUT=${GPU_CHECK_TIMEOUT:-300}
DRY=${GPU_CHECK_DRY_RUN:-0}
RESULTS=${GPU_CHECK_RESULTS:-$ROOT/results/gpu-check}
PY=$ROOT/.venv/bin/python

status=0
say() { printf '\n== %s\n' "$*"; }
run() {
  echo "+ $*"
  [ "$DRY" = 1 ] || "$@"
}
# A failed check is reported and the next one still runs, so that every record reaches $OUT.
check() {
  run "$@" || {
    echo "gpu_check.sh: FAILED (exit $?): $*" >&2
    status=1
  }
}

# The machine must have a GPU: without one every GPU test would be skipped and tf_dense would
# fail, which says nothing about the GPU path.
if ! gpus=$(nvidia-smi -L 2>/dev/null) || ! printf '%s\n' "$gpus" | grep -q '^GPU [0-9]'; then
  echo "gpu_check.sh: nvidia-smi -L lists no NVIDIA GPU; these checks need one" >&2
  exit 2
fi
say "GPUs"
printf '%s\n' "$gpus"
run nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv

say "set-up: TensorFlow's CUDA build"
run make install TF_VARIANT=cuda
check "$PY" -c "import tensorflow as tf; print(tf.__version__, tf.sysconfig.get_build_info().get('cuda_version'), tf.sysconfig.get_build_info().get('cudnn_version')); gpus = tf.config.list_physical_devices('GPU'); print(gpus); assert gpus, 'TensorFlow sees no GPU'"

say "GPU tests (a GPU that TensorFlow cannot see fails them, rather than skipping)"
check env SLIDEBENCH_REQUIRE_GPU=1 "$PY" -m pytest -q -ra -m gpu tests/test_tf_engines.py

# The shipped GPU workloads, copied with their device axis cut to the devices this check runs
# (same name, so the same run ids and the same description in the report).
WL=$(mktemp -d)
trap 'rm -rf "$WL"' EXIT
if [ "$CPU_RUNS" = 1 ]; then devices='["gpu", "cpu"]'; engines=slide,tf_dense; else devices='["gpu"]'; engines=tf_dense; fi
sed "s/^devices = .*/devices = $devices/" workloads/amazon670k-gpu.toml >"$WL/amazon670k-gpu.toml"
cp workloads/amazon670k-gpu-b1024.toml "$WL/amazon670k-gpu-b1024.toml"
# The GPU workload takes amazon670k's tuning ([tuning] from), which lives beside the workloads.
cp -r workloads/tuning "$WL/tuning"
# Refuse a broken copy now rather than after the set-up's minutes.
if [ -x "$PY" ]; then
  "$PY" -c "
import sys
from harness.spec import workload
for path in sys.argv[1:]:
    w = workload.load(path)
    p1 = (w.target_section() or {}).get('p1')
    print(f'{w.name}: batch {w.training.batch_size}, devices {list(w.devices)}, target P@1 {p1}')
" "$WL/amazon670k-gpu.toml" "$WL/amazon670k-gpu-b1024.toml"
fi

say "tf_dense, fixed steps ($STEPS, no evaluation): batch 128 and 1,024"
for w in amazon670k-gpu amazon670k-gpu-b1024; do
  check env SLIDEBENCH_MAX_STEPS="$STEPS" SLIDEBENCH_NO_EVAL=1 "$ROOT/.venv/bin/slidebench" run "$WL/$w.toml" \
    --engines tf_dense --threads "$THREADS" --timeout "$TIMEOUT" --results-dir "$RESULTS/steps" --force
done

say "to the P@1 target: tf_dense at batch 128 and 1,024$([ "$CPU_RUNS" = 1 ] && echo ', slide on the CPU')"
check "$ROOT/.venv/bin/slidebench" run "$WL/amazon670k-gpu.toml" --engines "$engines" --threads "$THREADS" \
  --timeout "$TIMEOUT" --results-dir "$RESULTS/target" --force
check "$ROOT/.venv/bin/slidebench" run "$WL/amazon670k-gpu-b1024.toml" --threads "$THREADS" \
  --timeout "$TIMEOUT" --results-dir "$RESULTS/target" --force
check "$ROOT/.venv/bin/slidebench" report --results-dir "$RESULTS/target"

say "summary"
check "$PY" benchmarks/gpu_check_summary.py "$RESULTS/steps" "$RESULTS/target"

if [ -n "${OUT:-}" ] && [ "$DRY" != 1 ]; then
  mkdir -p "$OUT/gpu-check"
  cp -r "$RESULTS/." "$OUT/gpu-check/"
  echo "records and report copied to $OUT/gpu-check"
fi
exit "$status"
