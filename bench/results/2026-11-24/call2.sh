# Device command (issue 8, one call, <10 min): the full-size random checkpoint with its latent upsampler, a random
# rank-384 distilled LoRA of the official size, the checkpoint under the distilled file's name, then
# bench/pipelines.py: distilled-one-stage W1, distilled and two-stage at 1024x576, at 32 and 16 GiB.
# `run` with carry [".whl"]. $OUT: pipelines.json, pipelines.log, pipelines_table.md, make_full.log, lora.log.
set -o pipefail
CALL_START=$(date +%s)
source bench/device/prelude.sh
source bench/device/make_full.sh >/dev/null
LORA="$CKPT_DIR/ltx-2-19b-distilled-lora-384.safetensors"
[ -f "$LORA" ] || /usr/bin/time -f "make-lora: %e s, max RSS %M KB" python3 -m ltx2_edge make-lora --size full \
  --rank 384 --out "$LORA" 2>&1 | tail -2 | tee "$OUT/lora.log"
ln -sf "$CKPT_DIR/ltx2.safetensors" "$CKPT_DIR/ltx-2-19b-distilled.safetensors"
ls -la "$CKPT_DIR" | tee -a "$OUT/lora.log"
PYTHONPATH=$PYTHONPATH:$PWD/bench python3 bench/pipelines.py --checkpoint-path "$CKPT_DIR/ltx2.safetensors" \
  --distilled-checkpoint-path "$CKPT_DIR/ltx-2-19b-distilled.safetensors" --gemma-root "$GEMMA_DIR" \
  --spatial-upsampler-path "$CKPT_DIR/ltx-2-spatial-upscaler-x2-1.0.safetensors" --distilled-lora "$LORA" \
  --out-dir "$OUT" --call-start "$CALL_START" 2>&1 | grep -E "^\[reference\]|^\*\*|^\| (denoise|upsample)"
