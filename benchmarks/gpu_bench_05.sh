#!/usr/bin/env bash
# Assignment 05's benchmark as one prepared run on a machine with CUDA:
#   1. benchmarks/gpu_check.sh: the CUDA cases of tests/test_data_devices.py and DeviceLoader's images/s;
#   2. the 05 solution notebook in the `full` profile on CIFAR-10's real pixels (the JPEG copy, written in the
#      official batch layout by benchmarks/cifar10_from_jpeg.py): the small Swin (patch 2, window 4, width 96,
#      depths (2, 6, 2), heads (3, 6, 12); 04's recipe: RandAugment, mixup / cutmix, label smoothing; the main run,
#      "swin", target >= 88% test accuracy within 5 minutes of training), torchvision's ViT (patch 4, width 256, 7
#      blocks) and a ResNet-18 (crop + flip), 5 minutes of training each; test accuracy, parameters, images/s and
#      training time of each (course.results.record); part 7's time and memory of global against window attention.
#
# Here (once):  mkdir -p .data && cp ../shared/data/cifar10-jpg.tar.gz .data/
# Device tool:  run(command="RUNS=swin SKIP_CHECK=1 bash benchmarks/gpu_bench_05.sh", carry=[".data"], timeout_s=600)
#               RUNS picks the runs (COURSE_05_RUNS of the notebook; keys swin, vit, resnet; default: all three,
#               whose budgets add up to 15 minutes of training: more than one 10-minute command). The main run
#               alone (RUNS=swin): 5 minutes of training plus data, calibration and evaluation.
# Back here:    merge <files_at>/results.json into benchmarks/results.json, then .venv/bin/python benchmarks/report.py
#               (the README's tables)
#
# Runs solutions/05_swin/05_swin.ipynb when the release has been made (`make release`), else the source notebook
# (its hidden-test regions hold comments only). Needs python3 (or $PYTHON) with torch, torchvision, pytest, numpy,
# pillow, matplotlib and tqdm; no nbgrader (the notebook runs as a plain script), no network. A dry run on a CPU
# machine, quick profile (synthetic data, seconds):
#   PYTHON=.venv/bin/python PROFILE=quick DEVICE=cpu SKIP_CHECK=1 bash benchmarks/gpu_bench_05.sh
set -uo pipefail
PY="${PYTHON:-python3}"
PROFILE="${PROFILE:-full}"
OUT="${OUT:-/tmp/gpu_bench_05}"
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
if [ -n "${RUNS:-}" ]; then
    export COURSE_05_RUNS="$RUNS"
fi
echo "== 05_swin, profile $PROFILE, runs ${RUNS:-all}"
if [ -f solutions/05_swin/05_swin.ipynb ]; then
    "$PY" benchmarks/run.py 05_swin --script --profile "$PROFILE" --no-readme \
        --results "$OUT/results.json" 2>&1 | tee "$OUT/run_05.txt"
    [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
else
    echo "   (no solutions/05_swin yet: running the source notebook)"
    "$PY" - "$PROFILE" "$OUT" <<'EOF' 2>&1 | tee "$OUT/run_05.txt"
import os, sys
from pathlib import Path
from benchmarks.run import ROOT, run_notebook
profile, out = sys.argv[1], Path(sys.argv[2])
env = dict(os.environ, COURSE_PROFILE=profile, COURSE_RESULTS=str((out / "results.json").resolve()), MPLBACKEND="Agg")
seconds = run_notebook(ROOT / "source" / "05_swin" / "05_swin.ipynb", out, env, timeout=3600, script=True)
print(f"   done in {seconds:.0f} s")
EOF
    [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
fi
exit $rc
