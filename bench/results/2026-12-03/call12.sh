# Device call 12: the streamed-block CUDA graph (issue 16) and issue 17 item 2's remaining rows.
# First the GPU test of the graph that holds the streamed blocks' copies (tests/test_streamer.py, tiny model), then
# calibrate with the model files, then fresh `generate` processes planned with its profile: W1 at 32 GiB on the
# freshly written (cold) checkpoint, W1 at 16 GiB (blocks streamed, now graphed), W1 at 32 GiB warm, the 10 s clip at
# 16 GiB, the one-pool rows at 16 and 32 GiB, and W1 at 16 GiB with --cuda-graph off (the eager streamed step, same
# box) while time is left. `run` with carry [".whl"]; ~560 s with the checkpoint's generation.
set -o pipefail
CALL_START=$(date +%s)
source bench/device/prelude.sh
t() { echo "  t=$(( $(date +%s) - CALL_START )) s"; }
python3 -m pytest -q -p no:cacheprovider tests/test_streamer.py 2>&1 | tail -4 | tee "$OUT/gpu_tests.txt"; t
source bench/device/make_full.sh >/dev/null
CK=(--checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR")
t
timeout 240 python3 -m ltx2_edge calibrate --device cuda:0 "${CK[@]}" --quiet > "$OUT/calibrate.txt" 2>&1; tail -32 "$OUT/calibrate.txt"; t
cp ~/.cache/ltx2-edge/profiles/*.json "$OUT/" 2>/dev/null
source bench/device/predict.sh
go w1-32-cold --budget 32GiB
go w1-16 --budget 16GiB
go w1-32 --budget 32GiB
go c10-16 --budget 16GiB --num-frames 241
go w1-16u --budget 16GiB --unified
left() { [ $(( $(date +%s) - CALL_START )) -lt "$1" ]; }
left 470 && go w1-32u --budget 32GiB --unified
left 530 && go w1-16-eager --budget 16GiB --cuda-graph off
cat "$OUT/prediction.md"
echo "call took $(( $(date +%s) - CALL_START )) s"
