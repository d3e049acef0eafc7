# Produced nothing committed: written in the 2026-11-24 session; call 1 (call1.sh) ran these measurements instead.
# Device command (issues 4 and 6, one call, ~6 min): the int8 whole forward under the same levers as bf16/fp8
# (bench/step_speed.py), then the decode stage at W1 and 1280x704 with the audio queued on its own CUDA stream from
# the caller's thread (bench/decode_bench.py). Logs and JSON in $OUT.
set -o pipefail
source bench/device/prelude.sh
source bench/device/make_full.sh >/dev/null
timeout 300 python3 bench/step_speed.py --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR" \
  --out "$OUT/step_speed_int8.json" --variants eager_bf16,eager_int8,graph_int8,compiled_graph_int8 2>&1 \
  | tee "$OUT/step_speed_int8.log" | grep -E "^(eager|graph|compiled)" | cut -c1-600
timeout 150 python3 bench/decode_bench.py --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --device cuda \
  --sizes 512x288x97,1280x704x121 --budgets 32,16 --repeats 3 --encode-repeats 1 \
  --out "$OUT/decode_bench.json" 2>&1 | tee "$OUT/decode_bench.log" | tail -6
