# Device call 2 (issues 5 and 6): the step-speed variants of call2_step_speed.json (call1.sh with a variant list),
# then the decode measurements of ../2026-11-23-decode/ (its call2.sh).
export STEP_SPEED_TIMEOUT=330 STEP_SPEED_VARIANTS=eager_bf16,eager_fp8,graph_fp8,compiled_graph_fp8,compiled_fp8,compiled_graph_bf16
bash bench/results/2026-11-23-step-accel/call1.sh
bash bench/results/2026-11-23-decode/call2.sh 2>&1 | grep -v "^\s*$" | tail -40
