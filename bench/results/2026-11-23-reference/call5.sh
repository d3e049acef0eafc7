# Device command (issues 3 and 7, second call of ours): where the text-encode seconds go (Gemma load profile),
# then the ltx2-edge runs the first ours call left out, warm, with --compile auto's cost rule (a one-shot W1 run
# does not compile; it replays a CUDA graph). `run` with carry [".whl"]. $OUT: gemma_profile.json, ours.json,
# ours.log, make_full.log, ours_table.md.
set -o pipefail
CALL_START=$(date +%s)
source bench/device/prelude.sh
source bench/device/make_full.sh >/dev/null
python3 bench/gemma_load_profile.py --gemma-root "$GEMMA_DIR" --out "$OUT/gemma_profile.json" 2>&1 | tail -2
python3 bench/reference.py ours --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR" \
  --out-dir "$OUT" --call-start "$CALL_START" --quantized-path /dev/shm/ltx2-fp8.safetensors \
  --only "${OURS_ONLY:-ours-auto-32-discrete,ours-auto-16-discrete,ours-fp8-16-unified,ours-fp8-24-unified,ours-auto-24-discrete,ours-fp8-32-unified,ours-bf16-32-discrete,ours-bf16-16-discrete}"
python3 bench/reference_table.py "$OUT/ours.json" | tee "$OUT/ours_table.md"
