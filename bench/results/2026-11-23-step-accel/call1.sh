# Device command (issue 5): W1 denoising steps eager bf16 / eager fp8 / text K/V once / CUDA graph / compiled /
# compiled + graph, with kernel counts, GPU-busy fraction and the compute floor (bench/step_speed.py).
# Logs and the JSON land in $OUT. ~85 s checkpoint generation + ~4-6 min of variants (compile is CPU time).
set -o pipefail
source bench/device/prelude.sh
source bench/device/make_full.sh >/dev/null
export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-cache
timeout ${STEP_SPEED_TIMEOUT:-420} python3 bench/step_speed.py --checkpoint-path "$CKPT_DIR/ltx2.safetensors" \
  --gemma-root "$GEMMA_DIR" --out "$OUT/step_speed.json" ${STEP_SPEED_VARIANTS:+--variants $STEP_SPEED_VARIANTS} \
  2>&1 | tee "$OUT/step_speed.log" | grep -v "^\s*$" | cut -c1-600
