# Device command (issues 5 and 3): the compiled variants again after the attention-dispatch fix (one graph per
# block expected), then the bf16 budget runs on the H100 that earlier calls left out. $OUT: step_speed.json/.log,
# ours.json, ours.log, ours_table.md, make_full.log.
set -o pipefail
CALL_START=$(date +%s)
source bench/device/prelude.sh
source bench/device/make_full.sh >/dev/null
timeout 240 python3 bench/step_speed.py --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR" \
  --out "$OUT/step_speed.json" --variants graph_fp8,compiled_graph_fp8,compiled_graph_bf16 2>&1 \
  | tee "$OUT/step_speed.log" | grep -v "^\s*$" | cut -c1-700
python3 bench/reference.py ours --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR" \
  --out-dir "$OUT" --call-start "$CALL_START" --quantized-path /dev/shm/ltx2-fp8.safetensors \
  --only ours-bf16-32-discrete,ours-bf16-16-discrete,ours-fp8-32-unified
python3 bench/reference_table.py "$OUT/ours.json" | tee "$OUT/ours_table.md"
