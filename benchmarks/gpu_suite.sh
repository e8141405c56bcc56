#!/usr/bin/env bash
# The GPU checks in one run on a lent GPU machine (no jsonargparse there: Python API only).
#
#   OUT=/some/dir bash benchmarks/gpu_suite.sh          # on the GPU machine; about 5 minutes, at most 10
#   SMOKE=1 OUT=/tmp/suite bash benchmarks/gpu_suite.sh # CPU plumbing check of this script (tiny sizes)
#
# In order, each step time-boxed (seconds): the GPU (nvidia-smi, 20), the environment and a check that the
# package imports without jsonargparse (60), the CUDA tests: sync debug mode and the CUDA graph (150), the teacher
# cache inside a captured step (90), benchmarks/gpu_epoch.py (300), benchmarks/amp_check.py (90). A failing step does not stop the later ones.
# Everything goes to $OUT: one log per step, gpu_epoch.json, and suite.json (each step's exit status and time,
# with gpu_epoch's numbers). The last lines printed are the throughput table and the step summary.
set -u
OUT=${OUT:?set OUT to the folder for logs and results}
SMOKE=${SMOKE:-0}
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the checkout, not an installed copy
mkdir -p "$OUT"
STEPS_FILE="$OUT/steps.tsv"
: >"$STEPS_FILE"

step() {  # step NAME TIMEOUT_S COMMAND...: run, log to $OUT/NAME.log, record exit status and seconds
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  echo "=== $name (limit ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >>"$STEPS_FILE"
  tail -n 25 "$OUT/$name.log"
  echo "=== $name: exit $rc after $((SECONDS - t0)) s"
}

if [ "$SMOKE" = 1 ]; then
  ACCEL=cpu
  EPOCH_ARGS=(--smoke)
  AMP_ARGS=(--accelerator cpu --precision 32-true --steps 2)
else
  ACCEL=gpu
  EPOCH_ARGS=()
  AMP_ARGS=(--accelerator gpu --precision 32-true bf16-mixed 16-mixed --steps 5)
fi

if command -v nvidia-smi >/dev/null; then
  step nvidia_smi 20 nvidia-smi
else
  echo "no nvidia-smi on this machine" >"$OUT/nvidia_smi.log"
  printf 'nvidia_smi\tskipped\t0\n' >>"$STEPS_FILE"
fi

# Versions, and the package importing without jsonargparse (the CLI is the only part that needs it).
step environment 60 $PYTHON - <<'EOF'
import importlib.util
import sys

import lightning
import torch
import torchmetrics
import torchvision

print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
print("lightning", lightning.__version__, "torchmetrics", torchmetrics.__version__, "torchvision", torchvision.__version__)
print("jsonargparse installed:", importlib.util.find_spec("jsonargparse") is not None)
import lightning_kd, lightning_kd.cuda_graph, lightning_kd.data, lightning_kd.losses, lightning_kd.models  # noqa: E401,F401
print("lightning_kd imports jsonargparse:", "jsonargparse" in sys.modules)
EOF

if $PYTHON -c "import pytest" 2>/dev/null; then
  # on a GPU these run for real; on the CPU their CUDA tests skip
  step cuda_tests 150 $PYTHON -m pytest -q -p no:cacheprovider tests/test_sync_free.py tests/test_cuda_graph.py
  # the teacher cache on the device, inside a captured step (the file's CPU tests are left to make test)
  step cache_cuda_tests 90 $PYTHON -m pytest -q -p no:cacheprovider tests/test_teacher_cache.py -k cuda
else
  echo "pytest is not installed" >"$OUT/cuda_tests.log"
  printf 'cuda_tests\tskipped\t0\n' >>"$STEPS_FILE"
fi

step gpu_epoch 300 $PYTHON benchmarks/gpu_epoch.py "${EPOCH_ARGS[@]}" --json "$OUT/gpu_epoch.json"
step amp_check 90 $PYTHON benchmarks/amp_check.py "${AMP_ARGS[@]}"
# benchmarks/overhead.py is a CPU measurement: run it on the CPU, not here.

$PYTHON - "$OUT" "$ACCEL" <<'EOF'
import json
import sys
from pathlib import Path

out, accel = Path(sys.argv[1]), sys.argv[2]
steps = []
for line in (out / "steps.tsv").read_text().splitlines():
    name, rc, seconds = line.split("\t")
    steps.append({"step": name, "exit": rc, "seconds": int(seconds)})
epoch = out / "gpu_epoch.json"
summary = {"accelerator": accel, "steps": steps, "gpu_epoch": json.loads(epoch.read_text()) if epoch.exists() else None}
(out / "suite.json").write_text(json.dumps(summary, indent=2))
print("\n# suite summary (details in", out / "suite.json", ")")
for s in steps:
    print(f"{s['step']:12s} exit {s['exit']:>7s} {s['seconds']:4d} s")
EOF
grep -A20 '^| row |' "$OUT/gpu_epoch.log" || true
