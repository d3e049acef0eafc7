# Device command (issues 4, 5, 6; one call, <10 min): the W1 decode re-measure with the audio queued on its own
# CUDA stream from the caller's thread (issue 6); then the int8 whole forward under the bf16/fp8 levers (issue 4)
# and fp8 graphed eager vs compiled with each one's top kernels by name (issue 5: which kernels the "gemm" and
# "attention" classes hold once Inductor names fused kernels after their consumers), and Inductor's
# coordinate-descent tuning of its Triton kernels last (the variant most likely to run out of call time).
set -o pipefail
source bench/device/prelude.sh
source bench/device/make_full.sh >/dev/null
timeout 90 python3 bench/decode_bench.py --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --device cuda \
  --sizes 512x288x97 --budgets 32,16 --repeats 3 --encode-repeats 1 \
  --out "$OUT/decode_bench_w1.json" 2>&1 | tee "$OUT/decode_bench_w1.log" | tail -4
timeout 400 python3 bench/step_speed.py --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR" \
  --out "$OUT/step_speed.json" \
  --variants eager_int8,graph_int8,compiled_graph_int8,graph_fp8,compiled_graph_fp8,compiled_graph_fp8_tuned 2>&1 \
  | tee "$OUT/step_speed.log" | grep -E "^(eager|graph|compiled)" | cut -c1-400
