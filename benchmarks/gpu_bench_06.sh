#!/usr/bin/env bash
# Assignment 06's benchmark, as one prepared run on a machine with CUDA: the 06 solution notebook in the `full`
# profile on the real ISBI 2012 slices (24 train / 6 validation, from the pre-fetched copy of the mirror's folder,
# unpacked and SHA-256-checked by course.data.extract_isbi_archive): the U-Net with skips and the same net without
# them, 150 s of training each (width 32, depth 4, 256 x 256 tiles, batches of 8, bf16 autocast); validation membrane
# Dice, IoU and accuracy of each, without and with the 8 dihedral transforms at test time (course.results.record).
# Target: the U-Net's validation Dice >= 0.85 within 5 minutes, and above the net without skips.
#
# Here (once):  mkdir -p .data && cp ../shared/data/isbi2012-membrane.tar.gz .data/
# Device tool:  run(command="bash benchmarks/gpu_bench_06.sh", carry=[".data"], timeout_s=600)
#               (the notebook's own budgets: 2 x 150 s of training, plus evaluation)
# Back here:    merge <files_at>/results.json into benchmarks/results.json, then .venv/bin/python benchmarks/report.py
#               (the README's table)
#
# Needs python3 (or $PYTHON) with torch, numpy, pillow, matplotlib and tqdm; no nbgrader (the notebook runs as a
# plain script), no network. A dry run on a CPU machine, quick profile (synthetic slices, seconds):
#   PYTHON=.venv/bin/python PROFILE=quick bash benchmarks/gpu_bench_06.sh
# and the `cpu` profile on the real slices (about 10 minutes on 2 cores):
#   PYTHON=.venv/bin/python PROFILE=cpu bash benchmarks/gpu_bench_06.sh
set -uo pipefail
PY="${PYTHON:-python3}"
PROFILE="${PROFILE:-full}"
OUT="${OUT:-/tmp/gpu_bench_06}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
rc=0
if [ "$PROFILE" != quick ]; then
    if [ ! -f .data/isbi2012-membrane.tar.gz ]; then
        echo "no .data/isbi2012-membrane.tar.gz: copy ../shared/data/isbi2012-membrane.tar.gz there first" >&2
        exit 2
    fi
    "$PY" -c "from course.data import extract_isbi_archive; extract_isbi_archive('.data/isbi2012-membrane.tar.gz', '$OUT/data')" \
        || exit 1
    export COURSE_DATA_DIR="$OUT/data"
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "== 06_unet, profile $PROFILE"
"$PY" benchmarks/run.py 06_unet --script --profile "$PROFILE" --no-readme \
    --results "$OUT/results.json" 2>&1 | tee "$OUT/run_06.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
exit $rc
