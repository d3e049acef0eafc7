# Device command (issues 7 and 8, the runs earlier calls had no time for): two-stage at 1024x576 under 16 GiB
# (bench/pipelines.py), then ltx2-edge bf16 --unified at 32 / 24 / 16 GiB (bench/reference.py ours), one deadline.
set -o pipefail
CALL_START=$(date +%s)
source bench/device/prelude.sh
source bench/device/make_full.sh >/dev/null
LORA="$CKPT_DIR/ltx-2-19b-distilled-lora-384.safetensors"
[ -f "$LORA" ] || python3 -m ltx2_edge make-lora --size full --rank 384 --out "$LORA" >/dev/null
ln -sf "$CKPT_DIR/ltx2.safetensors" "$CKPT_DIR/ltx-2-19b-distilled.safetensors"
PYTHONPATH=$PYTHONPATH:$PWD/bench python3 bench/pipelines.py --checkpoint-path "$CKPT_DIR/ltx2.safetensors" \
  --distilled-checkpoint-path "$CKPT_DIR/ltx-2-19b-distilled.safetensors" --gemma-root "$GEMMA_DIR" \
  --spatial-upsampler-path "$CKPT_DIR/ltx-2-spatial-upscaler-x2-1.0.safetensors" --distilled-lora "$LORA" \
  --out-dir "$OUT" --call-start "$CALL_START" --only two-stage-1024x576-16 2>&1 | grep -E "^\[reference\]"
python3 bench/reference.py ours --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR" \
  --out-dir "$OUT" --call-start "$CALL_START" --only ours-bf16-32-unified,ours-bf16-24-unified,ours-bf16-16-unified
python3 bench/reference_table.py "$OUT/ours.json" > "$OUT/ours_table.md"; grep "^| ltx2-edge" "$OUT/ours_table.md"
