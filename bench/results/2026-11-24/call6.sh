# Device command (issues 5, 6, 8; one call, <10 min): fp8 W1 steps with the fused GELU + 8-bit quantization kernel
# in the compiled FeedForward vs Inductor's own fusion (accel/fused_ff.py), the kernel's own check and timing
# (bench/fused_ff_check.py), the LoRA fused-vs-side-path measurement (bench/lora_paths.py), and the W1 decode
# again with the CUDA audio queued after the first video chunk. `run` with carry [".whl"].
set -o pipefail
source bench/device/prelude.sh
source bench/device/make_full.sh >/dev/null
timeout 260 python3 bench/step_speed.py --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR" \
  --out "$OUT/step_speed.json" --variants graph_fp8,compiled_graph_fp8,compiled_graph_fp8_unfused 2>&1 \
  | tee "$OUT/step_speed.log" | grep -E "^(eager|graph|compiled)" | cut -c1-330
timeout 70 python3 bench/decode_bench.py --checkpoint-path "$CKPT_DIR/ltx2.safetensors" --device cuda \
  --sizes 512x288x97 --budgets 32,16 --repeats 3 --encode-repeats 1 \
  --out "$OUT/decode_bench_w1.json" 2>&1 | tee "$OUT/decode_bench_w1.log" | tail -3
timeout 120 python3 bench/lora_paths.py --out "$OUT/lora_paths_fp8.json" --device cuda --precision fp8 \
  --ranks 32,128,384 2>&1 | tee "$OUT/lora_paths.log" | tail -8
timeout 100 python3 bench/fused_ff_check.py --out "$OUT/fused_ff_check.json" 2>&1 | tee "$OUT/fused_ff_check.log" | tail -8
