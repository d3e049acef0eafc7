# Device call 12 (not run yet; for the next session): issue 17 item 2's rows after b8a6b31 / 14d2fd4 (the plan times
# a cold checkpoint at the disk; calibrate times a streamed block's own cost and has a launch-floor fallback).
# calibrate with the model files, then fresh `generate` processes planned with its profile: W1 at 32 GiB twice (the
# first on the freshly written, cold checkpoint), W1 at 16 GiB, the 10 s clip at 16 GiB, and the one-pool rows at
# 32 and 16 GiB. `run` with carry [".whl"]; ~420 s with the checkpoint's generation.
set -o pipefail
CALL_START=$(date +%s)
source bench/device/prelude.sh
source bench/device/make_full.sh >/dev/null
CK=(--checkpoint-path "$CKPT_DIR/ltx2.safetensors" --gemma-root "$GEMMA_DIR")
t() { echo "  t=$(( $(date +%s) - CALL_START )) s"; }
t
timeout 240 python3 -m ltx2_edge calibrate --device cuda:0 "${CK[@]}" --quiet > "$OUT/calibrate.txt" 2>&1; tail -32 "$OUT/calibrate.txt"; t
cp ~/.cache/ltx2-edge/profiles/*.json "$OUT/" 2>/dev/null
source bench/device/predict.sh
go w1-32-cold --budget 32GiB
go w1-32 --budget 32GiB
go w1-16 --budget 16GiB
go c10-16 --budget 16GiB --num-frames 241
go w1-32u --budget 32GiB --unified
go w1-16u --budget 16GiB --unified
cat "$OUT/prediction.md"
echo "call took $(( $(date +%s) - CALL_START )) s"
