# Device command (issue 3/8, call 2, same warm box): the distilled pipelines with the transformer kept through the
# upsample (1024x576 at 32 GiB, distilled-one-stage W1 at 32: 8-step stages now eager, no graph), then the
# one-pool rehearsal (--unified, fp8 from the pre-quantized file) at 32 / 24 / 16 GiB with expandable segments.
# `run` with carry [".whl", ".snap"]. $OUT: pipelines.json, ours.json, budget_proof.md, logs.
set -o pipefail
CALL_START=$(date +%s)
source bench/device/prelude.sh
source bench/device/make_full.sh >/dev/null
ln -sf "$CKPT_DIR/ltx2.safetensors" "$CKPT_DIR/ltx-2-19b-distilled.safetensors"
PYTHONPATH=$PYTHONPATH:$PWD/bench python3 bench/pipelines.py --checkpoint-path "$CKPT_DIR/ltx2.safetensors" \
  --distilled-checkpoint-path "$CKPT_DIR/ltx-2-19b-distilled.safetensors" --gemma-root "$GEMMA_DIR" \
  --spatial-upsampler-path "$CKPT_DIR/ltx-2-spatial-upscaler-x2-1.0.safetensors" --distilled-lora /nonexistent \
  --out-dir "$OUT" --call-start "$CALL_START" --deadline-s 300 --hard-deadline-s 340 \
  --only distilled-1024x576-32,distilled-one-stage-w1-32 2>&1 | grep -E "^\[reference\]|^\*\*"
python3 bench/reference.py ours --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR" \
  --call-start "$CALL_START" --deadline-s 560 --hard-deadline-s 590 --out-dir "$OUT" \
  --only ours-fp8-32-unified,ours-fp8-24-unified,ours-fp8-16-unified
python3 bench/budget_proof.py "$OUT/pipelines.json" "$OUT/ours.json" --markdown "$OUT/budget_proof.md" | tail -3
