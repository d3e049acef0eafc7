# Device call 13 (after call 12): the streamed-block CUDA graph's GPU test again (with full output), the clips table
# of issue 16 (10 s and 20 s at 512x288, 32 and 16 GiB; the 10 s clip at 16 GiB also with --cuda-graph off, since its
# capture ran out of memory in call 12 and now falls back to eager steps), where a fresh process's start-up goes
# (imports with and without compiled bytecode), then `ltx2-edge quantize --to fp8` beside the checkpoint (where
# generate finds it) for the one-pool row at 16 GiB and a 32 GiB run reading the pre-quantized file.
# `run` with carry [".whl"]; ~560 s with the checkpoint's generation.
set -o pipefail
CALL_START=$(date +%s)
source bench/device/prelude.sh
t() { echo "  t=$(( $(date +%s) - CALL_START )) s"; }
left() { [ $(( $(date +%s) - CALL_START )) -lt "$1" ]; }
python3 -m pytest -q -p no:cacheprovider tests/test_streamer.py tests/test_host_io.py > "$OUT/gpu_tests.txt" 2>&1
grep -E "^E |^FAILED|passed|failed" "$OUT/gpu_tests.txt" | head -20; t
imports() { python3 -X importtime -c "import ltx2_edge.cli, ltx2_edge.pipeline" 2> "$OUT/importtime_$1.txt";
  /usr/bin/time -f "imports ($1): %e s" python3 -c "import ltx2_edge.cli, ltx2_edge.pipeline"; }
imports first; imports second
python3 -m compileall -q -j 8 /tmp/site > /dev/null 2>&1; imports compiled; t
source bench/device/make_full.sh >/dev/null
CK=(--checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR")
t
source bench/device/predict.sh
go c10-16 --budget 16GiB --num-frames 241
go c10-16-eager --budget 16GiB --num-frames 241 --cuda-graph off
go c20-32 --budget 32GiB --num-frames 481
go c20-16 --budget 16GiB --num-frames 481
left 330 && /usr/bin/time -f "quantize: %e s" python3 -m ltx2_edge quantize --checkpoint-path "$CKPT_DIR/ltx2.safetensors" \
  --to fp8 --device cuda 2>&1 | grep -vE "^\[|it/s" | tail -3; t
ls -la "$CKPT_DIR"; df -h / | tail -1
left 480 && go w1-16u --budget 16GiB --unified
left 530 && go w1-32-preq --budget 32GiB
cat "$OUT/prediction.md"
echo "call took $(( $(date +%s) - CALL_START )) s"
