# Device command (issue 7, ours, the runs the first call had no time for), on a box that still holds the full
# checkpoint and the pre-quantized fp8 file from that call (else it makes them). `run` with carry [".whl"].
set -o pipefail
CALL_START=$(date +%s)
source bench/device/prelude.sh
source bench/device/make_full.sh >/dev/null
python3 bench/reference.py ours --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR" \
  --out-dir "$OUT" --call-start "$CALL_START" --quantized-path /dev/shm/ltx2-fp8.safetensors --reuse-quantized \
  --only "${OURS_ONLY:-ours-auto-24-discrete,ours-fp8-32-unified,ours-auto-none-discrete,ours-bf16-32-discrete,ours-bf16-16-discrete,ours-bf16-24-discrete,ours-bf16-16-unified,ours-bf16-32-unified,ours-bf16-24-unified}"
python3 bench/reference_table.py "$OUT/ours.json" | tee "$OUT/ours_table.md"
