#!/usr/bin/env bash
# Finetune the built-in model on each built-in task with a default LoRA and measure the task
# metric before and after, plus the base corpus perplexity after each finetune (interference).
# Prints a Markdown table for the model card. Usage (from the repository root):
#   scripts/builtin/finetune_tasks.sh MODEL_DIR OUT_DIR [STEPS]
set -euo pipefail
MODEL=$1 OUT=$2 STEPS=${3:-200}
BIN=${TINYTUNE_BIN:-$HOME/.cache/tinytune/target/debug/tinytune}
VALID=www/assets/builtin/corpus/valid.txt
mkdir -p "$OUT"
metric() { python3 -c 'import json,sys; r=json.load(sys.stdin); print(" / ".join("%.1f%%" % (100*m["score"]) for m in r["metrics"]))'; }
ppl() { python3 -c 'import json,sys; print("%.3f" % json.load(sys.stdin)["perplexity"])'; }
base_ppl=$("$BIN" eval --device cpu --model "$MODEL" --data "$VALID" --seq-len 256 --json 2>/dev/null | ppl)
echo "| task | metric (main / extra) before | after | train time | corpus perplexity after (base $base_ppl) |"
echo "|---|---|---|---|---|"
for task in json sql style qa; do
  before=$("$BIN" eval --device cpu --model "$MODEL" --task "$task" --json 2>/dev/null | metric)
  start=$(date +%s)
  "$BIN" train --device cpu --model "$MODEL" --data "www/assets/builtin/tasks/$task/train.jsonl" --out "$OUT/$task" \
    --steps "$STEPS" --batch-size 16 --seq-len 128 --rank 16 --alpha 32 --lr 2e-3 --warmup 10 --seed 0 > "$OUT/$task.log" 2>&1
  secs=$(( $(date +%s) - start ))
  after=$("$BIN" eval --device cpu --model "$MODEL" --adapter "$OUT/$task" --task "$task" --json 2>/dev/null | metric)
  interf=$("$BIN" eval --device cpu --model "$MODEL" --adapter "$OUT/$task" --data "$VALID" --seq-len 256 --json 2>/dev/null | ppl)
  echo "| $task | $before | $after | ${secs} s ($STEPS steps) | $interf |"
done
