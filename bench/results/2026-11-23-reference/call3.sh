# Device command (issue 7, call 1 of 2): ltx2-edge on W1 at budgets none / 32 / 24 / 16 GiB, default quantization
# (fp8 on the H100) and bf16, discrete and --unified, the first run right after the page cache is dropped (cold).
# All the logic is in bench/reference.py; this sets the box up. `run` with carry [".whl"].
# $OUT gets: ours.json (every record), ours.log (every run's output), make_full.log, ours_table.md.
set -o pipefail
CALL_START=$(date +%s)  # reference.py starts no run expected to end after 540 s from here, kills one at 585 s
source bench/device/prelude.sh
source bench/device/make_full.sh >/dev/null
python3 bench/reference.py ours --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR" \
  --out-dir "$OUT" --call-start "$CALL_START" --quantized-path /dev/shm/ltx2-fp8.safetensors
python3 bench/reference_table.py "$OUT/ours.json" | tee "$OUT/ours_table.md"
