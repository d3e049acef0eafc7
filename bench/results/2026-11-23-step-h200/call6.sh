# Device command (call 6 of the 2026-11-23 session, on an H200; this version from commit 73fcbbd, later changed into ../2026-11-23-step-accel/call1.sh): warmed steady-state W1 step, bf16 vs fp8 (eager), after the per-call kernel choice was cached.
set -o pipefail
source bench/device/prelude.sh
source bench/device/make_full.sh >/dev/null
for q in fp8 bf16; do
  timeout 150 python3 bench/graph_step.py --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --quantization $q \
    --out "$OUT/step_$q.json" 2>&1 | grep -E "quantization|eager" 
done
