export STEP_SPEED_TIMEOUT=330 STEP_SPEED_VARIANTS=eager_bf16,eager_fp8,graph_fp8,compiled_graph_fp8,compiled_fp8,compiled_graph_bf16
bash bench/gpu_step_speed.sh
bash bench/gpu_decode.sh 2>&1 | grep -v "^\s*$" | tail -40
