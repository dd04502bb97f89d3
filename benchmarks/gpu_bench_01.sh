#!/usr/bin/env bash
# Assignment 01's benchmark, as one prepared run on a machine with CUDA: the solution notebook in the
# `full` profile on the real Multi30k, de→en (the target: BLEU >= 30 within 5 minutes of training) and
# en→fr (the lectures' direction); each run trains the attention GRU and the no-attention baseline and
# records greedy and beam-5 BLEU, BLEU by source length and the training time (course.results.record).
#
# Here (once):  mkdir -p .data/multi30k && cp ../shared/data/multi30k/*.gz .data/multi30k/
# Device tool:  run(command="bash benchmarks/gpu_bench_01.sh", carry=[".data"], timeout_s=1500)
#               (two directions x two models x ~290 s of training, plus decoding: ~25 minutes; one
#               direction: DIRECTIONS=de-en)
# Back here:    merge <files_at>/results.json into benchmarks/results.json, then
#               .venv/bin/python benchmarks/report.py  (regenerates the README's results table)
#
# Needs python3 (or $PYTHON) with torch, sacrebleu, matplotlib, tqdm; no nbgrader (the notebook runs as a
# plain script), no network. A dry run on a CPU machine, quick profile (synthetic data, seconds):
#   PYTHON=.venv/bin/python PROFILE=quick bash benchmarks/gpu_bench_01.sh
set -uo pipefail
PY="${PYTHON:-python3}"
PROFILE="${PROFILE:-full}"
OUT="${OUT:-/tmp/gpu_bench_01}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
[ -d .data/multi30k ] && export COURSE_DATA_DIR="$PWD/.data"
"$PY" - <<'PY' | tee "$OUT/versions.txt"
import torch
print("torch", torch.__version__, "cuda", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
PY
rc=0
for direction in ${DIRECTIONS:-de-en en-fr}; do
    echo "== 01_attention_seq2seq, $direction, profile $PROFILE"
    "$PY" benchmarks/run.py 01_attention_seq2seq --script --profile "$PROFILE" --no-readme \
        --results "$OUT/results.json" --env "COURSE_MT_DIRECTION=$direction" 2>&1 | tee "$OUT/run_$direction.txt"
    [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
done
exit $rc
