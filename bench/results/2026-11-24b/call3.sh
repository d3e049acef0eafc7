# Device command (issue 7): the headline pair on one box, back to back: ltx-pipelines bf16 CFG (the baseline),
# our default run at 32 GiB (warm), ltx-pipelines with its default guidance; deadline 330 s so the call fits the
# session's last device time. `run` with carry [".whl"]. $OUT: peers.json, ours.json, logs, samebox_table.md.
set -o pipefail
CALL_START=$(date +%s)
source bench/device/prelude.sh
source bench/device/make_full.sh >/dev/null
python3 bench/reference.py peers --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR" \
  --out-dir "$OUT" --call-start "$CALL_START" --deadline-s 330 --hard-deadline-s 380 --only official-bf16-cfg
python3 bench/reference.py ours --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR" \
  --out-dir "$OUT" --call-start "$CALL_START" --deadline-s 330 --hard-deadline-s 380 --only ours-auto-32-discrete
python3 bench/reference.py peers --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR" \
  --out-dir "$OUT/full" --call-start "$CALL_START" --deadline-s 330 --hard-deadline-s 380 --only official-bf16-full
python3 bench/reference_table.py "$OUT/peers.json" "$OUT/ours.json" "$OUT/full/peers.json" | tee "$OUT/samebox_table.md" \
  | grep -E "^\| (ltx|ltx2)"
