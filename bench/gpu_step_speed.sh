# Device command: warmed steady-state W1 step, bf16 vs fp8 (eager), after the per-call kernel choice was cached.
set -o pipefail
source bench/gpu_prelude.sh
source bench/gpu_make_full.sh >/dev/null
for q in fp8 bf16; do
  timeout 150 python3 bench/graph_step.py --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --quantization $q \
    --out "$OUT/step_$q.json" 2>&1 | grep -E "quantization|eager" 
done
