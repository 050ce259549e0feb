#!/usr/bin/env bash
# What a session with a GPU runs, as one command (about 8 minutes on one H200; no Ray or DeepSpeed needed there):
#   1. the CUDA-path tests (tests/gpu: the small model in fp32/bf16 against the CPU, a bf16 step with the fused
#      AdamW, the sampler's seed rule, the video tokenizer, attention);
#   2. bench/goal_gpu.py: the goal recipe at BATCH_SCALE x its batch in bf16, within BUDGET_S seconds of training;
#   3. its shapes-world scores (96 prompts per suite, seed 0) on the GPU.
# Needs the goal recipe's shards (runs/shards/shapes-goal, shapes-goal2 and shapes-goal3; the commands are in
# workflows/configs/pretrain_small_goal.yaml). Results under $OUT (default runs/gpu-checks): logs, probe.json,
# eval.json and the checkpoint as final.tar.part-* (split for transfer; `cat final.tar.part-* | tar -x`).
# TESTS=0 skips step 1; DEADLINE_S (default BUDGET_S + 10 %) stops training whatever its steps left.
# A dry run on a CPU: DEVICE=cpu EXTRA="--max-steps 3 --loader-workers 1" NUM=2 bench/gpu_checks.sh
set -uo pipefail
OUT=${OUT:-runs/gpu-checks}
PY=${PY:-python3}
RUN=${RUN:-runs/goal-gpu}
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
mkdir -p "$OUT" "$RUN"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; $PY -c "import torch; print('torch', torch.__version__)"
  if [ "${TESTS:-1}" = 1 ]; then timeout "${TEST_TIMEOUT:-240}" $PY -m pytest -m gpu tests/gpu -q -p no:cacheprovider
  echo "gpu tests rc=$?"; else echo "gpu tests skipped (TESTS=0)"; fi; } > "$OUT/gpu_tests.log" 2>&1
timeout "${TRAIN_TIMEOUT:-480}" $PY bench/goal_gpu.py --out "$RUN" --batch-scale "${BATCH_SCALE:-4}" \
    --budget-s "${BUDGET_S:-300}" --deadline-s "${DEADLINE_S:-$(( ${BUDGET_S:-300} * 11 / 10 ))}" --device "${DEVICE:-cuda}" \
    ${EXTRA:-} > "$OUT/goal_gpu.log" 2>&1
echo "train rc=$?" >> "$OUT/goal_gpu.log"
cp "$RUN/probe.json" "$OUT/" 2>/dev/null
tar -C "$RUN" --exclude final/tokenizer -cf - final | split -b 15m - "$OUT/final.tar.part-"
timeout "${EVAL_TIMEOUT:-150}" $PY -m workflows.eval --checkpoint "$RUN/final" --suite all --num "${NUM:-96}" --no-references \
    --device "${DEVICE:-cuda}" --out "$RUN/eval" --quiet > "$OUT/eval.log" 2>&1
echo "eval rc=$?" >> "$OUT/eval.log"
cp "$RUN/eval/eval.json" "$OUT/" 2>/dev/null
tail -n 3 "$OUT/gpu_tests.log" "$OUT/goal_gpu.log" "$OUT/eval.log"
