#!/usr/bin/env bash
# The vision data layer's GPU checks, as one prepared run on a machine with CUDA:
#   1. the data tests, with the CUDA cases of tests/test_data_devices.py (they skip without a GPU);
#   2. images/s of DeviceLoader vs DataLoader + torchvision v2 on CUDA, on CIFAR-10's real pixels.
#
# Here (once):  mkdir -p .data && cp ../shared/data/cifar10-jpg.tar.gz .data/
# Device tool:  run(command="bash benchmarks/gpu_check.sh", carry=[".data"], timeout_s=540)
# Back here:    cp <files_at>/loader_speed.json benchmarks/ && .venv/bin/python benchmarks/report.py
#               (adds the CUDA rows to the README's loader table; the CPU rows are kept)
#
# Needs python3 (or $PYTHON) with torch, torchvision, pytest, numpy, pillow and tqdm; no nbgrader,
# no network. A dry run on a CPU machine: PYTHON=.venv/bin/python DEVICE=cpu BATCHES=2 bash benchmarks/gpu_check.sh
set -uo pipefail
PY="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/gpu_check}"
mkdir -p "$OUT"
"$PY" - <<'PY' | tee "$OUT/versions.txt"
import torch, torchvision
print("torch", torch.__version__, "torchvision", torchvision.__version__,
      "cuda", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
PY
"$PY" -m pytest -q -rs -p no:cacheprovider tests/test_data_devices.py tests/test_data_cifar.py tests/test_data_isbi.py \
    2>&1 | tee "$OUT/pytest.txt"
rc_tests=${PIPESTATUS[0]}

jpeg=()
if [ -f .data/cifar10-jpg.tar.gz ]; then
    mkdir -p /tmp/cifar10-jpg && tar xzf .data/cifar10-jpg.tar.gz -C /tmp/cifar10-jpg && jpeg=(--jpeg-dir /tmp/cifar10-jpg --no-synthetic)
else
    echo "no .data/cifar10-jpg.tar.gz: timing the synthetic set only"
fi
cp benchmarks/loader_speed.json "$OUT/loader_speed.json"  # the new rows are merged into a copy
"$PY" benchmarks/loader_speed.py --device "$DEVICE" --workers 0 4 8 --batches "${BATCHES:-30}" "${jpeg[@]}" \
    --out "$OUT/loader_speed.json" --no-readme \
    2>&1 | tee "$OUT/loader_speed.txt"
rc_bench=${PIPESTATUS[0]}
echo "tests exit $rc_tests, benchmark exit $rc_bench"
[ "$rc_tests" -eq 0 ] && [ "$rc_bench" -eq 0 ]
