#!/usr/bin/env bash
# Assignment 03's benchmark and the vision data layer's GPU checks, as one prepared run on a machine with CUDA:
#   1. benchmarks/gpu_check.sh: the CUDA cases of tests/test_data_devices.py and DeviceLoader's images/s;
#   2. the 03 solution notebook in the `full` profile on CIFAR-10's real pixels (the JPEG copy, written in the
#      official batch layout by benchmarks/cifar10_from_jpeg.py): the conv ResNet (target >= 93% test accuracy
#      within 2 minutes of training), the attention ResNet (>= 90% within 10 minutes) and the conv ResNet with a
#      non-local block; accuracy, parameters, images/s and peak memory of each (course.results.record).
#
# Here (once):  mkdir -p .data && cp ../shared/data/cifar10-jpg.tar.gz .data/
# Device tool:  run(command="bash benchmarks/gpu_bench_03.sh", carry=[".data"], timeout_s=600)
#               (the notebook's own budgets: 2 + 10 + 2 minutes of training; SKIP_CHECK=1 leaves out step 1)
# Back here:    merge <files_at>/results.json into benchmarks/results.json and copy <files_at>/loader_speed.json
#               to benchmarks/, then .venv/bin/python benchmarks/report.py (the README's tables)
#
# Needs python3 (or $PYTHON) with torch, torchvision, pytest, numpy, pillow, matplotlib and tqdm; no nbgrader (the
# notebook runs as a plain script), no network. A dry run on a CPU machine, quick profile (synthetic data, seconds):
#   PYTHON=.venv/bin/python PROFILE=quick DEVICE=cpu BATCHES=2 bash benchmarks/gpu_bench_03.sh
set -uo pipefail
PY="${PYTHON:-python3}"
PROFILE="${PROFILE:-full}"
OUT="${OUT:-/tmp/gpu_bench_03}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
rc=0
if [ -z "${SKIP_CHECK:-}" ]; then
    OUT="$OUT" bash benchmarks/gpu_check.sh || rc=1
fi
if [ -f .data/cifar10-jpg.tar.gz ] && [ "$PROFILE" != quick ]; then
    "$PY" benchmarks/cifar10_from_jpeg.py .data/cifar10-jpg.tar.gz /tmp/cifar10-standin && \
        export COURSE_CIFAR10_STANDIN=/tmp/cifar10-standin
fi
echo "== 03_local_attention, profile $PROFILE"
"$PY" benchmarks/run.py 03_local_attention --script --profile "$PROFILE" --no-readme \
    --results "$OUT/results.json" 2>&1 | tee "$OUT/run_03.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
exit $rc
